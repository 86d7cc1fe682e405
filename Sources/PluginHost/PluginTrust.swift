public import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Code the host runs must be as safe from tampering as the host itself, as sudo and sshd
/// require of their files: a plugin's directory, manifest and library (each resolved through
/// symlinks), and every directory above them, must belong to root or to the user the host runs
/// as, and be writable by no one else. A directory others may write to is allowed only when it
/// is root's and sticky (as /tmp is): others can add entries there but not replace ours.
public enum PluginTrust {
    /// Why `path` cannot be trusted, naming the offending file or directory; nil when it can.
    public static func problem(_ path: String, owner: UInt32? = nil) -> String? {
        let uid = owner ?? geteuid()
        guard let resolved = realpath(path, nil) else { return "cannot resolve \(path): \(String(cString: strerror(errno)))" }
        let real = String(cString: resolved)
        free(resolved)
        var current = real
        var first = true
        while true {
            var st = stat()
            guard lstat(current, &st) == 0 else { return "cannot inspect \(current): \(String(cString: strerror(errno)))" }
            let mode = st.st_mode & 0o7777
            let isDirectory = (st.st_mode & S_IFMT) == S_IFDIR
            let writableByOthers = mode & 0o022 != 0
            let stickyRootDirectory = isDirectory && st.st_uid == 0 && mode & 0o1000 != 0
            let what = first ? (path == real ? path : "\(path) (\(real))") : current
            if st.st_uid != 0 && st.st_uid != uid {
                return "\(what) belongs to uid \(st.st_uid), not to root\(uid == 0 ? "" : " or uid \(uid)"): refusing to load code from it"
            }
            if writableByOthers && !(stickyRootDirectory && !first) {
                return "\(what) is writable by group or others (mode \(String(mode, radix: 8))): refusing to load code from it (chmod go-w)"
            }
            if current == "/" { return nil }
            current = (current as NSString).deletingLastPathComponent
            if current.isEmpty { current = "/" }
            first = false
        }
    }

    /// The executable this process runs (through /proc/self/exe, never argv[0]: a name looked
    /// up in PATH, or a relative one, says nothing about where the program really is).
    public static var executable: URL {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return URL(fileURLWithPath: path)
        }
        return URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    }
}
