public import ContainariumCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The host directories a scanner may read (config `roots`). A request's path must resolve
/// (symbolic links and `..` followed, as `realpath` does) to one of them or below; anything else
/// is refused with `permission_denied`, naming the path and the roots.
public struct ScanRoots: Sendable {
    public static let defaultRoots = ["/var/lib/incus/storage-pools"]

    public let prefixes: [String]

    public init(_ prefixes: [String]?, plugin: String) throws(ContainariumError) {
        let given = prefixes ?? Self.defaultRoots
        guard !given.isEmpty else { throw .invalid("\(plugin) configuration: roots must name at least one directory") }
        var out: [String] = []
        for p in given {
            let abs = try ScannerConfig.absolutePath(p, key: "roots", plugin: plugin)
            out.append(Self.lexical(abs))
        }
        self.prefixes = out
    }

    /// "/a//b/./c/" → "/a/b/c" (no symbolic links resolved; `..` kept, so it never matches).
    static func lexical(_ path: String) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        return "/" + parts.joined(separator: "/")
    }

    struct Errno: Error {
        let code: Int32
    }

    /// `path` resolved by the kernel, or the errno of the failure.
    static func resolve(_ path: String) -> Result<String, Errno> {
        guard let p = realpath(path, nil) else { return .failure(Errno(code: errno)) }
        defer { free(p) }
        return .success(String(cString: p))
    }

    static func inside(_ path: String, _ root: String) -> Bool {
        root == "/" || path == root || path.hasPrefix(root + "/")
    }

    /// The roots as they resolve now (a root that does not exist keeps its own spelling).
    var resolvedPrefixes: [String] {
        prefixes.map { p in (try? Self.resolve(p).get()) ?? p }
    }

    private func refusal(_ path: String) -> ContainariumError {
        .denied("\(path) is outside the directories this scanner may read (roots: \(prefixes.joined(separator: ", ")))")
    }

    /// Check `path` and open it: the resolved directory, held open so the walk below it starts
    /// from the very directory that was checked (a rename of a parent after the check cannot
    /// move the scan elsewhere).
    public func open(_ path: String) throws(ContainariumError) -> ScanTarget {
        guard path.hasPrefix("/"), !path.utf8.contains(0) else { throw .invalid("path must be an absolute host path, not '\(path)'") }
        let resolved: String
        switch Self.resolve(path) {
        case .success(let r): resolved = r
        case .failure(let failure):
            let code = failure.code
            // Say "not found" only for a path the scanner may read: nothing about the rest.
            let lexical = Self.lexical(path)
            guard !lexical.split(separator: "/").contains(".."), resolvedPrefixes.contains(where: { Self.inside(lexical, $0) }) || prefixes.contains(where: { Self.inside(lexical, $0) })
            else { throw refusal(path) }
            throw ContainariumError(code == ENOENT ? .notFound : .failedPrecondition, "cannot scan \(path): \(errorText(code))")
        }
        guard resolvedPrefixes.contains(where: { Self.inside(resolved, $0) }) else { throw refusal(path) }
        let fd = Glibc.open(resolved, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else {
            let code = errno
            if code == ENOTDIR { throw .invalid("\(path) is not a directory: a scan takes a directory tree") }
            if code == ELOOP { throw refusal(path) }
            throw ContainariumError(code == ENOENT ? .notFound : .failedPrecondition, "cannot open \(path): \(errorText(code))")
        }
        // The descriptor must be the directory that was checked: a component swapped for a
        // symbolic link between realpath and open would show here.
        let opened = Self.descriptorPath(fd)
        guard opened == resolved else {
            close(fd)
            throw ContainariumError(.failedPrecondition, "\(path) changed while it was being opened; try again")
        }
        return ScanTarget(requested: path, resolved: resolved, fd: fd)
    }

    /// The path the kernel has for an open descriptor (/proc/self/fd/N).
    static func descriptorPath(_ fd: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A checked scan root, open as a directory. Closed when the value is released.
public final class ScanTarget: @unchecked Sendable {
    /// The path as the request gave it.
    public let requested: String
    /// The path it resolved to (inside a root).
    public let resolved: String
    /// O_RDONLY | O_DIRECTORY descriptor of `resolved`; owned here.
    public let fd: Int32

    init(requested: String, resolved: String, fd: Int32) {
        self.requested = requested
        self.resolved = resolved
        self.fd = fd
    }

    deinit { close(fd) }
}
