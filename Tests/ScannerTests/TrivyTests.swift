import ContainariumCore
import Foundation
import PluginHost
import TestSupport
import Testing

/// The trivy plugin (Plugins/Trivy) loaded by the real host, running the real trivy offline
/// over trees that look like root filesystems. Key material is made at test time (ssh-keygen,
/// random AWS-shaped keys); nothing that looks like a real secret is committed.
@Suite("Scanner plugin: trivy (scanner/1)", .serialized, ScannerEnv.needsTrivy)
struct TrivyTests {
    struct Bed {
        let work: URL
        let plugins: URL
        let cache: URL
        let roots: URL
        let secrets: URL
        let clean: URL
        let outside: URL

        init() throws {
            work = try TestEnv.tempDir("trivy")
            plugins = work.appendingPathComponent("plugins")
            _ = try Scanners.pluginDir(in: plugins, id: "trivy", source: "Trivy", library: "libTrivyScanner.so")
            // A cache of the test's own: no vulnerability database in it, whatever the machine has.
            cache = work.appendingPathComponent("cache")
            roots = work.appendingPathComponent("pools")
            secrets = roots.appendingPathComponent("containers/alice/rootfs")
            clean = roots.appendingPathComponent("containers/bob/rootfs")
            outside = work.appendingPathComponent("outside")

            let ssh = secrets.appendingPathComponent("home/alice/.ssh")
            try FileManager.default.createDirectory(at: ssh, withIntermediateDirectories: true)
            // A PEM private key made now by ssh-keygen.
            let keygen = try Run.run("/usr/bin/ssh-keygen", ["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-C", "test@containarium", "-f", ssh.appendingPathComponent("id_rsa").path])
            guard keygen.status == 0 else { throw TestFailure("ssh-keygen failed: \(keygen.output)") }
            // An AWS-shaped access key id and secret, random each run.
            try ScannerEnv.write(Data(Self.awsCredentials().utf8), to: secrets.appendingPathComponent("srv/app/.aws/credentials"))
            try ScannerEnv.write(Data("alice-box\n".utf8), to: secrets.appendingPathComponent("etc/hostname"))
            // Secrets outside the roots, linked from inside: not followed.
            try ScannerEnv.write(Data(Self.awsCredentials().utf8), to: outside.appendingPathComponent("credentials"))
            try FileManager.default.createSymbolicLink(at: secrets.appendingPathComponent("mnt"), withDestinationURL: outside)
            try FileManager.default.createSymbolicLink(
                at: secrets.appendingPathComponent("root-credentials"), withDestinationURL: outside.appendingPathComponent("credentials"))

            try ScannerEnv.write(Data("bob-box\n".utf8), to: clean.appendingPathComponent("etc/hostname"))
            try ScannerEnv.write(Data("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n".utf8), to: clean.appendingPathComponent("usr/lib/os-release"))
            try ScannerEnv.write(Data("print('hello')\n".utf8), to: clean.appendingPathComponent("home/bob/hello.py"))
        }

        static func awsCredentials() -> String {
            let upper = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
            let any = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
            let id = "AKIA" + String((0..<16).map { _ in upper.randomElement() ?? "A" })
            let secret = String((0..<40).map { _ in any.randomElement() ?? "a" })
            return "[default]\naws_access_key_id = \(id)\naws_secret_access_key = \(secret)\n"
        }

        func config(_ extra: [String: JSONValue] = [:]) -> JSONValue {
            var c: [String: JSONValue] = [
                "trivy": .string(Scanners.trivy), "cacheDir": .string(cache.path), "roots": .array([.string(roots.path)]),
                "timeoutSeconds": .number(900),
            ]
            for (k, v) in extra { c[k] = v }
            return .object(c)
        }

        func cleanup() { TestEnv.cleanup(work) }
    }

