public import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The real scanners (scripts/scanners.sh installs ClamAV from Debian and Trivy from its PyPI
/// wheel), the built scanner plugins, and test material made at run time.
public enum Scanners {
    public static let clamd = "/usr/sbin/clamd"
    public static let clamscan = "/usr/bin/clamscan"
    public static let sigtool = "/usr/bin/sigtool"
    public static let trivy = ProcessInfo.processInfo.environment["CONTAINARIUM_TRIVY"] ?? "/var/cache/containarium/trivy/bin/trivy"

    public static var hasClamAV: Bool { ([clamd, clamscan, sigtool] as [String]).allSatisfy { access($0, X_OK) == 0 } }
    public static var hasTrivy: Bool { access(trivy, X_OK) == 0 }

    /// A plugin directory (manifest + a link to the built library) under `parent`.
    @discardableResult
    public static func pluginDir(in parent: URL, id: String, source: String, library: String) throws -> URL {
        let dir = parent.appendingPathComponent(id)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            at: TestEnv.repoRoot.appendingPathComponent("Plugins/\(source)/plugin.json"), to: dir.appendingPathComponent("plugin.json"))
        let built = TestEnv.buildDir.appendingPathComponent(library)
        guard FileManager.default.fileExists(atPath: built.path) else {
            throw TestFailure("\(built.path) is not built: swift build --build-tests (or --product \(library.dropFirst(3).dropLast(3)))")
        }
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent(library), withDestinationURL: built)
        return dir
    }

    /// The standard 68-byte EICAR anti-virus test file, put together at run time so that no
    /// source file of this repository is itself the test string.
    public static var eicar: Data {
        let parts = ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-TEST-FILE!$H+H*"]
        return Data(parts.joined().utf8)
    }

    /// An AWS key pair in the shape of AWS's documentation examples, put together at run time
    /// (random, so it names no account).
    public static var awsCredentials: String {
        let upper = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), any = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+")
        let id = "AK" + "IA" + String((0..<16).map { _ in upper.randomElement() ?? "A" })
        let secret = String((0..<40).map { _ in any.randomElement() ?? "a" })
        return "aws_access_key_id = \(id)\naws_secret_access_key = \(secret)\n"
    }

    /// The MD5 of `data` as lower-case hex (for ClamAV `.hdb` signatures), by `md5sum`.
    public static func md5Hex(_ data: Data) throws -> String {
        let dir = try TestEnv.tempDir("md5")
        defer { TestEnv.cleanup(dir) }
        let file = dir.appendingPathComponent("f")
        try data.write(to: file)
        let r = try Run.run("/usr/bin/md5sum", [file.path])
        guard r.status == 0, let hex = r.stdout.split(separator: " ").first, hex.count == 32 else { throw TestFailure("md5sum failed: \(r.output)") }
        return String(hex)
    }

    /// A ClamAV `.hdb` database in `dir` with one signature per (data, name).
    public static func hashDatabase(in dir: URL, _ signatures: [(Data, String)]) throws -> URL {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var lines: [String] = []
        for (data, name) in signatures { lines.append("\(try md5Hex(data)):\(data.count):\(name)") }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: dir.appendingPathComponent("containarium-test.hdb"))
        return dir
    }
}

/// A clamd of the test's own: its config, socket, database and temporary directory in `dir`,
/// in the foreground as the test's user (no `User`), no system log; ended by its pid.
public final class ClamdFixture: @unchecked Sendable {
    public let dir: URL
    public let socket: String
    public let config: String
    private let process: Process

    /// Start clamd with the signature database in `database` and wait until it answers.
    public init(in dir: URL, database: URL) throws {
        self.dir = dir
        socket = dir.appendingPathComponent("clamd.sock").path
        config = dir.appendingPathComponent("clamd.conf").path
        let tmp = dir.appendingPathComponent("tmp")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        let conf = """
            LocalSocket \(socket)
            LocalSocketMode 600
            DatabaseDirectory \(database.path)
            TemporaryDirectory \(tmp.path)
            Foreground yes
            LogFile \(dir.appendingPathComponent("clamd.log").path)
            LogTime yes
            PidFile \(dir.appendingPathComponent("clamd.pid").path)
            MaxThreads 4
            SelfCheck 0

            """
        try Data(conf.utf8).write(to: URL(fileURLWithPath: config))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Scanners.clamd)
        p.arguments = ["--config-file=\(config)"]
        let out = dir.appendingPathComponent("clamd.out")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        let handle = try FileHandle(forWritingTo: out)
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        try handle.close()
        process = p
        let deadline = Date().addingTimeInterval(120)
        while Self.ask(socket, "zPING")?.hasPrefix("PONG") != true {
            guard p.isRunning else {
                let log = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
                throw TestFailure("clamd exited (\(p.terminationStatus)) before answering: \(log.suffix(2000))")
            }
            guard Date() < deadline else {
                stop()
                throw TestFailure("clamd did not answer at \(socket) within 120 s")
            }
            usleep(100_000)
        }
    }

    public var pid: Int32 { process.processIdentifier }

    /// Whether clamd is scanning something now (a thread of its pool is busy: zSTATS).
    public var busy: Bool {
        guard let stats = Self.ask(socket, "zSTATS"), let line = stats.split(separator: "\n").first(where: { $0.hasPrefix("THREADS:") }) else { return false }
        // "THREADS: live 2  idle 1 max 4 idle-timeout 30"
        let words = line.split(separator: " ")
        func value(_ key: String) -> Int? { words.firstIndex(of: Substring(key)).flatMap { i in i + 1 < words.count ? Int(words[i + 1]) : nil } }
        guard let live = value("live"), let idle = value("idle") else { return false }
        return live - idle > 1  // the STATS command itself holds one
    }

    /// End clamd by its pid (SIGTERM, then SIGKILL), only while it still runs our config.
    public func stop() {
        Run.end(pid: process.processIdentifier, expecting: config)
        if !process.isRunning { return }
        process.waitUntilExit()
    }

    deinit { stop() }

    /// Send one z-command to the socket at `path`; its answer, or nil.
    public static func ask(_ path: String, _ command: String) -> String? {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { return nil }
        var tv: [Int] = [5, 0]
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<Int>.size * 2))
        let message: [UInt8] = Array(command.utf8) + [0]
        guard message.withUnsafeBytes({ Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == message.count else { return nil }
        var answer = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            answer.append(contentsOf: buffer[..<n])
            if buffer[n - 1] == 0 { break }
        }
        return answer.isEmpty ? nil : String(decoding: answer.filter { $0 != 0 }, as: UTF8.self)
    }
}
