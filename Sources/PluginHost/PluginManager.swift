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

    public func scanners() -> [ScannerClient] { ready.compactMap(ScannerClient.init) }
    public func gpuProviders() -> [GPUDevicesClient] { ready.compactMap(GPUDevicesClient.init) }
}
