import ContainariumCore
import ContainariumService
import Foundation
import PluginHost
import TestSupport
import Testing

/// Several instance backends on one node: what manifests declare, and how a create, an OS type
/// and the config's `backend` pick among them.
@Suite("Instance backends: manifest kinds and OS types, backend selection, plugin enable/disable in the config")
struct BackendSelectionTests {
    static let lxc = BackendOffer(id: "incus-lxc", kinds: ["lxc"], osTypes: ["linux"])
    static let vm = BackendOffer(id: "qemu-windows", kinds: ["vm"], osTypes: ["windows", "linux"])

    static func manifest(_ extra: [String: Any], capabilities: [String] = ["instances/1"]) throws -> Result<PluginManifest, ContainariumError> {
        let dir = try TestEnv.tempDir("manifest")
        defer { TestEnv.cleanup(dir) }
        var m: [String: Any] = ["id": "b", "name": "B", "version": "1", "abi": "1.1", "library": "libb.so", "capabilities": capabilities]
        m.merge(extra) { $1 }
        try JSONSerialization.data(withJSONObject: m).write(to: dir.appendingPathComponent("plugin.json"))
        do throws(ContainariumError) { return .success(try PluginManifest.load(from: dir)) } catch { return .failure(error) }
    }

    @Test("the shipped backends declare their kinds and OS types; the others declare none")
    func shippedManifests() throws {
        let incus = try PluginManifest.load(from: TestEnv.repoRoot.appendingPathComponent("Plugins/IncusLXC"))
        #expect(incus.kinds == ["lxc"] && incus.osTypes == ["linux"])
        let qemu = try PluginManifest.load(from: TestEnv.repoRoot.appendingPathComponent("Plugins/QemuWindows"))
        #expect(qemu.kinds == ["vm"] && qemu.osTypes == ["windows", "linux"])
        for dir in ["Plugins/ExampleScanner", "Plugins/NvidiaGPU"] {
            let m = try PluginManifest.load(from: TestEnv.repoRoot.appendingPathComponent(dir))
            #expect(m.kinds == nil && m.osTypes == nil, "\(dir)")
        }
    }

