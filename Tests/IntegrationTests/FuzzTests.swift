import ContainariumCore
import Foundation
import TestSupport
import Testing

/// schemathesis (from PyPI, an independent client) fuzzes the REST API from its own OpenAPI
/// document: no 5xx, responses that match the document, and a daemon that survives.
@Suite("REST API fuzzing with schemathesis, on real Incus", .needsIncus, .serialized)
struct FuzzTests {
    static var schemathesis: String? {
        if let explicit = ProcessInfo.processInfo.environment["CONTAINARIUM_SCHEMATHESIS"], FileManager.default.isExecutableFile(atPath: explicit) {
            return explicit
        }
        let candidates = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/schemathesis" }
            + ["/usr/local/bin/schemathesis", "/root/.pyenv/shims/schemathesis"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test("schemathesis (40 examples per operation, every check) as admin and as a plain user finds no server error and no schema violation")
    func fuzz() throws {
        guard let st = Self.schemathesis else { throw TestFailure("schemathesis is not installed: scripts/test.sh installs it from PyPI") }
        // Creates succeed without keys, so the fuzzer makes real environments: container
        // runtimes (minutes of apt each) are not offered on this node, which makes every
        // enablePodman/enableDocker a 400 here.
        let box = try IncusEnv.Sandbox(ownProject: true, extraConfig: ["runtimes": [String]()])
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box)
        try d.start()
        defer { d.stop() }
        let examples = ProcessInfo.processInfo.environment["CONTAINARIUM_FUZZ_EXAMPLES"] ?? "40"
        // The document's example user exists, so every route that answers with an environment
        // (get, start, stop, restart, resize, keys, ssh-config...) is checked against real data.
        let admin = try d.token("admin", roles: "admin")
        let alice = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json([
            "username": "alice", "sshKeys": [box.key.publicText], "resources": ["memory": "256MB"],
        ]))
        #expect(alice.status == 201, "\(alice.text)")
        for (who, roles) in [("admin", "admin"), ("fuzzer", "user")] {
            let token = try d.token(who, roles: roles)
            func fuzz(seed: String?) throws -> ProcessResult {
                try Run.run(st, [
                    "run", d.base + "/openapi.json", "-H", "Authorization: Bearer \(token)", "--max-examples", examples,
                    // One worker: with two threads, hypothesis's lambda-source parsing races in
                    // CPython 3.11's ast ("AST constructor recursion depth mismatch", KeyError in
                    // lambda_sources): the tool fails internally, with no finding.
                    "--workers", "1",
                    // Creates and execs are real work on a 2-core machine: a slow answer is not a finding.
                    // Both limits explicit: with `--checks all` schemathesis otherwise holds every
                    // response to 10 s, and a real create under load can take longer.
                    "--request-timeout", "90", "--max-response-time", "60",
                    // The event stream never ends by design (each call would wait out the timeout);
                    // DaemonRESTTests reads it. The WebSocket routes stay: a plain GET is a 400.
                    "--exclude-path", "/v1/events",
                    // An LXC environment keeps no sign-in secret: its documented answer is 501
                    // `unsupported` (a 5xx, which schemathesis counts as a server error whatever it
                    // says). AuthorizationMatrixTests and SecurityTests check that route.
                    "--exclude-path", "/v1/containers/{username}/credentials",
                    // Reserved user names (root, admin, ...) cannot be expressed in the document's
                    // pattern, so "schema-valid input rejected" is not a finding here.
                    "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--no-color",
                ] + (seed.map { ["--seed", $0] } ?? []), environment: ["SCHEMATHESIS_TELEMETRY": "false"], timeout: 900)
            }
            var r = try fuzz(seed: ProcessInfo.processInfo.environment["CONTAINARIUM_FUZZ_SEED"])
            // schemathesis itself sometimes fails inside its own generator (a Python exception,
            // no finding against the API): that is the tool's error, not ours; run once more.
            let findings = r.stdout.contains("Failures:") || r.stdout.contains("❌ ST")
            if r.status != 0 && !findings && (r.stdout.contains("Traceback") || r.stdout.contains("Error:") || r.stdout.contains("KeyError")) {
                print("schemathesis as \(who) failed internally (no finding); rerunning once. Its output ended:\n\(r.output.suffix(1500))")
                r = try fuzz(seed: nil)
            }
            let summary = r.stdout.split(separator: "\n").filter { $0.contains("generated") || $0.contains("Seed") || $0.contains("❌") }
            print("schemathesis as \(who): \(summary.joined(separator: " | "))")
            #expect(r.status == 0, "schemathesis as \(who) found failures:\n\(r.stdout.suffix(6000))")
            #expect(r.stdout.contains("generated"), "\(r.output.suffix(2000))")
            #expect(try HTTP.call("GET", d.base + "/healthz").status == 200, "the daemon survived")
        }
        #expect(!d.log.contains("Fatal error"))
        // Whatever the fuzzer created or broke, the daemon's view and Incus agree: no half-made
        // container without a record, no record without a container.
        try eventually("the daemon's list matches Incus", within: 60) {
            let listed = Set((try HTTP.call("GET", d.base + "/v1/containers", token: admin).json?["containers"]?.items ?? [])
                .compactMap { $0["name"]?.stringValue })
            let incus = Set(try box.incus(["list", "--format", "csv", "--columns", "n"]).stdout.split(separator: "\n").map(String.init))
            return listed == incus
        }
    }
}
