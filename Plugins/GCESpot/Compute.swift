import ContainariumCore
import Foundation

/// The parts of a Compute Engine `Instance` the plugin reads.
struct GCEInstance: Decodable, Sendable {
    struct AccessConfig: Decodable, Sendable { var natIP: String? }
    struct NetworkInterface: Decodable, Sendable {
        var networkIP: String?
        var accessConfigs: [AccessConfig]?
    }
    struct Scheduling: Decodable, Sendable {
        var preemptible: Bool?
        var provisioningModel: String?
    }

    var id: String?
    var name: String?
    var status: String?
    var networkInterfaces: [NetworkInterface]?
    var scheduling: Scheduling?
    var lastStartTimestamp: String?
    var lastStopTimestamp: String?
}

/// The parts of a Compute Engine `Operation` the plugin reads.
struct GCEOperation: Decodable, Sendable {
    struct Problem: Decodable, Sendable {
        var code: String?
        var message: String?
    }
    struct Errors: Decodable, Sendable { var errors: [Problem]? }

    var name: String
    var status: String?
    var operationType: String?
    var targetId: String?
    var insertTime: String?
    var endTime: String?
    var error: Errors?
    var httpErrorStatusCode: Int?
}

private struct OperationList: Decodable {
    var items: [GCEOperation]?
}

/// Google's JSON error body: {"error": {"code", "message", "errors": [{"reason", "message"}], "status"}}.
private struct GoogleError: Decodable {
    struct Body: Decodable {
        struct Item: Decodable {
            var reason: String?
            var message: String?
        }
        var code: Int?
        var message: String?
        var status: String?
        var errors: [Item]?
    }
    var error: Body?
}

/// The Compute Engine REST API (v1) for one project and zone: instances.get/start/stop and
/// zoneOperations.get/list, with a bearer token from `TokenProvider` (fetched again once when
/// the API answers 401).
final class ComputeClient: Sendable {
    static let service = "compute API"
    let base: String
    let project: String
    let zone: String
    private let http: HTTPClient
    private let tokens: TokenProvider
    private let requestTimeout: Double
    private let reach: Reachability

    init(settings: Settings, http: HTTPClient, tokens: TokenProvider, reach: Reachability) {
        base = settings.computeBaseURL
        project = settings.project
        zone = settings.zone
        self.http = http
        self.tokens = tokens
        self.requestTimeout = settings.requestTimeout
        self.reach = reach
    }

    private var zonePath: String { "projects/\(Percent.encode(project))/zones/\(Percent.encode(zone))" }

    /// instances.get; `timeout` shortens the request's deadline (health probes).
    func instance(_ name: String, timeout: Double? = nil, cancelled: () -> Bool) throws(ContainariumError) -> GCEInstance {
        try decode(
            GCEInstance.self, call("GET", "\(zonePath)/instances/\(Percent.encode(name))", timeout: timeout, cancelled: cancelled),
            "instances.get \(name)")
    }

    /// POST instances/NAME/start or /stop: the operation Google started.
    func act(_ action: String, _ name: String, cancelled: () -> Bool) throws(ContainariumError) -> GCEOperation {
        try decode(
            GCEOperation.self, call("POST", "\(zonePath)/instances/\(Percent.encode(name))/\(action)", cancelled: cancelled),
            "instances.\(action) \(name)")
    }

    func operation(_ name: String, cancelled: () -> Bool) throws(ContainariumError) -> GCEOperation {
        try decode(GCEOperation.self, call("GET", "\(zonePath)/operations/\(Percent.encode(name))", cancelled: cancelled), "zoneOperations.get \(name)")
    }

    /// The zone's `compute.instances.preempted` operations of the instance with this id, newest
    /// first (Compute's list filter syntax: parenthesised terms, ANDed).
    func preemptions(instanceID: String, cancelled: () -> Bool) throws(ContainariumError) -> [GCEOperation] {
        let filter = "(operationType = \"compute.instances.preempted\") AND (targetId = \"\(instanceID)\")"
        let query = Percent.query([("filter", filter), ("orderBy", "creationTimestamp desc"), ("maxResults", "20")])
        let list = try decode(OperationList.self, call("GET", "\(zonePath)/operations", query: query, cancelled: cancelled), "zoneOperations.list")
        return list.items ?? []
    }

