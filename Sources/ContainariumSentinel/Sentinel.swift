public import ContainariumCore
public import ContainariumService
public import ContainariumTelemetry
public import Foundation
import NIOCore
import Prometheus
public import Logging
public import PluginHost
import ServiceLifecycle
import UnixSignals
import Synchronization

/// One line of an outage's timeline (appended to `SentinelPolicy.timeline` as JSON lines).
public struct TimelineEntry: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// The outage was noticed (why: the provider's state, or failed probes).
        case detected
        /// A start of the machine was asked for (attempt N).
        case startRequested = "start-requested"
        /// The start failed (the provider's message); the next attempt waits `detail`'s backoff.
        case startFailed = "start-failed"
        /// The provider says the machine runs again.
        case started
        /// The daemon answers its health probe: traffic goes to it again.
        case healthy
        /// The machine ran without its daemon answering for `resetAfterSeconds`: it is stopped
        /// (then started again as after any outage).
        case resetRequested = "reset-requested"
    }
    public var at: Date
    public var outage: String
    public var kind: Kind
    public var detail: String
    public init(at: Date, outage: String, kind: Kind, detail: String) {
        self.at = at
        self.outage = outage
        self.kind = kind
        self.detail = detail
    }
}

/// Where the sentinel stands. Traffic is forwarded only in `.up`; in every other phase users
/// get the maintenance answer of their route (a 503 page, an SSH banner).
public enum SentinelPhase: Sendable, Equatable {
    case up
    /// An outage: since when, why, and the start attempts made so far.
    case down(since: Date, reason: String, attempts: Int)

    public var isUp: Bool { self == .up }
}

/// The sentinel: a small always-on process in front of a preemptible machine. It forwards the
/// public ports to the machine while its daemon answers; when the machine stops answering (or
/// its provider says it stopped), it serves a maintenance answer, starts the machine through
/// its node.lifecycle/1 plugin with exponential backoff and jitter, waits for the daemon's
/// health, and switches traffic back. Each outage is a timeline of entries.
public final class Sentinel: Sendable {
    public let policy: SentinelPolicy
    let lifecycle: NodeLifecycleClient
    let health: SentinelPolicy.Health
    let logger: Logger
    private struct State {
        var phase: SentinelPhase = .up
        var upstream: String?
        var failures = 0
        var outage = ""
        var nextStart = Date.distantPast
        var timeline: [TimelineEntry] = []
        var seenRunning = false
        /// Since when, in this outage, the provider has said the machine runs (while its daemon
        /// does not answer).
        var runningSince: Date?
    }
    private let state = Mutex(State())
    /// The sentinel's metrics (`containarium_sentinel_*`), when it serves them.
    public let telemetry: Telemetry?
    /// Notifications under way to the policy's webhooks.
    private let notifying = Mutex<[UUID: Task<Void, Never>]>([:])

    public init(policy: SentinelPolicy, lifecycle: NodeLifecycleClient, logger: Logger, telemetry: Telemetry? = nil) throws(ContainariumError) {
        try policy.validate()
        self.policy = policy
        self.lifecycle = lifecycle
        self.health = try policy.parsedHealth()
        self.logger = logger
        self.telemetry = telemetry
        state.withLock { $0.upstream = policy.upstream }
        let instance = policy.instance
        telemetry?.addCollector { [weak self] text in
            guard let self else { return }
            text.family("containarium_sentinel_machine_up", type: "gauge", help: "1 while the guarded machine answers (traffic is forwarded), else 0.")
            text.sample("containarium_sentinel_machine_up", [("machine", instance)], self.phase.isUp ? 1 : 0)
        }
    }

    /// The node.lifecycle/1 plugin the policy names (or the only one ready).
    public static func lifecycle(in plugins: PluginManager, id: String?) throws(ContainariumError) -> NodeLifecycleClient {
        let ready = plugins.lifecycles()
        if let id {
            guard let c = ready.first(where: { $0.plugin.manifest.id == id }) else {
                throw ContainariumError(.failedPrecondition, "sentinel.lifecycle '\(id)' is not a ready node.lifecycle/1 plugin (ready: \(ready.map(\.plugin.manifest.id).joined(separator: ", ")))")
            }
            return c
        }
        guard ready.count == 1, let only = ready.first else {
            throw ContainariumError(.failedPrecondition, ready.isEmpty ? "no node.lifecycle/1 plugin is ready: enable one (gce-spot) in the config"
                                      : "several node.lifecycle/1 plugins are ready (\(ready.map(\.plugin.manifest.id).joined(separator: ", "))): name one in sentinel.lifecycle")
        }
        return only
    }

