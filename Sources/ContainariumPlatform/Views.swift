public import ContainariumCore
public import ContainariumStore
public import Foundation

/// REST/gRPC JSON shapes, with the reference's camelCase field names and enum spellings.
public struct ResourcesView: Codable, Sendable, Equatable {
    public var cpu: String?
    public var memory: String?
    public var disk: String?
    public init(cpu: String?, memory: String?, disk: String?) {
        self.cpu = cpu
        self.memory = memory
        self.disk = disk
    }
}

public struct UsageView: Codable, Sendable, Equatable {
    public var cpuNanoseconds: UInt64?
    public var memoryBytes: UInt64?
    public var diskBytes: UInt64?
    public var processes: Int?
    public init(cpuNanoseconds: UInt64?, memoryBytes: UInt64?, diskBytes: UInt64?, processes: Int?) {
        self.cpuNanoseconds = cpuNanoseconds
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
        self.processes = processes
    }
}

public struct NetworkView: Codable, Sendable, Equatable {
    public var ipAddress: String?
    public var ipv4: [String]
    public init(ipAddress: String?, ipv4: [String]) {
        self.ipAddress = ipAddress
        self.ipv4 = ipv4
    }
}

public struct ContainerView: Codable, Sendable, Equatable {
    public var name: String
    public var username: String
    public var owner: String?
    public var state: String
    public var image: String?
    public var resources: ResourcesView
    public var usage: UsageView
    public var network: NetworkView
    public var autostart: Bool
    public var nestingEnabled: Bool
    public var labels: [String: String]
    public var backend: String?
    public var node: String?
    public var sshHostKeys: [String]
    public var createdAt: Date?
    public var startedAt: Date?
    /// PCI addresses of the GPUs passed through to it.
    public var gpus: [String]?
    /// Other ways in, e.g. {"rdp": "HOST:PORT"} for Windows VMs.
    public var endpoints: [String: String]?
    /// "container" or "vm".
    public var type: String?

    public init(name: String, username: String, owner: String?, state: String, image: String?, resources: ResourcesView, usage: UsageView, network: NetworkView, autostart: Bool, nestingEnabled: Bool, labels: [String: String], backend: String?, node: String?, sshHostKeys: [String], createdAt: Date?, startedAt: Date?, gpus: [String]?, endpoints: [String: String]?, type: String?) {
        self.name = name
        self.username = username
        self.owner = owner
        self.state = state
        self.image = image
        self.resources = resources
        self.usage = usage
        self.network = network
        self.autostart = autostart
        self.nestingEnabled = nestingEnabled
        self.labels = labels
        self.backend = backend
        self.node = node
        self.sshHostKeys = sshHostKeys
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.gpus = gpus
        self.endpoints = endpoints
        self.type = type
    }

    public static func stateName(_ s: InstanceState) -> String {
        switch s {
        case .running: "CONTAINER_STATE_RUNNING"
        case .stopped: "CONTAINER_STATE_STOPPED"
        case .frozen: "CONTAINER_STATE_FROZEN"
        case .starting: "CONTAINER_STATE_STARTING"
        case .stopping: "CONTAINER_STATE_STOPPING"
        case .error: "CONTAINER_STATE_ERROR"
        case .unknown: "CONTAINER_STATE_UNKNOWN"
        }
    }

    public init(_ i: InstanceInfo, record: ContainerRecord?) {
        let user = Username(containerName: i.name)?.value ?? record?.username ?? i.name
        name = i.name
        username = user
        owner = record?.owner ?? i.labels["owner"]
        state = record?.phase == .creating && i.provisioned != true ? "CONTAINER_STATE_CREATING" : Self.stateName(i.state)
        image = i.image
        resources = ResourcesView(
            cpu: i.cpuLimit, memory: i.memoryLimitBytes.map { ByteSize(bytes: $0).description },
            disk: i.diskLimitBytes.map { ByteSize(bytes: $0).description })
        usage = UsageView(cpuNanoseconds: i.cpuUsageNanoseconds, memoryBytes: i.memoryUsageBytes, diskBytes: i.diskUsageBytes, processes: i.processes)
        network = NetworkView(ipAddress: i.address ?? i.ipv4.first, ipv4: i.ipv4)
        autostart = i.autostart
        nestingEnabled = i.nesting
        labels = i.labels
        backend = i.backend ?? record?.backend
        node = record?.node ?? i.node
        sshHostKeys = i.sshHostKeys ?? []
        createdAt = i.createdAt
        startedAt = i.startedAt
        gpus = i.gpus
        endpoints = i.endpoints
        type = i.type == "virtual-machine" ? "vm" : i.type
    }
}

public struct ContainerListView: Codable, Sendable, Equatable {
    public var containers: [ContainerView]
    public var totalCount: Int
    public init(containers: [ContainerView], totalCount: Int) {
        self.containers = containers
        self.totalCount = totalCount
    }
}

