import ContainariumCore
import Dispatch
import Foundation
import PluginKit
import ScannerKit
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The clamav plugin's work: confine the request to the configured roots, walk the tree with
/// descriptors and hand each regular file to clamd (`zFILDES`), or, when no clamd answers,
/// run clamscan over the tree. A scan without signatures fails; it never reports "clean".
final class ClamAVEngine: Sendable {
    struct Config: Codable, Sendable {
        var clamdSocket: String?
        var clamscan: String?
        var databaseDirectory: String?
        var roots: [String]?
        var maxFileBytes: Int64?
        var parallel: Int?
        var timeoutSeconds: Int?

        static let keys: Set<String> = ["clamdSocket", "clamscan", "databaseDirectory", "roots", "maxFileBytes", "parallel", "timeoutSeconds"]
    }

    let clamdSocket: String
    let clamscan: String
    let databaseDirectory: String
    let roots: ScanRoots
    let maxFileBytes: Int64
    let parallel: Int
    let timeoutSeconds: Int
    let host: HostServices

    init(config c: Config, host: HostServices) throws(ContainariumError) {
        let p = pluginID
        clamdSocket = try ScannerConfig.absolutePath(c.clamdSocket ?? "/var/run/clamav/clamd.ctl", key: "clamdSocket", plugin: p)
        // sockaddr_un.sun_path holds 108 bytes with its NUL.
        guard clamdSocket.utf8.count < 108 else { throw .invalid("\(p) configuration: clamdSocket is longer than a unix socket path may be (107 bytes)") }
        clamscan = try ScannerConfig.absolutePath(c.clamscan ?? "/usr/bin/clamscan", key: "clamscan", plugin: p)
        databaseDirectory = try ScannerConfig.absolutePath(c.databaseDirectory ?? "/var/lib/clamav", key: "databaseDirectory", plugin: p)
        roots = try ScanRoots(c.roots, plugin: p)
        // ClamAV's own limits stop at 4 GiB (clamscan --max-filesize, clamd MaxFileSize).
        maxFileBytes = try ScannerConfig.bounded(c.maxFileBytes ?? 100 * 1024 * 1024, key: "maxFileBytes", plugin: p, 1...(4 * 1024 * 1024 * 1024 - 1))
        parallel = try ScannerConfig.bounded(c.parallel ?? 2, key: "parallel", plugin: p, 1...64)
        timeoutSeconds = try ScannerConfig.bounded(c.timeoutSeconds ?? 3600, key: "timeoutSeconds", plugin: p, 1...(7 * 24 * 3600))
        self.host = host
    }

    // MARK: - scan

    func scan(_ request: ScanRequest, _ ctx: OperationContext) throws(ContainariumError) -> ScanReport {
        let control = ScanControl(timeoutSeconds: timeoutSeconds) { ctx.isCancelled }
        let target = try roots.open(request.path)
        let version: String
        do throws(ContainariumError) {
            version = try ClamdConnection(socket: clamdSocket).version(control: control)
        } catch where error.code == .unavailable {
            host.log(.notice, "clamav: \(error.message): scanning \(target.resolved) with clamscan")
            return try scanWithClamscan(request, target, control, why: error.message)
        }
        return try scanWithClamd(request, target, control, version: version)
    }

    /// Shared by the walker and the workers of one clamd scan.
    private final class Shared: Sendable {
        let tally = Mutex(Tally())
    }

    private struct Tally {
        var files = 0
        var bytes: Int64 = 0
        var findings: [ScanFinding] = []
        var errors = NoteTally()
        var failure: ContainariumError?
    }

