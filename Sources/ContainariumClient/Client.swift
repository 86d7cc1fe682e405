public import ContainariumCore
public import ContainariumProto
public import GRPCCore
public import GRPCNIOTransportHTTP2
import Foundation
import SwiftProtobuf

#if canImport(Glibc)
import Glibc
#endif

/// A daemon's API as a client reaches it: at HOST:PORT (with the deployment's client
/// certificates and a token), or on a unix socket (the local daemon's, or a node API through the
/// local end of its link). The CLI's remote mode, nodes reporting and linking to their control
/// plane, and the control plane calling its members all go through this one type.
public struct ContainariumEndpoint: Sendable {
    public enum Target: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var target: Target
    /// mTLS with `<certsDir>/{ca.crt,client.crt,client.key}`; plaintext without (unix sockets
    /// are always plaintext: their file mode is the access control).
    public var certsDir: String?
    /// Sent as `authorization: Bearer TOKEN`.
    public var token: String?
    /// The calls are a control plane's, carried by a node's link (the node's audit log says
    /// `control-plane` from `node-link` for them).
    public var viaLink = false

    /// The metadata key naming the node at the other end of a link.
    public static let nodeKey = "containarium-node"
    /// Set on calls a control plane makes through a node's link.
    public static let viaLinkKey = "containarium-via-link"

    public init(server: String, certsDir: String?, token: String?) throws(ContainariumError) {
        let (host, port) = try NodeAddress.parse(server)
        target = .tcp(host: host, port: port)
        self.certsDir = certsDir
        self.token = token
    }

    /// A daemon on a unix socket.
    public init(socket path: String, viaLink: Bool = false) {
        target = .unix(path: path)
        self.viaLink = viaLink
    }

    /// The daemon listening on this unix socket, if a process accepts connections there (not a
    /// stale file).
    public init?(answering path: String) {
        guard Self.answers(path) else { return nil }
        self.init(socket: path)
    }

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
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        return rc == 0
    }

    /// What every call carries: the token, and whether it rides a node's link.
    public var metadata: Metadata {
        var m = Metadata()
        if let token { m.addString("Bearer \(token)", forKey: "authorization") }
        if viaLink { m.addString("1", forKey: Self.viaLinkKey) }
        return m
    }

    public var description: String {
        switch target {
        case .tcp(let host, let port): "\(host):\(port)"
        case .unix(let path): path
        }
    }

    public func transport() throws(ContainariumError) -> HTTP2ClientTransport.Posix {
        do {
            switch target {
            case .unix(let path):
                return try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: path), transportSecurity: .plaintext)
            case .tcp(let host, let port):
                var security = HTTP2ClientTransport.Posix.TransportSecurity.plaintext
                if let dir = certsDir {
                    for f in ["ca.crt", "client.crt", "client.key"] where !FileManager.default.fileExists(atPath: "\(dir)/\(f)") {
                        throw ContainariumError(.invalidArgument, "\(dir)/\(f) is missing (copy the client certificates from `containarium cert generate`)")
                    }
                    security = .mTLS(
                        certificateChain: [.file(path: "\(dir)/client.crt", format: .pem)],
                        privateKey: .file(path: "\(dir)/client.key", format: .pem)
                    ) { config in
                        config.trustRoots = .certificates([.file(path: "\(dir)/ca.crt", format: .pem)])
                        // The server's certificate must name the host or address dialled.
                        config.serverCertificateVerification = .fullVerification
                    }
                }
                // An IPv4 literal is dialled as is; a name is resolved (and, under TLS, is the
                // name the server's certificate must carry).
                let resolved: any ResolvableTarget = IPv4Address(host) != nil ? .ipv4(address: host, port: port) : .dns(host: host, port: port)
                return try HTTP2ClientTransport.Posix(target: resolved, transportSecurity: security)
            }
        } catch let e as ContainariumError {
            throw e
        } catch {
            throw ContainariumError(.invalidArgument, "cannot reach \(description)", cause: "\(error)")
        }
    }

    /// Connect, run `body` with the typed clients, and close. Every error (the transport's, the
    /// server's status, `body`'s own) comes out as a `ContainariumError`.
    public func connect<R: Sendable>(_ body: (ContainariumClient<HTTP2ClientTransport.Posix>) async throws -> R) async throws(ContainariumError) -> R {
        let t = try transport()
        let md = metadata
        do {
            return try await withGRPCClient(transport: t) { grpc in
                try await body(ContainariumClient(grpc: grpc, metadata: md))
            }
        } catch {
            throw ContainariumError(rpc: error)
        }
    }
}

/// A connection to a daemon as `ContainariumEndpoint.connect` makes it.
public typealias DaemonConnection = ContainariumClient<HTTP2ClientTransport.Posix>

/// The generated clients of `proto/containarium/v1` over one connection, with the metadata every
/// call must carry (`metadata`: pass it to each call).
public struct ContainariumClient<Transport: ClientTransport>: Sendable {
    public let grpc: GRPCClient<Transport>
    public let metadata: Metadata

