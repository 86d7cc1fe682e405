import ContainariumCore
import Foundation
import Logging
@testable import PluginHost
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The fake Google Compute Engine (Tests/Support/fake_gce.py), run by the test as a child
/// process on loopback ports only it learns: the metadata server, the token endpoint and the
/// Compute API as Google documents them, over real Incus containers as the VMs.
final class FakeGCE: Sendable {
    static let script = TestEnv.repoRoot.appendingPathComponent("Tests/Support/fake_gce.py")
    static let project = "ctm-test-project"
    static let zone = "us-central1-a"
    static let natIP = "203.0.113.10"

    struct ServiceAccount: Sendable {
        var email: String
        var keyID: String
        var publicKey: URL
    }

    let pid: Int32
    let api: Int
    let control: Int
    let logFile: URL

    var metadataHost: String { "127.0.0.1:\(api)" }
    var computeBaseURL: String { "http://127.0.0.1:\(api)/compute/v1" }
    var tokenURI: String { "http://127.0.0.1:\(api)/token" }

    init(dir: URL, instances: [String], selfName: String, serviceAccount: ServiceAccount? = nil) throws {
        let ready = dir.appendingPathComponent("fake-gce-\(TestEnv.suffix()).json")
        logFile = dir.appendingPathComponent("fake-gce.log")
        var args = [Self.script.path, "--ready-file", ready.path, "--project", Self.project, "--zone", Self.zone, "--self", selfName, "--nat-ip", Self.natIP]
        for i in instances { args += ["--instance", i] }
        if let sa = serviceAccount { args += ["--sa-email", sa.email, "--sa-key-id", sa.keyID, "--sa-public-key", sa.publicKey.path] }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + args
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let log = try FileHandle(forWritingTo: logFile)
        p.standardOutput = log
        p.standardError = log
        p.standardInput = FileHandle.nullDevice
        try p.run()
        pid = p.processIdentifier
        let deadline = Date().addingTimeInterval(20)
        var ports: (Int, Int)?
        while Date() < deadline, ports == nil {
            if let data = try? Data(contentsOf: ready), let j = try? WireJSON.decode(JSONValue.self, from: data),
               let a = j["api"]?.number, let c = j["control"]?.number {
                ports = (Int(a), Int(c))
            } else if !p.isRunning {
                break
            } else {
                usleep(50_000)
            }
        }
        guard let (a, c) = ports else {
            Run.end(pid: p.processIdentifier, expecting: "fake_gce.py")
            throw TestFailure("the fake GCE did not start: \((try? String(contentsOf: logFile, encoding: .utf8)) ?? "")")
        }
        api = a
        control = c
    }

    /// End the fake (by its pid).
    func stop() { Run.end(pid: pid, expecting: "fake_gce.py", grace: 5) }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    @discardableResult
    func post(_ path: String, _ body: [String: Any]) throws -> JSONValue {
        let r = try HTTP.call("POST", "http://127.0.0.1:\(control)\(path)", body: HTTP.json(body), timeout: 30)
        guard r.status == 200, let json = r.json else { throw TestFailure("fake control \(path): \(r.status) \(r.text)") }
        return json
    }

    func state() throws -> JSONValue {
        let r = try HTTP.call("GET", "http://127.0.0.1:\(control)/_fake/state", timeout: 30)
        guard r.status == 200, let json = r.json else { throw TestFailure("fake state: \(r.status) \(r.text)") }
        return json
    }

    func counter(_ name: String) throws -> Int { Int(try state()["counters"]?[name]?.number ?? -1) }
    func waiters(_ key: String) throws -> Int { Int(try state()["waiters"]?[key]?.number ?? 0) }

    /// The plugin configuration that points it at this fake.
    func config(_ instances: [String], extra: [String: JSONValue] = [:]) -> JSONValue {
        var c: [String: JSONValue] = [
            "project": .string(Self.project), "zone": .string(Self.zone), "instances": .array(instances.map { .string($0) }),
            "metadataHost": .string(metadataHost), "computeBaseURL": .string(computeBaseURL), "requestTimeoutSeconds": .number(10),
            "operationTimeoutSeconds": .number(120),
        ]
        c.merge(extra) { _, new in new }
        return .object(c)
    }
}

