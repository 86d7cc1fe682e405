public import ContainariumCore
public import Foundation

/// Renders the `~/.ssh/config` stanzas a user needs: a proxy-only jump host and their
/// environment behind it, in the reference implementation's layout.
public struct SSHConfigExport: Sendable {
    public var user: Username
    public var jumpHost: String
    public var containerIP: String
    public var keyPath: String

    public init(user: Username, jumpHost: String, containerIP: String, keyPath: String?) throws(ContainariumError) {
        try Self.checkHost(jumpHost)
        if let keyPath {
            guard !keyPath.isEmpty, !keyPath.contains(where: { $0.isNewline || $0 == "\"" }), !keyPath.contains(" ") else {
                throw .invalid("key path '\(keyPath)' must be one path without spaces, quotes or newlines")
            }
        }
        self.user = user
        self.jumpHost = jumpHost
        self.containerIP = containerIP
        self.keyPath = keyPath ?? "~/.ssh/containarium_\(user.value)"
    }

    /// A jump host must be an IPv4/IPv6 address or a DNS name: nothing that could inject
    /// further ssh_config directives.
    static func checkHost(_ host: String) throws(ContainariumError) {
        guard !host.isEmpty, host.count <= 253 else { throw .invalid("jump host is empty or too long") }
        let allowed = host.unicodeScalars.allSatisfy { s in
            (s.value >= 0x30 && s.value <= 0x39) || (s.value >= 0x41 && s.value <= 0x5A) || (s.value >= 0x61 && s.value <= 0x7A)
                || s == "." || s == "-" || s == ":" || s == "[" || s == "]"
        }
        guard allowed, !host.hasPrefix("-") else { throw .invalid("jump host '\(host)' is not an IP address or host name") }
    }

    public func render(now: Date = Date()) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return """
            # Containarium SSH Configuration
            # User: \(user.value)
            # Generated: \(f.string(from: now)) UTC

            # Jump server (proxy-only account)
            Host containarium-jump
                HostName \(jumpHost)
                User \(user.value)
                IdentityFile \(keyPath)
                # No shell access - proxy-only account

            # User's development container
            Host \(user.value)-dev
                HostName \(containerIP)
                User \(user.value)
                IdentityFile \(keyPath)
                ProxyJump containarium-jump
                StrictHostKeyChecking accept-new

            """
    }
}
