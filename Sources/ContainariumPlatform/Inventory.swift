public import ContainariumCore
public import ContainariumService
import Foundation
public import Logging
import PluginHost
import Synchronization

/// What exists on this node, kept current by every instance backend's change stream
/// (`instances/1 watch`) plus a full listing of all backends at start, after every reconnect,
/// and from the reconciler. Reads never query a backend.
public final class Inventory: Sendable {
    private struct State {
        var instances: [String: InstanceInfo] = [:]
        var generation: UInt64 = 0
        var synced = false
        /// Backends whose change stream is connected.
        var watching: Set<String> = []
        var backends = 0
        /// Bumped by every put and remove of a name: a refresh that read the backend before a
        /// newer change (a delete of ours racing the delete's own events) must not undo it.
        var stamps: [String: UInt64] = [:]
    }
    private let state = Mutex(State())
    let service: EnvironmentService
    let events: DaemonEvents
    let logger: Logger

    public init(service: EnvironmentService, events: DaemonEvents, logger: Logger) {
        self.service = service
        self.events = events
        self.logger = logger
    }

    public var snapshot: (instances: [InstanceInfo], generation: UInt64) {
        state.withLock { s in (s.instances.values.sorted { $0.name < $1.name }, s.generation) }
    }
    public func get(_ name: String) -> InstanceInfo? { state.withLock { $0.instances[name] } }
    /// Whether every instance backend's change stream is connected.
    public var isWatching: Bool { state.withLock { $0.backends > 0 && $0.watching.count >= $0.backends } }
    public var isSynced: Bool { state.withLock { $0.synced } }

    /// Instances carry the node name the cluster knows this daemon by (the backend may only
    /// know the host's name).
    func local(_ info: InstanceInfo) -> InstanceInfo {
        var i = info
        i.node = service.config.nodeName
        return i
    }

    public func put(_ info: InstanceInfo) { put(info, ifStamp: nil) }

    private func put(_ info: InstanceInfo, ifStamp stamp: UInt64?) {
        let info = local(info)
        let changed = state.withLock { s -> Bool in
            if let stamp, s.stamps[info.name, default: 0] != stamp { return false }
            s.stamps[info.name, default: 0] &+= 1
            guard s.instances[info.name] != info else { return false }
            s.instances[info.name] = info
            s.generation &+= 1
            return true
        }
        if changed { events.publish("container.changed", username: Self.username(of: info.name), data: .container(name: info.name, node: nil, state: info.state.rawValue)) }
    }

    public func remove(_ name: String) { remove(name, ifStamp: nil) }

    private func remove(_ name: String, ifStamp stamp: UInt64?) {
        let removed = state.withLock { s -> Bool in
            if let stamp, s.stamps[name, default: 0] != stamp { return false }
            s.stamps[name, default: 0] &+= 1
            guard s.instances.removeValue(forKey: name) != nil else { return false }
            s.generation &+= 1
            return true
        }
        if removed { events.publish("container.removed", username: Self.username(of: name), data: .container(name: name, node: nil, state: nil)) }
    }

    static func username(of name: String) -> String? {
        Username(containerName: name)?.value
    }

    /// Replace the whole picture with a fresh listing from the backend.
    public func refreshAll() async throws(ContainariumError) {
        let before = state.withLock { $0.stamps }
        let list = try await service.list()
        var fresh = Dictionary(list.map { ($0.name, local($0)) }, uniquingKeysWith: { a, _ in a })
        let (gone, changed) = state.withLock { s -> ([String], [InstanceInfo]) in
            // What changed while the listing was read (our own put or remove) is newer than it.
            for (name, stamp) in s.stamps where before[name] != stamp { fresh[name] = s.instances[name] }
            let gone = s.instances.keys.filter { fresh[$0] == nil }
            let changed = fresh.values.filter { s.instances[$0.name] != $0 }
            if !gone.isEmpty || !changed.isEmpty { s.generation &+= 1 }
            s.instances = fresh
            s.synced = true
            return (gone, changed)
        }
        for name in gone { events.publish("container.removed", username: Self.username(of: name), data: .container(name: name, node: nil, state: nil)) }
        for info in changed { events.publish("container.changed", username: Self.username(of: info.name), data: .container(name: info.name, node: nil, state: info.state.rawValue)) }
    }

