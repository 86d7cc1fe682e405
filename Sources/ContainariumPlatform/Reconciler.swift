public import ContainariumCore
import ContainariumService
import ContainariumStore
public import Foundation
import Logging

/// Brings the store and the backend back into agreement, at startup and periodically:
/// - a create whose daemon died (record "creating", operation not running here) is rolled
///   back: the half-made container is removed, the record dropped, the operation failed;
/// - operations left "running" by a dead daemon of this node are marked failed;
/// - a managed container without a record is adopted when it was created completely, and
///   removed when it is half-made and older than the grace period (a create that died before
///   its record could be written, or an Incus create that finished after its caller died);
/// - a record whose container vanished is dropped.
public struct Reconciler: Sendable {
    let plane: ControlPlane
    /// How old a half-made container without a record must be before it is removed.
    let grace: TimeInterval

    public init(plane: ControlPlane, grace: TimeInterval) {
        self.plane = plane
        self.grace = grace
    }

    public struct Report: Sendable, Equatable, CustomStringConvertible {
        public var rolledBack: [String] = []
        public var adopted: [String] = []
        public var removedOrphans: [String] = []
        public var droppedRecords: [String] = []
        public var failedOperations: [String] = []
        /// Creates handed to other nodes by an earlier run of this daemon, settled after it died.
        public var settledRemote: [String] = []
        public var description: String {
            "rolled back \(rolledBack), adopted \(adopted), removed orphans \(removedOrphans), dropped records \(droppedRecords), failed operations \(failedOperations.count), settled remote creates \(settledRemote)"
        }
        public var isEmpty: Bool { self == Report() }
    }

    public func reconcileOnce(now: Date = Date()) async throws(ContainariumError) -> Report {
        var report = Report()
        let store = plane.store
        try await plane.inventory.refreshAll()
        let instances = Dictionary(plane.inventory.snapshot.instances.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })

        // 1. Operations of this node whose daemon is gone.
        for op in try await store.operations(state: .running, node: plane.node, limit: 10_000)
        where op.daemon != plane.daemonID && !plane.isRunningHere(op.id) {
            if try await store.finishOperation(op.id, state: .failed, errorCode: ContainariumError.Code.unavailable.rawValue,
                                               errorMessage: "interrupted: the daemon running it stopped (\(op.daemon))", message: "interrupted") {
                report.failedOperations.append(op.id)
            }
        }

        // 2. Records.
        for record in try await store.containers(node: plane.node) {
            let name = record.username + "-container"
            let busy = record.operationID.map { plane.isRunningHere($0) } ?? false
            if busy { continue }
            switch record.phase {
            case .creating, .deleting:
                // Interrupted create or delete: remove what is left.
                if instances[name] != nil {
                    do throws(ContainariumError) {
                        try await plane.service.delete(username: record.username, force: true)
                    } catch where error.code == .notFound {
                    }
                }
                try await store.deleteContainer(record.username)
                plane.inventory.remove(name)
                report.rolledBack.append(record.username)
            case .ready:
                if instances[name] == nil {
                    try await store.deleteContainer(record.username)
                    report.droppedRecords.append(record.username)
                }
            }
        }

        // 3. Managed containers the store does not know.
        let known = Set(try await store.containers().map { $0.username + "-container" })
        for (name, info) in instances where !known.contains(name) {
            if info.provisioned == true || info.provisioned == nil && info.labels["owner"] != nil && info.state == .running {
                try await plane.adopt(info)
                report.adopted.append(name)
            } else if let created = info.createdAt, now.timeIntervalSince(created) > grace, let user = Username(containerName: name) {
                do throws(ContainariumError) {
                    try await plane.service.delete(username: user.value, force: true)
                } catch where error.code == .notFound {
                }
                plane.inventory.remove(name)
                report.removedOrphans.append(name)
            }
        }
        // 4. Creates this control plane handed to another node and lost track of because it
        //    died half-way: the node finished or rolled back on its own; make the record and
        //    the operation agree with it. A node that does not answer is asked again later.
        if let cluster = plane.cluster {
            for record in try await store.containers() where record.node != plane.node && record.phase == .creating {
                guard cluster.member(record.node) != nil, let opID = record.operationID, !plane.isRunningHere(opID),
                      let op = try await store.operation(opID), op.daemon != plane.daemonID, op.daemon.hasPrefix(plane.node + "/") else { continue }
                let view: ContainerView
                do throws(ContainariumError) {
                    view = try await plane.member(record.node).view(try Username(record.username))
                } catch where error.code == .notFound {
                    try await store.deleteContainer(record.username)
                    if op.state == .running {
                        _ = try await store.finishOperation(op.id, state: .failed, errorCode: ContainariumError.Code.unavailable.rawValue,
                                                            errorMessage: "interrupted: the control plane stopped (\(op.daemon)); \(record.node) rolled the create back",
                                                            message: "interrupted")
                    }
                    report.settledRemote.append(record.username)
                    continue
                } catch {
                    continue
                }
                if view.state == "CONTAINER_STATE_CREATING" { continue }  // the node is still at it
                try await store.setPhase(record.username, .ready)
                if op.state == .running {
                    let json = (try? WireJSON.encode(view)).map { String(decoding: $0, as: UTF8.self) }
                    _ = try await store.finishOperation(op.id, state: .succeeded, result: json,
                                                        message: "created \(record.username)-container on \(record.node) (settled after the control plane restarted)")
                }
                report.settledRemote.append(record.username)
            }
        }

        if !report.isEmpty { plane.logger.notice("reconciled: \(report)") }
        return report
    }

    /// Reconcile every `interval` until cancelled.
    public func run(interval: Duration) async {
        while !Task.isCancelled {
            let started = Date()
            do {
                let report = try await reconcileOnce()
                plane.platformMetrics.reconciled(ok: true, duration: Date().timeIntervalSince(started), report: report)
            } catch {
                plane.platformMetrics.reconciled(ok: false, duration: Date().timeIntervalSince(started), report: nil)
                plane.logger.warning("reconcile failed: \(error)")
            }
            try? await Task.sleep(for: interval)
        }
    }
}
