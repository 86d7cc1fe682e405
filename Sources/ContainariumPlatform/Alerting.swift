public import ContainariumCore
import ContainariumStore
public import ContainariumTelemetry
public import Foundation
import Prometheus
import Synchronization

/// A built-in alert rule (AlertService): `metric op threshold` held for `duration` per target.
public struct AlertRuleRecord: Codable, Sendable, Equatable {
    public var name: String
    public var metric: String
    public var op: String
    public var threshold: Double
    /// As given ("5m"), and in seconds.
    public var duration: String
    public var durationSeconds: Double
    public var severity: String
    public var description: String
    public var disabled: Bool
    public var username: String
    public var webhooks: [String]
    public var createdAt: Date
    public var updatedAt: Date

    public static let metrics: [String] = [
        "environment_memory_percent", "environment_disk_percent", "environment_cpu_percent", "environment_processes",
        "node_unhealthy", "node_memory_percent", "node_disk_percent", "scan_findings",
    ]
    public static let operators = [">", ">=", "<", "<="]
    public static let severities = ["info", "warning", "critical"]

    /// A rule from what a caller sent, every field checked (400 with what is wrong).
    public static func make(name: String, metric: String, op: String, threshold: Double, duration: String, severity: String, description: String,
                            disabled: Bool, username: String, webhooks: [String], now: Date = Date()) throws(ContainariumError) -> AlertRuleRecord {
        guard name.count <= 63, name.range(of: "^[a-z0-9][a-z0-9-]*$", options: .regularExpression) != nil else {
            throw .invalid("alert name '\(name)' must be 1-63 of a-z 0-9 - (starting with a letter or digit)")
        }
        guard metrics.contains(metric) else { throw .invalid("metric '\(metric)' is not one of \(metrics.joined(separator: ", "))") }
        let op = op.isEmpty ? ">" : op
        guard operators.contains(op) else { throw .invalid("operator '\(op)' is not one of > >= < <=") }
        guard threshold.isFinite else { throw .invalid("threshold must be a finite number") }
        let text = duration.isEmpty ? "0s" : duration
        let seconds = try parseDuration(text)
        let severity = severity.isEmpty ? "warning" : severity
        guard severities.contains(severity) else { throw .invalid("severity '\(severity)' is not one of info, warning, critical") }
        guard description.count <= 1000, !description.contains(where: { $0.isNewline && $0 != "\n" }) else {
            throw .invalid("description must be at most 1000 characters")
        }
        if !username.isEmpty {
            _ = try Username(username)
            guard metric.hasPrefix("environment_") || metric == "scan_findings" else {
                throw .invalid("username limits environment metrics and scan_findings only, not \(metric)")
            }
        }
        guard webhooks.count <= 20, Set(webhooks).count == webhooks.count else { throw .invalid("webhooks: at most 20 names, each once") }
        return AlertRuleRecord(name: name, metric: metric, op: op, threshold: threshold, duration: text, durationSeconds: seconds, severity: severity,
                               description: description, disabled: disabled, username: username, webhooks: webhooks, createdAt: now, updatedAt: now)
    }

    /// "90s", "5m", "1h", "1h30m" (0 s to 24 h).
    static func parseDuration(_ s: String) throws(ContainariumError) -> Double {
        var total = 0.0, number = "", sawUnit = false
        for c in s {
            if c.isASCII, c.isNumber { number.append(c); continue }
            guard let n = Double(number), let unit = ["s": 1.0, "m": 60, "h": 3600][String(c)] else {
                throw .invalid("duration '\(s)' is not like 90s, 5m or 1h")
            }
            total += n * unit
            number = ""
            sawUnit = true
        }
        guard number.isEmpty, sawUnit, total <= 86_400 else { throw .invalid("duration '\(s)' must be like 90s, 5m or 1h, at most 24h") }
        return total
    }

    func holds(_ value: Double) -> Bool {
        switch op {
        case ">": value > threshold
        case ">=": value >= threshold
        case "<": value < threshold
        default: value <= threshold
        }
    }
}

/// Where notifications go, and how often they are tried.
public struct AlertingSettings: Codable, Sendable, Equatable {
    public var webhooks: [WebhookTarget]
    public var maxAttempts: Int
    public var initialBackoffSeconds: Double
    public init(webhooks: [WebhookTarget] = [], maxAttempts: Int = 5, initialBackoffSeconds: Double = 2) {
        self.webhooks = webhooks
        self.maxAttempts = maxAttempts
        self.initialBackoffSeconds = initialBackoffSeconds
    }

