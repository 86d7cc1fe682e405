import Foundation

/// One `/etc/passwd` entry, as `getent passwd NAME` prints it.
public struct PasswdEntry: Sendable, Equatable {
    public var name: String
    public var uid: UInt32
    public var gid: UInt32
    public var home: String
    public var shell: String

    /// Parse `name:x:uid:gid:gecos:home:shell` (trailing newline allowed); nil when malformed.
    public init?(line: String) {
        let f = line.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":", omittingEmptySubsequences: false)
        guard f.count == 7, let uid = UInt32(f[2]), let gid = UInt32(f[3]) else { return nil }
        self.name = String(f[0])
        self.uid = uid
        self.gid = gid
        self.home = String(f[5])
        self.shell = String(f[6])
    }
}

/// Free-form labels on an environment: keys of a-z, 0-9, '.', '-', '_' (at most 63), values
/// of at most 255 characters on one line.
public enum Labels {
    public static func validate(_ labels: [String: String]) throws(ContainariumError) {
        for (k, v) in labels {
            let ok = !k.isEmpty && k.utf8.count <= 63 && k.utf8.allSatisfy {
                ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x2E || $0 == 0x5F
            }
            guard ok else { throw .invalid("label key '\(k)' may use only a-z, 0-9, '.', '-' and '_' (at most 63 characters)") }
            guard v.count <= 255, !v.contains(where: \.isNewline) else {
                throw .invalid("label '\(k)' has a value that is too long or spans lines")
            }
        }
    }
}
