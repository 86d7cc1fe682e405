import ArgumentParser
import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import ContainariumGateway
import ContainariumService
import ContainariumStore
import Foundation
import Logging

/// SSH gateway settings shared by `daemon --ssh-port` and `gateway`.
struct GatewayFlags: ParsableArguments {
    @Option(name: .customLong("ssh-host"), help: "SSH gateway listen address.") var sshHost = "0.0.0.0"
    @Option(name: .customLong("gateway-host"), help: "Name clients use to reach the gateway (for `export`).") var gatewayHost: String?
    @Option(name: .customLong("gateway-key-dir"), help: "Where the gateway's host and upstream keys live (default: STATE_DIR/gateway).") var keyDir: String?
    @Option(name: .customLong("ban-failures"), help: "Failed connections from one address that trigger a ban.") var banFailures = 5
    @Option(name: .customLong("ban-window"), help: "Seconds over which failures are counted.") var banWindow = 600
    @Option(name: .customLong("ban-duration"), help: "Seconds a ban lasts.") var banDuration = 3600
    @Option(name: .customLong("login-grace"), help: "Seconds a connection may take to authenticate.") var loginGrace = 30

    func options(port: Int, stateDir: String) throws -> GatewayOptions {
        guard (0...65535).contains(port) else { throw fail(.invalid("--ssh-port must be between 0 and 65535")) }
        guard banFailures >= 1, banWindow >= 1, banDuration >= 1, loginGrace >= 1 else {
            throw fail(.invalid("--ban-failures, --ban-window, --ban-duration and --login-grace must be positive"))
        }
        var o = GatewayOptions()
        o.host = sshHost
        o.port = port
        o.keyDir = keyDir ?? (stateDir as NSString).appendingPathComponent("gateway")
        o.bans = BanPolicy(maxFailures: banFailures, window: TimeInterval(banWindow), banDuration: TimeInterval(banDuration))
        o.loginGrace = TimeInterval(loginGrace)
        o.publicHost = gatewayHost ?? ProcessInfo.processInfo.hostName
        return o
    }
}

struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway", abstract: "The SSH gateway: one SSH endpoint that routes each user to their own environment.",
        subcommands: [GatewayServe.self, GatewayBans.self], defaultSubcommand: GatewayServe.self)
}

struct GatewayServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the SSH gateway on its own (`daemon --ssh-port` runs it inside the daemon).")
    @Option(name: .customLong("ssh-port"), help: "SSH port.") var sshPort = 2222
    @Option(name: .customLong("state-dir"), help: "Directory of the embedded SQLite state (shared with the daemon).") var stateDir = "/var/lib/containarium"
    @Option(name: .customLong("database-url"), help: "The daemon's PostgreSQL URL, when it uses one.") var databaseURL: String?
    @OptionGroup var gateway: GatewayFlags
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let service = try global.service()
        // No API is served, so no token is ever checked: an unguessable throwaway secret.
        var options = DaemonOptions(jwtSecret: Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString())
        options.restEnabled = false
        options.grpc = nil
        options.reconcilerEnabled = false
        options.localAPI = false  // the daemon sharing this state serves it
        options.stateDir = stateDir
        options.databaseURL = databaseURL
        options.ssh = try gateway.options(port: sshPort, stateDir: stateDir)
        let logger = Logger(label: "containarium.gateway")
        try await ContainariumCLI.run { () async throws(ContainariumError) in
            try await Daemon.run(service: service, options: options, logger: logger)
        }
    }
}

