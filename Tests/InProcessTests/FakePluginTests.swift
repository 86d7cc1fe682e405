import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
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
        #expect(plugin.provides("instances/1") && plugin.provides("accounts/1"))
        #expect(await plugin.health().status == "ok")

        // Configured without accounts/1 (and a manifest that does not declare it): a backend
        // like QemuWindows. Hidden while the manifest declares it: the loader refuses it.
        let bare = try TestEnv.tempDir("fake-bare")
        defer { TestEnv.cleanup(bare) }
        let without = try #require(try Harness.loadPlugins(in: bare, config: [:], accounts: false).records.first?.plugin)
        #expect(without.provides("instances/1") && !without.provides("accounts/1"))
        let lying = try TestEnv.tempDir("fake-lying")
        defer { TestEnv.cleanup(lying) }
        let refused = try Harness.loadPlugins(in: lying, config: ["accounts": .bool(false)]).records.first?.state
        guard case .failed(let undeclared)? = refused else { throw TestFailure("a declared capability it does not serve: \(String(describing: refused))") }
        #expect(undeclared.contains("accounts/1"), "\(undeclared)")

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

    @Test("accounts/1 as the schema says: create is idempotent, keys are replaced and normalised, names, shells and keys are checked, not_found and failed_precondition")
    func accounts() async throws {
        try await Harness.with { (h: Harness) async throws in
            let accounts = try #require(h.accounts)
            let key = Harness.sshKey("pat"), other = Harness.sshKey("other")
            try await h.create("pat", keys: [key])
            let instance = "pat-container"
            // create at create time: the owner's account, uid 1000, sudo, its keys
            let owner = try #require(PasswdEntry(line: try await h.plane.service.exec(username: "pat", command: ["getent", "passwd", "pat"]).stdout))
            #expect(owner.uid == 1000 && owner.home == "/home/pat" && owner.shell == "/bin/bash")
            #expect(try await h.plane.service.exec(username: "pat", command: ["cat", "/etc/sudoers.d/90-containarium-pat"]).stdout == "pat ALL=(ALL:ALL) NOPASSWD: ALL\n")
            #expect(try await accounts.listKeys(AccountRef(instance: instance, name: "pat")) == [key])
            // create again: the same account, its keys replaced
            let again = try await accounts.create(AccountCreateRequest(instance: instance, account: AccountSpec(name: "pat", sshKeys: [other])))
            #expect(again == AccountInfo(name: "pat", uid: 1000, gid: 1000, home: "/home/pat", shell: "/bin/bash"))
            #expect(try await accounts.listKeys(AccountRef(instance: instance, name: "pat")) == [other])
            // a second account gets the next uid; no sudo, no rule
            let quinn = try await accounts.create(AccountCreateRequest(instance: instance, account: AccountSpec(name: "quinn", sshKeys: [], sudo: false, shell: "/bin/sh")))
            #expect(quinn.uid == 1001 && quinn.shell == "/bin/sh")
            #expect(try await h.plane.service.exec(username: "pat", command: ["cat", "/etc/sudoers.d/90-containarium-quinn"]).exitCode == 1)
            // set_keys replaces exactly, normalised (the comment kept, options never)
            #expect(try await accounts.setKeys(SetKeysRequest(instance: instance, name: "quinn", keys: [key + "  ", other])) == [key, other])
            #expect(try await accounts.setKeys(SetKeysRequest(instance: instance, name: "quinn", keys: [])) == [])
            #expect(try await accounts.listKeys(AccountRef(instance: instance, name: "quinn")).isEmpty)

            let bad: [(String, ContainariumError.Code, () async throws -> Any)] = [
                ("no such account", .notFound, { try await accounts.listKeys(AccountRef(instance: instance, name: "nobody-here")) }),
                ("no such account (set)", .notFound, { try await accounts.setKeys(SetKeysRequest(instance: instance, name: "nobody-here", keys: [key])) }),
                ("no such instance", .notFound, { try await accounts.listKeys(AccountRef(instance: "nope-container", name: "pat")) }),
                ("bad name", .invalidArgument, { try await accounts.listKeys(AccountRef(instance: instance, name: "Pat!")) }),
                ("system name", .invalidArgument, { try await accounts.create(AccountCreateRequest(instance: instance, account: AccountSpec(name: "root", sshKeys: []))) }),
                ("bad shell", .invalidArgument, { try await accounts.create(AccountCreateRequest(instance: instance, account: AccountSpec(name: "ray", sshKeys: [], shell: "bash"))) }),
                ("bad key", .invalidArgument, { try await accounts.setKeys(SetKeysRequest(instance: instance, name: "pat", keys: ["ssh-ed25519 nope"])) }),
                ("owner as collaborator", .invalidArgument, {
                    try await accounts.addCollaborator(CollaboratorRequest(instance: instance, owner: "pat", name: "pat", sshKeys: [], sudo: false, containerRuntime: false))
                }),
            ]
            for (what, code, call) in bad {
                #expect(await errorCode { try await call() } == code, "\(what)")
            }
            #expect(try await h.plane.service.exec(username: "pat", command: ["getent", "passwd", "ray"]).exitCode == 2, "a refused create makes nothing")
            #expect(try await accounts.listKeys(AccountRef(instance: instance, name: "pat")) == [other], "a refused set_keys changes nothing")
            // collaborators: update in place (the rule follows the mode); removal answers whether it removed
            let collaborator = CollaboratorRequest(instance: instance, owner: "pat", name: "sam", sshKeys: [key], sudo: true, containerRuntime: false)
            let sam = try await accounts.addCollaborator(collaborator)
            #expect(sam.uid == 1002 && sam.home == "/home/sam")
            var narrower = collaborator
            narrower.sudo = false
            #expect(try await accounts.addCollaborator(narrower) == sam)
            let rule = try await h.plane.service.exec(username: "pat", command: ["cat", "/etc/sudoers.d/containarium-collaborator-sam"]).stdout
            #expect(rule.contains("sam ALL=(root) NOPASSWD: /usr/bin/su - pat") && !rule.contains("(ALL:ALL)"), "\(rule)")
            // the rule is root's to read
            #expect(try await h.plane.service.exec(username: "pat", command: ["cat", "/etc/sudoers.d/containarium-collaborator-sam"], asUser: true).exitCode == 1)
            #expect(try await accounts.removeCollaborator(CollaboratorRef(instance: instance, owner: "quinn", name: "sam")) == false, "not quinn's")
            #expect(try await accounts.removeCollaborator(CollaboratorRef(instance: instance, owner: "pat", name: "sam")) == true)
            #expect(try await accounts.removeCollaborator(CollaboratorRef(instance: instance, owner: "pat", name: "sam")) == false)
            #expect(try await accounts.removeCollaborator(CollaboratorRef(instance: instance, owner: "pat", name: "quinn")) == false)
            #expect(try await h.plane.service.exec(username: "pat", command: ["getent", "passwd", "quinn"]).exitCode == 0, "quinn untouched")

            // every method needs the instance running
            _ = try await h.plane.service.stop(username: "pat")
            #expect(await errorCode { try await accounts.listKeys(AccountRef(instance: instance, name: "pat")) } == .failedPrecondition)
            #expect(await errorCode { try await accounts.removeCollaborator(CollaboratorRef(instance: instance, owner: "pat", name: "sam")) } == .failedPrecondition)
            // and the journal names each call
            #expect(try h.calls("accounts.add_collaborator").count == 3)
            #expect(try h.calls("accounts.create").count == 4)
        }
    }
}
