import ContainariumCore
import ContainariumPlatform
import ContainariumProto
import ContainariumScheduler
import ContainariumService
import ContainariumStore
import Foundation
import SwiftProtobuf

/// The service layer's views as the messages of `proto/containarium/v1`, and requests back:
/// the one place the gRPC adapter translates.
enum ProtoMap {
    static func timestamp(_ d: Date?) -> Google_Protobuf_Timestamp? { d.map { Google_Protobuf_Timestamp(date: $0) } }

    static func state(_ s: String) -> Containarium_V1_ContainerState {
        switch s {
        case "CONTAINER_STATE_RUNNING": .running
        case "CONTAINER_STATE_STOPPED": .stopped
        case "CONTAINER_STATE_FROZEN": .frozen
        case "CONTAINER_STATE_STARTING": .starting
        case "CONTAINER_STATE_STOPPING": .stopping
        case "CONTAINER_STATE_ERROR": .error
        case "CONTAINER_STATE_CREATING": .creating
        default: .unknown
        }
    }

    /// The OS type's name as the node config maps it to an image; nil for none.
    static func osType(_ t: Containarium_V1_OSType) throws(ContainariumError) -> String? {
        switch t {
        case .unspecified: nil
        case .debian12: "OS_TYPE_DEBIAN_12"
        case .ubuntu2204: "OS_TYPE_UBUNTU_2204"
        case .ubuntu2404: "OS_TYPE_UBUNTU_2404"
        case .rocky9: "OS_TYPE_ROCKY_9"
        case .windows: "OS_TYPE_WINDOWS"
        case .UNRECOGNIZED(let n): throw .invalid("os_type \(n) is not an OS type this API knows")
        }
    }

    /// The OS type a request names: the enum's, or a configured name (`os`); not both.
    static func osType(_ t: Containarium_V1_OSType, named os: String) throws(ContainariumError) -> String? {
        let fromEnum = try osType(t)
        if fromEnum != nil && !os.isEmpty { throw .invalid("give either osType or os, not both") }
        return fromEnum ?? nonEmpty(os)
    }

    /// `node`: a node name (1-63 of a-z 0-9 . -), or nil for none.
    static func node(_ n: String) throws(ContainariumError) -> String? {
        guard !n.isEmpty else { return nil }
        guard Cluster.validNodeName(n) else { throw .invalid("'\(n)' is not a node name (1-63 of a-z 0-9 . -)") }
        return n
    }

    static func nonEmpty(_ s: String) -> String? { s.isEmpty ? nil : s }

    static func capacity(_ c: NodeCapacity) -> Containarium_V1_Capacity {
        .with {
            $0.node = c.node
            $0.cpus = UInt32(clamping: c.cpus)
            $0.memoryTotalBytes = c.memoryTotalBytes
            $0.memoryUsedBytes = c.memoryUsedBytes
            $0.diskTotalBytes = c.diskTotalBytes
            $0.diskUsedBytes = c.diskUsedBytes
            $0.instances = UInt32(clamping: c.instances)
            $0.runningInstances = UInt32(clamping: c.runningInstances)
            $0.backendVersion = c.backendVersion ?? ""
        }
    }

    static func stack(_ s: CatalogView.Stack) -> Containarium_V1_Stack {
        .with {
            $0.name = s.name
            $0.description_p = s.description
            $0.packages = s.packages
            $0.check = s.check
        }
    }

    static func node(_ n: NodeView) -> Containarium_V1_Node {
        .with {
            $0.name = n.name
            $0.address = n.address ?? ""
            $0.local = n.local
            $0.healthy = n.healthy
            $0.draining = n.draining
            if let t = timestamp(n.lastSeen) { $0.lastSeen = t }
            $0.kinds = n.kinds
            $0.capacity = resources(n.capacity)
            $0.used = resources(n.used)
            $0.gpus = n.gpus.map(gpu)
            $0.labels = n.labels
            $0.pool = n.pool ?? ""
            $0.preemptible = n.preemptible
            $0.environments = UInt32(clamping: n.environments)
            $0.sshGateway = n.sshGateway ?? ""
            $0.plugins = (n.plugins ?? []).map(plugin)
            $0.preempted = n.preempted
            $0.preemption = n.preemption ?? ""
        }
    }

