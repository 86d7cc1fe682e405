public import ContainariumCore
public import ContainariumTelemetry
public import Foundation

/// The sentinel's settings, from the config's `sentinel` (docs/sentinel.md): which machine it
/// guards (a node.lifecycle/1 plugin's node), what it forwards there, how it notices an outage
/// and how it restarts the machine.
///
/// ```json
/// "sentinel": { "instance": "spot-1", "upstream": "10.128.0.7",
///   "routes": [ {"listen": "0.0.0.0:22", "port": 2222, "kind": "ssh"},
///               {"listen": "0.0.0.0:80", "port": 8080, "kind": "http"},
///               {"listen": "0.0.0.0:443", "port": 8443, "kind": "tcp"} ],
///   "health": "http://10.128.0.7:8080/healthz" }
/// ```
public struct SentinelPolicy: Codable, Sendable, Equatable {
    /// The guarded machine, as its node.lifecycle/1 plugin names it (a GCE instance name).
    public var instance: String
    /// The node.lifecycle/1 plugin that watches and starts it (default: the only one ready).
    public var lifecycle: String?
    /// The machine's address; default: the address its plugin's status reports.
    public var upstream: String?
    public var routes: [Route]
    /// How to tell the machine's daemon is up: "http://HOST:PORT/PATH" (200 within 2 s), or
    /// "tcp:PORT" (a connection to the upstream's PORT). Default: tcp on the first route's port.
    public var health: String?
    /// Seconds between probes (default 1).
    public var probeSeconds: Double?
    /// Failed probes in a row before an outage is declared (default 3).
    public var failAfter: Int?
    /// The first restart's backoff after a failed start, doubling up to `maxBackoffSeconds`
    /// (defaults 5 and 300), each with random jitter (half to all of it).
    public var backoffSeconds: Double?
    public var maxBackoffSeconds: Double?
    /// What the maintenance page and SSH banner tell users to wait (default 30).
    public var retryAfterSeconds: Int?
    /// The directory of the SSH host key the maintenance SSH server presents: the guarded
    /// machine's gateway key directory (the same key, so clients see no key change).
    public var sshKeyDir: String?
    /// Where the outage timeline is appended (JSON lines; default /var/lib/containarium/sentinel/timeline.jsonl).
    public var timeline: String?
    /// Seconds a machine may run without its daemon answering before the sentinel resets it
    /// (stops it, then starts it again); default 300, 0 never.
    public var resetAfterSeconds: Double?
    /// Serve the sentinel's Prometheus metrics at GET /metrics on this HOST:PORT (off when unset).
    public var metricsListen: String?
    /// A file holding the bearer token /metrics asks for (unset: no token; a private address only).
    public var metricsTokenFile: String?
    /// Who is told of each outage (sentinel.down, sentinel.restarting, sentinel.recovered), as
    /// the daemon's alerting webhooks are (generic JSON signed with HMAC-SHA256, slack, zulip).
    public var webhooks: [WebhookTarget]?
    /// Tries per notification and webhook (default 5) and the first retry's wait (default 2 s, doubling).
    public var webhookAttempts: Int?
    public var webhookBackoffSeconds: Double?

    public struct Route: Codable, Sendable, Equatable {
        /// HOST:PORT the sentinel listens on.
        public var listen: String
        /// The port on the guarded machine.
        public var port: Int
        /// "ssh" (maintenance: an SSH banner), "http" (maintenance: a 503 page), "https" (TLS
        /// passed through untouched while up, chosen by SNI; maintenance: the 503 page over TLS
        /// with `tlsCertificate`) or "tcp" (closed).
        public var kind: String
        /// https: the machine's port per server name the ClientHello asks for (lower case);
        /// others go to `port`. TLS is never terminated while the machine is up.
        public var sni: [String: Int]?
        /// https: the certificate chain and key (PEM) the maintenance page is served with while
        /// the machine is down (without them, a connection then is closed).
        public var tlsCertificate: String?
        public var tlsKey: String?
        /// Start each forwarded connection with a PROXY protocol v2 header naming the client, for
        /// a machine whose gateway trusts the sentinel (`--trusted-proxy`): its bans, limits and
        /// audit log then see users' addresses rather than the sentinel's.
        public var proxyProtocol: Bool?
        public init(listen: String, port: Int, kind: String, sni: [String: Int]? = nil, tlsCertificate: String? = nil, tlsKey: String? = nil) {
            self.listen = listen
            self.port = port
            self.kind = kind
            self.sni = sni
            self.tlsCertificate = tlsCertificate
            self.tlsKey = tlsKey
        }
    }

    public init(instance: String, routes: [Route]) {
        self.instance = instance
        self.routes = routes
    }

