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
    /// Refused when set: nodes used to send a short-lived admin token for the control plane to
    /// call them back with. No admin token travels in a report any more; the control plane
    /// reaches a node through its link, or at its address with its own mTLS certificate.
    public var token: String?
    public var info: NodeInfo
    /// Environments on the node: name and the resources they hold (their limits).
    public var environments: [String: Resources]
    /// The node's SSH gateway, when it runs one: the control plane's gateway reaches the
    /// node's environments through it.
    public var gateway: GatewayEndpoint?

    public struct GatewayEndpoint: Codable, Sendable, Equatable {
        /// HOST:PORT as the control plane should dial it.
        public var address: String
        /// Its Ed25519 host key ("ssh-ed25519 BASE64"), pinned by the control plane.
        public var hostKey: String
        public init(address: String, hostKey: String) {
            self.address = address
            self.hostKey = hostKey
        }
    }

    /// Set when the node's node.lifecycle/1 plugin announced that its provider is reclaiming
    /// the machine ("preempted", "maintenance: …"): nothing is placed on it meanwhile.
    public var preemption: String?

    /// The node's plugins (dashboard: the unified view across backends).
    public var plugins: [NodePlugin]?

    public init(address: String, token: String?, info: NodeInfo, environments: [String: Resources], gateway: GatewayEndpoint? = nil,
                plugins: [NodePlugin]? = nil, preemption: String? = nil) {
        self.preemption = preemption
        self.gateway = gateway
        self.plugins = plugins
        self.address = address
        self.token = token
        self.info = info
        self.environments = environments
    }
}

/// One plugin of a node: id, version, ABI and state (ready, disabled, failed: ...).
public struct NodePlugin: Codable, Sendable, Equatable {
    public var id: String
    public var version: String?
    public var abi: String?
    public var state: String
    public var capabilities: [String]
    /// Instance backends: the kinds and OS families they serve (from their manifests).
    public var kinds: [String]?
    public var osTypes: [String]?
    public init(id: String, version: String?, abi: String?, state: String, capabilities: [String], kinds: [String]? = nil, osTypes: [String]? = nil) {
        self.id = id
        self.version = version
        self.abi = abi
        self.state = state
        self.capabilities = capabilities
        self.kinds = kinds
        self.osTypes = osTypes
    }
}

/// What the control plane answers a report with.
public struct NodeReportReply: Codable, Sendable, Equatable {
    /// Upstream keys of the control plane's SSH gateways: the node's gateway lets them in for
    /// one hop (as ENVIRONMENT+ACCOUNT) to reach environments on the node.
    public var gatewayKeys: [String]
    public init(gatewayKeys: [String]) { self.gatewayKeys = gatewayKeys }
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
    /// The node's SSH gateway (HOST:PORT), when it runs one.
    public var sshGateway: String?
    public var plugins: [NodePlugin]?
    /// What its node.lifecycle/1 plugin announced (a coming preemption or maintenance), as its
    /// last report said: nothing is placed on it meanwhile.
    public var preemption: String? = nil
    public var preempted: Bool { preemption != nil }

    /// What the scheduler is told of this node.
    var condition: NodeCondition { NodeCondition(healthy: healthy, draining: draining, preempted: preempted) }
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
    /// Told of every placement decision: placed or not, how long it took, and (unplaced) the
    /// reasons nodes were filtered out (`FilterReason.name`).
    let decisions = Mutex<(@Sendable (Bool, Duration, Set<String>) -> Void)?>(nil)
    public func observeDecisions(_ observe: @escaping @Sendable (Bool, Duration, Set<String>) -> Void) { decisions.withLock { $0 = observe } }
    let store: Store
    let localName: String
    let unhealthyAfter: TimeInterval
    /// Client certificates for calls to members that run with --mtls.
    let certsDir: String?
    /// The links members keep open to this control plane: calls and SSH hops to a linked member
    /// go through its link; a member without one is dialled at its advertised address.
    let links: (any LinkSockets)?
    /// Opens connections to members (the daemon's gRPC client).
    let connector: any NodeConnector
    let logger: Logger