    public var phase: SentinelPhase { state.withLock { $0.phase } }
    public var upstream: String? { state.withLock { $0.upstream } }
    public var timeline: [TimelineEntry] { state.withLock { $0.timeline } }

    /// Seconds users are told to wait.
    var retryAfter: Int { policy.retryAfter }

    /// A connection to the machine failed: counted with the failed probes towards `failAfter`
    /// (a successful probe resets the count, so this alone declares no outage).
    func connectionFailed() {
        state.withLock { $0.failures += 1 }
    }

    // MARK: - the loop

    /// Probe and repair until cancelled.
    public func run() async {
        logger.info("sentinel guarding \(policy.instance) (\(upstream ?? "address from its plugin")), probing every \(policy.probeInterval) s")
        while !Task.isCancelled {
            await tick()
            try? await Task.sleep(for: .milliseconds(Int(policy.probeInterval * 1000)))
        }
    }

    /// One probe and what follows from it.
    func tick() async {
        var status: NodeLifecycleStatus?
        do throws(ContainariumError) {
            status = try await lifecycle.status(policy.instance)
        } catch {
            logger.warning("\(policy.instance): the provider did not answer: \(error.message)")
        }
        if let address = status?.address, policy.upstream == nil, !address.isEmpty {
            state.withLock { $0.upstream = address }
        }
        let healthy = await probe()
        let now = Date()
        let phase = state.withLock { s -> SentinelPhase in
            if healthy { s.failures = 0 } else if s.phase.isUp { s.failures += 1 }
            return s.phase
        }
        switch phase {
        case .up:
            let stopped = status?.isStopped == true || status?.state == "stopping"
            let failures = state.withLock { $0.failures }
            guard stopped || failures >= policy.failures else { return }
            let reason = stopped ? "the provider says \(policy.instance) is \(status?.state ?? "?")" : "\(failures) probes in a row failed"
            let outage = Self.outageID(now)
            state.withLock { s in
                s.phase = .down(since: now, reason: reason, attempts: 0)
                s.outage = outage
                s.nextStart = now
                s.seenRunning = false
                s.runningSince = nil
            }
            record(.detected, reason, at: now)
            telemetry?.counter("containarium_sentinel_outages_total", [("machine", policy.instance)], help: "Outages of the guarded machine the sentinel noticed.")
                .increment()
            notify("sentinel.down", "critical", "\(policy.instance) is down", "\(reason); users get the maintenance page while the sentinel restarts it", since: now)
            logger.warning("\(policy.instance) is down (\(reason)): serving the maintenance page")
        case .down(let since, let reason, let attempts):
            if healthy, status?.state == "running" || status == nil {
                record(.healthy, String(format: "%.1f s after the outage was noticed", now.timeIntervalSince(since)), at: now)
                telemetry?.histogram("containarium_sentinel_outage_duration_seconds", [("machine", policy.instance)], buckets: Telemetry.longBuckets,
                                     help: "From noticing an outage to the machine's daemon answering again.")
                    .record(.milliseconds(Int64(now.timeIntervalSince(since) * 1000)))
                notify("sentinel.recovered", "info", "\(policy.instance) is back",
                       String(format: "its daemon answers again %.1f s after the outage was noticed; traffic is forwarded", now.timeIntervalSince(since)),
                       since: since, ended: now)
                state.withLock { s in
                    s.phase = .up
                    s.failures = 0
                }
                logger.notice("\(policy.instance) is back after \(Int(now.timeIntervalSince(since))) s: forwarding again")
                return
            }
            if status?.state == "running" {
                let (first, runningSince) = state.withLock { s -> (Bool, Date) in
                    defer { s.seenRunning = true }
                    if s.runningSince == nil { s.runningSince = now }
                    return (!s.seenRunning, s.runningSince ?? now)
                }
                if first { record(.started, "the provider says it runs; waiting for its daemon", at: now) }
                // Running, but its daemon never answers: a hung machine is reset (stopped, then
                // started again by the stopped branch below).
                if policy.resetAfter > 0, now.timeIntervalSince(runningSince) >= policy.resetAfter {
                    let waited = Int(now.timeIntervalSince(runningSince))
                    state.withLock { s in
                        s.runningSince = nil
                        s.seenRunning = false
                        s.nextStart = now
                    }
                    record(.resetRequested, "it runs but its daemon has not answered for \(waited) s: stopping it to start it again", at: now)
                    telemetry?.counter("containarium_sentinel_resets_total", [("machine", policy.instance)],
                                       help: "Resets (stop, then start) of a machine that ran without its daemon answering.").increment()
                    notify("sentinel.restarting", "warning", "\(policy.instance) is being reset",
                           "it runs but its daemon has not answered for \(waited) s; the sentinel stops it and starts it again", since: since)
                    do throws(ContainariumError) {
                        _ = try await lifecycle.stop(policy.instance)
                    } catch {
                        logger.warning("stopping \(policy.instance) for a reset failed: \(error.message) (tried again after \(Int(policy.resetAfter)) s)")
                    }
                }
                return
            }
            guard status?.isStopped == true, now >= state.withLock({ $0.nextStart }) else { return }
            let attempt = attempts + 1
            state.withLock { $0.phase = .down(since: since, reason: reason, attempts: attempt) }
            record(.startRequested, "attempt \(attempt)", at: now)
            if attempt == 1 { notify("sentinel.restarting", "warning", "\(policy.instance) is being restarted", "the sentinel asked its provider to start it", since: since) }
            do throws(ContainariumError) {
                let after = try await lifecycle.start(policy.instance)
                if let address = after.address, policy.upstream == nil, !address.isEmpty { state.withLock { $0.upstream = address } }
                state.withLock { $0.seenRunning = true }
                record(.started, "attempt \(attempt): \(after.state)", at: Date())
                startAttempt(ok: true)
            } catch {
                let wait = Self.backoff(attempt: attempt, base: policy.backoff, max: policy.maxBackoff)
                state.withLock { $0.nextStart = Date().addingTimeInterval(wait) }
                record(.startFailed, "attempt \(attempt): \(error.message); next in \(String(format: "%.1f", wait)) s", at: Date())
                startAttempt(ok: false)
                logger.warning("starting \(policy.instance) failed (attempt \(attempt)): \(error.message); again in \(Int(wait)) s")
            }
        }
    }

