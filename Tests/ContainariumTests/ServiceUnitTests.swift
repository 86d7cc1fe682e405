import Foundation
import TestSupport
import Testing

@Suite("containarium service install|uninstall|status")
struct ServiceUnitTests {
    @Test("the rendered unit runs the daemon with the secret file, restarts on failure and hardens the process")
    func render() throws {
        let r = try Run.run(TestEnv.cliPath, ["service", "install", "--render-only", "--binary", "/opt/ctm/bin/containarium", "--secret-file", "/etc/ctm/jwt secret", "--", "--mtls", "--http-port", "9090"])
        #expect(r.status == 0, "\(r.output)")
        let unit = r.stdout
        #expect(unit.contains(#"ExecStart=/opt/ctm/bin/containarium daemon --jwt-secret-file "/etc/ctm/jwt secret" --mtls --http-port 9090"#))
        for line in ["Restart=on-failure", "KillSignal=SIGTERM", "NoNewPrivileges=yes", "UMask=0077", "WantedBy=multi-user.target", "Requires=incus.service"] {
            #expect(unit.contains(line), "\(line)")
        }
        #expect(!unit.contains("jwt-secret "), "the secret itself never goes into the unit")
    }

    @Test("install writes the unit and a 0600 secret; uninstall removes both; no systemd is said plainly")
    func installUninstall() throws {
        let dir = try TestEnv.tempDir("unit")
        defer { TestEnv.cleanup(dir) }
        let unitDir = dir.appendingPathComponent("units").path, secret = dir.appendingPathComponent("etc/jwt.secret").path
        let install = try Run.run(TestEnv.cliPath, ["service", "install", "--unit-dir", unitDir, "--secret-file", secret])
        #expect(install.status == 0, "\(install.output)")
        let hasSystemd = FileManager.default.fileExists(atPath: "/run/systemd/system")
        if !hasSystemd { #expect(install.stdout.contains("does not run systemd")) }
        #expect(FileManager.default.fileExists(atPath: unitDir + "/containarium.service"))
        let attrs = try FileManager.default.attributesOfItem(atPath: secret)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        let firstSecret = try String(contentsOfFile: secret, encoding: .utf8)
        #expect(firstSecret.trimmingCharacters(in: .whitespacesAndNewlines).count >= 32)
        // A second install keeps the secret (existing tokens stay valid).
        _ = try Run.run(TestEnv.cliPath, ["service", "install", "--unit-dir", unitDir, "--secret-file", secret])
        #expect(try String(contentsOfFile: secret, encoding: .utf8) == firstSecret)
        let status = try Run.run(TestEnv.cliPath, ["service", "status", "--unit-dir", unitDir, "--secret-file", secret])
        #expect(status.stdout.contains(unitDir + "/containarium.service"))
        let un = try Run.run(TestEnv.cliPath, ["service", "uninstall", "--unit-dir", unitDir, "--secret-file", secret])
        #expect(un.status == 0, "\(un.output)")
        #expect(!FileManager.default.fileExists(atPath: unitDir + "/containarium.service"))
        #expect(!FileManager.default.fileExists(atPath: secret))
    }

    @Test("token generate refuses a missing or short secret and unknown roles")
    func tokenCLI() throws {
        let secret = "0123456789abcdef0123456789abcdef"
        let ok = try Run.run(TestEnv.cliPath, ["token", "generate", "--username", "alice", "--roles", "user", "--expiry", "1h", "--secret", secret])
        #expect(ok.status == 0 && ok.stdout.split(separator: ".").count == 3)
        #expect(try Run.run(TestEnv.cliPath, ["token", "generate", "--username", "alice"], environment: ["CONTAINARIUM_JWT_SECRET": ""]).status != 0)
        #expect(try Run.run(TestEnv.cliPath, ["token", "generate", "--username", "alice", "--secret", "short"]).status != 0)
        #expect(try Run.run(TestEnv.cliPath, ["token", "generate", "--username", "alice", "--roles", "root", "--secret", secret]).status != 0)
        #expect(try Run.run(TestEnv.cliPath, ["token", "generate", "--username", "Alice!", "--secret", secret]).status != 0)
    }
}
