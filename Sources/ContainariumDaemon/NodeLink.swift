import ContainariumClient
import ContainariumCore
import ContainariumProto
public import ContainariumPlatform
import Foundation
import GRPCCore
public import Logging
import NIOCore
import NIOPosix
import SwiftProtobuf
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The link between a node and its control plane: the node dials out (gRPC `NodeLink`, a
/// bidirectional stream authenticated with the node's own token, over mTLS when the control
/// plane runs with it) and keeps that one connection open; the control plane sends work back
/// over it. A node behind NAT, or one with no inbound port at all, is a full member.
///
/// The stream multiplexes byte channels. Each channel is a connection the control plane opened
/// to a local socket of its own (`<state>/links/NODE.api` or `NODE.ssh`, mode 0600 in a 0700
/// directory): the node connects it to its node API (a gRPC server on a unix socket in its own
/// state directory, never on a port) or to its SSH gateway, and relays bytes both ways. So
/// every call the control plane makes to a node (creates with progress, exec, consoles, keys,
/// listing) and every SSH hop through the node's gateway goes through the one link, and the
/// code that makes those calls is the same as for any gRPC client or SSH connection.
///
/// Frames are `containarium.v1.LinkFrame` messages (proto/containarium/v1/node.proto): `open`
/// with a target (control plane to node), `data` and `close` (both ways), each on a channel.
enum LinkFrame {
    typealias Message = Containarium_V1_LinkFrame
    /// The metadata key naming the node at the other end of the link.
    static let nodeKey = ContainariumEndpoint.nodeKey

    static func open(_ ch: Int, _ target: String) -> Message {
        .with {
            $0.channel = UInt32(clamping: ch)
            $0.open = target == "ssh" ? .ssh : .api
        }
    }
    static func data(_ ch: Int, _ bytes: ByteBuffer) -> Message {
        .with {
            $0.channel = UInt32(clamping: ch)
            $0.data = Data(bytes.readableBytesView)
        }
    }
    static func close(_ ch: Int) -> Message {
        .with {
            $0.channel = UInt32(clamping: ch)
            $0.close = true
        }
    }

    enum Op: Equatable {
        case open(String?)
        case data([UInt8])
        case close
    }

    /// A frame's channel (1...) and what it asks; nil for a frame without either.
    static func parse(_ m: Message) -> (ch: Int, op: Op)? {
        guard m.channel >= 1 else { return nil }
        switch m.op {
        case .open(let t)?: return (Int(m.channel), .open(t == .api ? "api" : t == .ssh ? "ssh" : nil))
        case .data(let d)?: return (Int(m.channel), .data(Array(d)))
        case .close?: return (Int(m.channel), .close)
        case nil: return nil
        }
    }

    /// Relay one local connection over a link channel until either side ends it; then the
    /// other side is told (`close`) and the local connection is closed.
    static func relay(_ conn: NIOAsyncChannel<ByteBuffer, ByteBuffer>, channel ch: Int, incoming: AsyncStream<[UInt8]>,
                      send: @escaping @Sendable (LinkFrame.Message) -> Void) async {
        try? await conn.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await buffer in inbound { send(data(ch, buffer)) }
                }
                group.addTask {
                    for await bytes in incoming { try await outbound.write(ByteBuffer(bytes: bytes)) }
                }
                _ = try await group.next()
                group.cancelAll()
            }
        }
        send(close(ch))
    }
}

/// The channels of one link, either end: what the other side sent to each open channel.
final class LinkChannels: Sendable {
    private let open = Mutex<(next: Int, streams: [Int: AsyncStream<[UInt8]>.Continuation], closed: Bool)>((1, [:], false))

    /// A new channel: its number and what the other side will send on it. Once the link is
    /// closed (`finishAll`), a new channel's stream is finished at once, so nothing waits on it.
    func add(_ ch: Int? = nil) -> (Int, AsyncStream<[UInt8]>) {
        let (stream, cont) = AsyncStream<[UInt8]>.makeStream()
        let (id, closed) = open.withLock { s -> (Int, Bool) in
            let id = ch ?? s.next
            // Channel numbers are a frame's uint32: after the last one, numbering starts again
            // at 1 (that channel closed long before).
            let following = id >= Int(UInt32.max) ? 1 : id + 1
            s.next = ch == nil ? following : max(s.next, following)
            guard !s.closed else { return (id, true) }
            s.streams[id]?.finish()
            s.streams[id] = cont
            return (id, false)
        }
        if closed { cont.finish() }
        return (id, stream)
    }

