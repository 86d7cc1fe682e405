import ContainariumCore
import ContainariumDaemon
import ContainariumService
import ContainariumStore
import Foundation
import PluginHost
import Synchronization
import TestSupport
import Testing

/// The fake instances/1 plugin through the real loader and bridge: it must be a faithful
/// backend, or the tests above it prove nothing.
@Suite("Fake instances/1 plugin through PluginHost")
struct FakePluginTests {
    @Test("the loader opens it like any plugin: manifest, negotiation, identity, capability, health; disabled and failing initializations are reported")
    func loads() async throws {
        let dir = try TestEnv.tempDir("fake-load")
        defer { TestEnv.cleanup(dir) }
        let plugins = try Harness.loadPlugins(in: dir, config: [:])
        let record = try #require(plugins.records.first { $0.id == "fake-instances" })
        #expect(record.state == .ready)
        let plugin = try #require(record.plugin)
        #expect(plugin.abiVersion == "1.1")
        #expect(plugin.provides("instances/1"))
        #expect(await plugin.health().status == "ok")

        let off = try TestEnv.tempDir("fake-off")
        defer { TestEnv.cleanup(off) }
        #expect(try Harness.loadPlugins(in: off, config: [:], enabled: false).records.first?.state == .disabled)

        let bad = try TestEnv.tempDir("fake-bad")
        defer { TestEnv.cleanup(bad) }
        let failed = try Harness.loadPlugins(in: bad, config: ["failInitialize": .string("no backend here")]).records.first?.state
        guard case .failed(let why)? = failed else { throw TestFailure("initialization should fail: \(String(describing: failed))") }
        #expect(why.contains("no backend here"), "\(why)")
    }

    @Test("create reports the backend's steps, makes the account with its keys, and the instance answers like Debian")
    func createAndExec() async throws {
        try await Harness.with { (h: Harness) async throws in
            let key = Harness.sshKey("alice@laptop")
            let steps = Mutex<[StepProgress]>([])
            let info = try await h.plane.service.create(CreateEnvironmentRequest(username: "alice", sshKeys: [key])) { p in
                steps.withLock { $0.append(p) }
            }
            #expect(info.name == "alice-container" && info.state == .running && info.provisioned == true && !info.ipv4.isEmpty)
            #expect(info.labels["owner"] == "alice" && info.backend == "fake-instances" && info.node == Harness.node)
            #expect(steps.withLock { $0.map(\.step) } == [1, 2, 3, 4, 5])
            #expect(steps.withLock { $0.allSatisfy { $0.total == 5 } })
            #expect(steps.withLock { $0.last?.message } == "Waiting for network")

            let create = try #require(try h.calls("create").first)
            #expect(create.request["account"]?["name"]?.stringValue == "alice")
            #expect(create.request["account"]?["sshKeys"]?.items?.compactMap(\.stringValue) == [key])

            let passwd = try await h.plane.service.exec(username: "alice", command: ["getent", "passwd", "alice"])
            #expect(passwd.exitCode == 0 && PasswdEntry(line: passwd.stdout)?.uid == 1000)
            let who = try await h.plane.service.exec(username: "alice", command: ["whoami"], asUser: true)
            #expect(who.stdout == "alice\n")
            let missing = try await h.plane.service.exec(username: "alice", command: ["no-such-tool"])
            #expect(missing.exitCode == 127)
            // exec as the account resolved uid, gid, home and environment inside the instance
            let asUser = try #require(try h.calls("exec").last { $0.argv == ["whoami"] })
            #expect(asUser.request["user"]?.number == 1000 && asUser.request["cwd"]?.stringValue == "/home/alice")

            #expect(await errorCode { try await h.plane.service.create(CreateEnvironmentRequest(username: "alice", sshKeys: [key])) } == .alreadyExists)
            _ = try await h.plane.service.stop(username: "alice")
            #expect(await errorCode { try await h.plane.service.exec(username: "alice", command: ["true"]) } == .failedPrecondition)
            #expect(await errorCode { try await h.plane.service.resize(username: "alice", cpu: nil, memory: nil, disk: "1GiB") } == .failedPrecondition)
            #expect(try await h.plane.service.resize(username: "alice", cpu: "2", memory: "1GiB", disk: "20GiB").memoryLimitBytes == 1 << 30)
            try await h.plane.service.delete(username: "alice", force: false)
            #expect(try await h.plane.service.list().isEmpty)
            #expect(await errorCode { try await h.plane.service.info(username: "alice") } == .notFound)
        }
    }

    @Test("fake.fail-step fails the create at that step with its code and leaves no instance; the progress stops there")
    func createFault() async throws {
        try await Harness.with { (h: Harness) async throws in
            let steps = Mutex<[Int]>([])
            let request = CreateEnvironmentRequest(username: "bob", sshKeys: [Harness.sshKey()],
                                                   labels: ["fake.fail-step": "3", "fake.fail-code": "resource_exhausted"])
            let code = await errorCode { try await h.plane.service.create(request) { p in steps.withLock { $0.append(p.step) } } }
            #expect(code == .resourceExhausted)
            #expect(steps.withLock { $0 } == [1, 2, 3])
            #expect(try await h.plane.service.list().isEmpty)
            #expect(try h.calls("create").count == 1)
        }
    }

    @Test("the change stream: watch connects and reports changes made behind the control plane's back")
    func watch() async throws {
        try await Harness.with { (h: Harness) async throws in
            try await h.create("carol")
            // Stopped through the service directly: only the plugin's events tell the inventory.
            _ = try await h.plane.service.stop(username: "carol")
            try await eventually("the inventory sees carol stopped") { h.plane.inventory.get("carol-container")?.state == .stopped }
            try await h.plane.service.delete(username: "carol", force: true)
            try await eventually("the inventory drops carol") { h.plane.inventory.get("carol-container") == nil }
            #expect(try h.calls("watch").count >= 1)
        }
    }
}
