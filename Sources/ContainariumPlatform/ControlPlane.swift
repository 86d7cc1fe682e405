public import ContainariumCore
public import ContainariumService
public import ContainariumStore
public import Foundation
public import Logging
public import ContainariumScheduler
public import ContainariumGateway
public import ContainariumTelemetry
import PluginHost
import Synchronization

/// The daemon's service layer. Every interface (REST, gRPC, CLI remote mode) calls these
/// methods with an authenticated `Caller`; this is where authorization, the audit log, the
/// store and operations are handled, once.
public final class ControlPlane: Sendable {
    public let service: EnvironmentService
    public let store: Store
    public let inventory: Inventory
    public let events: DaemonEvents
    public let logger: Logger
    /// The GPU inventory's last failure, logged once per distinct message.
    let gpuReportError = Mutex<String?>(nil)
    /// Bounds the audit rows unauthenticated refusals can write.
    public let auditLimiter = AuditLimiter()
    /// Revoked tokens (by subject) and client certificates (by serial).
    public let revocations: Revocations
    /// Bounds the commands running at once (per environment and on this node).
    public let execSlots: ExecSlots
    /// Scans at once, per node (`security.parallel`).
    let scanSlotsByNode = Mutex<[String: AsyncSlots]>([:])
    /// What this node's node.lifecycle/1 plugin last announced (Lifecycle.swift).
    let preemptionNotice = Mutex<String?>(nil)
    /// Scans queued or running, by scanner and environment: a second ask joins the first.
    let scansInFlight = Mutex<[String: Task<ScanRecord, Never>]>([:])
    public let node: String
    /// This daemon instance: node, pid and start time.
    public let daemonID: String
    public let startedAt = Date()
    private let running = Mutex<[String: Task<Void, Never>]>([:])
    /// How to cancel the backend's part of a running create, by operation id.
    private let createCancels = CancelHooks()
    /// Usage over the last hour, per environment of this node (dashboard charts).
    public let metrics = MetricsHistory()
    /// What opens browser terminals: the gateway's upstream login and its routes.
    let terminalHost = Mutex<(gateway: SSHGateway, directory: ControlPlaneGatewayDirectory)?>(nil)
    public func setTerminalHost(_ gateway: SSHGateway, _ directory: ControlPlaneGatewayDirectory) { terminalHost.withLock { $0 = (gateway, directory) } }
    private let accessChanges = Mutex<[@Sendable (String) -> Void]>([])

    /// Scheduler, operation, reconciler and scan metrics, and the snapshot families of /metrics.
    public let platformMetrics: PlatformMetrics
    /// Built-in alert rules, their evaluation and notifications (Alerting.swift).
    public let alerting: Alerting

    public init(service: EnvironmentService, store: Store, inventory: Inventory, events: DaemonEvents, logger: Logger,
                execSlots: ExecSlots = ExecSlots(), telemetry: Telemetry? = nil) {
        self.platformMetrics = PlatformMetrics(telemetry)
        self.execSlots = execSlots
        self.revocations = Revocations(store: store)
        self.service = service
        self.store = store
        self.inventory = inventory
        self.events = events
        self.logger = logger
        self.node = service.config.nodeName
        self.daemonID = "\(service.config.nodeName)/\(getpid())/\(Int(Date().timeIntervalSince1970))"
        self.alerting = Alerting(store: store, events: events, metrics: platformMetrics, source: "containarium daemon on \(service.config.nodeName)")
        platformMetrics.installCollectors(self)
    }

    /// This node's default instance backend (the config's `backend`, else the first ready one).
    var backendID: String { (try? service.plugins.instances(backend: service.config.backend).backendID) ?? service.config.backend ?? "none" }

    /// The CPU over-commit ratio the scheduler places with; single-node checks use the same.
    var cpuOvercommit: Double { cluster?.scheduler.policy.cpuOvercommit ?? service.config.cpuOvercommit ?? EnvironmentService.defaultCPUOvercommit }

    /// A record whose environment is gone from this node's backend (removed behind the daemon's
    /// back, e.g. by `containarium delete` without a daemon, or by hand): drop it now rather
    /// than at the next reconcile, so a create of the same user is not refused meanwhile.
    /// Records of creates in flight, of other nodes, or that the backend cannot answer for stay.
    func dropIfVanished(_ user: Username) async throws(ContainariumError) {
        guard let record = try await store.container(user.value), record.node == node, record.phase != .creating, record.phase != .deleting else { return }
        do throws(ContainariumError) {
            _ = try await service.info(username: user.value)
        } catch where error.code == .notFound {
            logger.info("dropping the record of an environment removed outside the daemon", metadata: ["user": "\(user)"])
            _ = try await store.deleteContainer(user.value)
            inventory.remove(user.containerName)
            await cluster?.release(user.containerName)
            changed(user.value)
        }
    }

    // MARK: - audit

    public func audit(_ caller: Caller, _ action: String, target: String, result: Result<Void, ContainariumError>, detail: String = "") async {
        let outcome: String
        switch result {
        case .success: outcome = "ok"
        case .failure(let e): outcome = e.code.rawValue
        }
        let entry = AuditEntry(actor: caller.subject, role: caller.role.rawValue, action: action, target: target, source: caller.source,
                               interface: caller.interface, result: outcome, detail: detail)
        await record(entry)
        events.publish("audit", username: Username(containerName: target + "-container") != nil ? target : nil,
                       data: .audit(action: action, actor: caller.subject, result: outcome))
    }

    /// An entry from an adapter that has its own notion of the caller (the SSH gateway). With
    /// `beforeLogin` (a connection, a refused key: nobody is accountable yet) it shares the
    /// address's budget of such rows (`auditLimiter`); what a logged-in user did is always written.
    public func audit(actor: String, role: String, action: String, target: String, source: String, interface: String, result: String, detail: String,
                      beforeLogin: Bool = false) async {
        if beforeLogin, action != "gateway.ban", !(await admitRefusal(source: source, interface: interface)) { return }
        let entry = AuditEntry(actor: actor, role: role, action: action, target: target, source: source, interface: interface, result: result, detail: detail)
        await record(entry)
        events.publish("audit", username: Username(containerName: target + "-container") != nil ? target : nil,
                       data: .audit(action: action, actor: actor, result: result))
    }

    /// Write an audit entry even when the caller's task was cancelled (the caller went away):
    /// the write runs in a task of its own, which does not inherit the cancellation.
    private func record(_ entry: AuditEntry) async {
        let (store, logger) = (store, logger)
        await Task {
            do { try await store.appendAudit(entry) } catch { logger.error("could not write the audit log: \(error)") }
        }.value
    }

    /// Whether an entry without a login (a refusal, a gateway connection) from `source` is
    /// written (`auditLimiter`); writes the count of those dropped in the address's last window first.
    func admitRefusal(source: String, interface: String) async -> Bool {
        switch auditLimiter.admit(source: source) {
        case .drop:
            return false
        case .write(let dropped):
            if dropped > 0 {
                let entry = AuditEntry(actor: "anonymous", role: "user", action: "auth.failure.suppressed", target: AuditLimiter.address(of: source),
                                       source: source, interface: interface, result: "resource_exhausted",
                                       detail: "\(dropped) more entries without a login (refusals, connections) from \(AuditLimiter.address(of: source)) were not written (over \(auditLimiter.perWindow) in \(Int(auditLimiter.window)) s)")
                await record(entry)
            }
            return true
        }
    }

