import ContainariumCore
@testable import ContainariumDaemon
import ContainariumPlatform
import ContainariumScheduler
import ContainariumService
import ContainariumStore
import Foundation
import TestSupport
import Testing

/// Attacks on the authority of each identity (docs/security.md), each an actual attempt that must
/// be refused with a clear error and leave nothing changed.
@Suite("Least authority, by attack")
struct SecurityTests {
    @Test("a collaborator acts as themselves: not as the owner (exec, keys), not on the owner's keys or resources, and nothing is left after removal")
    func collaboratorIsNotTheOwner() async throws {
        try await Harness.with { (h: Harness) async throws in
            try await h.create("alice")
            let alice = Harness.caller("alice"), carol = Harness.caller("carol"), admin = Harness.caller("admin", .admin)
            _ = try await h.plane.addCollaborator(alice, "alice", collaborator: "carol", sshKey: Harness.sshKey("carol@laptop"))
            let ownerKeys = try await h.plane.listKeys(alice, "alice").map(\.fingerprint)
            #expect(ownerKeys.count == 1)

            // Planting a key in the owner's authorized_keys would log in as the owner (full sudo).
            let planted = await Self.refusal { try await h.plane.addKey(carol, "alice", publicKey: Harness.sshKey("carol-as-alice")) }
            #expect(planted?.code == .permissionDenied, "\(String(describing: planted))")
            // Removing the owner's key would lock the owner out.
            let lockout = await Self.refusal { try await h.plane.removeKey(carol, "alice", fingerprint: ownerKeys[0]) }
            #expect(lockout?.code == .permissionDenied, "\(String(describing: lockout))")
            #expect(try await h.plane.listKeys(alice, "alice").map(\.fingerprint) == ownerKeys, "the owner's keys are unchanged")
            // The owner's resources are the owner's.
            let resized = await Self.refusal { try await h.plane.resize(carol, "alice", cpu: nil, memory: "2GB", disk: nil) }
            #expect(resized?.code == .permissionDenied, "\(String(describing: resized))")

            // exec "as the user" is the collaborator's own account, never the owner's.
            #expect(try await h.plane.exec(carol, "alice", command: ["whoami"], asUser: true).stdout == "carol\n")
            let asOwner = await Self.refusal { try await h.plane.exec(carol, "alice", command: ["whoami"], asUser: true, account: "alice") }
            #expect(asOwner?.code == .permissionDenied, "\(String(describing: asOwner))")
            let asRoot = await Self.refusal { try await h.plane.exec(carol, "alice", command: ["whoami"], asUser: false) }
            #expect(asRoot?.code == .permissionDenied, "\(String(describing: asRoot))")
            // The owner is the owner; an admin may name any account.
            #expect(try await h.plane.exec(alice, "alice", command: ["whoami"], asUser: true).stdout == "alice\n")
            #expect(try await h.plane.exec(admin, "alice", command: ["whoami"], asUser: true, account: "carol").stdout == "carol\n")
            let bogus = await Self.refusal { try await h.plane.exec(admin, "alice", command: ["whoami"], asUser: true, account: "Not Valid") }
            #expect(bogus?.code == .invalidArgument, "\(String(describing: bogus))")

            // Removed: nothing of the collaborator's is left that opens a door.
            try await h.plane.removeCollaborator(alice, "alice", collaborator: "carol")
            let after = await Self.refusal { try await h.plane.exec(carol, "alice", command: ["whoami"], asUser: true) }
            #expect(after?.code == .permissionDenied, "\(String(describing: after))")
            let gone = try await h.plane.exec(admin, "alice", command: ["getent", "passwd", "carol"], asUser: false)
            #expect(gone.exitCode != 0, "carol's account went with the collaboration: \(gone)")
            #expect(try await h.plane.listKeys(alice, "alice").map(\.fingerprint) == ownerKeys)
            let denied = try await h.audit(action: "container.ssh-key.add").filter { $0.actor == "carol" }
            #expect(denied.count == 1 && denied[0].result == "permission_denied", "refusals are audited: \(denied)")

            // Sign-in secrets (a VM's Administrator password) are the owner's and admins' only:
            // a collaborator, another user and a node are refused before the backend is asked;
            // the owner reaches the backend, which (LXC) keeps none and says so.
            _ = try await h.plane.addCollaborator(alice, "alice", collaborator: "carol")
            for who in [carol, Harness.caller("mallory"), Harness.caller("node.w1", .node)] {
                let refused = await Self.refusal { try await h.plane.credentials(who, "alice") }
                #expect(refused?.code == .permissionDenied, "\(who.subject): \(String(describing: refused))")
            }
            let none = await Self.refusal { try await h.plane.credentials(alice, "alice") }
            #expect(none?.code == .unsupported && none?.message.contains("keeps no sign-in secret") == true, "\(String(describing: none))")
            let reads = try await h.audit(action: "container.credentials.read")
            #expect(reads.count == 4 && reads.filter { $0.result == "permission_denied" }.count == 3, "every read is audited: \(reads)")
        }
    }

