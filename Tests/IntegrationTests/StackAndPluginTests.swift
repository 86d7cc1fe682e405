import ContainariumCore
import ContainariumService
import Foundation
import TestSupport
import Testing

@Suite("Stacks and plugin reporting, on real Incus", .needsIncus, .serialized)
struct StackAndPluginTests {
    @Test("--stack python installs from the Debian archive and its check passes inside the container")
    func pythonStack() throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let key = sandbox.key
        let user = "py\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete("\(user)-container") }
        let r = try sandbox.cli(["create", user, "--ssh-key", key.publicKey.path, "--stack", "python"], timeout: 900)
        #expect(r.status == 0, "create --stack python failed: \(r.output)")
        #expect(r.stdout.contains("[6/7] Installing stack python"))
        #expect(r.stdout.contains("[7/7] Checking stack python: python3 --version"))
        let info = try sandbox.cli(["info", user, "--format", "json"])
        let parsed = try WireJSON.decoder().decode(InstanceInfo.self, from: Data(info.stdout.utf8))
        #expect(parsed.labels["stack"] == "python")
        let ip = try #require(parsed.ipv4.first)
        let py = try IncusEnv.ssh(user: user, host: ip, key: key.privateKey, "python3 -c 'import venv, sys; print(sys.version_info[0])'")
        #expect(py.stdout == "3\n", "python3 in the container: \(py.output)")
        #expect(try sandbox.cli(["delete", user, "--force"]).status == 0)
    }

    @Test("an unknown stack is refused before anything is created")
    func unknownStack() throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let key = sandbox.key
        let user = "nostack\(TestEnv.suffix())"
        let r = try sandbox.cli(["create", user, "--ssh-key", key.publicKey.path, "--stack", "cobol"])
        // A bad value in the request (400 over REST), not a missing resource.
        #expect(r.status == ContainariumError.Code.invalidArgument.exitCode, "\(r.output)")
        #expect(r.stderr.contains("unknown stack 'cobol'"))
        #expect(r.stderr.contains("python"))
        #expect(try !IncusEnv.exists("\(user)-container"))
    }

    @Test("plugin list and plugin status show version, ABI, capabilities, enabled state and health")
    func pluginReporting() throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        // A second plugin directory with a broken plugin, to show failures are reported too.
        let broken = sandbox.plugins.appendingPathComponent("broken")
        try FileManager.default.createDirectory(at: broken, withIntermediateDirectories: true)
        try Data(#"{"id":"broken","name":"Broken","version":"0.0.1","abi":"1.0","library":"libbroken.so","capabilities":["instances/1"],"kinds":["lxc"],"osTypes":["linux"],"defaultEnabled":true}"#.utf8)
            .write(to: broken.appendingPathComponent("plugin.json"))

        let list = try sandbox.cli(["plugin", "list", "--format", "json"])
        #expect(list.status == 0, "\(list.output)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: Any])["plugins"] as? [[String: Any]]
        let incus = try #require(rows?.first { $0["id"] as? String == "incus-lxc" })
        #expect(incus["version"] as? String == "0.1.0")
        #expect(incus["abi"] as? String == "1.1")
        #expect(incus["capabilities"] as? [String] == ["instances/1", "accounts/1", "filesystem/1"])
        #expect(incus["enabled"] as? Bool == true)
        #expect(incus["state"] as? String == "ready")
        let bad = try #require(rows?.first { $0["id"] as? String == "broken" })
        #expect(bad["state"] as? String == "failed")
        #expect((bad["detail"] as? String)?.contains("library libbroken.so not found") == true)

        let version = try sandbox.cli(["version"])
        #expect(version.stdout == "containarium 0.2.0 (plugin ABI 1.1)\n")

        let table = try sandbox.cli(["plugin", "list"])
        #expect(table.stdout.contains("incus-lxc"))
        #expect(table.stdout.contains("ready"))

        let status = try sandbox.cli(["plugin", "status", "--format", "json"])
        #expect(status.status == 1, "an enabled plugin that is down makes status exit 1")
        let srows = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])["plugins"] as? [[String: Any]]
        let sIncus = try #require(srows?.first { $0["id"] as? String == "incus-lxc" })
        #expect(sIncus["health"] as? String == "ok")
        #expect((sIncus["healthDetail"] as? String)?.contains("Incus 6.") == true)
        #expect(srows?.first { $0["id"] as? String == "broken" }?["health"] as? String == "down")
    }

    @Test("capacity reports CPUs, memory and the storage pool")
    func capacity() async throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let c = try await sandbox.service().capacity()
        #expect(c.cpus == ProcessInfo.processInfo.activeProcessorCount)
        #expect(c.memoryTotalBytes > 1 << 30)
        #expect(c.pool?.name == "default")
        #expect(c.pool?.driver == "btrfs")
        #expect((c.pool?.totalBytes ?? 0) > 0)
    }
}