    private func scanWithClamd(_ request: ScanRequest, _ target: ScanTarget, _ control: ScanControl, version: String) throws(ContainariumError) -> ScanReport {
        let queue = WorkQueue<TreeWalker.File>(capacity: parallel * 4)
        let shared = Shared()
        let group = DispatchGroup()
        let socket = clamdSocket
        for i in 0..<parallel {
            group.enter()
            let thread = Thread {
                Self.work(queue: queue, shared: shared, socket: socket, control: control)
                group.leave()
            }
            thread.name = "clamav-worker-\(i)"
            thread.stackSize = 1 << 20
            thread.start()
        }
        let walker = TreeWalker(maxFileBytes: maxFileBytes)
        var summary = TreeWalker.Summary()
        var walkError: ContainariumError?
        do throws(ContainariumError) {
            summary = try walker.walk(rootFD: target.fd, control: control) { (file) throws(ContainariumError) in
                if let failure = shared.tally.withLock({ $0.failure }) {
                    close(file.fd)
                    throw failure
                }
                queue.push(file)
            }
        } catch {
            walkError = error
        }
        queue.close()
        group.wait()
        let result = shared.tally.withLock { $0 }
        // A worker's failure (clamd went away, cancellation, the deadline) wins over the
        // walker's echo of it.
        if let failure = result.failure ?? walkError { throw failure }

        let (engine, db, date) = Self.parseVersion(version)
        let detail: String
        if let db {
            detail = "ClamAV signatures loaded by clamd at \(clamdSocket) (database version \(db)\(date.map { ", \($0)" } ?? ""))"
        } else {
            detail = "signatures loaded by clamd at \(clamdSocket): custom databases only (no official database version)"
        }
        var notes = Self.notes(summary, maxFileBytes: maxFileBytes)
        var errors = result.errors
        errors.merge(summary.unreadable)
        if let s = errors.sentence({ "\($0) file\($0 == 1 ? "" : "s") or director\($0 == 1 ? "y" : "ies") could not be scanned" }) { notes.insert(s, at: 0) }
        let findings = result.findings.sorted { ($0.path, $0.rule) < ($1.path, $1.rule) }
        let report = ScanReport(
            scanner: pluginID, target: request.path, filesScanned: result.files, bytesScanned: result.bytes,
            clean: findings.isEmpty, findings: findings, scannerVersion: engine.replacingOccurrences(of: "ClamAV ", with: "clamd "),
            databases: ["signatures": ScanDatabase(status: "ok", detail: detail, version: db)],
            notes: notes.isEmpty ? nil : notes, durationMs: control.elapsedMilliseconds)
        host.log(.info, "clamav: scanned \(target.resolved) with clamd: \(result.files) files, \(findings.count) findings, \(report.durationMs ?? 0) ms")
        return report
    }

    /// One worker: its own clamd session, one file at a time, until the queue is closed and
    /// empty. After a failure anywhere it only closes what it takes off the queue.
    private static func work(queue: WorkQueue<TreeWalker.File>, shared: Shared, socket: String, control: ScanControl) {
        var connection: ClamdConnection?
        defer { connection?.end() }
        while let file = queue.pop() {
            defer { close(file.fd) }
            if shared.tally.withLock({ $0.failure != nil }) { continue }
            do throws(ContainariumError) {
                try control.check()
                let verdict: ClamdConnection.Verdict
                do throws(ContainariumError) {
                    let c: ClamdConnection
                    if let existing = connection { c = existing } else { c = try Self.session(socket) }
                    connection = c
                    verdict = try c.scan(descriptor: file.fd, control: control)
                } catch where error.code == .unavailable {
                    // clamd closes idle sessions (IdleTimeout) and restarts: one fresh session, one retry.
                    connection = nil
                    let c = try Self.session(socket)
                    connection = c
                    verdict = try c.scan(descriptor: file.fd, control: control)
                }
                shared.tally.withLock { t in
                    switch verdict {
                    case .clean:
                        t.files += 1
                        t.bytes += file.size
                    case .found(let name):
                        t.files += 1
                        t.bytes += file.size
                        t.findings.append(Self.finding(path: file.path, signature: name))
                    case .error(let why):
                        t.errors.add("\(file.path) (clamd: \(why))")
                    }
                }
            } catch {
                connection = nil
                shared.tally.withLock { t in if t.failure == nil { t.failure = error } }
            }
        }
    }

    /// A malware finding. ClamAV appends ".UNOFFICIAL" to the names of signatures from
    /// databases it did not sign (local and third-party ones); the rule is the signature's own
    /// name, as written in its database, and the title says where it came from.
    static func finding(path: String, signature: String) -> ScanFinding {
        let suffix = ".UNOFFICIAL"
        let unofficial = signature.hasSuffix(suffix) && signature.count > suffix.count
        let rule = unofficial ? String(signature.dropLast(suffix.count)) : signature
        return ScanFinding(
            path: path, rule: rule, severity: "high", category: "malware",
            title: unofficial ? "\(rule) (signature from an unofficial database)" : rule)
    }

