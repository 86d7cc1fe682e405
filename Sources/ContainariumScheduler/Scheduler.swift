import Synchronization

/// The unified scheduler: places each request on one node of the cluster.
///
/// For a request it **filters** (node healthy, not draining, not preempted; serves the
/// request's backend kind; pool and labels match; CPU, memory and disk free after the
/// policy's over-commit ratios; enough free GPUs of the wanted model), then **scores** the
/// nodes left with the policy (bin-packing by default: the busiest node that fits; spreading
/// as an option; minus a penalty for preemptible nodes when the request is critical and for
/// nodes with free GPUs when the request needs none), and takes the best, ties going to the
/// node whose name sorts first. The same state and request always give the same answer.
///
/// `place` filters, scores and reserves under one lock, so concurrent placements never
/// double-book a node; `release` gives a placement's resources back. `explain` shows every
/// node's verdict without reserving anything.
public final class Scheduler: Sendable {
    struct Slot {
        var info: NodeInfo
        var condition: NodeCondition
        var kindMask: UInt64
        /// Effective capacity after over-commit.
        var cpu: Int64, memory: Int64, disk: Int64
        /// Allocated: the node's own reservation plus the placements held here.
        var usedCPU: Int64, usedMemory: Int64, usedDisk: Int64
        var gpuFree: [Bool]
        var freeGPUs: Int
        var placements: Int
        /// The pool as a small number (0: none), so the hot path compares integers.
        var poolID: Int
    }

    struct Held {
        var node: String
        var resources: Resources
        var gpus: [Int]
    }

    struct State {
        var policy: SchedulingPolicy
        /// Sorted by node name: iteration order is the tie-break.
        var slots: [Slot] = []
        var index: [String: Int] = [:]
        var kindBits: [String: UInt64] = [:]
        var poolIDs: [String: Int] = [:]
        var held: [String: Held] = [:]
    }

    private let state: Mutex<State>

    public init(policy: SchedulingPolicy = SchedulingPolicy()) {
        state = Mutex(State(policy: policy))
    }

    public var policy: SchedulingPolicy {
        get { state.withLock { $0.policy } }
    }

    /// Change the policy; capacities are recomputed with its over-commit ratios.
    public func setPolicy(_ policy: SchedulingPolicy) {
        state.withLock { s in
            s.policy = policy
            for i in s.slots.indices { Self.recompute(&s.slots[i], policy: policy, held: s.held) }
        }
    }

    // MARK: - nodes

    /// Add a node or replace what it reported; its condition and placements are kept.
    public func upsert(_ info: NodeInfo, condition: NodeCondition? = nil) {
        state.withLock { s in
            var mask: UInt64 = 0
            for kind in info.kinds { mask |= Self.bit(for: kind, in: &s) }
            let poolID = info.pool.map { Self.poolID($0, in: &s) } ?? 0
            if let i = s.index[info.name] {
                s.slots[i].info = info
                s.slots[i].kindMask = mask
                s.slots[i].poolID = poolID
                if let condition { s.slots[i].condition = condition }
                if s.slots[i].gpuFree.count != info.gpus.count { s.slots[i].gpuFree = Array(repeating: true, count: info.gpus.count) }
                Self.recompute(&s.slots[i], policy: s.policy, held: s.held)
                return
            }
            var slot = Slot(info: info, condition: condition ?? NodeCondition(), kindMask: mask, cpu: 0, memory: 0, disk: 0,
                            usedCPU: 0, usedMemory: 0, usedDisk: 0, gpuFree: Array(repeating: true, count: info.gpus.count),
                            freeGPUs: info.gpus.count, placements: 0, poolID: poolID)
            Self.recompute(&slot, policy: s.policy, held: s.held)
            let at = s.slots.firstIndex { $0.info.name > info.name } ?? s.slots.count
            s.slots.insert(slot, at: at)
            Self.reindex(&s)
        }
    }

    public func setCondition(_ name: String, _ condition: NodeCondition) {
        state.withLock { s in
            guard let i = s.index[name] else { return }
            s.slots[i].condition = condition
        }
    }

    /// Forget a node and the placements it held.
    public func remove(_ name: String) {
        state.withLock { s in
            guard let i = s.index[name] else { return }
            s.slots.remove(at: i)
            s.held = s.held.filter { $0.value.node != name }
            Self.reindex(&s)
        }
    }