    /// Record a rejected credential. Never records the credential itself. Rate-limited per
    /// address: a flood of bad credentials costs a bounded number of rows.
    public func auditAuthFailure(source: String, interface: String, action: String, reason: String) async {
        guard await admitRefusal(source: source, interface: interface) else { return }
        let anonymous = Caller(subject: "anonymous", role: .user, source: source, interface: interface)
        await audit(anonymous, "auth.failure", target: action, result: .failure(.unauthenticated(reason)), detail: reason)
    }

    /// Run a mutating action with its audit entry, whatever its outcome.
    func audited<T: Sendable>(_ caller: Caller, _ action: String, _ target: String, detail: String = "",
                              _ body: () async throws(ContainariumError) -> T) async throws(ContainariumError) -> T {
        do {
            let value = try await body()
            await audit(caller, action, target: target, result: .success(()), detail: detail)
            return value
        } catch {
            await audit(caller, action, target: target, result: .failure(error), detail: detail.isEmpty ? error.message : detail + ": " + error.message)
            throw error
        }
    }

    // MARK: - authorization

    public enum Access: Sendable { case read, act, own }

    /// The owner of an environment: the store's record, else the backend's owner label.
    func owner(of user: Username) async throws(ContainariumError) -> String? {
        if let r = try await store.container(user.value) { return r.owner }
        return inventory.get(user.containerName)?.labels["owner"]
    }

    /// Check that `caller` may touch `username`'s environment. Owners may do everything;
    /// collaborators may read and act (start, stop, restart, stacks, cleanup, exec as their own
    /// account) but not own: the owner's keys and resources, collaborators, delete; admins may do
    /// everything.
    @discardableResult
    public func authorize(_ caller: Caller, _ username: String, _ access: Access) async throws(ContainariumError) -> Username {
        let user = try Username(username)
        if caller.isAdmin { return user }
        if caller.role == .node { throw .denied("node tokens may only report node state") }
        if caller.role == .metrics { throw .denied("metrics tokens may only read /metrics") }
        let owner = try await owner(of: user)
        if owner == caller.subject { return user }
        if owner != nil, access != .own, try await store.collaborators(of: user.value).contains(where: { $0.collaborator == caller.subject }) {
            return user
        }
        throw .denied("\(caller.subject) may not \(access == .read ? "see" : "change") \(user.value)'s environment")
    }

    /// A 404 for an environment that exists nowhere: no record, not in the inventory, and
    /// unknown to the backend (admins pass authorization for any name; a deleted environment
    /// must not answer as if it still existed).
    func requireEnvironment(_ user: Username) async throws(ContainariumError) {
        if try await store.container(user.value) != nil || inventory.get(user.containerName) != nil { return }
        _ = try await service.info(username: user.value)
    }

    func requireAdmin(_ caller: Caller, _ what: String) throws(ContainariumError) {
        guard caller.isAdmin else { throw .denied("\(what) needs the admin role") }
    }

    /// Which of the event stream's events `caller` may see (`audience(_:)`).
    public struct EventAudience: Sendable {
        let plane: ControlPlane
        let caller: Caller
        /// The environments the caller collaborates on, read at the first event that needs them.
        var shared: Set<String>?

        /// Admins see every event; others those about environments they own or collaborate on.
        public mutating func admits(_ e: DaemonEvent) async -> Bool {
            if caller.isAdmin { return true }
            guard let u = e.username else { return false }
            if shared == nil { shared = Set((try? await plane.store.collaborations(of: caller.subject)) ?? []) }
            if u == caller.subject || shared?.contains(u) == true { return true }
            return (try? await plane.authorize(caller, u, .read)) != nil
        }
    }

    public func audience(_ caller: Caller) -> EventAudience { EventAudience(plane: self, caller: caller) }

    // MARK: - containers

    /// Listing served from the inventory (kept current by the backend's change stream).
    public func listContainers(_ caller: Caller) async throws(ContainariumError) -> [ContainerView] {
        if caller.role == .node { throw .denied("node tokens may only report node state") }
        if caller.role == .metrics { throw .denied("metrics tokens may only read /metrics") }
        var all = inventory.snapshot.instances.map { ContainerView($0, record: nil) }
        if isClustered {
            // Tagged with the node names the cluster knows them by.
            for i in all.indices { all[i].node = node }
            all += await remoteContainers()
        }
        if caller.isAdmin { return all }
        let shared = Set(try await store.collaborations(of: caller.subject))
        return all.filter { v in v.owner == caller.subject || shared.contains(v.username) }
    }

    // MARK: - cluster

    private let clusterRef = Mutex<Cluster?>(nil)
    public var cluster: Cluster? { clusterRef.withLock { $0 } }
    public func setCluster(_ c: Cluster) {
        clusterRef.withLock { $0 = c }
        let metrics = platformMetrics
        if metrics.telemetry != nil { c.observeDecisions { placed, elapsed, reasons in metrics.schedulerDecision(placed: placed, duration: elapsed, reasons: reasons) } }
        // Environments on other nodes change there; the dashboard hears of it here.
        c.onEnvironmentsChanged { [events] node, added, removed in
            for name in added { events.publish("container.changed", username: Username(containerName: name)?.value, data: .container(name: name, node: node, state: nil)) }
            for name in removed { events.publish("container.removed", username: Username(containerName: name)?.value, data: .container(name: name, node: node, state: nil)) }
        }
    }
    /// Does this daemon place environments on other nodes too?
    public var isClustered: Bool { cluster?.hasRemoteMembers ?? false }

    /// The environments of every remote member, tagged with their node. A member that does not
    /// answer shows its environments (from the store) as unreachable: never as deleted.
    func remoteContainers() async -> [ContainerView] {
        guard let cluster else { return [] }
        let records = (try? await store.containers()) ?? []
        return await withTaskGroup(of: [ContainerView].self) { group in
            for member in cluster.nodes where !member.local {
                group.addTask {
                    if let client = try? cluster.client(for: member.name), let list = try? await client.listContainers() {
                        return list.map { c in
                            var c = c
                            c.node = member.name
                            return c
                        }
                    }
                    return records.filter { $0.node == member.name }.map { r in
                        var info = InstanceInfo(name: r.username + "-container", state: .unknown, image: r.image,
                                                labels: ["owner": r.owner, "containarium.unreachable": "true"])
                        info.node = member.name
                        info.backend = r.backend
                        return ContainerView(info, record: r)
                    }
                }
            }
            var out: [ContainerView] = []
            for await part in group { out += part }
            return out.sorted { $0.name < $1.name }
        }
    }

    /// The node `user`'s environment lives on, resolved once per request: this daemon's own
    /// backends, or a member of its cluster (through its link).
    func node(of user: Username) async throws(ContainariumError) -> any EnvironmentNode {
        if let remote = try await remoteNode(of: user) { return try member(remote) }
        return LocalNode(plane: self)
    }

    /// A member of this daemon's cluster, through the node layer.
    func member(_ name: String) throws(ContainariumError) -> RemoteNode {
        guard let cluster else { throw .internal("no cluster") }
        return RemoteNode(name: name, client: try cluster.client(for: name))
    }

    /// The remote member holding `user`'s environment, if it is not this node's.
    func remoteNode(of user: Username) async throws(ContainariumError) -> String? {
        guard let cluster, let r = try await store.container(user.value), r.node != node, cluster.member(r.node) != nil else { return nil }
        return r.node
    }


