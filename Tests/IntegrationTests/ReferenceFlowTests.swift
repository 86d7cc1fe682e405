import ContainariumCore
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The reference README's REST section, replayed as its users would type it, against a real
/// daemon and real Incus: `daemon --rest`, `token generate`, then curl list / create (its exact
/// body) / get / delete.
@Suite("The reference README's REST flow, on real Incus", .needsIncus, .serialized)
struct ReferenceFlowTests {
    /// The create body exactly as the reference README prints it.
    static let referenceBody = """
        {
        "username": "johndoe",
        "resources": {
        "cpu": "4",
        "memory": "8GB",
        "disk": "100GB"
        },
        "osType": "OS_TYPE_UBUNTU_2404",
        "enablePodman": true,
        "stack": "nodejs",
        "async": true
        }
        """

    /// Poll an operation until it leaves RUNNING; returns the final operation.
    static func finish(_ d: DaemonProcess, _ token: String, _ operation: String, within seconds: Double) throws -> JSONValue {
        var last: JSONValue = .null
        try eventually("operation \(operation) finishes", within: seconds, every: 1_000_000) {
            last = try HTTP.call("GET", d.base + "/v1/operations/\(operation)", token: token).json ?? .null
            return last["state"]?.stringValue != "OPERATION_STATE_RUNNING"
        }
        return last
    }

