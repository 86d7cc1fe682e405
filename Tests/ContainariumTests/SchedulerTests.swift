import ContainariumScheduler
import Foundation
import Testing

private let GiB: Int64 = 1 << 30

private func node(_ name: String, cpu: Int64 = 8, memGiB: Int64 = 32, diskGiB: Int64 = 500, kinds: Set<String> = ["lxc"],
                  gpus: [String] = [], labels: [String: String] = [:], pool: String? = nil, preemptible: Bool = false,
                  reserved: Resources = .zero) -> NodeInfo {
    NodeInfo(name: name, kinds: kinds, capacity: Resources(cpuMillis: cpu * 1000, memoryBytes: memGiB * GiB, diskBytes: diskGiB * GiB),
             reserved: reserved, gpus: gpus.enumerated().map { GPUDevice(pciAddress: "0000:0\($0.offset + 1):00.0", model: $0.element) },
             labels: labels, pool: pool, preemptible: preemptible)
}

private func req(_ id: String, cpu: Int64 = 1, memGiB: Int64 = 2, diskGiB: Int64 = 10, kind: String = "lxc", gpus: Int = 0, gpuModel: String? = nil,
                 labels: [String: String] = [:], pool: String? = nil, critical: Bool = false) -> PlacementRequest {
    PlacementRequest(id: id, kind: kind, resources: Resources(cpuMillis: cpu * 1000, memoryBytes: memGiB * GiB, diskBytes: diskGiB * GiB),
                     gpus: gpus, gpuModel: gpuModel, labels: labels, pool: pool, critical: critical)
}

@Suite("Scheduler: filters, scores, over-commit, GPUs, draining, ties, concurrency")
struct SchedulerTests {
    struct FilterCase: Sendable, CustomStringConvertible {
        var name: String
        var node: NodeInfo
        var condition: NodeCondition = NodeCondition()
        var request: PlacementRequest
        var expected: [FilterReason]
        var description: String { name }
    }

    static let filterCases: [FilterCase] = [
        FilterCase(name: "fits", node: node("n"), request: req("r"), expected: []),
        FilterCase(name: "unhealthy", node: node("n"), condition: NodeCondition(healthy: false), request: req("r"), expected: [.unhealthy]),
        FilterCase(name: "draining", node: node("n"), condition: NodeCondition(draining: true), request: req("r"), expected: [.draining]),
        FilterCase(name: "preempted", node: node("n", preemptible: true), condition: NodeCondition(preempted: true), request: req("r"), expected: [.preempted]),
        FilterCase(name: "kind not served", node: node("n"), request: req("r", kind: "vm"), expected: [.kindNotServed("vm")]),
        FilterCase(name: "pool mismatch", node: node("n", pool: "batch"), request: req("r", pool: "default"),
                   expected: [.poolMismatch(wanted: "default", node: "batch")]),
        FilterCase(name: "no pool on node", node: node("n"), request: req("r", pool: "default"), expected: [.poolMismatch(wanted: "default", node: nil)]),
        FilterCase(name: "label mismatch", node: node("n", labels: ["zone": "b"]), request: req("r", labels: ["zone": "a"]),
                   expected: [.labelMismatch(key: "zone", wanted: "a", node: "b")]),
        FilterCase(name: "label missing", node: node("n"), request: req("r", labels: ["ssd": "yes"]), expected: [.labelMismatch(key: "ssd", wanted: "yes", node: nil)]),
        // 8 cores x 4 over-commit = 32 cores of CPU to hand out.
        FilterCase(name: "CPU within over-commit", node: node("n", cpu: 8), request: req("r", cpu: 32), expected: []),
        FilterCase(name: "CPU beyond over-commit", node: node("n", cpu: 8), request: req("r", cpu: 33),
                   expected: [.insufficientCPU(requestedMillis: 33000, freeMillis: 32000)]),
        FilterCase(name: "memory is not over-committed", node: node("n", memGiB: 32), request: req("r", memGiB: 33),
                   expected: [.insufficientMemory(requestedBytes: 33 * GiB, freeBytes: 32 * GiB)]),
        FilterCase(name: "node's own reservation counts", node: node("n", memGiB: 32, reserved: Resources(memoryBytes: 30 * GiB)), request: req("r", memGiB: 4),
                   expected: [.insufficientMemory(requestedBytes: 4 * GiB, freeBytes: 2 * GiB)]),
        FilterCase(name: "disk", node: node("n", diskGiB: 100), request: req("r", diskGiB: 101),
                   expected: [.insufficientDisk(requestedBytes: 101 * GiB, freeBytes: 100 * GiB)]),
        FilterCase(name: "no GPUs", node: node("n"), request: req("r", gpus: 1), expected: [.gpusUnavailable(requested: 1, free: 0)]),
        FilterCase(name: "GPU model", node: node("n", gpus: ["nvidia-t4", "nvidia-t4"]), request: req("r", gpus: 1, gpuModel: "nvidia-l4"),
                   expected: [.gpusUnavailable(requested: 1, free: 0)]),
        FilterCase(name: "enough GPUs", node: node("n", gpus: ["nvidia-l4", "nvidia-l4"]), request: req("r", gpus: 2, gpuModel: "nvidia-l4"), expected: []),
        FilterCase(name: "another node was asked for", node: node("n"), request: { var r = req("r"); r.node = "m"; return r }(),
                   expected: [.notTheRequestedNode("m")]),
        FilterCase(name: "a critical request never lands on a preemptible node (the default policy)", node: node("n", preemptible: true),
                   request: req("r", critical: true), expected: [.preemptibleForCritical]),
        FilterCase(name: "the node asked for", node: node("n"), request: { var r = req("r"); r.node = "n"; return r }(), expected: []),
        FilterCase(name: "every reason at once", node: node("n", cpu: 1, pool: "x"), condition: NodeCondition(healthy: false, draining: true),
                   request: req("r", cpu: 5, kind: "vm", pool: "y"),
                   expected: [.unhealthy, .draining, .kindNotServed("vm"), .poolMismatch(wanted: "y", node: "x"),
                              .insufficientCPU(requestedMillis: 5000, freeMillis: 4000)]),
    ]

