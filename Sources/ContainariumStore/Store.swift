public import ContainariumCore
public import Foundation
public import Logging

/// The daemon's persistent state over either engine: owners, keys, collaborators, operations,
/// audit entries and settings. Incus stays the source of truth for what exists.
public struct Store: Sendable {
    public let db: any SQLDatabase

    public init(db: any SQLDatabase) { self.db = db }

    /// `postgres://...` opens PostgreSQL; anything else is a SQLite file path.
    public static func open(databaseURL: String?, stateDir: String, logger: Logger) throws(ContainariumError) -> Store {
        if let url = databaseURL, url.hasPrefix("postgres") {
            return Store(db: try PostgresDatabase(url: url, logger: logger))
        }
        let path = databaseURL.map { $0.hasPrefix("sqlite://") ? String($0.dropFirst("sqlite://".count)) : $0 }
            ?? (stateDir as NSString).appendingPathComponent("containarium.db")
        return Store(db: try SQLiteDatabase(path: path))
    }

    @discardableResult
    public func migrate() async throws(ContainariumError) -> [Int] {
        try await db.migrate(Schema.migrations)
    }

    // MARK: containers

    private static func container(_ r: SQLRow) -> ContainerRecord? {
        guard let u = r["username"].string, let o = r["owner"].string, let n = r["node"].string, let b = r["backend"].string,
              let p = r["phase"].string.flatMap(ContainerPhase.init(rawValue:)), let c = r["created_at"].date, let up = r["updated_at"].date
        else { return nil }
        return ContainerRecord(username: u, owner: o, node: n, backend: b, image: r["image"].string, phase: p,
                               operationID: r["operation_id"].string, createdAt: c, updatedAt: up)
    }

