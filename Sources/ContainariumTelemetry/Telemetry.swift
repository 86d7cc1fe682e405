public import CoreMetrics
import Foundation
public import Prometheus
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One process's metrics, exported at `/metrics` in Prometheus's text format (version 0.0.4).
///
/// Two kinds of metric live here:
/// - **Instruments**: counters, gauges and histograms that code updates as things happen (API
///   requests, plugin calls, scheduler decisions, operations). Modules that must not know about
///   Prometheus take `factory` (swift-metrics' `MetricsFactory`) and make swift-metrics handles
///   with it; the rest use the registry's own types.
/// - **Snapshots**: families rendered at scrape time from state the process already keeps (the
///   environments' last usage sample, the nodes' reports, plugin states), registered with
///   `addCollector`. They always show what exists now: an environment that is gone has no series.
///
/// Label values are bounded by what exists (environments, nodes, plugins, routes as patterns,
/// status codes), never per request.
public final class Telemetry: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let factory: PrometheusMetricsFactory
    private let collectors = Mutex<[@Sendable (inout MetricsText) -> Void]>([])
    /// Seconds buckets for latencies: 0.5 ms to 60 s.
    public static let latencyBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]
    /// Seconds buckets for long things (operations, outages, scans): 0.1 s to 1 h.
    public static let longBuckets: [Duration] = [
        .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        .seconds(120), .seconds(300), .seconds(600), .seconds(1800), .seconds(3600),
    ]

    /// How long a rendered exposition is served again (concurrent scrapers share one render;
    /// the snapshot families change once per usage sample anyway).
    public let reuseFor: Duration
    private let rendered = Mutex<(at: ContinuousClock.Instant, bytes: [UInt8])?>(nil)
    /// One render at a time: scrapers arriving meanwhile wait for it and take its bytes.
    private let rendering = Mutex(())

    public init(version: String, reuseFor: Duration = .milliseconds(500)) {
        self.reuseFor = reuseFor
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.latencyBuckets
        self.factory = factory
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "containarium_build_info", unitName: "", helpText: "Always 1; the version that runs."),
                           labels: [("version", version)]).set(to: 1)
        addCollector(Self.processMetrics)
    }

    /// Add a family renderer, called on every scrape (it must be quick and must not block).
    public func addCollector(_ collect: @escaping @Sendable (inout MetricsText) -> Void) {
        collectors.withLock { $0.append(collect) }
    }

    /// The exposition: the registry's instruments, then every snapshot family; the same bytes
    /// for `reuseFor` after a render.
    public func render() -> [UInt8] {
        if let fresh = reusable(ContinuousClock.now) { return fresh }
        return rendering.withLock { _ in
            let now = ContinuousClock.now
            if let fresh = reusable(now) { return fresh }
            let bytes = renderNow()
            rendered.withLock { $0 = (now, bytes) }
            return bytes
        }
    }

    private func reusable(_ now: ContinuousClock.Instant) -> [UInt8]? {
        rendered.withLock { r in r.flatMap { now - $0.at < reuseFor ? $0.bytes : nil } }
    }

    func renderNow() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(64 * 1024)
        registry.emit(into: &buffer)
        var text = MetricsText()
        for collect in collectors.withLock({ $0 }) { collect(&text) }
        buffer.append(contentsOf: text.bytes)
        return buffer
    }

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
    /// What `containarium_build_info` says.
    public static let productVersion = "0.2.0"

    // MARK: - instruments

    // One name always comes with the same help text (the registry insists).

    public func counter(_ name: String, _ labels: [(String, String)] = [], help: String) -> Prometheus.Counter {
        registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    public func gauge(_ name: String, _ labels: [(String, String)] = [], help: String) -> Prometheus.Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    public func histogram(_ name: String, _ labels: [(String, String)] = [], buckets: [Duration] = Telemetry.latencyBuckets, help: String) -> DurationHistogram {
        registry.makeDurationHistogram(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels, buckets: buckets)
    }

    /// One answered API request, whichever interface took it: the route as its pattern (never
    /// the path itself), the status code (HTTP) or name (gRPC).
    public func apiRequest(interface: String, route: String, method: String, code: String, elapsed: Duration) {
        counter("containarium_api_requests_total", [("interface", interface), ("route", route), ("method", method), ("code", code)],
                help: "API requests answered, by interface, route, method and status code.").increment()
        histogram("containarium_api_request_duration_seconds", [("interface", interface), ("route", route), ("method", method)],
                  help: "Time to answer an API request (the head of a streamed answer), by interface, route and method.").record(elapsed)
    }

    // MARK: - the process

    /// process_* as the Prometheus client libraries name them, from /proc/self.
    @Sendable static func processMetrics(_ text: inout MetricsText) {
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            // Fields after "pid (comm)": state is field 3; utime 14, stime 15, starttime 22, rss 24.
            let fields = stat[stat.index(after: close)...].split(separator: " ").map(String.init)
            func field(_ n: Int) -> Double? { fields.count > n - 3 ? Double(fields[n - 3]) : nil }
            if let u = field(14), let s = field(15), ticks > 0 {
                text.family("process_cpu_seconds_total", type: "counter", help: "User and system CPU time spent, in seconds.")
                text.sample("process_cpu_seconds_total", [], (u + s) / ticks)
            }
            if let rss = field(24) {
                text.family("process_resident_memory_bytes", type: "gauge", help: "Resident memory size in bytes.")
                text.sample("process_resident_memory_bytes", [], rss * pageSize)
            }
            if let start = field(22), ticks > 0, let boot = bootTime() {
                text.family("process_start_time_seconds", type: "gauge", help: "Start time of the process since the Unix epoch, in seconds.")
                text.sample("process_start_time_seconds", [], boot + start / ticks)
            }
        }
        if let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            text.family("process_open_fds", type: "gauge", help: "Number of open file descriptors.")
            text.sample("process_open_fds", [], Double(fds.count))
        }
    }

    private static func bootTime() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        for line in stat.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst("btime ".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

/// Snapshot families in the text format, written at scrape time: `family` once, then its samples.
public struct MetricsText: Sendable {
    public private(set) var bytes: [UInt8] = []
    private var declared: Set<String> = []

    public init() {}

    /// The HELP and TYPE lines of a family (once per exposition; a second call is ignored).
    public mutating func family(_ name: String, type: String, help: String) {
        guard declared.insert(name).inserted else { return }
        bytes.append(contentsOf: Array("# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(type)\n".utf8))
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        var line = name
        if !labels.isEmpty {
            line += "{" + labels.map { "\($0.0)=\"\(Self.escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
        }
        line += " " + Self.format(value) + "\n"
        bytes.append(contentsOf: Array(line.utf8))
    }

    static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    static func escapeLabel(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func escapeHelp(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }
}

/// A swift-metrics factory that makes nothing (metrics off): every handle is a no-op.
public let noMetrics: any MetricsFactory = NOOPMetricsHandler.instance