/// Loading, calling and unloading the real gce-spot plugin through PluginHost.
enum GCESpot {
    static let ext = "node.lifecycle/1"
    static let quiet = Logger(label: "gce-test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A plugin directory (manifest + the built library) under `work`.
    static func pluginDir(_ work: URL) throws -> URL {
        let plugins = work.appendingPathComponent("plugins")
        try Scanners.pluginDir(in: plugins, id: "gce-spot", source: "GCESpot", library: "libGCESpot.so")
        return plugins
    }

    static func load(_ plugins: URL, config: JSONValue, isolation: String = "in-process", events: EventBus = EventBus()) throws -> PluginRecord {
        let settings = PluginSettings(plugins: ["gce-spot": .init(enabled: true, config: config, isolation: isolation)])
        let records = PluginLoader(
            searchPaths: [plugins], settings: settings, node: "n", logger: quiet, events: events,
            serverExecutable: URL(fileURLWithPath: TestEnv.cliPath)
        ).loadAll()
        return try #require(records.first { $0.id == "gce-spot" })
    }

    /// Shut an in-process instance down (its metadata watch ends); end an isolated one's child
    /// process (by pid: the `plugin serve` child of this process serving `plugins`).
    static func unload(_ record: PluginRecord, _ plugins: URL) {
        if let loaded = record.plugin as? LoadedPlugin { loaded.shutdown() }
        let marker = plugins.appendingPathComponent("gce-spot").path
        for child in Run.children(of: getpid()) where Run.commandLine(of: child)?.contains("plugin serve \(marker)") == true {
            Run.end(pid: child, expecting: marker, grace: 5)
        }
    }

    static func call(_ plugin: any PluginEndpoint, _ method: String, _ node: String) async throws -> JSONValue {
        let data = try await plugin.call(extension: ext, method: method, request: WireJSON.encode(["node": node]))
        let json = try WireJSON.decode(JSONValue.self, from: data)
        // Every answer follows the published schema.
        let violations = try SchemaCheck.violations(of: data, file: "node.lifecycle-1.schema.json", definition: "NodeStatus")
        #expect(violations == nil, "\(method) answer \(String(decoding: data, as: UTF8.self)): \(violations ?? "")")
        return json
    }

    /// The error a call fails with (nil when it succeeded).
    static func failure(_ plugin: any PluginEndpoint, _ method: String, _ node: String) async -> ContainariumError? {
        do {
            _ = try await plugin.call(extension: ext, method: method, request: WireJSON.encode(["node": node]))
            return nil
        } catch {
            return error
        }
    }

    /// The first event of `type` on `stream` within `seconds`, or nil.
    static func first(_ stream: AsyncStream<PluginEvent>, _ type: String, within seconds: Double) async -> PluginEvent? {
        await withTaskGroup(of: PluginEvent?.self) { group in
            group.addTask {
                for await e in stream where e.type == type { return e }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(seconds))
                return nil
            }
            let found = await group.next() ?? nil
            group.cancelAll()
            return found
        }
    }

    /// Poll an async check until it holds.
    static func eventually(_ what: String, within seconds: Double, _ check: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await check() { return }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw TestFailure("timed out after \(seconds) s waiting for: \(what)")
    }

    /// Incus's status of a container ("RUNNING", "STOPPED").
    static func incusStatus(_ name: String) throws -> String {
        let r = try IncusEnv.incus(["list", "--format", "csv", "--columns", "ns"])
        guard r.status == 0 else { throw TestFailure("incus list failed: \(r.output)") }
        for line in r.stdout.split(separator: "\n") {
            let cols = line.split(separator: ",")
            if cols.count >= 2, cols[0] == name { return String(cols[1]) }
        }
        throw TestFailure("incus has no container \(name)")
    }

