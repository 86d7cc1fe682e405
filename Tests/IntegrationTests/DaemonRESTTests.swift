import ContainariumCore
import Foundation
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The daemon over real HTTP on loopback, against real Incus, with the real OpenSSH client.
@Suite("Daemon REST API, on real Incus", .needsIncus, .serialized)
struct DaemonRESTTests {
    @Test("full lifecycle through REST: create, SSH, list, stop/start, resize, keys, collaborators, cleanup, async create with events, audit, delete")
    func lifecycle() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        // The reconciler runs every second throughout: it must never mistake a live create,
        // delete or change for something to repair.
        // (gRPC connections idle for 3 s are closed: a call that runs longer must not be.)
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--swagger-dir", TestEnv.swaggerDir, "--reconcile-interval", "1", "--grpc-idle-timeout", "3"])
        try d.start()
        defer { d.stop() }
        let sfx = TestEnv.suffix()
        let alice = "ra\(sfx)", bob = "rb\(sfx)", carol = "rc\(sfx)"
        defer { [alice, bob, carol].forEach { box.forceDelete("\($0)-container") } }
        let admin = try d.token("admin", roles: "admin")
        let aliceT = try d.token(alice), bobT = try d.token(bob)

        // Create (synchronous) as the user itself.
        let created = try HTTP.call("POST", d.base + "/v1/containers", token: aliceT, body: HTTP.json([
            "username": alice, "sshKeys": [box.key.publicText], "resources": ["cpu": "1", "memory": "512MB"],
        ]))
        #expect(created.status == 201, "\(created.text)")
        let c = try #require(created.json)
        #expect(c["state"]?.stringValue == "CONTAINER_STATE_RUNNING")
        #expect(c["owner"]?.stringValue == alice)
        let ip = try #require(c["network"]?["ipAddress"]?.stringValue)
        let ssh = try IncusEnv.ssh(user: alice, host: ip, key: box.key.privateKey, "id -un && sudo -n true && echo sudo-ok")
        #expect(ssh.status == 0 && ssh.stdout.contains(alice) && ssh.stdout.contains("sudo-ok"), "\(ssh.output)")