    /// What a create asks of the scheduler. CPU defaults to one core; memory and disk to what
    /// the request (or the node's defaults) say. Labels `node.KEY=VALUE` select nodes.
    static func placement(_ v: EnvironmentService.ValidatedCreate, kind: String) -> PlacementRequest {
        PlacementRequest(id: v.user.containerName, kind: kind, resources: Resources(
            cpuMillis: Int64(v.request.cpu.flatMap { try? CPULimit(parsing: $0).cpuCount } ?? 1) * 1000,
            memoryBytes: Int64(clamping: v.request.memoryBytes ?? 0), diskBytes: Int64(clamping: v.request.diskBytes ?? 0)),
            gpus: v.gpuCount, gpuModel: v.gpuModel, labels: nodeSelector(v.request.labels))
    }

    static func placement(_ v: EnvironmentService.ValidatedCreate, kind: String, node: String?, critical: Bool = false) -> PlacementRequest {
        var p = placement(v, kind: kind)
        p.node = node
        p.critical = critical
        return p
    }

    static func nodeSelector(_ labels: [String: String]) -> [String: String] {
        labels.filter { $0.key.hasPrefix("node.") }.reduce(into: [:]) { $0[String($1.key.dropFirst(5))] = $1.value }
    }

    /// The same, for `schedule explain` (no user or keys needed).
    static func placement(explaining r: CreateEnvironmentRequest, kind: String) throws(ContainariumError) -> PlacementRequest {
        let cpu = try r.cpu.map { s throws(ContainariumError) in try CPULimit(parsing: s).cpuCount } ?? 1
        let memory = try r.memory.map { s throws(ContainariumError) in try ByteSize(parsing: s).bytes } ?? 0
        let disk = try r.disk.map { s throws(ContainariumError) in try ByteSize(parsing: s).bytes } ?? 0
        let (gpus, model, _) = try EnvironmentService.validateGPUs(r)
        return PlacementRequest(id: "explain", kind: kind, resources: Resources(cpuMillis: Int64(cpu) * 1000, memoryBytes: Int64(clamping: memory),
                                                                                diskBytes: Int64(clamping: disk)),
                                gpus: gpus, gpuModel: model, labels: nodeSelector(r.labels), critical: r.critical, node: r.node)
    }

    /// The kinds this node serves: the union over its ready instance backends (their manifests).
    var localKinds: Set<String> { Set(service.plugins.offers.flatMap(\.kinds)) }

    /// Every ready instance backend this control plane knows of: this node's, then those its
    /// members report (from their manifests), each with the node it runs on.
    var knownOffers: [(node: String, offer: BackendOffer)] {
        var out = service.plugins.offers.map { (node: node, offer: $0) }
        for member in cluster?.nodes ?? [] where !member.local && member.name != node {
            for p in member.plugins ?? [] where p.state == "ready" {
                if let kinds = p.kinds, let os = p.osTypes { out.append((member.name, BackendOffer(id: p.id, kinds: kinds, osTypes: os))) }
            }
        }
        return out
    }

    /// The backend kind a create needs: the request's own, else the kind of the backend that
    /// serves its OS family best (manifests' `osTypes`, primary first; this node's configured
    /// `backend` preferred) among this node's and the members' backends.
    func kind(for request: CreateEnvironmentRequest) throws(ContainariumError) -> String {
        if let kind = request.kind, !PluginManifest.validWord(kind) { throw .invalid("kind '\(kind)' is not a backend kind (e.g. lxc, vm)") }
        let offers = knownOffers.map(\.offer)
        do throws(ContainariumError) {
            let best = try BackendOffer.choose(offers, kind: request.kind, os: request.osFamily, preferred: service.config.backend)
            if let kind = request.kind { return kind }
            guard let kind = best.kinds.first else { throw ContainariumError.internal("backend \(best.id) declares no kinds") }
            return kind
        } catch where isClustered && error.code == .invalidArgument {
            let wanted = (request.kind.map { "kind \($0) and " } ?? "") + "OS \(request.osFamily)"
            throw .invalid("no instance backend in this cluster serves \(wanted) (known: \(offers.map(\.summary).joined(separator: "; ")))")
        }
    }

    /// The backend `node` would give a create of `kind` for `request` (explain), from its manifests.
    func backend(on node: String, kind: String, for request: CreateEnvironmentRequest) -> String? {
        let offers = knownOffers.filter { $0.node == node }.map(\.offer)
        return try? BackendOffer.choose(offers, kind: kind, os: request.osFamily, preferred: node == self.node ? service.config.backend : nil).id
    }

    /// Why each node would or would not take this create (admin).
    public func explainPlacement(_ caller: Caller, _ request: CreateEnvironmentRequest) async throws(ContainariumError) -> Explanation {
        try requireAdmin(caller, "schedule explain")
        guard let cluster else { throw ContainariumError(.failedPrecondition, "this daemon runs no scheduler") }
        let kind = try kind(for: request)
        var explanation = cluster.scheduler.explain(try Self.placement(explaining: request, kind: kind))
        explanation.backend = explanation.chosen.flatMap { backend(on: $0, kind: kind, for: request) }
        return explanation
    }

    public func listNodes(_ caller: Caller) throws(ContainariumError) -> [NodeView] {
        try requireAdmin(caller, "listing nodes")
        return cluster?.nodes ?? []
    }

    public func drainNode(_ caller: Caller, _ name: String, draining: Bool) async throws(ContainariumError) -> NodeView {
        try await audited(caller, draining ? "node.drain" : "node.undrain", name) { () async throws(ContainariumError) -> NodeView in
            try requireAdmin(caller, "draining nodes")
            guard let cluster else { throw .notFound("no node \(name)") }
            try await cluster.setDraining(name, draining)
            guard let v = cluster.member(name) else { throw .notFound("no node \(name)") }
            return v
        }
    }

    public func removeNode(_ caller: Caller, _ name: String, force: Bool) async throws(ContainariumError) {
        try await audited(caller, "node.remove", name) { () async throws(ContainariumError) in
            try requireAdmin(caller, "removing nodes")
            guard let cluster else { throw .notFound("no node \(name)") }
            try cluster.checkRemovable(name, force: force)
            // Its tokens go with it, first: a removed node cannot report (and so rejoin) or link
            // with them, not even with a report already under way; joining again takes a new token.
            try await store.setSetting(Self.revocationSetting(name), String(Date().timeIntervalSince1970))
            try await cluster.remove(name, force: force)
            cluster.links?.disconnect(name)
        }
    }

    /// This node's own report: capacity from the backend, environments from the inventory.
    public func localReport(address: String, token: String?, labels: [String: String], pool: String?, preemptible: Bool) async throws(ContainariumError) -> NodeReport {
        let cap = try await service.capacity()
        let disk = cap.pool.map { Int64(clamping: $0.totalBytes) } ?? Int64(clamping: cap.diskTotalBytes)
        // A GPU plugin that fails costs this report its GPUs, not the report: the node stays
        // schedulable for everything else (and for GPUs again once the plugin answers).
        var gpus: [GPUDevice] = []
        do {
            gpus = try await service.gpus(instances: inventory.snapshot.instances)
                .map { GPUDevice(pciAddress: $0.pciAddress, model: $0.model, attachedTo: $0.attachedTo) }
            if gpuReportError.withLock({ $0.take() }) != nil { logger.notice("GPU inventory answers again") }
        } catch {
            let first = gpuReportError.withLock { last in
                defer { last = error.message }
                return last != error.message
            }
            if first { logger.warning("GPU inventory failed; this node reports no GPUs until it answers: \(error.message)") }
        }
        let info = NodeInfo(name: node, kinds: localKinds, capacity: Resources(cpuMillis: Int64(cap.cpus) * 1000, memoryBytes: Int64(clamping: cap.memoryTotalBytes),
                                                                                  diskBytes: disk),
                            gpus: gpus, labels: labels, pool: pool, preemptible: preemptible)
        var envs: [String: Resources] = [:]
        for i in inventory.snapshot.instances {
            envs[i.name] = Resources(cpuMillis: Int64(i.cpuLimit.flatMap { try? CPULimit(parsing: $0).cpuCount } ?? 1) * 1000,
                                     memoryBytes: Int64(clamping: i.memoryLimitBytes ?? 0), diskBytes: Int64(clamping: i.diskLimitBytes ?? 0))
        }
        let plugins = service.plugins.records.map { r in
            NodePlugin(id: r.id, version: r.manifest?.version, abi: r.manifest?.abi, state: r.state.label, capabilities: r.manifest?.capabilities ?? [],
                       kinds: r.manifest?.kinds, osTypes: r.manifest?.osTypes)
        }
        return NodeReport(address: address, token: token, info: info, environments: envs, plugins: plugins, preemption: preemption)
    }

