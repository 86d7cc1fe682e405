import ContainariumCore
import Foundation
public import PluginABI
import PluginKit

// The C ABI surface of the gce-spot plugin: node.lifecycle/1 over the Compute Engine API and
// the metadata server. PluginKit builds the C tables from the methods listed here.

let pluginID = "gce-spot"
let pluginVersion = "0.1.0"

final class GCESpotPlugin: ServedPlugin {
    let label = "gce-spot-op"
    let host: HostServices
    // A start or stop holds a thread while Google works (up to operationTimeoutSeconds).
    let operations = OperationRegistry(maxRunning: 64)
    let backend: GCEBackend
    let methods: [String: [String: PluginMethod]]

    init(backend b: GCEBackend, host: HostServices) {
        self.backend = b
        self.host = host
        methods = [
            CTM_EXT_NODE_LIFECYCLE_V1: [
                "status": .run { (r: NodeRef, ctx) throws(ContainariumError) in try b.status(r.node, cancelled: { ctx.isCancelled }) },
                "start": .run { (r: NodeRef, ctx) throws(ContainariumError) in try b.change("start", r.node, ctx) },
                "stop": .run { (r: NodeRef, ctx) throws(ContainariumError) in try b.change("stop", r.node, ctx) },
            ]
        ]
    }

    func health() -> HealthReport { backend.health() }

    /// At shutdown: end the metadata watch (its long-polls are abandoned within ~100 ms).
    func stop() { backend.watcher?.stop() }
}

/// Build the plugin from its configuration; starts the metadata watch when `watch` is on.
func makePlugin(host: HostServices, config data: Data) throws(ContainariumError) -> GCESpotPlugin {
    let settings = try Settings.parse(data, environment: ProcessInfo.processInfo.environment)
    let http = HTTPClient()
    let reach = Reachability()
    let metadata = MetadataClient(host: settings.metadataHost, http: http, requestTimeout: settings.requestTimeout, reach: reach)
    let source: TokenProvider.Source
    if let file = settings.credentialsFile {
        let key = try ServiceAccountKey.load(path: file)
        if key.tokenURI.scheme?.lowercased() == "http" {
            host.log(.warning, "gce-spot: the key's token_uri \(key.tokenURI.absoluteString) is plain http: the signed assertion crosses unencrypted")
        }
        source = .serviceAccount(key)
    } else {
        source = .metadata(metadata)
    }
    let tokens = TokenProvider(source: source, http: http, requestTimeout: settings.requestTimeout, reach: reach)
    let compute = ComputeClient(settings: settings, http: http, tokens: tokens, reach: reach)
    if settings.computeBaseURL.lowercased().hasPrefix("http:") {
        host.log(.warning, "gce-spot: computeBaseURL \(settings.computeBaseURL) is plain http: bearer tokens cross unencrypted")
    }
    let watcher = settings.watch ? MetadataWatcher(metadata: metadata, host: host) : nil
    let backend = GCEBackend(settings: settings, compute: compute, tokens: tokens, watcher: watcher, host: host, reach: reach)
    watcher?.start()
    host.log(
        .info,
        "gce-spot \(pluginVersion) ready (project \(settings.project), zone \(settings.zone), instances \(settings.instances.joined(separator: ", ")); "
            + "compute API \(settings.computeBaseURL); tokens from \(tokens.description); metadata server \(settings.metadataHost), "
            + "watch \(settings.watch ? "on" : "off"))")
    return GCESpotPlugin(backend: backend, host: host)
}

nonisolated(unsafe) private let pluginTable = PluginTables.plugin(id: pluginID, version: pluginVersion) { host, config, length, out, err in
    PluginTables.initialize(host, config, length, out, err) { (host, data) throws(ContainariumError) -> GCESpotPlugin in
        try makePlugin(host: host, config: data)
    }
}

/// The one exported symbol. Returns the table for ABI major 1, NULL for anything else.
@_cdecl("containarium_plugin_entry")
public func containarium_plugin_entry(_ major: UInt32, _ minor: UInt32) -> UnsafePointer<ctm_plugin>? {
    guard major == CTM_ABI_MAJOR else { return nil }
    return pluginTable
}
