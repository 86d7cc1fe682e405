import ContainariumCore
import ContainariumService
import Foundation
import TestSupport
import Testing

@Suite("Usernames")
struct UsernameTests {
    @Test("valid names", arguments: ["alice", "bob2", "a", "dev-team-1", String(repeating: "a", count: 32)])
    func valid(_ name: String) throws {
        let u = try Username(name)
        #expect(u.containerName == "\(name)-container")
        #expect(Username(containerName: u.containerName) == u)
    }

    @Test(
        "invalid names are refused with a reason",
        arguments: [
            ("", "empty"), ("Alice", "lowercase"), ("1alice", "start with"), ("al_ice", "lowercase"), ("al ice", "lowercase"),
            ("alice-", "end with"), ("a--b", "contain '--'"), ("root", "reserved"), ("admin", "reserved"),
            ("systemd-foo", "reserved"), (String(repeating: "a", count: 33), "longer than 32"), ("al;rm -rf", "lowercase"),
            ("ålice", "lowercase"), ("-x", "start with"),
        ])
    func invalid(_ name: String, _ reason: String) {
        #expect {
            try Username(name)
        } throws: { error in
            (error as? ContainariumError)?.code == .invalidArgument && "\(error)".contains(reason)
        }
    }
}

@Suite("Sizes and CPU limits")
struct SizeTests {
    @Test(
        "sizes parse with decimal and binary units",
        arguments: [
            ("8GB", UInt64(8_000_000_000)), ("4096MB", 4_096_000_000), ("8GiB", 8 << 30), ("512MiB", 512 << 20), ("1.5GiB", 1_610_612_736),
            ("8gb", 8_000_000_000), ("100 GB", 100_000_000_000), ("2T", 2 << 40), ("1024B", 1024),
        ])
    func sizes(_ text: String, _ bytes: UInt64) throws {
        #expect(try ByteSize(parsing: text).bytes == bytes)
    }

    @Test("sizes read back the way they were written", arguments: [("8GB", "8GB"), ("8GiB", "8GiB"), ("4096MB", "4096MB"), ("512MiB", "512MiB"), ("1.5GiB", "1536MiB"), ("1000B", "1000B")])
    func format(_ text: String, _ shown: String) throws {
        #expect(try ByteSize(parsing: text).description == shown)
    }

    @Test("bad sizes are refused", arguments: ["", "8", "GB", "8XB", "-1GB", "0GB", "1e30GB", "8 G B"])
    func badSizes(_ text: String) {
        #expect(throws: ContainariumError.self) { try ByteSize(parsing: text) }
    }

    @Test("CPU limits: count, range, list", arguments: [("4", "4"), ("2-4", "2-4"), ("0-3", "0-3"), ("0,2", "0,2"), ("0,1,2,5", "0-2,5"), ("3-3", "3-3"), ("1,1", "1-1")])
    func cpu(_ text: String, _ incus: String) throws {
        #expect(try CPULimit(parsing: text).incusValue == incus)
    }

    @Test("bad CPU limits are refused", arguments: ["", "0", "-1", "4-2", "a", "1-2-3", "2000", "1,", "1;2"])
    func badCPU(_ text: String) {
        #expect(throws: ContainariumError.self) { try CPULimit(parsing: text) }
    }
}

@Suite("SSH public keys")
struct SSHKeyTests {
    @Test("keys made by ssh-keygen parse, and fingerprints match ssh-keygen -l", arguments: [("ed25519", nil), ("rsa", 3072), ("ecdsa", 256), ("ecdsa", 521)] as [(String, Int?)])
    func realKeys(_ type: String, _ bits: Int?) throws {
        let dir = try TestEnv.tempDir("keys")
        defer { TestEnv.cleanup(dir) }
        let pair = try KeyPair.generate(in: dir, type: type, bits: bits)
        let key = try SSHPublicKey(parsing: pair.publicText)
        let printed = try Run.run("/usr/bin/ssh-keygen", ["-l", "-E", "sha256", "-f", pair.publicKey.path]).stdout
        #expect(printed.contains(key.fingerprint))
        #expect(key.comment == "test@containarium")
        #expect(key.authorizedKeysLine == pair.publicText.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test("several keys in one file; comments and blank lines skipped")
    func many() throws {
        let dir = try TestEnv.tempDir("keys")
        defer { TestEnv.cleanup(dir) }
        let a = try KeyPair.generate(in: dir, name: "a"), b = try KeyPair.generate(in: dir, name: "b")
        let keys = try SSHPublicKey.parseMany("# team keys\n\(a.publicText)\n\n\(b.publicText)")
        #expect(keys.count == 2)
    }

    static let ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

    @Test(
        "malformed keys are refused with a reason",
        arguments: [
            ("", "empty"),
            ("ssh-ed25519", "must read"),
            ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "unsupported SSH key type"),
            ("ssh-ed25519 !!!notbase64!!!", "not valid base64"),
            ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "does not match its type"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAEOMqqnkVzrm0SdG6UOoqKLs=", "32 bytes"),
            ("command=\"rm -rf /\" \(ed)", "options"),
            ("\(ed) a\n\(ed) b", "single line"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        ])
    func malformed(_ text: String, _ reason: String) {
        #expect {
            try SSHPublicKey(parsing: text)
        } throws: { error in
            "\(error)".contains(reason)
        }
    }
}

@Suite("GPU requests are checked at the edge")
struct GPURequestValidationTests {
    static func request(gpus: Int? = nil, model: String? = nil, devices: [String] = []) -> CreateEnvironmentRequest {
        CreateEnvironmentRequest(username: "alice", sshKeys: [], gpus: gpus, gpuModel: model, gpuDevices: devices)
    }

    @Test("accepted", arguments: [
        (request(), 0), (request(gpus: 0), 0), (request(gpus: 2), 2), (request(gpus: 1, model: "GA100 [A100 SXM4 40GB]"), 1),
        (request(devices: ["0000:65:00.0"]), 1), (request(gpus: 2, devices: ["0000:65:00.0", "0000:ca:00.7"]), 2),
    ])
    func accepted(_ r: CreateEnvironmentRequest, _ count: Int) throws {
        #expect(try EnvironmentService.validateGPUs(r).0 == count)
    }

    @Test("refused", arguments: [
        request(gpus: -1), request(gpus: 17), request(model: "A100"), request(gpus: 1, model: ""), request(gpus: 1, model: "bad\u{1}model"),
        request(devices: ["65:00.0"]), request(devices: ["0000:65:00.8"]), request(devices: ["0000:65:00.0;rm"]), request(devices: ["0000:GG:00.0"]),
        request(gpus: 2, devices: ["0000:65:00.0"]), request(devices: ["0000:65:00.0", "0000:65:00.0"]),
    ])
    func refused(_ r: CreateEnvironmentRequest) {
        #expect(throws: ContainariumError.self) { try EnvironmentService.validateGPUs(r) }
    }

    @Test("PCI addresses", arguments: [("0000:65:00.0", true), ("0001:ff:1f.7", true), ("0000:65:00.0 ", false), ("0000:65:00", false), ("0000:65:00.0\n", false), ("0000-65:00.0", false)])
    func pci(_ s: String, _ ok: Bool) {
        #expect(GPUInfo.validPCIAddress(s) == ok)
    }
}
