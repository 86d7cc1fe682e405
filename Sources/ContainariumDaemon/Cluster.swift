public import ContainariumCore
public import ContainariumScheduler
import ContainariumService
public import ContainariumStore
public import Foundation
public import Logging
import Synchronization

/// What a node tells the control plane every few seconds (gRPC `ReportNode`).
public struct NodeReport: Codable, Sendable, Equatable {
    /// The node's gRPC address as the control plane should dial it (HOST:PORT).
    public var address: String
    /// A short-lived admin token minted by the node with its own secret: the control plane
    /// acts on the node's environments with it. Never stored.
    public var token: String?
    public var info: NodeInfo
    /// Environments on the node: name and the resources they hold (their limits).
    public var environments: [String: Resources]

    public init(address: String, token: String?, info: NodeInfo, environments: [String: Resources]) {
        self.address = address
        self.token = token
        self.info = info
        self.environments = environments
    }
}

/// One node as the control plane sees it.
public struct NodeView: Codable, Sendable, Equatable {
    public var name: String
    public var address: String?
    public var local: Bool
    public var healthy: Bool
    public var draining: Bool
    public var lastSeen: Date?
    public var kinds: [String]
    public var capacity: Resources
    public var used: Resources
    public var gpus: [GPUDevice]
    public var labels: [String: String]
    public var pool: String?
    public var preemptible: Bool
    public var environments: Int
}

/// The nodes of the cluster, their health, and the scheduler that places environments on them.
///
/// Every daemon has one. A node that reports to a control plane (`node join`) is a member of
/// that control plane's cluster; the control plane is itself a member (the local node) when it
/// has an instance backend. A member that has not reported for `unhealthyAfter` seconds is
/// marked unhealthy (placements avoid it; its environments are shown as unreachable, never
/// deleted) and healthy again on its next report.
public final class Cluster: Sendable {
    public let scheduler: Scheduler
    let store: Store
    let localName: String
    let unhealthyAfter: TimeInterval
    /// Client certificates for calls to members that run with --mtls.
    let certsDir: String?
    let logger: Logger

    struct Member {
        var view: NodeView
        var token: String?
        var environments: Set<String>
    }
    private let members = Mutex<[String: Member]>([:])

    public init(store: Store, localName: String, policy: SchedulingPolicy, unhealthyAfter: TimeInterval = 10, certsDir: String? = nil, logger: Logger) {
        self.certsDir = certsDir
        self.store = store
        self.localName = localName
        self.scheduler = Scheduler(policy: policy)
        self.unhealthyAfter = unhealthyAfter
        self.logger = logger
    }

    /// Nodes remembered from before a restart (unhealthy until they report again).
    public func load() async throws(ContainariumError) {
        for (name, address, infoJSON, draining) in try await store.nodes() where !address.isEmpty && name != localName {
            guard let info = try? WireJSON.decode(NodeInfo.self, from: Data(infoJSON.utf8)) else { continue }
            let view = Self.view(info, address: address, local: false, healthy: false, draining: draining, lastSeen: nil, used: info.reserved, environments: 0)
            members.withLock { $0[name] = Member(view: view, token: nil, environments: []) }
            scheduler.upsert(info, condition: NodeCondition(healthy: false, draining: draining))
        }
    }

    static func view(_ info: NodeInfo, address: String?, local: Bool, healthy: Bool, draining: Bool, lastSeen: Date?, used: Resources, environments: Int) -> NodeView {
        NodeView(name: info.name, address: address, local: local, healthy: healthy, draining: draining, lastSeen: lastSeen, kinds: info.kinds.sorted(),
                 capacity: info.capacity, used: used, gpus: info.gpus, labels: info.labels, pool: info.pool, preemptible: info.preemptible,
                 environments: environments)
    }

