import ContainariumCore
import ContainariumStore
import Foundation
public import Logging
import NIOCore
import NIOPosix
import NIOSSH
public import ServiceLifecycle
import Synchronization

/// `containarium gateway`: one public SSH endpoint. Clients authenticate with their own key;
/// the SSH user name picks the environment; the key picks the account inside it (the owner or
/// a collaborator). Sessions, SFTP, scp, `-L` forwards and ProxyJump are relayed to the
/// environment's own sshd, which the gateway logs in to with its upstream key. Nobody gets a
/// shell on the gateway's host.
public final class SSHGateway: Service, Sendable {
    let options: GatewayOptions
    let directory: any GatewayDirectory
    let bans: BanList
    let keys: GatewayKeys
    let logger: Logger
    let boundPort = Mutex<Int?>(nil)
    /// Connections open now, and those per address that have not authenticated yet.
    let open = Mutex<(total: Int, startups: [String: Int])>((0, [:]))

    /// Sessions, bytes, authentication failures and bans (`containarium_gateway_*`).
    public let meter: GatewayMeter

    public init(options: GatewayOptions, directory: any GatewayDirectory, bans: BanList, keys: GatewayKeys, logger: Logger,
                meter: GatewayMeter = GatewayMeter()) {
        self.meter = meter
        self.options = options
        self.directory = directory
        self.bans = bans
        self.keys = keys
        self.logger = logger
    }