    func validate() throws(ContainariumError) {
        guard (1...10).contains(maxAttempts) else { throw .invalid("max_attempts must be 1 to 10") }
        guard initialBackoffSeconds.isFinite, (0.1...60).contains(initialBackoffSeconds) else { throw .invalid("initial_backoff_seconds must be 0.1 to 60") }
        guard webhooks.count <= 20 else { throw .invalid("at most 20 webhooks") }
        var names = Set<String>()
        for w in webhooks {
            try w.validate()
            guard names.insert(w.name).inserted else { throw .invalid("webhook name '\(w.name)' is given twice") }
        }
    }
}

/// One try of one notification at one webhook (the delivery log).
public struct AlertDeliveryRecord: Codable, Sendable, Equatable {
    public var webhook: String
    public var notification: String
    public var event: String
    public var rule: String
    public var target: String
    public var attempt: Int
    public var status: Int
    public var error: String
    public var willRetry: Bool
    public var at: Date
    public var milliseconds: Int
}

/// A rule's target whose condition holds now.
public struct AlertInstanceView: Sendable, Equatable {
    public var target: String
    public var firing: Bool
    public var value: Double
    public var since: Date
}

/// The built-in alerting: rules and settings in the store (every daemon on it sees them),
/// evaluated after every usage sample over this daemon's own view (its environments' samples,
/// the cluster's node health, its scans' findings), notifications delivered by `WebhookSender`
/// and each try written to the delivery log. Firing and resolving are events too.
public final class Alerting: Sendable {
    struct Instance {
        var since: Date
        var value: Double
        var firing: Bool
        /// The notification id of the firing (resolved reuses it in its labels).
        var notification: String?
    }
    let store: Store
    let events: DaemonEvents
    let metrics: PlatformMetrics
    let source: String
    private let state = Mutex<[String: [String: Instance]]>([:])
    private let deliveriesWritten = Atomic<Int>(0)
    /// Deliveries under way (cancelled on shutdown).
    private let inFlight = Mutex<[UUID: Task<Void, Never>]>([:])
    static let rulePrefix = "alert.rule."
    static let settingsKey = "alerting.settings"
    static let logPrefix = "alertlog."
    static let keepDeliveries = 500

    init(store: Store, events: DaemonEvents, metrics: PlatformMetrics, source: String) {
        self.store = store
        self.events = events
        self.metrics = metrics
        self.source = source
    }

    // MARK: - storage

    func rules() async throws(ContainariumError) -> [AlertRuleRecord] {
        let rows = try await store.settings(prefix: Self.rulePrefix)
        return rows.values.compactMap { try? WireJSON.decode(AlertRuleRecord.self, from: Data($0.utf8)) }.sorted { $0.name < $1.name }
    }

    func rule(_ name: String) async throws(ContainariumError) -> AlertRuleRecord {
        guard let text = try await store.setting(Self.rulePrefix + name), let r = try? WireJSON.decode(AlertRuleRecord.self, from: Data(text.utf8)) else {
            throw .notFound("no alert rule \(name)")
        }
        return r
    }

    func save(_ rule: AlertRuleRecord, creating: Bool) async throws(ContainariumError) {
        let text = String(decoding: try WireJSON.encode(rule), as: UTF8.self)
        if creating {
            // (The claim settles a race between two creates; an identical rule sent twice claims
            // "successfully" the second time, so an existing one is refused first.)
            guard try await store.setting(Self.rulePrefix + rule.name) == nil, try await store.claimSetting(Self.rulePrefix + rule.name, text) else {
                throw ContainariumError(.alreadyExists, "alert rule \(rule.name) exists")
            }
        } else {
            try await store.setSetting(Self.rulePrefix + rule.name, text)
        }
        _ = state.withLock { $0.removeValue(forKey: rule.name) }  // its state starts over
    }

    func delete(_ name: String) async throws(ContainariumError) {
        guard try await store.deleteSetting(Self.rulePrefix + name) else { throw .notFound("no alert rule \(name)") }
        _ = state.withLock { $0.removeValue(forKey: name) }
    }

    func settings() async throws(ContainariumError) -> AlertingSettings {
        guard let text = try await store.setting(Self.settingsKey) else { return AlertingSettings() }
        return (try? WireJSON.decode(AlertingSettings.self, from: Data(text.utf8))) ?? AlertingSettings()
    }

    /// Replace the settings; a webhook sent without a secret keeps the one it has.
    func update(_ new: AlertingSettings) async throws(ContainariumError) -> AlertingSettings {
        var new = new
        let old = try await settings()
        for i in new.webhooks.indices where new.webhooks[i].secret == nil {
            new.webhooks[i].secret = old.webhooks.first { $0.name == new.webhooks[i].name }?.secret
        }
        try new.validate()
        try await store.setSetting(Self.settingsKey, String(decoding: try WireJSON.encode(new), as: UTF8.self))
        return new
    }

