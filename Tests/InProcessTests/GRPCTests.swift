import ContainariumClient
import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import ContainariumProto
import ContainariumService
import ContainariumStore
import Foundation
import GRPCCore
import GRPCInProcessTransport
import GRPCProtobuf
import PluginHost
import SwiftProtobuf
import TestSupport
import Testing

/// The gRPC adapter (the services the daemon serves over HTTP/2) through `ContainariumClient`,
/// the client the CLI and the nodes use, on grpc-swift's in-process transport: metadata
/// authentication, the error mapping both ways, CreateContainerStream's progress, the node
/// protocol's refusals and the end of the JSON-codec service.
@Suite("gRPC in process")
struct GRPCTests {
    typealias Client = ContainariumClient<InProcessTransport.Client>

    static func serve(_ h: Harness, links: NodeLinks? = nil, nodeAPI: Bool = false, plaintextNodes: Bool = true,
                      _ body: (GRPCClient<InProcessTransport.Client>) async throws -> Void) async throws {
        let transport = InProcessTransport()
        let services = ContainariumRPC.makeServices(plane: h.plane, tokens: h.tokens, plaintextNodes: plaintextNodes, links: links, nodeAPI: nodeAPI,
                                                    logger: Harness.quiet)
        try await withGRPCServer(transport: transport.server, services: services) { _ in
            try await withGRPCClient(transport: transport.client) { client in try await body(client) }
        }
    }

    static func client(_ grpc: GRPCClient<InProcessTransport.Client>, _ token: String?) -> Client {
        var m = Metadata()
        if let token { m.addString("Bearer \(token)", forKey: "authorization") }
        return Client(grpc: grpc, metadata: m)
    }

    /// What the client makes of a failing call: the ContainariumError the CLI and the platform see.
    static func failure(_ body: () async throws -> some Any) async -> ContainariumError? {
        do {
            _ = try await body()
            return nil
        } catch {
            return ContainariumError(rpc: error)
        }
    }

    @Test("authentication and authorization by metadata; exec as the account; root for admins only; audit for admins only; errors keep their own code")
    func calls() async throws {
        try await Harness.with { (h: Harness) async throws in
            try await h.create("alice")
            let owner = try await h.token("alice"), stranger = try await h.token("mallory"), admin = try await h.token("admin", .admin)
            let node = try await h.token("node.other", .node)
            let expired = try await h.token("alice", expiresIn: 60, now: Date().addingTimeInterval(-7200))
            let alice = Containarium_V1_GetContainerRequest.with { $0.username = "alice" }
            try await Self.serve(h) { grpc in
                let asOwner = Self.client(grpc, owner), asAdmin = Self.client(grpc, admin), asStranger = Self.client(grpc, stranger)
                let view = try await asOwner.containers.getContainer(alice, metadata: asOwner.metadata)
                #expect(view.username == "alice" && view.state == .running)
                for (token, why) in [(nil, "no token"), (expired, "expired"), ("garbage", "garbage")] as [(String?, String)] {
                    let c = Self.client(grpc, token)
                    let f = await Self.failure { try await c.containers.getContainer(alice, metadata: c.metadata) }
                    #expect(f?.code == .unauthenticated, "\(why): \(String(describing: f))")
                }
                for token in [stranger, node] {
                    let c = Self.client(grpc, token)
                    let f = await Self.failure { try await c.containers.getContainer(alice, metadata: c.metadata) }
                    #expect(f?.code == .permissionDenied, "\(String(describing: f))")
                }
                let whoami = Containarium_V1_ExecRequest.with {
                    $0.username = "alice"
                    $0.command = ["whoami"]
                }
                var asUser = whoami
                asUser.asUser = true
                let who = try await asOwner.containers.exec(asUser, metadata: asOwner.metadata)
                #expect(who.stdout == "alice\n" && who.exitCode == 0)
                #expect(await Self.failure { try await asOwner.containers.exec(whoami, metadata: asOwner.metadata) }?.code == .permissionDenied)
                #expect(try await asAdmin.containers.exec(whoami, metadata: asAdmin.metadata).stdout == "root\n")
                #expect(await Self.failure { try await asOwner.audit.listAudit(.init(), metadata: asOwner.metadata) }?.code == .permissionDenied)
                let audit = try await asAdmin.audit.listAudit(.with {
                    $0.target = "alice"
                    $0.action = "container.exec"
                }, metadata: asAdmin.metadata)
                #expect(audit.entries.map(\.result).sorted() == ["ok", "ok", "permission_denied"], "\(audit.entries)")
                #expect(await Self.failure { try await asOwner.containers.getContainer(.init(), metadata: asOwner.metadata) }?.code == .invalidArgument)
                // Our own code survives the trip where the gRPC status is coarser: a stopped
                // environment's exec is failed_precondition, not just "9".
                _ = try await asOwner.containers.stopContainer(.with { $0.username = "alice" }, metadata: asOwner.metadata)
                let stopped = await Self.failure { try await asOwner.containers.exec(asUser, metadata: asOwner.metadata) }
                #expect(stopped?.code == .failedPrecondition, "\(String(describing: stopped))")
                let delete = Containarium_V1_DeleteContainerRequest.with { $0.username = "alice" }
                #expect(await Self.failure { try await asStranger.containers.deleteContainer(delete, metadata: asStranger.metadata) }?.code == .permissionDenied)
                _ = try await asOwner.containers.deleteContainer(delete, metadata: asOwner.metadata)
                #expect(await Self.failure { try await asAdmin.containers.getContainer(alice, metadata: asAdmin.metadata) }?.code == .notFound)
            }
            let grpcFailures = try await h.audit(action: "auth.failure").filter { $0.interface == "grpc" }
            #expect(grpcFailures.count == 3)
            // A node identity's attempt outside NodeService is refused and audited as its own.
            let nodeRefusals = try await h.audit(action: "auth.denied")
            #expect(nodeRefusals.contains { $0.actor == "node.other" && $0.target == "GetContainer" && $0.result == "permission_denied" }, "\(nodeRefusals)")
        }
    }

