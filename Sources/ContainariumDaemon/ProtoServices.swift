import ContainariumClient
import ContainariumCore
import ContainariumPlatform
import ContainariumProto
import ContainariumScheduler
import ContainariumService
import ContainariumStore
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import SwiftProtobuf

/// Who is calling, from a call's metadata and transport: one rule for every gRPC service.
struct GRPCAuth: Sendable {
    let plane: ControlPlane
    let tokens: Tokens
    let mtls: Bool
    /// The local API socket: a call without a token came from root on this machine (the CLI), or
    /// through this node's link from its control plane; nobody else can reach the socket.
    var nodeAPI = false
    /// Node identities accepted without TLS (`--insecure-plaintext-nodes`, a test bed only).
    var plaintextNodes = false

    /// A bearer token in metadata wins; otherwise a verified client certificate (mTLS) is the
    /// identity it names (`CertificateIdentity`: its CN and its role); otherwise the call is refused.
    func caller(_ metadata: Metadata, _ context: ServerContext) async throws(ContainariumError) -> Caller {
        let peer = context.remotePeer
        if let header = metadata[stringValues: "authorization"].first(where: { _ in true }) {
            let parts = header.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .unauthenticated("authorization metadata must be 'Bearer <token>'") }
            let (subject, role, issued, expires) = try await tokens.verify(String(parts[1]))
            return Caller(subject: subject, role: role, source: peer, interface: "grpc", issuedAt: issued, expiresAt: expires)
        }
        if mtls {
            guard let cert = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate else {
                throw .unauthenticated("no client certificate")
            }
            let id = try CertificateIdentity.of(cert)
            try await plane.revocations.checkCertificate(serial: CertificateIdentity.serial(of: cert))
            var who = Caller(subject: id.subject, role: id.role, source: peer, interface: "grpc", issuedAt: id.issuedAt, expiresAt: id.expiresAt)
            who.byCertificate = true
            return who
        }
        if nodeAPI {
            // The node's link says so in metadata; the CLI does not. Both are root-only paths.
            if metadata[stringValues: ContainariumEndpoint.viaLinkKey].contains(where: { _ in true }) {
                return Caller(subject: "control-plane", role: .admin, source: "node-link", interface: "grpc")
            }
            return Caller(subject: "local-admin", role: .admin, source: "local", interface: "cli")
        }
        throw .unauthenticated("missing credentials: use mTLS client certificates or a bearer token")
    }

    /// The caller, or the refusal audited as `method`.
    func authenticate(_ metadata: Metadata, _ context: ServerContext, _ method: String) async throws(ContainariumError) -> Caller {
        let who: Caller
        do throws(ContainariumError) { who = try await caller(metadata, context) } catch {
            await plane.auditAuthFailure(source: context.remotePeer, interface: "grpc", action: method, reason: error.message)
            throw error
        }
        // Node traffic is TLS: a node's credentials that arrived in clear are not used, and the
        // node is told how to fix it (its token may have been seen; it should be revoked).
        if who.role == .node, !mtls, !plaintextNodes, !nodeAPI {
            let refusal = ContainariumError(
                .failedPrecondition,
                "node traffic is TLS: this control plane's gRPC runs without --mtls, so it takes no node reports or links; run it with --mtls and join the node with --certs-dir (or, on a test bed only, run the control plane with --insecure-plaintext-nodes)")
            await plane.audit(actor: who.subject, role: "node", action: "auth.denied", target: method, source: who.source, interface: "grpc",
                              result: refusal.code.rawValue, detail: refusal.message)
            throw refusal
        }
        // A scraper's token reads /metrics (REST) and nothing else.
        if who.role == .metrics {
            let refusal = ContainariumError.denied("metrics tokens are for GET /metrics only")
            await plane.audit(actor: who.subject, role: "metrics", action: "auth.denied", target: method, source: who.source, interface: "grpc",
                              result: refusal.code.rawValue, detail: refusal.message)
            throw refusal
        }
        // A node's identity is for the node protocol only: no other method answers it.
        if who.role == .node, !Self.nodeMethods.contains(method) {
            let refusal = ContainariumError.denied("node identities (tokens and certificates) are for the node protocol (NodeService: ReportNode, Link) only")
            await plane.audit(actor: who.subject, role: "node", action: "auth.denied", target: method, source: who.source, interface: "grpc",
                              result: refusal.code.rawValue, detail: refusal.message)
            throw refusal
        }
        return who
    }

    /// What a node token may call: NodeService's methods (audited under these names).
    static let nodeMethods: Set<String> = ["ReportNode", "NodeLink"]

    /// A unary call: authenticate, run, map the error once.
    func unary<I: Sendable, O: Sendable>(
        _ method: String, _ request: ServerRequest<I>, _ context: ServerContext,
        _ body: (Caller, I) async throws(ContainariumError) -> O
    ) async -> ServerResponse<O> {
        do throws(ContainariumError) {
            let who = try await authenticate(request.metadata, context, method)
            return ServerResponse(message: try await body(who, request.message))
        } catch {
            return ServerResponse(error: RPCError(containarium: error))
        }
    }
}

