import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import ContainariumService
import ContainariumStore
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import PluginHost
import TestSupport
import Testing

/// The REST adapter as the daemon serves it (RESTAPI as the application's responder), driven
/// through Hummingbird's router test client: every request goes through routing,
/// authentication, strict decoding and the error mapping, without a socket.
@Suite("REST in process")
struct RESTTests {
    /// The kinds of caller, in the order each route is tried.
    enum Who: String, CaseIterable {
        case none, expired, garbage, forged, wrongScheme, node, stranger, friend, owner, admin
        /// A metrics token: GET /metrics and nothing else (403 wherever a route says nothing).
        case scraper
        var authenticated: Bool { ![.none, .expired, .garbage, .forged, .wrongScheme].contains(self) }
    }

    struct Reply {
        var status: Int
        var headers: HTTPFields
        var text: String
        var json: JSONValue? { try? WireJSON.decode(JSONValue.self, from: Data(text.utf8)) }
        var errorCode: String? { json?["error"]?["code"]?.stringValue }
    }

    static func app(_ h: Harness) -> some ApplicationProtocol {
        Application(responder: RESTAPI(plane: h.plane, tokens: h.tokens, swaggerDir: nil), logger: Harness.quiet)
    }

    static func send(_ client: some TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, token: String?, body: String? = nil,
                     authorization: String? = nil) async throws -> Reply {
        var headers = HTTPFields()
        if let authorization { headers[.authorization] = authorization } else if let token { headers[.authorization] = "Bearer \(token)" }
        if body != nil { headers[.contentType] = "application/json" }
        let r = try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        return Reply(status: Int(r.status.code), headers: r.headers, text: String(buffer: r.body))
    }

    /// Tokens for every kind of caller (the unauthenticated ones: expired, garbage, forged).
    static func tokens(_ h: Harness) async throws -> [Who: String] {
        let forger = try await Tokens(secret: String(Harness.secret.reversed()) + "-forged")
        return [
            .expired: try await h.token("alice", expiresIn: 60, now: Date().addingTimeInterval(-7200)),
            .garbage: "this.is.not-a-jwt",
            .forged: try await forger.generate(username: "admin", roles: [.admin], expiresIn: 3600),
            .wrongScheme: try await h.token("alice"),
            .node: try await h.token("node.other", .node),
            .stranger: try await h.token("mallory"),
            .friend: try await h.token("carol"),
            .owner: try await h.token("alice"),
            .admin: try await h.token("admin", .admin),
            .scraper: try await h.token("prometheus", .metrics),
        ]
    }

    struct Route {
        var method: HTTPRequest.Method
        var path: String
        var body: (@Sendable (Who) -> String)?
        /// Expected status per authenticated caller.
        var expect: [Who: Int]
    }