    @Test("a node identity reports and links only as the node it names, until it is revoked; it answers nothing else")
    func nodeIdentity() async throws {
        try await Harness.with { (h: Harness) async throws in
            let cluster = Cluster(store: h.plane.store, localName: Harness.node, policy: SchedulingPolicy(), connector: GRPCNodeConnector(),
                                  logger: Harness.quiet)
            h.plane.setCluster(cluster)
            let issued = Date().addingTimeInterval(-60)
            let w1 = Caller(subject: "node.w1", role: .node, source: "test", interface: "grpc", issuedAt: issued)
            func report(_ name: String) -> NodeReport {
                NodeReport(address: "", token: nil, info: NodeInfo(name: name, kinds: ["lxc"], capacity: Resources(cpuMillis: 2000, memoryBytes: 4 << 30, diskBytes: 20 << 30)),
                           environments: [:])
            }
            _ = try await h.plane.reportNode(w1, report("w1"))
            #expect(cluster.member("w1") != nil)
            // Another node's name: its address, token and gateway key would be replaced.
            let forged = await Self.refusal { try await h.plane.reportNode(w1, report("w2")) }
            #expect(forged?.code == .permissionDenied && forged?.message.contains("not node.w2") == true, "\(String(describing: forged))")
            #expect(cluster.member("w2") == nil)
            let stolenLink = await Self.refusal { try await h.plane.linkNode(w1, node: "w2") }
            #expect(stolenLink?.code == .permissionDenied, "\(String(describing: stolenLink))")
            // A node identity sees no environment and lists nothing.
            #expect(await Self.refusal { try await h.plane.listContainers(w1) }?.code == .permissionDenied)

            // A removal that is refused (the node still has environments) revokes nothing.
            let w4 = Caller(subject: "node.w4", role: .node, source: "test", interface: "grpc", issuedAt: issued)
            var busy = report("w4")
            busy.environments = ["x-container": Resources(cpuMillis: 1000)]
            _ = try await h.plane.reportNode(w4, busy)
            let kept = await Self.refusal { try await h.plane.removeNode(Harness.caller("admin", .admin), "w4", force: false) }
            #expect(kept?.code == .failedPrecondition, "\(String(describing: kept))")
            _ = try await h.plane.reportNode(w4, busy)
            #expect(cluster.member("w4") != nil)

            // Removing the node revokes every token it was given: it cannot report itself back.
            try await h.plane.removeNode(Harness.caller("admin", .admin), "w1", force: true)
            let revoked = await Self.refusal { try await h.plane.reportNode(w1, report("w1")) }
            #expect(revoked?.code == .permissionDenied && revoked?.message.contains("revoked") == true, "\(String(describing: revoked))")
            #expect(await Self.refusal { try await h.plane.linkNode(w1, node: "w1") }?.code == .permissionDenied)
            #expect(cluster.member("w1") == nil)
            // A token minted after the removal joins again.
            var fresh = w1
            fresh.issuedAt = Date().addingTimeInterval(2)
            _ = try await h.plane.reportNode(fresh, report("w1"))
            #expect(cluster.member("w1") != nil)

            // Node tokens expire, and a node that keeps reporting gets a fresh one past half-life.
            let service = NodeServiceV1(auth: GRPCAuth(plane: h.plane, tokens: h.tokens, mtls: false), links: nil)
            let now = Date()
            let young = Caller(subject: "node.w3", role: .node, source: "test", interface: "grpc", issuedAt: now - 60, expiresAt: now + 3540)
            let old = Caller(subject: "node.w3", role: .node, source: "test", interface: "grpc", issuedAt: now - 3000, expiresAt: now + 600)
            _ = try await h.plane.reportNode(old, report("w3"))
            #expect(try await service.renewal(young, now: now) == nil)
            let renewed = try #require(try await service.renewal(old, now: now))
            let v = try await h.tokens.verify(renewed)
            #expect(v.subject == "node.w3" && v.role == .node)
            #expect(abs((v.expiresAt ?? now).timeIntervalSince(v.issuedAt) - 3600) < 2, "the same lifetime: \(v)")
            // A removed node is renewed no more (nor is w1's token from before its removal).
            try await h.plane.removeNode(Harness.caller("admin", .admin), "w3", force: true)
            #expect(try await service.renewal(old, now: now) == nil)
            #expect(try await service.renewal(w1, now: Date().addingTimeInterval(3600)) == nil)
            // Only node tokens are renewed.
            #expect(try await service.renewal(Caller(subject: "alice", role: .user, source: "t", interface: "grpc", issuedAt: now - 3000, expiresAt: now + 600), now: now) == nil)
        }
    }