    @Test(
        "manifests that do not say what a backend serves, or say it wrongly, are refused with the field at fault",
        arguments: [
            ("{}", ["instances/1"], "must declare \"kinds\""),
            (#"{"kinds": ["lxc"]}"#, ["instances/1"], "must declare \"osTypes\""),
            (#"{"kinds": [], "osTypes": ["linux"]}"#, ["instances/1"], "must declare \"kinds\""),
            (#"{"kinds": ["LXC"], "osTypes": ["linux"]}"#, ["instances/1"], "kinds entry 'LXC'"),
            (#"{"kinds": ["lxc"], "osTypes": ["linux", "linux"]}"#, ["instances/1"], "osTypes lists an entry twice"),
            (#"{"kinds": ["lxc"], "osTypes": ["linux; rm"]}"#, ["instances/1"], "osTypes entry"),
            (#"{"kinds": ["lxc"]}"#, ["scanner/1"], "belong to instance backends"),
        ] as [(String, [String], String)])
    func badKinds(_ extraJSON: String, _ caps: [String], _ why: String) throws {
        let extra = try JSONSerialization.jsonObject(with: Data(extraJSON.utf8)) as? [String: Any] ?? [:]
        guard case .failure(let e) = try Self.manifest(extra, capabilities: caps) else {
            Issue.record("accepted: \(extra)")
            return
        }
        #expect(e.code == .pluginLoad && e.message.contains(why), "\(e.message)")
    }

    @Test("a Linux create goes to the backend whose primary OS is Linux, a Windows one to the only backend that takes Windows")
    func byOS() throws {
        let both = [Self.vm, Self.lxc]  // discovery order does not decide it: the primary OS does
        #expect(try BackendOffer.choose(both, kind: nil, os: "linux", preferred: nil).id == "incus-lxc")
        #expect(try BackendOffer.choose(both, kind: nil, os: "windows", preferred: nil).id == "qemu-windows")
        #expect(try BackendOffer.choose(both, kind: nil, os: nil, preferred: nil).id == "qemu-windows", "no OS: the first")
    }

    @Test("the config's backend pins the default where it qualifies, never where it does not")
    func pinned() throws {
        let both = [Self.lxc, Self.vm]
        #expect(try BackendOffer.choose(both, kind: nil, os: "linux", preferred: "qemu-windows").id == "qemu-windows")
        #expect(try BackendOffer.choose(both, kind: nil, os: "windows", preferred: "incus-lxc").id == "qemu-windows")
        #expect(try BackendOffer.choose(both, kind: nil, os: "linux", preferred: "not-here").id == "incus-lxc")
    }

    @Test("an explicit kind picks by kind; what no backend serves is refused (400) with what is there")
    func byKind() throws {
        let both = [Self.lxc, Self.vm]
        #expect(try BackendOffer.choose(both, kind: "vm", os: "linux", preferred: "incus-lxc").id == "qemu-windows")
        #expect(try BackendOffer.choose(both, kind: "lxc", os: "linux", preferred: nil).id == "incus-lxc")
        #expect {
            try BackendOffer.choose(both, kind: "lxc", os: "windows", preferred: nil)
        } throws: { e in
            let e = e as? ContainariumError
            return e?.code == .invalidArgument && e?.message.contains("kind lxc and OS windows") == true
                && e?.message.contains("qemu-windows (kinds vm; OS windows,linux)") == true
        }
        #expect {
            try BackendOffer.choose([Self.lxc], kind: nil, os: "windows", preferred: nil)
        } throws: { e in (e as? ContainariumError)?.message.contains("no instance backend on this node serves OS windows") == true }
        #expect {
            try BackendOffer.choose([], kind: nil, os: "linux", preferred: nil)
        } throws: { e in (e as? ContainariumError)?.message.contains("none is ready") == true }
    }

    @Test(
        "a create's OS family comes from its OS type, else its image, else the default image (Linux)",
        arguments: [
            ("windows-2022", nil, "windows"), ("Windows-2025", nil, "windows"), ("OS_TYPE_WINDOWS_SERVER_2022", nil, "windows"),
            ("debian12", nil, "linux"), ("OS_TYPE_UBUNTU_2404", nil, "linux"), ("my-windows", nil, "linux"),
            (nil, "windows-2022", "windows"), (nil, "containarium/debian12", "linux"), (nil, nil, "linux"),
        ] as [(String?, String?, String)])
    func osFamily(_ osType: String?, _ image: String?, _ family: String) {
        let r = CreateEnvironmentRequest(username: "alice", sshKeys: [], image: image, osType: osType)
        #expect(r.osFamily == family)
    }

    @Test("plugin enable/disable changes only the plugin's setting, in the node's entry when the file has one, and keeps the rest")
    func toggleInConfig() throws {
        let dir = try TestEnv.tempDir("cfg")
        defer { TestEnv.cleanup(dir) }
        let path = dir.appendingPathComponent("config.json").path
        try Data(#"{"node":"n1","cpuOvercommit":4,"images":{"debian12":"containarium/debian12"},"plugins":{"incus-lxc":{"enabled":true,"config":{"pool":"p"}}},"nodes":{"n2":{"plugins":{"qemu-windows":{"enabled":false}}}}}"#.utf8)
            .write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: path)

        let top = try HostConfig.setPluginEnabled("qemu-windows", true, node: "n1", path: path)
        #expect(top.section == "plugins.qemu-windows")
        var cfg = try HostConfig.load(path: path)
        #expect(cfg.pluginSettings.entry(for: "qemu-windows", node: "n1").enabled == true)
        #expect(cfg.pluginSettings.entry(for: "qemu-windows", node: "n2").enabled == false, "n2's own entry still wins there")
        #expect(cfg.plugins?["incus-lxc"]?.config?["pool"]?.stringValue == "p")
        #expect(cfg.cpuOvercommit == 4 && cfg.images?["debian12"] == "containarium/debian12" && cfg.node == "n1")
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) == 0o640)

        let own = try HostConfig.setPluginEnabled("qemu-windows", true, node: "n2", path: path)
        #expect(own.section == "nodes.n2.plugins.qemu-windows")
        cfg = try HostConfig.load(path: path)
        #expect(cfg.pluginSettings.entry(for: "qemu-windows", node: "n2").enabled == true)
        _ = try HostConfig.setPluginEnabled("incus-lxc", false, node: "n1", path: path)
        cfg = try HostConfig.load(path: path)
        #expect(cfg.pluginSettings.entry(for: "incus-lxc", node: "n1").enabled == false)
        #expect(cfg.plugins?["incus-lxc"]?.config?["pool"]?.stringValue == "p", "the plugin's own config stays")

        // A missing file is created; a file that is not a JSON object is refused and left alone.
        let fresh = dir.appendingPathComponent("sub/new.json").path
        _ = try HostConfig.setPluginEnabled("qemu-windows", true, node: "n1", path: fresh)
        #expect(try HostConfig.load(path: fresh).plugins?["qemu-windows"]?.enabled == true)
        try Data("[1,2]".utf8).write(to: URL(fileURLWithPath: path))
        #expect {
            try HostConfig.setPluginEnabled("qemu-windows", true, node: "n1", path: path)
        } throws: { e in (e as? ContainariumError)?.code == .invalidArgument }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "[1,2]")
    }
}
