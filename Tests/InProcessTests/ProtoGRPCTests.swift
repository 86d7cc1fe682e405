import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import ContainariumProto
import ContainariumStore
import Foundation
import GRPCCore
import GRPCInProcessTransport
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SwiftProtobuf
import TestSupport
import Testing

/// The protobuf API (proto/containarium/v1) with its generated clients, and the standard
/// reflection and health services, on grpc-swift's in-process transport.
@Suite("protobuf gRPC API in process")
struct ProtoGRPCTests {
    typealias Client = GRPCClient<InProcessTransport.Client>

    static func serve(_ h: Harness, _ body: (Client) async throws -> Void) async throws {
        let transport = InProcessTransport()
        let services = ContainariumRPC.makeServices(plane: h.plane, tokens: h.tokens, logger: Harness.quiet)
        try await withGRPCServer(transport: transport.server, services: services) { _ in
            try await withGRPCClient(transport: transport.client) { client in try await body(client) }
        }
    }

    static func bearer(_ token: String) -> Metadata { ["authorization": "Bearer \(token)"] }

    static func code(_ body: () async throws -> some Any) async -> RPCError.Code? {
        do {
            _ = try await body()
            return nil
        } catch let e as RPCError {
            return e.code
        } catch {
            return .unknown
        }
    }

