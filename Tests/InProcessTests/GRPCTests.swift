import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import ContainariumService
import ContainariumStore
import Foundation
import GRPCCore
import GRPCInProcessTransport
import PluginHost
import TestSupport
import Testing

/// The gRPC adapter (the same service the daemon serves over HTTP/2) on grpc-swift's
/// in-process transport: metadata authentication, the JSON messages, the error mapping and
/// CreateContainer's progress stream, without a socket.
@Suite("gRPC in process")
struct GRPCTests {
    struct JSONCodec: MessageSerializer, MessageDeserializer {
        typealias Message = JSONValue
        func serialize<Bytes: GRPCContiguousBytes>(_ message: JSONValue) throws -> Bytes { Bytes(try WireJSON.encode(message)) }
        func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> JSONValue {
            try WireJSON.decode(JSONValue.self, from: bytes.withUnsafeBytes { Data($0) })
        }
    }

    typealias Client = GRPCClient<InProcessTransport.Client>

    static func metadata(_ token: String?) -> Metadata {
        var m = Metadata()
        if let token { m.addString("Bearer \(token)", forKey: "authorization") }
        return m
    }

    static func call(_ client: Client, _ method: String, _ body: [String: JSONValue], token: String?) async throws -> JSONValue {
        try await client.unary(
            request: ClientRequest(message: .object(body), metadata: metadata(token)), descriptor: ContainariumRPC.method(method),
            serializer: JSONCodec(), deserializer: JSONCodec(), options: .defaults
        ) { try $0.message }
    }

    /// The gRPC status and the Containarium error code of a failing call (nil when it succeeds).
    static func failure(_ body: () async throws -> some Any) async -> (RPCError.Code, String?)? {
        do {
            _ = try await body()
            return nil
        } catch let e as RPCError {
            return (e.code, e.metadata[stringValues: "containarium-error-code"].first { _ in true })
        } catch {
            return (.unknown, "\(error)")
        }
    }

    static func serve(_ h: Harness, _ body: (Client) async throws -> Void) async throws {
        let transport = InProcessTransport()
        try await withGRPCServer(transport: transport.server, services: [ContainariumRPC.makeService(plane: h.plane, tokens: h.tokens)]) { _ in
            try await withGRPCClient(transport: transport.client) { client in try await body(client) }
        }
    }

    @Test("authentication and authorization by metadata; exec as the account; root for admins only; audit for admins only")
    func calls() async throws {
        try await Harness.with { (h: Harness) async throws in
            try await h.create("alice")
            let owner = try await h.token("alice"), stranger = try await h.token("mallory"), admin = try await h.token("admin", .admin)
            let node = try await h.token("node.other", .node)
            let expired = try await h.token("alice", expiresIn: 60, now: Date().addingTimeInterval(-7200))
            let alice: [String: JSONValue] = ["username": .string("alice")]
            try await Self.serve(h) { client in
                let view = try await Self.call(client, "GetContainer", alice, token: owner)
                #expect(view["username"]?.stringValue == "alice" && view["state"]?.stringValue != nil)
                for (token, why) in [(nil, "no token"), (expired, "expired"), ("garbage", "garbage")] as [(String?, String)] {
                    let f = await Self.failure { try await Self.call(client, "GetContainer", alice, token: token) }
                    #expect(f?.0 == .unauthenticated, "\(why): \(String(describing: f))")
                }
                for token in [stranger, node] {
                    let f = await Self.failure { try await Self.call(client, "GetContainer", alice, token: token) }
                    #expect(f?.0 == .permissionDenied && f?.1 == "permission_denied", "\(String(describing: f))")
                }
                let who = try await Self.call(client, "Exec", alice.merging(["command": .array([.string("whoami")]), "asUser": .bool(true)]) { a, _ in a }, token: owner)
                #expect(who["stdout"]?.stringValue == "alice\n" && who["exitCode"]?.number == 0)
                let root = await Self.failure {
                    try await Self.call(client, "Exec", alice.merging(["command": .array([.string("whoami")])]) { a, _ in a }, token: owner)
                }
                #expect(root?.0 == .permissionDenied)
                let asRoot = try await Self.call(client, "Exec", alice.merging(["command": .array([.string("whoami")])]) { a, _ in a }, token: admin)
                #expect(asRoot["stdout"]?.stringValue == "root\n")
                #expect(await Self.failure { try await Self.call(client, "ListAudit", [:], token: owner) }?.0 == .permissionDenied)
                let audit = try await Self.call(client, "ListAudit", ["target": .string("alice"), "action": .string("container.exec")], token: admin)
                let results = audit["entries"]?.items?.compactMap { $0["result"]?.stringValue } ?? []
                #expect(results.sorted() == ["ok", "ok", "permission_denied"], "\(results)")
                #expect(await Self.failure { try await Self.call(client, "GetContainer", [:], token: owner) }?.0 == .invalidArgument)
                #expect(await Self.failure { try await Self.call(client, "DeleteContainer", alice, token: stranger) }?.0 == .permissionDenied)
                #expect(try await Self.call(client, "DeleteContainer", alice, token: owner) == .object([:]))
                #expect(await Self.failure { try await Self.call(client, "GetContainer", alice, token: admin) }?.0 == .notFound)
            }
            let grpcFailures = try await h.audit(action: "auth.failure").filter { $0.interface == "grpc" }
            #expect(grpcFailures.count == 3)
        }
    }

    @Test("CreateContainer streams the operation's progress, then the container; a backend failure is the stream's error and leaves no record")
    func createStream() async throws {
        try await Harness.with { (h: Harness) async throws in
            let nina = try await h.token("nina")
            func create(_ client: Client, _ labels: [String: JSONValue]) async throws -> [JSONValue] {
                let body: JSONValue = .object(["username": .string("nina"), "sshKeys": .array([.string(Harness.sshKey())]), "labels": .object(labels)])
                return try await client.serverStreaming(
                    request: ClientRequest(message: body, metadata: Self.metadata(nina)), descriptor: ContainariumRPC.method(ContainariumRPC.createMethod),
                    serializer: JSONCodec(), deserializer: JSONCodec(), options: .defaults
                ) { response in
                    var out: [JSONValue] = []
                    for try await m in response.messages { out.append(m) }
                    return out
                }
            }
            try await Self.serve(h) { client in
                let f = await Self.failure { try await create(client, ["fake.fail-step": .string("3")]) }
                #expect(f?.0 == .internalError && f?.1 == "internal", "\(String(describing: f))")
                #expect(try await h.plane.store.container("nina") == nil)
                #expect(try await h.plane.service.list().isEmpty)

                let messages = try await create(client, [:])
                let steps = messages.compactMap { $0["progress"]?["step"]?.number }
                #expect(steps == [1, 2, 3, 4, 5], "\(messages)")
                #expect(messages.last?["container"]?["username"]?.stringValue == "nina")
                #expect(try await h.plane.store.container("nina")?.phase == .ready)
            }
        }
    }
}
