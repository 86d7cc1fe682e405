import ContainariumCore
import Foundation
import TestSupport
import Testing

/// Every REST route against every kind of caller, with the status each must get.
@Suite("Authorization matrix, on real Incus", .needsIncus, .serialized)
struct AuthorizationMatrixTests {
    /// In this order for each route: the collaborator and the node identity before the owner,
    /// whose successful delete (the last route) would leave them nothing to be refused.
    enum Caller: String, CaseIterable {
        case none, expired, forged, notOwner = "user-not-owner", node, collaborator, owner = "user-owner", admin
        /// A metrics token: 403 on every route but GET /metrics.
        case scraper = "metrics"
    }

    struct Route {
        var method: String
        var path: String
        var body: String?
        /// Expected status for user-not-owner, a collaborator, user-owner and admin (the three
        /// unauthenticated kinds always get 401, a node identity always 403: REST is not for it).
        var notOwner: Int
        var collaborator: Int
        var owner: Int
        var admin: Int
        /// A metrics token's answer (403 but on /metrics).
        var scraper: Int = 403
    }

    @Test("every route x {no token, expired, forged, user-not-owner, node identity, collaborator, user-owner, admin}")
    func matrix() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box)
        try d.start()
        defer { d.stop() }
        let sfx = TestEnv.suffix()
        let owner = "mo\(sfx)", stranger = "ms\(sfx)", friend = "mf\(sfx)", collaborator = "mc\(sfx)"
        defer { box.forceDelete("\(owner)-container") }
        let admin = try d.token("admin", roles: "admin")
        let tokens: [Caller: String?] = [
            .none: nil,
            .expired: try d.token(owner, roles: "user", expiry: "1s"),
            .forged: try d.token("admin", roles: "admin", secret: String(d.secret.reversed()) + "-forged-secret"),
            .notOwner: try d.token(stranger),
            .node: try d.token("node.mn\(sfx)", roles: "node"),
            .collaborator: try d.token(collaborator),
            .owner: try d.token(owner),
            .admin: admin,
            .scraper: try d.token("prometheus", roles: "metrics"),
        ]
        let key = box.key.publicText.trimmingCharacters(in: .whitespacesAndNewlines)
        let accepted = try HTTP.call("POST", d.base + "/v1/containers", token: admin, body: HTTP.json(["username": owner, "sshKeys": [key], "async": true]))
        #expect(accepted.status == 202, "\(accepted.text)")
        let op = try #require(accepted.json?["id"]?.stringValue)
        try eventually("the owner's environment is created", within: 180) {
            try HTTP.call("GET", d.base + "/v1/operations/\(op)", token: admin).json?["state"]?.stringValue == "OPERATION_STATE_SUCCEEDED"
        }
        let joined = try HTTP.call("POST", d.base + "/v1/containers/\(owner)/collaborators", token: admin, body: HTTP.json(["collaboratorUsername": collaborator]))
        #expect(joined.status == 201, "\(joined.text)")
        usleep(1_500_000)  // the expired token's one second has passed

        let c = "/v1/containers/\(owner)"
        let routes: [Route] = [
            Route(method: "POST", path: "/v1/containers", body: HTTP.json(["username": owner, "sshKeys": [key]]), notOwner: 403, collaborator: 403, owner: 409, admin: 409),
            Route(method: "GET", path: "/v1/containers", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: c, notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "POST", path: c + "/stop", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "POST", path: c + "/start", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "POST", path: c + "/restart", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "PUT", path: c + "/resize", body: #"{"resources": {"memory": "600MB"}}"#, notOwner: 403, collaborator: 403, owner: 200, admin: 200),
            Route(method: "POST", path: c + "/install-stack", body: #"{"stack": "no-such-stack"}"#, notOwner: 403, collaborator: 400, owner: 400, admin: 400),
            Route(method: "POST", path: c + "/cleanup-disk", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: c + "/ssh-keys", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "POST", path: c + "/ssh-keys", body: HTTP.json(["sshPublicKey": key]), notOwner: 403, collaborator: 403, owner: 409, admin: 409),
            Route(method: "DELETE", path: c + "/ssh-keys?fingerprint=SHA256%3Anope", notOwner: 403, collaborator: 403, owner: 404, admin: 404),
            Route(method: "GET", path: c + "/collaborators", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "POST", path: c + "/collaborators", body: HTTP.json(["collaboratorUsername": friend]), notOwner: 403, collaborator: 403, owner: 201, admin: 409),
            Route(method: "DELETE", path: c + "/collaborators/\(friend)", notOwner: 403, collaborator: 403, owner: 200, admin: 404),
            Route(method: "GET", path: "/v1/system/info", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/metrics", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/backends", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/plugins", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/operations/\(op)", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/audit", notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "GET", path: "/v1/events", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/nodes", notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "POST", path: "/v1/nodes/no-such-node/drain", notOwner: 403, collaborator: 403, owner: 403, admin: 404),
            Route(method: "POST", path: "/v1/nodes/no-such-node/undrain", notOwner: 403, collaborator: 403, owner: 403, admin: 404),
            Route(method: "DELETE", path: "/v1/nodes/no-such-node", notOwner: 403, collaborator: 403, owner: 403, admin: 404),
            Route(method: "POST", path: "/v1/schedule/explain", body: #"{"resources": {"cpu": "1"}}"#, notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "GET", path: "/v1/catalog", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/revocations", notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "POST", path: "/v1/revocations", body: HTTP.json(["subject": "nobody-at-all"]), notOwner: 403, collaborator: 403, owner: 403, admin: 201),
            Route(method: "GET", path: "/v1/metrics/node", notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "GET", path: c + "/metrics", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: c + "/ssh-config", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            // A sign-in secret is the owner's: a collaborator is refused before the backend (LXC keeps none: 501) is asked.
            Route(method: "GET", path: c + "/credentials", notOwner: 403, collaborator: 403, owner: 501, admin: 501),
            // Scans: no scanner plugin is enabled here, so an authorized scan of one environment is
            // refused before it is queued (412); `all` is the admins' (each environment's failed
            // report says why); reports and summaries are everyone's, over what they may see.
            Route(method: "POST", path: "/v1/security/clamav-scan", body: HTTP.json(["username": owner]), notOwner: 403, collaborator: 412, owner: 412, admin: 412),
            Route(method: "POST", path: "/v1/security/trivy-scan", body: #"{"all": true}"#, notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "GET", path: "/v1/security/clamav-summary", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/security/trivy-reports?username=\(owner)", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/security/clamav-reports", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/security/trivy-reports.csv?username=\(owner)", notOwner: 403, collaborator: 200, owner: 200, admin: 200),
            Route(method: "GET", path: "/v1/security/clamav-reports.csv?user=\(owner)", notOwner: 400, collaborator: 400, owner: 400, admin: 400),
            // Metrics: an admin's or a metrics token; alerting: admins; the dashboards' addresses: every user.
            Route(method: "GET", path: "/metrics", notOwner: 403, collaborator: 403, owner: 403, admin: 200, scraper: 200),
            Route(method: "GET", path: "/v1/alerts", notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "POST", path: "/v1/alerts", body: #"{"name": "m-rule", "metric": "node_unhealthy", "threshold": 0}"#, notOwner: 403, collaborator: 403, owner: 403, admin: 201),
            Route(method: "PUT", path: "/v1/alerts/m-rule", body: #"{"metric": "node_unhealthy", "threshold": 0, "disabled": true}"#, notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "POST", path: "/v1/alerts/m-rule/test", body: "{}", notOwner: 403, collaborator: 403, owner: 403, admin: 412),
            Route(method: "DELETE", path: "/v1/alerts/m-rule", notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "GET", path: "/v1/alert-deliveries", notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "GET", path: "/v1/system/alerting", notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "PUT", path: "/v1/system/alerting", body: #"{"webhooks": []}"#, notOwner: 403, collaborator: 403, owner: 403, admin: 200),
            Route(method: "GET", path: "/v1/system/monitoring", notOwner: 200, collaborator: 200, owner: 200, admin: 200),
            // Without a WebSocket upgrade: authorized, then told to upgrade.
            Route(method: "GET", path: c + "/terminal", notOwner: 403, collaborator: 400, owner: 400, admin: 400),
            Route(method: "GET", path: c + "/vnc", notOwner: 403, collaborator: 400, owner: 400, admin: 400),
            // Last: the owner's delete succeeds, so the admin's finds nothing.
            Route(method: "DELETE", path: c, notOwner: 403, collaborator: 403, owner: 200, admin: 404),
        ]
        var table: [String] = []
        var mismatches: [String] = []
        for r in routes {
            var row = "\(r.method) \(r.path)"
            for caller in Caller.allCases {
                let expected: Int
                switch caller {
                case .none, .expired, .forged: expected = 401
                case .notOwner: expected = r.notOwner
                case .node: expected = 403
                case .collaborator: expected = r.collaborator
                case .owner: expected = r.owner
                case .admin: expected = r.admin
                case .scraper: expected = r.scraper
                }
                let token = tokens[caller] ?? nil
                let res = try HTTP.call(r.method, d.base + r.path, token: token, body: r.body, timeout: r.path.hasSuffix("/events") ? 2 : 600)
                row += "  \(caller.rawValue)=\(res.status)"
                if res.status != expected { mismatches.append("\(r.method) \(r.path) as \(caller.rawValue): got \(res.status), expected \(expected): \(res.text.prefix(200))") }
                if expected == 401 { #expect(res.headers.lowercased().contains("www-authenticate: bearer")) }
            }
            table.append(row)
        }
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))\n\(table.joined(separator: "\n"))")
        #expect(routes.count == 54)
        // Refused credentials (none, expired and forged for each route, all from one address)
        // are audited up to the daemon's limit per address and minute (20), not one row each.
        let failures = try HTTP.call("GET", d.base + "/v1/audit?action=auth.failure&limit=1000", token: admin).json?["entries"]?.items ?? []
        #expect(failures.count >= 20 && failures.count < routes.count * 3, "\(failures.count) rows")
        #expect(try !box.exists("\(owner)-container"))
    }
}
