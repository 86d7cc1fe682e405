import ContainariumCore
import ContainariumPlatform
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import MCP
import NIOCore
import Synchronization

// The MCP adapter (issue 20): the daemon's API as Model Context Protocol tools, resources and
// prompts, over streamable HTTP at /mcp (and, through `containarium mcp`, over stdio). Thin: each
// tool is one RPC of the contract, its input schema the RPC's request message as the OpenAPI
// document has it, its call the REST binding's (the same APIv1 function, validation,
// authorization and audit as REST and gRPC).

// MARK: - JSON bridging

extension JSONValue {
    init(mcp v: Value) {
        switch v {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .number(Double(i))
        case .double(let d): self = .number(d)
        case .string(let s): self = .string(s)
        case .data(_, let d): self = .string(d.base64EncodedString())
        case .array(let a): self = .array(a.map(JSONValue.init(mcp:)))
        case .object(let o): self = .object(o.mapValues(JSONValue.init(mcp:)))
        }
    }

    var mcp: Value {
        switch self {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .number(let n): return n == n.rounded() && abs(n) < 9e15 ? .int(Int(n)) : .double(n)
        case .string(let s): return .string(s)
        case .array(let a): return .array(a.map(\.mcp))
        case .object(let o): return .object(o.mapValues(\.mcp))
        }
    }
}

// MARK: - tools from the contract

/// One MCP tool: an RPC bound to HTTP, its request message and its REST binding.
struct MCPTool: Sendable {
    let tool: Tool
    let route: ProtoSchema.Route
    let binding: RESTBinding
}

enum MCPCatalog {
    /// `CreateContainer` -> `create_container`.
    /// `CreateContainer` -> `create_container`, `ListSSHKeys` -> `list_ssh_keys`, `ScanClamAV` -> `scan_clam_av`.
    static func toolName(_ rpc: String) -> String {
        let chars = Array(rpc)
        var out = ""
        for (i, c) in chars.enumerated() {
            if c.isUppercase, i > 0 {
                let previous = chars[i - 1], next = i + 1 < chars.count ? chars[i + 1] : nil
                if previous.isLowercase || previous.isNumber || (previous.isUppercase && next?.isLowercase == true) { out += "_" }
            }
            out += c.lowercased()
        }
        return out
    }

    /// Every RPC the contract binds to HTTP, as a tool (node-protocol RPCs are not bound).
    static let tools: [String: MCPTool] = {
        var out: [String: MCPTool] = [:]
        let schema = ProtoSchema.shared
        for route in schema.routes {
            guard let binding = RESTBindings.all[route.method] else { continue }
            let name = toolName(route.name)
            guard out[name] == nil else { continue }  // (an RPC bound to two routes is one tool)
            let read = route.verb == "GET"
            let destructive = route.verb == "DELETE" || ["Stop", "Restart", "Resize", "Cleanup", "Revoke", "Remove", "Drain", "Update"].contains { route.name.hasPrefix($0) }
            let description = (route.comment.isEmpty ? "\(route.name) of \(route.service)." : route.comment)
                + " (REST: \(route.verb) \(route.path); the answer is the proto3 JSON of \(OpenAPI.short(route.output)).)"
            let tool = Tool(name: name, description: description, inputSchema: inputSchema(route.input).mcp,
                            annotations: .init(title: route.name, readOnlyHint: read, destructiveHint: read ? nil : destructive,
                                               idempotentHint: read || route.verb == "PUT" ? true : nil, openWorldHint: false))
            out[name] = MCPTool(tool: tool, route: route, binding: binding)
        }
        return out
    }()

    static let list: [Tool] = tools.values.map(\.tool).sorted { $0.name < $1.name }

