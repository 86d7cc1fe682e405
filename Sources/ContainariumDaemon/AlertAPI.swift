import ContainariumCore
import ContainariumPlatform
import ContainariumProto
import ContainariumTelemetry
import Foundation
import GRPCCore
import SwiftProtobuf

// AlertService: the reference's /v1/alerts and /v1/system/alerting (and /v1/system/monitoring)
// over the control plane's built-in alerting.

extension ProtoMap {
    static func alertRule(_ r: AlertRuleRecord, _ instances: [AlertInstanceView]) -> Containarium_V1_AlertRule {
        .with {
            $0.name = r.name
            $0.metric = r.metric
            $0.operator = r.op
            $0.threshold = r.threshold
            $0.duration = r.duration
            $0.severity = r.severity
            $0.description_p = r.description
            $0.disabled = r.disabled
            $0.username = r.username
            $0.webhooks = r.webhooks
            $0.createdAt = Google_Protobuf_Timestamp(date: r.createdAt)
            $0.updatedAt = Google_Protobuf_Timestamp(date: r.updatedAt)
            $0.instances = instances.map { i in
                .with {
                    $0.target = i.target
                    $0.state = i.firing ? "firing" : "pending"
                    $0.value = i.value
                    $0.since = Google_Protobuf_Timestamp(date: i.since)
                }
            }
        }
    }

    static func alertDelivery(_ d: AlertDeliveryRecord) -> Containarium_V1_AlertDelivery {
        .with {
            $0.webhook = d.webhook
            $0.notification = d.notification
            $0.event = d.event
            $0.rule = d.rule
            $0.target = d.target
            $0.attempt = Int32(clamping: d.attempt)
            $0.status = Int32(clamping: d.status)
            $0.error = d.error
            $0.willRetry = d.willRetry
            $0.at = Google_Protobuf_Timestamp(date: d.at)
            $0.milliseconds = Int32(clamping: d.milliseconds)
        }
    }

    /// The settings as the API shows them: secrets never, only whether one is set.
    static func alerting(_ s: AlertingSettings) -> Containarium_V1_AlertingConfig {
        .with {
            $0.maxAttempts = Int32(clamping: s.maxAttempts)
            $0.initialBackoffSeconds = s.initialBackoffSeconds
            $0.webhooks = s.webhooks.map { w in
                .with {
                    $0.name = w.name
                    $0.url = w.url
                    $0.format = w.format.rawValue
                    $0.hasSecret_p = w.secret != nil
                    $0.zulipBotEmail = w.zulipBotEmail ?? ""
                    $0.zulipStream = w.zulipStream ?? ""
                    $0.zulipTopic = w.zulipTopic ?? ""
                }
            }
        }
    }
}

extension APIv1 {
    func rule(name: String, metric: String, op: String, threshold: Double, duration: String, severity: String, description: String,
              disabled: Bool, username: String, webhooks: [String]) throws(ContainariumError) -> AlertRuleRecord {
        try AlertRuleRecord.make(name: name, metric: metric, op: op, threshold: threshold, duration: duration, severity: severity,
                                 description: description, disabled: disabled, username: username, webhooks: webhooks)
    }

    func createAlert(_ who: Caller, _ m: Containarium_V1_CreateAlertRequest) async throws(ContainariumError) -> Containarium_V1_AlertRule {
        let r = try rule(name: m.name, metric: m.metric, op: m.operator, threshold: m.threshold, duration: m.duration, severity: m.severity,
                         description: m.description_p, disabled: m.disabled, username: m.username, webhooks: m.webhooks)
        return ProtoMap.alertRule(try await plane.putAlert(who, r, creating: true), [])
    }

    func updateAlert(_ who: Caller, _ m: Containarium_V1_UpdateAlertRequest) async throws(ContainariumError) -> Containarium_V1_AlertRule {
        let r = try rule(name: m.name, metric: m.metric, op: m.operator, threshold: m.threshold, duration: m.duration, severity: m.severity,
                         description: m.description_p, disabled: m.disabled, username: m.username, webhooks: m.webhooks)
        return ProtoMap.alertRule(try await plane.putAlert(who, r, creating: false), [])
    }

    func listAlerts(_ who: Caller, _: Containarium_V1_ListAlertsRequest) async throws(ContainariumError) -> Containarium_V1_ListAlertsResponse {
        let rules = try await plane.listAlerts(who)
        return .with { $0.rules = rules.map { ProtoMap.alertRule($0.0, $0.1) } }
    }

    func getAlert(_ who: Caller, _ m: Containarium_V1_GetAlertRequest) async throws(ContainariumError) -> Containarium_V1_AlertRule {
        let (r, i) = try await plane.getAlert(who, m.name)
        return ProtoMap.alertRule(r, i)
    }

    func deleteAlert(_ who: Caller, _ m: Containarium_V1_DeleteAlertRequest) async throws(ContainariumError) -> Containarium_V1_DeleteAlertResponse {
        try await plane.deleteAlert(who, m.name)
        return .init()
    }

    func testAlert(_ who: Caller, _ m: Containarium_V1_TestAlertRequest) async throws(ContainariumError) -> Containarium_V1_TestAlertResponse {
        let tries = try await plane.testAlert(who, m.name)
        return .with { $0.deliveries = tries.map(ProtoMap.alertDelivery) }
    }