    @Test("a node reports what it can: a failing GPU plugin costs the report its GPUs, not the report; the GPUs come back when it answers")
    func gpuFailureIsNotFatal() async throws {
        let tree = try TestEnv.tempDir("pci")
        defer { TestEnv.cleanup(tree) }
        try FakeGPU.tree(tree)
        let missing = tree.appendingPathComponent("moved-away")
        try await Harness.with(gpu: .object(["sysfsPath": .string(tree.path)])) { h in
            let healthy = try await h.plane.localReport(address: "", token: nil, labels: [:], pool: nil, preemptible: false)
            #expect(healthy.info.gpus.count == 2, "\(healthy.info.gpus)")
            // The PCI tree disappears under the plugin (a driver reload, a broken sysfs).
            try FileManager.default.moveItem(at: tree.appendingPathComponent("devices"), to: missing)
            await #expect(throws: ContainariumError.self) { try await h.plane.service.gpus() }
            let degraded = try await h.plane.localReport(address: "", token: nil, labels: [:], pool: nil, preemptible: false)
            #expect(degraded.info.gpus.isEmpty && degraded.info.capacity.cpuMillis > 0 && degraded.info.name == Harness.node)
            try FileManager.default.moveItem(at: missing, to: tree.appendingPathComponent("devices"))
            let back = try await h.plane.localReport(address: "", token: nil, labels: [:], pool: nil, preemptible: false)
            #expect(back.info.gpus.count == 2)
        }
    }

    @Test("a flood of bad credentials writes a bounded number of audit rows per address, then one row with the count; other addresses are not affected")
    func auditRateLimit() async throws {
        try await Harness.with { h in
            for _ in 0..<100 {
                await h.plane.auditAuthFailure(source: "ipv4:198.51.100.7:4000", interface: "grpc", action: "ListContainers", reason: "invalid token")
            }
            await h.plane.auditAuthFailure(source: "198.51.100.8:1", interface: "rest", action: "GET /v1/containers", reason: "invalid token")
            let rows = try await h.plane.store.audit(AuditFilter(action: "auth.failure", limit: 1000))
            #expect(rows.filter { $0.source.contains("198.51.100.7") }.count == h.plane.auditLimiter.perWindow)
            #expect(rows.filter { $0.source.contains("198.51.100.8") }.count == 1)
            // The next window: the first refusal brings the count of the dropped ones.
            let limiter = AuditLimiter(perWindow: 2, window: 60)
            let t0 = Date()
            #expect(limiter.admit(source: "10.0.0.1:1", now: t0) == .write(suppressedBefore: 0))
            #expect(limiter.admit(source: "10.0.0.1:2", now: t0) == .write(suppressedBefore: 0))
            #expect(limiter.admit(source: "ipv4:10.0.0.1:3", now: t0) == .drop)
            #expect(limiter.admit(source: "10.0.0.1:4", now: t0.addingTimeInterval(1)) == .drop)
            #expect(limiter.admit(source: "10.0.0.2:4", now: t0.addingTimeInterval(1)) == .write(suppressedBefore: 0))
            #expect(limiter.admit(source: "10.0.0.1:5", now: t0.addingTimeInterval(61)) == .write(suppressedBefore: 2))
            #expect(AuditLimiter.address(of: "ipv6:[::1]:22") == "::1" && AuditLimiter.address(of: "local") == "local")
            // Tracked addresses are bounded.
            let small = AuditLimiter(perWindow: 1, window: 60, maxAddresses: 3)
            for i in 0..<10 { _ = small.admit(source: "10.0.1.\(i):1", now: t0) }
            #expect(small.admit(source: "10.0.1.9:2", now: t0) == .drop, "the newest address is still tracked")
        }
    }

