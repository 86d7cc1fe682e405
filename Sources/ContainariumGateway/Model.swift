public import ContainariumCore
public import Foundation

/// Where an authenticated gateway login goes: one account inside one environment.
public struct GatewayRoute: Sendable, Equatable {
    public enum Role: String, Sendable { case owner, collaborator }
    /// The environment's owner (the SSH user name the client asked for).
    public var environment: String
    /// The account the session runs as inside the environment.
    public var account: String
    public var role: Role
    public var containerName: String
    /// The environment's IPv4 address on the node's bridge.
    public var address: String
    /// The environment sshd's host keys ("type base64"), pinned: the gateway never trusts on first use.
    public var hostKeys: [String]
    /// SHA256 fingerprint of the key that authenticated (for the audit log).
    public var keyFingerprint: String
    /// Set when the environment lives on another node of the cluster: the gateway reaches it
    /// through that node's SSH gateway instead of the local bridge.
    public var via: NodeHop?

    /// Another node's SSH gateway, trusted for one hop: its host key is pinned, and it accepts
    /// this gateway's upstream key because the control plane told it to (`ReportNode`).
    public struct NodeHop: Sendable, Equatable {
        public var node: String
        public var host: String
        public var port: Int
        public var hostKey: String
        /// A local unix socket that reaches the node's gateway (the node's link to the control
        /// plane) instead of HOST:PORT.
        public var socketPath: String?
        public init(node: String, host: String, port: Int, socketPath: String? = nil, hostKey: String) {
            self.socketPath = socketPath
            self.node = node
            self.host = host
            self.port = port
            self.hostKey = hostKey
        }
    }

    /// The user name a peer gateway logs in with at the next hop: ENVIRONMENT+ACCOUNT ('+' is
    /// never part of a user name, so the split is unambiguous).
    public var hopUser: String { environment + "+" + account }

    public init(environment: String, account: String, role: Role, containerName: String, address: String, hostKeys: [String], keyFingerprint: String,
                via: NodeHop? = nil) {
        self.via = via
        self.environment = environment
        self.account = account
        self.role = role
        self.containerName = containerName
        self.address = address
        self.hostKeys = hostKeys
        self.keyFingerprint = keyFingerprint
    }
}

/// Why a login was refused. The client only ever sees "permission denied"; the audit log sees this.
public enum GatewayDenial: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidUsername(String)
    case unknownEnvironment(String)
    case keyNotAuthorized(String)
    case notRunning(String)
    case unavailable(String)

    /// Whether the refusal counts towards banning the source address.
    public var countsAsFailure: Bool {
        switch self {
        case .invalidUsername, .unknownEnvironment, .keyNotAuthorized: true
        case .notRunning, .unavailable: false
        }
    }

    public var description: String {
        switch self {
        case .invalidUsername(let u): "not a valid user name: \(u)"
        case .unknownEnvironment(let u): "no environment for \(u)"
        case .keyNotAuthorized(let u): "the key is not authorized for \(u)'s environment"
        case .notRunning(let u): "\(u)'s environment is not running"
        case .unavailable(let why): "environment unavailable: \(why)"
        }
    }
}

/// One audit entry from the gateway.
public struct GatewayAuditEvent: Sendable, Equatable {
    public var action: String
    /// The authenticated account, or the name the client asked for before authentication.
    public var actor: String
    public var target: String
    public var source: String
    /// "ok" or an error code.
    public var result: String
    public var detail: String
    /// Written before (or without) a login: a connection, a refused key, the end of a connection
    /// that never logged in. Anyone can cause these, so they count against the source address's
    /// audit budget (`AuditLimiter`); rows of logged-in sessions and bans are always written.
    public var preLogin: Bool

    public init(action: String, actor: String, target: String, source: String, result: String = "ok", detail: String = "", preLogin: Bool = false) {
        self.preLogin = preLogin
        self.action = action
        self.actor = actor
        self.target = target
        self.source = source
        self.result = result
        self.detail = detail
    }
}

/// What the gateway needs from the control plane. The daemon implements it over its
/// service layer; the gateway itself never talks to a backend.
public protocol GatewayDirectory: Sendable {
    /// Resolve the SSH user name and the public key ("type base64") that proved itself.
    func route(environment: String, key: String, fingerprint: String) async -> Result<GatewayRoute, GatewayDenial>
    /// Install the gateway's upstream key in the environment's sshd, accepted only from `from`,
    /// and return the environment's current host keys.
    func enroll(environment: String, gatewayKey: String, from: String) async throws(ContainariumError) -> [String]
    func audit(_ event: GatewayAuditEvent) async
}

/// Brute-force protection settings.
public struct BanPolicy: Sendable, Equatable {
    /// Failed connections (that tried at least one authentication and never succeeded) ...
    public var maxFailures: Int = 5
    /// ... within this window ...
    public var window: TimeInterval = 600
    /// ... ban the source address for this long.
    public var banDuration: TimeInterval = 3600

    public init(maxFailures: Int = 5, window: TimeInterval = 600, banDuration: TimeInterval = 3600) {
        self.maxFailures = maxFailures
        self.window = window
        self.banDuration = banDuration
    }
}

public struct GatewayOptions: Sendable {
    public var host = "0.0.0.0"
    public var port = 2222
    /// Holds the host key and the upstream key (0700).
    public var keyDir = "/var/lib/containarium/gateway"
    public var bans = BanPolicy()
    /// Authentication attempts allowed per connection (OpenSSH's MaxAuthTries).
    public var maxAuthAttempts = 6
    /// A connection that has not authenticated after this long is closed (LoginGraceTime).
    public var loginGrace: TimeInterval = 30
    /// Connections open at once, in all; one more is refused with a line saying why.
    public var maxConnections = 1024
    /// Connections from one address that have not authenticated yet (OpenSSH's MaxStartups):
    /// one more from that address is refused until one of them logs in or goes.
    public var maxStartupsPerAddress = 16
    /// The name clients use to reach the gateway (for exported SSH configurations).
    public var publicHost = "localhost"
    /// Event-loop threads.
    public var threads = max(2, ProcessInfo.processInfo.activeProcessorCount)
    /// Addresses of proxies (the sentinel) whose connections start with a PROXY protocol header
    /// (v1 or v2) naming the real client: that address is the connection's source for bans,
    /// limits and the audit log. A connection from them without a valid header is closed.
    public var trustedProxies: Set<String> = []

    public init() {}
}