    /// An RSA key pair made by openssl: (PKCS#8 PEM private key text, public key file).
    static func keyPair(in dir: URL, name: String) throws -> (String, URL) {
        let priv = dir.appendingPathComponent("\(name).pem"), pub = dir.appendingPathComponent("\(name).pub.pem")
        let g = try Run.run("/usr/bin/openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", priv.path])
        guard g.status == 0 else { throw TestFailure("openssl genpkey failed: \(g.output)") }
        let p = try Run.run("/usr/bin/openssl", ["pkey", "-in", priv.path, "-pubout", "-out", pub.path])
        guard p.status == 0 else { throw TestFailure("openssl pkey failed: \(p.output)") }
        return (try String(contentsOf: priv, encoding: .utf8), pub)
    }

    /// A service-account JSON key file as Google issues it.
    static func keyFile(in dir: URL, name: String, email: String, keyID: String, pem: String, tokenURI: String, type: String = "service_account") throws -> URL {
        let file = dir.appendingPathComponent("\(name).json")
        let body: [String: Any] = [
            "type": type, "project_id": FakeGCE.project, "private_key_id": keyID, "private_key": pem, "client_email": email,
            "client_id": "104857600000000000001", "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": tokenURI,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs", "universe_domain": "googleapis.com",
        ]
        try JSONSerialization.data(withJSONObject: body).write(to: file)
        return file
    }
}

