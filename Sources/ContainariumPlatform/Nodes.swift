import ContainariumCore
import ContainariumService
import ContainariumStore
import Foundation

/// The node layer: the node an environment lives on, resolved once per request
/// (`ControlPlane.node(of:)`), with every per-environment verb. `LocalNode` runs it on this
/// daemon's own backends; `RemoteNode` on a member, through its link (or its advertised
/// address), where that node's daemon runs it on its own backends as `control-plane`.
///
/// The control plane authorizes and audits before it asks a node; the node keeps the
/// environment's truth (the instance, its accounts and keys). Bookkeeping that authorization
/// needs (records, collaborators, key history) stays with the control plane.
protocol EnvironmentNode: Sendable {
    var name: String { get }
    func view(_ user: Username) async throws(ContainariumError) -> ContainerView
    func delete(_ user: Username, force: Bool) async throws(ContainariumError)
    func power(_ user: Username, _ action: ControlPlane.PowerAction, force: Bool) async throws(ContainariumError) -> ContainerView
    func resize(_ user: Username, cpu: String?, memory: String?, disk: String?) async throws(ContainariumError) -> ContainerView
    /// Run `command` as `account` in the environment (nil: root).
    func exec(_ user: Username, _ command: [String], account: String?) async throws(ContainariumError) -> ExecResult
    func installStack(_ user: Username, stack: String) async throws(ContainariumError) -> ExecResult
    func cleanupDisk(_ user: Username) async throws(ContainariumError) -> CleanupView
    /// The keys that open the owner's account (its authorized_keys).
    func keys(_ user: Username) async throws(ContainariumError) -> [SSHPublicKey]
    /// Add a key to the owner's account; `.alreadyExists` when it is there.
    func addKey(_ user: Username, _ key: SSHPublicKey) async throws(ContainariumError)
    /// Remove a key; `.notFound` when it is not there, `.failedPrecondition` for the last one.
    func removeKey(_ user: Username, fingerprint: String) async throws(ContainariumError)
    /// A collaborator's account inside the owner's environment.
    func addCollaborator(_ user: Username, _ other: Username, keys: [SSHPublicKey], sudo: Bool, containerRuntime: Bool) async throws(ContainariumError)
    func removeCollaborator(_ user: Username, _ other: Username) async throws(ContainariumError)
    func sshConfig(_ user: Username, jumpHost: String?, keyPath: String?, gateway: SSHConfigExport.Gateway?) async throws(ContainariumError) -> String
    /// The sign-in secret its backend made for the environment (credentials/1).
    func credentials(_ user: Username) async throws(ContainariumError) -> InstanceCredentials
    /// Scan the environment's filesystem from the host side with the scanner plugin `scanner`.
    func scan(_ user: Username, scanner: String) async throws(ContainariumError) -> ScanReport
    /// What can be checked before a scan is queued (the scanner is ready, the backend shows the
    /// filesystem). A member checks when it scans: its failure comes back as the scan's.
    func checkScan(_ user: Username, scanner: String) async throws(ContainariumError)
}

/// An environment on another member, reached through the cluster's connection to that member.
struct RemoteNode: EnvironmentNode {
    let name: String
    let client: any NodeConnection

    /// Tagged with this member's name: the node's own answer says nothing about the cluster.
    func tagged(_ v: ContainerView) -> ContainerView {
        var v = v
        v.node = name
        return v
    }

