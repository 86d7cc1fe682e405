import ContainariumCore
public import ContainariumPlatform
import ContainariumService
import ContainariumStore
import Foundation
public import Hummingbird
import Logging
import NIOCore

/// Per-request context: Hummingbird's core storage plus the peer address.
public struct RESTContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remote: String
    /// Who called: set by `AuthenticationMiddleware` on every authenticated route.
    public var caller: Caller?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        if let a = source.channel.remoteAddress, let ip = a.ipAddress { remote = "\(ip):\(a.port ?? 0)" } else { remote = "unknown" }
    }

    public var maxUploadSize: Int { 1 << 20 }
}

/// The REST adapter: routing, authentication, strict JSON, one error mapping. Thin: every
/// route calls one `ControlPlane` method. Routing is Hummingbird's Router (built from
/// `routes`); authentication, CORS and the error mapping are its middleware.
public struct RESTAPI: HTTPResponder {
    public typealias Context = RESTContext

    let plane: ControlPlane
    let tokens: Tokens
    let swaggerDir: String?
    /// The dashboard's files (web/ with vendor/ filled by scripts/webui-assets.sh).
    let webuiDir: String?
    let sseHeartbeat: Duration

    public init(plane: ControlPlane, tokens: Tokens, swaggerDir: String?, webuiDir: String? = nil, sseHeartbeat: Duration = .seconds(15)) {
        self.plane = plane
        self.tokens = tokens
        self.swaggerDir = swaggerDir
        self.webuiDir = webuiDir
        self.sseHeartbeat = sseHeartbeat
        self.router = nil
        self.router = Self.makeRouter(self).buildResponder()
    }

    struct Call {
        var request: Request
        var caller: Caller
        var params: [String]
        var query: [String: String]
        var body: Data
    }

    typealias Handler = @Sendable (RESTAPI, Call) async throws(ContainariumError) -> Response

    struct Route {
        var method: HTTPRequest.Method
        var pattern: [String]  // "{}" marks a parameter
        var action: String
        var handler: Handler
    }

    static func split(_ path: String) -> [String] { path.split(separator: "/", omittingEmptySubsequences: true).map(String.init) }

    static func r(_ m: HTTPRequest.Method, _ p: String, _ action: String, _ h: @escaping Handler) -> Route {
        Route(method: m, pattern: split(p), action: action, handler: h)
    }

