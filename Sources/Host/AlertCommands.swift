import ArgumentParser
import ContainariumClient
import ContainariumCore
import ContainariumProto
import Foundation
import SwiftProtobuf

/// `containarium alert add|list|rm|test|deliveries|webhook`: the daemon's built-in alerting
/// (AlertService; admins only), always through a daemon.
struct AlertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alert", abstract: "Built-in alert rules and where their notifications go (admins).",
        subcommands: [AlertAdd.self, AlertList.self, AlertRemove.self, AlertTest.self, AlertDeliveries.self, AlertWebhook.self])
}

struct AlertAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a rule (or replace it with --replace): METRIC OP THRESHOLD held for --for.",
        discussion: "Metrics: environment_memory_percent, environment_disk_percent, environment_cpu_percent, environment_processes, node_unhealthy, node_memory_percent, node_disk_percent, scan_findings.\nExample: containarium alert add mem-high --metric environment_memory_percent --op '>' --threshold 90 --for 5m --severity critical")
    @Argument(help: "The rule's name (a-z 0-9 -).") var name: String
    @Option(help: "What to watch.") var metric: String
    @Option(name: .customLong("op"), help: "> >= < or <=.") var op = ">"
    @Option(help: "The value to compare with.") var threshold: Double
    @Option(name: .customLong("for"), help: "How long it must hold before the alert fires (90s, 5m, 1h).") var duration = "0s"
    @Option(help: "info, warning or critical.") var severity = "warning"
    @Option(help: "What it means (sent with each notification).") var description = ""
    @Option(help: "Only this user's environment.") var user = ""
    @Option(help: "Notify only these webhooks (repeatable; default: all).") var webhook: [String] = []
    @Flag(help: "Keep the rule but do not evaluate it.") var disabled = false
    @Flag(help: "Replace the rule of that name.") var replace = false
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard let client = try remote.daemon() else { throw fail(LocalDaemon.notRunning(remote.stateDir, "alert rules are the daemon's")) }
        let (name, metric, op, threshold, duration, severity, description, user, webhook, disabled) =
            (self.name, self.metric, self.op, self.threshold, self.duration, self.severity, self.description, self.user, self.webhook, self.disabled)
        let rule = try await client.cli { c in
            if replace {
                return try await c.alerts.updateAlert(.with {
                    $0.name = name; $0.metric = metric; $0.operator = op; $0.threshold = threshold; $0.duration = duration
                    $0.severity = severity; $0.description_p = description; $0.username = user; $0.webhooks = webhook; $0.disabled = disabled
                }, metadata: c.metadata)
            }
            return try await c.alerts.createAlert(.with {
                $0.name = name; $0.metric = metric; $0.operator = op; $0.threshold = threshold; $0.duration = duration
                $0.severity = severity; $0.description_p = description; $0.username = user; $0.webhooks = webhook; $0.disabled = disabled
            }, metadata: c.metadata)
        }
        if format == .json { return try printRemote(rule) }
        print("alert \(rule.name): \(rule.metric) \(rule.operator) \(rule.threshold) for \(rule.duration) (\(rule.severity))")
    }
}

struct AlertList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Every rule, with what is pending or firing now.")
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard let client = try remote.daemon() else { throw fail(LocalDaemon.notRunning(remote.stateDir, "alert rules are the daemon's")) }
        let list = try await client.cli { c in try await c.alerts.listAlerts(.init(), metadata: c.metadata) }
        if format == .json { return try printRemote(list) }
        let rows = list.rules.map { r -> [String] in
            let firing = r.instances.filter { $0.state == "firing" }
            let pending = r.instances.count - firing.count
            let state = r.disabled ? "disabled" : !firing.isEmpty ? "FIRING \(firing.map(\.target).joined(separator: ","))" : pending > 0 ? "pending \(pending)" : "ok"
            return [r.name, "\(r.metric) \(r.operator) \(r.threshold) for \(r.duration)", r.severity, r.username.isEmpty ? "all" : r.username, state]
        }
        print(Table.render(header: ["NAME", "CONDITION", "SEVERITY", "SCOPE", "STATE"], rows: rows))
    }
}

struct AlertRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a rule.")
    @Argument(help: "The rule's name.") var name: String
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard let client = try remote.daemon() else { throw fail(LocalDaemon.notRunning(remote.stateDir, "alert rules are the daemon's")) }
        let name = self.name
        _ = try await client.cli { c in try await c.alerts.deleteAlert(.with { $0.name = name }, metadata: c.metadata) }
        print("removed alert \(name)")
    }
}

struct AlertTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "test", abstract: "Send a test notification of a rule to its webhooks now (exit 1 when one fails).")
    @Argument(help: "The rule's name.") var name: String
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard let client = try remote.daemon() else { throw fail(LocalDaemon.notRunning(remote.stateDir, "alert rules are the daemon's")) }
        let name = self.name
        let answer = try await client.cli { c in try await c.alerts.testAlert(.with { $0.name = name }, metadata: c.metadata) }
        if format == .json { try printRemote(answer) } else { AlertDeliveries.print(answer.deliveries) }
        if answer.deliveries.contains(where: { !$0.error.isEmpty }) { throw ExitCode(1) }
    }
}

