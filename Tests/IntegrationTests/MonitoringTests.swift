import ContainariumCore
import Crypto
import Foundation
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A process the test starts (and ends by its pid): Prometheus, the webhook receiver.
struct Spawned {
    let pid: Int32
    let name: String
    let logFile: URL

    init(_ executable: String, _ args: [String], name: String, log: URL) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        pid = p.processIdentifier
        self.name = name
        logFile = log
    }

    func stop() { Run.end(pid: pid, expecting: name, grace: 5) }
    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }
}

/// Metrics and alerts through the daemon on real Incus: Debian's Prometheus scrapes /metrics
/// with a metrics token; a built-in rule fires on a real container's memory, is delivered
/// (HMAC-signed, retried after a 500) to a real HTTP receiver, and resolves.
@Suite("Monitoring: Prometheus scrapes the daemon; built-in alerts fire, are delivered and resolve, on real Incus", .needsIncus, .serialized)
struct MonitoringTests {
    static let prometheus = "/usr/bin/prometheus"
    static var receiverScript: URL { TestEnv.repoRoot.appendingPathComponent("Tests/Helpers/webhook_receiver.py") }

    /// The container's memory use and CPU time as Incus reports them now.
    static func incusState(_ box: IncusEnv.Sandbox, _ name: String) throws -> (memory: Double, cpuSeconds: Double) {
        let r = try IncusEnv.incus(["query", "/1.0/instances/\(name)/state?project=\(box.project)"])
        guard r.status == 0, let j = try? WireJSON.decode(JSONValue.self, from: Data(r.stdout.utf8)),
              let mem = j["memory"]?["usage"]?.number, let cpu = j["cpu"]?["usage"]?.number else {
            throw TestFailure("incus query state of \(name): \(r.output)")
        }
        return (mem, cpu / 1e9)
    }

    static func query(_ port: Int, _ promql: String) throws -> [JSONValue] {
        let q = promql.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        let r = try HTTP.call("GET", "http://127.0.0.1:\(port)/api/v1/query?query=\(q)", timeout: 10)
        guard r.status == 200, r.json?["status"]?.stringValue == "success" else { throw TestFailure("prometheus query \(promql): \(r.status) \(r.text)") }
        return r.json?["data"]?["result"]?.items ?? []
    }

    static func value(_ sample: JSONValue) -> Double? { sample["value"]?.items?.last?.stringValue.flatMap(Double.init) }