    /// The port actually bound (useful with port 0).
    public var port: Int? { boundPort.withLock { $0 } }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        do {
            let server = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture { try self.accept(channel) }
                }
                .bind(host: options.host, port: options.port).get()
            boundPort.withLock { $0 = server.localAddress?.port }
            logger.notice("SSH gateway listening on \(options.host):\(server.localAddress?.port ?? options.port), host key \(keys.hostKeyFingerprint)")
            try? await bans.reload()
            try await withTaskCancellationOrGracefulShutdownHandler {
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await server.closeFuture.get() }
                    tasks.addTask { [bans, logger] in
                        // Picks up `gateway bans --unban` and bans made by other gateways.
                        while !Task.isCancelled {
                            try await Task.sleep(for: .seconds(2))
                            do { try await bans.reload() } catch { logger.warning("could not reload gateway bans: \(error)") }
                        }
                    }
                    try await tasks.next()
                    tasks.cancelAll()
                }
            } onCancelOrGracefulShutdown: {
                server.close(promise: nil)
            }
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
        logger.notice("SSH gateway stopped")
    }

    // MARK: - connections

    private func accept(_ channel: any Channel) throws {
        let peer = channel.remoteAddress?.ipAddress ?? "unknown"
        guard options.trustedProxies.contains(peer) else { return try setUp(channel, source: peer) }
        // A trusted proxy says whose connection this is first; the rest follows as usual.
        try channel.pipeline.syncOperations.addHandler(ProxyHeaderReader { [self] context, source, rest in
            let channel = context.channel
            do {
                _ = try channel.pipeline.syncOperations.removeHandler(channel.pipeline.syncOperations.handler(type: ProxyHeaderReader.self))
                guard let source else { channel.close(promise: nil); return }  // the proxy's own probe
                try setUp(channel, source: source)
                if rest.readableBytes > 0 { channel.pipeline.fireChannelRead(rest) }
            } catch {
                channel.close(promise: nil)
            }
        })
    }

    private func setUp(_ channel: any Channel, source: String) throws {
        if let ban = bans.ban(for: source) {
            // RFC 4253 4.2 lets a server send text lines before its version string; OpenSSH
            // shows them with -v. Then the connection ends without any SSH exchange.
            let until = ISO8601DateFormatter().string(from: ban.until)
            let line = "containarium-gateway: \(source) is banned until \(until) after repeated failed logins\r\n"
            try channel.pipeline.syncOperations.addHandler(RefuseHandler(line: line))
            let directory = self.directory
            Task { await directory.audit(GatewayAuditEvent(action: "gateway.refused", actor: "-", target: "-", source: source, result: "permission_denied", detail: "banned until \(until)", preLogin: true)) }
            return
        }
        let refusal = open.withLock { o -> String? in
            if o.total >= options.maxConnections { return "the gateway has \(o.total) connections open, its limit" }
            if o.startups[source, default: 0] >= options.maxStartupsPerAddress {
                return "\(source) has \(options.maxStartupsPerAddress) connections that have not logged in yet"
            }
            o.total += 1
            o.startups[source, default: 0] += 1
            return nil
        }
        if let refusal {
            try channel.pipeline.syncOperations.addHandler(RefuseHandler(line: "containarium-gateway: too many connections: \(refusal); try again later\r\n"))
            audit(GatewayAuditEvent(action: "gateway.refused", actor: "-", target: "-", source: source, result: "resource_exhausted", detail: refusal, preLogin: true))
            return
        }
        let connection = Connection(source: source)
        let auth = AuthDelegate(connection: connection, gateway: self)
        var config = SSHServerConfiguration(hostKeys: [keys.hostKey], userAuthDelegate: auth)
        config.maxAuthAttempts = options.maxAuthAttempts
        let ssh = NIOSSHHandler(
            role: .server(config), allocator: channel.allocator,
            inboundChildChannelInitializer: { [self] child, type in self.openChild(child, type, connection) })
        try channel.pipeline.syncOperations.addHandlers([
            ConnectionGuard(connection: connection, gateway: self), ssh, ErrorCloser(connection: connection, gateway: self),
        ])
    }

    func audit(_ event: GatewayAuditEvent) {
        meter.observe(event)
        let directory = self.directory
        Task { await directory.audit(event) }
    }

    /// A connection logged in, or ended: it no longer counts against its address's startups
    /// (once), and an ended one no longer counts at all.
    private func release(_ connection: Connection, ended: Bool) {
        let startup = connection.leaveStartup()
        open.withLock { o in
            if ended { o.total -= 1 }
            guard startup else { return }
            let n = o.startups[connection.source, default: 1] - 1
            o.startups[connection.source] = n > 0 ? n : nil
        }
    }

    func loggedIn(_ connection: Connection) { release(connection, ended: false) }

    /// Called when a connection ends.
    func finished(_ connection: Connection) {
        release(connection, ended: true)
        let s = connection.snapshot()
        s.upstream?.whenSuccess { $0.close(promise: nil) }
        let seconds = String(format: "%.1f", Date().timeIntervalSince(s.opened))
        if s.route == nil && s.failedAttempts > 0 {
            if let ban = bans.recordFailure(connection.source) {
                logger.warning("SSH gateway: banning \(connection.source) until \(ban.until) after \(ban.failures) failed connections")
                let bans = self.bans, directory = self.directory, logger = self.logger
                meter.observe(GatewayAuditEvent(action: "gateway.ban", actor: "-", target: "-", source: ban.address))
                Task {
                    do { try await bans.persist(ban) } catch { logger.error("could not persist the ban of \(ban.address): \(error)") }
                    await directory.audit(GatewayAuditEvent(action: "gateway.ban", actor: s.requestedUser, target: "-", source: ban.address,
                                                            result: "permission_denied", detail: "\(ban.failures) failed connections; banned until \(ban.until)"))
                }
            }
        }
        audit(GatewayAuditEvent(action: "gateway.disconnect", actor: s.route?.account ?? s.requestedUser, target: s.route?.environment ?? "-",
                                source: connection.source, detail: "after \(seconds) s", preLogin: s.route == nil))
    }

    // MARK: - channels

    private static let loopbackNames: Set<String> = ["localhost", "127.0.0.1", "::1", "ip6-localhost", "localhost.localdomain"]

    private func openChild(_ child: any Channel, _ type: SSHChannelType, _ connection: Connection) -> EventLoopFuture<Void> {
        let loop = child.eventLoop
        guard let route = connection.route else { return loop.makeFailedFuture(GatewayError.refused("not authenticated")) }
        switch type {
        case .session:
            let observer = sessionObserver(route, connection)
            let (client, upstream) = Relay.pair(session: true, observer: observer)
            let bound = NIOLoopBound(client, eventLoop: loop)
            return upstreamChannel(connection, route, loop: loop, type: .session, relay: NIOLoopBound(upstream, eventLoop: loop)).flatMap { _ in
                child.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).flatMapThrowing {
                    try child.pipeline.syncOperations.addHandlers([ChannelBytesMeter(self.meter), bound.value])
                }
            }
        case .directTCPIP(let target):
            let host = target.targetHost.lowercased()
            let port = target.targetPort
            let what = "\(target.targetHost):\(port)"
            let inside = Self.loopbackNames.contains(host) || host == route.containerName.lowercased()
            guard inside || host == route.address, (1...65535).contains(port) else {
                audit(GatewayAuditEvent(action: "gateway.forward", actor: route.account, target: route.environment, source: connection.source,
                                        result: "permission_denied", detail: "refused \(what): only the environment's own ports can be reached"))
                return loop.makeFailedFuture(GatewayError.refused("forward to \(what) refused"))
            }
            if !inside, route.via == nil, let refused = GatewayTargets.refusal(route.address) {
                audit(GatewayAuditEvent(action: "gateway.forward", actor: route.account, target: route.environment, source: connection.source,
                                        result: "permission_denied", detail: "refused \(what): \(refused)"))
                return loop.makeFailedFuture(GatewayError.refused("forward to \(what) refused"))
            }
            audit(GatewayAuditEvent(action: "gateway.forward", actor: route.account, target: route.environment, source: connection.source,
                                    detail: port == 22 && host == route.address ? "jump to \(what)" : "to \(what)"))
            let (clientHalf, farHalf) = Relay.pair(session: false)
            let client = NIOLoopBound(clientHalf, eventLoop: loop), far = NIOLoopBound(farHalf, eventLoop: loop)
            let opened: EventLoopFuture<Void>
            if inside || route.via != nil {
                // The environment's loopback: ask its sshd to connect, as the account itself.
                // Through another node's gateway, its own address is asked for too: that
                // gateway applies the same rules and connects on its node.
                let forward = SSHChannelType.DirectTCPIP(targetHost: inside ? "127.0.0.1" : route.address, targetPort: port,
                                                         originatorAddress: target.originatorAddress)
                opened = upstreamChannel(connection, route, loop: loop, type: .directTCPIP(forward), relay: far, bytes: true).map { _ in }
            } else {
                // The environment's own address (ProxyJump lands here on port 22): connect directly.
                opened = ClientBootstrap(group: loop)
                    .connectTimeout(.seconds(10))
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelOption(.allowRemoteHalfClosure, value: true)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(far.value) }
                    }
                    .connect(host: route.address, port: port)
                    .map { _ in }
            }
            return opened.flatMap {
                child.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).flatMapThrowing {
                    try child.pipeline.syncOperations.addHandlers([ChannelBytesMeter(self.meter), SSHChannelBytes(), client.value])
                }
            }
        default:
            audit(GatewayAuditEvent(action: "gateway.channel", actor: route.account, target: route.environment, source: connection.source,
                                    result: "permission_denied", detail: "refused channel type \(type)"))
            return loop.makeFailedFuture(GatewayError.refused("channel type refused"))
        }
    }

    private func sessionObserver(_ route: GatewayRoute, _ connection: Connection) -> Relay.Observer {
        let observer = Relay.Observer()
        let started = Date()
        let end = Mutex<String>("closed")
        observer.onRequest = { [self] kind, detail in
            guard kind != "pty" else { return }
            audit(GatewayAuditEvent(action: "gateway.session.\(kind)", actor: route.account, target: route.environment, source: connection.source,
                                    detail: String(detail.prefix(1000))))
        }
        observer.onExit = { how in end.withLock { $0 = how } }
        observer.onClose = { [self] in
            let how = end.withLock { $0 }
            audit(GatewayAuditEvent(action: "gateway.session.end", actor: route.account, target: route.environment, source: connection.source,
                                    detail: "\(how) after \(String(format: "%.1f", Date().timeIntervalSince(started))) s"))
        }
        return observer
    }

    /// Open a channel of `type` on this connection's upstream SSH connection (made on first use),
    /// with `relay` (plus a byte adapter for forwards) as its handler.
    private func upstreamChannel(_ connection: Connection, _ route: GatewayRoute, loop: any EventLoop, type: SSHChannelType,
                                 relay: NIOLoopBound<Relay>, bytes: Bool = false) -> EventLoopFuture<any Channel> {
        connection.upstream(orMake: { Upstream.connect(route: route, loop: loop, gateway: self) }).flatMap { parent in
            let promise = loop.makePromise(of: (any Channel).self)
            do {
                let ssh = try parent.pipeline.syncOperations.handler(type: NIOSSHHandler.self)
                ssh.createChannel(promise, channelType: type) { channel, _ in
                    channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).flatMapThrowing {
                        if bytes { try channel.pipeline.syncOperations.addHandler(SSHChannelBytes()) }
                        try channel.pipeline.syncOperations.addHandler(relay.value)
                    }
                }
            } catch {
                promise.fail(error)
            }
            return promise.futureResult
        }
    }
}

