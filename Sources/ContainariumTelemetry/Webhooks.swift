public import ContainariumCore
import Crypto
public import Foundation
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Where notifications go: one HTTP(S) endpoint in one of three formats.
public struct WebhookTarget: Codable, Sendable, Equatable {
    public enum Format: String, Codable, Sendable, CaseIterable {
        /// Our own JSON (`Notification`), HMAC-signed when a secret is set.
        case generic
        /// A Slack incoming webhook (`{"text": ..., "blocks": [...]}`).
        case slack
        /// Zulip's send-message API (`POST /api/v1/messages`, form fields, the bot's e-mail and
        /// API key as HTTP basic authentication; the key is `secret`).
        case zulip
    }

    public var name: String
    public var url: String
    public var format: Format
    /// generic: the HMAC-SHA256 key of `X-Containarium-Signature`; zulip: the bot's API key.
    /// Never returned by the API and never logged.
    public var secret: String?
    public var zulipBotEmail: String?
    public var zulipStream: String?
    public var zulipTopic: String?

    public init(name: String, url: String, format: Format = .generic, secret: String? = nil,
                zulipBotEmail: String? = nil, zulipStream: String? = nil, zulipTopic: String? = nil) {
        self.name = name
        self.url = url
        self.format = format
        self.secret = secret
        self.zulipBotEmail = zulipBotEmail
        self.zulipStream = zulipStream
        self.zulipTopic = zulipTopic
    }

    /// Everything a delivery needs, checked before it is stored.
    public func validate() throws(ContainariumError) {
        guard name.count <= 63, name.range(of: "^[a-z0-9][a-z0-9_-]*$", options: .regularExpression) != nil else {
            throw .invalid("webhook name '\(name)' must be 1-63 of a-z 0-9 _ - (starting with a letter or digit)")
        }
        guard url.count <= 2048, let u = URLComponents(string: url), let scheme = u.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = u.host, !host.isEmpty else {
            throw .invalid("webhook \(name): url must be an http:// or https:// URL with a host")
        }
        guard u.user == nil, u.password == nil else {
            throw .invalid("webhook \(name): put no credentials in the url (use secret, or zulip_bot_email and secret for Zulip)")
        }
        if let secret, secret.isEmpty || secret.count > 256 || secret.contains(where: { $0.isNewline }) {
            throw .invalid("webhook \(name): secret must be 1-256 characters on one line")
        }
        switch format {
        case .zulip:
            guard let email = zulipBotEmail, email.contains("@"), email.count <= 254, !email.contains(where: { $0.isWhitespace || $0 == ":" }) else {
                throw .invalid("webhook \(name): a zulip webhook needs zulip_bot_email (the bot's e-mail address)")
            }
            guard secret != nil else { throw .invalid("webhook \(name): a zulip webhook needs secret (the bot's API key)") }
            guard let stream = zulipStream, !stream.isEmpty, stream.count <= 60 else {
                throw .invalid("webhook \(name): a zulip webhook needs zulip_stream (1-60 characters)")
            }
            if let topic = zulipTopic, topic.isEmpty || topic.count > 60 { throw .invalid("webhook \(name): zulip_topic must be 1-60 characters") }
        case .generic, .slack:
            if zulipBotEmail != nil || zulipStream != nil || zulipTopic != nil {
                throw .invalid("webhook \(name): zulip_bot_email, zulip_stream and zulip_topic are for format zulip only")
            }
        }
    }
}

/// One thing to tell: an alert firing or resolved, a test, a sentinel's outage.
public struct Notification: Codable, Sendable, Equatable {
    /// Unique per notification (retries of it keep it): receivers can drop duplicates.
    public var id: String
    /// alert.firing, alert.resolved, alert.test, sentinel.preempted, sentinel.restarting, sentinel.recovered.
    public var event: String
    public var title: String
    public var text: String
    /// info, warning or critical.
    public var severity: String
    /// What it is about: rule, environment, node, machine...
    public var labels: [String: String]
    public var value: Double?
    public var threshold: Double?
    public var startsAt: Date
    public var endsAt: Date?
    /// Which daemon or sentinel sent it.
    public var source: String