    func deliveries(limit: Int) async throws(ContainariumError) -> [AlertDeliveryRecord] {
        let rows = try await store.settings(prefix: Self.logPrefix)
        return rows.sorted { $0.key > $1.key }.prefix(limit).compactMap { try? WireJSON.decode(AlertDeliveryRecord.self, from: Data($0.value.utf8)) }
    }

    public func instances(of rule: String) -> [AlertInstanceView] {
        state.withLock { s in
            (s[rule] ?? [:]).map { AlertInstanceView(target: $0.key, firing: $0.value.firing, value: $0.value.value, since: $0.value.since) }
                .sorted { $0.target < $1.target }
        }
    }

    // MARK: - evaluation

    /// One value per target of a metric, from this daemon's view now.
    public typealias Observations = [String: (value: Double, username: String?)]

    /// Evaluate every enabled rule against `observe(metric)`; notify what starts or stops firing.
    public func evaluate(now: Date = Date(), observe: (String) -> Observations) async {
        guard let rules = try? await rules() else { return }
        var fired: [(AlertRuleRecord, String, Instance, String?)] = []
        var resolved: [(AlertRuleRecord, String, Instance, String?)] = []
        var firingCounts: [(AlertRuleRecord, Int)] = []
        for rule in rules {
            let observations = rule.disabled ? [:] : observe(rule.metric).filter { rule.username.isEmpty || $0.value.username == rule.username }
            let changes = state.withLock { s -> (fired: [(String, Instance, String?)], resolved: [(String, Instance, String?)], firing: Int) in
                var current = s[rule.name] ?? [:]
                var f: [(String, Instance, String?)] = [], r: [(String, Instance, String?)] = []
                for (target, o) in observations where rule.holds(o.value) {
                    var i = current[target] ?? Instance(since: now, value: o.value, firing: false)
                    i.value = o.value
                    if !i.firing, now.timeIntervalSince(i.since) >= rule.durationSeconds {
                        i.firing = true
                        i.notification = UUID().uuidString.lowercased()
                        f.append((target, i, o.username))
                    }
                    current[target] = i
                }
                for (target, i) in current where !(observations[target].map { rule.holds($0.value) } ?? false) {
                    current[target] = nil
                    if i.firing { r.append((target, i, observations[target]?.username ?? Self.username(of: target))) }
                }
                s[rule.name] = current
                return (f, r, current.values.filter(\.firing).count)
            }
            fired += changes.fired.map { (rule, $0.0, $0.1, $0.2) }
            resolved += changes.resolved.map { (rule, $0.0, $0.1, $0.2) }
            firingCounts.append((rule, changes.firing))
        }
        // Rules that are gone stop counting.
        let names = Set(rules.map(\.name))
        state.withLock { s in for k in s.keys where !names.contains(k) { s[k] = nil } }
        if let t = metrics.telemetry {
            for (rule, n) in firingCounts {
                t.gauge("containarium_alerts_firing", [("rule", rule.name), ("severity", rule.severity)], help: "Targets a built-in alert rule fires for now.")
                    .set(to: Double(n))
            }
        }
        guard !fired.isEmpty || !resolved.isEmpty else { return }
        let settings = (try? await settings()) ?? AlertingSettings()
        for (rule, target, i, user) in fired { notify(rule, target: target, instance: i, username: user, resolved: false, settings: settings, now: now) }
        for (rule, target, i, user) in resolved { notify(rule, target: target, instance: i, username: user, resolved: true, settings: settings, now: now) }
    }

    static func username(of target: String) -> String? {
        let name = target.split(separator: "/").first.map(String.init) ?? target
        return Username(containerName: name)?.value
    }

    func notify(_ rule: AlertRuleRecord, target: String, instance i: Instance, username: String?, resolved: Bool, settings: AlertingSettings, now: Date) {
        let event = resolved ? "alert.resolved" : "alert.firing"
        events.publish(event, username: username, data: .alert(rule: rule.name, target: target, severity: rule.severity, value: i.value, threshold: rule.threshold))
        let value = (i.value * 100).rounded() / 100
        let text = resolved
            ? "\(rule.metric) of \(target) is no longer \(rule.op) \(Self.number(rule.threshold)) (it fired since \(ISO8601DateFormatter().string(from: i.since)))"
            : "\(rule.metric) of \(target) is \(Self.number(value)), \(rule.op) \(Self.number(rule.threshold)) for \(rule.duration)" + (rule.description.isEmpty ? "" : ": \(rule.description)")
        let n = ContainariumTelemetry.Notification(id: resolved ? UUID().uuidString.lowercased() : (i.notification ?? UUID().uuidString.lowercased()), event: event,
                             title: "\(resolved ? "Resolved" : rule.severity.capitalized): \(rule.name) on \(target)", text: text, severity: rule.severity,
                             labels: ["rule": rule.name, "target": target, "metric": rule.metric] .merging(i.notification.map { ["firing_id": $0] } ?? [:]) { a, _ in a },
                             value: i.value, threshold: rule.threshold, startsAt: i.since, endsAt: resolved ? now : nil, source: source)
        deliver(n, rule: rule.name, target: target, to: rule.webhooks, settings: settings, retries: true)
    }

