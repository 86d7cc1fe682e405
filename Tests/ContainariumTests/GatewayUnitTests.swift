import ContainariumCore
@testable import ContainariumGateway
@testable import ContainariumPlatform
import ContainariumService
import ContainariumStore
import Foundation
import NIOCore
import Synchronization
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

    @Test("the gateway never dials loopback, link-local (metadata), multicast, reserved, unspecified or host addresses, whatever a route says")
    func forwardTargets() throws {
        for bad in ["127.0.0.1", "127.8.9.10", "169.254.169.254", "169.254.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1",
                    "239.255.255.250", "240.0.0.1", "255.255.255.255", "localhost", "10.0.0", "010.0.0.1", "10.0.0.256", "::1", ""] {
            #expect(GatewayTargets.refusal(bad) != nil, "\(bad)")
        }
        #expect(GatewayTargets.refusal("169.254.169.254")?.contains("metadata") == true)
        // Every IPv4 address of this host is refused, whichever interface holds it.
        let own = GatewayTargets.hostAddresses()
        #expect(own.contains(IPv4Address("127.0.0.1") ?? IPv4Address(0)))
        for a in own { #expect(GatewayTargets.refusal(a.description) != nil, "\(a)") }
        // An ordinary address on a network (a documentation address this host does not hold) is allowed.
        let other = try #require(["192.0.2.77", "198.51.100.77", "203.0.113.77"].first { IPv4Address($0).map { !own.contains($0) } ?? false })
        #expect(GatewayTargets.refusal(other) == nil)
    }

    @Test("IPv4 addresses and networks parse strictly; a network's hosts exclude its network and broadcast addresses")
    func ipv4() throws {
        #expect(IPv4Address("10.87.0.137")?.value == 0x0a57_0089)
        #expect(IPv4Address("10.87.0.137")?.description == "10.87.0.137")
        for bad in ["10.87.0", "10.87.0.1.2", "10.87.00.1", "1e1.0.0.1", "10.87.0.-1", "+10.0.0.1", " 10.0.0.1", "10.0.0.1/24", "١٠.0.0.1"] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
        let net = try #require(IPv4Network(cidr: "10.87.0.1/24"))
        #expect(net.address.description == "10.87.0.1" && net.prefixLength == 24)
        #expect(net.containsHost(try #require(IPv4Address("10.87.0.137"))))
        #expect(!net.containsHost(try #require(IPv4Address("10.87.0.0"))))
        #expect(!net.containsHost(try #require(IPv4Address("10.87.0.255"))))
        #expect(!net.containsHost(try #require(IPv4Address("10.87.1.5"))))
        #expect(!net.containsHost(try #require(IPv4Address("169.254.169.254"))))
        #expect(IPv4Network(cidr: "10.87.0.1/33") == nil && IPv4Network(cidr: "10.87.0.1") == nil && IPv4Network(cidr: "none") == nil)
        let point = try #require(IPv4Network(cidr: "192.0.2.4/31"))
        #expect(point.containsHost(try #require(IPv4Address("192.0.2.5"))))
    }

    @Test("a byte budget pauses its producer at the limit, resumes it once the reader catches up, and frees every waiter when the reader is gone")
    func byteBudget() async {
        let budget = ByteBudget(limit: 100)
        let resumed = Mutex(0)
        budget.onResume { resumed.withLock { $0 += 1 } }
        #expect(!budget.add(60))
        #expect(budget.add(60), "over the limit: pause")
        #expect(!budget.add(10), "already paused: said once")
        budget.release(20)
        #expect(resumed.withLock { $0 } == 0, "still over the limit")
        budget.release(60)
        #expect(resumed.withLock { $0 } == 1 && budget.queued == 50)
        // A waiting producer goes on once there is room, or once the reader is gone.
        _ = budget.add(60)
        let waiter = Task { await budget.waitForRoom(); return budget.queued }
        try? await Task.sleep(for: .milliseconds(50))
        budget.release(30)
        #expect(await waiter.value == 80)
        _ = budget.add(100)
        let stuck = Task { await budget.waitForRoom(); return true }
        budget.cancel()
        #expect(await stuck.value)
        #expect(!budget.add(1000), "a cancelled budget never pauses again")
    }
}

@Suite("PROXY protocol headers")
struct ProxyProtocolTests {
    @Test("v2 headers written for IPv4 and IPv6 read back as the client's address; v1 lines are read; LOCAL names nobody; anything else is refused")
    func roundTrip() throws {
        let v4 = ProxyProtocol.v2Header(source: try SocketAddress(ipAddress: "203.0.113.7", port: 50000), destination: try SocketAddress(ipAddress: "10.0.0.2", port: 22))
        let v4Bytes = Array(v4.readableBytesView) + Array("SSH-2.0-x\r\n".utf8)
        #expect(ProxyProtocol.parse(v4Bytes) == .header(length: 28, source: "203.0.113.7"))
        let v6 = ProxyProtocol.v2Header(source: try SocketAddress(ipAddress: "2001:db8::7", port: 1), destination: try SocketAddress(ipAddress: "2001:db8::1", port: 22))
        #expect(ProxyProtocol.parse(Array(v6.readableBytesView)) == .header(length: 52, source: "2001:db8::7"))
        let local = ProxyProtocol.v2Header(source: nil, destination: nil)
        #expect(ProxyProtocol.parse(Array(local.readableBytesView)) == .header(length: 16, source: nil))
        #expect(ProxyProtocol.parse(Array("PROXY TCP4 198.51.100.9 10.0.0.2 40000 22\r\nSSH".utf8)) == .header(length: 43, source: "198.51.100.9"))
        #expect(ProxyProtocol.parse(Array("PROXY UNKNOWN\r\n".utf8)) == .header(length: 15, source: nil))
        #expect(ProxyProtocol.parse(Array(v4Bytes.prefix(20))) == .incomplete)
        #expect(ProxyProtocol.parse(Array("PROXY TCP4 1.2".utf8)) == .incomplete)
        if case .invalid = ProxyProtocol.parse(Array("SSH-2.0-OpenSSH_9.2\r\n".utf8)) {} else { Issue.record("an SSH banner is not a PROXY header") }
        if case .invalid = ProxyProtocol.parse(Array("PROXY TCP4 a b\r\n....".utf8)) {} else { Issue.record("a malformed v1 line is refused") }
        if case .invalid = ProxyProtocol.parse(Array(("PROXY " + String(repeating: "x", count: 120)).utf8)) {} else { Issue.record("an endless v1 line is refused") }
    }
}
