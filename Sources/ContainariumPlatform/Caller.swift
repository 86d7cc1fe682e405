public import Foundation

/// What a caller may do. `admin` sees and acts on everything; `user` only on environments it
/// owns or collaborates on.
public enum Role: String, Codable, Sendable, CaseIterable {
    case admin, user
    /// A cluster member: may only report its own state and hold its own link (NodeService),
    /// as the node its token names (`node.NAME`).
    case node
    /// A metrics scraper (Prometheus): may only read `GET /metrics`, nothing else on any interface.
    case metrics
}

/// An authenticated principal, whichever interface it came through.
public struct Caller: Sendable, Equatable {
    public var subject: String
    public var role: Role
    /// Remote address (or "local").
    public var source: String
    /// rest, grpc or cli.
    public var interface: String
    /// When the caller's credential was issued (a token's `iat`, a certificate's notBefore), for
    /// revocation; nil for callers without one (the local socket).
    public var issuedAt: Date?
    /// When that credential expires, if it does.
    public var expiresAt: Date?
    /// Whether a client certificate (mTLS), not a token, named the caller: such a node is not
    /// sent renewed tokens (its certificate is its identity).
    public var byCertificate = false

    public init(subject: String, role: Role, source: String, interface: String, issuedAt: Date? = nil, expiresAt: Date? = nil) {
        self.subject = subject
        self.role = role
        self.source = source
        self.interface = interface
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
    }

    /// The node a node token names (`node.NAME`); nil for other callers.
    public var nodeName: String? {
        guard role == .node, subject.hasPrefix("node.") else { return nil }
        return String(subject.dropFirst("node.".count))
    }

    public var isAdmin: Bool { role == .admin }
}
