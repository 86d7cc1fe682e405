public import ContainariumCore
public import ContainariumPlatform
public import ContainariumService
public import GRPCCore
import ContainariumStore
import Foundation
import ContainariumProto
import GRPCNIOTransportHTTP2
public import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

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
        "ListCollaborators", "AddCollaborator", "RemoveCollaborator", "ListSSHKeys", "AddSSHKey", "RemoveSSHKey", "CleanupDisk",
        "ReportNode", "ListNodes", "DrainNode", "UndrainNode", "RemoveNode", "ExplainSchedule",
        "SetPluginEnabled", "ListGatewayBans", "LiftGatewayBan",
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
        if e is CancellationError || (e as? RPCError)?.code == .cancelled { return ContainariumError(.cancelled, "the call was cancelled") }
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
    /// The control plane's side of node links (a daemon whose cluster takes links).
    var links: NodeLinks?
    /// The local API socket: a call without a token came from root on this machine (the CLI), or
    /// through this node's link from its control plane; nobody else can reach the socket.
    var nodeAPI = false

    var auth: GRPCAuth { GRPCAuth(plane: plane, tokens: tokens, mtls: mtls, nodeAPI: nodeAPI) }

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
        case "GetSystemInfo": return try encode(await plane.systemInfo(caller))
        case "ListAudit":
            let f = AuditFilter(actor: request["actor"]?.stringValue, action: request["action"]?.stringValue, target: request["target"]?.stringValue,
                                result: request["result"]?.stringValue, limit: Int(request["limit"]?.number ?? 100))
            return try encode(["entries": await plane.auditLog(caller, f)])
        case "ListPlugins": return try encode(["plugins": await plane.plugins(caller)])
        case "SetPluginEnabled":
            guard let enabled = request["enabled"]?.bool else { throw .invalid("field 'enabled' must be true or false") }
            return try encode(await plane.setPluginEnabled(caller, try field("id"), enabled: enabled, force: request["force"]?.bool ?? false,
                                                    on: request["node"]?.stringValue))
        case "ListCollaborators":
            return try encode(["collaborators": await plane.listCollaborators(caller, try field("username"))])
        case "AddCollaborator":
            return try encode(await plane.addCollaborator(caller, try field("username"), collaborator: try field("collaboratorUsername"),
                                                          sshKey: request["sshPublicKey"]?.stringValue, sudo: request["sudo"]?.bool ?? false,
                                                          containerRuntime: request["containerRuntime"]?.bool ?? false))
        case "RemoveCollaborator":
            try await plane.removeCollaborator(caller, try field("username"), collaborator: try field("collaboratorUsername"))
            return .object([:])
        case "ListSSHKeys": return try encode(["keys": await plane.listKeys(caller, try field("username"))])
        case "AddSSHKey":
            guard let key = request["sshPublicKey"]?.stringValue ?? request["publicKey"]?.stringValue else { throw .invalid("missing field 'sshPublicKey'") }
            return try encode(await plane.addKey(caller, try field("username"), publicKey: key))
        case "RemoveSSHKey":
            try await plane.removeKey(caller, try field("username"), fingerprint: try field("fingerprint"))
            return .object([:])
        case "CleanupDisk": return try encode(await plane.cleanupDisk(caller, try field("username")))
        case "ListGatewayBans": return try encode(["bans": await plane.gatewayBans(caller)])
        case "LiftGatewayBan":
            try await plane.liftGatewayBan(caller, address: try field("address"))
            return .object(["message": .string("ban lifted")])
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
            var create = CreateEnvironmentRequest(
                username: request["username"]?.stringValue ?? "explain", sshKeys: [], image: request["image"]?.stringValue,
                osType: request["osType"]?.stringValue, cpu: request["cpu"]?.stringValue, memory: request["memory"]?.stringValue,
                disk: request["disk"]?.stringValue, labels: (request["labels"]?.objectValue ?? [:]).compactMapValues { $0.stringValue },
                gpus: ContainariumGRPCService.gpuCount(request["gpus"]), gpuModel: request["gpuModel"]?.stringValue)
            create.kind = request["kind"]?.stringValue
            return try encode(await plane.explainPlacement(caller, create))
        case "ListStacks":
            let stacks = plane.service.stacks.stacks.values.sorted { $0.name < $1.name }.map { s -> JSONValue in
                .object(["name": .string(s.name), "description": .string(s.description), "packages": .array(s.packages.map { .string($0) }),
                         "check": .array(s.check.map { .string($0) })])
            }
            return .object(["stacks": .array(stacks)])
        case "GetCapacity":
            return try encode(await plane.capacity(caller))
        default: throw ContainariumError(.unsupported, "unknown method \(name)")
        }
    }

    /// The methods of this service that have a `containarium.v1` protobuf equivalent, called on
    /// the public listener, are deprecated: logged once per method per run. (The local socket is
    /// the CLI's and the node links'; ReportNode and the link are the cluster's own protocol.)
    func deprecated(_ name: String) {
        guard !nodeAPI, name != "ReportNode" else { return }
        guard DeprecatedCalls.seen.withLock({ $0.insert(name).inserted }) else { return }
        Logger(label: "containarium.grpc").warning(
            "containarium.v1.Containarium/\(name) (the JSON-codec gRPC service) is deprecated and goes in the next release: use the protobuf services of proto/containarium/v1 (e.g. containarium.v1.ContainerService); grpcurl and server reflection list them")
    }

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let codec = JSONCodec<JSONValue>()
        router.registerHandler(forMethod: ContainariumRPC.method(ContainariumRPC.consoleMethod), deserializer: codec, serializer: codec) { stream, context in
            let who: Caller
            do throws(ContainariumError) { who = try await auth.authenticate(stream.metadata, context, "OpenConsole") } catch {
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
        if !nodeAPI {
            router.registerHandler(forMethod: ContainariumRPC.method(LinkFrame.method), deserializer: codec, serializer: codec) { stream, context in
                let node = stream.metadata[stringValues: LinkFrame.nodeKey].first { _ in true } ?? ""
                let who: Caller, links: NodeLinks
                do throws(ContainariumError) { who = try await auth.authenticate(stream.metadata, context, LinkFrame.method) } catch {
                    return StreamingServerResponse(error: ContainariumRPC.rpcError(error))
                }
                do throws(ContainariumError) {
                    try await plane.linkNode(who, node: node)
                    guard let l = self.links else { throw ContainariumError(.failedPrecondition, "this daemon is not a control plane") }
                    links = l
                } catch {
                    return StreamingServerResponse(error: ContainariumRPC.rpcError(error))
                }
                return StreamingServerResponse { writer in
                    try await links.serve(node: node, inbound: stream.messages, writer: writer)
                    return [:]
                }
            }
        }
        for name in ContainariumRPC.unaryMethods {
            router.registerHandler(forMethod: ContainariumRPC.method(name), deserializer: codec, serializer: codec) { stream, context in
                deprecated(name)
                let request = try await ServerRequest(stream: stream)
                do throws(ContainariumError) {
                    let who = try await auth.authenticate(request.metadata, context, name)
                    let result = try await handle(name, request.message, who)
                    return StreamingServerResponse(single: ServerResponse(message: result))
                } catch {
                    return StreamingServerResponse(single: ServerResponse(error: ContainariumRPC.rpcError(error)))
                }
            }
        }
        router.registerHandler(forMethod: ContainariumRPC.method(ContainariumRPC.createMethod), deserializer: codec, serializer: codec) { stream, context in
            deprecated(ContainariumRPC.createMethod)
            let request = try await ServerRequest(stream: stream)
            let who: Caller
            let create = CreateEnvironmentRequest(grpcMessage: request.message)
            do throws(ContainariumError) {
                who = try await auth.authenticate(request.metadata, context, "CreateContainer")
                try await plane.authorizeCreateProgress(who, create.username)  // before any of that user's progress is relayed
            } catch {
                return StreamingServerResponse(error: ContainariumRPC.rpcError(error))
            }
            return StreamingServerResponse { writer in
                let (events, cancel) = plane.events.subscribe()
                let relay = Task {
                    for await e in events where e.type == "operation.progress" && e.username == create.username {
                        try? await writer.write(.object(["progress": e.data]))
                    }
                }
                defer { cancel(); relay.cancel() }
                do throws(ContainariumError) {
                    // gRPC reports a cancelled RPC (the client went away or cancelled) through its
                    // handler, not by cancelling this task: turn it into task cancellation, which
                    // the control plane answers by cancelling and rolling back the create.
                    let outcome = try await cancellingWithRPC { () async throws(ContainariumError) in try await plane.createContainer(who, create, async: false) }
                    guard case .done(let view) = outcome else { return [:] }
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
    /// Runs once the server listens (the node API makes its socket private then).
    var listening: (@Sendable () async -> Void)?

    static func make(plane: ControlPlane, tokens: Tokens, options: GRPCOptions, links: NodeLinks?, logger: Logger) throws(ContainariumError) -> GRPCService {
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
        let server = GRPCServer(transport: transport, services: ContainariumRPC.makeServices(plane: plane, tokens: tokens, mtls: options.mtls, links: links, logger: logger))
        logger.notice("gRPC API listening on \(options.host):\(options.port)\(options.mtls ? " (mTLS)" : "")")
        return GRPCService(server: server)
    }

    /// The local API: the same service on a unix socket (mode 0600 in a 0700 directory), which
    /// only root on this machine and this node's link to its control plane reach. Never on a port.
    static func nodeAPI(plane: ControlPlane, tokens: Tokens, socket path: String, logger: Logger) throws(ContainariumError) -> GRPCService {
        let dir = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw ContainariumError(.internal, "cannot create \(dir)", cause: "\(error)")
        }
        chmod(dir, 0o700)
        guard path.utf8.count < 108 else { throw .invalid("the local API socket path \(path) is too long for a unix socket: use a shorter --state-dir") }
        // Never take the socket from a daemon that serves this state directory already.
        if RemoteClient.answers(path) {
            throw ContainariumError(.failedPrecondition, "another daemon serves \(dir) (its local API answers on \(path)): stop it, or give this one another --state-dir")
        }
        unlink(path)  // a stale socket of a daemon that is gone
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: path), transportSecurity: .plaintext)
        logger.info("local API on \(path)")
        let services = ContainariumRPC.makeServices(plane: plane, tokens: tokens, mtls: false, nodeAPI: true, logger: logger)
        return GRPCService(server: GRPCServer(transport: transport, services: services)) {
            _ = try? await transport.listeningAddress
            chmod(path, 0o600)
        }
    }

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                if let listening { group.addTask { await listening() } }
            }
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

/// The CLI's remote mode: every verb as a gRPC call to a daemon. Also the control plane's
/// connection to its members (`NodeConnection`).
public struct RemoteClient: NodeConnection {
    public var host: String
    public var port: Int
    /// A unix socket instead of HOST:PORT: a node reached through its link (`NodeLinks`), or
    /// the local daemon.
    public var socketPath: String?
    /// Calls are the control plane's, carried by a node's link.
    var viaLink = false
    public var certsDir: String?
    public var token: String?

    /// A node API through the local end of its link: plaintext on a private socket (the link
    /// itself is the node's own authenticated connection), no token.
    public init(linkSocket path: String) {
        host = "localhost"
        port = 0
        socketPath = path
        certsDir = nil
        token = nil
        viaLink = true
    }

    /// The daemon on this machine, through its local API socket (`DaemonOptions.localSocket`), if
    /// one runs for that state directory: the CLI then goes through it instead of acting alone.
    public init?(localDaemon stateDir: String) {
        let path = DaemonOptions.localSocket(stateDir: stateDir)
        guard Self.answers(path) else { return nil }
        host = "localhost"
        port = 0
        socketPath = path
        certsDir = nil
        token = nil
    }

    /// Does a process accept connections on this unix socket (not a stale file)?
    static func answers(_ path: String) -> Bool {
        guard FileManager.default.fileExists(atPath: path) else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        return rc == 0
    }

    public init(server: String, certsDir: String?, token: String?) throws(ContainariumError) {
        (host, port) = try NodeAddress.parse(server)
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
            if let socketPath { return try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext) }
            return try HTTP2ClientTransport.Posix(target: .ipv4(address: host, port: port), transportSecurity: security)
        } catch {
            throw ContainariumError(.invalidArgument, "cannot reach \(host):\(port)", cause: "\(error)")
        }
    }

    var metadata: Metadata {
        var m = Metadata()
        if let token { m.addString("Bearer \(token)", forKey: "authorization") }
        if viaLink { m.addString("1", forKey: LinkFrame.viaLinkKey) }
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

    /// NodeLink (a node's side): `outbound` frames go to the control plane in order; each frame
    /// it sends goes to `received`, in order. Returns when the control plane ends the link;
    /// `ended` runs then (the owner of `outbound` should finish it).
    func link(node: String, outbound: AsyncStream<JSONValue>, ended: @escaping @Sendable () -> Void,
              received: @escaping @Sendable (JSONValue) async -> Void) async throws(ContainariumError) {
        let t = try transport()
        var md = metadata
        md.addString(node, forKey: LinkFrame.nodeKey)
        do {
            try await withGRPCClient(transport: t) { client in
                try await client.bidirectionalStreaming(
                    request: StreamingClientRequest(metadata: md) { writer in
                        for await frame in outbound { try await writer.write(frame) }
                    },
                    descriptor: ContainariumRPC.method(LinkFrame.method),
                    serializer: JSONCodec<JSONValue>(), deserializer: JSONCodec<JSONValue>(), options: .defaults
                ) { response in
                    defer { ended() }
                    for try await m in response.messages { await received(m) }
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

extension RemoteClient {
    /// CreateContainer with a create as the gRPC message carries it.
    public func create(_ request: CreateEnvironmentRequest, progress: @escaping @Sendable (JSONValue) -> Void) async throws(ContainariumError) -> JSONValue {
        try await create(request.grpcMessage, progress: progress)
    }
}

/// The control plane's connections to its members: gRPC, through a member's link or at its address.
struct GRPCNodeConnector: NodeConnector {
    func connection(linkSocket: String) -> any NodeConnection { RemoteClient(linkSocket: linkSocket) }
    func connection(address: String, certsDir: String?, token: String?) throws(ContainariumError) -> any NodeConnection {
        try RemoteClient(server: address, certsDir: certsDir, token: token)
    }
}

extension CreateEnvironmentRequest {
    /// A create as the gRPC `CreateContainer` message carries it: one mapping both ways, for the
    /// gRPC adapter and for the control plane handing a create to another node.
    init(grpcMessage m: JSONValue) {
        defer { kind = m["kind"]?.stringValue }
        self.init(
            username: m["username"]?.stringValue ?? "", sshKeys: m["sshKeys"]?.items?.compactMap { $0.stringValue } ?? [],
            image: m["image"]?.stringValue, osType: m["osType"]?.stringValue, cpu: m["cpu"]?.stringValue, memory: m["memory"]?.stringValue,
            disk: m["disk"]?.stringValue, autostart: m["autostart"]?.bool, nesting: m["nesting"]?.bool, stack: m["stack"]?.stringValue,
            labels: (m["labels"]?.objectValue ?? [:]).compactMapValues { $0.stringValue },
            gpus: ContainariumGRPCService.gpuCount(m["gpus"]), gpuModel: m["gpuModel"]?.stringValue,
            gpuDevices: m["gpuDevices"]?.items?.compactMap { $0.stringValue } ?? [], node: m["node"]?.stringValue,
            runtimes: ContainerRuntime.allCases.filter { m[$0.requestField]?.bool == true })
    }

    var grpcMessage: JSONValue {
        var q: [String: JSONValue] = ["username": .string(username), "sshKeys": .array(sshKeys.map { .string($0) }),
                                      "labels": .object(labels.mapValues { .string($0) })]
        for (k, v) in [("image", image), ("osType", osType), ("cpu", cpu), ("memory", memory), ("disk", disk), ("stack", stack), ("node", node),
                       ("gpuModel", gpuModel), ("kind", kind)] {
            if let v { q[k] = .string(v) }
        }
        if let autostart { q["autostart"] = .bool(autostart) }
        if let nesting { q["nesting"] = .bool(nesting) }
        for runtime in runtimes { q[runtime.requestField] = .bool(true) }
        if let gpus { q["gpus"] = .number(Double(gpus)) }
        if !gpuDevices.isEmpty { q["gpuDevices"] = .array(gpuDevices.map { .string($0) }) }
        return .object(q)
    }
}

extension ContainariumRPC {
    /// The Containarium service for any gRPC transport: the daemon serves it over HTTP/2
    /// (`GRPCService`); the in-process tests over GRPCInProcessTransport.
    public static func makeService(plane: ControlPlane, tokens: Tokens, mtls: Bool = false, links: NodeLinks? = nil) -> any RegistrableRPCService {
        ContainariumGRPCService(plane: plane, tokens: tokens, mtls: mtls, links: links)
    }

    /// Every service a daemon serves on a transport: the API of `proto/containarium/v1`
    /// (ContainerService, SystemService, ClusterService, AuditService, OperationService), the
    /// standard health and reflection services, and the JSON-codec `containarium.v1.Containarium`
    /// the CLI's remote mode and node links still speak (docs/grpc.md).
    public static func makeServices(plane: ControlPlane, tokens: Tokens, mtls: Bool = false, links: NodeLinks? = nil, nodeAPI: Bool = false,
                                    logger: Logger) -> [any RegistrableRPCService] {
        var legacy = ContainariumGRPCService(plane: plane, tokens: tokens, mtls: mtls, links: links)
        legacy.nodeAPI = nodeAPI
        let auth = legacy.auth
        let names = [
            Containarium_V1_ContainerService.descriptor, Containarium_V1_SystemService.descriptor, Containarium_V1_ClusterService.descriptor,
            Containarium_V1_AuditService.descriptor, Containarium_V1_OperationService.descriptor, Grpc_Health_V1_Health.descriptor,
            Grpc_Reflection_V1_ServerReflection.descriptor, Grpc_Reflection_V1alpha_ServerReflection.descriptor,
        ].map(\.fullyQualifiedService)
        var services: [any RegistrableRPCService] = [
            legacy, ContainerServiceV1(auth: auth), SystemServiceV1(auth: auth), ClusterServiceV1(auth: auth), AuditServiceV1(auth: auth),
            OperationServiceV1(auth: auth), HealthV1(services: Set(names + [ContainariumRPC.service.fullyQualifiedService])),
        ]
        do throws(ContainariumError) {
            let index = try DescriptorIndex(base64: ContainariumDescriptors.fileDescriptorSetBase64, services: names)
            let v1 = ReflectionV1(index: index)
            services += [v1, ReflectionV1Alpha(v1: v1)]
        } catch {
            logger.error("gRPC reflection is off: \(error)")
        }
        return services
    }
}

/// Which deprecated methods were called already in this run (each is logged once).
enum DeprecatedCalls {
    static let seen = Mutex<Set<String>>([])
}
