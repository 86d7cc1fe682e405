import ContainariumCore
import Foundation
import ScannerKit

/// The parts of Trivy's JSON report (`--format json`, SchemaVersion 2) the plugin reads. Every
/// field is optional: a finding with no rule id is dropped, anything else is taken as it comes.
/// Matched text and code excerpts (`Match`, `Code`) are never read, so no secret is copied
/// into a report or a log.
struct TrivyReport: Decodable {
    struct Result: Decodable {
        var Target: String?
        var Class: String?
        var `Type`: String?
        var Secrets: [Secret]?
        var Vulnerabilities: [Vulnerability]?
        var Misconfigurations: [Misconfiguration]?
    }

    struct Secret: Decodable {
        var RuleID: String?
        var Category: String?
        var Severity: String?
        var Title: String?
        var StartLine: Int?
    }

    struct Vulnerability: Decodable {
        var VulnerabilityID: String?
        var PkgName: String?
        var PkgPath: String?
        var InstalledVersion: String?
        var FixedVersion: String?
        var Severity: String?
        var Title: String?
    }

    struct Misconfiguration: Decodable {
        struct Cause: Decodable {
            var StartLine: Int?
        }

        var ID: String?
        var AVDID: String?
        var Title: String?
        var Severity: String?
        var Status: String?
        var CauseMetadata: Cause?
    }

    var Results: [Result]?

    /// Trivy's severities are upper case and include UNKNOWN, which the schema has no word for.
    static func severity(_ s: String?) -> String? {
        guard let s = s?.lowercased(), ["low", "medium", "high", "critical"].contains(s) else { return nil }
        return s
    }

    /// The findings in `data`, paths as seen from inside the scanned `root`.
    static func findings(from data: Data, root: String) throws(ContainariumError) -> [ScanFinding] {
        let report: TrivyReport
        do {
            report = try JSONDecoder().decode(TrivyReport.self, from: data)
        } catch {
            throw ContainariumError(.internal, "trivy's JSON report could not be read: \(WireJSON.describe(error))")
        }
        var out: [ScanFinding] = []
        for r in report.Results ?? [] {
            let target = r.Target.map { $0.relative(toRoot: root) } ?? "/"
            for s in r.Secrets ?? [] {
                guard let rule = s.RuleID, !rule.isEmpty else { continue }
                out.append(ScanFinding(
                    path: target, rule: rule, line: s.StartLine.flatMap { $0 >= 1 ? $0 : nil }, severity: severity(s.Severity), category: "secret",
                    title: s.Title))
            }
            for v in r.Vulnerabilities ?? [] {
                guard let rule = v.VulnerabilityID, !rule.isEmpty else { continue }
                // OS packages: the target names the distribution ("debian 12.5"), not a file.
                let path = v.PkgPath.map { $0.relative(toRoot: root) } ?? (r.Class == "os-pkgs" ? "/" : target)
                out.append(ScanFinding(
                    path: path, rule: rule, severity: severity(v.Severity), category: "vulnerability", title: v.Title,
                    package: v.PkgName, installedVersion: v.InstalledVersion, fixedVersion: v.FixedVersion))
            }
            for m in r.Misconfigurations ?? [] where m.Status == nil || m.Status == "FAIL" {
                guard let rule = m.ID ?? m.AVDID, !rule.isEmpty else { continue }
                out.append(ScanFinding(
                    path: target, rule: rule, line: m.CauseMetadata?.StartLine.flatMap { $0 >= 1 ? $0 : nil }, severity: severity(m.Severity),
                    category: "misconfiguration", title: m.Title))
            }
        }
        return out
    }
}