    func deliver(_ ch: Int, _ bytes: [UInt8]) { _ = open.withLock { $0.streams[ch] }?.yield(bytes) }
    func finish(_ ch: Int) { open.withLock { $0.streams.removeValue(forKey: ch) }?.finish() }
    func finishAll() {
        for c in open.withLock({ s -> [AsyncStream<[UInt8]>.Continuation] in
            defer {
                s.streams = [:]
                s.closed = true
            }
            return Array(s.streams.values)
        }) { c.finish() }
    }
}

/// The control plane's side: the links nodes keep open, and a local socket per link and target.
public final class NodeLinks: LinkSockets {
    let dir: String
    let logger: Logger

    final class Link: Sendable {
        let id: UUID
        let node: String
        let out: AsyncStream<LinkFrame.Message>.Continuation
        let channels = LinkChannels()
        /// This link's own local sockets, by target: never shared with an earlier or later link
        /// of the same node, so one ending can never remove the other's.
        let paths: [String: String]
        init(id: UUID, node: String, out: AsyncStream<LinkFrame.Message>.Continuation, paths: [String: String]) {
            self.id = id
            self.node = node
            self.out = out
            self.paths = paths
        }
    }
    private let links = Mutex<[String: Link]>([:])

    public init(stateDir: String, logger: Logger) {
        dir = (stateDir as NSString).appendingPathComponent("links")
        self.logger = logger
    }

    static let targets = ["api", "ssh"]
    /// A short per-link name (unix socket paths are limited to 107 bytes).
    func socketPath(_ link: UUID, _ target: String) -> String {
        (dir as NSString).appendingPathComponent("\(link.uuidString.prefix(13).lowercased()).\(target)")
    }

    /// The local socket that reaches `node`'s node API (or its SSH gateway, `ssh`) through its
    /// current link, while the node holds one open.
    public func socket(of node: String, _ target: String = "api") -> String? {
        links.withLock { $0[node] }?.paths[target]
    }

    public func disconnect(_ node: String) {
        links.withLock { $0[node] }?.out.finish()
    }

    /// End every link (graceful shutdown): each node sees its link close and dials again.
    public func closeAll() {
        for link in links.withLock({ Array($0.values) }) { link.out.finish() }
    }

    public var linkedNodes: [String] { links.withLock { Array($0.keys).sorted() } }

    /// Serve one link until the node hangs up (or the daemon stops). A node that links again
    /// replaces its previous link.
    func serve(node: String, inbound: RPCAsyncSequence<LinkFrame.Message, any Error>, writer: RPCWriter<LinkFrame.Message>) async throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        chmod(dir, 0o700)
        let (out, cont) = AsyncStream<LinkFrame.Message>.makeStream()
        let id = UUID()
        let paths = Dictionary(uniqueKeysWithValues: Self.targets.map { ($0, socketPath(id, $0)) })
        let link = Link(id: id, node: node, out: cont, paths: paths)
        // Listen first, so a socket path handed out always has a listener behind it.
        var servers: [(String, NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>)] = []
        defer {
            for (_, s) in servers { s.channel.close(promise: nil) }
            for path in paths.values { unlink(path) }
        }
        for target in Self.targets {
            guard let path = paths[target] else { continue }
            let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { channel in
                    channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                }
            servers.append((target, server))
            chmod(path, 0o600)
        }
        let previous = links.withLock { l -> Link? in
            defer { l[node] = link }
            return l[node]
        }
        previous?.out.finish()
        logger.notice("node \(node) linked\(previous == nil ? "" : " again (replacing its previous link)")")
        defer {
            link.channels.finishAll()
            cont.finish()
            let current = links.withLock { l -> Bool in
                guard l[node]?.id == link.id else { return false }
                l[node] = nil
                return true
            }
            if current { logger.notice("node \(node)'s link closed") }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await frame in out { try await writer.write(frame) }
            }
            group.addTask {
                for try await m in inbound {
                    guard let f = LinkFrame.parse(m) else { continue }
                    switch f.op {
                    case .data(let b): link.channels.deliver(f.ch, b)
                    case .close: link.channels.finish(f.ch)
                    case .open: continue  // a node opens nothing on its control plane
                    }
                }
            }
            for (target, server) in servers {
                group.addTask {
                    try await server.executeThenClose { connections in
                        await withDiscardingTaskGroup { conns in
                            do {
                                for try await conn in connections {
                                    conns.addTask {
                                        let (ch, incoming) = link.channels.add()
                                        link.out.yield(LinkFrame.open(ch, target))
                                        await LinkFrame.relay(conn, channel: ch, incoming: incoming) { link.out.yield($0) }
                                        link.channels.finish(ch)
                                    }
                                }
                            } catch {}
                        }
                    }
                }
            }
            // The first to end (the node hung up, or this link was replaced) ends the link:
            // no new connections, every open channel ends, nothing more is written.
            defer {
                for (_, s) in servers { s.channel.close(promise: nil) }
                link.channels.finishAll()
                cont.finish()
                group.cancelAll()
            }
            _ = try await group.next()
        }
    }
}