    @Test("authorization matrix: every route x {no token, expired, garbage, forged, wrong scheme, node, another user, collaborator, owner, admin}; the owner's keys and resources are not a collaborator's")
    func matrix() async throws {
        try await Harness.with { (h: Harness) async throws in
            try await h.create("alice")
            _ = try await h.plane.addCollaborator(Harness.caller("alice"), "alice", collaborator: "carol")
            let tokens = try await Self.tokens(h)
            let c = "/v1/containers/alice"
            func std(_ ok: Int) -> [Who: Int] { [.node: 403, .stranger: 403, .friend: ok, .owner: ok, .admin: ok] }
            /// The owner's own (and admins'): not a collaborator's.
            func owners(_ ok: Int) -> [Who: Int] { [.node: 403, .stranger: 403, .friend: 403, .owner: ok, .admin: ok] }
            let key = Harness.sshKey()
            let routes: [Route] = [
                Route(method: .post, path: "/v1/containers", body: { _ in #"{"username": "alice", "sshKeys": ["\#(key)"]}"# },
                      expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 409, .admin: 409]),
                Route(method: .get, path: "/v1/containers", expect: [.node: 403, .stranger: 200, .friend: 200, .owner: 200, .admin: 200]),
                Route(method: .get, path: c, expect: std(200)),
                Route(method: .post, path: c + "/stop", expect: std(200)),
                Route(method: .post, path: c + "/start", expect: std(200)),
                Route(method: .post, path: c + "/restart", expect: std(200)),
                Route(method: .put, path: c + "/resize", body: { _ in #"{"resources": {"memory": "600MB"}}"# }, expect: owners(200)),
                Route(method: .post, path: c + "/install-stack", body: { _ in #"{"stack": "no-such-stack"}"# }, expect: std(400)),
                Route(method: .post, path: c + "/cleanup-disk", expect: std(200)),
                Route(method: .get, path: c + "/ssh-keys", expect: std(200)),
                Route(method: .post, path: c + "/ssh-keys", body: { who in #"{"sshPublicKey": "\#(Harness.sshKey(who.rawValue))"}"# }, expect: owners(201)),
                Route(method: .delete, path: c + "/ssh-keys?fingerprint=SHA256%3Anope", expect: owners(404)),
                Route(method: .get, path: c + "/collaborators", expect: std(200)),
                Route(method: .post, path: c + "/collaborators", body: { who in #"{"collaboratorUsername": "dave\#(who.rawValue)"}"# },
                      expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 201, .admin: 201]),
                Route(method: .delete, path: c + "/collaborators/daveowner", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 200, .admin: 404]),
                Route(method: .get, path: "/v1/audit", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .get, path: "/v1/nodes", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .get, path: c + "/credentials", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 501, .admin: 501]),
                Route(method: .get, path: "/v1/revocations", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .post, path: "/v1/revocations", body: { _ in #"{"subject": "nobody-at-all"}"# },
                      expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 201]),
                // No scanner is ready here: a scan of one environment is refused before it is queued.
                Route(method: .post, path: "/v1/security/clamav-scan", body: { _ in #"{"username": "alice"}"# }, expect: std(412)),
                Route(method: .post, path: "/v1/security/trivy-scan", body: { _ in #"{"all": true}"# },
                      expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .get, path: "/v1/security/clamav-reports?username=alice", expect: std(200)),
                Route(method: .get, path: "/v1/security/trivy-reports.csv?username=alice", expect: std(200)),
                Route(method: .get, path: "/v1/security/clamav-summary", expect: [.node: 403, .stranger: 200, .friend: 200, .owner: 200, .admin: 200]),
                // Metrics: an admin's or a metrics token; alerting: admins; where the dashboards are: any user.
                Route(method: .get, path: "/metrics", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200, .scraper: 200]),
                Route(method: .get, path: "/v1/alerts", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .post, path: "/v1/alerts", body: { who in #"{"name": "r-\#(who.rawValue.lowercased())", "metric": "node_unhealthy", "threshold": 0}"# },
                      expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 201]),
                Route(method: .get, path: "/v1/alerts/r-admin", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .post, path: "/v1/alerts/r-admin/test", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 412]),
                Route(method: .delete, path: "/v1/alerts/r-admin", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .get, path: "/v1/alert-deliveries", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .get, path: "/v1/system/alerting", expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .put, path: "/v1/system/alerting", body: { _ in #"{"webhooks": [], "maxAttempts": 3}"# },
                      expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 403, .admin: 200]),
                Route(method: .get, path: "/v1/system/monitoring", expect: [.node: 403, .stranger: 200, .friend: 200, .owner: 200, .admin: 200]),
                Route(method: .delete, path: c, expect: [.node: 403, .stranger: 403, .friend: 403, .owner: 200, .admin: 404]),
            ]
            try await Self.app(h).test(.router) { client in
                for route in routes {
                    for who in Who.allCases {
                        let r = try await Self.send(client, route.method, route.path, token: tokens[who], body: route.body?(who),
                                                    authorization: who == .wrongScheme ? "Basic \(tokens[who] ?? "")" : nil)
                        let want = who.authenticated ? (route.expect[who] ?? (who == .scraper ? 403 : nil)) : 401
                        #expect(r.status == want, "\(route.method) \(route.path) as \(who): \(r.status) \(r.text)")
                        if !who.authenticated {
                            #expect(r.headers[.wwwAuthenticate] == "Bearer realm=\"containarium\"")
                            #expect(r.errorCode == "unauthenticated", "\(r.text)")
                        } else if r.status == 403 {
                            #expect(r.errorCode == "permission_denied", "\(r.text)")
                        }
                    }
                }
            }
            // Rejected credentials are audited (never the credential itself), up to the limit
            // per address and minute (SecurityTests covers what happens past it).
            let failures = try await h.audit(action: "auth.failure")
            #expect(failures.count == min(routes.count * 5, h.plane.auditLimiter.perWindow))
            #expect(failures.allSatisfy { $0.actor == "anonymous" && $0.interface == "rest" && !$0.detail.contains(tokens[.forged] ?? "-") })
            #expect(try await h.plane.service.list().isEmpty, "the owner's delete went through")
        }
    }

    @Test("create: 201 with the container's JSON; bad requests are 400 with the error envelope and leave nothing behind; a backend failure leaves no record")
    func create() async throws {
        try await Harness.with { (h: Harness) async throws in
            let kate = try await h.token("kate"), admin = try await h.token("admin", .admin)
            let key = Harness.sshKey()
            try await Self.app(h).test(.router) { client in
                let bad = [
                    "{", "[]", #"{"username": "kate", "bogus": 1}"#, #"{"sshKeys": []}"#, #"{"username": "Kate!"}"#,
                    #"{"username": "kate", "resources": {"memory": "1MB"}}"#, #"{"username": "kate", "labels": {"a": 1}}"#,
                    #"{"username": "kate", "memory": "1GB"}"#, #"{"username": "kate", "osType": "OS_TYPE_PLAN9"}"#, #"{"username": 7}"#,
                    #"{"username": "kate", "resources": {"gpu": "1"}}"#, #"{"username": "kate", "autostart": "yes"}"#,
                    #"{"username": "kate", "stack": "no-such-stack"}"#, #"{"username": "kate", "gpus": 1.5}"#,
                    #"{"username": "kate", "sshKeys": ["ssh-rsa AAAA"]}"#,
                ]
                for body in bad {
                    let r = try await Self.send(client, .post, "/v1/containers", token: kate, body: body)
                    #expect(r.status == 400 && r.errorCode == "invalid_argument" && r.json?["error"]?["message"]?.stringValue?.isEmpty == false,
                            "\(body): \(r.status) \(r.text)")
                }
                // gpuDevices is the scheduler's, for admins (a control plane handing a create to a
                // node): a user's is refused; an admin's must name real PCI addresses, one per GPU.
                let picked = try await Self.send(client, .post, "/v1/containers", token: kate,
                                                 body: #"{"username": "kate", "gpus": 1, "gpuDevices": ["0000:65:00.0"]}"#)
                #expect(picked.status == 403 && picked.errorCode == "permission_denied", "\(picked.text)")
                for devices in [#"["65:00"]"#, #"["0000:65:00.0", "0000:66:00.0"]"#] {
                    let r = try await Self.send(client, .post, "/v1/containers", token: admin,
                                                body: #"{"username": "kate", "gpus": 1, "gpuDevices": \#(devices)}"#)
                    #expect(r.status == 400 && r.errorCode == "invalid_argument", "\(devices): \(r.text)")
                }
                #expect(try h.calls("create").isEmpty)
                #expect(try await h.plane.store.containers().isEmpty)
                #expect(try await Self.send(client, .get, "/v1/containers/kate", token: admin).status == 404)

                let failed = try await Self.send(client, .post, "/v1/containers", token: kate,
                                                 body: #"{"username": "kate", "sshKeys": ["\#(key)"], "labels": {"fake.fail-step": "2"}}"#)
                #expect(failed.status == 500 && failed.errorCode == "internal", "\(failed.text)")
                #expect(try await Self.send(client, .get, "/v1/containers/kate", token: admin).status == 404)
                #expect(try await h.plane.store.container("kate") == nil)

                let made = try await Self.send(client, .post, "/v1/containers", token: kate,
                                               body: #"{"username": "kate", "sshKeys": ["\#(key)"], "resources": {"memory": "1GiB", "cpu": null}, "labels": {"team": "red"}, "image": null, "async": null, "node": null}"#)
                #expect(made.status == 201, "\(made.text)")
                let view = try #require(made.json)
                #expect(view["username"]?.stringValue == "kate" && view["name"]?.stringValue == "kate-container" && view["owner"]?.stringValue == "kate")
                #expect(view["labels"]?["team"]?.stringValue == "red" && view["backend"]?.stringValue == "fake-instances")
                #expect(view["network"]?["ipAddress"]?.stringValue?.hasPrefix("10.99.") == true, "\(made.text)")
                let list = try #require(try await Self.send(client, .get, "/v1/containers", token: kate).json)
                #expect(list["totalCount"]?.number == 1 && list["containers"]?.items?.first?["username"]?.stringValue == "kate")

                let audit = try #require(try await Self.send(client, .get, "/v1/audit?target=kate&action=container.create", token: admin).json)
                let results = audit["entries"]?.items?.compactMap { $0["result"]?.stringValue } ?? []
                // Refused by the adapter's strict decoding: never reach the control plane. The
                // memory, stack and key refusals come from the service layer, audited for kate, as
                // are the two bad gpuDevices of the admin's and kate's refused one.
                #expect(results.filter { $0 == "invalid_argument" }.count == 5, "entries: \(results)")
                #expect(results.filter { $0 == "permission_denied" }.count == 1, "entries: \(results)")
                #expect(results.contains("internal") && results.contains("ok"), "\(results)")
            }
        }
    }

    @Test("asynchronous create: 202 with the operation's Location, polled to success; routing: 404, 405 with Allow, public health")
    func asyncAndRouting() async throws {
        try await Harness.with { (h: Harness) async throws in
            let owner = try await h.token("liam")
            try await Self.app(h).test(.router) { client in
                let accepted = try await Self.send(client, .post, "/v1/containers", token: owner,
                                                   body: #"{"username": "liam", "sshKeys": ["\#(Harness.sshKey())"], "async": true}"#)
                #expect(accepted.status == 202, "\(accepted.text)")
                let id = try #require(accepted.json?["id"]?.stringValue)
                #expect(accepted.headers[.location] == "/v1/operations/\(id)")
                try await eventually("the operation succeeds") {
                    try await Self.send(client, .get, "/v1/operations/\(id)", token: owner).json?["state"]?.stringValue == "OPERATION_STATE_SUCCEEDED"
                }
                #expect(try await Self.send(client, .get, "/v1/operations/\(id)", token: try await h.token("mallory")).status == 403)
                #expect(try await Self.send(client, .get, "/v1/nope", token: owner).status == 404)
                let wrong = try await Self.send(client, .patch, "/v1/containers", token: owner)
                #expect(wrong.status == 405 && wrong.headers[.allow]?.contains("POST") == true && wrong.headers[.allow]?.contains("GET") == true,
                        "\(wrong.status) \(wrong.headers[.allow] ?? "-") \(wrong.text)")
                #expect(try await Self.send(client, .get, "/healthz", token: nil).status == 200)
                let post = try await Self.send(client, .post, "/healthz", token: nil)
                #expect(post.status == 405 && post.headers[.allow] == "GET", "\(post.status) \(post.text)")
                let stop = try await Self.send(client, .post, "/v1/containers/liam/stop", token: owner, body: #"{"force": "yes"}"#)
                #expect(stop.status == 400 && stop.errorCode == "invalid_argument")
                // proto3 JSON: null is the field left out, on every route.
                let nullForce = try await Self.send(client, .post, "/v1/containers/liam/stop", token: owner, body: #"{"force": null}"#)
                #expect(nullForce.status == 200, "\(nullForce.text)")
                let admin = try await h.token("admin", .admin)
                let plain = try await Self.send(client, .post, "/v1/schedule/explain", token: admin, body: "{}")
                let nulls = try await Self.send(client, .post, "/v1/schedule/explain", token: admin,
                                                body: #"{"image": null, "osType": null, "labels": null, "gpus": null, "kind": null}"#)
                let typed = try await Self.send(client, .post, "/v1/schedule/explain", token: admin, body: #"{"image": 5}"#)
                // This harness runs no scheduler: the decoded request gets as far as that answer.
                #expect(plain.status == 412 && nulls.status == 412 && nulls.text == plain.text, "\(nulls.text)")
                #expect(typed.status == 400 && typed.errorCode == "invalid_argument", "\(typed.text)")
                let nullName = try await Self.send(client, .post, "/v1/containers", token: owner, body: #"{"username": null}"#)
                #expect(nullName.status == 400 && nullName.text.contains("missing field 'username'"), "\(nullName.text)")
                let resize = try await Self.send(client, .put, "/v1/containers/liam/resize", token: owner, body: #"{"resources": {"disk": "1GiB"}}"#)
                #expect(resize.status == 412 && resize.errorCode == "failed_precondition", "below usage: \(resize.text)")
                // No ssh_config directive rides in on the key path (this harness runs no gateway,
                // so the answer would be the direct block that names it).
                let injected = try await Self.send(client, .get, "/v1/containers/liam/ssh-config?keyPath=k%0A%20%20ProxyCommand%20sh", token: owner)
                #expect(injected.status == 400 && !injected.text.contains("ProxyCommand sh"), "\(injected.text)")
                let keyed = try await Self.send(client, .get, "/v1/containers/liam/ssh-config?keyPath=~/.ssh/liam", token: owner)
                // (Here the environment has no address, so there is no config to give; the path itself passes.)
                #expect(keyed.errorCode != "invalid_argument", "\(keyed.status) \(keyed.text)")
                let twice = try await Self.send(client, .delete, "/v1/containers/liam/ssh-keys?fingerprint=A&fingerprint=B", token: owner)
                #expect(twice.status == 400 && twice.text.contains("more than once"), "\(twice.text)")
            }
        }
    }

    @Test("CORS: preflights on any path, the origin echoed on every answer (errors too); public pages need no token")
    func corsAndPublicPages() async throws {
        try await Harness.with { (h: Harness) async throws in
            try await Self.app(h).test(.router) { client in
                let origin = "https://dashboard.example"
                let pre = try await client.execute(uri: "/v1/containers/alice", method: .options, headers: [.origin: origin])
                #expect(pre.status == .noContent && pre.headers[.accessControlAllowOrigin] == origin)
                #expect(pre.headers[.accessControlAllowMethods] == "GET, POST, PUT, DELETE, OPTIONS" && pre.headers[.accessControlAllowHeaders] == "Authorization, Content-Type")
                for (method, uri, status) in [(HTTPRequest.Method.get, "/v1/containers", 401), (.get, "/v1/nope", 404), (.get, "/healthz", 200), (.delete, "/healthz", 405), (.get, "/healthz/", 404)] {
                    let r = try await client.execute(uri: uri, method: method, headers: [.origin: origin])
                    #expect(Int(r.status.code) == status && r.headers[.accessControlAllowOrigin] == origin && r.headers[.accessControlExposeHeaders] == "Location",
                            "\(method) \(uri): \(r.status)")
                }
                let noOrigin = try await client.execute(uri: "/healthz", method: .get)
                #expect(noOrigin.headers[.accessControlAllowOrigin] == nil && String(buffer: noOrigin.body) == #"{"status":"ok"}"#)
                let openapi = try await client.execute(uri: "/openapi.json", method: .get)
                let document = try WireJSON.decode(JSONValue.self, from: Data(String(buffer: openapi.body).utf8))
                #expect(openapi.status == .ok && document["paths"]?.objectValue?.isEmpty == false)
                let root = try await client.execute(uri: "/", method: .get)
                #expect(root.status == .found && root.headers[.location] == "/webui/")
                let swagger = try await client.execute(uri: "/swagger-ui", method: .get)
                #expect(swagger.status == .movedPermanently && swagger.headers[.location] == "/swagger-ui/")
                let head = try await client.execute(uri: "/v1/containers", method: .head)
                #expect(head.status == .methodNotAllowed && head.headers[.allow] == "POST, GET")
            }
        }
    }

    @Test("a backend without accounts/1: a create with keys is a 400 before anything is made, one without keys works; keys and collaborators are 501 unsupported naming the backend, nothing half-made")
    func withoutAccounts() async throws {
        try await Harness.with(accounts: false) { (h: Harness) async throws in
            #expect(h.accounts == nil)
            let owner = try await h.token("olga"), admin = try await h.token("admin", .admin)
            let c = "/v1/containers/olga"
            try await Self.app(h).test(.router) { client in
                // Keys it could only drop are refused, synchronously, and nothing is made.
                let keyed = try await Self.send(client, .post, "/v1/containers", token: owner, body: #"{"username": "olga", "sshKeys": ["\#(Harness.sshKey())"]}"#)
                #expect(keyed.status == 400 && keyed.errorCode == "invalid_argument", "\(keyed.text)")
                #expect(keyed.json?["error"]?["message"]?.stringValue?.contains("the fake-instances backend does not manage accounts (accounts/1)") == true, "\(keyed.text)")
                let record = try await h.plane.store.container("olga")
                #expect(try h.calls("create").isEmpty && record == nil)
                let made = try await Self.send(client, .post, "/v1/containers", token: owner, body: #"{"username": "olga"}"#)
                #expect(made.status == 201, "\(made.text)")
                let calls: [(HTTPRequest.Method, String, String?)] = [
                    (.get, c + "/ssh-keys", nil),
                    (.post, c + "/ssh-keys", #"{"sshPublicKey": "\#(Harness.sshKey())"}"#),
                    (.post, c + "/collaborators", #"{"collaboratorUsername": "pete", "sudo": true}"#),
                ]
                for (method, path, body) in calls {
                    for token in [owner, admin] {
                        let r = try await Self.send(client, method, path, token: token, body: body)
                        #expect(r.status == 501 && r.errorCode == "unsupported", "\(method) \(path): \(r.status) \(r.text)")
                        let message = r.json?["error"]?["message"]?.stringValue ?? ""
                        #expect(message.contains("the fake-instances backend does not manage accounts (accounts/1)"), "\(r.text)")
                    }
                }
                // the refused add left no collaborator behind
                let listed = try await Self.send(client, .get, c + "/collaborators", token: owner)
                #expect(listed.status == 200 && listed.json?["collaborators"]?.items?.isEmpty == true, "\(listed.text)")
                #expect(try await Self.send(client, .delete, c + "/collaborators/pete", token: owner).status == 404)
                // the environment itself is fine, without an account inside (as on QemuWindows)
                #expect(try await h.plane.service.exec(username: "olga", command: ["getent", "passwd", "olga"]).exitCode == 2)
                #expect(try await Self.send(client, .post, c + "/stop", token: owner).status == 200)
                #expect(try await Self.send(client, .delete, c, token: owner).status == 200)
            }
            #expect(try await h.plane.store.collaborators(of: "olga").isEmpty)
            // The create named the owner but carried no keys; no account was made and nothing
            // was attempted through exec and a shell instead.
            let create = try #require(try h.calls("create").first)
            #expect(create.request["account"]?["name"]?.stringValue == "olga" && create.request["account"]?["sshKeys"]?.items?.isEmpty == true)
            #expect(try h.calls().allSatisfy { !$0.method.hasPrefix("accounts.") })
            let execs = try h.calls("exec").map(\.argv)
            #expect(execs.allSatisfy { $0.first != "sh" && $0.first != "useradd" }, "\(execs)")
            let audited = try await h.audit(target: "olga").map { "\($0.action) \($0.result)" }
            #expect(audited.contains("container.ssh-key.add unsupported") && audited.contains("container.collaborator.add unsupported"), "\(audited)")
        }
    }
}
