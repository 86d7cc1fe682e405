import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import ContainariumService
import ContainariumStore
import Foundation
import PluginHost
import TestSupport
import Testing

/// The daemon's service layer over EnvironmentService, the fake plugin and SQLite.
@Suite("ControlPlane in process")
struct ControlPlaneTests {
    typealias C = Harness

    /// Who may do what to alice's environment (docs/security.md; ControlPlane.authorize):
    /// owners and admins everything, collaborators read and act (as their own account) but not
    /// own (collaborators, keys, resources, delete), other users and node identities nothing.
    @Test("authorization matrix: admin, owner, another user, collaborator and a node identity across every operation")
    func matrix() async throws {
        try await Harness.with { (h: Harness) async throws in
            let p = h.plane
            let owner = C.caller("alice"), stranger = C.caller("mallory"), friend = C.caller("carol"), node = C.nodeCaller, admin = C.admin
            try await h.create("alice")
            _ = try await p.addCollaborator(owner, "alice", collaborator: "carol", sshKey: C.sshKey("carol"))

            func check(_ what: String, _ expected: [(Caller, ContainariumError.Code?)], _ body: (Caller) async throws -> Void) async {
                for (caller, want) in expected {
                    let got = await errorCode { try await body(caller) }
                    #expect(got == want, "\(what) by \(caller.subject) (\(caller.role)): \(String(describing: got)), expected \(String(describing: want))")
                }
            }
            let denied = ContainariumError.Code.permissionDenied
            // read and act: owner, collaborator and admin; never another user or a node
            let readers: [(Caller, ContainariumError.Code?)] = [(owner, nil), (friend, nil), (admin, nil), (stranger, denied), (node, denied)]
            await check("get", readers) { c in _ = try await p.getContainer(c, "alice") }
            await check("stop", readers) { c in _ = try await p.power(c, "alice", .stop) }
            await check("start", readers) { c in _ = try await p.power(c, "alice", .start) }
            await check("restart", readers) { c in _ = try await p.power(c, "alice", .restart) }
            // the owner's resources and keys: not a collaborator's (a key there logs in as the owner)
            let owners: [(Caller, ContainariumError.Code?)] = [(owner, nil), (admin, nil), (friend, denied), (stranger, denied), (node, denied)]
            await check("resize", owners) { c in _ = try await p.resize(c, "alice", cpu: nil, memory: "600MB", disk: nil) }
            await check("list keys", readers) { c in _ = try await p.listKeys(c, "alice") }
            await check("list collaborators", readers) { c in _ = try await p.listCollaborators(c, "alice") }
            await check("exec as the account", readers) { c in _ = try await p.exec(c, "alice", command: ["whoami"], asUser: true) }
            await check("add a key", owners) { c in
                _ = try await p.addKey(c, "alice", publicKey: C.sshKey(c.subject))
            }
            // root inside the environment is for admins only
            await check("exec as root", [(admin, nil), (owner, denied), (friend, denied), (stranger, denied), (node, denied)]) { c in
                _ = try await p.exec(c, "alice", command: ["whoami"], asUser: false)
            }
            // own: collaborators may not manage collaborators or delete
            await check("add a collaborator", [(friend, denied), (stranger, denied), (node, denied)]) { c in
                _ = try await p.addCollaborator(c, "alice", collaborator: "dave")
            }
            await check("remove a collaborator", [(friend, denied), (stranger, denied), (node, denied)]) { c in
                try await p.removeCollaborator(c, "alice", collaborator: "carol")
            }
            await check("delete", [(friend, denied), (stranger, denied), (node, denied)]) { c in try await p.deleteContainer(c, "alice", force: true) }
            // creates: one's own only; admins for anyone; nodes never
            await check("create for another", [(stranger, denied), (friend, denied), (node, denied)]) { c in
                _ = try await p.createContainer(c, CreateEnvironmentRequest(username: "alice", sshKeys: [C.sshKey()]), async: false)
            }
            await check("audit", [(admin, nil), (owner, denied), (friend, denied), (stranger, denied), (node, denied)]) { c in
                _ = try await p.auditLog(c, AuditFilter(limit: 10))
            }
            // listings: only what one owns or collaborates on
            #expect(try await p.listContainers(owner).map(\.username) == ["alice"])
            #expect(try await p.listContainers(friend).map(\.username) == ["alice"])
            #expect(try await p.listContainers(stranger).isEmpty)
            #expect(try await p.listContainers(admin).map(\.username) == ["alice"])
            #expect(await errorCode { try await p.listContainers(node) } == denied)
            #expect(await errorCode { try await p.systemInfo(node) } == nil, "system info is not per environment")

            // The stranger's attempts changed nothing; the owner still can.
            await check("owner adds a collaborator", [(owner, nil)]) { c in _ = try await p.addCollaborator(c, "alice", collaborator: "dave") }
            #expect(try await p.service.exec(username: "alice", command: ["getent", "passwd", "dave"]).stdout.contains(":containarium collaborator on alice:"))
            await check("admin removes it", [(admin, nil)]) { c in try await p.removeCollaborator(c, "alice", collaborator: "dave") }
            #expect(try await p.service.exec(username: "alice", command: ["getent", "passwd", "dave"]).exitCode == 2, "dave's account went with the record")
            await check("owner deletes", [(owner, nil)]) { c in try await p.deleteContainer(c, "alice", force: true) }
            #expect(try await p.store.container("alice") == nil)
            #expect(try await p.service.list().isEmpty)
            // a deleted environment is gone for everyone, admins included
            #expect(await errorCode { try await p.getContainer(admin, "alice") } == .notFound)
            #expect(await errorCode { try await p.listCollaborators(admin, "alice") } == .notFound)

            // every refusal was audited with its outcome
            let refusals = try await h.audit(target: "alice").filter { $0.result == "permission_denied" }
            #expect(Set(refusals.map(\.actor)).isSuperset(of: ["mallory", "carol", "node.other"]))
            #expect(refusals.contains { $0.action == "container.delete" && $0.actor == "carol" })
        }
    }

