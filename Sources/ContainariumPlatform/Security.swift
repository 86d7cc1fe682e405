public import ContainariumCore
public import ContainariumStore
import ContainariumService
import Logging
public import Foundation
import Synchronization

/// Waits its turn: at most `limit` bodies run at once, the rest queue in order (scans are
/// heavy on disk: a node runs a few at a time, however many were asked for).
public final class AsyncSlots: Sendable {
    public let limit: Int
    private struct State { var running = 0; var waiting: [CheckedContinuation<Void, Never>] = [] }
    private let state = Mutex(State())

    public init(limit: Int) { self.limit = max(1, limit) }

    public func run<T: Sendable>(_ body: () async throws(ContainariumError) -> T) async throws(ContainariumError) -> T {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.running < limit { s.running += 1; return true }
                s.waiting.append(c)
                return false
            }
            if now { c.resume() }
        }
        defer {
            let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
                if s.waiting.isEmpty { s.running -= 1; return nil }
                return s.waiting.removeFirst()  // the place passes on
            }
            next?.resume()
        }
        return try await body()
    }

    public var running: Int { state.withLock { $0.running } }
}

/// The scanners with reference routes (`/v1/security/{clamav,trivy}-…`).
public enum SecurityScanners {
    public static let known = ["clamav", "trivy"]
}

/// A scanner's summary over the latest report of each environment a caller may see.
public struct SecuritySummaryView: Sendable, Equatable {
    public var scanner: String
    public var environments = 0, clean = 0, withFindings = 0, incomplete = 0, failed = 0, findings = 0
    public var lastScanAt: Date?
    public var latest: [ScanRecord] = []
}

