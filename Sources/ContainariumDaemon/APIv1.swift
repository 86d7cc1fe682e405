import ContainariumCore
import ContainariumPlatform
import ContainariumProto
import ContainariumScheduler
import ContainariumService
import ContainariumStore
import Foundation
import SwiftProtobuf

/// `containarium.v1` as one set of functions from request message to response message: the
/// protobuf gRPC services and the REST routes both call these, so a request means the same
/// through either, is checked by the same code and fails with the same error. Authorization
/// and audit are the control plane's; this only translates.
struct APIv1: Sendable {
    let plane: ControlPlane

    // MARK: - ContainerService

    func createContainer(_ who: Caller, _ m: Containarium_V1_CreateContainerRequest) async throws(ContainariumError) -> Containarium_V1_CreateContainerResponse {
        let create = try ProtoMap.create(m)
        let plane = self.plane
        let outcome = try await cancellingWithRPC { () async throws(ContainariumError) in try await plane.createContainer(who, create, async: m.async) }
        return switch outcome {
        case .done(let view): .with { $0.container = ProtoMap.container(view) }
        case .started(let op): .with { $0.operation = ProtoMap.operation(op) }
        }
    }

    func listContainers(_ who: Caller, _: Containarium_V1_ListContainersRequest) async throws(ContainariumError) -> Containarium_V1_ListContainersResponse {
        let list = try await plane.listContainers(who)
        return .with {
            $0.containers = list.map(ProtoMap.container)
            $0.totalCount = UInt32(clamping: list.count)
        }
    }

    func getContainer(_ who: Caller, _ m: Containarium_V1_GetContainerRequest) async throws(ContainariumError) -> Containarium_V1_Container {
        ProtoMap.container(try await plane.getContainer(who, m.username))
    }

    func deleteContainer(_ who: Caller, _ m: Containarium_V1_DeleteContainerRequest) async throws(ContainariumError) -> Containarium_V1_DeleteContainerResponse {
        try await plane.deleteContainer(who, m.username, force: m.hasForce ? m.force : true)
        return .with { $0.message = "deleted \(m.username)'s environment" }
    }

    func startContainer(_ who: Caller, _ m: Containarium_V1_StartContainerRequest) async throws(ContainariumError) -> Containarium_V1_Container {
        ProtoMap.container(try await plane.power(who, m.username, .start))
    }

    func stopContainer(_ who: Caller, _ m: Containarium_V1_StopContainerRequest) async throws(ContainariumError) -> Containarium_V1_Container {
        ProtoMap.container(try await plane.power(who, m.username, .stop, force: m.force))
    }

    func restartContainer(_ who: Caller, _ m: Containarium_V1_RestartContainerRequest) async throws(ContainariumError) -> Containarium_V1_Container {
        ProtoMap.container(try await plane.power(who, m.username, .restart))
    }

    func resizeContainer(_ who: Caller, _ m: Containarium_V1_ResizeContainerRequest) async throws(ContainariumError) -> Containarium_V1_Container {
        let r = m.resources
        return ProtoMap.container(try await plane.resize(
            who, m.username, cpu: ProtoMap.nonEmpty(r.cpu), memory: ProtoMap.nonEmpty(r.memory), disk: ProtoMap.nonEmpty(r.disk)))
    }

    func exec(_ who: Caller, _ m: Containarium_V1_ExecRequest) async throws(ContainariumError) -> Containarium_V1_ExecResponse {
        ProtoMap.exec(try await plane.exec(who, m.username, command: m.command, asUser: m.asUser, account: ProtoMap.nonEmpty(m.account)))
    }