    @Test("ContainerService: create, get, list, exec and delete with typed messages; enums; authorization and status codes like the JSON service's")
    func containerService() async throws {
        try await Harness.with { (h: Harness) async throws in
            let owner = try await h.token("pia"), stranger = try await h.token("mallory"), admin = try await h.token("admin", .admin)
            try await Self.serve(h) { client in
                let c = Containarium_V1_ContainerService.Client(wrapping: client)
                var create = Containarium_V1_CreateContainerRequest()
                create.username = "pia"
                create.sshKeys = [Harness.sshKey()]
                create.resources.memory = "1GiB"
                create.labels = ["team": "blue"]
                let made = try await c.createContainer(create, metadata: Self.bearer(owner))
                #expect(made.container.name == "pia-container" && made.container.state == .running && made.container.labels["team"] == "blue")
                #expect(made.container.network.ipv4.first?.hasPrefix("10.99.") == true && made.container.type == .container)
                #expect(!made.hasOperation)

                let got = try await c.getContainer(.with { $0.username = "pia" }, metadata: Self.bearer(owner))
                #expect(got.name == "pia-container" && got.backend == "fake-instances" && got.owner == "pia")
                #expect(try await c.listContainers(.init(), metadata: Self.bearer(owner)).containers.map(\.username) == ["pia"])
                #expect(try await c.listContainers(.init(), metadata: Self.bearer(stranger)).containers.isEmpty)
                let ran = try await c.exec(.with {
                    $0.username = "pia"
                    $0.command = ["id", "-un"]
                    $0.asUser = true
                }, metadata: Self.bearer(owner))
                #expect(ran.exitCode == 0, "\(ran)")

                // The same refusals, with their status codes.
                #expect(await Self.code { try await c.getContainer(.with { $0.username = "pia" }) } == .unauthenticated)
                #expect(await Self.code { try await c.getContainer(.with { $0.username = "pia" }, metadata: Self.bearer("garbage")) } == .unauthenticated)
                #expect(await Self.code { try await c.getContainer(.with { $0.username = "pia" }, metadata: Self.bearer(stranger)) } == .permissionDenied)
                let missing = await Self.code { try await c.getContainer(.with { $0.username = "nosuchuser" }, metadata: Self.bearer(admin)) }
                #expect(missing == .notFound, "\(String(describing: missing))")
                #expect(await Self.code { try await c.getContainer(.with { $0.username = "Not_Valid!" }, metadata: Self.bearer(admin)) } == .invalidArgument)
                #expect(await Self.code { try await c.createContainer(create, metadata: Self.bearer(owner)) } == .alreadyExists)
                #expect(await Self.code {
                    try await c.exec(.with {
                        $0.username = "pia"
                        $0.command = ["id"]
                    }, metadata: Self.bearer(owner))
                } == .permissionDenied, "root needs admin")
                var unknownOS = create
                unknownOS.username = "quinn"
                unknownOS.osType = .UNRECOGNIZED(99)
                #expect(await Self.code { try await c.createContainer(unknownOS, metadata: Self.bearer(admin)) } == .invalidArgument)
                var badSize = create
                badSize.username = "quinn"
                badSize.resources.memory = "lots"
                #expect(await Self.code { try await c.createContainer(badSize, metadata: Self.bearer(admin)) } == .invalidArgument)
                #expect(try await h.plane.store.container("quinn") == nil)

                // The progress stream of another user's create is refused before anything is relayed.
                var theirs = create
                theirs.username = "sam"
                #expect(await Self.code {
                    try await c.createContainerStream(theirs, metadata: Self.bearer(owner)) { response in
                        for try await _ in response.messages {}
                    }
                } == .permissionDenied)
                // Streamed: progress, then the environment.
                var streamed = create
                streamed.username = "pia2"
                let events = try await c.createContainerStream(streamed, metadata: Self.bearer(admin)) { response in
                    var all: [Containarium_V1_CreateContainerEvent] = []
                    for try await e in response.messages { all.append(e) }
                    return all
                }
                #expect(events.last?.container.name == "pia2-container" && events.dropLast().allSatisfy { if case .progress? = $0.event { true } else { false } }, "\(events)")
                // A required flag is required.
                let system = Containarium_V1_SystemService.Client(wrapping: client)
                #expect(await Self.code { try await system.setPluginEnabled(.with { $0.id = "fake-instances" }, metadata: Self.bearer(admin)) } == .invalidArgument)

                // async: the operation, polled through OperationService.
                var later = create
                later.username = "rae"
                later.async = true
                let started = try await c.createContainer(later, metadata: Self.bearer(admin))
                #expect(started.hasOperation && !started.hasContainer && started.operation.kind == "create")
                let ops = Containarium_V1_OperationService.Client(wrapping: client)
                try await eventually("the operation succeeds") {
                    try await ops.getOperation(.with { $0.id = started.operation.id }, metadata: Self.bearer(admin)).state == .succeeded
                }

                _ = try await c.deleteContainer(.with {
                    $0.username = "pia"
                    $0.force = true
                }, metadata: Self.bearer(owner))
                #expect(await Self.code { try await c.getContainer(.with { $0.username = "pia" }, metadata: Self.bearer(admin)) } == .notFound)

                // Audit: the gRPC calls are there, by interface.
                let audit = Containarium_V1_AuditService.Client(wrapping: client)
                let entries = try await audit.listAudit(.with { $0.target = "pia" }, metadata: Self.bearer(admin)).entries
                #expect(entries.contains { $0.action == "container.create" && $0.interface == "grpc" && $0.result == "ok" })
                #expect(entries.contains { $0.action == "container.delete" && $0.result == "ok" })
                #expect(await Self.code { try await audit.listAudit(.init(), metadata: Self.bearer(owner)) } == .permissionDenied)
            }
        }
    }

    /// One bad create, as REST's JSON body and as the message.
    struct BadCreate: Sendable, CustomStringConvertible {
        var description: String
        var json: String
        var message: Containarium_V1_CreateContainerRequest
    }

    static let badCreates: [BadCreate] = {
        func m(_ edit: (inout Containarium_V1_CreateContainerRequest) -> Void) -> Containarium_V1_CreateContainerRequest {
            var r = Containarium_V1_CreateContainerRequest()
            r.username = "vera"
            edit(&r)
            return r
        }
        return [
            BadCreate(description: "bad user name", json: #"{"username": "Vera!"}"#, message: m { $0.username = "Vera!" }),
            BadCreate(description: "reserved user name", json: #"{"username": "root"}"#, message: m { $0.username = "root" }),
            BadCreate(description: "no user name", json: #"{"sshKeys": []}"#, message: m { $0.username = "" }),
            BadCreate(description: "memory without a unit that means anything", json: #"{"username": "vera", "resources": {"memory": "lots"}}"#,
                      message: m { $0.resources.memory = "lots" }),
            BadCreate(description: "memory too small", json: #"{"username": "vera", "resources": {"memory": "1MB"}}"#,
                      message: m { $0.resources.memory = "1MB" }),
            BadCreate(description: "a CPU count over the node's ratio", json: #"{"username": "vera", "resources": {"cpu": "100000"}}"#,
                      message: m { $0.resources.cpu = "100000" }),
            BadCreate(description: "an RSA key", json: #"{"username": "vera", "sshKeys": ["ssh-rsa AAAA"]}"#, message: m { $0.sshKeys = ["ssh-rsa AAAA"] }),
            BadCreate(description: "not a key", json: #"{"username": "vera", "sshKeys": ["hello"]}"#, message: m { $0.sshKeys = ["hello"] }),
            BadCreate(description: "an unknown stack", json: #"{"username": "vera", "stack": "no-such-stack"}"#, message: m { $0.stack = "no-such-stack" }),
            BadCreate(description: "an unknown node", json: #"{"username": "vera", "node": "elsewhere"}"#, message: m { $0.node = "elsewhere" }),
        ]
    }()

    @Test("validation is one path: the same bad creates through REST and through the protobuf API get the same error code, and nothing is made")
    func sameRefusalsBothWays() async throws {
        try await Harness.with { (h: Harness) async throws in
            let admin = try await h.token("admin", .admin)
            var viaGRPC: [String: String] = [:]
            let viaREST = try await Application(responder: RESTAPI(plane: h.plane, tokens: h.tokens, swaggerDir: nil), logger: Harness.quiet).test(.router) { rest in
                var viaREST: [String: String] = [:]
                for bad in Self.badCreates {
                    let r = try await rest.execute(uri: "/v1/containers", method: .post,
                                                   headers: [.authorization: "Bearer \(admin)", .contentType: "application/json"],
                                                   body: ByteBuffer(string: bad.json))
                    let json = try? WireJSON.decode(JSONValue.self, from: Data(String(buffer: r.body).utf8))
                    viaREST[bad.description] = json?["error"]?["code"]?.stringValue ?? "status \(r.status.code)"
                }
                return viaREST
            }
            try await Self.serve(h) { client in
                let c = Containarium_V1_ContainerService.Client(wrapping: client)
                for bad in Self.badCreates {
                    do {
                        _ = try await c.createContainer(bad.message, metadata: Self.bearer(admin))
                        viaGRPC[bad.description] = "ok"
                    } catch let e as RPCError {
                        viaGRPC[bad.description] = e.metadata[stringValues: "containarium-error-code"].first { _ in true } ?? "\(e.code)"
                    }
                }
            }
            for bad in Self.badCreates {
                #expect(viaREST[bad.description] == "invalid_argument", "REST, \(bad): \(viaREST[bad.description] ?? "-")")
                #expect(viaGRPC[bad.description] == viaREST[bad.description], "\(bad): gRPC \(viaGRPC[bad.description] ?? "-") vs REST \(viaREST[bad.description] ?? "-")")
            }
            #expect(try h.calls("create").isEmpty)
            #expect(try await h.plane.store.containers().isEmpty)
        }
    }

    @Test("reflection v1 and v1alpha list every service and answer files by name and by symbol, with their imports; health answers per service")
    func reflectionAndHealth() async throws {
        try await Harness.with { (h: Harness) async throws in
            try await Self.serve(h) { client in
                let expected: Set<String> = [
                    "containarium.v1.ContainerService", "containarium.v1.SystemService", "containarium.v1.ClusterService",
                    "containarium.v1.AuditService", "containarium.v1.OperationService", "containarium.v1.SecurityService", "containarium.v1.AlertService", "containarium.v1.NodeService", "containarium.v1.EventService", "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
                ]
                let requests: [Grpc_Reflection_V1_ServerReflectionRequest] = [
                    .with { $0.listServices = "*" },
                    .with { $0.fileContainingSymbol = "containarium.v1.ContainerService.CreateContainer" },
                    .with { $0.fileByFilename = "containarium/v1/audit.proto" },
                    .with { $0.fileContainingSymbol = "containarium.v1.Container" },
                    .with { $0.fileContainingSymbol = "containarium.v1.NoSuchThing" },
                ]
                let v1 = Grpc_Reflection_V1_ServerReflection.Client(wrapping: client)
                let answers = try await v1.serverReflectionInfo(requestProducer: { writer in
                    for r in requests { try await writer.write(r) }
                }, onResponse: { response in
                    var all: [Grpc_Reflection_V1_ServerReflectionResponse] = []
                    for try await m in response.messages { all.append(m) }
                    return all
                })
                try #require(answers.count == requests.count)
                #expect(Set(answers[0].listServicesResponse.service.map(\.name)) == expected)
                func names(_ a: Grpc_Reflection_V1_ServerReflectionResponse) throws -> [String] {
                    try a.fileDescriptorResponse.fileDescriptorProto.map { try Google_Protobuf_FileDescriptorProto(serializedBytes: $0).name }
                }
                let create = try names(answers[1])
                #expect(create.first == "containarium/v1/container.proto", "the file first: \(create)")
                #expect(Set(create).isSuperset(of: ["containarium/v1/common.proto", "google/protobuf/timestamp.proto"]), "with its imports: \(create)")
                let service = try Google_Protobuf_FileDescriptorProto(serializedBytes: answers[1].fileDescriptorResponse.fileDescriptorProto[0]).service
                #expect(service.first?.method.contains { $0.name == "CreateContainer" } == true)
                #expect(try names(answers[2]).first == "containarium/v1/audit.proto")
                #expect(try names(answers[3]).first == "containarium/v1/container.proto")
                #expect(answers[4].errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))
                #expect(answers[4].originalRequest.fileContainingSymbol == "containarium.v1.NoSuchThing")

                let alpha = Grpc_Reflection_V1alpha_ServerReflection.Client(wrapping: client)
                let listed = try await alpha.serverReflectionInfo(requestProducer: { writer in
                    try await writer.write(.with { $0.listServices = "*" })
                }, onResponse: { response in
                    var names: [String] = []
                    for try await m in response.messages { names += m.listServicesResponse.service.map(\.name) }
                    return names
                })
                #expect(Set(listed) == expected)

                let health = Grpc_Health_V1_Health.Client(wrapping: client)
                #expect(try await health.check(.with { $0.service = "" }).status == .serving)
                #expect(try await health.check(.with { $0.service = "containarium.v1.ContainerService" }).status == .serving)
                #expect(await Self.code { try await health.check(.with { $0.service = "no.such.Service" }) } == .notFound)
            }
        }
    }
}
