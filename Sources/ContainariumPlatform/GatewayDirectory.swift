public import ContainariumCore
public import ContainariumGateway
import ContainariumService
import ContainariumStore
public import Foundation
import Logging
import Synchronization

/// The SSH gateway's view of the control plane: which environment a login names, whose key it
/// is (owner or collaborator), where the environment listens and which host keys it has.
///
/// The environment's own `authorized_keys` files are the truth (keys added with `ssh-keys add`
/// or `collaborator add` land there), so each environment's keys and host keys are read with
/// one exec and cached: dropped when the control plane changes access (keys, collaborators,
/// deletion), re-read after `ttl`, and re-read at once (at most every `missRefresh`) when a
/// key is not found, so a key added inside the environment works on the next try.
public final class ControlPlaneGatewayDirectory: GatewayDirectory {
    let plane: ControlPlane
    let ttl: TimeInterval
    let missRefresh: TimeInterval

    struct Profile {
        /// account → keys ("type base64")
        var keys: [String: Set<String>]
        var hostKeys: [String]
        var accounts: [String]
        var fetched: Date
    }
    private let profiles = Mutex<[String: Profile]>([:])

    public init(plane: ControlPlane, ttl: TimeInterval = 30, missRefresh: TimeInterval = 2) {
        self.plane = plane
        self.ttl = ttl
        self.missRefresh = missRefresh
        plane.onAccessChange { [weak self] user in self?.forget(user) }
    }

    func forget(_ user: String) { profiles.withLock { $0[user] = nil } }

    /// Prints "key ACCOUNT LINE" for each account's authorized_keys and "host LINE" for each
    /// sshd host key. Accounts that do not exist are skipped.
    static let profileScript = """
        for u in "$@"; do
            h=$(getent passwd "$u" | cut -d: -f6) || continue
            [ -r "$h/.ssh/authorized_keys" ] || continue
            while IFS= read -r line || [ -n "$line" ]; do printf 'key %s %s\\n' "$u" "$line"; done < "$h/.ssh/authorized_keys"
        done
        for f in /etc/ssh/ssh_host_*_key.pub; do [ -r "$f" ] && printf 'host %s\\n' "$(cat "$f")"; done
        true
        """

    /// Installs the gateway's key for every account, restricted to the gateway's address, and
    /// makes sshd read it. Prints the host keys like the profile script.
    static let enrollScript = """
        set -e
        key="$1"; from="$2"
        umask 022
        printf 'from="%s" %s containarium-gateway\\n' "$from" "$key" > /etc/ssh/containarium_gateway_keys.tmp
        mv /etc/ssh/containarium_gateway_keys.tmp /etc/ssh/containarium_gateway_keys
        mkdir -p /etc/ssh/sshd_config.d
        printf '# Managed by Containarium: lets the SSH gateway log in (from its address only).\\nAuthorizedKeysFile .ssh/authorized_keys /etc/ssh/containarium_gateway_keys\\n# Every gateway session arrives from one address: allow many at once.\\nMaxStartups 100:30:200\\nMaxSessions 64\\n' > /etc/ssh/sshd_config.d/10-containarium-gateway.conf
        grep -qs '^Include /etc/ssh/sshd_config.d/' /etc/ssh/sshd_config || sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config
        sshd -t
        if [ -s /run/sshd.pid ]; then kill -HUP "$(cat /run/sshd.pid)"; else systemctl reload ssh; fi
        for f in /etc/ssh/ssh_host_*_key.pub; do [ -r "$f" ] && printf 'host %s\\n' "$(cat "$f")"; done
        """

    public func route(environment: String, key: String, fingerprint: String) async -> Result<GatewayRoute, GatewayDenial> {
        // A hop from the control plane's gateway: ENVIRONMENT+ACCOUNT, with a key the control
        // plane vouched for. Anyone else using '+' gets what an invalid name gets.
        var name = environment
        var hopAccount: Username?
        if let plus = environment.firstIndex(of: "+") {
            // A key this node does not know as its control plane's (yet: it learns them from the
            // reply to its report) gets in nowhere, but is not counted towards a ban: every hop
            // arrives from the link's one address, and a node that just restarted must not ban it.
            guard plane.isGatewayPeer(key) else { return .failure(.unavailable("not a hop this node knows the gateway of")) }
            guard let account = try? Username(String(environment[environment.index(after: plus)...])) else {
                return .failure(.invalidUsername(String(environment.prefix(40))))
            }
            name = String(environment[..<plus])
            hopAccount = account
        }
        guard let owner = try? Username(name) else { return .failure(.invalidUsername(String(environment.prefix(40)))) }
        let wanted = PinnedKey.normalize(key)

        // On another node of this control plane's cluster: through that node's gateway.
        if let node = try? await plane.remoteNode(of: owner) {
            guard hopAccount == nil else { return .failure(.unavailable("\(owner.value)'s environment is not on this node")) }
            return await remoteRoute(owner, on: node, key: wanted, account: nil, fingerprint: fingerprint)
        }
        return await localRoute(owner, key: wanted, account: hopAccount, fingerprint: fingerprint)
    }

