public import ContainariumCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A walk of a directory tree that never leaves it: every directory is opened with `openat`
/// relative to its parent's descriptor (O_NOFOLLOW | O_DIRECTORY) and read through
/// `fdopendir`, every file with `openat` (O_NOFOLLOW | O_NOCTTY | O_NONBLOCK), so neither a
/// symbolic link nor a rename racing the walk can lead it outside the tree. Only regular files
/// are handed on; symbolic links, devices, FIFOs and sockets are skipped.
public struct TreeWalker: Sendable {
    /// One regular file, open read-only; the receiver owns `fd` and closes it.
    public struct File: Sendable {
        public let fd: Int32
        /// As seen from the root: "/home/alice/evil.bin".
        public let path: String
        public let size: Int64
    }

    /// Files larger than this are not opened for scanning; they are counted in `skippedLarge`.
    public let maxFileBytes: Int64
    /// Directories nested deeper than this are not entered (counted as unreadable).
    public let maxDepth: Int

    public init(maxFileBytes: Int64, maxDepth: Int = 512) {
        self.maxFileBytes = maxFileBytes
        self.maxDepth = maxDepth
    }

    /// What a walk saw besides the files it handed on.
    public struct Summary: Sendable {
        /// Files and directories that could not be opened or read, with the reason.
        public var unreadable = NoteTally()
        /// Files over `maxFileBytes`.
        public var skippedLarge = NoteTally()
        public var symlinks = 0
        public var special = 0
        public var directories = 0
        public init() {}
    }

    // d_type values (<dirent.h>) and st_mode bits (<sys/stat.h>).
    private static let dtUnknown: UInt8 = 0, dtDir: UInt8 = 4, dtReg: UInt8 = 8, dtLnk: UInt8 = 10
    private static let sIFMT: UInt32 = 0o170000, sIFDIR: UInt32 = 0o040000, sIFREG: UInt32 = 0o100000, sIFLNK: UInt32 = 0o120000

    /// Walk the directory open at `rootFD` (borrowed: not closed here). `visit` receives each
    /// regular file (and owns its descriptor from then on); `control` is checked before every
    /// entry, so cancellation and the deadline take effect between files.
    public func walk(
        rootFD: Int32, control: ScanControl, visit: (File) throws(ContainariumError) -> Void
    ) throws(ContainariumError) -> Summary {
        var summary = Summary()
        // Our own descriptor for the root: fdopendir takes ownership of what it is given.
        let first = openat(rootFD, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard first >= 0 else { throw ContainariumError(.failedPrecondition, "cannot read the scan root: \(errorText(errno))") }
        try walkDirectory(first, path: "", depth: 0, control: control, summary: &summary, visit: visit)
        return summary
    }

    private func walkDirectory(
        _ fd: Int32, path: String, depth: Int, control: ScanControl, summary: inout Summary,
        visit: (File) throws(ContainariumError) -> Void
    ) throws(ContainariumError) {
        guard let dir = fdopendir(fd) else {
            summary.unreadable.add("\(path.isEmpty ? "/" : path) (\(errorText(errno)))")
            close(fd)
            return
        }
        defer { closedir(dir) }
        summary.directories += 1
        let dfd = dirfd(dir)
        while true {
            try control.check()
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { summary.unreadable.add("\(path.isEmpty ? "/" : path) (\(errorText(errno)))") }
                return
            }
            let name = Self.name(of: entry)
            if name == [0x2E, 0] || name == [0x2E, 0x2E, 0] { continue }
            let display = String(decoding: name.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let child = path + "/" + display
            var type = entry.pointee.d_type
            if type == Self.dtUnknown {
                var st = stat()
                guard fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                    if errno != ENOENT { summary.unreadable.add("\(child) (\(errorText(errno)))") }
                    continue
                }
                switch UInt32(st.st_mode) & Self.sIFMT {
                case Self.sIFDIR: type = Self.dtDir
                case Self.sIFREG: type = Self.dtReg
                case Self.sIFLNK: type = Self.dtLnk
                default: type = 255
                }
            }
            switch type {
            case Self.dtDir:
                guard depth < maxDepth else {
                    summary.unreadable.add("\(child) (deeper than \(maxDepth) levels)")
                    continue
                }
                let sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
                guard sub >= 0 else {
                    let code = errno
                    // ELOOP/ENOTDIR: replaced by a link or a file since readdir; ENOENT: removed.
                    if code == ELOOP || code == ENOTDIR { summary.symlinks += 1 } else if code != ENOENT {
                        summary.unreadable.add("\(child) (\(errorText(code)))")
                    }
                    continue
                }
                try walkDirectory(sub, path: child, depth: depth + 1, control: control, summary: &summary, visit: visit)
            case Self.dtReg:
                let f = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
                guard f >= 0 else {
                    let code = errno
                    if code == ELOOP { summary.symlinks += 1 } else if code != ENOENT { summary.unreadable.add("\(child) (\(errorText(code)))") }
                    continue
                }
                var st = stat()
                guard fstat(f, &st) == 0 else {
                    summary.unreadable.add("\(child) (\(errorText(errno)))")
                    close(f)
                    continue
                }
                guard UInt32(st.st_mode) & Self.sIFMT == Self.sIFREG else {
                    // Became something else (a FIFO, a device) since readdir: never read it.
                    summary.special += 1
                    close(f)
                    continue
                }
                let size = Int64(st.st_size)
                if size > maxFileBytes {
                    summary.skippedLarge.add("\(child) (\(size) bytes)")
                    close(f)
                    continue
                }
                try visit(File(fd: f, path: child, size: size))
            case Self.dtLnk:
                summary.symlinks += 1
            default:
                summary.special += 1
            }
        }
    }

    /// The entry's name with its terminating NUL, as the kernel gave it (any bytes but '/').
    private static func name(of entry: UnsafeMutablePointer<dirent>) -> [CChar] {
        withUnsafeBytes(of: entry.pointee.d_name) { raw in
            let bytes = raw.bindMemory(to: CChar.self)
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            return Array(bytes[..<end]) + [0]
        }
    }
}