extension ControlPlane {
    /// What a finished scan says, as a record (status from the report).
    static func record(_ report: ScanReport, user: Username, node: String, scanner: String, startedAt: Date, trigger: String) -> ScanRecord {
        let status = !report.findings.isEmpty ? "findings" : report.clean ? "clean" : "incomplete"
        let json = (try? WireJSON.encode(report)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return ScanRecord(username: user.value, node: node, scanner: scanner, startedAt: startedAt,
                          durationMs: Int64(Date().timeIntervalSince(startedAt) * 1000), status: status, findings: report.findings.count,
                          trigger: trigger, report: json)
    }

    /// The scan slots of `node` (`security.parallel` at once per node).
    func scanSlots(_ node: String) -> AsyncSlots {
        scanSlotsByNode.withLock { all in
            if let s = all[node] { return s }
            let s = AsyncSlots(limit: service.config.security?.parallel ?? SecurityPolicy.defaultParallel)
            all[node] = s
            return s
        }
    }

    /// Scan one environment on the node that holds it, record the report (a failed scan too,
    /// with why) and announce it (`security.scan`). Not authorized here: see `scan(_:…)`.
    func runScan(_ user: Username, scanner: String, trigger: String) async -> ScanRecord {
        let started = Date()
        var record: ScanRecord
        do throws(ContainariumError) {
            let holder = try await node(of: user)
            let report = try await scanSlots(holder.name).run { () async throws(ContainariumError) -> ScanReport in
                try await holder.scan(user, scanner: scanner)
            }
            record = Self.record(report, user: user, node: holder.name, scanner: scanner, startedAt: started, trigger: trigger)
        } catch {
            record = ScanRecord(username: user.value, node: (try? await remoteNode(of: user)) ?? node, scanner: scanner, startedAt: started,
                                durationMs: Int64(Date().timeIntervalSince(started) * 1000), status: "failed", error: error.message, findings: 0,
                                trigger: trigger, report: "")
        }
        platformMetrics.scanned(user: record.username, scanner: scanner, status: record.status, findings: record.findings)
        do { try await store.addScanReport(record) } catch { logger.error("could not store the \(scanner) report of \(user.containerName): \(error)") }
        try? await store.pruneScanReports(keep: service.config.security?.keepReports ?? SecurityPolicy.defaultKeepReports)
        events.publish("security.scan", username: user.value,
                       data: .scan(reportID: record.id, scanner: scanner, status: record.status, findings: record.findings))
        return record
    }

    /// The scan of `user` with `scanner` that is queued or running, or a new one: asking again
    /// while one is on its way joins it (no queue of duplicates, however often one asks).
    func scanTask(_ user: Username, scanner: String, trigger: String) -> Task<ScanRecord, Never> {
        let key = scanner + "/" + user.value
        return scansInFlight.withLock { all in
            if let running = all[key] { return running }
            let task = Task { [self] in
                let record = await runScan(user, scanner: scanner, trigger: trigger)
                _ = scansInFlight.withLock { $0.removeValue(forKey: key) }
                return record
            }
            all[key] = task
            return task
        }
    }

    /// Scan `username`'s environment (its owner, a collaborator or an admin), or with `all`
    /// every environment (admins). Audited. With `wait` false the scans run on in the
    /// background and the environments queued are returned at once.
    public func scan(_ caller: Caller, scanner: String, username: String?, all: Bool, wait: Bool) async throws(ContainariumError) -> (reports: [ScanRecord], queued: [String]) {
        guard SecurityScanners.known.contains(scanner) else { throw .invalid("unknown scanner '\(scanner)' (known: \(SecurityScanners.known.joined(separator: ", ")))") }
        let target = all ? "*" : (username ?? "-")
        return try await audited(caller, "security.scan", target, detail: scanner) { () async throws(ContainariumError) -> (reports: [ScanRecord], queued: [String]) in
            var users: [Username] = []
            switch (username.flatMap { $0.isEmpty ? nil : $0 }, all) {
            case (let name?, false):
                let user = try await authorize(caller, name, .act)
                try await requireEnvironment(user)
                try await node(of: user).checkScan(user, scanner: scanner)
                users = [user]
            case (nil, true):
                try requireAdmin(caller, "scanning every environment")
                users = try await listContainers(caller).compactMap { try? Username($0.username) }
            default:
                throw .invalid("name one environment (username) or ask for all of them (all), not both")
            }
            let chosen = users
            let tasks = chosen.map { scanTask($0, scanner: scanner, trigger: "manual") }
            if !wait { return ([], chosen.map(\.value)) }
            var reports: [ScanRecord] = []
            for task in tasks { reports.append(await task.value) }
            return (reports.sorted { $0.username < $1.username }, [])
        }
    }

    /// Which environments' reports a caller may read: an admin's, all; others', those they own or collaborate on.
    func visibleScanUsers(_ caller: Caller) async throws(ContainariumError) -> Set<String>? {
        if caller.isAdmin { return nil }
        if caller.role == .node { throw .denied("node tokens may only report node state") }
        if caller.role == .metrics { throw .denied("metrics tokens may only read /metrics") }
        var mine = Set(try await store.collaborations(of: caller.subject))
        mine.formUnion(try await listContainers(caller).map(\.username))
        return mine
    }

    /// Reports of `scanner`, newest first: one environment's (authorized to read), or every
    /// visible one's.
    public func scanReports(_ caller: Caller, scanner: String, username: String?, limit: Int) async throws(ContainariumError) -> [ScanRecord] {
        guard SecurityScanners.known.contains(scanner) else { throw .invalid("unknown scanner '\(scanner)'") }
        guard (1...1000).contains(limit) else { throw .invalid("limit must be 1 to 1000") }
        if let username, !username.isEmpty {
            let user = try await authorize(caller, username, .read)
            return try await store.scanReports(scanner: scanner, username: user.value, limit: limit)
        }
        guard let visible = try await visibleScanUsers(caller) else {
            return try await store.scanReports(scanner: scanner, username: nil, limit: limit)
        }
        var out: [ScanRecord] = []
        for u in visible.sorted() { out += try await store.scanReports(scanner: scanner, username: u, limit: limit) }
        return Array(out.sorted { ($0.startedAt, $0.id) > ($1.startedAt, $1.id) }.prefix(limit))
    }

    /// The latest report of each visible environment, counted by how it went.
    public func scanSummary(_ caller: Caller, scanner: String) async throws(ContainariumError) -> SecuritySummaryView {
        guard SecurityScanners.known.contains(scanner) else { throw .invalid("unknown scanner '\(scanner)'") }
        let visible = try await visibleScanUsers(caller)
        let latest = try await store.latestScanReports(scanner: scanner).filter { visible?.contains($0.username) ?? true }
        var s = SecuritySummaryView(scanner: scanner)
        s.environments = latest.count
        for r in latest {
            switch r.status {
            case "clean": s.clean += 1
            case "findings": s.withFindings += 1
            case "incomplete": s.incomplete += 1
            default: s.failed += 1
            }
            s.findings += r.findings
        }
        s.lastScanAt = latest.map(\.startedAt).max()
        s.latest = latest.sorted { $0.startedAt > $1.startedAt }
        return s
    }

    /// One scheduled round: every environment this daemon knows (its own and its members'),
    /// with each scanner the policy names that is known, unless another control plane sharing
    /// the store has claimed this round already.
    public func scheduledScanRound(key: String, scanners: [String]) async -> Int {
        guard (try? await store.claimSetting("security-round." + key, daemonID)) == true else { return 0 }
        // Claims are only compared within a round: those older than a day are dropped.
        try? await store.deleteSettings(prefix: "security-round.", updatedBefore: Date().addingTimeInterval(-86_400))
        let admin = Caller(subject: "scheduler", role: .admin, source: "local", interface: "schedule")
        let users = ((try? await listContainers(admin)) ?? []).compactMap { try? Username($0.username) }
        await withTaskGroup(of: Void.self) { group in
            for scanner in scanners where SecurityScanners.known.contains(scanner) {
                for u in users { group.addTask { _ = await self.scanTask(u, scanner: scanner, trigger: "schedule").value } }
            }
        }
        return users.count
    }
}