    @Test("create validation: every bad request is invalid_argument, reaches no backend and leaves no record, operation or instance")
    func validation() async throws {
        try await Harness.with { (h: Harness) async throws in
            let key = C.sshKey()
            let bad: [(String, CreateEnvironmentRequest)] = [
                ("username", CreateEnvironmentRequest(username: "Bad!", sshKeys: [key])),
                ("reserved username", CreateEnvironmentRequest(username: "root", sshKeys: [key])),
                ("key", CreateEnvironmentRequest(username: "erin", sshKeys: ["ssh-ed25519 not-base64!"])),
                ("memory unit", CreateEnvironmentRequest(username: "erin", sshKeys: [key], memory: "12 parsecs")),
                ("memory minimum", CreateEnvironmentRequest(username: "erin", sshKeys: [key], memory: "1MB")),
                ("disk minimum", CreateEnvironmentRequest(username: "erin", sshKeys: [key], disk: "100MB")),
                ("cpu", CreateEnvironmentRequest(username: "erin", sshKeys: [key], cpu: "lots")),
                ("cpu over-commit", CreateEnvironmentRequest(username: "erin", sshKeys: [key], cpu: "64")),
                ("pinned cpu", CreateEnvironmentRequest(username: "erin", sshKeys: [key], cpu: "0-63")),
                ("unknown stack", CreateEnvironmentRequest(username: "erin", sshKeys: [key], stack: "no-such-stack")),
                ("label key", CreateEnvironmentRequest(username: "erin", sshKeys: [key], labels: ["Bad Key": "x"])),
                ("image and os", CreateEnvironmentRequest(username: "erin", sshKeys: [key], image: "a", osType: "ubuntu")),
                ("gpus", CreateEnvironmentRequest(username: "erin", sshKeys: [key], gpus: 99)),
            ]
            for (what, request) in bad {
                let code = await errorCode { try await h.plane.createContainer(C.admin, request, async: false) }
                #expect(code == .invalidArgument, "\(what): \(String(describing: code))")
            }
            #expect(try h.calls("create").isEmpty, "nothing reached the backend")
            #expect(try await h.plane.store.containers().isEmpty)
            #expect(try await h.plane.store.operations().isEmpty)
            #expect(try await h.plane.service.list().isEmpty)
            let audited = try await h.audit(action: "container.create")
            #expect(audited.count == bad.count && audited.allSatisfy { $0.result == "invalid_argument" })
        }
    }

