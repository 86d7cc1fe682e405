public import ContainariumCore
import ContainariumClient
import ContainariumProto
import ContainariumPlatform
public import ContainariumService
public import ContainariumGateway
public import ContainariumScheduler
import ContainariumStore
import ContainariumTelemetry
public import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOSSL
import HummingbirdWebSocket
public import Logging
import NIOCore
import PluginHost
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// Everything `containarium daemon` needs to start.
public struct DaemonOptions: Sendable {
    public var restHost = "0.0.0.0"
    public var restPort = 8080
    /// Serve REST over TLS with this certificate chain and key (PEM); both or neither.
    public var restTLS: (certificate: String, key: String)?
    /// Audit retention: entries older than this many days are removed (0: kept forever).
    public var auditMaxAgeDays = 365
    /// Audit retention: at most this many entries are kept, the newest (0: no limit).
    public var auditMaxRows = 1_000_000
    /// REST connections open at once, in all and from one address; one more is closed at once.
    public var restMaxConnections = 4096
    public var restMaxConnectionsPerAddress = 256
    /// Close a REST connection idle (or silent from the start) for this many seconds.
    public var restIdleTimeoutSeconds = 120
    var restIdleTimeout: TimeAmount { .seconds(Int64(max(1, restIdleTimeoutSeconds))) }
    public var restEnabled = true
    public var stateDir = "/var/lib/containarium"
    public var databaseURL: String?
    public var jwtSecret: String
    public var reconcileInterval: Duration = .seconds(60)
    /// Age after which a half-made container nobody is creating is removed.
    public var orphanGrace: TimeInterval = 300
    public var swaggerDir: String?
    /// The dashboard's files, served at /webui/.
    public var webuiDir: String?
    /// How often environments' usage is sampled for the dashboard's charts, /metrics and alerts.
    public var metricsInterval: Duration = .seconds(15)
    /// Prometheus metrics at GET /metrics (`--no-metrics`: none, and no instrumentation).
    public var metricsEnabled = true
    /// Also serve /metrics without a token on this address (HOST:PORT; a private network only).
    public var metricsListen: (host: String, port: Int)?
    public var grpc: GRPCOptions?
    /// The SSH gateway, when set (`--ssh-port`, or `containarium gateway`).
    public var ssh: GatewayOptions?
    /// Off for a gateway-only process sharing state with a daemon: one reconciler is enough.
    public var reconcilerEnabled = true
    /// How this daemon's scheduler places environments across its cluster's nodes.
    public var schedulingPolicy = SchedulingPolicy()
    /// Seconds without a report after which a member is unhealthy.
    public var unhealthyAfter: TimeInterval = 10
    /// Report to a control plane as a member of its cluster (`node join`).
    public var join: JoinOptions?
    /// What this node says about itself to the scheduler.
    public var nodeLabels: [String: String] = [:]
    public var nodePool: String?
    public var preemptible = false
    /// Client certificates (ca.crt, client.crt, client.key) for calls to members that run with --mtls.
    public var clusterCertsDir: String?
    /// Serve the local API socket (`localSocket(stateDir:)`): the CLI on this machine and the
    /// node's link reach the daemon through it. Off for a gateway-only process.
    public var localAPI = true

    /// The daemon's API on this machine: a unix socket (0600 in a 0700 directory, root only).
    /// A call on it without a token acts as the local administrator (`local`), or, carried by the
    /// node's link, as its control plane.
    public static func localSocket(stateDir: String) -> String {
        ((stateDir as NSString).appendingPathComponent("api") as NSString).appendingPathComponent("containarium.sock")
    }

    /// Where `node join` leaves the membership (JoinOptions as JSON, mode 0600).
    public static func joinFile(stateDir: String) -> String { (stateDir as NSString).appendingPathComponent("node.json") }

    public init(jwtSecret: String) { self.jwtSecret = jwtSecret }
}