    @Test("filters", arguments: filterCases)
    func filters(_ c: FilterCase) throws {
        let s = Scheduler()
        s.upsert(c.node, condition: c.condition)
        let e = s.explain(c.request)
        #expect(e.verdicts.count == 1)
        #expect(e.verdicts[0].filteredBecause == c.expected)
        // place agrees with explain.
        if c.expected.isEmpty {
            #expect(try s.place(c.request).node == "n")
            #expect(e.chosen == "n")
        } else {
            #expect(throws: SchedulingError.self) { try s.place(c.request) }
            #expect(e.chosen == nil)
        }
    }

    struct ScoreCase: Sendable, CustomStringConvertible {
        var name: String
        var policy: SchedulingPolicy
        var nodes: [NodeInfo]
        /// Placed first, to make some nodes busier.
        var before: [(PlacementRequest, String)] = []
        var request: PlacementRequest
        var expected: String
        var description: String { name }
    }

    static let scoreCases: [ScoreCase] = [
        ScoreCase(name: "bin-packing takes the busier node", policy: SchedulingPolicy(strategy: .binpack), nodes: [node("a"), node("b")],
                  before: [(req("x", cpu: 4, memGiB: 16, diskGiB: 100), "b")], request: req("r"), expected: "b"),
        ScoreCase(name: "spreading takes the emptier node", policy: SchedulingPolicy(strategy: .spread), nodes: [node("a"), node("b")],
                  before: [(req("x", cpu: 4, memGiB: 16, diskGiB: 100), "a")], request: req("r"), expected: "b"),
        ScoreCase(name: "bin-packing: a small node fills up before a big one", policy: SchedulingPolicy(strategy: .binpack),
                  nodes: [node("big", cpu: 64, memGiB: 256, diskGiB: 4000), node("small", cpu: 8, memGiB: 32, diskGiB: 500)],
                  request: req("r"), expected: "small"),
        ScoreCase(name: "ties go to the name that sorts first", policy: SchedulingPolicy(), nodes: [node("c"), node("a"), node("b")],
                  request: req("r"), expected: "a"),
        ScoreCase(name: "a critical request avoids a preemptible node", policy: SchedulingPolicy(),
                  nodes: [node("a", preemptible: true), node("b")], before: [(req("x", cpu: 6, memGiB: 24, diskGiB: 400), "a")],
                  request: req("r", critical: true), expected: "b"),
        ScoreCase(name: "a critical request still lands on a preemptible node when nothing else fits (last-resort policy)",
                  policy: SchedulingPolicy(criticalOnPreemptible: .lastResort),
                  nodes: [node("a", preemptible: true), node("b", cpu: 1)], request: req("r", cpu: 8, critical: true), expected: "a"),
        ScoreCase(name: "a non-critical request does not mind preemptible nodes", policy: SchedulingPolicy(),
                  nodes: [node("a", preemptible: true), node("b")], before: [(req("x", cpu: 6, memGiB: 24, diskGiB: 400), "a")],
                  request: req("r"), expected: "a"),
        ScoreCase(name: "work without GPUs keeps off GPU machines", policy: SchedulingPolicy(),
                  nodes: [node("gpu", gpus: ["nvidia-l4"]), node("plain")], before: [(req("x", cpu: 6, memGiB: 24, diskGiB: 400), "gpu")],
                  request: req("r"), expected: "plain"),
        ScoreCase(name: "GPU work goes where the GPUs are", policy: SchedulingPolicy(), nodes: [node("a"), node("gpu", gpus: ["nvidia-l4"])],
                  request: req("r", gpus: 1), expected: "gpu"),
    ]