    /// A member's report (gRPC `ReportNode`, node or admin tokens only).
    public func reportNode(_ caller: Caller, _ report: NodeReport) async throws(ContainariumError) -> NodeReportReply {
        guard caller.role == .node || caller.isAdmin else { throw .denied("only node tokens may report node state") }
        guard let cluster else { throw ContainariumError(.failedPrecondition, "this daemon is not a control plane") }
        try await requireNodeIdentity(caller, report.info.name)
        try await cluster.report(report)
        // A removal that came while this report was under way: the report must not bring it back.
        if caller.role == .node, let revoked = try await nodeTokensRevoked(report.info.name), (caller.issuedAt ?? .distantPast) <= revoked {
            try? await cluster.remove(report.info.name, force: true)
            throw .denied("node \(report.info.name)'s tokens were revoked while it reported")
        }
        return NodeReportReply(gatewayKeys: gatewayUpstreamKey.withLock { $0 }.map { [$0] } ?? [])
    }

    /// A node opens its link (gRPC `NodeLink`): authorized, and audited as `node.link` either way.
    public func linkNode(_ caller: Caller, node: String) async throws(ContainariumError) {
        try await audited(caller, "node.link", node) { () async throws(ContainariumError) in try await authorizeLink(caller, node: node) }
    }

    /// A node token acts only as the node it names, and only while that node's tokens are not
    /// revoked (`removeNode` revokes every token issued before it). Admins may act as any node.
    func requireNodeIdentity(_ caller: Caller, _ name: String) async throws(ContainariumError) {
        guard caller.role == .node else { return }
        guard let named = caller.nodeName, named == name else {
            throw .denied("this token is for \(caller.subject), not node.\(name)")
        }
        if let revoked = try await nodeTokensRevoked(name), (caller.issuedAt ?? .distantPast) <= revoked {
            throw .denied("node \(name)'s tokens were revoked (it was removed from the cluster at \(revoked.formatted(.iso8601))): mint a new one with `containarium node token --node \(name)`")
        }
    }

    static func revocationSetting(_ node: String) -> String { "node-tokens-revoked." + node }

    /// May this node token be replaced by a fresh one now: its node is a member and its tokens
    /// are not revoked (read again right before the new one is minted).
    public func mayRenew(_ caller: Caller) async -> Bool {
        guard let name = caller.nodeName, cluster?.member(name) != nil else { return false }
        guard (try? await requireNodeIdentity(caller, name)) != nil else { return false }
        // The subject's tokens revoked (`cert|token revoke --tokens-of node.NAME`), read afresh.
        return (try? await revocations.checkToken(subject: caller.subject, issuedAt: caller.issuedAt ?? .distantPast, fresh: true)) != nil
    }

    /// When `node`'s tokens were last revoked, if ever.
    func nodeTokensRevoked(_ node: String) async throws(ContainariumError) -> Date? {
        try await store.setting(Self.revocationSetting(node)).flatMap(Double.init).map { Date(timeIntervalSince1970: $0) }
    }

    /// May this caller hold the link of `node`? That node's own token, or an admin; and only
    /// to a control plane (one whose cluster takes links).
    func authorizeLink(_ caller: Caller, node: String) async throws(ContainariumError) {
        guard caller.role == .node || caller.isAdmin else { throw .denied("only node tokens may link a node") }
        guard Cluster.validNodeName(node) else { throw .invalid("the link names no valid node ('\(node)')") }
        try await requireNodeIdentity(caller, node)
        guard let cluster, cluster.links != nil else { throw ContainariumError(.failedPrecondition, "this daemon is not a control plane") }
        guard node != cluster.localName else { throw .invalid("\(node) is the control plane's own name") }
    }

    // MARK: - SSH gateway hops

    private let gatewayUpstreamKey = Mutex<String?>(nil)
    private let peerKeys = Mutex<Set<String>>([])
    /// This daemon's gateway upstream key, handed to members so they let it through.
    public func setGatewayUpstreamKey(_ key: String) { gatewayUpstreamKey.withLock { $0 = key } }
    /// Upstream keys of the control plane's gateways, as its last reply to our report said.
    public func setGatewayPeerKeys(_ keys: [String]) { peerKeys.withLock { $0 = Set(keys.compactMap(PinnedKey.normalize)) } }
    public func isGatewayPeer(_ key: String) -> Bool {
        guard let k = PinnedKey.normalize(key) else { return false }
        return peerKeys.withLock { $0.contains(k) }
    }

    public func getContainer(_ caller: Caller, _ username: String) async throws(ContainariumError) -> ContainerView {
        let user = try await authorize(caller, username, .read)
        return try await node(of: user).view(user)
    }

    /// Create an environment. With `async`, returns at once with an operation to poll.
    /// For adapters that stream a create's progress: asked before anything is relayed, so nobody
    /// watches the progress of another user's create. A refusal is audited like the create's.
    public func authorizeCreateProgress(_ caller: Caller, _ username: String) async throws(ContainariumError) {
        do throws(ContainariumError) { try authorizeCreate(caller, username) } catch {
            await audit(caller, "container.create", target: username, result: .failure(error), detail: error.message)
            throw error
        }
    }

    /// Who may create `username`'s environment: its user, or an admin.
    @discardableResult
    func authorizeCreate(_ caller: Caller, _ username: String) throws(ContainariumError) -> Username {
        let user = try Username(username)
        if caller.role == .node || caller.role == .metrics { throw .denied("\(caller.role.rawValue) tokens may not create environments") }
        if !caller.isAdmin && caller.subject != user.value {
            throw .denied("\(caller.subject) may only create its own environment, not \(user.value)'s")
        }
        return user
    }

