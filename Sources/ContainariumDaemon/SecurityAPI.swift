import ContainariumCore
import ContainariumPlatform
import ContainariumProto
import ContainariumStore
import Foundation
import GRPCCore
import SwiftProtobuf

// SecurityService: the reference's routes, one set per scanner, over the control plane's scans.

extension ProtoMap {
    static func finding(_ f: ScanFinding) -> Containarium_V1_ScanFinding {
        .with {
            $0.path = f.path
            $0.rule = f.rule
            $0.line = UInt32(clamping: f.line ?? 0)
            $0.severity = f.severity ?? ""
            $0.category = f.category ?? ""
            $0.title = f.title ?? ""
            $0.package = f.package ?? ""
            $0.installedVersion = f.installedVersion ?? ""
            $0.fixedVersion = f.fixedVersion ?? ""
        }
    }

    /// A stored record, with what its scanner reported.
    static func scanReport(_ r: ScanRecord) -> Containarium_V1_ScanReport {
        let report = r.report.isEmpty ? nil : try? WireJSON.decode(ScanReport.self, from: Data(r.report.utf8))
        return .with {
            $0.id = r.id
            $0.username = r.username
            $0.node = r.node
            $0.scanner = r.scanner
            $0.startedAt = Google_Protobuf_Timestamp(date: r.startedAt)
            $0.durationMs = r.durationMs
            $0.status = r.status
            $0.error = r.error
            $0.findingsCount = UInt32(clamping: r.findings)
            $0.trigger = r.trigger
            if let report {
                $0.findings = report.findings.map(finding)
                $0.filesScanned = UInt64(clamping: report.filesScanned ?? 0)
                $0.bytesScanned = UInt64(clamping: report.bytesScanned ?? 0)
                $0.scannerVersion = report.scannerVersion ?? ""
                $0.databases = (report.databases ?? [:]).mapValues { d in
                    .with {
                        $0.status = d.status
                        $0.detail = d.detail ?? ""
                        $0.version = d.version ?? ""
                    }
                }
                $0.notes = report.notes ?? []
            }
        }
    }

    /// What a member's SecurityService answered, back into the scanner's report (for the
    /// control plane's own record). A scan that failed there fails here, with its reason.
    static func scanReport(_ p: Containarium_V1_ScanReport, node: String) throws(ContainariumError) -> ScanReport {
        if p.status == "failed" { throw ContainariumError(.unavailable, "the scan on \(node) failed: \(p.error)") }
        return ScanReport(
            scanner: p.scanner, target: p.username.isEmpty ? nil : p.username + "-container", filesScanned: Int(clamping: p.filesScanned),
            bytesScanned: Int64(clamping: p.bytesScanned), clean: p.status == "clean",
            findings: p.findings.map { f in
                ScanFinding(path: f.path, rule: f.rule, line: f.line == 0 ? nil : Int(f.line), severity: nonEmpty(f.severity), category: nonEmpty(f.category),
                            title: nonEmpty(f.title), package: nonEmpty(f.package), installedVersion: nonEmpty(f.installedVersion), fixedVersion: nonEmpty(f.fixedVersion))
            },
            scannerVersion: nonEmpty(p.scannerVersion),
            databases: p.databases.isEmpty ? nil : p.databases.mapValues { ScanDatabase(status: $0.status, detail: nonEmpty($0.detail), version: nonEmpty($0.version)) },
            notes: p.notes.isEmpty ? nil : p.notes, durationMs: Int(clamping: p.durationMs))
    }

    static func summary(_ s: SecuritySummaryView) -> Containarium_V1_SecuritySummary {
        .with {
            $0.scanner = s.scanner
            $0.environments = UInt32(clamping: s.environments)
            $0.clean = UInt32(clamping: s.clean)
            $0.withFindings = UInt32(clamping: s.withFindings)
            $0.incomplete = UInt32(clamping: s.incomplete)
            $0.failed = UInt32(clamping: s.failed)
            $0.findings = UInt32(clamping: s.findings)
            if let at = s.lastScanAt { $0.lastScanAt = Google_Protobuf_Timestamp(date: at) }
            $0.latest = s.latest.map(scanReport)
        }
    }
}