struct GatewayBans: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bans", abstract: "List the addresses the gateway refuses, or lift a ban.")
    @Option(help: "Lift the ban on this address.") var unban: String?
    @Option(help: "Output format.") var format: OutputFormat = .table
    @Option(name: .customLong("state-dir"), help: "Directory of the embedded SQLite state.") var stateDir = "/var/lib/containarium"
    @Option(name: .customLong("database-url"), help: "The daemon's PostgreSQL URL, when it uses one.") var databaseURL: String?

    func run() async throws {
        let (bans, lifted) = try await ContainariumCLI.run { () async throws(ContainariumError) -> ([GatewayBanRecord], Bool?) in
            let store = try Store.open(databaseURL: databaseURL, stateDir: stateDir, logger: Logger(label: "containarium.gateway"))
            let pg = store.db as? PostgresDatabase
            let pool = pg.map { p in Task { await p.run() } }
            defer { pool?.cancel() }
            guard !(try await store.db.appliedVersions()).isEmpty else { throw .notFound("no state database at \(databaseURL ?? stateDir) (has the daemon run?)") }
            _ = try await store.migrate()
            if let unban {
                let ok = try await store.deleteBan(unban)
                if ok {
                    try await store.appendAudit(AuditEntry(actor: LocalAudit.actor, role: "admin", action: "gateway.unban", target: "-", source: unban,
                                                           interface: "cli", result: "ok", detail: "ban lifted"))
                }
                return ([], ok)
            }
            return (try await store.activeBans(), nil)
        }
        if let lifted {
            guard lifted else { throw fail(.notFound("\(unban ?? "") is not banned")) }
            print("✓ lifted the ban on \(unban ?? ""); a running gateway stops refusing it within 2 seconds")
            return
        }
        if format == .json { return try printJSON(["bans": bans]) }
        let f = ISO8601DateFormatter()
        print(Table.render(header: ["ADDRESS", "BANNED AT", "UNTIL", "FAILURES"],
                           rows: bans.map { [$0.address, f.string(from: $0.bannedAt), f.string(from: $0.until), String($0.failures)] }))
    }
}

/// The daemon running on this machine for a state directory, reached through its local API
/// socket: when one runs, verbs that need the daemon's bookkeeping go through it (its store,
/// PostgreSQL or SQLite, its audit log, its cluster), never around it.
enum LocalDaemon {
    static func call<T: Decodable>(_ client: RemoteClient, _ method: String, _ request: [String: JSONValue]) async throws -> T {
        try await ContainariumCLI.run { () async throws(ContainariumError) -> T in
            let v = try await client.call(method, .object(request))
            return try WireJSON.decode(T.self, from: WireJSON.encode(v))
        }
    }
}

/// The control plane, in this process, for CLI verbs that need the daemon's bookkeeping
/// (collaborators live in the state database and inside the environment) when no daemon runs.
enum LocalPlane {
    static func with<T: Sendable>(_ global: GlobalOptions, stateDir: String,
                                  _ body: (ControlPlane, Caller) async throws(ContainariumError) -> T) async throws -> T {
        let service = try global.service()
        return try await ContainariumCLI.run { () async throws(ContainariumError) -> T in
            let logger = Logger(label: "containarium")
            let store = try Store.open(databaseURL: nil, stateDir: stateDir, logger: logger)
            _ = try await store.migrate()
            let events = DaemonEvents()
            let inventory = Inventory(service: service, events: events, logger: logger)
            try await inventory.refreshAll()
            let plane = ControlPlane(service: service, store: store, inventory: inventory, events: events, logger: logger)
            let caller = Caller(subject: LocalAudit.actor, role: .admin, source: "local", interface: "cli")
            defer { events.close() }
            let result = try await body(plane, caller)
            await store.db.close()
            return result
        }
    }
}

struct CollaboratorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collaborator", abstract: "Share an environment: each collaborator gets an account of their own inside it.",
        subcommands: [CollaboratorAdd.self, CollaboratorList.self, CollaboratorRemove.self])
}