    public func createContainer(_ caller: Caller, _ request: CreateEnvironmentRequest, async: Bool) async throws(ContainariumError) -> Outcome<ContainerView> {
        let target = request.username
        // A synchronous create is audited with its outcome; an asynchronous one when it is
        // accepted ("container.create.accepted") and again when it finishes.
        return try await audited(caller, async ? "container.create.accepted" : "container.create", target) { () async throws(ContainariumError) -> Outcome<ContainerView> in
            let user = try authorizeCreate(caller, request.username)
            // Users (not admins) get what the operator's policy allows (shaped, then checked).
            let policy = caller.isAdmin ? nil : service.config.userPolicy
            try policy?.precheck(request)
            var request = policy?.shape(request, defaults: service.config.defaults) ?? request
            if !caller.isAdmin && !request.gpuDevices.isEmpty { throw .denied("gpuDevices is set by the scheduler; ask for gpus (and gpuModel)") }
            // An OS type this node has no image for may be another node's (Windows on a VM
            // node): with other nodes, validate the rest here and let the chosen node resolve it.
            var probe = request
            if let os = request.osType, isClustered, (try? service.config.image(forOSType: os)) == nil { probe.osType = nil }
            // Likewise a container runtime this node does not offer may be another node's.
            if isClustered, !request.runtimes.allSatisfy(service.offers) { probe.runtimes = [] }
            let validated = try service.validate(probe)
            try policy?.check(validated, image: request.image, kind: request.kind ?? (try? kind(for: request)))
            try await dropIfVanished(user)
            var exists = inventory.get(user.containerName) != nil
            if !exists { exists = (try? await service.info(username: user.value)) != nil }
            if exists { throw .alreadyExists("an environment for \(user.value) already exists") }
            // With other nodes in the cluster, or GPUs to assign, the scheduler picks the node
            // and the GPUs (and holds them until the node reports the environment).
            var target = node
            if let wanted = request.node {
                guard Cluster.validNodeName(wanted), wanted == node || cluster?.member(wanted) != nil else { throw .invalid("no node \(wanted) in this cluster") }
            }
            if !request.gpuDevices.isEmpty, let cluster, cluster.hasRemoteMembers || request.node != nil {
                // Addresses name one node's GPUs; where the scheduler picks the node, it picks them.
                throw .invalid("gpuDevices names one node's GPUs: on a control plane the scheduler picks them; ask for gpus (and gpuModel)")
            }
            // A critical environment is placed by the scheduler too: it keeps off preemptible nodes.
            if let cluster, cluster.hasRemoteMembers || (validated.gpuCount > 0 && request.gpuDevices.isEmpty) || request.node != nil || request.critical {
                if try await store.container(user.value) != nil { throw .alreadyExists("an environment for \(user.value) already exists") }
                let kind = try kind(for: request)
                let placed = try await cluster.place(Self.placement(validated, kind: kind, node: request.node, critical: request.critical))
                target = placed.node
                request.kind = kind
                request.critical = false  // placed: the node it goes to does not place it again
                request.gpuDevices = placed.gpuAddresses
                if !placed.gpuAddresses.isEmpty { request.gpus = placed.gpuAddresses.count }
            }
            // A machine its provider is reclaiming takes nothing new (its lifecycle plugin said so).
            if target == node, let notice = preemption {
                await cluster?.release(user.containerName)
                throw ContainariumError(.unavailable, "\(node) is being reclaimed by its provider (\(notice)): nothing is created here until it is back")
            }
            // What can be known before the work starts is refused now, not in the operation.
            if target == node {
                do throws(ContainariumError) {
                    _ = try service.backend(forCreate: request)  // a backend here serves its kind and OS
                    try await service.checkCPU(validated.request.cpu, overcommit: cpuOvercommit)
                } catch {
                    await cluster?.release(user.containerName)  // a placement may hold the node and GPUs
                    throw error
                }
            }
            let placedRequest = request
            let chosen = target
            let op = OperationRecord(kind: "create", target: user.value, actor: caller.subject, node: chosen, daemon: daemonID,
                                     total: 0, message: "creating \(user.containerName)" + (target == node ? "" : " on \(target)"))
            // The record goes in first: if this daemon dies half-way, the reconciler finds it.
            do throws(ContainariumError) {
                try await store.insertContainer(ContainerRecord(
                    username: user.value, owner: user.value, node: target,
                    backend: target == node ? (try? service.backend(forCreate: placedRequest).backendID) ?? backendID
                        : backend(on: target, kind: placedRequest.kind ?? "", for: placedRequest) ?? backendID,
                    image: validated.request.image,
                    phase: .creating, operationID: op.id))
            } catch {
                await cluster?.release(user.containerName)
                throw error
            }
            do throws(ContainariumError) {
                try await store.insertOperation(op)
            } catch {
                _ = try? await store.deleteContainer(user.value)
                await cluster?.release(user.containerName)
                throw error
            }
            // Registered under the lock before the work can finish (its last step unregisters it,
            // under the same lock), so the reconciler never mistakes a live create for a dead one.
            let work = running.withLock { map -> Task<Result<ContainerView, ContainariumError>, Never> in
                let t = Task { () async -> Result<ContainerView, ContainariumError> in
                    let started = Date()
                    let result = chosen == self.node
                        ? await self.performCreate(caller, placedRequest, user: user, keys: validated.keys, op: op)
                        : await self.performRemoteCreate(placedRequest, user: user, on: chosen, op: op)
                    self.platformMetrics.operationFinished(kind: op.kind, result: {
                        if case .failure(let e) = result { return e.code == .cancelled ? "cancelled" : "failed" }
                        return "succeeded"
                    }(), duration: Date().timeIntervalSince(started))
                    if async {
                        switch result {
                        case .success: await self.audit(caller, "container.create", target: user.value, result: .success(()), detail: "operation \(op.id)")
                        case .failure(let e): await self.audit(caller, "container.create", target: user.value, result: .failure(e), detail: "operation \(op.id): \(e.message)")
                        }
                    }
                    return result
                }
                map[op.id] = Task { _ = await t.value }
                return t
            }
            if async { return .started(op) }
            // A caller that waits and goes away (Ctrl-C on the CLI, a cancelled RPC) cancels the
            // create, which then rolls back like a failed one; an asynchronous create outlives it.
            // Only the backend's part is cancelled: the bookkeeping of the rollback must still run.
            let id = op.id
            let result = await withTaskCancellationHandler { await work.value } onCancel: { [createCancels] in createCancels.cancel(id) }
            createCancels.forget(id)  // a cancel that came after the backend's part is over
            return .done(try result.get())
        }
    }

    /// A create the scheduler put on another node: that node's daemon does it; this one keeps
    /// the record, the operation and the audit trail.
    private func performRemoteCreate(_ request: CreateEnvironmentRequest, user: Username, on target: String, op: OperationRecord) async -> Result<ContainerView, ContainariumError> {
        defer { running.withLock { _ = $0.removeValue(forKey: op.id) } }
        do throws(ContainariumError) {
            guard let cluster else { throw .internal("no cluster") }
            // The node places it on its own backends: it is not asked to place it again.
            var request = request
            request.node = nil
            let client = try cluster.client(for: target)
            let result = try await createCancels.cancellable(op.id) { [request, events, store] () async throws(ContainariumError) in
                try await client.create(request) { p in
                    events.publish("operation.progress", username: user.value, data: .progress(operationID: op.id, step: p.step, total: p.total, message: p.message))
                    Task { try? await store.updateProgress(op.id, step: p.step, total: p.total, message: p.message) }
                }
            }
            var view = result
            view.node = target
            await cluster.settle(user.containerName)
            try await store.setPhase(user.value, .ready)
            let json = (try? WireJSON.encode(view)).map { String(decoding: $0, as: UTF8.self) }
            try await store.finishOperation(op.id, state: .succeeded, result: json, message: "created \(user.containerName) on \(target)")
            events.publish("operation.finished", username: user.value, data: .operation(id: op.id, state: "succeeded", error: nil))
            return .success(view)
        } catch {
            await cluster?.release(user.containerName)
            _ = try? await store.deleteContainer(user.value)
            _ = try? await store.finishOperation(op.id, state: .failed, errorCode: error.code.rawValue, errorMessage: error.message, message: "create failed")
            events.publish("operation.finished", username: user.value, data: .operation(id: op.id, state: "failed", error: error.message))
            return .failure(error)
        }
    }