@Suite("GCE spot plugin (node.lifecycle/1) against a fake GCE driving real Incus containers", .needsIncus, .serialized)
struct GCESpotTests {
    @Test("status, a preemption seen by the metadata watch within 10 s, start through an operation that goes DONE, stop", arguments: ["in-process", "process"])
    func preemptAndRestart(isolation: String) async throws {
        let work = try TestEnv.tempDir("gce")
        defer { TestEnv.cleanup(work) }
        let name = "gce\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete(name) }
        let launched = try IncusEnv.incus(["launch", IncusEnv.image, name])
        try #require(launched.status == 0, "incus launch: \(launched.output)")
        let fake = try FakeGCE(dir: work, instances: [name], selfName: name)
        defer { fake.stop() }
        let plugins = try GCESpot.pluginDir(work)
        let events = EventBus()
        let record = try GCESpot.load(plugins, config: fake.config([name]), isolation: isolation, events: events)
        defer { GCESpot.unload(record, plugins) }
        #expect(record.state == .ready, "\(record.state)")
        let plugin = try #require(record.plugin)
        #expect(plugin.isolation == isolation)
        #expect(plugin.provides(GCESpot.ext))

        // The guarded instance runs; its address is the external one while it runs.
        let running = try await GCESpot.call(plugin, "status", name)
        #expect(running["node"]?.stringValue == name)
        #expect(running["state"]?.stringValue == "running", "\(running)")
        #expect(running["gceStatus"]?.stringValue == "RUNNING")
        #expect(running["address"]?.stringValue == FakeGCE.natIP, "\(running)")
        #expect(running["preemptible"]?.bool == true, "a SPOT provisioning model is preemptible")
        #expect(running["lastPreemptedAt"] == nil)
        // Tokens came from the metadata server (no key file), and every Compute call carried one.
        #expect(try fake.counter("metadata_tokens") >= 1)
        #expect(try fake.counter("compute_unauthenticated") == 0)
        // An instance it does not guard is refused before anything is sent.
        let other = await GCESpot.failure(plugin, "status", "someone-elses-vm")
        #expect(other?.code == .permissionDenied && other?.message.contains("guards no instance named 'someone-elses-vm'") == true, "\(String(describing: other))")

        // The watch is long-polling the metadata server (with Metadata-Flavor: Google: nothing was refused).
        try await GCESpot.eventually("the metadata watch long-polls instance/preempted", within: 15) { try fake.waiters("instance/preempted") >= 1 }
        #expect(try fake.counter("metadata_forbidden") == 0)
        let healthy = await plugin.health()
        #expect(healthy.status == "ok", "\(healthy)")
        #expect(healthy.detail?.contains("metadata watch on \(name)") == true, "\(healthy)")

        // Google preempts the VM: the watch announces it within 10 s.
        let notices = events.subscribe()
        let preemptedAt = Date()
        try fake.post("/_fake/preempt", ["instance": name])
        let event = await GCESpot.first(notices, "node.preempted", within: 10)
        let detection = Date().timeIntervalSince(preemptedAt)
        let notice = try #require(event, "no node.preempted within 10 s of the preemption\n\(fake.log.suffix(3000))")
        #expect(notice.plugin == "gce-spot")
        let payload = try WireJSON.decode(JSONValue.self, from: notice.json)
        #expect(payload["node"]?.stringValue == name && payload["state"]?.stringValue == "preempted", "\(payload)")
        #expect(try SchemaCheck.violations(of: notice.json, file: "node.lifecycle-1.schema.json", definition: "NodeStatus") == nil)

        // The machine goes down; status says it was preempted, not merely stopped.
        try await GCESpot.eventually("the container stops", within: 60) { try GCESpot.incusStatus(name) == "STOPPED" }
        try await GCESpot.eventually("status says preempted and TERMINATED", within: 30) {
            let s = try await GCESpot.call(plugin, "status", name)
            return s["state"]?.stringValue == "preempted" && s["gceStatus"]?.stringValue == "TERMINATED"
        }
        let down = try await GCESpot.call(plugin, "status", name)
        #expect(down["lastPreemptedAt"]?.stringValue != nil, "\(down)")
        #expect(down["address"]?.stringValue != FakeGCE.natIP, "an ephemeral external address goes with the stop: \(down)")

        // start: instances.start, the operation polled until DONE; the container really runs.
        let recovered = events.subscribe()
        let startedAt = Date()
        let started = try await GCESpot.call(plugin, "start", name)
        let startDuration = Date().timeIntervalSince(startedAt)
        #expect(started["state"]?.stringValue == "running", "\(started)")
        #expect(started["address"]?.stringValue == FakeGCE.natIP)
        #expect(try GCESpot.incusStatus(name) == "RUNNING")
        let exec = try IncusEnv.incus(["exec", name, "--", "cat", "/proc/1/comm"])
        #expect(exec.status == 0 && !exec.stdout.isEmpty, "the container runs a system: \(exec.output)")
        let ops = try fake.state()["operations"]?.items ?? []
        let startOp = try #require(ops.first { $0["operationType"]?.stringValue == "start" })
        #expect(startOp["status"]?.stringValue == "DONE" && startOp["error"] == nil, "\(startOp)")
        #expect(try fake.counter("operation_polls") >= 1, "the plugin waited for the operation")
        // The new boot clears the preempted flag; the watch says the notice is over.
        let over = await GCESpot.first(recovered, "node.recovered", within: 10)
        #expect(over != nil, "no node.recovered after the restart")
        let after = try await GCESpot.call(plugin, "status", name)
        #expect(after["state"]?.stringValue == "running" && after["lastPreemptedAt"]?.stringValue == down["lastPreemptedAt"]?.stringValue, "\(after)")

        // stop: a stop of our own is "stopped", not "preempted".
        let stopped = try await GCESpot.call(plugin, "stop", name)
        #expect(stopped["state"]?.stringValue == "stopped", "\(stopped)")
        #expect(try GCESpot.incusStatus(name) == "STOPPED")

        print("gce-spot (\(isolation)): node.preempted \(String(format: "%.3f", detection)) s after the preemption; "
              + "start of a preempted instance \(String(format: "%.2f", startDuration)) s (operation DONE, container running)")

        // At shutdown the watch ends: no long-poll is left at the metadata server.
        GCESpot.unload(record, plugins)
        try await GCESpot.eventually("the watch ends at shutdown", within: 10) { try fake.waiters("instance/preempted") == 0 }
    }

