import ContainariumCore
import Foundation
import PluginKit
import ScannerKit

#if canImport(Glibc)
import Glibc
#endif

/// The trivy plugin's work: confine the request to the configured roots and run
/// `trivy rootfs` over it offline (secrets, vulnerabilities, misconfigurations), then turn its
/// JSON report into a ScanReport. Without the vulnerability database the vulnerability check is
/// left out and said so; the report is then never "clean".
final class TrivyEngine: Sendable {
    struct Config: Codable, Sendable {
        var trivy: String?
        var cacheDir: String?
        var roots: [String]?
        var scanners: [String]?
        var timeoutSeconds: Int?
        /// Secrets that belong where they are, by path inside the environment (`*` matches
        /// within one path component): not reported, only counted in a note. Default: the
        /// environment's own SSH host keys, which sshd needs.
        var allowSecretPaths: [String]?

        static let keys: Set<String> = ["trivy", "cacheDir", "roots", "scanners", "timeoutSeconds", "allowSecretPaths"]
    }

    static let defaultBinaries = ["/var/cache/containarium/trivy/bin/trivy", "/usr/local/bin/trivy"]
    static let knownScanners = ["secret", "vuln", "misconfig"]
    /// Trivy's JSON for a whole root filesystem is large (packages, findings); past this it is not read.
    static let maxOutput = 256 * 1024 * 1024

    /// nil: the first of `defaultBinaries` that exists at scan time.
    let trivy: String?
    let cacheDir: String
    let roots: ScanRoots
    let scanners: [String]
    let timeoutSeconds: Int
    let allowSecretPaths: [String]
    let host: HostServices

    static let defaultAllowSecretPaths = ["/etc/ssh/ssh_host_*_key"]

    init(config c: Config, host: HostServices) throws(ContainariumError) {
        let p = pluginID
        trivy = try c.trivy.map { (t) throws(ContainariumError) in try ScannerConfig.absolutePath(t, key: "trivy", plugin: p) }
        cacheDir = try ScannerConfig.absolutePath(c.cacheDir ?? "/var/cache/containarium/trivy/cache", key: "cacheDir", plugin: p)
        roots = try ScanRoots(c.roots, plugin: p)
        let s = c.scanners ?? Self.knownScanners
        guard !s.isEmpty else { throw .invalid("\(p) configuration: scanners must name at least one of \(Self.knownScanners.joined(separator: ", "))") }
        if let bad = s.first(where: { !Self.knownScanners.contains($0) }) {
            throw .invalid("\(p) configuration: unknown scanner '\(bad)' (known: \(Self.knownScanners.joined(separator: ", ")))")
        }
        scanners = Self.knownScanners.filter { s.contains($0) }
        timeoutSeconds = try ScannerConfig.bounded(c.timeoutSeconds ?? 1800, key: "timeoutSeconds", plugin: p, 1...(7 * 24 * 3600))
        allowSecretPaths = c.allowSecretPaths ?? Self.defaultAllowSecretPaths
        for pattern in allowSecretPaths where !pattern.hasPrefix("/") {
            throw .invalid("\(p) configuration: allowSecretPaths entries are absolute paths inside the environment ('\(pattern)')")
        }
        self.host = host
    }

    /// The binary a scan runs, or nil when none is installed.
    var binary: String? {
        if let trivy { return access(trivy, X_OK) == 0 ? trivy : nil }
        return Self.defaultBinaries.first { access($0, X_OK) == 0 }
    }

    var vulnerabilityDatabase: String { cacheDir + "/db/trivy.db" }
    var hasVulnerabilityDatabase: Bool { access(vulnerabilityDatabase, R_OK) == 0 }

    var missingDatabaseDetail: String {
        "Trivy's vulnerability database is not in \(cacheDir): vulnerabilities were not scanned (run `trivy image --download-db-only --cache-dir \(cacheDir)` where the network allows)"
    }

    // MARK: - scan

