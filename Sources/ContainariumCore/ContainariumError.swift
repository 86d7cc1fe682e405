/// The one error type of Containarium. Every layer throws it; every adapter maps it once
/// (CLI exit status and message today; HTTP and gRPC status later).
public struct ContainariumError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable, extensible error code. New codes never break callers that switch on `rawValue`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Value: String, Sendable, CaseIterable {
            case invalidArgument = "invalid_argument"
            case notFound = "not_found"
            case alreadyExists = "already_exists"
            case failedPrecondition = "failed_precondition"
            case resourceExhausted = "resource_exhausted"
            case permissionDenied = "permission_denied"
            case unauthenticated
            case unavailable
            case timeout
            case cancelled
            case unsupported
            case `internal`
            case pluginLoad = "plugin_load"
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        public static let invalidArgument = Code(.invalidArgument)
        public static let notFound = Code(.notFound)
        public static let alreadyExists = Code(.alreadyExists)
        public static let failedPrecondition = Code(.failedPrecondition)
        public static let resourceExhausted = Code(.resourceExhausted)
        public static let permissionDenied = Code(.permissionDenied)
        /// No valid credentials (missing, expired, forged token; no client certificate).
        public static let unauthenticated = Code(.unauthenticated)
        public static let unavailable = Code(.unavailable)
        public static let timeout = Code(.timeout)
        public static let cancelled = Code(.cancelled)
        public static let unsupported = Code(.unsupported)
        public static let `internal` = Code(.internal)
        /// A plugin could not be discovered, loaded or initialised.
        public static let pluginLoad = Code(.pluginLoad)

        /// The stable string form ("not_found"), used in JSON and logs.
        public var rawValue: String { value.rawValue }
        public var description: String { value.rawValue }

        public init?(rawValue: String) {
            guard let value = Value(rawValue: rawValue) else { return nil }
            self.value = value
        }

        /// The plugin ABI's status code (CTM_E_*) for this code.
        public var abiStatus: Int32 {
            switch value {
            case .invalidArgument: 1
            case .notFound: 2
            case .alreadyExists: 3
            case .failedPrecondition: 4
            case .resourceExhausted: 5
            case .permissionDenied, .unauthenticated: 6
            case .unavailable: 7
            case .timeout: 8
            case .cancelled: 9
            case .unsupported: 10
            case .internal, .pluginLoad: 11
            }
        }

        /// The code for a plugin ABI status (CTM_E_*); unknown values read as `.internal`.
        public init(abiStatus: Int32) {
            switch abiStatus {
            case 1: self = .invalidArgument
            case 2: self = .notFound
            case 3: self = .alreadyExists
            case 4: self = .failedPrecondition
            case 5: self = .resourceExhausted
            case 6: self = .permissionDenied
            case 7: self = .unavailable
            case 8: self = .timeout
            case 9: self = .cancelled
            case 10: self = .unsupported
            default: self = .internal
            }
        }

        /// Every code, for exhaustive tests and documentation.
        public static var all: [Code] { Value.allCases.map(Code.init) }

        /// The HTTP status of this code: the single mapping every REST route uses.
        public var httpStatus: Int {
            switch value {
            case .invalidArgument: 400
            case .unauthenticated: 401
            case .permissionDenied: 403
            case .notFound: 404
            case .alreadyExists: 409
            case .failedPrecondition: 412
            case .resourceExhausted: 429
            case .cancelled: 499
            case .unsupported: 501
            case .unavailable, .pluginLoad: 503
            case .timeout: 504
            case .internal: 500
            }
        }

        /// The gRPC status code number (google.rpc.Code) of this code.
        public var grpcStatus: Int {
            switch value {
            case .cancelled: 1
            case .invalidArgument: 3
            case .timeout: 4
            case .notFound: 5
            case .alreadyExists: 6
            case .permissionDenied: 7
            case .resourceExhausted: 8
            case .failedPrecondition: 9
            case .unsupported: 12
            case .internal: 13
            case .unavailable, .pluginLoad: 14
            case .unauthenticated: 16
            }
        }

        /// Process exit status used by the CLI for this code.
        public var exitCode: Int32 {
            switch value {
            case .invalidArgument: 2
            case .notFound: 3
            case .alreadyExists: 4
            case .failedPrecondition: 5
            case .permissionDenied, .unauthenticated: 6
            case .unavailable, .timeout: 7
            case .cancelled: 130
            default: 1
            }
        }
    }

    public var code: Code
    public var message: String
    /// A lower-level description of what went wrong (already free of secrets).
    public var cause: String?

    public init(_ code: Code, _ message: String, cause: String? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        if let cause, !cause.isEmpty { return "\(message) (\(cause))" }
        return message
    }

    public static func invalid(_ message: String) -> ContainariumError { .init(.invalidArgument, message) }
    public static func notFound(_ message: String) -> ContainariumError { .init(.notFound, message) }
    public static func alreadyExists(_ message: String) -> ContainariumError { .init(.alreadyExists, message) }
    public static func denied(_ message: String) -> ContainariumError { .init(.permissionDenied, message) }
    public static func unauthenticated(_ message: String) -> ContainariumError { .init(.unauthenticated, message) }
    public static func `internal`(_ message: String, cause: String? = nil) -> ContainariumError {
        .init(.internal, message, cause: cause)
    }
}
