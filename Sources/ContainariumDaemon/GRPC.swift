public import ContainariumCore
import ContainariumService
public import GRPCCore
import ContainariumStore
import Foundation
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import ServiceLifecycle

/// Where and how the gRPC API listens.
public struct GRPCOptions: Sendable {
    public var host = "0.0.0.0"
    public var port = 50051
    /// Require client certificates signed by the deployment's CA (`<certsDir>/ca.crt`).
    public var mtls = false
    public var certsDir = "/etc/containarium/certs"
    public init() {}
}

/// Messages travel as JSON (the same shapes as the REST API) in gRPC frames: the service is
/// described in docs/grpc.md; no code generation step is needed.
struct JSONCodec<T: Codable & Sendable>: MessageSerializer, MessageDeserializer {
    typealias Message = T
    func serialize<Bytes: GRPCContiguousBytes>(_ message: T) throws -> Bytes {
        Bytes(try WireJSON.encode(message))
    }
    func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> T {
        let data = bytes.withUnsafeBytes { Data($0) }
        do { return try WireJSON.decode(T.self, from: data) } catch {
            throw RPCError(code: .invalidArgument, message: "malformed request: \(error.message)")
        }
    }
}

/// The gRPC service "containarium.v1.Containarium". Every method takes and returns a JSON
/// object; CreateContainer streams progress messages before the final container.
public enum ContainariumRPC {
    public static let service = ServiceDescriptor(fullyQualifiedService: "containarium.v1.Containarium")
    public static let unaryMethods = [
        "ListContainers", "GetContainer", "DeleteContainer", "StartContainer", "StopContainer", "RestartContainer",
        "ResizeContainer", "InstallStack", "Exec", "ExportSSHConfig", "GetSystemInfo", "ListAudit", "ListPlugins", "GetCapacity", "ListStacks",
        "ListCollaborators", "AddCollaborator", "RemoveCollaborator",
        "ReportNode", "ListNodes", "DrainNode", "UndrainNode", "RemoveNode", "ExplainSchedule",
    ]
    public static let createMethod = "CreateContainer"
    /// A VM console as a bidirectional stream. The request's metadata names it
    /// (containarium-console-username, containarium-console-kind: serial or vnc); messages
    /// are {"data": base64} both ways, after a first {"ready": true} from the server.
    public static let consoleMethod = "OpenConsole"
    public static func method(_ name: String) -> MethodDescriptor { MethodDescriptor(service: service, method: name) }

    static func rpcError(_ e: ContainariumError) -> RPCError {
        let code = Status.Code(rawValue: e.code.grpcStatus).flatMap(RPCError.Code.init) ?? .internalError
        var metadata = Metadata()
        metadata.addString(e.code.rawValue, forKey: "containarium-error-code")
        return RPCError(code: code, message: e.description, metadata: metadata)
    }

    static func containariumError(_ e: any Error) -> ContainariumError {
        if let c = e as? ContainariumError { return c }
        guard let r = e as? RPCError else { return ContainariumError(.unavailable, "gRPC call failed", cause: "\(e)") }
        if let raw = r.metadata[stringValues: "containarium-error-code"].first(where: { _ in true }), let code = ContainariumError.Code(rawValue: raw) {
            return ContainariumError(code, r.message)
        }
        let code: ContainariumError.Code
        switch r.code {
        case .unauthenticated: code = .unauthenticated
        case .permissionDenied: code = .permissionDenied
        case .notFound: code = .notFound
        case .invalidArgument: code = .invalidArgument
        case .alreadyExists: code = .alreadyExists
        case .deadlineExceeded: code = .timeout
        case .unavailable: code = .unavailable
        default: code = .internal
        }
        return ContainariumError(code, r.message)
    }
}

struct ContainariumGRPCService: RegistrableRPCService {
    let plane: ControlPlane
    let tokens: Tokens
    let mtls: Bool