    /// Re-read one instance (after an event or a mutation of ours), from `backend` when the
    /// event says which one, else from the backend holding it.
    public func refresh(_ name: String, backend: String? = nil) async {
        let stamp = state.withLock { $0.stamps[name, default: 0] }
        do {
            let info: InstanceInfo
            if let backend, let client = service.plugins.instances(id: backend) {
                var i = try await client.info(InstanceRef(name: name))
                if i.backend == nil { i.backend = backend }
                info = i
            } else {
                info = try await service.instance(name)
            }
            // Only Containarium's instances belong in the inventory (the backend's listing filters
            // the same way): they carry the owner label from the moment they exist.
            if info.labels["owner"] != nil { put(info, ifStamp: stamp) } else { remove(name, ifStamp: stamp) }
        } catch where error.code == .notFound {
            remove(name, ifStamp: stamp)
        } catch {
            logger.debug("could not refresh \(name): \(error)")
        }
    }

    /// Follow the backend's change stream until cancelled, reconnecting with backoff. Each
    /// (re)connect is followed by a full listing, so nothing missed while disconnected is lost.
    public func run() async {
        let bus = service.plugins.events
        let subscription = bus.subscription(bufferSize: 8192)
        let consumer = Task {
            for await e in subscription.events {
                switch e.type {
                case "instances.watch.connected":
                    state.withLock { _ = $0.watching.insert(e.plugin) }
                    do { try await refreshAll() } catch { logger.warning("inventory resync failed: \(error)") }
                case "instance.changed":
                    guard let change = try? WireJSON.decode(InstanceChange.self, from: e.json) else { continue }
                    if change.action == "instance-deleted" { remove(change.name) } else { await refresh(change.name, backend: e.plugin) }
                default:
                    continue
                }
            }
        }
        defer {
            subscription.finish()
            consumer.cancel()
        }
        do { try await refreshAll() } catch { logger.warning("initial inventory listing failed: \(error)") }
        let backends = service.plugins.instanceBackends
        state.withLock { $0.backends = backends.count }
        if backends.isEmpty {
            // No backend is ready: say why once through the same path as before.
            // The daemon keeps serving (the task must not end before shutdown).
            do { _ = try service.plugins.instances(backend: service.config.backend) } catch { logger.warning("no change stream: \(error)") }
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
            return
        }
        await withTaskGroup(of: Void.self) { group in
            for client in backends { group.addTask { await self.follow(client) } }
        }
        state.withLock { $0.watching = [] }
    }

    /// One backend's change stream, reconnecting with backoff until cancelled.
    private func follow(_ client: InstancesClient) async {
        let id = client.backendID
        var delay: Duration = .milliseconds(250)
        while !Task.isCancelled {
            do {
                try await client.watch()
            } catch where error.code == .cancelled {
                break
            } catch where error.code == .unsupported {
                logger.notice("backend \(id) has no change stream (ABI 1.0 plugin); relying on periodic listing")
                state.withLock { _ = $0.watching.remove(id) }
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(5))
                    try? await refreshAll()
                }
                break
            } catch {
                logger.warning("backend \(id) change stream ended: \(error); reconnecting")
            }
            state.withLock { _ = $0.watching.remove(id) }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(10))
        }
        state.withLock { _ = $0.watching.remove(id) }
    }
}

/// An `instance.changed` event of an instances/1 plugin (docs/plugin-abi.md): which instance,
/// and what happened to it.
private struct InstanceChange: Decodable {
    var name: String
    var action: String?
}
