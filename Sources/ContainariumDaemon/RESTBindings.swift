import ContainariumCore
import ContainariumPlatform
import ContainariumProto
import Foundation
import HTTPTypes
import SwiftProtobuf

/// What REST does with each RPC the contract binds to HTTP: the `APIv1` function it calls, the
/// action its audit entries name, and the status of a success. Paths, verbs and which fields
/// come from the path, the query or the body are the contract's (`google.api.http`).
struct RESTBinding: Sendable {
    struct Answer {
        var status: HTTPResponse.Status
        var body: JSONValue
        var location: String?
    }

    var action: String
    var status: HTTPResponse.Status
    var call: @Sendable (APIv1, Caller, JSONValue) async throws(ContainariumError) -> Answer
}

enum RESTBindings {
    static func unary<I: SwiftProtobuf.Message, O: SwiftProtobuf.Message>(
        _ method: String, _ action: String, _ status: HTTPResponse.Status,
        _ body: @escaping @Sendable (APIv1, Caller, I) async throws(ContainariumError) -> O
    ) -> (String, RESTBinding) {
        ("containarium.v1." + method, RESTBinding(action: action, status: status) { api, who, object throws(ContainariumError) in
            let request = try ProtoSchema.decode(I.self, object)
            return .init(status: status, body: try ProtoSchema.shared.answer(try await body(api, who, request)))
        })
    }

    /// A create answers 201 with the environment, or (async) 202 with the operation to poll.
    static let create: (String, RESTBinding) = ("containarium.v1.ContainerService/CreateContainer", RESTBinding(action: "container.create", status: .created) {
        api, who, object throws(ContainariumError) in
        let request = try ProtoSchema.decode(Containarium_V1_CreateContainerRequest.self, object)
        let answer = try await api.createContainer(who, request)
        if answer.hasOperation {
            return .init(status: .accepted, body: try ProtoSchema.shared.answer(answer.operation), location: "/v1/operations/\(answer.operation.id)")
        }
        return .init(status: .created, body: try ProtoSchema.shared.answer(answer.container))
    })