/// Where and how a node reports to its control plane.
public struct JoinOptions: Codable, Sendable, Equatable {
    /// The control plane's gRPC address (HOST:PORT); several, comma-separated, for control
    /// planes sharing one PostgreSQL database (the node reports to each).
    public var server: String
    public var servers: [String] { server.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    /// A node token from `containarium node token` on the control plane.
    public var token: String
    /// This node's gRPC address as the control plane may dial it (HOST:PORT). Optional: every
    /// node keeps a link open to its control plane, which reaches it through that link; an
    /// advertised address is only a fallback while the link is down.
    public var advertise: String?
    /// The CA and this node's client certificate (`cert issue --role node`): node traffic is TLS.
    public var certsDir: String?
    /// Report in clear instead (a test bed): the node's token then travels unencrypted.
    public var insecurePlaintext: Bool?
    public init(server: String, token: String, advertise: String? = nil, certsDir: String? = nil, insecurePlaintext: Bool = false) {
        self.server = server
        self.token = token
        self.advertise = advertise
        self.certsDir = certsDir
        self.insecurePlaintext = insecurePlaintext ? true : nil
    }

    /// Node traffic is TLS unless the join says, in so many words, that it is a test bed.
    public func checkTransport(file: String) throws(ContainariumError) {
        guard certsDir == nil, insecurePlaintext != true else { return }
        throw ContainariumError(.failedPrecondition, "\(file) gives no certificates, and node traffic is TLS: run `containarium node join` again with --certs-dir (the CA and this node's certificate from `cert issue --role node`), or with --insecure-plaintext on a test bed")
    }
}

/// A node's token for its control planes: the one it joined with, until a control plane renews
/// it; the renewed one is written to the join file, so a restart uses the newest.
final class NodeCredential: Sendable {
    private let state: Mutex<JoinOptions>
    let file: String

    init(join: JoinOptions, file: String) {
        state = Mutex(join)
        self.file = file
    }

    var token: String { state.withLock { $0.token } }

    func renew(_ token: String, logger: Logger) {
        // One writer at a time (renewals from several control planes may cross).
        writing.withLock { _ in
            let join = state.withLock { j -> JoinOptions? in
                guard j.token != token else { return nil }
                j.token = token
                return j
            }
            guard let join else { return }
            do {
                try Self.write(JSONEncoder().encode(join), to: file)
                logger.info("the control plane renewed this node's token (kept in \(file))")
            } catch {
                logger.warning("the control plane renewed this node's token, but \(file) could not be updated: \(error) (a restart uses the old token)")
            }
        }
    }
    private let writing = Mutex(())