    /// Exponential backoff with jitter: base x 2^(attempt-1), at most `max`, then a random
    /// half to all of it (so that many sentinels do not retry in step).
    static func backoff(attempt: Int, base: Double, max: Double) -> Double {
        let full = min(max, base * pow(2, Double(min(attempt, 30) - 1)))
        return full / 2 + Double.random(in: 0...(full / 2))
    }

    private func startAttempt(ok: Bool) {
        telemetry?.counter("containarium_sentinel_start_attempts_total", [("machine", policy.instance), ("result", ok ? "ok" : "failed")],
                           help: "Starts of the guarded machine the sentinel asked for, by result.").increment()
    }

    /// Tell the policy's webhooks (in the background; each try is logged, never its secret).
    func notify(_ event: String, _ severity: String, _ title: String, _ text: String, since: Date, ended: Date? = nil) {
        guard let hooks = policy.webhooks, !hooks.isEmpty else { return }
        let outage = state.withLock { $0.outage }
        let n = ContainariumTelemetry.Notification(event: event, title: title, text: text, severity: severity,
                                                   labels: ["machine": policy.instance, "outage": outage], startsAt: since, endsAt: ended,
                                                   source: "containarium sentinel for \(policy.instance)")
        let sender = WebhookSender(policy: .init(maxAttempts: policy.webhookAttempts ?? 5, initialBackoff: policy.webhookBackoffSeconds ?? 2))
        let logger = self.logger, telemetry = self.telemetry
        for hook in hooks {
            let id = UUID()
            let task = Task { [weak self] in
                let ok = await sender.deliver(n, to: hook) { a in
                    if let e = a.error {
                        logger.warning("webhook \(hook.name): \(event) try \(a.attempt) failed (\(e))\(a.willRetry ? ", retrying" : "")")
                    } else {
                        logger.info("webhook \(hook.name): \(event) delivered (try \(a.attempt))")
                    }
                }
                telemetry?.counter("containarium_alert_deliveries_total", [("webhook", hook.name), ("result", ok ? "delivered" : "failed")],
                                   help: "Notifications delivered to each webhook (after retries), by result.").increment()
                _ = self?.notifying.withLock { $0.removeValue(forKey: id) }
            }
            notifying.withLock { $0[id] = task }
        }
    }