/// The node's side: keeps a link open to each control plane it reports to, and connects each
/// channel the control plane opens to the node API's unix socket or the SSH gateway.
struct NodeLinkAgent {
    let join: JoinOptions
    /// The node's current token (renewed by its control planes).
    let credential: NodeCredential
    let nodeName: String
    /// The node API's unix socket.
    let apiSocket: String
    /// This node's SSH gateway, when it runs one (HOST, PORT as the node itself reaches it).
    let gateway: (host: String, port: Int)?
    let logger: Logger

    func run() async {
        await withDiscardingTaskGroup { group in
            for server in join.servers {
                group.addTask { await keep(server) }
            }
        }
    }

    /// Link, and link again whenever the link drops (1 s, doubling to 10 s while it fails).
    func keep(_ server: String) async {
        var delay: Double = 1
        var failing = false
        while !Task.isCancelled {
            let started = Date()
            do throws(ContainariumError) {
                let endpoint = try ContainariumEndpoint(server: server, certsDir: join.certsDir, token: credential.token)
                if failing { logger.notice("linking to the control plane at \(server) again") }
                try await once(endpoint)
                failing = false
            } catch {
                if !failing { logger.warning("no link to the control plane at \(server): \(error.message)") }
                failing = true
            }
            if Date().timeIntervalSince(started) > 30 { delay = 1 }
            try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            delay = min(delay * 2, 10)
        }
    }

    func once(_ endpoint: ContainariumEndpoint) async throws(ContainariumError) {
        let (out, cont) = AsyncStream<LinkFrame.Message>.makeStream()
        let channels = LinkChannels()
        let send: @Sendable (LinkFrame.Message) -> Void = { cont.yield($0) }
        let relays = RelayTasks()
        defer {
            channels.finishAll()
            relays.cancelAll()
        }
        var metadata = endpoint.metadata
        metadata.addString(nodeName, forKey: LinkFrame.nodeKey)
        try await endpoint.connect { [metadata] client in
            try await client.nodes.link(
                request: StreamingClientRequest(metadata: metadata) { writer in
                    for await frame in out { try await writer.write(frame) }
                }
            ) { response in
                defer { cont.finish() }
                for try await m in response.messages {
                    guard let f = LinkFrame.parse(m) else { continue }
                    switch f.op {
                    case .open(let target):
                        let (ch, incoming) = channels.add(f.ch)
                        relays.start(ch) {
                            do {
                                let conn = try await connect(target ?? "")
                                await LinkFrame.relay(conn, channel: ch, incoming: incoming, send: send)
                            } catch {
                                logger.warning("link channel to \(target ?? "an unknown target") failed: \(error)")
                                send(LinkFrame.close(ch))
                            }
                            channels.finish(ch)
                        }
                    case .data(let b): channels.deliver(f.ch, b)
                    case .close: channels.finish(f.ch)
                    }
                }
            }
        }
    }

    func connect(_ target: String) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(.seconds(10))
        let wrap: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<ByteBuffer, ByteBuffer>> = { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
        switch target {
        case "api":
            return try await bootstrap.connect(unixDomainSocketPath: apiSocket, channelInitializer: wrap)
        case "ssh":
            guard let gateway else { throw ContainariumError(.unavailable, "this node runs no SSH gateway") }
            return try await bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: gateway.host, port: gateway.port, channelInitializer: wrap)
        default:
            throw ContainariumError(.invalidArgument, "unknown link target '\(target)'")
        }
    }
}

/// The node side's relays in flight, by channel: each forgets itself when it ends, so a link
/// that lives for weeks holds only the channels open now.
final class RelayTasks: Sendable {
    private let tasks = Mutex<[Int: Task<Void, Never>]>([:])

    func start(_ ch: Int, _ body: @escaping @Sendable () async -> Void) {
        // Registered under the lock its own removal takes: an entry never outlives its task.
        tasks.withLock { t in
            t[ch] = Task { [self] in
                await body()
                _ = self.tasks.withLock { $0.removeValue(forKey: ch) }
            }
        }
    }

    var count: Int { tasks.withLock { $0.count } }

    func cancelAll() {
        for t in tasks.withLock({ Array($0.values) }) { t.cancel() }
    }
}
