public import ContainariumCore
public import Foundation
public import ContainariumPlatform
import Crypto
import JWTKit
import Synchronization

/// The claims of a Containarium token.
struct TokenClaims: JWTPayload, Equatable {
    var sub: SubjectClaim
    var iss: IssuerClaim
    var iat: IssuedAtClaim
    var exp: ExpirationClaim?
    var jti: IDClaim
    var roles: [String]

    func verify(using algorithm: some JWTAlgorithm) async throws {
        guard iss.value == Tokens.issuer else { throw JWTError.claimVerificationFailure(failedClaim: iss, reason: "wrong issuer") }
        try exp?.verifyNotExpired()
    }
}

/// HS256 tokens: minted by the CLI (`containarium token generate`), verified by the daemon.
public struct Tokens: Sendable {
    public static let issuer = "containarium"
    /// Secrets shorter than this are refused: HS256 is only as strong as its key.
    public static let minimumSecretLength = 32

    private let keys: JWTKeyCollection
    /// Tokens verified recently (by their SHA-256, never the token itself), with their expiry:
    /// a client sending the same token again skips the signature check and the key
    /// collection's actor hop. Bounded; an expired entry is never honoured.
    private let verified = VerifiedTokens()
    /// Tokens revoked by subject (`ControlPlane.revocations`); checked on every verification,
    /// cached or not. nil: nothing is revoked (the CLI minting tokens).
    public let revocations: Revocations?

    public init(secret: String, revocations: Revocations? = nil) async throws(ContainariumError) {
        self.revocations = revocations
        try Self.checkSecret(secret)
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
    }

    public static func checkSecret(_ secret: String) throws(ContainariumError) {
        guard secret.utf8.count >= minimumSecretLength else {
            throw .invalid("the JWT secret must be at least \(minimumSecretLength) bytes long (e.g. `openssl rand -base64 32`)")
        }
    }

    /// A fresh random secret (base64 of 32 random bytes).
    public static func randomSecret() -> String {
        var g = SystemRandomNumberGenerator()
        return Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }).base64EncodedString()
    }

    /// Parse an expiry such as "24h", "30m", "720h", "7d" or "0" (no expiry).
    public static func parseExpiry(_ text: String) throws(ContainariumError) -> TimeInterval? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        if t == "0" { return nil }
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            let number = t.dropLast(suffix.count)
            if suffix == "s", number.hasSuffix("m") { continue }
            if let n = Double(number), n > 0, n.isFinite { return n * factor }
        }
        throw .invalid("expiry '\(text)' is not valid: use a duration such as 30m, 24h, 720h or 7d, or 0 for none")
    }

    /// Token subjects: a user name, or a service name such as "admin" or "ci-bot".
    public static func validSubject(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, (1...64).contains(s.unicodeScalars.count),
              ("a"..."z").contains(first) || first == "_" else { return false }
        return s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || "_.-".unicodeScalars.contains($0) }
    }

    public func generate(username: String, roles: [Role], expiresIn: TimeInterval?, now: Date = Date()) async throws(ContainariumError) -> String {
        guard !roles.isEmpty else { throw .invalid("at least one role is required") }
        guard Self.validSubject(username) else { throw .invalid("'\(username)' is not a valid token subject (lowercase letters, digits, . _ -)") }
        let claims = TokenClaims(
            sub: .init(value: username), iss: .init(value: Self.issuer), iat: .init(value: now),
            exp: expiresIn.map { .init(value: now.addingTimeInterval($0)) }, jti: .init(value: UUID().uuidString),
            roles: roles.map(\.rawValue))
        do {
            return try await keys.sign(claims)
        } catch {
            throw .internal("could not sign the token", cause: "\(error)")
        }
    }

    /// Verify a bearer token: signature (HS256 only), issuer, expiry, known role. A node token
    /// must name its node (`node.NAME`) and expire.
    public func verify(_ token: String) async throws(ContainariumError) -> (subject: String, role: Role, issuedAt: Date, expiresAt: Date?) {
        let digest = SHA256.hash(data: Data(token.utf8))
        if let hit = verified.lookup(digest) {
            try await revocations?.checkToken(subject: hit.subject, issuedAt: hit.issuedAt)
            return hit
        }
        let claims: TokenClaims
        do {
            claims = try await keys.verify(token, as: TokenClaims.self)
        } catch let e as JWTError {
            let reason: String
            switch e.errorType {
            case .claimVerificationFailure: reason = e.reason ?? "a claim failed verification (expired or wrong issuer)"
            case .signatureVerificationFailed: reason = "bad signature"
            case .missingKIDHeader, .unknownKID: reason = "unknown key"
            default: reason = "malformed or unsupported token"
            }
            throw .unauthenticated("invalid token: \(reason)")
        } catch {
            throw .unauthenticated("invalid token")
        }
        guard Self.validSubject(claims.sub.value) else {
            throw .unauthenticated("invalid token: subject is not a valid user name")
        }
        let role: Role = claims.roles.contains("admin") ? .admin : claims.roles.contains("user") || claims.roles.isEmpty ? .user
            : claims.roles.contains("node") ? .node : claims.roles.contains("metrics") ? .metrics : .user
        if role == .node {
            let name = claims.sub.value.hasPrefix("node.") ? String(claims.sub.value.dropFirst("node.".count)) : ""
            guard Cluster.validNodeName(name), claims.exp != nil else {
                throw .unauthenticated("invalid token: a node token names its node and expires; mint one with `containarium node token --node NAME`")
            }
        }
        try await revocations?.checkToken(subject: claims.sub.value, issuedAt: claims.iat.value)
        verified.insert(digest, subject: claims.sub.value, role: role, issuedAt: claims.iat.value, expires: claims.exp?.value)
        return (claims.sub.value, role, claims.iat.value, claims.exp?.value)
    }
}