    @Test("service-account key: an RS256 JWT the fake verifies; an unknown key is refused as unauthenticated; a start failing with QUOTA_EXCEEDED fails plainly, the next one runs")
    func serviceAccountAndQuota() async throws {
        let work = try TestEnv.tempDir("gce")
        defer { TestEnv.cleanup(work) }
        let name = "gcs\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete(name) }
        let made = try IncusEnv.incus(["init", IncusEnv.image, name])
        try #require(made.status == 0, "incus init: \(made.output)")
        let keys = work.appendingPathComponent("keys")
        try FileManager.default.createDirectory(at: keys, withIntermediateDirectories: true)
        let (pem, pub) = try GCESpot.keyPair(in: keys, name: "sa")
        let (otherPEM, _) = try GCESpot.keyPair(in: keys, name: "other")
        let email = "spot-lifecycle@\(FakeGCE.project).iam.gserviceaccount.com"
        let keyID = "0123456789abcdef0123456789abcdef01234567"
        let fake = try FakeGCE(dir: work, instances: [name], selfName: "some-other-machine",
                               serviceAccount: .init(email: email, keyID: keyID, publicKey: pub))
        defer { fake.stop() }
        let keyFile = try GCESpot.keyFile(in: keys, name: "sa", email: email, keyID: keyID, pem: pem, tokenURI: fake.tokenURI)
        let plugins = try GCESpot.pluginDir(work)
        let record = try GCESpot.load(
            plugins, config: fake.config([name], extra: ["credentialsFile": .string(keyFile.path), "watch": .bool(false)]))
        defer { GCESpot.unload(record, plugins) }
        #expect(record.state == .ready, "\(record.state)")
        let plugin = try #require(record.plugin)

        let stopped = try await GCESpot.call(plugin, "status", name)
        #expect(stopped["state"]?.stringValue == "stopped" && stopped["gceStatus"]?.stringValue == "TERMINATED", "\(stopped)")
        #expect(stopped["lastPreemptedAt"] == nil)
        #expect(try fake.counter("jwt_tokens") == 1, "the key was traded for a token")
        #expect(try fake.counter("metadata_tokens") == 0, "no token from the metadata server with a key file")
        #expect(try fake.waiters("instance/preempted") == 0, "watch off: no long-poll")
        // The token is kept: more calls, no new grant.
        _ = try await GCESpot.call(plugin, "status", name)
        #expect(try fake.counter("jwt_tokens") == 1)
        let health = await plugin.health()
        #expect(health.status == "ok" && health.detail?.contains("service-account key \(keyID) of \(email)") == true, "\(health)")

        // Google refuses the start: QUOTA_EXCEEDED in the operation's errors. Not a success.
        let quota = "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1."
        try fake.post("/_fake/fail-starts", ["count": 1, "code": "QUOTA_EXCEEDED", "message": quota])
        let refused = await GCESpot.failure(plugin, "start", name)
        #expect(refused?.code == .resourceExhausted, "\(String(describing: refused))")
        #expect(refused?.message.contains("start of instance \(name) failed") == true && refused?.message.contains("QUOTA_EXCEEDED: \(quota)") == true,
                "\(String(describing: refused))")
        #expect(try GCESpot.incusStatus(name) == "STOPPED")
        #expect(try await GCESpot.call(plugin, "status", name)["state"]?.stringValue == "stopped")
        // The next start goes through.
        let startedAt = Date()
        let started = try await GCESpot.call(plugin, "start", name)
        let startDuration = Date().timeIntervalSince(startedAt)
        #expect(started["state"]?.stringValue == "running", "\(started)")
        #expect(try GCESpot.incusStatus(name) == "RUNNING")
        #expect(try IncusEnv.incus(["exec", name, "--", "true"]).status == 0)
        print("gce-spot (service-account key): start of a stopped instance (first boot) \(String(format: "%.2f", startDuration)) s")