    @Test("scores", arguments: scoreCases)
    func scores(_ c: ScoreCase) throws {
        let s = Scheduler(policy: c.policy)
        for n in c.nodes { s.upsert(n) }
        for (r, on) in c.before { try s.adopt(r, on: on) }
        let e = s.explain(c.request)
        #expect(e.chosen == c.expected, "\(e.verdicts.map { "\($0.node): \($0.score.map { String($0) } ?? "\($0.filteredBecause)")" })")
        #expect(try s.place(c.request).node == c.expected)
    }

    @Test("over-commit ratios are applied and re-applied when the policy changes")
    func overcommit() throws {
        let s = Scheduler(policy: SchedulingPolicy(cpuOvercommit: 1))
        s.upsert(node("n", cpu: 4))
        _ = try s.place(req("a", cpu: 4, memGiB: 1, diskGiB: 1))
        #expect(throws: SchedulingError.self) { try s.place(req("b", cpu: 1, memGiB: 1, diskGiB: 1)) }
        s.setPolicy(SchedulingPolicy(cpuOvercommit: 2))
        #expect(try s.place(req("b", cpu: 4, memGiB: 1, diskGiB: 1)).node == "n")
        #expect(throws: SchedulingError.self) { try s.place(req("c", cpu: 1, memGiB: 1, diskGiB: 1)) }
        #expect(s.nodes[0].used.cpuMillis == 8000)
    }

    @Test("GPUs: placements get distinct PCI addresses; release gives them back")
    func gpus() throws {
        let s = Scheduler()
        s.upsert(node("g", cpu: 64, memGiB: 512, diskGiB: 4000, gpus: ["nvidia-l4", "nvidia-l4", "nvidia-t4"]))
        let a = try s.place(req("a", gpus: 2, gpuModel: "nvidia-l4"))
        #expect(a.gpuAddresses == ["0000:01:00.0", "0000:02:00.0"])
        #expect(throws: SchedulingError.self) { try s.place(req("b", gpus: 1, gpuModel: "nvidia-l4")) }
        let c = try s.place(req("c", gpus: 1))
        #expect(c.gpuAddresses == ["0000:03:00.0"])
        #expect(s.release("a"))
        #expect(try s.place(req("b", gpus: 1, gpuModel: "nvidia-l4")).gpuAddresses == ["0000:01:00.0"])
        #expect(!s.release("nobody"))
    }

    @Test("GPUs a node reports as passed through are not free; holding() tells what a placement holds")
    func attachedGPUs() throws {
        let s = Scheduler()
        var info = node("g", cpu: 64, memGiB: 512, diskGiB: 4000, gpus: ["a100", "a100"])
        info.gpus[0].attachedTo = "alice-container"
        s.upsert(info)
        let p = try s.place(req("b", gpus: 1))
        #expect(p.gpuAddresses == ["0000:02:00.0"])
        #expect(throws: SchedulingError.self) { try s.place(req("c", gpus: 1)) }
        let h = try #require(s.holding("b"))
        #expect(h.node == "g" && h.gpuAddresses == ["0000:02:00.0"] && h.resources.cpuMillis == 1000)
        #expect(s.holding("nobody") == nil)
        // The node reports alice's environment gone: its GPU is free again.
        info.gpus[0].attachedTo = nil
        s.upsert(info)
        #expect(try s.place(req("c", gpus: 1)).gpuAddresses == ["0000:01:00.0"])
    }

