public import ContainariumCore
import Foundation
public import Logging
import PostgresNIO

/// PostgreSQL through postgres-nio, for several daemons sharing one state. `run()` must be
/// running (the daemon puts it in its service group) for queries to make progress.
public final class PostgresDatabase: SQLDatabase {
    public let dialect = SQLDialect.postgres
    let client: PostgresClient
    private let logger: Logger
    /// Where the database lives, with any password removed (for logs and status output).
    public let redactedURL: String

    /// Key of the advisory lock that serializes migrations between daemons.
    static let migrationLock: Int64 = 0x636F_6E74_6169_6E

    public init(url: String, logger: Logger) throws(ContainariumError) {
        let parsed = try PostgresURL(url)
        var config = PostgresClient.Configuration(
            host: parsed.host, port: parsed.port, username: parsed.user, password: parsed.password,
            database: parsed.database, tls: .disable)
        config.options.minimumConnections = 0
        config.options.maximumConnections = 16
        self.client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.logger = logger
        self.redactedURL = parsed.redacted
    }

    /// Run the connection pool until cancelled.
    public func run() async { await client.run() }

    static func numbered(_ sql: String) -> String {
        var out = ""
        var n = 0
        for ch in sql {
            if ch == "?" { n += 1; out += "$\(n)" } else { out.append(ch) }
        }
        return out
    }

    static func bindings(_ binds: [SQLValue]) -> PostgresBindings {
        var b = PostgresBindings(capacity: binds.count)
        for v in binds {
            switch v {
            case .text(let s): b.append(s)
            case .int(let i): b.append(i)
            case .null: b.appendNull()
            }
        }
        return b
    }

    static func rows(_ sequence: PostgresRowSequence) async throws -> [SQLRow] {
        var out: [SQLRow] = []
        for try await row in sequence {
            var values: [String: SQLValue] = [:]
            for cell in row {
                if cell.bytes == nil { values[cell.columnName] = .null; continue }
                switch cell.dataType {
                case .int8, .int4, .int2: values[cell.columnName] = .int(try cell.decode(Int64.self))
                case .bool: values[cell.columnName] = .int(try cell.decode(Bool.self) ? 1 : 0)
                default: values[cell.columnName] = .text(try cell.decode(String.self))
                }
            }
            out.append(SQLRow(values))
        }
        return out
    }

    func map(_ error: any Error) -> ContainariumError {
        if let e = error as? PSQLError {
            let state = e.serverInfo?[.sqlState]
            if state == "23505" {
                return ContainariumError(.alreadyExists, "a record with that key already exists", cause: e.serverInfo?[.message])
            }
            if let message = e.serverInfo?[.message] {
                return ContainariumError(.unavailable, "state database error (\(state ?? "?"))", cause: message)
            }
            return ContainariumError(.unavailable, "cannot reach the state database at \(redactedURL)", cause: "\(e.code)")
        }
        if let e = error as? ContainariumError { return e }
        return ContainariumError(.unavailable, "state database error", cause: "\(error)")
    }

    @discardableResult
    public func query(_ sql: String, _ binds: [SQLValue]) async throws(ContainariumError) -> [SQLRow] {
        do {
            let seq = try await client.query(PostgresQuery(unsafeSQL: Self.numbered(sql), binds: Self.bindings(binds)), logger: logger)
            return try await Self.rows(seq)
        } catch {
            throw map(error)
        }
    }

    public func appliedVersions() async throws(ContainariumError) -> [Int] {
        let exists = try await query("SELECT to_regclass('schema_migrations')::text AS t", [])
        guard exists.first?["t"].string != nil else { return [] }
        return try await query("SELECT version FROM schema_migrations ORDER BY version", []).compactMap { $0["version"].int.map(Int.init) }
    }

    public func migrate(_ migrations: [Migration]) async throws(ContainariumError) -> [Int] {
        let logger = self.logger
        do {
            return try await client.withConnection { conn in
                func run(_ sql: String, _ binds: [SQLValue] = []) async throws -> [SQLRow] {
                    try await Self.rows(conn.query(PostgresQuery(unsafeSQL: Self.numbered(sql), binds: Self.bindings(binds)), logger: logger))
                }
                // Session-level advisory lock: a second daemon waits here until the first is done.
                _ = try await run("SELECT pg_advisory_lock(\(Self.migrationLock))")
                do {
                    _ = try await run("BEGIN")
                    _ = try await run(Schema.migrationsTable)
                    let done = Set(try await run("SELECT version FROM schema_migrations").compactMap { $0["version"].int.map(Int.init) })
                    var applied: [Int] = []
                    for m in migrations.sorted(by: { $0.version < $1.version }) where !done.contains(m.version) {
                        for statement in m.statements { _ = try await run(statement) }
                        _ = try await run(
                            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                            [.int(Int64(m.version)), .text(m.name), SQLValue(Date())])
                        applied.append(m.version)
                    }
                    _ = try await run("COMMIT")
                    _ = try await run("SELECT pg_advisory_unlock(\(Self.migrationLock))")
                    return applied
                } catch {
                    _ = try? await run("ROLLBACK")
                    _ = try? await run("SELECT pg_advisory_unlock(\(Self.migrationLock))")
                    throw error
                }
            }
        } catch {
            throw map(error)
        }
    }

    public func close() async {}

    public func withLock<T: Sendable>(_ key: Int64, _ body: @Sendable () async throws(ContainariumError) -> T) async throws(ContainariumError) -> T {
        let logger = self.logger
        let outcome: Result<T, ContainariumError>
        do {
            outcome = try await client.withConnection { conn in
                // Session-level: held on this connection while `body` runs its queries on others.
                _ = try await conn.query(PostgresQuery(unsafeSQL: "SELECT pg_advisory_lock(\(key))"), logger: logger)
                let r: Result<T, ContainariumError>
                do throws(ContainariumError) { r = .success(try await body()) } catch { r = .failure(error) }
                _ = try await conn.query(PostgresQuery(unsafeSQL: "SELECT pg_advisory_unlock(\(key))"), logger: logger)
                return r
            }
        } catch {
            throw map(error)
        }
        return try outcome.get()
    }
}

/// `postgres://user:password@host:port/database` (postgresql:// accepted too).
public struct PostgresURL: Sendable, Equatable {
    public var user: String
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String

    public init(_ text: String) throws(ContainariumError) {
        guard let c = URLComponents(string: text), let scheme = c.scheme, ["postgres", "postgresql"].contains(scheme) else {
            throw .invalid("database URL must look like postgres://user:password@host:5432/database")
        }
        guard let host = c.host, !host.isEmpty else { throw .invalid("database URL has no host") }
        guard let user = c.user, !user.isEmpty else { throw .invalid("database URL has no user name") }
        let db = String(c.path.drop(while: { $0 == "/" }))
        guard !db.isEmpty else { throw .invalid("database URL has no database name") }
        if let q = c.queryItems, let mode = q.first(where: { $0.name == "sslmode" })?.value, mode != "disable" {
            throw .invalid("sslmode=\(mode) is not supported yet; use a loopback or private link with sslmode=disable")
        }
        self.user = user
        self.password = c.password
        self.host = host
        self.port = c.port ?? 5432
        self.database = db
    }

    public var redacted: String { "postgres://\(user)\(password == nil ? "" : ":***")@\(host):\(port)/\(database)" }
}
