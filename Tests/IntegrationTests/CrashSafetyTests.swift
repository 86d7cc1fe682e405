import ContainariumCore
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// SIGKILL the daemon in the middle of concurrent creates, restart it, and require that every
/// environment ends up either complete and recorded or fully removed, with no operation left
/// "running". Repeated, at different points of the creates, on SQLite and on PostgreSQL.
@Suite("Crash safety: SIGKILL during concurrent creates, on real Incus", .needsIncus, .serialized)
struct CrashSafetyTests {
    @Test("kill -9 mid-create, restart: complete-and-recorded or fully removed, nothing stuck (SQLite)")
    func sigkillSQLite() throws { try sigkill(engine: "sqlite") }

    @Test("kill -9 mid-create, restart: complete-and-recorded or fully removed, nothing stuck (PostgreSQL)", .needsPostgres)
    func sigkillPostgres() throws { try sigkill(engine: "postgres") }

    func sigkill(engine: String) throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        var extra = ["--reconcile-interval", "2", "--orphan-grace", "20"]
        var dropDatabase: (() -> Void)?
        if engine == "postgres" {
            guard let base = ProcessInfo.processInfo.environment["CONTAINARIUM_TEST_PG_URL"] else {
                throw TestFailure("CONTAINARIUM_TEST_PG_URL is not set: run scripts/test.sh (it starts PostgreSQL) or set CONTAINARIUM_SKIP_PG=1")
            }
            let name = "ctm_crash_\(TestEnv.suffix())"
            let created = try Run.run("/usr/bin/psql", [base, "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE \(name)"])
            #expect(created.status == 0, "\(created.output)")
            extra += ["--database-url", base.replacingOccurrences(of: #"/[^/]+$"#, with: "/\(name)", options: .regularExpression)]
            dropDatabase = { _ = try? Run.run("/usr/bin/psql", [base, "-c", "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"]) }
        }
        defer { dropDatabase?() }
        let d = try DaemonProcess(sandbox: box, extraArgs: extra)
        let admin = try d.token("admin", roles: "admin")
        var everyone: [String] = []
        defer { everyone.forEach { box.forceDelete("\($0)-container") } }

        // Kill points: as soon as every create has begun; once some are well under way.
        // Round 4 lets one create finish first: it must survive the crash intact.
        for (round, killAtStep) in [(1, 1), (2, 3), (3, 2), (4, 1)] {
            try d.start()
            let users = (1...3).map { "k\(round)\($0)\(TestEnv.suffix())" }
            everyone += users
            var ops: [String: String] = [:]
            for (i, u) in users.enumerated() {
                let r = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json(["username": u, "sshKeys": [box.key.publicText], "async": true]))
                #expect(r.status == 202, "\(r.text)")
                let id = try #require(r.json?["id"]?.stringValue)
                ops[u] = id
                if round == 4 && i == 0 {
                    try eventually("the first create finishes", within: 120) {
                        try HTTP.call("GET", d.base + "/v1/operations/\(id)", token: admin).json?["state"]?.stringValue == "OPERATION_STATE_SUCCEEDED"
                    }
                }
            }
            try eventually("creates reach step \(killAtStep)", within: 120, every: 50_000) {
                let steps = try ops.values.map { try HTTP.call("GET", d.base + "/v1/operations/\($0)", token: admin).json?["step"]?.number ?? 0 }
                return steps.allSatisfy { $0 >= Double(killAtStep) } || steps.contains { $0 >= Double(killAtStep) } && round == 2
            }
            d.signal(SIGKILL)
            _ = try d.wait(timeout: 30)

            try d.start()
            var lastReport = ""
            try eventually("round \(round): every environment complete-and-recorded or fully removed", within: 150, every: 1_000_000) {
                var ok = true
                var report: [String] = []
                for u in users {
                    let op = try HTTP.call("GET", d.base + "/v1/operations/\(ops[u] ?? "")", token: admin).json
                    let state = op?["state"]?.stringValue ?? "?"
                    let record = try HTTP.call("GET", d.base + "/v1/containers/\(u)", token: admin)
                    let inIncus = try box.exists("\(u)-container")
                    let provisioned = inIncus
                        ? try box.incus(["config", "get", "\(u)-container", "user.containarium.provisioned"]).stdout.contains("true") : false
                    report.append("\(u): op=\(state) api=\(record.status) incus=\(inIncus) provisioned=\(provisioned)")
                    let complete = state == "OPERATION_STATE_SUCCEEDED" && record.status == 200 && inIncus && provisioned
                        && record.json?["state"]?.stringValue == "CONTAINER_STATE_RUNNING"
                    let removed = state == "OPERATION_STATE_FAILED" && record.status == 404 && !inIncus
                    if !(complete || removed) { ok = false }
                }
                lastReport = report.joined(separator: "; ")
                return ok
            }
            print("round \(round) (killed at step \(killAtStep)): \(lastReport)")
            if round == 4 {
                #expect(try box.exists("\(users[0])-container"), "the create that finished before the crash survives it")
            }
            // Nothing is left "running" for this node, and survivors are usable.
            for u in users where try box.exists("\(u)-container") {
                let ip = try #require(try HTTP.call("GET", d.base + "/v1/containers/\(u)", token: admin).json?["network"]?["ipAddress"]?.stringValue)
                #expect(try IncusEnv.ssh(user: u, host: ip, key: box.key.privateKey, "id -un").stdout.contains(u))
            }
            let failed = try #require(try HTTP.call("GET", d.base + "/v1/audit?limit=1", token: admin).json)
            #expect(failed["entries"] != nil)
            d.signal(SIGTERM)
            #expect(try d.wait() == 0)
        }
    }
}

extension Trait where Self == ConditionTrait {
    /// Tests that need the PostgreSQL server scripts/test.sh starts (CONTAINARIUM_TEST_PG_URL);
    /// CONTAINARIUM_SKIP_PG=1 skips them. Without it, a missing server is a failure.
    static var needsPostgres: ConditionTrait {
        .enabled(if: ProcessInfo.processInfo.environment["CONTAINARIUM_SKIP_PG"] != "1", "CONTAINARIUM_SKIP_PG=1")
    }
}
