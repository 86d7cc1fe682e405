import ContainariumCore
import Foundation
import PluginKit
import Synchronization

/// `node.lifecycle/1`'s request: {"node": NAME}.
struct NodeRef: Decodable, Sendable {
    var node: String
}

/// `node.lifecycle/1`'s answer and event payload (docs/schemas/node.lifecycle-1.schema.json);
/// `gceStatus` (GCE's own word) and `event` (a maintenance event) are extra fields the schema
/// allows.
struct NodeStatus: Codable, Sendable, Equatable {
    var node: String
    var state: String
    var address: String?
    var preemptible: Bool?
    var lastPreemptedAt: Date?
    var gceStatus: String?
    var event: String?

    init(
        node: String, state: String, address: String? = nil, preemptible: Bool? = nil, lastPreemptedAt: Date? = nil, gceStatus: String? = nil,
        event: String? = nil
    ) {
        self.node = node
        self.state = state
        self.address = address
        self.preemptible = preemptible
        self.lastPreemptedAt = lastPreemptedAt
        self.gceStatus = gceStatus
        self.event = event
    }
}

/// The instances one plugin instance guards, over the Compute API and the metadata server.
final class GCEBackend: Sendable {
    let settings: Settings
    let compute: ComputeClient
    let tokens: TokenProvider
    let watcher: MetadataWatcher?
    private let host: HostServices
    private let reach: Reachability

    /// The newest preemption per instance incarnation, start/stop pair and status: the
    /// operation list changes only when an instance stops, so it is asked once per change of
    /// those, not per status call.
    private struct PreemptionKey: Hashable, Sendable {
        var id: String
        var lastStart: String?
        var lastStop: String?
        var status: String?
    }
    private struct Known: Sendable { var at: Date? }
    private let preemptions = Mutex<[PreemptionKey: Known]>([:])

    init(settings: Settings, compute: ComputeClient, tokens: TokenProvider, watcher: MetadataWatcher?, host: HostServices, reach: Reachability) {
        self.settings = settings
        self.compute = compute
        self.tokens = tokens
        self.watcher = watcher
        self.host = host
        self.reach = reach
    }

    private func guarded(_ node: String) throws(ContainariumError) {
        guard !node.isEmpty else { throw .invalid("node must name a GCE instance") }
        guard settings.instances.contains(node) else {
            throw .denied(
                "gce-spot guards no instance named '\(node.prefix(80))' (it guards \(settings.instances.joined(separator: ", ")) in \(settings.project)/\(settings.zone))")
        }
    }

    // MARK: - status

    /// GCE's status word as the schema's state.
    static func state(of gce: String) -> String {
        switch gce {
        case "RUNNING": "running"
        case "PROVISIONING", "STAGING": "starting"
        case "STOPPING", "SUSPENDING": "stopping"
        case "TERMINATED", "STOPPED", "SUSPENDED": "stopped"
        default: "unknown"
        }
    }

    func status(_ node: String, cancelled: () -> Bool) throws(ContainariumError) -> NodeStatus {
        try guarded(node)
        let inst = try compute.instance(node, cancelled: cancelled)
        let gce = inst.status ?? "UNKNOWN"
        var state = Self.state(of: gce)
        let preemptedAt = lastPreemption(inst, node: node, cancelled: cancelled)
        if state == "stopped" || state == "stopping" {
            // The last stop was a preemption when Google preempted this incarnation since it
            // last started; for the machine the plugin runs on, the metadata flag says so too.
            let lastStart = GoogleTime.parse(inst.lastStartTimestamp)
            if let p = preemptedAt, lastStart.map({ p > $0 }) ?? true {
                state = "preempted"
            } else if watcher?.preempted(node) == true {
                state = "preempted"
            }
        }
        let interfaces = inst.networkInterfaces ?? []
        let nat = interfaces.lazy.flatMap { $0.accessConfigs ?? [] }.compactMap(\.natIP).first { !$0.isEmpty }
        let internalIP = interfaces.lazy.compactMap(\.networkIP).first { !$0.isEmpty }
        let preemptible = inst.scheduling.map { $0.preemptible == true || $0.provisioningModel == "SPOT" }
        return NodeStatus(
            node: node, state: state, address: nat ?? internalIP, preemptible: preemptible, lastPreemptedAt: preemptedAt, gceStatus: gce)
    }

