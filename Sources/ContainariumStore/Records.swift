public import Foundation

/// Where a container is in Containarium's own bookkeeping (Incus says what exists).
public enum ContainerPhase: String, Codable, Sendable, CaseIterable {
    /// A create is in progress (or was interrupted: the reconciler decides).
    case creating
    /// Created completely; owned and usable.
    case ready
    /// A delete is in progress.
    case deleting
}

public struct ContainerRecord: Codable, Sendable, Equatable {
    public var username: String
    public var owner: String
    public var node: String
    public var backend: String
    public var image: String?
    public var phase: ContainerPhase
    public var operationID: String?
    public var createdAt: Date
    public var updatedAt: Date

    public init(username: String, owner: String, node: String, backend: String, image: String?, phase: ContainerPhase,
                operationID: String?, createdAt: Date = Date(), updatedAt: Date = Date()) {
        self.username = username
        self.owner = owner
        self.node = node
        self.backend = backend
        self.image = image
        self.phase = phase
        self.operationID = operationID
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

public struct KeyRecord: Codable, Sendable, Equatable {
    public var username: String
    public var fingerprint: String
    public var publicKey: String
    public var addedAt: Date
    public init(username: String, fingerprint: String, publicKey: String, addedAt: Date = Date()) {
        self.username = username
        self.fingerprint = fingerprint
        self.publicKey = publicKey
        self.addedAt = addedAt
    }
}

public struct CollaboratorRecord: Codable, Sendable, Equatable {
    public var username: String
    public var collaborator: String
    public var addedBy: String
    public var addedAt: Date
    /// Full sudo inside the environment (default: only a logged `sudo su - OWNER`).
    public var sudo: Bool
    /// Member of the container runtime's group (docker).
    public var containerRuntime: Bool
    public init(username: String, collaborator: String, addedBy: String, addedAt: Date = Date(), sudo: Bool = false, containerRuntime: Bool = false) {
        self.username = username
        self.collaborator = collaborator
        self.addedBy = addedBy
        self.addedAt = addedAt
        self.sudo = sudo
        self.containerRuntime = containerRuntime
    }
}

/// An address the SSH gateway refuses after repeated failed logins.
public struct GatewayBanRecord: Codable, Sendable, Equatable {
    public var address: String
    public var bannedAt: Date
    public var until: Date
    public var failures: Int
    public init(address: String, bannedAt: Date, until: Date, failures: Int) {
        self.address = address
        self.bannedAt = bannedAt
        self.until = until
        self.failures = failures
    }
}

public enum OperationState: String, Codable, Sendable, CaseIterable {
    case running, succeeded, failed
}

public struct OperationRecord: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    public var target: String
    public var actor: String
    public var node: String
    /// The daemon instance that runs it (node, pid and start time): lets the reconciler tell an
    /// operation whose daemon died from one still in flight.
    public var daemon: String
    public var state: OperationState
    public var step: Int
    public var total: Int
    public var message: String
    public var errorCode: String?
    public var errorMessage: String?
    /// JSON of the result when it succeeded.
    public var result: String?
    public var createdAt: Date
    public var updatedAt: Date

    public init(id: String = UUID().uuidString.lowercased(), kind: String, target: String, actor: String, node: String, daemon: String,
                state: OperationState = .running, step: Int = 0, total: Int = 0, message: String = "queued",
                errorCode: String? = nil, errorMessage: String? = nil, result: String? = nil,
                createdAt: Date = Date(), updatedAt: Date = Date()) {
        self.id = id
        self.kind = kind
        self.target = target
        self.actor = actor
        self.node = node
        self.daemon = daemon
        self.state = state
        self.step = step
        self.total = total
        self.message = message
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.result = result
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

public struct AuditEntry: Codable, Sendable, Equatable {
    public var id: String
    public var at: Date
    /// Who: the token subject, the client certificate, or "anonymous".
    public var actor: String
    public var role: String
    public var action: String
    public var target: String
    public var source: String
    /// rest, grpc or cli.
    public var interface: String
    /// "ok" or the error code.
    public var result: String
    public var detail: String

    public init(id: String = UUID().uuidString.lowercased(), at: Date = Date(), actor: String, role: String, action: String,
                target: String, source: String, interface: String, result: String, detail: String = "") {
        self.id = id
        self.at = at
        self.actor = actor
        self.role = role
        self.action = action
        self.target = target
        self.source = source
        self.interface = interface
        self.result = result
        self.detail = detail
    }
}

public struct AuditFilter: Sendable, Equatable {
    public var actor: String?
    public var action: String?
    public var target: String?
    public var result: String?
    public var since: Date?
    public var until: Date?
    public var limit: Int
    public init(actor: String? = nil, action: String? = nil, target: String? = nil, result: String? = nil,
                since: Date? = nil, until: Date? = nil, limit: Int = 100) {
        self.actor = actor
        self.action = action
        self.target = target
        self.result = result
        self.since = since
        self.until = until
        self.limit = limit
    }
}

/// One scan of one environment by one scanner: what the scanner reported (`report`, the
/// scanner/1 ScanReport as JSON, empty when the scan failed) and how it went.
public struct ScanRecord: Codable, Sendable, Equatable {
    public var id: String
    public var username: String
    public var node: String
    public var scanner: String
    public var startedAt: Date
    public var durationMs: Int64
    /// "clean", "findings", "incomplete" (nothing found, but a check could not run: a missing
    /// database) or "failed" (`error` says why).
    public var status: String
    public var error: String
    public var findings: Int
    /// "manual" or "schedule".
    public var trigger: String
    public var report: String

    public init(id: String = UUID().uuidString, username: String, node: String, scanner: String, startedAt: Date, durationMs: Int64, status: String,
                error: String = "", findings: Int, trigger: String, report: String) {
        self.id = id
        self.username = username
        self.node = node
        self.scanner = scanner
        self.startedAt = startedAt
        self.durationMs = durationMs
        self.status = status
        self.error = error
        self.findings = findings
        self.trigger = trigger
        self.report = report
    }
}