@Suite("Docker inside an environment, on real Incus", .needsIncus)
struct DockerNestingTests {
    @Test("--stack docker: nesting lets Docker run a container inside, and the address stays the environment's")
    func dockerInside() throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let key = sandbox.key
        let user = "dock\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete("\(user)-container") }
        let r = try sandbox.cli(["create", user, "--ssh-key", key.publicKey.path, "--stack", "docker", "--format", "json"], timeout: 900)
        #expect(r.status == 0, "create --stack docker failed: \(r.output)")
        let info = try WireJSON.decoder().decode(InstanceInfo.self, from: Data(r.stdout.utf8))
        let ip = try #require(info.ipv4.first)
        #expect(!ip.hasPrefix("172.17."), "docker0's address must not be reported as the environment's")
        // No registry is reachable: build a one-file image from busybox and run it, as the user, with sudo.
        let script = """
            set -e
            sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 busybox-static >/dev/null
            d=$(mktemp -d); mkdir -p $d/bin; cp /bin/busybox $d/bin/
            tar -C $d -c . | sudo -n docker import - tiny:1 >/dev/null
            sudo -n docker run --rm tiny:1 /bin/busybox echo hello-from-nested-docker
            ip -4 -o addr show eth0 | awk '{print $4}'
            """
        let out = try IncusEnv.ssh(user: user, host: ip, key: key.privateKey, script, within: 60)
        #expect(out.status == 0, "\(out.output)")
        #expect(out.stdout.contains("hello-from-nested-docker"))
        #expect(out.stdout.contains("\(ip)/"), "eth0 carries the reported address: \(out.stdout)")
    }
}

@Suite("Process isolation with the real Incus plugin", .needsIncus)
struct IsolatedIncusTests {
    @Test("create and delete through an isolated incus-lxc: progress events and results cross the pipe")
    func isolatedLifecycle() throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        // Same sandbox, plugin served from a child process.
        let cfg: [String: Any] = [
            "plugins": ["incus-lxc": ["enabled": true, "isolation": "process"]], "defaultImage": IncusEnv.image,
        ]
        try JSONSerialization.data(withJSONObject: cfg).write(to: sandbox.config)
        let status = try sandbox.cli(["plugin", "list", "--format", "json"])
        #expect(status.stdout.contains("\"isolation\" : \"process\""), "\(status.output)")
        let user = "iso\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete("\(user)-container") }
        let created = try sandbox.cli(["create", user, "--ssh-key", sandbox.key.publicKey.path])
        #expect(created.status == 0, "\(created.output)")
        for step in 1...5 { #expect(created.stdout.contains("[\(step)/5]"), "\(created.stdout)") }
        let info = try sandbox.cli(["info", user, "--format", "json"])
        let ip = try #require(try WireJSON.decoder().decode(InstanceInfo.self, from: Data(info.stdout.utf8)).ipv4.first)
        #expect(try IncusEnv.ssh(user: user, host: ip, key: sandbox.key.privateKey, "id -un").stdout == "\(user)\n")
        #expect(try sandbox.cli(["delete", user, "--force"]).status == 0)
        #expect(try !IncusEnv.exists("\(user)-container"))
    }
}
