import ContainariumCore
import Dispatch
import Foundation
import PluginKit

#if canImport(Glibc)
import Glibc
#endif

/// Child processes without a shell: argv only, output to a file, a deadline on every wait.
enum Processes {
    struct Result {
        var status: Int32
        var output: String
    }

    /// Start `argv` with stdin from /dev/null, stdout and stderr appended to `log`, no other
    /// descriptor of ours, a fresh signal mask and default handlers (the host may block signals
    /// on its threads), and `flags` (a process group or a session of its own). With
    /// `environment` nil the child gets the daemon's; with `isolated`, the log is never opened
    /// through a symbolic link and the working directory is /.
    private static func launch(_ argv: [String], log: String, flags: Int32, environment: [String]?, isolated: Bool) throws(ContainariumError) -> pid_t {
        guard let exe = argv.first else { throw .invalid("empty command") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND | (isolated ? O_NOFOLLOW : 0), 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        if isolated { SpawnActions.chdirRoot(&actions) }
        // Nothing else of ours: a QEMU that outlives the call must not hold the daemon's sockets or pipes.
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
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | flags))
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc: Int32
        if let environment {
            var cenv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
            defer { cenv.forEach { free($0) } }
            rc = posix_spawn(&pid, exe, &actions, &attr, &cargs, &cenv)
        } else {
            rc = posix_spawn(&pid, exe, &actions, &attr, &cargs, environ)
        }
        guard rc == 0 else { throw ContainariumError(.unavailable, "cannot run \(exe): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Run `argv` to completion (qemu-img, swtpm --daemon).
    static func run(_ argv: [String], log: String? = nil, timeout: Double = 120) throws(ContainariumError) -> Result {
        guard let exe = argv.first else { throw .invalid("empty command") }
        let out = log ?? (NSTemporaryDirectory() + "ctm-qemu-\(UUID().uuidString).log")
        let pid = try launch(argv, log: out, flags: Int32(POSIX_SPAWN_SETPGROUP), environment: nil, isolated: false)
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { throw .internal("waitpid failed: \(String(cString: strerror(errno)))") }
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                throw ContainariumError(.timeout, "\(URL(fileURLWithPath: exe).lastPathComponent) did not finish within \(Int(timeout)) s")
            }
            usleep(20_000)
        }
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        if log == nil { unlink(out) }
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Result(status: code, output: text)
    }

    /// Start `argv` without waiting for it, in a session of its own (a VM's QEMU: it must outlive
    /// the call, and the daemon). Output goes to `log` (appended; never through a symbolic link),
    /// stdin is /dev/null, no other descriptor of ours is inherited, the working directory is /,
    /// and the environment is only `environment`. A thread reaps the child when it exits, so it
    /// leaves no zombie while the daemon runs; after a daemon restart it is init's child.
    static func spawn(_ argv: [String], log: String, environment: [String]) throws(ContainariumError) -> pid_t {
        // A new session (setsid): no controlling terminal, and out of the daemon's process group,
        // so signals meant for the daemon do not reach its VMs.
        let child = try launch(argv, log: log, flags: SpawnActions.setsid, environment: environment, isolated: true)
        let reaper = Thread {
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        }
        reaper.name = "qemu-windows-reaper-\(child)"
        reaper.start()
        return child
    }

    /// The pid in a pid file, if that process is alive and is `expected` (by /proc/PID/cmdline).
    static func alive(pidFile: String, expected: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0 || errno == EPERM,
              let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
              String(decoding: cmd, as: UTF8.self).contains(expected) else { return nil }
        return pid
    }

    /// Whether `pid` has ended (gone, or a zombie waiting for its parent).
    static func gone(_ pid: pid_t) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return true }
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")"), stat.index(close, offsetBy: 2) < stat.endIndex, stat[stat.index(close, offsetBy: 2)] == "Z" { return true }
        return false
    }

    /// Wait until `pid` is gone (a VM's QEMU may not be our child: poll /proc).
    static func waitGone(_ pid: pid_t, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if gone(pid) { return true }
            usleep(50_000)
        }
        return gone(pid)
    }

    /// CPU time (ns) and resident memory (bytes) of a process.
    static func usage(_ pid: pid_t) -> (cpuNanoseconds: UInt64, rssBytes: UInt64)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state(0) ... utime(11) stime(12) ... rss(21), in clock ticks / pages.
        guard fields.count > 21, let utime = UInt64(fields[11]), let stime = UInt64(fields[12]), let rss = UInt64(fields[21]) else { return nil }
        let hz = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
        let page = UInt64(max(1, sysconf(Int32(_SC_PAGESIZE))))
        return ((utime + stime) * 1_000_000_000 / hz, rss * page)
    }
}
