import ContainariumCore
public import ContainariumPlatform
import ContainariumService
import ContainariumStore
import ContainariumTelemetry
import Foundation
public import Hummingbird
import Logging
import NIOCore
import Synchronization

/// Per-request context: Hummingbird's core storage plus the peer address.
public struct RESTContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remote: String
    /// Who called: set by `AuthenticationMiddleware` on every authenticated route.
    public var caller: Caller?
    /// Which route took the request (its pattern), for the request metrics; shared with the
    /// copies of this context the router hands on.
    let route = RouteMark()

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        if let a = source.channel.remoteAddress, let ip = a.ipAddress {
            remote = ip.contains(":") ? "[\(ip)]:\(a.port ?? 0)" : "\(ip):\(a.port ?? 0)"
        } else {
            remote = "unknown"
        }
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
    /// `/mcp`: the API as MCP tools over streamable HTTP (MCP.swift).
    let mcp: MCPEndpoint

    public init(plane: ControlPlane, tokens: Tokens, swaggerDir: String?, webuiDir: String? = nil, sseHeartbeat: Duration = .seconds(15)) {
        self.mcp = MCPEndpoint(plane: plane, tokens: tokens, logger: plane.logger)
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

    /// The routes that are not RPCs: the event stream and the WebSocket endpoints. (Health, the
    /// OpenAPI document, Swagger UI and the dashboard are public.)
    static let streamRoutes: [Route] = [
        r(.get, "/v1/events", "events.stream") { api, c throws(ContainariumError) in try api.sse(c.caller) },
        r(.get, "/v1/containers/{}/terminal", "container.terminal") { api, c throws(ContainariumError) in
            try await api.plane.authorize(c.caller, c.params[0], .act)
            throw .invalid("open the terminal as a WebSocket (Upgrade: websocket, Sec-WebSocket-Protocol: containarium.v1, bearer.<token>)")
        },
        // The reports as CSV (`?username=` for one environment, `?limit=`, default 1000).
        r(.get, "/v1/security/clamav-reports.csv", "security.reports") { api, c throws(ContainariumError) in try await api.reportsCSV("clamav", c) },
        r(.get, "/v1/security/trivy-reports.csv", "security.reports") { api, c throws(ContainariumError) in try await api.reportsCSV("trivy", c) },
        // Prometheus's text format: an admin's token or a metrics token (`token generate --roles metrics`).
        r(.get, "/metrics", RESTAPI.scrapeAction) { api, c throws(ContainariumError) in
            guard c.caller.role == .metrics || c.caller.isAdmin else { throw .denied("/metrics needs a metrics or admin token") }
            guard c.query.isEmpty, c.body.isEmpty else { throw .invalid("/metrics takes no query and no body") }
            guard let telemetry = api.plane.platformMetrics.telemetry else { throw .notFound("metrics are off on this daemon (--no-metrics)") }
            return api.metricsResponse(telemetry)
        },
        r(.get, "/v1/containers/{}/vnc", "container.vnc") { api, c throws(ContainariumError) in
            try await api.plane.authorize(c.caller, c.params[0], .act)
            throw .invalid("open a VM's screen as a WebSocket (Upgrade: websocket, Sec-WebSocket-Protocol: containarium.v1, bearer.<token>)")
        },
    ]

    /// Every route: one per RPC the contract binds to HTTP (`google.api.http` in proto/), whose
    /// handler is `APIv1`'s, as the gRPC service's is, then the stream routes.
    static let routes: [Route] = ProtoSchema.shared.routes.compactMap { rpc -> Route? in
        guard let binding = RESTBindings.all[rpc.method] else { return nil }
        let pattern = rpc.segments.map { $0.hasPrefix("{") ? "{}" : $0 }
        let method = HTTPRequest.Method(rpc.verb) ?? .get
        return Route(method: method, pattern: pattern, action: binding.action) { api, c throws(ContainariumError) in
            let object = try ProtoSchema.shared.requestObject(rpc, path: Dictionary(uniqueKeysWithValues: zip(rpc.pathFields, c.params)), query: c.query, body: c.body)
            let answer = try await binding.call(APIv1(plane: api.plane), c.caller, object)
            var response = api.raw(answer.status, try WireJSON.encode(answer.body))
            if let location = answer.location { response.headers[.location] = location }
            return response
        }
    } + streamRoutes

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
        // MCP's streamable HTTP: POST messages, GET the server's stream, DELETE the session.
        for method in [HTTPRequest.Method.post, .get, .delete] {
            router.on("/mcp", method: method) { request, context in
                context.route.set("/mcp")
                return try await api.mcp.handle(request, context: context, api: api)
            }
        }
        for route in routes {
            var names: [String] = []
            let path = "/" + route.pattern.map { part -> String in
                guard part == "{}" else { return part }
                names.append("p\(names.count)")
                return ":" + (names.last ?? "p")
            }.joined(separator: "/")
            let parameters = names
            router.group().add(middleware: AuthenticationMiddleware(api: api, action: route.action, route: path))
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
        let query = Self.query(request.uri.query)
        if let twice = Self.repeatedKey(request.uri.query) { return self.error(.invalid("query parameter '\(twice)' is given more than once")) }
        let call = Call(request: request, caller: caller, params: params, query: query, body: body)
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
        if path == "/openapi.json" { return raw(.ok, OpenAPI.json) }
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
            let (subject, role, issued, expires) = try await tokens.verify(token)
            return Caller(subject: subject, role: role, source: context.remote, interface: "rest", issuedAt: issued, expiresAt: expires)
        }
        guard let header = request.headers[.authorization] else { throw .unauthenticated("missing bearer token (Authorization: Bearer <token>)") }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .unauthenticated("the Authorization header must be 'Bearer <token>'") }
        let (subject, role, issued, expires) = try await tokens.verify(String(parts[1]).trimmingCharacters(in: .whitespaces))
        return Caller(subject: subject, role: role, source: context.remote, interface: "rest", issuedAt: issued, expiresAt: expires)
    }

    /// A query parameter given twice (every one this API takes is a single value).
    static func repeatedKey(_ q: String?) -> String? {
        var seen = Set<String>()
        for pair in (q ?? "").split(separator: "&") {
            let key = String(pair.split(separator: "=", maxSplits: 1).first ?? "")
            let name = key.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? key
            if !seen.insert(name).inserted { return name }
        }
        return nil
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

    /// The action of `GET /metrics`, the one route a metrics token may call.
    static let scrapeAction = "system.metrics-scrape"

    func metricsResponse(_ telemetry: Telemetry) -> Response {
        let bytes = telemetry.render()
        var headers = HTTPFields()
        headers[.contentType] = Telemetry.contentType
        headers[.contentLength] = String(bytes.count)
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// `containarium_api_requests_total` and `containarium_api_request_duration_seconds` for one
    /// answered request: the route as its pattern, never the path itself.
    func recordRequest(route: String, method: String, status: Int, started: ContinuousClock.Instant) {
        guard let t = plane.platformMetrics.telemetry else { return }
        t.apiRequest(interface: "rest", route: route, method: method, code: String(status), elapsed: ContinuousClock.now - started)
    }

    /// The metric label of a request no authenticated route took.
    static func publicRoute(_ path: String) -> String {
        let first = split(path).first ?? ""
        switch first {
        case "": return "/"
        case "healthz", "openapi.json": return path == "/" + first ? path : "unmatched"
        case "swagger-ui", "webui": return "/\(first)/**"
        case "v1": return path == "/v1/health" ? path : "unmatched"
        default: return "unmatched"
        }
    }

    func reportsCSV(_ scanner: String, _ c: Call) async throws(ContainariumError) -> Response {
        if let unknown = c.query.keys.sorted().first(where: { $0 != "username" && $0 != "limit" }) {
            throw .invalid("unknown query parameter '\(unknown)' (allowed: username, limit)")
        }
        guard c.body.isEmpty else { throw .invalid("this route takes no body") }
        let limit: Int
        if let l = c.query["limit"] {
            guard let n = Int(l), (1...1000).contains(n) else { throw .invalid("limit must be 1 to 1000") }
            limit = n
        } else {
            limit = 1000
        }
        let reports = try await plane.scanReports(c.caller, scanner: scanner, username: c.query["username"].flatMap { $0.isEmpty ? nil : $0 }, limit: limit)
        var response = raw(.ok, Data(APIv1.csv(reports).utf8), contentType: "text/csv; charset=utf-8")
        response.headers[.contentDisposition] = "attachment; filename=\"\(scanner)-reports.csv\""
        return response
    }

    // MARK: - server-sent events

    /// At most `DaemonEvents.perCaller` streams per caller (429 beyond: close one first).
    func sse(_ caller: Caller) throws(ContainariumError) -> Response {
        try plane.events.admits(caller.subject)
        let plane = self.plane
        let heartbeat = sseHeartbeat
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-store"
        let body = ResponseBody { writer in
            // Subscribed only now that the answer is under way: a client gone before holds nothing.
            let (stream, cancel) = try plane.events.subscribe(for: caller.subject)
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
                // The Event message of EventService, in the proto3 JSON every REST answer uses.
                let data = (try? ProtoSchema.shared.answer(ProtoMap.event(e))).flatMap { try? WireJSON.encode($0) }
                    .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
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
        let started = ContinuousClock.now
        var status = 500
        defer {
            api.recordRequest(route: context.route.value ?? RESTAPI.publicRoute(request.uri.path), method: request.method.rawValue,
                              status: status, started: started)
        }
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
        status = response.status.code
        return RESTAPI.withCORS(response, origin: origin)
    }
}

/// Per route: a bearer token (or, for the terminal's WebSocket, the subprotocol token) makes
/// the caller; a missing or bad one is a 401, audited under the route's action.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = RESTContext
    let api: RESTAPI
    let action: String
    /// The route's pattern (its metric label).
    let route: String

    func handle(_ request: Request, context: RESTContext, next: (Request, RESTContext) async throws -> Response) async throws -> Response {
        context.route.set(route)
        var context = context
        do throws(ContainariumError) {
            context.caller = try await api.authenticate(request, context)
        } catch {
            await api.plane.auditAuthFailure(source: context.remote, interface: "rest", action: action, reason: error.message)
            var r = api.error(error)
            r.headers[.wwwAuthenticate] = "Bearer realm=\"containarium\""
            return r
        }
        // A node's identity is for the node protocol (gRPC NodeService) only: no REST route,
        // not even the public reads, answers it.
        if let node = context.caller, node.role == .node {
            let refusal = ContainariumError.denied("node tokens are for the node protocol (gRPC NodeService: ReportNode, Link) only")
            await api.plane.audit(actor: node.subject, role: "node", action: "auth.denied", target: action, source: node.source, interface: "rest",
                                  result: refusal.code.rawValue, detail: refusal.message)
            return api.error(refusal)
        }
        // A scraper's token reads /metrics and nothing else.
        if let scraper = context.caller, scraper.role == .metrics, action != RESTAPI.scrapeAction {
            let refusal = ContainariumError.denied("metrics tokens are for GET /metrics only")
            await api.plane.audit(actor: scraper.subject, role: "metrics", action: "auth.denied", target: action, source: scraper.source, interface: "rest",
                                  result: refusal.code.rawValue, detail: refusal.message)
            return api.error(refusal)
        }
        return try await next(request, context)
    }
}

/// Set once by the route that takes a request (its pattern), read when the answer is counted.
final class RouteMark: Sendable {
    private let state = Mutex<String?>(nil)
    func set(_ route: String) { state.withLock { $0 = $0 ?? route } }
    var value: String? { state.withLock { $0 } }
}
