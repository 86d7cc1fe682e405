/// CPU (millicores), memory and disk (bytes): what a placement asks for and what a node has.
public struct Resources: Sendable, Hashable, Codable {
    public var cpuMillis: Int64
    public var memoryBytes: Int64
    public var diskBytes: Int64

    public init(cpuMillis: Int64 = 0, memoryBytes: Int64 = 0, diskBytes: Int64 = 0) {
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
    }

    public static let zero = Resources()

    public static func + (a: Resources, b: Resources) -> Resources {
        Resources(cpuMillis: a.cpuMillis + b.cpuMillis, memoryBytes: a.memoryBytes + b.memoryBytes, diskBytes: a.diskBytes + b.diskBytes)
    }

    public static func - (a: Resources, b: Resources) -> Resources {
        Resources(cpuMillis: a.cpuMillis - b.cpuMillis, memoryBytes: a.memoryBytes - b.memoryBytes, diskBytes: a.diskBytes - b.diskBytes)
    }
}

/// A GPU a node can hand to one environment (passed through by PCI address).
public struct GPUDevice: Sendable, Hashable, Codable {
    public var pciAddress: String
    public var model: String
    /// The environment it is passed through to, as the node reports it (not free).
    public var attachedTo: String?
    public init(pciAddress: String, model: String, attachedTo: String? = nil) {
        self.pciAddress = pciAddress
        self.model = model
        self.attachedTo = attachedTo
    }
}

/// What a node reports about itself.
public struct NodeInfo: Sendable, Hashable, Codable {
    public var name: String
    /// Backend kinds it serves ("lxc", "vm", ...).
    public var kinds: Set<String>
    public var capacity: Resources
    /// Used by things the scheduler did not place (the node's own reservations, adopted environments).
    public var reserved: Resources
    public var gpus: [GPUDevice]
    public var labels: [String: String]
    public var pool: String?
    /// A spot / preemptible machine: cheaper, but may disappear.
    public var preemptible: Bool

    public init(name: String, kinds: Set<String>, capacity: Resources, reserved: Resources = .zero, gpus: [GPUDevice] = [],
                labels: [String: String] = [:], pool: String? = nil, preemptible: Bool = false) {
        self.name = name
        self.kinds = kinds
        self.capacity = capacity
        self.reserved = reserved
        self.gpus = gpus
        self.labels = labels
        self.pool = pool
        self.preemptible = preemptible
    }
}

/// What the control plane knows about a node's condition.
public struct NodeCondition: Sendable, Hashable, Codable {
    public var healthy: Bool
    public var draining: Bool
    /// A preemptible node that is being (or was) reclaimed by its provider.
    public var preempted: Bool
    public init(healthy: Bool = true, draining: Bool = false, preempted: Bool = false) {
        self.healthy = healthy
        self.draining = draining
        self.preempted = preempted
    }
}

/// One environment to place.
public struct PlacementRequest: Sendable, Hashable, Codable {
    /// Unique per placement (the environment's name): releasing uses it.
    public var id: String
    /// The backend kind that serves the request's OS type.
    public var kind: String
    public var resources: Resources
    public var gpus: Int
    /// Only GPUs of this model, when set.
    public var gpuModel: String?
    /// Every label must be on the node with this value.
    public var labels: [String: String]
    public var pool: String?
    /// Avoid preemptible nodes for it.
    public var critical: Bool
    /// Only this node, when the user picked one (the filters still apply to it).
    public var node: String?

    public init(id: String, kind: String, resources: Resources, gpus: Int = 0, gpuModel: String? = nil,
                labels: [String: String] = [:], pool: String? = nil, critical: Bool = false, node: String? = nil) {
        self.node = node
        self.id = id
        self.kind = kind
        self.resources = resources
        self.gpus = gpus
        self.gpuModel = gpuModel
        self.labels = labels
        self.pool = pool
        self.critical = critical
    }
}

/// How the scheduler chooses among the nodes that can take a request.
public struct SchedulingPolicy: Sendable, Hashable, Codable {
    public enum Strategy: String, Sendable, Hashable, Codable {
        /// Fill the busiest node that fits: fewer machines, lower bills.
        case binpack
        /// Least busy node first: more headroom per environment.
        case spread
    }

    public var strategy: Strategy
    /// Effective capacity = capacity x ratio (CPU is commonly over-committed; memory and disk rarely).
    public var cpuOvercommit: Double
    public var memoryOvercommit: Double
    public var diskOvercommit: Double
    /// Subtracted from the score of a preemptible node for a critical request. The default
    /// (100) makes preemptible nodes a last resort for critical environments; a smaller value
    /// makes it a preference that a much better fit can outweigh.
    public var preemptiblePenalty: Double
    /// Subtracted from the score of a node with free GPUs for a request without GPUs, so GPU
    /// machines stay free for the work that needs them. The default (100, the whole range of
    /// the strategy's score) makes them a last resort.
    public var gpuReservePenalty: Double
    /// Whether a critical request may land on a preemptible node at all.
    public enum PreemptibleUse: String, Sendable, Hashable, Codable, CaseIterable {
        /// Never: a preemptible node is filtered out for it (`preemptibleForCritical`).
        case never
        /// Only when nothing else fits (`preemptiblePenalty` orders them last).
        case lastResort = "last-resort"
    }
    public var criticalOnPreemptible: PreemptibleUse

