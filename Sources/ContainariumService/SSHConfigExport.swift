public import ContainariumCore
public import Foundation

/// Renders the `~/.ssh/config` stanzas a user needs: a proxy-only jump host and their
/// environment behind it, in the reference implementation's layout.
public struct SSHConfigExport: Sendable {
    /// The SSH gateway clients connect to, with its host key so nobody has to trust on first use.
    public struct Gateway: Sendable, Equatable {
        public var host: String
        public var port: Int
        /// "ssh-ed25519 AAAA..."
        public var hostKey: String
        public init(host: String, port: Int, hostKey: String) {
            self.host = host
            self.port = port
            self.hostKey = hostKey
        }
    }

    public var user: Username
    public var jumpHost: String?
    public var containerIP: String
    public var keyPath: String
    public var gateway: Gateway?
    /// The environment sshd's host keys ("type base64"), pinned in the ProxyJump block.
    public var containerHostKeys: [String] = []

    public init(user: Username, jumpHost: String?, containerIP: String, keyPath: String?, gateway: Gateway? = nil,
                containerHostKeys: [String] = []) throws(ContainariumError) {
        if let keyPath { try Self.checkKeyPath(keyPath) }
        guard jumpHost != nil || gateway != nil else { throw .invalid("give --jump-ip, or run an SSH gateway (--gateway HOST[:PORT])") }
        if let jumpHost { try Self.checkHost(jumpHost) }
        if let gateway {
            try Self.checkHost(gateway.host)
            guard (1...65535).contains(gateway.port) else { throw .invalid("gateway port must be between 1 and 65535") }
            guard Self.isKeyLine(gateway.hostKey) else { throw .invalid("gateway host key is not an OpenSSH public key") }
        }
        self.gateway = gateway
        self.containerHostKeys = containerHostKeys.filter(Self.isKeyLine).map { $0.split(separator: " ").prefix(2).joined(separator: " ") }
        self.user = user
        self.jumpHost = jumpHost
        self.containerIP = containerIP
        self.keyPath = keyPath ?? "~/.ssh/containarium_\(user.value)"
    }

    /// A key path is one path: nothing that could end the IdentityFile line or add directives.
    public static func checkKeyPath(_ keyPath: String) throws(ContainariumError) {
        guard !keyPath.isEmpty, !keyPath.contains(where: { $0.isNewline || $0 == "\"" || $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 || $0 == 0x7F } == true }) else {
            throw .invalid("the key path must be one path without spaces, quotes or control characters")
        }
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

    /// "type base64" with nothing that could break out of a config line.
    static func isKeyLine(_ s: String) -> Bool {
        let parts = s.split(separator: " ")
        guard parts.count >= 2, SSHPublicKey.allowedTypes.contains(String(parts[0])) else { return false }
        return parts[1].allSatisfy { $0.isLetter && $0.isASCII || $0.isNumber && $0.isASCII || $0 == "+" || $0 == "/" || $0 == "=" }
    }

    public func render(now: Date = Date()) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        var text = """
            # Containarium SSH Configuration
            # User: \(user.value)
            # Generated: \(f.string(from: now)) UTC

            """
        if let gateway {
            let alias = "containarium-gateway-\(gateway.host)"
            let hostKey = gateway.hostKey.split(separator: " ").prefix(2).joined(separator: " ")
            text += """

                # Through the Containarium SSH gateway: the user name picks the environment.
                # The gateway's host key is pinned here, so there is no trust-on-first-use prompt.
                Host \(user.value)-dev
                    HostName \(gateway.host)
                    Port \(gateway.port)
                    User \(user.value)
                    IdentityFile \(keyPath)
                    IdentitiesOnly yes
                    HostKeyAlias \(alias)
                    KnownHostsCommand /bin/echo \(alias) \(hostKey)
                    StrictHostKeyChecking yes

                """
            if let preferredContainerKey = containerHostKeys.first(where: { $0.hasPrefix("ssh-ed25519 ") }) ?? containerHostKeys.first {
                text += """

                    # ProxyJump through the gateway to the environment's own sshd (for tools that need it).
                    Host \(user.value)-direct
                        HostName \(containerIP)
                        User \(user.value)
                        IdentityFile \(keyPath)
                        IdentitiesOnly yes
                        ProxyJump \(user.value)-dev
                        HostKeyAlias \(user.containerName)
                        KnownHostsCommand /bin/echo \(user.containerName) \(preferredContainerKey)
                        StrictHostKeyChecking yes

                    """
            }
        }
        guard let jumpHost else { return text }
        return text + """

            # Jump server (proxy-only account)
            Host containarium-jump
                HostName \(jumpHost)
                User \(user.value)
                IdentityFile \(keyPath)
                # No shell access - proxy-only account

            # User's development container
            Host \(gateway == nil ? "\(user.value)-dev" : "\(user.value)-via-jump")
                HostName \(containerIP)
                User \(user.value)
                IdentityFile \(keyPath)
                ProxyJump containarium-jump
                StrictHostKeyChecking accept-new

            """
    }
}