    @Test("list, create with the reference's exact body (no SSH key, 4 CPUs on any node, Podman, Node.js), get, then delete")
    func referenceRESTFlow() throws {
        // The operator maps the reference's OS type to an image this node has.
        let box = try IncusEnv.Sandbox(ownProject: true, extraConfig: ["images": ["OS_TYPE_UBUNTU_2404": IncusEnv.image, "debian12": IncusEnv.image]])
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--rest"])
        try d.start()
        defer { d.stop() }
        // TOKEN=$(containarium token generate --username admin --roles admin --expiry 720h --secret ...)
        let token = try d.token("admin", roles: "admin", expiry: "720h")

        let listed = try HTTP.call("GET", d.base + "/v1/containers", token: token)
        #expect(listed.status == 200 && listed.json?["totalCount"]?.number == 0, "\(listed.text)")

        let accepted = try HTTP.call("POST", d.base + "/v1/containers", token: token, body: Self.referenceBody)
        #expect(accepted.status == 202, "\(accepted.text)")
        let operation = try #require(accepted.json?["id"]?.stringValue, "\(accepted.text)")
        // Apt inside the environment: Node.js and Podman come from the distribution's archive.
        let done = try Self.finish(d, token, operation, within: 1500)
        #expect(done["state"]?.stringValue == "OPERATION_STATE_SUCCEEDED", "\(done)\n\(d.log.suffix(3000))")

        let got = try HTTP.call("GET", d.base + "/v1/containers/johndoe", token: token)
        #expect(got.status == 200, "\(got.text)")
        let c = try #require(got.json)
        #expect(c["name"]?.stringValue == "johndoe-container")
        #expect(c["state"]?.stringValue == "CONTAINER_STATE_RUNNING", "\(got.text)")
        #expect(c["resources"]?["cpu"]?.stringValue == "4", "\(got.text)")
        #expect(c["nestingEnabled"]?.bool == true)
        #expect(c["labels"]?["stack"]?.stringValue == "nodejs")

        // What Incus itself says: the limits asked for, the image the operator mapped.
        let cfg = { (key: String) throws -> String in
            try box.incus(["config", "get", "johndoe-container", key]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try cfg("limits.cpu") == "4")
        #expect(try cfg("limits.memory") == "\(try ByteSize(parsing: "8GB").bytes)B")
        #expect(try cfg("security.nesting") == "true")

        // Node.js installed (the stack), checked from outside the daemon.
        let node = try box.incus(["exec", "johndoe-container", "--", "node", "-e", "console.log('node-' + (6 * 7))"])
        #expect(node.status == 0 && node.stdout.contains("node-42"), "\(node.output)")

        // Podman works: build an image locally (FROM scratch, no registry) and run it.
        let podman = try box.incus(["exec", "johndoe-container", "--env", "DEBIAN_FRONTEND=noninteractive", "--", "sh", "-c", """
            set -e
            apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends install busybox-static >/dev/null
            mkdir -p /tmp/podman-ctx && cp /bin/busybox /tmp/podman-ctx/busybox
            printf 'FROM scratch\\nCOPY busybox /bin/busybox\\nENTRYPOINT ["/bin/busybox"]\\n' > /tmp/podman-ctx/Containerfile
            podman build -q -t localhost/ctm-hello /tmp/podman-ctx >/dev/null
            podman run --rm localhost/ctm-hello sh -c 'echo podman-$((6*7)) from $(hostname)'
            podman image exists localhost/ctm-hello && echo image-is-local
            """])
        #expect(podman.status == 0 && podman.stdout.contains("podman-42") && podman.stdout.contains("image-is-local"), "\(podman.output)")

        // The account exists with no keys; a key added later lets the user in over SSH.
        let keys = try HTTP.call("GET", d.base + "/v1/containers/johndoe/ssh-keys", token: token)
        #expect(keys.status == 200 && keys.json?["keys"]?.items?.isEmpty == true, "\(keys.text)")
        let added = try HTTP.call("POST", d.base + "/v1/containers/johndoe/ssh-keys", token: token, body: HTTP.json(["sshPublicKey": box.key.publicText]))
        #expect(added.status == 201, "\(added.text)")
        let ip = try #require(c["network"]?["ipAddress"]?.stringValue)
        let ssh = try IncusEnv.ssh(user: "johndoe", host: ip, key: box.key.privateKey, "id -un; node --version")
        #expect(ssh.status == 0 && ssh.stdout.contains("johndoe") && ssh.stdout.contains("v"), "\(ssh.output)")

        let deleted = try HTTP.call("DELETE", d.base + "/v1/containers/johndoe", token: token)
        #expect(deleted.status == 200, "\(deleted.text)")
        #expect(try !box.exists("johndoe-container"))
        #expect(try HTTP.call("GET", d.base + "/v1/containers/johndoe", token: token).status == 404)
    }

    @Test("enableDocker installs Docker and puts the owner in the docker group: a locally built image runs without sudo")
    func enableDocker() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box)
        try d.start()
        defer { d.stop() }
        let user = "dk\(TestEnv.suffix())"
        let token = try d.token(user)
        defer { box.forceDelete("\(user)-container") }
        let created = try HTTP.call("POST", d.base + "/v1/containers", token: token, body: HTTP.json([
            "username": user, "sshKeys": [box.key.publicText], "enableDocker": true,
        ]))
        #expect(created.status == 201, "\(created.text)\n\(d.log.suffix(2000))")
        let ip = try #require(created.json?["network"]?["ipAddress"]?.stringValue, "\(created.text)")
        // The tool for the image comes from the archive like any package; the image itself is
        // built here (FROM scratch), so no registry is involved.
        let busybox = try box.incus(["exec", "\(user)-container", "--env", "DEBIAN_FRONTEND=noninteractive", "--",
                                     "apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=300", "--no-install-recommends", "install", "busybox-static"])
        #expect(busybox.status == 0, "\(busybox.output)")
        // A fresh login as the owner: no sudo, the docker group from the create.
        let docker = try IncusEnv.ssh(user: user, host: ip, key: box.key.privateKey, """
            set -e
            id -nG | tr ' ' '\\n' | grep -qx docker && echo in-docker-group
            mkdir -p ~/ctx && cp /bin/busybox ~/ctx/busybox
            printf 'FROM scratch\\nCOPY busybox /bin/busybox\\nENTRYPOINT ["/bin/busybox"]\\n' > ~/ctx/Dockerfile
            docker build -q -t ctm-hello ~/ctx >/dev/null
            docker run --rm ctm-hello sh -c 'echo docker-$((6*7))'
            """, within: 60)
        #expect(docker.status == 0 && docker.stdout.contains("in-docker-group") && docker.stdout.contains("docker-42"), "\(docker.output)")
    }

    @Test("what can be known before the work starts is a synchronous 400 that leaves nothing behind, async or not")
    func synchronousRefusals() throws {
        let box = try IncusEnv.Sandbox(ownProject: true, extraConfig: ["runtimes": ["docker"]])
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box)
        try d.start()
        defer { d.stop() }
        let token = try d.token("admin", roles: "admin")
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let user = "sr\(TestEnv.suffix())"
        // Past the CPU over-commit ratio (4x the node's cores), a CPU that does not exist, a
        // runtime this node's config does not offer, a runtime with nesting off.
        let refused: [(String, [String: Any], String)] = [
            ("cpu count", ["resources": ["cpu": String(cores * 4 + 1)]], "over-commit"),
            ("pinned cpu", ["resources": ["cpu": "0-\(cores)"]], "does not exist"),
            ("podman not offered", ["enablePodman": true], "not offered"),
            ("docker without nesting", ["enableDocker": true, "nesting": false], "needs nesting"),
            ("unknown stack", ["stack": "no-such-stack"], "stack"),
        ]
        for (what, fields, message) in refused {
            for async in [true, false] {
                var body: [String: Any] = ["username": user, "async": async]
                body.merge(fields) { _, new in new }
                let r = try HTTP.call("POST", d.base + "/v1/containers", token: token, body: HTTP.json(body))
                #expect(r.status == 400, "\(what) (async \(async)): \(r.status) \(r.text)")
                #expect(r.json?["error"]?["message"]?.stringValue?.contains(message) == true, "\(what): \(r.text)")
            }
        }
        #expect(try !box.exists("\(user)-container"))
        #expect(try HTTP.call("GET", d.base + "/v1/containers", token: token).json?["totalCount"]?.number == 0)

        // A CPU count above the node's cores but within the ratio is over-commit: accepted, and
        // the environment sees the node's cores.
        let within = try HTTP.call("POST", d.base + "/v1/containers", token: token, body: HTTP.json([
            "username": user, "resources": ["cpu": String(cores * 2), "memory": "256MB"],
        ]))
        defer { box.forceDelete("\(user)-container") }
        #expect(within.status == 201, "\(within.text)")
        let nproc = try box.incus(["exec", "\(user)-container", "--", "nproc"])
        #expect(nproc.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == String(cores), "\(nproc.output)")
        // The same rule for resize.
        let resize = try HTTP.call("PUT", d.base + "/v1/containers/\(user)/resize", token: token, body: HTTP.json(["resources": ["cpu": String(cores * 4 + 1)]]))
        #expect(resize.status == 400, "\(resize.text)")
    }

    @Test("a CLI delete while the daemon runs, then a REST create of the same user, succeeds at once")
    func cliDeleteThenRESTCreate() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        // A long reconcile interval: the fix must not wait for the reconciler.
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600"])
        try d.start()
        defer { d.stop() }
        let token = try d.token("admin", roles: "admin")
        let user = "cd\(TestEnv.suffix())"
        defer { box.forceDelete("\(user)-container") }
        let body = HTTP.json(["username": user, "sshKeys": [box.key.publicText], "resources": ["memory": "256MB"]])
        let first = try HTTP.call("POST", d.base + "/v1/containers", token: token, body: body)
        #expect(first.status == 201, "\(first.text)")

        // The CLI on the same node, without --server: through the daemon's local API, so its
        // bookkeeping and audit log see the delete (as the local admin, from the CLI).
        let del = try box.cli(["delete", user, "--force"])
        #expect(del.status == 0, "\(del.output)")
        #expect(try !box.exists("\(user)-container"))
        let audit = try HTTP.call("GET", d.base + "/v1/audit?action=container.delete&target=\(user)", token: token).json?["entries"]?.items ?? []
        #expect(audit.contains { $0["actor"]?.stringValue == "local-admin" && $0["interface"]?.stringValue == "cli" && $0["result"]?.stringValue == "ok" },
                "\(audit)")

        let again = try HTTP.call("POST", d.base + "/v1/containers", token: token, body: body)
        #expect(again.status == 201, "\(again.text)")
        let listed = try HTTP.call("GET", d.base + "/v1/containers", token: token)
        #expect(listed.json?["containers"]?.items?.compactMap { $0["username"]?.stringValue } == [user], "\(listed.text)")
        // And a create of something that does exist is still refused.
        let dup = try HTTP.call("POST", d.base + "/v1/containers", token: token, body: body)
        #expect(dup.status == 409, "\(dup.text)")
    }
}
