import ContainariumCore
import ContainariumPlatform
import ContainariumProto
import ContainariumScheduler
import ContainariumService
import ContainariumStore
import Foundation
import GRPCCore
import SwiftProtobuf

/// Who is calling, from a call's metadata and transport: one rule for every gRPC service.
struct GRPCAuth: Sendable {
    let plane: ControlPlane
    let tokens: Tokens
    let mtls: Bool
    /// The local API socket: a call without a token came from root on this machine (the CLI), or
    /// through this node's link from its control plane; nobody else can reach the socket.
    var nodeAPI = false

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
        if nodeAPI {
            // The node's link says so in metadata; the CLI does not. Both are root-only paths.
            if metadata[stringValues: LinkFrame.viaLinkKey].contains(where: { _ in true }) {
                return Caller(subject: "control-plane", role: .admin, source: "node-link", interface: "grpc")
            }
            return Caller(subject: "local-admin", role: .admin, source: "local", interface: "cli")
        }
        throw .unauthenticated("missing credentials: use mTLS client certificates or a bearer token")
    }

    /// The caller, or the refusal audited as `method`.
    func authenticate(_ metadata: Metadata, _ context: ServerContext, _ method: String) async throws(ContainariumError) -> Caller {
        do throws(ContainariumError) { return try await caller(metadata, context) } catch {
            await plane.auditAuthFailure(source: context.remotePeer, interface: "grpc", action: method, reason: error.message)
            throw error
        }
    }

    /// A unary call: authenticate, run, map the error once.
    func unary<I: Sendable, O: Sendable>(
        _ method: String, _ request: ServerRequest<I>, _ context: ServerContext,
        _ body: (Caller, I) async throws(ContainariumError) -> O
    ) async -> ServerResponse<O> {
        do throws(ContainariumError) {
            let who = try await authenticate(request.metadata, context, method)
            return ServerResponse(message: try await body(who, request.message))
        } catch {
            return ServerResponse(error: ContainariumRPC.rpcError(error))
        }
    }
}

/// `containarium.v1.ContainerService`: environments and what is inside them.
struct ContainerServiceV1: Containarium_V1_ContainerService.ServiceProtocol {
    let auth: GRPCAuth
    var plane: ControlPlane { auth.plane }