    @Test("CreateContainerStream streams the operation's progress, then the container; a backend failure is the stream's error and leaves no record")
    func createStream() async throws {
        try await Harness.with { (h: Harness) async throws in
            let nina = try await h.token("nina")
            func create(_ c: Client, _ labels: [String: String]) async throws -> [Containarium_V1_CreateContainerEvent] {
                let request = Containarium_V1_CreateContainerRequest.with {
                    $0.username = "nina"
                    $0.sshKeys = [Harness.sshKey()]
                    $0.labels = labels
                }
                return try await c.containers.createContainerStream(request, metadata: c.metadata) { response in
                    var out: [Containarium_V1_CreateContainerEvent] = []
                    for try await m in response.messages { out.append(m) }
                    return out
                }
            }
            try await Self.serve(h) { grpc in
                let c = Self.client(grpc, nina)
                let f = await Self.failure { try await create(c, ["fake.fail-step": "3"]) }
                #expect(f?.code == .internal, "\(String(describing: f))")
                #expect(try await h.plane.store.container("nina") == nil)
                #expect(try await h.plane.service.list().isEmpty)

                let messages = try await create(c, [:])
                let steps = messages.compactMap { m -> UInt32? in if case .progress(let p)? = m.event { p.step } else { nil } }
                #expect(steps == [1, 2, 3, 4, 5], "\(messages)")
                guard case .container(let made)? = messages.last?.event else {
                    Issue.record("the stream did not end with the container: \(messages)")
                    return
                }
                #expect(made.username == "nina" && made.state == .running)
                #expect(try await h.plane.store.container("nina")?.phase == .ready)
            }
        }
    }

    @Test("EventService: a user sees the events of their own environments only, typed; an admin sees every event; no token, no stream")
    func events() async throws {
        try await Harness.with { (h: Harness) async throws in
            let ona = try await h.token("ona"), admin = try await h.token("admin", .admin)
            try await Self.serve(h) { grpc in
                /// The events `c` sees until it has seen `until` (or 20 s pass), while `work` runs.
                func watch(_ c: Client, until: @escaping @Sendable ([Containarium_V1_Event]) -> Bool,
                           _ work: @escaping @Sendable () async throws -> Void) async throws -> [Containarium_V1_Event] {
                    let (ready, readyC) = AsyncStream<Void>.makeStream()
                    let reader = Task {
                        try await c.events.subscribe(.init(), metadata: c.metadata) { response in
                            var seen: [Containarium_V1_Event] = []
                            readyC.yield()
                            for try await e in response.messages {
                                seen.append(e)
                                if until(seen) { break }
                            }
                            return seen
                        }
                    }
                    for await _ in ready { break }
                    try await Task.sleep(for: .milliseconds(200))  // the server side subscribed
                    try await work()
                    let timeout = Task {
                        try await Task.sleep(for: .seconds(20))
                        reader.cancel()
                    }
                    defer { timeout.cancel() }
                    return try await reader.value
                }
                let asOna = Self.client(grpc, ona), asAdmin = Self.client(grpc, admin)
                let seen = try await watch(asOna, until: { $0.contains { $0.type == "operation.finished" } }) {
                    try await h.create("zed")  // someone else's: ona must not hear of it
                    _ = try await asOna.containers.createContainer(.with {
                        $0.username = "ona"
                        $0.sshKeys = [Harness.sshKey()]
                    }, metadata: asOna.metadata)
                }
                #expect(!seen.isEmpty && seen.allSatisfy { $0.username == "ona" }, "\(seen.map { ($0.type, $0.username) })")
                let steps = seen.compactMap { e -> UInt32? in if case .progress(let p)? = e.data { p.step } else { nil } }
                #expect(steps.first == 1 && steps == steps.sorted(), "\(steps)")
                guard case .operation(let outcome)? = seen.last?.data else {
                    Issue.record("no operation.finished: \(seen)")
                    return
                }
                #expect(outcome.state == "succeeded" && !outcome.operationID.isEmpty && outcome.error.isEmpty)
                #expect(seen.contains { if case .progress(let p)? = $0.data { p.operationID == outcome.operationID } else { false } })
                let all = try await watch(asAdmin, until: { $0.contains { $0.type == "audit" } }) {
                    _ = try await asAdmin.containers.stopContainer(.with { $0.username = "zed" }, metadata: asAdmin.metadata)
                }
                #expect(all.contains { if case .audit(let a)? = $0.data { a.action == "container.stop" && a.actor == "admin" } else { false } }, "\(all)")
                let anonymous = Self.client(grpc, nil)
                let refused = await Self.failure {
                    try await anonymous.events.subscribe(.init(), metadata: anonymous.metadata) { response in
                        for try await _ in response.messages {}
                    }
                }
                #expect(refused?.code == .unauthenticated, "\(String(describing: refused))")
            }
        }
    }