    public init(grpc: GRPCClient<Transport>, metadata: Metadata) {
        self.grpc = grpc
        self.metadata = metadata
    }

    public var containers: Containarium_V1_ContainerService.Client<Transport> { .init(wrapping: grpc) }
    public var system: Containarium_V1_SystemService.Client<Transport> { .init(wrapping: grpc) }
    public var security: Containarium_V1_SecurityService.Client<Transport> { .init(wrapping: grpc) }
    public var alerts: Containarium_V1_AlertService.Client<Transport> { .init(wrapping: grpc) }
    public var cluster: Containarium_V1_ClusterService.Client<Transport> { .init(wrapping: grpc) }
    public var audit: Containarium_V1_AuditService.Client<Transport> { .init(wrapping: grpc) }
    public var operations: Containarium_V1_OperationService.Client<Transport> { .init(wrapping: grpc) }
    public var nodes: Containarium_V1_NodeService.Client<Transport> { .init(wrapping: grpc) }
    public var events: Containarium_V1_EventService.Client<Transport> { .init(wrapping: grpc) }
}

extension ContainariumError {
    /// The metadata key that carries our own error code next to the gRPC status (the status
    /// codes are coarser: `failedPrecondition` and `pluginLoad` survive the trip this way).
    public static let grpcCodeKey = "containarium-error-code"

    /// An error of a gRPC call, as the CLI and the platform handle it.
    public init(rpc e: any Error) {
        if let c = e as? ContainariumError {
            self = c
            return
        }
        if e is CancellationError || (e as? RPCError)?.code == .cancelled {
            self = ContainariumError(.cancelled, "the call was cancelled")
            return
        }
        guard let r = e as? RPCError else {
            self = ContainariumError(.unavailable, "gRPC call failed", cause: "\(e)")
            return
        }
        if let raw = r.metadata[stringValues: Self.grpcCodeKey].first(where: { _ in true }), let code = ContainariumError.Code(rawValue: raw) {
            self = ContainariumError(code, r.message)
            return
        }
        let code: ContainariumError.Code
        switch r.code {
        case .unauthenticated: code = .unauthenticated
        case .permissionDenied: code = .permissionDenied
        case .notFound: code = .notFound
        case .invalidArgument, .outOfRange: code = .invalidArgument
        case .alreadyExists: code = .alreadyExists
        case .failedPrecondition: code = .failedPrecondition
        case .resourceExhausted: code = .resourceExhausted
        case .unimplemented: code = .unsupported
        case .deadlineExceeded: code = .timeout
        case .unavailable: code = .unavailable
        default: code = .internal
        }
        self = ContainariumError(code, r.message)
    }
}

extension RPCError {
    /// The status a server answers a `ContainariumError` with (its own code rides in metadata).
    public init(containarium e: ContainariumError) {
        let code = Status.Code(rawValue: e.code.grpcStatus).flatMap(RPCError.Code.init) ?? .internalError
        var metadata = Metadata()
        metadata.addString(e.code.rawValue, forKey: ContainariumError.grpcCodeKey)
        self.init(code: code, message: e.description, metadata: metadata)
    }
}

extension ContainariumEndpoint {
    /// CreateContainerStream: each progress message goes to `progress`; returns the environment.
    public func create(_ request: Containarium_V1_CreateContainerRequest, progress: @escaping @Sendable (Containarium_V1_Progress) -> Void)
        async throws(ContainariumError) -> Containarium_V1_Container
    {
        let made = try await connect { c in
            try await c.containers.createContainerStream(request, metadata: c.metadata) { response in
                var made: Containarium_V1_Container?
                for try await event in response.messages {
                    switch event.event {
                    case .progress(let p)?: progress(p)
                    case .container(let v)?: made = v
                    case nil: continue
                    }
                }
                return made
            }
        }
        guard let made else { throw ContainariumError(.unavailable, "\(description) ended the create without the environment") }
        return made
    }

    /// OpenConsole: `input` goes to the console in order; `opened` runs once the daemon has
    /// opened it; `output` gets what the console sends; `ended` runs when the daemon ends the
    /// call (the owner of `input` should then finish it, so that the call can return).
    public func console(username: String, kind: Containarium_V1_ConsoleKind, input: AsyncStream<[UInt8]>, opened: @escaping @Sendable () -> Void,
                        output: @escaping @Sendable ([UInt8]) async -> Void, ended: @escaping @Sendable () -> Void) async throws(ContainariumError) {
        let open = Containarium_V1_ConsoleInput.with {
            $0.open = .with {
                $0.username = username
                $0.kind = kind
            }
        }
        try await connect { c in
            try await c.containers.openConsole(
                request: StreamingClientRequest(metadata: c.metadata) { writer in
                    try await writer.write(open)
                    for await chunk in input { try await writer.write(.with { $0.data = Data(chunk) }) }
                }
            ) { response in
                defer { ended() }
                for try await m in response.messages {
                    switch m.output {
                    case .ready?: opened()
                    case .data(let d)?: await output(Array(d))
                    case nil: continue
                    }
                }
            }
        }
    }
}
