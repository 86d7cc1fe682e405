import ContainariumCore
import Foundation
import PluginKit
import Synchronization

/// Follows the metadata server of the machine the plugin runs on: `instance/preempted` and
/// `instance/maintenance-event`, each with its own `?wait_for_change=true&last_etag=…`
/// long-poll on a thread of its own, and emits host events as they change:
///
/// - `node.preempted` (a NodeStatus, state `preempted`) when `preempted` becomes TRUE: Google
///   is reclaiming this Spot/preemptible VM and stops it about 30 s later;
/// - `node.maintenance` (a NodeStatus, state `running`, `event` the value) when
///   `maintenance-event` becomes anything but NONE;
/// - `node.recovered` (state `running`) when both are back to FALSE / NONE.
///
/// The first reading of each is taken without waiting, so a plugin that starts while a notice
/// is in force announces it at once. A failed request is retried with backoff (1 s doubling to
/// 30 s); `stop` ends both threads within about 100 ms.
final class MetadataWatcher: Sendable {
    static let preemptedKey = "instance/preempted"
    static let maintenanceKey = "instance/maintenance-event"
    /// How long the metadata server may hold one long-poll.
    static let longPollSeconds = 60

    private struct State: Sendable {
        var name: String?
        var preemptible: Bool?
        var values: [String: String] = [:]
        var preemptedAt: Date?
        var problem: String?
        var problemSince: Date?
        var lastAnswer: Date?
    }

    private let metadata: MetadataClient
    private let host: HostServices
    private let stopped = CancellationFlag()
    private let state = Mutex(State())

    init(metadata: MetadataClient, host: HostServices) {
        self.metadata = metadata
        self.host = host
    }

    func start() {
        for key in [Self.preemptedKey, Self.maintenanceKey] {
            let thread = Thread { [self] in follow(key) }
            thread.name = "gce-spot-watch-\(key.split(separator: "/").last ?? "")"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    func stop() { stopped.cancel() }

    /// The name of the instance the plugin runs on, once the metadata server said it.
    var instanceName: String? { state.withLock { $0.name } }

    /// Whether the metadata server says the instance `node` (the one the plugin runs on) is
    /// being preempted now.
    func preempted(_ node: String) -> Bool {
        state.withLock { $0.name == node && $0.values[Self.preemptedKey] == "TRUE" }
    }

    /// Why the watch is not working now, or nil.
    var problem: String? {
        state.withLock { s in
            if let p = s.problem { return "metadata watch: \(p)" }
            if s.lastAnswer == nil { return "metadata watch: the metadata server \(metadata.host) has not answered yet" }
            return nil
        }
    }

    var summary: String {
        state.withLock { s in
            "metadata watch on \(s.name ?? "?") via \(metadata.host): preempted \(s.values[Self.preemptedKey] ?? "?"), "
                + "maintenance-event \(s.values[Self.maintenanceKey] ?? "?")"
        }
    }

    // MARK: - the loop

    private func follow(_ key: String) {
        var etag: String?
        var first = true
        var backoff = 1.0
        let cancelled = { self.stopped.isCancelled }
        while !stopped.isCancelled {
            do throws(ContainariumError) {
                try identify(cancelled: cancelled)
                let v = try metadata.get(
                    key, waitForChange: !first, lastETag: etag, timeoutSeconds: Self.longPollSeconds, cancelled: cancelled)
                etag = v.etag
                observe(key, v.text.trimmingCharacters(in: .whitespacesAndNewlines), first: first)
                first = false
                backoff = 1
            } catch {
                if stopped.isCancelled { break }
                let why = error.description
                let changed = state.withLock { s -> Bool in
                    defer {
                        if s.problem == nil { s.problemSince = Date() }
                        s.problem = why
                    }
                    return s.problem != why
                }
                if changed { host.log(.warning, "gce-spot: \(why); retrying in \(Int(backoff)) s") }
                pause(backoff)
                backoff = min(backoff * 2, 30)
            }
        }
    }

    /// Learn the instance's own name (and whether it is preemptible) once.
    private func identify(cancelled: () -> Bool) throws(ContainariumError) {
        if state.withLock({ $0.name }) != nil { return }
        let name = try metadata.get("instance/name", cancelled: cancelled).text.trimmingCharacters(in: .whitespacesAndNewlines)
        let preemptible = (try? metadata.get("instance/scheduling/preemptible", cancelled: cancelled))
            .map { $0.text.trimmingCharacters(in: .whitespacesAndNewlines).uppercased() == "TRUE" }
        state.withLock { s in
            if s.name == nil {
                s.name = name
                s.preemptible = preemptible
            }
        }
    }

    private func observe(_ key: String, _ value: String, first: Bool) {
        enum Emit { case none, preempted, maintenance, recovered }
        let (emit, snapshot) = state.withLock { s -> (Emit, State) in
            s.lastAnswer = Date()
            s.problem = nil
            s.problemSince = nil
            let previous = s.values[key]
            s.values[key] = value
            guard previous != value else { return (.none, s) }
            let preempted = s.values[Self.preemptedKey] == "TRUE"
            let maintenance = (s.values[Self.maintenanceKey] ?? "NONE") != "NONE"
            switch key {
            case Self.preemptedKey where value == "TRUE":
                s.preemptedAt = Date()
                return (.preempted, s)
            case Self.maintenanceKey where value != "NONE":
                return (.maintenance, s)
            default:
                // Back to FALSE / NONE: over, unless the other notice still holds.
                return (first || preempted || maintenance ? .none : .recovered, s)
            }
        }
        let node = snapshot.name ?? ""
        switch emit {
        case .none:
            break
        case .preempted:
            host.log(.warning, "gce-spot: the metadata server says instance \(node) is being preempted")
            host.emit(
                type: "node.preempted",
                NodeStatus(node: node, state: "preempted", preemptible: snapshot.preemptible ?? true, lastPreemptedAt: snapshot.preemptedAt))
        case .maintenance:
            host.log(.warning, "gce-spot: the metadata server announces host maintenance for instance \(node): \(value)")
            host.emit(type: "node.maintenance", NodeStatus(node: node, state: "running", preemptible: snapshot.preemptible, event: value))
        case .recovered:
            host.log(.notice, "gce-spot: instance \(node) has no preemption or maintenance notice any more")
            host.emit(type: "node.recovered", NodeStatus(node: node, state: "running", preemptible: snapshot.preemptible))
        }
    }

    /// Sleep up to `seconds`, waking early when stopped.
    private func pause(_ seconds: Double) {
        let until = Date().addingTimeInterval(seconds)
        while !stopped.isCancelled, Date() < until { usleep(100_000) }
    }
}
