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

    /// A stand-in for systemd in a scratch directory: a fake `systemctl` that records each
    /// call's arguments (one line per call) and exits with `exitCode`, and a runtime directory
    /// that says "systemd runs here" when present. Nothing reaches the host's real systemd.
    struct FakeSystemd {
        let dir: URL
        let unitName = "ctm-test-\(TestEnv.suffix()).service"
        var unitDir: String { dir.appendingPathComponent("units").path }
        var secret: String { dir.appendingPathComponent("etc/jwt.secret").path }
        var unitPath: String { unitDir + "/" + unitName }
        var calls: URL { dir.appendingPathComponent("systemctl.calls") }
        var runtime: URL { dir.appendingPathComponent("run/systemd/system") }

        init(exitCode: Int = 0) throws {
            dir = try TestEnv.tempDir("unit")
            try FileManager.default.createDirectory(at: runtime, withIntermediateDirectories: true)
            let script = "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '\(calls.path)'\nexit \(exitCode)\n"
            let systemctl = dir.appendingPathComponent("systemctl")
            guard FileManager.default.createFile(atPath: systemctl.path, contents: Data(script.utf8), attributes: [.posixPermissions: 0o755]) else {
                throw TestFailure("cannot write \(systemctl.path)")
            }
        }

        /// The environment that points the CLI at this stand-in; `systemd: false` says the machine does not run it.
        func environment(systemd: Bool = true) -> [String: String] {
            ["CONTAINARIUM_SYSTEMCTL": dir.appendingPathComponent("systemctl").path,
             "CONTAINARIUM_SYSTEMD_RUNTIME": systemd ? runtime.path : dir.appendingPathComponent("no-systemd").path]
        }

        /// `containarium service VERB` on this stand-in's paths.
        func service(_ verb: String, _ extra: [String] = [], systemd: Bool = true) throws -> ProcessResult {
            try Run.run(TestEnv.cliPath, ["service", verb, "--unit-dir", unitDir, "--unit-name", unitName, "--secret-file", secret] + extra,
                        environment: environment(systemd: systemd))
        }

        /// The calls recorded so far, one argument string each.
        func recorded() -> [String] {
            ((try? String(contentsOf: calls, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        func cleanup() { TestEnv.cleanup(dir) }
    }

    @Test("install writes the unit and a 0600 secret, then enables and starts it; status and uninstall ask systemctl about that unit only")
    func installUninstall() throws {
        let fake = try FakeSystemd()
        defer { fake.cleanup() }
        let binary = "/opt/ctm/bin/containarium"
        let install = try fake.service("install", ["--binary", binary, "--", "--http-port", "9090"])
        #expect(install.status == 0, "\(install.output)")
        #expect(install.stdout.contains("wrote \(fake.unitPath)") && install.stdout.contains("\(fake.unitName) enabled and started"), "\(install.output)")
        #expect(fake.recorded() == ["daemon-reload", "enable --now \(fake.unitName)"])
        // The unit on disk is exactly what --render-only prints for the same flags.
        let rendered = try Run.run(TestEnv.cliPath, ["service", "install", "--render-only", "--binary", binary, "--secret-file", fake.secret, "--", "--http-port", "9090"])
        #expect(rendered.status == 0, "\(rendered.output)")
        let unit = try String(contentsOfFile: fake.unitPath, encoding: .utf8)
        #expect(unit == rendered.stdout)
        #expect(unit.contains("ExecStart=\(binary) daemon --jwt-secret-file ") && unit.contains(fake.secret) && unit.contains(" --http-port 9090\n"), "\(unit)")
        let unitMode = try FileManager.default.attributesOfItem(atPath: fake.unitPath)[.posixPermissions] as? Int
        #expect(unitMode == 0o644)
        let secretMode = try FileManager.default.attributesOfItem(atPath: fake.secret)[.posixPermissions] as? Int
        #expect(secretMode == 0o600)
        let firstSecret = try String(contentsOfFile: fake.secret, encoding: .utf8)
        #expect(firstSecret.trimmingCharacters(in: .whitespacesAndNewlines).count >= 32)
        #expect(!unit.contains(firstSecret.trimmingCharacters(in: .whitespacesAndNewlines)), "the secret itself never goes into the unit")

        // A second install keeps the secret (existing tokens stay valid).
        #expect(try fake.service("install", ["--binary", binary]).status == 0)
        #expect(try String(contentsOfFile: fake.secret, encoding: .utf8) == firstSecret)
        #expect(Array(fake.recorded().suffix(2)) == ["daemon-reload", "enable --now \(fake.unitName)"])

        let status = try fake.service("status")
        #expect(status.stdout.contains("unit: \(fake.unitPath)") && status.stdout.contains("secret: \(fake.secret)"), "\(status.output)")
        #expect(fake.recorded().last == "--no-pager status \(fake.unitName)")

        let before = fake.recorded().count
        let un = try fake.service("uninstall")
        #expect(un.status == 0, "\(un.output)")
        #expect(Array(fake.recorded().dropFirst(before)) == ["disable --now \(fake.unitName)", "daemon-reload"])
        #expect(!FileManager.default.fileExists(atPath: fake.unitPath))
        #expect(!FileManager.default.fileExists(atPath: fake.secret))
    }

    @Test("without systemd: install writes the files and says how to start the daemon; nothing calls systemctl")
    func withoutSystemd() throws {
        let fake = try FakeSystemd()
        defer { fake.cleanup() }
        let install = try fake.service("install", systemd: false)
        #expect(install.status == 0, "\(install.output)")
        #expect(install.stdout.contains("does not run systemd"), "\(install.output)")
        #expect(FileManager.default.fileExists(atPath: fake.unitPath))
        let status = try fake.service("status", systemd: false)
        #expect(status.stdout.contains("systemd: not running"), "\(status.output)")
        let un = try fake.service("uninstall", ["--keep-secret"], systemd: false)
        #expect(un.status == 0, "\(un.output)")
        #expect(!FileManager.default.fileExists(atPath: fake.unitPath))
        #expect(FileManager.default.fileExists(atPath: fake.secret), "--keep-secret keeps it")
        #expect(fake.recorded().isEmpty)
    }

    @Test("a failing systemctl fails the install; a unit name that is not a service name is refused before anything is written or run")
    func failures() throws {
        let fake = try FakeSystemd(exitCode: 1)
        defer { fake.cleanup() }
        let install = try fake.service("install")
        #expect(install.status != 0 && install.output.contains("systemctl failed"), "\(install.output)")
        #expect(fake.recorded() == ["daemon-reload", "enable --now \(fake.unitName)"])
        for bad in ["../escape.service", "containarium", ".service", "a b.service"] {
            let r = try Run.run(TestEnv.cliPath, ["service", "install", "--unit-dir", fake.unitDir, "--unit-name", bad, "--secret-file", fake.secret],
                                environment: fake.environment())
            #expect(r.status != 0 && r.output.contains("--unit-name"), "\(bad): \(r.output)")
        }
        #expect(fake.recorded().count == 2, "refused names reach no systemctl")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fake.unitDir) == [fake.unitName], "refused names write no unit")
        #expect(!FileManager.default.fileExists(atPath: fake.dir.appendingPathComponent("escape.service").path))
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