    public var probeInterval: Double { probeSeconds ?? 1 }
    public var failures: Int { failAfter ?? 3 }
    public var backoff: Double { backoffSeconds ?? 5 }
    public var maxBackoff: Double { maxBackoffSeconds ?? 300 }
    public var retryAfter: Int { retryAfterSeconds ?? 30 }
    public var resetAfter: Double { resetAfterSeconds ?? 300 }
    public var timelinePath: String { timeline ?? "/var/lib/containarium/sentinel/timeline.jsonl" }

    /// How the daemon's health is probed.
    public enum Health: Equatable, Sendable {
        case tcp(port: Int)
        case http(URL)
    }

    public func parsedHealth() throws(ContainariumError) -> Health {
        guard let h = health else { return .tcp(port: routes.first?.port ?? 22) }
        if h.hasPrefix("tcp:") {
            guard let port = Int(h.dropFirst(4)), (1...65535).contains(port) else { throw .invalid("sentinel.health '\(h)': tcp:PORT with a port 1-65535") }
            return .tcp(port: port)
        }
        guard let url = URL(string: h), url.scheme == "http" || url.scheme == "https", url.host != nil else {
            throw .invalid("sentinel.health '\(h)' is neither tcp:PORT nor an http(s) URL")
        }
        return .http(url)
    }

    public func validate() throws(ContainariumError) {
        guard !instance.isEmpty, instance.count <= 63, instance.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw .invalid("sentinel.instance must be 1-63 letters, digits and dashes")
        }
        guard !routes.isEmpty else { throw .invalid("sentinel.routes: give at least one (listen, port, kind)") }
        var listens = Set<String>()
        for r in routes {
            guard ["ssh", "http", "https", "tcp"].contains(r.kind) else { throw .invalid("sentinel.routes: kind '\(r.kind)' is not ssh, http, https or tcp") }
            if r.kind != "https", r.sni != nil || r.tlsCertificate != nil || r.tlsKey != nil {
                throw .invalid("sentinel.routes: sni, tlsCertificate and tlsKey are for https routes (\(r.listen) is \(r.kind))")
            }
            guard (r.tlsCertificate == nil) == (r.tlsKey == nil) else { throw .invalid("sentinel.routes: \(r.listen): tlsCertificate and tlsKey go together") }
            for (name, port) in r.sni ?? [:] {
                guard name == name.lowercased(), !name.isEmpty, name.count <= 253, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" }),
                      (1...65535).contains(port) else {
                    throw .invalid("sentinel.routes: \(r.listen): sni '\(name)' -> \(port) must be a lower-case host name and a port 1-65535")
                }
            }
            guard (1...65535).contains(r.port) else { throw .invalid("sentinel.routes: port \(r.port) is not 1-65535") }
            guard (try? NodeAddress.parse(r.listen)) != nil else { throw .invalid("sentinel.routes: listen '\(r.listen)' is not HOST:PORT") }
            guard listens.insert(r.listen).inserted else { throw .invalid("sentinel.routes: \(r.listen) is listed twice") }
        }
        if let u = upstream, u.isEmpty || u.contains("/") || u.contains(" ") { throw .invalid("sentinel.upstream '\(u)' is not a host") }
        _ = try parsedHealth()
        guard probeInterval >= 0.1, probeInterval <= 60 else { throw .invalid("sentinel.probeSeconds must be 0.1-60") }
        guard (1...100).contains(failures) else { throw .invalid("sentinel.failAfter must be 1-100") }
        guard backoff >= 0.1, maxBackoff >= backoff, maxBackoff <= 3600 else { throw .invalid("sentinel.backoffSeconds must be at least 0.1 and at most maxBackoffSeconds (at most 3600)") }
        guard (1...3600).contains(retryAfter) else { throw .invalid("sentinel.retryAfterSeconds must be 1-3600") }
        guard resetAfter == 0 || (resetAfter.isFinite && (1...86_400).contains(resetAfter)) else {
            throw .invalid("sentinel.resetAfterSeconds must be 0 (never) or 1-86400")
        }
        if let m = metricsListen {
            guard (try? NodeAddress.parse(m)) != nil else { throw .invalid("sentinel.metricsListen '\(m)' is not HOST:PORT") }
            guard !listens.contains(m) else { throw .invalid("sentinel.metricsListen \(m) is a route's address") }
        }
        if metricsTokenFile != nil, metricsListen == nil { throw .invalid("sentinel.metricsTokenFile needs sentinel.metricsListen") }
        var names = Set<String>()
        for w in webhooks ?? [] {
            do throws(ContainariumError) { try w.validate() } catch { throw .invalid("sentinel.webhooks: \(error.message)") }
            guard names.insert(w.name).inserted else { throw .invalid("sentinel.webhooks: \(w.name) is listed twice") }
        }
        if let a = webhookAttempts, !(1...10).contains(a) { throw .invalid("sentinel.webhookAttempts must be 1-10") }
        if let b = webhookBackoffSeconds, !(b.isFinite && (0.1...60).contains(b)) { throw .invalid("sentinel.webhookBackoffSeconds must be 0.1-60") }
    }
}
