public import ContainariumCore
public import ContainariumStore
public import Foundation
import Synchronization

/// Revoked credentials, kept in the store (so every daemon sharing it honours them) and cached
/// here for `refresh` seconds, so a check costs no query per request:
///
/// - **tokens by subject**: every token of a subject issued before the revocation is refused
///   (a JWT says when it was issued, to the second, so a new one is good from the next second);
/// - **certificates by serial number**: a client certificate whose serial is listed is refused.
///
/// A revocation made through one daemon reaches another that shares its store within `refresh`
/// seconds (the daemon that made it knows at once). Node tokens have their own revocation too:
/// removing a node (`node remove`) revokes every token issued for it before.
public final class Revocations: Sendable {
    public struct Entry: Sendable, Equatable {
        public var subject: String?
        public var certificateSerial: String?
        public var revokedAt: Date
    }

    static let subjectPrefix = "revoked-tokens."
    static let serialPrefix = "revoked-certificate."

    let store: Store
    let refresh: TimeInterval
    private struct Cache { var loaded = Date.distantPast; var subjects: [String: Date] = [:]; var serials: [String: Date] = [:] }
    private let cache = Mutex(Cache())

    public init(store: Store, refresh: TimeInterval = 5) {
        self.store = store
        self.refresh = refresh
    }

    /// A certificate serial as the API names it: lower-case hex, no separators or leading zeros.
    public static func normalizeSerial(_ s: String) throws(ContainariumError) -> String {
        var hex = s.lowercased().filter { $0 != ":" && $0 != " " }
        if hex.hasPrefix("0x") { hex.removeFirst(2) }
        while hex.count > 1, hex.hasPrefix("0") { hex.removeFirst() }
        guard !hex.isEmpty, hex.count <= 40, hex.allSatisfy(\.isHexDigit) else {
            throw .invalid("'\(s)' is not a certificate serial number (hex, up to 20 bytes)")
        }
        return hex
    }

    private func current(fresh: Bool = false) async throws(ContainariumError) -> Cache {
        let now = Date()
        let c = cache.withLock { $0 }
        if !fresh, now.timeIntervalSince(c.loaded) < refresh { return c }
        let subjects = try await store.settings(prefix: Self.subjectPrefix)
        let serials = try await store.settings(prefix: Self.serialPrefix)
        func dates(_ m: [String: String], _ prefix: String) -> [String: Date] {
            Dictionary(uniqueKeysWithValues: m.compactMap { k, v in Double(v).map { (String(k.dropFirst(prefix.count)), Date(timeIntervalSince1970: $0)) } })
        }
        let fresh = Cache(loaded: now, subjects: dates(subjects, Self.subjectPrefix), serials: dates(serials, Self.serialPrefix))
        cache.withLock { $0 = fresh }
        return fresh
    }

    /// Refuse a token of `subject` issued at `issuedAt` if the subject's tokens were revoked since.
    public func checkToken(subject: String, issuedAt: Date, fresh: Bool = false) async throws(ContainariumError) {
        guard let revoked = try await current(fresh: fresh).subjects[subject], issuedAt <= revoked else { return }
        throw .unauthenticated("the tokens of \(subject) issued before \(revoked.formatted(.iso8601)) were revoked: ask an admin for a new one")
    }

    /// Refuse a client certificate whose serial (hex) is revoked.
    public func checkCertificate(serial: String) async throws(ContainariumError) {
        guard let key = try? Self.normalizeSerial(serial), let revoked = try await current().serials[key] else { return }
        throw .unauthenticated("this client certificate (serial \(key)) was revoked at \(revoked.formatted(.iso8601)): ask an admin to issue a new one")
    }

    /// Revoke every token of `subject` issued until now.
    func revokeTokens(of subject: String, at now: Date = Date()) async throws(ContainariumError) -> Entry {
        try await store.setSetting(Self.subjectPrefix + subject, String(now.timeIntervalSince1970))
        cache.withLock { $0.subjects[subject] = now }
        return Entry(subject: subject, certificateSerial: nil, revokedAt: now)
    }

    /// Revoke one certificate by serial. Revoking it again keeps the first time.
    func revokeCertificate(serial: String, at now: Date = Date()) async throws(ContainariumError) -> Entry {
        let key = try Self.normalizeSerial(serial)
        if let earlier = try await current(fresh: true).serials[key] { return Entry(subject: nil, certificateSerial: key, revokedAt: earlier) }
        try await store.setSetting(Self.serialPrefix + key, String(now.timeIntervalSince1970))
        cache.withLock { $0.serials[key] = now }
        return Entry(subject: nil, certificateSerial: key, revokedAt: now)
    }

    /// Every revocation, newest first.
    public func list() async throws(ContainariumError) -> [Entry] {
        cache.withLock { $0.loaded = .distantPast }
        let c = try await current()
        let all = c.subjects.map { Entry(subject: $0.key, certificateSerial: nil, revokedAt: $0.value) }
            + c.serials.map { Entry(subject: nil, certificateSerial: $0.key, revokedAt: $0.value) }
        return all.sorted { $0.revokedAt > $1.revokedAt }
    }
}
