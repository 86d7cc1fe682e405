import ArgumentParser
import ContainariumClient
import ContainariumCore
import ContainariumGateway
import ContainariumDaemon
import ContainariumPlatform
import ContainariumProto
import ContainariumService
import Foundation
import SwiftProtobuf

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List environments on this node.")

    @Option(help: "Output format.")
    var format: OutputFormat = .table

    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.client() {
            let v = try await client.cli { c in try await c.containers.listContainers(.init(), metadata: c.metadata) }
            if format == .json { return try printRemote(v) }
            let rows = v.containers.map { c in
                [c.name, c.labels["containarium.unreachable"] == "true" ? "UNREACHABLE" : stateWord(c.state),
                 dash(c.network.ipAddress), dash(c.owner), dash(c.node), dash(c.backend)]
            }
            print(Table.render(header: ["NAME", "STATE", "IPV4", "OWNER", "NODE", "BACKEND"], rows: rows))
            if rows.isEmpty { print("(no environments)") }
            return
        }
        let service = try global.service()
        let all = try await ContainariumCLI.run { () async throws(ContainariumError) in try await service.list() }
        if format == .json { return try printJSON(["containers": all]) }
        let rows = all.map { i in
            [
                i.name, i.state.rawValue.uppercased(), i.address ?? i.ipv4.first ?? "-", i.cpuLimit ?? "-",
                i.memoryLimitBytes.map { ByteSize.format($0) } ?? "-", i.diskLimitBytes.map { ByteSize.format($0) } ?? "-",
                i.autostart ? "yes" : "no",
            ]
        }
        print(Table.render(header: ["NAME", "STATE", "IPV4", "CPU", "MEMORY", "DISK", "AUTOSTART"], rows: rows))
        if all.isEmpty { print("(no environments)") }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show an environment's state, address, limits and usage.")

    @Argument var username: String
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.client() {
            return try printRemote(await client.cli { c in try await c.containers.getContainer(.with { $0.username = username }, metadata: c.metadata) })
        }
        let service = try global.service()
        let i = try await ContainariumCLI.run { () async throws(ContainariumError) in try await service.info(username: username) }
        if format == .json { return try printJSON(i) }
        func pct(_ used: UInt64?, _ limit: UInt64?) -> String {
            guard let used else { return "-" }
            guard let limit, limit > 0 else { return ByteSize.format(used) }
            return "\(ByteSize.format(used)) / \(ByteSize.format(limit)) (\(Int(Double(used) / Double(limit) * 100))%)"
        }
        print("""
            Container: \(i.name)
            Status: \(i.state.rawValue)
            User: \(i.labels["owner"] ?? username)
            IP Address: \(i.ipv4.isEmpty ? "-" : i.ipv4.joined(separator: ", "))
            Image: \(i.image ?? "-")
            CPU: \(i.cpuLimit ?? "unlimited")\(i.cpuUsageNanoseconds.map { String(format: " (%.1fs used)", Double($0) / 1e9) } ?? "")
            Memory: \(pct(i.memoryUsageBytes, i.memoryLimitBytes))
            Disk: \(pct(i.diskUsageBytes, i.diskLimitBytes))
            Processes: \(i.processes.map(String.init) ?? "-")
            Uptime: \(i.uptime().map(Duration.human) ?? "-")
            Auto-start: \(i.autostart ? "Enabled" : "Disabled")
            Nesting: \(i.nesting ? "Enabled" : "Disabled")
            Backend: \(i.backend ?? "-") on \(i.node ?? "-")
            """)
        let extra = i.labels.filter { $0.key != "owner" }.sorted { $0.key < $1.key }
        if !extra.isEmpty { print("Labels: " + extra.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")) }
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete an environment and all its data.")

    @Argument var username: String
    @Flag(help: "Do not ask for confirmation; stop the environment first if it runs.") var force = false
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        let user = try await ContainariumCLI.run { () async throws(ContainariumError) in try Username(username) }
        if !force {
            guard isatty(STDIN_FILENO) == 1 else {
                throw fail(.init(.failedPrecondition, "refusing to delete \(user.containerName) without confirmation; pass --force"))
            }
            print("Delete \(user.containerName) and all its data? [y/N] ", terminator: "")
            fflush(nil)
            guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                print("Aborted.")
                return
            }
        }
        if let client = try remote.daemon(global) {
            _ = try await client.cli { c in
                try await c.containers.deleteContainer(.with {
                    $0.username = username
                    $0.force = true
                }, metadata: c.metadata)
            }
            print("✓ Container \(user.containerName) deleted")
            return
        }
        let service = try global.service()
        try await ContainariumCLI.run { () async throws(ContainariumError) in try await service.delete(username: username, force: true) }
        print("✓ Container \(user.containerName) deleted")
    }
}

