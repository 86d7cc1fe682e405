public import Glibc

/// What plugins that start child processes with posix_spawn share: glibc's extensions that the
/// Swift overlay does not declare, looked up at run time.
public enum SpawnActions {
    /// glibc's POSIX_SPAWN_SETSID (2.26+; <spawn.h> defines it only for _GNU_SOURCE, which the
    /// Swift overlay does not see).
    public static let setsid: Int32 = 0x80

    typealias ChdirNP = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

    /// The child starts in `/` (glibc's posix_spawn_file_actions_addchdir_np, 2.29+); without
    /// it the child keeps the caller's working directory.
    public static func chdirRoot(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>) {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np") else { return }
        _ = unsafeBitCast(sym, to: ChdirNP.self)(actions, "/")
    }

    /// The child inherits no descriptor above 2 (glibc's posix_spawn_file_actions_addclosefrom_np,
    /// 2.34+); without it every inherited descriptor is marked close-on-exec instead.
    public static func closeFrom3(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>) {
        if let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            if unsafeBitCast(sym, to: CloseFrom.self)(actions, 3) == 0 { return }
        }
        guard let dir = opendir("/proc/self/fd") else { return }
        var fds: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let fd = Int32(name), fd > 2, fd != dirfd(dir) { fds.append(fd) }
        }
        closedir(dir)
        for fd in fds {
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }
}
