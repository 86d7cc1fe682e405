import ContainariumCore
import Foundation
public import PluginABI
import PluginKit
import ScannerKit

// The C ABI surface of the clamav plugin: scanner/1 over ClamAV (clamd, else clamscan).

let pluginID = "clamav"
let pluginVersion = "0.1.0"

final class ClamAVPlugin: ServedPlugin {
    let label = "clamav-scan"
    let host: HostServices
    // A scan holds a thread, `parallel` clamd sessions and a descriptor per queued file:
    // bounded well below PluginKit's default.
    let operations = OperationRegistry(maxRunning: 32)
    let engine: ClamAVEngine
    let methods: [String: [String: PluginMethod]]

    init(engine e: ClamAVEngine, host: HostServices) {
        self.engine = e
        self.host = host
        methods = [
            CTM_EXT_SCANNER_V1: [
                "scan": .run { (r: ScanRequest, ctx) throws(ContainariumError) in try e.scan(r, ctx) }
            ]
        ]
    }

    func health() -> HealthReport { engine.health() }
}

nonisolated(unsafe) private let pluginTable = PluginTables.plugin(id: pluginID, version: pluginVersion) { host, config, length, out, err in
    PluginTables.initialize(host, config, length, out, err) { (host, data) throws(ContainariumError) -> ClamAVPlugin in
        let config = try ScannerConfig.decode(ClamAVEngine.Config.self, from: data, plugin: pluginID, allowed: ClamAVEngine.Config.keys)
        let engine = try ClamAVEngine(config: config, host: host)
        host.log(.info, "clamav \(pluginVersion) ready (clamd \(engine.clamdSocket), fallback \(engine.clamscan) with \(engine.databaseDirectory); "
                 + "roots \(engine.roots.prefixes.joined(separator: ", ")); \(engine.parallel) clamd sessions per scan)")
        return ClamAVPlugin(engine: engine, host: host)
    }
}

@_cdecl("containarium_plugin_entry")
public func containarium_plugin_entry(_ major: UInt32, _ minor: UInt32) -> UnsafePointer<ctm_plugin>? {
    guard major == CTM_ABI_MAJOR else { return nil }
    return pluginTable
}