    public var nodes: [(info: NodeInfo, condition: NodeCondition, used: Resources, placements: Int)] {
        state.withLock { s in
            s.slots.map { ($0.info, $0.condition, Resources(cpuMillis: $0.usedCPU, memoryBytes: $0.usedMemory, diskBytes: $0.usedDisk), $0.placements) }
        }
    }

    // MARK: - placing

    /// Choose a node and reserve the request's resources (and GPUs) on it.
    public func place(_ request: PlacementRequest) throws(SchedulingError) -> Placement {
        try Self.validate(request)
        return try state.withLock { s throws(SchedulingError) -> Placement in
            guard s.held[request.id] == nil else { throw .duplicate("\(request.id) is already placed on \(s.held[request.id]?.node ?? "?")") }
            let kind = s.kindBits[request.kind] ?? 0
            // A pool no node has matches nothing (-1); no pool asked matches every node (0).
            let pool = request.pool.map { s.poolIDs[$0] ?? -1 } ?? 0
            let policy = s.policy
            var best = -1
            var bestScore = -Double.infinity
            s.slots.withUnsafeBufferPointer { slots in
                let avoid = request.critical && policy.criticalOnPreemptible == .never
                for i in slots.indices where Self.passes(slots[i], request, kind: kind, pool: pool, avoidPreemptible: avoid) {
                    let score = Self.total(slots[i], request, policy)
                    if score > bestScore {
                        best = i
                        bestScore = score
                    }
                }
            }
            guard best >= 0 else {
                throw .noFit("no node can take \(request.id) (\(request.kind), \(request.resources.cpuMillis)m CPU, \(request.resources.memoryBytes) B memory, \(request.resources.diskBytes) B disk, \(request.gpus) GPU): see `schedule explain`")
            }
            var gpus: [Int] = []
            if request.gpus > 0 {
                for (g, free) in s.slots[best].gpuFree.enumerated() where free && gpus.count < request.gpus {
                    if let model = request.gpuModel, s.slots[best].info.gpus[g].model != model { continue }
                    gpus.append(g)
                }
                for g in gpus { s.slots[best].gpuFree[g] = false }
                s.slots[best].freeGPUs -= gpus.count
            }
            s.slots[best].usedCPU += request.resources.cpuMillis
            s.slots[best].usedMemory += request.resources.memoryBytes
            s.slots[best].usedDisk += request.resources.diskBytes
            s.slots[best].placements += 1
            s.held[request.id] = Held(node: s.slots[best].info.name, resources: request.resources, gpus: gpus)
            return Placement(requestID: request.id, node: s.slots[best].info.name,
                             gpuAddresses: gpus.map { s.slots[best].info.gpus[$0].pciAddress }, score: bestScore)
        }
    }

    /// Record a placement made elsewhere (an environment that exists already), so its
    /// resources count. Fails if the node does not exist or the id is held.
    public func adopt(_ request: PlacementRequest, on node: String, gpuAddresses: [String] = []) throws(SchedulingError) {
        try state.withLock { s throws(SchedulingError) in
            guard s.held[request.id] == nil else { throw .duplicate("\(request.id) is already placed") }
            guard let i = s.index[node] else { throw .invalid("no node \(node)") }
            let gpus = gpuAddresses.compactMap { a in s.slots[i].info.gpus.firstIndex { $0.pciAddress == a } }
            for g in gpus where s.slots[i].gpuFree[g] {
                s.slots[i].gpuFree[g] = false
                s.slots[i].freeGPUs -= 1
            }
            s.slots[i].usedCPU += request.resources.cpuMillis
            s.slots[i].usedMemory += request.resources.memoryBytes
            s.slots[i].usedDisk += request.resources.diskBytes
            s.slots[i].placements += 1
            s.held[request.id] = Held(node: node, resources: request.resources, gpus: gpus)
        }
    }

    /// What a placement holds: its node, resources and GPU addresses.
    public func holding(_ requestID: String) -> (node: String, resources: Resources, gpuAddresses: [String])? {
        state.withLock { s in
            guard let h = s.held[requestID] else { return nil }
            let gpus = s.index[h.node].map { i in h.gpus.compactMap { $0 < s.slots[i].info.gpus.count ? s.slots[i].info.gpus[$0].pciAddress : nil } } ?? []
            return (h.node, h.resources, gpus)
        }
    }