    func createContainer(request: ServerRequest<Containarium_V1_CreateContainerRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_CreateContainerResponse>
    {
        await auth.unary("CreateContainer", request, context) { who, m throws(ContainariumError) in
            let create = try ProtoMap.create(m)
            let outcome = try await cancellingWithRPC { () async throws(ContainariumError) in try await plane.createContainer(who, create, async: m.async) }
            return switch outcome {
            case .done(let view): .with { $0.container = ProtoMap.container(view) }
            case .started(let op): .with { $0.operation = ProtoMap.operation(op) }
            }
        }
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
            return StreamingServerResponse(error: ContainariumRPC.rpcError(error))
        }
        let plane = self.plane
        return StreamingServerResponse { writer in
            let (events, cancel) = plane.events.subscribe()
            let relay = Task {
                for await e in events where e.type == "operation.progress" && e.username == create.username {
                    let p = Containarium_V1_Progress.with {
                        $0.operationID = e.data["operationId"]?.stringValue ?? ""
                        $0.step = UInt32(clamping: Int(e.data["step"]?.number ?? 0))
                        $0.total = UInt32(clamping: Int(e.data["total"]?.number ?? 0))
                        $0.message = e.data["message"]?.stringValue ?? ""
                    }
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
                throw ContainariumRPC.rpcError(error)
            }
        }
    }

    func listContainers(request: ServerRequest<Containarium_V1_ListContainersRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ListContainersResponse>
    {
        await auth.unary("ListContainers", request, context) { who, _ throws(ContainariumError) in
            let list = try await plane.listContainers(who)
            return .with {
                $0.containers = list.map(ProtoMap.container)
                $0.totalCount = UInt32(clamping: list.count)
            }
        }
    }

    func getContainer(request: ServerRequest<Containarium_V1_GetContainerRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_Container>
    {
        await auth.unary("GetContainer", request, context) { who, m throws(ContainariumError) in ProtoMap.container(try await plane.getContainer(who, m.username)) }
    }

    func deleteContainer(request: ServerRequest<Containarium_V1_DeleteContainerRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_DeleteContainerResponse>
    {
        await auth.unary("DeleteContainer", request, context) { who, m throws(ContainariumError) in
            try await plane.deleteContainer(who, m.username, force: m.force)
            return .with { $0.message = "deleted \(m.username)-container" }
        }
    }

    func startContainer(request: ServerRequest<Containarium_V1_StartContainerRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_Container>
    {
        await auth.unary("StartContainer", request, context) { who, m throws(ContainariumError) in ProtoMap.container(try await plane.power(who, m.username, .start)) }
    }

    func stopContainer(request: ServerRequest<Containarium_V1_StopContainerRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_Container>
    {
        await auth.unary("StopContainer", request, context) { who, m throws(ContainariumError) in
            ProtoMap.container(try await plane.power(who, m.username, .stop, force: m.force))
        }
    }

    func restartContainer(request: ServerRequest<Containarium_V1_RestartContainerRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_Container>
    {
        await auth.unary("RestartContainer", request, context) { who, m throws(ContainariumError) in ProtoMap.container(try await plane.power(who, m.username, .restart)) }
    }

    func resizeContainer(request: ServerRequest<Containarium_V1_ResizeContainerRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_Container>
    {
        await auth.unary("ResizeContainer", request, context) { who, m throws(ContainariumError) in
            let r = m.resources
            return ProtoMap.container(try await plane.resize(
                who, m.username, cpu: ProtoMap.nonEmpty(r.cpu), memory: ProtoMap.nonEmpty(r.memory), disk: ProtoMap.nonEmpty(r.disk)))
        }
    }

    func exec(request: ServerRequest<Containarium_V1_ExecRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ExecResponse> {
        await auth.unary("Exec", request, context) { who, m throws(ContainariumError) in
            ProtoMap.exec(try await plane.exec(who, m.username, command: m.command, asUser: m.asUser))
        }
    }

    func installStack(request: ServerRequest<Containarium_V1_InstallStackRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_InstallStackResponse>
    {
        await auth.unary("InstallStack", request, context) { who, m throws(ContainariumError) in
            let r = try await plane.installStack(who, m.username, stack: m.stack)
            return .with {
                $0.stack = m.stack
                $0.check = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
    }

    func cleanupDisk(request: ServerRequest<Containarium_V1_CleanupDiskRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_CleanupDiskResponse>
    {
        await auth.unary("CleanupDisk", request, context) { who, m throws(ContainariumError) in ProtoMap.cleanup(try await plane.cleanupDisk(who, m.username)) }
    }

    func exportSSHConfig(request: ServerRequest<Containarium_V1_ExportSSHConfigRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ExportSSHConfigResponse>
    {
        await auth.unary("ExportSSHConfig", request, context) { who, m throws(ContainariumError) in
            let text = try await plane.exportSSHConfig(who, m.username, jumpHost: ProtoMap.nonEmpty(m.jumpHost), keyPath: ProtoMap.nonEmpty(m.keyPath),
                                                       gatewayHost: ProtoMap.nonEmpty(m.gatewayHost))
            return .with { $0.config = text }
        }
    }

    func listSSHKeys(request: ServerRequest<Containarium_V1_ListSSHKeysRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ListSSHKeysResponse>
    {
        await auth.unary("ListSSHKeys", request, context) { who, m throws(ContainariumError) in
            let keys = try await plane.listKeys(who, m.username)
            return .with { $0.keys = keys.map(ProtoMap.key) }
        }
    }

    func addSSHKey(request: ServerRequest<Containarium_V1_AddSSHKeyRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_SSHKey> {
        await auth.unary("AddSSHKey", request, context) { who, m throws(ContainariumError) in
            ProtoMap.key(try await plane.addKey(who, m.username, publicKey: m.publicKey))
        }
    }

    func removeSSHKey(request: ServerRequest<Containarium_V1_RemoveSSHKeyRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_RemoveSSHKeyResponse>
    {
        await auth.unary("RemoveSSHKey", request, context) { who, m throws(ContainariumError) in
            try await plane.removeKey(who, m.username, fingerprint: m.fingerprint)
            return .with { $0.message = "removed \(m.fingerprint)" }
        }
    }

    func listCollaborators(request: ServerRequest<Containarium_V1_ListCollaboratorsRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ListCollaboratorsResponse>
    {
        await auth.unary("ListCollaborators", request, context) { who, m throws(ContainariumError) in
            let list = try await plane.listCollaborators(who, m.username)
            return .with { $0.collaborators = list.map(ProtoMap.collaborator) }
        }
    }

    func addCollaborator(request: ServerRequest<Containarium_V1_AddCollaboratorRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_Collaborator>
    {
        await auth.unary("AddCollaborator", request, context) { who, m throws(ContainariumError) in
            ProtoMap.collaborator(try await plane.addCollaborator(
                who, m.username, collaborator: m.collaboratorUsername, sshKey: ProtoMap.nonEmpty(m.sshPublicKey), sudo: m.sudo,
                containerRuntime: m.containerRuntime))
        }
    }

    func removeCollaborator(request: ServerRequest<Containarium_V1_RemoveCollaboratorRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_RemoveCollaboratorResponse>
    {
        await auth.unary("RemoveCollaborator", request, context) { who, m throws(ContainariumError) in
            try await plane.removeCollaborator(who, m.username, collaborator: m.collaboratorUsername)
            return .with { $0.message = "removed \(m.collaboratorUsername)" }
        }
    }

    func getMetricsHistory(request: ServerRequest<Containarium_V1_GetMetricsHistoryRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_GetMetricsHistoryResponse>
    {
        await auth.unary("GetMetricsHistory", request, context) { who, m throws(ContainariumError) in
            let samples = try await plane.metricsHistory(who, m.username)
            return .with { $0.samples = samples.map(ProtoMap.sample) }
        }
    }
}

/// `containarium.v1.AuditService`.
struct AuditServiceV1: Containarium_V1_AuditService.ServiceProtocol {
    let auth: GRPCAuth

    func listAudit(request: ServerRequest<Containarium_V1_ListAuditRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ListAuditResponse>
    {
        await auth.unary("ListAudit", request, context) { who, m throws(ContainariumError) in
            guard m.limit <= 10_000 else { throw .invalid("limit must be between 1 and 10000") }
            let filter = AuditFilter(
                actor: ProtoMap.nonEmpty(m.actor), action: ProtoMap.nonEmpty(m.action), target: ProtoMap.nonEmpty(m.target),
                result: ProtoMap.nonEmpty(m.result), since: m.hasSince ? m.since.date : nil, until: m.hasUntil ? m.until.date : nil,
                limit: m.limit == 0 ? 100 : Int(m.limit))
            let entries = try await auth.plane.auditLog(who, filter)
            return .with { $0.entries = entries.map(ProtoMap.audit) }
        }
    }
}

/// `containarium.v1.OperationService`.
struct OperationServiceV1: Containarium_V1_OperationService.ServiceProtocol {
    let auth: GRPCAuth

    func getOperation(request: ServerRequest<Containarium_V1_GetOperationRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_Operation>
    {
        await auth.unary("GetOperation", request, context) { who, m throws(ContainariumError) in ProtoMap.operation(try await auth.plane.operation(who, m.id)) }
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

/// `containarium.v1.SystemService`.
struct SystemServiceV1: Containarium_V1_SystemService.ServiceProtocol {
    let auth: GRPCAuth
    var plane: ControlPlane { auth.plane }

    func getSystemInfo(request: ServerRequest<Containarium_V1_GetSystemInfoRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_SystemInfo>
    {
        await auth.unary("GetSystemInfo", request, context) { who, _ throws(ContainariumError) in
            let v = try await plane.systemInfo(who)
            return .with {
                $0.version = v["version"]?.stringValue ?? ""
                $0.pluginAbi = v["pluginAbi"]?.stringValue ?? ""
                $0.node = v["node"]?.stringValue ?? ""
                $0.backend = v["backend"]?.stringValue ?? ""
                $0.uptimeSeconds = v["uptimeSeconds"]?.number ?? 0
                $0.containersTotal = UInt32(clamping: Int(v["containers"]?["total"]?.number ?? 0))
                $0.containersRunning = UInt32(clamping: Int(v["containers"]?["running"]?.number ?? 0))
                $0.database = v["database"]?.stringValue ?? ""
            }
        }
    }

    func listPlugins(request: ServerRequest<Containarium_V1_ListPluginsRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ListPluginsResponse>
    {
        await auth.unary("ListPlugins", request, context) { who, _ throws(ContainariumError) in
            let plugins = await plane.plugins(who)
            return .with {
                $0.plugins = plugins.map { p in
                    .with {
                        $0.id = p["id"]?.stringValue ?? ""
                        $0.version = p["version"]?.stringValue ?? ""
                        $0.abi = p["abi"]?.stringValue ?? ""
                        $0.capabilities = p["capabilities"]?.items?.compactMap(\.stringValue) ?? []
                        $0.enabled = p["enabled"]?.bool ?? false
                        $0.state = p["state"]?.stringValue ?? ""
                        $0.health = p["health"]?["status"]?.stringValue ?? ""
                    }
                }
            }
        }
    }

    func setPluginEnabled(request: ServerRequest<Containarium_V1_SetPluginEnabledRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_SetPluginEnabledResponse>
    {
        await auth.unary("SetPluginEnabled", request, context) { who, m throws(ContainariumError) in
            guard m.hasEnabled else { throw .invalid("missing field 'enabled' (true or false)") }
            let v = try await plane.setPluginEnabled(who, m.id, enabled: m.enabled, force: m.force, on: ProtoMap.nonEmpty(m.node))
            return .with {
                $0.message = v["message"]?.stringValue ?? ""
                $0.restartRequired = v["restartRequired"]?.bool ?? false
            }
        }
    }

    func listStacks(request: ServerRequest<Containarium_V1_ListStacksRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ListStacksResponse>
    {
        await auth.unary("ListStacks", request, context) { _, _ throws(ContainariumError) in
            let stacks = plane.service.stacks.stacks.values.sorted { $0.name < $1.name }
            return .with {
                $0.stacks = stacks.map { s in
                    .with {
                        $0.name = s.name
                        $0.description_p = s.description
                    }
                }
            }
        }
    }

    func getCapacity(request: ServerRequest<Containarium_V1_GetCapacityRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_Capacity>
    {
        await auth.unary("GetCapacity", request, context) { who, _ throws(ContainariumError) in
            let c = try await plane.capacity(who)
            return .with {
                $0.node = c.node
                $0.cpus = UInt32(clamping: c.cpus)
                $0.memoryTotalBytes = c.memoryTotalBytes
                $0.memoryUsedBytes = c.memoryUsedBytes
                $0.diskTotalBytes = c.diskTotalBytes
                $0.diskUsedBytes = c.diskUsedBytes
                $0.instances = UInt32(clamping: c.instances)
                $0.runningInstances = UInt32(clamping: c.runningInstances)
                $0.backendVersion = c.backendVersion ?? ""
            }
        }
    }

    func listGatewayBans(request: ServerRequest<Containarium_V1_ListGatewayBansRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ListGatewayBansResponse>
    {
        await auth.unary("ListGatewayBans", request, context) { who, _ throws(ContainariumError) in
            let bans = try await plane.gatewayBans(who)
            return .with {
                $0.bans = bans.map { b in
                    .with {
                        $0.address = b.address
                        $0.bannedAt = Google_Protobuf_Timestamp(date: b.bannedAt)
                        $0.until = Google_Protobuf_Timestamp(date: b.until)
                        $0.failures = UInt32(clamping: b.failures)
                    }
                }
            }
        }
    }

    func liftGatewayBan(request: ServerRequest<Containarium_V1_LiftGatewayBanRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_LiftGatewayBanResponse>
    {
        await auth.unary("LiftGatewayBan", request, context) { who, m throws(ContainariumError) in
            try await plane.liftGatewayBan(who, address: m.address)
            return .with { $0.message = "lifted the ban on \(m.address)" }
        }
    }
}

/// `containarium.v1.ClusterService`.
struct ClusterServiceV1: Containarium_V1_ClusterService.ServiceProtocol {
    let auth: GRPCAuth
    var plane: ControlPlane { auth.plane }

    static func node(_ n: NodeView) -> Containarium_V1_Node {
        func resources(_ r: Resources) -> Containarium_V1_NodeResources {
            .with {
                $0.cpuMillis = UInt64(clamping: r.cpuMillis)
                $0.memoryBytes = UInt64(clamping: r.memoryBytes)
                $0.diskBytes = UInt64(clamping: r.diskBytes)
            }
        }
        return .with {
            $0.name = n.name
            $0.address = n.address ?? ""
            $0.local = n.local
            $0.healthy = n.healthy
            $0.draining = n.draining
            if let t = ProtoMap.timestamp(n.lastSeen) { $0.lastSeen = t }
            $0.kinds = n.kinds
            $0.capacity = resources(n.capacity)
            $0.used = resources(n.used)
            $0.gpus = n.gpus.map { g in
                .with {
                    $0.pciAddress = g.pciAddress
                    $0.model = g.model
                    $0.attachedTo = g.attachedTo ?? ""
                }
            }
            $0.labels = n.labels
            $0.pool = n.pool ?? ""
            $0.preemptible = n.preemptible
            $0.environments = UInt32(clamping: n.environments)
            $0.sshGateway = n.sshGateway ?? ""
        }
    }

    func listNodes(request: ServerRequest<Containarium_V1_ListNodesRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ListNodesResponse>
    {
        await auth.unary("ListNodes", request, context) { who, _ throws(ContainariumError) in
            let nodes = try plane.listNodes(who)
            return .with { $0.nodes = nodes.map(Self.node) }
        }
    }

    func drainNode(request: ServerRequest<Containarium_V1_DrainNodeRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Node> {
        await auth.unary("DrainNode", request, context) { who, m throws(ContainariumError) in Self.node(try await plane.drainNode(who, m.name, draining: true)) }
    }

    func undrainNode(request: ServerRequest<Containarium_V1_UndrainNodeRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_Node> {
        await auth.unary("UndrainNode", request, context) { who, m throws(ContainariumError) in Self.node(try await plane.drainNode(who, m.name, draining: false)) }
    }

    func removeNode(request: ServerRequest<Containarium_V1_RemoveNodeRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_RemoveNodeResponse>
    {
        await auth.unary("RemoveNode", request, context) { who, m throws(ContainariumError) in
            try await plane.removeNode(who, m.name, force: m.force)
            return .with { $0.message = "removed node \(m.name)" }
        }
    }

    func explainSchedule(request: ServerRequest<Containarium_V1_ExplainScheduleRequest>, context: ServerContext) async throws
        -> ServerResponse<Containarium_V1_ScheduleExplanation>
    {
        await auth.unary("ExplainSchedule", request, context) { who, m throws(ContainariumError) in
            var create = CreateEnvironmentRequest(
                username: "explain", sshKeys: [], image: ProtoMap.nonEmpty(m.image), osType: try ProtoMap.osType(m.osType),
                cpu: ProtoMap.nonEmpty(m.resources.cpu), memory: ProtoMap.nonEmpty(m.resources.memory), disk: ProtoMap.nonEmpty(m.resources.disk),
                labels: m.labels, gpus: m.gpus == 0 ? nil : Int(m.gpus), gpuModel: ProtoMap.nonEmpty(m.gpuModel), node: ProtoMap.nonEmpty(m.node))
            create.kind = ProtoMap.nonEmpty(m.kind)
            let e = try await plane.explainPlacement(who, create)
            return .with {
                $0.chosen = e.chosen ?? ""
                $0.backend = e.backend ?? ""
                $0.verdicts = e.verdicts.map { v in
                    .with {
                        $0.node = v.node
                        $0.filteredBecause = v.filteredBecause.map(\.description)
                        $0.score = v.score ?? 0
                        $0.scoreParts = v.scoreParts
                    }
                }
            }
        }
    }
}