    func installStack(_ who: Caller, _ m: Containarium_V1_InstallStackRequest) async throws(ContainariumError) -> Containarium_V1_InstallStackResponse {
        guard !m.stack.isEmpty else { throw .invalid("missing field 'stack'") }
        let r = try await plane.installStack(who, m.username, stack: m.stack)
        return .with {
            $0.stack = m.stack
            $0.check = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    func cleanupDisk(_ who: Caller, _ m: Containarium_V1_CleanupDiskRequest) async throws(ContainariumError) -> Containarium_V1_CleanupDiskResponse {
        ProtoMap.cleanup(try await plane.cleanupDisk(who, m.username))
    }

    /// Through the SSH gateway (or the jump host given); with neither, a direct block for
    /// clients on the node's network.
    func exportSSHConfig(_ who: Caller, _ m: Containarium_V1_ExportSSHConfigRequest) async throws(ContainariumError) -> Containarium_V1_ExportSSHConfigResponse {
        // Checked first: the direct block below writes it too.
        if !m.keyPath.isEmpty { try SSHConfigExport.checkKeyPath(m.keyPath) }
        do throws(ContainariumError) {
            let text = try await plane.exportSSHConfig(who, m.username, jumpHost: ProtoMap.nonEmpty(m.jumpHost), keyPath: ProtoMap.nonEmpty(m.keyPath),
                                                       gatewayHost: ProtoMap.nonEmpty(m.gatewayHost))
            return .with { $0.config = text }
        } catch where error.code == .invalidArgument && m.jumpHost.isEmpty && m.gatewayHost.isEmpty {
            let v = try await plane.getContainer(who, m.username)
            guard let ip = v.network.ipAddress else { throw error }
            let key = ProtoMap.nonEmpty(m.keyPath) ?? "~/.ssh/id_ed25519_\(v.username)"
            return .with {
                $0.config = "# Direct: reachable from the node's network only (run the SSH gateway for remote access).\n" +
                    "Host \(v.username)-dev\n    HostName \(ip)\n    User \(v.username)\n    IdentityFile \(key)\n"
            }
        }
    }

    func getCredentials(_ who: Caller, _ m: Containarium_V1_GetCredentialsRequest) async throws(ContainariumError) -> Containarium_V1_Credentials {
        let c = try await plane.credentials(who, m.username)
        return .with {
            $0.username = m.username
            $0.account = c.username
            $0.password = c.password
            $0.protocol = c.protocol ?? ""
        }
    }

    func listSSHKeys(_ who: Caller, _ m: Containarium_V1_ListSSHKeysRequest) async throws(ContainariumError) -> Containarium_V1_ListSSHKeysResponse {
        let keys = try await plane.listKeys(who, m.username)
        return .with { $0.keys = keys.map(ProtoMap.key) }
    }

    func addSSHKey(_ who: Caller, _ m: Containarium_V1_AddSSHKeyRequest) async throws(ContainariumError) -> Containarium_V1_SSHKey {
        guard !m.sshPublicKey.isEmpty else { throw .invalid("missing field 'sshPublicKey'") }
        return ProtoMap.key(try await plane.addKey(who, m.username, publicKey: m.sshPublicKey))
    }

    func removeSSHKey(_ who: Caller, _ m: Containarium_V1_RemoveSSHKeyRequest) async throws(ContainariumError) -> Containarium_V1_RemoveSSHKeyResponse {
        guard !m.fingerprint.isEmpty else { throw .invalid("give the key's fingerprint (SHA256:...)") }
        try await plane.removeKey(who, m.username, fingerprint: m.fingerprint)
        return .with { $0.message = "removed \(m.fingerprint)" }
    }

    func listCollaborators(_ who: Caller, _ m: Containarium_V1_ListCollaboratorsRequest) async throws(ContainariumError) -> Containarium_V1_ListCollaboratorsResponse {
        let list = try await plane.listCollaborators(who, m.username)
        return .with { $0.collaborators = list.map(ProtoMap.collaborator) }
    }

    func addCollaborator(_ who: Caller, _ m: Containarium_V1_AddCollaboratorRequest) async throws(ContainariumError) -> Containarium_V1_Collaborator {
        guard !m.collaboratorUsername.isEmpty else { throw .invalid("missing field 'collaboratorUsername'") }
        return ProtoMap.collaborator(try await plane.addCollaborator(
            who, m.username, collaborator: m.collaboratorUsername, sshKey: ProtoMap.nonEmpty(m.sshPublicKey), sudo: m.sudo,
            containerRuntime: m.containerRuntime))
    }

    func removeCollaborator(_ who: Caller, _ m: Containarium_V1_RemoveCollaboratorRequest) async throws(ContainariumError) -> Containarium_V1_RemoveCollaboratorResponse {
        try await plane.removeCollaborator(who, m.username, collaborator: m.collaboratorUsername)
        return .with { $0.message = "removed \(m.collaboratorUsername)" }
    }

    func getMetricsHistory(_ who: Caller, _ m: Containarium_V1_GetMetricsHistoryRequest) async throws(ContainariumError) -> Containarium_V1_GetMetricsHistoryResponse {
        let samples = try await plane.metricsHistory(who, m.username)
        return .with { $0.samples = samples.map(ProtoMap.sample) }
    }

    func listContainerMetrics(_ who: Caller, _: Containarium_V1_ListContainerMetricsRequest) async throws(ContainariumError)
        -> Containarium_V1_ListContainerMetricsResponse
    {
        let list = try await plane.containerMetrics(who)
        return .with {
            $0.containers = list.map { c in
                .with {
                    $0.name = c.name
                    $0.username = c.username ?? ""
                    $0.state = ProtoMap.state(c.state)
                    if let p = c.cpuPercent { $0.cpuPercent = p }
                    $0.cpuUsageNanoseconds = c.cpuUsageNanoseconds ?? 0
                    $0.memoryUsageBytes = c.memoryUsageBytes ?? 0
                    $0.diskUsageBytes = c.diskUsageBytes ?? 0
                    $0.processes = UInt32(clamping: c.processes ?? 0)
                }
            }
        }
    }

    // MARK: - AuditService, OperationService

    func listAudit(_ who: Caller, _ m: Containarium_V1_ListAuditRequest) async throws(ContainariumError) -> Containarium_V1_ListAuditResponse {
        guard !m.hasLimit || (1...10_000).contains(m.limit) else { throw .invalid("limit must be between 1 and 10000") }
        let filter = AuditFilter(
            actor: ProtoMap.nonEmpty(m.actor), action: ProtoMap.nonEmpty(m.action), target: ProtoMap.nonEmpty(m.target),
            result: ProtoMap.nonEmpty(m.result), since: m.hasSince ? m.since.date : nil, until: m.hasUntil ? m.until.date : nil,
            limit: m.hasLimit ? Int(m.limit) : 100)
        let entries = try await plane.auditLog(who, filter)
        return .with { $0.entries = entries.map(ProtoMap.audit) }
    }

    func getOperation(_ who: Caller, _ m: Containarium_V1_GetOperationRequest) async throws(ContainariumError) -> Containarium_V1_Operation {
        ProtoMap.operation(try await plane.operation(who, m.id))
    }

    // MARK: - SystemService

    func getSystemInfo(_ who: Caller, _: Containarium_V1_GetSystemInfoRequest) async throws(ContainariumError) -> Containarium_V1_SystemInfo {
        let v = try await plane.systemInfo(who)
        return .with {
            $0.version = v.version
            $0.pluginAbi = v.pluginAbi
            $0.node = v.node
            $0.backend = v.backend
            $0.uptimeSeconds = v.uptimeSeconds
            $0.containersTotal = UInt32(clamping: v.containers.total)
            $0.containersRunning = UInt32(clamping: v.containers.running)
            $0.database = v.database
            $0.eventStream = v.eventStream
            if let c = v.capacity { $0.capacity = ProtoMap.capacity(c) }
        }
    }

    func listPlugins(_ who: Caller, _: Containarium_V1_ListPluginsRequest) async throws(ContainariumError) -> Containarium_V1_ListPluginsResponse {
        let plugins = await plane.plugins(who)
        return .with {
            $0.plugins = plugins.map { p in
                .with {
                    $0.id = p.id
                    $0.version = p.version ?? ""
                    $0.abi = p.abi ?? ""
                    $0.capabilities = p.capabilities
                    $0.enabled = p.enabled
                    $0.state = p.state
                    $0.kinds = p.kinds
                    $0.osTypes = p.osTypes
                    $0.health = p.health?.status ?? ""
                    $0.healthDetail = p.health?.detail ?? ""
                }
            }
        }
    }

    func setPluginEnabled(_ who: Caller, _ m: Containarium_V1_SetPluginEnabledRequest) async throws(ContainariumError) -> Containarium_V1_SetPluginEnabledResponse {
        guard m.hasEnabled else { throw .invalid("missing field 'enabled' (true or false)") }
        let t = try await plane.setPluginEnabled(who, m.id, enabled: m.enabled, force: m.force, on: ProtoMap.nonEmpty(m.node))
        return ProtoMap.pluginToggle(t)
    }

    func listStacks(_ who: Caller, _: Containarium_V1_ListStacksRequest) async throws(ContainariumError) -> Containarium_V1_ListStacksResponse {
        let catalog = plane.catalog(who)
        return .with { $0.stacks = catalog.stacks.map(ProtoMap.stack) }
    }

    func getCapacity(_ who: Caller, _: Containarium_V1_GetCapacityRequest) async throws(ContainariumError) -> Containarium_V1_Capacity {
        ProtoMap.capacity(try await plane.capacity(who))
    }

    static func revocation(_ e: Revocations.Entry) -> Containarium_V1_Revocation {
        .with {
            $0.subject = e.subject ?? ""
            $0.certificateSerial = e.certificateSerial ?? ""
            $0.revokedAt = Google_Protobuf_Timestamp(date: e.revokedAt)
        }
    }

    func revokeCredentials(_ who: Caller, _ m: Containarium_V1_RevokeCredentialsRequest) async throws(ContainariumError) -> Containarium_V1_Revocation {
        Self.revocation(try await plane.revokeCredentials(who, subject: ProtoMap.nonEmpty(m.subject), certificateSerial: ProtoMap.nonEmpty(m.certificateSerial)))
    }

    func listRevocations(_ who: Caller, _: Containarium_V1_ListRevocationsRequest) async throws(ContainariumError) -> Containarium_V1_ListRevocationsResponse {
        let all = try await plane.listRevocations(who)
        return .with { $0.revocations = all.map(Self.revocation) }
    }

    func listGatewayBans(_ who: Caller, _: Containarium_V1_ListGatewayBansRequest) async throws(ContainariumError) -> Containarium_V1_ListGatewayBansResponse {
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

    func liftGatewayBan(_ who: Caller, _ m: Containarium_V1_LiftGatewayBanRequest) async throws(ContainariumError) -> Containarium_V1_LiftGatewayBanResponse {
        try await plane.liftGatewayBan(who, address: m.address)
        return .with { $0.message = "lifted the ban on \(m.address)" }
    }

    func getCatalog(_ who: Caller, _: Containarium_V1_GetCatalogRequest) async throws(ContainariumError) -> Containarium_V1_Catalog {
        let c = plane.catalog(who)
        return .with {
            $0.osTypes = c.osTypes
            $0.defaultImage = c.defaultImage
            $0.stacks = c.stacks.map(ProtoMap.stack)
        }
    }

    func listBackends(_ who: Caller, _: Containarium_V1_ListBackendsRequest) async throws(ContainariumError) -> Containarium_V1_ListBackendsResponse {
        let v = try await plane.backendsView(who)
        return .with {
            $0.backends = v.backends.map { b in
                .with {
                    $0.id = b.id
                    $0.enabled = b.enabled
                    $0.state = b.state
                    $0.default = b.isDefault
                    $0.version = b.version ?? ""
                    $0.kinds = b.kinds
                    $0.osTypes = b.osTypes
                    $0.health = b.health?.status ?? ""
                    $0.healthDetail = b.health?.detail ?? ""
                }
            }
            $0.nodes = v.nodes.map(ProtoMap.node)
        }
    }

    func getNodeMetrics(_ who: Caller, _: Containarium_V1_GetNodeMetricsRequest) async throws(ContainariumError) -> Containarium_V1_NodeMetrics {
        let v = try await plane.nodeMetrics(who)
        return .with {
            $0.node = v.node
            if let c = v.capacity {
                $0.capacity = .with {
                    $0.cpus = UInt32(clamping: c.cpus)
                    $0.memoryBytes = c.memoryBytes
                    $0.diskBytes = c.diskBytes
                }
            }
            $0.samples = v.samples.map(ProtoMap.sample)
        }
    }

    // MARK: - ClusterService

    func listNodes(_ who: Caller, _: Containarium_V1_ListNodesRequest) async throws(ContainariumError) -> Containarium_V1_ListNodesResponse {
        let nodes = try plane.listNodes(who)
        return .with { $0.nodes = nodes.map(ProtoMap.node) }
    }

    func drainNode(_ who: Caller, _ m: Containarium_V1_DrainNodeRequest) async throws(ContainariumError) -> Containarium_V1_Node {
        ProtoMap.node(try await plane.drainNode(who, m.name, draining: true))
    }

    func undrainNode(_ who: Caller, _ m: Containarium_V1_UndrainNodeRequest) async throws(ContainariumError) -> Containarium_V1_Node {
        ProtoMap.node(try await plane.drainNode(who, m.name, draining: false))
    }

    func removeNode(_ who: Caller, _ m: Containarium_V1_RemoveNodeRequest) async throws(ContainariumError) -> Containarium_V1_RemoveNodeResponse {
        try await plane.removeNode(who, m.name, force: m.force)
        return .with { $0.message = "removed node \(m.name)" }
    }

    func explainSchedule(_ who: Caller, _ m: Containarium_V1_ExplainScheduleRequest) async throws(ContainariumError) -> Containarium_V1_ScheduleExplanation {
        guard m.gpus <= EnvironmentService.maximumGPUs else { throw .invalid("gpus must be between 0 and \(EnvironmentService.maximumGPUs), not \(m.gpus)") }
        var create = CreateEnvironmentRequest(
            username: "explain", sshKeys: [], image: ProtoMap.nonEmpty(m.image), osType: try ProtoMap.osType(m.osType, named: m.os),
            cpu: ProtoMap.nonEmpty(m.resources.cpu), memory: ProtoMap.nonEmpty(m.resources.memory), disk: ProtoMap.nonEmpty(m.resources.disk),
            labels: m.labels, gpus: m.gpus == 0 ? nil : Int(m.gpus), gpuModel: ProtoMap.nonEmpty(m.gpuModel), node: try ProtoMap.node(m.node))
        create.kind = ProtoMap.nonEmpty(m.kind)
        create.critical = m.critical
        let e = try await plane.explainPlacement(who, create)
        return .with {
            $0.chosen = e.chosen ?? ""
            $0.backend = e.backend ?? ""
            $0.request = .with {
                $0.kind = e.request.kind
                $0.resources = ProtoMap.resources(e.request.resources)
                $0.gpus = UInt32(clamping: e.request.gpus)
                $0.gpuModel = e.request.gpuModel ?? ""
                $0.labels = e.request.labels
                $0.node = e.request.node ?? ""
                $0.critical = e.request.critical
            }
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

    // MARK: - NodeService

    func reportNode(_ who: Caller, _ m: Containarium_V1_NodeReport) async throws(ContainariumError) -> Containarium_V1_NodeReportReply {
        let reply = try await plane.reportNode(who, try ProtoMap.nodeReport(m))
        return .with { $0.gatewayKeys = reply.gatewayKeys }
    }
}