struct Start: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start an environment.")
    @Argument var username: String
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.daemon(global) {
            let v = try await client.cli { c in try await c.containers.startContainer(.with { $0.username = username }, metadata: c.metadata) }
            print("✓ \(v.name) is \(stateWord(v.state))")
            return
        }
        let service = try global.service()
        let i = try await ContainariumCLI.run { () async throws(ContainariumError) in try await service.start(username: username) }
        print("✓ \(i.name) is \(i.state.rawValue.lowercased())")
    }
}

struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop an environment (clean shutdown; --force kills it).")
    @Argument var username: String
    @Flag(help: "Kill instead of shutting down cleanly.") var force = false
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.daemon(global) {
            let v = try await client.cli { c in
                try await c.containers.stopContainer(.with {
                    $0.username = username
                    $0.force = force
                }, metadata: c.metadata)
            }
            print("✓ \(v.name) is \(stateWord(v.state))")
            return
        }
        let service = try global.service()
        let i = try await ContainariumCLI.run { () async throws(ContainariumError) in try await service.stop(username: username, force: force) }
        print("✓ \(i.name) is \(i.state.rawValue.lowercased())")
    }
}

struct Restart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restart an environment.")
    @Argument var username: String
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.daemon(global) {
            let v = try await client.cli { c in try await c.containers.restartContainer(.with { $0.username = username }, metadata: c.metadata) }
            print("✓ \(v.name) is \(stateWord(v.state))")
            return
        }
        let service = try global.service()
        let i = try await ContainariumCLI.run { () async throws(ContainariumError) in try await service.restart(username: username) }
        print("✓ \(i.name) is \(i.state.rawValue.lowercased())")
    }
}

struct Resize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Change CPU, memory or disk live, without a restart.")

    @Argument var username: String
    @Option(help: "CPUs: a count (4), a range (2-4) or a list to pin (0,2).") var cpu: String?
    @Option(help: "Memory limit, e.g. 8GB, 4096MB, 8GiB.") var memory: String?
    @Option(name: [.customLong("disk"), .customLong("disk-quota")], help: "Disk quota; never below current usage.") var disk: String?
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func validate() throws {
        if cpu == nil && memory == nil && disk == nil { throw ValidationError("give at least one of --cpu, --memory, --disk") }
    }

    func run() async throws {
        if let client = try remote.daemon(global) {
            let request = Containarium_V1_ResizeContainerRequest.with {
                $0.username = username
                $0.resources = .with {
                    $0.cpu = cpu ?? ""
                    $0.memory = memory ?? ""
                    $0.disk = disk ?? ""
                }
            }
            let v = try await client.cli { c in try await c.containers.resizeContainer(request, metadata: c.metadata) }
            print("""
                ✓ Container \(v.name) resized successfully (no restart required)
                Updated configuration:
                  CPU: \(v.resources.cpu.isEmpty ? "unlimited" : v.resources.cpu)
                  Memory: \(v.resources.memory.isEmpty ? "unlimited" : v.resources.memory)
                  Disk: \(v.resources.disk.isEmpty ? "pool default" : v.resources.disk)
                """)
            return
        }
        let service = try global.service()
        if global.verbose {
            print("Resizing container: \(username)-container")
            if let cpu { print("Setting CPU limit: \(cpu)") }
            if let memory { print("Setting memory limit: \(memory)") }
            if let disk { print("Setting disk quota: \(disk)") }
        }
        let i = try await ContainariumCLI.run { () async throws(ContainariumError) in
            try await service.resize(username: username, cpu: cpu, memory: memory, disk: disk)
        }
        print("""
            ✓ Container \(i.name) resized successfully (no restart required)
            Updated configuration:
              CPU: \(i.cpuLimit ?? "unlimited")
              Memory: \(i.memoryLimitBytes.map { ByteSize.format($0) } ?? "unlimited")
              Disk: \(i.diskLimitBytes.map { ByteSize.format($0) } ?? "pool default")
            """)
    }
}

struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a command inside an environment (no shell in between).")

    @Argument var username: String
    @Flag(name: .customLong("as-user"), help: "Run as the environment's user instead of root.") var asUser = false
    @Argument(parsing: .postTerminator, help: "The command, after --.") var command: [String] = []
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func validate() throws {
        if command.isEmpty { throw ValidationError("give the command after --, e.g. containarium exec alice -- id") }
    }

    func run() async throws {
        let r: ExecResult
        if let client = try remote.daemon(global) {
            let request = Containarium_V1_ExecRequest.with {
                $0.username = username
                $0.command = command
                $0.asUser = asUser
            }
            let v = try await client.cli { c in try await c.containers.exec(request, metadata: c.metadata) }
            r = ExecResult(exitCode: v.exitCode, stdout: v.stdout, stderr: v.stderr)
        } else {
            let service = try global.service()
            r = try await ContainariumCLI.run { () async throws(ContainariumError) in
                try await service.exec(username: username, command: command, asUser: asUser)
            }
        }
        FileHandle.standardOutput.write(Data(r.stdout.utf8))
        FileHandle.standardError.write(Data(r.stderr.utf8))
        if r.exitCode != 0 { throw ExitCode(r.exitCode) }
    }
}

/// The sign-in secret of one's own VM (its Administrator password): printed to stdout only
/// when asked for with --show, so it does not land in a terminal's scrollback by accident.
struct Credentials: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show how to sign in to a user's VM: its account and, with --show, its password (owner or admin only).")

    @Argument var username: String
    @Flag(help: "Print the password (otherwise only the account and protocol).") var show = false
    @Flag(help: "Print JSON {username, account, password, protocol} (the password only with --show).") var json = false
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        let c: InstanceCredentials
        // Through the daemon (this node's or --server's) whenever one runs: it authorizes and
        // audits the read. Only with no daemon does root on this node read it alone.
        if let client = try remote.daemon(global) {
            let r = try await client.cli { c in try await c.containers.getCredentials(.with { $0.username = username }, metadata: c.metadata) }
            c = InstanceCredentials(username: r.account, password: r.password, protocol: r.protocol.isEmpty ? nil : r.protocol)
        } else {
            let service = try global.service()
            c = try await ContainariumCLI.run { () async throws(ContainariumError) in try await service.credentials(username: username) }
        }
        if json {
            let object: [String: String] = ["username": username, "account": c.username, "password": show ? c.password : "", "protocol": c.protocol ?? ""]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("account:  \(c.username)")
        if let p = c.protocol { print("protocol: \(p)") }
        print(show ? "password: \(c.password)" : "password: (hidden; add --show to print it)")
    }
}

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the SSH client configuration for a user's environment.")

    @Argument var username: String
    @Option(name: .customLong("jump-ip"), help: "Public address of a jump host (the reference's layout).") var jumpIP: String?
    @Option(help: "The SSH gateway as HOST[:PORT] (default port 2222); its host key is read from --gateway-key-dir.") var gateway: String?
    @Option(name: .customLong("gateway-key-dir"), help: "The gateway's key directory.") var gatewayKeyDir = "/var/lib/containarium/gateway"
    @Option(help: "Path of the user's private key (default ~/.ssh/containarium_<user>).") var key: String?
    @Option(help: "Write to this file instead of stdout.") var output: String?
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        let text: String
        if let client = try remote.client() {
            let request = Containarium_V1_ExportSSHConfigRequest.with {
                $0.username = username
                $0.jumpHost = jumpIP ?? ""
                $0.gatewayHost = gateway.map { String($0.split(separator: ":").first ?? "") } ?? ""
                $0.keyPath = key ?? ""
            }
            text = try await client.cli { c in try await c.containers.exportSSHConfig(request, metadata: c.metadata) }.config
        } else {
            let service = try global.service()
            let endpoint = try gatewayEndpoint()
            text = try await ContainariumCLI.run { () async throws(ContainariumError) in
                try await service.exportSSHConfig(username: username, jumpHost: jumpIP, keyPath: key, gateway: endpoint)
            }
        }
        if let output {
            let url = URL(fileURLWithPath: (output as NSString).expandingTildeInPath)
            do {
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(text.utf8).write(to: url, options: .atomic)
            } catch {
                throw fail(.init(.invalidArgument, "cannot write \(output)", cause: error.localizedDescription))
            }
            print("✓ SSH configuration written to \(output)")
        } else {
            print(text, terminator: "")
        }
    }
}