    private func performCreate(_ caller: Caller, _ request: CreateEnvironmentRequest, user: Username, keys: [SSHPublicKey], op: OperationRecord) async -> Result<ContainerView, ContainariumError> {
        defer { running.withLock { _ = $0.removeValue(forKey: op.id) } }
        do throws(ContainariumError) {
            let info = try await createCancels.cancellable(op.id) { [service, cpuOvercommit, store, events] () async throws(ContainariumError) in
                try await service.create(request, cpuOvercommit: cpuOvercommit) { p in
                    events.publish("operation.progress", username: user.value, data: .progress(operationID: op.id, step: p.step, total: p.total, message: p.message))
                    Task { try? await store.updateProgress(op.id, step: p.step, total: p.total, message: p.message) }
                }
            }
            for k in keys {
                try? await store.addKey(KeyRecord(username: user.value, fingerprint: k.fingerprint, publicKey: k.authorizedKeysLine))
            }
            await cluster?.settle(user.containerName)
            try await store.setPhase(user.value, .ready)
            inventory.put(info)
            let record = try await store.container(user.value)
            let view = ContainerView(info, record: record)
            let json = (try? WireJSON.encode(view)).map { String(decoding: $0, as: UTF8.self) }
            try await store.finishOperation(op.id, state: .succeeded, result: json, message: "created \(user.containerName)")
            events.publish("operation.finished", username: user.value, data: .operation(id: op.id, state: "succeeded", error: nil))
            return .success(view)
        } catch {
            await cluster?.release(user.containerName)
            _ = try? await store.deleteContainer(user.value)
            _ = try? await store.finishOperation(op.id, state: .failed, errorCode: error.code.rawValue, errorMessage: error.message, message: "create failed")
            events.publish("operation.finished", username: user.value, data: .operation(id: op.id, state: "failed", error: error.message))
            await inventory.refresh(user.containerName)
            return .failure(error)
        }
    }

    public func deleteContainer(_ caller: Caller, _ username: String, force: Bool) async throws(ContainariumError) {
        try await audited(caller, "container.delete", username) { () async throws(ContainariumError) in
            let user = try await authorize(caller, username, .own)
            if let r = try await store.container(user.value), r.phase == .creating, let id = r.operationID,
               running.withLock({ $0[id] != nil }) {
                throw ContainariumError(.failedPrecondition, "\(user.value)'s environment is still being created (operation \(id))")
            }
            let target = try await node(of: user)
            if target is LocalNode { try? await store.setPhase(user.value, .deleting) }
            do throws(ContainariumError) {
                try await target.delete(user, force: force)
            } catch where error.code == .notFound {
                // Gone from its node already: drop the record below.
                guard try await store.container(user.value) != nil else { throw error }
            }
            try await store.deleteContainer(user.value)
            try? await store.deleteScanReports(username: user.value)
            if target is LocalNode { inventory.remove(user.containerName) }
            await cluster?.release(user.containerName)  // not counted on the node any more
            changed(user.value)
        }
    }

    public enum PowerAction: String, Sendable { case start, stop, restart }

    public func power(_ caller: Caller, _ username: String, _ action: PowerAction, force: Bool = false) async throws(ContainariumError) -> ContainerView {
        try await audited(caller, "container.\(action.rawValue)", username) { () async throws(ContainariumError) -> ContainerView in
            let user = try await authorize(caller, username, .act)
            return try await node(of: user).power(user, action, force: force)
        }
    }

    public func resize(_ caller: Caller, _ username: String, cpu: String?, memory: String?, disk: String?) async throws(ContainariumError) -> ContainerView {
        let detail = [cpu.map { "cpu=\($0)" }, memory.map { "memory=\($0)" }, disk.map { "disk=\($0)" }].compactMap { $0 }.joined(separator: " ")
        return try await audited(caller, "container.resize", username, detail: detail) { () async throws(ContainariumError) -> ContainerView in
            let user = try await authorize(caller, username, .own)  // the owner's resources: not a collaborator's to change
            if !caller.isAdmin, let policy = service.config.userPolicy {
                try policy.checkSizes(cpu: try cpu.map { c throws(ContainariumError) in try CPULimit(parsing: c).incusValue },
                                      memory: try memory.map { m throws(ContainariumError) in try ByteSize(parsing: m).bytes },
                                      disk: try disk.map { d throws(ContainariumError) in try ByteSize(parsing: d).bytes }, unlimitedRefused: false)
            }
            return try await node(of: user).resize(user, cpu: cpu, memory: memory, disk: disk)
        }
    }

    public func installStack(_ caller: Caller, _ username: String, stack: String) async throws(ContainariumError) -> ExecResult {
        try await audited(caller, "container.install-stack", username, detail: "stack=\(stack)") { () async throws(ContainariumError) -> ExecResult in
            let user = try await authorize(caller, username, .act)
            return try await node(of: user).installStack(user, stack: stack)
        }
    }

    /// Free disk space: package caches, old journal files, week-old temporary files.
    public func cleanupDisk(_ caller: Caller, _ username: String) async throws(ContainariumError) -> CleanupView {
        try await audited(caller, "container.cleanup-disk", username) { () async throws(ContainariumError) -> CleanupView in
            let user = try await authorize(caller, username, .act)
            return try await node(of: user).cleanupDisk(user)
        }
    }

    /// Run a command in `username`'s environment: as root (admins only), or as an account in
    /// it. `asUser` is the caller's own account there: the owner's for the owner (and admins), a
    /// collaborator's own for a collaborator, never the owner's. `account` names one (admins:
    /// any; others: only their own).
    public func exec(_ caller: Caller, _ username: String, command: [String], asUser: Bool, account: String? = nil) async throws(ContainariumError) -> ExecResult {
        let how = account.map { "as \($0)" } ?? (asUser ? "as user" : "as root")
        return try await audited(caller, "container.exec", username, detail: how) { () async throws(ContainariumError) -> ExecResult in
            let user = try await authorize(caller, username, .act)
            guard !command.isEmpty else { throw .invalid("command is empty") }
            let runAs: String?
            if let account {
                let named = try Username(account)
                if !caller.isAdmin && named.value != caller.subject { throw .denied("\(caller.subject) may run commands only as their own account") }
                runAs = named.value
            } else if asUser {
                let owns = try await owner(of: user) == caller.subject
                runAs = caller.isAdmin || owns ? user.value : try Username(caller.subject).value
            } else {
                // Root inside an environment is for admins; others run as their account.
                guard caller.isAdmin else { throw .denied("running commands as root needs the admin role; use --user") }
                runAs = nil
            }
            let node = try await node(of: user)
            return try await execSlots.run(user.containerName) { () async throws(ContainariumError) -> ExecResult in
                try await node.exec(user, command, account: runAs)
            }
        }
    }

    /// With no jump host and no gateway name, the daemon's own gateway (if it runs one) is used.
    public func exportSSHConfig(_ caller: Caller, _ username: String, jumpHost: String?, keyPath: String?, gatewayHost: String? = nil) async throws(ContainariumError) -> String {
        let user = try await authorize(caller, username, .read)
        var gateway = gatewayEndpoint.withLock { $0 }
        if let gatewayHost { gateway?.host = gatewayHost }
        return try await node(of: user).sshConfig(user, jumpHost: jumpHost, keyPath: keyPath, gateway: gateway)
    }

    private let gatewayEndpoint = Mutex<SSHConfigExport.Gateway?>(nil)
    /// The SSH gateway this daemon runs, for exported configurations.
    public func setGateway(_ g: SSHConfigExport.Gateway) { gatewayEndpoint.withLock { $0 = g } }