public struct ErrorBody: Codable, Sendable, Equatable {
    public var code: String
    public var message: String
    public var cause: String?
    public init(code: String, message: String, cause: String? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }
}

public struct ErrorEnvelope: Codable, Sendable, Equatable {
    public var error: ErrorBody
    public init(_ e: ContainariumError) { error = ErrorBody(code: e.code.rawValue, message: e.message, cause: e.cause) }
}

public struct KeyView: Codable, Sendable, Equatable {
    public var fingerprint: String
    public var type: String
    public var comment: String
    public var publicKey: String
}

public struct CollaboratorView: Codable, Sendable, Equatable {
    public var collaboratorUsername: String
    public var addedBy: String
    public var addedAt: Date
    /// Full sudo; otherwise the collaborator may only become the owner with a logged `sudo su - OWNER`.
    public var sudo: Bool
    public var containerRuntime: Bool

    init(_ r: CollaboratorRecord) {
        collaboratorUsername = r.collaborator
        addedBy = r.addedBy
        addedAt = r.addedAt
        sudo = r.sudo
        containerRuntime = r.containerRuntime
    }
}

public struct CleanupView: Codable, Sendable, Equatable {
    public var username: String
    public var diskUsageBeforeBytes: UInt64?
    public var diskUsageAfterBytes: UInt64?
    public var freedBytes: UInt64?
    public init(username: String, diskUsageBeforeBytes: UInt64?, diskUsageAfterBytes: UInt64?, freedBytes: UInt64?) {
        self.username = username
        self.diskUsageBeforeBytes = diskUsageBeforeBytes
        self.diskUsageAfterBytes = diskUsageAfterBytes
        self.freedBytes = freedBytes
    }
}

/// Results of create/install-stack: the finished container, or the operation to poll.
public enum Outcome<Value: Sendable>: Sendable {
    case done(Value)
    case started(OperationRecord)
}

/// A plugin's health as the API shows it (to admins).
public struct HealthView: Codable, Sendable, Equatable {
    public var status: String
    public var detail: String
}

/// A plugin on this node.
public struct PluginView: Codable, Sendable, Equatable {
    public var id: String
    public var enabled: Bool
    public var state: String
    public var version: String?
    public var abi: String?
    public var capabilities: [String]
    public var kinds: [String]
    public var osTypes: [String]
    /// Admins only.
    public var health: HealthView?
}

/// An instance backend on this node.
public struct BackendView: Codable, Sendable, Equatable {
    public var id: String
    public var enabled: Bool
    public var state: String
    /// The backend creates use when they name no kind or OS type.
    public var isDefault: Bool
    public var version: String?
    public var kinds: [String]
    public var osTypes: [String]
    public var health: HealthView?
}

/// `GET /v1/backends`: the instance backends of this node, and (for admins) the cluster's nodes.
public struct BackendsView: Codable, Sendable {
    public var backends: [BackendView]
    public var nodes: [NodeView]
}

/// The daemon, its node and its environments at a glance.
public struct SystemInfoView: Codable, Sendable, Equatable {
    public struct Counts: Codable, Sendable, Equatable {
        public var total: Int
        public var running: Int
    }

    public var version: String
    public var pluginAbi: String
    public var node: String
    public var backend: String
    public var uptimeSeconds: Double
    public var containers: Counts
    public var database: String
    public var eventStream: Bool
    /// Admins only.
    public var capacity: NodeCapacity?
}

/// One environment's current use (`GET /v1/metrics`).
public struct ContainerMetricsView: Codable, Sendable, Equatable {
    public var name: String
    public var username: String?
    public var state: String
    public var cpuPercent: Double?
    public var cpuUsageNanoseconds: UInt64?
    public var memoryUsageBytes: UInt64?
    public var diskUsageBytes: UInt64?
    public var processes: Int?
}

/// What a create form offers.
public struct CatalogView: Codable, Sendable, Equatable {
    public struct Stack: Codable, Sendable, Equatable {
        public var name: String
        public var description: String
        public var packages: [String]
        public var check: [String]
    }

    public var osTypes: [String]
    public var defaultImage: String
    public var stacks: [Stack]
}

/// This node's totals over the last hour, with its capacity.
public struct NodeMetricsView: Codable, Sendable, Equatable {
    public struct Capacity: Codable, Sendable, Equatable {
        public var cpus: Int
        public var memoryBytes: UInt64
        public var diskBytes: UInt64
    }

    public var node: String
    public var capacity: Capacity?
    public var samples: [UsageSample]
}

/// What enabling or disabling a plugin changed.
public struct PluginToggleView: Codable, Sendable, Equatable {
    public var id: String
    public var enabled: Bool
    public var node: String
    public var configPath: String
    public var section: String
    public var restartRequired: Bool
    public var message: String
    public init(id: String, enabled: Bool, node: String, configPath: String, section: String, restartRequired: Bool, message: String) {
        self.id = id
        self.enabled = enabled
        self.node = node
        self.configPath = configPath
        self.section = section
        self.restartRequired = restartRequired
        self.message = message
    }
}