    static func gpu(_ g: GPUDevice) -> Containarium_V1_NodeGPU {
        .with {
            $0.pciAddress = g.pciAddress
            $0.model = g.model
            $0.attachedTo = g.attachedTo ?? ""
        }
    }

    static func plugin(_ p: NodePlugin) -> Containarium_V1_NodePlugin {
        .with {
            $0.id = p.id
            $0.version = p.version ?? ""
            $0.abi = p.abi ?? ""
            $0.state = p.state
            $0.capabilities = p.capabilities
            $0.kinds = p.kinds ?? []
            $0.osTypes = p.osTypes ?? []
        }
    }

    static func container(_ v: ContainerView) -> Containarium_V1_Container {
        var c = Containarium_V1_Container()
        c.name = v.name
        c.username = v.username
        c.owner = v.owner ?? ""
        c.state = state(v.state)
        c.image = v.image ?? ""
        c.resources = .with {
            $0.cpu = v.resources.cpu ?? ""
            $0.memory = v.resources.memory ?? ""
            $0.disk = v.resources.disk ?? ""
        }
        c.usage = .with {
            $0.cpuNanoseconds = v.usage.cpuNanoseconds ?? 0
            $0.memoryBytes = v.usage.memoryBytes ?? 0
            $0.diskBytes = v.usage.diskBytes ?? 0
            $0.processes = UInt32(clamping: v.usage.processes ?? 0)
        }
        c.network = .with {
            $0.ipAddress = v.network.ipAddress ?? ""
            $0.ipv4 = v.network.ipv4
        }
        c.autostart = v.autostart
        c.nestingEnabled = v.nestingEnabled
        c.labels = v.labels
        c.backend = v.backend ?? ""
        c.node = v.node ?? ""
        c.sshHostKeys = v.sshHostKeys
        if let t = timestamp(v.createdAt) { c.createdAt = t }
        if let t = timestamp(v.startedAt) { c.startedAt = t }
        c.gpus = v.gpus ?? []
        c.endpoints = v.endpoints ?? [:]
        c.type = switch v.type {
        case "vm": .vm
        case "container": .container
        default: .unspecified
        }
        return c
    }

    static func operation(_ r: OperationRecord) -> Containarium_V1_Operation {
        .with {
            $0.id = r.id
            $0.kind = r.kind
            $0.target = r.target
            $0.state = switch r.state {
            case .running: .running
            case .succeeded: .succeeded
            case .failed: .failed
            }
            $0.step = UInt32(clamping: r.step)
            $0.total = UInt32(clamping: r.total)
            $0.message = r.message
            if let code = r.errorCode {
                $0.error = .with {
                    $0.code = code
                    $0.message = r.errorMessage ?? ""
                }
            }
            $0.createdAt = Google_Protobuf_Timestamp(date: r.createdAt)
            $0.updatedAt = Google_Protobuf_Timestamp(date: r.updatedAt)
            if let text = r.result, let view = try? WireJSON.decode(ContainerView.self, from: Data(text.utf8)) { $0.result = container(view) }
        }
    }

    static func key(_ k: KeyView) -> Containarium_V1_SSHKey {
        .with {
            $0.fingerprint = k.fingerprint
            $0.type = k.type
            $0.comment = k.comment
            $0.publicKey = k.publicKey
        }
    }

    static func collaborator(_ c: CollaboratorView) -> Containarium_V1_Collaborator {
        .with {
            $0.collaboratorUsername = c.collaboratorUsername
            $0.addedBy = c.addedBy
            $0.addedAt = Google_Protobuf_Timestamp(date: c.addedAt)
            $0.sudo = c.sudo
            $0.containerRuntime = c.containerRuntime
        }
    }