    @Test("a create that fails in the backend leaves no record, a failed operation and an audit entry; the name is free again")
    func failedCreate() async throws {
        try await Harness.with { (h: Harness) async throws in
            let code = await errorCode { try await h.create("frank", labels: ["fake.fail-step": "4"]) }
            #expect(code == .internal)
            #expect(try await h.plane.store.container("frank") == nil)
            #expect(try await h.plane.service.list().isEmpty)
            #expect(h.plane.inventory.get("frank-container") == nil)
            let op = try #require(try await h.plane.store.operations().first)
            #expect(op.state == .failed && op.target == "frank")
            let entry = try #require(try await h.audit(target: "frank").first)
            #expect(entry.action == "container.create" && entry.result == "internal" && entry.actor == "frank" && entry.detail.contains("step 4"))

            // A failure after the backend's create (the stack's apt-get) removes the instance too.
            let stack = await errorCode { try await h.create("frank", labels: ["fake.exec-fail": "apt-get"], stack: "python") }
            #expect(stack == .unavailable)
            #expect(try await h.plane.store.container("frank") == nil)
            #expect(try await h.plane.service.list().isEmpty)
            #expect(try h.calls("remove").last?.request["force"]?.bool == true)

            // and the name can be used
            let view = try await h.create("frank", stack: "python")
            #expect(view.labels["stack"] == "python")
            let installs = try h.calls("exec").map(\.argv).filter { $0.first == "apt-get" }
            #expect(installs.contains { $0.contains("install") && $0.contains("python3-venv") }, "\(installs)")
            #expect(try await h.plane.store.container("frank")?.phase == .ready)
        }
    }

    @Test("an asynchronous create is an operation that finishes; deleting while it runs is refused; audited when accepted and when done")
    func asyncCreate() async throws {
        try await Harness.with { (h: Harness) async throws in
            let request = CreateEnvironmentRequest(username: "gina", sshKeys: [C.sshKey()], labels: ["fake.step-delay-ms": "60"])
            guard case .started(let op) = try await h.plane.createContainer(C.caller("gina"), request, async: true) else {
                throw TestFailure("an asynchronous create returned no operation")
            }
            #expect(await errorCode { try await h.plane.deleteContainer(C.caller("gina"), "gina", force: true) } == .failedPrecondition)
            try await eventually("the operation succeeds", within: 10) { try await h.plane.operation(C.caller("gina"), op.id).state == .succeeded }
            #expect(await errorCode { try await h.plane.operation(C.caller("mallory"), op.id) } == .permissionDenied)
            let actions = try await h.audit(target: "gina").map(\.action)
            #expect(actions.contains("container.create.accepted") && actions.contains("container.create") && actions.contains("container.delete"))
        }
    }