    /// A report from a member (or the local node's own, with `local`).
    public func report(_ r: NodeReport, local: Bool = false, now: Date = Date()) async throws(ContainariumError) {
        guard Self.validNodeName(r.info.name) else { throw .invalid("node name '\(r.info.name)' must be 1-63 of a-z 0-9 . - and start with a letter or digit") }
        if !local {
            guard r.info.name != localName else { throw .invalid("\(r.info.name) is the control plane's own name; give the node another (nodeName in its config)") }
            _ = try RemoteClient(server: r.address, certsDir: nil, token: nil)  // validates HOST:PORT
        }
        // Placements the node now reports are counted in its report; stop holding them here.
        for name in r.environments.keys { scheduler.release(name) }
        var info = r.info
        info.reserved = r.environments.values.reduce(Resources.zero, +)
        let (draining, isNew) = members.withLock { m -> (Bool, Bool) in
            let draining = m[info.name]?.view.draining ?? false
            let isNew = m[info.name] == nil || m[info.name]?.view.address != r.address
            m[info.name] = Member(
                view: Self.view(info, address: local ? nil : r.address, local: local, healthy: true, draining: draining, lastSeen: now,
                                used: info.reserved, environments: r.environments.count),
                token: r.token, environments: Set(r.environments.keys))
            return (draining, isNew)
        }
        scheduler.upsert(info, condition: NodeCondition(healthy: true, draining: draining))
        if !local {
            let json = String(decoding: (try? WireJSON.encode(info)) ?? Data("{}".utf8), as: UTF8.self)
            try await store.saveNode(name: info.name, address: local ? "" : r.address, info: json, draining: draining)
        }
        if isNew && !local { logger.notice("node \(info.name) joined from \(r.address)") }
    }

    /// Mark members that stopped reporting unhealthy. Returns the names that changed.
    @discardableResult
    public func checkHealth(now: Date = Date()) -> [String] {
        let changed = members.withLock { m -> [(String, Bool, Bool)] in
            var out: [(String, Bool, Bool)] = []
            for (name, member) in m where !member.view.local {
                let healthy = member.view.lastSeen.map { now.timeIntervalSince($0) < unhealthyAfter } ?? false
                if healthy != member.view.healthy {
                    m[name]?.view.healthy = healthy
                    out.append((name, healthy, member.view.draining))
                }
            }
            return out
        }
        for (name, healthy, draining) in changed {
            scheduler.setCondition(name, NodeCondition(healthy: healthy, draining: draining))
            if healthy { logger.notice("node \(name) is healthy again") } else { logger.warning("node \(name) stopped reporting: unhealthy") }
        }
        return changed.map(\.0)
    }

    public func setDraining(_ name: String, _ draining: Bool) async throws(ContainariumError) {
        guard let member = members.withLock({ m -> Member? in
            m[name]?.view.draining = draining
            return m[name]
        }) else { throw .notFound("no node \(name)") }
        scheduler.setCondition(name, NodeCondition(healthy: member.view.healthy, draining: draining))
        let info = NodeInfo(name: name, kinds: Set(member.view.kinds), capacity: member.view.capacity, reserved: member.view.used,
                            gpus: member.view.gpus, labels: member.view.labels, pool: member.view.pool, preemptible: member.view.preemptible)
        let json = String(decoding: (try? WireJSON.encode(info)) ?? Data("{}".utf8), as: UTF8.self)
        try await store.saveNode(name: name, address: member.view.address ?? "", info: json, draining: draining)
    }

    /// Forget a member. Its environments are not touched (they stay on the machine); refused
    /// while it still reports environments, unless `force`.
    public func remove(_ name: String, force: Bool) async throws(ContainariumError) {
        guard let member = members.withLock({ $0[name] }) else { throw .notFound("no node \(name)") }
        guard !member.view.local else { throw ContainariumError(.failedPrecondition, "\(name) is the control plane itself") }
        guard force || member.view.environments == 0 else {
            throw ContainariumError(.failedPrecondition, "\(name) still has \(member.view.environments) environments: drain it and move or delete them first, or use --force")
        }
        members.withLock { _ = $0.removeValue(forKey: name) }
        scheduler.remove(name)
        try await store.deleteNode(name)
    }

    public var nodes: [NodeView] {
        members.withLock { m in m.values.map(\.view).sorted { $0.name < $1.name } }
    }

    public func member(_ name: String) -> NodeView? { members.withLock { $0[name]?.view } }

    /// Is anything besides the local node a member?
    public var hasRemoteMembers: Bool { members.withLock { m in m.values.contains { !$0.view.local } } }

    /// A client for a remote member, with the token it last gave us.
    public func client(for name: String) throws(ContainariumError) -> RemoteClient {
        guard let m = members.withLock({ $0[name] }) else { throw .notFound("no node \(name)") }
        guard let address = m.view.address, !m.view.local else { throw .invalid("\(name) is the local node") }
        guard m.view.healthy else { throw ContainariumError(.unavailable, "node \(name) is not reachable (no report for \(Int(unhealthyAfter)) s or more)") }
        return try RemoteClient(server: address, certsDir: certsDir, token: m.token)
    }

    public static func validNodeName(_ s: String) -> Bool {
        guard (1...63).contains(s.utf8.count), let first = s.unicodeScalars.first,
              ("a"..."z").contains(first) || ("0"..."9").contains(first) else { return false }
        return s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "." }
    }
}