    @Test("offline: finds the private key and the AWS key pair by in-root path; the missing vulnerability database is said, never clean")
    func secretsOffline() async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let record = try ScannerEnv.load("trivy", plugins: bed.plugins, config: bed.config())
        #expect(record.state == .ready, "\(record.state)")
        let scanner = try #require(record.plugin.flatMap(ScannerClient.init))
        let health = await record.plugin?.health()
        #expect(health?.status == "degraded" && health?.detail?.contains("vulnerability database") == true, "\(health?.detail ?? "")")

        let report = try await ScannerEnv.scan(scanner, bed.secrets.path)
        let found = Set(report.findings.map { "\($0.path) \($0.rule)" })
        #expect(found == [
            "/home/alice/.ssh/id_rsa private-key",
            "/srv/app/.aws/credentials aws-access-key-id",
            "/srv/app/.aws/credentials aws-secret-access-key",
        ], "\(found)")
        #expect(report.findings.allSatisfy { $0.category == "secret" && $0.severity != nil && ($0.line ?? 0) >= 1 })
        #expect(report.clean == false)
        #expect(report.scanner == "trivy")
        #expect(report.scannerVersion?.hasPrefix("trivy 0.") == true, "\(report.scannerVersion ?? "-")")
        let vuln = report.databases?["vulnerabilities"]
        #expect(vuln?.status == "missing")
        #expect(vuln?.detail?.contains("trivy image --download-db-only --cache-dir \(bed.cache.path)") == true, "\(vuln?.detail ?? "-")")
        #expect(report.databases?["secrets"]?.status == "ok")
        #expect(report.notes?.contains { $0.contains("vulnerabilities were not scanned") } == true)
        // No secret text reaches the report.
        let text = String(decoding: try WireJSON.encode(report), as: UTF8.self)
        #expect(!text.contains("AKIA") && !text.contains("BEGIN RSA"))
        print("trivy secrets: \(report.findings.count) findings, \(report.durationMs ?? -1) ms")

        // A tree without secrets: no findings, and still not clean (vulnerabilities unchecked).
        let clean = try await ScannerEnv.scan(scanner, bed.clean.path)
        #expect(clean.findings.isEmpty, "\(clean.findings)")
        #expect(clean.clean == false)
        #expect(clean.databases?["vulnerabilities"]?.status == "missing")
        print("trivy clean tree: \(clean.durationMs ?? -1) ms")

        // Only the secret scanner configured: every check ran with its rules, so clean is true.
        let secretOnly = try ScannerEnv.load("trivy", plugins: bed.plugins, config: bed.config(["scanners": .array([.string("secret")])]))
        let only = try await ScannerEnv.scan(try #require(secretOnly.plugin.flatMap(ScannerClient.init)), bed.clean.path)
        #expect(only.clean && only.findings.isEmpty)
        #expect(only.databases?["vulnerabilities"] == nil)
        #expect(await secretOnly.plugin?.health().status == "ok")
    }

    @Test("a vulnerability database trivy cannot use: the other checks still run, the report says it is missing")
    func unusableDatabase() async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        // A file where the database belongs that is no database (no metadata either): trivy refuses it.
        try ScannerEnv.write(Data("not a database\n".utf8), to: bed.cache.appendingPathComponent("db/trivy.db"))
        let record = try ScannerEnv.load("trivy", plugins: bed.plugins, config: bed.config())
        #expect(await record.plugin?.health().status == "ok")
        let report = try await ScannerEnv.scan(try #require(record.plugin.flatMap(ScannerClient.init)), bed.secrets.path)
        #expect(report.findings.contains { $0.path == "/home/alice/.ssh/id_rsa" && $0.rule == "private-key" })
        let vuln = report.databases?["vulnerabilities"]
        #expect(vuln?.status == "missing")
        #expect(vuln?.detail?.contains("could not use its vulnerability database") == true, "\(vuln?.detail ?? "-")")
        #expect(report.clean == false)
    }

    @Test("cancellation ends the scan and its trivy process group")
    func cancellation() async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        // Enough files that trivy is still at work when the cancel arrives.
        for i in 0..<4000 {
            try ScannerEnv.write(Data("line \(i)\nexport TOKEN_\(i)=value\n".utf8), to: bed.clean.appendingPathComponent("srv/data/d\(i % 40)/f\(i).sh"))
        }
        let record = try ScannerEnv.load("trivy", plugins: bed.plugins, config: bed.config())
        let scanner = try #require(record.plugin.flatMap(ScannerClient.init))
        let task = Task { try await scanner.scan(.object(["path": .string(bed.clean.path)])) }
        // Until a trivy of this test runs (its argv names the test's own cache directory).
        let deadline = Date().addingTimeInterval(60)
        while Self.trivyProcesses(cache: bed.cache.path).isEmpty && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!Self.trivyProcesses(cache: bed.cache.path).isEmpty, "no trivy process was seen")
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("a cancelled scan succeeded")
        } catch let error as ContainariumError {
            #expect(error.code == .cancelled, "\(error)")
        }
        #expect(Self.trivyProcesses(cache: bed.cache.path).isEmpty, "a trivy process outlived the cancelled scan")
    }

    /// Processes whose command line names `cache` (the test's own trivy runs).
    static func trivyProcesses(cache: String) -> [Int32] {
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        return pids.filter { Run.isRunning($0) && (Run.commandLine(of: $0)?.contains("rootfs") == true) && (Run.commandLine(of: $0)?.contains(cache) == true) }
    }

    @Test("misconfigurations from Trivy's built-in checks, offline")
    func misconfigurations() async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        try ScannerEnv.write(Data("FROM debian\nRUN echo hi\n".utf8), to: bed.clean.appendingPathComponent("srv/app/Dockerfile"))
        let record = try ScannerEnv.load("trivy", plugins: bed.plugins, config: bed.config(["scanners": .array([.string("misconfig")])]))
        let report = try await ScannerEnv.scan(try #require(record.plugin.flatMap(ScannerClient.init)), bed.clean.path)
        #expect(!report.findings.isEmpty)
        #expect(report.findings.allSatisfy { $0.category == "misconfiguration" && $0.path == "/srv/app/Dockerfile" }, "\(report.findings)")
        #expect(report.findings.contains { $0.rule.hasPrefix("DS") })
        #expect(report.clean == false)
    }

    @Test("paths outside the roots are refused; unknown configuration fails initialize")
    func confinementAndConfig() async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let scanner = try #require(try ScannerEnv.load("trivy", plugins: bed.plugins, config: bed.config()).plugin.flatMap(ScannerClient.init))
        for path in [bed.outside.path, "/etc", bed.roots.path + "/../outside", bed.secrets.appendingPathComponent("mnt").path] {
            do {
                _ = try await scanner.scan(.object(["path": .string(path)]))
                Issue.record("scanning \(path) outside the roots succeeded")
            } catch {
                #expect(error.code == .permissionDenied, "\(path): \(error)")
                #expect(error.message.contains(path) && error.message.contains(bed.roots.path), "\(error.message)")
            }
        }
        let cases: [(JSONValue, String)] = [
            (.object(["cachedir": .string("/x")]), "unknown key 'cachedir'"),
            (.object(["scanners": .array([.string("license")])]), "unknown scanner 'license'"),
            (.object(["timeoutSeconds": .number(0)]), "timeoutSeconds must be between"),
        ]
        for (config, message) in cases {
            let record = try ScannerEnv.load("trivy", plugins: bed.plugins, config: config)
            guard case .failed(let why) = record.state else {
                Issue.record("config \(config) was accepted")
                continue
            }
            #expect(why.contains(message), "\(why)")
        }
        // A binary that is not there: the scan says so (unavailable), it does not crash.
        let missing = try ScannerEnv.load("trivy", plugins: bed.plugins, config: bed.config(["trivy": .string(bed.work.appendingPathComponent("no-trivy").path)]))
        do {
            _ = try await #require(missing.plugin.flatMap(ScannerClient.init)).scan(.object(["path": .string(bed.clean.path)]))
            Issue.record("a scan without trivy succeeded")
        } catch let error as ContainariumError {
            #expect(error.code == .unavailable)
        }
        #expect(await missing.plugin?.health().status == "down")
    }
}