    @Test("keys: the environment's authorized_keys is the truth; duplicates and the last key are refused")
    func keys() async throws {
        try await Harness.with { (h: Harness) async throws in
            let first = C.sshKey("first"), second = C.sshKey("second")
            try await h.create("hana", keys: [first])
            let owner = C.caller("hana")
            #expect(try await h.plane.listKeys(owner, "hana").map(\.comment) == ["first"])
            let added = try await h.plane.addKey(owner, "hana", publicKey: second)
            #expect(await errorCode { try await h.plane.addKey(owner, "hana", publicKey: second) } == .alreadyExists)
            #expect(try await h.plane.listKeys(owner, "hana").map(\.comment) == ["first", "second"])
            // The write went to the backend's accounts/1 as one request holding exactly the
            // key lines; no key ever went through exec (no script, no shell).
            func keyPart(_ line: String) -> String { line.split(separator: " ").prefix(2).joined(separator: " ") }
            let write = try #require(try h.calls("accounts.set_keys").last)
            #expect(write.request["instance"]?.stringValue == "hana-container" && write.request["name"]?.stringValue == "hana")
            #expect(write.request["keys"]?.items?.compactMap(\.stringValue).map(keyPart) == [keyPart(first), keyPart(second)])
            #expect(try h.calls("exec").allSatisfy { call in !call.argv.contains { $0.contains(keyPart(second)) } }, "a key went through exec")
            // What is installed inside is what was written.
            let installed = try await h.plane.service.exec(username: "hana", command: ["cat", "/home/hana/.ssh/authorized_keys"])
            #expect(installed.stdout.split(separator: "\n").map { keyPart(String($0)) } == [keyPart(first), keyPart(second)])
            // The environment is the truth: keys changed behind the control plane's back are what it lists.
            let accounts = try #require(h.accounts)
            let third = C.sshKey("third")
            _ = try await accounts.setKeys(SetKeysRequest(instance: "hana-container", name: "hana", keys: [first, second, third]))
            #expect(try await h.plane.listKeys(owner, "hana").map(\.comment) == ["first", "second", "third"])
            _ = try await accounts.setKeys(SetKeysRequest(instance: "hana-container", name: "hana", keys: [first, second]))
            let firstPrint = try #require(try await h.plane.listKeys(owner, "hana").first?.fingerprint)
            try await h.plane.removeKey(owner, "hana", fingerprint: firstPrint)
            #expect(await errorCode { try await h.plane.removeKey(owner, "hana", fingerprint: added.fingerprint) } == .failedPrecondition)
            #expect(await errorCode { try await h.plane.removeKey(owner, "hana", fingerprint: "SHA256:nope") } == .notFound)
            #expect(await errorCode { try await h.plane.addKey(owner, "hana", publicKey: "not a key") } == .invalidArgument)
            let actions = try await h.audit(target: "hana").map { "\($0.action) \($0.result)" }
            #expect(actions.contains("container.ssh-key.add ok") && actions.contains("container.ssh-key.remove ok")
                && actions.contains("container.ssh-key.add already_exists"))
            // A stopped environment's keys cannot be read or written (the backend needs it running).
            _ = try await h.plane.power(owner, "hana", .stop)
            #expect(await errorCode { try await h.plane.listKeys(owner, "hana") } == .failedPrecondition)
            #expect(await errorCode { try await h.plane.addKey(owner, "hana", publicKey: C.sshKey("late")) } == .failedPrecondition)
        }
    }

    @Test("collaborators: an account of their own inside, removed with the record; not while stopped; not twice, not the owner, not a system name")
    func collaborators() async throws {
        try await Harness.with { (h: Harness) async throws in
            try await h.create("ivan")
            let owner = C.caller("ivan")
            let view = try await h.plane.addCollaborator(owner, "ivan", collaborator: "judy", sshKey: C.sshKey("judy"), sudo: true)
            #expect(view.collaboratorUsername == "judy" && view.sudo)
            let passwd = try await h.plane.service.exec(username: "ivan", command: ["getent", "passwd", "judy"])
            #expect(passwd.stdout.contains(":containarium collaborator on ivan:"), "\(passwd.stdout)")
            let accounts = try #require(h.accounts)
            #expect(try await accounts.listKeys(AccountRef(instance: "ivan-container", name: "judy")).map { $0.hasSuffix(" judy") } == [true])
            func sudoers(_ user: String) async throws -> String {
                try await h.plane.service.exec(username: "ivan", command: ["cat", "/etc/sudoers.d/containarium-collaborator-\(user)"]).stdout
            }
            // full sudo for judy; kim may only become the owner, logged, and joins docker
            #expect(try await sudoers("judy") == "judy ALL=(ALL:ALL) NOPASSWD:ALL\n")
            let kim = try await h.plane.addCollaborator(owner, "ivan", collaborator: "kim", sshKey: C.sshKey("kim"), containerRuntime: true)
            #expect(!kim.sudo && kim.containerRuntime)
            let kimRule = try await sudoers("kim")
            #expect(kimRule.contains("kim ALL=(root) NOPASSWD: /usr/bin/su - ivan") && kimRule.contains("log_input, log_output"), "\(kimRule)")
            #expect(!kimRule.contains("(ALL:ALL)"), "\(kimRule)")
            #expect(try await h.plane.service.exec(username: "ivan", command: ["getent", "group", "docker"]).stdout.hasSuffix(":kim\n"))
            // Accounts the backend did not make as ivan's collaborators are refused and never
            // touched: one made by accounts/1 create, one made as another owner's collaborator.
            _ = try await accounts.create(AccountCreateRequest(instance: "ivan-container", account: AccountSpec(name: "leo", sshKeys: [C.sshKey("leo")], sudo: false)))
            _ = try await accounts.addCollaborator(CollaboratorRequest(instance: "ivan-container", owner: "zoe", name: "mia", sshKeys: [], sudo: true, containerRuntime: false))
            for name in ["leo", "mia"] {
                let before = try await h.plane.service.exec(username: "ivan", command: ["getent", "passwd", name]).stdout
                #expect(await errorCode { try await h.plane.addCollaborator(owner, "ivan", collaborator: name) } == .alreadyExists, "\(name)")
                #expect(try await accounts.removeCollaborator(CollaboratorRef(instance: "ivan-container", owner: "ivan", name: name)) == false)
                #expect(try await h.plane.service.exec(username: "ivan", command: ["getent", "passwd", name]).stdout == before, "\(name) was touched")
            }
            #expect(try await sudoers("mia") == "mia ALL=(ALL:ALL) NOPASSWD:ALL\n", "mia's rule is zoe's business")
            #expect(try await h.plane.listCollaborators(owner, "ivan").map(\.collaboratorUsername).sorted() == ["judy", "kim"], "no record for a refused add")
            #expect(await errorCode { try await h.plane.addCollaborator(owner, "ivan", collaborator: "judy") } == .alreadyExists)
            #expect(await errorCode { try await h.plane.addCollaborator(owner, "ivan", collaborator: "ivan") } == .invalidArgument)
            #expect(await errorCode { try await h.plane.addCollaborator(owner, "ivan", collaborator: "daemon") } == .invalidArgument,
                    "system account names are not user names")
            #expect(try await h.plane.listCollaborators(C.caller("judy"), "ivan").map(\.collaboratorUsername).sorted() == ["judy", "kim"])

            _ = try await h.plane.power(owner, "ivan", .stop)
            #expect(await errorCode { try await h.plane.removeCollaborator(owner, "ivan", collaborator: "judy") } == .failedPrecondition)
            _ = try await h.plane.power(owner, "ivan", .start)
            try await h.plane.removeCollaborator(owner, "ivan", collaborator: "judy")
            #expect(try await h.plane.service.exec(username: "ivan", command: ["getent", "passwd", "judy"]).exitCode == 2)
            #expect(try await h.plane.service.exec(username: "ivan", command: ["cat", "/etc/sudoers.d/containarium-collaborator-judy"]).exitCode == 1,
                    "the sudo rule went with the account")
            #expect(try await h.plane.listCollaborators(owner, "ivan").map(\.collaboratorUsername) == ["kim"])
            #expect(await errorCode { try await h.plane.getContainer(C.caller("judy"), "ivan") } == .permissionDenied)
        }
    }
}