    func scan(_ request: ScanRequest, _ ctx: OperationContext) throws(ContainariumError) -> ScanReport {
        let control = ScanControl(timeoutSeconds: timeoutSeconds) { ctx.isCancelled }
        let target = try roots.open(request.path)
        guard let exe = binary else {
            let where_ = trivy.map { [$0] } ?? Self.defaultBinaries
            throw ContainariumError(.unavailable, "trivy is not installed at \(where_.joined(separator: " or ")): install it (scripts/scanners.sh) or set the plugin's `trivy`")
        }
        let env = ChildProcess.cleanEnvironment(home: cacheDir)
        do {
            try FileManager.default.createDirectory(atPath: cacheDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw ContainariumError(.failedPrecondition, "cannot create trivy's cache directory \(cacheDir): \(error.localizedDescription)")
        }

        var databases: [String: ScanDatabase] = [:]
        var notes: [String] = []
        var run = scanners
        var dbVersion: String?
        if scanners.contains("vuln") {
            if hasVulnerabilityDatabase {
                dbVersion = Self.databaseVersion(cacheDir: cacheDir)
                databases["vulnerabilities"] = ScanDatabase(
                    status: "ok", detail: "Trivy's vulnerability database in \(cacheDir)" + (dbVersion.map { " (updated \($0))" } ?? ""), version: dbVersion)
            } else {
                run.removeAll { $0 == "vuln" }
                databases["vulnerabilities"] = ScanDatabase(status: "missing", detail: missingDatabaseDetail)
                notes.append(missingDatabaseDetail)
            }
        }
        if run.contains("secret") { databases["secrets"] = ScanDatabase(status: "ok", detail: "Trivy's built-in secret rules (offline)") }
        if run.contains("misconfig") {
            databases["misconfigurations"] = ScanDatabase(status: "ok", detail: "Trivy's built-in checks bundle (offline, no update)")
        }

        let versionRun = try ChildProcess.run([exe, "--version"], environment: env, control: control, maxOutput: 64 * 1024, name: "trivy --version")
        let version = Self.parseVersion(String(decoding: versionRun.stdout, as: UTF8.self))

        var findings: [ScanFinding] = []
        if !run.isEmpty {
            var result = try runTrivy(exe, run, target, env, control)
            if result.status != 0, run.contains("vuln"), Self.databaseTrouble(result.stderr) {
                // Trivy says its database cannot be used: the checks that need none still run,
                // and the report says what was left out.
                let why = Self.lastLine(result.stderr)
                let detail = "Trivy could not use its vulnerability database in \(cacheDir) (\(why)): vulnerabilities were not scanned "
                    + "(run `trivy image --download-db-only --cache-dir \(cacheDir)` where the network allows)"
                host.log(.warning, "trivy: \(detail)")
                run.removeAll { $0 == "vuln" }
                databases["vulnerabilities"] = ScanDatabase(status: "missing", detail: detail)
                notes.append(detail)
                if !run.isEmpty { result = try runTrivy(exe, run, target, env, control) }
            }
            if !run.isEmpty {
                guard result.status == 0 else {
                    let tail = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).suffix(1500)
                    if tail.contains("context deadline exceeded") { throw control.timeoutError }
                    throw ContainariumError(.internal, "trivy failed (exit \(result.status)): \(tail.isEmpty ? "no message" : String(tail))")
                }
                findings = try TrivyReport.findings(from: result.stdout, root: target.resolved)
            }
        }
        let patterns = allowSecretPaths
        let allowed = findings.filter { f in f.category == "secret" && patterns.contains { Self.matches($0, f.path) } }
        if !allowed.isEmpty {
            findings.removeAll { f in allowed.contains(f) }
            notes.append("\(allowed.count) secret findings in allowed paths not reported (allowSecretPaths: \(allowSecretPaths.joined(separator: ", ")))")
        }
        findings.sort { ($0.path, $0.rule, $0.line ?? 0) < ($1.path, $1.rule, $1.line ?? 0) }
        let complete = !databases.values.contains { $0.status != "ok" }
        let report = ScanReport(
            scanner: pluginID, target: request.path, clean: findings.isEmpty && complete, findings: findings,
            scannerVersion: version.map { "trivy \($0)" }, databases: databases, notes: notes.isEmpty ? nil : notes,
            durationMs: control.elapsedMilliseconds)
        host.log(.info, "trivy: scanned \(target.resolved) (\(run.joined(separator: ","))): \(findings.count) findings, \(report.durationMs ?? 0) ms"
                 + (complete ? "" : "; vulnerability database missing"))
        return report
    }

    /// Whether `path` matches `pattern`, where `*` stands for any run of characters other than "/".
    static func matches(_ pattern: String, _ path: String) -> Bool {
        fnmatch(pattern, path, FNM_PATHNAME) == 0
    }

    private func runTrivy(_ exe: String, _ run: [String], _ target: ScanTarget, _ env: [String], _ control: ScanControl) throws(ContainariumError) -> ChildProcess.Result {
        let argv = ChildProcess.lowPriority([
            exe, "rootfs", "--format", "json", "--quiet", "--offline-scan", "--skip-db-update", "--skip-java-db-update",
            "--skip-check-update", "--skip-version-check", "--disable-telemetry", "--list-all-pkgs=false",
            // Nothing from the working directory: no trivy.yaml, .trivyignore or trivy-secret.yaml.
            "--config", "", "--ignorefile", "", "--secret-config", "",
            "--cache-dir", cacheDir, "--scanners", run.joined(separator: ","),
            // Trivy's own timeout a little before ours, so it can say so itself.
            "--timeout", "\(max(1, Int(control.remainingSeconds) - 2))s", "--", target.resolved,
        ])
        return try ChildProcess.run(argv, environment: env, control: control, maxOutput: Self.maxOutput, name: "trivy")
    }

    /// Whether trivy's error output is about its databases (missing, unreadable, too old).
    static func databaseTrouble(_ stderr: String) -> Bool {
        ["DB error", "database error", "--skip-db-update cannot be specified", "--skip-java-db-update cannot be specified", "java DB", "DB schema"]
            .contains { stderr.contains($0) }
    }

    static func lastLine(_ text: String) -> String {
        let line = text.split(separator: "\n").last.map(String.init) ?? ""
        return String(line.trimmingCharacters(in: .whitespaces).suffix(300))
    }

    /// "Version: 0.76.0" (first line of `trivy --version`) → "0.76.0".
    static func parseVersion(_ text: String) -> String? {
        for line in text.split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("Version:") { return t.dropFirst("Version:".count).trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }

    /// The database's UpdatedAt from CACHE/db/metadata.json, when it is there.
    static func databaseVersion(cacheDir: String) -> String? {
        guard let data = FileManager.default.contents(atPath: cacheDir + "/db/metadata.json"),
              let meta = try? WireJSON.decode(JSONValue.self, from: data) else { return nil }
        return meta["UpdatedAt"]?.stringValue
    }

    // MARK: - health

    func health() -> HealthReport {
        guard let exe = binary else {
            return HealthReport(status: "down", detail: "trivy is not installed at \((trivy.map { [$0] } ?? Self.defaultBinaries).joined(separator: " or "))")
        }
        if scanners.contains("vuln") && !hasVulnerabilityDatabase {
            return HealthReport(status: "degraded", detail: "\(exe): \(missingDatabaseDetail)")
        }
        return HealthReport(status: "ok", detail: "\(exe) (\(scanners.joined(separator: ", ")))")
    }
}