    @Test("the operator's user policy: sizes, GPUs, nesting and images beyond it are refused (403, naming the limit) before anything is made; within it the maximums fill in; admins are not bound")
    func userPolicy() async throws {
        let policy = UserPolicy(maxCPU: 2, maxMemory: "2GB", maxDisk: "10GB", maxGPUs: 0, allowNesting: false, images: ["containarium/debian12"])
        try await Harness.with(hostConfig: { $0.userPolicy = policy }) { (h: Harness) async throws in
            let una = Harness.caller("una"), admin = Harness.caller("admin", .admin)
            func create(_ r: CreateEnvironmentRequest, by caller: Caller) async throws -> ContainerView {
                guard case .done(let v) = try await h.plane.createContainer(caller, r, async: false) else { throw TestFailure("an operation") }
                return v
            }
            let refused: [(CreateEnvironmentRequest, String)] = [
                (CreateEnvironmentRequest(username: "una", sshKeys: [], cpu: "4"), "at most 2 CPUs, not 4"),
                (CreateEnvironmentRequest(username: "una", sshKeys: [], cpu: "0-3"), "at most 2 CPUs, not 4"),
                (CreateEnvironmentRequest(username: "una", sshKeys: [], memory: "4GB"), "at most 2GB of memory"),
                (CreateEnvironmentRequest(username: "una", sshKeys: [], disk: "20GB"), "at most 10GB of disk"),
                (CreateEnvironmentRequest(username: "una", sshKeys: [], nesting: true), "does not allow nesting"),
                (CreateEnvironmentRequest(username: "una", sshKeys: [], image: "images:alpine/3.20"), "does not allow the image 'images:alpine/3.20'"),
                (CreateEnvironmentRequest(username: "una", sshKeys: [], gpus: 1), "at most 0 GPUs"),
                (CreateEnvironmentRequest(username: "una", sshKeys: [], runtimes: [.docker]), "does not allow nesting, which enableDocker needs"),
            ]
            for (r, why) in refused {
                let e = await Self.refusal { try await create(r, by: una) }
                #expect(e?.code == .permissionDenied && e?.message.contains(why) == true, "\(why): \(String(describing: e))")
            }
            let stored = try await h.plane.store.containers()
            #expect(try h.calls("create").isEmpty && stored.isEmpty, "nothing was made")
            // Within the policy: no nesting, and the maximum memory and disk where none was asked.
            let made = try await create(CreateEnvironmentRequest(username: "una", sshKeys: [], cpu: "1"), by: una)
            #expect(!made.nestingEnabled, "\(made)")
            let sent = try #require(try h.calls("create").last?.request)
            #expect(sent["memoryBytes"]?.number == 2_000_000_000 && sent["diskBytes"]?.number == 10_000_000_000 && sent["nesting"]?.bool == false, "\(sent)")
            // Resizing past it is refused too; within it works.
            let bigger = await Self.refusal { try await h.plane.resize(una, "una", cpu: nil, memory: "3GB", disk: nil) }
            #expect(bigger?.code == .permissionDenied, "\(String(describing: bigger))")
            _ = try await h.plane.resize(una, "una", cpu: "2", memory: "1GB", disk: nil)
            // Admins are not bound.
            let big = try await create(CreateEnvironmentRequest(username: "ada", sshKeys: [], cpu: "4", memory: "4GB", nesting: true), by: admin)
            #expect(big.nestingEnabled)
        }
        // A policy with a bad size is refused when the config is read.
        var bad = HostConfig()
        bad.userPolicy = UserPolicy(maxMemory: "lots")
        #expect(throws: ContainariumError.self) { try bad.userPolicy?.validate() }
    }

