import ContainariumCore
import ContainariumGateway
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The SSH gateway inside a real daemon (`--ssh-port`), in front of real Incus environments,
/// driven with the real OpenSSH client (ssh, scp, sftp).
@Suite("SSH gateway, with real OpenSSH against real Incus", .needsIncus, .serialized)
struct GatewayTests {
    /// A daemon with the gateway, and helpers to reach it.
    struct Bed {
        let box: IncusEnv.Sandbox
        let daemon: DaemonProcess
        let sshPort: Int
        let admin: String

        init(extra: [String] = []) throws {
            box = try IncusEnv.Sandbox(ownProject: true)
            sshPort = try DaemonProcess.freePort()
            daemon = try DaemonProcess(sandbox: box, extraArgs: [
                "--ssh-port", String(sshPort), "--ssh-host", "127.0.0.1", "--gateway-host", "127.0.0.1", "--reconcile-interval", "3600",
            ] + extra)
            try daemon.start()
            let port = sshPort
            try eventually("the gateway listens", within: 30) { (try? Self.connect(port: port)).map { close($0); return true } ?? false }
            admin = try daemon.token("admin", roles: "admin")
        }

        static func connect(port: Int, from source: String = "127.0.0.1") throws -> Int32 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            _ = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard rc == 0 else { close(fd); throw TestFailure("connect failed") }
            return fd
        }

        func cleanup() {
            daemon.stop()
            box.cleanup()
        }

        /// Options every client call shares: this key only, no agent, no prompts, no known_hosts.
        func options(_ key: URL, source: String? = nil) -> [String] {
            var o = ["-i", key.path, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]
            if let source { o += ["-o", "BindAddress=\(source)"] }
            return o
        }

        func ssh(_ user: String, key: URL, _ args: [String], source: String? = nil, timeout: Double = 120) throws -> ProcessResult {
            try Run.run("/usr/bin/ssh", ["-p", String(sshPort)] + options(key, source: source) + ["\(user)@127.0.0.1"] + args, timeout: timeout)
        }

        func create(_ user: String, key: KeyPair) throws -> String {
            let r = try HTTP.call("POST", daemon.base + "/v1/containers", token: admin, body: HTTP.json(["username": user, "sshKeys": [key.publicText]]))
            guard r.status == 201, let ip = r.json?["network"]?["ipAddress"]?.stringValue else { throw TestFailure("create \(user): \(r.text)") }
            return ip
        }