    /// When Google last preempted this incarnation of the instance (its newest
    /// `compute.instances.preempted` operation), nil when never or when the list cannot be read
    /// (then the state comes from GCE's status alone, and health says why).
    private func lastPreemption(_ inst: GCEInstance, node: String, cancelled: () -> Bool) -> Date? {
        guard let id = inst.id else { return nil }
        let key = PreemptionKey(id: id, lastStart: inst.lastStartTimestamp, lastStop: inst.lastStopTimestamp, status: inst.status)
        if let known = preemptions.withLock({ $0[key] }) { return known.at }
        do throws(ContainariumError) {
            let ops = try compute.preemptions(instanceID: id, cancelled: cancelled)
            let at = ops.compactMap { GoogleTime.parse($0.insertTime) }.max()
            preemptions.withLock { p in
                if p.count > 256 { p.removeAll() }
                p[key] = Known(at: at)
            }
            return at
        } catch {
            host.log(.warning, "gce-spot: cannot list the preemptions of \(node): \(error.description)")
            return nil
        }
    }

    // MARK: - start and stop

    /// instances.start / instances.stop, then zoneOperations.get until the operation is DONE;
    /// an operation that ends with errors fails with Google's code and message.
    func change(_ action: String, _ node: String, _ ctx: OperationContext) throws(ContainariumError) -> NodeStatus {
        try guarded(node)
        let cancelled = { ctx.isCancelled }
        let started = Date()
        var op = try compute.act(action, node, cancelled: cancelled)
        host.log(.info, "gce-spot: \(action) of instance \(node) requested (operation \(op.name))")
        let deadline = started.addingTimeInterval(settings.operationTimeout)
        var delay = 0.25
        while op.status != "DONE" {
            if ctx.isCancelled {
                throw ContainariumError(.cancelled, "\(action) of instance \(node) cancelled; Google's operation \(op.name) goes on")
            }
            if Date() >= deadline {
                throw ContainariumError(
                    .timeout,
                    "\(action) of instance \(node) did not finish within \(Int(settings.operationTimeout)) s (operation \(op.name) is \(op.status ?? "?"))")
            }
            let until = min(Date().addingTimeInterval(delay), deadline)
            while Date() < until, !ctx.isCancelled { usleep(50_000) }
            delay = min(delay * 1.5, 2)
            if ctx.isCancelled { continue }
            op = try compute.operation(op.name, cancelled: cancelled)
        }
        if let problems = op.error?.errors, !problems.isEmpty {
            let e = Self.operationError(action, node, op, problems)
            host.log(.warning, "gce-spot: \(e.message)")
            throw e
        }
        host.log(.info, "gce-spot: \(action) of instance \(node) done in \(String(format: "%.1f", Date().timeIntervalSince(started))) s (operation \(op.name))")
        return try status(node, cancelled: cancelled)
    }

    /// A failed operation as the error its first code says, with every code and message Google gave.
    static func operationError(_ action: String, _ node: String, _ op: GCEOperation, _ problems: [GCEOperation.Problem]) -> ContainariumError {
        let first = problems.first?.code ?? ""
        let code: ContainariumError.Code =
            switch first {
            case "QUOTA_EXCEEDED", "ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "RESOURCE_EXHAUSTED",
                "RATE_LIMIT_EXCEEDED":
                .resourceExhausted
            case "RESOURCE_NOT_FOUND": .notFound
            case "RESOURCE_NOT_READY", "CONDITION_NOT_MET", "UNSUPPORTED_OPERATION", "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE": .failedPrecondition
            case "PERMISSION_DENIED", "FORBIDDEN": .permissionDenied
            default: .unavailable
            }
        let said = problems.map { "\($0.code ?? "ERROR"): \($0.message ?? "")" }.joined(separator: "; ")
        return ContainariumError(code, "\(action) of instance \(node) failed (operation \(op.name)): \(said)")
    }

    // MARK: - health

    /// ok when the Compute API answered within the last minute (else it is asked now) and the
    /// metadata watch (when on) has its answers; degraded with the reasons otherwise.
    func health() -> HealthReport {
        var problems: [String] = []
        var compute = reach.entry(ComputeClient.service)
        if let probe = settings.instances.first, compute.failing || compute.answered.map({ Date().timeIntervalSince($0) > 60 }) ?? true {
            do throws(ContainariumError) {
                _ = try self.compute.instance(probe, timeout: 10, cancelled: { false })
            } catch {
                if error.code == .notFound {
                    problems.append("instance \(probe) does not exist in \(settings.project)/\(settings.zone): \(error.message)")
                } else {
                    problems.append(error.description)
                }
            }
            compute = reach.entry(ComputeClient.service)
        }
        if compute.failing, let why = compute.why, !problems.contains(why) { problems.append(why) }
        if let w = watcher, let why = w.problem { problems.append(why) }
        if !problems.isEmpty { return HealthReport(status: "degraded", detail: problems.joined(separator: "; ")) }
        var parts = ["compute API \(settings.computeBaseURL) answered for \(settings.project)/\(settings.zone) (\(settings.instances.count) instances, tokens from \(tokens.description))"]
        if let w = watcher { parts.append(w.summary) }
        return HealthReport(status: "ok", detail: parts.joined(separator: "; "))
    }
}