enum GatewayError: Error, CustomStringConvertible {
    case refused(String)
    case upstream(String)
    var description: String {
        switch self {
        case .refused(let s): s
        case .upstream(let s): s
        }
    }
}

/// State of one client connection, shared by its handlers, its auth delegate and its channels.
final class Connection: Sendable {
    let source: String
    struct State {
        var requestedUser = "-"
        var route: GatewayRoute?
        var failedAttempts = 0
        var upstream: EventLoopFuture<any Channel>?
        var opened = Date()
        /// Counted among its address's startups (until it logs in or goes).
        var startup = true
    }
    private let state = Mutex(State())

    init(source: String) { self.source = source }

    var route: GatewayRoute? { state.withLock { $0.route } }
    func snapshot() -> State { state.withLock { $0 } }
    func attempted(user: String) { state.withLock { $0.requestedUser = user } }
    func failed() { state.withLock { $0.failedAttempts += 1 } }
    func authenticated(_ route: GatewayRoute) { state.withLock { $0.route = route } }
    /// Leave the startups once: true the first time.
    func leaveStartup() -> Bool {
        state.withLock { s in
            defer { s.startup = false }
            return s.startup
        }
    }
    func upstream(orMake make: () -> EventLoopFuture<any Channel>) -> EventLoopFuture<any Channel> {
        state.withLock { s in
            if let existing = s.upstream { return existing }
            let made = make()
            s.upstream = made
            return made
        }
    }
}