    /// The request message's JSON Schema, self-contained: the OpenAPI document's input schema
    /// with its references moved under `$defs`.
    static func inputSchema(_ message: String) -> JSONValue {
        let components = OpenAPI.document["components"]?["schemas"]?.objectValue ?? [:]
        var defs: [String: JSONValue] = [:]
        func rewrite(_ v: JSONValue) -> JSONValue {
            switch v {
            case .object(let o):
                if case .string(let ref)? = o["$ref"], ref.hasPrefix("#/components/schemas/") {
                    let name = String(ref.dropFirst("#/components/schemas/".count))
                    if defs[name] == nil, let c = components[name] {
                        defs[name] = .null  // (a placeholder: recursion stops here)
                        defs[name] = rewrite(c)
                    }
                    return .object(["$ref": .string("#/$defs/" + name)])
                }
                return .object(o.mapValues(rewrite))
            case .array(let a):
                return .array(a.map(rewrite))
            default:
                return v
            }
        }
        // Every field of the message, path fields too (a tool has no path).
        guard let type = ProtoSchema.shared.messages[message] else { return .object(["type": .string("object")]) }
        let top = OpenAPI.object(type, ProtoSchema.shared, request: true)
        guard case .object(var root) = rewrite(top) else { return top }
        if !defs.isEmpty { root["$defs"] = .object(defs) }
        return .object(root)
    }
}

// MARK: - one session's server

/// The MCP server of one session: bound to the caller that opened it.
enum MCPServer {
    static let instructions = """
        Containarium manages isolated development environments (Incus system containers and VMs), one per user, named <user>-container. \
        Tools mirror the REST API (docs/rest-api.md); each takes the proto3 JSON of its request message. You act as the token's user: \
        users see and change only their own environments and those they collaborate on.
        """

    static func make(plane: ControlPlane, caller: Caller, logger: Logger) async -> Server {
        let server = Server(name: "containarium", version: "0.2.0", title: "Containarium", instructions: instructions,
                            capabilities: .init(prompts: .init(listChanged: false), resources: .init(subscribe: false, listChanged: false),
                                                tools: .init(listChanged: false)))
        await server.withMethodHandler(ListTools.self) { _ in ListTools.Result(tools: MCPCatalog.list) }
        await server.withMethodHandler(CallTool.self) { [weak server] params in
            try await call(plane: plane, caller: caller, params, server: server)
        }
        await server.withMethodHandler(ListResources.self) { _ in
            try await ListResources.Result(resources: resources(plane: plane, caller: caller))
        }
        await server.withMethodHandler(ReadResource.self) { params in
            try await ReadResource.Result(contents: [read(plane: plane, caller: caller, uri: params.uri)])
        }
        await server.withMethodHandler(ListPrompts.self) { _ in ListPrompts.Result(prompts: MCPPrompts.list) }
        await server.withMethodHandler(GetPrompt.self) { params in try MCPPrompts.get(params.name, params.arguments ?? [:]) }
        return server
    }

    /// Most of a command's output a tool answer carries (exec).
    static let outputLimit = 64 * 1024

    static func call(plane: ControlPlane, caller: Caller, _ params: CallTool.Parameters, server: Server?) async throws -> CallTool.Result {
        guard let entry = MCPCatalog.tools[params.name] else { throw MCPError.invalidParams("no tool '\(params.name)' (tools/list has them)") }
        guard let input = ProtoSchema.shared.messages[entry.route.input] else { throw MCPError.internalError("no message \(entry.route.input)") }
        let arguments = (params.arguments ?? [:]).mapValues(JSONValue.init(mcp:))
        let object: [String: JSONValue]
        do throws(ContainariumError) {
            object = try ProtoSchema.shared.checked(arguments, input, at: "")
        } catch {
            throw MCPError.invalidParams("\(params.name): \(error.message)")
        }
        // A create reports its steps as MCP progress when the client asked for them.
        let progress = params._meta?.progressToken
        var follower: Task<Void, Never>?
        if let progress, let server, entry.route.name == "CreateContainer", case .string(let user)? = object["username"],
           let (stream, cancel) = try? plane.events.subscribe(for: caller.subject) {
            follower = Task {
                defer { cancel() }
                for await e in stream where e.username == user && (e.type == "operation.progress" || e.type == "stack.progress") {
                    guard case .progress(_, let step, let total, let message) = e.data else { continue }
                    try? await server.notify(ProgressNotification.message(.init(progressToken: progress, progress: Double(step),
                                                                                total: total > 0 ? Double(total) : nil, message: message)))
                }
            }
        }
        defer { follower?.cancel() }
        let outcome: Result<JSONValue, ContainariumError>
        do throws(ContainariumError) {
            outcome = .success(try await entry.binding.call(APIv1(plane: plane), caller, .object(object)).body)
        } catch {
            outcome = .failure(error)
        }
        switch outcome {
        case .success(var body):
            if entry.route.name == "Exec" { body = bounded(body) }
            let text = String(decoding: (try? WireJSON.encode(body)) ?? Data("{}".utf8), as: UTF8.self)
            return try CallTool.Result(content: [.text(text: text, annotations: nil, _meta: nil)], structuredContent: body.mcp, isError: false)
        case .failure(let error):
            if Task.isCancelled { throw CancellationError() }
            if error.code == .invalidArgument { throw MCPError.invalidParams("\(params.name): \(error.message)") }
            // Refusals and failures are the tool's answer (the model can read and act on them).
            let text = "\(error.code.rawValue): \(error.message)"
            let structured: Value = .object(["error": .object(["code": .string(error.code.rawValue), "message": .string(error.message)])])
            return try CallTool.Result(content: [.text(text: text, annotations: nil, _meta: nil)], structuredContent: structured, isError: true)
        }
    }

