/// What a caller may do. `admin` sees and acts on everything; `user` only on environments it
/// owns or collaborates on.
public enum Role: String, Codable, Sendable, CaseIterable {
    case admin, user
    /// A cluster member: may only report its own state (`ReportNode`).
    case node
}

/// An authenticated principal, whichever interface it came through.
public struct Caller: Sendable, Equatable {
    public var subject: String
    public var role: Role
    /// Remote address (or "local").
    public var source: String
    /// rest, grpc or cli.
    public var interface: String

    public init(subject: String, role: Role, source: String, interface: String) {
        self.subject = subject
        self.role = role
        self.source = source
        self.interface = interface
    }

    public var isAdmin: Bool { role == .admin }
}
