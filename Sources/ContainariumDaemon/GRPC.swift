import ContainariumCore
public import ContainariumPlatform
import ContainariumService
public import GRPCCore
import ContainariumStore
import ContainariumTelemetry
import Foundation
import ContainariumProto
import ContainariumClient
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
    /// Accept node identities (reports and links) on a listener without TLS. Off by default:
    /// node traffic is TLS (`--mtls`); only a test bed turns this on (`--insecure-plaintext-nodes`).
    public var plaintextNodes = false
    /// Connections open at once, in all and from one address; one past either is closed as it
    /// is accepted, before TLS or HTTP/2.
    public var maxConnections = 4096
    public var maxConnectionsPerAddress = 256
    /// Seconds a connection may stay open without a call (a slow handshake included) before it is closed.
    public var idleTimeout = 300
    public init() {}
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
        let limiter = ConnectionLimiter(total: options.maxConnections, perAddress: options.maxConnectionsPerAddress, silence: .seconds(Int64(options.idleTimeout)))
        // HTTP/2's idle timer starts only once a connection is set up: until its first call, a
        // connection (a TLS handshake or an HTTP/2 preface that never completes) has a hard deadline.
        let firstCall = FirstCallDeadlines()
        let config = HTTP2ServerTransport.Posix.Config.defaults { c in
            c.connection.maxIdleTime = .seconds(max(1, options.idleTimeout))
            c.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
                let address = channel.remoteAddress?.ipAddress ?? "unknown"
                guard limiter.enter(address) else {
                    logger.notice("gRPC: refused a connection from \(address): too many connections open (\(limiter.total) in all, \(limiter.perAddress) per address)")
                    return channel.close()
                }
                firstCall.arm(channel, in: .seconds(Int64(max(1, options.idleTimeout))))
                channel.closeFuture.whenComplete { _ in
                    firstCall.disarm(channel)
                    limiter.leave(address)
                }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            c.channelDebuggingCallbacks.onAcceptHTTP2Stream = { stream in
                if let connection = stream.parent { firstCall.disarm(connection) }
                return stream.eventLoop.makeSucceededVoidFuture()
            }
        }
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: options.host, port: options.port), transportSecurity: security, config: config)
        let server = GRPCServer(transport: transport, services: ContainariumRPC.makeServices(
            plane: plane, tokens: tokens, mtls: options.mtls, plaintextNodes: options.plaintextNodes, links: links, logger: logger),
            interceptors: GRPCMetrics.interceptors(plane))
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
        if ContainariumEndpoint(answering: path) != nil {
            throw ContainariumError(.failedPrecondition, "another daemon serves \(dir) (its local API answers on \(path)): stop it, or give this one another --state-dir")
        }
        unlink(path)  // a stale socket of a daemon that is gone
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: path), transportSecurity: .plaintext)
        logger.info("local API on \(path)")
        let services = ContainariumRPC.makeServices(plane: plane, tokens: tokens, mtls: false, nodeAPI: true, logger: logger)
        return GRPCService(server: GRPCServer(transport: transport, services: services, interceptors: GRPCMetrics.interceptors(plane))) {
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

/// Closes each gRPC connection that has not opened a stream (made a call) by its deadline.
final class FirstCallDeadlines: Sendable {
    private let pending = Mutex<[ObjectIdentifier: Scheduled<Void>]>([:])

    func arm(_ channel: any Channel, in delay: TimeAmount) {
        let task = channel.eventLoop.scheduleTask(in: delay) { channel.close(promise: nil) }
        pending.withLock { $0[ObjectIdentifier(channel)] = task }
    }

    func disarm(_ channel: any Channel) {
        pending.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }?.cancel()
    }
}

/// The gRPC API a daemon serves.
public enum ContainariumRPC {
    /// Every service a daemon serves on a transport: the API of `proto/containarium/v1`
    /// (ContainerService, SystemService, ClusterService, AuditService, OperationService, EventService and, on a
    /// control plane's listener, NodeService) and the standard health and reflection services.
    /// The daemon serves them over HTTP/2 (`GRPCService`); the in-process tests over
    /// GRPCInProcessTransport.
    ///
    /// Without `mtls` the listener is plaintext, and node identities are refused on it unless
    /// `plaintextNodes` (a test bed) says otherwise: a node's token must not travel in clear.
    public static func makeServices(plane: ControlPlane, tokens: Tokens, mtls: Bool = false, plaintextNodes: Bool = false, links: NodeLinks? = nil,
                                    nodeAPI: Bool = false, logger: Logger) -> [any RegistrableRPCService] {
        let auth = GRPCAuth(plane: plane, tokens: tokens, mtls: mtls, nodeAPI: nodeAPI, plaintextNodes: plaintextNodes)
        var descriptors = [
            Containarium_V1_ContainerService.descriptor, Containarium_V1_SystemService.descriptor, Containarium_V1_ClusterService.descriptor,
            Containarium_V1_AuditService.descriptor, Containarium_V1_OperationService.descriptor, Containarium_V1_EventService.descriptor,
            Containarium_V1_SecurityService.descriptor, Containarium_V1_AlertService.descriptor,
        ]
        var services: [any RegistrableRPCService] = [
            ContainerServiceV1(auth: auth), SystemServiceV1(auth: auth), ClusterServiceV1(auth: auth), AuditServiceV1(auth: auth),
            OperationServiceV1(auth: auth), EventServiceV1(auth: auth), SecurityServiceV1(auth: auth), AlertServiceV1(auth: auth),
        ]
        // A node's API (its private socket) takes no reports or links: those are a control plane's.
        if !nodeAPI {
            descriptors.append(Containarium_V1_NodeService.descriptor)
            services.append(NodeServiceV1(auth: auth, links: links))
        }
        let names = (descriptors + [Grpc_Health_V1_Health.descriptor, Grpc_Reflection_V1_ServerReflection.descriptor,
                                    Grpc_Reflection_V1alpha_ServerReflection.descriptor]).map(\.fullyQualifiedService)
        services.append(HealthV1(services: Set(names)))
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

/// `containarium_api_requests_total` and `containarium_api_request_duration_seconds` for gRPC
/// calls (interface "grpc", route "/SERVICE/METHOD", code the gRPC status name). A stream is
/// measured to its head (accepted or refused), as REST's event stream is.
struct GRPCMetrics: ServerInterceptor {
    let telemetry: Telemetry

    static func interceptors(_ plane: ControlPlane) -> [any ServerInterceptor] {
        plane.platformMetrics.telemetry.map { [GRPCMetrics(telemetry: $0)] } ?? []
    }

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let started = ContinuousClock.now
        let route = "/" + context.descriptor.fullyQualifiedMethod
        var code = "unknown"
        defer {
            telemetry.apiRequest(interface: "grpc", route: route, method: "POST", code: code, elapsed: ContinuousClock.now - started)
        }
        let response = try await next(request, context)
        switch response.accepted {
        case .success: code = "OK"
        case .failure(let e):
            let name = "\(e.code)"  // notFound -> NotFound, as gRPC tooling names codes
            code = name.prefix(1).uppercased() + name.dropFirst()
        }
        return response
    }
}