    /// Every authenticated route. (Health, the OpenAPI document and Swagger UI are public.)
    static let routes: [Route] = [
        r(.post, "/v1/containers", "container.create") { api, c throws(ContainariumError) in try await api.create(c) },
        r(.get, "/v1/containers", "container.list") { api, c throws(ContainariumError) in
            try api.raw(.ok, await api.plane.listContainersJSON(c.caller))
        },
        r(.get, "/v1/containers/{}", "container.get") { api, c throws(ContainariumError) in
            try api.json(.ok, await api.plane.getContainer(c.caller, c.params[0]))
        },
        r(.delete, "/v1/containers/{}", "container.delete") { api, c throws(ContainariumError) in
            let force = try api.bool(c.query["force"]) ?? true
            try await api.plane.deleteContainer(c.caller, c.params[0], force: force)
            return try api.json(.ok, ["message": "deleted \(c.params[0])'s environment"])
        },
        r(.post, "/v1/containers/{}/start", "container.start") { api, c throws(ContainariumError) in
            try api.noBody(c)
            return try api.json(.ok, await api.plane.power(c.caller, c.params[0], .start))
        },
        r(.post, "/v1/containers/{}/stop", "container.stop") { api, c throws(ContainariumError) in
            let body = try api.object(c, allowed: ["force"], required: [])
            let force = try body["force"].map { v throws(ContainariumError) in try api.boolValue(v, "force") } ?? false
            return try api.json(.ok, await api.plane.power(c.caller, c.params[0], .stop, force: force))
        },
        r(.post, "/v1/containers/{}/restart", "container.restart") { api, c throws(ContainariumError) in
            try api.noBody(c)
            return try api.json(.ok, await api.plane.power(c.caller, c.params[0], .restart))
        },
        r(.put, "/v1/containers/{}/resize", "container.resize") { api, c throws(ContainariumError) in
            let body = try api.object(c, allowed: ["cpu", "memory", "disk", "resources"], required: [])
            var res = body
            if let nested = body["resources"] {
                guard case .object(let o) = nested else { throw .invalid("resources must be an object") }
                try api.onlyKeys(o, ["cpu", "memory", "disk"], "resources")
                res.merge(o) { a, _ in a }
            }
            return try api.json(.ok, await api.plane.resize(
                c.caller, c.params[0], cpu: try api.string(res["cpu"], "cpu"), memory: try api.string(res["memory"], "memory"),
                disk: try api.string(res["disk"], "disk")))
        },
        r(.post, "/v1/containers/{}/install-stack", "container.install-stack") { api, c throws(ContainariumError) in
            let body = try api.object(c, allowed: ["stack", "stackId"], required: [])
            guard let stack = try api.string(body["stack"] ?? body["stackId"], "stack") else { throw .invalid("missing field 'stack'") }
            let r = try await api.plane.installStack(c.caller, c.params[0], stack: stack)
            return try api.json(.ok, ["stack": stack, "check": r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)])
        },
        r(.post, "/v1/containers/{}/cleanup-disk", "container.cleanup-disk") { api, c throws(ContainariumError) in
            try api.noBody(c)
            return try api.json(.ok, await api.plane.cleanupDisk(c.caller, c.params[0]))
        },
        r(.get, "/v1/containers/{}/ssh-keys", "container.ssh-key.list") { api, c throws(ContainariumError) in
            let keys = try await api.plane.listKeys(c.caller, c.params[0])
            return try api.json(.ok, ["keys": keys])
        },
        r(.post, "/v1/containers/{}/ssh-keys", "container.ssh-key.add") { api, c throws(ContainariumError) in
            let body = try api.object(c, allowed: ["sshPublicKey", "publicKey"], required: [])
            guard let key = try api.string(body["sshPublicKey"] ?? body["publicKey"], "sshPublicKey") else { throw .invalid("missing field 'sshPublicKey'") }
            return try api.json(.created, await api.plane.addKey(c.caller, c.params[0], publicKey: key))
        },
        r(.delete, "/v1/containers/{}/ssh-keys", "container.ssh-key.remove") { api, c throws(ContainariumError) in
            guard let fp = c.query["fingerprint"], !fp.isEmpty else { throw .invalid("give the key as ?fingerprint=SHA256:...") }
            try await api.plane.removeKey(c.caller, c.params[0], fingerprint: fp)
            return try api.json(.ok, ["message": "removed \(fp)"])
        },
        r(.get, "/v1/containers/{}/collaborators", "container.collaborator.list") { api, c throws(ContainariumError) in
            try api.json(.ok, ["collaborators": await api.plane.listCollaborators(c.caller, c.params[0])])
        },
        r(.post, "/v1/containers/{}/collaborators", "container.collaborator.add") { api, c throws(ContainariumError) in
            let body = try api.object(c, allowed: ["collaboratorUsername", "sshPublicKey", "sudo", "containerRuntime"], required: ["collaboratorUsername"])
            guard let who = try api.string(body["collaboratorUsername"], "collaboratorUsername") else { throw .invalid("missing field 'collaboratorUsername'") }
            let key = try api.string(body["sshPublicKey"], "sshPublicKey")
            let sudo = try body["sudo"].map { v throws(ContainariumError) in try api.boolValue(v, "sudo") } ?? false
            let runtime = try body["containerRuntime"].map { v throws(ContainariumError) in try api.boolValue(v, "containerRuntime") } ?? false
            return try api.json(.created, await api.plane.addCollaborator(c.caller, c.params[0], collaborator: who, sshKey: key, sudo: sudo, containerRuntime: runtime))
        },
        r(.delete, "/v1/containers/{}/collaborators/{}", "container.collaborator.remove") { api, c throws(ContainariumError) in
            try await api.plane.removeCollaborator(c.caller, c.params[0], collaborator: c.params[1])
            return try api.json(.ok, ["message": "removed \(c.params[1])"])
        },
        r(.get, "/v1/system/info", "system.info") { api, c throws(ContainariumError) in try api.json(.ok, await api.plane.systemInfo(c.caller)) },
        r(.get, "/v1/metrics", "system.metrics") { api, c throws(ContainariumError) in
            try api.json(.ok, ["containers": await api.plane.containerMetrics(c.caller)])
        },
        r(.get, "/v1/backends", "system.backends") { api, c throws(ContainariumError) in
            try api.json(.ok, await api.plane.backendsView(c.caller))
        },
        r(.get, "/v1/nodes", "node.list") { api, c throws(ContainariumError) in try api.json(.ok, ["nodes": api.plane.listNodes(c.caller)]) },
        r(.post, "/v1/nodes/{}/drain", "node.drain") { api, c throws(ContainariumError) in
            try api.json(.ok, await api.plane.drainNode(c.caller, c.params[0], draining: true))
        },
        r(.post, "/v1/nodes/{}/undrain", "node.undrain") { api, c throws(ContainariumError) in
            try api.json(.ok, await api.plane.drainNode(c.caller, c.params[0], draining: false))
        },
        r(.delete, "/v1/nodes/{}", "node.remove") { api, c throws(ContainariumError) in
            try await api.plane.removeNode(c.caller, c.params[0], force: try api.bool(c.query["force"]) ?? false)
            return try api.json(.ok, ["message": "removed node \(c.params[0])"])
        },
        r(.post, "/v1/schedule/explain", "schedule.explain") { api, c throws(ContainariumError) in try await api.explain(c) },
        r(.get, "/v1/plugins", "system.plugins") { api, c throws(ContainariumError) in try api.json(.ok, ["plugins": await api.plane.plugins(c.caller)]) },
        r(.get, "/v1/operations/{}", "operation.get") { api, c throws(ContainariumError) in
            try api.json(.ok, OperationView(await api.plane.operation(c.caller, c.params[0])))
        },
        r(.get, "/v1/audit", "audit.list") { api, c throws(ContainariumError) in
            let f = try api.auditFilter(c.query)
            return try api.json(.ok, ["entries": await api.plane.auditLog(c.caller, f)])
        },
        r(.get, "/v1/events", "events.stream") { api, c throws(ContainariumError) in api.sse(c.caller) },
        r(.get, "/v1/catalog", "system.catalog") { api, c throws(ContainariumError) in try api.json(.ok, api.plane.catalog(c.caller)) },
        r(.get, "/v1/metrics/node", "system.node-metrics") { api, c throws(ContainariumError) in try api.json(.ok, await api.plane.nodeMetrics(c.caller)) },
        r(.get, "/v1/containers/{}/metrics", "container.metrics") { api, c throws(ContainariumError) in
            try api.json(.ok, ["samples": await api.plane.metricsHistory(c.caller, c.params[0])])
        },
        r(.get, "/v1/containers/{}/ssh-config", "container.ssh-config") { api, c throws(ContainariumError) in
            do throws(ContainariumError) {
                return try api.json(.ok, ["config": await api.plane.exportSSHConfig(c.caller, c.params[0], jumpHost: nil, keyPath: nil)])
            } catch where error.code == .invalidArgument {
                // No gateway and no jump host: a direct block, for clients on the node's network.
                let v = try await api.plane.getContainer(c.caller, c.params[0])
                guard let ip = v.network.ipAddress else { throw error }
                let text = "# Direct: reachable from the node's network only (run the SSH gateway for remote access).\n" +
                    "Host \(v.username)-dev\n    HostName \(ip)\n    User \(v.username)\n    IdentityFile ~/.ssh/id_ed25519_\(v.username)\n"
                return try api.json(.ok, ["config": text])
            }
        },
        r(.get, "/v1/containers/{}/terminal", "container.terminal") { api, c throws(ContainariumError) in
            try await api.plane.authorize(c.caller, c.params[0], .act)
            throw .invalid("open the terminal as a WebSocket (Upgrade: websocket, Sec-WebSocket-Protocol: containarium.v1, bearer.<token>)")
        },
        r(.get, "/v1/containers/{}/vnc", "container.vnc") { api, c throws(ContainariumError) in
            try await api.plane.authorize(c.caller, c.params[0], .act)
            throw .invalid("open a VM's screen as a WebSocket (Upgrade: websocket, Sec-WebSocket-Protocol: containarium.v1, bearer.<token>)")
        },
    ]

    // MARK: - routing (Hummingbird's Router, route groups and middleware)

    /// The router's responder, built once from `routes` and the public pages.
    private var router: RouterResponder<RESTContext>?

    public func respond(to request: Request, context: RESTContext) async throws -> Response {
        guard let router else { return error(.internal("the REST routes were not built")) }
        return try await router.respond(to: request, context: context)
    }

    /// Every route of `routes` in a group of its own whose middleware authenticates for that
    /// route's action; the public pages without. Router-wide middleware answers CORS preflights,
    /// explains requests no route takes (404, or 405 with Allow) and maps errors.
    static func makeRouter(_ api: RESTAPI) -> Router<RESTContext> {
        let router = Router(context: RESTContext.self)
        router.add(middleware: EdgeMiddleware(api: api))
        let page: @Sendable (Request, RESTContext) async throws -> Response = { request, _ in api.publicPage(request) }
        for path in ["/", "/healthz", "/v1/health", "/openapi.json", "/swagger-ui", "/swagger-ui/**", "/webui", "/webui/**"] {
            router.get(RouterPath(path), use: page)
        }
        for route in routes {
            var names: [String] = []
            let path = "/" + route.pattern.map { part -> String in
                guard part == "{}" else { return part }
                names.append("p\(names.count)")
                return ":" + (names.last ?? "p")
            }.joined(separator: "/")
            let parameters = names
            router.group().add(middleware: AuthenticationMiddleware(api: api, action: route.action))
                .on(RouterPath(path), method: route.method) { request, context in
                    try await api.handle(route, parameters: parameters, request, context)
                }
        }
        return router
    }

    /// One authenticated route: the body (bounded), its parameters (percent-decoded), the handler.
    func handle(_ route: Route, parameters: [String], _ request: Request, _ context: RESTContext) async throws(ContainariumError) -> Response {
        guard let caller = context.caller else { throw .unauthenticated("missing bearer token (Authorization: Bearer <token>)") }
        var request = request
        let body: Data
        do {
            var buffer = try await request.collectBody(upTo: context.maxUploadSize)
            body = Data(buffer.readBytes(length: buffer.readableBytes) ?? [])
        } catch {
            return self.error(.invalid("request body is larger than \(context.maxUploadSize) bytes"), status: .contentTooLarge)
        }
        let params = parameters.map { name in
            let raw = context.parameters.get(name) ?? ""
            return raw.removingPercentEncoding ?? raw
        }
        let call = Call(request: request, caller: caller, params: params, query: Self.query(request.uri.query), body: body)
        do throws(ContainariumError) {
            return try await route.handler(self, call)
        } catch {
            if error.code == .internal { context.logger.error("\(route.action) failed: \(error)") }
            throw error
        }
    }

    /// Health, the OpenAPI document, Swagger UI, the dashboard and the redirect to it.
    func publicPage(_ request: Request) -> Response {
        let path = request.uri.path
        let parts = Self.split(path)
        if path == "/healthz" || path == "/v1/health" { return (try? json(.ok, ["status": "ok"])) ?? Response(status: .ok) }
        if path == "/openapi.json" { return raw(.ok, Data(OpenAPIDocument.json.utf8)) }
        if parts.first == "swagger-ui" { return swagger(parts.dropFirst().joined(separator: "/"), path: path) }
        if parts.first == "webui" { return webui(parts.dropFirst(), path: path) }
        guard path == "/" else { return unrouted(request) }  // e.g. "/healthz/": the router ignores the slash, the API does not
        var r = Response(status: .found)
        r.headers[.location] = "/webui/"
        return r
    }

    /// What a request no route takes gets: 405 with the methods its path allows, else 404.
    func unrouted(_ request: Request) -> Response {
        let path = request.uri.path
        let parts = Self.split(path)
        let isPublic = path == "/healthz" || path == "/v1/health" || path == "/openapi.json" || parts.first == "swagger-ui" || parts.first == "webui" || path == "/"
        if isPublic && request.method != .get && request.method != .head {
            var r = error(ContainariumError(.invalidArgument, "\(request.method.rawValue) is not allowed on \(path)"), status: .methodNotAllowed)
            r.headers[.allow] = "GET"
            return r
        }
        let allowed = Self.routes.filter { route in
            route.pattern.count == parts.count && zip(route.pattern, parts).allSatisfy { p, actual in p == "{}" || p == actual }
        }.map(\.method.rawValue)
        guard !allowed.isEmpty else { return error(ContainariumError(.notFound, "no route \(path)")) }
        var r = error(ContainariumError(.invalidArgument, "\(request.method.rawValue) is not allowed on \(path)"), status: .methodNotAllowed)
        r.headers[.allow] = allowed.joined(separator: ", ")
        return r
    }

    func authenticate(_ request: Request, _ context: RESTContext) async throws(ContainariumError) -> Caller {
        if request.headers[.authorization] == nil, Self.webSocketTarget(request.uri.path) != nil, let token = Self.webSocketToken(request.headers) {
            let (subject, role) = try await tokens.verify(token)
            return Caller(subject: subject, role: role, source: context.remote, interface: "rest")
        }
        guard let header = request.headers[.authorization] else { throw .unauthenticated("missing bearer token (Authorization: Bearer <token>)") }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .unauthenticated("the Authorization header must be 'Bearer <token>'") }
        let (subject, role) = try await tokens.verify(String(parts[1]).trimmingCharacters(in: .whitespaces))
        return Caller(subject: subject, role: role, source: context.remote, interface: "rest")
    }

    static func query(_ q: String?) -> [String: String] {
        guard let q, !q.isEmpty else { return [:] }
        var out: [String: String] = [:]
        for pair in q.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0) }
            if let k = kv.first { out[k] = kv.count > 1 ? kv[1] : "" }
        }
        return out
    }

    // MARK: - responses

    func json<T: Encodable>(_ status: HTTPResponse.Status, _ value: T) throws(ContainariumError) -> Response {
        raw(status, try WireJSON.encode(value))
    }

    func raw(_ status: HTTPResponse.Status, _ data: Data, contentType: String = "application/json") -> Response {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        headers[.contentLength] = String(data.count)
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    func error(_ e: ContainariumError, status: HTTPResponse.Status? = nil) -> Response {
        let data = (try? WireJSON.encode(ErrorEnvelope(e))) ?? Data(#"{"error":{"code":"internal","message":"error"}}"#.utf8)
        return raw(status ?? HTTPResponse.Status(code: e.code.httpStatus), data)
    }

    // MARK: - strict JSON

    func object(_ c: Call, allowed: Set<String>, required: Set<String>) throws(ContainariumError) -> [String: JSONValue] {
        if c.body.isEmpty || c.body.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            guard required.isEmpty else { throw .invalid("a JSON object body is required") }
            return [:]
        }
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: c.body) } catch {
            throw .invalid("malformed JSON: \(WireJSON.describe(error))")
        }
        guard case .object(let o) = value else { throw .invalid("the body must be a JSON object") }
        try onlyKeys(o, allowed, nil)
        for k in required.sorted() where o[k] == nil || o[k] == .null { throw .invalid("missing field '\(k)'") }
        // The proto3 JSON mapping: a null field is the field left out, on every route alike (the
        // OpenAPI document marks each optional request field nullable to say so).
        return o.filter { $0.value != .null }
    }

    func onlyKeys(_ o: [String: JSONValue], _ allowed: Set<String>, _ within: String?) throws(ContainariumError) {
        if let unknown = o.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw .invalid("unknown field '\(within.map { $0 + "." } ?? "")\(unknown)' (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    func noBody(_ c: Call) throws(ContainariumError) { _ = try object(c, allowed: [], required: []) }

    func string(_ v: JSONValue?, _ name: String) throws(ContainariumError) -> String? {
        switch v {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case .number(let n)? where n == n.rounded() && abs(n) < 1e15: return String(Int64(n))
        default: throw .invalid("field '\(name)' must be a string")
        }
    }

    /// A field that must be a JSON string (names, OS types): numbers are refused, not converted.
    func text(_ v: JSONValue?, _ name: String) throws(ContainariumError) -> String? {
        switch v {
        case nil, .null?: return nil
        case .string(let s)?: return s
        default: throw .invalid("field '\(name)' must be a string")
        }
    }

    func boolValue(_ v: JSONValue, _ name: String) throws(ContainariumError) -> Bool {
        guard case .bool(let b) = v else { throw .invalid("field '\(name)' must be true or false") }
        return b
    }

    func bool(_ s: String?) throws(ContainariumError) -> Bool? {
        guard let s else { return nil }
        switch s.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw .invalid("'\(s)' is not a boolean")
        }
    }

    func strings(_ v: JSONValue?, _ name: String) throws(ContainariumError) -> [String] {
        switch v {
        case nil, .null?: return []
        case .array(let a)?:
            var out: [String] = []
            for item in a {
                guard case .string(let s) = item else { throw .invalid("field '\(name)' must be an array of strings") }
                out.append(s)
            }
            return out
        default: throw .invalid("field '\(name)' must be an array of strings")
        }
    }

    // MARK: - create

    static let createFields: Set<String> = [
        "username", "sshKeys", "sshKey", "resources", "cpu", "memory", "disk", "osType", "image", "stack", "labels",
        "autostart", "nesting", "enablePodman", "enableDocker", "async", "gpus", "gpuModel", "node", "kind",
    ]

    /// `node`: a node name (1-63 of a-z 0-9 . -).
    func nodeName(_ v: JSONValue?) throws(ContainariumError) -> String? {
        guard let n = try text(v, "node") else { return nil }
        guard Cluster.validNodeName(n) else { throw .invalid("'\(n)' is not a node name (1-63 of a-z 0-9 . -)") }
        return n
    }

    /// `gpus`: a whole number of GPUs.
    func gpuCount(_ v: JSONValue?) throws(ContainariumError) -> Int? {
        guard let v, v != .null else { return nil }
        guard case .number(let d) = v, d.rounded() == d, d >= 0, d <= Double(EnvironmentService.maximumGPUs) else {
            throw .invalid("field 'gpus' must be a whole number from 0 to \(EnvironmentService.maximumGPUs)")
        }
        return Int(d)
    }

    func create(_ c: Call) async throws(ContainariumError) -> Response {
        let o = try object(c, allowed: Self.createFields, required: ["username"])
        guard let username = try string(o["username"], "username") else { throw .invalid("missing field 'username'") }
        var res: [String: JSONValue] = [:]
        if let r = o["resources"], r != .null {
            guard case .object(let ro) = r else { throw .invalid("field 'resources' must be an object") }
            try onlyKeys(ro, ["cpu", "memory", "disk"], "resources")
            res = ro
        }
        var labels: [String: String] = [:]
        if let l = o["labels"], l != .null {
            guard case .object(let lo) = l else { throw .invalid("field 'labels' must be an object of strings") }
            for (k, v) in lo {
                guard case .string(let s) = v else { throw .invalid("label '\(k)' must be a string") }
                labels[k] = s
            }
        }
        func flag(_ k: String) throws(ContainariumError) -> Bool? {
            guard let v = o[k], v != .null else { return nil }
            return try boolValue(v, k)
        }
        var keys = try strings(o["sshKeys"], "sshKeys")
        if let one = try string(o["sshKey"], "sshKey") { keys.append(one) }
        var runtimes: [ContainerRuntime] = []
        for runtime in ContainerRuntime.allCases where try flag(runtime.requestField) == true { runtimes.append(runtime) }
        let nesting = try flag("nesting")
        var request = CreateEnvironmentRequest(
            username: username, sshKeys: keys, image: try text(o["image"], "image"), osType: try text(o["osType"], "osType"),
            cpu: try string(res["cpu"] ?? o["cpu"], "cpu"), memory: try string(res["memory"] ?? o["memory"], "memory"),
            disk: try string(res["disk"] ?? o["disk"], "disk"), autostart: try flag("autostart"), nesting: nesting,
            stack: try string(o["stack"], "stack"), labels: labels, gpus: try gpuCount(o["gpus"]), gpuModel: try text(o["gpuModel"], "gpuModel"),
            node: try nodeName(o["node"]), runtimes: runtimes)
        request.kind = try text(o["kind"], "kind")
        switch try await plane.createContainer(c.caller, request, async: try flag("async") ?? false) {
        case .done(let view): return try json(.created, view)
        case .started(let op):
            var r = try json(.accepted, OperationView(op))
            r.headers[.location] = "/v1/operations/\(op.id)"
            return r
        }
    }

    func explain(_ c: Call) async throws(ContainariumError) -> Response {
        let o = try object(c, allowed: ["cpu", "memory", "disk", "osType", "image", "labels", "gpus", "gpuModel", "node", "kind"], required: [])
        var labels: [String: String] = [:]
        if let l = o["labels"], l != .null {
            guard case .object(let lo) = l else { throw .invalid("field 'labels' must be an object of strings") }
            for (k, v) in lo {
                guard case .string(let s) = v else { throw .invalid("label '\(k)' must be a string") }
                labels[k] = s
            }
        }
        var request = CreateEnvironmentRequest(
            username: "explain", sshKeys: [], image: try text(o["image"], "image"), osType: try text(o["osType"], "osType"),
            cpu: try string(o["cpu"], "cpu"), memory: try string(o["memory"], "memory"), disk: try string(o["disk"], "disk"), labels: labels,
            gpus: try gpuCount(o["gpus"]), gpuModel: try text(o["gpuModel"], "gpuModel"), node: try nodeName(o["node"]))
        request.kind = try text(o["kind"], "kind")
        return try json(.ok, await plane.explainPlacement(c.caller, request))
    }

    func auditFilter(_ q: [String: String]) throws(ContainariumError) -> AuditFilter {
        try onlyKeys(q.mapValues { JSONValue.string($0) }, ["actor", "action", "target", "result", "since", "until", "limit"], "query")
        func date(_ k: String) throws(ContainariumError) -> Date? {
            guard let s = q[k] else { return nil }
            if let d = ISO8601DateFormatter().date(from: s) { return d }
            throw .invalid("\(k) must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
        }
        var limit = 100
        if let l = q["limit"] {
            guard let n = Int(l), (1...10_000).contains(n) else { throw .invalid("limit must be between 1 and 10000") }
            limit = n
        }
        return AuditFilter(actor: q["actor"], action: q["action"], target: q["target"], result: q["result"], since: try date("since"), until: try date("until"), limit: limit)
    }

    // MARK: - server-sent events

    func sse(_ caller: Caller) -> Response {
        let (stream, cancel) = plane.events.subscribe()
        let plane = self.plane
        let heartbeat = sseHeartbeat
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-store"
        let body = ResponseBody { writer in
            defer { cancel() }
            try await writer.write(ByteBuffer(string: ": connected\n\n"))
            // Merge events with periodic heartbeats so dead clients are noticed.
            let (merged, cont) = AsyncStream<DaemonEvent?>.makeStream(bufferingPolicy: .bufferingNewest(1024))
            let pump = Task {
                for await e in stream { cont.yield(e) }
                cont.finish()
            }
            let beat = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: heartbeat)
                    cont.yield(nil)
                }
            }
            defer {
                pump.cancel()
                beat.cancel()
            }
            var audience = plane.audience(caller)
            for await item in merged {
                guard let e = item else {
                    try await writer.write(ByteBuffer(string: ": heartbeat\n\n"))
                    continue
                }
                guard await audience.admits(e) else { continue }
                let data = (try? WireJSON.encode(e)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
                try await writer.write(ByteBuffer(string: "id: \(e.id)\nevent: \(e.type)\ndata: \(data)\n\n"))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    // MARK: - Swagger UI (local assets only)

    func swagger(_ file: String, path: String) -> Response {
        if file.isEmpty || file == "index.html" {
            if path == "/swagger-ui" {
                var r = Response(status: .movedPermanently)
                r.headers[.location] = "/swagger-ui/"
                return r
            }
            return raw(.ok, Data(SwaggerPage.html.utf8), contentType: "text/html; charset=utf-8")
        }
        let allowed = ["swagger-ui.css": "text/css", "swagger-ui-bundle.js": "application/javascript",
                       "swagger-ui-standalone-preset.js": "application/javascript", "favicon-32x32.png": "image/png"]
        guard let type = allowed[file], let dir = swaggerDir,
              let data = FileManager.default.contents(atPath: (dir as NSString).appendingPathComponent(file))
        else {
            return error(ContainariumError(.notFound, swaggerDir == nil ? "Swagger UI assets are not installed (scripts/install.sh installs them)" : "no such asset \(file)"))
        }
        return raw(.ok, data, contentType: type)
    }
}

enum SwaggerPage {
    static let html = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>Containarium API</title>
        <link rel="stylesheet" href="/swagger-ui/swagger-ui.css"></head>
        <body><div id="swagger-ui"></div>
        <script src="/swagger-ui/swagger-ui-bundle.js"></script>
        <script>
        window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: false });
        </script></body></html>
        """
}

/// Router-wide: CORS preflights and headers, requests no route takes, and the one error mapping
/// (`ContainariumError` to its status and JSON envelope).
struct EdgeMiddleware: RouterMiddleware {
    typealias Context = RESTContext
    let api: RESTAPI

    func handle(_ request: Request, context: RESTContext, next: (Request, RESTContext) async throws -> Response) async throws -> Response {
        if request.method == .options { return api.preflight(request) }
        let origin = request.headers[.origin]
        let response: Response
        do {
            response = try await next(request, context)
        } catch let e as ContainariumError {
            response = api.error(e)
        } catch let e as HTTPError where e.status == .notFound {
            // Only the router throws these (handlers answer with ContainariumError): no route took it.
            response = api.unrouted(request)
        } catch let e as HTTPError {
            response = api.error(ContainariumError(.internal, "request failed (HTTP \(e.status.code))"), status: e.status)
        } catch {
            context.logger.error("unexpected error: \(error)")
            response = api.error(.internal("unexpected error", cause: "\(error)"))
        }
        return RESTAPI.withCORS(response, origin: origin)
    }
}

/// Per route: a bearer token (or, for the terminal's WebSocket, the subprotocol token) makes
/// the caller; a missing or bad one is a 401, audited under the route's action.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = RESTContext
    let api: RESTAPI
    let action: String

    func handle(_ request: Request, context: RESTContext, next: (Request, RESTContext) async throws -> Response) async throws -> Response {
        var context = context
        do throws(ContainariumError) {
            context.caller = try await api.authenticate(request, context)
        } catch {
            await api.plane.auditAuthFailure(source: context.remote, interface: "rest", action: action, reason: error.message)
            var r = api.error(error)
            r.headers[.wwwAuthenticate] = "Bearer realm=\"containarium\""
            return r
        }
        return try await next(request, context)
    }
}