struct CollaboratorAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a collaborator (by default they may only become the owner, with a logged `sudo su - OWNER`).")
    @Argument(help: "The environment's owner.") var owner: String
    @Argument(help: "The collaborator's user name.") var collaborator: String
    @Option(name: .customLong("ssh-key"), help: "The collaborator's public key file (Ed25519 or ECDSA).") var sshKey: String
    @Flag(help: "Give the collaborator full sudo.") var sudo = false
    @Flag(name: .customLong("container-runtime"), help: "Let the collaborator use Docker.") var containerRuntime = false
    @Option(name: .customLong("state-dir"), help: "Directory of the embedded SQLite state.") var stateDir = "/var/lib/containarium"
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        let text: String
        do {
            text = try String(contentsOfFile: (sshKey as NSString).expandingTildeInPath, encoding: .utf8)
        } catch {
            throw fail(.invalid("cannot read the key file \(sshKey): \(error.localizedDescription)"))
        }
        if let client = try remote.client() {
            let v = try await ContainariumCLI.run { () async throws(ContainariumError) in
                try await client.call("AddCollaborator", .object([
                    "username": .string(owner), "collaboratorUsername": .string(collaborator), "sshPublicKey": .string(text),
                    "sudo": .bool(sudo), "containerRuntime": .bool(containerRuntime)]))
            }
            return try printRemote(v)
        }
        let view: CollaboratorView
        if let daemon = RemoteClient(localDaemon: stateDir) {
            view = try await LocalDaemon.call(daemon, "AddCollaborator", [
                "username": .string(owner), "collaboratorUsername": .string(collaborator), "sshPublicKey": .string(text),
                "sudo": .bool(sudo), "containerRuntime": .bool(containerRuntime)])
        } else {
            view = try await LocalPlane.with(global, stateDir: stateDir) { plane, caller throws(ContainariumError) in
                try await plane.addCollaborator(caller, owner, collaborator: collaborator, sshKey: text, sudo: sudo, containerRuntime: containerRuntime)
            }
        }
        let access = view.sudo ? "full sudo" : "may become \(owner) with a logged `sudo su - \(owner)`"
        print("✓ \(view.collaboratorUsername) collaborates on \(owner)'s environment (\(access)\(view.containerRuntime ? ", docker" : ""))")
        print("  connect: ssh \(owner)@<gateway> -p <port>   (with \(view.collaboratorUsername)'s key)")
    }
}

struct CollaboratorList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List an environment's collaborators.")
    @Argument var owner: String
    @Option(help: "Output format.") var format: OutputFormat = .table
    @Option(name: .customLong("state-dir"), help: "Directory of the embedded SQLite state.") var stateDir = "/var/lib/containarium"
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.client() {
            let v = try await ContainariumCLI.run { () async throws(ContainariumError) in
                try await client.call("ListCollaborators", .object(["username": .string(owner)]))
            }
            return try printRemote(v)
        }
        let list: [CollaboratorView]
        if let daemon = RemoteClient(localDaemon: stateDir) {
            let answer: [String: [CollaboratorView]] = try await LocalDaemon.call(daemon, "ListCollaborators", ["username": .string(owner)])
            list = answer["collaborators"] ?? []
        } else {
            list = try await LocalPlane.with(global, stateDir: stateDir) { plane, caller throws(ContainariumError) in
                try await plane.listCollaborators(caller, owner)
            }
        }
        if format == .json { return try printJSON(["collaborators": list]) }
        let f = ISO8601DateFormatter()
        print(Table.render(header: ["COLLABORATOR", "ACCESS", "DOCKER", "ADDED BY", "ADDED"],
                           rows: list.map { [$0.collaboratorUsername, $0.sudo ? "sudo" : "su - \(owner) (logged)", $0.containerRuntime ? "yes" : "no",
                                             $0.addedBy, f.string(from: $0.addedAt)] }))
    }
}

struct CollaboratorRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a collaborator and their account.")
    @Argument var owner: String
    @Argument var collaborator: String
    @Option(name: .customLong("state-dir"), help: "Directory of the embedded SQLite state.") var stateDir = "/var/lib/containarium"
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.client() {
            _ = try await ContainariumCLI.run { () async throws(ContainariumError) in
                try await client.call("RemoveCollaborator", .object(["username": .string(owner), "collaboratorUsername": .string(collaborator)]))
            }
        } else if let daemon = RemoteClient(localDaemon: stateDir) {
            let _: [String: JSONValue] = try await LocalDaemon.call(daemon, "RemoveCollaborator", ["username": .string(owner), "collaboratorUsername": .string(collaborator)])
        } else {
            try await LocalPlane.with(global, stateDir: stateDir) { plane, caller throws(ContainariumError) in
                try await plane.removeCollaborator(caller, owner, collaborator: collaborator)
            }
        }
        print("✓ \(collaborator) no longer collaborates on \(owner)'s environment")
    }
}
