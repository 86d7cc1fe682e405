// Scheduler benchmark: a synthetic cluster of 1,000 nodes and 10,000 mixed requests.
//
//   swift run -c release scheduler-bench [--nodes 1000] [--requests 10000] [--runs 5] [--seed 42]
//
// Measures, in one run, single-threaded placement throughput (decisions per second) of the
// Scheduler, and packing quality (nodes used) against two baselines computed on the same
// cluster and requests:
//   - first-fit-decreasing (FFD), offline: requests sorted by their largest share of a node,
//     each put on the first node (by name) that fits under the same constraints;
//   - Incus's placement rule: the member with the fewest instances that serves the request's
//     kind; resources, pools and labels ignored.
// Every strategy's placements are audited the same way: nodes used, nodes over-booked, and
// placements on a node outside that request's own kind, pool or labels. Determinism: every
// placement of every run must equal run 0's.
import ContainariumScheduler
import Foundation

struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

func option(_ name: String, _ fallback: Int) -> Int {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) else { return fallback }
    return v
}

let nodeCount = option("--nodes", 1000)
let requestCount = option("--requests", 10000)
let runs = option("--runs", 5)
var rng = SplitMix64(state: UInt64(option("--seed", 42)))

let GiB: Int64 = 1 << 30
let GB: Int64 = 1_000_000_000
let zones = ["a", "b", "c"]

// The cluster: mostly general-purpose machines, some large ones that also run VMs, a few small
// ones, and GPU machines; a fifth of them preemptible.
var nodes: [NodeInfo] = []
for i in 0..<nodeCount {
    let r = rng.unit()
    let name = String(format: "node-%04d", i)
    let zone = zones[Int(rng.next() % 3)]
    let preemptible = rng.unit() < 0.2
    let pool = rng.unit() < 0.9 ? "default" : "batch"
    var n: NodeInfo
    if r < 0.50 {
        n = NodeInfo(name: name, kinds: ["lxc"], capacity: Resources(cpuMillis: 32_000, memoryBytes: 128 * GiB, diskBytes: 2000 * GB))
    } else if r < 0.80 {
        n = NodeInfo(name: name, kinds: ["lxc", "vm"], capacity: Resources(cpuMillis: 64_000, memoryBytes: 256 * GiB, diskBytes: 4000 * GB))
    } else if r < 0.95 {
        n = NodeInfo(name: name, kinds: ["lxc"], capacity: Resources(cpuMillis: 16_000, memoryBytes: 64 * GiB, diskBytes: 1000 * GB))
    } else {
        n = NodeInfo(name: name, kinds: ["lxc", "vm"], capacity: Resources(cpuMillis: 48_000, memoryBytes: 384 * GiB, diskBytes: 4000 * GB),
                     gpus: (0..<4).map { GPUDevice(pciAddress: String(format: "0000:%02x:00.0", 0x41 + $0), model: "nvidia-l4") })
    }
    n.labels = ["zone": zone]
    n.pool = pool
    n.preemptible = preemptible
    nodes.append(n)
}

// The requests: small, medium and large containers, Windows VMs, GPU work (fewer than the
// cluster's GPUs, so every request can be placed); some critical,
// some pinned to a zone.
var requests: [PlacementRequest] = []
for i in 0..<requestCount {
    let r = rng.unit()
    var q: PlacementRequest
    if r < 0.45 {
        q = PlacementRequest(id: "r\(i)", kind: "lxc", resources: Resources(cpuMillis: 1000, memoryBytes: 2 * GiB, diskBytes: 20 * GB))
    } else if r < 0.75 {
        q = PlacementRequest(id: "r\(i)", kind: "lxc", resources: Resources(cpuMillis: 2000, memoryBytes: 8 * GiB, diskBytes: 50 * GB))
    } else if r < 0.87 {
        q = PlacementRequest(id: "r\(i)", kind: "lxc", resources: Resources(cpuMillis: 8000, memoryBytes: 32 * GiB, diskBytes: 200 * GB))
    } else if r < 0.985 {
        q = PlacementRequest(id: "r\(i)", kind: "vm", resources: Resources(cpuMillis: 4000, memoryBytes: 16 * GiB, diskBytes: 100 * GB))
    } else {
        q = PlacementRequest(id: "r\(i)", kind: "lxc", resources: Resources(cpuMillis: 8000, memoryBytes: 64 * GiB, diskBytes: 200 * GB), gpus: 1)
    }
    q.critical = rng.unit() < 0.1
    q.pool = "default"
    if rng.unit() < 0.05 { q.labels = ["zone": "a"] }
    requests.append(q)
}