struct AlertDeliveries: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "deliveries", abstract: "The delivery log: every try at every webhook, newest first.")
    @Option(help: "At most this many (1-500).") var limit = 50
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard (1...500).contains(limit) else { throw fail(.invalid("--limit must be 1 to 500")) }
        guard let client = try remote.daemon() else { throw fail(LocalDaemon.notRunning(remote.stateDir, "the delivery log is the daemon's")) }
        let limit = Int32(self.limit)
        let answer = try await client.cli { c in try await c.alerts.listAlertDeliveries(.with { $0.limit = limit }, metadata: c.metadata) }
        if format == .json { return try printRemote(answer) }
        Self.print(answer.deliveries)
    }

    static func print(_ tries: [Containarium_V1_AlertDelivery]) {
        let f = ISO8601DateFormatter()
        Swift.print(Table.render(header: ["AT", "EVENT", "RULE", "TARGET", "WEBHOOK", "TRY", "STATUS", "RESULT"], rows: tries.map { d in
            [f.string(from: d.at.date), d.event, d.rule, d.target, d.webhook, String(d.attempt), d.status == 0 ? "-" : String(d.status),
             d.error.isEmpty ? "delivered" : d.error + (d.willRetry ? " (retrying)" : "")]
        }))
    }
}

/// `alert webhook set|rm|list`: the webhooks of PUT /v1/system/alerting, one at a time.
struct AlertWebhook: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook", abstract: "Where notifications go: add or replace (set), remove (rm) or list webhooks.",
        discussion: "Formats: generic (JSON, X-Containarium-Signature: sha256=HMAC-SHA256 of \"TIMESTAMP.BODY\" with --secret-file), slack (an incoming webhook URL), zulip (the send-message API URL, --zulip-bot-email, --zulip-stream, the bot's API key in --secret-file).")
    enum Action: String, ExpressibleByArgument { case set, rm, list }
    @Argument(help: "set, rm or list.") var action: Action
    @Argument(help: "The webhook's name (set, rm).") var name: String?
    @Option(help: "Its URL (set).") var url: String?
    @Option(name: .customLong("webhook-format"), help: "generic, slack or zulip (set).") var webhookFormat = "generic"
    @Option(name: .customLong("secret-file"), help: "A file holding the HMAC key (generic) or the bot's API key (zulip); kept when omitted.") var secretFile: String?
    @Option(name: .customLong("zulip-bot-email")) var zulipBotEmail: String?
    @Option(name: .customLong("zulip-stream")) var zulipStream: String?
    @Option(name: .customLong("zulip-topic")) var zulipTopic: String?
    @Option(name: .customLong("max-attempts"), help: "Tries per notification, 1-10 (kept when omitted).") var maxAttempts: Int?
    @Option(name: .customLong("initial-backoff"), help: "Seconds before the first retry (doubling), 0.1-60 (kept when omitted).") var initialBackoff: Double?
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard let client = try remote.daemon() else { throw fail(LocalDaemon.notRunning(remote.stateDir, "alerting settings are the daemon's")) }
        var secret = ""
        if let secretFile {
            guard let text = try? String(contentsOfFile: secretFile, encoding: .utf8) else { throw fail(.invalid("cannot read \(secretFile)")) }
            secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let (action, name, url, webhookFormat, zulipBotEmail, zulipStream, zulipTopic, maxAttempts, initialBackoff) =
            (self.action, self.name, self.url, self.webhookFormat, self.zulipBotEmail, self.zulipStream, self.zulipTopic, self.maxAttempts, self.initialBackoff)
        if action != .list && name == nil { throw fail(.invalid("give the webhook's name")) }
        if action == .set && url == nil { throw fail(.invalid("set needs --url")) }
        let config = try await client.cli { c in
            let current = try await c.alerts.getAlerting(.init(), metadata: c.metadata)
            guard action != .list || maxAttempts != nil || initialBackoff != nil else { return current }
            var hooks = current.webhooks.map { w -> Containarium_V1_Webhook in
                var w = w
                w.hasSecret_p = false  // output only; an empty secret keeps it
                return w
            }
            switch action {
            case .list: break
            case .rm:
                guard hooks.contains(where: { $0.name == name }) else { throw ContainariumError.notFound("no webhook \(name ?? "")") }
                hooks.removeAll { $0.name == name }
            case .set:
                let hook = Containarium_V1_Webhook.with {
                    $0.name = name ?? ""; $0.url = url ?? ""; $0.format = webhookFormat; $0.secret = secret
                    $0.zulipBotEmail = zulipBotEmail ?? ""; $0.zulipStream = zulipStream ?? ""; $0.zulipTopic = zulipTopic ?? ""
                }
                if let i = hooks.firstIndex(where: { $0.name == name }) { hooks[i] = hook } else { hooks.append(hook) }
            }
            return try await c.alerts.updateAlerting(.with {
                $0.webhooks = hooks
                $0.maxAttempts = Int32(maxAttempts ?? Int(current.maxAttempts))
                $0.initialBackoffSeconds = initialBackoff ?? current.initialBackoffSeconds
            }, metadata: c.metadata)
        }
        if format == .json { return try printRemote(config) }
        print(Table.render(header: ["NAME", "FORMAT", "URL", "SECRET"], rows: config.webhooks.map { [$0.name, $0.format, $0.url, $0.hasSecret_p ? "set" : "-"] }))
        print("tries per notification: \(config.maxAttempts), first retry after \(config.initialBackoffSeconds) s (doubling, at most 60 s)")
    }
}
