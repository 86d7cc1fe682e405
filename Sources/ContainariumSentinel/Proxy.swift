public import ContainariumCore
import ContainariumGateway
import ContainariumService
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
public import Logging
public import NIOCore
import ContainariumTelemetry
import Prometheus
import NIOPosix
import NIOSSH
import NIOSSL

/// Health probes of the guarded machine.
enum HealthProbe {
    static func tcp(host: String, port: Int, timeout: Double) async -> Bool {
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.milliseconds(Int64(timeout * 1000)))
        do {
            let channel = try await bootstrap.connect(host: host, port: port).get()
            try? await channel.close()
            return true
        } catch {
            return false
        }
    }

    static func http(_ url: URL, timeout: Double) async -> Bool {
        var request = URLRequest(url: url)
        request.timeoutInterval = timeout
        request.cachePolicy = .reloadIgnoringLocalCacheData
        do {
            let (_, response) = try await URLSession.shared.data(for: request)
            return (response as? HTTPURLResponse)?.statusCode == 200
        } catch {
            return false
        }
    }
}

/// The sentinel's listeners: one per route. While the sentinel is up, a connection is joined
/// to the same port of the guarded machine; otherwise (or when the machine refuses it) it gets
/// its route's maintenance answer.
public final class SentinelProxy: Sendable {
    let sentinel: Sentinel
    let hostKey: NIOSSHPrivateKey?
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    /// The maintenance page's TLS, per https route that has a certificate (by its listen address).
    let tls: [String: NIOSSLContext]

    public init(sentinel: Sentinel, logger: Logger) throws(ContainariumError) {
        self.sentinel = sentinel
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup.singleton
        if sentinel.policy.routes.contains(where: { $0.kind == "ssh" }) {
            guard let dir = sentinel.policy.sshKeyDir else {
                throw .invalid("sentinel.sshKeyDir: an ssh route needs the guarded machine's gateway key directory (its host key is the one users know)")
            }
            hostKey = try GatewayKeys.loadOrCreate(dir: dir).hostKey
        } else {
            hostKey = nil
        }
        var tls: [String: NIOSSLContext] = [:]
        for r in sentinel.policy.routes where r.kind == "https" {
            guard let cert = r.tlsCertificate, let key = r.tlsKey else { continue }
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
                let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
                tls[r.listen] = try NIOSSLContext(configuration: configuration)
            } catch {
                throw ContainariumError(.invalidArgument, "sentinel.routes: \(r.listen): cannot use \(cert) and \(key) for TLS", cause: "\(error)")
            }
        }
        self.tls = tls
    }

    /// Bind every route; returns the bound addresses (a port 0 gets one). Serves until the
    /// channels close.
    public func bind() async throws(ContainariumError) -> [any Channel] {
        var channels: [any Channel] = []
        for route in sentinel.policy.routes {
            let (host, port) = try NodeAddress.parse(route.listen)
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.autoRead, value: false)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture { try self.accept(channel, route) }
                }
            do {
                channels.append(try await bootstrap.bind(host: host, port: port).get())
            } catch {
                for c in channels { try? await c.close() }
                throw ContainariumError(.unavailable, "cannot listen on \(route.listen)", cause: "\(error)")
            }
        }
        return channels
    }

    /// A new connection: forwarded, or answered with maintenance.
    func accept(_ client: any Channel, _ route: SentinelPolicy.Route) throws {
        guard sentinel.phase.isUp, let host = sentinel.upstream else {
            try maintenance(client, route)
            return
        }
        count(route, "forwarded")
        if route.kind == "https", let names = route.sni, !names.isEmpty {
            // Which port: the server name in the ClientHello (TLS is not terminated here).
            let sniffer = ClientHelloSniffer { [self] _, name, hello in
                let port = name.flatMap { names[$0] } ?? route.port
                connect(client, route, host: host, port: port, first: hello)
            }
            try client.pipeline.syncOperations.addHandler(sniffer)
            try client.syncOptions?.setOption(.autoRead, value: true)
            return
        }
        connect(client, route, host: host, port: route.port, first: nil)
    }

    /// Join `client` to the machine's `port` (after writing there what the client sent first,
    /// when something was read to choose the port); when the machine refuses, the maintenance answer.
    func connect(_ client: any Channel, _ route: SentinelPolicy.Route, host: String, port: Int, first: ByteBuffer?) {
        let loop = client.eventLoop
        ClientBootstrap(group: loop)
            .connectTimeout(.seconds(3))
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(host: host, port: port)
            .assumeIsolated()
            .whenComplete { [self] result in
                switch result {
                case .success(let upstream):
                    do {
                        if route.proxyProtocol == true {
                            upstream.write(ProxyProtocol.v2Header(source: client.remoteAddress, destination: client.localAddress), promise: nil)
                        }
                        if let first {
                            _ = try client.pipeline.syncOperations.removeHandler(client.pipeline.syncOperations.handler(type: ClientHelloSniffer.self))
                            upstream.write(first, promise: nil)
                        }
                        upstream.flush()
                        try StreamJoin.join(client, upstream)
                        try client.syncOptions?.setOption(.autoRead, value: true)
                    } catch {
                        upstream.close(promise: nil)
                        client.close(promise: nil)
                    }
                case .failure(let error):
                    logger.notice("\(route.listen) -> \(host):\(port) refused (\(error)): maintenance answer")
                    sentinel.connectionFailed()
                    do { try maintenance(client, route, replay: first) } catch { client.close(promise: nil) }
                }
            }
    }

    /// The route's maintenance answer.
    func maintenance(_ client: any Channel, _ route: SentinelPolicy.Route, replay: ByteBuffer? = nil) throws {
        count(route, "maintenance")
        let message = Self.message(phase: sentinel.phase, instance: sentinel.policy.instance, retryAfter: sentinel.retryAfter)
        switch route.kind {
        case "http":
            try client.pipeline.syncOperations.addHandler(MaintenancePage(body: message, retryAfter: sentinel.retryAfter))
        case "https":
            guard let context = tls[route.listen] else { client.close(promise: nil); return }
            try client.pipeline.syncOperations.addHandlers([NIOSSLServerHandler(context: context),
                                                            MaintenancePage(body: message, retryAfter: sentinel.retryAfter)])
            if let replay {
                // What was read to look for a server name is the TLS handshake's start: handed to TLS now.
                _ = try client.pipeline.syncOperations.removeHandler(client.pipeline.syncOperations.handler(type: ClientHelloSniffer.self))
                client.pipeline.fireChannelRead(replay)
            }
        case "ssh":
            guard let hostKey else { client.close(promise: nil); return }
            var config = SSHServerConfiguration(hostKeys: [hostKey], userAuthDelegate: BannerOnly())
            config.banner = .init(message: message + "\r\n", languageTag: "en")
            let ssh = NIOSSHHandler(role: .server(config), allocator: client.allocator, inboundChildChannelInitializer: RefuseChannels.initializer(client))
            try client.pipeline.syncOperations.addHandler(ssh)
        default:
            client.close(promise: nil)
        }
        // Accepted with autoRead off: read now (a forwarded connection reads once joined).
        try client.syncOptions?.setOption(.autoRead, value: true)
    }

    /// `containarium_sentinel_connections_total{route, mode}` (a refused forward counts twice:
    /// forwarded, then maintenance).
    func count(_ route: SentinelPolicy.Route, _ mode: String) {
        sentinel.telemetry?.counter("containarium_sentinel_connections_total", [("route", route.listen), ("mode", mode)],
                                    help: "Connections the sentinel took, by route and by what it did (forwarded or maintenance).").increment()
    }

    static func message(phase: SentinelPhase, instance: String, retryAfter: Int) -> String {
        switch phase {
        case .up:
            return "The machine behind this address does not answer at the moment. Please try again in about \(retryAfter) seconds."
        case .down(let since, _, _):
            let at = ISO8601DateFormatter().string(from: since)
            return "Maintenance: the machine behind this address (\(instance)) stopped at \(at) and is being restarted. "
                + "Your environment and its files are kept. Please try again in about \(retryAfter) seconds."
        }
    }
}

