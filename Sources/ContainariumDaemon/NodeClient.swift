import ContainariumClient
import ContainariumCore
import ContainariumPlatform
import ContainariumProto
import ContainariumScheduler
import ContainariumService
import Foundation
import GRPCCore
import SwiftProtobuf

/// The control plane's connection to a member: the generated stubs of proto/containarium/v1
/// through `ContainariumClient`, at the member's node API (through its link, or at its
/// advertised address). The node runs each call on its own backends as `control-plane`.
struct GRPCNodeConnection: NodeConnection {
    let endpoint: ContainariumEndpoint

    func container(_ user: Username) async throws(ContainariumError) -> ContainerView {
        try await endpoint.connect { c in
            try await c.containers.getContainer(.with { $0.username = user.value }, metadata: c.metadata)
        }.view
    }

    func listContainers() async throws(ContainariumError) -> [ContainerView] {
        try await endpoint.connect { c in
            try await c.containers.listContainers(.init(), metadata: c.metadata)
        }.containers.map(\.view)
    }

    func delete(_ user: Username, force: Bool) async throws(ContainariumError) {
        _ = try await endpoint.connect { c in
            try await c.containers.deleteContainer(.with {
                $0.username = user.value
                $0.force = force
            }, metadata: c.metadata)
        }
    }

    func power(_ user: Username, _ action: ControlPlane.PowerAction, force: Bool) async throws(ContainariumError) -> ContainerView {
        try await endpoint.connect { c in
            switch action {
            case .start: try await c.containers.startContainer(.with { $0.username = user.value }, metadata: c.metadata)
            case .restart: try await c.containers.restartContainer(.with { $0.username = user.value }, metadata: c.metadata)
            case .stop:
                try await c.containers.stopContainer(.with {
                    $0.username = user.value
                    $0.force = force
                }, metadata: c.metadata)
            }
        }.view
    }

    func resize(_ user: Username, cpu: String?, memory: String?, disk: String?) async throws(ContainariumError) -> ContainerView {
        try await endpoint.connect { c in
            try await c.containers.resizeContainer(.with {
                $0.username = user.value
                $0.resources = .with {
                    $0.cpu = cpu ?? ""
                    $0.memory = memory ?? ""
                    $0.disk = disk ?? ""
                }
            }, metadata: c.metadata)
        }.view
    }

    func exec(_ user: Username, _ command: [String], account: String?) async throws(ContainariumError) -> ExecResult {
        let r = try await endpoint.connect { c in
            try await c.containers.exec(.with {
                $0.username = user.value
                $0.command = command
                $0.asUser = account != nil
                $0.account = account ?? ""
            }, metadata: c.metadata)
        }
        return ExecResult(exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr)
    }

    func installStack(_ user: Username, stack: String) async throws(ContainariumError) -> String {
        try await endpoint.connect { c in
            try await c.containers.installStack(.with {
                $0.username = user.value
                $0.stack = stack
            }, metadata: c.metadata)
        }.check
    }

    func cleanupDisk(_ user: Username) async throws(ContainariumError) -> CleanupView {
        let r = try await endpoint.connect { c in
            try await c.containers.cleanupDisk(.with { $0.username = user.value }, metadata: c.metadata)
        }
        return CleanupView(username: r.username, diskUsageBeforeBytes: r.diskUsageBeforeBytes, diskUsageAfterBytes: r.diskUsageAfterBytes,
                           freedBytes: r.freedBytes)
    }

    func keys(_ user: Username) async throws(ContainariumError) -> [String] {
        try await endpoint.connect { c in
            try await c.containers.listSSHKeys(.with { $0.username = user.value }, metadata: c.metadata)
        }.keys.map(\.publicKey)
    }

    func scan(_ user: Username, scanner: String) async throws(ContainariumError) -> ScanReport {
        let request = Containarium_V1_SecurityScanRequest.with { $0.username = user.value }
        let answer = try await endpoint.connect { c in
            switch scanner {
            case "clamav": return try await c.security.scanClamAV(request, metadata: c.metadata)
            case "trivy": return try await c.security.scanTrivy(request, metadata: c.metadata)
            default: throw ContainariumError(.unsupported, "scanner \(scanner) has no route to a member")
            }
        }
        guard let first = answer.reports.first else { throw .internal("the member answered a scan without a report") }
        return try ProtoMap.scanReport(first, node: endpoint.description)
    }

    func credentials(_ user: Username) async throws(ContainariumError) -> InstanceCredentials {
        let c = try await endpoint.connect { c in
            try await c.containers.getCredentials(.with { $0.username = user.value }, metadata: c.metadata)
        }
        return InstanceCredentials(username: c.account, password: c.password, protocol: c.protocol.isEmpty ? nil : c.protocol)
    }

    func addKey(_ user: Username, _ key: SSHPublicKey) async throws(ContainariumError) {
        _ = try await endpoint.connect { c in
            try await c.containers.addSSHKey(.with {
                $0.username = user.value
                $0.sshPublicKey = key.authorizedKeysLine
            }, metadata: c.metadata)
        }
    }