    // MARK: - SSH keys (the container's authorized_keys is the truth; the store keeps history)
    // Through the backend's accounts/1: a backend without it answers `.unsupported`.

    func readKeys(_ user: Username) async throws(ContainariumError) -> [SSHPublicKey] {
        try await service.authorizedKeys(username: user.value)
    }

    func writeKeys(_ user: Username, _ keys: [SSHPublicKey]) async throws(ContainariumError) {
        try await service.setAuthorizedKeys(username: user.value, keys)
    }

    public func listKeys(_ caller: Caller, _ username: String) async throws(ContainariumError) -> [KeyView] {
        let user = try await authorize(caller, username, .read)
        return try await node(of: user).keys(user).map { KeyView(fingerprint: $0.fingerprint, type: $0.type, comment: $0.comment ?? "", publicKey: $0.authorizedKeysLine) }
    }

    /// The owner's keys are the owner's (and admins'): a collaborator's key would log in as the
    /// owner, whose account has full sudo. Collaborators get their keys when they are added.
    public func addKey(_ caller: Caller, _ username: String, publicKey: String) async throws(ContainariumError) -> KeyView {
        try await audited(caller, "container.ssh-key.add", username) { () async throws(ContainariumError) -> KeyView in
            let user = try await authorize(caller, username, .own)
            let key = try SSHPublicKey.registrable(publicKey)
            try await node(of: user).addKey(user, key)
            try? await store.addKey(KeyRecord(username: user.value, fingerprint: key.fingerprint, publicKey: key.authorizedKeysLine))
            changed(user.value)
            return KeyView(fingerprint: key.fingerprint, type: key.type, comment: key.comment ?? "", publicKey: key.authorizedKeysLine)
        }
    }

    public func removeKey(_ caller: Caller, _ username: String, fingerprint: String) async throws(ContainariumError) {
        try await audited(caller, "container.ssh-key.remove", username, detail: fingerprint) { () async throws(ContainariumError) in
            let user = try await authorize(caller, username, .own)
            try await node(of: user).removeKey(user, fingerprint: fingerprint)
            _ = try? await store.removeKey(user.value, fingerprint: fingerprint)
            changed(user.value)
        }
    }

    // MARK: - revocation