    /// A bearer token in metadata wins; otherwise a verified client certificate (mTLS) is the
    /// deployment's administrator; otherwise the call is refused.
    func caller(_ metadata: Metadata, _ context: ServerContext) async throws(ContainariumError) -> Caller {
        let peer = context.remotePeer
        if let header = metadata[stringValues: "authorization"].first(where: { _ in true }) {
            let parts = header.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .unauthenticated("authorization metadata must be 'Bearer <token>'") }
            let (subject, role) = try await tokens.verify(String(parts[1]))
            return Caller(subject: subject, role: role, source: peer, interface: "grpc")
        }
        if mtls { return Caller(subject: "mtls-client", role: .admin, source: peer, interface: "grpc") }
        throw .unauthenticated("missing credentials: use mTLS client certificates or a bearer token")
    }

    /// A GPU count from a message; anything but a whole number becomes -1, which the service
    /// layer refuses with a clear message.
    static func gpuCount(_ v: JSONValue?) -> Int? {
        guard let v, v != .null else { return nil }
        guard case .number(let d) = v, d.rounded() == d, abs(d) < 1e6 else { return -1 }
        return Int(d)
    }

    func handle(_ name: String, _ request: JSONValue, _ caller: Caller) async throws(ContainariumError) -> JSONValue {
        func field(_ k: String) throws(ContainariumError) -> String {
            guard let v = request[k]?.stringValue, !v.isEmpty else { throw .invalid("missing field '\(k)'") }
            return v
        }
        func encode<T: Encodable>(_ v: T) throws(ContainariumError) -> JSONValue { try WireJSON.decode(JSONValue.self, from: WireJSON.encode(v)) }
        switch name {
        case "ListContainers":
            let list = try await plane.listContainers(caller)
            return try encode(ContainerListView(containers: list, totalCount: list.count))
        case "GetContainer": return try encode(await plane.getContainer(caller, try field("username")))
        case "DeleteContainer":
            try await plane.deleteContainer(caller, try field("username"), force: request["force"]?.bool ?? true)
            return .object([:])
        case "StartContainer": return try encode(await plane.power(caller, try field("username"), .start))
        case "StopContainer": return try encode(await plane.power(caller, try field("username"), .stop, force: request["force"]?.bool ?? false))
        case "RestartContainer": return try encode(await plane.power(caller, try field("username"), .restart))
        case "ResizeContainer":
            return try encode(await plane.resize(caller, try field("username"), cpu: request["cpu"]?.stringValue,
                                                 memory: request["memory"]?.stringValue, disk: request["disk"]?.stringValue))
        case "InstallStack": return try encode(await plane.installStack(caller, try field("username"), stack: try field("stack")))
        case "Exec":
            let command = request["command"]?.items?.compactMap { $0.stringValue } ?? []
            return try encode(await plane.exec(caller, try field("username"), command: command, asUser: request["asUser"]?.bool ?? false))
        case "ExportSSHConfig":
            let text = try await plane.exportSSHConfig(caller, try field("username"), jumpHost: request["jumpHost"]?.stringValue, keyPath: request["keyPath"]?.stringValue,
                                                       gatewayHost: request["gatewayHost"]?.stringValue)
            return .object(["config": .string(text)])
        case "GetSystemInfo": return try await plane.systemInfo(caller)
        case "ListAudit":
            let f = AuditFilter(actor: request["actor"]?.stringValue, action: request["action"]?.stringValue, target: request["target"]?.stringValue,
                                result: request["result"]?.stringValue, limit: Int(request["limit"]?.number ?? 100))
            return try encode(["entries": await plane.auditLog(caller, f)])
        case "ListPlugins": return .object(["plugins": .array(await plane.plugins(caller))])
        case "ListCollaborators":
            return try encode(["collaborators": await plane.listCollaborators(caller, try field("username"))])
        case "AddCollaborator":
            return try encode(await plane.addCollaborator(caller, try field("username"), collaborator: try field("collaboratorUsername"),
                                                          sshKey: request["sshPublicKey"]?.stringValue, sudo: request["sudo"]?.bool ?? false,
                                                          containerRuntime: request["containerRuntime"]?.bool ?? false))
        case "RemoveCollaborator":
            try await plane.removeCollaborator(caller, try field("username"), collaborator: try field("collaboratorUsername"))
            return .object([:])
        case "ReportNode":
            let report = try WireJSON.decode(NodeReport.self, from: WireJSON.encode(request))
            return try encode(await plane.reportNode(caller, report))
        case "ListNodes": return try encode(["nodes": plane.listNodes(caller)])
        case "GetMetricsHistory": return try encode(["samples": await plane.metricsHistory(caller, try field("username"))])
        case "DrainNode": return try encode(await plane.drainNode(caller, try field("name"), draining: true))
        case "UndrainNode": return try encode(await plane.drainNode(caller, try field("name"), draining: false))
        case "RemoveNode":
            try await plane.removeNode(caller, try field("name"), force: request["force"]?.bool ?? false)
            return .object([:])
        case "ExplainSchedule":
            let create = CreateEnvironmentRequest(
                username: request["username"]?.stringValue ?? "explain", sshKeys: [], image: request["image"]?.stringValue,
                osType: request["osType"]?.stringValue, cpu: request["cpu"]?.stringValue, memory: request["memory"]?.stringValue,
                disk: request["disk"]?.stringValue, labels: (request["labels"]?.objectValue ?? [:]).compactMapValues { $0.stringValue },
                gpus: ContainariumGRPCService.gpuCount(request["gpus"]), gpuModel: request["gpuModel"]?.stringValue)
            return try encode(await plane.explainPlacement(caller, create))
        case "ListStacks":
            let stacks = plane.service.stacks.stacks.values.sorted { $0.name < $1.name }.map { s -> JSONValue in
                .object(["name": .string(s.name), "description": .string(s.description), "packages": .array(s.packages.map { .string($0) }),
                         "check": .array(s.check.map { .string($0) })])
            }
            return .object(["stacks": .array(stacks)])
        case "GetCapacity":
            try plane.requireAdmin(caller, "node capacity")
            return try encode(await plane.service.capacity())
        default: throw ContainariumError(.unsupported, "unknown method \(name)")
        }
    }

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let codec = JSONCodec<JSONValue>()
        router.registerHandler(forMethod: ContainariumRPC.method(ContainariumRPC.consoleMethod), deserializer: codec, serializer: codec) { stream, context in
            let who: Caller
            do throws(ContainariumError) { who = try await caller(stream.metadata, context) } catch {
                await plane.auditAuthFailure(source: context.remotePeer, interface: "grpc", action: "OpenConsole", reason: error.message)
                return StreamingServerResponse(error: ContainariumRPC.rpcError(error))
            }
            let username = stream.metadata[stringValues: "containarium-console-username"].first { _ in true } ?? ""
            let kind = stream.metadata[stringValues: "containarium-console-kind"].first { _ in true } ?? "serial"
            let console: any TerminalStream
            do throws(ContainariumError) { console = try await plane.openConsoleStream(who, username, kind: kind) } catch {
                return StreamingServerResponse(error: ContainariumRPC.rpcError(error))
            }
            return StreamingServerResponse { writer in
                let started = Date()
                defer { console.close() }
                try await writer.write(.object(["ready": .bool(true)]))
                // Input in a task of its own: when the console ends (the VM stopped), the call
                // ends at once without waiting for the client to stop sending; when the client
                // stops sending, the console is closed, which ends the output below.
                let input = Task {
                    do {
                        for try await message in stream.messages {
                            guard let text = message["data"]?.stringValue, let bytes = Data(base64Encoded: text) else { continue }
                            try await console.write(ByteBuffer(bytes: bytes))
                        }
                    } catch {}
                    console.close()
                }
                defer { input.cancel() }
                for await chunk in console.output {
                    try await writer.write(.object(["data": .string(Data(chunk.readableBytesView).base64EncodedString())]))
                }
                await plane.consoleClosed(who, username, kind: kind, seconds: Date().timeIntervalSince(started))
                return [:]
            }
        }
        for name in ContainariumRPC.unaryMethods {
            router.registerHandler(forMethod: ContainariumRPC.method(name), deserializer: codec, serializer: codec) { stream, context in
                let request = try await ServerRequest(stream: stream)
                do throws(ContainariumError) {
                    let who: Caller
                    do throws(ContainariumError) { who = try await caller(request.metadata, context) } catch {
                        await plane.auditAuthFailure(source: context.remotePeer, interface: "grpc", action: name, reason: error.message)
                        throw error
                    }
                    let result = try await handle(name, request.message, who)
                    return StreamingServerResponse(single: ServerResponse(message: result))
                } catch {
                    return StreamingServerResponse(single: ServerResponse(error: ContainariumRPC.rpcError(error)))
                }
            }
        }
        router.registerHandler(forMethod: ContainariumRPC.method(ContainariumRPC.createMethod), deserializer: codec, serializer: codec) { stream, context in
            let request = try await ServerRequest(stream: stream)
            let who: Caller
            do throws(ContainariumError) { who = try await caller(request.metadata, context) } catch {
                await plane.auditAuthFailure(source: context.remotePeer, interface: "grpc", action: "CreateContainer", reason: error.message)
                return StreamingServerResponse(error: ContainariumRPC.rpcError(error))
            }
            let m = request.message
            let create = CreateEnvironmentRequest(
                username: m["username"]?.stringValue ?? "", sshKeys: m["sshKeys"]?.items?.compactMap { $0.stringValue } ?? [],
                image: m["image"]?.stringValue, osType: m["osType"]?.stringValue, cpu: m["cpu"]?.stringValue, memory: m["memory"]?.stringValue,
                disk: m["disk"]?.stringValue, autostart: m["autostart"]?.bool, nesting: m["nesting"]?.bool, stack: m["stack"]?.stringValue,
                labels: (m["labels"]?.objectValue ?? [:]).compactMapValues { $0.stringValue },
                gpus: ContainariumGRPCService.gpuCount(m["gpus"]), gpuModel: m["gpuModel"]?.stringValue,
                gpuDevices: m["gpuDevices"]?.items?.compactMap { $0.stringValue } ?? [], node: m["node"]?.stringValue,
                runtimes: ContainerRuntime.allCases.filter { m[$0.requestField]?.bool == true })
            return StreamingServerResponse { writer in
                let (events, cancel) = plane.events.subscribe()
                let relay = Task {
                    for await e in events where e.type == "operation.progress" && e.username == create.username {
                        try? await writer.write(.object(["progress": e.data]))
                    }
                }
                defer { cancel(); relay.cancel() }
                do throws(ContainariumError) {
                    guard case .done(let view) = try await plane.createContainer(who, create, async: false) else { return [:] }
                    cancel()
                    await relay.value
                    try? await writer.write(.object(["container": WireJSON.decode(JSONValue.self, from: WireJSON.encode(view))]))
                    return [:]
                } catch {
                    throw ContainariumRPC.rpcError(error)
                }
            }
        }
    }
}