/// The maintenance SSH server's "login": swift-nio-ssh sends the banner with the success of
/// user authentication (never before, so as to tell unauthenticated clients nothing), so the
/// first request succeeds, whatever it is, and shows the banner. It opens nothing: every
/// channel (shell, exec, forward) is refused, and the connection closes.
final class BannerOnly: NIOSSHServerUserAuthenticationDelegate {
    var supportedAuthenticationMethods: NIOSSHAvailableUserAuthenticationMethods { [.publicKey, .password] }
    func requestReceived(request: NIOSSHUserAuthenticationRequest, responsePromise: EventLoopPromise<NIOSSHUserAuthenticationOutcome>) {
        responsePromise.succeed(.success)
    }
}

/// Refuses every channel of the maintenance SSH server, then hangs up.
enum RefuseChannels {
    static func initializer(_ parent: any Channel) -> @Sendable (any Channel, SSHChannelType) -> EventLoopFuture<Void> {
        { child, _ in
            parent.close(promise: nil)
            return child.eventLoop.makeFailedFuture(ChannelError.inappropriateOperationForState)
        }
    }
}

/// 503 with Retry-After and a short page, whatever was asked; then the connection closes.
final class MaintenancePage: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let body: String
    let retryAfter: Int
    private var answered = false
    private var head = ByteBuffer()

    init(body: String, retryAfter: Int) {
        self.body = body
        self.retryAfter = retryAfter
    }

    /// The answer once the request head is in (or 8 KiB of it): a client that sent its
    /// request first reads the answer rather than a reset.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        var bytes = unwrapInboundIn(data)
        head.writeBuffer(&bytes)
        let text = String(buffer: head)
        guard text.contains("\r\n\r\n") || text.contains("\n\n") || head.readableBytes > 8192 else { return }
        answer(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        context.fireChannelInactive()
    }

    private func answer(_ context: ChannelHandlerContext) {
        answered = true
        let html = """
            <!doctype html><html lang="en"><head><meta charset="utf-8"><title>Maintenance</title>
            <meta http-equiv="refresh" content="\(retryAfter)"></head>
            <body><h1>Back in a moment</h1><p>\(Self.escape(body))</p></body></html>

            """
        let response = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: \(retryAfter)\r\nContent-Type: text/html; charset=utf-8\r\n"
            + "Cache-Control: no-store\r\nContent-Length: \(html.utf8.count)\r\nConnection: close\r\n\r\n" + html
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).assumeIsolated().whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
