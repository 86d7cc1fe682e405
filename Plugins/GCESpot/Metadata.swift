import ContainariumCore
import Foundation
import Synchronization

/// When each service (the metadata server, the token endpoint, the Compute API) last answered
/// and last failed, for `health`.
final class Reachability: Sendable {
    struct Entry: Sendable {
        var answered: Date?
        var failed: Date?
        var why: String?
        /// Whether the latest attempt failed.
        var failing: Bool {
            guard let failed else { return false }
            return answered.map { failed > $0 } ?? true
        }
    }

    private let entries = Mutex<[String: Entry]>([:])

    func answered(_ service: String) {
        entries.withLock { $0[service, default: Entry()].answered = Date() }
    }

    func failed(_ service: String, _ why: String) {
        entries.withLock { e in
            e[service, default: Entry()].failed = Date()
            e[service, default: Entry()].why = why
        }
    }

    func entry(_ service: String) -> Entry { entries.withLock { $0[service] ?? Entry() } }
}

/// The GCE metadata server (http://HOST/computeMetadata/v1/...), as Google documents it: every
/// request carries `Metadata-Flavor: Google`, and an answer without that header is not from the
/// metadata server. Values come with an ETag for `wait_for_change` long-polls.
final class MetadataClient: Sendable {
    static let service = "metadata server"
    let host: String
    private let http: HTTPClient
    private let requestTimeout: Double
    private let reach: Reachability

    init(host: String, http: HTTPClient, requestTimeout: Double, reach: Reachability) {
        self.host = host
        self.http = http
        self.requestTimeout = requestTimeout
        self.reach = reach
    }

    struct Value: Sendable {
        let text: String
        let etag: String?
    }

    /// GET one metadata value. With `waitForChange`, the server holds the request until the
    /// value's ETag differs from `lastETag` (or, without one, until the next change), at most
    /// `timeoutSeconds`.
    func get(
        _ path: String, waitForChange: Bool = false, lastETag: String? = nil, timeoutSeconds: Int = 60, cancelled: () -> Bool
    ) throws(ContainariumError) -> Value {
        var query: [(String, String)] = []
        var deadline = Date().addingTimeInterval(requestTimeout)
        if waitForChange {
            query.append(("wait_for_change", "true"))
            if let lastETag { query.append(("last_etag", lastETag)) }
            query.append(("timeout_sec", String(timeoutSeconds)))
            deadline = Date().addingTimeInterval(Double(timeoutSeconds) + requestTimeout)
        }
        let r = try send(path, query: query, deadline: deadline, cancelled: cancelled)
        return Value(text: r.text, etag: r.header("ETag"))
    }

    /// The default service account's access token: (token, seconds it stays valid).
    func token(cancelled: () -> Bool) throws(ContainariumError) -> (String, Double) {
        let r = try send("instance/service-accounts/default/token", query: [], deadline: Date().addingTimeInterval(requestTimeout), cancelled: cancelled)
        guard let t = try? JSONDecoder().decode(TokenAnswer.self, from: r.body), let token = t.access_token, !token.isEmpty else {
            throw ContainariumError(.unavailable, "the metadata server \(host) answered its token path without an access_token")
        }
        return (token, t.expires_in ?? 300)
    }

    private func send(_ path: String, query: [(String, String)], deadline: Date, cancelled: () -> Bool) throws(ContainariumError) -> HTTPResponse {
        let q = query.isEmpty ? "" : "?" + Percent.query(query)
        guard let url = URL(string: "http://\(host)/computeMetadata/v1/\(path)\(q)") else {
            throw .internal("cannot form the metadata URL for \(path)")
        }
        let what = "the metadata server \(host) (GET \(path))"
        let r: HTTPResponse
        do throws(HTTPClient.Failure) {
            r = try http.send("GET", url, headers: ["Metadata-Flavor": "Google"], deadline: deadline, cancelled: cancelled)
        } catch {
            throw failure(error, what)
        }
        guard r.header("Metadata-Flavor") == "Google" else {
            let why = "\(what) answered \(r.status) without 'Metadata-Flavor: Google': not a GCE metadata server"
            reach.failed(Self.service, why)
            throw ContainariumError(.unavailable, why)
        }
        switch r.status {
        case 200:
            reach.answered(Self.service)
            return r
        case 404:
            reach.answered(Self.service)
            throw ContainariumError(.notFound, "\(what): no such metadata entry (404)")
        case 403:
            let why = "\(what) refused the request (403): \(r.text.prefix(200))"
            reach.failed(Self.service, why)
            throw ContainariumError(.permissionDenied, why)
        default:
            let why = "\(what) answered \(r.status): \(r.text.prefix(200))"
            reach.failed(Self.service, why)
            throw ContainariumError(.unavailable, why)
        }
    }

    private func failure(_ e: HTTPClient.Failure, _ what: String) -> ContainariumError {
        switch e {
        case .cancelled:
            return ContainariumError(.cancelled, "\(what) was cancelled")
        case .timedOut(let s):
            let why = "\(what) did not answer within \(Int(s.rounded())) s"
            reach.failed(Self.service, why)
            return ContainariumError(.timeout, why)
        case .transport(let t):
            let why = "\(what) is unreachable: \(t)"
            reach.failed(Self.service, why)
            return ContainariumError(.unavailable, why)
        }
    }
}

/// An OAuth 2.0 token answer (the metadata server's and a token endpoint's), or its error.
struct TokenAnswer: Decodable {
    var access_token: String?
    var expires_in: Double?
    var token_type: String?
    var error: String?
    var error_description: String?
}
