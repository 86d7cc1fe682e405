import ContainariumCore
@testable import ContainariumPlatform
@testable import ContainariumTelemetry
import Foundation
import TestSupport
import Testing

@Suite("Telemetry: the exposition, webhook formats and signatures, alert rules")
struct TelemetryTests {
    @Test("snapshot families escape label values, print integers whole, and declare each family once")
    func exposition() {
        var text = MetricsText()
        text.family("x_total", type: "counter", help: "a \\ help\nline")
        text.family("x_total", type: "counter", help: "again")
        text.sample("x_total", [("a", "q\"u\\o\nte")], 3)
        text.sample("x_total", [], 0.25)
        text.sample("x_total", [], 1e20)
        let out = String(decoding: text.bytes, as: UTF8.self)
        #expect(out == "# HELP x_total a \\\\ help\\nline\n# TYPE x_total counter\nx_total{a=\"q\\\"u\\\\o\\nte\"} 3\nx_total 0.25\nx_total 1e+20\n")
    }

    @Test("a daemon's registry renders its instruments, its process and its collectors; one name keeps one help text")
    func render() {
        let t = Telemetry(version: "9.9", reuseFor: .zero)
        t.apiRequest(interface: "rest", route: "/v1/containers", method: "GET", code: "200", elapsed: .milliseconds(3))
        t.apiRequest(interface: "rest", route: "/v1/containers", method: "GET", code: "200", elapsed: .milliseconds(30))
        t.addCollector { text in
            text.family("y", type: "gauge", help: "y")
            text.sample("y", [("k", "v")], 7)
        }
        let out = String(decoding: t.render(), as: UTF8.self)
        #expect(out.contains("containarium_build_info{version=\"9.9\"} 1"))
        #expect(out.contains("containarium_api_requests_total{interface=\"rest\",route=\"/v1/containers\",method=\"GET\",code=\"200\"} 2"))
        #expect(out.contains("containarium_api_request_duration_seconds_bucket{interface=\"rest\",route=\"/v1/containers\",method=\"GET\",le=\"0.005\"} 1"))
        #expect(out.contains("containarium_api_request_duration_seconds_count{interface=\"rest\",route=\"/v1/containers\",method=\"GET\"} 2"))
        #expect(out.contains("y{k=\"v\"} 7"))
        #expect(out.contains("process_resident_memory_bytes "))
        #expect(out.contains("process_open_fds "))
        // The format's own rule: every sample line belongs to a declared family.
        var declared = Set<String>()
        for line in out.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") { declared.insert(String(line.split(separator: " ")[2])) }
            else if !line.hasPrefix("#") {
                let name = String(line.prefix { $0 != "{" && $0 != " " })
                let family = ["_bucket", "_sum", "_count"].reduce(name) { n, s in n.hasSuffix(s) && declared.contains(String(n.dropLast(s.count))) ? String(n.dropLast(s.count)) : n }
                #expect(declared.contains(family), "\(line)")
            }
        }
    }

    @Test("scrapes within reuseFor share one render; the next one renders anew")
    func reuse() throws {
        let t = Telemetry(version: "1", reuseFor: .milliseconds(300))
        func hit() { t.apiRequest(interface: "rest", route: "/z", method: "GET", code: "200", elapsed: .milliseconds(1)) }
        let series = "containarium_api_requests_total{interface=\"rest\",route=\"/z\",method=\"GET\",code=\"200\"}"
        hit()
        let first = String(decoding: t.render(), as: UTF8.self)
        hit()
        #expect(String(decoding: t.render(), as: UTF8.self) == first, "reused")
        Thread.sleep(forTimeInterval: 0.35)
        #expect(String(decoding: t.render(), as: UTF8.self).contains(series + " 2"))
        #expect(first.contains(series + " 1"))
    }

    @Test("the signature is HMAC-SHA256 of TIMESTAMP.BODY, as Python's hmac computes it")
    func signature() throws {
        let body = Data(#"{"event":"alert.firing","x":"ü"}"#.utf8)
        let ours = WebhookSender.signature(secret: "s3cret", timestamp: 1_764_547_200, body: body)
        let dir = try TestEnv.tempDir("sig")
        defer { TestEnv.cleanup(dir) }
        let file = dir.appendingPathComponent("body")
        try body.write(to: file)
        let py = try Run.run("/usr/bin/env", ["python3", "-c",
            "import hmac,hashlib,sys; b=open(sys.argv[1],'rb').read(); print('sha256='+hmac.new(b's3cret', b'1764547200.'+b, hashlib.sha256).hexdigest())", file.path])
        #expect(py.status == 0)
        #expect(ours == py.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test("webhooks are checked before they are stored: names, URLs without credentials, what Zulip needs, nothing Zulip's elsewhere")
    func webhookValidation() {
        func bad(_ w: WebhookTarget) -> Bool { (try? w.validate()) == nil }
        #expect(!bad(WebhookTarget(name: "ops", url: "https://hooks.example/x", secret: "k")))
        #expect(bad(WebhookTarget(name: "Ops Team", url: "https://hooks.example/x")))
        #expect(bad(WebhookTarget(name: "ops", url: "ftp://hooks.example/x")))
        #expect(bad(WebhookTarget(name: "ops", url: "https://user:pw@hooks.example/x")))
        #expect(bad(WebhookTarget(name: "ops", url: "https:///nohost")))
        #expect(bad(WebhookTarget(name: "ops", url: "https://hooks.example/x", secret: "")))
        #expect(bad(WebhookTarget(name: "z", url: "https://zulip.example/api/v1/messages", format: .zulip, secret: "key", zulipStream: "ops")))
        #expect(bad(WebhookTarget(name: "z", url: "https://zulip.example/api/v1/messages", format: .zulip, zulipBotEmail: "bot@zulip.example", zulipStream: "ops")))
        #expect(!bad(WebhookTarget(name: "z", url: "https://zulip.example/api/v1/messages", format: .zulip, secret: "key",
                                   zulipBotEmail: "bot@zulip.example", zulipStream: "ops", zulipTopic: "alerts")))
        #expect(bad(WebhookTarget(name: "s", url: "https://hooks.slack.example/x", format: .slack, zulipStream: "ops")))
    }

    @Test("Slack gets text and blocks; Zulip's form is percent-encoded; the generic JSON is snake_case")
    func formats() throws {
        let n = Notification(id: "n1", event: "alert.firing", title: "Critical: mem-high on a-container", text: "memory 95 > 90 & rising",
                             severity: "critical", labels: ["rule": "mem-high"], value: 95, threshold: 90, startsAt: Date(timeIntervalSince1970: 0), source: "test")
        let slack = try WireJSON.decode(JSONValue.self, from: WebhookSender.slackBody(n))
        #expect(slack["text"]?.stringValue?.contains("mem-high on a-container") == true)
        #expect(slack["blocks"]?.items?.count == 2)
        #expect(WebhookSender.form([("content", "a b&c=d/é")]) == "content=a%20b%26c%3Dd%2F%C3%A9")
        let generic = try WireJSON.decode(JSONValue.self, from: WebhookSender.encoder.encode(n))
        #expect(generic["starts_at"]?.stringValue == "1970-01-01T00:00:00Z")
        #expect(generic["labels"]?["rule"]?.stringValue == "mem-high")
    }

    @Test("alert rules: every field checked (names, metrics, operators, durations, severities, scope); conditions hold as written")
    func rules() throws {
        func make(_ name: String = "r", metric: String = "environment_memory_percent", op: String = ">", threshold: Double = 90, duration: String = "5m",
                  severity: String = "", username: String = "") throws(ContainariumError) -> AlertRuleRecord {
            try AlertRuleRecord.make(name: name, metric: metric, op: op, threshold: threshold, duration: duration, severity: severity, description: "",
                                     disabled: false, username: username, webhooks: [])
        }
        #expect(try make(duration: "90s").durationSeconds == 90)
        #expect(try make(duration: "1h30m").durationSeconds == 5400)
        #expect(try make(duration: "").durationSeconds == 0)
        #expect(try make().severity == "warning")
        for d in ["5 minutes", "5", "m", "25h", "-1m", "1.5h"] { #expect(throws: ContainariumError.self, "\(d)") { try make(duration: d) } }
        #expect(throws: ContainariumError.self) { try make("Bad_Name") }
        #expect(throws: ContainariumError.self) { try make(metric: "load") }
        #expect(throws: ContainariumError.self) { try make(op: "=") }
        #expect(throws: ContainariumError.self) { try make(threshold: .nan) }
        #expect(throws: ContainariumError.self) { try make(severity: "page") }
        #expect(throws: ContainariumError.self) { try make(metric: "node_unhealthy", username: "alice") }
        #expect(throws: ContainariumError.self) { try make(username: "Not A User") }
        let r = try make(op: ">=", threshold: 90)
        #expect(r.holds(90) && r.holds(91) && !r.holds(89.9))
        #expect(try make(op: "<", threshold: 1).holds(0))
    }
}