    /// The route for a session the control plane already authorized (the browser terminal):
    /// `account` inside `owner`'s environment, wherever it lives.
    public func route(owner: Username, account: Username) async -> Result<GatewayRoute, GatewayDenial> {
        if let node = try? await plane.remoteNode(of: owner) {
            return await remoteRoute(owner, on: node, key: nil, account: account, fingerprint: "-")
        }
        return await localRoute(owner, key: nil, account: account, fingerprint: "-")
    }

    private func localRoute(_ owner: Username, key wanted: String?, account hopAccount: Username?, fingerprint: String) async -> Result<GatewayRoute, GatewayDenial> {
        var info = plane.inventory.get(owner.containerName)
        // The inventory may not have caught up with a start yet (no address): ask the backend.
        if info == nil || info?.address == nil { info = try? await plane.service.info(username: owner.value) }
        guard let info else { return .failure(.unknownEnvironment(owner.value)) }
        guard info.state == .running else { return .failure(.notRunning(owner.value)) }
        // Only the address the backend assigned (its own record of the NIC), never one the
        // guest reports: software inside can put any address on an interface of its own.
        guard let address = info.address else {
            return .failure(.unavailable("\(owner.value)'s environment has no address its backend assigned (none yet, or it is not on a network the backend manages, which the gateway needs)"))
        }
        let exec: Exec = { [plane] command throws(ContainariumError) in try await plane.service.exec(username: owner.value, command: command) }
        let (profile, account) = await resolve(owner, key: wanted, exec: exec)
        guard let profile else { return .failure(.unavailable("could not read \(owner.value)'s environment")) }
        let chosen: String
        if let hopAccount {
            guard profile.accounts.contains(hopAccount.value) else { return .failure(.keyNotAuthorized(owner.value)) }
            chosen = hopAccount.value
        } else {
            guard let account else { return .failure(.keyNotAuthorized(owner.value)) }
            chosen = account
        }
        return .success(GatewayRoute(
            environment: owner.value, account: chosen, role: chosen == owner.value ? .owner : .collaborator,
            containerName: owner.containerName, address: address, hostKeys: profile.hostKeys, keyFingerprint: fingerprint))
    }

    typealias Exec = @Sendable ([String]) async throws(ContainariumError) -> ExecResult

    /// The environment's profile (cached) and the account `key` belongs to, re-reading once
    /// when the key is not found and the cache is older than `missRefresh`.
    private func resolve(_ owner: Username, key wanted: String?, exec: Exec) async -> (Profile?, String?) {
        var profile = profiles.withLock { $0[owner.value] }
        if profile == nil || Date().timeIntervalSince(profile?.fetched ?? .distantPast) > ttl {
            profile = await fetch(owner, exec: exec)
        }
        var account = profile.flatMap { Self.match(wanted, in: $0) }
        if account == nil, let p = profile, Date().timeIntervalSince(p.fetched) > missRefresh {
            profile = await fetch(owner, exec: exec)
            account = profile.flatMap { Self.match(wanted, in: $0) }
        }
        return (profile, account)
    }

    /// An environment on another node: its state and address from that node, its keys read
    /// there with the same script, and the hop through that node's gateway.
    private func remoteRoute(_ owner: Username, on node: String, key wanted: String?, account forced: Username?, fingerprint: String) async -> Result<GatewayRoute, GatewayDenial> {
        let view: ContainerView
        do {
            view = try await plane.member(node).view(owner)
        } catch where error.code == .notFound {
            return .failure(.unknownEnvironment(owner.value))
        } catch {
            return .failure(.unavailable("node \(node): \(error.message)"))
        }
        guard view.state == ContainerView.stateName(.running) else { return .failure(.notRunning(owner.value)) }
        guard let address = view.network.ipAddress ?? view.network.ipv4.first else {
            return .failure(.unavailable("\(owner.value)'s environment has no address yet"))
        }
        guard let cluster = plane.cluster else { return .failure(.unavailable("no cluster")) }
        let hop: (host: String, port: Int, socketPath: String?, hostKey: String)
        do throws(ContainariumError) { hop = try cluster.gateway(of: node) } catch { return .failure(.unavailable(error.message)) }
        let exec: Exec = { [plane] command throws(ContainariumError) in
            try await plane.member(node).exec(owner, command, account: nil)
        }
        let (profile, account) = await resolve(owner, key: wanted, exec: exec)
        guard let profile else { return .failure(.unavailable("could not read \(owner.value)'s environment on \(node)")) }
        if let forced, !profile.accounts.contains(forced.value) { return .failure(.keyNotAuthorized(owner.value)) }
        guard let account = forced?.value ?? account else { return .failure(.keyNotAuthorized(owner.value)) }
        return .success(GatewayRoute(
            environment: owner.value, account: account, role: account == owner.value ? .owner : .collaborator,
            containerName: owner.containerName, address: address, hostKeys: profile.hostKeys, keyFingerprint: fingerprint,
            via: GatewayRoute.NodeHop(node: node, host: hop.host, port: hop.port, socketPath: hop.socketPath, hostKey: hop.hostKey)))
    }