    private func decode<T: Decodable>(_ type: T.Type, _ data: Data, _ what: String) throws(ContainariumError) -> T {
        do { return try JSONDecoder().decode(type, from: data) } catch {
            throw .internal("the compute API answered \(what) with JSON this plugin cannot read", cause: WireJSON.describe(error))
        }
    }

    /// One API call; the answer's body on 2xx, else the error Google's answer says.
    private func call(
        _ method: String, _ path: String, query: String = "", timeout: Double? = nil, cancelled: () -> Bool
    ) throws(ContainariumError) -> Data {
        guard let url = URL(string: "\(base)/\(path)\(query.isEmpty ? "" : "?" + query)") else {
            throw .internal("cannot form the compute API URL for \(path)")
        }
        let what = "\(method) \(path)"
        var retried = false
        while true {
            let token = try tokens.token(cancelled: cancelled)
            let r: HTTPResponse
            do throws(HTTPClient.Failure) {
                r = try http.send(
                    method, url, headers: ["Authorization": "Bearer \(token)", "Accept": "application/json"],
                    body: method == "POST" ? Data() : nil, deadline: Date().addingTimeInterval(min(timeout ?? requestTimeout, requestTimeout)), cancelled: cancelled)
            } catch {
                switch error {
                case .cancelled: throw ContainariumError(.cancelled, "compute API \(what): cancelled")
                case .timedOut(let s):
                    let why = "the compute API \(base) did not answer \(what) within \(Int(s.rounded())) s"
                    reach.failed(Self.service, why)
                    throw ContainariumError(.timeout, why)
                case .transport(let t):
                    let why = "the compute API \(base) is unreachable (\(what)): \(t)"
                    reach.failed(Self.service, why)
                    throw ContainariumError(.unavailable, why)
                }
            }
            if (200..<300).contains(r.status) {
                reach.answered(Self.service)
                return r.body
            }
            if r.status == 401 && !retried {
                // The token may have been revoked or expired early: fetch a fresh one, once.
                tokens.invalidate()
                retried = true
                continue
            }
            throw mapped(r, what)
        }
    }

    private func mapped(_ r: HTTPResponse, _ what: String) -> ContainariumError {
        let g = (try? JSONDecoder().decode(GoogleError.self, from: r.body))?.error
        let reason = g?.errors?.first?.reason ?? ""
        let message = (g?.message ?? String(r.text.prefix(300))).trimmingCharacters(in: .whitespacesAndNewlines)
        let said = message.isEmpty || message == "{}" ? "" : ": \(message)"
        let detail = "the compute API answered \(what) with \(r.status)\(g?.status.map { " \($0)" } ?? "")\(said)"
        let code: ContainariumError.Code
        switch r.status {
        case 400: code = .invalidArgument
        case 401: code = .unauthenticated
        case 403: code = ["rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"].contains(reason) ? .resourceExhausted : .permissionDenied
        case 404: code = .notFound
        case 409, 412: code = .failedPrecondition
        case 429: code = .resourceExhausted
        case 500...599: code = .unavailable
        default: code = .internal
        }
        if code == .unauthenticated || code == .permissionDenied || code == .unavailable {
            reach.failed(Self.service, detail)
        } else {
            reach.answered(Self.service)
        }
        return ContainariumError(code, code == .unauthenticated ? "unauthenticated: \(detail)" : detail)
    }
}

/// Google's RFC 3339 timestamps ("2024-05-01T10:00:00.123-07:00").
enum GoogleTime {
    static func parse(_ s: String?) -> Date? {
        guard let s else { return nil }
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = fractional.date(from: s) { return d }
        let plain = ISO8601DateFormatter()
        plain.formatOptions = [.withInternetDateTime]
        return plain.date(from: s)
    }
}