    static let all: [String: RESTBinding] = Dictionary(uniqueKeysWithValues: [
        create,
        unary("ContainerService/ListContainers", "container.list", .ok) { (api, who, m: Containarium_V1_ListContainersRequest) async throws(ContainariumError) in try await api.listContainers(who, m) },
        unary("ContainerService/GetContainer", "container.get", .ok) { (api, who, m: Containarium_V1_GetContainerRequest) async throws(ContainariumError) in try await api.getContainer(who, m) },
        unary("ContainerService/DeleteContainer", "container.delete", .ok) { (api, who, m: Containarium_V1_DeleteContainerRequest) async throws(ContainariumError) in try await api.deleteContainer(who, m) },
        unary("ContainerService/StartContainer", "container.start", .ok) { (api, who, m: Containarium_V1_StartContainerRequest) async throws(ContainariumError) in try await api.startContainer(who, m) },
        unary("ContainerService/StopContainer", "container.stop", .ok) { (api, who, m: Containarium_V1_StopContainerRequest) async throws(ContainariumError) in try await api.stopContainer(who, m) },
        unary("ContainerService/RestartContainer", "container.restart", .ok) { (api, who, m: Containarium_V1_RestartContainerRequest) async throws(ContainariumError) in try await api.restartContainer(who, m) },
        unary("ContainerService/ResizeContainer", "container.resize", .ok) { (api, who, m: Containarium_V1_ResizeContainerRequest) async throws(ContainariumError) in try await api.resizeContainer(who, m) },
        unary("ContainerService/Exec", "container.exec", .ok) { (api, who, m: Containarium_V1_ExecRequest) async throws(ContainariumError) in try await api.exec(who, m) },
        unary("ContainerService/InstallStack", "container.install-stack", .ok) { (api, who, m: Containarium_V1_InstallStackRequest) async throws(ContainariumError) in try await api.installStack(who, m) },
        unary("ContainerService/CleanupDisk", "container.cleanup-disk", .ok) { (api, who, m: Containarium_V1_CleanupDiskRequest) async throws(ContainariumError) in try await api.cleanupDisk(who, m) },
        unary("ContainerService/ExportSSHConfig", "container.ssh-config", .ok) { (api, who, m: Containarium_V1_ExportSSHConfigRequest) async throws(ContainariumError) in try await api.exportSSHConfig(who, m) },
        unary("ContainerService/GetCredentials", "container.credentials.read", .ok) { (api, who, m: Containarium_V1_GetCredentialsRequest) async throws(ContainariumError) in try await api.getCredentials(who, m) },
        unary("ContainerService/ListSSHKeys", "container.ssh-key.list", .ok) { (api, who, m: Containarium_V1_ListSSHKeysRequest) async throws(ContainariumError) in try await api.listSSHKeys(who, m) },
        unary("ContainerService/AddSSHKey", "container.ssh-key.add", .created) { (api, who, m: Containarium_V1_AddSSHKeyRequest) async throws(ContainariumError) in try await api.addSSHKey(who, m) },
        unary("ContainerService/RemoveSSHKey", "container.ssh-key.remove", .ok) { (api, who, m: Containarium_V1_RemoveSSHKeyRequest) async throws(ContainariumError) in try await api.removeSSHKey(who, m) },
        unary("ContainerService/ListCollaborators", "container.collaborator.list", .ok) { (api, who, m: Containarium_V1_ListCollaboratorsRequest) async throws(ContainariumError) in try await api.listCollaborators(who, m) },
        unary("ContainerService/AddCollaborator", "container.collaborator.add", .created) { (api, who, m: Containarium_V1_AddCollaboratorRequest) async throws(ContainariumError) in try await api.addCollaborator(who, m) },
        unary("ContainerService/RemoveCollaborator", "container.collaborator.remove", .ok) { (api, who, m: Containarium_V1_RemoveCollaboratorRequest) async throws(ContainariumError) in try await api.removeCollaborator(who, m) },
        unary("ContainerService/GetMetricsHistory", "container.metrics", .ok) { (api, who, m: Containarium_V1_GetMetricsHistoryRequest) async throws(ContainariumError) in try await api.getMetricsHistory(who, m) },
        unary("ContainerService/ListContainerMetrics", "system.metrics", .ok) { (api, who, m: Containarium_V1_ListContainerMetricsRequest) async throws(ContainariumError) in try await api.listContainerMetrics(who, m) },
        unary("SystemService/GetSystemInfo", "system.info", .ok) { (api, who, m: Containarium_V1_GetSystemInfoRequest) async throws(ContainariumError) in try await api.getSystemInfo(who, m) },
        unary("SystemService/ListPlugins", "system.plugins", .ok) { (api, who, m: Containarium_V1_ListPluginsRequest) async throws(ContainariumError) in try await api.listPlugins(who, m) },
        unary("SystemService/ListStacks", "system.stacks", .ok) { (api, who, m: Containarium_V1_ListStacksRequest) async throws(ContainariumError) in try await api.listStacks(who, m) },
        unary("SecurityService/ScanClamAV", "security.scan", .ok) { (api, who, m: Containarium_V1_SecurityScanRequest) async throws(ContainariumError) in try await api.scan("clamav", who, m) },
        unary("SecurityService/GetClamAVSummary", "security.summary", .ok) { (api, who, _: Containarium_V1_GetSecuritySummaryRequest) async throws(ContainariumError) in try await api.scanSummary("clamav", who) },
        unary("SecurityService/ListClamAVReports", "security.reports", .ok) { (api, who, m: Containarium_V1_ListScanReportsRequest) async throws(ContainariumError) in try await api.scanReports("clamav", who, m) },
        unary("SecurityService/ScanTrivy", "security.scan", .ok) { (api, who, m: Containarium_V1_SecurityScanRequest) async throws(ContainariumError) in try await api.scan("trivy", who, m) },
        unary("SecurityService/GetTrivySummary", "security.summary", .ok) { (api, who, _: Containarium_V1_GetSecuritySummaryRequest) async throws(ContainariumError) in try await api.scanSummary("trivy", who) },
        unary("SecurityService/ListTrivyReports", "security.reports", .ok) { (api, who, m: Containarium_V1_ListScanReportsRequest) async throws(ContainariumError) in try await api.scanReports("trivy", who, m) },
        unary("SystemService/RevokeCredentials", "credentials.revoke", .created) { (api, who, m: Containarium_V1_RevokeCredentialsRequest) async throws(ContainariumError) in try await api.revokeCredentials(who, m) },
        unary("SystemService/ListRevocations", "credentials.revocations", .ok) { (api, who, m: Containarium_V1_ListRevocationsRequest) async throws(ContainariumError) in try await api.listRevocations(who, m) },
        unary("SystemService/GetCatalog", "system.catalog", .ok) { (api, who, m: Containarium_V1_GetCatalogRequest) async throws(ContainariumError) in try await api.getCatalog(who, m) },
        unary("SystemService/ListBackends", "system.backends", .ok) { (api, who, m: Containarium_V1_ListBackendsRequest) async throws(ContainariumError) in try await api.listBackends(who, m) },
        unary("SystemService/GetNodeMetrics", "system.node-metrics", .ok) { (api, who, m: Containarium_V1_GetNodeMetricsRequest) async throws(ContainariumError) in try await api.getNodeMetrics(who, m) },
        unary("ClusterService/ListNodes", "node.list", .ok) { (api, who, m: Containarium_V1_ListNodesRequest) async throws(ContainariumError) in try await api.listNodes(who, m) },
        unary("ClusterService/DrainNode", "node.drain", .ok) { (api, who, m: Containarium_V1_DrainNodeRequest) async throws(ContainariumError) in try await api.drainNode(who, m) },
        unary("ClusterService/UndrainNode", "node.undrain", .ok) { (api, who, m: Containarium_V1_UndrainNodeRequest) async throws(ContainariumError) in try await api.undrainNode(who, m) },
        unary("ClusterService/RemoveNode", "node.remove", .ok) { (api, who, m: Containarium_V1_RemoveNodeRequest) async throws(ContainariumError) in try await api.removeNode(who, m) },
        unary("ClusterService/ExplainSchedule", "schedule.explain", .ok) { (api, who, m: Containarium_V1_ExplainScheduleRequest) async throws(ContainariumError) in try await api.explainSchedule(who, m) },
        unary("AuditService/ListAudit", "audit.list", .ok) { (api, who, m: Containarium_V1_ListAuditRequest) async throws(ContainariumError) in try await api.listAudit(who, m) },
        unary("OperationService/GetOperation", "operation.get", .ok) { (api, who, m: Containarium_V1_GetOperationRequest) async throws(ContainariumError) in try await api.getOperation(who, m) },
        unary("AlertService/CreateAlert", "alert.create", .created) { (api, who, m: Containarium_V1_CreateAlertRequest) async throws(ContainariumError) in try await api.createAlert(who, m) },
        unary("AlertService/ListAlerts", "alert.list", .ok) { (api, who, m: Containarium_V1_ListAlertsRequest) async throws(ContainariumError) in try await api.listAlerts(who, m) },
        unary("AlertService/GetAlert", "alert.get", .ok) { (api, who, m: Containarium_V1_GetAlertRequest) async throws(ContainariumError) in try await api.getAlert(who, m) },
        unary("AlertService/UpdateAlert", "alert.update", .ok) { (api, who, m: Containarium_V1_UpdateAlertRequest) async throws(ContainariumError) in try await api.updateAlert(who, m) },
        unary("AlertService/DeleteAlert", "alert.delete", .ok) { (api, who, m: Containarium_V1_DeleteAlertRequest) async throws(ContainariumError) in try await api.deleteAlert(who, m) },
        unary("AlertService/TestAlert", "alert.test", .ok) { (api, who, m: Containarium_V1_TestAlertRequest) async throws(ContainariumError) in try await api.testAlert(who, m) },
        unary("AlertService/ListAlertDeliveries", "alert.deliveries", .ok) { (api, who, m: Containarium_V1_ListAlertDeliveriesRequest) async throws(ContainariumError) in try await api.listAlertDeliveries(who, m) },
        unary("AlertService/GetAlerting", "system.alerting.get", .ok) { (api, who, m: Containarium_V1_GetAlertingRequest) async throws(ContainariumError) in try await api.getAlerting(who, m) },
        unary("AlertService/UpdateAlerting", "system.alerting", .ok) { (api, who, m: Containarium_V1_UpdateAlertingRequest) async throws(ContainariumError) in try await api.updateAlerting(who, m) },
        unary("AlertService/GetMonitoring", "system.monitoring", .ok) { (api, who, m: Containarium_V1_GetMonitoringRequest) async throws(ContainariumError) in try await api.getMonitoring(who, m) },
    ])
}