    public init(id: String = UUID().uuidString.lowercased(), event: String, title: String, text: String, severity: String,
                labels: [String: String] = [:], value: Double? = nil, threshold: Double? = nil, startsAt: Date = Date(),
                endsAt: Date? = nil, source: String) {
        self.id = id
        self.event = event
        self.title = title
        self.text = text
        self.severity = severity
        self.labels = labels
        self.value = value
        self.threshold = threshold
        self.startsAt = startsAt
        self.endsAt = endsAt
        self.source = source
    }
}

/// One try at delivering one notification to one webhook.
public struct DeliveryAttempt: Sendable, Equatable {
    public var webhook: String
    public var notification: String
    public var event: String
    public var attempt: Int
    /// The receiver's HTTP status, when it answered.
    public var status: Int?
    /// Why the try failed (transport error or status); nil when it was delivered.
    public var error: String?
    public var at: Date
    public var milliseconds: Int
    /// Whether another try follows.
    public var willRetry: Bool
}

/// Delivers notifications over HTTP(S): the webhook's format, HMAC signing, retries with
/// exponential backoff and jitter on connection errors, 5xx and 429 (Retry-After honoured up to
/// the cap), none on other answers. Redirects are never followed; nothing is cached.
public final class WebhookSender: Sendable {
    public struct Policy: Sendable, Equatable {
        public var maxAttempts: Int
        public var initialBackoff: Double
        public var maxBackoff: Double
        public var timeout: Double
        public init(maxAttempts: Int = 5, initialBackoff: Double = 2, maxBackoff: Double = 60, timeout: Double = 10) {
            self.maxAttempts = maxAttempts
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
            self.timeout = timeout
        }
    }

    public let policy: Policy
    private let session: URLSession

    public init(policy: Policy = Policy()) {
        self.policy = policy
        let c = URLSessionConfiguration.ephemeral
        c.urlCache = nil
        c.requestCachePolicy = .reloadIgnoringLocalAndRemoteCacheData
        c.httpCookieStorage = nil
        c.httpShouldSetCookies = false
        c.timeoutIntervalForRequest = policy.timeout
        c.timeoutIntervalForResource = policy.timeout
        session = URLSession(configuration: c, delegate: RefuseRedirects(), delegateQueue: nil)
    }

    deinit { session.finishTasksAndInvalidate() }

    /// The header carrying `sha256=HEX`, the HMAC-SHA256 of "TIMESTAMP.BODY" under the secret.
    public static let signatureHeader = "X-Containarium-Signature"
    public static let timestampHeader = "X-Containarium-Timestamp"