let policy = SchedulingPolicy()

/// The node's effective capacity under the policy's over-commit ratios.
func limit(_ n: NodeInfo) -> Resources {
    Resources(
        cpuMillis: Int64((Double(n.capacity.cpuMillis) * policy.cpuOvercommit).rounded(.down)),
        memoryBytes: Int64((Double(n.capacity.memoryBytes) * policy.memoryOvercommit).rounded(.down)),
        diskBytes: Int64((Double(n.capacity.diskBytes) * policy.diskOvercommit).rounded(.down)))
}

/// Whether the node serves the request's kind and pool and carries its labels.
func matches(_ n: NodeInfo, _ q: PlacementRequest) -> Bool {
    n.kinds.contains(q.kind) && (q.pool == nil || n.pool == q.pool) && q.labels.allSatisfy({ n.labels[$0.key] == $0.value })
}

func fits(_ n: NodeInfo, _ used: Resources, _ freeGPUs: Int, _ q: PlacementRequest) -> Bool {
    guard matches(n, q) else { return false }
    let l = limit(n)
    return used.cpuMillis + q.resources.cpuMillis <= l.cpuMillis && used.memoryBytes + q.resources.memoryBytes <= l.memoryBytes
        && used.diskBytes + q.resources.diskBytes <= l.diskBytes && freeGPUs >= q.gpus
}

/// The same audit for every strategy, from its assignment alone (request index -> node index,
/// nil when unplaced): nodes used; nodes over-booked (their placements' resources exceed the
/// effective capacity, or their GPU requests exceed their GPUs); placements on a node that does
/// not serve THAT request's kind or pool, or lacks ITS labels.
struct Audit {
    var nodesUsed = 0
    var unplaced = 0
    var overbookedNodes = 0
    var misplaced = 0
}

func audit(_ assignment: [Int?], nodes: [NodeInfo], requests: [PlacementRequest]) -> Audit {
    var a = Audit()
    var used = nodes.map(\.reserved)
    var gpus = Array(repeating: 0, count: nodes.count)
    var count = Array(repeating: 0, count: nodes.count)
    for (r, node) in assignment.enumerated() {
        guard let i = node else {
            a.unplaced += 1
            continue
        }
        let q = requests[r]
        used[i] = used[i] + q.resources
        gpus[i] += q.gpus
        count[i] += 1
        if !matches(nodes[i], q) { a.misplaced += 1 }
    }
    for i in nodes.indices where count[i] > 0 {
        a.nodesUsed += 1
        let l = limit(nodes[i])
        if used[i].cpuMillis > l.cpuMillis || used[i].memoryBytes > l.memoryBytes || used[i].diskBytes > l.diskBytes || gpus[i] > nodes[i].gpus.count {
            a.overbookedNodes += 1
        }
    }
    return a
}

let nodeIndex = Dictionary(uniqueKeysWithValues: nodes.enumerated().map { ($0.element.name, $0.offset) })