    func removeKey(_ user: Username, fingerprint: String) async throws(ContainariumError) {
        _ = try await endpoint.connect { c in
            try await c.containers.removeSSHKey(.with {
                $0.username = user.value
                $0.fingerprint = fingerprint
            }, metadata: c.metadata)
        }
    }

    func addCollaborator(_ user: Username, _ other: Username, keys: [SSHPublicKey], sudo: Bool, containerRuntime: Bool) async throws(ContainariumError) {
        _ = try await endpoint.connect { c in
            try await c.containers.addCollaborator(.with {
                $0.username = user.value
                $0.collaboratorUsername = other.value
                $0.sshPublicKey = keys.map(\.authorizedKeysLine).joined(separator: "\n")
                $0.sudo = sudo
                $0.containerRuntime = containerRuntime
            }, metadata: c.metadata)
        }
    }

    func removeCollaborator(_ user: Username, _ other: Username) async throws(ContainariumError) {
        _ = try await endpoint.connect { c in
            try await c.containers.removeCollaborator(.with {
                $0.username = user.value
                $0.collaboratorUsername = other.value
            }, metadata: c.metadata)
        }
    }

    func metricsHistory(_ user: Username) async throws(ContainariumError) -> [UsageSample] {
        try await endpoint.connect { c in
            try await c.containers.getMetricsHistory(.with { $0.username = user.value }, metadata: c.metadata)
        }.samples.map { s in
            UsageSample(at: s.at.date, cpuPercent: s.cpuPercent, memoryBytes: s.memoryBytes, diskBytes: s.diskBytes,
                        rxBytesPerSecond: s.rxBytesPerSecond, txBytesPerSecond: s.txBytesPerSecond)
        }
    }

    func setPluginEnabled(_ id: String, enabled: Bool, force: Bool) async throws(ContainariumError) -> PluginToggleView {
        let r = try await endpoint.connect { c in
            try await c.system.setPluginEnabled(.with {
                $0.id = id
                $0.enabled = enabled
                $0.force = force
            }, metadata: c.metadata)
        }
        return PluginToggleView(id: r.id, enabled: r.enabled, node: r.node, configPath: r.configPath, section: r.section,
                                restartRequired: r.restartRequired, message: r.message)
    }

    func create(_ request: CreateEnvironmentRequest, progress: @escaping @Sendable (StepProgress) -> Void) async throws(ContainariumError) -> ContainerView {
        try await endpoint.create(ProtoMap.createMessage(request)) { p in
            progress(StepProgress(step: Int(p.step), total: Int(p.total), message: p.message))
        }.view
    }

    func console(username: String, kind: String, input: AsyncStream<[UInt8]>, opened: @escaping @Sendable () -> Void,
                 output: @escaping @Sendable ([UInt8]) async -> Void, ended: @escaping @Sendable () -> Void) async throws(ContainariumError) {
        try await endpoint.console(username: username, kind: kind == "vnc" ? .vnc : .serial, input: input, opened: opened, output: output, ended: ended)
    }
}

/// The control plane's connections to its members: gRPC, through a member's link or at its address.
struct GRPCNodeConnector: NodeConnector {
    func connection(linkSocket: String) -> any NodeConnection {
        GRPCNodeConnection(endpoint: ContainariumEndpoint(socket: linkSocket, viaLink: true))
    }
    func connection(address: String, certsDir: String?, token: String?) throws(ContainariumError) -> any NodeConnection {
        GRPCNodeConnection(endpoint: try ContainariumEndpoint(server: address, certsDir: certsDir, token: token))
    }
}

extension Containarium_V1_Container {
    /// The platform's view of an environment a node answered with (the inverse of
    /// `ProtoMap.container`: empty strings and zero counters are "not known").
    var view: ContainerView {
        func opt(_ s: String) -> String? { s.isEmpty ? nil : s }
        func opt(_ n: UInt64) -> UInt64? { n == 0 ? nil : n }
        let typeName: String? = switch type {
        case .vm: "vm"
        case .container: "container"
        default: nil
        }
        return ContainerView(
            name: name, username: username, owner: opt(owner), state: ProtoMap.stateName(state), image: opt(image),
            resources: ResourcesView(cpu: opt(resources.cpu), memory: opt(resources.memory), disk: opt(resources.disk)),
            usage: UsageView(cpuNanoseconds: opt(usage.cpuNanoseconds), memoryBytes: opt(usage.memoryBytes), diskBytes: opt(usage.diskBytes),
                             processes: usage.processes == 0 ? nil : Int(usage.processes)),
            network: NetworkView(ipAddress: opt(network.ipAddress), ipv4: network.ipv4),
            autostart: autostart, nestingEnabled: nestingEnabled, labels: labels, backend: opt(backend), node: opt(node),
            sshHostKeys: sshHostKeys, createdAt: hasCreatedAt ? createdAt.date : nil, startedAt: hasStartedAt ? startedAt.date : nil,
            gpus: gpus.isEmpty ? nil : gpus, endpoints: endpoints.isEmpty ? nil : endpoints, type: typeName)
    }
}

