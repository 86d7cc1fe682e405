import ContainariumCore
public import ContainariumTelemetry
import ContainariumScheduler
import ContainariumService
import Prometheus
import Foundation
import PluginHost
import Synchronization

/// The platform's metrics in the daemon's `Telemetry` (none without: every call is then a
/// no-op): scheduler decisions, operations, the reconciler, scans, and the snapshot families of
/// environments, nodes and plugins rendered at scrape time. Names: docs/monitoring.md.
public final class PlatformMetrics: Sendable {
    public let telemetry: Telemetry?
    /// Findings of the newest scan per (user, scanner) this daemon ran.
    let findings = Mutex<[String: (user: String, scanner: String, count: Int)]>([:])

    public init(_ telemetry: Telemetry?) { self.telemetry = telemetry }

    // MARK: - instruments

    func schedulerDecision(placed: Bool, duration: Duration, reasons: Set<String>) {
        guard let t = telemetry else { return }
        t.counter("containarium_scheduler_decisions_total", [("result", placed ? "placed" : "unplaced")],
                  help: "Placements the scheduler decided, by result.").increment()
        t.histogram("containarium_scheduler_decision_duration_seconds", help: "Time to place one environment (filter, score, reserve).")
            .recordNanoseconds(Int64(duration.components.seconds) * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
        for reason in reasons.sorted() {
            t.counter("containarium_scheduler_unplaced_total", [("reason", reason)],
                      help: "Environments no node could take, by why the nodes were filtered out (each reason once per decision).").increment()
        }
    }

    func operationFinished(kind: String, result: String, duration: TimeInterval) {
        guard let t = telemetry else { return }
        t.counter("containarium_operations_total", [("type", kind), ("result", result)], help: "Long-running operations finished, by type and result.")
            .increment()
        t.histogram("containarium_operation_duration_seconds", [("type", kind)], buckets: Telemetry.longBuckets,
                    help: "How long operations took, by type.").record(.milliseconds(Int64(duration * 1000)))
    }

    func reconciled(ok: Bool, duration: TimeInterval, report: Reconciler.Report?) {
        guard let t = telemetry else { return }
        t.counter("containarium_reconciler_runs_total", [("result", ok ? "ok" : "failed")], help: "Reconciler passes, by result.").increment()
        t.histogram("containarium_reconciler_duration_seconds", buckets: Telemetry.longBuckets, help: "How long a reconciler pass took.")
            .record(.milliseconds(Int64(duration * 1000)))
        t.gauge("containarium_reconciler_last_run_timestamp_seconds", help: "When the last reconciler pass ended (Unix time), whatever its result.")
            .set(Date().timeIntervalSince1970)
        guard let report else { return }
        let repairs: [(String, Int)] = [
            ("rolled_back", report.rolledBack.count), ("adopted", report.adopted.count), ("removed_orphan", report.removedOrphans.count),
            ("dropped_record", report.droppedRecords.count), ("failed_operation", report.failedOperations.count),
            ("settled_remote", report.settledRemote.count),
        ]
        for (kind, n) in repairs {
            // Every kind exists from the first pass on (0 until it happens), so rate() sees the first repair.
            t.counter("containarium_reconciler_repairs_total", [("kind", kind)], help: "What the reconciler repaired, by kind.")
                .increment(by: Int64(n))
        }
    }

    func scanned(user: String, scanner: String, status: String, findings count: Int) {
        guard let t = telemetry else { return }
        t.counter("containarium_scans_total", [("scanner", scanner), ("result", status)], help: "Scans run by this daemon, by scanner and result.")
            .increment()
        if status != "failed" {
            findings.withLock { $0["\(user)\u{1}\(scanner)"] = (user, scanner, count) }
        }
    }

    // MARK: - snapshots

    /// Register the snapshot families of `plane` (its environments, the cluster's nodes, this
    /// node's plugins, scan findings, running operations).
    func installCollectors(_ plane: ControlPlane) {
        guard let t = telemetry else { return }
        t.addCollector { [weak plane] text in
            guard let plane else { return }
            Self.environments(plane, &text)
            Self.nodes(plane, &text)
            Self.plugins(plane, &text)
            plane.platformMetrics.scanFindings(plane, &text)
            text.family("containarium_operations_running", type: "gauge", help: "Operations running in this daemon now.")
            text.sample("containarium_operations_running", [], Double(plane.runningOperations))
        }
    }

    static func environments(_ plane: ControlPlane, _ text: inout MetricsText) {
        let instances = plane.metrics.latestInstances
        let families: [(String, String, String)] = [
            ("containarium_environment_cpu_seconds_total", "counter", "CPU time the environment used since it started, in seconds."),
            ("containarium_environment_memory_bytes", "gauge", "Memory the environment uses now, in bytes."),
            ("containarium_environment_memory_limit_bytes", "gauge", "The environment's memory limit, in bytes (absent when unlimited)."),
            ("containarium_environment_disk_bytes", "gauge", "Disk the environment's root uses, in bytes."),
            ("containarium_environment_disk_limit_bytes", "gauge", "The environment's disk limit, in bytes (absent when unlimited)."),
            ("containarium_environment_network_receive_bytes_total", "counter", "Bytes the environment received since it started."),
            ("containarium_environment_network_transmit_bytes_total", "counter", "Bytes the environment sent since it started."),
            ("containarium_environment_processes", "gauge", "Processes running in the environment."),
            ("containarium_environment_state", "gauge", "Always 1, labelled with the environment's state."),
        ]
        var lines: [String: [([(String, String)], Double)]] = [:]
        for i in instances {
            guard let user = Username(containerName: i.name) else { continue }
            let labels = [("environment", i.name), ("user", user.value), ("node", i.node ?? plane.node), ("backend", i.backend ?? "")]
            func add(_ name: String, _ value: Double?) { if let value { lines[name, default: []].append((labels, value)) } }
            add("containarium_environment_cpu_seconds_total", i.cpuUsageNanoseconds.map { Double($0) / 1e9 })
            add("containarium_environment_memory_bytes", i.memoryUsageBytes.map { Double($0) })
            add("containarium_environment_memory_limit_bytes", i.memoryLimitBytes.flatMap { $0 > 0 ? Double($0) : nil })
            add("containarium_environment_disk_bytes", i.diskUsageBytes.map { Double($0) })
            add("containarium_environment_disk_limit_bytes", i.diskLimitBytes.flatMap { $0 > 0 ? Double($0) : nil })
            add("containarium_environment_network_receive_bytes_total", i.networkRxBytes.map { Double($0) })
            add("containarium_environment_network_transmit_bytes_total", i.networkTxBytes.map { Double($0) })
            add("containarium_environment_processes", i.processes.map { Double($0) })
            lines["containarium_environment_state", default: []].append((labels + [("state", i.state.rawValue.lowercased())], 1))
        }
        for (name, type, help) in families {
            text.family(name, type: type, help: help)
            for (labels, value) in lines[name] ?? [] { text.sample(name, labels, value) }
        }
    }

    static func nodes(_ plane: ControlPlane, _ text: inout MetricsText) {
        let nodes = plane.cluster?.nodes ?? []
        let g: [(String, String)] = [
            ("containarium_node_cpu_capacity_cores", "CPU cores the node offers."),
            ("containarium_node_memory_capacity_bytes", "Memory the node offers, in bytes."),
            ("containarium_node_disk_capacity_bytes", "Disk the node offers, in bytes."),
            ("containarium_node_cpu_reserved_cores", "CPU cores reserved by the environments placed on the node."),
            ("containarium_node_memory_reserved_bytes", "Memory reserved by the environments placed on the node, in bytes."),
            ("containarium_node_disk_reserved_bytes", "Disk reserved by the environments placed on the node, in bytes."),
            ("containarium_node_environments", "Environments on the node."),
            ("containarium_node_healthy", "1 while the node reports in time, else 0."),
            ("containarium_node_condition", "Always 1, labelled with the node's scheduling condition."),
        ]
        for (name, help) in g { text.family(name, type: "gauge", help: help) }
        for n in nodes {
            let l = [("node", n.name)]
            let reserved = n.used  // what the scheduler holds for the environments placed there
            text.sample("containarium_node_cpu_capacity_cores", l, Double(n.capacity.cpuMillis) / 1000)
            text.sample("containarium_node_memory_capacity_bytes", l, Double(n.capacity.memoryBytes))
            text.sample("containarium_node_disk_capacity_bytes", l, Double(n.capacity.diskBytes))
            text.sample("containarium_node_cpu_reserved_cores", l, Double(reserved.cpuMillis) / 1000)
            text.sample("containarium_node_memory_reserved_bytes", l, Double(reserved.memoryBytes))
            text.sample("containarium_node_disk_reserved_bytes", l, Double(reserved.diskBytes))
            text.sample("containarium_node_environments", l, Double(n.environments))
            text.sample("containarium_node_healthy", l, n.healthy ? 1 : 0)
            let condition = !n.healthy ? "unhealthy" : n.preempted ? "preempted" : n.draining ? "draining" : "ready"
            text.sample("containarium_node_condition", l + [("condition", condition)], 1)
        }
        // What this node's environments use, from their last sample.
        let instances = plane.metrics.latestInstances
        text.family("containarium_node_memory_used_bytes", type: "gauge", help: "Memory this node's environments use now, in bytes.")
        text.sample("containarium_node_memory_used_bytes", [("node", plane.node)], Double(instances.reduce(0) { $0 + ($1.memoryUsageBytes ?? 0) }))
        text.family("containarium_node_disk_used_bytes", type: "gauge", help: "Disk this node's environments use now, in bytes.")
        text.sample("containarium_node_disk_used_bytes", [("node", plane.node)], Double(instances.reduce(0) { $0 + ($1.diskUsageBytes ?? 0) }))
    }

    static func plugins(_ plane: ControlPlane, _ text: inout MetricsText) {
        text.family("containarium_plugin_state", type: "gauge", help: "Always 1, labelled with the plugin's state on this node (ready, disabled, shadowed, failed).")
        for r in plane.service.plugins.records {
            let state: String
            switch r.state {
            case .ready: state = "ready"
            case .disabled: state = "disabled"
            case .shadowed: state = "shadowed"
            case .failed: state = "failed"
            }
            text.sample("containarium_plugin_state", [("plugin", r.id), ("state", state)], 1)
        }
    }

    func scanFindings(_ plane: ControlPlane, _ text: inout MetricsText) {
        let present = Set(plane.inventory.snapshot.instances.map(\.name))
        let rows = findings.withLock { f in
            f = f.filter { present.contains($0.value.user + "-container") }
            return f.values.sorted { ($0.user, $0.scanner) < ($1.user, $1.scanner) }
        }
        text.family("containarium_scan_findings", type: "gauge", help: "Findings in the newest scan report of each environment, by scanner.")
        for r in rows {
            text.sample("containarium_scan_findings", [("environment", r.user + "-container"), ("user", r.user), ("scanner", r.scanner)], Double(r.count))
        }
    }
}