// 1. The scheduler: throughput, and every placement of every run (determinism).
var rates: [Double] = []
var firstRun: [String?] = []
for run in 0..<runs {
    let scheduler = Scheduler(policy: policy)
    for n in nodes { scheduler.upsert(n) }
    var placed = [String?](repeating: nil, count: requests.count)
    let clock = ContinuousClock()
    let elapsed = clock.measure {
        for i in requests.indices {
            placed[i] = try? scheduler.place(requests[i]).node
        }
    }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    rates.append(Double(requests.count) / seconds)
    if run == 0 {
        firstRun = placed
    } else if placed != firstRun {
        let differ = requests.indices.filter { placed[$0] != firstRun[$0] }
        let i = differ[0]
        print("NOT DETERMINISTIC: run \(run) differs from run 0 in \(differ.count) of \(requests.count) placements; first: \(requests[i].id) on \(placed[i] ?? "nothing"), in run 0 on \(firstRun[i] ?? "nothing")")
        exit(1)
    }
}
rates.sort()
let medianRate = rates[rates.count / 2]
let schedulerAudit = audit(firstRun.map { $0.flatMap { nodeIndex[$0] } }, nodes: nodes, requests: requests)

// 2. First-fit decreasing, offline.
let reference = Resources(cpuMillis: 32_000 * 4, memoryBytes: 128 * GiB, diskBytes: 2000 * GB)
func share(_ q: PlacementRequest) -> Double {
    max(Double(q.resources.cpuMillis) / Double(reference.cpuMillis), Double(q.resources.memoryBytes) / Double(reference.memoryBytes),
        Double(q.resources.diskBytes) / Double(reference.diskBytes)) + Double(q.gpus)
}
let sortedIndices = requests.indices.sorted { a, b in
    let (x, y) = (share(requests[a]), share(requests[b]))
    return x != y ? x > y : a < b
}
var ffdUsed = Array(repeating: Resources.zero, count: nodes.count)
var ffdGPUs = nodes.map(\.gpus.count)
var ffdAssignment = [Int?](repeating: nil, count: requests.count)
for r in sortedIndices {
    let q = requests[r]
    if let i = nodes.indices.first(where: { fits(nodes[$0], ffdUsed[$0], ffdGPUs[$0], q) }) {
        ffdUsed[i] = ffdUsed[i] + q.resources
        ffdGPUs[i] -= q.gpus
        ffdAssignment[r] = i
    }
}
let ffdAudit = audit(ffdAssignment, nodes: nodes, requests: requests)

// 3. Incus: fewest instances among the members that serve the kind; resources, pools and
// labels not looked at.
var incusCount = Array(repeating: 0, count: nodes.count)
var incusAssignment = [Int?](repeating: nil, count: requests.count)
for (r, q) in requests.enumerated() {
    var best = -1
    for i in nodes.indices where nodes[i].kinds.contains(q.kind) && (best < 0 || incusCount[i] < incusCount[best]) { best = i }
    guard best >= 0 else { continue }
    incusCount[best] += 1
    incusAssignment[r] = best
}
let incusAudit = audit(incusAssignment, nodes: nodes, requests: requests)

func row(_ label: String, _ a: Audit) -> String {
    label.padding(toLength: 34, withPad: " ", startingAt: 0)
        + "\(a.nodesUsed)  (unplaced \(a.unplaced), over-booked nodes \(a.overbookedNodes), placements outside their request's kind/pool/labels \(a.misplaced))"
}

print("cluster: \(nodeCount) nodes, \(requestCount) requests (policy: \(policy.strategy.rawValue), CPU over-commit \(policy.cpuOvercommit)x)")
print(String(format: "throughput: %.0f decisions/s (median of %d runs, single thread; min %.0f, max %.0f); target >= 10,000", medianRate, runs, rates.first ?? 0, rates.last ?? 0))
print("nodes used (each audited the same way from its placements):")
print("  " + row("scheduler (bin-packing, online)", schedulerAudit))
print("  " + row("first-fit decreasing, offline", ffdAudit))
print("  " + row("Incus fewest-instances rule", incusAudit))
print(String(format: "ratios: scheduler / FFD = %.3f (target <= 1.05); scheduler / Incus = %.3f",
             Double(schedulerAudit.nodesUsed) / Double(max(ffdAudit.nodesUsed, 1)), Double(schedulerAudit.nodesUsed) / Double(max(incusAudit.nodesUsed, 1))))
print("deterministic: all \(requests.count) placements identical in each of \(runs) runs")
