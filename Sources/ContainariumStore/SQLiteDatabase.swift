public import ContainariumCore
import Foundation
import GRDB

/// SQLite through GRDB: one file, WAL mode, a pool of readers and one writer.
public final class SQLiteDatabase: SQLDatabase {
    public let dialect = SQLDialect.sqlite
    public let path: String
    private let pool: DatabasePool

    public init(path: String) throws(ContainariumError) {
        self.path = path
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA foreign_keys = ON") }
        do {
            let dir = (path as NSString).deletingLastPathComponent
            if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
            pool = try DatabasePool(path: path, configuration: config)
        } catch {
            throw ContainariumError(.unavailable, "cannot open the state database \(path)", cause: "\(error)")
        }
        // The state holds SSH keys and the audit log: readable by its owner only.
        chmod(path, 0o600)
    }

    private static func args(_ binds: [SQLValue]) -> StatementArguments {
        StatementArguments(binds.map { v -> (any DatabaseValueConvertible)? in
            switch v {
            case .text(let s): return s
            case .int(let i): return i
            case .null: return nil
            }
        })
    }

    private static func rows(_ rows: [Row]) -> [SQLRow] {
        rows.map { row in
            var values: [String: SQLValue] = [:]
            for (name, value) in zip(row.columnNames, row.databaseValues) {
                switch value.storage {
                case .null: values[name] = .null
                case .int64(let i): values[name] = .int(i)
                case .double(let d): values[name] = .int(Int64(d))
                case .string(let s): values[name] = .text(s)
                case .blob(let b): values[name] = .text(String(decoding: b, as: UTF8.self))
                }
            }
            return SQLRow(values)
        }
    }

    static func map(_ error: any Error) -> ContainariumError {
        if let e = error as? DatabaseError, e.resultCode == .SQLITE_CONSTRAINT {
            return ContainariumError(.alreadyExists, "a record with that key already exists", cause: e.message)
        }
        if let e = error as? ContainariumError { return e }
        return ContainariumError(.unavailable, "state database error", cause: "\(error)")
    }

    @discardableResult
    public func query(_ sql: String, _ binds: [SQLValue]) async throws(ContainariumError) -> [SQLRow] {
        let arguments = Self.args(binds)
        do {
            let isRead = sql.hasPrefix("SELECT")
            if isRead {
                return try await pool.read { db in Self.rows(try Row.fetchAll(db, sql: sql, arguments: arguments)) }
            }
            return try await pool.write { db in Self.rows(try Row.fetchAll(db, sql: sql, arguments: arguments)) }
        } catch {
            throw Self.map(error)
        }
    }

    public func appliedVersions() async throws(ContainariumError) -> [Int] {
        do {
            return try await pool.read { db in
                guard try db.tableExists("schema_migrations") else { return [] }
                return try Int.fetchAll(db, sql: "SELECT version FROM schema_migrations ORDER BY version")
            }
        } catch { throw Self.map(error) }
    }

    public func migrate(_ migrations: [Migration]) async throws(ContainariumError) -> [Int] {
        do {
            // One write transaction: the single SQLite writer lock serializes concurrent daemons.
            return try await pool.write { db in
                try db.execute(sql: Schema.migrationsTable)
                let done = Set(try Int.fetchAll(db, sql: "SELECT version FROM schema_migrations"))
                var applied: [Int] = []
                for m in migrations.sorted(by: { $0.version < $1.version }) where !done.contains(m.version) {
                    for statement in m.statements { try db.execute(sql: statement) }
                    try db.execute(
                        sql: "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                        arguments: [m.version, m.name, Int64(Date().timeIntervalSince1970 * 1_000_000)])
                    applied.append(m.version)
                }
                return applied
            }
        } catch { throw Self.map(error) }
    }

    private let gate = AsyncGate()

    public func withLock<T: Sendable>(_ key: Int64, _ body: @Sendable () async throws(ContainariumError) -> T) async throws(ContainariumError) -> T {
        await gate.acquire()
        let r: Result<T, ContainariumError>
        do throws(ContainariumError) { r = .success(try await body()) } catch { r = .failure(error) }
        await gate.release()
        return try r.get()
    }

    public func close() async {
        try? pool.close()
    }
}

/// A lock for async code: waiters resume in arrival order.
actor AsyncGate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        if !busy {
            busy = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
    }
}
