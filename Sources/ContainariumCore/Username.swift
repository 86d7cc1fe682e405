/// A Containarium username: the Linux account inside the environment, and the stem of the
/// instance name (`<user>-container`).
///
/// The rule (documented in docs/operations.md):
/// - 1 to 32 characters (the Linux login-name limit);
/// - lowercase ASCII letters, digits and `-`;
/// - starts with a letter, does not end with `-`, no `--`;
/// - not a reserved system or service account name (`root`, `admin`, `daemon`, ...).
///
/// Letters-digits-hyphens keeps the name valid at once as a POSIX login name, an Incus
/// instance name (a DNS label) and an SSH config `Host` pattern.
public struct Username: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    public let value: String

    public static let maxLength = 32

    /// Names that belong to the system, the image's service accounts or the operator.
    public static let reserved: Set<String> = [
        "root", "admin", "administrator", "daemon", "bin", "sys", "sync", "games", "man", "lp",
        "mail", "news", "uucp", "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody",
        "nogroup", "messagebus", "sshd", "systemd-network", "systemd-resolve", "systemd-timesync",
        "systemd-coredump", "systemd-journal", "polkitd", "syslog", "sudo", "wheel", "adm", "staff",
        "users", "operator", "incus", "incus-admin", "lxd", "docker", "containarium", "ubuntu",
        "debian", "guest", "postgres", "redis", "mysql", "ssh", "git", "jump", "sentinel", "dnsmasq",
    ]

    public init(_ raw: String) throws(ContainariumError) {
        guard !raw.isEmpty else { throw .invalid("username is empty") }
        guard raw.utf8.count <= Self.maxLength else {
            throw .invalid("username '\(raw.prefix(40))' is longer than \(Self.maxLength) characters")
        }
        for byte in raw.utf8 {
            let ok = (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x2D
            guard ok else {
                throw .invalid(
                    "username '\(raw)' may contain only lowercase letters, digits and '-' (it names a Linux account and a container)"
                )
            }
        }
        guard let first = raw.utf8.first, first >= 0x61, first <= 0x7A else {
            throw .invalid("username '\(raw)' must start with a lowercase letter")
        }
        guard !raw.hasSuffix("-"), !raw.contains("--") else {
            throw .invalid("username '\(raw)' must not end with '-' or contain '--'")
        }
        guard !Self.reserved.contains(raw), !raw.hasPrefix("systemd-") else {
            throw .invalid("username '\(raw)' is reserved for the system; choose another")
        }
        self.value = raw
    }

    /// The instance name: `<user>-container`, as in the reference implementation.
    public var containerName: String { value + "-container" }

    /// The username for an instance name, when it follows the `<user>-container` pattern.
    public init?(containerName: String) {
        guard containerName.hasSuffix("-container") else { return nil }
        guard let user = try? Username(String(containerName.dropLast("-container".count))) else { return nil }
        self = user
    }

    public var description: String { value }
    public static func < (a: Username, b: Username) -> Bool { a.value < b.value }

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        self = try Username(raw)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value)
    }
}
