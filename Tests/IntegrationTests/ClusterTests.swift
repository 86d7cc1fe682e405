import ContainariumCore
import Foundation
import TestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A control plane and two member nodes: three real daemons, each with its own Incus project,
/// state and secret, joined with `node token` / `node join`.
@Suite("Cluster: one control plane, two nodes, real daemons on real Incus", .needsIncus, .serialized)
struct ClusterTests {
    static func name(_ box: IncusEnv.Sandbox, _ node: String) throws {
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: box.config)) as? [String: Any] ?? [:]
        cfg["node"] = node
        try JSONSerialization.data(withJSONObject: cfg).write(to: box.config)
    }

    @Test("placement across nodes, one view over them, verbs wherever an environment lives; a killed node is detected, avoided, shown unreachable, and comes back")
    func cluster() throws {
        let sfx = TestEnv.suffix()
        let cpName = "cp-\(sfx)", n1 = "n1-\(sfx)", n2 = "n2-\(sfx)"
        let boxes = try [IncusEnv.Sandbox(ownProject: true), IncusEnv.Sandbox(ownProject: true), IncusEnv.Sandbox(ownProject: true)]
        defer { boxes.forEach { $0.cleanup() } }
        for (box, n) in zip(boxes, [cpName, n1, n2]) { try Self.name(box, n) }

        let cp = try DaemonProcess(sandbox: boxes[0], extraArgs: ["--schedule-policy", "spread", "--reconcile-interval", "3600"])
        try cp.start()
        defer { cp.stop() }
        let admin = try cp.token("admin", roles: "admin")
        let grpc = "127.0.0.1:\(cp.grpcPort)"

        // Join: a token for each node from the control plane, `node join` on each member, then
        // its daemon. A node token names its node and expires: neither a bare one nor one
        // without expiry is minted.
        for bare in [["--expiry", "1h"], ["--node", n1, "--expiry", "0"]] {
            let refused = try Run.run(TestEnv.cliPath, ["node", "token", "--secret-file", cp.secretFile.path] + bare)
            #expect(refused.status != 0 && refused.stdout.isEmpty, "\(bare): \(refused.output)")
        }
        var tokens: [String: String] = [:]
        for n in [n1, n2] {
            let tokenRun = try Run.run(TestEnv.cliPath, ["node", "token", "--secret-file", cp.secretFile.path, "--node", n, "--expiry", "1h"])
            #expect(tokenRun.status == 0, "\(tokenRun.output)")
            tokens[n] = tokenRun.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let nodeToken = tokens[n1] ?? ""
        var members: [DaemonProcess] = []
        for (box, n) in zip(boxes[1...], [n1, n2]) {
            let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600"])
            let join = try box.cli(["node", "join", "--insecure-plaintext", "--server", grpc, "--token", tokens[n] ?? "", "--advertise", "127.0.0.1:\(d.grpcPort)",
                                    "--state-dir", d.stateDir.path])
            #expect(join.status == 0, "\(join.output)")
            try d.start()
            members.append(d)
        }
        defer { members.forEach { $0.stop() } }
        // A bad token is refused at join time, before anything is written.
        let bad = try boxes[1].cli(["node", "join", "--insecure-plaintext", "--server", grpc, "--token", "not-a-token", "--advertise", "127.0.0.1:1",
                                    "--state-dir", boxes[1].dir.appendingPathComponent("nowhere").path])
        #expect(bad.status != 0 && !FileManager.default.fileExists(atPath: boxes[1].dir.appendingPathComponent("nowhere/node.json").path))
        // Node traffic is TLS: a control plane without --mtls (and without the test-bed flag)
        // refuses a node's report that came in clear, says how to fix it, and nothing is written.
        let strictBox = try IncusEnv.Sandbox()
        defer { strictBox.cleanup() }
        let strict = try DaemonProcess(sandbox: strictBox, extraArgs: ["--reconcile-interval", "3600"], secret: cp.secret, plaintextNodes: false)
        try strict.start()
        defer { strict.stop() }
        let clearJoin = try boxes[1].cli(["node", "join", "--insecure-plaintext", "--server", "127.0.0.1:\(strict.grpcPort)", "--token", nodeToken,
                                          "--state-dir", boxes[1].dir.appendingPathComponent("in-clear").path])
        #expect(clearJoin.status != 0 && clearJoin.stderr.contains("node traffic is TLS") && clearJoin.stderr.contains("--insecure-plaintext-nodes"),
                "\(clearJoin.output)")
        #expect(!FileManager.default.fileExists(atPath: boxes[1].dir.appendingPathComponent("in-clear/node.json").path))
        #expect(try HTTP.call("GET", strict.base + "/v1/audit?action=auth.denied", token: strict.token("admin", roles: "admin")).text.contains("node traffic is TLS"))

        func nodes() throws -> [String: JSONValue] {
            let list = try HTTP.call("GET", cp.base + "/v1/nodes", token: admin).json?["nodes"]?.items ?? []
            return Dictionary(list.compactMap { n in n["name"]?.stringValue.map { ($0, n) } }, uniquingKeysWith: { a, _ in a })
        }
        try eventually("all three nodes report healthy", within: 60) {
            let n = try nodes()
            return [cpName, n1, n2].allSatisfy { n[$0]?["healthy"]?.bool == true }
        }
        #expect(try nodes()[n1]?["address"]?.stringValue == "127.0.0.1:\(members[0].grpcPort)")
        #expect(try HTTP.call("GET", cp.base + "/v1/backends", token: admin).json?["nodes"]?.items?.count == 3)
        // Node tokens report; they cannot do anything else.
        #expect(try HTTP.call("GET", cp.base + "/v1/containers", token: nodeToken).status == 403)
        #expect(try HTTP.call("GET", cp.base + "/v1/nodes", token: nodeToken).status == 403)

        // Three environments through the control plane, spread over the three nodes.
        let users = ["ca\(sfx)", "cb\(sfx)", "cc\(sfx)"]
        var placedOn: [String: String] = [:]
        var ips: [String: String] = [:]
        for u in users {
            let r = try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: HTTP.json([
                "username": u, "sshKeys": [boxes[0].key.publicText], "resources": ["cpu": "1", "memory": "512MB", "disk": "2GB"]]))
            #expect(r.status == 201, "\(r.text)")
            placedOn[u] = r.json?["node"]?.stringValue
            ips[u] = r.json?["network"]?["ipAddress"]?.stringValue
        }
        #expect(Set(placedOn.values) == [cpName, n1, n2], "\(placedOn)")
        // Each really lives in its node's own Incus project, and answers SSH.
        for u in users {
            let owner = boxes.first { (try? $0.exists("\(u)-container")) == true }
            #expect(owner != nil, "\(u) is in no node's project")
            let ssh = try IncusEnv.ssh(user: u, host: try #require(ips[u]), key: boxes[0].key.privateKey, "hostname")
            #expect(ssh.stdout == "\(u)-container\n", "\(ssh.output)")
        }

        // One view: the listing has all three, each tagged with its node and backend.
        let listed = try HTTP.call("GET", cp.base + "/v1/containers", token: admin).json?["containers"]?.items ?? []
        for u in users {
            let c = listed.first { $0["username"]?.stringValue == u }
            #expect(c?["node"]?.stringValue == placedOn[u] && c?["backend"]?.stringValue != nil, "\(String(describing: c))")
        }
        // Verbs reach an environment wherever it lives: get, exec (gRPC CLI), stop/start, resize.
        let remoteUser = try #require(users.first { placedOn[$0] == n1 })
        #expect(try HTTP.call("GET", cp.base + "/v1/containers/\(remoteUser)", token: admin).json?["node"]?.stringValue == n1)
        let exec = try boxes[0].cli(["exec", remoteUser, "--server", grpc, "--token", admin, "--", "hostname"])
        #expect(exec.status == 0 && exec.stdout.contains("\(remoteUser)-container"), "\(exec.output)")
        let stopped = try HTTP.call("POST", cp.base + "/v1/containers/\(remoteUser)/stop", token: admin, body: #"{"force": true}"#)
        #expect(stopped.json?["state"]?.stringValue == "CONTAINER_STATE_STOPPED", "\(stopped.text)")
        #expect(try boxes[1].incus(["list", "\(remoteUser)-container", "-c", "s", "-f", "csv"]).stdout.contains("STOPPED"))
        #expect(try HTTP.call("POST", cp.base + "/v1/containers/\(remoteUser)/start", token: admin).json?["state"]?.stringValue == "CONTAINER_STATE_RUNNING")
        let resized = try HTTP.call("PUT", cp.base + "/v1/containers/\(remoteUser)/resize", token: admin, body: #"{"resources": {"memory": "768MB"}}"#)
        #expect(resized.status == 200, "\(resized.text)")
        #expect(try boxes[1].incus(["config", "get", "\(remoteUser)-container", "limits.memory"]).stdout.contains("768"))

        // The scheduler explains itself; draining takes a node out of placement.
        let drained = try boxes[0].cli(["node", "drain", n1, "--server", grpc, "--token", admin])
        #expect(drained.status == 0, "\(drained.output)")
        let explained = try HTTP.call("POST", cp.base + "/v1/schedule/explain", token: admin, body: #"{"resources": {"cpu": "1", "memory": "1GB"}}"#)
        let verdicts = explained.json?["verdicts"]?.items ?? []
        let n1Verdict = verdicts.first { $0["node"]?.stringValue == n1 }
        #expect(n1Verdict?["filteredBecause"]?.items?.first?.stringValue == "node is draining", "\(explained.text)")
        #expect(explained.json?["chosen"]?.stringValue != n1)
        let cliExplain = try boxes[0].cli(["schedule", "explain", "--cpu", "1", "--memory", "100TB", "--server", grpc, "--token", admin])
        #expect(cliExplain.status == 0 && cliExplain.stdout.contains("filtered: memory: needs") && cliExplain.stdout.contains("chosen: (none"), "\(cliExplain.output)")
        #expect(try boxes[0].cli(["node", "undrain", n1, "--server", grpc, "--token", admin]).status == 0)

        // Kill node 2: marked unhealthy within 15 seconds, its environment shown unreachable
        // (not deleted), new environments go elsewhere.
        let onN2 = try #require(users.first { placedOn[$0] == n2 })
        members[1].signal(SIGKILL)
        _ = try members[1].wait(timeout: 20)
        let killedAt = Date()
        try eventually("node 2 is marked unhealthy", within: 15, every: 250_000) { try nodes()[n2]?["healthy"]?.bool == false }
        let detection = Date().timeIntervalSince(killedAt)
        #expect(detection < 15, "detected after \(detection) s")
        let whileDown = try HTTP.call("GET", cp.base + "/v1/containers", token: admin).json?["containers"]?.items ?? []
        let ghost = whileDown.first { $0["username"]?.stringValue == onN2 }
        #expect(ghost?["labels"]?["containarium.unreachable"]?.stringValue == "true" && ghost?["node"]?.stringValue == n2, "\(String(describing: ghost))")
        #expect(try boxes[2].exists("\(onN2)-container"), "nothing was deleted")
        let extra = "cd\(sfx)"
        let avoided = try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: HTTP.json([
            "username": extra, "sshKeys": [boxes[0].key.publicText], "resources": ["cpu": "1", "memory": "512MB", "disk": "2GB"]]))
        #expect(avoided.status == 201 && avoided.json?["node"]?.stringValue != n2, "\(avoided.text)")
        // A node with environments is not forgotten by accident.
        #expect(try HTTP.call("DELETE", cp.base + "/v1/nodes/\(n2)", token: admin).status == 412)

        // Back: healthy again, its environment reachable again.
        try members[1].start()
        try eventually("node 2 is healthy again", within: 30) { try nodes()[n2]?["healthy"]?.bool == true }
        try eventually("node 2's environment is reachable again", within: 20) {
            let c = (try HTTP.call("GET", cp.base + "/v1/containers", token: admin).json?["containers"]?.items ?? []).first { $0["username"]?.stringValue == onN2 }
            return c?["state"]?.stringValue == "CONTAINER_STATE_RUNNING"
        }

        // Delete everything through the control plane, wherever it lives.
        for u in users + [extra] {
            let del = try HTTP.call("DELETE", cp.base + "/v1/containers/\(u)", token: admin)
            #expect(del.status == 200, "\(u): \(del.text)")
        }
        for box in boxes {
            let left = try box.incus(["list", "-c", "n", "-f", "csv"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(left.isEmpty, "left in \(box.project): \(left)")
        }
        #expect((try HTTP.call("GET", cp.base + "/v1/containers", token: admin).json?["containers"]?.items ?? []).isEmpty)
        // A node's count of environments is what its last report said (every 3 s): wait for
        // the one after the deletes before stopping it, or it is stopped still "holding" one.
        try eventually("\(n2) reports no environment", within: 30) { try nodes()[n2]?["environments"]?.number == 0 }
        members[1].stop()
        let removed = try boxes[0].cli(["node", "remove", n2, "--server", grpc, "--token", admin])
        #expect(removed.status == 0, "\(removed.output)")
        #expect(try nodes()[n2] == nil)
        // Removing a node revokes its tokens: started again, it is refused and stays out.
        try members[1].start()
        try eventually("the removed node's report is refused", within: 30) { members[1].log.contains("tokens were revoked") }
        #expect(try nodes()[n2] == nil)
        members[1].stop()
    }

    @Test("the cluster over mTLS: certificates name their identity (a node joins with its own certificate, which reaches nothing but the node protocol; a user's sees only their own); the CA key is kept apart; clients verify the server's name")
    func mutualTLS() throws {
        let sfx = TestEnv.suffix()
        let cpName = "cq-\(sfx)", n1 = "nq-\(sfx)"
        let boxes = try [IncusEnv.Sandbox(ownProject: true), IncusEnv.Sandbox(ownProject: true)]
        defer { boxes.forEach { $0.cleanup() } }
        for (box, n) in zip(boxes, [cpName, n1]) { try Self.name(box, n) }
        let certs = boxes[0].dir.appendingPathComponent("certs"), caDir = boxes[0].dir.appendingPathComponent("ca")
        let gen = try Run.run(TestEnv.cliPath, ["cert", "generate", "--server-ip", "127.0.0.1", "--output-dir", certs.path])
        #expect(gen.status == 0, "\(gen.output)")
        // The CA's key is in its own 0700 directory, not with the server's keys.
        let fm = FileManager.default
        #expect(!fm.fileExists(atPath: certs.appendingPathComponent("ca.key").path))
        #expect((try? fm.attributesOfItem(atPath: caDir.path)[.posixPermissions] as? Int) == 0o700)
        #expect((try? fm.attributesOfItem(atPath: caDir.appendingPathComponent("ca.key").path)[.posixPermissions] as? Int) == 0o600)
        // The node gets its own certificate; so does a user.
        let nodeCerts = boxes[1].dir.appendingPathComponent("node-certs"), userCerts = boxes[0].dir.appendingPathComponent("user-certs")
        let u = "cm\(sfx)", other = "co\(sfx)"
        var serials: [String: String] = [:]
        for (name, role, dir, extra) in [(n1, "node", nodeCerts, ["--server-ip", "127.0.0.1"]), (u, "user", userCerts, [])] {
            let issued = try Run.run(TestEnv.cliPath, ["cert", "issue", "--ca-dir", caDir.path, "--name", name, "--role", role, "--output-dir", dir.path] + extra)
            #expect(issued.status == 0 && issued.stdout.contains("client certificate serial "), "\(issued.output)")
            serials[role] = issued.stdout.components(separatedBy: "client certificate serial ").last?.split(separator: " ").first.map(String.init)
        }
        // The node serves its gRPC port with a server certificate of its own, not the control plane's.
        let nodeServer = try String(contentsOf: nodeCerts.appendingPathComponent("server.crt"), encoding: .utf8)
        #expect(nodeServer != (try String(contentsOf: certs.appendingPathComponent("server.crt"), encoding: .utf8)))
        #expect(!fm.fileExists(atPath: userCerts.appendingPathComponent("server.crt").path))
        let serverForUser = try Run.run(TestEnv.cliPath, ["cert", "issue", "--ca-dir", caDir.path, "--name", u, "--role", "user", "--server-ip", "127.0.0.1",
                                                          "--output-dir", userCerts.path + "-s"])
        #expect(serverForUser.status != 0 && serverForUser.stderr.contains("--role node"), "\(serverForUser.output)")
        let badRole = try Run.run(TestEnv.cliPath, ["cert", "issue", "--ca-dir", caDir.path, "--name", "x", "--role", "root", "--output-dir", userCerts.path + "-x"])
        #expect(badRole.status != 0 && badRole.stderr.contains("--role must be one of"), "\(badRole.output)")

        // The control plane listens on every address: its certificate names 127.0.0.1 only.
        let cp = try DaemonProcess(sandbox: boxes[0], extraArgs: ["--mtls", "--certs-dir", certs.path, "--cluster-certs-dir", certs.path,
                                                                  "--reconcile-interval", "3600", "--grpc-host", "0.0.0.0"])
        try cp.start()
        defer { cp.stop() }
        let admin = try cp.token("admin", roles: "admin")
        let token = try Run.run(TestEnv.cliPath, ["node", "token", "--node", n1, "--secret-file", cp.secretFile.path]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let node = try DaemonProcess(sandbox: boxes[1], extraArgs: ["--mtls", "--certs-dir", nodeCerts.path, "--reconcile-interval", "3600"])
        // Without client certificates the control plane does not even answer.
        let refused = try boxes[1].cli(["node", "join", "--insecure-plaintext", "--server", "127.0.0.1:\(cp.grpcPort)", "--token", token,
                                        "--advertise", "127.0.0.1:\(node.grpcPort)", "--state-dir", node.stateDir.path])
        #expect(refused.status != 0, "\(refused.output)")
        // Node traffic is TLS: a join with neither certificates nor an explicit test-bed flag is refused before anything is written.
        let clear = try boxes[1].cli(["node", "join", "--server", "127.0.0.1:\(cp.grpcPort)", "--token", token, "--state-dir", node.stateDir.path])
        #expect(clear.status != 0 && clear.stderr.contains("node traffic is TLS"), "\(clear.output)")
        #expect(!FileManager.default.fileExists(atPath: node.stateDir.appendingPathComponent("node.json").path))
        let join = try boxes[1].cli(["node", "join", "--server", "127.0.0.1:\(cp.grpcPort)", "--token", token, "--certs-dir", nodeCerts.path,
                                     "--advertise", "127.0.0.1:\(node.grpcPort)", "--state-dir", node.stateDir.path])
        #expect(join.status == 0, "\(join.output)")
        try node.start()
        defer { node.stop() }
        try eventually("the node reports over mTLS", within: 60) {
            (try HTTP.call("GET", cp.base + "/v1/nodes", token: admin).json?["nodes"]?.items ?? []).contains {
                $0["name"]?.stringValue == n1 && $0["healthy"]?.bool == true
            }
        }
        let server = "127.0.0.1:\(cp.grpcPort)"
        // Attack: the node's own certificate, without a token, on admin routes: refused, audited.
        for verb in [["list"], ["create", other], ["node", "list"]] {
            let r = try boxes[1].cli(verb + ["--server", server, "--certs-dir", nodeCerts.path])
            #expect(r.status != 0 && r.stderr.contains("node protocol"), "\(verb) with the node's certificate: \(r.output)")
        }
        let denials = try HTTP.call("GET", cp.base + "/v1/audit?action=auth.denied&limit=50", token: admin).json?["entries"]?.items ?? []
        #expect(denials.contains { $0["actor"]?.stringValue == "node.\(n1)" }, "\(denials)")
        // The administrator's certificate from `cert generate` is an administrator.
        let asAdmin = try boxes[0].cli(["node", "list", "--server", server, "--certs-dir", certs.path])
        #expect(asAdmin.status == 0 && asAdmin.stdout.contains(n1), "\(asAdmin.output)")
        // A user's certificate is that user: their own environments only.
        let mine = try boxes[0].cli(["create", other, "--server", server, "--certs-dir", userCerts.path])
        #expect(mine.status != 0 && mine.stderr.contains("may only create its own environment"), "a user creating another's environment: \(mine.output)")
        // Clients verify the server's name: reached at an address its certificate does not
        // name (127.0.0.2, same listener), the handshake fails.
        let misnamed = try boxes[0].cli(["node", "list", "--server", "127.0.0.2:\(cp.grpcPort)", "--certs-dir", certs.path])
        #expect(misnamed.status != 0 && !misnamed.stdout.contains(n1), "\(misnamed.output)")
        // A DNS name the certificate carries (localhost) is resolved and verified.
        let byName = try boxes[0].cli(["node", "list", "--server", "localhost:\(cp.grpcPort)", "--certs-dir", certs.path])
        #expect(byName.status == 0 && byName.stdout.contains(n1), "\(byName.output)")
        let reachable = try Run.run("/bin/bash", ["-c", "exec 3<>/dev/tcp/127.0.0.2/\(cp.grpcPort)"])
        #expect(reachable.status == 0, "the listener answers at 127.0.0.2: only the name check refused it: \(reachable.output)")

        // The control plane places on the node (its own node drained) and acts on it over mTLS.
        #expect(try HTTP.call("POST", cp.base + "/v1/nodes/\(cpName)/drain", token: admin).status == 200)
        let created = try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: HTTP.json(["username": u, "sshKeys": [boxes[0].key.publicText]]))
        #expect(created.status == 201 && created.json?["node"]?.stringValue == n1, "\(created.text)")
        #expect(try boxes[1].exists("\(u)-container"))
        let listed = try boxes[0].cli(["list", "--server", server, "--certs-dir", userCerts.path])
        #expect(listed.status == 0 && listed.stdout.contains(u), "the user sees their own environment: \(listed.output)")
        // An administrator revokes the user's certificate (read from its file): every call with it
        // is refused from then on, by serial; the node's certificate still reports.
        let revoke = try boxes[0].cli(["cert", "revoke", "--cert", userCerts.appendingPathComponent("client.crt").path, "--server", server, "--certs-dir", certs.path])
        #expect(revoke.status == 0 && revoke.stdout.contains("revoked certificate \(serials["user"] ?? "?")"), "\(revoke.output)")
        let afterRevoke = try boxes[0].cli(["list", "--server", server, "--certs-dir", userCerts.path])
        #expect(afterRevoke.status != 0 && afterRevoke.stderr.contains("was revoked"), "\(afterRevoke.output)")
        let byNode = try boxes[1].cli(["cert", "revoke", "--serial", serials["node"] ?? "", "--server", server, "--certs-dir", nodeCerts.path])
        #expect(byNode.status != 0, "a node revoked a certificate: \(byNode.output)")
        let revocations = try HTTP.call("GET", cp.base + "/v1/revocations", token: admin).json?["revocations"]?.items ?? []
        #expect(revocations.count == 1 && revocations.first?["certificateSerial"]?.stringValue == serials["user"], "\(revocations)")
        let exec = try HTTP.call("GET", cp.base + "/v1/containers/\(u)", token: admin)
        #expect(exec.json?["node"]?.stringValue == n1)
        #expect(try HTTP.call("DELETE", cp.base + "/v1/containers/\(u)", token: admin).status == 200)
        #expect(try !boxes[1].exists("\(u)-container"))
    }

    /// Options for the real OpenSSH client: this key only, no agent, no prompts.
    static func ssh(port: Int, _ user: String, key: URL, _ args: [String], timeout: Double = 120) throws -> ProcessResult {
        try Run.run("/usr/bin/ssh", ["-p", String(port), "-i", key.path, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
                                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                                     "-o", "ConnectTimeout=10", "\(user)@127.0.0.1"] + args, timeout: timeout)
    }

    @Test("GPUs reported by a node's nvidia-gpu plugin and placed by PCI address; SSH through the control plane's gateway to an environment on another node; a create cut off by a control-plane crash is settled")
    func gpusGatewayAndRepair() throws {
        let sfx = TestEnv.suffix()
        let cpName = "cg-\(sfx)", n1 = "ng-\(sfx)"
        let boxes = try [IncusEnv.Sandbox(ownProject: true), IncusEnv.Sandbox(ownProject: true)]
        defer { boxes.forEach { $0.cleanup() } }
        for (box, n) in zip(boxes, [cpName, n1]) { try Self.name(box, n) }
        // The member has two NVIDIA GPUs in a PCI tree of its own (no GPU exists here).
        let tree = boxes[1].dir.appendingPathComponent("pci")
        try FakeGPU.tree(tree)
        _ = try FakeGPU.buildPlugin(into: boxes[1].plugins)
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: boxes[1].config)) as? [String: Any] ?? [:]
        var plugins = cfg["plugins"] as? [String: Any] ?? [:]
        plugins["nvidia-gpu"] = ["enabled": true, "config": ["sysfsPath": tree.path]]
        cfg["plugins"] = plugins
        try JSONSerialization.data(withJSONObject: cfg).write(to: boxes[1].config)

        let cpSSH = try DaemonProcess.freePort(), n1SSH = try DaemonProcess.freePort()
        let cp = try DaemonProcess(sandbox: boxes[0], extraArgs: ["--reconcile-interval", "3", "--ssh-port", String(cpSSH), "--ssh-host", "127.0.0.1"])
        try cp.start()
        defer { cp.stop() }
        let admin = try cp.token("admin", roles: "admin")
        let grpc = "127.0.0.1:\(cp.grpcPort)"
        let nodeToken = try Run.run(TestEnv.cliPath, ["node", "token", "--secret-file", cp.secretFile.path, "--node", n1]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let node = try DaemonProcess(sandbox: boxes[1], extraArgs: ["--reconcile-interval", "3600", "--ssh-port", String(n1SSH), "--ssh-host", "127.0.0.1"])
        let join = try boxes[1].cli(["node", "join", "--insecure-plaintext", "--server", grpc, "--token", nodeToken, "--advertise", "127.0.0.1:\(node.grpcPort)",
                                     "--state-dir", node.stateDir.path])
        #expect(join.status == 0, "\(join.output)")
        try node.start()
        defer { node.stop() }
        func member() throws -> JSONValue? {
            (try HTTP.call("GET", cp.base + "/v1/nodes", token: admin).json?["nodes"]?.items ?? []).first { $0["name"]?.stringValue == n1 }
        }
        try eventually("the node reports", within: 60) { try member()?["healthy"]?.bool == true }

        // GPUs: discovered on the node, reported with PCI address and model, shown by node list.
        let gpus = try #require(try member()?["gpus"]?.items)
        #expect(gpus.compactMap { $0["pciAddress"]?.stringValue } == ["0000:65:00.0", "0000:ca:00.0"], "\(gpus)")
        #expect(gpus.compactMap { $0["model"]?.stringValue } == ["GA100 [A100 SXM4 40GB]", "AD102 [GeForce RTX 4090]"])
        #expect(try member()?["sshGateway"]?.stringValue == "127.0.0.1:\(n1SSH)")
        let listed = try boxes[0].cli(["node", "list", "--server", grpc, "--token", admin])
        #expect(listed.stdout.contains("0/1 AD102 [GeForce RTX 4090]; 0/1 GA100 [A100 SXM4 40GB]"), "\(listed.output)")
        // The scheduler: only the node with GPUs qualifies; three GPUs fit nowhere.
        let one = try HTTP.call("POST", cp.base + "/v1/schedule/explain", token: admin, body: #"{"gpus": 1, "gpuModel": "AD102 [GeForce RTX 4090]"}"#)
        #expect(one.json?["chosen"]?.stringValue == n1, "\(one.text)")
        let cpVerdict = (one.json?["verdicts"]?.items ?? []).first { $0["node"]?.stringValue == cpName }
        #expect(cpVerdict?["filteredBecause"]?.items?.first?.stringValue?.hasPrefix("GPUs: needs") == true, "\(one.text)")
        let three = try boxes[0].cli(["schedule", "explain", "--gpus", "3", "--server", grpc, "--token", admin])
        #expect(three.stdout.contains("chosen: (none") && three.stdout.contains("filtered: GPUs: needs 3"), "\(three.output)")
        // Bad GPU requests are refused at the edge; users cannot pick PCI addresses, and on a
        // control plane nobody can: its scheduler picks the node and its GPUs.
        let publicKey = boxes[0].key.publicText
        for body in [#"{"username": "gx\#(sfx)", "sshKeys": ["k"], "gpus": 1.5}"#, #"{"username": "gx\#(sfx)", "sshKeys": ["k"], "gpus": 17}"#] {
            #expect(try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: body).status == 400, "\(body)")
        }
        let picked = HTTP.json(["username": "gx\(sfx)", "sshKeys": [publicKey], "gpus": 1, "gpuDevices": ["0000:ca:00.0"]])
        let byUser = try HTTP.call("POST", cp.base + "/v1/containers", token: try cp.token("gx\(sfx)"), body: picked)
        #expect(byUser.status == 403 && byUser.text.contains("gpuDevices"), "\(byUser.text)")
        let byAdmin = try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: picked)
        #expect(byAdmin.status == 400 && byAdmin.text.contains("scheduler picks them"), "\(byAdmin.text)")
        // A create with a GPU goes to the node with the RTX 4090's address: Incus is asked to
        // pass 0000:ca:00.0 through, and (no such card here) refuses to start it. Nothing is
        // left behind and the GPU is free again.
        let gpuUser = "gu\(sfx)"
        let gpuCreate = try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: HTTP.json([
            "username": gpuUser, "sshKeys": [boxes[0].key.publicText], "gpus": 1, "gpuModel": "AD102 [GeForce RTX 4090]"]))
        #expect(gpuCreate.status >= 400 && gpuCreate.text.contains("0000:ca:00.0"), "\(gpuCreate.text)")
        #expect(try !boxes[1].exists("\(gpuUser)-container") && !boxes[0].exists("\(gpuUser)-container"))
        #expect(try HTTP.call("GET", cp.base + "/v1/containers/\(gpuUser)", token: admin).status == 404)
        // Released at once by the control plane; a node report taken while the half-made
        // container still existed may show the GPU attached until the next report (3 s).
        var both = HTTPResult(status: 0, body: Data(), headers: "")
        try? eventually("the failed create's GPU is free again", within: 15) {
            both = try HTTP.call("POST", cp.base + "/v1/schedule/explain", token: admin, body: #"{"gpus": 2}"#)
            return both.json?["chosen"]?.stringValue == n1
        }
        #expect(both.json?["chosen"]?.stringValue == n1, "the failed create's GPU was released: \(both.text)")

        // SSH through the control plane's gateway to an environment on the node.
        #expect(try HTTP.call("POST", cp.base + "/v1/nodes/\(cpName)/drain", token: admin).status == 200)
        let u = "gs\(sfx)"
        let created = try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: HTTP.json(["username": u, "sshKeys": [boxes[0].key.publicText]]))
        #expect(created.status == 201 && created.json?["node"]?.stringValue == n1, "\(created.text)")
        let key = boxes[0].key.privateKey
        let hop = try Self.ssh(port: cpSSH, u, key: key, ["echo $(id -un)@$(hostname); exit 7"])
        #expect(hop.status == 7 && hop.stdout == "\(u)@\(u)-container\n", "\(hop.output)")
        let forward = try Self.ssh(port: cpSSH, u, key: key, ["-W", "localhost:22"], timeout: 20)
        #expect(forward.stdout.hasPrefix("SSH-2.0-OpenSSH"), "the node's environment's own sshd answers -W localhost:22: \(forward.output)")
        let stranger = try KeyPair.generate(in: boxes[0].dir, name: "stranger")
        #expect(try Self.ssh(port: cpSSH, u, key: stranger.privateKey, ["true"]).status == 255, "a key the environment does not know")
        // The hop user name is for the control plane's key only.
        #expect(try Self.ssh(port: n1SSH, "\(u)+\(u)", key: key, ["true"]).status == 255)
        let cpAudit = try HTTP.call("GET", cp.base + "/v1/audit?action=gateway.auth&target=\(u)", token: admin).json?["entries"]?.items ?? []
        #expect(cpAudit.contains { $0["result"]?.stringValue == "ok" && $0["actor"]?.stringValue == u }, "\(cpAudit)")
        // The hop really went through the node's gateway, with the control plane's key.
        let nodeAudit = try HTTP.call("GET", node.base + "/v1/audit?action=gateway.auth&target=\(u)", token: try node.token("admin", roles: "admin"))
            .json?["entries"]?.items ?? []
        #expect(nodeAudit.contains { $0["result"]?.stringValue == "ok" && $0["actor"]?.stringValue == u }, "\(nodeAudit)")

        // Kill the control plane while the node creates an environment for it; on restart the
        // record and the operation agree with what the node did.
        let r = "gr\(sfx)"
        let started = try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: HTTP.json(["username": r, "sshKeys": [boxes[0].key.publicText], "async": true]))
        #expect(started.status == 202, "\(started.text)")
        let op = try #require(started.json?["id"]?.stringValue)
        try eventually("the node is creating it", within: 60, every: 100_000) { try boxes[1].exists("\(r)-container") }
        cp.signal(SIGKILL)
        _ = try cp.wait(timeout: 20)
        try cp.start()
        try eventually("the interrupted create is settled", within: 90) {
            let s = try HTTP.call("GET", cp.base + "/v1/operations/\(op)", token: admin).json?["state"]?.stringValue
            return s == "OPERATION_STATE_SUCCEEDED" || s == "OPERATION_STATE_FAILED"
        }
        let settled = try HTTP.call("GET", cp.base + "/v1/operations/\(op)", token: admin).json?["state"]?.stringValue
        let after = try HTTP.call("GET", cp.base + "/v1/containers/\(r)", token: admin)
        if settled == "OPERATION_STATE_SUCCEEDED" {
            #expect(after.status == 200 && after.json?["node"]?.stringValue == n1 && after.json?["state"]?.stringValue == "CONTAINER_STATE_RUNNING", "\(after.text)")
        } else {
            let left = try boxes[1].exists("\(r)-container")
            #expect(after.status == 404 && !left, "\(after.text)")
        }
        #expect(cp.log.contains("settled remote creates [\"\(r)\"]"), "the reconciler settled it")

        for user in [u, r] { _ = try HTTP.call("DELETE", cp.base + "/v1/containers/\(user)", token: admin) }
        #expect(try boxes[1].incus(["list", "-c", "n", "-f", "csv"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
    }

    /// TCP ports a process listens on (from /proc: its socket inodes, matched in /proc/net/tcp{,6}).
    static func listeningPorts(pid: Int32) -> Set<Int> {
        let fdDir = "/proc/\(pid)/fd"
        let inodes = Set(((try? FileManager.default.contentsOfDirectory(atPath: fdDir)) ?? []).compactMap { fd -> String? in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fdDir)/\(fd)"), target.hasPrefix("socket:[") else { return nil }
            return String(target.dropFirst(8).dropLast())
        })
        var ports: Set<Int> = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for line in ((try? String(contentsOfFile: table, encoding: .utf8)) ?? "").split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ")
                // local_address rem_address st ... inode (field 9); st 0A is LISTEN.
                guard f.count > 9, f[3] == "0A", inodes.contains(String(f[9])), let port = Int(f[1].split(separator: ":").last ?? "", radix: 16) else { continue }
                ports.insert(port)
            }
        }
        return ports
    }

    @Test("a node with no listening gRPC port and no advertised address joins by dialling out: create, list, exec, a dashboard terminal, an SSH login through the control plane's gateway and delete all go through its one link, which comes back after a restart")
    func dialOutNode() throws {
        let sfx = TestEnv.suffix()
        let cpName = "cl-\(sfx)", n1 = "nl-\(sfx)"
        let boxes = try [IncusEnv.Sandbox(ownProject: true), IncusEnv.Sandbox(ownProject: true)]
        defer { boxes.forEach { $0.cleanup() } }
        for (box, n) in zip(boxes, [cpName, n1]) { try Self.name(box, n) }
        let cpSSH = try DaemonProcess.freePort(), n1SSH = try DaemonProcess.freePort()
        let cp = try DaemonProcess(sandbox: boxes[0], extraArgs: ["--reconcile-interval", "3600", "--ssh-port", String(cpSSH), "--ssh-host", "127.0.0.1"])
        try cp.start()
        defer { cp.stop() }
        let admin = try cp.token("admin", roles: "admin")
        let grpc = "127.0.0.1:\(cp.grpcPort)"
        let nodeToken = try Run.run(TestEnv.cliPath, ["node", "token", "--secret-file", cp.secretFile.path, "--node", n1]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // No gRPC port (--port 0), no --advertise: nothing for the control plane to dial.
        let node = try DaemonProcess(sandbox: boxes[1], extraArgs: ["--reconcile-interval", "3600", "--port", "0", "--ssh-port", String(n1SSH), "--ssh-host", "127.0.0.1"])
        let join = try boxes[1].cli(["node", "join", "--insecure-plaintext", "--server", grpc, "--token", nodeToken, "--state-dir", node.stateDir.path])
        #expect(join.status == 0, "\(join.output)")
        try node.start()
        defer { node.stop() }
        func member() throws -> JSONValue? {
            (try HTTP.call("GET", cp.base + "/v1/nodes", token: admin).json?["nodes"]?.items ?? []).first { $0["name"]?.stringValue == n1 }
        }
        try eventually("the node reports", within: 60) { try member()?["healthy"]?.bool == true }
        try eventually("the node links", within: 30) { cp.log.contains("node \(n1) linked") }
        let linked = try member()
        #expect(linked?["address"] == .string(""), "a dial-out node has no address: \(String(describing: linked))")
        #expect(try member()?["sshGateway"]?.stringValue == "link")
        // The node listens on its REST port and its gateway only (both loopback here): no gRPC.
        let pid = try #require(node.process?.processIdentifier)
        #expect(Self.listeningPorts(pid: pid) == [node.httpPort, n1SSH], "\(Self.listeningPorts(pid: pid))")
        let apiSocket = node.stateDir.appendingPathComponent("api/containarium.sock").path
        let mode = (try FileManager.default.attributesOfItem(atPath: apiSocket)[.posixPermissions] as? Int) ?? -1
        let dirMode = (try FileManager.default.attributesOfItem(atPath: node.stateDir.appendingPathComponent("api").path)[.posixPermissions] as? Int) ?? -1
        #expect(mode & 0o077 == 0 && dirMode == 0o700, "the node API socket is private: \(String(mode, radix: 8)) in \(String(dirMode, radix: 8))")
        // A token for another node cannot hold this node's link.
        let otherToken = try Run.run(TestEnv.cliPath, ["node", "token", "--secret-file", cp.secretFile.path, "--node", "other-\(sfx)"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let stolen = try boxes[1].cli(["node", "join", "--insecure-plaintext", "--server", grpc, "--token", otherToken, "--state-dir", boxes[1].dir.appendingPathComponent("thief").path])
        #expect(stolen.status == 0, "a valid node token joins (it names its own node)")
        let thief = try DaemonProcess(sandbox: boxes[1], extraArgs: ["--reconcile-interval", "3600", "--port", "0"],
                                      stateDir: boxes[1].dir.appendingPathComponent("thief"))
        try thief.start()
        try eventually("the other token's link is refused", within: 30) {
            let denied = try HTTP.call("GET", cp.base + "/v1/audit?action=node.link&target=\(n1)", token: admin).json?["entries"]?.items ?? []
            return denied.contains { $0["result"]?.stringValue != "ok" && $0["detail"]?.stringValue?.contains("this token is for node.other-\(sfx)") == true }
        }
        thief.stop()

        // Create through the control plane on the node; list, exec (gRPC CLI), terminal, SSH.
        #expect(try HTTP.call("POST", cp.base + "/v1/nodes/\(cpName)/drain", token: admin).status == 200)
        let u = "dl\(sfx)"
        let created = try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: HTTP.json(["username": u, "sshKeys": [boxes[0].key.publicText]]))
        #expect(created.status == 201 && created.json?["node"]?.stringValue == n1, "\(created.text)")
        #expect(try boxes[1].exists("\(u)-container"))
        let listed = try HTTP.call("GET", cp.base + "/v1/containers", token: admin).json?["containers"]?.items ?? []
        #expect(listed.contains { $0["username"]?.stringValue == u && $0["node"]?.stringValue == n1 }, "\(listed)")
        let exec = try boxes[0].cli(["exec", u, "--server", grpc, "--token", admin, "--", "hostname"])
        #expect(exec.status == 0 && exec.stdout.contains("\(u)-container"), "\(exec.output)")
        let terminal = try Run.run("/usr/bin/python3", [TestEnv.repoRoot.appendingPathComponent("Tests/Helpers/ws_terminal.py").path,
                                                        "127.0.0.1:\(cp.httpPort)", u, admin, "echo term-$((40+2)) on $(hostname)", "term-42 on \(u)-container", "60"], timeout: 90)
        #expect(terminal.status == 0, "\(terminal.output)")
        let key = boxes[0].key.privateKey
        let login = try Self.ssh(port: cpSSH, u, key: key, ["echo $(id -un)@$(hostname); exit 7"])
        #expect(login.status == 7 && login.stdout == "\(u)@\(u)-container\n", "\(login.output)")
        // The hop reached the node's own gateway (with the control plane's key).
        let nodeAudit = try HTTP.call("GET", node.base + "/v1/audit?action=gateway.auth&target=\(u)", token: try node.token("admin", roles: "admin"))
            .json?["entries"]?.items ?? []
        #expect(nodeAudit.contains { $0["result"]?.stringValue == "ok" }, "\(nodeAudit)")
        // The node's calls came from the control plane over the link, as the control plane.
        let nodeCreate = try HTTP.call("GET", node.base + "/v1/audit?action=container.create&target=\(u)", token: try node.token("admin", roles: "admin"))
            .json?["entries"]?.items ?? []
        #expect(nodeCreate.contains { $0["actor"]?.stringValue == "control-plane" && $0["source"]?.stringValue == "node-link" }, "\(nodeCreate)")

        // Keys, collaborators, disk cleanup and the SSH config act on the node that holds it.
        let second = try KeyPair.generate(in: boxes[0].dir, name: "second")
        let added = try HTTP.call("POST", cp.base + "/v1/containers/\(u)/ssh-keys", token: admin, body: HTTP.json(["sshPublicKey": second.publicText]))
        #expect(added.status == 201, "\(added.text)")
        let authorized = try boxes[1].incus(["exec", "\(u)-container", "--", "cat", "/home/\(u)/.ssh/authorized_keys"]).output
        #expect(authorized.contains(second.publicText.split(separator: " ")[1]), "the key is in the node's environment: \(authorized)")
        let keyList = try HTTP.call("GET", cp.base + "/v1/containers/\(u)/ssh-keys", token: admin).json?["keys"]?.items ?? []
        #expect(keyList.count == 2, "\(keyList)")
        let withSecond = try Self.ssh(port: cpSSH, u, key: second.privateKey, ["id -un"])
        #expect(withSecond.stdout == "\(u)\n", "\(withSecond.output)")
        let fp = try #require(added.json?["fingerprint"]?.stringValue?.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        #expect(try HTTP.call("DELETE", cp.base + "/v1/containers/\(u)/ssh-keys?fingerprint=\(fp)", token: admin).status == 200)
        #expect(try !boxes[1].incus(["exec", "\(u)-container", "--", "cat", "/home/\(u)/.ssh/authorized_keys"]).stdout
            .contains(second.publicText.split(separator: " ")[1]))
        let collab = "dc\(sfx)"
        let addedCollab = try HTTP.call("POST", cp.base + "/v1/containers/\(u)/collaborators", token: admin,
                                        body: HTTP.json(["collaboratorUsername": collab, "sshPublicKey": second.publicText]))
        #expect(addedCollab.status == 201, "\(addedCollab.text)")
        #expect(try boxes[1].incus(["exec", "\(u)-container", "--", "id", collab]).status == 0, "the collaborator's account is on the node")
        let asCollab = try Self.ssh(port: cpSSH, "\(u)", key: second.privateKey, ["id -un"])
        #expect(asCollab.stdout == "\(collab)\n", "the collaborator's key logs in as the collaborator: \(asCollab.output)")
        #expect(try HTTP.call("DELETE", cp.base + "/v1/containers/\(u)/collaborators/\(collab)", token: admin).status == 200)
        #expect(try boxes[1].incus(["exec", "\(u)-container", "--", "id", collab]).status != 0, "the account went with it")
        let cleaned = try HTTP.call("POST", cp.base + "/v1/containers/\(u)/cleanup-disk", token: admin)
        #expect(cleaned.status == 200 && cleaned.json?["username"]?.stringValue == u, "\(cleaned.text)")
        let config = try HTTP.call("GET", cp.base + "/v1/containers/\(u)/ssh-config", token: admin)
        #expect(config.status == 200 && config.text.contains("\(u)-container"), "\(config.text)")

        // The node restarts: the link comes back and the environment is reachable again.
        node.stop()
        try eventually("the link closes", within: 30) { cp.log.contains("node \(n1)'s link closed") }
        try node.start()
        try eventually("the node links again", within: 60) {
            try boxes[0].cli(["exec", u, "--server", grpc, "--token", admin, "--", "hostname"]).stdout.contains("\(u)-container")
        }
        #expect(try HTTP.call("DELETE", cp.base + "/v1/containers/\(u)", token: admin).status == 200)
        #expect(try !boxes[1].exists("\(u)-container"))
    }

    @Test("two control planes on one PostgreSQL database: one node reports to both; drains, environments and placements are shared, and concurrent creates through both never double-book the node", .needsPostgres)
    func twoControlPlanes() throws {
        guard let base = ProcessInfo.processInfo.environment["CONTAINARIUM_TEST_PG_URL"] else {
            throw TestFailure("CONTAINARIUM_TEST_PG_URL is not set: run scripts/test.sh (it starts PostgreSQL) or set CONTAINARIUM_SKIP_PG=1")
        }
        let sfx = TestEnv.suffix()
        let db = "ctm_cps_\(sfx)"
        let made = try Run.run("/usr/bin/psql", [base, "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE \(db)"])
        #expect(made.status == 0, "\(made.output)")
        defer { _ = try? Run.run("/usr/bin/psql", [base, "-c", "DROP DATABASE IF EXISTS \(db) WITH (FORCE)"]) }
        let url = base.replacingOccurrences(of: #"/[^/]+$"#, with: "/\(db)", options: .regularExpression)

        let a = "pa-\(sfx)", b = "pb-\(sfx)", n = "pn-\(sfx)"
        let boxes = try [IncusEnv.Sandbox(ownProject: true), IncusEnv.Sandbox(ownProject: true), IncusEnv.Sandbox(ownProject: true)]
        defer { boxes.forEach { $0.cleanup() } }
        for (box, name) in zip(boxes, [a, b, n]) { try Self.name(box, name) }
        // Control planes sharing a database share its JWT secret too.
        let cpA = try DaemonProcess(sandbox: boxes[0], extraArgs: ["--database-url", url, "--cpu-overcommit", "1", "--reconcile-interval", "3600"])
        let cpB = try DaemonProcess(sandbox: boxes[1], extraArgs: ["--database-url", url, "--cpu-overcommit", "1", "--reconcile-interval", "3600"],
                                    secret: cpA.secret)
        try cpA.start()
        defer { cpA.stop() }
        try cpB.start()
        defer { cpB.stop() }
        let admin = try cpA.token("admin", roles: "admin")
        let token = try Run.run(TestEnv.cliPath, ["node", "token", "--secret-file", cpA.secretFile.path, "--node", n]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let node = try DaemonProcess(sandbox: boxes[2], extraArgs: ["--reconcile-interval", "3600"])
        let join = try boxes[2].cli(["node", "join", "--insecure-plaintext", "--server", "127.0.0.1:\(cpA.grpcPort)", "--server", "127.0.0.1:\(cpB.grpcPort)",
                                     "--token", token, "--advertise", "127.0.0.1:\(node.grpcPort)", "--state-dir", node.stateDir.path])
        #expect(join.status == 0, "\(join.output)")
        try node.start()
        defer { node.stop() }
        func view(_ cp: DaemonProcess, _ name: String) throws -> JSONValue? {
            (try HTTP.call("GET", cp.base + "/v1/nodes", token: admin).json?["nodes"]?.items ?? []).first { $0["name"]?.stringValue == name }
        }
        try eventually("the node reports to both control planes", within: 60) {
            try view(cpA, n)?["healthy"]?.bool == true && view(cpB, n)?["healthy"]?.bool == true
        }
        // Each control plane keeps its own machine out of placement: only the node takes environments.
        #expect(try HTTP.call("POST", cpA.base + "/v1/nodes/\(a)/drain", token: admin).status == 200)
        #expect(try HTTP.call("POST", cpB.base + "/v1/nodes/\(b)/drain", token: admin).status == 200)

        // A drain through one is seen by the other.
        #expect(try HTTP.call("POST", cpA.base + "/v1/nodes/\(n)/drain", token: admin).status == 200)
        try eventually("B sees A's drain", within: 15) { try view(cpB, n)?["draining"]?.bool == true }
        #expect(try HTTP.call("POST", cpB.base + "/v1/schedule/explain", token: admin).json?["chosen"] == .string(""), "no node: chosen is empty")
        #expect(try HTTP.call("POST", cpB.base + "/v1/nodes/\(n)/undrain", token: admin).status == 200)
        try eventually("A sees B's undrain", within: 15) { try view(cpA, n)?["draining"]?.bool == false }

        // Four creates at once, two through each control plane, each asking for every core of
        // the node (no CPU over-commit): exactly one fits. Without shared placements each
        // control plane would put one there.
        let cores = Int((try view(cpA, n)?["capacity"]?["cpuMillis"]?.number ?? 0) / 1000)
        #expect(cores >= 1)
        let users = (1...4).map { "pc\($0)\(sfx)" }
        let results = Mutex<[String: HTTPResult]>([:])
        DispatchQueue.concurrentPerform(iterations: users.count) { i in
            let cp = i % 2 == 0 ? cpA : cpB
            let r = try? HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: HTTP.json([
                "username": users[i], "sshKeys": [boxes[0].key.publicText], "resources": ["cpu": String(cores), "memory": "256MB"]]))
            if let r { results.withLock { $0[users[i]] = r } }
        }
        let outcomes = results.withLock { $0 }
        let winners = users.filter { outcomes[$0]?.status == 201 }
        #expect(winners.count == 1, "\(outcomes.mapValues { "\($0.status) \($0.text.prefix(160))" })")
        for u in users where !winners.contains(u) {
            #expect(outcomes[u]?.status == 507 || outcomes[u]?.json?["error"]?["code"]?.stringValue == "resource_exhausted", "\(u): \(outcomes[u]?.text ?? "-")")
        }
        let winner = try #require(winners.first)
        #expect(try boxes[2].exists("\(winner)-container"))

        // One view: both list it on the node; the other control plane acts on it and deletes it.
        for cp in [cpA, cpB] {
            let listed = try HTTP.call("GET", cp.base + "/v1/containers", token: admin).json?["containers"]?.items ?? []
            #expect(listed.contains { $0["username"]?.stringValue == winner && $0["node"]?.stringValue == n }, "\(listed)")
        }
        let creator = users.firstIndex(of: winner).map { $0 % 2 == 0 ? cpA : cpB } ?? cpA
        let other = creator === cpA ? cpB : cpA
        #expect(try HTTP.call("GET", other.base + "/v1/containers/\(winner)", token: admin).json?["node"]?.stringValue == n)
        #expect(try HTTP.call("DELETE", other.base + "/v1/containers/\(winner)", token: admin).status == 200)
        #expect(try !boxes[2].exists("\(winner)-container"))
        // The capacity is free again once the node's next report no longer counts it.
        var again: HTTPResult?
        try eventually("the node's cores are free again", within: 20, every: 500_000) {
            let r = try HTTP.call("POST", creator.base + "/v1/containers", token: admin, body: HTTP.json([
                "username": users[0] + "x", "sshKeys": [boxes[0].key.publicText], "resources": ["cpu": String(cores), "memory": "256MB"]]))
            again = r
            if r.status != 201 { #expect(r.json?["error"]?["code"]?.stringValue == "resource_exhausted", "\(r.text)") }
            return r.status == 201
        }
        #expect(again?.json?["node"]?.stringValue == n, "\(again?.text ?? "-")")
        #expect(try HTTP.call("DELETE", other.base + "/v1/containers/\(users[0])x", token: admin).status == 200)
        let rows = try Run.run("/usr/bin/psql", [url, "-At", "-c", "SELECT count(*) FROM placements"])
        #expect(rows.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "no placement row is left: \(rows.output)")
    }
}
