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

    @Test("a bounded schemathesis run as admin and as a plain user finds no server error and no schema violation")
    func fuzz() throws {
        guard let st = Self.schemathesis else { throw TestFailure("schemathesis is not installed: scripts/test.sh installs it from PyPI") }
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box)
        try d.start()
        defer { d.stop() }
        let examples = ProcessInfo.processInfo.environment["CONTAINARIUM_FUZZ_EXAMPLES"] ?? "12"
        for (who, roles) in [("admin", "admin"), ("fuzzer", "user")] {
            let token = try d.token(who, roles: roles)
            func fuzz(seed: String?) throws -> ProcessResult {
                try Run.run(st, [
                    "run", d.base + "/openapi.json", "-H", "Authorization: Bearer \(token)", "--max-examples", examples, "--workers", "2",
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
                print("schemathesis as \(who) failed internally (no finding); rerunning once")
                r = try fuzz(seed: nil)
            }
            let summary = r.stdout.split(separator: "\n").filter { $0.contains("generated") || $0.contains("Seed") || $0.contains("❌") }
            print("schemathesis as \(who): \(summary.joined(separator: " | "))")
            #expect(r.status == 0, "schemathesis as \(who) found failures:\n\(r.stdout.suffix(6000))")
            #expect(r.stdout.contains("generated"), "\(r.output.suffix(2000))")
            #expect(try HTTP.call("GET", d.base + "/healthz").status == 200, "the daemon survived")
        }
        #expect(!d.log.contains("Fatal error"))
        // Nothing the fuzzer sent left an environment behind.
        let list = try HTTP.call("GET", d.base + "/v1/containers", token: try d.token("admin", roles: "admin"))
        #expect(list.json?["totalCount"]?.number == 0, "\(list.text)")
    }
}
