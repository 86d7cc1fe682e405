import ContainariumCore
import Foundation
import Logging
import PluginHost
import TestSupport
import Testing

/// The third-party plugin written in plain C (Plugins/ExampleScanner), built here with its own
/// Makefile and the system C compiler, loaded by the real host and used for real.
@Suite("C plugin: example-secrets (scanner/1)")
struct CPluginTests {
    static func build(into dir: URL) throws -> URL {
        let out = dir.appendingPathComponent("example-secrets")
        let r = try Run.run(
            "/usr/bin/make",
            ["-s", "-C", TestEnv.repoRoot.appendingPathComponent("Plugins/ExampleScanner").path, "OUT=\(out.path)", "\(out.path)/libexample_secrets.so"])
        guard r.status == 0 else { throw TestFailure("make failed: \(r.output)") }
        return out
    }

    func load(root: URL, plugins: URL, isolation: String = "in-process") throws -> PluginRecord {
        let settings = PluginSettings(
            plugins: ["example-secrets": .init(enabled: true, config: .object(["root": .string(root.path)]), isolation: isolation)])
        let records = PluginLoader(
            searchPaths: [plugins], settings: settings, node: "n", logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }),
            events: EventBus(), serverExecutable: URL(fileURLWithPath: TestEnv.cliPath)
        ).loadAll()
        return try #require(records.first { $0.id == "example-secrets" })
    }

    @Test("finds planted secrets, ignores clean files and symlinks out of the root", arguments: ["in-process", "process"])
    func scansForReal(isolation: String) async throws {
        let work = try TestEnv.tempDir("cplugin")
        defer { TestEnv.cleanup(work) }
        let plugins = work.appendingPathComponent("plugins")
        _ = try Self.build(into: plugins)
        let root = work.appendingPathComponent("root")
        let project = root.appendingPathComponent("project/config")
        try FileManager.default.createDirectory(at: project, withIntermediateDirectories: true)
        // A real private key, made by ssh-keygen.
        let key = try KeyPair.generate(in: project, name: "deploy_key")
        try Data("aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n".utf8).write(to: project.appendingPathComponent("credentials"))
        try Data("AKIA is a prefix but AKIAshort is no key\nhello\n".utf8).write(to: root.appendingPathComponent("notes.txt"))
        let outside = work.appendingPathComponent("outside")
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        try Data("-----BEGIN OPENSSH PRIVATE KEY-----\n".utf8).write(to: outside.appendingPathComponent("secret"))
        try FileManager.default.createSymbolicLink(at: root.appendingPathComponent("link"), withDestinationURL: outside)

        let record = try load(root: root, plugins: plugins, isolation: isolation)
        #expect(record.state == .ready)
        #expect(record.plugin?.isolation == isolation)
        #expect(record.manifest?.version == "1.0.0")
        let scanner = try #require(record.plugin.flatMap(ScannerClient.init))
        let report = try await scanner.scan(.object(["path": .string(root.path)]))
        #expect(report["clean"] == .bool(false))
        #expect(try SchemaCheck.violations(of: WireJSON.encode(report), file: "scanner-1.schema.json", definition: "ScanReport") == nil)
        guard case .array(let findings)? = report["findings"] else { throw TestFailure("no findings array: \(report)") }
        let pairs = Set(findings.compactMap { f -> String? in
            guard let p = f["path"]?.stringValue, let rule = f["rule"]?.stringValue else { return nil }
            return "\(URL(fileURLWithPath: p).lastPathComponent):\(rule)"
        })
        #expect(pairs == ["deploy_key:private-key", "credentials:aws-access-key-id"])
        // Paths as seen inside the scanned tree, not the host's.
        let paths = findings.compactMap { $0["path"]?.stringValue }
        #expect(!paths.isEmpty && paths.allSatisfy { $0.hasPrefix("/") && !$0.hasPrefix(root.path) })
        #expect(key.privateKey.path.hasPrefix(root.path))

        let health = await record.plugin?.health()
        #expect(health?.status == "ok")
    }

    @Test("paths outside the configured root are refused; bad roots fail initialize")
    func confinement() async throws {
        let work = try TestEnv.tempDir("cplugin")
        defer { TestEnv.cleanup(work) }
        let plugins = work.appendingPathComponent("plugins")
        _ = try Self.build(into: plugins)
        let root = work.appendingPathComponent("root")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let scanner = try #require(try load(root: root, plugins: plugins).plugin.flatMap(ScannerClient.init))
        await #expect(throws: ContainariumError.self) { try await scanner.scan(.object(["path": .string("/etc")])) }
        do {
            _ = try await scanner.scan(.object(["path": .string(root.path + "/../..")]))
            Issue.record("escaping the root with .. must be refused")
        } catch {
            #expect(error.code == .permissionDenied)
        }
        do {
            _ = try await scanner.scan(.object(["nopath": .number(1)]))
            Issue.record("a request without path must be refused")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("\"path\""))
        }
        let broken = try load(root: work.appendingPathComponent("does-not-exist"), plugins: plugins)
        guard case .failed(let why) = broken.state else { throw TestFailure("expected failure, got \(broken.state)") }
        #expect(why.contains("initialization failed: scan root"))
        #expect(why.contains("No such file or directory"))
    }
}
