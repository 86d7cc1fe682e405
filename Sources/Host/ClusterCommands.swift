import ArgumentParser
import ContainariumClient
import ContainariumCore
import ContainariumProto
import ContainariumDaemon
import ContainariumPlatform
import ContainariumScheduler
import Foundation
import SwiftProtobuf

/// Scheduler and membership settings of `containarium daemon`.
struct ClusterFlags: ParsableArguments {
    @Option(name: .customLong("schedule-policy"), help: "binpack (fewest machines, default) or spread (most headroom).")
    var schedulePolicy = "binpack"
    @Option(name: .customLong("cpu-overcommit"), help: "CPU over-commit ratio for placement.") var cpuOvercommit = 4.0
    @Option(name: .customLong("memory-overcommit"), help: "Memory over-commit ratio for placement.") var memoryOvercommit = 1.0
    @Option(name: .customLong("disk-overcommit"), help: "Disk over-commit ratio for placement.") var diskOvercommit = 1.0
    @Option(name: .customLong("node-label"), help: "KEY=VALUE label of this node for placement (repeatable).") var nodeLabels: [String] = []
    @Option(name: .customLong("node-pool"), help: "This node's pool.") var nodePool: String?
    @Flag(help: "This node is preemptible (spot): critical environments avoid it.") var preemptible = false
    @Option(name: .customLong("critical-on-preemptible"), help: "Whether critical environments may land on preemptible nodes: never (default) or last-resort (only when nothing else fits).")
    var criticalOnPreemptible = "never"
    @Option(name: .customLong("unhealthy-after"), help: "Seconds without a report before a member is marked unhealthy.") var unhealthyAfter = 10
    @Option(name: .customLong("cluster-certs-dir"), help: "Client certificates for calls to members that run with --mtls.") var clusterCertsDir: String?

    func apply(to options: inout DaemonOptions) throws {
        guard let strategy = SchedulingPolicy.Strategy(rawValue: schedulePolicy) else { throw fail(.invalid("--schedule-policy must be binpack or spread")) }
        guard cpuOvercommit > 0, memoryOvercommit > 0, diskOvercommit > 0 else { throw fail(.invalid("over-commit ratios must be positive")) }
        guard (2...300).contains(unhealthyAfter) else { throw fail(.invalid("--unhealthy-after must be between 2 and 300 seconds")) }
        guard let critical = SchedulingPolicy.PreemptibleUse(rawValue: criticalOnPreemptible) else {
            throw fail(.invalid("--critical-on-preemptible must be never or last-resort"))
        }
        options.schedulingPolicy = SchedulingPolicy(strategy: strategy, cpuOvercommit: cpuOvercommit, memoryOvercommit: memoryOvercommit,
                                                    diskOvercommit: diskOvercommit, criticalOnPreemptible: critical)
        options.unhealthyAfter = TimeInterval(unhealthyAfter)
        for l in nodeLabels {
            let parts = l.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw fail(.invalid("--node-label must be KEY=VALUE")) }
            options.nodeLabels[parts[0]] = parts[1]
        }
        options.nodePool = nodePool
        options.preemptible = preemptible
        options.clusterCertsDir = clusterCertsDir
    }
}

/// Where `node join` leaves the membership for `containarium daemon` to pick up.
enum JoinFile {
    static func path(_ stateDir: String) -> String { DaemonOptions.joinFile(stateDir: stateDir) }

    static func load(_ stateDir: String) throws -> JoinOptions? {
        let p = path(stateDir)
        guard let data = FileManager.default.contents(atPath: p) else { return nil }
        do { return try JSONDecoder().decode(JoinOptions.self, from: data) } catch {
            throw fail(.invalid("\(p) is not a join file (\(error)); run `containarium node join` again"))
        }
    }
}

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Cluster membership: join a control plane, list, drain, undrain and remove nodes.",
        subcommands: [NodeToken.self, NodeJoin.self, NodeList.self, NodeDrain.self, NodeUndrain.self, NodeRemove.self])
}

struct NodeToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "Mint a token a node joins this control plane with.")
    @Option(help: "The node this token is for: it reports and links only as this node.") var node: String
    @Option(help: "How long the token is valid (e.g. 720h, 90d; node tokens always expire).") var expiry = "720h"
    @Option(name: .customLong("secret-file"), help: "The control plane's JWT secret file.") var secretFile = "/etc/containarium/jwt.secret"

    func run() async throws {
        let token = try await ContainariumCLI.run { () async throws(ContainariumError) -> String in
            let (secret, _) = try JWTSecretSource.resolve(environment: ProcessInfo.processInfo.environment, file: secretFile, flag: nil)
            guard Cluster.validNodeName(node) else { throw .invalid("'\(node)' is not a valid node name (1-63 of a-z 0-9 . -)") }
            guard let lifetime = try Tokens.parseExpiry(expiry) else {
                throw .invalid("node tokens expire: give --expiry as a duration (e.g. 720h); `node remove` revokes them sooner")
            }
            return try await Tokens(secret: secret).generate(username: "node.\(node)", roles: [.node], expiresIn: lifetime)
        }
        print(token)
    }
}

