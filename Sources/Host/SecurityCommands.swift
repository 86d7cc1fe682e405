import ArgumentParser
import ContainariumClient
import ContainariumCore
import ContainariumProto
import Foundation
import SwiftProtobuf

/// The scanners with reference routes; `--scanner` takes one of them.
enum ScannerName: String, ExpressibleByArgument, CaseIterable {
    case clamav, trivy
}

/// `containarium scan`: scan environments through the daemon, which records the reports.
/// Exit status: 0 when every scan ended clean (or incomplete), 3 when one found something, 1
/// when one failed.
struct Scan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Scan environments for malware (clamav) or secrets and vulnerabilities (trivy), from the host side; exit 3 on findings, 1 on a failed scan.")

    @Argument(help: "The environment (its user's name).") var username: String?
    @Flag(help: "Every environment (admins).") var all = false
    @Option(help: "The scanner.") var scanner: ScannerName = .clamav
    @Flag(name: .customLong("async"), help: "Queue the scans and return at once (reports follow in `security reports`).") var async = false
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func validate() throws {
        if (username == nil) == !all { throw ValidationError("name one environment, or give --all") }
    }

    func run() async throws {
        guard let client = try remote.daemon() else {
            throw fail(LocalDaemon.notRunning(remote.stateDir, "scans run through the daemon, which keeps their reports"))
        }
        let request = Containarium_V1_SecurityScanRequest.with {
            $0.username = username ?? ""
            $0.all = all
            $0.async = async
        }
        let answer = try await client.cli { c in
            scanner == .clamav ? try await c.security.scanClamAV(request, metadata: c.metadata) : try await c.security.scanTrivy(request, metadata: c.metadata)
        }
        if format == .json {
            try printRemote(answer)
        } else if async {
            print("queued \(scanner.rawValue) scans of: \(answer.queued.joined(separator: ", "))")
        } else {
            SecurityReports.print(answer.reports, findings: true)
        }
        if answer.reports.contains(where: { $0.status == "failed" }) { throw ExitCode(1) }
        if answer.reports.contains(where: { $0.status == "findings" }) { throw ExitCode(3) }
    }
}

/// `containarium security summary|reports`.
struct SecurityCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "security", abstract: "Scan reports: a summary per scanner, or the reports themselves (JSON or CSV).",
        subcommands: [SecuritySummaryCommand.self, SecurityReportsCommand.self])
}

struct SecuritySummaryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "summary", abstract: "How the latest scan of each visible environment went.")
    @Option(help: "The scanner.") var scanner: ScannerName = .clamav
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard let client = try remote.daemon() else { throw fail(LocalDaemon.notRunning(remote.stateDir, "the reports are the daemon's")) }
        let s = try await client.cli { c in
            scanner == .clamav ? try await c.security.getClamAVSummary(.init(), metadata: c.metadata) : try await c.security.getTrivySummary(.init(), metadata: c.metadata)
        }
        if format == .json { return try printRemote(s) }
        let last = s.hasLastScanAt ? ISO8601DateFormatter().string(from: s.lastScanAt.date) : "never"
        print("\(s.scanner): \(s.environments) environments scanned (last \(last)): \(s.clean) clean, \(s.withFindings) with findings (\(s.findings) in all), \(s.incomplete) incomplete, \(s.failed) failed")
        SecurityReports.print(s.latest, findings: false)
    }
}

struct SecurityReportsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "reports", abstract: "Scan reports, newest first, with their findings.")
    @Option(help: "The scanner.") var scanner: ScannerName = .clamav
    @Option(help: "Only this environment's reports (its user's name).") var user: String?
    @Option(help: "At most this many reports.") var limit = 20
    @Flag(help: "CSV (one row per finding), as GET /v1/security/<scanner>-reports.csv serves it.") var csv = false
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard (1...1000).contains(limit) else { throw fail(.invalid("--limit must be 1 to 1000")) }
        guard let client = try remote.daemon() else { throw fail(LocalDaemon.notRunning(remote.stateDir, "the reports are the daemon's")) }
        let request = Containarium_V1_ListScanReportsRequest.with {
            $0.username = user ?? ""
            $0.limit = UInt32(limit)
        }
        let answer = try await client.cli { c in
            scanner == .clamav ? try await c.security.listClamAVReports(request, metadata: c.metadata) : try await c.security.listTrivyReports(request, metadata: c.metadata)
        }
        if csv {
            FileHandle.standardOutput.write(Data(SecurityReports.csv(answer.reports).utf8))
            return
        }
        if format == .json { return try printRemote(answer) }
        SecurityReports.print(answer.reports, findings: true)
    }
}

enum SecurityReports {
    static func print(_ reports: [Containarium_V1_ScanReport], findings: Bool) {
        let f = ISO8601DateFormatter()
        Swift.print(Table.render(
            header: ["USER", "NODE", "SCANNER", "STATUS", "FINDINGS", "FILES", "SECONDS", "STARTED"],
            rows: reports.map {
                [$0.username, $0.node, $0.scanner, $0.status, String($0.findingsCount), String($0.filesScanned),
                 String(format: "%.1f", Double($0.durationMs) / 1000), f.string(from: $0.startedAt.date)]
            }))
        for r in reports {
            if !r.error.isEmpty { Swift.print("  \(r.username): \(r.error)") }
            for note in r.notes { Swift.print("  \(r.username): note: \(note)") }
            for (kind, db) in r.databases.sorted(by: { $0.key < $1.key }) where db.status != "ok" {
                Swift.print("  \(r.username): \(kind) database \(db.status): \(db.detail)")
            }
            guard findings else { continue }
            for x in r.findings {
                Swift.print("  \(r.username): \(x.path)\(x.line > 0 ? ":\(x.line)" : "")  \(x.rule)  \(x.severity)  \(x.category)\(x.title.isEmpty ? "" : "  " + x.title)")
            }
        }
    }

    /// The same columns as the daemon's CSV route.
    static func csv(_ reports: [Containarium_V1_ScanReport]) -> String {
        func field(_ s: String) -> String {
            var v = s
            if let first = v.first, "=+-@\t\r".contains(first) { v = "'" + v }
            return v.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) || v != s
                ? "\"" + v.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : v
        }
        let f = ISO8601DateFormatter()
        var out = "report_id,started_at,username,node,scanner,status,error,path,rule,category,severity,title,package,installed_version,fixed_version\n"
        for r in reports {
            let head = [r.id, f.string(from: r.startedAt.date), r.username, r.node, r.scanner, r.status, r.error]
            if r.findings.isEmpty { out += (head + Array(repeating: "", count: 8)).map(field).joined(separator: ",") + "\n" }
            for x in r.findings {
                out += (head + [x.path, x.rule, x.category, x.severity, x.title, x.package, x.installedVersion, x.fixedVersion]).map(field).joined(separator: ",") + "\n"
            }
        }
        return out
    }
}