    private static func session(_ socket: String) throws(ContainariumError) -> ClamdConnection {
        let c = try ClamdConnection(socket: socket)
        try c.startSession()
        return c
    }

    /// "ClamAV 1.4.6/27000/Mon Jan  1 08:00:00 2026" → ("ClamAV 1.4.6", "27000", date).
    static func parseVersion(_ text: String) -> (engine: String, database: String?, date: String?) {
        let parts = text.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        let engine = parts.first ?? text
        let db = parts.count > 1 && !parts[1].isEmpty ? parts[1] : nil
        let date = parts.count > 2 && !parts[2].isEmpty ? parts[2] : nil
        return (engine, db, date)
    }

    static func notes(_ summary: TreeWalker.Summary, maxFileBytes: Int64) -> [String] {
        var notes: [String] = []
        if let s = summary.skippedLarge.sentence({ "\($0) file\($0 == 1 ? "" : "s") larger than maxFileBytes (\(maxFileBytes) bytes) not scanned" }) {
            notes.append(s)
        }
        return notes
    }

    // MARK: - clamscan fallback

    /// The signature files ClamAV loads from a database directory (clamscan/clamd load
    /// nothing else; an empty directory means no detection at all).
    static let signatureExtensions: Set<String> = [
        "cvd", "cld", "cud", "hdb", "hsb", "hdu", "hsu", "mdb", "msb", "mdu", "msu", "ndb", "ndu", "ldb", "ldu", "idb", "cdb", "crb",
        "pdb", "gdb", "wdb", "ftm", "yar", "yara", "sfp", "imp",
    ]

    private func missingDatabase(_ why: String) -> ContainariumError {
        ContainariumError(
            .failedPrecondition,
            "ClamAV has no signatures in \(databaseDirectory) (\(why)): run `freshclam` (or `freshclam --datadir=\(databaseDirectory)`) where the network allows, or start clamd with its database; a scan without signatures would report everything clean, so none was made")
    }