    func view(_ user: Username) async throws(ContainariumError) -> ContainerView {
        tagged(try await client.container(user))
    }
    func delete(_ user: Username, force: Bool) async throws(ContainariumError) {
        try await client.delete(user, force: force)
    }
    func power(_ user: Username, _ action: ControlPlane.PowerAction, force: Bool) async throws(ContainariumError) -> ContainerView {
        tagged(try await client.power(user, action, force: force))
    }
    func resize(_ user: Username, cpu: String?, memory: String?, disk: String?) async throws(ContainariumError) -> ContainerView {
        tagged(try await client.resize(user, cpu: cpu, memory: memory, disk: disk))
    }
    func exec(_ user: Username, _ command: [String], account: String?) async throws(ContainariumError) -> ExecResult {
        try await client.exec(user, command, account: account)
    }
    func installStack(_ user: Username, stack: String) async throws(ContainariumError) -> ExecResult {
        // The node fails the call when the stack does not install: what comes back is its check.
        ExecResult(exitCode: 0, stdout: try await client.installStack(user, stack: stack), stderr: "")
    }
    func cleanupDisk(_ user: Username) async throws(ContainariumError) -> CleanupView {
        try await client.cleanupDisk(user)
    }
    func keys(_ user: Username) async throws(ContainariumError) -> [SSHPublicKey] {
        try await client.keys(user).compactMap { try? SSHPublicKey(parsing: $0) }
    }
    func addKey(_ user: Username, _ key: SSHPublicKey) async throws(ContainariumError) {
        try await client.addKey(user, key)
    }
    func removeKey(_ user: Username, fingerprint: String) async throws(ContainariumError) {
        try await client.removeKey(user, fingerprint: fingerprint)
    }
    func addCollaborator(_ user: Username, _ other: Username, keys: [SSHPublicKey], sudo: Bool, containerRuntime: Bool) async throws(ContainariumError) {
        try await client.addCollaborator(user, other, keys: keys, sudo: sudo, containerRuntime: containerRuntime)
    }
    func removeCollaborator(_ user: Username, _ other: Username) async throws(ContainariumError) {
        try await client.removeCollaborator(user, other)
    }
    func credentials(_ user: Username) async throws(ContainariumError) -> InstanceCredentials {
        try await client.credentials(user)
    }
    func scan(_ user: Username, scanner: String) async throws(ContainariumError) -> ScanReport {
        try await client.scan(user, scanner: scanner)
    }
    func checkScan(_ user: Username, scanner: String) async throws(ContainariumError) {}
    func sshConfig(_ user: Username, jumpHost: String?, keyPath: String?, gateway: SSHConfigExport.Gateway?) async throws(ContainariumError) -> String {
        // The environment's address and host keys come from its node; the gateway (if any) is
        // the control plane's, which reaches the node through its link.
        let v = try await view(user)
        guard let ip = v.network.ipAddress ?? v.network.ipv4.first else {
            throw ContainariumError(.failedPrecondition, "\(user.containerName) has no IPv4 address (is it running?)")
        }
        return try SSHConfigExport(user: user, jumpHost: jumpHost, containerIP: ip, keyPath: keyPath, gateway: gateway,
                                   containerHostKeys: v.sshHostKeys).render()
    }
}

/// An environment on this daemon's own backends.
struct LocalNode: EnvironmentNode {
    let plane: ControlPlane
    var name: String { plane.node }
    var service: EnvironmentService { plane.service }