        // A key the token endpoint does not know (same account and key id, another private key).
        let forged = try GCESpot.keyFile(in: keys, name: "other", email: email, keyID: keyID, pem: otherPEM, tokenURI: fake.tokenURI)
        let otherPlugins = try GCESpot.pluginDir(work.appendingPathComponent("other"))
        let bad = try GCESpot.load(otherPlugins, config: fake.config([name], extra: ["credentialsFile": .string(forged.path), "watch": .bool(false)]))
        defer { GCESpot.unload(bad, otherPlugins) }
        #expect(bad.state == .ready, "initialize does not call Google: \(bad.state)")
        let badPlugin = try #require(bad.plugin)
        let denied = await GCESpot.failure(badPlugin, "status", name)
        // unauthenticated crosses the C ABI as CTM_E_PERMISSION_DENIED; the message says which.
        #expect(denied?.code == .permissionDenied, "\(String(describing: denied))")
        #expect(denied?.message.hasPrefix("unauthenticated:") == true && denied?.message.contains("invalid_grant: Invalid JWT Signature.") == true
                && denied?.message.contains("service-account key \(keyID)") == true, "\(String(describing: denied))")
        #expect(denied?.message.contains("BEGIN") == false && denied?.message.contains("ya29.") == false, "no key or token in the message")
        #expect(try fake.counter("jwt_refused") >= 1)
        let badHealth = await badPlugin.health()
        #expect(badHealth.status == "degraded" && badHealth.detail?.contains("Invalid JWT Signature") == true, "\(badHealth)")
    }

    @Test("GCE_METADATA_HOST points the plugin at the metadata server when its config names none; a token Google stops honouring (401) is fetched anew, once, and the call succeeds")
    func metadataHostAndRevokedToken() async throws {
        let work = try TestEnv.tempDir("gce-env")
        defer { TestEnv.cleanup(work) }
        let name = "gce\(TestEnv.suffix())"
        defer { IncusEnv.forceDelete(name) }
        let launched = try IncusEnv.incus(["launch", IncusEnv.image, name])
        try #require(launched.status == 0, "incus launch: \(launched.output)")
        let fake = try FakeGCE(dir: work, instances: [name], selfName: name)
        defer { fake.stop() }
        let plugins = try GCESpot.pluginDir(work)
        // No metadataHost in the config: the plugin child (process isolation: its own
        // environment, inherited from this process) reads GCE_METADATA_HOST, as Google's libraries do.
        var config = fake.config([name])
        if case .object(var o) = config { o["metadataHost"] = nil; config = .object(o) }
        setenv("GCE_METADATA_HOST", fake.metadataHost, 1)
        let record: PluginRecord
        do {
            defer { unsetenv("GCE_METADATA_HOST") }
            record = try GCESpot.load(plugins, config: config, isolation: "process")
        }
        defer { GCESpot.unload(record, plugins) }
        #expect(record.state == .ready, "\(record.state)")
        let plugin = try #require(record.plugin)
        let first = try await GCESpot.call(plugin, "status", name)
        #expect(first["state"]?.stringValue == "running", "\(first)")
        let tokensBefore = try fake.counter("metadata_tokens")
        #expect(tokensBefore >= 1, "the token came from the metadata server GCE_METADATA_HOST names")
        // Google revokes every token: the next call is answered 401, the plugin fetches a new
        // token from the metadata server and retries once; the caller sees only the answer.
        try fake.post("/_fake/revoke-tokens", [:])
        let second = try await GCESpot.call(plugin, "status", name)
        #expect(second["state"]?.stringValue == "running", "\(second)")
        #expect(try fake.counter("compute_unauthenticated") == 1)
        #expect(try fake.counter("metadata_tokens") == tokensBefore + 1)
    }
}

