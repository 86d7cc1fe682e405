/// The versioned schema. Append new migrations; never edit an applied one.
/// Types are TEXT and BIGINT only (timestamps: microseconds since the epoch), so every
/// statement runs unchanged on SQLite and PostgreSQL.
public enum Schema {
    static let migrationsTable = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)
        """

    public static let migrations: [Migration] = [
        Migration(version: 1, name: "containers, keys, collaborators", statements: [
            """
            CREATE TABLE containers (
                username TEXT PRIMARY KEY, owner TEXT NOT NULL, node TEXT NOT NULL, backend TEXT NOT NULL,
                image TEXT, phase TEXT NOT NULL, operation_id TEXT,
                created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)
            """,
            "CREATE INDEX containers_owner ON containers (owner)",
            """
            CREATE TABLE ssh_keys (
                username TEXT NOT NULL, fingerprint TEXT NOT NULL, public_key TEXT NOT NULL, added_at BIGINT NOT NULL,
                PRIMARY KEY (username, fingerprint))
            """,
            """
            CREATE TABLE collaborators (
                username TEXT NOT NULL, collaborator TEXT NOT NULL, added_by TEXT NOT NULL, added_at BIGINT NOT NULL,
                PRIMARY KEY (username, collaborator))
            """,
            "CREATE INDEX collaborators_by_collaborator ON collaborators (collaborator)",
        ]),
        Migration(version: 2, name: "operations", statements: [
            """
            CREATE TABLE operations (
                id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, actor TEXT NOT NULL, node TEXT NOT NULL,
                daemon TEXT NOT NULL, state TEXT NOT NULL, step BIGINT NOT NULL, total BIGINT NOT NULL, message TEXT NOT NULL,
                error_code TEXT, error_message TEXT, result TEXT,
                created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)
            """,
            "CREATE INDEX operations_state ON operations (state, node)",
        ]),
        Migration(version: 3, name: "audit log and settings", statements: [
            """
            CREATE TABLE audit (
                id TEXT PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL,
                target TEXT NOT NULL, source TEXT NOT NULL, interface TEXT NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL)
            """,
            "CREATE INDEX audit_at ON audit (at)",
            "CREATE INDEX audit_actor ON audit (actor, at)",
            "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at BIGINT NOT NULL)",
        ]),
        Migration(version: 4, name: "collaborator access levels, SSH gateway bans", statements: [
            "ALTER TABLE collaborators ADD COLUMN sudo BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE collaborators ADD COLUMN container_runtime BIGINT NOT NULL DEFAULT 0",
            """
            CREATE TABLE gateway_bans (
                address TEXT PRIMARY KEY, banned_at BIGINT NOT NULL, until BIGINT NOT NULL, failures BIGINT NOT NULL)
            """,
        ]),
        Migration(version: 5, name: "cluster nodes", statements: [
            """
            CREATE TABLE nodes (
                name TEXT PRIMARY KEY, address TEXT NOT NULL, info TEXT NOT NULL, draining BIGINT NOT NULL, updated_at BIGINT NOT NULL)
            """,
        ]),
        Migration(version: 6, name: "placements shared by control planes", statements: [
            """
            CREATE TABLE placements (
                name TEXT PRIMARY KEY, node TEXT NOT NULL, cpu_millis BIGINT NOT NULL, memory_bytes BIGINT NOT NULL,
                disk_bytes BIGINT NOT NULL, gpus TEXT NOT NULL, daemon TEXT NOT NULL, created_at BIGINT NOT NULL)
            """,
        ]),
        Migration(version: 7, name: "security scan reports", statements: [
            """
            CREATE TABLE scan_reports (
                id TEXT PRIMARY KEY, username TEXT NOT NULL, node TEXT NOT NULL, scanner TEXT NOT NULL, started_at BIGINT NOT NULL,
                duration_ms BIGINT NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL, findings BIGINT NOT NULL, trigger TEXT NOT NULL,
                report TEXT NOT NULL)
            """,
            "CREATE INDEX scan_reports_user ON scan_reports (username, scanner, started_at)",
            "CREATE INDEX scan_reports_at ON scan_reports (scanner, started_at)",
        ]),
    ]
}