    func view(_ user: Username) async throws(ContainariumError) -> ContainerView {
        let record = try await plane.store.container(user.value)
        if let info = plane.inventory.get(user.containerName) { return ContainerView(info, record: record) }
        return ContainerView(try await service.info(username: user.value), record: record)
    }
    func delete(_ user: Username, force: Bool) async throws(ContainariumError) {
        try await service.delete(username: user.value, force: force)
    }
    func power(_ user: Username, _ action: ControlPlane.PowerAction, force: Bool) async throws(ContainariumError) -> ContainerView {
        let info: InstanceInfo
        switch action {
        case .start: info = try await service.start(username: user.value)
        case .stop: info = try await service.stop(username: user.value, force: force)
        case .restart: info = try await service.restart(username: user.value)
        }
        plane.inventory.put(info)
        return ContainerView(info, record: try await plane.store.container(user.value))
    }
    func resize(_ user: Username, cpu: String?, memory: String?, disk: String?) async throws(ContainariumError) -> ContainerView {
        let info = try await service.resize(username: user.value, cpu: cpu, memory: memory, disk: disk, cpuOvercommit: plane.cpuOvercommit)
        plane.inventory.put(info)
        return ContainerView(info, record: try await plane.store.container(user.value))
    }
    func exec(_ user: Username, _ command: [String], account: String?) async throws(ContainariumError) -> ExecResult {
        try await service.exec(username: user.value, command: command, account: account)
    }
    func installStack(_ user: Username, stack: String) async throws(ContainariumError) -> ExecResult {
        _ = try service.stacks.stack(stack)
        return try await service.installStack(username: user.value, stack: stack) { [events = plane.events] p in
            events.publish("stack.progress", username: user.value, data: .progress(operationID: nil, step: p.step, total: p.total, message: p.message))
        }
    }
    func cleanupDisk(_ user: Username) async throws(ContainariumError) -> CleanupView {
        let before = try await service.info(username: user.value).diskUsageBytes
        let script = "apt-get clean >/dev/null 2>&1; journalctl --vacuum-size=16M >/dev/null 2>&1; "
            + "find /tmp /var/tmp -xdev -mindepth 1 -mtime +7 -delete 2>/dev/null; sync; true"
        let r = try await service.exec(username: user.value, command: ["sh", "-c", script])
        // The script ends in `true`: only a signal stops it early. 137/143: the environment
        // stopped or restarted under it, or ran out of memory: its state, not our fault.
        if r.exitCode == 137 || r.exitCode == 143 {
            throw ContainariumError(.failedPrecondition, "the cleanup in \(user.containerName) was killed (exit \(r.exitCode)): the environment stopped, restarted or ran out of memory; try again once it runs")
        }
        guard r.exitCode == 0 else { throw .internal("cleanup failed in \(user.containerName) (exit \(r.exitCode))", cause: r.stderr) }
        let after = try await service.info(username: user.value).diskUsageBytes
        let freed = before.flatMap { b in after.map { a in b > a ? b - a : 0 } }
        return CleanupView(username: user.value, diskUsageBeforeBytes: before, diskUsageAfterBytes: after, freedBytes: freed)
    }
    func keys(_ user: Username) async throws(ContainariumError) -> [SSHPublicKey] {
        try await plane.readKeys(user)
    }
    func addKey(_ user: Username, _ key: SSHPublicKey) async throws(ContainariumError) {
        var keys = try await plane.readKeys(user)
        if keys.contains(where: { $0.fingerprint == key.fingerprint }) { throw .alreadyExists("key \(key.fingerprint) is already installed") }
        keys.append(key)
        try await plane.writeKeys(user, keys)
    }
    func removeKey(_ user: Username, fingerprint: String) async throws(ContainariumError) {
        let keys = try await plane.readKeys(user)
        let remaining = keys.filter { $0.fingerprint != fingerprint }
        guard remaining.count < keys.count else { throw .notFound("no key \(fingerprint) for \(user.value)") }
        guard !remaining.isEmpty else { throw ContainariumError(.failedPrecondition, "refusing to remove the last key: \(user.value) could not log in any more") }
        try await plane.writeKeys(user, remaining)
    }
    func addCollaborator(_ user: Username, _ other: Username, keys: [SSHPublicKey], sudo: Bool, containerRuntime: Bool) async throws(ContainariumError) {
        // The backend's accounts/1 makes the account (its keys, and full sudo or only
        // `sudo su - OWNER`, logged); an account of that name it did not make is refused.
        _ = try await service.addCollaboratorAccount(owner: user.value, collaborator: other.value, keys: keys, sudo: sudo, containerRuntime: containerRuntime)
    }
    func removeCollaborator(_ user: Username, _ other: Username) async throws(ContainariumError) {
        // The account inside goes with the record: nothing is left that still opens the door.
        guard plane.inventory.get(user.containerName)?.state == .running else {
            throw ContainariumError(.failedPrecondition, "\(user.value)'s environment is not running: start it first, so that \(other.value)'s account inside it can be removed too")
        }
        _ = try await service.removeCollaboratorAccount(owner: user.value, collaborator: other.value)
    }
    func credentials(_ user: Username) async throws(ContainariumError) -> InstanceCredentials {
        try await service.credentials(username: user.value)
    }
    func scan(_ user: Username, scanner: String) async throws(ContainariumError) -> ScanReport {
        try await service.scan(username: user.value, scanner: scanner)
    }
    func checkScan(_ user: Username, scanner: String) async throws(ContainariumError) {
        try await service.checkScannable(username: user.value, scanner: scanner)
    }
    func sshConfig(_ user: Username, jumpHost: String?, keyPath: String?, gateway: SSHConfigExport.Gateway?) async throws(ContainariumError) -> String {
        try await service.exportSSHConfig(username: user.value, jumpHost: jumpHost, keyPath: keyPath, gateway: gateway)
    }
}