    @Test("Debian's Prometheus scrapes /metrics with a metrics token: a running container's memory and CPU time match `incus info`; a metrics token reads nothing else, a user token not even /metrics; --metrics-listen serves it without a token")
    func prometheusScrapes() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.prometheus), "Debian's prometheus is not installed (scripts/check-monitoring.sh installs it)")
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let metricsPort = try DaemonProcess.freePort()
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600", "--metrics-interval", "1",
                                                             "--metrics-listen", "127.0.0.1:\(metricsPort)"])
        try d.start()
        defer { d.stop() }
        let user = "pm\(TestEnv.suffix())"
        defer { box.forceDelete("\(user)-container") }
        let admin = try d.token("admin", roles: "admin"), userT = try d.token(user), scraper = try d.token("prometheus", roles: "metrics")
        let created = try HTTP.call("POST", d.base + "/v1/containers", token: userT,
                                    body: HTTP.json(["username": user, "sshKeys": [box.key.publicText], "resources": ["memory": "512MB"]]))
        try #require(created.status == 201, "\(created.text)")

        // Who may read what: the scraper /metrics only; a user not /metrics; no token nothing.
        #expect(try HTTP.call("GET", d.base + "/metrics", token: scraper).status == 200)
        #expect(try HTTP.call("GET", d.base + "/metrics", token: admin).status == 200)
        #expect(try HTTP.call("GET", d.base + "/metrics", token: userT).status == 403)
        #expect(try HTTP.call("GET", d.base + "/metrics").status == 401)
        #expect(try HTTP.call("GET", d.base + "/v1/containers", token: scraper).status == 403)
        #expect(try HTTP.call("GET", d.base + "/v1/containers/\(user)", token: scraper).status == 403)
        let plain = try HTTP.call("GET", "http://127.0.0.1:\(metricsPort)/metrics")
        #expect(plain.status == 200 && plain.text.contains("containarium_build_info"))
        #expect(try HTTP.call("GET", "http://127.0.0.1:\(metricsPort)/v1/containers").status == 404, "the metrics address serves /metrics only")

        // Prometheus, with the token in a file, scraping every second.
        let dir = try TestEnv.tempDir("prom")
        defer { TestEnv.cleanup(dir) }
        let tokenFile = dir.appendingPathComponent("token")
        try Data(scraper.utf8).write(to: tokenFile)
        let promPort = try DaemonProcess.freePort()
        let config = """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: containarium
                metrics_path: /metrics
                authorization:
                  type: Bearer
                  credentials_file: \(tokenFile.path)
                static_configs:
                  - targets: ["\(d.base.replacingOccurrences(of: "http://", with: ""))"]
            """
        let configFile = dir.appendingPathComponent("prometheus.yml")
        try Data(config.utf8).write(to: configFile)
        let prom = try Spawned(Self.prometheus, ["--config.file=\(configFile.path)", "--storage.tsdb.path=\(dir.appendingPathComponent("tsdb").path)",
                                                 "--web.listen-address=127.0.0.1:\(promPort)", "--log.level=warn"],
                               name: "prometheus", log: dir.appendingPathComponent("prometheus.log"))
        defer { prom.stop() }
        let env = "\(user)-container"
        var memory: Double = 0
        try eventually("Prometheus has scraped the container's memory", within: 90, every: 500_000) {
            // (Refused until Prometheus listens.)
            guard let v = (try? Self.query(promPort, "containarium_environment_memory_bytes{environment=\"\(env)\",user=\"\(user)\"}"))?.first.flatMap(Self.value)
            else { return false }
            memory = v
            return v > 0
        }
        #expect(try Self.query(promPort, "up{job=\"containarium\"}").first.flatMap(Self.value) == 1, "\(prom.log)")
        // Sampled a second or two apart, and a container that has just booted still grows:
        // once it settles, Prometheus's newest value is within 10% or 16 MiB of what Incus says.
        var truth = try Self.incusState(box, env)
        let lastSeen = Mutex("")
        defer { if !lastSeen.withLock({ $0 }).isEmpty { print("memory comparison: \(lastSeen.withLock { $0 })") } }
        try eventually("Prometheus's memory value agrees with Incus's (last: Prometheus \(memory), incus \(truth.memory))", within: 60, every: 1_000_000) {
            memory = try Self.query(promPort, "containarium_environment_memory_bytes{environment=\"\(env)\"}").first.flatMap(Self.value) ?? 0
            truth = try Self.incusState(box, env)
            let ok = abs(memory - truth.memory) <= max(truth.memory * 0.10, 16 * 1_048_576)
            if !ok { lastSeen.withLock { $0 = "Prometheus \(memory), incus \(truth.memory); /metrics: " + ((try? HTTP.call("GET", d.base + "/metrics", token: admin).text) ?? "").split(separator: "\n").filter { $0.hasPrefix("containarium_environment_memory_bytes") }.joined(separator: " | ") } }
            return ok
        }
        let cpu = try #require(try Self.query(promPort, "containarium_environment_cpu_seconds_total{environment=\"\(env)\"}").first.flatMap(Self.value))
        #expect(cpu > 0 && cpu <= truth.cpuSeconds + 0.5, "Prometheus \(cpu) s, incus \(truth.cpuSeconds) s")
        let limit = try Self.query(promPort, "containarium_environment_memory_limit_bytes{environment=\"\(env)\"}").first.flatMap(Self.value)
        #expect(limit == 512_000_000, "limit \(String(describing: limit))")
        #expect(try Self.query(promPort, "containarium_environment_state{environment=\"\(env)\",state=\"running\"}").first.flatMap(Self.value) == 1)
        // The node, the plugin, and the API's own requests (the scrapes themselves) are there too.
        #expect(try Self.query(promPort, "containarium_node_healthy").first.flatMap(Self.value) == 1)
        #expect(try !Self.query(promPort, "containarium_plugin_state{plugin=\"incus-lxc\",state=\"ready\"}").isEmpty)
        #expect(try !Self.query(promPort, "containarium_plugin_call_duration_seconds_count{plugin=\"incus-lxc\",extension=\"instances/1\",function=\"list\"}").isEmpty)
        let scrapes = try Self.query(promPort, "containarium_api_requests_total{interface=\"rest\",route=\"/metrics\",code=\"200\"}")
        #expect((scrapes.first.flatMap(Self.value) ?? 0) >= 1)
        // Label values are patterns, never paths: no series names the user in a route.
        let routes = try Self.query(promPort, "count by (route) (containarium_api_requests_total)").compactMap { $0["metric"]?["route"]?.stringValue }
        #expect(!routes.contains { $0.contains(user) }, "\(routes)")
        #expect(routes.contains("/v1/containers/:p0"), "\(routes)")
    }

    @Test("a built-in rule fires on a real container's memory, is delivered HMAC-signed to a real receiver after its 500 is retried, shows in the delivery log, the events and /metrics, and resolves when the load stops")
    func alertFiresAndResolves() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600", "--metrics-interval", "1"])
        try d.start()
        defer { d.stop() }
        let user = "al\(TestEnv.suffix())"
        defer { box.forceDelete("\(user)-container") }
        let admin = try d.token("admin", roles: "admin"), userT = try d.token(user)
        let created = try HTTP.call("POST", d.base + "/v1/containers", token: userT,
                                    body: HTTP.json(["username": user, "sshKeys": [box.key.publicText], "resources": ["memory": "512MB"]]))
        try #require(created.status == 201, "\(created.text)")
        let env = "\(user)-container"

        // The receiver answers 500 once, then 200.
        let dir = try TestEnv.tempDir("hook")
        defer { TestEnv.cleanup(dir) }
        let hookPort = try DaemonProcess.freePort()
        let received = dir.appendingPathComponent("received.jsonl")
        let receiver = try Spawned("/usr/bin/env", ["python3", Self.receiverScript.path, String(hookPort), received.path, "1"],
                                   name: "webhook_receiver.py", log: dir.appendingPathComponent("receiver.log"))
        defer { receiver.stop() }
        let secret = "hmac-\(UUID().uuidString)"
        let settings = try HTTP.call("PUT", d.base + "/v1/system/alerting", token: admin, body: HTTP.json([
            "webhooks": [["name": "ops", "url": "http://127.0.0.1:\(hookPort)/hook", "format": "generic", "secret": secret]],
            "maxAttempts": 4, "initialBackoffSeconds": 0.5,
        ]))
        try #require(settings.status == 200, "\(settings.text)")
        #expect(!settings.text.contains(secret), "the secret never comes back")
        #expect(settings.json?["webhooks"]?.items?.first?["hasSecret"] == .bool(true))
        // Bad rules are refused before anything is stored.
        for bad in [["name": "Bad Name", "metric": "environment_memory_percent", "threshold": 1],
                    ["name": "x", "metric": "no_such_metric", "threshold": 1],
                    ["name": "x", "metric": "environment_memory_percent", "threshold": 1, "duration": "5 minutes"],
                    ["name": "x", "metric": "environment_memory_percent", "threshold": 1, "webhooks": ["nobody"]]] as [[String: Any]] {
            let r = try HTTP.call("POST", d.base + "/v1/alerts", token: admin, body: HTTP.json(bad))
            #expect(r.status == 400, "\(bad): \(r.status) \(r.text)")
        }
        #expect(try HTTP.call("POST", d.base + "/v1/alerts", token: userT, body: HTTP.json(["name": "u", "metric": "node_unhealthy", "threshold": 0])).status == 403)

        // Memory over 20% of the limit for 2 s: 200 MB of tmpfs pages (charged to the container).
        let rule = try HTTP.call("POST", d.base + "/v1/alerts", token: admin, body: HTTP.json([
            "name": "mem-high", "metric": "environment_memory_percent", "operator": ">", "threshold": 20, "duration": "2s",
            "severity": "critical", "description": "memory over a fifth of the limit", "username": user,
        ]))
        try #require(rule.status == 201, "\(rule.text)")
        let fill = try box.incus(["exec", env, "--", "sh", "-c", "mkdir -p /dev/shm && dd if=/dev/zero of=/dev/shm/fill bs=1M count=200 status=none && sync"])
        try #require(fill.status == 0, "\(fill.output)")

        func deliveries() -> [JSONValue] {
            ((try? String(contentsOf: received, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { try? WireJSON.decode(JSONValue.self, from: Data($0.utf8)) }
        }
        func body(_ row: JSONValue) -> JSONValue? { row["body"]?.stringValue.flatMap { try? WireJSON.decode(JSONValue.self, from: Data($0.utf8)) } }
        try eventually("the firing alert is delivered (after one 500)", within: 90, every: 300_000) {
            deliveries().contains { $0["status"]?.number == 200 && body($0)?["event"]?.stringValue == "alert.firing" }
        }
        let firing = deliveries().filter { body($0)?["event"]?.stringValue == "alert.firing" }
        #expect(firing.count == 2, "one 500, then the retry: \(firing.count)")
        #expect(firing.first?["status"]?.number == 500)
        // Both tries carry the same notification id and a valid signature over "TIMESTAMP.BODY".
        #expect(Set(firing.compactMap { $0["headers"]?["x-containarium-delivery"]?.stringValue }).count == 1)
        for row in firing {
            let text = row["body"]?.stringValue ?? ""
            let ts = row["headers"]?["x-containarium-timestamp"]?.stringValue ?? ""
            let mac = HMAC<SHA256>.authenticationCode(for: Data("\(ts).\(text)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
            let want = "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
            #expect(row["headers"]?["x-containarium-signature"]?.stringValue == want)
        }
        let payload = try #require(firing.last.flatMap(body))
        #expect(payload["labels"]?["rule"]?.stringValue == "mem-high")
        #expect(payload["labels"]?["target"]?.stringValue == env)
        #expect(payload["severity"]?.stringValue == "critical")
        #expect((payload["value"]?.number ?? 0) > 20)
        // The rule shows what fires; the log has both tries; /metrics counts it.
        let listed = try HTTP.call("GET", d.base + "/v1/alerts/mem-high", token: admin).json
        #expect(listed?["instances"]?.items?.first?["state"]?.stringValue == "firing")
        let log = try HTTP.call("GET", d.base + "/v1/alert-deliveries", token: admin).json?["deliveries"]?.items ?? []
        #expect(log.contains { $0["status"]?.number == 500 && $0["willRetry"] == .bool(true) && $0["attempt"]?.number == 1 })
        #expect(log.contains { $0["status"]?.number == 200 && $0["error"]?.stringValue == "" && $0["attempt"]?.number == 2 })
        let metrics = try HTTP.call("GET", d.base + "/metrics", token: admin).text
        #expect(metrics.contains("containarium_alerts_firing{rule=\"mem-high\",severity=\"critical\"} 1"), "\(metrics.split(separator: "\n").filter { $0.contains("alert") })")

        // The load stops: the alert resolves and that is delivered too.
        _ = try box.incus(["exec", env, "--", "rm", "-f", "/dev/shm/fill"])
        try eventually("the resolved alert is delivered", within: 90, every: 300_000) {
            deliveries().contains { $0["status"]?.number == 200 && body($0)?["event"]?.stringValue == "alert.resolved" }
        }
        #expect(try HTTP.call("GET", d.base + "/v1/alerts/mem-high", token: admin).json?["instances"]?.items?.isEmpty ?? true)
        // A test send goes out once, now, and is answered.
        let test = try HTTP.call("POST", d.base + "/v1/alerts/mem-high/test", token: admin, body: "{}")
        #expect(test.status == 200 && test.json?["deliveries"]?.items?.first?["status"]?.number == 200, "\(test.text)")
        #expect(try HTTP.call("DELETE", d.base + "/v1/alerts/mem-high", token: admin).status == 200)
        #expect(try HTTP.call("GET", d.base + "/v1/alerts/mem-high", token: admin).status == 404)
    }
}