    struct Member {
        var view: NodeView
        var environments: Set<String>
        var gateway: NodeReport.GatewayEndpoint?
    }
    private let members = Mutex<[String: Member]>([:])
    /// Told which environments a member reported for the first time, and which it stopped
    /// reporting (the control plane turns them into container.changed/removed events).
    let environmentsChanged = Mutex<(@Sendable (_ node: String, _ added: [String], _ removed: [String]) -> Void)?>(nil)
    public func onEnvironmentsChanged(_ f: @escaping @Sendable (_ node: String, _ added: [String], _ removed: [String]) -> Void) {
        environmentsChanged.withLock { $0 = f }
    }
    /// This daemon, as the owner of the placement rows it writes.
    let daemonID: String
    /// Names with a row in the shared placements table that this daemon knows of: its own,
    /// and other control planes' (held in the scheduler here too, so no node is double-booked).
    private let rows = Mutex<(own: Set<String>, foreign: Set<String>)>(([], []))
    /// Creates that finished (the environment exists) but that their node has not reported
    /// yet: counted as the node's until it does, or for `settleWindow` at most (an environment
    /// deleted before its node ever reported it).
    private let recent = Mutex<[String: (node: String, resources: Resources, gpus: [String], at: Date)]>([:])
    static let settleWindow: TimeInterval = 10
    /// A placement row older than this belongs to a create that died with its control plane.
    static let placementLifetime: TimeInterval = 1800
    /// Key of the advisory lock that serializes placements between control planes.
    static let placementLock: Int64 = 0x636f_6e74_706c_6163