struct NodeJoin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join", abstract: "Make this node report to a control plane (takes effect when `containarium daemon` starts).")
    @Option(help: "The control plane's gRPC address, HOST:PORT. Repeat it for control planes that share one PostgreSQL database: the node reports to each.")
    var server: [String]
    @Option(help: "A token from `containarium node token` on the control plane.") var token: String
    @Option(help: "Optional: this node's gRPC address as the control plane may dial it, HOST:PORT, while the node's link is down. Without it the node needs no inbound port: it dials out and the control plane reaches it through that link.")
    var advertise: String?
    @Option(name: .customLong("certs-dir"), help: "The CA and this node's client certificate (`cert issue --role node`); the control plane runs with --mtls.") var certsDir: String?
    @Flag(name: .customLong("insecure-plaintext"), help: "Report to a control plane without TLS (a test bed only: the node's token travels in clear).") var insecurePlaintext = false
    @Option(name: .customLong("state-dir"), help: "This node's state directory.") var stateDir = "/var/lib/containarium"

    func run() async throws {
        guard !server.isEmpty, server.allSatisfy({ !$0.contains(",") }) else { throw fail(.invalid("give each --server as HOST:PORT")) }
        let join = JoinOptions(server: server.joined(separator: ","), token: token, advertise: advertise, certsDir: certsDir, insecurePlaintext: insecurePlaintext)
        if certsDir != nil && insecurePlaintext { throw fail(.invalid("--certs-dir and --insecure-plaintext exclude each other")) }
        do throws(ContainariumError) { try join.checkTransport(file: "this join") } catch { throw fail(error) }
        // Check every address and the token before writing anything.
        if let advertise { _ = try remoteClient(advertise, certsDir: nil, token: nil) }
        for server in server {
            let client = try remoteClient(server, certsDir: certsDir, token: token)
            do {
                _ = try await client.connect { c in try await c.cluster.listNodes(.init(), metadata: c.metadata) }
            } catch where error.code == .permissionDenied {
                // A node token may not list nodes: it authenticated, which is what we wanted to know.
            } catch {
                throw fail(ContainariumError(error.code, "cannot reach the control plane at \(server): \(error.message)"))
            }
        }
        do {
            try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
            let data = try JSONEncoder().encode(join)
            let path = JoinFile.path(stateDir)
            _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
            try data.write(to: URL(fileURLWithPath: path))
        } catch {
            throw fail(.internal("cannot write \(JoinFile.path(stateDir))", cause: "\(error)"))
        }
        print("✓ this node reports to \(server.joined(separator: " and ")) as soon as `containarium daemon` runs (membership in \(JoinFile.path(stateDir)))")
    }

    func remoteClient(_ server: String, certsDir: String?, token: String?) throws -> ContainariumEndpoint {
        do { return try ContainariumEndpoint(server: server, certsDir: certsDir, token: token) } catch { throw fail(error) }
    }
}

/// Node administration talks to the control plane's gRPC API (default: this machine's).
struct ControlPlaneOptions: ParsableArguments {
    @Option(help: "The control plane's gRPC address (default 127.0.0.1:50051).") var server = "127.0.0.1:50051"
    @Option(name: .customLong("certs-dir"), help: "Client certificates for mTLS.") var certsDir: String?
    @Option(help: "Admin token (default: $CONTAINARIUM_TOKEN).") var token: String?

    /// One call to the control plane's ClusterService.
    func call<R: Sendable>(_ body: (DaemonConnection) async throws -> R) async throws -> R {
        let tok = (token ?? ProcessInfo.processInfo.environment["CONTAINARIUM_TOKEN"]).flatMap { $0.isEmpty ? nil : $0 }
        let endpoint: ContainariumEndpoint
        do { endpoint = try ContainariumEndpoint(server: server, certsDir: certsDir, token: tok) } catch { throw fail(error) }
        return try await endpoint.cli(body)
    }
}

struct NodeList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The cluster's nodes with health, capacity and use.")
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var cp: ControlPlaneOptions

    func run() async throws {
        let v = try await cp.call { c in try await c.cluster.listNodes(.init(), metadata: c.metadata) }
        if format == .json { return try printRemote(v) }
        let rows = v.nodes.map { n -> [String] in
            func cores(_ x: Containarium_V1_NodeResources) -> String { String(format: "%.1f", Double(x.cpuMillis) / 1000) }
            func gib(_ bytes: UInt64) -> String { String(format: "%.0f", Double(bytes) / 1_073_741_824) }
            let state = (n.healthy ? "healthy" : "UNHEALTHY") + (n.draining ? ",draining" : "") + (n.preempted ? ",PREEMPTED(\(n.preemption))" : "")
            return [n.name, n.local ? "(local)" : n.address, state, n.kinds.joined(separator: ","),
                    "\(cores(n.used))/\(cores(n.capacity))", "\(gib(n.used.memoryBytes))/\(gib(n.capacity.memoryBytes))",
                    "\(gib(n.used.diskBytes))/\(gib(n.capacity.diskBytes))", Self.gpuSummary(n.gpus),
                    String(n.environments), n.preemptible ? "yes" : "no"]
        }
        print(Table.render(header: ["NODE", "ADDRESS", "STATE", "KINDS", "CPU", "MEMORY GiB", "DISK GiB", "GPUS", "ENVS", "SPOT"], rows: rows))
    }
}

