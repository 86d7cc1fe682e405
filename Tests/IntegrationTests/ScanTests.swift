import ContainariumCore
import Foundation
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Security scans through the daemon: real Incus containers, the real clamd (with a signature
/// database of the test's own) and the real Trivy, the scanner plugins reading each
/// container's root filesystem from the host side (IncusLXC's filesystem/1).
@Suite("Security scans: ClamAV and Trivy through the daemon, on real Incus", .needsIncus, .serialized,
       .enabled(if: Scanners.hasClamAV && Scanners.hasTrivy, "ClamAV or Trivy is not installed: run scripts/scanners.sh"))
struct ScanTests {
    /// A sandbox whose node runs incus-lxc, clamav (against `clamd`) and trivy.
    static func sandbox(clamd: ClamdFixture, database: URL, clamavIsolation: String? = nil, extraConfig: [String: Any] = [:]) throws -> IncusEnv.Sandbox {
        let box = try IncusEnv.Sandbox(ownProject: true, extraConfig: extraConfig)
        _ = try Scanners.pluginDir(in: box.plugins, id: "clamav", source: "ClamAV", library: "libClamAVScanner.so")
        _ = try Scanners.pluginDir(in: box.plugins, id: "trivy", source: "Trivy", library: "libTrivyScanner.so")
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: box.config)) as? [String: Any] ?? [:]
        var plugins = cfg["plugins"] as? [String: Any] ?? [:]
        var clamav: [String: Any] = ["enabled": true, "config": ["clamdSocket": clamd.socket, "databaseDirectory": database.path,
                                                                 "roots": ["/var/lib/incus/storage-pools"]]]
        if let clamavIsolation { clamav["isolation"] = clamavIsolation }
        plugins["clamav"] = clamav
        plugins["trivy"] = ["enabled": true, "config": ["trivy": Scanners.trivy, "cacheDir": box.dir.appendingPathComponent("trivy-cache").path,
                                                        "roots": ["/var/lib/incus/storage-pools"]]]
        cfg["plugins"] = plugins
        try JSONSerialization.data(withJSONObject: cfg).write(to: box.config)
        return box
    }

    /// A signature database of the test's own: the planted file and the EICAR test file.
    static func database(in dir: URL, planted: Data) throws -> URL {
        try Scanners.hashDatabase(in: dir.appendingPathComponent("clamav-db"), [(planted, "Containarium.Test.Planted"), (Scanners.eicar, "Eicar-Test-Signature")])
    }

    /// Put `data` at `path` inside the container (the test bed's own setup, as root).
    static func plant(_ box: IncusEnv.Sandbox, _ container: String, _ path: String, _ data: Data) throws {
        let local = box.dir.appendingPathComponent("plant-\(UUID().uuidString)")
        try data.write(to: local)
        let r = try box.incus(["file", "push", "--create-dirs", local.path, "\(container)\(path)"])
        guard r.status == 0 else { throw TestFailure("incus file push failed: \(r.output)") }
    }

    static func reports(_ d: DaemonProcess, _ scanner: String, token: String, user: String? = nil) throws -> [JSONValue] {
        let q = user.map { "?username=\($0)" } ?? ""
        return try HTTP.call("GET", d.base + "/v1/security/\(scanner)-reports\(q)", token: token).json?["reports"]?.items ?? []
    }

    @Test("ClamAV and Trivy find what was planted in a running container, from the host side; a clean one is clean (ClamAV) or says its vulnerability database is missing (Trivy); users see and scan only their own; summary, CSV and the CLI agree; the schedule scans by itself")
    func findings() throws {
        let box0 = try TestEnv.tempDir("scan")
        defer { TestEnv.cleanup(box0) }
        let planted = Data("containarium planted test file \(UUID().uuidString)\n".utf8)
        let db = try Self.database(in: box0, planted: planted)
        let clamd = try ClamdFixture(in: box0.appendingPathComponent("clamd"), database: db)
        defer { clamd.stop() }
        let box = try Self.sandbox(clamd: clamd, database: db, extraConfig: [
            "security": ["schedule": "every 15s", "jitterMinutes": 0, "scanners": ["clamav"]],
        ])
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600"])
        try d.start()
        defer { d.stop() }
        let sfx = TestEnv.suffix()
        let alice = "sa\(sfx)", bob = "sb\(sfx)"
        defer { [alice, bob].forEach { box.forceDelete("\($0)-container") } }
        let admin = try d.token("admin", roles: "admin"), aliceT = try d.token(alice), bobT = try d.token(bob)
        for (u, t) in [(alice, aliceT), (bob, bobT)] {
            let created = try HTTP.call("POST", d.base + "/v1/containers", token: t, body: HTTP.json(["username": u, "sshKeys": [box.key.publicText]]))
            #expect(created.status == 201, "\(created.text)")
        }
        // Planted in alice's: a file the test database knows, the EICAR string, a private key and
        // a cloud access key (made here: nothing that looks real is committed).
        try Self.plant(box, "\(alice)-container", "/home/\(alice)/evil.bin", planted)
        try Self.plant(box, "\(alice)-container", "/tmp/eicar.com", Scanners.eicar)
        let keyDir = box0.appendingPathComponent("k")
        try FileManager.default.createDirectory(at: keyDir, withIntermediateDirectories: true)
        let keygen = try Run.run("/usr/bin/ssh-keygen", ["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", keyDir.appendingPathComponent("id").path])
        try #require(keygen.status == 0, "\(keygen.output)")
        try Self.plant(box, "\(alice)-container", "/home/\(alice)/.ssh/deploy_key", try Data(contentsOf: keyDir.appendingPathComponent("id")))
        try Self.plant(box, "\(alice)-container", "/home/\(alice)/app/settings.env", Data(Scanners.awsCredentials.utf8))
        // A link inside pointing at the host's planted copy is not followed out of the container.
        let outside = box0.appendingPathComponent("outside.bin")
        try planted.write(to: outside)
        #expect(try box.incus(["exec", "\(bob)-container", "--", "ln", "-s", outside.path, "/root/link-out"]).status == 0)

        // ClamAV: alice scans her own.
        let scanned = try HTTP.call("POST", d.base + "/v1/security/clamav-scan", token: aliceT, body: HTTP.json(["username": alice]), timeout: 900)
        #expect(scanned.status == 200, "\(scanned.text)")
        let report = try #require(scanned.json?["reports"]?.items?.first)
        #expect(report["status"]?.stringValue == "findings" && report["username"]?.stringValue == alice, "\(scanned.text.prefix(2000))")
        let found = Set((report["findings"]?.items ?? []).compactMap { f in f["path"]?.stringValue.map { "\($0) \(f["rule"]?.stringValue ?? "")" } })
        #expect(found == ["/home/\(alice)/evil.bin Containarium.Test.Planted", "/tmp/eicar.com Eicar-Test-Signature"], "\(found)")
        #expect((report["filesScanned"]?.number ?? 0) > 1000, "a whole root filesystem: \(report["filesScanned"] ?? .null)")
        // Bob's is clean, the link out not followed; bob cannot scan or read alice's.
        let clean = try HTTP.call("POST", d.base + "/v1/security/clamav-scan", token: bobT, body: HTTP.json(["username": bob]), timeout: 900)
        let bobReport = try #require(clean.json?["reports"]?.items?.first)
        #expect(bobReport["status"]?.stringValue == "clean" && (bobReport["findings"]?.items ?? []).isEmpty, "\(clean.text.prefix(2000))")
        #expect(try HTTP.call("POST", d.base + "/v1/security/clamav-scan", token: bobT, body: HTTP.json(["username": alice])).status == 403)
        #expect(try HTTP.call("POST", d.base + "/v1/security/clamav-scan", token: bobT, body: HTTP.json(["all": true])).status == 403)
        #expect(try Self.reports(d, "clamav", token: bobT).allSatisfy { $0["username"]?.stringValue == bob })
        #expect(try HTTP.call("GET", d.base + "/v1/security/clamav-reports?username=\(alice)", token: bobT).status == 403)
        // Nothing ran inside the environments: no process of the scanners there.
        #expect(try box.incus(["exec", "\(alice)-container", "--", "sh", "-c", "ps -eo comm | grep -Ec 'clam|trivy' || true"]).stdout
                    .trimmingCharacters(in: .whitespacesAndNewlines) == "0")

        // Trivy: the key and the access key, offline; the vulnerability database is missing and
        // the report says so: bob's is incomplete, never clean.
        let trivy = try HTTP.call("POST", d.base + "/v1/security/trivy-scan", token: admin, body: HTTP.json(["all": true]), timeout: 900)
        #expect(trivy.status == 200, "\(trivy.text.prefix(2000))")
        let byUser = Dictionary((trivy.json?["reports"]?.items ?? []).compactMap { r in r["username"]?.stringValue.map { ($0, r) } }, uniquingKeysWith: { a, _ in a })
        let aliceTrivy = try #require(byUser[alice])
        let secrets = (aliceTrivy["findings"]?.items ?? []).filter { $0["category"]?.stringValue == "secret" }
        #expect(secrets.contains { $0["path"]?.stringValue == "/home/\(alice)/.ssh/deploy_key" }, "\(aliceTrivy)")
        #expect(secrets.contains { $0["path"]?.stringValue == "/home/\(alice)/app/settings.env" && ($0["rule"]?.stringValue ?? "").contains("aws") }, "\(aliceTrivy)")
        #expect(aliceTrivy["databases"]?["vulnerabilities"]?["status"]?.stringValue == "missing", "\(aliceTrivy)")
        // The environment's own SSH host keys are where they belong: counted, not reported.
        #expect(!secrets.contains { ($0["path"]?.stringValue ?? "").hasPrefix("/etc/ssh/ssh_host_") }, "\(aliceTrivy)")
        #expect((aliceTrivy["notes"]?.items ?? []).contains { ($0.stringValue ?? "").contains("secret findings in allowed paths not reported") }, "\(aliceTrivy)")
        #expect(byUser[bob]?["status"]?.stringValue == "incomplete", "\(String(describing: byUser[bob]))")

        // Summary, CSV and the CLI.
        let summary = try HTTP.call("GET", d.base + "/v1/security/clamav-summary", token: admin).json
        #expect(summary?["environments"]?.number == 2 && summary?["clean"]?.number == 1 && summary?["withFindings"]?.number == 1
                && summary?["findings"]?.number == 2, "\(String(describing: summary))")
        let csv = try HTTP.call("GET", d.base + "/v1/security/clamav-reports.csv", token: admin)
        #expect(csv.status == 200 && csv.headers.lowercased().contains("content-type: text/csv"), "\(csv.status) \(csv.headers)")
        #expect(csv.text.hasPrefix("report_id,started_at,username") && csv.text.contains(",/tmp/eicar.com,Eicar-Test-Signature,malware,"), "\(csv.text.prefix(1500))")
        let cli = try box.cli(["scan", alice, "--scanner", "clamav", "--server", "127.0.0.1:\(d.grpcPort)", "--token", aliceT], timeout: 900)
        #expect(cli.status == 3 && cli.stdout.contains("/tmp/eicar.com") && cli.stdout.contains("Eicar-Test-Signature"), "\(cli.output)")
        let cliSummary = try box.cli(["security", "summary", "--server", "127.0.0.1:\(d.grpcPort)", "--token", admin])
        #expect(cliSummary.status == 0 && cliSummary.stdout.contains("clamav: 2 environments scanned"), "\(cliSummary.output)")

        // The schedule (every 15 s here) scans on its own: reports with trigger "schedule".
        try eventually("a scheduled scan of both", within: 120, every: 1_000_000) {
            let scheduled = try Self.reports(d, "clamav", token: admin).filter { $0["trigger"]?.stringValue == "schedule" }
            return Set(scheduled.compactMap { $0["username"]?.stringValue }).isSuperset(of: [alice, bob])
        }
        let audit = try HTTP.call("GET", d.base + "/v1/audit?action=security.scan&limit=100", token: admin).json?["entries"]?.items ?? []
        #expect(audit.contains { $0["actor"]?.stringValue == bob && $0["result"]?.stringValue == "permission_denied" }, "\(audit)")
    }

    @Test("a scan of 20 running environments (all, two at a time) completes; every one of them still runs and answers, during the scan and after")
    func twentyEnvironments() throws {
        let box0 = try TestEnv.tempDir("scan20")
        defer { TestEnv.cleanup(box0) }
        let db = try Self.database(in: box0, planted: Data("nothing planted".utf8))
        let clamd = try ClamdFixture(in: box0.appendingPathComponent("clamd"), database: db)
        defer { clamd.stop() }
        let box = try Self.sandbox(clamd: clamd, database: db, extraConfig: ["security": ["schedule": "off"]])
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600"])
        try d.start()
        defer { d.stop() }
        let admin = try d.token("admin", roles: "admin")
        let sfx = TestEnv.suffix()
        let users = (1...20).map { "s\($0)x\(sfx)" }
        defer { users.forEach { box.forceDelete("\($0)-container") } }
        // Created four at a time (asynchronous creates, polled).
        for batch in stride(from: 0, to: users.count, by: 4) {
            var ops: [String] = []
            for u in users[batch..<min(batch + 4, users.count)] {
                let r = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json(["username": u, "sshKeys": [box.key.publicText], "async": true]))
                ops.append(try #require(r.json?["id"]?.stringValue, "\(r.text)"))
            }
            for op in ops {
                try eventually("create \(op)", within: 300) {
                    let answer = try HTTP.call("GET", d.base + "/v1/operations/\(op)", token: admin)
                    let state = answer.json?["state"]?.stringValue
                    if state == "OPERATION_STATE_FAILED" || state == "OPERATION_STATE_CANCELLED" { throw TestFailure("create \(op) ended \(state ?? "?"): \(answer.text)") }
                    return state == "OPERATION_STATE_SUCCEEDED"
                }
            }
        }
        let started = Date()
        let answer = Mutex<HTTPResult?>(nil)
        let scan = Thread {
            let r = try? HTTP.call("POST", d.base + "/v1/security/clamav-scan", token: admin, body: HTTP.json(["all": true]), timeout: 1800)
            answer.withLock { $0 = r }
        }
        scan.start()
        // While it runs, environments answer: a command in each of a few, with its latency.
        var slowest = 0.0
        try eventually("the scan is under way", within: 60, every: 50_000) { clamd.busy }
        for u in users.prefix(5) {
            let t = Date()
            let r = try HTTP.call("POST", d.base + "/v1/containers/\(u)/exec", token: admin, body: HTTP.json(["command": ["true"]]), timeout: 60)
            #expect(r.status == 200 && r.json?["exitCode"]?.number == 0, "\(u) during the scan: \(r.text)")
            slowest = max(slowest, Date().timeIntervalSince(t))
        }
        try eventually("the scan of all 20 answers", within: 1800, every: 1_000_000) { answer.withLock { $0 } != nil }
        let r = try #require(answer.withLock { $0 })
        let reports = r.json?["reports"]?.items ?? []
        #expect(reports.count == 20, "\(r.text.prefix(1000))")
        #expect(reports.allSatisfy { $0["status"]?.stringValue == "clean" }, "\(reports.filter { $0["status"]?.stringValue != "clean" })")
        let files = reports.compactMap { $0["filesScanned"]?.number }
        // (Printed for docs/benchmarks.md: the time for 20, and the slowest command during it.)
        print("scan of 20 environments: \(String(format: "%.1f", Date().timeIntervalSince(started))) s, \(Int(files.reduce(0, +))) files; slowest exec during it \(String(format: "%.2f", slowest)) s")
        let listed = try HTTP.call("GET", d.base + "/v1/containers", token: admin).json?["containers"]?.items ?? []
        let mine = listed.filter { users.contains($0["username"]?.stringValue ?? "") }
        #expect(mine.count == 20 && mine.allSatisfy { $0["state"]?.stringValue == "CONTAINER_STATE_RUNNING" })
        for u in users {
            let r = try HTTP.call("POST", d.base + "/v1/containers/\(u)/exec", token: admin, body: HTTP.json(["command": ["true"]]), timeout: 60)
            #expect(r.status == 200, "\(u) after the scan: \(r.text)")
        }
    }

    @Test("a plugin that crashes during a scan (isolation process) fails that scan with a clear error; the daemon stays up")
    func pluginCrash() throws {
        let box0 = try TestEnv.tempDir("scanx")
        defer { TestEnv.cleanup(box0) }
        let db = try Self.database(in: box0, planted: Data("x".utf8))
        let clamd = try ClamdFixture(in: box0.appendingPathComponent("clamd"), database: db)
        defer { clamd.stop() }
        let box = try Self.sandbox(clamd: clamd, database: db, clamavIsolation: "process")
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600"])
        try d.start()
        defer { d.stop() }
        let u = "sx\(TestEnv.suffix())"
        defer { box.forceDelete("\(u)-container") }
        let admin = try d.token("admin", roles: "admin")
        #expect(try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json(["username": u, "sshKeys": [box.key.publicText]])).status == 201)
        // The plugin's own process: `containarium plugin serve …/clamav`, a child of this daemon.
        let daemonPid = try #require(d.pid)
        func pluginPid() -> Int32? {
            Run.children(of: daemonPid).first { Run.commandLine(of: $0)?.contains("/clamav") == true }
        }
        try #require(pluginPid() != nil, "the clamav plugin does not run in a process of its own")
        let answer = Mutex<HTTPResult?>(nil)
        let scan = Thread {
            let r = try? HTTP.call("POST", d.base + "/v1/security/clamav-scan", token: admin, body: HTTP.json(["username": u]), timeout: 600)
            answer.withLock { $0 = r }
        }
        scan.start()
        // Once the scan is under way (clamd is reading files), the plugin dies.
        try eventually("the scan is under way", within: 60, every: 50_000) { clamd.busy }
        if let pid = pluginPid() { kill(pid, SIGKILL) }
        try eventually("the scan answers", within: 120) { answer.withLock { $0 } != nil }
        let r = try #require(answer.withLock { $0 })
        let report = r.json?["reports"]?.items?.first
        #expect(report?["status"]?.stringValue == "failed" && (report?["error"]?.stringValue ?? "").contains("crashed"), "\(r.text.prefix(1500))")
        #expect(try HTTP.call("GET", d.base + "/healthz").status == 200)
        #expect(try HTTP.call("GET", d.base + "/v1/containers/\(u)", token: admin).json?["state"]?.stringValue == "CONTAINER_STATE_RUNNING")
        // The plugin stays down; the next scan says so at once, and the daemon carries on.
        let again = try HTTP.call("POST", d.base + "/v1/security/clamav-scan", token: admin, body: HTTP.json(["username": u]))
        #expect(again.json?["reports"]?.items?.first?["status"]?.stringValue == "failed", "\(again.text)")
        #expect(try HTTP.call("GET", d.base + "/v1/plugins", token: admin).text.contains("clamav"))
    }
}
