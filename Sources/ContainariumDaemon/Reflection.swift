import ContainariumCore
import ContainariumProto
import Foundation
import GRPCCore
import ServiceLifecycle
import SwiftProtobuf

/// The descriptor set of `proto/` (embedded by scripts/gen-proto.sh), indexed the way server
/// reflection asks: files by name with their imports, and the file that defines a symbol.
struct DescriptorIndex: Sendable {
    /// Serialized FileDescriptorProto per file name.
    let files: [String: Data]
    let imports: [String: [String]]
    /// Fully qualified names (services, methods, messages, nested messages, enums) to files.
    let symbols: [String: String]
    /// The services this server serves, as reflection lists them.
    let services: [String]

    init(base64: String, services: [String]) throws(ContainariumError) {
        guard let data = Data(base64Encoded: base64) else { throw .internal("the embedded descriptor set is not base64") }
        let set: Google_Protobuf_FileDescriptorSet
        do { set = try Google_Protobuf_FileDescriptorSet(serializedBytes: data) } catch {
            throw .internal("the embedded descriptor set does not parse", cause: "\(error)")
        }
        var files: [String: Data] = [:], imports: [String: [String]] = [:], symbols: [String: String] = [:]
        for file in set.file {
            do { files[file.name] = try file.serializedBytes() } catch {
                throw .internal("could not serialize \(file.name)", cause: "\(error)")
            }
            imports[file.name] = file.dependency
            let prefix = file.package.isEmpty ? "" : file.package + "."
            func add(_ message: Google_Protobuf_DescriptorProto, _ scope: String) {
                let name = scope + message.name
                symbols[name] = file.name
                for nested in message.nestedType { add(nested, name + ".") }
                for e in message.enumType { symbols[name + "." + e.name] = file.name }
            }
            for m in file.messageType { add(m, prefix) }
            for e in file.enumType { symbols[prefix + e.name] = file.name }
            for s in file.service {
                symbols[prefix + s.name] = file.name
                for m in s.method { symbols[prefix + s.name + "." + m.name] = file.name }
            }
        }
        self.files = files
        self.imports = imports
        self.symbols = symbols
        self.services = services.sorted()
    }

    /// A file and everything it imports, the file first.
    func closure(of name: String) -> [Data]? {
        guard files[name] != nil else { return nil }
        var seen: Set<String> = [], order: [String] = []
        func visit(_ n: String) {
            guard seen.insert(n).inserted else { return }
            order.append(n)
            for d in imports[n] ?? [] { visit(d) }
        }
        visit(name)
        return order.compactMap { files[$0] }
    }

    func file(containing symbol: String) -> [Data]? {
        let s = symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol
        return symbols[s].flatMap(closure(of:))
    }

    /// The answer to one reflection request, in terms both protocol versions share.
    enum Answer {
        case files([Data])
        case services([String])
        case extensionNumbers(type: String, numbers: [Int32])
        case error(code: Int32, message: String)
    }

    func answer(fileByName: String? = nil, symbol: String? = nil, extensionOf: String? = nil, extensionNumbersOf: String? = nil,
                listServices: Bool = false) -> Answer {
        let notFound = Int32(RPCError.Code.notFound.rawValue)
        if listServices { return .services(services) }
        if let fileByName {
            return closure(of: fileByName).map(Answer.files) ?? .error(code: notFound, message: "no file \(fileByName)")
        }
        if let symbol {
            return file(containing: symbol).map(Answer.files) ?? .error(code: notFound, message: "no symbol \(symbol)")
        }
        if let extensionOf { return .error(code: notFound, message: "no extensions of \(extensionOf)") }
        if let extensionNumbersOf {
            guard symbols[extensionNumbersOf] != nil else { return .error(code: notFound, message: "no type \(extensionNumbersOf)") }
            return .extensionNumbers(type: extensionNumbersOf, numbers: [])
        }
        return .error(code: Int32(RPCError.Code.invalidArgument.rawValue), message: "an empty reflection request")
    }
}

/// grpc.reflection.v1: lets grpcurl, Python's reflection client and other tools list the
/// services and fetch their descriptors.
struct ReflectionV1: Grpc_Reflection_V1_ServerReflection.ServiceProtocol {
    let index: DescriptorIndex