    /// Insert a new record; `.alreadyExists` when the username is taken.
    public func insertContainer(_ c: ContainerRecord) async throws(ContainariumError) {
        do throws(ContainariumError) {
            try await db.query(
                "INSERT INTO containers (username, owner, node, backend, image, phase, operation_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [.text(c.username), .text(c.owner), .text(c.node), .text(c.backend), SQLValue(c.image), .text(c.phase.rawValue),
                 SQLValue(c.operationID), SQLValue(c.createdAt), SQLValue(c.updatedAt)])
        } catch where error.code == .alreadyExists {
            throw .alreadyExists("an environment for \(c.username) already exists")
        }
    }

    public func upsertContainer(_ c: ContainerRecord) async throws(ContainariumError) {
        try await db.query(
            """
            INSERT INTO containers (username, owner, node, backend, image, phase, operation_id, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (username) DO UPDATE SET owner = excluded.owner, node = excluded.node, backend = excluded.backend,
              image = excluded.image, phase = excluded.phase, operation_id = excluded.operation_id, updated_at = excluded.updated_at
            """,
            [.text(c.username), .text(c.owner), .text(c.node), .text(c.backend), SQLValue(c.image), .text(c.phase.rawValue),
             SQLValue(c.operationID), SQLValue(c.createdAt), SQLValue(c.updatedAt)])
    }

    public func setPhase(_ username: String, _ phase: ContainerPhase) async throws(ContainariumError) {
        try await db.query("UPDATE containers SET phase = ?, updated_at = ? WHERE username = ?",
                           [.text(phase.rawValue), SQLValue(Date()), .text(username)])
    }

    public func container(_ username: String) async throws(ContainariumError) -> ContainerRecord? {
        try await db.query("SELECT * FROM containers WHERE username = ?", [.text(username)]).first.flatMap(Self.container)
    }

    public func containers(node: String? = nil) async throws(ContainariumError) -> [ContainerRecord] {
        let rows: [SQLRow]
        if let node {
            rows = try await db.query("SELECT * FROM containers WHERE node = ? ORDER BY username", [.text(node)])
        } else {
            rows = try await db.query("SELECT * FROM containers ORDER BY username", [])
        }
        return rows.compactMap(Self.container)
    }

    /// Remove a container's record with its keys and collaborators. Returns whether it existed.
    @discardableResult
    public func deleteContainer(_ username: String) async throws(ContainariumError) -> Bool {
        try await db.query("DELETE FROM ssh_keys WHERE username = ?", [.text(username)])
        try await db.query("DELETE FROM collaborators WHERE username = ?", [.text(username)])
        return !(try await db.query("DELETE FROM containers WHERE username = ? RETURNING username", [.text(username)])).isEmpty
    }

    // MARK: keys

    public func addKey(_ k: KeyRecord) async throws(ContainariumError) {
        do throws(ContainariumError) {
            try await db.query("INSERT INTO ssh_keys (username, fingerprint, public_key, added_at) VALUES (?, ?, ?, ?)",
                               [.text(k.username), .text(k.fingerprint), .text(k.publicKey), SQLValue(k.addedAt)])
        } catch where error.code == .alreadyExists {
            throw .alreadyExists("key \(k.fingerprint) is already installed for \(k.username)")
        }
    }

    public func keys(_ username: String) async throws(ContainariumError) -> [KeyRecord] {
        try await db.query("SELECT * FROM ssh_keys WHERE username = ? ORDER BY added_at, fingerprint", [.text(username)]).compactMap { r in
            guard let u = r["username"].string, let f = r["fingerprint"].string, let k = r["public_key"].string, let a = r["added_at"].date else { return nil }
            return KeyRecord(username: u, fingerprint: f, publicKey: k, addedAt: a)
        }
    }

    @discardableResult
    public func removeKey(_ username: String, fingerprint: String) async throws(ContainariumError) -> Bool {
        !(try await db.query("DELETE FROM ssh_keys WHERE username = ? AND fingerprint = ? RETURNING fingerprint", [.text(username), .text(fingerprint)])).isEmpty
    }

    // MARK: collaborators

    public func addCollaborator(_ c: CollaboratorRecord) async throws(ContainariumError) {
        do throws(ContainariumError) {
            try await db.query("INSERT INTO collaborators (username, collaborator, added_by, added_at, sudo, container_runtime) VALUES (?, ?, ?, ?, ?, ?)",
                               [.text(c.username), .text(c.collaborator), .text(c.addedBy), SQLValue(c.addedAt),
                                .int(c.sudo ? 1 : 0), .int(c.containerRuntime ? 1 : 0)])
        } catch where error.code == .alreadyExists {
            throw .alreadyExists("\(c.collaborator) already collaborates on \(c.username)'s environment")
        }
    }

    private static func collaborator(_ r: SQLRow) -> CollaboratorRecord? {
        guard let u = r["username"].string, let c = r["collaborator"].string, let b = r["added_by"].string, let a = r["added_at"].date else { return nil }
        return CollaboratorRecord(username: u, collaborator: c, addedBy: b, addedAt: a,
                                  sudo: (r["sudo"].int ?? 0) != 0, containerRuntime: (r["container_runtime"].int ?? 0) != 0)
    }

    public func collaborators(of username: String) async throws(ContainariumError) -> [CollaboratorRecord] {
        try await db.query("SELECT * FROM collaborators WHERE username = ? ORDER BY collaborator", [.text(username)]).compactMap(Self.collaborator)
    }

    /// Environments `user` collaborates on (not the ones it owns).
    public func collaborations(of user: String) async throws(ContainariumError) -> [String] {
        try await db.query("SELECT username FROM collaborators WHERE collaborator = ? ORDER BY username", [.text(user)]).compactMap { $0["username"].string }
    }

    @discardableResult
    public func removeCollaborator(_ username: String, collaborator: String) async throws(ContainariumError) -> Bool {
        !(try await db.query("DELETE FROM collaborators WHERE username = ? AND collaborator = ? RETURNING collaborator",
                             [.text(username), .text(collaborator)])).isEmpty
    }

    // MARK: operations

    private static func operation(_ r: SQLRow) -> OperationRecord? {
        guard let id = r["id"].string, let kind = r["kind"].string, let target = r["target"].string, let actor = r["actor"].string,
              let node = r["node"].string, let daemon = r["daemon"].string, let state = r["state"].string.flatMap(OperationState.init(rawValue:)),
              let c = r["created_at"].date, let u = r["updated_at"].date
        else { return nil }
        return OperationRecord(
            id: id, kind: kind, target: target, actor: actor, node: node, daemon: daemon, state: state,
            step: Int(r["step"].int ?? 0), total: Int(r["total"].int ?? 0), message: r["message"].string ?? "",
            errorCode: r["error_code"].string, errorMessage: r["error_message"].string, result: r["result"].string, createdAt: c, updatedAt: u)
    }

    public func insertOperation(_ o: OperationRecord) async throws(ContainariumError) {
        try await db.query(
            """
            INSERT INTO operations (id, kind, target, actor, node, daemon, state, step, total, message, error_code, error_message, result, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(o.id), .text(o.kind), .text(o.target), .text(o.actor), .text(o.node), .text(o.daemon), .text(o.state.rawValue),
             .int(Int64(o.step)), .int(Int64(o.total)), .text(o.message), SQLValue(o.errorCode), SQLValue(o.errorMessage),
             SQLValue(o.result), SQLValue(o.createdAt), SQLValue(o.updatedAt)])
    }

    public func updateProgress(_ id: String, step: Int, total: Int, message: String) async throws(ContainariumError) {
        try await db.query("UPDATE operations SET step = ?, total = ?, message = ?, updated_at = ? WHERE id = ? AND state = 'running'",
                           [.int(Int64(step)), .int(Int64(total)), .text(message), SQLValue(Date()), .text(id)])
    }

    /// Move a running operation to its final state. Returns false when it was already final.
    @discardableResult
    public func finishOperation(_ id: String, state: OperationState, result: String? = nil, errorCode: String? = nil,
                                errorMessage: String? = nil, message: String? = nil) async throws(ContainariumError) -> Bool {
        !(try await db.query(
            """
            UPDATE operations SET state = ?, result = ?, error_code = ?, error_message = ?, message = COALESCE(?, message), updated_at = ?
            WHERE id = ? AND state = 'running' RETURNING id
            """,
            [.text(state.rawValue), SQLValue(result), SQLValue(errorCode), SQLValue(errorMessage), SQLValue(message), SQLValue(Date()), .text(id)])).isEmpty
    }

    public func operation(_ id: String) async throws(ContainariumError) -> OperationRecord? {
        try await db.query("SELECT * FROM operations WHERE id = ?", [.text(id)]).first.flatMap(Self.operation)
    }

    public func operations(state: OperationState? = nil, node: String? = nil, limit: Int = 200) async throws(ContainariumError) -> [OperationRecord] {
        var sql = "SELECT * FROM operations WHERE 1 = 1"
        var binds: [SQLValue] = []
        if let state { sql += " AND state = ?"; binds.append(.text(state.rawValue)) }
        if let node { sql += " AND node = ?"; binds.append(.text(node)) }
        sql += " ORDER BY created_at DESC LIMIT ?"
        binds.append(.int(Int64(max(1, min(limit, 10_000)))))
        return try await db.query(sql, binds).compactMap(Self.operation)
    }

    // MARK: audit

    public func appendAudit(_ e: AuditEntry) async throws(ContainariumError) {
        try await db.query(
            "INSERT INTO audit (id, at, actor, role, action, target, source, interface, result, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [.text(e.id), SQLValue(e.at), .text(e.actor), .text(e.role), .text(e.action), .text(e.target), .text(e.source),
             .text(e.interface), .text(e.result), .text(e.detail)])
    }

    /// Retention: delete entries older than `before`, then all but the newest `keep` (entries
    /// sharing the timestamp of the oldest kept one stay). Returns how many were deleted.
    @discardableResult
    public func pruneAudit(before: Date?, keep: Int?) async throws(ContainariumError) -> Int {
        var deleted = 0
        if let before {
            deleted += try await db.query("DELETE FROM audit WHERE at < ? RETURNING id", [SQLValue(before)]).count
        }
        if let keep {
            deleted += try await db.query(
                "DELETE FROM audit WHERE at < (SELECT at FROM audit ORDER BY at DESC LIMIT 1 OFFSET ?) RETURNING id",
                [.int(Int64(max(0, keep - 1)))]).count
        }
        return deleted
    }

    public func audit(_ f: AuditFilter) async throws(ContainariumError) -> [AuditEntry] {
        var sql = "SELECT * FROM audit WHERE 1 = 1"
        var binds: [SQLValue] = []
        if let v = f.actor { sql += " AND actor = ?"; binds.append(.text(v)) }
        if let v = f.action { sql += " AND action = ?"; binds.append(.text(v)) }
        if let v = f.target { sql += " AND target = ?"; binds.append(.text(v)) }
        if let v = f.result { sql += " AND result = ?"; binds.append(.text(v)) }
        if let v = f.since { sql += " AND at >= ?"; binds.append(SQLValue(v)) }
        if let v = f.until { sql += " AND at < ?"; binds.append(SQLValue(v)) }
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        binds.append(.int(Int64(max(1, min(f.limit, 10_000)))))
        return try await db.query(sql, binds).compactMap { r in
            guard let id = r["id"].string, let at = r["at"].date else { return nil }
            return AuditEntry(id: id, at: at, actor: r["actor"].string ?? "", role: r["role"].string ?? "", action: r["action"].string ?? "",
                              target: r["target"].string ?? "", source: r["source"].string ?? "", interface: r["interface"].string ?? "",
                              result: r["result"].string ?? "", detail: r["detail"].string ?? "")
        }
    }

    // MARK: scan reports

    public func addScanReport(_ r: ScanRecord) async throws(ContainariumError) {
        try await db.query(
            "INSERT INTO scan_reports (id, username, node, scanner, started_at, duration_ms, status, error, findings, trigger, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [.text(r.id), .text(r.username), .text(r.node), .text(r.scanner), SQLValue(r.startedAt), .int(r.durationMs), .text(r.status),
             .text(r.error), .int(Int64(r.findings)), .text(r.trigger), .text(r.report)])
    }

    /// Reports, newest first: of `scanner` (nil: all), of `username` (nil: everyone's).
    public func scanReports(scanner: String?, username: String?, limit: Int) async throws(ContainariumError) -> [ScanRecord] {
        var sql = "SELECT * FROM scan_reports WHERE 1 = 1"
        var binds: [SQLValue] = []
        if let scanner { sql += " AND scanner = ?"; binds.append(.text(scanner)) }
        if let username { sql += " AND username = ?"; binds.append(.text(username)) }
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        binds.append(.int(Int64(max(1, min(limit, 10_000)))))
        return try await db.query(sql, binds).compactMap(Self.scanRecord)
    }

    /// The newest report of each environment by `scanner`.
    public func latestScanReports(scanner: String) async throws(ContainariumError) -> [ScanRecord] {
        let sql = """
            SELECT r.* FROM scan_reports r
            JOIN (SELECT username, MAX(started_at) AS at FROM scan_reports WHERE scanner = ? GROUP BY username) m
              ON r.username = m.username AND r.started_at = m.at
            WHERE r.scanner = ? ORDER BY r.username
            """
        var seen = Set<String>()
        return try await db.query(sql, [.text(scanner), .text(scanner)]).compactMap(Self.scanRecord).filter { seen.insert($0.username).inserted }
    }

    /// An environment's reports, every scanner's (it was deleted: a new one of that name starts
    /// with none).
    public func deleteScanReports(username: String) async throws(ContainariumError) {
        try await db.query("DELETE FROM scan_reports WHERE username = ?", [.text(username)])
    }

    /// Retention: the newest `keep` reports of each environment and scanner stay.
    public func pruneScanReports(keep: Int) async throws(ContainariumError) {
        let sql = """
            DELETE FROM scan_reports WHERE id IN (
              SELECT id FROM (
                SELECT id, ROW_NUMBER() OVER (PARTITION BY username, scanner ORDER BY started_at DESC, id DESC) AS n FROM scan_reports
              ) ranked WHERE n > ?)
            """
        try await db.query(sql, [.int(Int64(max(1, keep)))])
    }

    private static func scanRecord(_ r: SQLRow) -> ScanRecord? {
        guard let id = r["id"].string, let at = r["started_at"].date, let username = r["username"].string, let scanner = r["scanner"].string else { return nil }
        return ScanRecord(id: id, username: username, node: r["node"].string ?? "", scanner: scanner, startedAt: at, durationMs: r["duration_ms"].int ?? 0,
                          status: r["status"].string ?? "", error: r["error"].string ?? "", findings: Int(r["findings"].int ?? 0),
                          trigger: r["trigger"].string ?? "", report: r["report"].string ?? "")
    }

    // MARK: settings

    public func setting(_ name: String) async throws(ContainariumError) -> String? {
        try await db.query("SELECT value FROM settings WHERE name = ?", [.text(name)]).first?["value"].string
    }

    /// Set `name` to `value` unless it is set already; true when this call set it (one of
    /// several daemons sharing the store wins a claim).
    public func claimSetting(_ name: String, _ value: String) async throws(ContainariumError) -> Bool {
        try await db.query("INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                           [.text(name), .text(value), SQLValue(Date())])
        return try await setting(name) == value
    }

    /// Every setting whose name starts with `prefix` (which holds no LIKE wildcard), by name.
    public func settings(prefix: String) async throws(ContainariumError) -> [String: String] {
        guard !prefix.contains("%"), !prefix.contains("_") else { throw .invalid("a settings prefix must not contain % or _") }
        let rows = try await db.query("SELECT name, value FROM settings WHERE name LIKE ?", [.text(prefix + "%")])
        var out: [String: String] = [:]
        for r in rows {
            if let n = r["name"].string, n.hasPrefix(prefix), let v = r["value"].string { out[n] = v }
        }
        return out
    }

    /// Remove every setting whose name starts with `prefix` (no LIKE wildcard) last written
    /// before `date` (claims of rounds long past).
    public func deleteSettings(prefix: String, updatedBefore date: Date) async throws(ContainariumError) {
        guard !prefix.isEmpty, !prefix.contains("%"), !prefix.contains("_") else { throw .invalid("a settings prefix must be non-empty, without % or _") }
        try await db.query("DELETE FROM settings WHERE name LIKE ? AND updated_at < ?", [.text(prefix + "%"), SQLValue(date)])
    }

    /// Remove one setting; true when it existed.
    @discardableResult
    public func deleteSetting(_ name: String) async throws(ContainariumError) -> Bool {
        guard try await setting(name) != nil else { return false }
        try await db.query("DELETE FROM settings WHERE name = ?", [.text(name)])
        return true
    }

    public func setSetting(_ name: String, _ value: String) async throws(ContainariumError) {
        try await db.query(
            "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            [.text(name), .text(value), SQLValue(Date())])
    }

    // MARK: SSH gateway bans

    private static func ban(_ r: SQLRow) -> GatewayBanRecord? {
        guard let a = r["address"].string, let b = r["banned_at"].date, let u = r["until"].date else { return nil }
        return GatewayBanRecord(address: a, bannedAt: b, until: u, failures: Int(r["failures"].int ?? 0))
    }

    public func saveBan(_ b: GatewayBanRecord) async throws(ContainariumError) {
        try await db.query(
            """
            INSERT INTO gateway_bans (address, banned_at, until, failures) VALUES (?, ?, ?, ?)
            ON CONFLICT (address) DO UPDATE SET banned_at = excluded.banned_at, until = excluded.until, failures = excluded.failures
            """,
            [.text(b.address), SQLValue(b.bannedAt), SQLValue(b.until), .int(Int64(b.failures))])
    }

    /// Bans still in force at `now` (expired ones are removed on the way).
    public func activeBans(now: Date = Date()) async throws(ContainariumError) -> [GatewayBanRecord] {
        try await db.query("DELETE FROM gateway_bans WHERE until <= ?", [SQLValue(now)])
        return try await db.query("SELECT * FROM gateway_bans ORDER BY address", []).compactMap(Self.ban)
    }

    @discardableResult
    public func deleteBan(_ address: String) async throws(ContainariumError) -> Bool {
        !(try await db.query("DELETE FROM gateway_bans WHERE address = ? RETURNING address", [.text(address)])).isEmpty
    }

    // MARK: cluster nodes

    public func setNodeDraining(_ name: String, _ draining: Bool) async throws(ContainariumError) {
        try await db.query("UPDATE nodes SET draining = ?, updated_at = ? WHERE name = ?", [.int(draining ? 1 : 0), SQLValue(Date()), .text(name)])
    }

    public func saveNode(name: String, address: String, info: String, draining: Bool) async throws(ContainariumError) {
        try await db.query(
            """
            INSERT INTO nodes (name, address, info, draining, updated_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (name) DO UPDATE SET address = excluded.address, info = excluded.info, draining = excluded.draining, updated_at = excluded.updated_at
            """,
            [.text(name), .text(address), .text(info), .int(draining ? 1 : 0), SQLValue(Date())])
    }

    /// What a node reported; its draining flag (set by `setNodeDraining`) is kept.
    public func saveNodeReport(name: String, address: String, info: String) async throws(ContainariumError) {
        try await db.query(
            """
            INSERT INTO nodes (name, address, info, draining, updated_at) VALUES (?, ?, ?, 0, ?)
            ON CONFLICT (name) DO UPDATE SET address = excluded.address, info = excluded.info, updated_at = excluded.updated_at
            """,
            [.text(name), .text(address), .text(info), SQLValue(Date())])
    }

    // MARK: placements (capacity held for creates in flight, shared by control planes)

    public struct PlacementRow: Sendable, Equatable {
        public var name: String
        public var node: String
        public var cpuMillis: Int64
        public var memoryBytes: Int64
        public var diskBytes: Int64
        public var gpus: [String]
        public var daemon: String
        public var createdAt: Date
        public init(name: String, node: String, cpuMillis: Int64, memoryBytes: Int64, diskBytes: Int64, gpus: [String], daemon: String, createdAt: Date = Date()) {
            self.name = name
            self.node = node
            self.cpuMillis = cpuMillis
            self.memoryBytes = memoryBytes
            self.diskBytes = diskBytes
            self.gpus = gpus
            self.daemon = daemon
            self.createdAt = createdAt
        }
    }

    public func insertPlacement(_ p: PlacementRow) async throws(ContainariumError) {
        try await db.query(
            "INSERT INTO placements (name, node, cpu_millis, memory_bytes, disk_bytes, gpus, daemon, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [.text(p.name), .text(p.node), .int(p.cpuMillis), .int(p.memoryBytes), .int(p.diskBytes), .text(p.gpus.joined(separator: ",")),
             .text(p.daemon), SQLValue(p.createdAt)])
    }

    public func placements() async throws(ContainariumError) -> [PlacementRow] {
        try await db.query("SELECT * FROM placements ORDER BY name", []).compactMap { r in
            guard let n = r["name"].string, let node = r["node"].string, let c = r["cpu_millis"].int, let m = r["memory_bytes"].int,
                  let d = r["disk_bytes"].int, let g = r["gpus"].string, let daemon = r["daemon"].string, let at = r["created_at"].date else { return nil }
            return PlacementRow(name: n, node: node, cpuMillis: c, memoryBytes: m, diskBytes: d, gpus: g.split(separator: ",").map(String.init),
                                daemon: daemon, createdAt: at)
        }
    }

    @discardableResult
    public func deletePlacement(_ name: String) async throws(ContainariumError) -> Bool {
        !(try await db.query("DELETE FROM placements WHERE name = ? RETURNING name", [.text(name)])).isEmpty
    }

    /// Placements older than `before` (their create died with its control plane).
    public func expirePlacements(before: Date) async throws(ContainariumError) -> Int {
        try await db.query("DELETE FROM placements WHERE created_at < ? RETURNING name", [SQLValue(before)]).count
    }

    /// (name, address, info JSON, draining) of every node.
    public func nodes() async throws(ContainariumError) -> [(String, String, String, Bool)] {
        try await db.query("SELECT * FROM nodes ORDER BY name", []).compactMap { r in
            guard let n = r["name"].string, let a = r["address"].string, let i = r["info"].string else { return nil }
            return (n, a, i, (r["draining"].int ?? 0) != 0)
        }
    }

    @discardableResult
    public func deleteNode(_ name: String) async throws(ContainariumError) -> Bool {
        !(try await db.query("DELETE FROM nodes WHERE name = ? RETURNING name", [.text(name)])).isEmpty
    }
}