    /// stdout and stderr of an exec answer cut to `outputLimit` bytes each, saying so.
    static func bounded(_ body: JSONValue) -> JSONValue {
        guard case .object(var o) = body else { return body }
        for key in ["stdout", "stderr"] {
            if case .string(let s)? = o[key], s.utf8.count > outputLimit {
                o[key] = .string(String(decoding: Array(s.utf8.prefix(outputLimit)), as: UTF8.self) + "\n[... \(s.utf8.count - outputLimit) more bytes not shown]")
            }
        }
        return .object(o)
    }

    // MARK: resources

    static func resources(plane: ControlPlane, caller: Caller) async throws -> [Resource] {
        var out = [Resource(name: "catalog", uri: "containarium://catalog", title: "OS types and stacks",
                            description: "What a new environment can be made of: OS types and software stacks.", mimeType: "application/json")]
        let views: [ContainerView]
        do throws(ContainariumError) { views = try await plane.listContainers(caller) } catch { throw MCPError.invalidRequest(error.message) }
        for v in views.sorted(by: { $0.username < $1.username }) {
            out.append(Resource(name: "\(v.username)-container", uri: "containarium://environments/\(v.username)", title: "\(v.username)'s environment",
                                description: "State, resources, addresses and labels of \(v.username)-container.", mimeType: "application/json"))
            out.append(Resource(name: "\(v.username)-ssh-config", uri: "containarium://environments/\(v.username)/ssh-config",
                                title: "SSH config for \(v.username)-container", description: "An ~/.ssh/config block that reaches it.",
                                mimeType: "text/plain"))
        }
        return out
    }

    static func read(plane: ControlPlane, caller: Caller, uri: String) async throws -> Resource.Content {
        let api = APIv1(plane: plane)
        func answer(_ rpc: String, _ request: [String: JSONValue]) async throws -> JSONValue {
            guard let binding = RESTBindings.all["containarium.v1." + rpc] else { throw MCPError.internalError("no RPC \(rpc)") }
            do throws(ContainariumError) {
                return try await binding.call(api, caller, .object(request)).body
            } catch {
                throw MCPError.invalidParams("\(uri): \(error.code.rawValue): \(error.message)")
            }
        }
        func json(_ v: JSONValue) -> String { String(decoding: (try? WireJSON.encode(v)) ?? Data(), as: UTF8.self) }
        if uri == "containarium://catalog" {
            return .text(json(try await answer("SystemService/GetCatalog", [:])), uri: uri, mimeType: "application/json")
        }
        let prefix = "containarium://environments/"
        guard uri.hasPrefix(prefix) else { throw MCPError.invalidParams("unknown resource \(uri)") }
        let rest = uri.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        switch rest.count {
        case 1:
            return .text(json(try await answer("ContainerService/GetContainer", ["username": .string(rest[0])])), uri: uri, mimeType: "application/json")
        case 2 where rest[1] == "ssh-config":
            let a = try await answer("ContainerService/ExportSSHConfig", ["username": .string(rest[0])])
            return .text(a["config"]?.stringValue ?? json(a), uri: uri, mimeType: "text/plain")
        default:
            throw MCPError.invalidParams("unknown resource \(uri)")
        }
    }
}

