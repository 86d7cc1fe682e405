import ContainariumCore
import ContainariumStore
import Foundation
import Logging
import TestSupport
import Testing

/// One store per test, on each engine: a fresh SQLite file, or a fresh database on the real
/// PostgreSQL server that scripts/test.sh installs and starts (CONTAINARIUM_TEST_PG_URL).
enum StoreEngine: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }

    static let pgURL = ProcessInfo.processInfo.environment["CONTAINARIUM_TEST_PG_URL"]
    static let skipPG = ProcessInfo.processInfo.environment["CONTAINARIUM_SKIP_PG"] == "1"
    static var enabled: [StoreEngine] { skipPG ? [.sqlite] : allCases }

    /// Run `body` with a fresh store; PostgreSQL gets a database of its own, dropped after.
    func withStore(_ body: (Store, @escaping @Sendable () throws -> Store) async throws -> Void) async throws {
        let logger = Logger(label: "store-test", factory: { _ in SwiftLogNoOpLogHandler() })
        switch self {
        case .sqlite:
            let dir = try TestEnv.tempDir("store")
            defer { TestEnv.cleanup(dir) }
            let path = dir.appendingPathComponent("state.db").path
            let store = Store(db: try SQLiteDatabase(path: path))
            try await body(store, { Store(db: try SQLiteDatabase(path: path)) })
        case .postgres:
            guard let base = Self.pgURL else {
                throw TestFailure("CONTAINARIUM_TEST_PG_URL is not set: run scripts/test.sh (it starts PostgreSQL) or set CONTAINARIUM_SKIP_PG=1")
            }
            let admin = try PostgresDatabase(url: base, logger: logger)
            let adminRun = Task { await admin.run() }
            defer { adminRun.cancel() }
            let name = "ctm_test_\(TestEnv.suffix())"
            try await admin.query("CREATE DATABASE \(name)", [])
            let url = base.replacingOccurrences(of: #"/[^/]+$"#, with: "/\(name)", options: .regularExpression)
            let bag = TaskBag()
            let open: @Sendable () throws -> Store = {
                let db = try PostgresDatabase(url: url, logger: logger)
                bag.add(Task { await db.run() })
                return Store(db: db)
            }
            let result: Result<Void, any Error>
            do { result = .success(try await body(try open(), open)) } catch { result = .failure(error) }
            bag.cancelAll()
            try? await Task.sleep(for: .milliseconds(200))
            _ = try? await admin.query("DROP DATABASE IF EXISTS \(name) WITH (FORCE)", [])
            try result.get()
        }
    }
}

/// Connection-pool tasks of the stores a test opened; cancelled when the test ends.
final class TaskBag: @unchecked Sendable {
    private let lock = NSLock()
    private var tasks: [Task<Void, Never>] = []
    func add(_ t: Task<Void, Never>) { lock.lock(); tasks.append(t); lock.unlock() }
    func cancelAll() { lock.lock(); tasks.forEach { $0.cancel() }; lock.unlock() }
}

@Suite("State store on SQLite and PostgreSQL")
struct StoreTests {
    /// With CONTAINARIUM_SKIP_PG=1 the tests below run on SQLite only (`StoreEngine.enabled`); this
    /// one is then reported as skipped, so the left-out PostgreSQL cases show in the results.
    @Test("the PostgreSQL cases run: the server of CONTAINARIUM_TEST_PG_URL takes a database of a test's own and migrates it", .needsPostgres)
    func postgresRuns() async throws {
        try await StoreEngine.postgres.withStore { store, _ in
            let applied = try await store.migrate()
            #expect(applied == Schema.migrations.map(\.version))
        }
    }

    @Test("migrations apply once, in order, and a second run applies nothing", arguments: StoreEngine.enabled)
    func migrations(engine: StoreEngine) async throws {
        try await engine.withStore { store, _ in
            let first = try await store.migrate()
            #expect(first == Schema.migrations.map(\.version))
            #expect(try await store.migrate().isEmpty)
            #expect(try await store.db.appliedVersions() == Schema.migrations.map(\.version))
        }
    }