/// Checks every signed public-key attempt against the directory. Everything else fails.
final class AuthDelegate: NIOSSHServerUserAuthenticationDelegate, Sendable {
    let connection: Connection
    let gateway: SSHGateway
    init(connection: Connection, gateway: SSHGateway) {
        self.connection = connection
        self.gateway = gateway
    }

    var supportedAuthenticationMethods: NIOSSHAvailableUserAuthenticationMethods { .publicKey }

    func requestReceived(request: NIOSSHUserAuthenticationRequest, responsePromise: EventLoopPromise<NIOSSHUserAuthenticationOutcome>) {
        let user = String(request.username.prefix(64))
        connection.attempted(user: user)
        let source = connection.source
        guard case .publicKey(let offered) = request.request else {
            if case .none = request.request {
                responsePromise.succeed(.failure)  // the client asking which methods exist
            } else {
                connection.failed()
                gateway.audit(GatewayAuditEvent(action: "gateway.auth", actor: user, target: user, source: source,
                                                result: "unauthenticated", detail: "only public keys are accepted", preLogin: true))
                responsePromise.succeed(.failure)
            }
            return
        }
        // NIOSSH has verified the signature by now; what is left is whether this key may
        // log in to this environment.
        let key = String(openSSHPublicKey: offered.publicKey)
        let fingerprint = GatewayKeys.fingerprint(key)
        let connection = self.connection, gateway = self.gateway
        Task {
            switch await gateway.directory.route(environment: user, key: key, fingerprint: fingerprint) {
            case .success(let route):
                connection.authenticated(route)
                gateway.loggedIn(connection)
                gateway.audit(GatewayAuditEvent(action: "gateway.auth", actor: route.account, target: route.environment, source: source,
                                                detail: "\(route.role.rawValue) key \(fingerprint)"))
                responsePromise.succeed(.success)
            case .failure(let denial):
                // A stopped or unreachable environment is not the client's fault: it does not
                // count towards a ban (and tells an attacker nothing: the answer is the same).
                if denial.countsAsFailure { connection.failed() }
                gateway.audit(GatewayAuditEvent(action: "gateway.auth", actor: user, target: user, source: source,
                                                result: "unauthenticated", detail: "\(denial) (key \(fingerprint))", preLogin: true))
                responsePromise.succeed(.failure)
            }
        }
    }
}

