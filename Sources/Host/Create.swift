import ArgumentParser
import ContainariumClient
import ContainariumCore
import ContainariumDaemon
import ContainariumService
import ContainariumProto
import Foundation
import SwiftProtobuf

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create an environment (<user>-container) with the user's SSH key.")

    @Argument(help: "Username: 1-32 of a-z, 0-9, '-', starting with a letter.")
    var username: String

    @Option(name: .customLong("ssh-key"), help: "Public key file (repeatable; a file may hold several keys). Without one the environment gets no key until `ssh-keys add` (REST) adds one; a VM backend without accounts/1 (Windows) takes none.")
    var sshKeys: [String] = []

    @Option(help: "Image alias on the node (default from config: containarium/debian12).")
    var image: String?

    @Option(name: .customLong("os-type"), help: "OS type mapped to an image by the config (e.g. debian12, OS_TYPE_UBUNTU_2404).")
    var osType: String?

    @Option(help: "CPUs: a count (4), a range (2-4) or a list to pin (0,2).")
    var cpu: String?

    @Option(help: "Memory limit, e.g. 4GB, 4096MB, 4GiB.")
    var memory: String?

    @Option(name: [.customLong("disk"), .customLong("disk-quota")], help: "Disk quota, e.g. 20GB.")
    var disk: String?

    @Flag(help: "Start the environment when the host boots.")
    var autostart = false

    @Flag(name: .customLong("no-nesting"), help: "Disallow Docker/Podman inside (nesting is on by default).")
    var noNesting = false

    @Flag(name: .customLong("enable-podman"), help: "Install Podman inside (needs nesting).")
    var enablePodman = false

    @Flag(name: .customLong("enable-docker"), help: "Install Docker inside and add the user to the docker group (needs nesting).")
    var enableDocker = false

    @Option(help: "Software stack to install (see `containarium stacks`).")
    var stack: String?

    @Option(name: .customLong("label"), help: "Label KEY=VALUE (repeatable).")
    var labels: [String] = []

    @Option(help: "GPUs to pass through (the node's devices.gpu/1 plugins list them; the scheduler picks which).")
    var gpus: Int?

    @Option(name: .customLong("gpu-model"), help: "Only GPUs of this model (as `containarium node list` shows it).")
    var gpuModel: String?

    @Option(help: "Backend kind (lxc, vm); default: the kind of the backend that serves the OS type best.")
    var kind: String?

    @Flag(help: "Keep it off preemptible (spot) nodes: the daemon's scheduler never places it on one.")
    var critical = false

    @Option(help: "Output format.")
    var format: OutputFormat = .table

    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func validate() throws {
        if image != nil && osType != nil { throw ValidationError("use either --image or --os-type, not both") }
        for l in labels where !l.contains("=") { throw ValidationError("label '\(l)' must read KEY=VALUE") }
    }

    func run() async throws {
        var keys: [String] = []
        for path in sshKeys {
            let url = URL(fileURLWithPath: (path as NSString).expandingTildeInPath)
            guard let text = try? String(contentsOf: url, encoding: .utf8) else {
                throw fail(.invalid("cannot read SSH key file \(path)"))
            }
            keys.append(text)
        }
        var labelMap: [String: String] = [:]
        for l in labels {
            let parts = l.split(separator: "=", maxSplits: 1)
            labelMap[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        if let gpus, gpus < 0 { throw fail(.invalid("--gpus must be 0 or more")) }
        var asked = CreateEnvironmentRequest(
            username: username, sshKeys: keys, image: image, osType: osType, cpu: cpu, memory: memory, disk: disk,
            autostart: autostart, nesting: !noNesting, stack: stack, labels: labelMap, gpus: gpus, gpuModel: gpuModel,
            runtimes: (enablePodman ? [ContainerRuntime.podman] : []) + (enableDocker ? [.docker] : []))
        asked.kind = kind
        asked.critical = critical
        let request = asked
        if let client = try remote.daemon(global) {
            let table = format == .table
            if table { print("Creating container for user: \(username)\(remote.whereabouts)") }
            let message = APIMessages.createRequest(request)
            // Ctrl-C cancels the call, and the daemon cancels a create whose caller went away:
            // it rolls back as a local create does.
            let v = try await ContainariumCLI.run { () async throws(ContainariumError) in
                try await Interrupts.cancelling { () async throws(ContainariumError) in
                    try await client.create(message) { p in
                        if table {
                            print("  [\(p.step)/\(p.total)] \(p.message)...")
                            fflush(nil)
                        }
                    }
                }
            }
            if !table { return try printRemote(v) }
            print("✓ Container \(v.name) created successfully! IP: \(dash(v.network.ipAddress))")
            return
        }
        // Without a daemon there is no scheduler to keep it off preemptible nodes.
        if critical { throw fail(LocalDaemon.notRunning(remote.stateDir, "--critical is the daemon scheduler's rule")) }
        let service = try global.service()
        let table = format == .table
        if table { print("Creating container for user: \(username)") }
        let info = try await ContainariumCLI.run { () async throws(ContainariumError) in
            try await Interrupts.cancelling { () async throws(ContainariumError) in
                try await service.create(request) { p in
                    if table { print("  [\(p.step)/\(p.total)] \(p.message)...") }
                    fflush(nil)
                }
            }
        }
        if !table { return try printJSON(info) }
        let ip = info.address ?? info.ipv4.first ?? "-"
        print("""
            ✓ Container \(info.name) created successfully!

            Container Details:
              Name: \(info.name)
              User: \(username)
              IP: \(ip)
              CPU: \(info.cpuLimit ?? "unlimited")
              Memory: \(info.memoryLimitBytes.map { ByteSize.format($0) } ?? "unlimited")
              Disk: \(info.diskLimitBytes.map { ByteSize.format($0) } ?? "pool default")
              Auto-start: \(info.autostart ? "enabled" : "disabled")
              Nesting (Docker inside): \(info.nesting ? "enabled" : "disabled")

            SSH access (from this host):
              ssh \(username)@\(ip)
            From elsewhere: containarium export \(username) --jump-ip <this host's address>
            """)
    }
}

/// Namespaced so the `run` of each command does not shadow the helper.
enum ContainariumCLI {
    static func run<T>(_ body: () async throws(ContainariumError) -> T) async throws -> T {
        do { return try await body() } catch { throw fail(error) }
    }
}
