public import ContainariumCore
public import Foundation

/// Scheduled security scans, from the config's `security` (docs/operations.md). Every field is
/// optional.
///
/// ```json
/// "security": { "schedule": "daily", "hour": 2, "jitterMinutes": 60, "parallel": 2,
///               "scanners": ["clamav", "trivy"], "keepReports": 30 }
/// ```
public struct SecurityPolicy: Codable, Sendable, Equatable {
    /// "daily" (the default), "hourly", "off", or "every 6h" / "every 30m" / "every 30s".
    public var schedule: String?
    /// For "daily": the hour (UTC, 0-23) a round starts (default 2).
    public var hour: Int?
    /// A round starts at a random moment within this many minutes after its time (default 60),
    /// so that nodes sharing a disk or a network do not all start at once.
    public var jitterMinutes: Int?
    /// Scans at once per node (default 2), for scheduled and on-demand scans alike.
    public var parallel: Int?
    /// The scanners a round runs (default: those of clamav and trivy enabled and ready on the
    /// control plane; one named here but not ready on a node fails that node's scans with why).
    public var scanners: [String]?
    /// Reports kept per environment and scanner, the newest (default 30).
    public var keepReports: Int?

    public static let defaultParallel = 2
    public static let defaultKeepReports = 30
    public static let defaultHour = 2
    public static let defaultJitterMinutes = 60

    public init(schedule: String? = nil, hour: Int? = nil, jitterMinutes: Int? = nil, parallel: Int? = nil, scanners: [String]? = nil, keepReports: Int? = nil) {
        self.schedule = schedule
        self.hour = hour
        self.jitterMinutes = jitterMinutes
        self.parallel = parallel
        self.scanners = scanners
        self.keepReports = keepReports
    }

    public enum Schedule: Equatable, Sendable {
        case off
        /// Every day at `hour`:00 UTC.
        case daily(hour: Int)
        /// Every `seconds`.
        case every(seconds: TimeInterval)
    }

    public func parsedSchedule() throws(ContainariumError) -> Schedule {
        let s = (schedule ?? "daily").trimmingCharacters(in: .whitespaces).lowercased()
        switch s {
        case "off", "never": return .off
        case "daily", "nightly": return .daily(hour: hour ?? Self.defaultHour)
        case "hourly": return .every(seconds: 3600)
        default:
            let parts = s.split(separator: " ")
            guard parts.count == 2, parts[0] == "every", let unit = parts[1].last, let n = Double(parts[1].dropLast()), n > 0 else {
                throw .invalid("security.schedule '\(schedule ?? "")' is not one of daily, hourly, off, \"every 6h\", \"every 30m\", \"every 30s\"")
            }
            let seconds: Double
            switch unit {
            case "h": seconds = n * 3600
            case "m": seconds = n * 60
            case "s": seconds = n
            default: throw .invalid("security.schedule '\(schedule ?? "")': the unit must be h, m or s")
            }
            guard seconds >= 10 else { throw .invalid("security.schedule: rounds must be at least 10s apart") }
            return .every(seconds: seconds)
        }
    }

    public func validate() throws(ContainariumError) {
        _ = try parsedSchedule()
        if let hour, !(0...23).contains(hour) { throw .invalid("security.hour must be 0-23") }
        if let jitterMinutes, !(0...1440).contains(jitterMinutes) { throw .invalid("security.jitterMinutes must be 0-1440") }
        if let parallel, !(1...64).contains(parallel) { throw .invalid("security.parallel must be 1-64") }
        if let keepReports, !(1...10000).contains(keepReports) { throw .invalid("security.keepReports must be 1-10000") }
        for s in scanners ?? [] where !["clamav", "trivy"].contains(s) {
            throw .invalid("security.scanners: unknown scanner '\(s)' (clamav, trivy)")
        }
    }

    /// When the next round starts after `now` (without jitter), or nil when off.
    public func nextRound(after now: Date) throws(ContainariumError) -> Date? {
        switch try parsedSchedule() {
        case .off: return nil
        case .every(let seconds):
            let t = (now.timeIntervalSince1970 / seconds).rounded(.down) * seconds + seconds
            return Date(timeIntervalSince1970: t)
        case .daily(let hour):
            let day = 86400.0
            let today = (now.timeIntervalSince1970 / day).rounded(.down) * day + Double(hour) * 3600
            return Date(timeIntervalSince1970: today > now.timeIntervalSince1970 ? today : today + day)
        }
    }

    /// The key every control plane computes alike for the round at `time` (one claims it).
    public static func roundKey(_ time: Date) -> String { String(Int64(time.timeIntervalSince1970)) }
}
