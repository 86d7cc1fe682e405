public import ContainariumCore
import Crypto
import Foundation
public import NIOSSH

/// The gateway's two Ed25519 keys, generated once and kept in `keyDir` (0600 files, 0700 dir):
/// the host key clients pin, and the upstream key the gateway uses to log in to environments.
public struct GatewayKeys: Sendable {
    public let hostKey: NIOSSHPrivateKey
    public let upstreamKey: NIOSSHPrivateKey

    static let header = "containarium-ed25519-v1"

    public static func loadOrCreate(dir: String) throws(ContainariumError) -> GatewayKeys {
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .internal("cannot create the gateway key directory \(dir)", cause: "\(error)")
        }
        return GatewayKeys(hostKey: try key(at: dir + "/ssh_host_ed25519_key"), upstreamKey: try key(at: dir + "/upstream_ed25519_key"))
    }

    /// The host key's public half, for `export` on the gateway's node (never creates a key).
    public static func hostPublicKey(dir: String) throws(ContainariumError) -> String {
        let path = dir + "/ssh_host_ed25519_key"
        guard FileManager.default.fileExists(atPath: path) else {
            throw .notFound("no gateway host key at \(path): start the gateway once (`containarium gateway` or `daemon --ssh-port`), or pass --gateway-key-dir")
        }
        return String(openSSHPublicKey: try key(at: path).publicKey)
    }

    /// Read a key, or generate and persist it the first time (never overwritten).
    static func key(at path: String) throws(ContainariumError) -> NIOSSHPrivateKey {
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let parts = text.split(whereSeparator: \.isWhitespace)
            guard parts.count == 2, parts[0] == header, let raw = Data(base64Encoded: String(parts[1])),
                  let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
                throw ContainariumError(.failedPrecondition, "\(path) is not a gateway key; move it away to generate a new one")
            }
            return NIOSSHPrivateKey(ed25519Key: key)
        }
        let key = Curve25519.Signing.PrivateKey()
        let body = "\(header) \(key.rawRepresentation.base64EncodedString())\n"
        // Create exclusively with 0600 so the secret is never readable by others, not even briefly.
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw .internal("cannot create \(path)", cause: String(cString: strerror(errno))) }
        defer { close(fd) }
        let ok = body.utf8CString.withUnsafeBufferPointer { p in write(fd, p.baseAddress, p.count - 1) == p.count - 1 }
        guard ok, fsync(fd) == 0 else { throw .internal("cannot write \(path)", cause: String(cString: strerror(errno))) }
        return NIOSSHPrivateKey(ed25519Key: key)
    }

    /// "ssh-ed25519 AAAA..." of the host key, for known_hosts lines.
    public var hostPublicKey: String { String(openSSHPublicKey: hostKey.publicKey) }
    public var upstreamPublicKey: String { String(openSSHPublicKey: upstreamKey.publicKey) }
    public var hostKeyFingerprint: String { Self.fingerprint(hostPublicKey) }

    /// OpenSSH-style SHA256 fingerprint of "type base64".
    public static func fingerprint(_ openSSHKey: String) -> String {
        let parts = openSSHKey.split(separator: " ")
        guard parts.count >= 2, let blob = Data(base64Encoded: String(parts[1])) else { return "?" }
        let digest = Data(SHA256.hash(data: blob)).base64EncodedString()
        return "SHA256:" + digest.replacingOccurrences(of: "=", with: "")
    }
}