/// Prompts: ready-made requests an assistant can start from.
enum MCPPrompts {
    static let list: [Prompt] = [
        Prompt(name: "new-developer", title: "Set up an environment for a new developer",
               description: "Create a new developer's environment with their SSH key (and a stack), then hand them the way in.",
               arguments: [.init(name: "username", description: "The developer's user name (lowercase letters, digits, -).", required: true),
                           .init(name: "ssh_public_key", description: "Their public key (Ed25519 or ECDSA), one line.", required: true),
                           .init(name: "stack", description: "A software stack to install (see the catalog resource).", required: false)]),
        Prompt(name: "diagnose-environment", title: "Find out what is wrong with an environment",
               description: "Look at an environment's state, use and recent events, and suggest what to do.",
               arguments: [.init(name: "username", description: "The environment's user name.", required: true)]),
    ]

    static func get(_ name: String, _ args: [String: String]) throws -> GetPrompt.Result {
        func need(_ key: String) throws -> String {
            guard let v = args[key], !v.isEmpty else { throw MCPError.invalidParams("prompt \(name) needs the argument \(key)") }
            return v
        }
        switch name {
        case "new-developer":
            let user = try need("username"), key = try need("ssh_public_key")
            let stack = args["stack"].flatMap { $0.isEmpty ? nil : $0 }
            let text = """
                Set up a development environment for the new developer \(user).
                1. Read the resource containarium://catalog to see the OS types and stacks on offer\(stack.map { " (they asked for the \($0) stack)" } ?? "").
                2. Call create_container with {"username": "\(user)", "sshKeys": ["\(key)"]\(stack.map { ", \"stack\": \"\($0)\"" } ?? "")}; it reports its steps as progress.
                3. Call export_ssh_config with {"username": "\(user)"} and give \(user) the block to put in ~/.ssh/config, with the ssh command to use.
                If a step fails, say what the error says and what would fix it; do not retry a create that failed validation unchanged.
                """
            return GetPrompt.Result(description: "Set up \(user)'s environment", messages: [.user(.text(text: text))])
        case "diagnose-environment":
            let user = try need("username")
            let text = """
                Find out what is wrong with \(user)'s environment (\(user)-container) and suggest a fix.
                1. Call get_container with {"username": "\(user)"}: its state, limits and use.
                2. If it runs, call exec with {"username": "\(user)", "command": ["sh", "-c", "uptime; df -h /; free -m; ps aux --sort=-%mem | head -5"]}.
                3. Call get_metrics_history with {"username": "\(user)"} for the last hour's CPU, memory and disk.
                Then say plainly what you found and which one action (start, resize, cleanup_disk, restart) would help, and why.
                """
            return GetPrompt.Result(description: "Diagnose \(user)'s environment", messages: [.user(.text(text: text))])
        default:
            throw MCPError.invalidParams("no prompt '\(name)' (prompts/list has them)")
        }
    }
}

// MARK: - streamable HTTP at /mcp

/// The daemon's `/mcp` endpoint: sessions of the streamable HTTP transport, each bound to the
/// caller whose bearer token opened it (every request of a session must carry a token of the
/// same subject). At most `perSubject` sessions per subject (the oldest is closed) and `total`
/// in all; a session idle for `idle` is closed.
final class MCPEndpoint: Sendable {
    struct Session: Sendable {
        let transport: StatefulHTTPServerTransport
        let server: Server
        let subject: String
        var lastUsed: Date
    }
    let plane: ControlPlane
    let tokens: Tokens
    let logger: Logger
    let perSubject = 8
    let total = 256
    let idle: TimeInterval = 1800
    private let sessions = Mutex<[String: Session]>([:])

    init(plane: ControlPlane, tokens: Tokens, logger: Logger) {
        self.plane = plane
        self.tokens = tokens
        self.logger = logger
    }

    static let validation = StandardValidationPipeline(validators: [
        AcceptHeaderValidator(mode: .sseRequired), ContentTypeValidator(), ProtocolVersionValidator(), SessionValidator(),
    ])