/// The gRPC server as a ServiceLifecycle service.
struct GRPCService: Service, CustomStringConvertible {
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    let description = "grpc"

    static func make(plane: ControlPlane, tokens: Tokens, options: GRPCOptions, logger: Logger) throws(ContainariumError) -> GRPCService {
        let security: HTTP2ServerTransport.Posix.TransportSecurity
        if options.mtls {
            let dir = options.certsDir
            for f in ["ca.crt", "server.crt", "server.key"] where !FileManager.default.fileExists(atPath: "\(dir)/\(f)") {
                throw ContainariumError(.failedPrecondition, "--mtls needs \(dir)/\(f): run `containarium cert generate --output-dir \(dir)`")
            }
            security = .mTLS(
                certificateChain: [.file(path: "\(dir)/server.crt", format: .pem)],
                privateKey: .file(path: "\(dir)/server.key", format: .pem)
            ) { config in
                config.trustRoots = .certificates([.file(path: "\(dir)/ca.crt", format: .pem)])
                config.clientCertificateVerification = .noHostnameVerification
            }
        } else {
            logger.warning("gRPC without --mtls: only bearer tokens authenticate; traffic is not encrypted")
            security = .plaintext
        }
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: options.host, port: options.port), transportSecurity: security)
        let server = GRPCServer(transport: transport, services: [ContainariumGRPCService(plane: plane, tokens: tokens, mtls: options.mtls)])
        logger.notice("gRPC API listening on \(options.host):\(options.port)\(options.mtls ? " (mTLS)" : "")")
        return GRPCService(server: server)
    }

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