    @Test("NodeService: a node token reports only as its own node; users and nodes cannot link as another; a node API has no NodeService; the JSON-codec service is gone")
    func nodeProtocol() async throws {
        try await Harness.with { (h: Harness) async throws in
            let user = try await h.token("alice"), other = try await h.token("node.other", .node)
            let report = Containarium_V1_NodeReport.with {
                $0.name = "worker-1"
                $0.kinds = ["lxc"]
                $0.capacity = .with {
                    $0.cpuMillis = 4000
                    $0.memoryBytes = 8 << 30
                    $0.diskBytes = 100 << 30
                }
            }
            try await Self.serve(h) { grpc in
                let asUser = Self.client(grpc, user), asOther = Self.client(grpc, other)
                let byUser = await Self.failure { try await asUser.nodes.reportNode(report, metadata: asUser.metadata) }
                #expect(byUser?.code == .permissionDenied, "\(String(describing: byUser))")
                let asAnother = await Self.failure { try await asOther.nodes.reportNode(report, metadata: asOther.metadata) }
                #expect(asAnother?.code == .permissionDenied || asAnother?.code == .failedPrecondition, "\(String(describing: asAnother))")
                let unnamed = await Self.failure { try await asOther.nodes.reportNode(.init(), metadata: asOther.metadata) }
                #expect(unnamed?.code == .invalidArgument || unnamed?.code == .permissionDenied || unnamed?.code == .failedPrecondition,
                        "\(String(describing: unnamed))")
                // A link from a user's token is refused before any frame is relayed.
                var md = asUser.metadata
                md.addString("worker-1", forKey: ContainariumEndpoint.nodeKey)
                let link = await Self.failure {
                    try await asUser.nodes.link(request: StreamingClientRequest(metadata: md) { _ in }) { response in
                        for try await _ in response.messages {}
                    }
                }
                #expect(link?.code == .permissionDenied || link?.code == .failedPrecondition, "\(String(describing: link))")
            }
            // Without mTLS (and without --insecure-plaintext-nodes) a node's own, valid report is
            // refused: its credentials came in clear.
            let own = try await h.token("node.worker-1", .node)
            try await Self.serve(h, plaintextNodes: false) { grpc in
                let asNode = Self.client(grpc, own)
                let clear = await Self.failure { try await asNode.nodes.reportNode(report, metadata: asNode.metadata) }
                #expect(clear?.code == .failedPrecondition && clear?.message.contains("node traffic is TLS") == true, "\(String(describing: clear))")
            }
            try await Self.serve(h) { grpc in
                let asNode = Self.client(grpc, own), asUser = Self.client(grpc, user)
                // On a test bed (--insecure-plaintext-nodes) the same report is not refused for that.
                let allowed = await Self.failure { try await asNode.nodes.reportNode(report, metadata: asNode.metadata) }
                #expect(allowed?.message.contains("node traffic is TLS") != true, "\(String(describing: allowed))")
                // The JSON-codec service of the previous release answers no more.
                let legacy = await Self.failure {
                    try await grpc.unary(
                        request: ClientRequest(message: Containarium_V1_GetContainerRequest.with { $0.username = "alice" }, metadata: asUser.metadata),
                        descriptor: MethodDescriptor(fullyQualifiedService: "containarium.v1.Containarium", method: "GetContainer"),
                        serializer: ProtobufSerializer<Containarium_V1_GetContainerRequest>(),
                        deserializer: ProtobufDeserializer<Containarium_V1_Container>(), options: .defaults
                    ) { try $0.message }
                }
                #expect(legacy?.code == .unsupported, "\(String(describing: legacy))")
            }
            // A node's private API serves no NodeService: reports and links are a control plane's.
            try await Self.serve(h, nodeAPI: true) { grpc in
                let local = Self.client(grpc, nil)
                let f = await Self.failure { try await local.nodes.reportNode(report, metadata: local.metadata) }
                #expect(f?.code == .unsupported, "\(String(describing: f))")
                // The CLI's calls on the socket are the local admin's.
                let listed = try await local.containers.listContainers(.init(), metadata: local.metadata)
                #expect(listed.containers.isEmpty)
            }
        }
    }
}
