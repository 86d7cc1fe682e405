import ContainariumCore
import ContainariumService
import Foundation
import Logging
import PluginHost
import TestSupport
import Testing

@Suite("Service layer without a backend")
struct ServiceTests {
    func service(config: HostConfig = HostConfig()) -> EnvironmentService {
        let loader = PluginLoader(searchPaths: [], settings: config.pluginSettings, node: "n", logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }), events: EventBus())
        return EnvironmentService(
            config: config, plugins: PluginManager(loader: loader),
            stacks: StackCatalog(paths: [TestEnv.repoRoot.appendingPathComponent("stacks")]),
            logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    static let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"

    @Test("a valid request becomes the backend request: names, sizes, CPU, account, labels")
    func validation() throws {
        let v = try service().validate(
            CreateEnvironmentRequest(username: "alice", sshKeys: [Self.key], cpu: "0,1", memory: "2GiB", disk: "20GB", stack: "python", labels: ["team": "core"]))
        #expect(v.request.name == "alice-container")
        #expect(v.request.image == "containarium/debian12")
        #expect(v.request.cpu == "0-1")
        #expect(v.request.memoryBytes == 2 << 30)
        #expect(v.request.diskBytes == 20_000_000_000)
        #expect(v.request.nesting)
        #expect(v.request.account?.name == "alice")
        #expect(v.request.account?.sshKeys == [Self.key])
        #expect(v.request.labels == ["team": "core", "stack": "python"])
        #expect(v.stack?.check == ["python3", "--version"])
    }

    @Test(
        "bad requests are refused before any backend is asked",
        arguments: [
            (CreateEnvironmentRequest(username: "alice", sshKeys: [], nesting: false, runtimes: [.podman]), "needs nesting"),
            (CreateEnvironmentRequest(username: "alice", sshKeys: ["ssh-ed25519 not-base64"]), "key"),
            (CreateEnvironmentRequest(username: "alice", sshKeys: [key], memory: "64MB"), "below the minimum"),
            (CreateEnvironmentRequest(username: "alice", sshKeys: [key], disk: "100MB"), "below the minimum"),
            (CreateEnvironmentRequest(username: "alice", sshKeys: [key], stack: "cobol"), "unknown stack"),
            (CreateEnvironmentRequest(username: "alice", sshKeys: [key], image: "a b"), "not valid"),
            (CreateEnvironmentRequest(username: "alice", sshKeys: [key], image: "x", osType: "debian12"), "either an image or an OS type"),
            (CreateEnvironmentRequest(username: "alice", sshKeys: [key], osType: "OS_TYPE_ROCKY_9"), "not configured on this node"),
            (CreateEnvironmentRequest(username: "alice", sshKeys: [key], labels: ["Bad Key": "x"]), "label key"),
            (CreateEnvironmentRequest(username: "root", sshKeys: [key]), "reserved"),
        ])
    func refused(_ request: CreateEnvironmentRequest, _ reason: String) {
        #expect {
            try service().validate(request)
        } throws: { error in
            "\(error)".contains(reason)
        }
    }

    @Test("no SSH key is needed (keys can be added later); runtimes install their stacks after the requested one, once each")
    func keylessWithRuntimes() throws {
        let v = try service().validate(CreateEnvironmentRequest(username: "alice", sshKeys: [], stack: "nodejs", runtimes: [.podman, .docker, .podman]))
        #expect(v.keys.isEmpty)
        #expect(v.request.account?.sshKeys == [])
        #expect(v.stack?.name == "nodejs")
        #expect(v.runtimes.map(\.name) == ["podman", "docker"])
        #expect(v.request.nesting)
        // A runtime the config does not offer is refused, naming what is offered.
        var config = HostConfig()
        config.runtimes = ["docker"]
        #expect { try service(config: config).validate(CreateEnvironmentRequest(username: "alice", sshKeys: [], runtimes: [.podman])) } throws: {
            "\($0)".contains("podman is not offered") && "\($0)".contains("docker")
        }
        config.runtimes = []
        #expect(throws: ContainariumError.self) { try service(config: config).validate(CreateEnvironmentRequest(username: "alice", sshKeys: [], runtimes: [.docker])) }
        // enableDocker with stack docker: installed once, and the owner still joins the group.
        let both = try service().validate(CreateEnvironmentRequest(username: "alice", sshKeys: [], stack: "docker", runtimes: [.docker]))
        #expect(both.stack?.name == "docker" && both.runtimes.isEmpty && both.joinDockerGroup)
        #expect(try !service().validate(CreateEnvironmentRequest(username: "alice", sshKeys: [], stack: "docker")).joinDockerGroup)
        // A runtime turns nesting on even where the node's defaults turn it off.
        var noNesting = HostConfig()
        noNesting.defaults = HostConfig.Defaults(nesting: false)
        #expect(try service(config: noNesting).validate(CreateEnvironmentRequest(username: "alice", sshKeys: [], runtimes: [.podman])).request.nesting)
        #expect(try !service(config: noNesting).validate(CreateEnvironmentRequest(username: "alice", sshKeys: [])).request.nesting)
    }

    @Test(
        "CPU rule: a count may exceed the node's cores up to the over-commit ratio; pinned CPUs must exist",
        arguments: [
            ("2", 2, 4.0, true), ("8", 2, 4.0, true), ("9", 2, 4.0, false), ("4", 2, 1.0, false), ("2", 2, 1.0, true),
            ("3", 2, 1.5, true), ("0-1", 2, 4.0, true), ("0-2", 2, 4.0, false), ("1,3", 4, 1.0, true), ("64", 16, 4.0, true),
            ("1024", 2, 1e300, true), ("3", 2, .nan, false), ("2", 2, 0.5, true),
        ])
    func cpuRule(_ cpu: String, _ cores: Int, _ ratio: Double, _ allowed: Bool) {
        let result = Result { () throws(ContainariumError) in try EnvironmentService.checkCPU(cpu, nodeCPUs: cores, overcommit: ratio) }
        if allowed {
            #expect(throws: Never.self) { try result.get() }
        } else {
            #expect { try result.get() } throws: { ($0 as? ContainariumError)?.code == .invalidArgument }
        }
    }

    @Test("OS types map to images through operator configuration")
    func osTypes() throws {
        var config = HostConfig()
        config.images = ["ubuntu2404": "local/ubuntu-24.04", "debian12": "containarium/debian12"]
        #expect(try config.image(forOSType: "OS_TYPE_UBUNTU_2404") == "local/ubuntu-24.04")
        #expect(try config.image(forOSType: "ubuntu2404") == "local/ubuntu-24.04")
        #expect(try config.image(forOSType: "OS_TYPE_DEBIAN_12") == "containarium/debian12")
        let v = try service(config: config).validate(CreateEnvironmentRequest(username: "bob", sshKeys: [Self.key], osType: "OS_TYPE_UBUNTU_2404"))
        #expect(v.request.image == "local/ubuntu-24.04")
    }

    @Test("with no backend plugin, calls fail with a clear 'unavailable' error")
    func noBackend() async {
        do {
            _ = try await service().list()
            Issue.record("list without a backend succeeded")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("no instance backend is ready"))
        }
    }

    @Test("every required stack ships, each with a check")
    func stacks() throws {
        let catalog = StackCatalog(paths: [TestEnv.repoRoot.appendingPathComponent("stacks")])
        #expect(catalog.problems.isEmpty)
        for name in ["python", "nodejs", "golang", "rust", "docker", "database", "devops"] {
            #expect(try !catalog.stack(name).check.isEmpty)
        }
    }

    @Test("operator stack files are validated")
    func badStackFile() throws {
        let dir = try TestEnv.tempDir("stacks")
        defer { TestEnv.cleanup(dir) }
        try Data(#"{"name":"evil","description":"x","packages":["vim; rm -rf /"],"check":["true"]}"#.utf8).write(to: dir.appendingPathComponent("evil.json"))
        try Data(#"{"name":"mine","description":"x","packages":["vim"],"check":["vim","--version"]}"#.utf8).write(to: dir.appendingPathComponent("mine.json"))
        let catalog = StackCatalog(paths: [dir])
        #expect(catalog.stacks.keys.sorted() == ["mine"])
        #expect(catalog.problems.count == 1)
        #expect(catalog.problems[0].contains("not a valid Debian package name"))
    }

    @Test("SSH config export follows the reference layout and refuses injection")
    func export() throws {
        let e = try SSHConfigExport(user: Username("alice"), jumpHost: "35.229.246.67", containerIP: "10.0.3.100", keyPath: nil)
        let text = e.render(now: Date(timeIntervalSince1970: 1_768_034_598))
        #expect(text.hasPrefix("# Containarium SSH Configuration\n# User: alice\n# Generated: 2026-01-10 08:43:18 UTC\n"))
        #expect(text.contains("Host containarium-jump\n    HostName 35.229.246.67\n    User alice\n    IdentityFile ~/.ssh/containarium_alice\n"))
        #expect(text.contains("Host alice-dev\n    HostName 10.0.3.100\n    User alice\n    IdentityFile ~/.ssh/containarium_alice\n    ProxyJump containarium-jump\n"))
        for bad in ["1.2.3.4\nHost *", "-oProxyCommand=x", "a b", ""] {
            #expect(throws: ContainariumError.self) { try SSHConfigExport(user: Username("alice"), jumpHost: bad, containerIP: "10.0.0.1", keyPath: nil) }
        }
        #expect(throws: ContainariumError.self) { try SSHConfigExport(user: Username("alice"), jumpHost: "h", containerIP: "10.0.0.1", keyPath: "a\nProxyCommand x") }
    }

    @Test("node config: per-node overrides merge over the top level")
    func settingsMerge() throws {
        let json = #"""
            {"plugins": {"incus-lxc": {"enabled": true, "config": {"pool": "default", "socket": "/s"}}},
             "nodes": {"n2": {"plugins": {"incus-lxc": {"enabled": false, "config": {"pool": "fast"}}}}}}
            """#
        let config = try WireJSON.decoder().decode(HostConfig.self, from: Data(json.utf8))
        let s = config.pluginSettings
        #expect(s.entry(for: "incus-lxc", node: "n1").enabled == true)
        #expect(s.entry(for: "incus-lxc", node: "n2").enabled == false)
        #expect(s.entry(for: "incus-lxc", node: "n2").config == .object(["pool": .string("fast"), "socket": .string("/s")]))
    }

    @Test("a broken config file is a clear error")
    func badConfig() throws {
        let dir = try TestEnv.tempDir("cfg")
        defer { TestEnv.cleanup(dir) }
        let f = dir.appendingPathComponent("c.json")
        try Data(#"{"plugins": 5}"#.utf8).write(to: f)
        #expect { try HostConfig.load(path: f.path) } throws: { "\($0)".contains("is not valid") }
        #expect { try HostConfig.load(path: dir.appendingPathComponent("missing.json").path) } throws: { "\($0)".contains("does not exist") }
    }
}
