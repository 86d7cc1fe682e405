import ContainariumCore
import Foundation
import TestSupport
import Testing

/// The dashboard end to end: real headless Chromium (Debian's) driven by Playwright
/// (Tests/Web/dashboard_e2e.py) against a real daemon on real Incus. scripts/test.sh installs
/// Chromium, Playwright and the dashboard's libraries and sets the variables read here.
/// CONTAINARIUM_SKIP_BROWSER=1 skips the browser tests (reported as skipped); without it, a
/// missing browser setup is a failure.
///
/// Screenshots go to a scratch directory, removed with the test's sandbox, so a test run never
/// changes the committed docs/screenshots. CONTAINARIUM_SCREENSHOT_DIR names a directory to
/// keep them in instead: scripts/refresh-screenshots.sh sets it to docs/screenshots.
@Suite("Web dashboard in real Chromium, on real Incus", .needsIncus, .serialized)
struct WebDashboardTests {
    static let python = ProcessInfo.processInfo.environment["CONTAINARIUM_PLAYWRIGHT_PYTHON"]
    static let webui = ProcessInfo.processInfo.environment["CONTAINARIUM_WEBUI_DIR"]
    static let skipBrowser = ProcessInfo.processInfo.environment["CONTAINARIUM_SKIP_BROWSER"] == "1"

    /// Where a browser test saves its screenshots: $CONTAINARIUM_SCREENSHOT_DIR when set (kept),
    /// else a directory inside the test's own scratch directory (removed with it).
    static func screenshotDir(scratch: URL) -> String {
        if let keep = ProcessInfo.processInfo.environment["CONTAINARIUM_SCREENSHOT_DIR"], !keep.isEmpty { return keep }
        return scratch.appendingPathComponent("screenshots").path
    }

    @Test("add a server, create with a browser-generated key, see it live, terminal with resize, roles, accessibility, audit, delete", .needsBrowser)
    func dashboard() throws {
        guard let python = Self.python, let webui = Self.webui else {
            throw TestFailure("CONTAINARIUM_PLAYWRIGHT_PYTHON and CONTAINARIUM_WEBUI_DIR are not set: run scripts/test.sh, or set CONTAINARIUM_SKIP_BROWSER=1")
        }
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--webui-dir", webui, "--reconcile-interval", "3600", "--metrics-interval", "1"])
        try d.start()
        defer { d.stop() }
        let sfx = TestEnv.suffix()
        let user = "wb\(sfx)", other = "wo\(sfx)"
        let admin = try d.token("admin", roles: "admin")
        let userToken = try d.token(other)
        // The user token's own environment (it must see this one and nothing else).
        let own = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json(["username": other, "sshKeys": [box.key.publicText]]))
        #expect(own.status == 201, "\(own.text)")

        let shots = Self.screenshotDir(scratch: box.dir)
        let r = try Run.run(python, [TestEnv.repoRoot.appendingPathComponent("Tests/Web/dashboard_e2e.py").path, "--base", d.base,
                                     "--admin-token", admin, "--user-token", userToken, "--user", user, "--other-user", other,
                                     "--screenshots", shots], timeout: 900)
        #expect(r.status == 0, "\(r.output)\n--- daemon log ---\n\(d.log.suffix(4000))")
        let results = r.stdout.split(separator: "\n").last.flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
        #expect(results?["deleted"] == .bool(true) && results?["sshWithBrowserKey"] == .bool(true), "\(r.stdout)")
        // What the browser did, seen from the daemon: the environment is gone from Incus, and
        // the terminal session was audited with its account and exit status.
        #expect(try !box.exists("\(user)-container"))
        let audit = try HTTP.call("GET", d.base + "/v1/audit?action=terminal.close&limit=10", token: admin).json?["entries"]?.items ?? []
        #expect(audit.contains { $0["target"]?.stringValue == user && ($0["detail"]?.stringValue?.contains("exit 3") ?? false) }, "\(audit)")
        // Static files are public; everything under /v1 still needs a token.
        #expect(try HTTP.call("GET", d.base + "/webui/app.js").status == 200)
        #expect(try HTTP.call("GET", d.base + "/webui/../jwt.secret").status == 404)
        #expect(try HTTP.call("GET", d.base + "/v1/containers/\(other)/terminal").status == 401)
    }
}

extension Trait where Self == ConditionTrait {
    /// Tests that drive a real browser; CONTAINARIUM_SKIP_BROWSER=1 skips them.
    static var needsBrowser: ConditionTrait { .enabled(if: !WebDashboardTests.skipBrowser, "CONTAINARIUM_SKIP_BROWSER=1") }
}