    func respond(_ r: Grpc_Reflection_V1_ServerReflectionRequest) -> Grpc_Reflection_V1_ServerReflectionResponse {
        let a: DescriptorIndex.Answer = switch r.messageRequest {
        case .fileByFilename(let f)?: index.answer(fileByName: f)
        case .fileContainingSymbol(let s)?: index.answer(symbol: s)
        case .fileContainingExtension(let e)?: index.answer(extensionOf: e.containingType)
        case .allExtensionNumbersOfType(let t)?: index.answer(extensionNumbersOf: t)
        case .listServices?: index.answer(listServices: true)
        case nil: index.answer()
        }
        var out = Grpc_Reflection_V1_ServerReflectionResponse()
        out.validHost = r.host
        out.originalRequest = r
        switch a {
        case .files(let files): out.fileDescriptorResponse = .with { $0.fileDescriptorProto = files }
        case .services(let names): out.listServicesResponse = .with { $0.service = names.map { n in .with { $0.name = n } } }
        case .extensionNumbers(let type, let numbers):
            out.allExtensionNumbersResponse = .with {
                $0.baseTypeName = type
                $0.extensionNumber = numbers
            }
        case .error(let code, let message):
            out.errorResponse = .with {
                $0.errorCode = code
                $0.errorMessage = message
            }
        }
        return out
    }

    func serverReflectionInfo(request: StreamingServerRequest<Grpc_Reflection_V1_ServerReflectionRequest>, context: ServerContext) async throws
        -> StreamingServerResponse<Grpc_Reflection_V1_ServerReflectionResponse>
    {
        StreamingServerResponse { writer in
            for try await r in request.messages { try await writer.write(respond(r)) }
            return [:]
        }
    }
}

/// grpc.reflection.v1alpha, the version older clients (grpcurl before 1.8.8, grpcio-reflection's
/// client) still ask for. Its messages are v1's, field for field and number for number, so it
/// answers through v1: each message is carried over in its wire form.
struct ReflectionV1Alpha: Grpc_Reflection_V1alpha_ServerReflection.ServiceProtocol {
    let v1: ReflectionV1

    func serverReflectionInfo(request: StreamingServerRequest<Grpc_Reflection_V1alpha_ServerReflectionRequest>, context: ServerContext) async throws
        -> StreamingServerResponse<Grpc_Reflection_V1alpha_ServerReflectionResponse>
    {
        StreamingServerResponse { writer in
            for try await r in request.messages {
                let asked = try Grpc_Reflection_V1_ServerReflectionRequest(serializedBytes: try r.serializedBytes() as [UInt8])
                try await writer.write(try Grpc_Reflection_V1alpha_ServerReflectionResponse(serializedBytes: try v1.respond(asked).serializedBytes() as [UInt8]))
            }
            return [:]
        }
    }
}

/// grpc.health.v1: SERVING for the server ("") and each service it serves; NOT_FOUND for
/// others, as the protocol says. Watch sends the status, then holds the stream until the
/// client or the server ends it.
struct HealthV1: Grpc_Health_V1_Health.ServiceProtocol {
    let services: Set<String>

    func status(_ service: String) -> Grpc_Health_V1_HealthCheckResponse.ServingStatus? {
        service.isEmpty || services.contains(service) ? .serving : nil
    }

    func check(request: ServerRequest<Grpc_Health_V1_HealthCheckRequest>, context: ServerContext) async throws
        -> ServerResponse<Grpc_Health_V1_HealthCheckResponse>
    {
        guard let s = status(request.message.service) else {
            return ServerResponse(error: RPCError(code: .notFound, message: "no service \(request.message.service)"))
        }
        return ServerResponse(message: .with { $0.status = s })
    }

    func watch(request: ServerRequest<Grpc_Health_V1_HealthCheckRequest>, context: ServerContext) async throws
        -> StreamingServerResponse<Grpc_Health_V1_HealthCheckResponse>
    {
        let s = status(request.message.service) ?? .serviceUnknown
        return StreamingServerResponse { writer in
            try await writer.write(.with { $0.status = s })
            // The status never changes while the server runs: hold the stream until the client
            // leaves, or the daemon shuts down (then the watcher hears the stream end, as the
            // protocol lets a server do).
            while !context.cancellation.isCancelled, !Task.isCancelled, !Task.isShuttingDownGracefully {
                try? await Task.sleep(for: .milliseconds(250))
            }
            return [:]
        }
    }
}
