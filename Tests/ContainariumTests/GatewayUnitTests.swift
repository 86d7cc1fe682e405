import ContainariumCore
import ContainariumGateway
@testable import ContainariumPlatform
import ContainariumService
import ContainariumStore
import Foundation
import Testing

@Suite("SSH gateway: bans, keys, exported configuration")
struct GatewayUnitTests {
    /// An in-memory ban store that records what the list persisted.
    final class MemoryBans: GatewayBanStore, @unchecked Sendable {
        var saved: [GatewayBanRecord] = []
        func activeBans(now: Date) async throws(ContainariumError) -> [GatewayBanRecord] { saved.filter { $0.until > now } }
        func saveBan(_ ban: GatewayBanRecord) async throws(ContainariumError) { saved.append(ban) }
    }

    @Test("failures within the window ban the address; older ones age out; a success resets nothing; other addresses are independent")
    func banPolicy() {
        let bans = BanList(policy: BanPolicy(maxFailures: 3, window: 60, banDuration: 600), store: nil)
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        #expect(bans.recordFailure("10.0.0.1", now: t0) == nil)
        #expect(bans.recordFailure("10.0.0.1", now: t0.addingTimeInterval(10)) == nil)
        // A login of the attacker's own in between clears nothing (the list has no way to be
        // told of one): the third failure within the window bans.
        #expect(bans.failures("10.0.0.1") == 2)
        let interleaved = bans.recordFailure("10.0.0.1", now: t0.addingTimeInterval(20))
        #expect(interleaved?.failures == 3)
        #expect(bans.ban(for: "10.0.0.1", now: t0.addingTimeInterval(21)) != nil)
        #expect(bans.ban(for: "10.0.0.1", now: t0.addingTimeInterval(621)) == nil)
        #expect(bans.recordFailure("10.0.0.1", now: t0.addingTimeInterval(630)) == nil)
        // Failures older than the window do not count.
        #expect(bans.recordFailure("10.0.0.1", now: t0.addingTimeInterval(700)) == nil)
        #expect(bans.failures("10.0.0.1") == 1)
        #expect(bans.recordFailure("10.0.0.1", now: t0.addingTimeInterval(701)) == nil)
        let ban = bans.recordFailure("10.0.0.1", now: t0.addingTimeInterval(702))
        #expect(ban?.until == t0.addingTimeInterval(1302) && ban?.failures == 3)
        #expect(bans.ban(for: "10.0.0.1", now: t0.addingTimeInterval(1100)) != nil)
        #expect(bans.ban(for: "10.0.0.2", now: t0.addingTimeInterval(1100)) == nil)
        // Bans expire.
        #expect(bans.ban(for: "10.0.0.1", now: t0.addingTimeInterval(1303)) == nil)
    }