    /// Give back what a placement held. Returns false if nothing was held under the id.
    @discardableResult
    public func release(_ requestID: String) -> Bool {
        state.withLock { s in
            guard let h = s.held.removeValue(forKey: requestID) else { return false }
            guard let i = s.index[h.node] else { return true }
            s.slots[i].usedCPU -= h.resources.cpuMillis
            s.slots[i].usedMemory -= h.resources.memoryBytes
            s.slots[i].usedDisk -= h.resources.diskBytes
            s.slots[i].placements -= 1
            for g in h.gpus where !s.slots[i].gpuFree[g] {
                s.slots[i].gpuFree[g] = true
                s.slots[i].freeGPUs += 1
            }
            return true
        }
    }

    /// Every node's verdict for `request`, without reserving anything.
    public func explain(_ request: PlacementRequest) -> Explanation {
        state.withLock { s in
            let kind = s.kindBits[request.kind] ?? 0
            var passed: [NodeVerdict] = []
            var filtered: [NodeVerdict] = []
            for slot in s.slots {
                let reasons = Self.reasons(slot, request, kind: kind, policy: s.policy)
                if reasons.isEmpty {
                    let sc = Self.score(slot, request, s.policy)
                    passed.append(NodeVerdict(node: slot.info.name, filteredBecause: [], score: sc.total, scoreParts: sc.parts))
                } else {
                    filtered.append(NodeVerdict(node: slot.info.name, filteredBecause: reasons, score: nil, scoreParts: [:]))
                }
            }
            // Stable sort: equal scores keep name order, as `place` breaks ties.
            let ranked = passed.enumerated().sorted { a, b in
                (a.element.score ?? 0) != (b.element.score ?? 0) ? (a.element.score ?? 0) > (b.element.score ?? 0) : a.offset < b.offset
            }.map(\.element)
            return Explanation(request: request, policy: s.policy, chosen: ranked.first?.node, verdicts: ranked + filtered)
        }
    }

    // MARK: - the rules

    static func validate(_ r: PlacementRequest) throws(SchedulingError) {
        guard !r.id.isEmpty else { throw .invalid("a request needs an id") }
        guard !r.kind.isEmpty else { throw .invalid("a request needs a backend kind") }
        guard r.resources.cpuMillis >= 0, r.resources.memoryBytes >= 0, r.resources.diskBytes >= 0, r.gpus >= 0 else {
            throw .invalid("resources cannot be negative")
        }
    }

    static func bit(for kind: String, in s: inout State) -> UInt64 {
        if let b = s.kindBits[kind] { return b }
        let b: UInt64 = s.kindBits.count < 64 ? 1 << UInt64(s.kindBits.count) : 0
        s.kindBits[kind] = b
        return b
    }

    static func poolID(_ pool: String, in s: inout State) -> Int {
        if let id = s.poolIDs[pool] { return id }
        let id = s.poolIDs.count + 1
        s.poolIDs[pool] = id
        return id
    }

    static func reindex(_ s: inout State) {
        s.index = Dictionary(uniqueKeysWithValues: s.slots.enumerated().map { ($1.info.name, $0) })
    }

    static func scaled(_ v: Int64, _ ratio: Double) -> Int64 { Int64((Double(v) * ratio).rounded(.down)) }

    static func recompute(_ slot: inout Slot, policy: SchedulingPolicy, held: [String: Held]) {
        let c = slot.info.capacity
        slot.cpu = scaled(c.cpuMillis, policy.cpuOvercommit)
        slot.memory = scaled(c.memoryBytes, policy.memoryOvercommit)
        slot.disk = scaled(c.diskBytes, policy.diskOvercommit)
        var used = slot.info.reserved
        var count = 0
        var gpuFree = slot.info.gpus.map { $0.attachedTo == nil }
        for h in held.values where h.node == slot.info.name {
            used = used + h.resources
            count += 1
            for g in h.gpus where g < gpuFree.count { gpuFree[g] = false }
        }
        slot.usedCPU = used.cpuMillis
        slot.usedMemory = used.memoryBytes
        slot.usedDisk = used.diskBytes
        slot.placements = count
        slot.gpuFree = gpuFree
        slot.freeGPUs = gpuFree.filter { $0 }.count
    }

