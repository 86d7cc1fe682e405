import ArgumentParser
import ContainariumClient
import ContainariumCore
import ContainariumProto
import ContainariumDaemon
import ContainariumGateway
import ContainariumService
import Foundation
import SwiftProtobuf
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
    @Option(name: .customLong("max-connections"), help: "Gateway connections open at once, in all.") var maxConnections = 1024
    @Option(name: .customLong("max-startups"), help: "Gateway connections from one address that have not logged in yet.") var maxStartups = 16
    @Option(name: .customLong("trusted-proxy"), help: "An IP address (the sentinel's) whose connections start with a PROXY protocol header naming the real client (repeatable).") var trustedProxies: [String] = []

    func options(port: Int, stateDir: String) throws -> GatewayOptions {
        guard (0...65535).contains(port) else { throw fail(.invalid("--ssh-port must be between 0 and 65535")) }
        guard banFailures >= 1, banWindow >= 1, banDuration >= 1, loginGrace >= 1, maxConnections >= 1, maxStartups >= 1 else {
            throw fail(.invalid("--ban-failures, --ban-window, --ban-duration, --login-grace, --max-connections and --max-startups must be positive"))
        }
        var o = GatewayOptions()
        o.host = sshHost
        o.port = port
        o.keyDir = keyDir ?? (stateDir as NSString).appendingPathComponent("gateway")
        o.bans = BanPolicy(maxFailures: banFailures, window: TimeInterval(banWindow), banDuration: TimeInterval(banDuration))
        o.loginGrace = TimeInterval(loginGrace)
        o.maxConnections = maxConnections
        o.maxStartupsPerAddress = maxStartups
        o.publicHost = gatewayHost ?? ProcessInfo.processInfo.hostName
        for p in trustedProxies {
            guard IPv4Address(p) != nil || (p.contains(":") && p.allSatisfy({ $0.isHexDigit || $0 == ":" })) else {
                throw fail(.invalid("--trusted-proxy '\(p)' is not an IP address"))
            }
        }
        o.trustedProxies = Set(trustedProxies)
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
    static let configuration = CommandConfiguration(
        commandName: "bans", abstract: "List the addresses the gateway refuses, or lift a ban (through the daemon; admin).")
    @Option(help: "Lift the ban on this address.") var unban: String?
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard let client = try remote.daemon() else {
            throw fail(LocalDaemon.notRunning(remote.stateDir, "the gateway's bans are kept by the daemon"))
        }
        if let unban {
            _ = try await client.cli { c in try await c.system.liftGatewayBan(.with { $0.address = unban }, metadata: c.metadata) }
            print("✓ lifted the ban on \(unban); a running gateway stops refusing it within 2 seconds")
            return
        }
        let answer = try await client.cli { c in try await c.system.listGatewayBans(.init(), metadata: c.metadata) }
        if format == .json { return try printRemote(answer) }
        let f = ISO8601DateFormatter()
        print(Table.render(header: ["ADDRESS", "BANNED AT", "UNTIL", "FAILURES"],
                           rows: answer.bans.map { [$0.address, f.string(from: $0.bannedAt.date), f.string(from: $0.until.date), String($0.failures)] }))
    }
}

/// The daemon running on this machine for a state directory, reached through its local API
/// socket: when one runs, verbs go through it (its store, PostgreSQL or SQLite, its audit log,
/// its cluster), never around it.
enum LocalDaemon {
    /// --state-dir, else $CONTAINARIUM_STATE_DIR, else /var/lib/containarium.
    static func stateDir(_ given: String?) -> String {
        if let given, !given.isEmpty { return given }
        if let env = ProcessInfo.processInfo.environment["CONTAINARIUM_STATE_DIR"], !env.isEmpty { return env }
        return "/var/lib/containarium"
    }

    /// For verbs only a daemon can answer: no --server and none running here.
    static func notRunning(_ stateDir: String?, _ why: String) -> ContainariumError {
        .init(.failedPrecondition, "\(why): no daemon runs for \(Self.stateDir(stateDir)) (start `containarium daemon`, give its --state-dir, or use --server)")
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
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        let text: String
        do {
            text = try String(contentsOfFile: (sshKey as NSString).expandingTildeInPath, encoding: .utf8)
        } catch {
            throw fail(.invalid("cannot read the key file \(sshKey): \(error.localizedDescription)"))
        }
        let client = try Collaborators.daemon(remote)
        let request = Containarium_V1_AddCollaboratorRequest.with {
            $0.username = owner
            $0.collaboratorUsername = collaborator
            $0.sshPublicKey = text
            $0.sudo = sudo
            $0.containerRuntime = containerRuntime
        }
        let view = try await client.cli { c in try await c.containers.addCollaborator(request, metadata: c.metadata) }
        if format == .json { return try printRemote(view) }
        let access = view.sudo ? "full sudo" : "may become \(owner) with a logged `sudo su - \(owner)`"
        print("✓ \(view.collaboratorUsername) collaborates on \(owner)'s environment (\(access)\(view.containerRuntime ? ", docker" : ""))")
        print("  connect: ssh \(owner)@<gateway> -p <port>   (with \(view.collaboratorUsername)'s key)")
    }
}

/// Collaborators are the daemon's bookkeeping (its database and the environment's accounts
/// together): these verbs always go through a daemon.
enum Collaborators {
    static func daemon(_ remote: RemoteOptions) throws -> ContainariumEndpoint {
        guard let client = try remote.daemon() else { throw fail(LocalDaemon.notRunning(remote.stateDir, "collaborators are kept by the daemon")) }
        return client
    }
}

struct CollaboratorList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List an environment's collaborators.")
    @Argument var owner: String
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        let answer = try await Collaborators.daemon(remote).cli { c in
            try await c.containers.listCollaborators(.with { $0.username = owner }, metadata: c.metadata)
        }
        if format == .json { return try printRemote(answer) }
        let list = answer.collaborators
        let f = ISO8601DateFormatter()
        print(Table.render(header: ["COLLABORATOR", "ACCESS", "DOCKER", "ADDED BY", "ADDED"],
                           rows: list.map { [$0.collaboratorUsername, $0.sudo ? "sudo" : "su - \(owner) (logged)", $0.containerRuntime ? "yes" : "no",
                                             $0.addedBy, f.string(from: $0.addedAt.date)] }))
    }
}

struct CollaboratorRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a collaborator and their account.")
    @Argument var owner: String
    @Argument var collaborator: String
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        _ = try await Collaborators.daemon(remote).cli { c in
            try await c.containers.removeCollaborator(.with {
                $0.username = owner
                $0.collaboratorUsername = collaborator
            }, metadata: c.metadata)
        }
        print("✓ \(collaborator) no longer collaborates on \(owner)'s environment")
    }
}
