import ContainariumCore
import ContainariumService
import Foundation
import PluginHost
import TestSupport
import Testing

@Suite("Environment lifecycle through the CLI, on real Incus", .needsIncus, .serialized)
struct LifecycleTests {
    @Test("create -> SSH login with the key, id and sudo -> resize seen inside -> stop/start -> delete leaves nothing")
    func fullLifecycle() throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let user = "life\(TestEnv.suffix())"
        let name = "\(user)-container"
        defer { IncusEnv.forceDelete(name) }
        let key = sandbox.key
        let stranger = try KeyPair.generate(in: sandbox.dir, name: "stranger")

        // create, with numbered progress
        let created = try sandbox.cli([
            "create", user, "--ssh-key", key.publicKey.path, "--cpu", "1", "--memory", "512MB", "--disk", "2GB", "--label", "team=platform",
            "--autostart",
        ])
        #expect(created.status == 0, "create failed: \(created.output)")
        for step in 1...5 { #expect(created.stdout.contains("[\(step)/5]")) }
        #expect(created.stdout.contains("Container \(name) created successfully"))

        var info = try info(sandbox, user)
        #expect(info.state == .running)
        #expect(info.cpuLimit == "1")
        #expect(info.memoryLimitBytes == 512_000_000)
        #expect(info.diskLimitBytes == 2_000_000_000)
        #expect(info.labels["team"] == "platform")
        #expect(info.labels["owner"] == user)
        #expect(info.nesting)
        #expect(info.autostart)
        #expect(info.memoryUsageBytes ?? 0 > 0)
        #expect(info.diskUsageBytes != nil)
        #expect(info.cpuUsageNanoseconds ?? 0 > 0)
        #expect(info.processes ?? 0 > 0)
        #expect(info.uptime() != nil)
        let ip = try #require(info.ipv4.first)
        // A finished create is an environment one can log in to at once: one try, no retry.
        let first = try IncusEnv.ssh(user: user, host: ip, key: key.privateKey, "id -un", within: 0.001)
        #expect(first.status == 0 && first.stdout == "\(user)\n", "the first login right after create: \(first.output)")
        #expect(try IncusEnv.incus(["config", "get", name, "boot.autostart"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "true")

        // list, in both formats
        let listed = try sandbox.cli(["list", "--format", "json"])
        #expect(listed.status == 0)
        let all = try WireJSON.decoder().decode([String: [InstanceInfo]].self, from: Data(listed.stdout.utf8))["containers"] ?? []
        #expect(all.contains { $0.name == name && $0.state == .running && $0.ipv4.first == ip })
        let table = try sandbox.cli(["list"])
        #expect(table.stdout.hasPrefix("NAME"))
        #expect(table.stdout.contains("\(name)  RUNNING  \(ip)"))

        // exec: argv, as root or as the user, exit status passed through
        let asRoot = try sandbox.cli(["exec", user, "--", "id", "-un"])
        #expect(asRoot.stdout == "root\n")
        let asUser = try sandbox.cli(["exec", user, "--as-user", "--", "sh", "-c", "id -un; pwd"])
        #expect(asUser.stdout == "\(user)\n/home/\(user)\n")
        #expect(try sandbox.cli(["exec", user, "--", "sh", "-c", "exit 7"]).status == 7)
        // Unprivileged for real: root inside is an unprivileged id range outside.
        let uidMap = try sandbox.cli(["exec", user, "--", "cat", "/proc/self/uid_map"]).stdout.split(separator: " ", omittingEmptySubsequences: true)
        #expect(uidMap.count >= 3 && uidMap[0] == "0" && uidMap[1] != "0", "uid_map: \(uidMap)")

        // Incus made it unprivileged.
        let priv = try IncusEnv.incus(["config", "get", name, "security.privileged"])
        #expect(priv.stdout.trimmingCharacters(in: .whitespacesAndNewlines) != "true")

        // log in with the real OpenSSH client
        let who = try IncusEnv.ssh(user: user, host: ip, key: key.privateKey, "id -un; sudo -n true && echo sudo-ok; stat -c '%a %U' ~/.ssh ~/.ssh/authorized_keys; hostname")
        #expect(who.status == 0, "ssh failed: \(who.output)")
        #expect(who.stdout == "\(user)\nsudo-ok\n700 \(user)\n600 \(user)\n\(name)\n")
        #expect(!who.stderr.contains("unable to resolve host"))
        // The host keys the container presents are the ones the host generated and recorded.
        let scanned = try Run.run("/usr/bin/ssh-keyscan", ["-t", "ed25519", ip]).stdout
        let recorded = try #require(info.sshHostKeys?.first { $0.hasPrefix("ssh-ed25519 ") })
        #expect(scanned.contains(recorded.split(separator: " ")[1]))
        let denied = try IncusEnv.ssh(user: user, host: ip, key: stranger.privateKey, "true", within: 2)
        #expect(denied.status == 255, "a key that was not given must not log in")
        let rootLogin = try IncusEnv.ssh(user: "root", host: ip, key: key.privateKey, "true", within: 2)
        #expect(rootLogin.status == 255, "root must not be reachable over SSH")

        // resize live and observe the new limits from inside
        let resized = try sandbox.cli(["resize", user, "--cpu", "2", "--memory", "1GiB", "--disk", "3GiB"])
        #expect(resized.status == 0, "resize failed: \(resized.output)")
        let memory = try IncusEnv.ssh(
            user: user, host: ip, key: key.privateKey,
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        #expect(memory.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1073741824")
        var cpus = ""
        for _ in 0..<150 {  // Incus rebalances CPU sets asynchronously (slower on a busy node)
            cpus = try IncusEnv.ssh(user: user, host: ip, key: key.privateKey, "nproc").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            if cpus == "2" { break }
            usleep(200_000)
        }
        #expect(cpus == "2")
        info = try self.info(sandbox, user)
        #expect(info.diskLimitBytes == 3 << 30)
        #expect(info.memoryLimitBytes == 1 << 30)
        #expect(info.cpuLimit == "2")

        // pin to one CPU, then refuse CPUs that do not exist
        #expect(try sandbox.cli(["resize", user, "--cpu", "0-0"]).status == 0)
        #expect(try self.info(sandbox, user).cpuLimit == "0-0")
        let badCPU = try sandbox.cli(["resize", user, "--cpu", "0-1023"])
        #expect(badCPU.status != 0)
        #expect(badCPU.stderr.contains("does not exist on this node"))

        // stop and start
        let stopped = try sandbox.cli(["stop", user])
        #expect(stopped.status == 0, "\(stopped.output)")
        #expect(try self.info(sandbox, user).state == .stopped)
        #expect(try IncusEnv.ssh(user: user, host: ip, key: key.privateKey, "true", within: 1).status == 255)
        let started = try sandbox.cli(["start", user])
        #expect(started.status == 0, "\(started.output)")
        let again = try #require(try self.info(sandbox, user).ipv4.first)
        #expect(try IncusEnv.ssh(user: user, host: again, key: key.privateKey, "id -un").stdout == "\(user)\n")

        // restart keeps the environment and its address usable
        let restarted = try sandbox.cli(["restart", user])
        #expect(restarted.status == 0, "\(restarted.output)")
        let afterRestart = try #require(try self.info(sandbox, user).ipv4.first)
        #expect(try IncusEnv.ssh(user: user, host: afterRestart, key: key.privateKey, "id -un").stdout == "\(user)\n")

        // export matches the reference layout
        let export = try sandbox.cli(["export", user, "--jump-ip", "203.0.113.7", "--key", "~/.ssh/k"])
        #expect(export.status == 0)
        #expect(export.stdout.contains("Host containarium-jump\n    HostName 203.0.113.7\n    User \(user)\n    IdentityFile ~/.ssh/k"))
        #expect(export.stdout.contains("Host \(user)-dev\n    HostName \(again)\n"))
        #expect(export.stdout.contains("ProxyJump containarium-jump"))
        let injected = try sandbox.cli(["export", user, "--jump-ip", "1.2.3.4\n    ProxyCommand evil"])
        #expect(injected.status == 2)
        let file = sandbox.dir.appendingPathComponent("ssh/config.d/\(user)")
        #expect(try sandbox.cli(["export", user, "--jump-ip", "203.0.113.7", "--output", file.path]).status == 0)
        #expect(try String(contentsOf: file, encoding: .utf8).contains("Host \(user)-dev"))
        // ssh itself accepts the file (-G parses the config and prints the resolved options).
        let parsed = try Run.run("/usr/bin/ssh", ["-G", "-F", file.path, "\(user)-dev"])
        #expect(parsed.status == 0, "\(parsed.output)")
        #expect(parsed.stdout.contains("proxyjump containarium-jump"))

        // delete without --force and without a terminal is refused; with --force it goes
        let refused = try sandbox.cli(["delete", user])
        #expect(refused.status != 0)
        #expect(try IncusEnv.exists(name))
        let deleted = try sandbox.cli(["delete", user, "--force"])
        #expect(deleted.status == 0, "\(deleted.output)")
        #expect(try !IncusEnv.exists(name))
        #expect(try !IncusEnv.hasVolume(name))
        let gone = try sandbox.cli(["info", user])
        #expect(gone.status == ContainariumError.Code.notFound.exitCode)
        #expect(gone.stderr.contains("does not exist"))
    }

    func info(_ sandbox: IncusEnv.Sandbox, _ user: String) throws -> InstanceInfo {
        let r = try sandbox.cli(["info", user, "--format", "json"])
        guard r.status == 0 else { throw TestFailure("info failed: \(r.output)") }
        // What the real plugin reported conforms to the published schema.
        if let problems = try SchemaCheck.violations(of: Data(r.stdout.utf8), file: "instances-1.schema.json", definition: "InstanceInfo") {
            throw TestFailure("info output does not match docs/schemas/instances-1.schema.json: \(problems)")
        }
        return try WireJSON.decoder().decode(InstanceInfo.self, from: Data(r.stdout.utf8))
    }
}

@Suite("Disk quotas, on real Incus", .needsIncus)
struct DiskQuotaTests {
    @Test("the disk quota is enforced inside, grows live, and never shrinks below usage")
    func quota() throws {
        // Quotas on btrfs are qgroup limits, which btrfs enforces only while its qgroup
        // accounting is consistent. Nested container engines (Docker, Podman) making and
        // removing subvolumes inside environments can leave it marked inconsistent; a rescan
        // (read-only for data, seconds) makes limits bind again. scripts/testbed.sh does the same.
        let poolDir = "/var/lib/incus/storage-pools/default"
        if let show = try? Run.run("/usr/bin/btrfs", ["qgroup", "show", poolDir]), show.output.lowercased().contains("inconsistent") {
            let rescan = try Run.run("/usr/bin/btrfs", ["quota", "rescan", "-w", poolDir], timeout: 300)
            #expect(rescan.status == 0, "btrfs quota rescan: \(rescan.output)")
        }
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let key = sandbox.key
        let user = "disk\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete("\(user)-container") }
        let created = try sandbox.cli(["create", user, "--ssh-key", key.publicKey.path, "--disk", "1GiB", "--format", "json"])
        #expect(created.status == 0, "\(created.output)")
        let info = try WireJSON.decoder().decode(InstanceInfo.self, from: Data(created.stdout.utf8))
        let ip = try #require(info.ipv4.first)
        let write = "dd if=/dev/zero of=$HOME/fill bs=1M count=1200 conv=fsync 2>&1 | grep -E 'exceeded|copied'"

        // Over the quota: the write fails inside the container.
        let full = try IncusEnv.ssh(user: user, host: ip, key: key.privateKey, write)
        #expect(full.stdout.contains("Disk quota exceeded"), "writing 1200MB into 1GiB: \(full.output)")

        // Grow it live: the same write now fits, without a restart. (The partial file goes
        // first: on a volume full to the last byte Incus cannot write its own backup.yaml and
        // refuses the grow, which the plugin reports as "free a little space and retry".)
        _ = try IncusEnv.ssh(user: user, host: ip, key: key.privateKey, "rm -f $HOME/fill; sync")
        let grown = try sandbox.cli(["resize", user, "--disk", "2GiB"])
        #expect(grown.status == 0, "\(grown.output)")
        let fits = try IncusEnv.ssh(user: user, host: ip, key: key.privateKey, "rm -f $HOME/fill; " + write)
        #expect(fits.stdout.contains("copied"), "writing 1200MB into 2GiB: \(fits.output)")
        #expect(!fits.stdout.contains("Disk quota exceeded"))

        // Shrinking below what is now used is refused, with both numbers; nothing changes.
        var shrink = try sandbox.cli(["resize", user, "--disk", "1GiB"])
        for _ in 0..<20 where shrink.status == 0 {  // usage accounting can lag the write briefly
            _ = try sandbox.cli(["resize", user, "--disk", "2GiB"])
            usleep(250_000)
            shrink = try sandbox.cli(["resize", user, "--disk", "1GiB"])
        }
        #expect(shrink.status == ContainariumError.Code.failedPrecondition.exitCode, "\(shrink.output)")
        #expect(shrink.stderr.contains("it already uses"), "\(shrink.output)")
        // Refused by our own check on fresh usage figures, before Incus touched the quota.
        #expect(!shrink.stderr.contains("more than that"), "\(shrink.output)")
        let after = try sandbox.cli(["info", user, "--format", "json"])
        #expect(try WireJSON.decoder().decode(InstanceInfo.self, from: Data(after.stdout.utf8)).diskLimitBytes == 2 << 30)
        let deleted = try sandbox.cli(["delete", user, "--force"])
        #expect(deleted.status == 0, "\(deleted.output)")
    }
}

@Suite("Accounts, keys and collaborators through accounts/1, on real Incus", .needsIncus)
struct AccountsOnIncusTests {
    @Test("the IncusLXC plugin's accounts/1: keys replaced and listed, a collaborator made, marked and removed, foreign accounts never touched")
    func accountsThroughThePlugin() async throws {
        let sandbox = try IncusEnv.Sandbox()
        defer { sandbox.cleanup() }
        let user = "acct\(TestEnv.suffix())", bob = "bob\(TestEnv.suffix())"
        let name = "\(user)-container"
        defer { sandbox.forceDelete(name) }
        let created = try sandbox.cli(["create", user, "--ssh-key", sandbox.key.publicKey.path, "--memory", "512MB"])
        #expect(created.status == 0, "create failed: \(created.output)")

        let service = try sandbox.service()
        let plugin = try #require(service.plugins.ready.first { $0.manifest.id == "incus-lxc" })
        let accounts = try #require(AccountsClient(plugin))
        // What the real plugin answers conforms to the published schema.
        let owned = try await accounts.create(AccountCreateRequest(instance: name, account: AccountSpec(name: user, sshKeys: [sandbox.key.publicText])))
        #expect(owned.name == user && owned.home == "/home/\(user)")
        #expect(try SchemaCheck.violations(of: WireJSON.encode(owned), file: "accounts-1.schema.json", definition: "Account") == nil)
        let first = try SSHPublicKey(parsing: sandbox.key.publicText)
        let second = try SSHPublicKey(parsing: try KeyPair.generate(in: sandbox.dir, name: "second").publicText)
        func inside(_ argv: [String]) throws -> ProcessResult { try sandbox.incus(["exec", name, "--"] + argv) }

        // The owner's keys: the create installed one; replace them with two.
        #expect(try await service.authorizedKeys(username: user).map(\.fingerprint) == [first.fingerprint])
        try await service.setAuthorizedKeys(username: user, [first, second])
        #expect(try await service.authorizedKeys(username: user).map(\.fingerprint) == [first.fingerprint, second.fingerprint])
        #expect(try inside(["stat", "-c", "%a %U", "/home/\(user)/.ssh/authorized_keys"]).stdout == "600 \(user)\n")

        // A collaborator: own account, marked, keys, and only `sudo su - OWNER`.
        let account = try await service.addCollaboratorAccount(owner: user, collaborator: bob, keys: [second], sudo: false, containerRuntime: false)
        #expect(account.name == bob)
        let entry = try #require(PasswdEntry(line: try inside(["getent", "passwd", bob]).stdout))
        #expect(entry.gecos == CollaboratorRequest.marker(owner: user))
        #expect(try await accounts.listKeys(AccountRef(instance: name, name: bob)) == [second.authorizedKeysLine])
        #expect(try inside(["stat", "-c", "%a %U", "/home/\(bob)/.ssh/authorized_keys"]).stdout == "600 \(bob)\n")
        let rule = try inside(["cat", "/etc/sudoers.d/containarium-collaborator-\(bob)"]).stdout
        #expect(rule.contains("\(bob) ALL=(root) NOPASSWD: ") && rule.hasSuffix("su - \(user)\n"), "\(rule)")
        #expect(try inside(["visudo", "-c"]).status == 0)

        // An account the extension did not make is never taken over nor removed.
        #expect(try inside(["useradd", "carol"]).status == 0)
        do {
            _ = try await service.addCollaboratorAccount(owner: user, collaborator: "carol", keys: [], sudo: true, containerRuntime: false)
            Issue.record("an existing account was taken over as a collaborator")
        } catch {
            #expect(error.code == .alreadyExists)
        }
        #expect(try await service.removeCollaboratorAccount(owner: user, collaborator: "carol") == false)
        #expect(try await service.removeCollaboratorAccount(owner: user, collaborator: user) == false)
        #expect(try inside(["id", "carol"]).status == 0)
        #expect(try inside(["id", user]).status == 0)

        // Removal takes the account and its sudo rule; a second removal finds nothing.
        #expect(try await service.removeCollaboratorAccount(owner: user, collaborator: bob))
        #expect(try inside(["getent", "passwd", bob]).status == 2)
        #expect(try inside(["test", "-e", "/etc/sudoers.d/containarium-collaborator-\(bob)"]).status == 1)
        #expect(try await service.removeCollaboratorAccount(owner: user, collaborator: bob) == false)
    }
}