    public init(store: Store, localName: String, policy: SchedulingPolicy, unhealthyAfter: TimeInterval = 10, certsDir: String? = nil,
                daemonID: String = UUID().uuidString, links: (any LinkSockets)? = nil, connector: any NodeConnector, logger: Logger) {
        self.daemonID = daemonID
        self.links = links
        self.connector = connector
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
            members.withLock { $0[name] = Member(view: view, environments: [], gateway: nil) }
            scheduler.upsert(info, condition: view.condition)
        }
    }

    static func view(_ info: NodeInfo, address: String?, local: Bool, healthy: Bool, draining: Bool, lastSeen: Date?, used: Resources, environments: Int) -> NodeView {
        NodeView(name: info.name, address: address, local: local, healthy: healthy, draining: draining, lastSeen: lastSeen, kinds: info.kinds.sorted(),
                 capacity: info.capacity, used: used, gpus: info.gpus, labels: info.labels, pool: info.pool, preemptible: info.preemptible,
                 environments: environments, sshGateway: nil, plugins: nil)
    }

    /// A report from a member (or the local node's own, with `local`).
    public func report(_ r: NodeReport, local: Bool = false, now: Date = Date()) async throws(ContainariumError) {
        guard Self.validNodeName(r.info.name) else { throw .invalid("node name '\(r.info.name)' must be 1-63 of a-z 0-9 . - and start with a letter or digit") }
        if !local {
            guard r.token == nil else {
                throw .invalid("reports no longer carry a token for the control plane (it calls nodes back through their link, or with its own mTLS certificate): upgrade this node")
            }
            guard r.info.name != localName else { throw .invalid("\(r.info.name) is the control plane's own name; give the node another (nodeName in its config)") }
            if let p = r.preemption, p.isEmpty || p.count > 200 || p.unicodeScalars.contains(where: { $0.value < 0x20 }) {
                throw .invalid("a report's preemption notice must be 1-200 printable characters")
            }
            // No address: a node that only dials out (reached through its link).
            if !r.address.isEmpty { _ = try NodeAddress.parse(r.address) }
            if let g = r.gateway {
                if !g.address.isEmpty { _ = try Self.hostPort(g.address) }
                guard g.hostKey.hasPrefix("ssh-ed25519 "), g.hostKey.split(separator: " ").count >= 2 else {
                    throw .invalid("the node's gateway host key must be an ssh-ed25519 public key")
                }
            }
        }
        // Placements the node now reports are counted in its report; stop holding them here.
        // Finished creates it does not report yet are added to what it reports.
        let reportedNames = Set(r.environments.keys)
        let pending = recent.withLock { rec -> [(String, Resources, [String])] in
            for (name, e) in rec where e.node == r.info.name && (reportedNames.contains(name) || now.timeIntervalSince(e.at) > Self.settleWindow) {
                rec[name] = nil
            }
            return rec.filter { $0.value.node == r.info.name }.map { ($0.key, $0.value.resources, $0.value.gpus) }
        }
        for name in reportedNames { scheduler.release(name) }
        for (name, _, _) in pending { scheduler.release(name) }
        var info = r.info
        info.reserved = r.environments.values.reduce(Resources.zero, +) + pending.map(\.1).reduce(Resources.zero, +)
        for (name, _, gpus) in pending {
            for i in info.gpus.indices where gpus.contains(info.gpus[i].pciAddress) && info.gpus[i].attachedTo == nil { info.gpus[i].attachedTo = name }
        }
        let (view, isNew, before) = members.withLock { m -> (NodeView, Bool, Set<String>?) in
            let draining = m[info.name]?.view.draining ?? false
            let isNew = m[info.name] == nil || m[info.name]?.view.address != r.address
            let before = m[info.name].map(\.environments)
            var view = Self.view(info, address: local || r.address.isEmpty ? nil : r.address, local: local, healthy: true, draining: draining, lastSeen: now,
                                 used: info.reserved, environments: r.environments.count)
            view.sshGateway = r.gateway.map { $0.address.isEmpty ? "link" : $0.address }
            view.plugins = r.plugins
            view.preemption = r.preemption
            m[info.name] = Member(view: view, environments: Set(r.environments.keys), gateway: local ? nil : r.gateway)
            return (view, isNew, before)
        }
        if !local, let before, let notify = environmentsChanged.withLock({ $0 }) {
            let added = reportedNames.subtracting(before).sorted(), removed = before.subtracting(reportedNames).sorted()
            if !added.isEmpty || !removed.isEmpty { notify(info.name, added, removed) }
        }
        scheduler.upsert(info, condition: view.condition)
        if !local {
            let json = String(decoding: (try? WireJSON.encode(info)) ?? Data("{}".utf8), as: UTF8.self)
            try await store.saveNodeReport(name: info.name, address: r.address, info: json)
        }
        // The node counts these now: their placement rows can go.
        let reported = Set(r.environments.keys)
        let settled = rows.withLock { held in held.own.union(held.foreign).intersection(reported) }
        for name in settled {
            _ = try? await store.deletePlacement(name)
            rows.withLock { $0.own.remove(name); $0.foreign.remove(name) }
        }
        if isNew && !local { logger.notice("node \(info.name) joined from \(r.address)") }
    }

    /// Mark members that stopped reporting unhealthy. Returns the names that changed.
    @discardableResult
    public func checkHealth(now: Date = Date()) -> [String] {
        let changed = members.withLock { m -> [NodeView] in
            var out: [NodeView] = []
            for (name, member) in m where !member.view.local {
                let healthy = member.view.lastSeen.map { now.timeIntervalSince($0) < unhealthyAfter } ?? false
                if healthy != member.view.healthy {
                    m[name]?.view.healthy = healthy
                    if let view = m[name]?.view { out.append(view) }
                }
            }
            return out
        }
        for view in changed {
            let (name, healthy) = (view.name, view.healthy)
            scheduler.setCondition(name, view.condition)
            if healthy { logger.notice("node \(name) is healthy again") } else { logger.warning("node \(name) stopped reporting: unhealthy") }
        }
        return changed.map(\.name)
    }

    public func setDraining(_ name: String, _ draining: Bool) async throws(ContainariumError) {
        guard let member = members.withLock({ m -> Member? in
            m[name]?.view.draining = draining
            return m[name]
        }) else { throw .notFound("no node \(name)") }
        scheduler.setCondition(name, member.view.condition)
        let info = NodeInfo(name: name, kinds: Set(member.view.kinds), capacity: member.view.capacity, reserved: member.view.used,
                            gpus: member.view.gpus, labels: member.view.labels, pool: member.view.pool, preemptible: member.view.preemptible)
        let json = String(decoding: (try? WireJSON.encode(info)) ?? Data("{}".utf8), as: UTF8.self)
        if member.view.local {
            try await store.saveNode(name: name, address: "", info: json, draining: draining)
        } else {
            try await store.setNodeDraining(name, draining)
        }
    }

    // MARK: - placement shared by control planes

    /// Place under the database-wide placement lock, after taking in what other control
    /// planes sharing the database hold, and record the placement for them in turn.
    public func place(_ request: PlacementRequest) async throws(ContainariumError) -> Placement {
        try await store.db.withLock(Self.placementLock) { () async throws(ContainariumError) -> Placement in
            try await self.syncPlacements()
            let placed: Placement
            let clock = ContinuousClock(), started = clock.now
            do throws(SchedulingError) {
                placed = try self.scheduler.place(request)
                self.decisions.withLock { $0 }?(true, clock.now - started, [])
            } catch {
                if let observe = self.decisions.withLock({ $0 }) {
                    let elapsed = clock.now - started
                    let verdicts = self.scheduler.explain(request).verdicts
                    var reasons = Set(verdicts.flatMap { $0.filteredBecause.map(\.name) })
                    if verdicts.isEmpty { reasons.insert("no_nodes") }
                    if case .duplicate = error { reasons = ["duplicate"] }
                    observe(false, elapsed, reasons)
                }
                throw ContainariumError(.resourceExhausted, error.description)
            }
            do throws(ContainariumError) {
                try await self.store.insertPlacement(Store.PlacementRow(
                    name: request.id, node: placed.node, cpuMillis: request.resources.cpuMillis, memoryBytes: request.resources.memoryBytes,
                    diskBytes: request.resources.diskBytes, gpus: placed.gpuAddresses, daemon: self.daemonID))
            } catch {
                self.scheduler.release(request.id)
                throw error
            }
            self.rows.withLock { _ = $0.own.insert(request.id) }
            return placed
        }
    }

    /// Give back a placement this daemon made (its create failed).
    public func release(_ name: String) async {
        scheduler.release(name)
        recent.withLock { _ = $0.removeValue(forKey: name) }
        if rows.withLock({ $0.own.remove(name) }) != nil { _ = try? await store.deletePlacement(name) }
    }

    /// A create this daemon placed finished: its environment exists. It stays counted until
    /// its node reports it (see `recent`); the shared row goes.
    public func settle(_ name: String, now: Date = Date()) async {
        if let h = scheduler.holding(name) { recent.withLock { $0[name] = (h.node, h.resources, h.gpuAddresses, now) } }
        if rows.withLock({ $0.own.remove(name) }) != nil { _ = try? await store.deletePlacement(name) }
    }

    /// Hold what other control planes placed (and let go of what they no longer hold).
    func syncPlacements(now: Date = Date()) async throws(ContainariumError) {
        _ = try await store.expirePlacements(before: now.addingTimeInterval(-Self.placementLifetime))
        let foreign = try await store.placements().filter { $0.daemon != daemonID }
        let names = Set(foreign.map(\.name))
        let (known, own) = rows.withLock { ($0.foreign, $0.own) }
        for p in foreign where !known.contains(p.name) && !own.contains(p.name) {
            let request = PlacementRequest(id: p.name, kind: "", resources: Resources(cpuMillis: p.cpuMillis, memoryBytes: p.memoryBytes, diskBytes: p.diskBytes))
            do throws(SchedulingError) {
                try scheduler.adopt(request, on: p.node, gpuAddresses: p.gpus)
                rows.withLock { _ = $0.foreign.insert(p.name) }
            } catch {
                continue  // a node this control plane does not know (yet)
            }
        }
        // Gone from the store: that create finished or failed. Counted as finished (the safe
        // side) until the node's next report says which.
        for name in known where !names.contains(name) {
            if let h = scheduler.holding(name) { recent.withLock { $0[name] = (h.node, h.resources, h.gpuAddresses, now) } }
            rows.withLock { _ = $0.foreign.remove(name) }
        }
    }

    /// Take in what other control planes changed in the shared store: nodes that joined
    /// through them, drain flags, removals, placements.
    public func syncFromStore() async {
        guard let stored = try? await store.nodes() else { return }
        let names = Set(stored.map(\.0))
        for (name, address, infoJSON, draining) in stored where name != localName && !address.isEmpty {
            let change = members.withLock { m -> (known: NodeView?, drainChanged: Bool) in
                guard let member = m[name] else { return (nil, false) }
                guard member.view.draining != draining else { return (member.view, false) }
                m[name]?.view.draining = draining
                return (m[name]?.view, true)
            }
            if change.known == nil {
                guard let info = try? WireJSON.decode(NodeInfo.self, from: Data(infoJSON.utf8)) else { continue }
                let view = Self.view(info, address: address, local: false, healthy: false, draining: draining, lastSeen: nil, used: info.reserved, environments: 0)
                members.withLock { $0[name] = Member(view: view, environments: [], gateway: nil) }
                scheduler.upsert(info, condition: view.condition)
            } else if change.drainChanged, let view = change.known {
                scheduler.setCondition(name, view.condition)
            }
        }
        let gone = members.withLock { m -> [String] in
            let gone = m.values.filter { !$0.view.local && !names.contains($0.view.name) }.map(\.view.name)
            for n in gone { m[n] = nil }
            return gone
        }
        for n in gone {
            scheduler.remove(n)
            logger.notice("node \(n) was removed by another control plane")
        }
        try? await syncPlacements()
    }

    /// Forget a member. Its environments are not touched (they stay on the machine); refused
    /// while it still reports environments, unless `force`.
    /// Would `remove` refuse? (So that what goes with a removal, its tokens, goes only with one.)
    public func checkRemovable(_ name: String, force: Bool) throws(ContainariumError) {
        guard let member = members.withLock({ $0[name] }) else { throw .notFound("no node \(name)") }
        guard !member.view.local else { throw ContainariumError(.failedPrecondition, "\(name) is the control plane itself") }
        guard force || member.view.environments == 0 else {
            throw ContainariumError(.failedPrecondition, "\(name) still has \(member.view.environments) environments: drain it and move or delete them first, or use --force")
        }
    }

    public func remove(_ name: String, force: Bool) async throws(ContainariumError) {
        try checkRemovable(name, force: force)
        members.withLock { _ = $0.removeValue(forKey: name) }
        scheduler.remove(name)
        try await store.deleteNode(name)
    }

    public var nodes: [NodeView] {
        members.withLock { m in m.values.map(\.view).sorted { $0.name < $1.name } }
    }

    public func member(_ name: String) -> NodeView? { members.withLock { $0[name]?.view } }

    /// A healthy member's SSH gateway: through its link (`socketPath`) when it holds one open,
    /// else at its advertised host and port; and its pinned host key.
    public func gateway(of name: String) throws(ContainariumError) -> (host: String, port: Int, socketPath: String?, hostKey: String) {
        guard let m = members.withLock({ $0[name] }) else { throw .notFound("no node \(name)") }
        guard m.view.healthy else { throw ContainariumError(.unavailable, "node \(name) is not reachable") }
        guard let g = m.gateway else { throw ContainariumError(.unavailable, "node \(name) runs no SSH gateway (daemon --ssh-port)") }
        if let path = links?.socket(of: name, "ssh") { return ("localhost", 0, path, g.hostKey) }
        guard !g.address.isEmpty else { throw ContainariumError(.unavailable, "node \(name)'s gateway is reachable only through its link, which is down") }
        let (host, port) = try Self.hostPort(g.address)
        return (host, port, nil, g.hostKey)
    }

    public static func hostPort(_ s: String) throws(ContainariumError) -> (String, Int) {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port) else {
            throw .invalid("'\(s)' is not HOST:PORT")
        }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" }) else {
            throw .invalid("'\(s)' is not HOST:PORT")
        }
        return (host, port)
    }

    /// Is anything besides the local node a member?
    public var hasRemoteMembers: Bool { members.withLock { m in m.values.contains { !$0.view.local } } }

    /// A connection to a remote member: through the link it holds open to this control plane, or
    /// (a member that has none) at its advertised address, over mTLS with this control plane's
    /// own client certificate (`--cluster-certs-dir`): never in clear, never with a token.
    public func client(for name: String) throws(ContainariumError) -> any NodeConnection {
        guard let m = members.withLock({ $0[name] }) else { throw .notFound("no node \(name)") }
        guard !m.view.local else { throw .invalid("\(name) is the local node") }
        guard m.view.healthy else { throw ContainariumError(.unavailable, "node \(name) is not reachable (no report for \(Int(unhealthyAfter)) s or more)") }
        if let path = links?.socket(of: name, "api") { return connector.connection(linkSocket: path) }
        guard let address = m.view.address else { throw ContainariumError(.unavailable, "node \(name) dials out and its link is down") }
        guard let certsDir else {
            throw ContainariumError(.unavailable, "node \(name)'s link is down; calling it at \(address) needs mTLS (--cluster-certs-dir)")
        }
        return try connector.connection(address: address, certsDir: certsDir, token: nil)
    }

    public static func validNodeName(_ s: String) -> Bool {
        guard (1...63).contains(s.utf8.count), let first = s.unicodeScalars.first,
              ("a"..."z").contains(first) || ("0"..."9").contains(first) else { return false }
        return s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "." }
    }
}