    public init(strategy: Strategy = .binpack, cpuOvercommit: Double = 4, memoryOvercommit: Double = 1, diskOvercommit: Double = 1,
                preemptiblePenalty: Double = 100, gpuReservePenalty: Double = 100, criticalOnPreemptible: PreemptibleUse = .never) {
        self.criticalOnPreemptible = criticalOnPreemptible
        self.strategy = strategy
        self.cpuOvercommit = cpuOvercommit
        self.memoryOvercommit = memoryOvercommit
        self.diskOvercommit = diskOvercommit
        self.preemptiblePenalty = preemptiblePenalty
        self.gpuReservePenalty = gpuReservePenalty
    }
}

/// Why a node cannot take a request.
public enum FilterReason: Sendable, Hashable, Codable, CustomStringConvertible {
    case unhealthy
    case draining
    case preempted
    case preemptibleForCritical
    case kindNotServed(String)
    case poolMismatch(wanted: String, node: String?)
    case labelMismatch(key: String, wanted: String, node: String?)
    case notTheRequestedNode(String)
    case insufficientCPU(requestedMillis: Int64, freeMillis: Int64)
    case insufficientMemory(requestedBytes: Int64, freeBytes: Int64)
    case insufficientDisk(requestedBytes: Int64, freeBytes: Int64)
    case gpusUnavailable(requested: Int, free: Int)

    /// A short, bounded name of the reason (a metric label: no values in it).
    public var name: String {
        switch self {
        case .unhealthy: "unhealthy"
        case .draining: "draining"
        case .preempted: "preempted"
        case .preemptibleForCritical: "preemptible_for_critical"
        case .kindNotServed: "kind_not_served"
        case .poolMismatch: "pool_mismatch"
        case .labelMismatch: "label_mismatch"
        case .notTheRequestedNode: "not_the_requested_node"
        case .insufficientCPU: "insufficient_cpu"
        case .insufficientMemory: "insufficient_memory"
        case .insufficientDisk: "insufficient_disk"
        case .gpusUnavailable: "gpus_unavailable"
        }
    }

    public var description: String {
        switch self {
        case .unhealthy: "node is unhealthy"
        case .draining: "node is draining"
        case .preempted: "node is being preempted"
        case .preemptibleForCritical: "node is preemptible and the environment is critical"
        case .kindNotServed(let k): "no \(k) backend on this node"
        case .poolMismatch(let w, let n): "pool \(n ?? "(none)") is not \(w)"
        case .labelMismatch(let k, let w, let n): "label \(k)=\(n ?? "(unset)") is not \(w)"
        case .insufficientCPU(let r, let f): "CPU: needs \(r)m, \(max(0, f))m free after over-commit"
        case .insufficientMemory(let r, let f): "memory: needs \(r) B, \(max(0, f)) B free after over-commit"
        case .insufficientDisk(let r, let f): "disk: needs \(r) B, \(max(0, f)) B free after over-commit"
        case .gpusUnavailable(let r, let f): "GPUs: needs \(r), \(f) free"
        case .notTheRequestedNode(let n): "the request asks for node \(n)"
        }
    }
}

/// A node's verdict for one request.
public struct NodeVerdict: Sendable, Hashable, Codable {
    public var node: String
    /// Empty when the node passed every filter.
    public var filteredBecause: [FilterReason]
    /// Set when the node passed: the total and its parts.
    public var score: Double?
    public var scoreParts: [String: Double]
}

/// Why a request went where it went (or nowhere).
public struct Explanation: Sendable, Hashable, Codable {
    public var request: PlacementRequest
    public var policy: SchedulingPolicy
    /// The winner, if any node passed.
    public var chosen: String?
    /// Every node: the passing ones by descending score, then the filtered ones by name.
    public var verdicts: [NodeVerdict]
    /// The instance backend the chosen node maps the kind to (filled in by the control plane,
    /// which knows the nodes' plugins; the scheduler itself only places by kind).
    public var backend: String?
}

/// A placement, with the GPUs it holds.
public struct Placement: Sendable, Hashable, Codable {
    public var requestID: String
    public var node: String
    public var gpuAddresses: [String]
    public var score: Double
}

public enum SchedulingError: Error, Sendable, Equatable, CustomStringConvertible {
    case noFit(String)
    case duplicate(String)
    case invalid(String)

    public var description: String {
        switch self {
        case .noFit(let s), .duplicate(let s), .invalid(let s): s
        }
    }
}
