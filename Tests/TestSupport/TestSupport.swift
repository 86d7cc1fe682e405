public import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Helpers shared by the test targets: where things are, running processes, temp dirs.
public enum TestEnv {
    /// The repository root (this file is Tests/TestSupport/TestSupport.swift).
    public static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The build products directory (where the test bundle, `containarium` and plugin .so live).
    public static let buildDir: URL = {
        if let dir = ProcessInfo.processInfo.environment["CONTAINARIUM_BUILD_DIR"] { return URL(fileURLWithPath: dir) }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent()
    }()

    public static var cliPath: String { buildDir.appendingPathComponent("containarium").path }
    /// Swagger UI assets installed by scripts/test.sh (scripts/swagger-ui.sh).
    public static var swaggerDir: String {
        ProcessInfo.processInfo.environment["CONTAINARIUM_SWAGGER_DIR"] ?? "/var/cache/containarium/swagger-ui"
    }
    public static var incusPluginLibrary: URL { buildDir.appendingPathComponent("libIncusLXC.so") }
    public static var abiInclude: URL { repoRoot.appendingPathComponent("Sources/PluginABI/include") }

    /// A fresh temporary directory, removed by the caller with `cleanup`.
    public static func tempDir(_ prefix: String = "ctm") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    public static func cleanup(_ url: URL) { try? FileManager.default.removeItem(at: url) }

    /// A plugin directory holding the IncusLXC manifest and the built library.
    public static func incusPluginDir(in parent: URL) throws -> URL {
        let dir = parent.appendingPathComponent("incus-lxc")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            at: repoRoot.appendingPathComponent("Plugins/IncusLXC/plugin.json"), to: dir.appendingPathComponent("plugin.json"))
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("libIncusLXC.so"), withDestinationURL: incusPluginLibrary)
        return dir
    }

    /// A short random suffix for names that must not collide between runs.
    public static func suffix() -> String {
        String(UUID().uuidString.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(6))
    }
}

public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var output: String { stdout + stderr }
    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

public enum Run {
    /// Run a program (no shell), capturing output through files so large output cannot block.
    @discardableResult
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], stdin: String? = nil, timeout: Double = 300
    ) throws -> ProcessResult {
        let dir = try TestEnv.tempDir("proc")
        defer { TestEnv.cleanup(dir) }
        let outURL = dir.appendingPathComponent("out"), errURL = dir.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let outHandle = try FileHandle(forWritingTo: outURL), errHandle = try FileHandle(forWritingTo: errURL)
        p.standardOutput = outHandle
        p.standardError = errHandle
        if let stdin {
            let inURL = dir.appendingPathComponent("in")
            try Data(stdin.utf8).write(to: inURL)
            p.standardInput = try FileHandle(forReadingFrom: inURL)
        } else {
            p.standardInput = FileHandle.nullDevice
        }
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning {
            if Date() > deadline {
                // SIGTERM, then SIGKILL for one that ignores it (ssh -W waiting on a stalled peer does).
                p.terminate()
                let grace = Date().addingTimeInterval(5)
                while p.isRunning && Date() < grace { usleep(20_000) }
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
                p.waitUntilExit()
                throw TestFailure("\(executable) \(arguments.joined(separator: " ")) timed out after \(timeout)s")
            }
            usleep(20_000)
        }
        try outHandle.close()
        try errHandle.close()
        return ProcessResult(
            status: p.terminationStatus,
            stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }
}

extension Run {
    /// The command line of process `pid` (its arguments joined by spaces), or nil when no such
    /// process runs.
    public static func commandLine(of pid: Int32) -> String? {
        guard pid > 1, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return nil }
        return String(decoding: data, as: UTF8.self).split(separator: "\0").joined(separator: " ")
    }

    /// The processes whose parent is `pid` (from /proc/PID/task/*/children).
    public static func children(of pid: Int32) -> [Int32] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.flatMap { t in
            ((try? String(contentsOfFile: "/proc/\(pid)/task/\(t)/children", encoding: .utf8)) ?? "").split(separator: " ").compactMap { Int32($0) }
        }
    }

    /// Whether process `pid` still runs (a zombie, ended and waiting for its parent, does not).
    public static func isRunning(_ pid: Int32) -> Bool {
        guard pid > 1, kill(pid, 0) == 0 else { return false }
        // /proc/PID/stat reads "PID (COMMAND) STATE ...": the state follows the last parenthesis.
        guard let line = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let paren = line.lastIndex(of: ")") else { return true }
        let state = line[line.index(after: paren)...].first(where: { $0 != " " })
        return state != "Z"
    }

    /// End a process the test started itself, by its pid: SIGTERM, then SIGKILL if it still
    /// runs after `grace` seconds. Never by name: a host's other processes are not the test's.
    /// `expecting`: a piece of its command line; a pid that no longer runs that command (it
    /// ended, and the pid may since belong to someone else) is left alone.
    public static func end(pid: Int32, expecting marker: String, grace: Double = 10) {
        guard pid > 1, commandLine(of: pid)?.contains(marker) == true else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while isRunning(pid), Date() < deadline { usleep(50_000) }
        if isRunning(pid), commandLine(of: pid)?.contains(marker) == true { kill(pid, SIGKILL) }
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// An SSH key pair made by the real `ssh-keygen`.
public struct KeyPair: Sendable {
    public var privateKey: URL
    public var publicKey: URL
    public var publicText: String

    public static func generate(in dir: URL, type: String = "ed25519", bits: Int? = nil, name: String = "id") throws -> KeyPair {
        let priv = dir.appendingPathComponent(name)
        var args = ["-q", "-t", type, "-N", "", "-C", "test@containarium", "-f", priv.path]
        if let bits { args += ["-b", String(bits)] }
        let r = try Run.run("/usr/bin/ssh-keygen", args)
        guard r.status == 0 else { throw TestFailure("ssh-keygen failed: \(r.output)") }
        let pub = URL(fileURLWithPath: priv.path + ".pub")
        return KeyPair(privateKey: priv, publicKey: pub, publicText: try String(contentsOf: pub, encoding: .utf8))
    }
}