    @Test("event streams are bounded per caller and in all: one more is refused with resource_exhausted; closing one frees its place; the daemon's own relays are not counted")
    func eventStreamLimits() async throws {
        let events = DaemonEvents(perCaller: 3, total: 5)
        var alice = try (0..<3).map { _ in try events.subscribe(for: "alice") }
        let fourth = await Self.refusal { try events.subscribe(for: "alice") }
        #expect(fourth?.code == .resourceExhausted && fourth?.message.contains("alice has 3 event streams open") == true, "\(String(describing: fourth))")
        let bob = try (0..<2).map { _ in try events.subscribe(for: "bob") }
        let full = await Self.refusal { try events.subscribe(for: "carol") }
        #expect(full?.code == .resourceExhausted && full?.message.contains("5 event streams open") == true, "\(String(describing: full))")
        let relay = events.subscribe()  // the daemon's own: never refused
        alice.removeFirst().cancel()
        #expect(events.streams(of: "alice") == 2)
        alice.append(try events.subscribe(for: "carol"))
        // Every stream still gets every event.
        events.publish("audit", username: nil, data: .audit(action: "x", actor: "y", result: "ok"))
        for s in alice + bob + [relay] {
            var it = s.stream.makeAsyncIterator()
            #expect(await it.next()?.type == "audit")
        }
        events.close()
    }

    @Test("revocation: an admin revokes a subject's tokens (cached or not, refused; one issued later works; others unaffected) and a certificate by serial; another daemon on the same store learns it; users cannot revoke; malformed requests are 400")
    func revocation() async throws {
        try await Harness.with { (h: Harness) async throws in
            let admin = Harness.caller("admin", .admin), alice = Harness.caller("alice")
            let old = try await h.token("alice")
            #expect(try await h.tokens.verify(old).subject == "alice")  // now in the verified cache
            let byUser = await Self.refusal { try await h.plane.revokeCredentials(alice, subject: "bob", certificateSerial: nil) }
            #expect(byUser?.code == .permissionDenied, "\(String(describing: byUser))")
            let listByUser = await Self.refusal { try await h.plane.listRevocations(alice) }
            #expect(listByUser?.code == .permissionDenied)

            let revoked = try await h.plane.revokeCredentials(admin, subject: "alice", certificateSerial: nil)
            #expect(revoked.subject == "alice" && revoked.certificateSerial == nil)
            let refused = await Self.refusal { try await h.tokens.verify(old) }
            #expect(refused?.code == .unauthenticated && refused?.message.contains("revoked") == true, "\(String(describing: refused))")
            // A token issued after the revocation works; another subject's was never affected.
            let fresh = try await h.token("alice", now: Date().addingTimeInterval(2))
            #expect(try await h.tokens.verify(fresh).subject == "alice")
            #expect(try await h.tokens.verify(try await h.token("bob")).subject == "bob")

            // Certificates by serial, in any spelling of the same number.
            let cert = try await h.plane.revokeCredentials(admin, subject: nil, certificateSerial: "00:AB:cd")
            #expect(cert.certificateSerial == "abcd")
            let certRefused = await Self.refusal { try await h.plane.revocations.checkCertificate(serial: "0abcd") }
            #expect(certRefused?.code == .unauthenticated, "\(String(describing: certRefused))")
            try await h.plane.revocations.checkCertificate(serial: "abce")

            // Another daemon sharing the store honours both (its cache is fresh).
            let other = Revocations(store: h.plane.store, refresh: 0)
            let elsewhere = await Self.refusal { try await other.checkToken(subject: "alice", issuedAt: Date().addingTimeInterval(-60)) }
            #expect(elsewhere?.code == .unauthenticated)
            let certElsewhere = await Self.refusal { try await other.checkCertificate(serial: "ABCD") }
            #expect(certElsewhere?.code == .unauthenticated)

            for (subject, serial) in [(nil, nil), ("alice", "ab"), (nil, "xyz"), ("bad subject!", nil)] as [(String?, String?)] {
                let bad = await Self.refusal { try await h.plane.revokeCredentials(admin, subject: subject, certificateSerial: serial) }
                #expect(bad?.code == .invalidArgument, "\(String(describing: subject)) \(String(describing: serial)): \(String(describing: bad))")
            }
            let listed = try await h.plane.listRevocations(admin)
            #expect(listed.count == 2 && listed.contains { $0.subject == "alice" } && listed.contains { $0.certificateSerial == "abcd" })
            let rows = try await h.audit(action: "credentials.revoke")
            #expect(rows.count == 7 && rows.filter { $0.result == "ok" }.count == 2, "\(rows)")
        }
    }

    static func refusal(_ body: () async throws -> some Any) async -> ContainariumError? {
        do {
            _ = try await body()
            return nil
        } catch let e as ContainariumError {
            return e
        } catch {
            return ContainariumError(.internal, "not a ContainariumError: \(error)")
        }
    }
}