/// Secret resolution in the documented priority order.
public enum JWTSecretSource: Equatable, Sendable {
    case environment, file(String), flag, generated

    public static func resolve(environment: [String: String], file: String?, flag: String?) throws(ContainariumError) -> (String, JWTSecretSource) {
        if let s = environment["CONTAINARIUM_JWT_SECRET"], !s.isEmpty {
            try Tokens.checkSecret(s)
            return (s, .environment)
        }
        if let file {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw ContainariumError(.invalidArgument, "cannot read the JWT secret file \(file)", cause: "\(error.localizedDescription)")
            }
            let s = text.trimmingCharacters(in: .whitespacesAndNewlines)
            try Tokens.checkSecret(s)
            return (s, .file(file))
        }
        if let flag {
            try Tokens.checkSecret(flag)
            return (flag, .flag)
        }
        return (Tokens.randomSecret(), .generated)
    }
}

/// A small, bounded cache of verified tokens keyed by their SHA-256.
final class VerifiedTokens: Sendable {
    struct Entry { var subject: String; var role: Role; var issuedAt: Date; var expires: Date? }
    private let state = Mutex<[SHA256.Digest: Entry]>([:])
    static let capacity = 4096

    func lookup(_ digest: SHA256.Digest, now: Date = Date()) -> (subject: String, role: Role, issuedAt: Date, expiresAt: Date?)? {
        state.withLock { map in
            guard let e = map[digest] else { return nil }
            guard (e.expires ?? .distantFuture) > now else {
                map[digest] = nil
                return nil
            }
            return (e.subject, e.role, e.issuedAt, e.expires)
        }
    }

    func insert(_ digest: SHA256.Digest, subject: String, role: Role, issuedAt: Date, expires: Date?) {
        state.withLock { map in
            if map.count >= Self.capacity { map.removeAll(keepingCapacity: true) }
            map[digest] = Entry(subject: subject, role: role, issuedAt: issuedAt, expires: expires)
        }
    }
}
