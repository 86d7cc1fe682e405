public import ContainariumCore
import ContainariumScheduler
import ContainariumService
import ContainariumStore
import ContainariumTelemetry
public import Foundation
import Synchronization

/// AlertService over the control plane: admins only, every change audited (`alert.*`,
/// `system.alerting`), secrets never returned or logged.
extension ControlPlane {
    public func listAlerts(_ caller: Caller) async throws(ContainariumError) -> [(AlertRuleRecord, [AlertInstanceView])] {
        try requireAdmin(caller, "alert rules")
        return try await alerting.rules().map { ($0, alerting.instances(of: $0.name)) }
    }

    public func getAlert(_ caller: Caller, _ name: String) async throws(ContainariumError) -> (AlertRuleRecord, [AlertInstanceView]) {
        try requireAdmin(caller, "alert rules")
        let r = try await alerting.rule(name)
        return (r, alerting.instances(of: name))
    }

    public func putAlert(_ caller: Caller, _ rule: AlertRuleRecord, creating: Bool) async throws(ContainariumError) -> AlertRuleRecord {
        try await audited(caller, creating ? "alert.create" : "alert.update", rule.name,
                          detail: "\(rule.metric) \(rule.op) \(rule.threshold) for \(rule.duration)") { () async throws(ContainariumError) -> AlertRuleRecord in
            try requireAdmin(caller, "alert rules")
            var rule = rule
            let settings = try await alerting.settings()
            if let unknown = rule.webhooks.first(where: { name in !settings.webhooks.contains { $0.name == name } }) {
                throw .invalid("no webhook named '\(unknown)' (configure it with PUT /v1/system/alerting first)")
            }
            if !creating {
                let old = try await alerting.rule(rule.name)
                rule.createdAt = old.createdAt
            }
            try await alerting.save(rule, creating: creating)
            return rule
        }
    }

    public func deleteAlert(_ caller: Caller, _ name: String) async throws(ContainariumError) {
        try await audited(caller, "alert.delete", name) { () async throws(ContainariumError) in
            try requireAdmin(caller, "alert rules")
            try await alerting.delete(name)
        }
    }

    public func testAlert(_ caller: Caller, _ name: String) async throws(ContainariumError) -> [AlertDeliveryRecord] {
        try await audited(caller, "alert.test", name) { () async throws(ContainariumError) -> [AlertDeliveryRecord] in
            try requireAdmin(caller, "alert rules")
            return try await alerting.test(try await alerting.rule(name))
        }
    }

    public func alertDeliveries(_ caller: Caller, limit: Int) async throws(ContainariumError) -> [AlertDeliveryRecord] {
        try requireAdmin(caller, "the alert delivery log")
        guard (1...500).contains(limit) else { throw .invalid("limit must be 1 to 500") }
        return try await alerting.deliveries(limit: limit)
    }

    public func alertingSettings(_ caller: Caller) async throws(ContainariumError) -> AlertingSettings {
        try requireAdmin(caller, "alerting settings")
        return try await alerting.settings()
    }

    public func updateAlertingSettings(_ caller: Caller, _ settings: AlertingSettings) async throws(ContainariumError) -> AlertingSettings {
        try await audited(caller, "system.alerting", "alerting",
                          detail: "webhooks: " + settings.webhooks.map { "\($0.name) (\($0.format.rawValue))" }.joined(separator: ", ")) { () async throws(ContainariumError) -> AlertingSettings in
            try requireAdmin(caller, "alerting settings")
            return try await alerting.update(settings)
        }
    }

    public struct MonitoringView: Sendable, Equatable {
        public var grafanaURL: String
        public var prometheusURL: String
        public var metricsEnabled: Bool
    }

    /// Where the deployment's dashboards are (the config's `monitoring`), for any signed-in user.
    public func monitoring(_ caller: Caller) throws(ContainariumError) -> MonitoringView {
        if caller.role == .node || caller.role == .metrics { throw .denied("\(caller.role.rawValue) tokens may not read this") }
        let m = service.config.monitoring
        return MonitoringView(grafanaURL: m?.grafanaURL ?? "", prometheusURL: m?.prometheusURL ?? "", metricsEnabled: platformMetrics.telemetry != nil)
    }

    // MARK: - evaluation

    /// Evaluate the alert rules over what this daemon sees now (after each usage sample).
    public func evaluateAlerts(now: Date = Date()) async {
        let instances = metrics.latestInstances
        let nodes = cluster?.nodes ?? []
        let local = nodes.first { $0.local }
        let findings = platformMetrics.findings.withLock { Array($0.values) }
        let localNode = node
        let cpu = Dictionary(instances.map { ($0.name, metrics.latest(for: $0.name)?.cpuPercent) }, uniquingKeysWith: { a, _ in a })
        await alerting.evaluate(now: now) { metric -> Alerting.Observations in
            var out: Alerting.Observations = [:]
            func env(_ value: (InstanceInfo) -> Double?) {
                for i in instances {
                    guard let user = Username(containerName: i.name), let v = value(i) else { continue }
                    out[i.name] = (v, user.value)
                }
            }
            switch metric {
            case "environment_memory_percent":
                env { i in i.memoryLimitBytes.flatMap { $0 > 0 ? Double(i.memoryUsageBytes ?? 0) / Double($0) * 100 : nil } }
            case "environment_disk_percent":
                env { i in i.diskLimitBytes.flatMap { $0 > 0 ? Double(i.diskUsageBytes ?? 0) / Double($0) * 100 : nil } }
            case "environment_cpu_percent":
                env { i in cpu[i.name] ?? nil }
            case "environment_processes":
                env { i in i.processes.map { Double($0) } }
            case "node_unhealthy":
                for n in nodes { out[n.name] = (n.healthy ? 0 : 1, nil) }
            case "node_memory_percent":
                if let cap = local?.capacity.memoryBytes, cap > 0 {
                    out[localNode] = (Double(instances.reduce(0) { $0 + ($1.memoryUsageBytes ?? 0) }) / Double(cap) * 100, nil)
                }
            case "node_disk_percent":
                if let cap = local?.capacity.diskBytes, cap > 0 {
                    out[localNode] = (Double(instances.reduce(0) { $0 + ($1.diskUsageBytes ?? 0) }) / Double(cap) * 100, nil)
                }
            case "scan_findings":
                for f in findings { out["\(f.user)-container/\(f.scanner)"] = (Double(f.count), f.user) }
            default:
                break
            }
            return out
        }
    }
}
