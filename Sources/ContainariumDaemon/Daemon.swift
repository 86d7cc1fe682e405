public import ContainariumCore
public import ContainariumService
public import ContainariumGateway
import ContainariumStore
public import Foundation
import Hummingbird
public import Logging
import PluginHost
import ServiceLifecycle
import UnixSignals

/// Everything `containarium daemon` needs to start.
public struct DaemonOptions: Sendable {
    public var restHost = "0.0.0.0"
    public var restPort = 8080
    public var restEnabled = true
    public var stateDir = "/var/lib/containarium"
    public var databaseURL: String?
    public var jwtSecret: String
    public var reconcileInterval: Duration = .seconds(60)
    /// Age after which a half-made container nobody is creating is removed.
    public var orphanGrace: TimeInterval = 300
    public var swaggerDir: String?
    public var grpc: GRPCOptions?
    /// The SSH gateway, when set (`--ssh-port`, or `containarium gateway`).
    public var ssh: GatewayOptions?
    /// Off for a gateway-only process sharing state with a daemon: one reconciler is enough.
    public var reconcilerEnabled = true

    public init(jwtSecret: String) { self.jwtSecret = jwtSecret }
}

/// A closure as a ServiceLifecycle service that stops on graceful shutdown.
struct TaskService: Service, CustomStringConvertible {
    let description: String
    let body: @Sendable () async -> Void
    func run() async throws {
        await cancelWhenGracefulShutdown { await body() }
    }
}

/// The long-running daemon: REST, gRPC, the inventory's change stream, the reconciler and
/// (with PostgreSQL) the connection pool, all in one ServiceGroup with graceful shutdown on
/// SIGTERM and SIGINT.
public enum Daemon {
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
        let plane = ControlPlane(service: service, store: store, inventory: inventory, events: events, logger: logger)
        let tokens = try await Tokens(secret: options.jwtSecret)
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
        if options.reconcilerEnabled {
            services.append(.init(service: TaskService(description: "reconciler") {
                try? await Task.sleep(for: options.reconcileInterval)
                await reconciler.run(interval: options.reconcileInterval)
            }))
        }
        if let ssh = options.ssh {
            let keys = try GatewayKeys.loadOrCreate(dir: ssh.keyDir)
            let bans = BanList(policy: ssh.bans, store: store)
            let directory = ControlPlaneGatewayDirectory(plane: plane)
            services.append(.init(service: SSHGateway(options: ssh, directory: directory, bans: bans, keys: keys, logger: logger)))
            plane.setGateway(SSHConfigExport.Gateway(host: ssh.publicHost, port: ssh.port, hostKey: keys.hostPublicKey))
        }
        if options.restEnabled {
            let app = Application(
                responder: RESTAPI(plane: plane, tokens: tokens, swaggerDir: options.swaggerDir),
                configuration: ApplicationConfiguration(address: .hostname(options.restHost, port: options.restPort), serverName: "containarium"),
                onServerRunning: { _ in logger.notice("REST API listening on \(options.restHost):\(options.restPort)") },
                logger: logger)
            services.append(.init(service: app))
        }
        if let grpc = options.grpc {
            services.append(.init(service: try GRPCService.make(plane: plane, tokens: tokens, options: grpc, logger: logger)))
        }
        services.append(.init(service: TaskService(description: "drain") {
            // Runs until shutdown; then lets in-flight operations finish (bounded).
            try? await gracefulShutdown()
            events.close()
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
