import ContainariumCore
import Foundation
public import PluginABI
import PluginKit
import ScannerKit

// The C ABI surface of the trivy plugin: scanner/1 over Trivy (secrets, vulnerabilities,
// misconfigurations), run offline.

let pluginID = "trivy"
let pluginVersion = "0.1.0"

final class TrivyPlugin: ServedPlugin {
    let label = "trivy-scan"
    let host: HostServices
    // Each scan is a trivy process (CPU and memory heavy): bounded well below PluginKit's default.
    let operations = OperationRegistry(maxRunning: 16)
    let engine: TrivyEngine
    let methods: [String: [String: PluginMethod]]

    init(engine e: TrivyEngine, host: HostServices) {
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
    PluginTables.initialize(host, config, length, out, err) { (host, data) throws(ContainariumError) -> TrivyPlugin in
        let config = try ScannerConfig.decode(TrivyEngine.Config.self, from: data, plugin: pluginID, allowed: TrivyEngine.Config.keys)
        let engine = try TrivyEngine(config: config, host: host)
        host.log(.info, "trivy \(pluginVersion) ready (\(engine.binary ?? "trivy not installed"), cache \(engine.cacheDir), "
                 + "scanners \(engine.scanners.joined(separator: ",")); roots \(engine.roots.prefixes.joined(separator: ", ")))")
        if engine.scanners.contains("vuln") && !engine.hasVulnerabilityDatabase {
            host.log(.warning, "trivy: \(engine.missingDatabaseDetail)")
        }
        return TrivyPlugin(engine: engine, host: host)
    }
}

@_cdecl("containarium_plugin_entry")
public func containarium_plugin_entry(_ major: UInt32, _ minor: UInt32) -> UnsafePointer<ctm_plugin>? {
    guard major == CTM_ABI_MAJOR else { return nil }
    return pluginTable
}