struct NodeDrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "drain", abstract: "Place nothing new on a node.")
    @Argument var name: String
    @OptionGroup var cp: ControlPlaneOptions
    func run() async throws {
        _ = try await cp.call { c in try await c.cluster.drainNode(.with { $0.name = name }, metadata: c.metadata) }
        print("✓ \(name) is draining: nothing new is placed on it")
    }
}

struct NodeUndrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "undrain", abstract: "Place environments on a node again.")
    @Argument var name: String
    @OptionGroup var cp: ControlPlaneOptions
    func run() async throws {
        _ = try await cp.call { c in try await c.cluster.undrainNode(.with { $0.name = name }, metadata: c.metadata) }
        print("✓ \(name) takes new environments again")
    }
}

struct NodeRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Forget a node (its environments stay on the machine).")
    @Argument var name: String
    @Flag(help: "Even if it still has environments.") var force = false
    @OptionGroup var cp: ControlPlaneOptions
    func run() async throws {
        _ = try await cp.call { c in
            try await c.cluster.removeNode(.with {
                $0.name = name
                $0.force = force
            }, metadata: c.metadata)
        }
        print("✓ \(name) removed from the cluster")
    }
}

extension NodeList {
    /// "used/total model" per model, e.g. "1/2 GH100 [H200 SXM 141GB]"; "-" without GPUs.
    static func gpuSummary(_ gpus: [Containarium_V1_NodeGPU]) -> String {
        guard !gpus.isEmpty else { return "-" }
        var byModel: [String: (used: Int, total: Int)] = [:]
        for g in gpus {
            let model = g.model.isEmpty ? "?" : g.model
            let used = g.attachedTo.isEmpty ? 0 : 1
            byModel[model, default: (0, 0)].used += used
            byModel[model, default: (0, 0)].total += 1
        }
        return byModel.sorted { $0.key < $1.key }.map { "\($0.value.used)/\($0.value.total) \($0.key)" }.joined(separator: "; ")
    }
}

struct ScheduleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "schedule", abstract: "The scheduler's view.", subcommands: [ScheduleExplain.self])
}

struct ScheduleExplain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain", abstract: "For a would-be environment, why each node was filtered out or how it scored.")
    @Option var cpu: String?
    @Option var memory: String?
    @Option var disk: String?
    @Option(name: .customLong("os-type")) var osType: String?
    @Option(help: "GPUs the environment would need.") var gpus: Int?
    @Option(name: .customLong("gpu-model")) var gpuModel: String?
    @Option(help: "Backend kind (lxc, vm); default: the kind of the backend that serves the OS type best.") var kind: String?
    @Option(name: .customLong("label"), help: "node.KEY=VALUE to require a node label (repeatable).") var labels: [String] = []
    @Flag(help: "A critical environment (kept off preemptible nodes).") var critical = false
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var cp: ControlPlaneOptions

    func run() async throws {
        var selected: [String: String] = [:]
        for s in labels {
            let parts = s.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw fail(.invalid("--label must be KEY=VALUE")) }
            selected[parts[0]] = parts[1]
        }
        let request = Containarium_V1_ExplainScheduleRequest.with {
            $0.resources = .with {
                $0.cpu = cpu ?? ""
                $0.memory = memory ?? ""
                $0.disk = disk ?? ""
            }
            if let osType { ($0.osType, $0.os) = APIMessages.osType(osType) }
            $0.gpus = UInt32(clamping: gpus ?? 0)
            $0.gpuModel = gpuModel ?? ""
            $0.kind = kind ?? ""
            $0.labels = selected
            $0.critical = critical
        }
        if let gpus, gpus < 0 { throw fail(.invalid("--gpus must be 0 or more")) }
        let v = try await cp.call { c in try await c.cluster.explainSchedule(request, metadata: c.metadata) }
        if format == .json { return try printRemote(v) }
        print("chosen: \(v.chosen.isEmpty ? "(none: no node passes every filter)" : v.chosen)"
              + (v.backend.isEmpty ? "" : " (backend \(v.backend), kind \(dash(v.request.kind)))"))
        let rows = v.verdicts.map { n -> [String] in
            let parts = n.scoreParts.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.1f", $0.value))" }
            let score = n.filteredBecause.isEmpty ? String(format: "%.2f", n.score) : "-"
            return [n.node, score, n.filteredBecause.isEmpty ? parts.joined(separator: ", ") : "filtered: " + n.filteredBecause.joined(separator: "; ")]
        }
        print(Table.render(header: ["NODE", "SCORE", "WHY"], rows: rows))
    }
}
