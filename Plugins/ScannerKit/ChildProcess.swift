public import ContainariumCore
public import Foundation
import PluginKit

#if canImport(Glibc)
import Glibc
#endif

/// Child processes for the scanner plugins: argv only (never a shell), stdin from /dev/null,
/// stdout and stderr into unlinked temporary files (so a chatty child can never block on a
/// pipe), no descriptor of ours inherited, working directory /, a fresh signal mask and default
/// handlers, a process group of its own that is killed whole on cancellation, on the deadline
/// or when the output grows past its bound.
public enum ChildProcess {
    public struct Result: Sendable {
        /// Exit status, or 128 + signal.
        public var status: Int32
        public var stdout: Data
        /// The last few KiB of stderr.
        public var stderr: String
    }

    /// `argv` prefixed with `nice -n 19` and `ionice -c 3 -t` (idle I/O class, failures ignored)
    /// where those programs exist, so a scan yields to the environments it scans.
    public static func lowPriority(_ argv: [String]) -> [String] {
        func installed(_ candidates: [String]) -> String? { candidates.first { access($0, X_OK) == 0 } }
        var prefix: [String] = []
        if let nice = installed(["/usr/bin/nice", "/bin/nice"]) { prefix += [nice, "-n", "19"] }
        if let ionice = installed(["/usr/bin/ionice", "/bin/ionice"]) { prefix += [ionice, "-c", "3", "-t"] }
        return prefix + argv
    }

    /// A small environment for scanners: PATH, HOME and TMPDIR only (nothing of the daemon's
    /// own settings, no tool-specific variables that could change what a scanner does).
    public static func cleanEnvironment(home: String? = nil) -> [String] {
        let env = ProcessInfo.processInfo.environment
        var out = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=\(home ?? env["HOME"] ?? "/")", "LC_ALL=C"]
        if let tmp = env["TMPDIR"], tmp.hasPrefix("/") { out.append("TMPDIR=\(tmp)") }
        return out
    }

    /// Run `argv` to completion under `control` (cancellation and deadline). `maxOutput` bounds
    /// stdout: past it the child is killed and the call fails (`resource_exhausted`).
    /// `name` names the program in errors.
    public static func run(
        _ argv: [String], environment: [String], control: ScanControl, maxOutput: Int, name: String
    ) throws(ContainariumError) -> Result {
        guard let exe = argv.first else { throw .invalid("empty command") }
        let out = try anonymousFile()
        defer { close(out) }
        let err = try anonymousFile()
        defer { close(err) }
        let pid = try launch(exe: exe, argv: argv, environment: environment, stdout: out, stderr: err)
        var status: Int32 = 0
        var failure: ContainariumError?
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR {
                failure = .internal("waitpid failed: \(errorText(errno))")
                break
            }
            if control.isCancelled {
                failure = ContainariumError(.cancelled, "the scan was cancelled")
            } else if control.isPastDeadline {
                failure = control.timeoutError
            } else if size(of: out) > Int64(maxOutput) {
                failure = ContainariumError(.resourceExhausted, "\(name) wrote more than \(maxOutput) bytes of output; stopped")
            }
            if failure != nil { break }
            usleep(20_000)
        }
        if let failure {
            // The whole group: a child of the scanner dies with it.
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            throw failure
        }
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let errText = String(decoding: read(err, tail: 8192), as: UTF8.self)
        return Result(status: code, stdout: read(out, tail: nil), stderr: errText)
    }

    /// A temporary file with no name (unlinked at once), 0600, close-on-exec.
    private static func anonymousFile() throws(ContainariumError) -> Int32 {
        let dir = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "/tmp"
        var template = Array("\(dir)/ctm-scan-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw .internal("cannot create a temporary file in \(dir): \(errorText(errno))") }
        unlink(template)
        // Close-on-exec (children get it only as their stdout or stderr, through dup2).
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return fd
    }

    private static func size(of fd: Int32) -> Int64 {
        var st = stat()
        return fstat(fd, &st) == 0 ? Int64(st.st_size) : 0
    }

    /// The file's content (or its last `tail` bytes).
    private static func read(_ fd: Int32, tail: Int?) -> Data {
        let total = size(of: fd)
        var offset: Int64 = 0
        if let tail { offset = max(0, total - Int64(tail)) }
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while offset < total {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            data.append(contentsOf: chunk[..<n])
            offset += Int64(n)
        }
        return data
    }

    private static func launch(exe: String, argv: [String], environment: [String], stdout: Int32, stderr: Int32) throws(ContainariumError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        SpawnActions.chdirRoot(&actions)
        SpawnActions.closeFrom3(&actions)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        let sets = UnsafeMutablePointer<sigset_t>.allocate(capacity: 2)
        defer { sets.deallocate() }
        sigemptyset(sets)
        posix_spawnattr_setsigmask(&attr, sets)
        sigfillset(sets + 1)
        posix_spawnattr_setsigdefault(&attr, sets + 1)
        // A process group of its own (pgid = its pid), so the whole group can be killed.
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var cenv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { cenv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, exe, &actions, &attr, &cargs, &cenv)
        guard rc == 0 else { throw ContainariumError(.unavailable, "cannot run \(exe): \(errorText(rc))") }
        return pid
    }
}