/// First handler of every connection: audit, login grace, and the end-of-connection bookkeeping.
final class ConnectionGuard: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let connection: Connection
    let gateway: SSHGateway
    init(connection: Connection, gateway: SSHGateway) {
        self.connection = connection
        self.gateway = gateway
    }

    private var started = false

    /// Added after a PROXY header was read, the connection is active already.
    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        gateway.audit(GatewayAuditEvent(action: "gateway.connect", actor: "-", target: "-", source: connection.source, preLogin: true))
        let channel = context.channel, connection = self.connection
        context.eventLoop.scheduleTask(in: .milliseconds(Int64(gateway.options.loginGrace * 1000))) {
            if connection.route == nil { channel.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        gateway.finished(connection)
        context.fireChannelInactive()
    }
}

/// Last handler: a protocol error (garbage, a client that breaks the rules) ends that
/// connection only.
final class ErrorCloser: ChannelInboundHandler {
    typealias InboundIn = Any
    let connection: Connection
    let gateway: SSHGateway
    init(connection: Connection, gateway: SSHGateway) {
        self.connection = connection
        self.gateway = gateway
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        gateway.logger.info("SSH gateway: closing the connection from \(connection.source): \(error)")
        if connection.route == nil, !(error is ChannelError) {
            gateway.audit(GatewayAuditEvent(action: "gateway.protocol-error", actor: connection.snapshot().requestedUser, target: "-",
                                            source: connection.source, result: "invalid_argument", detail: String("\(error)".prefix(300)), preLogin: true))
        }
        context.close(promise: nil)
    }
}

/// Says why, then hangs up (banned addresses).
final class RefuseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let line: String
    init(line: String) { self.line = line }
    private var said = false

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { say(context) }
    }

    func channelActive(context: ChannelHandlerContext) { say(context) }

    private func say(_ context: ChannelHandlerContext) {
        guard !said else { return }
        said = true
        let buffer = context.channel.allocator.buffer(string: line)
        let channel = context.channel
        // Half-close so the client reads the line and a clean end of stream (a full close while
        // its own version string is in flight would reset the connection instead).
        context.writeAndFlush(NIOAny(buffer)).whenComplete { _ in channel.close(mode: .output, promise: nil) }
        context.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
