public import Foundation

/// A machine's state as a node.lifecycle/1 plugin reports it
/// (docs/schemas/node.lifecycle-1.schema.json): the answer of `status`, `start` and `stop`.
public struct NodeLifecycleStatus: Codable, Sendable, Equatable {
    public var node: String
    /// running, stopped, starting, stopping, preempted or unknown.
    public var state: String
    public var address: String?
    public var preemptible: Bool?
    public var lastPreemptedAt: Date?

    public init(node: String, state: String, address: String? = nil, preemptible: Bool? = nil, lastPreemptedAt: Date? = nil) {
        self.node = node
        self.state = state
        self.address = address
        self.preemptible = preemptible
        self.lastPreemptedAt = lastPreemptedAt
    }

    /// Down in a way a start brings back.
    public var isStopped: Bool { state == "stopped" || state == "preempted" }
}
