import ContainariumCore
import Foundation
import Synchronization
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

    var base: String { "\(tlsCA == nil ? "http" : "https")://127.0.0.1:\(httpPort)" }
    /// The CA that signed the REST certificate, when the daemon serves REST over TLS.
    var tlsCA: URL?

    /// Ports handed out in this test process, so two daemons never get the same one.
    private static let handedOut = Mutex<Set<Int>>([])

    /// A loopback port nobody listens on now and nothing else will take before the daemon binds it.
    /// Binding port 0 picks from the kernel's ephemeral range, which every outgoing connection
    /// (curl, gRPC and SSH clients) also draws from; such a port can be taken by a client between
    /// this call and the daemon's bind (CI saw `Address already in use`). So ports come from below
    /// the ephemeral range, at random, never the same one twice in this process, and only after a
    /// trial bind succeeds.
    static func freePort() throws -> Int {
        let low = ephemeralLow()
        let range = max(1024, low - 12_000)..<max(1025, low)
        for _ in 0..<200 {
            let port = Int.random(in: range)
            guard handedOut.withLock({ $0.insert(port).inserted }) else { continue }
            if canBind(port) { return port }
        }
        throw TestFailure("no free loopback port below the ephemeral range \(low)")
    }

    private static func ephemeralLow() -> Int {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        return text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) } ?? 32768
    }

    private static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        return rc == 0
    }

    init(sandbox: IncusEnv.Sandbox, extraArgs: [String] = [], stateDir: URL? = nil, secret: String? = nil, plaintextNodes: Bool = true) throws {
        self.sandbox = sandbox
        httpPort = try Self.freePort()
        grpcPort = try Self.freePort()
        self.secret = secret ?? Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        secretFile = sandbox.dir.appendingPathComponent("jwt.secret")
        try Data((self.secret + "\n").utf8).write(to: secretFile)
        self.stateDir = stateDir ?? sandbox.dir.appendingPathComponent("state")
        logFile = sandbox.dir.appendingPathComponent("daemon-\(TestEnv.suffix()).log")
        // Test beds join nodes with --insecure-plaintext: every daemon without --mtls takes them
        // (the refusal without this flag has its own test, which passes `plaintextNodes: false`).
        self.extraArgs = extraArgs + (plaintextNodes && !extraArgs.contains("--mtls") ? ["--insecure-plaintext-nodes"] : [])
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
            if let r = try? HTTP.call("GET", base + "/healthz", cacert: tlsCA?.path), r.status == 200 { return }
            usleep(100_000)
        }
        throw TestFailure("daemon did not come up: \(self.log)")
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// The running daemon's pid.
    var pid: Int32? { process.flatMap { $0.isRunning ? $0.processIdentifier : nil } }

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
    static func call(_ method: String, _ url: String, token: String? = nil, body: String? = nil, headers: [String] = [], timeout: Double = 600,
                     cacert: String? = nil) throws -> HTTPResult {
        let dir = try TestEnv.tempDir("http")
        defer { TestEnv.cleanup(dir) }
        let out = dir.appendingPathComponent("body"), head = dir.appendingPathComponent("head")
        var args = ["-sS", "-X", method, "-o", out.path, "-D", head.path, "-w", "%{http_code}", "--max-time", String(Int(timeout))]
        if let token { args += ["-H", "Authorization: Bearer \(token)"] }
        if let cacert { args += ["--cacert", cacert] }
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
