import ContainariumCore
import Dispatch
import Foundation
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// An HTTP answer: status, headers (names in lower case) and body.
struct HTTPResponse: Sendable {
    let status: Int
    let headers: [String: String]
    let body: Data

    func header(_ name: String) -> String? { headers[name.lowercased()] }
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// A blocking HTTP client for the plugin's own threads: URLSession (libcurl on Linux, so https
/// works), one request at a time per calling thread, each under a deadline the caller gives and
/// abandoned as soon as `cancelled()` says so. Nothing is cached, no cookie is kept, and
/// redirects are never followed (an answer 3xx is returned as it is).
final class HTTPClient: Sendable {
    private let session: URLSession

    init() {
        let c = URLSessionConfiguration.ephemeral
        c.urlCache = nil
        c.requestCachePolicy = .reloadIgnoringLocalAndRemoteCacheData
        c.httpCookieStorage = nil
        c.httpShouldSetCookies = false
        c.httpCookieAcceptPolicy = .never
        // Each request's own deadline governs (below); these only keep URLSession from ending a
        // long-poll first.
        c.timeoutIntervalForRequest = 3700
        c.timeoutIntervalForResource = 3700
        session = URLSession(configuration: c, delegate: NoRedirects(), delegateQueue: nil)
    }

    /// Why a request did not get an answer.
    enum Failure: Error {
        case cancelled
        case timedOut(Double)
        case transport(String)
    }

    /// Send one request and wait for its answer until `deadline`, checking `cancelled` every
    /// 100 ms. A failure to get any answer throws; every HTTP status is an answer.
    func send(
        _ method: String, _ url: URL, headers: [String: String] = [:], body: Data? = nil, deadline: Date, cancelled: () -> Bool
    ) throws(Failure) -> HTTPResponse {
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = max(1, deadline.timeIntervalSinceNow + 1)
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        if let body { request.httpBody = body }
        let outcome = Outcome()
        let task = session.dataTask(with: request) { data, response, error in
            if let http = response as? HTTPURLResponse {
                var headers: [String: String] = [:]
                for (k, v) in http.allHeaderFields {
                    if let k = k as? String, let v = v as? String { headers[k.lowercased()] = v }
                }
                outcome.set(.success(HTTPResponse(status: http.statusCode, headers: headers, body: data ?? Data())))
            } else {
                outcome.set(.failure(.transport(error.map(Self.describe) ?? "no HTTP answer")))
            }
        }
        task.resume()
        let started = Date()
        while true {
            if outcome.wait(seconds: 0.1), let result = outcome.value {
                return try result.get()
            }
            if cancelled() {
                task.cancel()
                throw .cancelled
            }
            if Date() >= deadline {
                task.cancel()
                throw .timedOut(Date().timeIntervalSince(started))
            }
        }
    }

    /// One line for a URLSession error, without the URL's query (which may carry an ETag) and
    /// never a header.
    private static func describe(_ error: any Error) -> String {
        let ns = error as NSError
        switch ns.code {
        case NSURLErrorCannotConnectToHost: return "connection refused"
        case NSURLErrorCannotFindHost: return "host not found"
        case NSURLErrorTimedOut: return "timed out"
        case NSURLErrorNetworkConnectionLost: return "connection lost"
        case NSURLErrorNotConnectedToInternet: return "network unreachable"
        case NSURLErrorSecureConnectionFailed, NSURLErrorServerCertificateUntrusted, NSURLErrorServerCertificateHasBadDate,
            NSURLErrorServerCertificateNotYetValid, NSURLErrorServerCertificateHasUnknownRoot:
            return "TLS failed: \(ns.localizedDescription)"
        default: return ns.localizedDescription
        }
    }

    /// The completion's result, handed to the waiting thread.
    private final class Outcome: Sendable {
        private let result = Mutex<Result<HTTPResponse, Failure>?>(nil)
        private let done = DispatchSemaphore(value: 0)

        func set(_ r: Result<HTTPResponse, Failure>) {
            result.withLock { $0 = r }
            done.signal()
        }

        /// Whether the completion arrived within `seconds`.
        func wait(seconds: Double) -> Bool { done.wait(timeout: .now() + seconds) == .success }
        var value: Result<HTTPResponse, Failure>? { result.withLock { $0 } }
    }
}

/// Refuses every redirect: the metadata server never redirects, and a token or an assertion
/// must reach only the URL it was meant for.
private final class NoRedirects: NSObject, URLSessionTaskDelegate, Sendable {
    func urlSession(
        _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse, newRequest request: URLRequest,
        completionHandler: @escaping @Sendable (URLRequest?) -> Void
    ) {
        completionHandler(nil)
    }
}

/// Percent-encoding for query values and form fields (RFC 3986 unreserved characters pass).
enum Percent {
    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    static func encode(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: unreserved) ?? "" }

    /// `k1=v1&k2=v2`, each part encoded.
    static func query(_ items: [(String, String)]) -> String {
        items.map { "\(encode($0.0))=\(encode($0.1))" }.joined(separator: "&")
    }
}