    /// The hot path: no allocation, cheapest checks first.
    @inline(__always)
    static func passes(_ n: borrowing Slot, _ r: borrowing PlacementRequest, kind: UInt64, pool: Int, avoidPreemptible: Bool) -> Bool {
        guard n.condition.healthy, !n.condition.draining, !n.condition.preempted, n.kindMask & kind != 0 else { return false }
        if avoidPreemptible && n.info.preemptible { return false }
        guard n.usedCPU + r.resources.cpuMillis <= n.cpu, n.usedMemory + r.resources.memoryBytes <= n.memory,
              n.usedDisk + r.resources.diskBytes <= n.disk else { return false }
        if r.gpus > 0 {
            guard n.freeGPUs >= r.gpus else { return false }
            if let model = r.gpuModel, freeGPUs(n, model: model) < r.gpus { return false }
        }
        if pool != 0 && n.poolID != pool { return false }
        if let wanted = r.node, n.info.name != wanted { return false }
        if !r.labels.isEmpty {
            for (k, v) in r.labels where n.info.labels[k] != v { return false }
        }
        return true
    }

    static func freeGPUs(_ n: Slot, model: String?) -> Int {
        var count = 0
        for (g, free) in n.gpuFree.enumerated() where free && (model == nil || n.info.gpus[g].model == model) { count += 1 }
        return count
    }

    /// The same rules as `passes`, saying every reason a node fails.
    static func reasons(_ n: Slot, _ r: PlacementRequest, kind: UInt64, policy: SchedulingPolicy) -> [FilterReason] {
        var out: [FilterReason] = []
        if !n.condition.healthy { out.append(.unhealthy) }
        if n.condition.draining { out.append(.draining) }
        if n.condition.preempted { out.append(.preempted) }
        if r.critical && policy.criticalOnPreemptible == .never && n.info.preemptible { out.append(.preemptibleForCritical) }
        if n.kindMask & kind == 0 { out.append(.kindNotServed(r.kind)) }
        if let wanted = r.node, n.info.name != wanted { out.append(.notTheRequestedNode(wanted)) }
        if let pool = r.pool, n.info.pool != pool { out.append(.poolMismatch(wanted: pool, node: n.info.pool)) }
        for (k, v) in r.labels.sorted(by: { $0.key < $1.key }) where n.info.labels[k] != v {
            out.append(.labelMismatch(key: k, wanted: v, node: n.info.labels[k]))
        }
        if n.usedCPU + r.resources.cpuMillis > n.cpu { out.append(.insufficientCPU(requestedMillis: r.resources.cpuMillis, freeMillis: n.cpu - n.usedCPU)) }
        if n.usedMemory + r.resources.memoryBytes > n.memory {
            out.append(.insufficientMemory(requestedBytes: r.resources.memoryBytes, freeBytes: n.memory - n.usedMemory))
        }
        if n.usedDisk + r.resources.diskBytes > n.disk { out.append(.insufficientDisk(requestedBytes: r.resources.diskBytes, freeBytes: n.disk - n.usedDisk)) }
        if r.gpus > 0 {
            let free = freeGPUs(n, model: r.gpuModel)
            if free < r.gpus { out.append(.gpusUnavailable(requested: r.gpus, free: free)) }
        }
        return out
    }

    @inline(__always)
    static func fraction(_ used: Int64, _ capacity: Int64) -> Double {
        capacity > 0 ? Double(used) / Double(capacity) : 1
    }

    /// The score's parts: 0...100 for the strategy (utilisation after placement, or its
    /// complement), and the penalties.
    @inline(__always)
    static func components(_ n: borrowing Slot, _ r: borrowing PlacementRequest, _ p: borrowing SchedulingPolicy) -> (base: Double, preemptible: Double, gpuReserve: Double) {
        let after = (fraction(n.usedCPU + r.resources.cpuMillis, n.cpu) + fraction(n.usedMemory + r.resources.memoryBytes, n.memory)
            + fraction(n.usedDisk + r.resources.diskBytes, n.disk)) / 3 * 100
        let base = p.strategy == .binpack ? after : 100 - after
        let preemptible = r.critical && n.info.preemptible ? p.preemptiblePenalty : 0
        let gpuReserve = r.gpus == 0 && n.freeGPUs > 0 ? p.gpuReservePenalty : 0
        return (base, preemptible, gpuReserve)
    }

    /// The hot path's score (no allocation).
    @inline(__always)
    static func total(_ n: borrowing Slot, _ r: borrowing PlacementRequest, _ p: borrowing SchedulingPolicy) -> Double {
        let c = components(n, r, p)
        return c.base - c.preemptible - c.gpuReserve
    }

    static func score(_ n: Slot, _ r: PlacementRequest, _ p: SchedulingPolicy) -> (total: Double, parts: [String: Double]) {
        let c = components(n, r, p)
        return (c.base - c.preemptible - c.gpuReserve, [p.strategy.rawValue: c.base, "preemptible": -c.preemptible, "gpuReserve": -c.gpuReserve])
    }
}