    static func outageID(_ at: Date) -> String {
        "outage-" + String(Int64(at.timeIntervalSince1970 * 1000))
    }

    private func record(_ kind: TimelineEntry.Kind, _ detail: String, at: Date) {
        let entry = state.withLock { s -> TimelineEntry in
            let e = TimelineEntry(at: at, outage: s.outage, kind: kind, detail: detail)
            s.timeline.append(e)
            if s.timeline.count > 1000 { s.timeline.removeFirst(s.timeline.count - 1000) }
            return e
        }
        logger.info("timeline \(entry.outage) \(entry.kind.rawValue): \(entry.detail)")
        Self.append(entry, to: policy.timelinePath, logger: logger)
    }

    static func append(_ entry: TimelineEntry, to path: String, logger: Logger) {
        guard var line = try? WireJSON.encode(entry) else { return }
        line.append(0x0A)
        let url = URL(fileURLWithPath: path)
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            logger.error("cannot append to the timeline \(path): \(String(cString: strerror(errno)))")
            return
        }
        defer { close(fd) }
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    // MARK: - probes

    /// The daemon's health: an HTTP 200 within 2 s, or a TCP connection to its port.
    func probe() async -> Bool {
        switch health {
        case .http(let url):
            return await HealthProbe.http(url, timeout: 2)
        case .tcp(let port):
            guard let host = upstream else { return false }
            return await HealthProbe.tcp(host: host, port: port, timeout: 2)
        }
    }
}

extension Sentinel {
    /// Run the sentinel until SIGTERM or SIGINT: the probe-and-repair loop and the listeners,
    /// in one ServiceGroup. `ready` gets the bound addresses once every route listens.
    public static func serve(config: HostConfig, plugins: PluginManager, logger: Logger,
                             ready: @escaping @Sendable ([String]) -> Void = { _ in }) async throws(ContainariumError) {
        guard let policy = config.sentinel else {
            throw .invalid("the config has no `sentinel` block (instance, routes; docs/sentinel.md)")
        }
        let telemetry = policy.metricsListen.map { _ in Telemetry(version: Telemetry.productVersion) }
        PluginCallMetrics.install(telemetry?.factory)
        let sentinel = try Sentinel(policy: policy, lifecycle: try lifecycle(in: plugins, id: policy.lifecycle), logger: logger, telemetry: telemetry)
        let proxy = try SentinelProxy(sentinel: sentinel, logger: logger)
        var channels = try await proxy.bind()
        if let listen = policy.metricsListen, let telemetry {
            var token: String?
            if let file = policy.metricsTokenFile {
                guard let t = try? String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty else {
                    for c in channels { try? await c.close() }
                    throw .invalid("sentinel.metricsTokenFile \(file) cannot be read or is empty")
                }
                token = t
            }
            do throws(ContainariumError) {
                channels.append(try await MetricsServer.bind(listen, telemetry: telemetry, token: token))
            } catch {
                for c in channels { try? await c.close() }
                throw error
            }
        }
        let listening = channels
        let bound = listening.compactMap { $0.localAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } }
        logger.notice("sentinel listening on \(bound.joined(separator: ", ")) for \(policy.instance)")
        ready(bound)
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [
                .init(service: LoopService(name: "sentinel") { await sentinel.run() }),
                .init(service: LoopService(name: "listeners") {
                    try? await gracefulShutdown()
                    for c in listening { try? await c.close() }
                }),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            throw ContainariumError(.unavailable, "the sentinel stopped with an error", cause: "\(error)")
        }
        logger.notice("sentinel stopped")
    }
}

/// A closure as a service that ends on graceful shutdown.
struct LoopService: Service, CustomStringConvertible {
    let name: String
    let body: @Sendable () async -> Void
    var description: String { name }
    func run() async throws {
        await cancelWhenGracefulShutdown { await body() }
    }
}