    func handle(_ request: Request, context: RESTContext, api: RESTAPI) async throws(ContainariumError) -> Response {
        // Who: a user's or an admin's bearer token (the same JWTs as REST).
        let caller: Caller
        do throws(ContainariumError) {
            var who = try await api.authenticate(request, context)
            guard who.role == .user || who.role == .admin else { throw ContainariumError.denied("\(who.role.rawValue) tokens may not use MCP") }
            who.interface = "mcp"
            caller = who
        } catch {
            if error.code == .unauthenticated {
                await plane.auditAuthFailure(source: context.remote, interface: "mcp", action: "mcp", reason: error.message)
            }
            throw error
        }
        // Browsers: only a page of this origin (DNS rebinding); other clients send no Origin.
        if let origin = request.headers[.origin], let host = request.head.authority,
           origin != "http://\(host)" && origin != "https://\(host)" {
            throw ContainariumError.denied("MCP requests from the origin \(origin) are refused")
        }
        var req = request
        let body: Data
        do {
            var buffer = try await req.collectBody(upTo: 1 << 20)
            body = Data(buffer.readBytes(length: buffer.readableBytes) ?? [])
        } catch {
            throw ContainariumError.invalid("an MCP message is at most 1 MiB")
        }
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        let message = MCP.HTTPRequest(method: request.method.rawValue, headers: headers, body: body.isEmpty ? nil : body, path: request.uri.path)
        let now = Date()
        sweep(now)
        let transport: StatefulHTTPServerTransport
        if let id = message.header("Mcp-Session-Id") {
            let found = sessions.withLock { s -> Session? in
                guard var session = s[id], session.subject == caller.subject else { return nil }
                session.lastUsed = now
                s[id] = session
                return session
            }
            // (Another subject's session answers as one that does not exist.)
            guard let session = found else { return mcpResponse(.error(statusCode: 404, .invalidRequest("no such MCP session"))) }
            transport = session.transport
            let response = await transport.handleRequest(message)
            if request.method == .delete { close(id) }
            return mcpResponse(response)
        }
        guard request.method == .post else { return mcpResponse(.error(statusCode: 400, .invalidRequest("Mcp-Session-Id is required (initialize first)"))) }
        // A new session (the transport refuses anything but an initialize without a session id).
        transport = StatefulHTTPServerTransport(validationPipeline: Self.validation)
        let server = await MCPServer.make(plane: plane, caller: caller, logger: logger)
        do { try await server.start(transport: transport) } catch {
            throw ContainariumError(.internal, "the MCP session could not start", cause: "\(error)")
        }
        let response = await transport.handleRequest(message)
        if let id = response.headers.first(where: { $0.key.lowercased() == "mcp-session-id" })?.value {
            let evicted = sessions.withLock { s -> [Session] in
                var out: [Session] = []
                let mine = s.filter { $0.value.subject == caller.subject }.sorted { $0.value.lastUsed < $1.value.lastUsed }
                for (key, session) in mine.prefix(max(0, mine.count - perSubject + 1)) {
                    s[key] = nil
                    out.append(session)
                }
                if s.count >= total, let oldest = s.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                    s[oldest.key] = nil
                    out.append(oldest.value)
                }
                s[id] = Session(transport: transport, server: server, subject: caller.subject, lastUsed: now)
                return out
            }
            for e in evicted { Task { await e.server.stop() } }
            await plane.audit(caller, "mcp.session", target: caller.subject, result: .success(()), detail: "session \(id.prefix(8))")
        } else {
            await server.stop()
        }
        return mcpResponse(response)
    }

    func close(_ id: String) {
        guard let session = sessions.withLock({ $0.removeValue(forKey: id) }) else { return }
        Task { await session.server.stop() }
    }

    private func sweep(_ now: Date) {
        let stale = sessions.withLock { s -> [Session] in
            let old = s.filter { now.timeIntervalSince($0.value.lastUsed) > idle }
            for k in old.keys { s[k] = nil }
            return Array(old.values)
        }
        for e in stale { Task { await e.server.stop() } }
    }

    var count: Int { sessions.withLock { $0.count } }

    func mcpResponse(_ r: MCP.HTTPResponse) -> Response {
        var headers = HTTPFields()
        for (k, v) in r.headers { if let name = HTTPField.Name(k) { headers[name] = v } }
        headers[.cacheControl] = "no-store"
        let status = HTTPTypes.HTTPResponse.Status(code: r.statusCode)
        switch r {
        case .stream(let stream, _):
            let body = ResponseBody { writer in
                do {
                    for try await chunk in stream { try await writer.write(ByteBuffer(bytes: chunk)) }
                } catch {}
                try await writer.finish(nil)
            }
            return Response(status: status, headers: headers, body: body)
        default:
            let data = r.bodyData ?? Data()
            headers[.contentLength] = String(data.count)
            return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
        }
    }
}
