import ContainariumCore
import ContainariumService
import Foundation
import PluginHost
import TestSupport
import Testing

@Suite("Failed creates leave nothing behind, on real Incus", .needsIncus, .serialized)
struct FailureTests {
    @Test("an image alias that does not exist: clear error, no container")
    func missingImage() async throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let key = sandbox.key.publicText
        let user = "noimg\(TestEnv.suffix())"
        let service = try sandbox.service()
        do {
            _ = try await service.create(CreateEnvironmentRequest(username: user, sshKeys: [key], image: "no/such-image-\(user)"))
            Issue.record("create with a missing image succeeded")
        } catch {
            #expect(error.code == .notFound)
            #expect(error.message.contains("image alias 'no/such-image-\(user)' does not exist"))
        }
        #expect(try !IncusEnv.exists("\(user)-container"))
    }

    @Test("a bad key or bad sizes are refused before anything is created (CLI exit status 2)")
    func badInput() throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let user = "badkey\(TestEnv.suffix())"
        let bad = sandbox.dir.appendingPathComponent("bad.pub")
        try Data("ssh-ed25519 AAAAthisisnotakey user@host\n".utf8).write(to: bad)
        let r = try sandbox.cli(["create", user, "--ssh-key", bad.path])
        #expect(r.status == 2)
        #expect(r.stderr.contains("SSH public key"))
        let key = sandbox.key.publicText
        let good = sandbox.dir.appendingPathComponent("good.pub")
        try Data(key.utf8).write(to: good)
        let size = try sandbox.cli(["create", user, "--ssh-key", good.path, "--memory", "8"])
        #expect(size.status == 2)
        #expect(size.stderr.contains("has no unit"))
        let name = try sandbox.cli(["create", "Root;reboot", "--ssh-key", good.path])
        #expect(name.status == 2)
        #expect(try !IncusEnv.exists("\(user)-container"))
    }

    @Test("a create that fails half-way (no network in time) removes the container it made")
    func halfWay() async throws {
        // A profile without a network device: the container can never get an address, so the
        // create fails at its last step whatever the timing (a zero timeout alone races DHCP).
        let profile = "ctmnonet\(TestEnv.suffix())"
        #expect(try IncusEnv.incus(["profile", "create", profile]).status == 0)
        defer { _ = try? IncusEnv.incus(["profile", "delete", profile]) }
        let sandbox = try IncusEnv.Sandbox(pluginConfig: ["networkTimeoutSeconds": 1, "profiles": [profile]])
        defer { sandbox.cleanup() }
        let key = sandbox.key.publicText
        let user = "half\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete("\(user)-container") }
        let service = try sandbox.service()
        let steps = StepLog()
        do {
            _ = try await service.create(CreateEnvironmentRequest(username: user, sshKeys: [key])) { steps.add($0) }
            Issue.record("create with a zero network timeout succeeded")
        } catch {
            #expect(error.code == .timeout)
            #expect(error.message.contains("got no IPv4 address"))
        }
        #expect(steps.all.contains { $0.message.contains("Starting container") }, "the failure must come after the container existed")
        #expect(try !IncusEnv.exists("\(user)-container"))
        #expect(try !IncusEnv.hasVolume("\(user)-container"))
    }

    @Test("creating an environment that exists fails and leaves the existing one alone")
    func alreadyExists() async throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let key = sandbox.key.publicText
        let user = "twice\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete("\(user)-container") }
        let service = try sandbox.service()
        _ = try await service.create(CreateEnvironmentRequest(username: user, sshKeys: [key]))
        do {
            _ = try await service.create(CreateEnvironmentRequest(username: user, sshKeys: [key]))
            Issue.record("second create succeeded")
        } catch {
            #expect(error.code == .alreadyExists)
        }
        #expect(try IncusEnv.exists("\(user)-container"))
        #expect(try await service.info(username: user).state == .running)

        // the disk can never shrink below what is in use
        let backend = try service.plugins.instances()
        do {
            _ = try await backend.resize(ResizeRequest(name: "\(user)-container", diskBytes: 4096))
            Issue.record("shrinking the disk below usage succeeded")
        } catch {
            #expect(error.code == .failedPrecondition)
            #expect(error.message.contains("already uses"))
        }
        try await service.delete(username: user, force: true)
        #expect(try !IncusEnv.exists("\(user)-container"))
    }
}

final class StepLog: Sendable {
    private let steps = MutexBox<[StepProgress]>([])
    func add(_ p: StepProgress) { steps.mutate { $0.append(p) } }
    var all: [StepProgress] { steps.value }
}

final class MutexBox<T: Sendable>: @unchecked Sendable {
    private var v: T
    private let lock = NSLock()
    init(_ v: T) { self.v = v }
    var value: T { lock.withLock { v } }
    func mutate(_ f: (inout T) -> Void) { lock.withLock { f(&v) } }
}

