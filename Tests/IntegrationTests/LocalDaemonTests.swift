import ContainariumCore
import Foundation
import TestSupport
import Testing

/// The CLI on a machine where a daemon runs: verbs that need the daemon's bookkeeping go
/// through its local API socket, so they use its database (here PostgreSQL) and its audit log.
@Suite("The CLI goes through the local daemon, on real Incus and PostgreSQL", .needsIncus, .serialized)
struct LocalDaemonTests {
    @Test("collaborator add/list/remove and audit on a PostgreSQL daemon's node reach its database; no SQLite file appears", .needsPostgres)
    func collaboratorsThroughTheDaemon() throws {
        guard let base = ProcessInfo.processInfo.environment["CONTAINARIUM_TEST_PG_URL"] else {
            throw TestFailure("CONTAINARIUM_TEST_PG_URL is not set: run scripts/test.sh (it starts PostgreSQL) or set CONTAINARIUM_SKIP_PG=1")
        }
        let sfx = TestEnv.suffix()
        let db = "ctm_local_\(sfx)"
        let made = try Run.run("/usr/bin/psql", [base, "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE \(db)"])
        #expect(made.status == 0, "\(made.output)")
        defer { _ = try? Run.run("/usr/bin/psql", [base, "-c", "DROP DATABASE IF EXISTS \(db) WITH (FORCE)"]) }
        let url = base.replacingOccurrences(of: #"/[^/]+$"#, with: "/\(db)", options: .regularExpression)

        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--database-url", url, "--reconcile-interval", "3600"])
        try d.start()
        defer { d.stop() }
        let admin = try d.token("admin", roles: "admin")
        let owner = "lo\(sfx)", collab = "lc\(sfx)"
        let created = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json(["username": owner, "sshKeys": [box.key.publicText]]))
        #expect(created.status == 201, "\(created.text)")
        let other = try KeyPair.generate(in: box.dir, name: "collab")

        let add = try box.cli(["collaborator", "add", owner, collab, "--ssh-key", other.publicKey.path, "--state-dir", d.stateDir.path])
        #expect(add.status == 0 && add.stdout.contains("\(collab) collaborates on \(owner)'s environment"), "\(add.output)")
        let listed = try HTTP.call("GET", d.base + "/v1/containers/\(owner)/collaborators", token: admin).json?["collaborators"]?.items ?? []
        #expect(listed.compactMap { $0["collaboratorUsername"]?.stringValue } == [collab], "the daemon's database has it: \(listed)")
        let cliList = try box.cli(["collaborator", "list", owner, "--state-dir", d.stateDir.path])
        #expect(cliList.status == 0 && cliList.stdout.contains(collab), "\(cliList.output)")
        let audit = try box.cli(["audit", "--state-dir", d.stateDir.path, "--action", "container.collaborator.add", "--format", "json"])
        #expect(audit.status == 0 && audit.stdout.contains("local-admin") && audit.stdout.contains(owner), "the daemon's audit log, by the local admin: \(audit.output)")
        // Flags only a CLI acting alone uses are refused, not ignored, when the daemon answers.
        let configured = try box.cli(["stop", owner, "--state-dir", d.stateDir.path, "--config", box.config.path])
        #expect(configured.status == 2 && configured.stderr.contains("--config and --plugin-path apply only when the CLI acts alone"), "\(configured.output)")
        let remove = try box.cli(["collaborator", "remove", owner, collab, "--state-dir", d.stateDir.path])
        #expect(remove.status == 0, "\(remove.output)")
        #expect((try HTTP.call("GET", d.base + "/v1/containers/\(owner)/collaborators", token: admin).json?["collaborators"]?.items ?? []).isEmpty)
        // Nothing went around the daemon into a database of its own.
        #expect(!FileManager.default.fileExists(atPath: d.stateDir.appendingPathComponent("containarium.db").path))
        #expect(try HTTP.call("DELETE", d.base + "/v1/containers/\(owner)", token: admin).status == 200)

        // With no daemon running, the verbs that only a daemon can answer say so; the CLI
        // never opens a database of its own.
        d.stop()
        for args in [["collaborator", "list", owner], ["audit"], ["gateway", "bans"]] {
            let r = try box.cli(args + ["--state-dir", d.stateDir.path])
            #expect(r.status == ContainariumError.Code.failedPrecondition.exitCode && r.stderr.contains("no daemon runs for \(d.stateDir.path)"),
                    "\(args): \(r.output)")
        }
        #expect(!FileManager.default.fileExists(atPath: d.stateDir.appendingPathComponent("containarium.db").path))
    }
}