    private func scanWithClamscan(_ request: ScanRequest, _ target: ScanTarget, _ control: ScanControl, why: String) throws(ContainariumError) -> ScanReport {
        guard access(clamscan, X_OK) == 0 else {
            throw ContainariumError(.unavailable, "\(why), and clamscan is not installed at \(clamscan): start clamd or install ClamAV (scripts/scanners.sh)")
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: databaseDirectory)) ?? []
        let signatures = entries.filter { Self.signatureExtensions.contains(URL(fileURLWithPath: $0).pathExtension.lowercased()) }
        guard !signatures.isEmpty else {
            throw missingDatabase(entries.isEmpty ? "the directory is empty or missing" : "no signature files among \(entries.count) files")
        }
        // What is there to scan: the same walk as with clamd (counts, sizes, unreadable files).
        var files = 0
        var bytes: Int64 = 0
        let summary = try TreeWalker(maxFileBytes: maxFileBytes).walk(rootFD: target.fd, control: control) { (file) throws(ContainariumError) in
            files += 1
            bytes += file.size
            close(file.fd)
        }
        let env = ChildProcess.cleanEnvironment()
        let versionRun = try ChildProcess.run(
            [clamscan, "-d", databaseDirectory, "--version"], environment: env, control: control, maxOutput: 64 * 1024, name: "clamscan --version")
        let versionText = String(decoding: versionRun.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let argv = ChildProcess.lowPriority([
            clamscan, "--recursive", "--infected", "--no-summary", "--follow-dir-symlinks=0", "--follow-file-symlinks=0",
            "--max-filesize=\(maxFileBytes)", "--max-scansize=\(max(maxFileBytes, 400 * 1024 * 1024))", "-d", databaseDirectory, "--", target.resolved,
        ])
        let run = try ChildProcess.run(argv, environment: env, control: control, maxOutput: 64 * 1024 * 1024, name: "clamscan")
        let stderrTail = run.stderr.trimmingCharacters(in: .whitespacesAndNewlines).suffix(1000)
        guard run.status == 0 || run.status == 1 else {
            if ["No supported database", "Malformed database", "cli_loaddbdir", "Can't load"].contains(where: { stderrTail.contains($0) }) {
                throw missingDatabase(String(stderrTail.split(separator: "\n").last ?? ""))
            }
            throw ContainariumError(.internal, "clamscan failed (exit \(run.status)): \(stderrTail.isEmpty ? "no message" : String(stderrTail))")
        }
        var findings: [ScanFinding] = []
        var errors = NoteTally()
        for line in String(decoding: run.stdout, as: UTF8.self).split(separator: "\n") {
            // "PATH: NAME FOUND"; a path may hold ": ", a signature name does not.
            guard let sep = line.range(of: ": ", options: .backwards) else { continue }
            let path = String(line[..<sep.lowerBound]).relative(toRoot: target.resolved)
            let rest = line[sep.upperBound...]
            if rest.hasSuffix(" FOUND") {
                findings.append(Self.finding(path: path, signature: String(rest.dropLast(" FOUND".count))))
            } else if rest.hasSuffix(" ERROR") {
                errors.add("\(path) (clamscan: \(rest.dropLast(" ERROR".count)))")
            }
        }
        findings.sort { ($0.path, $0.rule) < ($1.path, $1.rule) }
        let (engine, db, date) = Self.parseVersion(versionText.isEmpty ? "ClamAV" : versionText)
        let detail = "ClamAV signatures in \(databaseDirectory): \(signatures.sorted().joined(separator: ", "))"
            + (db.map { " (database version \($0)\(date.map { ", \($0)" } ?? ""))" } ?? "")
        var notes = ["clamd not reachable at \(clamdSocket): scanned with clamscan"]
        notes += Self.notes(summary, maxFileBytes: maxFileBytes)
        errors.merge(summary.unreadable)
        if let s = errors.sentence({ "\($0) file\($0 == 1 ? "" : "s") or director\($0 == 1 ? "y" : "ies") could not be scanned" }) { notes.append(s) }
        let report = ScanReport(
            scanner: pluginID, target: request.path, filesScanned: files, bytesScanned: bytes, clean: findings.isEmpty, findings: findings,
            scannerVersion: engine.replacingOccurrences(of: "ClamAV ", with: "clamscan "),
            databases: ["signatures": ScanDatabase(status: "ok", detail: detail, version: db)], notes: notes, durationMs: control.elapsedMilliseconds)
        host.log(.info, "clamav: scanned \(target.resolved) with clamscan: \(files) files, \(findings.count) findings, \(report.durationMs ?? 0) ms")
        return report
    }

    // MARK: - health

    func health() -> HealthReport {
        let probe = ScanControl(timeoutSeconds: 5) { false }
        do throws(ContainariumError) {
            let v = try ClamdConnection(socket: clamdSocket).version(control: probe)
            return HealthReport(status: "ok", detail: "clamd at \(clamdSocket): \(v)")
        } catch {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: databaseDirectory)) ?? []
            let hasSignatures = entries.contains { Self.signatureExtensions.contains(URL(fileURLWithPath: $0).pathExtension.lowercased()) }
            if access(clamscan, X_OK) == 0 && hasSignatures {
                return HealthReport(status: "degraded", detail: "\(error.message): scans fall back to \(clamscan) (slower)")
            }
            let missing = hasSignatures ? "clamscan is not installed at \(clamscan)" : "no signatures in \(databaseDirectory) (run freshclam)"
            return HealthReport(status: "down", detail: "\(error.message), and \(missing)")
        }
    }
}

/// A bounded queue between the walker and the clamd workers: `push` waits while it is full,
/// `pop` while it is empty and open; `pop` answers nil once it is closed and drained.
final class WorkQueue<Item: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Item] = []
    private var head = 0
    private var closed = false
    private let capacity: Int

    init(capacity: Int) { self.capacity = max(1, capacity) }

    func push(_ item: Item) {
        condition.lock()
        defer { condition.unlock() }
        while items.count - head >= capacity { condition.wait() }
        items.append(item)
        condition.broadcast()
    }

    func pop() -> Item? {
        condition.lock()
        defer { condition.unlock() }
        while head == items.count && !closed { condition.wait() }
        guard head < items.count else { return nil }
        let item = items[head]
        head += 1
        if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        condition.broadcast()
        return item
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}
