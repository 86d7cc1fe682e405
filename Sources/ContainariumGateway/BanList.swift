public import ContainariumCore
public import ContainariumStore
public import Foundation
import Synchronization

/// Where bans live so that they survive a gateway restart and `gateway bans --unban` reaches a
/// running gateway. `Store` is the production implementation.
public protocol GatewayBanStore: Sendable {
    func activeBans(now: Date) async throws(ContainariumError) -> [GatewayBanRecord]
    func saveBan(_ ban: GatewayBanRecord) async throws(ContainariumError)
}

extension Store: GatewayBanStore {}

/// Per-source-address brute-force protection. A *failure* is a connection that tried to
/// authenticate at least once and never succeeded; `maxFailures` of them within `window`
/// ban the address for `banDuration`. Failures age out of the window only: a successful login
/// clears nothing, so someone with an account of their own cannot interleave their logins with
/// guesses at others' to stay under the limit. Connections that never try to authenticate (port
/// probes, health checks) are not failures.
public final class BanList: Sendable {
    public let policy: BanPolicy
    let store: (any GatewayBanStore)?

    struct State {
        var failures: [String: [Date]] = [:]
        var bans: [String: GatewayBanRecord] = [:]
    }
    let state = Mutex(State())

    public init(policy: BanPolicy, store: (any GatewayBanStore)?) {
        self.policy = policy
        self.store = store
    }

    /// The ban in force for `address`, if any.
    public func ban(for address: String, now: Date = Date()) -> GatewayBanRecord? {
        state.withLock { s in
            guard let b = s.bans[address] else { return nil }
            if b.until <= now { s.bans[address] = nil; return nil }
            return b
        }
    }

    /// Count a failed connection. Returns the new ban when this failure triggers one.
    public func recordFailure(_ address: String, now: Date = Date()) -> GatewayBanRecord? {
        state.withLock { s in
            let recent = (s.failures[address] ?? []).filter { now.timeIntervalSince($0) < policy.window } + [now]
            guard recent.count >= policy.maxFailures else {
                s.failures[address] = recent
                return nil
            }
            s.failures[address] = nil
            let ban = GatewayBanRecord(address: address, bannedAt: now, until: now.addingTimeInterval(policy.banDuration), failures: recent.count)
            s.bans[address] = ban
            return ban
        }
    }

    /// Addresses banned now.
    public func activeCount(now: Date = Date()) -> Int { state.withLock { s in s.bans.values.filter { $0.until > now }.count } }

    public func failures(_ address: String) -> Int { state.withLock { $0.failures[address]?.count ?? 0 } }

    public func persist(_ ban: GatewayBanRecord) async throws(ContainariumError) {
        try await store?.saveBan(ban)
    }

    /// Replace the in-memory bans with the store's (picks up bans from before a restart and
    /// unbans made by the CLI).
    public func reload(now: Date = Date()) async throws(ContainariumError) {
        guard let store else { return }
        let bans = try await store.activeBans(now: now)
        state.withLock { s in
            s.bans = Dictionary(bans.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        }
    }
}
