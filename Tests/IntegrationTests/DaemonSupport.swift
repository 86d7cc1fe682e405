import ContainariumCore
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real `containarium daemon` process for one test, on free loopback ports, with its own
/// plugin directory, config, state directory and JWT secret.
final class DaemonProcess: @unchecked Sendable {
    let sandbox: IncusEnv.Sandbox
    let httpPort: Int
    let grpcPort: Int
    let secret: String
    let secretFile: URL
    let stateDir: URL
    let logFile: URL
    let extraArgs: [String]
    private(set) var process: Process?

    var base: String { "http://127.0.0.1:\(httpPort)" }

    /// A port nobody listens on right now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw TestFailure("bind failed") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    init(sandbox: IncusEnv.Sandbox, extraArgs: [String] = [], stateDir: URL? = nil, secret: String? = nil) throws {
        self.sandbox = sandbox
        httpPort = try Self.freePort()
        grpcPort = try Self.freePort()
        self.secret = secret ?? Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        secretFile = sandbox.dir.appendingPathComponent("jwt.secret")
        try Data((self.secret + "\n").utf8).write(to: secretFile)
        self.stateDir = stateDir ?? sandbox.dir.appendingPathComponent("state")
        logFile = sandbox.dir.appendingPathComponent("daemon-\(TestEnv.suffix()).log")
        self.extraArgs = extraArgs
    }

    /// Start (or restart) the daemon and wait until /healthz answers.
    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestEnv.cliPath)
        p.arguments = [
            "daemon", "--jwt-secret-file", secretFile.path, "--state-dir", stateDir.path, "--http-host", "127.0.0.1",
            "--http-port", String(httpPort), "--grpc-host", "127.0.0.1", "--port", String(grpcPort),
        ] + extraArgs
        var env = ProcessInfo.processInfo.environment
        for (k, v) in sandbox.environment { env[k] = v }
        env["CONTAINARIUM_JWT_SECRET"] = nil
        env["CONTAINARIUM_LOG_LEVEL"] = "info"
        p.environment = env
        if !FileManager.default.fileExists(atPath: logFile.path) { _ = FileManager.default.createFile(atPath: logFile.path, contents: nil) }
        let log = try FileHandle(forWritingTo: logFile)
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        p.standardInput = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if !p.isRunning { throw TestFailure("daemon exited with \(p.terminationStatus): \(self.log)") }
            if let r = try? HTTP.call("GET", base + "/healthz"), r.status == 200 { return }
            usleep(100_000)
        }
        throw TestFailure("daemon did not come up: \(self.log)")
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    func signal(_ sig: Int32) {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, sig)
    }

    /// Wait for the process to exit; returns its status.
    @discardableResult
    func wait(timeout: Double = 60) throws -> Int32 {
        guard let p = process else { return 0 }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning {
            if Date() > deadline { throw TestFailure("daemon did not exit within \(timeout)s") }
            usleep(50_000)
        }
        return p.terminationStatus
    }

    func stop() {
        signal(SIGTERM)
        _ = try? wait(timeout: 60)
        signal(SIGKILL)
    }

    /// Mint a token with the real CLI.
    func token(_ user: String, roles: String = "user", expiry: String = "1h", secret: String? = nil) throws -> String {
        let r = try Run.run(TestEnv.cliPath, ["token", "generate", "--username", user, "--roles", roles, "--expiry", expiry, "--secret", secret ?? self.secret])
        guard r.status == 0 else { throw TestFailure("token generate failed: \(r.output)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

struct HTTPResult: Sendable {
    var status: Int
    var body: Data
    var headers: String
    var json: JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: body) }
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// Real HTTP over loopback with curl (an independent client).
enum HTTP {
    static func call(_ method: String, _ url: String, token: String? = nil, body: String? = nil, headers: [String] = [], timeout: Double = 600) throws -> HTTPResult {
        let dir = try TestEnv.tempDir("http")
        defer { TestEnv.cleanup(dir) }
        let out = dir.appendingPathComponent("body"), head = dir.appendingPathComponent("head")
        var args = ["-sS", "-X", method, "-o", out.path, "-D", head.path, "-w", "%{http_code}", "--max-time", String(Int(timeout))]
        if let token { args += ["-H", "Authorization: Bearer \(token)"] }
        for h in headers { args += ["-H", h] }
        if let body {
            let f = dir.appendingPathComponent("req")
            try Data(body.utf8).write(to: f)
            args += ["-H", "Content-Type: application/json", "--data-binary", "@\(f.path)"]
        }
        args.append(url)
        let r = try Run.run("/usr/bin/curl", args, timeout: timeout + 10)
        guard let status = Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), status > 0 else {
            throw TestFailure("curl \(method) \(url) failed: \(r.output)")
        }
        return HTTPResult(status: status, body: (try? Data(contentsOf: out)) ?? Data(), headers: (try? String(contentsOf: head, encoding: .utf8)) ?? "")
    }

    static func json(_ v: [String: Any]) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: v)) ?? Data(), as: UTF8.self)
    }
}

/// Poll until `check` holds (events, not wall-clock assertions).
func eventually(_ what: String, within seconds: Double = 120, every interval: useconds_t = 200_000, _ check: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try check() { return }
        usleep(interval)
    }
    throw TestFailure("timed out waiting for: \(what)")
}