@Suite("Interrupted creates roll back, on real Incus", .needsIncus)
struct InterruptTests {
    @Test("Ctrl-C (SIGINT) during a create cancels it, removes the container and exits 130")
    func interrupt() throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let user = "intr\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete("\(user)-container") }
        try Self.interruptedCreate(sandbox, user)
        #expect(try !IncusEnv.exists("\(user)-container"))
        #expect(try !IncusEnv.hasVolume("\(user)-container"))
    }

    @Test("Ctrl-C during a CLI create that goes through the node's daemon: the daemon cancels it, rolls back, keeps no record and audits it")
    func interruptThroughTheDaemon() throws {
        let sandbox = try IncusEnv.Sandbox(ownProject: true)
        defer { sandbox.cleanup() }
        let d = try DaemonProcess(sandbox: sandbox)
        try d.start()
        defer { d.stop() }
        let admin = try d.token("admin", roles: "admin")
        let user = "intd\(TestEnv.suffix())"
        try Self.interruptedCreate(sandbox, user)
        // The create ends, as cancelled, once its rollback is done: audited then.
        try eventually("the daemon cancelled the create and rolled it back", within: 30) {
            let audit = try HTTP.call("GET", d.base + "/v1/audit?action=container.create&target=\(user)", token: admin).json?["entries"]?.items ?? []
            return audit.contains { $0["actor"]?.stringValue == "local-admin" && $0["result"]?.stringValue == "cancelled" }
        }
        #expect(try !sandbox.exists("\(user)-container"))
        #expect(try HTTP.call("GET", d.base + "/v1/containers/\(user)", token: admin).status == 404)
        // The name is free again.
        let again = try sandbox.cli(["create", user, "--ssh-key", sandbox.key.publicKey.path])
        #expect(again.status == 0, "\(again.output)")
        #expect(try HTTP.call("DELETE", d.base + "/v1/containers/\(user)", token: admin).status == 200)
    }

    /// Run `create USER --stack python` with the real CLI and send it SIGINT during the stack
    /// step (seconds of work with the container made); it must exit 130, saying so.
    static func interruptedCreate(_ sandbox: IncusEnv.Sandbox, _ user: String) throws {
        let out = sandbox.dir.appendingPathComponent("create-\(user).out")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        let handle = try FileHandle(forWritingTo: out)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestEnv.cliPath)
        p.arguments = ["create", user, "--ssh-key", sandbox.key.publicKey.path, "--stack", "python"]
        p.environment = ProcessInfo.processInfo.environment.merging(sandbox.environment) { $1 }
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        defer { Run.end(pid: p.processIdentifier, expecting: TestEnv.cliPath) }
        let deadline = Date().addingTimeInterval(120)
        var text = ""
        while Date() < deadline, p.isRunning {
            text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            if text.contains("[6/7]") { break }
            usleep(50_000)
        }
        #expect(text.contains("[6/7]"), "create never reached the stack step: \(text)")
        #expect(try sandbox.exists("\(user)-container"))
        p.interrupt()
        while p.isRunning, Date() < deadline { usleep(50_000) }
        try handle.close()
        text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
        #expect(p.terminationStatus == 130, "exit status \(p.terminationStatus): \(text)")
        #expect(text.contains("Interrupted: cancelling and cleaning up"))
        #expect(!text.contains("created successfully"))
    }
}

@Suite("Concurrent operations through one service, on real Incus", .needsIncus)
struct ConcurrencyTests {
    @Test("several creates at once all succeed, each with its own address, and all delete cleanly")
    func parallelCreates() async throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let key = sandbox.key.publicText
        let service = try sandbox.service()
        let users = (0..<4).map { "par\($0)x\(TestEnv.suffix())" }
        defer { for u in users { IncusEnv.forceDelete("\(u)-container") } }
        let infos = try await withThrowingTaskGroup(of: InstanceInfo.self) { group in
            for u in users {
                group.addTask { try await service.create(CreateEnvironmentRequest(username: u, sshKeys: [key])) }
            }
            var all: [InstanceInfo] = []
            for try await info in group { all.append(info) }
            return all
        }
        #expect(Set(infos.map(\.name)) == Set(users.map { "\($0)-container" }))
        #expect(Set(infos.compactMap(\.ipv4.first)).count == users.count)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for u in users { group.addTask { try await service.delete(username: u, force: true) } }
            try await group.waitForAll()
        }
        for u in users { #expect(try !IncusEnv.exists("\(u)-container")) }
    }

    @Test("a stop and a delete that arrive while Incus is still restarting the environment wait for that restart, then succeed")
    func whileIncusIsBusy() async throws {
        let sandbox = try IncusEnv.Sandbox(ownProject: true)
        defer { sandbox.cleanup() }
        let service = try sandbox.service()
        let user = "busy\(TestEnv.suffix())", name = "\(user)-container"
        _ = try await service.create(CreateEnvironmentRequest(username: user, sshKeys: [sandbox.key.publicText]))
        // A unit that ignores its stop signal holds a clean shutdown for 8 s, so the restart
        // below is still running when the calls arrive (Incus answers those "busy").
        let unit = try sandbox.incus(["exec", name, "--", "systemd-run", "--unit=ctm-slowstop", "-p", "KillSignal=SIGCONT",
                                      "-p", "TimeoutStopSec=8", "sleep", "infinity"])
        #expect(unit.status == 0, "\(unit.output)")
        func restart() throws {
            let r = try IncusEnv.incus(["query", "-X", "PUT", "--data", #"{"action": "restart", "timeout": 60}"#,
                                        "/1.0/instances/\(name)/state?project=\(sandbox.project)"])
            try #require(r.status == 0 && r.stdout.contains("Restarting instance"), "\(r.output)")
            let ops = try IncusEnv.incus(["query", "/1.0/operations?recursion=1&project=\(sandbox.project)"])
            try #require(ops.stdout.contains("/1.0/instances/\(name)") && ops.stdout.contains("Running"), "still restarting: \(ops.output)")
        }
        try restart()
        let stopped = try await service.stop(username: user, force: true)
        #expect(stopped.state == .stopped)
        _ = try await service.start(username: user)
        _ = try sandbox.incus(["exec", name, "--", "systemd-run", "--unit=ctm-slowstop", "-p", "KillSignal=SIGCONT",
                               "-p", "TimeoutStopSec=8", "sleep", "infinity"])
        try restart()
        try await service.delete(username: user, force: true)
        #expect(try !sandbox.exists(name))
    }
}
