import ContainariumCore
import ContainariumStore
import Foundation
import Logging

/// Mutations made by the local CLI go into the node's audit log too (interface "cli"), when the
/// node has a daemon state database (SQLite under $CONTAINARIUM_STATE_DIR or
/// /var/lib/containarium). The CLI never creates one: no daemon, no audit log to write.
enum LocalAudit {
    static var databasePath: String {
        let dir = ProcessInfo.processInfo.environment["CONTAINARIUM_STATE_DIR"] ?? "/var/lib/containarium"
        return (dir as NSString).appendingPathComponent("containarium.db")
    }

    static var actor: String {
        let env = ProcessInfo.processInfo.environment
        if let sudo = env["SUDO_USER"], !sudo.isEmpty { return sudo }
        if let pw = getpwuid(geteuid()), let name = pw.pointee.pw_name { return String(cString: name) }
        return "uid:\(geteuid())"
    }

    static func record(_ action: String, target: String, result: Result<Void, ContainariumError>, detail: String = "") async {
        guard FileManager.default.fileExists(atPath: databasePath) else { return }
        let outcome: String
        var text = detail
        switch result {
        case .success: outcome = "ok"
        case .failure(let e):
            outcome = e.code.rawValue
            text = detail.isEmpty ? e.message : "\(detail): \(e.message)"
        }
        do {
            let store = Store(db: try SQLiteDatabase(path: databasePath))
            guard !(try await store.db.appliedVersions()).isEmpty else { return }
            try await store.appendAudit(AuditEntry(
                actor: actor, role: geteuid() == 0 ? "admin" : "user", action: action, target: target, source: "local",
                interface: "cli", result: outcome, detail: text))
            await store.db.close()
        } catch {
            FileHandle.standardError.write(Data("warning: could not write the audit log at \(databasePath): \(error)\n".utf8))
        }
    }
}

extension ContainariumCLI {
    /// Run a mutating local action, record it in the node's audit log, map errors for the CLI.
    static func audited<T>(_ action: String, _ target: String, detail: String = "", _ body: () async throws(ContainariumError) -> T) async throws -> T {
        do {
            let value = try await body()
            await LocalAudit.record(action, target: target, result: .success(()), detail: detail)
            return value
        } catch {
            await LocalAudit.record(action, target: target, result: .failure(error), detail: detail)
            throw fail(error)
        }
    }
}