    @Test("concurrent daemons migrating one database apply each migration exactly once", arguments: StoreEngine.enabled)
    func concurrentMigrations(engine: StoreEngine) async throws {
        try await engine.withStore { _, open in
            let stores = try (0..<4).map { _ in try open() }
            let applied = try await withThrowingTaskGroup(of: [Int].self) { g in
                for s in stores { g.addTask { try await s.migrate() } }
                var all: [Int] = []
                for try await a in g { all += a }
                return all
            }
            #expect(applied.sorted() == Schema.migrations.map(\.version))
            #expect(try await stores[0].db.appliedVersions() == Schema.migrations.map(\.version))
        }
    }

    @Test("container records: insert, conflict, phase, list by node, delete with keys and collaborators", arguments: StoreEngine.enabled)
    func containers(engine: StoreEngine) async throws {
        try await engine.withStore { store, _ in
            try await store.migrate()
            let rec = ContainerRecord(username: "alice", owner: "alice", node: "n1", backend: "incus-lxc", image: "img", phase: .creating, operationID: "op1")
            try await store.insertContainer(rec)
            await #expect(throws: ContainariumError.self) { try await store.insertContainer(rec) }
            do throws(ContainariumError) { try await store.insertContainer(rec) } catch { #expect(error.code == .alreadyExists) }
            try await store.setPhase("alice", .ready)
            #expect(try await store.container("alice")?.phase == .ready)
            try await store.insertContainer(ContainerRecord(username: "bob", owner: "bob", node: "n2", backend: "incus-lxc", image: nil, phase: .ready, operationID: nil))
            #expect(try await store.containers(node: "n1").map(\.username) == ["alice"])
            #expect(try await store.containers().map(\.username) == ["alice", "bob"])
            try await store.addKey(KeyRecord(username: "alice", fingerprint: "SHA256:x", publicKey: "ssh-ed25519 AAAA"))
            do throws(ContainariumError) { try await store.addKey(KeyRecord(username: "alice", fingerprint: "SHA256:x", publicKey: "ssh-ed25519 AAAA")) } catch { #expect(error.code == .alreadyExists) }
            try await store.addCollaborator(CollaboratorRecord(username: "alice", collaborator: "bob", addedBy: "alice"))
            #expect(try await store.collaborations(of: "bob") == ["alice"])
            #expect(try await store.deleteContainer("alice"))
            #expect(try await store.deleteContainer("alice") == false)
            #expect(try await store.keys("alice").isEmpty)
            #expect(try await store.collaborators(of: "alice").isEmpty)
            // Upsert replaces the mutable fields.
            var b = try #require(try await store.container("bob"))
            b.phase = .deleting
            try await store.upsertContainer(b)
            #expect(try await store.container("bob")?.phase == .deleting)
        }
    }

    @Test("keys and collaborators round-trip and remove precisely", arguments: StoreEngine.enabled)
    func keysAndCollaborators(engine: StoreEngine) async throws {
        try await engine.withStore { store, _ in
            try await store.migrate()
            try await store.addKey(KeyRecord(username: "alice", fingerprint: "SHA256:a", publicKey: "ssh-ed25519 A a"))
            try await store.addKey(KeyRecord(username: "alice", fingerprint: "SHA256:b", publicKey: "ssh-ed25519 B b"))
            #expect(Set(try await store.keys("alice").map(\.fingerprint)) == ["SHA256:a", "SHA256:b"])
            #expect(try await store.removeKey("alice", fingerprint: "SHA256:a"))
            #expect(try await store.removeKey("alice", fingerprint: "SHA256:a") == false)
            #expect(try await store.keys("alice").map(\.fingerprint) == ["SHA256:b"])
            try await store.addCollaborator(CollaboratorRecord(username: "alice", collaborator: "carol", addedBy: "admin"))
            try await store.addCollaborator(CollaboratorRecord(username: "alice", collaborator: "bob", addedBy: "alice"))
            do throws(ContainariumError) { try await store.addCollaborator(CollaboratorRecord(username: "alice", collaborator: "bob", addedBy: "alice")) } catch { #expect(error.code == .alreadyExists) }
            #expect(try await store.collaborators(of: "alice").map(\.collaborator) == ["bob", "carol"])
            #expect(try await store.removeCollaborator("alice", collaborator: "bob"))
            #expect(try await store.removeCollaborator("alice", collaborator: "bob") == false)
        }
    }

    @Test("operations finish once; running ones are found by node", arguments: StoreEngine.enabled)
    func operations(engine: StoreEngine) async throws {
        try await engine.withStore { store, _ in
            try await store.migrate()
            let op = OperationRecord(kind: "create", target: "alice", actor: "admin", node: "n1", daemon: "n1/1/1")
            try await store.insertOperation(op)
            try await store.updateProgress(op.id, step: 2, total: 5, message: "Starting")
            #expect(try await store.operation(op.id)?.step == 2)
            #expect(try await store.operations(state: .running, node: "n1").map(\.id) == [op.id])
            #expect(try await store.operations(state: .running, node: "n2").isEmpty)
            #expect(try await store.finishOperation(op.id, state: .succeeded, result: #"{"name":"alice-container"}"#))
            #expect(try await store.finishOperation(op.id, state: .failed, errorCode: "internal") == false)
            let done = try #require(try await store.operation(op.id))
            #expect(done.state == .succeeded)
            #expect(done.result == #"{"name":"alice-container"}"#)
            #expect(done.errorCode == nil)
            // Progress after the end is ignored.
            try await store.updateProgress(op.id, step: 9, total: 9, message: "late")
            #expect(try await store.operation(op.id)?.step == 2)
            #expect(try await store.operation("nope") == nil)
        }
    }

    @Test("the audit log filters by actor, action, target, result and time, newest first", arguments: StoreEngine.enabled)
    func audit(engine: StoreEngine) async throws {
        try await engine.withStore { store, _ in
            try await store.migrate()
            let t0 = Date(timeIntervalSince1970: 1_800_000_000)
            for i in 0..<6 {
                try await store.appendAudit(AuditEntry(
                    at: t0.addingTimeInterval(Double(i)), actor: i % 2 == 0 ? "alice" : "bob", role: "user",
                    action: i < 3 ? "container.create" : "container.delete", target: "t\(i)", source: "127.0.0.1:1", interface: "rest",
                    result: i == 5 ? "permission_denied" : "ok"))
            }
            #expect(try await store.audit(AuditFilter()).map(\.target) == ["t5", "t4", "t3", "t2", "t1", "t0"])
            #expect(try await store.audit(AuditFilter(actor: "alice")).map(\.target) == ["t4", "t2", "t0"])
            #expect(try await store.audit(AuditFilter(action: "container.delete", result: "ok")).map(\.target) == ["t4", "t3"])
            #expect(try await store.audit(AuditFilter(target: "t1")).count == 1)
            #expect(try await store.audit(AuditFilter(since: t0.addingTimeInterval(2), until: t0.addingTimeInterval(4))).map(\.target) == ["t3", "t2"])
            #expect(try await store.audit(AuditFilter(limit: 2)).count == 2)
            let e = try #require(try await store.audit(AuditFilter(target: "t5")).first)
            #expect(e.at == t0.addingTimeInterval(5))
            #expect(e.result == "permission_denied")
        }
    }

    @Test("audit retention removes entries by age, then all but the newest N", arguments: StoreEngine.enabled)
    func auditRetention(engine: StoreEngine) async throws {
        try await engine.withStore { store, _ in
            try await store.migrate()
            let t0 = Date(timeIntervalSince1970: 1_800_000_000)
            for i in 0..<10 {
                try await store.appendAudit(AuditEntry(at: t0.addingTimeInterval(Double(i) * 86_400), actor: "a", role: "user", action: "x",
                                                       target: "t\(i)", source: "s", interface: "rest", result: "ok"))
            }
            #expect(try await store.pruneAudit(before: t0.addingTimeInterval(3 * 86_400), keep: nil) == 3)
            #expect(try await store.audit(AuditFilter()).map(\.target) == ["t9", "t8", "t7", "t6", "t5", "t4", "t3"])
            #expect(try await store.pruneAudit(before: nil, keep: 4) == 3)
            #expect(try await store.audit(AuditFilter()).map(\.target) == ["t9", "t8", "t7", "t6"])
            #expect(try await store.pruneAudit(before: t0, keep: 100) == 0)
        }
    }

    @Test("settings upsert", arguments: StoreEngine.enabled)
    func settings(engine: StoreEngine) async throws {
        try await engine.withStore { store, _ in
            try await store.migrate()
            #expect(try await store.setting("base-domain") == nil)
            try await store.setSetting("base-domain", "a.example")
            try await store.setSetting("base-domain", "b.example")
            #expect(try await store.setting("base-domain") == "b.example")
        }
    }

    @Test("nodes keep a drain flag across reports; placements are shared rows that expire", arguments: StoreEngine.enabled)
    func nodesAndPlacements(engine: StoreEngine) async throws {
        try await engine.withStore { store, _ in
            try await store.migrate()
            try await store.saveNodeReport(name: "n1", address: "10.0.0.1:50051", info: "{}")
            try await store.setNodeDraining("n1", true)
            try await store.saveNodeReport(name: "n1", address: "10.0.0.2:50051", info: "{\"x\":1}")
            let n = try #require(try await store.nodes().first { $0.0 == "n1" })
            #expect(n.1 == "10.0.0.2:50051" && n.2 == "{\"x\":1}" && n.3, "a report does not undo a drain")
            let old = Date().addingTimeInterval(-7200)
            try await store.insertPlacement(.init(name: "a-container", node: "n1", cpuMillis: 2000, memoryBytes: 1 << 30, diskBytes: 0,
                                                  gpus: ["0000:65:00.0", "0000:ca:00.0"], daemon: "cp1/1/1"))
            try await store.insertPlacement(.init(name: "b-container", node: "n1", cpuMillis: 1000, memoryBytes: 0, diskBytes: 0, gpus: [],
                                                  daemon: "cp2/1/1", createdAt: old))
            await #expect(throws: ContainariumError.self) {
                try await store.insertPlacement(.init(name: "a-container", node: "n2", cpuMillis: 1, memoryBytes: 0, diskBytes: 0, gpus: [], daemon: "cp2/1/1"))
            }
            let rows = try await store.placements()
            #expect(rows.map(\.name) == ["a-container", "b-container"])
            #expect(rows[0].gpus == ["0000:65:00.0", "0000:ca:00.0"] && rows[0].cpuMillis == 2000 && rows[0].daemon == "cp1/1/1")
            #expect(rows[1].gpus.isEmpty)
            #expect(try await store.expirePlacements(before: Date().addingTimeInterval(-3600)) == 1)
            #expect(try await store.deletePlacement("a-container"))
            #expect(try await !store.deletePlacement("a-container"))
            #expect(try await store.placements().isEmpty)
        }
    }

    @Test("values that look like SQL are stored verbatim, never executed", arguments: StoreEngine.enabled)
    func injection(engine: StoreEngine) async throws {
        try await engine.withStore { store, _ in
            try await store.migrate()
            let nasty = "x'); DROP TABLE containers; -- ?"
            try await store.appendAudit(AuditEntry(actor: nasty, role: "user", action: "a", target: nasty, source: "s", interface: "rest", result: "ok", detail: "?"))
            #expect(try await store.audit(AuditFilter(actor: nasty)).first?.target == nasty)
            #expect(try await store.containers().isEmpty)
        }
    }

    @Test("database URLs are parsed strictly and printed without the password")
    func urls() throws {
        let u = try PostgresURL("postgres://ctm:s3cret@db.internal:6432/state")
        #expect(u.host == "db.internal" && u.port == 6432 && u.database == "state" && u.user == "ctm")
        #expect(u.redacted == "postgres://ctm:***@db.internal:6432/state")
        #expect(!u.redacted.contains("s3cret"))
        for bad in ["mysql://a@b/c", "postgres://b/c", "postgres://a@/c", "postgres://a@b", "postgres://a@b/c?sslmode=require"] {
            #expect(throws: ContainariumError.self, "\(bad)") { try PostgresURL(bad) }
        }
    }
}

extension Trait where Self == ConditionTrait {
    /// Tests that need the PostgreSQL server scripts/test.sh starts (CONTAINARIUM_TEST_PG_URL);
    /// CONTAINARIUM_SKIP_PG=1 skips them. Without it, a missing server is a failure.
    static var needsPostgres: ConditionTrait { .enabled(if: !StoreEngine.skipPG, "CONTAINARIUM_SKIP_PG=1") }
}