/// `containarium.v1.ContainerService`: environments and what is inside them. Every unary method is `APIv1`'s, as REST's are.
struct ContainerServiceV1: Containarium_V1_ContainerService.ServiceProtocol {
    let auth: GRPCAuth
    var plane: ControlPlane { auth.plane }
    var api: APIv1 { APIv1(plane: auth.plane) }

    func createContainer(request: ServerRequest<Containarium_V1_CreateContainerRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_CreateContainerResponse> {
        await auth.unary("CreateContainer", request, context, api.createContainer)
    }

    func listContainers(request: ServerRequest<Containarium_V1_ListContainersRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListContainersResponse> {
        await auth.unary("ListContainers", request, context, api.listContainers)
    }

    func getContainer(request: ServerRequest<Containarium_V1_GetContainerRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Container> {
        await auth.unary("GetContainer", request, context, api.getContainer)
    }

    func deleteContainer(request: ServerRequest<Containarium_V1_DeleteContainerRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_DeleteContainerResponse> {
        await auth.unary("DeleteContainer", request, context, api.deleteContainer)
    }

    func startContainer(request: ServerRequest<Containarium_V1_StartContainerRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Container> {
        await auth.unary("StartContainer", request, context, api.startContainer)
    }

    func stopContainer(request: ServerRequest<Containarium_V1_StopContainerRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Container> {
        await auth.unary("StopContainer", request, context, api.stopContainer)
    }

    func restartContainer(request: ServerRequest<Containarium_V1_RestartContainerRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Container> {
        await auth.unary("RestartContainer", request, context, api.restartContainer)
    }

    func resizeContainer(request: ServerRequest<Containarium_V1_ResizeContainerRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Container> {
        await auth.unary("ResizeContainer", request, context, api.resizeContainer)
    }

    func exec(request: ServerRequest<Containarium_V1_ExecRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ExecResponse> {
        await auth.unary("Exec", request, context, api.exec)
    }

    func installStack(request: ServerRequest<Containarium_V1_InstallStackRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_InstallStackResponse> {
        await auth.unary("InstallStack", request, context, api.installStack)
    }

    func cleanupDisk(request: ServerRequest<Containarium_V1_CleanupDiskRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_CleanupDiskResponse> {
        await auth.unary("CleanupDisk", request, context, api.cleanupDisk)
    }

    func exportSSHConfig(request: ServerRequest<Containarium_V1_ExportSSHConfigRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ExportSSHConfigResponse> {
        await auth.unary("ExportSSHConfig", request, context, api.exportSSHConfig)
    }

    func getCredentials(request: ServerRequest<Containarium_V1_GetCredentialsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Credentials> {
        await auth.unary("GetCredentials", request, context, api.getCredentials)
    }

    func listSSHKeys(request: ServerRequest<Containarium_V1_ListSSHKeysRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListSSHKeysResponse> {
        await auth.unary("ListSSHKeys", request, context, api.listSSHKeys)
    }

    func addSSHKey(request: ServerRequest<Containarium_V1_AddSSHKeyRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_SSHKey> {
        await auth.unary("AddSSHKey", request, context, api.addSSHKey)
    }

    func removeSSHKey(request: ServerRequest<Containarium_V1_RemoveSSHKeyRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_RemoveSSHKeyResponse> {
        await auth.unary("RemoveSSHKey", request, context, api.removeSSHKey)
    }

    func listCollaborators(request: ServerRequest<Containarium_V1_ListCollaboratorsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListCollaboratorsResponse> {
        await auth.unary("ListCollaborators", request, context, api.listCollaborators)
    }

    func addCollaborator(request: ServerRequest<Containarium_V1_AddCollaboratorRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Collaborator> {
        await auth.unary("AddCollaborator", request, context, api.addCollaborator)
    }

    func removeCollaborator(request: ServerRequest<Containarium_V1_RemoveCollaboratorRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_RemoveCollaboratorResponse> {
        await auth.unary("RemoveCollaborator", request, context, api.removeCollaborator)
    }

    func getMetricsHistory(request: ServerRequest<Containarium_V1_GetMetricsHistoryRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_GetMetricsHistoryResponse> {
        await auth.unary("GetMetricsHistory", request, context, api.getMetricsHistory)
    }

    func listContainerMetrics(request: ServerRequest<Containarium_V1_ListContainerMetricsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListContainerMetricsResponse> {
        await auth.unary("ListContainerMetrics", request, context, api.listContainerMetrics)
    }

    func createContainerStream(request: ServerRequest<Containarium_V1_CreateContainerRequest>, context: ServerContext) async throws
        -> StreamingServerResponse<Containarium_V1_CreateContainerEvent>
    {
        let who: Caller, create: CreateEnvironmentRequest
        do throws(ContainariumError) {
            who = try await auth.authenticate(request.metadata, context, "CreateContainerStream")
            guard !request.message.async else { throw .invalid("async is for CreateContainer; a stream waits for the environment") }
            create = try ProtoMap.create(request.message)
            try await plane.authorizeCreateProgress(who, create.username)  // before any of that user's progress is relayed
        } catch {
            return StreamingServerResponse(error: RPCError(containarium: error))
        }
        let plane = self.plane
        return StreamingServerResponse { writer in
            let (events, cancel) = plane.events.subscribe()
            let relay = Task {
                for await e in events where e.type == "operation.progress" && e.username == create.username {
                    guard case .progress = e.data, case .progress(let p)? = ProtoMap.event(e).data else { continue }
                    try? await writer.write(.with { $0.progress = p })
                }
            }
            defer { cancel(); relay.cancel() }
            do throws(ContainariumError) {
                let outcome = try await cancellingWithRPC { () async throws(ContainariumError) in try await plane.createContainer(who, create, async: false) }
                guard case .done(let view) = outcome else { return [:] }
                cancel()
                await relay.value
                try? await writer.write(.with { $0.container = ProtoMap.container(view) })
                return [:]
            } catch {
                throw RPCError(containarium: error)
            }
        }
    }
}

extension ContainerServiceV1 {
    /// A VM's console: the first message names it; `ready` once it is open; bytes both ways.
    func openConsole(request: StreamingServerRequest<Containarium_V1_ConsoleInput>, context: ServerContext) async throws
        -> StreamingServerResponse<Containarium_V1_ConsoleOutput>
    {
        let who: Caller
        do throws(ContainariumError) { who = try await auth.authenticate(request.metadata, context, "OpenConsole") } catch {
            return StreamingServerResponse(error: RPCError(containarium: error))
        }
        let plane = self.plane
        return StreamingServerResponse { writer in
            // One reader for the whole call: the first message opens; each later one is written
            // to the console before the next is read, so a client that sends faster than the
            // console takes input is slowed down by HTTP/2 flow control, never buffered here.
            let (opens, opening) = AsyncStream<Containarium_V1_OpenConsoleRequest>.makeStream(bufferingPolicy: .bufferingOldest(1))
            let (opened, handOver) = AsyncStream<any TerminalStream>.makeStream(bufferingPolicy: .bufferingOldest(1))
            let reader = Task {
                var console: (any TerminalStream)?
                do {
                    for try await m in request.messages {
                        guard let open = console else {
                            // The first message: an open, or the call ends (below).
                            guard case .open(let o)? = m.input else { break }
                            opening.yield(o)
                            opening.finish()
                            var next = opened.makeAsyncIterator()
                            guard let c = await next.next() else { break }  // the console did not open
                            console = c
                            continue
                        }
                        guard case .data(let d)? = m.input else { continue }
                        try await open.write(ByteBuffer(bytes: d))
                    }
                } catch {}
                opening.finish()
                // The client stopped sending (or the console refused input): close the console,
                // which ends its output and so the call.
                console?.close()
            }
            defer { reader.cancel() }
            var next = opens.makeAsyncIterator()
            guard let open = await next.next() else {
                throw RPCError(containarium: .invalid("the first message of OpenConsole must be `open` (username and kind)"))
            }
            let kind: String
            switch open.kind {
            case .unspecified, .serial: kind = "serial"
            case .vnc: kind = "vnc"
            case .UNRECOGNIZED(let n):
                handOver.finish()
                throw RPCError(containarium: .invalid("console kind \(n) is not serial or vnc"))
            }
            let console: any TerminalStream
            do throws(ContainariumError) { console = try await plane.openConsoleStream(who, open.username, kind: kind) } catch {
                handOver.finish()
                throw RPCError(containarium: error)
            }
            let started = Date()
            defer { console.close() }
            handOver.yield(console)
            handOver.finish()
            try await writer.write(.with { $0.ready = true })
            for await chunk in console.output {
                try await writer.write(.with { $0.data = Data(chunk.readableBytesView) })
                console.consumed(chunk.readableBytes)
            }
            await plane.consoleClosed(who, open.username, kind: kind, seconds: Date().timeIntervalSince(started))
            return [:]
        }
    }
}

/// `containarium.v1.EventService`: the events the caller may see, as they happen.
struct EventServiceV1: Containarium_V1_EventService.ServiceProtocol {
    let auth: GRPCAuth

    func subscribe(request: ServerRequest<Containarium_V1_SubscribeRequest>, context: ServerContext) async throws
        -> StreamingServerResponse<Containarium_V1_Event>
    {
        let who: Caller
        do throws(ContainariumError) { who = try await auth.authenticate(request.metadata, context, "Subscribe") } catch {
            return StreamingServerResponse(error: RPCError(containarium: error))
        }
        let plane = auth.plane
        do throws(ContainariumError) { try plane.events.admits(who.subject) } catch {
            return StreamingServerResponse(error: RPCError(containarium: error))
        }
        return StreamingServerResponse { writer in
            // Subscribed only once the call's body runs: a client gone before holds nothing.
            let events: AsyncStream<DaemonEvent>, cancel: @Sendable () -> Void
            do throws(ContainariumError) { (events, cancel) = try plane.events.subscribe(for: who.subject) } catch {
                throw RPCError(containarium: error)
            }
            defer { cancel() }
            var audience = plane.audience(who)
            // Ends when the daemon closes its events (shutdown) or the client goes away.
            try await withRPCCancellationHandler {
                for await e in events where await audience.admits(e) {
                    try await writer.write(ProtoMap.event(e))
                }
            } onCancelRPC: {
                cancel()
            }
            return [:]
        }
    }
}

/// `containarium.v1.NodeService`: a node's reports and its link (a control plane's listener only).
struct NodeServiceV1: Containarium_V1_NodeService.ServiceProtocol {
    let auth: GRPCAuth
    let links: NodeLinks?
    var api: APIv1 { APIv1(plane: auth.plane) }

    func reportNode(request: ServerRequest<Containarium_V1_NodeReport>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_NodeReportReply> {
        await auth.unary("ReportNode", request, context) { (who, m) async throws(ContainariumError) -> Containarium_V1_NodeReportReply in
            var reply = try await api.reportNode(who, m)
            if let renewed = try await renewal(who) { reply.renewedToken = renewed }
            return reply
        }
    }

    /// A node token past half its life is replaced by one with the same lifetime, so a node
    /// that keeps reporting never runs out; one that stops (or is removed) does.
    func renewal(_ who: Caller, now: Date = Date()) async throws(ContainariumError) -> String? {
        guard who.role == .node, !who.byCertificate, let issued = who.issuedAt, let expires = who.expiresAt else { return nil }
        let lifetime = expires.timeIntervalSince(issued)
        guard lifetime > 0, expires.timeIntervalSince(now) < lifetime / 2, await auth.plane.mayRenew(who) else { return nil }
        let renewed = try await auth.tokens.generate(username: who.subject, roles: [.node], expiresIn: lifetime, now: Date())
        // A removal between the check and the mint would not revoke the new token (issued after
        // it): asked again now, a removal since is seen and the token is dropped; a removal after
        // this check is later than the token's issue time, so it revokes the token too.
        guard await auth.plane.mayRenew(who) else { return nil }
        return renewed
    }

    func link(request: StreamingServerRequest<Containarium_V1_LinkFrame>, context: ServerContext) async throws
        -> StreamingServerResponse<Containarium_V1_LinkFrame>
    {
        let node = request.metadata[stringValues: LinkFrame.nodeKey].first { _ in true } ?? ""
        let links: NodeLinks
        do throws(ContainariumError) {
            let who = try await auth.authenticate(request.metadata, context, "NodeLink")
            try await auth.plane.linkNode(who, node: node)
            guard let l = self.links else { throw ContainariumError(.failedPrecondition, "this daemon is not a control plane") }
            links = l
        } catch {
            return StreamingServerResponse(error: RPCError(containarium: error))
        }
        return StreamingServerResponse { writer in
            try await links.serve(node: node, inbound: request.messages, writer: writer)
            return [:]
        }
    }
}

/// `containarium.v1.AuditService`.
struct AuditServiceV1: Containarium_V1_AuditService.ServiceProtocol {
    let auth: GRPCAuth
    var api: APIv1 { APIv1(plane: auth.plane) }

    func listAudit(request: ServerRequest<Containarium_V1_ListAuditRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListAuditResponse> {
        await auth.unary("ListAudit", request, context, api.listAudit)
    }
}

/// `containarium.v1.OperationService`.
struct OperationServiceV1: Containarium_V1_OperationService.ServiceProtocol {
    let auth: GRPCAuth
    var api: APIv1 { APIv1(plane: auth.plane) }

    func getOperation(request: ServerRequest<Containarium_V1_GetOperationRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Operation> {
        await auth.unary("GetOperation", request, context, api.getOperation)
    }
}

/// `containarium.v1.SystemService`.
struct SystemServiceV1: Containarium_V1_SystemService.ServiceProtocol {
    let auth: GRPCAuth
    var api: APIv1 { APIv1(plane: auth.plane) }

    func getSystemInfo(request: ServerRequest<Containarium_V1_GetSystemInfoRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_SystemInfo> {
        await auth.unary("GetSystemInfo", request, context, api.getSystemInfo)
    }

    func listPlugins(request: ServerRequest<Containarium_V1_ListPluginsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListPluginsResponse> {
        await auth.unary("ListPlugins", request, context, api.listPlugins)
    }

    func setPluginEnabled(request: ServerRequest<Containarium_V1_SetPluginEnabledRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_SetPluginEnabledResponse> {
        await auth.unary("SetPluginEnabled", request, context, api.setPluginEnabled)
    }

    func listStacks(request: ServerRequest<Containarium_V1_ListStacksRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListStacksResponse> {
        await auth.unary("ListStacks", request, context, api.listStacks)
    }

    func getCapacity(request: ServerRequest<Containarium_V1_GetCapacityRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Capacity> {
        await auth.unary("GetCapacity", request, context, api.getCapacity)
    }

    func revokeCredentials(request: ServerRequest<Containarium_V1_RevokeCredentialsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Revocation> {
        await auth.unary("RevokeCredentials", request, context, api.revokeCredentials)
    }

    func listRevocations(request: ServerRequest<Containarium_V1_ListRevocationsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListRevocationsResponse> {
        await auth.unary("ListRevocations", request, context, api.listRevocations)
    }

    func listGatewayBans(request: ServerRequest<Containarium_V1_ListGatewayBansRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListGatewayBansResponse> {
        await auth.unary("ListGatewayBans", request, context, api.listGatewayBans)
    }

    func liftGatewayBan(request: ServerRequest<Containarium_V1_LiftGatewayBanRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_LiftGatewayBanResponse> {
        await auth.unary("LiftGatewayBan", request, context, api.liftGatewayBan)
    }

    func getCatalog(request: ServerRequest<Containarium_V1_GetCatalogRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Catalog> {
        await auth.unary("GetCatalog", request, context, api.getCatalog)
    }

    func listBackends(request: ServerRequest<Containarium_V1_ListBackendsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListBackendsResponse> {
        await auth.unary("ListBackends", request, context, api.listBackends)
    }

    func getNodeMetrics(request: ServerRequest<Containarium_V1_GetNodeMetricsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_NodeMetrics> {
        await auth.unary("GetNodeMetrics", request, context, api.getNodeMetrics)
    }
}

/// `containarium.v1.ClusterService`.
struct ClusterServiceV1: Containarium_V1_ClusterService.ServiceProtocol {
    let auth: GRPCAuth
    var api: APIv1 { APIv1(plane: auth.plane) }

    func listNodes(request: ServerRequest<Containarium_V1_ListNodesRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListNodesResponse> {
        await auth.unary("ListNodes", request, context, api.listNodes)
    }

    func drainNode(request: ServerRequest<Containarium_V1_DrainNodeRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Node> {
        await auth.unary("DrainNode", request, context, api.drainNode)
    }

    func undrainNode(request: ServerRequest<Containarium_V1_UndrainNodeRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Node> {
        await auth.unary("UndrainNode", request, context, api.undrainNode)
    }

    func removeNode(request: ServerRequest<Containarium_V1_RemoveNodeRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_RemoveNodeResponse> {
        await auth.unary("RemoveNode", request, context, api.removeNode)
    }

    func explainSchedule(request: ServerRequest<Containarium_V1_ExplainScheduleRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ScheduleExplanation> {
        await auth.unary("ExplainSchedule", request, context, api.explainSchedule)
    }
}

/// Run `body` in a task of its own that a cancelled RPC (the client went away) cancels: gRPC
/// says so through its handler, not by cancelling the handler's task.
func cancellingWithRPC<T: Sendable>(_ body: @escaping @Sendable () async throws(ContainariumError) -> T) async throws(ContainariumError) -> T {
    let work = Task { () async -> Result<T, ContainariumError> in
        do throws(ContainariumError) { return .success(try await body()) } catch { return .failure(error) }
    }
    return try await withTaskCancellationHandler {
        await withRPCCancellationHandler { await work.value } onCancelRPC: { work.cancel() }
    } onCancel: { work.cancel() }.get()
}