    /// Write `data` to `path` whole or not at all: a new 0600 file (never through a link),
    /// synced, then renamed over the old one.
    static func write(_ data: Data, to path: String) throws {
        let tmp = path + ".\(UUID().uuidString.prefix(8)).tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ContainariumError(.internal, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        var ok = data.withUnsafeBytes { raw -> Bool in
            var off = 0
            while off < raw.count {
                let n = Glibc.write(fd, raw.baseAddress.map { $0 + off }, raw.count - off)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                off += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw ContainariumError(.internal, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// A closure as a ServiceLifecycle service that stops on graceful shutdown.
struct TaskService: Service, CustomStringConvertible {
    let description: String
    let body: @Sendable () async -> Void
    func run() async throws {
        await cancelWhenGracefulShutdown { await body() }
    }
}

/// A member's side of the cluster: every few seconds, its capacity, environments and a fresh
/// short-lived token for the control plane go to `ReportNode`.
struct NodeAgent {
    let plane: ControlPlane
    let tokens: Tokens
    let join: JoinOptions
    let credential: NodeCredential
    let options: DaemonOptions
    /// This node's SSH gateway host key, when it runs one.
    let gatewayHostKey: String?
    let logger: Logger

    /// Where the control plane reaches this node's gateway: through the link, and (with an
    /// advertised address) at the advertised host and the gateway's port.
    var gatewayEndpoint: NodeReport.GatewayEndpoint? {
        guard let ssh = options.ssh, let hostKey = gatewayHostKey else { return nil }
        guard let advertise = join.advertise, let (host, _) = try? Cluster.hostPort(advertise) else {
            return NodeReport.GatewayEndpoint(address: "", hostKey: hostKey)
        }
        return NodeReport.GatewayEndpoint(address: host.contains(":") ? "[\(host)]:\(ssh.port)" : "\(host):\(ssh.port)", hostKey: hostKey)
    }

    func run() async {
        var failing: Set<String> = []
        while !Task.isCancelled {
            do throws(ContainariumError) {
                // No credential travels in a report: the control plane calls back through the
                // link, or at the advertised address with its own mTLS certificate.
                var report = try await plane.localReport(address: join.advertise ?? "", token: nil, labels: options.nodeLabels,
                                                         pool: options.nodePool, preemptible: options.preemptible)
                report.gateway = gatewayEndpoint
                let message = ProtoMap.nodeReport(report)
                // Every control plane gets the report; the peer keys are what all of them said.
                let answers = await withTaskGroup(of: (String, Result<[String], ContainariumError>).self) { group in
                    for server in join.servers {
                        group.addTask {
                            do throws(ContainariumError) {
                                let endpoint = try ContainariumEndpoint(server: server, certsDir: join.certsDir, token: credential.token)
                                let reply = try await endpoint.connect { c in try await c.nodes.reportNode(message, metadata: c.metadata) }
                                if !reply.renewedToken.isEmpty { credential.renew(reply.renewedToken, logger: logger) }
                                return (server, .success(reply.gatewayKeys))
                            } catch {
                                return (server, .failure(error))
                            }
                        }
                    }
                    var out: [(String, Result<[String], ContainariumError>)] = []
                    for await a in group { out.append(a) }
                    return out
                }
                var keys: [String] = []
                for (server, answer) in answers {
                    switch answer {
                    case .success(let v):
                        keys += v
                        if failing.remove(server) != nil { logger.notice("reporting to the control plane at \(server) again") }
                    case .failure(let e):
                        if failing.insert(server).inserted { logger.warning("cannot report to the control plane at \(server): \(e.message)") }
                    }
                }
                if answers.contains(where: { if case .success = $0.1 { true } else { false } }) { plane.setGatewayPeerKeys(keys) }
            } catch {
                logger.warning("cannot build this node's report: \(error.message)")
            }
            try? await Task.sleep(for: .seconds(3))
        }
    }
}

/// The long-running daemon: REST, gRPC, the inventory's change stream, the reconciler and
/// (with PostgreSQL) the connection pool, all in one ServiceGroup with graceful shutdown on
/// SIGTERM and SIGINT.
public enum Daemon {
    /// Rounds of scheduled scans until cancelled: each at its time plus a random part of the
    /// jitter window. Without scanners named in the policy, the known scanners ready here run.
    static func scanSchedule(plane: ControlPlane, policy: SecurityPolicy, logger: Logger) async {
        while !Task.isCancelled {
            let next: Date
            // (The config was checked at load, and "off" runs no schedule: a round is always due.)
            guard let n = try? policy.nextRound(after: Date()) else {
                logger.error("scheduled security scans: no next round for security.schedule '\(policy.schedule ?? "")'")
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                return
            }
            next = n
            let jitter = Double(policy.jitterMinutes ?? SecurityPolicy.defaultJitterMinutes) * 60
            let start = next.addingTimeInterval(jitter > 0 ? Double.random(in: 0..<jitter) : 0)
            do { try await Task.sleep(for: .seconds(max(0, start.timeIntervalSinceNow))) } catch { return }
            let scanners = policy.scanners ?? SecurityScanners.known.filter { plane.service.scannerNames.contains($0) }
            guard !scanners.isEmpty else {
                logger.notice("scheduled security scan skipped: no scanner (clamav, trivy) is enabled here and security.scanners names none")
                continue
            }
            let count = await plane.scheduledScanRound(key: SecurityPolicy.roundKey(next), scanners: scanners)
            if count > 0 { logger.info("scheduled security scan: \(count) environments with \(scanners.joined(separator: ", "))") }
        }
    }

    public static func run(service: EnvironmentService, options: DaemonOptions, logger: Logger) async throws(ContainariumError) {
        let store = try Store.open(databaseURL: options.databaseURL, stateDir: options.stateDir, logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        let postgres = store.db as? PostgresDatabase
        let pool: Task<Void, Never>? = postgres.map { pg in Task { await pg.run() } }
        defer { pool?.cancel() }
        let applied = try await store.migrate()
        logger.info("state: \(store.db.dialect.rawValue)\(postgres.map { " " + $0.redactedURL } ?? ""), migrations applied now: \(applied)")

        let events = DaemonEvents()
        let inventory = Inventory(service: service, events: events, logger: logger)
        let telemetry = options.metricsEnabled ? Telemetry(version: Telemetry.productVersion) : nil
        PluginCallMetrics.install(telemetry?.factory)
        let plane = ControlPlane(service: service, store: store, inventory: inventory, events: events, logger: logger, telemetry: telemetry)
        let tokens = try await Tokens(secret: options.jwtSecret, revocations: plane.revocations)
        let reconciler = Reconciler(plane: plane, grace: options.orphanGrace)

        // Startup reconciliation happens before any request is served.
        if options.reconcilerEnabled {
            do {
                let report = try await reconciler.reconcileOnce()
                logger.info("startup reconcile: \(report)")
            } catch {
                logger.warning("startup reconcile failed (will retry): \(error)")
            }
        }

        services.append(.init(service: TaskService(description: "inventory") { await inventory.run() }))
        // Scheduled security scans: on a control plane (a member's environments are scanned
        // through it), one round per period, claimed by one of the control planes sharing a store.
        let scanPolicy = service.config.security ?? SecurityPolicy()
        if options.join == nil, (try? scanPolicy.parsedSchedule()) != .off {
            let policy = scanPolicy
            services.append(.init(service: TaskService(description: "security-schedule") {
                await Self.scanSchedule(plane: plane, policy: policy, logger: logger)
            }))
        }
        // The cluster: this node (when it has a backend) plus the members that report to it.
        let links = NodeLinks(stateDir: options.stateDir, logger: logger)
        let cluster = Cluster(store: store, localName: service.config.nodeName, policy: options.schedulingPolicy,
                              unhealthyAfter: options.unhealthyAfter, certsDir: options.clusterCertsDir, daemonID: plane.daemonID,
                              links: links, connector: GRPCNodeConnector(), logger: logger)
        try await cluster.load()
        plane.setCluster(cluster)
        // Spot preemption and maintenance notices of node.lifecycle/1 plugins, into this node's reports.
        services.append(.init(service: TaskService(description: "lifecycle") { await plane.followLifecycle() }))
        services.append(.init(service: TaskService(description: "cluster") {
            var tick = 0
            while !Task.isCancelled {
                if tick % 3 == 0, let report = try? await plane.localReport(address: "", token: nil, labels: options.nodeLabels,
                                                                             pool: options.nodePool, preemptible: options.preemptible) {
                    try? await cluster.report(report, local: true)
                }
                cluster.checkHealth()
                if tick % 2 == 0 { await cluster.syncFromStore() }
                tick += 1
                try? await Task.sleep(for: .seconds(1))
            }
        }))
        let gatewayKeys = try options.ssh.map { ssh throws(ContainariumError) in try GatewayKeys.loadOrCreate(dir: ssh.keyDir) }
        if let gatewayKeys { plane.setGatewayUpstreamKey(gatewayKeys.upstreamPublicKey) }
        if let join = options.join {
            try join.checkTransport(file: DaemonOptions.joinFile(stateDir: options.stateDir))
            let credential = NodeCredential(join: join, file: DaemonOptions.joinFile(stateDir: options.stateDir))
            services.append(.init(service: TaskService(description: "node-agent") {
                await NodeAgent(plane: plane, tokens: tokens, join: join, credential: credential, options: options,
                                gatewayHostKey: gatewayKeys?.hostPublicKey, logger: logger).run()
            }))
            // The link: the control plane reaches the local API socket through the connection
            // this node opens to it.
            let apiSocket = DaemonOptions.localSocket(stateDir: options.stateDir)
            guard options.localAPI else { throw ContainariumError(.invalidArgument, "a node's link needs the daemon's local API socket") }
            let localGateway = options.ssh.map { ssh in (host: ["0.0.0.0", "::", ""].contains(ssh.host) ? "127.0.0.1" : ssh.host, port: ssh.port) }
            services.append(.init(service: TaskService(description: "node-link") {
                await NodeLinkAgent(join: join, credential: credential, nodeName: service.config.nodeName, apiSocket: apiSocket, gateway: localGateway,
                                    logger: logger).run()
            }))
        }
        if options.reconcilerEnabled {
            services.append(.init(service: TaskService(description: "reconciler") {
                try? await Task.sleep(for: options.reconcileInterval)
                await reconciler.run(interval: options.reconcileInterval)
            }))
        }
        // Audit retention: by age and by count, at start and hourly.
        if options.auditMaxAgeDays > 0 || options.auditMaxRows > 0 {
            services.append(.init(service: TaskService(description: "audit-retention") {
                while !Task.isCancelled {
                    let before = options.auditMaxAgeDays > 0 ? Date().addingTimeInterval(-Double(options.auditMaxAgeDays) * 86_400) : nil
                    do throws(ContainariumError) {
                        let n = try await store.pruneAudit(before: before, keep: options.auditMaxRows > 0 ? options.auditMaxRows : nil)
                        if n > 0 { logger.info("audit retention removed \(n) entries") }
                    } catch {
                        logger.warning("audit retention failed: \(error.message)")
                    }
                    try? await Task.sleep(for: .seconds(3600))
                }
            }))
        }
        // Usage history for the dashboard's charts: every 15 s (by default), an hour kept.
        services.append(.init(service: TaskService(description: "metrics") {
            while !Task.isCancelled {
                if let list = try? await service.list() { plane.metrics.record(list) }
                // Built-in alert rules over that sample (one evaluator per daemon that reconciles).
                if options.reconcilerEnabled { await plane.evaluateAlerts() }
                try? await Task.sleep(for: options.metricsInterval)
            }
        }))
        // Browser terminals log in like the SSH gateway does (its keys, routes and hops), even
        // when the gateway does not listen.
        do throws(ContainariumError) {
            let keyDir = options.ssh?.keyDir ?? (options.stateDir as NSString).appendingPathComponent("gateway")
            let keys: GatewayKeys
            if let gatewayKeys { keys = gatewayKeys } else { keys = try GatewayKeys.loadOrCreate(dir: keyDir) }
            let directory = ControlPlaneGatewayDirectory(plane: plane)
            let gateway = SSHGateway(options: options.ssh ?? GatewayOptions(), directory: directory, bans: BanList(policy: BanPolicy(), store: store),
                                     keys: keys, logger: logger)
            plane.setTerminalHost(gateway, directory)
        } catch {
            logger.warning("browser terminals are off: \(error.message)")
        }
        if let ssh = options.ssh, let keys = gatewayKeys {
            let bans = BanList(policy: ssh.bans, store: store)
            let directory = ControlPlaneGatewayDirectory(plane: plane)
            services.append(.init(service: SSHGateway(options: ssh, directory: directory, bans: bans, keys: keys, logger: logger,
                                                      meter: GatewayMeter(factory: telemetry?.factory ?? noMetrics))))
            telemetry?.addCollector { text in
                text.family("containarium_gateway_banned_addresses", type: "gauge", help: "Addresses the SSH gateway refuses now (banned).")
                text.sample("containarium_gateway_banned_addresses", [], Double(bans.activeCount()))
            }
            plane.setGateway(SSHConfigExport.Gateway(host: ssh.publicHost, port: ssh.port, hostKey: keys.hostPublicKey))
        }
        if options.restEnabled {
            let rest = RESTAPI(plane: plane, tokens: tokens, swaggerDir: options.swaggerDir, webuiDir: options.webuiDir)
            var tlsConfiguration: TLSConfiguration?
            if let tls = options.restTLS {
                do {
                    let chain = try NIOSSLCertificate.fromPEMFile(tls.certificate).map { NIOSSLCertificateSource.certificate($0) }
                    let key = try NIOSSLPrivateKey(file: tls.key, format: .pem)
                    tlsConfiguration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
                    _ = try NIOSSLContext(configuration: tlsConfiguration ?? .makeClientConfiguration())
                } catch {
                    throw ContainariumError(.invalidArgument, "cannot serve REST over TLS with \(tls.certificate) and \(tls.key)", cause: "\(error)")
                }
            } else {
                logger.warning("REST without --tls-cert/--tls-key: tokens travel in clear unless a TLS proxy is in front")
            }
            // Each connection: counted (and refused past the limits) before anything else, then
            // TLS when configured, then HTTP/1.1 with the WebSocket upgrade.
            let limiter = ConnectionLimiter(total: options.restMaxConnections, perAddress: options.restMaxConnectionsPerAddress,
                                            silence: options.restIdleTimeout)
            let idle = options.restIdleTimeout, tlsConfig = tlsConfiguration
            let server = HTTPServerBuilder { responder in
                let http = HTTP1WebSocketUpgradeChannel(responder: responder, configuration: .init(http1: .init(idleTimeout: idle))) { request, channel, _ in
                    let remote = channel.remoteAddress.map { "\($0.ipAddress ?? "unknown"):\($0.port ?? 0)" } ?? "unknown"
                    return await rest.webSocketUpgrade(request, remote: remote)
                }
                guard let tlsConfig else { return limiter.wrap(http) }
                return limiter.wrap(try TLSChannel(http, tlsConfiguration: tlsConfig))
            }
            let scheme = options.restTLS == nil ? "http" : "https"
            let app = Application(
                responder: rest,
                server: server,
                configuration: ApplicationConfiguration(address: .hostname(options.restHost, port: options.restPort), serverName: "containarium"),
                onServerRunning: { _ in logger.notice("REST API listening on \(scheme)://\(options.restHost):\(options.restPort)") },
                logger: logger)
            services.append(.init(service: app))
        }
        if let listen = options.metricsListen, let telemetry {
            services.append(.init(service: MetricsListener.make(telemetry: telemetry, host: listen.host, port: listen.port, logger: logger)))
        }
        if options.localAPI {
            services.append(.init(service: try GRPCService.nodeAPI(plane: plane, tokens: tokens, socket: DaemonOptions.localSocket(stateDir: options.stateDir),
                                                                   logger: logger)))
        }
        if let grpc = options.grpc {
            services.append(.init(service: try GRPCService.make(plane: plane, tokens: tokens, options: grpc, links: links, logger: logger)))
        }
        services.append(.init(service: TaskService(description: "drain") {
            // Runs until shutdown; then lets in-flight operations finish (bounded).
            try? await gracefulShutdown()
            events.close()
            links.closeAll()  // linked nodes see their link end and dial again
            await plane.drain(timeout: .seconds(30))
        }, successTerminationBehavior: .ignore))

        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            throw ContainariumError(.unavailable, "the daemon stopped with an error", cause: "\(error)")
        }
        await store.db.close()
        logger.notice("daemon stopped")
    }
}