    func listAlertDeliveries(_ who: Caller, _ m: Containarium_V1_ListAlertDeliveriesRequest) async throws(ContainariumError) -> Containarium_V1_ListAlertDeliveriesResponse {
        let tries = try await plane.alertDeliveries(who, limit: m.limit == 0 ? 100 : Int(m.limit))
        return .with { $0.deliveries = tries.map(ProtoMap.alertDelivery) }
    }

    func getAlerting(_ who: Caller, _: Containarium_V1_GetAlertingRequest) async throws(ContainariumError) -> Containarium_V1_AlertingConfig {
        ProtoMap.alerting(try await plane.alertingSettings(who))
    }

    func updateAlerting(_ who: Caller, _ m: Containarium_V1_UpdateAlertingRequest) async throws(ContainariumError) -> Containarium_V1_AlertingConfig {
        var webhooks: [WebhookTarget] = []
        for w in m.webhooks {
            guard let format = w.format.isEmpty ? .generic : WebhookTarget.Format(rawValue: w.format) else {
                throw .invalid("webhook \(w.name): format '\(w.format)' is not one of generic, slack, zulip")
            }
            if w.hasSecret_p { throw .invalid("webhook \(w.name): has_secret is output only (send secret, or leave it empty to keep the current one)") }
            webhooks.append(WebhookTarget(name: w.name, url: w.url, format: format, secret: ProtoMap.nonEmpty(w.secret),
                                          zulipBotEmail: ProtoMap.nonEmpty(w.zulipBotEmail), zulipStream: ProtoMap.nonEmpty(w.zulipStream),
                                          zulipTopic: ProtoMap.nonEmpty(w.zulipTopic)))
        }
        let settings = AlertingSettings(webhooks: webhooks, maxAttempts: m.maxAttempts == 0 ? 5 : Int(m.maxAttempts),
                                        initialBackoffSeconds: m.initialBackoffSeconds == 0 ? 2 : m.initialBackoffSeconds)
        return ProtoMap.alerting(try await plane.updateAlertingSettings(who, settings))
    }

    func getMonitoring(_ who: Caller, _: Containarium_V1_GetMonitoringRequest) async throws(ContainariumError) -> Containarium_V1_MonitoringInfo {
        let m = try plane.monitoring(who)
        return .with {
            $0.grafanaURL = m.grafanaURL
            $0.prometheusURL = m.prometheusURL
            $0.metricsPath = "/metrics"
            $0.metricsEnabled = m.metricsEnabled
            $0.dashboards = ["deploy/monitoring/grafana/containarium-nodes.json", "deploy/monitoring/grafana/containarium-environments.json",
                             "deploy/monitoring/rules/alerts.yml", "deploy/monitoring/rules/recording.yml"]
        }
    }
}

/// `containarium.v1.AlertService`.
struct AlertServiceV1: Containarium_V1_AlertService.ServiceProtocol {
    let auth: GRPCAuth
    var api: APIv1 { APIv1(plane: auth.plane) }

    func createAlert(request: ServerRequest<Containarium_V1_CreateAlertRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_AlertRule> {
        await auth.unary("CreateAlert", request, context) { (who, m) async throws(ContainariumError) in try await api.createAlert(who, m) }
    }
    func listAlerts(request: ServerRequest<Containarium_V1_ListAlertsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListAlertsResponse> {
        await auth.unary("ListAlerts", request, context) { (who, m) async throws(ContainariumError) in try await api.listAlerts(who, m) }
    }
    func getAlert(request: ServerRequest<Containarium_V1_GetAlertRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_AlertRule> {
        await auth.unary("GetAlert", request, context) { (who, m) async throws(ContainariumError) in try await api.getAlert(who, m) }
    }
    func updateAlert(request: ServerRequest<Containarium_V1_UpdateAlertRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_AlertRule> {
        await auth.unary("UpdateAlert", request, context) { (who, m) async throws(ContainariumError) in try await api.updateAlert(who, m) }
    }
    func deleteAlert(request: ServerRequest<Containarium_V1_DeleteAlertRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_DeleteAlertResponse> {
        await auth.unary("DeleteAlert", request, context) { (who, m) async throws(ContainariumError) in try await api.deleteAlert(who, m) }
    }
    func testAlert(request: ServerRequest<Containarium_V1_TestAlertRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_TestAlertResponse> {
        await auth.unary("TestAlert", request, context) { (who, m) async throws(ContainariumError) in try await api.testAlert(who, m) }
    }
    func listAlertDeliveries(request: ServerRequest<Containarium_V1_ListAlertDeliveriesRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListAlertDeliveriesResponse> {
        await auth.unary("ListAlertDeliveries", request, context) { (who, m) async throws(ContainariumError) in try await api.listAlertDeliveries(who, m) }
    }
    func getAlerting(request: ServerRequest<Containarium_V1_GetAlertingRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_AlertingConfig> {
        await auth.unary("GetAlerting", request, context) { (who, m) async throws(ContainariumError) in try await api.getAlerting(who, m) }
    }
    func updateAlerting(request: ServerRequest<Containarium_V1_UpdateAlertingRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_AlertingConfig> {
        await auth.unary("UpdateAlerting", request, context) { (who, m) async throws(ContainariumError) in try await api.updateAlerting(who, m) }
    }
    func getMonitoring(request: ServerRequest<Containarium_V1_GetMonitoringRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_MonitoringInfo> {
        await auth.unary("GetMonitoring", request, context) { (who, m) async throws(ContainariumError) in try await api.getMonitoring(who, m) }
    }
}