    @Test("authorized_keys lines with options open nothing through the gateway, which cannot honour them; plain lines and comments read as sshd reads them")
    func keyOptions() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDRbfyqNCGmVm4WzxfvXHs8uXK2v8nyWqo2wYn+8vGXW"
        #expect(PinnedKey.find(in: key + " alice@laptop") == key)
        #expect(PinnedKey.find(in: "  " + key) == key)
        for line in ["from=\"10.0.0.1\" " + key, "restrict " + key, "expiry-time=\"20200101\" " + key, "no-port-forwarding,command=\"/bin/true\" " + key,
                     "# " + key, "", "ssh-ed25519", "garbage " + key] {
            #expect(PinnedKey.find(in: line) == nil, "\(line)")
        }
    }

    @Test("bans are persisted and reloaded (a restart keeps them, an unban lifts them)")
    func banPersistence() async throws {
        let store = MemoryBans()
        let first = BanList(policy: BanPolicy(maxFailures: 1, window: 60, banDuration: 600), store: store)
        let ban = try #require(first.recordFailure("192.0.2.9"))
        try await first.persist(ban)
        let second = BanList(policy: BanPolicy(), store: store)
        #expect(second.ban(for: "192.0.2.9") == nil)
        try await second.reload()
        #expect(second.ban(for: "192.0.2.9") != nil)
        store.saved.removeAll()
        try await second.reload()
        #expect(second.ban(for: "192.0.2.9") == nil)
    }

    @Test("bans survive in the real store, SQLite")
    func storeBans() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ctm-bans-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = Store(db: try SQLiteDatabase(path: dir.appendingPathComponent("s.db").path))
        _ = try await store.migrate()
        let now = Date()
        try await store.saveBan(GatewayBanRecord(address: "198.51.100.1", bannedAt: now, until: now.addingTimeInterval(60), failures: 5))
        try await store.saveBan(GatewayBanRecord(address: "198.51.100.2", bannedAt: now.addingTimeInterval(-120), until: now.addingTimeInterval(-60), failures: 5))
        #expect(try await store.activeBans(now: now).map(\.address) == ["198.51.100.1"])
        #expect(try await store.deleteBan("198.51.100.1"))
        #expect(try await !store.deleteBan("198.51.100.1"))
        await store.db.close()
    }

    @Test("the gateway's keys are made once, 0600, and read back identically")
    func keys() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ctm-gwkeys-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try GatewayKeys.loadOrCreate(dir: dir)
        let b = try GatewayKeys.loadOrCreate(dir: dir)
        #expect(a.hostPublicKey == b.hostPublicKey && a.upstreamPublicKey == b.upstreamPublicKey)
        #expect(a.hostPublicKey != a.upstreamPublicKey)
        #expect(try GatewayKeys.hostPublicKey(dir: dir) == a.hostPublicKey)
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/ssh_host_ed25519_key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // The fingerprint is the one ssh-keygen prints.
        let pub = dir + "/host.pub"
        try (a.hostPublicKey + "\n").write(toFile: pub, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/ssh-keygen")
        p.arguments = ["-lf", pub]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        let printed = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(printed.contains(a.hostKeyFingerprint), "\(printed) vs \(a.hostKeyFingerprint)")
        // A damaged key file is refused, never silently replaced.
        try "garbage".write(toFile: dir + "/ssh_host_ed25519_key", atomically: true, encoding: .utf8)
        #expect(throws: ContainariumError.self) { try GatewayKeys.loadOrCreate(dir: dir) }
    }

    @Test("RSA and security-key keys are refused at registration with the reason and the fix")
    func rsaRefused() throws {
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDJ1VxKMiDQo7RR7jqR5RhnIBYxdsbk4/0vRfyIxnu1jrpSz4XE0yV+gTaGWpXZIpJPSBGVH7ttuDi2vkeU6x5aTKNB3S5mE8BL9GW79Vh7HwFJEnKqQBG7LYJfFY1+WiM/2YF3ASNuIxdFH5lpp11SV2sGLWPS4c1Nz4vH6SYb/H8BEmDbPKOhQNa8x1bvVsKbDqhqJXvsBQtnqvXIRDPXkUeTPMmsM40zgtk+KSIU+/BnE4KsjvtuCqHB8Sqi9YwCHDH6n93N9fX4DfNVH3RzX3fo8F8RwCA9wPRgPJxQJA9gA9fT5Pp9vZX1BbPKrN4cMKU59/FFrfmSnZrSMQbd"
        let key = try SSHPublicKey(parsing: rsa)
        #expect(key.type == "ssh-rsa")
        do {
            try key.requireGatewayCompatible()
            Issue.record("an RSA key was accepted")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("RSA keys are not supported") && error.message.contains("ssh-keygen -t ed25519") && error.message.contains("docs/ssh.md"))
        }
        #expect(throws: ContainariumError.self) { try SSHPublicKey.registrable(rsa) }
        #expect(throws: Never.self) { try SSHPublicKey.registrable("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x") }
    }

    @Test("export with a gateway: both ways of connecting, host keys pinned, nothing injectable")
    func export() throws {
        let gateway = SSHConfigExport.Gateway(host: "gw.example.com", port: 2222, hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICv9lv/KlViCLEB962NNhX7xl3n6VYZY6166Vjq8P50G")
        let e = try SSHConfigExport(user: Username("alice"), jumpHost: nil, containerIP: "10.0.3.7", keyPath: nil, gateway: gateway,
                                    containerHostKeys: ["ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD root@x",
                                                        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIz4CDP8Q0IS6OOu0kEkckjOYB99mmm+uIqyXZFIuiAv root@x"])
        let text = e.render(now: Date(timeIntervalSince1970: 0))
        #expect(text.contains("Host alice-dev\n    HostName gw.example.com\n    Port 2222\n    User alice\n"))
        #expect(text.contains("KnownHostsCommand /bin/echo containarium-gateway-gw.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICv9lv/KlViCLEB962NNhX7xl3n6VYZY6166Vjq8P50G\n"))
        #expect(text.contains("Host alice-direct\n    HostName 10.0.3.7\n"))
        #expect(text.contains("ProxyJump alice-dev"))
        #expect(text.contains("KnownHostsCommand /bin/echo alice-container ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIz4CDP8Q0IS6OOu0kEkckjOYB99mmm+uIqyXZFIuiAv\n"))
        #expect(text.contains("StrictHostKeyChecking yes") && !text.contains("accept-new") && !text.contains("containarium-jump"))
        // A host key carrying extra directives is refused, not rendered.
        var evil = gateway
        evil.hostKey = "ssh-ed25519 AAAA\nProxyCommand sh"
        #expect(throws: ContainariumError.self) { try SSHConfigExport(user: Username("alice"), jumpHost: nil, containerIP: "10.0.3.7", keyPath: nil, gateway: evil) }
        evil = gateway
        evil.host = "gw;rm"
        #expect(throws: ContainariumError.self) { try SSHConfigExport(user: Username("alice"), jumpHost: nil, containerIP: "10.0.3.7", keyPath: nil, gateway: evil) }
        // Neither a jump host nor a gateway: nothing to export.
        #expect(throws: ContainariumError.self) { try SSHConfigExport(user: Username("alice"), jumpHost: nil, containerIP: "10.0.3.7", keyPath: nil) }
    }
}