    /// The owner's keys win over a collaborator's (a key registered for both logs in as the owner).
    static func match(_ key: String?, in profile: Profile) -> String? {
        guard let key else { return nil }
        return profile.accounts.first { profile.keys[$0]?.contains(key) ?? false }
    }

    private func fetch(_ owner: Username, exec: Exec) async -> Profile? {
        let collaborators = (try? await plane.store.collaborators(of: owner.value).map(\.collaborator)) ?? []
        let accounts = [owner.value] + collaborators
        guard let r = try? await exec(["sh", "-c", Self.profileScript, "sh"] + accounts), r.exitCode == 0 else {
            return nil
        }
        var keys: [String: Set<String>] = [:]
        var hostKeys: [String] = []
        for line in r.stdout.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            if parts.count == 3, parts[0] == "key", accounts.contains(parts[1]), let k = PinnedKey.find(in: parts[2]) {
                keys[parts[1], default: []].insert(k)
            } else if parts.count >= 2, parts[0] == "host", let k = PinnedKey.normalize(line.dropFirst(5).description) {
                hostKeys.append(k)
            }
        }
        let profile = Profile(keys: keys, hostKeys: hostKeys, accounts: accounts, fetched: Date())
        profiles.withLock { $0[owner.value] = profile }
        return profile
    }

    public func enroll(environment: String, gatewayKey: String, from: String) async throws(ContainariumError) -> [String] {
        let owner = try Username(environment)
        guard from.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == ":" }), !from.isEmpty else {
            throw .invalid("not an address: \(from)")
        }
        guard let key = PinnedKey.normalize(gatewayKey) else { throw .invalid("not a public key") }
        let r = try await plane.service.exec(username: owner.value, command: ["sh", "-c", Self.enrollScript, "sh", key, from])
        guard r.exitCode == 0 else {
            throw ContainariumError(.unavailable, "could not enroll the gateway in \(owner.value)'s environment", cause: r.stderr)
        }
        let hostKeys = r.stdout.split(separator: "\n").filter { $0.hasPrefix("host ") }.compactMap { PinnedKey.normalize(String($0.dropFirst(5))) }
        profiles.withLock { $0[owner.value]?.hostKeys = hostKeys }
        await plane.audit(actor: "gateway", role: "system", action: "gateway.enroll", target: owner.value, source: from, interface: "ssh",
                          result: "ok", detail: "gateway key installed for logins from \(from)")
        return hostKeys
    }

    public func audit(_ event: GatewayAuditEvent) async {
        // What comes before a login (a connection, a refused key, the end of a connection that
        // never logged in) shares the address's budget; what a logged-in user did does not.
        await plane.audit(actor: event.actor, role: "user", action: event.action, target: event.target, source: event.source,
                          interface: "ssh", result: event.result, detail: event.detail, beforeLogin: event.preLogin)
    }
}

/// "type base64" forms of OpenSSH key lines.
enum PinnedKey {
    static let types: Set<String> = SSHPublicKey.allowedTypes

    static func normalize(_ line: String) -> String? {
        let parts = line.split(separator: " ")
        guard parts.count >= 2, types.contains(String(parts[0])) else { return nil }
        return "\(parts[0]) \(parts[1])"
    }

    /// The key of an authorized_keys line that opens the gateway. A line with options
    /// (`from=`, `expiry-time=`, `restrict`, `command=`, ...) opens nothing: the gateway cannot
    /// honour them (it is not the environment's sshd), so it does not let such a key in at all
    /// rather than ignore what the line restricts.
    static func find(in line: String) -> String? {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { return nil }
        let parts = trimmed.split(separator: " ").map(String.init)
        guard parts.count >= 2, types.contains(parts[0]) else { return nil }
        return "\(parts[0]) \(parts[1])"
    }
}
