public import ContainariumCore
public import Foundation

/// A value bound to, or read from, a SQL statement. The schema uses only TEXT and BIGINT so
/// that one set of statements runs unchanged on SQLite and PostgreSQL.
public enum SQLValue: Sendable, Equatable, CustomStringConvertible {
    case text(String)
    case int(Int64)
    case null

    public init(_ s: String?) { self = s.map { .text($0) } ?? .null }
    public init(_ i: Int64?) { self = i.map { .int($0) } ?? .null }
    public init(_ d: Date?) { self = d.map { .int(Int64(($0.timeIntervalSince1970 * 1_000_000).rounded())) } ?? .null }

    public var string: String? {
        switch self {
        case .text(let s): return s
        case .int(let i): return String(i)
        case .null: return nil
        }
    }
    public var int: Int64? {
        switch self {
        case .int(let i): return i
        case .text(let s): return Int64(s)
        case .null: return nil
        }
    }
    /// Timestamps are stored as microseconds since the Unix epoch.
    public var date: Date? { int.map { Date(timeIntervalSince1970: Double($0) / 1_000_000) } }

    public var description: String {
        switch self {
        case .text: return "<text>"  // values may be secrets: never printed
        case .int(let i): return String(i)
        case .null: return "NULL"
        }
    }
}

public struct SQLRow: Sendable {
    public var values: [String: SQLValue]
    public init(_ values: [String: SQLValue]) { self.values = values }
    public subscript(_ column: String) -> SQLValue { values[column] ?? .null }
}

/// One versioned schema change. The same SQL runs on both engines.
public struct Migration: Sendable {
    public var version: Int
    public var name: String
    public var statements: [String]
}

public enum SQLDialect: String, Sendable { case sqlite, postgres }

/// The minimal surface the store needs from an engine. Statements use `?` placeholders;
/// the PostgreSQL adapter numbers them. Constraint violations surface as `.alreadyExists`.
public protocol SQLDatabase: Sendable {
    var dialect: SQLDialect { get }
    /// Run a statement and return the rows it produced (use RETURNING to learn what changed).
    @discardableResult
    func query(_ sql: String, _ binds: [SQLValue]) async throws(ContainariumError) -> [SQLRow]
    /// Apply every migration not yet recorded, atomically and under a lock that serializes
    /// concurrent daemons sharing one database.
    func migrate(_ migrations: [Migration]) async throws(ContainariumError) -> [Int]
    /// Versions applied so far.
    func appliedVersions() async throws(ContainariumError) -> [Int]
    func close() async
    /// Run `body` while holding a lock named by `key` that every daemon sharing this database
    /// respects (PostgreSQL: an advisory lock; SQLite, which one daemon owns: a lock in this
    /// process).
    func withLock<T: Sendable>(_ key: Int64, _ body: @Sendable () async throws(ContainariumError) -> T) async throws(ContainariumError) -> T
}