    /// Revoke every token of `subject` issued until now, or one client certificate by serial:
    /// admins only, audited either way.
    public func revokeCredentials(_ caller: Caller, subject: String?, certificateSerial: String?) async throws(ContainariumError) -> Revocations.Entry {
        let target = subject ?? certificateSerial.map { "certificate " + $0 } ?? "-"
        return try await audited(caller, "credentials.revoke", target) { () async throws(ContainariumError) -> Revocations.Entry in
            guard caller.isAdmin else { throw .denied("revoking credentials needs the admin role") }
            switch (subject, certificateSerial) {
            case (let subject?, nil):
                // The subjects tokens can carry (`Tokens.validSubject`): nothing else can be revoked.
                guard let first = subject.unicodeScalars.first, (1...64).contains(subject.unicodeScalars.count), ("a"..."z").contains(first) || first == "_",
                      subject.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || "_.-".unicodeScalars.contains($0) })
                else { throw .invalid("'\(subject)' is not a subject a token can name") }
                return try await revocations.revokeTokens(of: subject)
            case (nil, let serial?):
                return try await revocations.revokeCertificate(serial: serial)
            default:
                throw .invalid("give exactly one of subject and certificateSerial")
            }
        }
    }

    public func listRevocations(_ caller: Caller) async throws(ContainariumError) -> [Revocations.Entry] {
        guard caller.isAdmin else { throw .denied("the revocation list is for admins") }
        return try await revocations.list()
    }

    // MARK: - credentials

    /// The sign-in secret the backend made for an environment (a Windows VM's Administrator
    /// password): its owner's and admins' only; collaborators and everyone else are refused.
    /// Audited (without the secret) whatever the outcome.
    public func credentials(_ caller: Caller, _ username: String) async throws(ContainariumError) -> InstanceCredentials {
        try await audited(caller, "container.credentials.read", username) { () async throws(ContainariumError) -> InstanceCredentials in
            let user: Username
            do throws(ContainariumError) { user = try await authorize(caller, username, .own) } catch where error.code == .permissionDenied {
                throw .denied("only the owner of \(username)'s environment (or an admin) may read its sign-in secret; \(caller.subject) may not")
            }
            return try await node(of: user).credentials(user)
        }
    }

    // MARK: - collaborators

    public func listCollaborators(_ caller: Caller, _ username: String) async throws(ContainariumError) -> [CollaboratorView] {
        let user = try await authorize(caller, username, .read)
        try await requireEnvironment(user)
        return try await store.collaborators(of: user.value).map(CollaboratorView.init)
    }

    public func addCollaborator(_ caller: Caller, _ username: String, collaborator: String, sshKey: String? = nil,
                                sudo: Bool = false, containerRuntime: Bool = false) async throws(ContainariumError) -> CollaboratorView {
        try await audited(caller, "container.collaborator.add", username, detail: collaborator + (sudo ? " sudo" : "") + (containerRuntime ? " container-runtime" : "")) { () async throws(ContainariumError) -> CollaboratorView in
            let user = try await authorize(caller, username, .own)
            let other = try Username(collaborator)
            guard other != user else { throw .invalid("\(other.value) owns this environment already") }
            let keys = try sshKey.map { text throws(ContainariumError) in try SSHPublicKey.parseMany(text) } ?? []
            for key in keys { try key.requireGatewayCompatible() }
            guard try await store.container(user.value) != nil || inventory.get(user.containerName) != nil else {
                throw .notFound("\(user.value) has no environment")
            }
            if try await store.container(user.value) == nil, let info = inventory.get(user.containerName) {
                try await adopt(info)
            }
            guard !(try await store.collaborators(of: user.value)).contains(where: { $0.collaborator == other.value }) else {
                throw .alreadyExists("\(other.value) already collaborates on \(user.value)'s environment")
            }
            let target = try await node(of: user)
            try await target.addCollaborator(user, other, keys: keys, sudo: sudo, containerRuntime: containerRuntime)
            let record = CollaboratorRecord(username: user.value, collaborator: other.value, addedBy: caller.subject, sudo: sudo, containerRuntime: containerRuntime)
            do throws(ContainariumError) {
                try await store.addCollaborator(record)
            } catch {
                // Leave nothing half-made: the account goes when the record cannot be written.
                try? await target.removeCollaborator(user, other)
                throw error
            }
            changed(user.value)
            return CollaboratorView(record)
        }
    }

    public func removeCollaborator(_ caller: Caller, _ username: String, collaborator: String) async throws(ContainariumError) {
        try await audited(caller, "container.collaborator.remove", username, detail: collaborator) { () async throws(ContainariumError) in
            let user = try await authorize(caller, username, .own)
            let other = try Username(collaborator)
            guard try await store.collaborators(of: user.value).contains(where: { $0.collaborator == other.value }) else {
                throw .notFound("\(other.value) does not collaborate on \(user.value)'s environment")
            }
            try await node(of: user).removeCollaborator(user, other)
            try await store.removeCollaborator(user.value, collaborator: other.value)
            changed(user.value)
        }
    }

    /// Who may log in to an environment changed (keys, collaborators, deletion): caches
    /// such as the SSH gateway's drop what they knew.
    func changed(_ username: String) {
        accessChanges.withLock { handlers in handlers.forEach { $0(username) } }
    }

    /// Be told when access to an environment changes.
    public func onAccessChange(_ handler: @escaping @Sendable (String) -> Void) {
        accessChanges.withLock { $0.append(handler) }
    }

    /// Record an environment the store does not know yet (made by the local CLI, or before
    /// the daemon ran) with its backend owner label.
    func adopt(_ info: InstanceInfo) async throws(ContainariumError) {
        guard let user = Username(containerName: info.name) else { return }
        try await store.upsertContainer(ContainerRecord(
            username: user.value, owner: info.labels["owner"] ?? user.value, node: info.node ?? node, backend: info.backend ?? backendID,
            image: info.image, phase: .ready, operationID: nil, createdAt: info.createdAt ?? Date()))
    }

    // MARK: - operations, audit, system

    public func operation(_ caller: Caller, _ id: String) async throws(ContainariumError) -> OperationRecord {
        guard let op = try await store.operation(id) else { throw .notFound("no operation \(id)") }
        if !caller.isAdmin && op.actor != caller.subject {
            _ = try await authorize(caller, op.target, .read)
        }
        return op
    }

    public func auditLog(_ caller: Caller, _ filter: AuditFilter) async throws(ContainariumError) -> [AuditEntry] {
        try requireAdmin(caller, "reading the audit log")
        return try await store.audit(filter)
    }

    public func containerMetrics(_ caller: Caller) async throws(ContainariumError) -> [ContainerMetricsView] {
        let visible = Set(try await listContainers(caller).map(\.name))
        return try await service.list().filter { visible.contains($0.name) }.map { i in
            ContainerMetricsView(
                name: i.name, username: Username(containerName: i.name)?.value, state: ContainerView.stateName(i.state),
                cpuPercent: metrics.latest(for: i.name).map { ($0.cpuPercent * 10).rounded() / 10 }, cpuUsageNanoseconds: i.cpuUsageNanoseconds,
                memoryUsageBytes: i.memoryUsageBytes, diskUsageBytes: i.diskUsageBytes, processes: i.processes)
        }
    }

    /// `GET /v1/backends`: this node's instance backends, and the cluster's nodes for admins.
    public func backendsView(_ caller: Caller) async throws(ContainariumError) -> BackendsView {
        BackendsView(backends: await backends(caller), nodes: caller.isAdmin ? try listNodes(caller) : [])
    }

    /// This node's capacity (admin).
    public func capacity(_ caller: Caller) async throws(ContainariumError) -> NodeCapacity {
        try requireAdmin(caller, "node capacity")
        return try await service.capacity()
    }

    public func backends(_ caller: Caller) async -> [BackendView] {
        var out: [BackendView] = []
        for r in service.plugins.records where r.manifest?.capabilities.contains("instances/1") == true {
            var health: HealthView?
            if let p = r.plugin {
                let h = await p.health()
                health = HealthView(status: h.status, detail: h.detail ?? "")
            }
            out.append(BackendView(
                id: r.id, enabled: r.enabled, state: r.state.label, isDefault: r.id == backendID, version: r.manifest?.version,
                kinds: r.manifest?.kinds ?? [], osTypes: r.manifest?.osTypes ?? [], health: health))
        }
        return out
    }

    /// Enable or disable a plugin in a node's config file (admin): this node's, or with `on`
    /// a member's, through that member's own daemon. Plugins load at start, so the answer says
    /// whether that node's daemon must restart.
    public func setPluginEnabled(_ caller: Caller, _ id: String, enabled: Bool, force: Bool = false, on target: String?) async throws(ContainariumError) -> PluginToggleView {
        try await audited(caller, enabled ? "plugin.enable" : "plugin.disable", id, detail: target.map { "node \($0)" } ?? "") { () async throws(ContainariumError) -> PluginToggleView in
            try requireAdmin(caller, "enabling and disabling plugins")
            if let target, target != node {
                guard Cluster.validNodeName(target), let cluster, cluster.member(target) != nil else { throw .notFound("no node \(target) in this cluster") }
                return try await member(target).client.setPluginEnabled(id, enabled: enabled, force: force)
            }
            let t = try await service.setPluginEnabled(id, enabled: enabled, force: force)
            return PluginToggleView(id: t.id, enabled: t.enabled, node: t.node, configPath: t.path, section: t.section,
                                    restartRequired: t.restartRequired, message: t.message)
        }
    }

    public func plugins(_ caller: Caller) async -> [PluginView] {
        var out: [PluginView] = []
        for r in service.plugins.records {
            var health: HealthView?
            if caller.isAdmin, let p = r.plugin {
                let h = await p.health()
                health = HealthView(status: h.status, detail: h.detail ?? "")
            }
            let m = r.manifest
            out.append(PluginView(
                id: r.id, enabled: r.enabled, state: r.state.label, version: m?.version, abi: m?.abi, capabilities: m?.capabilities ?? [],
                kinds: m?.kinds ?? [], osTypes: m?.osTypes ?? [], health: health))
        }
        return out
    }

    public func systemInfo(_ caller: Caller) async throws(ContainariumError) -> SystemInfoView {
        let snap = inventory.snapshot.instances
        return SystemInfoView(
            version: ContainariumVersion.string, pluginAbi: ContainariumVersion.abi, node: node, backend: backendID,
            uptimeSeconds: Date().timeIntervalSince(startedAt).rounded(),
            containers: .init(total: snap.count, running: snap.filter { $0.state == .running }.count),
            database: store.db.dialect.rawValue, eventStream: inventory.isWatching,
            capacity: caller.isAdmin ? try? await service.capacity() : nil)
    }

    /// Wait for operations this daemon started (graceful shutdown).
    public func drain(timeout: Duration) async {
        let tasks = running.withLock { Array($0.values) }
        guard !tasks.isEmpty else { return }
        logger.info("waiting for \(tasks.count) operation(s) to finish")
        await withTaskGroup(of: Void.self) { g in
            g.addTask { for t in tasks { await t.value } }
            g.addTask { try? await Task.sleep(for: timeout) }
            await g.next()
            g.cancelAll()
        }
    }

    public func isRunningHere(_ operationID: String) -> Bool { running.withLock { $0[operationID] != nil } }
    /// Operations this daemon runs now.
    var runningOperations: Int { running.withLock { $0.count } }
}

public enum ContainariumVersion {
    public static let string = "0.2.0"
    public static var abi: String { HostABI.version }
}

/// Cancel hooks for work that runs in its own task, by id: `cancel` before the work registers
/// is remembered, so a cancellation is never lost to the race.
final class CancelHooks: Sendable {
    private let state = Mutex<(hooks: [String: @Sendable () -> Void], early: Set<String>)>(([:], []))

    /// Run `body` in a task of its own that `cancel(id)` cancels (and only that task).
    func cancellable<T: Sendable>(_ id: String, _ body: @escaping @Sendable () async throws(ContainariumError) -> T) async throws(ContainariumError) -> T {
        let task = Task { () async -> Result<T, ContainariumError> in
            do throws(ContainariumError) { return .success(try await body()) } catch { return .failure(error) }
        }
        let early = state.withLock { s -> Bool in
            if s.early.remove(id) != nil { return true }
            s.hooks[id] = { task.cancel() }
            return false
        }
        if early { task.cancel() }
        defer { state.withLock { s in s.hooks[id] = nil } }
        return try await task.value.get()
    }

    /// Drop what is remembered for `id` (its work is over).
    func forget(_ id: String) {
        state.withLock { s in
            s.hooks[id] = nil
            s.early.remove(id)
        }
    }

    func cancel(_ id: String) {
        let hook = state.withLock { s -> (@Sendable () -> Void)? in
            if let h = s.hooks[id] { return h }
            s.early.insert(id)
            return nil
        }
        hook?()
    }
}
