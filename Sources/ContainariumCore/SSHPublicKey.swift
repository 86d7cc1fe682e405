import Foundation

/// An OpenSSH public key in `authorized_keys` form (`type base64 [comment]`), parsed and
/// checked rather than passed through: the type must be one OpenSSH accepts, the body must be
/// valid base64 whose embedded type matches, and the key material must have a sane size.
/// Options (`command="..."`, `from=...`) and multi-line input are refused.
public struct SSHPublicKey: Sendable, Hashable, Codable, CustomStringConvertible {
    public let type: String
    /// The base64 body exactly as given.
    public let body: String
    public let comment: String?
    /// `SHA256:...` fingerprint, as `ssh-keygen -lf` prints it.
    public let fingerprint: String

    public static let allowedTypes: Set<String> = [
        "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    ]

    public init(parsing raw: String) throws(ContainariumError) {
        let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !line.isEmpty else { throw .invalid("SSH public key is empty") }
        guard !line.contains("\n"), !line.contains("\r"), !line.contains("\0") else {
            throw .invalid("SSH public key must be a single line (one key per entry)")
        }
        guard !line.hasPrefix("-----") else {
            throw .invalid("this looks like a PEM file or a private key; give the OpenSSH public key (the .pub file)")
        }
        let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true).map(String.init)
        guard fields.count >= 2 else { throw .invalid("SSH public key must read '<type> <base64> [comment]'") }
        let type = fields[0]
        guard Self.allowedTypes.contains(type) else {
            if type.contains("=") || type.contains("\"") {
                throw .invalid("SSH public key options (\(type.prefix(20))...) are not accepted; give the bare key")
            }
            throw .invalid("unsupported SSH key type '\(type.prefix(40))' (use ssh-ed25519, ssh-rsa or ecdsa-sha2-*)")
        }
        let body = fields[1]
        guard let blob = Data(base64Encoded: body), !blob.isEmpty else {
            throw .invalid("SSH public key body is not valid base64")
        }
        var reader = SSHWireReader(blob)
        guard let embedded = reader.string(), embedded == type else {
            throw .invalid("SSH public key body does not match its type '\(type)'")
        }
        try Self.checkKeyMaterial(type: type, reader: &reader)
        let comment = fields.count > 2 ? fields[2].trimmingCharacters(in: .whitespaces) : nil
        if let comment, comment.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw .invalid("SSH public key comment contains control characters")
        }
        self.type = type
        self.body = body
        self.comment = (comment?.isEmpty ?? true) ? nil : comment
        self.fingerprint = "SHA256:" + SHA256.hash(blob).base64EncodedString().replacingOccurrences(of: "=", with: "")
    }

    private static func checkKeyMaterial(type: String, reader: inout SSHWireReader) throws(ContainariumError) {
        switch type {
        case "ssh-ed25519":
            guard let key = reader.bytes(), key.count == 32 else {
                throw .invalid("ssh-ed25519 key must hold 32 bytes of key material")
            }
        case "ssh-rsa":
            guard let e = reader.bytes(), !e.isEmpty, let n = reader.bytes() else {
                throw .invalid("ssh-rsa key is truncated")
            }
            let bits = (n.drop { $0 == 0 }.count) * 8
            guard bits >= 2040 else { throw .invalid("ssh-rsa key has \(bits) bits; at least 2048 are required") }
        case "sk-ssh-ed25519@openssh.com":
            guard let key = reader.bytes(), key.count == 32, reader.string() != nil else {
                throw .invalid("sk-ssh-ed25519 key is truncated")
            }
        default:  // ecdsa and sk-ecdsa: curve name then point
            guard let curve = reader.string(), type.contains(curve), let point = reader.bytes(), point.count >= 65 else {
                throw .invalid("\(type) key is truncated or names the wrong curve")
            }
        }
        if !type.hasPrefix("sk-") && !reader.atEnd {
            throw .invalid("SSH public key body has trailing data")
        }
    }

    /// Key types the SSH gateway can verify. swift-nio-ssh (0.15) implements Ed25519 and ECDSA
    /// only, with no way to add RSA or security-key types from outside, so such keys are refused
    /// where keys are registered instead of failing later at login.
    public static let gatewayTypes: Set<String> = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"]

    /// Refuse a key the gateway could never accept, saying why and what to do.
    public func requireGatewayCompatible() throws(ContainariumError) {
        guard !Self.gatewayTypes.contains(type) else { return }
        let what = type == "ssh-rsa" ? "RSA keys" : "security-key (\(type)) keys"
        throw .invalid("\(what) are not supported: the Containarium SSH gateway cannot verify them (its SSH library, swift-nio-ssh, implements only Ed25519 and ECDSA). Make an Ed25519 key with `ssh-keygen -t ed25519` (or ECDSA with `ssh-keygen -t ecdsa -b 256`) and register its .pub file; see docs/ssh.md")
    }

    /// Parse and check that the gateway can use the key.
    public static func registrable(_ raw: String) throws(ContainariumError) -> SSHPublicKey {
        let key = try SSHPublicKey(parsing: raw)
        try key.requireGatewayCompatible()
        return key
    }

    /// The `authorized_keys` line.
    public var authorizedKeysLine: String {
        if let comment { return "\(type) \(body) \(comment)" }
        return "\(type) \(body)"
    }

    public var description: String { "\(type) \(fingerprint)\(comment.map { " (\($0))" } ?? "")" }

    /// Parse a file that may hold several keys; blank lines and `#` comments are skipped.
    public static func parseMany(_ text: String) throws(ContainariumError) -> [SSHPublicKey] {
        var keys: [SSHPublicKey] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            do {
                keys.append(try SSHPublicKey(parsing: trimmed))
            } catch {
                throw .invalid("line \(n + 1): \(error.message)")
            }
        }
        guard !keys.isEmpty else { throw .invalid("no SSH public key found") }
        return keys
    }

    public init(from decoder: any Decoder) throws {
        self = try SSHPublicKey(parsing: decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(authorizedKeysLine)
    }
}

/// Reads SSH wire-format strings (uint32 big-endian length, then bytes).
struct SSHWireReader {
    private let data: [UInt8]
    private var offset = 0
    init(_ data: Data) { self.data = [UInt8](data) }

    var atEnd: Bool { offset == data.count }

    mutating func bytes() -> [UInt8]? {
        guard data.count - offset >= 4 else { return nil }
        let len = data[offset..<offset + 4].reduce(0) { ($0 << 8) | Int($1) }
        offset += 4
        guard len >= 0, data.count - offset >= len else { return nil }
        defer { offset += len }
        return Array(data[offset..<offset + len])
    }

    mutating func string() -> String? {
        guard let b = bytes() else { return nil }
        return String(bytes: b, encoding: .utf8)
    }
}