    @Test("draining, unhealthy and removed nodes take nothing; undrained ones do again")
    func conditions() throws {
        let s = Scheduler()
        s.upsert(node("a"))
        s.upsert(node("b"))
        s.setCondition("a", NodeCondition(draining: true))
        s.setCondition("b", NodeCondition(healthy: false))
        #expect(throws: SchedulingError.self) { try s.place(req("r1")) }
        s.setCondition("a", NodeCondition())
        #expect(try s.place(req("r1")).node == "a")
        s.remove("a")
        #expect(throws: SchedulingError.self) { try s.place(req("r2")) }
        s.setCondition("b", NodeCondition())
        #expect(try s.place(req("r2")).node == "b")
        // A node's new report keeps its placements.
        s.upsert(node("b", cpu: 16))
        #expect(s.nodes[0].placements == 1)
        #expect(s.nodes[0].used.cpuMillis == 1000)
    }

    @Test("bad and duplicate requests are refused")
    func invalid() throws {
        let s = Scheduler()
        s.upsert(node("a"))
        #expect(throws: SchedulingError.self) { try s.place(req("", cpu: 1)) }
        #expect(throws: SchedulingError.self) { try s.place(PlacementRequest(id: "x", kind: "lxc", resources: Resources(cpuMillis: -1))) }
        _ = try s.place(req("r"))
        #expect(throws: SchedulingError.duplicate("r is already placed on a")) { try s.place(req("r")) }
        #expect(throws: SchedulingError.self) { try s.adopt(req("q"), on: "nowhere") }
    }

    @Test("the same state and requests give the same placements")
    func deterministic() throws {
        func run() throws -> [String] {
            let s = Scheduler()
            for i in (0..<20).reversed() { s.upsert(node(String(format: "n%02d", i), cpu: Int64(4 + i % 3 * 4))) }
            return try (0..<120).map { i in try s.place(req("r\(i)", cpu: Int64(1 + i % 3), memGiB: Int64(1 + i % 5))).node }
        }
        #expect(try run() == run())
    }

    @Test("concurrent placements never double-book")
    func concurrency() async throws {
        let s = Scheduler()
        for i in 0..<10 { s.upsert(node("n\(i)", cpu: 2, memGiB: 8, diskGiB: 100)) }  // 8 cores each after over-commit; memory bounds at 4 x 2 GiB
        let placed = await withTaskGroup(of: [String].self) { group in
            for t in 0..<8 {
                group.addTask {
                    var mine: [String] = []
                    for i in 0..<50 {
                        if let p = try? s.place(req("t\(t)-\(i)", cpu: 1, memGiB: 2, diskGiB: 10)) { mine.append(p.node) }
                    }
                    return mine
                }
            }
            var all: [String] = []
            for await part in group { all += part }
            return all
        }
        // 10 nodes x 4 placements (memory: 8 GiB / 2 GiB) and not one more.
        #expect(placed.count == 40)
        for n in s.nodes {
            #expect(n.used.memoryBytes <= n.info.capacity.memoryBytes)
            #expect(n.placements == 4)
        }
    }

    @Test("explain ranks passing nodes by score, then lists the filtered ones with their reasons")
    func explain() throws {
        let s = Scheduler()
        s.upsert(node("a"))
        s.upsert(node("b"))
        s.upsert(node("c", kinds: ["vm"]))
        try s.adopt(req("x", cpu: 4, memGiB: 16, diskGiB: 100), on: "b")
        let e = s.explain(req("r"))
        #expect(e.chosen == "b")
        #expect(e.verdicts.map(\.node) == ["b", "a", "c"])
        #expect(e.verdicts[0].score ?? 0 > e.verdicts[1].score ?? 0)
        #expect(e.verdicts[0].scoreParts["binpack"] != nil)
        #expect(e.verdicts[2].filteredBecause == [.kindNotServed("lxc")])
        #expect(e.verdicts[2].filteredBecause[0].description == "no lxc backend on this node")
        // Explaining reserves nothing.
        #expect(s.nodes.map(\.placements) == [0, 1, 0])
    }
}
