import ContainariumCore
import Foundation

/// SSH host keys generated on the host for a new container, before it first boots.
///
/// Why: a fresh image generates its host keys at first boot (`ssh-keygen -A`, about 0.6 s of
/// RSA key generation inside the container here), which delays the first login. Generating
/// ed25519 and ECDSA keys on the host takes milliseconds, and the host then knows the
/// container's public host keys, so they can be published instead of trusted on first use.
/// Private keys go straight from a 0700 temporary directory into the stopped container's
/// /etc/ssh with mode 0600 and are never logged or kept.
struct HostKeys: Sendable {
    struct Key: Sendable {
        var type: String  // "ed25519", "ecdsa"
        var privateKey: Data
        var publicKey: String
    }

    var keys: [Key]

    static let types = ["ed25519", "ecdsa"]

    static func keygenPath() -> String? {
        for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
            let p = dir + "/ssh-keygen"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    /// Generate the keys, or nil when ssh-keygen is not installed on the host.
    static func generate(comment: String) throws(ContainariumError) -> HostKeys? {
        guard let keygen = keygenPath() else { return nil }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("containarium-hostkeys-\(UUID().uuidString)")
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .internal("cannot create a private temporary directory for host keys", cause: error.localizedDescription)
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        var processes: [(String, Process)] = []
        for type in types {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: keygen)
            p.arguments = ["-q", "-t", type, "-N", "", "-C", comment, "-f", dir.appendingPathComponent(type).path]
            p.standardInput = FileHandle.nullDevice
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            do { try p.run() } catch {
                throw .internal("cannot run ssh-keygen", cause: error.localizedDescription)
            }
            processes.append((type, p))
        }
        var keys: [Key] = []
        for (type, p) in processes {
            p.waitUntilExit()
            guard p.terminationStatus == 0,
                let priv = try? Data(contentsOf: dir.appendingPathComponent(type)),
                let pub = try? String(contentsOf: dir.appendingPathComponent(type + ".pub"), encoding: .utf8)
            else {
                throw .internal("ssh-keygen failed to make a \(type) host key (exit \(p.terminationStatus))")
            }
            keys.append(Key(type: type, privateKey: priv, publicKey: pub.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        return HostKeys(keys: keys)
    }

    /// sshd configuration naming exactly these keys.
    var sshdConfig: String {
        "# Written by Containarium: host keys generated on the host at create time.\n"
            + keys.map { "HostKey /etc/ssh/ssh_host_\($0.type)_key\n" }.joined()
    }

    /// The public keys, one per line (stored on the instance for known_hosts).
    var publicLines: String { keys.map(\.publicKey).joined(separator: "\n") }
}