    static func number(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v) }

    /// Send `n` to the named webhooks (all when none is named), in the background.
    func deliver(_ n: ContainariumTelemetry.Notification, rule: String, target: String, to names: [String], settings: AlertingSettings, retries: Bool) {
        let sender = WebhookSender(policy: .init(maxAttempts: retries ? settings.maxAttempts : 1, initialBackoff: settings.initialBackoffSeconds))
        for webhook in settings.webhooks where names.isEmpty || names.contains(webhook.name) {
            let id = UUID()
            let task = Task { [self] in
                let ok = await sender.deliver(n, to: webhook) { attempt in await self.log(attempt, rule: rule, target: target) }
                metrics.telemetry?.counter("containarium_alert_deliveries_total", [("webhook", webhook.name), ("result", ok ? "delivered" : "failed")],
                                           help: "Notifications delivered to each webhook (after retries), by result.").increment()
                _ = inFlight.withLock { $0.removeValue(forKey: id) }
            }
            inFlight.withLock { $0[id] = task }
        }
    }

    /// Send a test notification of `rule` to its webhooks, one try each, and answer the tries.
    func test(_ rule: AlertRuleRecord) async throws(ContainariumError) -> [AlertDeliveryRecord] {
        let settings = try await settings()
        let targets = settings.webhooks.filter { rule.webhooks.isEmpty || rule.webhooks.contains($0.name) }
        guard !targets.isEmpty else { throw ContainariumError(.failedPrecondition, "no webhook to test: configure one with PUT /v1/system/alerting") }
        let n = ContainariumTelemetry.Notification(event: "alert.test", title: "Test: \(rule.name)", text: "A test of alert rule \(rule.name) (\(rule.metric) \(rule.op) \(Self.number(rule.threshold)) for \(rule.duration)).",
                             severity: rule.severity, labels: ["rule": rule.name, "metric": rule.metric], source: source)
        let sender = WebhookSender(policy: .init(maxAttempts: 1, initialBackoff: settings.initialBackoffSeconds))
        return await withTaskGroup(of: AlertDeliveryRecord?.self) { group in
            for w in targets {
                group.addTask {
                    let box = Mutex<AlertDeliveryRecord?>(nil)
                    await sender.deliver(n, to: w) { attempt in box.withLock { $0 = self.record(attempt, rule: rule.name, target: "-") }; await self.log(attempt, rule: rule.name, target: "-") }
                    return box.withLock { $0 }
                }
            }
            var out: [AlertDeliveryRecord] = []
            for await r in group { if let r { out.append(r) } }
            return out.sorted { $0.webhook < $1.webhook }
        }
    }

    func record(_ a: DeliveryAttempt, rule: String, target: String) -> AlertDeliveryRecord {
        AlertDeliveryRecord(webhook: a.webhook, notification: a.notification, event: a.event, rule: rule, target: target, attempt: a.attempt,
                            status: a.status ?? 0, error: a.error ?? "", willRetry: a.willRetry, at: a.at, milliseconds: a.milliseconds)
    }

    /// Write one try to the delivery log (the newest `keepDeliveries` are kept).
    func log(_ a: DeliveryAttempt, rule: String, target: String) async {
        let r = record(a, rule: rule, target: target)
        guard let data = try? WireJSON.encode(r) else { return }
        let key = Self.logPrefix + String(format: "%016lld", Int64(a.at.timeIntervalSince1970 * 1_000_000)) + "." + UUID().uuidString.prefix(8).lowercased()
        try? await store.setSetting(key, String(decoding: data, as: UTF8.self))
        if deliveriesWritten.add(1, ordering: .relaxed).newValue % 50 == 0, let rows = try? await store.settings(prefix: Self.logPrefix),
           rows.count > Self.keepDeliveries {
            for k in rows.keys.sorted().dropLast(Self.keepDeliveries) { _ = try? await store.deleteSetting(k) }
        }
    }

    /// Stop deliveries under way (shutdown).
    func cancelDeliveries() {
        for t in inFlight.withLock({ Array($0.values) }) { t.cancel() }
    }
}
