import ContainariumCore
import Foundation
import TestSupport
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

        // Join: a node token from the control plane, `node join` on each member, then its daemon.
        let tokenRun = try Run.run(TestEnv.cliPath, ["node", "token", "--secret-file", cp.secretFile.path, "--expiry", "1h"])
        #expect(tokenRun.status == 0, "\(tokenRun.output)")
        let nodeToken = tokenRun.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        var members: [DaemonProcess] = []
        for box in boxes[1...] {
            let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600"])
            let join = try box.cli(["node", "join", "--server", grpc, "--token", nodeToken, "--advertise", "127.0.0.1:\(d.grpcPort)",
                                    "--state-dir", d.stateDir.path])
            #expect(join.status == 0, "\(join.output)")
            try d.start()
            members.append(d)
        }
        defer { members.forEach { $0.stop() } }
        // A bad token is refused at join time, before anything is written.
        let bad = try boxes[1].cli(["node", "join", "--server", grpc, "--token", "not-a-token", "--advertise", "127.0.0.1:1",
                                    "--state-dir", boxes[1].dir.appendingPathComponent("nowhere").path])
        #expect(bad.status != 0 && !FileManager.default.fileExists(atPath: boxes[1].dir.appendingPathComponent("nowhere/node.json").path))

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
        let resized = try HTTP.call("PUT", cp.base + "/v1/containers/\(remoteUser)/resize", token: admin, body: #"{"memory": "768MB"}"#)
        #expect(resized.status == 200, "\(resized.text)")
        #expect(try boxes[1].incus(["config", "get", "\(remoteUser)-container", "limits.memory"]).stdout.contains("768"))

        // The scheduler explains itself; draining takes a node out of placement.
        let drained = try boxes[0].cli(["node", "drain", n1, "--server", grpc, "--token", admin])
        #expect(drained.status == 0, "\(drained.output)")
        let explained = try HTTP.call("POST", cp.base + "/v1/schedule/explain", token: admin, body: #"{"cpu": "1", "memory": "1GB"}"#)
        let verdicts = explained.json?["verdicts"]?.items ?? []
        let n1Verdict = verdicts.first { $0["node"]?.stringValue == n1 }
        #expect(n1Verdict?["filteredBecause"]?.items?.first?["draining"] != nil, "\(explained.text)")
        #expect(explained.json?["chosen"]?.stringValue != n1)
        let cliExplain = try boxes[0].cli(["schedule", "explain", "--cpu", "1", "--memory", "100TB", "--server", grpc, "--token", admin])
        #expect(cliExplain.status == 0 && cliExplain.stdout.contains("insufficientMemory") && cliExplain.stdout.contains("chosen: (none"), "\(cliExplain.output)")
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
        members[1].stop()
        let removed = try boxes[0].cli(["node", "remove", n2, "--server", grpc, "--token", admin])
        #expect(removed.status == 0, "\(removed.output)")
        #expect(try nodes()[n2] == nil)
    }

    @Test("the cluster over mTLS: the node reports with client certificates and its node token; the control plane calls back with its own certificates")
    func mutualTLS() throws {
        let sfx = TestEnv.suffix()
        let cpName = "cq-\(sfx)", n1 = "nq-\(sfx)"
        let boxes = try [IncusEnv.Sandbox(ownProject: true), IncusEnv.Sandbox(ownProject: true)]
        defer { boxes.forEach { $0.cleanup() } }
        for (box, n) in zip(boxes, [cpName, n1]) { try Self.name(box, n) }
        let certs = boxes[0].dir.appendingPathComponent("certs")
        let gen = try Run.run(TestEnv.cliPath, ["cert", "generate", "--server-ip", "127.0.0.1", "--output-dir", certs.path])
        #expect(gen.status == 0, "\(gen.output)")

        let cp = try DaemonProcess(sandbox: boxes[0], extraArgs: ["--mtls", "--certs-dir", certs.path, "--cluster-certs-dir", certs.path,
                                                                  "--reconcile-interval", "3600"])
        try cp.start()
        defer { cp.stop() }
        let admin = try cp.token("admin", roles: "admin")
        let token = try Run.run(TestEnv.cliPath, ["node", "token", "--node", n1, "--secret-file", cp.secretFile.path]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let node = try DaemonProcess(sandbox: boxes[1], extraArgs: ["--mtls", "--certs-dir", certs.path, "--reconcile-interval", "3600"])
        // Without the client certificates the control plane does not even answer.
        let refused = try boxes[1].cli(["node", "join", "--server", "127.0.0.1:\(cp.grpcPort)", "--token", token,
                                        "--advertise", "127.0.0.1:\(node.grpcPort)", "--state-dir", node.stateDir.path])
        #expect(refused.status != 0, "\(refused.output)")
        let join = try boxes[1].cli(["node", "join", "--server", "127.0.0.1:\(cp.grpcPort)", "--token", token, "--certs-dir", certs.path,
                                     "--advertise", "127.0.0.1:\(node.grpcPort)", "--state-dir", node.stateDir.path])
        #expect(join.status == 0, "\(join.output)")
        try node.start()
        defer { node.stop() }
        try eventually("the node reports over mTLS", within: 60) {
            (try HTTP.call("GET", cp.base + "/v1/nodes", token: admin).json?["nodes"]?.items ?? []).contains {
                $0["name"]?.stringValue == n1 && $0["healthy"]?.bool == true
            }
        }
        // The control plane places on the node (its own node drained) and acts on it over mTLS.
        #expect(try HTTP.call("POST", cp.base + "/v1/nodes/\(cpName)/drain", token: admin).status == 200)
        let u = "cm\(sfx)"
        let created = try HTTP.call("POST", cp.base + "/v1/containers", token: admin, body: HTTP.json(["username": u, "sshKeys": [boxes[0].key.publicText]]))
        #expect(created.status == 201 && created.json?["node"]?.stringValue == n1, "\(created.text)")
        #expect(try boxes[1].exists("\(u)-container"))
        let exec = try HTTP.call("GET", cp.base + "/v1/containers/\(u)", token: admin)
        #expect(exec.json?["node"]?.stringValue == n1)
        #expect(try HTTP.call("DELETE", cp.base + "/v1/containers/\(u)", token: admin).status == 200)
        #expect(try !boxes[1].exists("\(u)-container"))
    }
}