        // Exhaustion: commands that write without end, on stdout or stderr, are stopped at the
        // output limit (16 MiB) with a clear 429; nothing of theirs keeps running, and the
        // environment and the daemon carry on.
        for command in [["yes"], ["sh", "-c", "yes 2>&1 >&2 | cat >&2"], ["cat", "/dev/urandom"]] {
            let flood = try HTTP.call("POST", d.base + "/v1/containers/\(alice)/exec", token: aliceT, body: HTTP.json(["command": command, "asUser": true]), timeout: 180)
            #expect(flood.status == 429 && flood.json?["error"]?["code"]?.stringValue == "resource_exhausted" && flood.text.contains("more than 16MiB of output"),
                    "\(command): \(flood.status) \(flood.text.prefix(300))")
        }
        try eventually("the flooding commands are gone", within: 20) {
            try box.incus(["exec", "\(alice)-container", "--", "pgrep", "-x", "yes|cat"]).status == 1
        }
        let fine = try HTTP.call("POST", d.base + "/v1/containers/\(alice)/exec", token: aliceT, body: HTTP.json(["command": ["sh", "-c", "echo out; echo err >&2; exit 3"], "asUser": true]))
        #expect(fine.status == 200 && fine.json?["stdout"]?.stringValue == "out\n" && fine.json?["stderr"]?.stringValue == "err\n"
                && fine.json?["exitCode"]?.number == 3, "\(fine.text)")
        // Exhaustion: commands that run at once are bounded per environment (8): a ninth is
        // refused at once with a clear 429 while eight `sleep`s hold their slots, and once they
        // end the next command runs.
        let slow = DispatchGroup()
        let statuses = Mutex<[Int]>([])
        for _ in 0..<8 {
            DispatchQueue.global().async(group: slow) {
                let r = try? HTTP.call("POST", d.base + "/v1/containers/\(alice)/exec", token: aliceT,
                                       body: HTTP.json(["command": ["sleep", "8"], "asUser": true]), timeout: 60)
                statuses.withLock { $0.append(r?.status ?? -1) }
            }
        }
        try eventually("eight commands run", within: 20, every: 100_000) {
            try box.incus(["exec", "\(alice)-container", "--", "pgrep", "-c", "-x", "sleep"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "8"
        }
        let ninth = try HTTP.call("POST", d.base + "/v1/containers/\(alice)/exec", token: aliceT, body: HTTP.json(["command": ["true"], "asUser": true]))
        #expect(ninth.status == 429 && ninth.text.contains("8 commands are running in \(alice)-container already"), "\(ninth.status) \(ninth.text)")
        slow.wait()
        #expect(statuses.withLock { $0 } == Array(repeating: 200, count: 8))
        // A gRPC call that outlasts the idle timeout and the first-call deadline (3 s) is not cut off.
        let long = try box.cli(["exec", alice, "--as-user", "--server", "127.0.0.1:\(d.grpcPort)", "--token", aliceT, "--", "sh", "-c", "sleep 5; echo done"])
        #expect(long.status == 0 && long.stdout == "done\n", "\(long.output)")
        #expect(try HTTP.call("POST", d.base + "/v1/containers/\(alice)/exec", token: aliceT, body: HTTP.json(["command": ["true"], "asUser": true])).status == 200)

        // A user may only create its own environment.
        let other = try HTTP.call("POST", d.base + "/v1/containers", token: bobT, body: HTTP.json(["username": alice + "x", "sshKeys": [box.key.publicText]]))
        #expect(other.status == 403)
        // Duplicates are refused.
        let dup = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json(["username": alice, "sshKeys": [box.key.publicText]]))
        #expect(dup.status == 409, "\(dup.text)")

        // Listing is filtered by access.
        let names = { (t: String) throws -> [String] in
            (try HTTP.call("GET", d.base + "/v1/containers", token: t).json?["containers"]?.items ?? []).compactMap { $0["username"]?.stringValue }
        }
        #expect(try names(aliceT) == [alice])
        #expect(try names(bobT).isEmpty)
        #expect(try names(admin).contains(alice))
        #expect(try HTTP.call("GET", d.base + "/v1/containers/\(alice)", token: bobT).status == 403)

        // Power and resize.
        let stopped = try HTTP.call("POST", d.base + "/v1/containers/\(alice)/stop", token: aliceT, body: #"{"force": true}"#)
        #expect(stopped.json?["state"]?.stringValue == "CONTAINER_STATE_STOPPED", "\(stopped.text)")
        let started = try HTTP.call("POST", d.base + "/v1/containers/\(alice)/start", token: aliceT)
        #expect(started.json?["state"]?.stringValue == "CONTAINER_STATE_RUNNING", "\(started.text)")
        let resized = try HTTP.call("PUT", d.base + "/v1/containers/\(alice)/resize", token: aliceT, body: #"{"resources": {"memory": "768MB"}}"#)
        #expect(resized.status == 200, "\(resized.text)")
        let limit = try box.incus(["config", "get", "\(alice)-container", "limits.memory"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(limit == "\(try ByteSize(parsing: "768MB").bytes)B", "limits.memory is \(limit)")

        // SSH keys: add a second key, log in with it, remove the first, refuse to remove the last.
        let keys2 = box.dir.appendingPathComponent("keys2")
        try FileManager.default.createDirectory(at: keys2, withIntermediateDirectories: true)
        let key2 = try KeyPair.generate(in: keys2)
        let added = try HTTP.call("POST", d.base + "/v1/containers/\(alice)/ssh-keys", token: aliceT, body: HTTP.json(["sshPublicKey": key2.publicText]))
        #expect(added.status == 201, "\(added.text)")
        let newIP = try #require(try HTTP.call("GET", d.base + "/v1/containers/\(alice)", token: aliceT).json?["network"]?["ipAddress"]?.stringValue)
        #expect(try IncusEnv.ssh(user: alice, host: newIP, key: key2.privateKey, "true").status == 0)
        let listed = try #require(try HTTP.call("GET", d.base + "/v1/containers/\(alice)/ssh-keys", token: aliceT).json?["keys"]?.items)
        #expect(listed.count == 2)
        let first = try #require(try SSHPublicKey(parsing: box.key.publicText).fingerprint.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        #expect(try HTTP.call("DELETE", d.base + "/v1/containers/\(alice)/ssh-keys?fingerprint=\(first)", token: aliceT).status == 200)
        #expect(try IncusEnv.ssh(user: alice, host: newIP, key: box.key.privateKey, "true", within: 3).status == 255)
        let second = try #require(try SSHPublicKey(parsing: key2.publicText).fingerprint.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        #expect(try HTTP.call("DELETE", d.base + "/v1/containers/\(alice)/ssh-keys?fingerprint=\(second)", token: aliceT).status == 412)
        #expect(try HTTP.call("POST", d.base + "/v1/containers/\(alice)/ssh-keys", token: aliceT, body: #"{"sshPublicKey": "ssh-rsa AAAA not-a-key"}"#).status == 400)

        // Collaborators: bob may see and act, not delete; removal revokes.
        #expect(try HTTP.call("POST", d.base + "/v1/containers/\(alice)/collaborators", token: bobT, body: HTTP.json(["collaboratorUsername": bob])).status == 403)
        #expect(try HTTP.call("POST", d.base + "/v1/containers/\(alice)/collaborators", token: aliceT, body: HTTP.json(["collaboratorUsername": bob])).status == 201)
        #expect(try HTTP.call("GET", d.base + "/v1/containers/\(alice)", token: bobT).status == 200)
        #expect(try names(bobT) == [alice])
        #expect(try HTTP.call("DELETE", d.base + "/v1/containers/\(alice)", token: bobT).status == 403)
        let collabs = try HTTP.call("GET", d.base + "/v1/containers/\(alice)/collaborators", token: aliceT).json?["collaborators"]?.items ?? []
        #expect(collabs.compactMap { $0["collaboratorUsername"]?.stringValue } == [bob])
        let removed = try HTTP.call("DELETE", d.base + "/v1/containers/\(alice)/collaborators/\(bob)", token: aliceT)
        #expect(removed.status == 200, "\(removed.text)")
        #expect(try HTTP.call("GET", d.base + "/v1/containers/\(alice)", token: bobT).status == 403)

        // A change made behind the daemon's back (plain `incus`) reaches its inventory through
        // Incus's event stream, without any request asking for it.
        #expect(try box.incus(["stop", "--force", "\(alice)-container"]).status == 0)
        try eventually("the listing shows the stop made with incus", within: 30, every: 50_000) {
            let list = try HTTP.call("GET", d.base + "/v1/containers", token: admin).json?["containers"]?.items ?? []
            return list.first { $0["username"]?.stringValue == alice }?["state"]?.stringValue == "CONTAINER_STATE_STOPPED"
        }
        // The local CLI's mutations land in the same audit log (interface "cli").
        var cliEnv = box.environment
        cliEnv["CONTAINARIUM_STATE_DIR"] = d.stateDir.path
        let localStart = try Run.run(TestEnv.cliPath, ["start", alice], environment: cliEnv)
        #expect(localStart.status == 0, "\(localStart.output)")
        let cliAudit = try HTTP.call("GET", d.base + "/v1/audit?action=container.start&target=\(alice)", token: admin).json?["entries"]?.items ?? []
        #expect(cliAudit.contains { $0["interface"]?.stringValue == "cli" && $0["source"]?.stringValue == "local" && $0["result"]?.stringValue == "ok" })

        let cleanup = try HTTP.call("POST", d.base + "/v1/containers/\(alice)/cleanup-disk", token: aliceT)
        #expect(cleanup.status == 200 && cleanup.json?["username"]?.stringValue == alice, "\(cleanup.text)")

        // Asynchronous create: 202 + operation; progress streams as server-sent events.
        let sseFile = box.dir.appendingPathComponent("sse.txt")
        let sse = Process()
        sse.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        sse.arguments = ["-sN", "--max-time", "120", "-H", "Authorization: Bearer \(admin)", "-o", sseFile.path, d.base + "/v1/events"]
        try sse.run()
        defer { if sse.isRunning { sse.terminate() } }
        try eventually("the SSE stream is connected") { ((try? String(contentsOf: sseFile, encoding: .utf8)) ?? "").contains(": connected") }
        let accepted = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json(["username": carol, "sshKeys": [box.key.publicText], "async": true]))
        #expect(accepted.status == 202, "\(accepted.text)")
        #expect(accepted.headers.lowercased().contains("location: /v1/operations/"))
        let opID = try #require(accepted.json?["id"]?.stringValue)
        var final: JSONValue = .null
        try eventually("the async create finishes", within: 180) {
            final = try HTTP.call("GET", d.base + "/v1/operations/\(opID)", token: admin).json ?? .null
            return final["state"]?.stringValue != "OPERATION_STATE_RUNNING"
        }
        #expect(final["state"]?.stringValue == "OPERATION_STATE_SUCCEEDED", "\(final)")
        #expect(final["result"]?["name"]?.stringValue == "\(carol)-container")
        #expect(try HTTP.call("GET", d.base + "/v1/operations/\(opID)", token: aliceT).status == 403)
        try eventually("progress events for the operation arrived") {
            let text = (try? String(contentsOf: sseFile, encoding: .utf8)) ?? ""
            return text.contains("event: operation.progress") && text.contains(opID) && text.contains("event: operation.finished")
        }

        // Audit: mutations and authentication failures, with who/role/source/result; admin only.
        #expect(try HTTP.call("GET", d.base + "/v1/containers", token: "not.a.token").status == 401)
        #expect(try HTTP.call("GET", d.base + "/v1/audit", token: aliceT).status == 403)
        let audit = try #require(try HTTP.call("GET", d.base + "/v1/audit?limit=500", token: admin).json?["entries"]?.items)
        let create = audit.first { $0["action"]?.stringValue == "container.create" && $0["target"]?.stringValue == alice && $0["actor"]?.stringValue == alice }
        #expect(audit.contains { $0["action"]?.stringValue == "container.create" && $0["target"]?.stringValue == alice && $0["result"]?.stringValue == "already_exists" })
        #expect(create?["actor"]?.stringValue == alice && create?["role"]?.stringValue == "user" && create?["result"]?.stringValue == "ok")
        #expect(create?["source"]?.stringValue?.hasPrefix("127.0.0.1:") == true)
        #expect(audit.contains { $0["action"]?.stringValue == "auth.failure" && $0["result"]?.stringValue == "unauthenticated" })
        #expect(audit.contains { $0["action"]?.stringValue == "container.delete" && $0["actor"]?.stringValue == bob && $0["result"]?.stringValue == "permission_denied" })
        #expect(audit.contains { $0["action"]?.stringValue == "container.create" && $0["target"]?.stringValue == carol && $0["detail"]?.stringValue?.contains(opID) == true })
        let filtered = try #require(try HTTP.call("GET", d.base + "/v1/audit?actor=\(bob)", token: admin).json?["entries"]?.items)
        #expect(!filtered.isEmpty && filtered.allSatisfy { $0["actor"]?.stringValue == bob })
        // The same log through the CLI, read from the state directory.
        let cli = try Run.run(TestEnv.cliPath, ["audit", "--state-dir", d.stateDir.path, "--actor", alice, "--format", "json"])
        #expect(cli.status == 0 && cli.stdout.contains("container.create"), "\(cli.output)")
        // Secrets and tokens never appear in the audit log or the daemon's log.
        let everything = try HTTP.call("GET", d.base + "/v1/audit?limit=10000", token: admin).text + d.log
        for secret in [d.secret, admin, aliceT, bobT] { #expect(!everything.contains(secret)) }

        // Delete: owner and admin; gone from Incus and the store.
        let delAlice = try HTTP.call("DELETE", d.base + "/v1/containers/\(alice)", token: aliceT)
        #expect(delAlice.status == 200, "\(delAlice.text)")
        let delCarol = try HTTP.call("DELETE", d.base + "/v1/containers/\(carol)", token: admin)
        #expect(delCarol.status == 200, "\(delCarol.text)")
        #expect(try !box.exists("\(alice)-container") && !box.exists("\(carol)-container"))
        #expect(try HTTP.call("GET", d.base + "/v1/containers/\(alice)", token: admin).status == 404)
        // Nothing about a deleted environment answers as if it still existed (schemathesis' ST301).
        for sub in ["collaborators", "metrics", "ssh-keys", "ssh-config"] {
            let r = try HTTP.call("GET", d.base + "/v1/containers/\(alice)/\(sub)", token: admin)
            #expect(r.status == 404, "\(sub) of a deleted environment: \(r.status) \(r.text)")
        }

        // SIGTERM: graceful shutdown, exit status 0.
        d.signal(SIGTERM)
        #expect(try d.wait() == 0, "\(d.log)")
    }

    @Test("a browser terminal that stops reading holds the shell back: the daemon's memory stays bounded while `yes` runs, and output flows again once the reader is back")
    func stalledTerminal() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600"])
        try d.start()
        defer { d.stop() }
        let user = "rs\(TestEnv.suffix())"
        defer { box.forceDelete("\(user)-container") }
        let admin = try d.token("admin", roles: "admin")
        let created = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json(["username": user, "sshKeys": [box.key.publicText]]))
        #expect(created.status == 201, "\(created.text)")
        guard let pid = d.pid else { throw TestFailure("no daemon pid") }
        func rssMiB() -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
        }
        let before = rssMiB()
        let helper = Process()
        helper.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        helper.arguments = [TestEnv.repoRoot.appendingPathComponent("Tests/Helpers/ws_stall.py").path, "127.0.0.1:\(d.httpPort)", user,
                            try d.token(user), "yes", "12"]
        let out = Pipe()
        helper.standardOutput = out
        try helper.run()
        var peak = before
        let deadline = Date().addingTimeInterval(11)
        while Date() < deadline && helper.isRunning {
            peak = max(peak, rssMiB())
            usleep(250_000)
        }
        helper.waitUntilExit()
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(peak - before < 64, "the daemon grew from \(before) MiB to \(peak) MiB while the reader stalled")
        let read = Int(said.split(separator: "\n").last { $0.hasPrefix("read ") }?.dropFirst(5) ?? "0") ?? 0
        #expect(read > 100_000, "output flows again once the reader is back: \(said)")
        try eventually("yes ends with the terminal", within: 20) {
            try box.incus(["exec", "\(user)-container", "--", "pgrep", "-x", "yes"]).status == 1
        }
    }

    @Test("REST connection limits: past the per-address cap a connection is closed before anything is read; one that sends no whole request head in time is closed, however slowly bytes trickle in; a freed place serves again")
    func connectionLimits() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--http-max-connections-per-address", "3", "--http-idle-timeout", "3",
                                                           "--grpc-max-connections-per-address", "3", "--grpc-idle-timeout", "3"])
        try d.start()
        defer { d.stop() }
        func connect(port: Int? = nil) throws -> Int32 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = in_port_t(UInt16(port ?? d.httpPort).bigEndian)
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard rc == 0 else { close(fd); throw TestFailure("connect failed") }
            var tv: (Int, Int) = (8, 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<(Int, Int)>.size))
            return fd
        }
        /// Seconds until the daemon closes `fd` (nil: still open after 8 s).
        /// (What the server says first, such as HTTP/2's SETTINGS, is read past.)
        func closedAfter(_ fd: Int32) -> Double? {
            let start = Date()
            var b = [UInt8](repeating: 0, count: 64)
            while true {
                let n = recv(fd, &b, b.count, 0)
                if n == 0 { return Date().timeIntervalSince(start) }
                if n < 0 { return nil }
            }
        }
        // Four at once from one address: the daemon sets connections up on several threads, so
        // which one comes last is its choice. Exactly one is closed at once.
        let opened = Date()
        let four = try (0..<4).map { _ in try connect() }
        usleep(1_000_000)
        func isClosed(_ fd: Int32) -> Bool {
            var b = [UInt8](repeating: 0, count: 64)
            while true {
                let n = recv(fd, &b, b.count, Int32(MSG_DONTWAIT))
                if n == 0 { return true }
                if n < 0 { return false }
            }
        }
        let refused = four.filter(isClosed)
        #expect(refused.count == 1, "\(refused.count) of 4 closed within 1 s")
        let silent = four.filter { !refused.contains($0) }
        // The silent three are closed at the deadline (3 s), which frees their places.
        if let first = silent.first { _ = closedAfter(first) }
        let idleIn = Date().timeIntervalSince(opened)
        #expect(idleIn > 2 && idleIn < 8, "closed after \(idleIn) s")
        refused.forEach { close($0) }
        silent.forEach { close($0) }
        try eventually("a freed place serves again", within: 10) { (try? HTTP.call("GET", d.base + "/healthz"))?.status == 200 }
        // Bytes that trickle in (never a whole request head) do not extend the deadline.
        let trickle = try connect()
        let start = Date()
        var closedAt: Double?
        for byte in Array("GET /healthz HTTP/1.1\r\nX: ".utf8) where closedAt == nil && Date().timeIntervalSince(start) < 9 {
            var b = byte
            _ = send(trickle, &b, 1, Int32(MSG_NOSIGNAL))
            usleep(400_000)
            var probe = [UInt8](repeating: 0, count: 16)
            if recv(trickle, &probe, probe.count, Int32(MSG_DONTWAIT)) == 0 { closedAt = Date().timeIntervalSince(start) }
        }
        close(trickle)
        #expect(closedAt.map { $0 < 6 } == true, "a trickling connection is closed at the deadline: \(String(describing: closedAt))")

        // gRPC the same: a fourth connection from one address is closed as it is accepted, and
        // connections that make no call (no TLS, no HTTP/2 preface) are closed at the idle timeout.
        let grpcOpened = Date()
        let grpcFour = try (0..<4).map { _ in try connect(port: d.grpcPort) }
        usleep(1_000_000)
        let grpcRefused = grpcFour.filter(isClosed)
        #expect(grpcRefused.count == 1, "gRPC: \(grpcRefused.count) of 4 closed within 1 s")
        let grpcSilent = grpcFour.filter { !grpcRefused.contains($0) }
        if let first = grpcSilent.first { _ = closedAfter(first) }
        let grpcIdle = Date().timeIntervalSince(grpcOpened)
        #expect(grpcIdle > 2 && grpcIdle < 8, "gRPC: closed after \(grpcIdle) s")
        grpcFour.forEach { close($0) }
        #expect(d.log.contains("gRPC: refused a connection from 127.0.0.1: too many connections open"))
        let admin = try d.token("admin", roles: "admin")
        try eventually("a freed gRPC place serves again", within: 10) {
            try box.cli(["list", "--server", "127.0.0.1:\(d.grpcPort)", "--token", admin]).status == 0
        }
    }

    @Test("REST over TLS (--tls-cert/--tls-key): the API answers over HTTPS with the deployment's certificate, and nothing in clear; half a pair is refused")
    func tls() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let certs = box.dir.appendingPathComponent("certs")
        let gen = try Run.run(TestEnv.cliPath, ["cert", "generate", "--server-ip", "127.0.0.1", "--output-dir", certs.path])
        #expect(gen.status == 0, "\(gen.output)")
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--tls-cert", certs.appendingPathComponent("server.crt").path,
                                                           "--tls-key", certs.appendingPathComponent("server.key").path])
        d.tlsCA = certs.appendingPathComponent("ca.crt")
        try d.start()
        defer { d.stop() }
        let admin = try d.token("admin", roles: "admin")
        let listed = try HTTP.call("GET", d.base + "/v1/containers", token: admin, cacert: d.tlsCA?.path)
        #expect(listed.status == 200 && listed.json?["containers"] != nil, "\(listed.text)")
        // In clear, the same port answers nothing a client could read; an unknown CA is refused.
        let plain = try Run.run("/usr/bin/curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "http://127.0.0.1:\(d.httpPort)/healthz"])
        #expect(plain.stdout != "200", "\(plain.output)")
        let untrusted = try Run.run("/usr/bin/curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "https://127.0.0.1:\(d.httpPort)/healthz"])
        #expect(untrusted.status != 0 && untrusted.stdout != "200", "\(untrusted.output)")
        // Half a pair is refused before anything listens.
        let half = try box.cli(["daemon", "--jwt-secret-file", d.secretFile.path, "--state-dir", box.dir.appendingPathComponent("state2").path,
                                "--http-port", String(try DaemonProcess.freePort()), "--port", "0", "--tls-cert", certs.appendingPathComponent("server.crt").path],
                               timeout: 60)
        #expect(half.status != 0 && half.stderr.contains("--tls-cert and --tls-key go together"), "\(half.output)")
    }

    @Test("malformed JSON, unknown fields, wrong types and bad values get 400 with a stable code, never 500; nothing is created")
    func badInput() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box)
        try d.start()
        defer { d.stop() }
        let admin = try d.token("admin", roles: "admin")
        let u = "bad\(TestEnv.suffix())"
        let key = box.key.publicText.trimmingCharacters(in: .whitespacesAndNewlines)
        let cases: [(String, String)] = [
            ("{", "malformed"), ("[]", "not an object"), (#"{"username": "\#(u)", "sshKeys": ["\#(key)"], "colour": "red"}"#, "unknown field"),
            (#"{"username": 42, "sshKeys": ["\#(key)"]}"#, "wrong type"), (#"{"username": "Root!", "sshKeys": ["\#(key)"]}"#, "bad username"),
            (#"{"username": "\#(u)", "enableDocker": true, "nesting": false}"#, "runtime without nesting"),
            (#"{"username": "\#(u)", "stack": "no-such-stack", "async": true}"#, "unknown stack"), (#"{"username": "\#(u)", "sshKeys": ["ssh-ed25519 !!!"]}"#, "bad key"),
            (#"{"username": "\#(u)", "sshKeys": ["\#(key)"], "resources": {"memory": "lots"}}"#, "bad size"),
            (#"{"username": "\#(u)", "sshKeys": ["\#(key)"], "resources": {"gpu": "1"}}"#, "unknown nested field"),
            (#"{"username": "\#(u)", "sshKeys": ["\#(key)"], "osType": "OS_TYPE_WINDOWS_95"}"#, "unknown OS type"),
            (#"{"username": "\#(u)", "sshKeys": ["\#(key)"], "async": "yes"}"#, "async not a boolean"),
            (String(repeating: "[", count: 5000), "deep nesting"),
        ]
        for (body, why) in cases {
            let r = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: body)
            #expect(r.status == 400, "\(why): \(r.status) \(r.text)")
            #expect(r.json?["error"]?["code"]?.stringValue == "invalid_argument", "\(why): \(r.text)")
        }
        #expect(try HTTP.call("PUT", d.base + "/v1/containers/\(u)/resize", token: admin, body: #"{"resources": {"memory": true}}"#).status == 400)
        #expect(try HTTP.call("PUT", d.base + "/v1/containers/\(u)/resize", token: admin, body: #"{"resources": {"memory": "1GB"}}"#).status == 404)
        #expect(try HTTP.call("GET", d.base + "/v1/audit?limit=0", token: admin).status == 400)
        #expect(try HTTP.call("GET", d.base + "/v1/audit?since=yesterday", token: admin).status == 400)
        #expect(try HTTP.call("GET", d.base + "/v1/nope", token: admin).status == 404)
        let wrongMethod = try HTTP.call("PATCH", d.base + "/v1/containers", token: admin)
        #expect(wrongMethod.status == 405 && wrongMethod.headers.contains("GET"))
        let big = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: "{\"username\": \"" + String(repeating: "a", count: 2 << 20) + "\"}")
        #expect(big.status == 413)
        #expect(try !box.exists("\(u)-container"))
        #expect(try HTTP.call("GET", d.base + "/v1/containers/\(u)", token: admin).status == 404)
    }

    @Test("the OpenAPI document and Swagger UI are served from local assets")
    func docs() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--swagger-dir", TestEnv.swaggerDir])
        try d.start()
        defer { d.stop() }
        let spec = try HTTP.call("GET", d.base + "/openapi.json")
        #expect(spec.status == 200)
        #expect(spec.json?["openapi"]?.stringValue == "3.0.3")
        let onDisk = try Data(contentsOf: TestEnv.repoRoot.appendingPathComponent("docs/openapi.json"))
        #expect(try JSONDecoder().decode(JSONValue.self, from: onDisk) == spec.json, "docs/openapi.json and the served document differ: run scripts/gen-openapi.sh")
        let page = try HTTP.call("GET", d.base + "/swagger-ui/")
        #expect(page.status == 200 && page.text.contains("/swagger-ui/swagger-ui-bundle.js") && page.text.contains("/openapi.json"))
        #expect(!page.text.contains("http://") && !page.text.contains("https://"), "no CDN")
        let js = try HTTP.call("GET", d.base + "/swagger-ui/swagger-ui-bundle.js")
        #expect(js.status == 200 && js.body.count > 100_000)
        #expect(try HTTP.call("GET", d.base + "/swagger-ui/../../etc/passwd").status == 404)
        #expect(try HTTP.call("GET", d.base + "/healthz").status == 200)
    }
}
