public import ContainariumCore
import Foundation

/// The loaded set of plugins on this node.
public final class PluginManager: Sendable {
    public let records: [PluginRecord]
    public let events: EventBus

    public init(loader: PluginLoader) {
        self.records = loader.loadAll()
        self.events = loader.events
    }

    public var ready: [any PluginEndpoint] { records.compactMap { $0.state == .ready ? $0.plugin : nil } }

    /// The instances backend to use: the named one, or the first ready plugin providing instances/1.
    public func instances(backend: String? = nil) throws(ContainariumError) -> InstancesClient {
        if let backend {
            guard let record = records.first(where: { $0.id == backend }) else {
                throw .notFound("no plugin with id '\(backend)' was found in the plugin paths")
            }
            guard let plugin = record.plugin, record.state == .ready else {
                throw ContainariumError(.unavailable, "plugin \(backend) is not ready: \(record.state)")
            }
            guard let client = InstancesClient(plugin) else {
                throw ContainariumError(.unsupported, "plugin \(backend) does not provide instances/1")
            }
            return client
        }
        for plugin in ready {
            if let client = InstancesClient(plugin) { return client }
        }
        let why = records.isEmpty
            ? "no plugins were found (set pluginPaths in the config or CONTAINARIUM_PLUGIN_PATH)"
            : records.map { "\($0.id): \($0.state)" }.joined(separator: "; ")
        throw ContainariumError(.unavailable, "no instance backend is ready (\(why))")
    }

    /// Every ready instance backend (instances/1), in discovery order.
    public var instanceBackends: [InstancesClient] { ready.compactMap(InstancesClient.init) }

    /// What each ready instance backend serves, from its manifest, in discovery order.
    public var offers: [BackendOffer] { instanceBackends.map { BackendOffer($0.plugin.manifest) } }

    /// The instance backend called `id`, when it is ready.
    public func instances(id: String) -> InstancesClient? {
        instanceBackends.first { $0.backendID == id }
    }

    /// The backend for a new environment of `kind` (nil: any) and OS family `os` (nil: any):
    /// see `BackendOffer.choose`.
    public func instances(kind: String?, os: String?, preferred: String?) throws(ContainariumError) -> InstancesClient {
        let backends = instanceBackends
        if backends.isEmpty { _ = try instances(backend: preferred) }  // says why none is ready
        let chosen = try BackendOffer.choose(backends.map { BackendOffer($0.plugin.manifest) }, kind: kind, os: os, preferred: preferred)
        guard let client = backends.first(where: { $0.backendID == chosen.id }) else { throw .internal("backend \(chosen.id) vanished") }
        return client
    }

    public func scanners() -> [ScannerClient] { ready.compactMap(ScannerClient.init) }
    public func lifecycles() -> [NodeLifecycleClient] { ready.compactMap(NodeLifecycleClient.init) }
    public func gpuProviders() -> [GPUDevicesClient] { ready.compactMap(GPUDevicesClient.init) }
}

/// An instance backend as placement sees it: its id and what its manifest says it serves.
public struct BackendOffer: Sendable, Equatable, Codable {
    public var id: String
    public var kinds: [String]
    public var osTypes: [String]

    public init(id: String, kinds: [String], osTypes: [String]) {
        self.id = id
        self.kinds = kinds
        self.osTypes = osTypes
    }

    public init(_ m: PluginManifest) {
        self.init(id: m.id, kinds: m.kinds ?? [], osTypes: m.osTypes ?? [])
    }

    public var summary: String { "\(id) (kinds \(kinds.joined(separator: ",")); OS \(osTypes.joined(separator: ",")))" }

    /// The backend for a new environment: among those serving `kind` (nil: any) and OS family
    /// `os` (nil: any), the `preferred` one (the config's `backend`) when it qualifies, else the
    /// one that lists `os` earliest in its osTypes (its primary OS first), then discovery order.
    public static func choose(_ offers: [BackendOffer], kind: String?, os: String?, preferred: String?) throws(ContainariumError) -> BackendOffer {
        let fit = offers.filter { o in (kind.map(o.kinds.contains) ?? true) && (os.map(o.osTypes.contains) ?? true) }
        if let preferred, let pinned = fit.first(where: { $0.id == preferred }) { return pinned }
        let ranked = fit.enumerated().sorted { a, b in
            let ra = os.flatMap(a.element.osTypes.firstIndex(of:)) ?? 0, rb = os.flatMap(b.element.osTypes.firstIndex(of:)) ?? 0
            return ra != rb ? ra < rb : a.offset < b.offset
        }
        guard let best = ranked.first?.element else {
            let wanted = [kind.map { "kind \($0)" }, os.map { "OS \($0)" }].compactMap { $0 }.joined(separator: " and ")
            let have = offers.isEmpty ? "none is ready" : "ready: " + offers.map(\.summary).joined(separator: "; ")
            throw .invalid("no instance backend on this node serves \(wanted.isEmpty ? "environments" : wanted) (\(have))")
        }
        return best
    }
}
