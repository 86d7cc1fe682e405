import ContainariumCore
@testable import ContainariumDaemon
import ContainariumPlatform
import ContainariumScheduler
import ContainariumService
import ContainariumStore
import Foundation
import PluginHost
import TestSupport
import Testing

/// What the host does with node.lifecycle/1 notices and critical environments: the platform
/// side, over the fake backend (the GCE plugin's own tests drive the real plugin).
@Suite("Node lifecycle: preemption notices and critical environments")
struct LifecycleTests {
    static func localCluster(_ h: Harness, policy: SchedulingPolicy = SchedulingPolicy()) -> Cluster {
        let cluster = Cluster(store: h.plane.store, localName: Harness.node, policy: policy, connector: GRPCNodeConnector(), logger: Harness.quiet)
        h.plane.setCluster(cluster)
        return cluster
    }

    static func emit(_ h: Harness, _ type: String, _ json: String) {
        h.plane.service.plugins.events.publish(PluginEvent(plugin: "gce-spot", type: type, json: Data(json.utf8)))
    }

    @Test("a plugin's preemption notice goes into the node's report, keeps the scheduler off the node, is audited, and ends with node.recovered")
    func preemptionNotice() async throws {
        try await Harness.with { (h: Harness) async throws in
            let cluster = Self.localCluster(h)
            let follower = Task { await h.plane.followLifecycle() }
            defer { follower.cancel() }
            let admin = Harness.caller("admin", .admin)
            func report() async throws {
                try await cluster.report(try await h.plane.localReport(address: "", token: nil, labels: [:], pool: nil, preemptible: true), local: true)
            }
            try await report()
            #expect(try await h.plane.explainPlacement(admin, CreateEnvironmentRequest(username: "x", sshKeys: [])).chosen == Harness.node)

            // Events of other kinds change nothing; the follower may subscribe a moment late.
            try await eventually("the notice is taken", within: 5) {
                Self.emit(h, "instance.changed", #"{"name":"x"}"#)
                Self.emit(h, "node.preempted", #"{"node":"test-node","state":"preempted","preemptible":true}"#)
                return h.plane.preemption == "preempted"
            }
            try await report()
            #expect(cluster.member(Harness.node)?.preempted == true)
            #expect(cluster.member(Harness.node)?.preemption == "preempted")
            let refused = try await h.plane.explainPlacement(admin, CreateEnvironmentRequest(username: "x", sshKeys: []))
            #expect(refused.chosen == nil)
            #expect(refused.verdicts.first?.filteredBecause == [.preempted], "\(refused.verdicts)")
            let create = await errorCode { try await h.create("alice") }
            #expect(create == .unavailable, "the node takes nothing new while it is being reclaimed")
            #expect(try await h.plane.listContainers(admin).isEmpty)
            // A maintenance notice replaces it, saying what the provider said (one line, bounded).
            Self.emit(h, "node.maintenance", #"{"node":"test-node","event":"MIGRATE_ON_HOST_MAINTENANCE\nX"}"#)
            try await eventually("the maintenance notice") { h.plane.preemption == "maintenance: MIGRATE_ON_HOST_MAINTENANCEX" }
            Self.emit(h, "node.recovered", #"{"node":"test-node","state":"running"}"#)
            try await eventually("the notice ends") { h.plane.preemption == nil }
            try await report()
            #expect(cluster.member(Harness.node)?.preempted == false)
            #expect(try await h.plane.explainPlacement(admin, CreateEnvironmentRequest(username: "x", sshKeys: [])).chosen == Harness.node)
            // Each change is audited once, with the plugin as the actor.
            let rows = try await h.audit(target: Harness.node).filter { $0.action.hasPrefix("node.") }
            #expect(rows.map(\.action).sorted() == ["node.maintenance", "node.preempted", "node.recovered"], "\(rows)")
            #expect(rows.allSatisfy { $0.actor == "plugin:gce-spot" && $0.result == "ok" })
        }
    }

    @Test("a critical environment is never placed on a preemptible node by default, and only as a last resort when the policy says so")
    func critical() async throws {
        try await Harness.with { (h: Harness) async throws in
            let cluster = Self.localCluster(h)
            try await cluster.report(try await h.plane.localReport(address: "", token: nil, labels: [:], pool: nil, preemptible: true), local: true)
            let admin = Harness.caller("admin", .admin)
            var request = CreateEnvironmentRequest(username: "alice", sshKeys: [Harness.sshKey()])
            request.critical = true
            let explained = try await h.plane.explainPlacement(admin, request)
            #expect(explained.chosen == nil)
            #expect(explained.verdicts.first?.filteredBecause == [.preemptibleForCritical], "\(explained.verdicts)")
            let refused = await errorCode { try await h.plane.createContainer(Harness.caller("alice"), request, async: false) }
            #expect(refused == .resourceExhausted)
            #expect(try await h.plane.listContainers(admin).isEmpty, "nothing half-made")
            #expect(try h.calls("create").isEmpty, "the backend was never asked")
            // Not critical: the same node takes it.
            try await h.create("bob")

            // With last-resort, the preemptible node takes a critical environment when nothing else fits.
            let lenient = Self.localCluster(h, policy: SchedulingPolicy(criticalOnPreemptible: .lastResort))
            try await lenient.report(try await h.plane.localReport(address: "", token: nil, labels: [:], pool: nil, preemptible: true), local: true)
            guard case .done(let view) = try await h.plane.createContainer(Harness.caller("alice"), request, async: false) else {
                throw TestFailure("a synchronous create returned an operation")
            }
            #expect(view.name == "alice-container")
        }
    }
}