/// The CLI's remote mode: every verb as a gRPC call to a daemon.
public struct RemoteClient: Sendable {
    public var host: String
    public var port: Int
    public var certsDir: String?
    public var token: String?

    public init(server: String, certsDir: String?, token: String?) throws(ContainariumError) {
        let parts = server.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port), !parts[0].isEmpty else {
            throw .invalid("--server must be HOST:PORT, e.g. 10.0.0.5:50051")
        }
        host = String(parts[0])
        self.port = port
        self.certsDir = certsDir
        self.token = token
    }

    func transport() throws(ContainariumError) -> HTTP2ClientTransport.Posix {
        let security: HTTP2ClientTransport.Posix.TransportSecurity
        if let dir = certsDir {
            for f in ["ca.crt", "client.crt", "client.key"] where !FileManager.default.fileExists(atPath: "\(dir)/\(f)") {
                throw ContainariumError(.invalidArgument, "\(dir)/\(f) is missing (copy the client certificates from `containarium cert generate`)")
            }
            security = .mTLS(
                certificateChain: [.file(path: "\(dir)/client.crt", format: .pem)],
                privateKey: .file(path: "\(dir)/client.key", format: .pem)
            ) { config in
                config.trustRoots = .certificates([.file(path: "\(dir)/ca.crt", format: .pem)])
                config.serverCertificateVerification = .noHostnameVerification
            }
        } else {
            security = .plaintext
        }
        do {
            return try HTTP2ClientTransport.Posix(target: .ipv4(address: host, port: port), transportSecurity: security)
        } catch {
            throw ContainariumError(.invalidArgument, "cannot reach \(host):\(port)", cause: "\(error)")
        }
    }

    var metadata: Metadata {
        var m = Metadata()
        if let token { m.addString("Bearer \(token)", forKey: "authorization") }
        return m
    }

    /// One unary call.
    public func call(_ method: String, _ request: JSONValue) async throws(ContainariumError) -> JSONValue {
        let t = try transport()
        let md = metadata
        do {
            return try await withGRPCClient(transport: t) { client in
                try await client.unary(
                    request: ClientRequest(message: request, metadata: md), descriptor: ContainariumRPC.method(method),
                    serializer: JSONCodec<JSONValue>(), deserializer: JSONCodec<JSONValue>(), options: .defaults
                ) { response in try response.message }
            }
        } catch {
            throw ContainariumRPC.containariumError(error)
        }
    }

    /// OpenConsole: `input` goes to the console in order; `opened` runs once the node has
    /// opened it; `output` gets what the console sends; `ended` runs when the server ends the
    /// call (the owner of `input` should then finish it, so that the call can return).
    public func console(username: String, kind: String, input: AsyncStream<[UInt8]>, opened: @escaping @Sendable () -> Void,
                        output: @escaping @Sendable ([UInt8]) -> Void, ended: @escaping @Sendable () -> Void) async throws(ContainariumError) {
        let t = try transport()
        var md = metadata
        md.addString(username, forKey: "containarium-console-username")
        md.addString(kind, forKey: "containarium-console-kind")
        do {
            try await withGRPCClient(transport: t) { client in
                try await client.bidirectionalStreaming(
                    request: StreamingClientRequest(metadata: md) { writer in
                        for await chunk in input { try await writer.write(.object(["data": .string(Data(chunk).base64EncodedString())])) }
                    },
                    descriptor: ContainariumRPC.method(ContainariumRPC.consoleMethod),
                    serializer: JSONCodec<JSONValue>(), deserializer: JSONCodec<JSONValue>(), options: .defaults
                ) { response in
                    defer { ended() }
                    for try await m in response.messages {
                        if m["ready"] != nil { opened() }
                        if let text = m["data"]?.stringValue, let bytes = Data(base64Encoded: text) { output(Array(bytes)) }
                    }
                }
            }
        } catch {
            throw ContainariumRPC.containariumError(error)
        }
    }

    /// CreateContainer: progress messages go to `progress`; returns the final container.
    public func create(_ request: JSONValue, progress: @escaping @Sendable (JSONValue) -> Void) async throws(ContainariumError) -> JSONValue {
        let t = try transport()
        let md = metadata
        do {
            return try await withGRPCClient(transport: t) { client in
                try await client.serverStreaming(
                    request: ClientRequest(message: request, metadata: md), descriptor: ContainariumRPC.method(ContainariumRPC.createMethod),
                    serializer: JSONCodec<JSONValue>(), deserializer: JSONCodec<JSONValue>(), options: .defaults
                ) { response in
                    var last: JSONValue = .null
                    for try await m in response.messages {
                        if let p = m["progress"] { progress(p) }
                        if let c = m["container"] { last = c }
                    }
                    return last
                }
            }
        } catch {
            throw ContainariumRPC.containariumError(error)
        }
    }
}

extension ContainariumRPC {
    /// The Containarium service for any gRPC transport: the daemon serves it over HTTP/2
    /// (`GRPCService`); the in-process tests over GRPCInProcessTransport.
    public static func makeService(plane: ControlPlane, tokens: Tokens, mtls: Bool = false) -> any RegistrableRPCService {
        ContainariumGRPCService(plane: plane, tokens: tokens, mtls: mtls)
    }
}