extension ProtoMap {
    /// The state's name as the platform spells it (`ContainerView.state`).
    static func stateName(_ s: Containarium_V1_ContainerState) -> String {
        switch s {
        case .running: "CONTAINER_STATE_RUNNING"
        case .stopped: "CONTAINER_STATE_STOPPED"
        case .frozen: "CONTAINER_STATE_FROZEN"
        case .starting: "CONTAINER_STATE_STARTING"
        case .stopping: "CONTAINER_STATE_STOPPING"
        case .error: "CONTAINER_STATE_ERROR"
        case .creating: "CONTAINER_STATE_CREATING"
        default: "CONTAINER_STATE_UNKNOWN"
        }
    }

    /// A create as the message that hands it to another node (the inverse of `create`).
    static func createMessage(_ r: CreateEnvironmentRequest) -> Containarium_V1_CreateContainerRequest {
        .with {
            $0.username = r.username
            $0.sshKeys = r.sshKeys
            $0.image = r.image ?? ""
            // An OS type the enum names travels as the enum; a configured name as `os`.
            if let os = r.osType { ($0.osType, $0.os) = APIMessages.osType(os) }
            $0.resources = .with {
                $0.cpu = r.cpu ?? ""
                $0.memory = r.memory ?? ""
                $0.disk = r.disk ?? ""
            }
            $0.autostart = r.autostart ?? false
            if let nesting = r.nesting { $0.nesting = nesting }
            $0.stack = r.stack ?? ""
            $0.labels = r.labels
            $0.gpus = UInt32(clamping: r.gpus ?? 0)
            $0.gpuModel = r.gpuModel ?? ""
            $0.gpuDevices = r.gpuDevices
            $0.node = r.node ?? ""
            $0.kind = r.kind ?? ""
            $0.enableDocker = r.runtimes.contains(.docker)
            $0.enablePodman = r.runtimes.contains(.podman)
            $0.critical = r.critical
        }
    }

    static func resources(_ r: Resources) -> Containarium_V1_NodeResources {
        .with {
            $0.cpuMillis = UInt64(clamping: r.cpuMillis)
            $0.memoryBytes = UInt64(clamping: r.memoryBytes)
            $0.diskBytes = UInt64(clamping: r.diskBytes)
        }
    }

    static func resources(_ r: Containarium_V1_NodeResources) -> Resources {
        Resources(cpuMillis: Int64(clamping: r.cpuMillis), memoryBytes: Int64(clamping: r.memoryBytes), diskBytes: Int64(clamping: r.diskBytes))
    }

    /// A node's report as it sends it.
    static func nodeReport(_ r: NodeReport) -> Containarium_V1_NodeReport {
        .with {
            $0.address = r.address
            if let token = r.token { $0.token = token }
            $0.name = r.info.name
            $0.kinds = r.info.kinds.sorted()
            $0.capacity = resources(r.info.capacity)
            $0.reserved = resources(r.info.reserved)
            $0.gpus = r.info.gpus.map(gpu)
            $0.labels = r.info.labels
            $0.pool = r.info.pool ?? ""
            $0.preemptible = r.info.preemptible
            $0.environments = r.environments.mapValues(resources)
            if let g = r.gateway {
                $0.gateway = .with {
                    $0.address = g.address
                    $0.hostKey = g.hostKey
                }
            }
            if let plugins = r.plugins { $0.plugins = .with { $0.plugins = plugins.map(plugin) } }
            $0.preemption = r.preemption ?? ""
        }
    }

    /// A node's report as the control plane takes it (the cluster checks names and addresses).
    static func nodeReport(_ m: Containarium_V1_NodeReport) throws(ContainariumError) -> NodeReport {
        guard !m.name.isEmpty else { throw .invalid("missing field 'name'") }
        let info = NodeInfo(
            name: m.name, kinds: Set(m.kinds), capacity: resources(m.capacity), reserved: resources(m.reserved),
            gpus: m.gpus.map { GPUDevice(pciAddress: $0.pciAddress, model: $0.model, attachedTo: nonEmpty($0.attachedTo)) },
            labels: m.labels, pool: nonEmpty(m.pool), preemptible: m.preemptible)
        return NodeReport(
            address: m.address, token: m.hasToken ? m.token : nil, info: info, environments: m.environments.mapValues(resources),
            gateway: m.hasGateway ? NodeReport.GatewayEndpoint(address: m.gateway.address, hostKey: m.gateway.hostKey) : nil,
            plugins: m.hasPlugins ? m.plugins.plugins.map { p in
                NodePlugin(id: p.id, version: nonEmpty(p.version), abi: nonEmpty(p.abi), state: p.state, capabilities: p.capabilities,
                           kinds: p.kinds.isEmpty ? nil : p.kinds, osTypes: p.osTypes.isEmpty ? nil : p.osTypes)
            } : nil,
            preemption: nonEmpty(m.preemption))
    }
}
