import ContainariumCore
import ContainariumPlatform
import ContainariumStore
import ContainariumTelemetry
import Foundation
import TestSupport
import Testing

/// The alerting state machine over the control plane's store and events (delivery itself is
/// MonitoringTests', against a real receiver): pending until the duration, firing once, resolved
/// once; scoped rules see only their user's environments; disabled and deleted rules stop.
@Suite("Alerting in process")
struct AlertingTests {
    @Test("pending until the duration has passed, one alert.firing, one alert.resolved; a user's rule sees only that user; disabled and deleted rules let go")
    func stateMachine() async throws {
        try await Harness.with { (h: Harness) async throws in
            let admin = Harness.caller("admin", .admin)
            let rule = try AlertRuleRecord.make(name: "mem", metric: "environment_memory_percent", op: ">", threshold: 80, duration: "60s", severity: "critical",
                                                description: "", disabled: false, username: "alice", webhooks: [])
            _ = try await h.plane.putAlert(admin, rule, creating: true)
            await #expect(throws: ContainariumError.self) { _ = try await h.plane.putAlert(admin, rule, creating: true) }
            await #expect(throws: ContainariumError.self) { _ = try await h.plane.putAlert(Harness.caller("alice"), rule, creating: false) }
            let (events, cancel) = h.plane.events.subscribe()
            defer { cancel() }
            var values: Alerting.Observations = ["alice-container": (90, "alice"), "bob-container": (99, "bob")]
            let t0 = Date()
            await h.plane.alerting.evaluate(now: t0) { _ in values }
            #expect(h.plane.alerting.instances(of: "mem").map(\.target) == ["alice-container"], "bob is outside the rule's scope")
            #expect(h.plane.alerting.instances(of: "mem").first?.firing == false, "pending")
            await h.plane.alerting.evaluate(now: t0.addingTimeInterval(30)) { _ in values }
            #expect(h.plane.alerting.instances(of: "mem").first?.firing == false, "still pending at 30 s")
            await h.plane.alerting.evaluate(now: t0.addingTimeInterval(61)) { _ in values }
            #expect(h.plane.alerting.instances(of: "mem").first?.firing == true)
            await h.plane.alerting.evaluate(now: t0.addingTimeInterval(62)) { _ in values }  // no second firing
            values["alice-container"] = (10, "alice")
            await h.plane.alerting.evaluate(now: t0.addingTimeInterval(63)) { _ in values }
            #expect(h.plane.alerting.instances(of: "mem").isEmpty)
            // A dip below the threshold restarts the clock.
            values["alice-container"] = (95, "alice")
            await h.plane.alerting.evaluate(now: t0.addingTimeInterval(100)) { _ in values }
            values["alice-container"] = (50, "alice")
            await h.plane.alerting.evaluate(now: t0.addingTimeInterval(120)) { _ in values }
            values["alice-container"] = (95, "alice")
            await h.plane.alerting.evaluate(now: t0.addingTimeInterval(130)) { _ in values }
            await h.plane.alerting.evaluate(now: t0.addingTimeInterval(170)) { _ in values }
            #expect(h.plane.alerting.instances(of: "mem").first?.firing == false, "pending again from 130 s, not from 100 s")
            // Disabled: what was pending lets go; deleted: gone.
            var disabled = rule
            disabled.disabled = true
            _ = try await h.plane.putAlert(admin, disabled, creating: false)
            await h.plane.alerting.evaluate(now: t0.addingTimeInterval(200)) { _ in values }
            #expect(h.plane.alerting.instances(of: "mem").isEmpty)
            try await h.plane.deleteAlert(admin, "mem")
            await #expect(throws: ContainariumError.self) { _ = try await h.plane.getAlert(admin, "mem") }

            var seen: [DaemonEvent] = []
            for await e in events where e.type.hasPrefix("alert.") {
                seen.append(e)
                if seen.count == 2 { break }
            }
            #expect(seen.map(\.type) == ["alert.firing", "alert.resolved"])
            #expect(seen.allSatisfy { $0.username == "alice" })
            if case .alert(let name, let target, let severity, let value, let threshold) = seen.first?.data {
                #expect(name == "mem" && target == "alice-container" && severity == "critical" && value == 90 && threshold == 80)
            } else {
                Issue.record("alert.firing carries no alert data: \(String(describing: seen.first))")
            }
            // Every change is audited, by the admin.
            let audited = try await h.plane.store.audit(AuditFilter(limit: 100)).filter { $0.action.hasPrefix("alert.") }.map(\.action)
            #expect(audited.contains("alert.create") && audited.contains("alert.update") && audited.contains("alert.delete"), "\(audited)")
        }
    }

    @Test("webhook settings: validated, secrets kept when an update leaves them out, never shown; rules naming unknown webhooks are refused")
    func settings() async throws {
        try await Harness.with { (h: Harness) async throws in
            let admin = Harness.caller("admin", .admin)
            let first = AlertingSettings(webhooks: [WebhookTarget(name: "ops", url: "https://hooks.example/a", secret: "k1")], maxAttempts: 3, initialBackoffSeconds: 1)
            _ = try await h.plane.updateAlertingSettings(admin, first)
            let again = try await h.plane.updateAlertingSettings(admin, AlertingSettings(webhooks: [WebhookTarget(name: "ops", url: "https://hooks.example/b")]))
            #expect(again.webhooks.first?.secret == "k1", "an update without the secret keeps it")
            #expect(again.webhooks.first?.url == "https://hooks.example/b")
            await #expect(throws: ContainariumError.self) {
                _ = try await h.plane.updateAlertingSettings(admin, AlertingSettings(webhooks: [], maxAttempts: 0))
            }
            await #expect(throws: ContainariumError.self) {
                _ = try await h.plane.updateAlertingSettings(Harness.caller("alice"), first)
            }
            let rule = try AlertRuleRecord.make(name: "n", metric: "node_unhealthy", op: ">", threshold: 0, duration: "0s", severity: "", description: "",
                                                disabled: false, username: "", webhooks: ["nobody"])
            await #expect(throws: ContainariumError.self) { _ = try await h.plane.putAlert(admin, rule, creating: true) }
            let audit = try await h.plane.store.audit(AuditFilter(limit: 100)).filter { $0.action == "system.alerting" }
            #expect(!audit.isEmpty && audit.allSatisfy { !$0.detail.contains("k1") }, "the secret is never in the audit log")
        }
    }
}