        func audit(_ action: String) throws -> [JSONValue] {
            try HTTP.call("GET", daemon.base + "/v1/audit?action=\(action)&limit=200", token: admin).json?["entries"]?.items ?? []
        }
    }

    /// The pid in `ssh -O check`'s answer ("Master running (pid=1234)").
    static func masterPID(_ answer: String) -> Int32? {
        guard let r = answer.range(of: "(pid=") else { return nil }
        return Int32(answer[r.upperBound...].prefix(while: { $0.isNumber }))
    }

    @Test("sessions through the gateway: exec with stdout/stderr/status, an interactive PTY, Ed25519 and ECDSA logins, RSA refused at registration, audit")
    func sessions() throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let alice = "ga\(TestEnv.suffix())"
        defer { bed.box.forceDelete("\(alice)-container") }
        _ = try bed.create(alice, key: bed.box.key)

        // Command: stdout and stderr stay apart, the exit status comes through.
        let r = try bed.ssh(alice, key: bed.box.key.privateKey, ["echo out-$(id -un); echo err-$(hostname) >&2; exit 42"])
        #expect(r.status == 42, "\(r.output)")
        #expect(r.stdout == "out-\(alice)\n", "\(r.output)")
        #expect(r.stderr.contains("err-\(alice)-container"), "\(r.output)")
        // A command killed by a signal reports it (ssh exits 255 on exit-signal, as with sshd directly).
        let killed = try bed.ssh(alice, key: bed.box.key.privateKey, ["kill -KILL $$"])
        #expect(killed.status == 255, "\(killed.output)")
        // Large output arrives whole and in order before the status.
        let many = try bed.ssh(alice, key: bed.box.key.privateKey, ["seq 1 300000; exit 3"])
        #expect(many.status == 3 && many.stdout.hasSuffix("299999\n300000\n") && many.stdout.split(separator: "\n").count == 300000)

        // Interactive: PTY, window size and resize, Ctrl-C, exit status (tests/helpers/ssh_pty.py).
        let helper = TestEnv.repoRoot.appendingPathComponent("Tests/Helpers/ssh_pty.py").path
        let pty = try Run.run("/usr/bin/python3", [helper, alice, "--", "/usr/bin/ssh", "-tt", "-p", String(bed.sshPort)]
                                + bed.options(bed.box.key.privateKey) + ["\(alice)@127.0.0.1"], timeout: 120)
        #expect(pty.status == 0, "\(pty.output)")
        #expect(pty.stdout.contains("ok resized to 40 132") && pty.stdout.contains("ok exit status 7"), "\(pty.output)")

        // ECDSA works as well as Ed25519.
        let keys = bed.box.dir.appendingPathComponent("more-keys")
        try FileManager.default.createDirectory(at: keys, withIntermediateDirectories: true)
        let ecdsa = try KeyPair.generate(in: keys, type: "ecdsa", bits: 256, name: "ecdsa")
        let added = try HTTP.call("POST", bed.daemon.base + "/v1/containers/\(alice)/ssh-keys", token: bed.admin, body: HTTP.json(["sshPublicKey": ecdsa.publicText]))
        #expect(added.status == 201, "\(added.text)")
        let viaECDSA = try bed.ssh(alice, key: ecdsa.privateKey, ["id -un"])
        #expect(viaECDSA.status == 0 && viaECDSA.stdout == "\(alice)\n", "\(viaECDSA.output)")

        // RSA cannot be verified by the gateway: refused where keys are registered, with the fix.
        let rsa = try KeyPair.generate(in: keys, type: "rsa", bits: 3072, name: "rsa")
        let refused = try HTTP.call("POST", bed.daemon.base + "/v1/containers/\(alice)/ssh-keys", token: bed.admin, body: HTTP.json(["sshPublicKey": rsa.publicText]))
        #expect(refused.status == 400)
        #expect(refused.text.contains("RSA keys are not supported") && refused.text.contains("ssh-keygen -t ed25519"), "\(refused.text)")
        let rsaCreate = try bed.box.cli(["create", "gr\(TestEnv.suffix())", "--ssh-key", rsa.publicKey.path])
        #expect(rsaCreate.status != 0 && rsaCreate.stderr.contains("RSA keys are not supported"), "\(rsaCreate.output)")

        // Everything above is in the audit log with the account and the source address.
        let execs = try bed.audit("gateway.session.exec")
        #expect(execs.contains { $0["actor"]?.stringValue == alice && $0["source"]?.stringValue == "127.0.0.1" && $0["interface"]?.stringValue == "ssh"
                && ($0["detail"]?.stringValue ?? "").contains("exit 42") })
        #expect(try bed.audit("gateway.session.shell").contains { $0["actor"]?.stringValue == alice })
        #expect(try bed.audit("gateway.session.end").contains { ($0["detail"]?.stringValue ?? "").contains("exit status 42") })
        #expect(try bed.audit("gateway.auth").contains { $0["actor"]?.stringValue == alice && $0["result"]?.stringValue == "ok" })
        #expect(try bed.audit("gateway.connect").count >= 5)
    }

    @Test("files and forwards: 100 MB scp both ways with matching checksums, sftp, -L to the environment, ProxyJump with the exported config")
    func filesAndForwards() throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let alice = "gf\(TestEnv.suffix())"
        defer { bed.box.forceDelete("\(alice)-container") }
        let ip = try bed.create(alice, key: bed.box.key)
        let key = bed.box.key.privateKey
        let scpBase = ["-P", String(bed.sshPort)] + bed.options(key)

        // 100 MB of random bytes up and back down.
        let big = bed.box.dir.appendingPathComponent("big")
        let dd = try Run.run("/bin/dd", ["if=/dev/urandom", "of=\(big.path)", "bs=1M", "count=100", "status=none"])
        #expect(dd.status == 0)
        let local = try Run.run("/usr/bin/sha256sum", [big.path]).stdout.prefix(64)
        let up = try Run.run("/usr/bin/scp", scpBase + [big.path, "\(alice)@127.0.0.1:/tmp/big"], timeout: 300)
        #expect(up.status == 0, "\(up.output)")
        let remote = try bed.ssh(alice, key: key, ["sha256sum /tmp/big"])
        #expect(remote.stdout.prefix(64) == local, "\(remote.output)")
        let back = bed.box.dir.appendingPathComponent("back")
        let down = try Run.run("/usr/bin/scp", scpBase + ["\(alice)@127.0.0.1:/tmp/big", back.path], timeout: 300)
        #expect(down.status == 0, "\(down.output)")
        #expect(try Run.run("/usr/bin/sha256sum", [back.path]).stdout.prefix(64) == local)

        // sftp (the subsystem): list, fetch, upload, rename.
        let batch = bed.box.dir.appendingPathComponent("batch")
        try "ls /tmp\nget /tmp/big \(bed.box.dir.path)/sftp-got\nput \(bed.box.key.publicKey.path) /tmp/uploaded.pub\nrename /tmp/uploaded.pub /tmp/renamed.pub\n"
            .write(to: batch, atomically: true, encoding: .utf8)
        let sftp = try Run.run("/usr/bin/sftp", ["-b", batch.path] + scpBase + ["\(alice)@127.0.0.1"], timeout: 300)
        #expect(sftp.status == 0, "\(sftp.output)")
        #expect(try Run.run("/usr/bin/cmp", [big.path, bed.box.dir.path + "/sftp-got"]).status == 0)
        #expect(try bed.ssh(alice, key: key, ["cat /tmp/renamed.pub"]).stdout == bed.box.key.publicText)

        // Forwards to the environment's own ports: its loopback (as `-L 8022:localhost:22` would)
        // and its address. `ssh -W` is a stdio forward: the same direct-tcpip channel as -L.
        for target in ["localhost:22", "127.0.0.1:22", "\(ip):22"] {
            let w = try Run.run("/usr/bin/ssh", ["-p", String(bed.sshPort)] + bed.options(key) + ["-W", target, "\(alice)@127.0.0.1"], stdin: "", timeout: 30)
            #expect(w.stdout.hasPrefix("SSH-2.0-OpenSSH"), "forward to \(target): \(w.output)")
        }
        // A real -L listener too. `ssh -f` goes to the background once the forward is up, so
        // the test never holds a long-running child (Foundation's Process can mistake another
        // child's exit for its own and block on it). It is a control master on a socket of
        // this test's own, which tells its pid: the test ends that process, and only that one.
        let port = try DaemonProcess.freePort()
        let spec = "127.0.0.1:\(port):localhost:22"
        let control = bed.box.dir.appendingPathComponent("fwd.ctl").path
        let started = try Run.run("/usr/bin/ssh", ["-p", String(bed.sshPort)] + bed.options(key)
                                  + ["-f", "-n", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ControlMaster=yes", "-o", "ControlPath=\(control)",
                                     "-L", spec, "\(alice)@127.0.0.1"], timeout: 60)
        #expect(started.status == 0, "\(started.output)")
        let check = try Run.run("/usr/bin/ssh", ["-o", "ControlPath=\(control)", "-O", "check", "\(alice)@127.0.0.1"], timeout: 30)
        let forwarder = Self.masterPID(check.output)
        defer {
            if let forwarder {
                Run.end(pid: forwarder, expecting: spec)
            } else {
                // No pid: ask the master on this test's own socket to exit.
                _ = try? Run.run("/usr/bin/ssh", ["-o", "ControlPath=\(control)", "-O", "exit", "\(alice)@127.0.0.1"], timeout: 30)
            }
        }
        let forwarderRuns = forwarder.flatMap { Run.commandLine(of: $0) }?.contains(spec) == true
        #expect(forwarderRuns, "the forwarder: \(check.output)")
        try eventually("the -L listener forwards to the environment's sshd", within: 20) {
            guard let fd = try? Bed.connect(port: port) else { return false }
            defer { close(fd) }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buf = [UInt8](repeating: 0, count: 64)
            let n = read(fd, &buf, 64)
            return n > 0 && String(decoding: buf[0..<n], as: UTF8.self).hasPrefix("SSH-2.0-OpenSSH")
        }

        // ProxyJump with exactly what `export` prints: both host keys pinned, no prompt.
        let export = try bed.box.cli(["export", alice, "--server", "127.0.0.1:\(bed.daemon.grpcPort)", "--token", bed.admin,
                                      "--gateway", "127.0.0.1:\(bed.sshPort)", "--key", key.path])
        #expect(export.status == 0, "\(export.output)")
        let file = bed.box.dir.appendingPathComponent("ssh_config")
        try export.stdout.write(to: file, atomically: true, encoding: .utf8)
        #expect(export.stdout.contains("Host \(alice)-dev") && export.stdout.contains("Host \(alice)-direct") && export.stdout.contains("KnownHostsCommand"))
        let strict = ["-F", file.path, "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentityAgent=none"]
        let viaGateway = try Run.run("/usr/bin/ssh", strict + ["\(alice)-dev", "hostname"], timeout: 60)
        #expect(viaGateway.status == 0 && viaGateway.stdout == "\(alice)-container\n", "\(viaGateway.output)")
        let viaJump = try Run.run("/usr/bin/ssh", strict + ["\(alice)-direct", "echo jumped-$(hostname)"], timeout: 60)
        #expect(viaJump.status == 0 && viaJump.stdout == "jumped-\(alice)-container\n", "\(viaJump.output)")
    }

    @Test("isolation and collaborators: wrong key, unknown user, another user's environment, forwards elsewhere refused; a collaborator gets their own account and only a logged `sudo su - OWNER`")
    func isolation() throws {
        // Many deliberate refusals from one address: a ban would hide what each proves (bans have
        // their own test below, and a success no longer clears an address's failures).
        let bed = try Bed(extra: ["--ban-failures", "100"])
        defer { bed.cleanup() }
        let sfx = TestEnv.suffix()
        let alice = "gi\(sfx)", carol = "gc\(sfx)", bob = "gb\(sfx)"
        defer { [alice, carol].forEach { bed.box.forceDelete("\($0)-container") } }
        let keys = bed.box.dir.appendingPathComponent("people")
        try FileManager.default.createDirectory(at: keys, withIntermediateDirectories: true)
        let carolKey = try KeyPair.generate(in: keys, name: "carol")
        let bobKey = try KeyPair.generate(in: keys, type: "ecdsa", bits: 256, name: "bob")
        let eveKey = try KeyPair.generate(in: keys, name: "eve")
        _ = try bed.create(alice, key: bed.box.key)
        let carolIP = try bed.create(carol, key: carolKey)

        let denied = { (r: ProcessResult) in r.status == 255 && r.stderr.contains("Permission denied (publickey)") }
        #expect(denied(try bed.ssh(alice, key: eveKey.privateKey, ["true"])), "a key nobody registered")
        #expect(denied(try bed.ssh("nosuch\(sfx)", key: bed.box.key.privateKey, ["true"])), "a user with no environment")
        #expect(denied(try bed.ssh(carol, key: bed.box.key.privateKey, ["true"])), "alice's key on carol's environment")
        #expect(denied(try bed.ssh("root", key: bed.box.key.privateKey, ["true"])), "root is nobody's environment")
        // Carol's key still works for carol: nothing above disturbed the gateway.
        #expect(try bed.ssh(carol, key: carolKey.privateKey, ["id -un"]).stdout == "\(carol)\n")

        // Forwards anywhere but alice's own environment are refused: carol's environment, the
        // host's bridge address, the host's loopback by address, the outside world.
        let bridge = carolIP.split(separator: ".").prefix(3).joined(separator: ".") + ".1"
        for target in ["\(carolIP):22", "\(bridge):22", "\(bridge):8080", "10.0.0.1:22", "8.8.8.8:53", "\(carol)-container:22", "localhost.evil:22"] {
            let w = try Run.run("/usr/bin/ssh", ["-p", String(bed.sshPort)] + bed.options(bed.box.key.privateKey) + ["-W", target, "\(alice)@127.0.0.1"], stdin: "", timeout: 30)
            #expect(w.status == 255 && w.stderr.contains("forwarding failed") && !w.stdout.contains("SSH-2.0"), "forward to \(target): \(w.output)")
        }
        #expect(try bed.audit("gateway.forward").contains { $0["result"]?.stringValue == "permission_denied" && ($0["detail"]?.stringValue ?? "").contains(carolIP) })

        // Attack (a guest's claim): root inside carol's environment puts the metadata address and
        // an address of the host on eth0, ahead of the address Incus leased to it. Incus now
        // reports them first; the gateway still goes only to the lease, and never dials the
        // host or the metadata address for her. A listener on the host sees nothing arrive.
        let hostIP = GatewayTargets.hostAddresses().map(\.description).filter { !$0.hasPrefix("127.") && $0 != bridge }.sorted().first
        let trap = try TrapListener(host: hostIP ?? "127.0.0.1")
        defer { trap.close() }
        let claims = ["169.254.169.254"] + (hostIP.map { [$0] } ?? [])
        let claim = try bed.box.incus(["exec", "\(carol)-container", "--", "sh", "-c", """
            set -e
            cidr=$(ip -4 -o addr show dev eth0 scope global | awk '{print $4}' | head -1)
            ip addr del "$cidr" dev eth0
            \(claims.map { "ip addr add \($0)/32 dev eth0 scope global" }.joined(separator: "\n"))
            ip addr add "$cidr" dev eth0
            ip route replace default via \(bridge) dev eth0 src \(carolIP) || true
            """])
        #expect(claim.status == 0, "\(claim.output)")
        // What the old gateway took for her address: the first global IPv4 Incus reports on eth0.
        let state = try JSONDecoder().decode(JSONValue.self, from: Data(try bed.box.incus(["list", "\(carol)-container", "--format", "json"]).stdout.utf8))
        let eth0 = state.items?.first?["state"]?["network"]?["eth0"]?["addresses"]?.items ?? []
        let firstReported = eth0.first { $0["family"]?.stringValue == "inet" && $0["scope"]?.stringValue == "global" }?["address"]?.stringValue
        #expect(firstReported.map { claims.contains($0) } == true, "Incus reports a claimed address first: \(eth0)")
        let view = try HTTP.call("GET", bed.daemon.base + "/v1/containers/\(carol)", token: bed.admin)
        #expect(view.json?["network"]?["ipAddress"]?.stringValue == carolIP, "\(view.text)")
        #expect(try bed.ssh(carol, key: carolKey.privateKey, ["id -un"]).stdout == "\(carol)\n", "carol still reaches her own environment at its lease")
        for target in claims.map({ "\($0):22" }) + ["169.254.169.254:80", "\(hostIP ?? "127.0.0.1"):\(trap.port)"] {
            let w = try Run.run("/usr/bin/ssh", ["-p", String(bed.sshPort)] + bed.options(carolKey.privateKey) + ["-W", target, "\(carol)@127.0.0.1"], stdin: "", timeout: 30)
            #expect(w.status == 255 && w.stderr.contains("forwarding failed"), "forward to \(target): \(w.output)")
        }
        #expect(trap.accepted() == 0, "nothing reached the host's listener")
        #expect(try bed.audit("gateway.forward").contains { $0["result"]?.stringValue == "permission_denied" && ($0["detail"]?.stringValue ?? "").contains("169.254.169.254") })
        // Remote forwarding (-R) is not offered.
        let r = try bed.ssh(alice, key: bed.box.key.privateKey, ["-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:22", "-N"], timeout: 30)
        #expect(r.status == 255, "\(r.output)")

        // Collaborator bob on alice's environment (the owner adds him, REST), with his own key.
        let aliceT = try bed.daemon.token(alice)
        let add = try HTTP.call("POST", bed.daemon.base + "/v1/containers/\(alice)/collaborators", token: aliceT,
                                body: HTTP.json(["collaboratorUsername": bob, "sshPublicKey": bobKey.publicText]))
        #expect(add.status == 201, "\(add.text)")
        #expect(add.json?["sudo"]?.bool == false)
        // He logs in by the owner's name and lands in his own account.
        let who = try bed.ssh(alice, key: bobKey.privateKey, ["id -un; hostname; sudo -n true 2>/dev/null && echo FULL-SUDO || echo no-sudo"])
        #expect(who.stdout == "\(bob)\n\(alice)-container\nno-sudo\n", "\(who.output)")
        // He may become the owner, only that way, and it is logged.
        let su = try bed.ssh(alice, key: bobKey.privateKey, ["echo 'id -un' | sudo -n su - \(alice); sudo -n su - root </dev/null 2>&1 | tail -1"])
        #expect(su.stdout.hasPrefix("\(alice)\n") && su.stdout.contains("password is required"), "\(su.output)")
        let log = try bed.box.incus(["exec", "\(alice)-container", "--", "cat", "/var/log/containarium-collaborators.log"])
        #expect(log.stdout.contains("\(bob) :") && log.stdout.contains("COMMAND=/usr/bin/su - \(alice)"), "\(log.output)")
        // His key opens nothing else: not carol's environment, not by his own name.
        #expect(denied(try bed.ssh(carol, key: bobKey.privateKey, ["true"])))
        #expect(denied(try bed.ssh(bob, key: bobKey.privateKey, ["true"])))
        // Attack: he plants a key of his in the owner's authorized_keys (it would log in as alice,
        // who has full sudo). Refused; the planted key opens nothing. And "exec as the user" is
        // his own account, never alice's.
        let bobT = try bed.daemon.token(bob)
        let plant = try HTTP.call("POST", bed.daemon.base + "/v1/containers/\(alice)/ssh-keys", token: bobT,
                                  body: HTTP.json(["sshPublicKey": eveKey.publicText]))
        #expect(plant.status == 403, "\(plant.text)")
        #expect(denied(try bed.ssh(alice, key: eveKey.privateKey, ["true"])), "the key he tried to plant")
        let keysNow = try HTTP.call("GET", bed.daemon.base + "/v1/containers/\(alice)/ssh-keys", token: aliceT).json?["keys"]?.items ?? []
        #expect(keysNow.count == 1, "alice's keys are hers: \(keysNow)")
        let exec = try HTTP.call("POST", bed.daemon.base + "/v1/containers/\(alice)/exec", token: bobT,
                                 body: HTTP.json(["command": ["id", "-un"], "asUser": true]))
        #expect(exec.json?["stdout"]?.stringValue == "\(bob)\n", "\(exec.text)")
        let asAlice = try HTTP.call("POST", bed.daemon.base + "/v1/containers/\(alice)/exec", token: bobT,
                                    body: HTTP.json(["command": ["id", "-un"], "account": alice]))
        #expect(asAlice.status == 403, "\(asAlice.text)")
        // The CLI lists and removes over gRPC; removal takes his account and his access away.
        let list = try bed.box.cli(["collaborator", "list", alice, "--server", "127.0.0.1:\(bed.daemon.grpcPort)", "--token", bed.admin])
        #expect(list.status == 0 && list.stdout.contains(bob), "\(list.output)")
        let rm = try bed.box.cli(["collaborator", "remove", alice, bob, "--server", "127.0.0.1:\(bed.daemon.grpcPort)", "--token", bed.admin])
        #expect(rm.status == 0, "\(rm.output)")
        #expect(denied(try bed.ssh(alice, key: bobKey.privateKey, ["true"])))
        #expect(try bed.box.incus(["exec", "\(alice)-container", "--", "id", bob]).status != 0)
        // A collaborator with --sudo and --container-runtime, through the CLI.
        let add2 = try bed.box.cli(["collaborator", "add", alice, bob, "--ssh-key", bobKey.publicKey.path, "--sudo", "--container-runtime",
                                    "--server", "127.0.0.1:\(bed.daemon.grpcPort)", "--token", bed.admin])
        #expect(add2.status == 0, "\(add2.output)")
        let full = try bed.ssh(alice, key: bobKey.privateKey, ["sudo -n id -un; id -Gn"])
        #expect(full.stdout.hasPrefix("root\n") && full.stdout.contains("docker"), "\(full.output)")
        // While the environment is stopped, its collaborators cannot be removed half-way (the
        // account inside would stay): refused with the reason, and nothing changes.
        #expect(try HTTP.call("POST", bed.daemon.base + "/v1/containers/\(alice)/stop", token: bed.admin, body: #"{"force": true}"#).status == 200)
        let whileStopped = try HTTP.call("DELETE", bed.daemon.base + "/v1/containers/\(alice)/collaborators/\(bob)", token: aliceT)
        #expect(whileStopped.status == 412 && whileStopped.text.contains("start it first"), "\(whileStopped.text)")
        #expect(try HTTP.call("GET", bed.daemon.base + "/v1/containers/\(alice)/collaborators", token: aliceT).text.contains(bob))
        // A stopped environment refuses logins without counting them as failures.
        #expect(denied(try bed.ssh(alice, key: bed.box.key.privateKey, ["true"])))
    }

    @Test("connection caps: an address with too many connections that have not logged in is refused with the reason, others are not; a freed place takes a login again")
    func connectionCaps() throws {
        let bed = try Bed(extra: ["--max-startups", "4", "--ban-failures", "100"])
        defer { bed.cleanup() }
        let alice = "gk\(TestEnv.suffix())"
        defer { bed.box.forceDelete("\(alice)-container") }
        _ = try bed.create(alice, key: bed.box.key)
        /// What the gateway says first on a fresh connection (its version string, or a refusal).
        func greeting(_ fd: Int32) -> String {
            var tv: (Int, Int) = (5, 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<(Int, Int)>.size))
            var buf = [UInt8](repeating: 0, count: 512)
            let n = recv(fd, &buf, buf.count, 0)
            return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
        }
        // Four connections from one address that never log in: the fifth is refused, and says why.
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<4 {
            let fd = try Bed.connect(port: bed.sshPort, from: "127.0.0.9")
            #expect(greeting(fd).hasPrefix("SSH-2.0-"))
            idle.append(fd)
        }
        let fifth = try Bed.connect(port: bed.sshPort, from: "127.0.0.9")
        let said = greeting(fifth)
        close(fifth)
        #expect(said.contains("too many connections") && said.contains("have not logged in yet"), "\(said)")
        // Another address is not affected.
        #expect(try bed.ssh(alice, key: bed.box.key.privateKey, ["echo other"], source: "127.0.0.10").stdout == "other\n")
        // One of the four goes: a login from that address gets its place.
        close(idle.removeLast())
        try eventually("the gateway saw the connection go", within: 10) {
            let fd = try Bed.connect(port: bed.sshPort, from: "127.0.0.9")
            defer { close(fd) }
            return greeting(fd).hasPrefix("SSH-2.0-")
        }
        let session = try bed.ssh(alice, key: bed.box.key.privateKey, ["echo in; sleep 1; echo still"], source: "127.0.0.9")
        #expect(session.stdout == "in\nstill\n", "\(session.output)")
        #expect(try bed.audit("gateway.refused").contains { $0["result"]?.stringValue == "resource_exhausted" })
    }

    @Test("brute force: bans after repeated failures, per address, surviving a restart, liftable; probes and garbage do not count and do not disturb others")
    func bans() throws {
        let bed = try Bed(extra: ["--ban-failures", "3", "--ban-window", "600", "--ban-duration", "3600"])
        defer { bed.cleanup() }
        let alice = "gz\(TestEnv.suffix())"
        defer { bed.box.forceDelete("\(alice)-container") }
        _ = try bed.create(alice, key: bed.box.key)
        let keys = bed.box.dir.appendingPathComponent("eve")
        try FileManager.default.createDirectory(at: keys, withIntermediateDirectories: true)
        let eve = try KeyPair.generate(in: keys, name: "eve")

        // Health checks: connections that never try to authenticate.
        for _ in 0..<10 {
            let fd = try Bed.connect(port: bed.sshPort, from: "127.0.0.8")
            close(fd)
        }
        // Garbage from a malformed client: refused, that connection only.
        for payload in [Data((0..<4096).map { _ in UInt8.random(in: 0...255) }), Data("SSH-2.0-evil\r\n".utf8) + Data(repeating: 0xff, count: 64)] {
            let fd = try Bed.connect(port: bed.sshPort, from: "127.0.0.8")
            _ = payload.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            usleep(200_000)
            close(fd)
        }
        #expect(try bed.ssh(alice, key: bed.box.key.privateKey, ["echo fine"], source: "127.0.0.8").stdout == "fine\n", "probes and garbage are not failures")
        // Connections that never log in cost a bounded number of audit rows per address (20 a
        // minute, shared with its refused keys): 40 probes write 20 rows, not 80.
        for _ in 0..<40 {
            let fd = try Bed.connect(port: bed.sshPort, from: "127.0.0.10")
            close(fd)
        }
        func probeRows() throws -> Int {
            try (bed.audit("gateway.connect") + bed.audit("gateway.disconnect")).filter {
                let source = $0["source"]?.stringValue ?? ""
                return source == "127.0.0.10" || source.hasPrefix("127.0.0.10:")
            }.count
        }
        try eventually("the probes' first rows are written", within: 20) { try probeRows() >= 20 }
        usleep(1_000_000)
        #expect(try probeRows() == 20)

        // Three failed logins from one address ban it.
        for _ in 0..<3 {
            #expect(try bed.ssh(alice, key: eve.privateKey, ["true"], source: "127.0.0.7").status == 255)
        }
        let banned = try Run.run("/usr/bin/ssh", ["-v", "-p", String(bed.sshPort)] + bed.options(bed.box.key.privateKey, source: "127.0.0.7") + ["\(alice)@127.0.0.1", "true"], timeout: 30)
        #expect(banned.status == 255 && banned.stderr.contains("127.0.0.7 is banned until"), "\(banned.output)")
        // Another address is unaffected; a success from it clears nothing for the banned one.
        #expect(try bed.ssh(alice, key: bed.box.key.privateKey, ["echo other"], source: "127.0.0.9").stdout == "other\n")
        #expect(try bed.audit("gateway.ban").contains { $0["source"]?.stringValue == "127.0.0.7" })

        // The ban survives a restart of the daemon.
        bed.daemon.stop()
        try bed.daemon.start()
        try eventually("the gateway listens again", within: 30) { (try? Bed.connect(port: bed.sshPort)).map { close($0); return true } ?? false }
        let still = try bed.ssh(alice, key: bed.box.key.privateKey, ["true"], source: "127.0.0.7")
        #expect(still.status == 255)
        let list = try bed.box.cli(["gateway", "bans", "--state-dir", bed.daemon.stateDir.path])
        #expect(list.status == 0 && list.stdout.contains("127.0.0.7"), "\(list.output)")

        // Lifting it works on the running gateway within seconds.
        let unban = try bed.box.cli(["gateway", "bans", "--unban", "127.0.0.7", "--state-dir", bed.daemon.stateDir.path])
        #expect(unban.status == 0, "\(unban.output)")
        try eventually("the address is let in again", within: 15) {
            try bed.ssh(alice, key: bed.box.key.privateKey, ["echo back"], source: "127.0.0.7").stdout == "back\n"
        }
        #expect(try bed.box.cli(["gateway", "bans", "--unban", "127.0.0.7", "--state-dir", bed.daemon.stateDir.path]).status != 0, "not banned any more")
    }
}

/// A TCP listener on the host that only counts who connects (to prove nothing reached it).
final class TrapListener: @unchecked Sendable {
    let fd: Int32
    let port: Int

    init(host: String) throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw TestFailure("socket failed") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(host)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(s, 16) == 0 else { Glibc.close(s); throw TestFailure("cannot listen on \(host)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
        _ = fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK)
        fd = s
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    /// How many connections are waiting (each is accepted and closed).
    func accepted() -> Int {
        var n = 0
        while true {
            let c = accept(fd, nil, nil)
            guard c >= 0 else { return n }
            Glibc.close(c)
            n += 1
        }
    }

    func close() { Glibc.close(fd) }
}