extension Export {
    /// HOST[:PORT] plus the host key the gateway on this node generated.
    func gatewayEndpoint() throws -> SSHConfigExport.Gateway? {
        guard let gateway else { return nil }
        var host = gateway, port = 2222
        if let colon = gateway.lastIndex(of: ":"), !gateway.hasSuffix("]"), gateway.filter({ $0 == ":" }).count == 1 {
            host = String(gateway[..<colon])
            guard let p = Int(gateway[gateway.index(after: colon)...]) else { throw fail(.invalid("--gateway must be HOST[:PORT]")) }
            port = p
        }
        do {
            return SSHConfigExport.Gateway(host: host, port: port, hostKey: try GatewayKeys.hostPublicKey(dir: gatewayKeyDir))
        } catch {
            throw fail(error)
        }
    }
}

struct InstallStack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "install-stack", abstract: "Install a software stack into an environment.")
    @Argument var username: String
    @Argument var stack: String
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.daemon(global) {
            let v = try await client.cli { c in
                try await c.containers.installStack(.with {
                    $0.username = username
                    $0.stack = stack
                }, metadata: c.metadata)
            }
            print("✓ Stack \(stack) installed: \(v.check)")
            return
        }
        let service = try global.service()
        let r = try await ContainariumCLI.run { () async throws(ContainariumError) in
            try await service.installStack(username: username, stack: stack) { p in print("  [\(p.step)/\(p.total)] \(p.message)...") }
        }
        print("✓ Stack \(stack) installed: \(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
    }
}

struct Capacity: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show this node's capacity (CPU, memory, storage pool).")
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.client() {
            return try printRemote(await client.cli { c in try await c.system.getCapacity(.init(), metadata: c.metadata) })
        }
        let service = try global.service()
        let c = try await ContainariumCLI.run { () async throws(ContainariumError) in try await service.capacity() }
        if format == .json { return try printJSON(c) }
        print("""
            Node: \(c.node)  (backend \(c.backendVersion ?? "-"))
            CPUs: \(c.cpus)
            Memory: \(ByteSize.format(c.memoryUsedBytes)) used of \(ByteSize.format(c.memoryTotalBytes))
            Pool: \(c.pool.map { "\($0.name) (\($0.driver)): \(ByteSize.format($0.usedBytes)) used of \(ByteSize.format($0.totalBytes))" } ?? "-")
            Instances: \(c.instances) (\(c.runningInstances) running)
            """)
    }
}

struct StacksCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stacks", abstract: "List the software stacks available to --stack.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.client() {
            let v = try await client.cli { c in try await c.system.listStacks(.init(), metadata: c.metadata) }
            print(Table.render(header: ["STACK", "DESCRIPTION", "CHECK"], rows: v.stacks.map { [$0.name, $0.description_p, $0.check.joined(separator: " ")] }))
            return
        }
        let service = try global.service()
        let rows = service.stacks.stacks.values.sorted { $0.name < $1.name }.map { [$0.name, $0.description, $0.check.joined(separator: " ")] }
        print(Table.render(header: ["STACK", "DESCRIPTION", "CHECK"], rows: rows))
        for p in service.stacks.problems { FileHandle.standardError.write(Data("warning: \(p)\n".utf8)) }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print version information.")
    func run() {
        print("containarium \(ContainariumVersion.string) (plugin ABI \(PluginABIVersion.string))")
    }
}

/// A daemon's state as the CLI prints it: "running" for CONTAINER_STATE_RUNNING.
func stateWord(_ s: Containarium_V1_ContainerState) -> String {
    switch s {
    case .running: "running"
    case .stopped: "stopped"
    case .frozen: "frozen"
    case .starting: "starting"
    case .stopping: "stopping"
    case .error: "error"
    case .creating: "creating"
    case .unknown, .unspecified, .UNRECOGNIZED: "unknown"
    }
}

/// "-" for an empty field in a table.
func dash(_ s: String) -> String { s.isEmpty ? "-" : s }