    static func create(_ m: Containarium_V1_CreateContainerRequest) throws(ContainariumError) -> CreateEnvironmentRequest {
        guard !m.username.isEmpty else { throw .invalid("missing field 'username'") }
        var r = CreateEnvironmentRequest(
            username: m.username, sshKeys: m.sshKeys, image: nonEmpty(m.image), osType: try osType(m.osType, named: m.os),
            cpu: nonEmpty(m.resources.cpu), memory: nonEmpty(m.resources.memory), disk: nonEmpty(m.resources.disk),
            autostart: m.autostart, nesting: m.hasNesting ? m.nesting : nil, stack: nonEmpty(m.stack), labels: m.labels,
            gpus: m.gpus == 0 ? nil : Int(m.gpus), gpuModel: nonEmpty(m.gpuModel), gpuDevices: m.gpuDevices, node: try node(m.node),
            runtimes: (m.enablePodman ? [ContainerRuntime.podman] : []) + (m.enableDocker ? [.docker] : []))
        r.kind = nonEmpty(m.kind)
        r.critical = m.critical
        return r
    }

    static func exec(_ r: ExecResult) -> Containarium_V1_ExecResponse {
        .with {
            $0.exitCode = r.exitCode
            $0.stdout = r.stdout
            $0.stderr = r.stderr
        }
    }

    static func cleanup(_ v: CleanupView) -> Containarium_V1_CleanupDiskResponse {
        .with {
            $0.username = v.username
            $0.diskUsageBeforeBytes = v.diskUsageBeforeBytes ?? 0
            $0.diskUsageAfterBytes = v.diskUsageAfterBytes ?? 0
            $0.freedBytes = v.freedBytes ?? 0
        }
    }

    static func sample(_ s: UsageSample) -> Containarium_V1_UsageSample {
        .with {
            $0.at = Google_Protobuf_Timestamp(date: s.at)
            $0.cpuPercent = s.cpuPercent
            $0.memoryBytes = s.memoryBytes
            $0.diskBytes = s.diskBytes
            $0.rxBytesPerSecond = s.rxBytesPerSecond
            $0.txBytesPerSecond = s.txBytesPerSecond
        }
    }

    static func audit(_ e: AuditEntry) -> Containarium_V1_AuditEntry {
        .with {
            $0.id = e.id
            $0.at = Google_Protobuf_Timestamp(date: e.at)
            $0.actor = e.actor
            $0.role = e.role
            $0.action = e.action
            $0.target = e.target
            $0.source = e.source
            $0.interface = e.interface
            $0.result = e.result
            $0.detail = e.detail
        }
    }

    static func event(_ e: DaemonEvent) -> Containarium_V1_Event {
        .with {
            $0.id = e.id
            $0.type = e.type
            $0.username = e.username ?? ""
            $0.time = Google_Protobuf_Timestamp(date: e.time)
            switch e.data {
            case .container(let name, let node, let state):
                $0.container = .with {
                    $0.name = name
                    $0.node = node ?? ""
                    $0.state = state ?? ""
                }
            case .progress(let operationID, let step, let total, let message):
                $0.progress = .with {
                    $0.operationID = operationID ?? ""
                    $0.step = UInt32(clamping: step)
                    $0.total = UInt32(clamping: total)
                    $0.message = message
                }
            case .operation(let id, let state, let error):
                $0.operation = .with {
                    $0.operationID = id
                    $0.state = state
                    $0.error = error ?? ""
                }
            case .audit(let action, let actor, let result):
                $0.audit = .with {
                    $0.action = action
                    $0.actor = actor
                    $0.result = result
                }
            case .scan(let reportID, let scanner, let status, let findings):
                $0.scan = .with {
                    $0.reportID = reportID
                    $0.scanner = scanner
                    $0.status = status
                    $0.findings = UInt32(clamping: findings)
                }
            case .alert(let rule, let target, let severity, let value, let threshold):
                $0.alert = .with {
                    $0.rule = rule
                    $0.target = target
                    $0.severity = severity
                    $0.value = value
                    $0.threshold = threshold
                }
            }
        }
    }

    static func pluginToggle(_ t: PluginToggleView) -> Containarium_V1_SetPluginEnabledResponse {
        .with {
            $0.message = t.message
            $0.restartRequired = t.restartRequired
            $0.id = t.id
            $0.enabled = t.enabled
            $0.node = t.node
            $0.configPath = t.configPath
            $0.section = t.section
        }
    }
}