@Suite("GCE spot plugin: configuration")
struct GCESpotConfigTests {
    @Test("bad configuration is refused at initialize, saying what is wrong; a good one loads without calling Google")
    func badConfig() async throws {
        let work = try TestEnv.tempDir("gcecfg")
        defer { TestEnv.cleanup(work) }
        let plugins = try GCESpot.pluginDir(work)
        let garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
        let notRSA = try GCESpot.keyFile(in: work, name: "bad", email: "a@b.c", keyID: "k", pem: garbage, tokenURI: "https://oauth2.googleapis.com/token")
        let user = try GCESpot.keyFile(in: work, name: "user", email: "a@b.c", keyID: "k", pem: garbage, tokenURI: "https://oauth2.googleapis.com/token",
                                       type: "authorized_user")
        let base: [String: JSONValue] = ["project": .string("ctm-test-project"), "zone": .string("us-central1-a"), "instances": .array([.string("spot-1")]),
                                         "watch": .bool(false)]
        let cases: [([String: JSONValue], String)] = [
            (["zones": .string("us-central1-a")], "unknown key 'zones' (known: computeBaseURL, credentialsFile, instances, metadataHost, operationTimeoutSeconds, project, requestTimeoutSeconds, watch, zone)"),
            (["project": .null], "'project' is required"),
            (["project": .string("Bad Project")], "is not a GCE project id"),
            (["instances": .array([])], "'instances' is required"),
            (["instances": .array([.string("Spot_1")])], "instance name 'Spot_1' is not a GCE instance name"),
            (["instances": .array([.string("a"), .string("a")])], "names an instance twice"),
            (["metadataHost": .string("http://169.254.169.254")], "metadataHost 'http://169.254.169.254' must be HOST or HOST:PORT"),
            (["computeBaseURL": .string("ftp://example.com/compute/v1")], "computeBaseURL 'ftp://example.com/compute/v1' must be an http or https URL"),
            (["credentialsFile": .string("key.json")], "credentialsFile must be an absolute path"),
            (["credentialsFile": .string(work.appendingPathComponent("missing.json").path)], "cannot be read"),
            (["credentialsFile": .string(user.path)], "is not a service-account key (its type is 'authorized_user'"),
            (["credentialsFile": .string(notRSA.path)], "private_key is not an RSA private key"),
            (["requestTimeoutSeconds": .number(0)], "requestTimeoutSeconds must be between 1 and 300"),
            (["operationTimeoutSeconds": .number(99999)], "operationTimeoutSeconds must be between 1 and 3600"),
            (["watch": .string("yes")], "gce-spot configuration:"),
        ]
        for (change, expected) in cases {
            var config = base
            for (k, v) in change { if v == .null { config[k] = nil } else { config[k] = v } }
            let record = try GCESpot.load(plugins, config: .object(config))
            defer { GCESpot.unload(record, plugins) }
            guard case .failed(let why) = record.state else {
                Issue.record("\(change) was accepted")
                continue
            }
            #expect(why.hasPrefix("initialization failed: gce-spot configuration"), "\(why)")
            #expect(why.contains(expected), "\(change): \(why)")
            #expect(!why.contains("bm90IGEga2V5"), "the key never shows in a message")
        }

        // A good configuration loads without reaching anything; with nothing answering, health says why.
        let unreachable = base.merging(["computeBaseURL": .string("http://127.0.0.1:9/compute/v1"), "metadataHost": .string("127.0.0.1:9")]) { _, n in n }
        let record = try GCESpot.load(plugins, config: .object(unreachable))
        defer { GCESpot.unload(record, plugins) }
        #expect(record.state == .ready, "\(record.state)")
        let plugin = try #require(record.plugin)
        let health = await plugin.health()
        #expect(health.status == "degraded" && health.detail?.contains("127.0.0.1:9") == true, "\(health)")
        let e = await GCESpot.failure(plugin, "status", "spot-1")
        #expect(e?.code == .unavailable && e?.message.contains("unreachable") == true, "\(String(describing: e))")
        let missing = await GCESpot.failure(plugin, "status", "")
        #expect(missing?.code == .invalidArgument, "\(String(describing: missing))")
        do {
            _ = try await plugin.call(extension: GCESpot.ext, method: "status", request: Data("{}".utf8))
            Issue.record("a request without node was accepted")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("node"), "\(error)")
        }
    }
}