    /// The signature of a body sent at `timestamp` (seconds since the epoch).
    public static func signature(secret: String, timestamp: Int, body: Data) -> String {
        var message = Data("\(timestamp).".utf8)
        message.append(body)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Data(secret.utf8)))
        return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    /// Deliver with retries; each try is reported to `log` as it ends. True when delivered.
    @discardableResult
    public func deliver(_ n: Notification, to target: WebhookTarget, log: @Sendable (DeliveryAttempt) async -> Void) async -> Bool {
        var attempt = 0
        while !Task.isCancelled {
            attempt += 1
            let started = Date()
            let (status, failure, retryAfter) = await send(n, to: target)
            let retryable = failure != nil && (status == nil || status == 429 || (status ?? 0) >= 500)
            let again = retryable && attempt < policy.maxAttempts
            await log(DeliveryAttempt(webhook: target.name, notification: n.id, event: n.event, attempt: attempt, status: status, error: failure,
                                      at: started, milliseconds: Int(Date().timeIntervalSince(started) * 1000), willRetry: again))
            if failure == nil { return true }
            guard again else { return false }
            let backoff = min(policy.maxBackoff, policy.initialBackoff * pow(2, Double(attempt - 1)))
            let wait = max(retryAfter.map { min($0, policy.maxBackoff) } ?? 0, backoff * Double.random(in: 0.8...1.2))
            do { try await Task.sleep(for: .seconds(wait)) } catch { return false }
        }
        return false
    }

    /// One try: (status, failure, Retry-After seconds).
    func send(_ n: Notification, to target: WebhookTarget) async -> (Int?, String?, Double?) {
        guard let url = URL(string: target.url) else { return (nil, "bad url", nil) }
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.timeoutInterval = policy.timeout
        request.setValue("containarium-webhook/1", forHTTPHeaderField: "User-Agent")
        request.setValue(n.event, forHTTPHeaderField: "X-Containarium-Event")
        request.setValue(n.id, forHTTPHeaderField: "X-Containarium-Delivery")
        let body: Data
        switch target.format {
        case .generic:
            body = (try? Self.encoder.encode(n)) ?? Data("{}".utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        case .slack:
            body = Self.slackBody(n)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        case .zulip:
            body = Data(Self.form([("type", "stream"), ("to", target.zulipStream ?? ""), ("topic", target.zulipTopic ?? n.labels["rule"] ?? "containarium"),
                                   ("content", Self.markdown(n))]).utf8)
            request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
            let credentials = Data("\(target.zulipBotEmail ?? ""):\(target.secret ?? "")".utf8).base64EncodedString()
            request.setValue("Basic \(credentials)", forHTTPHeaderField: "Authorization")
        }
        if let secret = target.secret, target.format != .zulip {
            let timestamp = Int(Date().timeIntervalSince1970)
            request.setValue(String(timestamp), forHTTPHeaderField: Self.timestampHeader)
            request.setValue(Self.signature(secret: secret, timestamp: timestamp, body: body), forHTTPHeaderField: Self.signatureHeader)
        }
        request.httpBody = body
        let outcome: Result<HTTPURLResponse, any Error> = await withCheckedContinuation { c in
            let task = session.dataTask(with: request) { _, response, error in
                if let http = response as? HTTPURLResponse { c.resume(returning: .success(http)) }
                else { c.resume(returning: .failure(error ?? URLError(.badServerResponse))) }
            }
            task.resume()
        }
        switch outcome {
        case .success(let http):
            if (200..<300).contains(http.statusCode) { return (http.statusCode, nil, nil) }
            let retryAfter = (http.value(forHTTPHeaderField: "Retry-After")).flatMap(Double.init)
            return (http.statusCode, "HTTP \(http.statusCode)", retryAfter)
        case .failure(let e):
            let ns = e as NSError
            let why: String
            switch ns.code {
            case NSURLErrorCannotConnectToHost: why = "connection refused"
            case NSURLErrorCannotFindHost: why = "host not found"
            case NSURLErrorTimedOut: why = "timed out after \(Int(policy.timeout)) s"
            default: why = ns.localizedDescription
            }
            return (nil, why, nil)
        }
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    static func markdown(_ n: Notification) -> String {
        var lines = ["**\(n.title)**", n.text]
        let labels = n.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
        if !labels.isEmpty { lines.append(labels) }
        return lines.joined(separator: "\n")
    }

    static func slackBody(_ n: Notification) -> Data {
        let icon = n.event == "alert.resolved" || n.event == "sentinel.recovered" ? ":white_check_mark:" : (n.severity == "critical" ? ":rotating_light:" : ":warning:")
        let object: [String: Any] = [
            "text": "\(icon) \(n.title): \(n.text)",
            "blocks": [
                ["type": "section", "text": ["type": "mrkdwn", "text": "\(icon) *\(n.title)*\n\(n.text)"]],
                ["type": "context", "elements": [["type": "mrkdwn", "text": n.labels.sorted { $0.key < $1.key }.map { "\($0.key)=`\($0.value)`" }.joined(separator: " ") + " · \(n.source)"]]],
            ],
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    }

    static func form(_ items: [(String, String)]) -> String {
        let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        return items.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: unreserved) ?? "")" }.joined(separator: "&")
    }
}

/// A notification and its receiver must never be moved elsewhere by the receiver's answer.
private final class RefuseRedirects: NSObject, URLSessionTaskDelegate, Sendable {
    func urlSession(
        _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse, newRequest request: URLRequest,
        completionHandler: @escaping @Sendable (URLRequest?) -> Void
    ) {
        completionHandler(nil)
    }
}