extension APIv1 {
    func scan(_ scanner: String, _ who: Caller, _ m: Containarium_V1_SecurityScanRequest) async throws(ContainariumError) -> Containarium_V1_SecurityScanResponse {
        let (reports, queued) = try await plane.scan(who, scanner: scanner, username: ProtoMap.nonEmpty(m.username), all: m.all, wait: !m.async)
        return .with {
            $0.reports = reports.map(ProtoMap.scanReport)
            $0.queued = queued
        }
    }

    func scanSummary(_ scanner: String, _ who: Caller) async throws(ContainariumError) -> Containarium_V1_SecuritySummary {
        ProtoMap.summary(try await plane.scanSummary(who, scanner: scanner))
    }

    func scanReports(_ scanner: String, _ who: Caller, _ m: Containarium_V1_ListScanReportsRequest) async throws(ContainariumError) -> Containarium_V1_ListScanReportsResponse {
        let limit = m.limit == 0 ? 100 : Int(m.limit)
        let reports = try await plane.scanReports(who, scanner: scanner, username: ProtoMap.nonEmpty(m.username), limit: limit)
        return .with { $0.reports = reports.map(ProtoMap.scanReport) }
    }

    /// The reports as CSV (one row per finding; a report without findings is one row with
    /// empty finding columns), for spreadsheets and ticketing.
    static func csv(_ reports: [ScanRecord]) -> String {
        func field(_ s: String) -> String {
            // Quoted when needed; a leading formula character is defused for spreadsheets.
            var v = s
            if let first = v.first, "=+-@\t\r".contains(first) { v = "'" + v }
            return v.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) || v != s
                ? "\"" + v.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : v
        }
        var out = "report_id,started_at,username,node,scanner,status,error,path,rule,category,severity,title,package,installed_version,fixed_version\n"
        for r in reports {
            let head = [r.id, r.startedAt.formatted(.iso8601), r.username, r.node, r.scanner, r.status, r.error]
            let report = r.report.isEmpty ? nil : try? WireJSON.decode(ScanReport.self, from: Data(r.report.utf8))
            let findings = report?.findings ?? []
            if findings.isEmpty {
                out += (head + Array(repeating: "", count: 8)).map(field).joined(separator: ",") + "\n"
            }
            for f in findings {
                let row = head + [f.path, f.rule, f.category ?? "", f.severity ?? "", f.title ?? "", f.package ?? "", f.installedVersion ?? "", f.fixedVersion ?? ""]
                out += row.map(field).joined(separator: ",") + "\n"
            }
        }
        return out
    }
}

/// `containarium.v1.SecurityService`.
struct SecurityServiceV1: Containarium_V1_SecurityService.ServiceProtocol {
    let auth: GRPCAuth
    var api: APIv1 { APIv1(plane: auth.plane) }

    func scanClamAV(request: ServerRequest<Containarium_V1_SecurityScanRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_SecurityScanResponse> {
        await auth.unary("ScanClamAV", request, context) { (who, m) async throws(ContainariumError) in try await api.scan("clamav", who, m) }
    }
    func getClamAVSummary(request: ServerRequest<Containarium_V1_GetSecuritySummaryRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_SecuritySummary> {
        await auth.unary("GetClamAVSummary", request, context) { (who, _) async throws(ContainariumError) in try await api.scanSummary("clamav", who) }
    }
    func listClamAVReports(request: ServerRequest<Containarium_V1_ListScanReportsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListScanReportsResponse> {
        await auth.unary("ListClamAVReports", request, context) { (who, m) async throws(ContainariumError) in try await api.scanReports("clamav", who, m) }
    }
    func scanTrivy(request: ServerRequest<Containarium_V1_SecurityScanRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_SecurityScanResponse> {
        await auth.unary("ScanTrivy", request, context) { (who, m) async throws(ContainariumError) in try await api.scan("trivy", who, m) }
    }
    func getTrivySummary(request: ServerRequest<Containarium_V1_GetSecuritySummaryRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_SecuritySummary> {
        await auth.unary("GetTrivySummary", request, context) { (who, _) async throws(ContainariumError) in try await api.scanSummary("trivy", who) }
    }
    func listTrivyReports(request: ServerRequest<Containarium_V1_ListScanReportsRequest>, context: ServerContext) async throws -> ServerResponse<Containarium_V1_ListScanReportsResponse> {
        await auth.unary("ListTrivyReports", request, context) { (who, m) async throws(ContainariumError) in try await api.scanReports("trivy", who, m) }
    }
}
