import ContainariumCore
public import CoreMetrics
import Foundation
import Synchronization

/// Latency and errors of every plugin call, by plugin, extension and function
/// (`containarium_plugin_call_duration_seconds`, `containarium_plugin_call_errors_total`).
/// Process-wide, like the plugins themselves: the daemon installs its metrics factory once;
/// until then (the CLI, tests) calls are not measured.
public enum PluginCallMetrics {
    private struct Handles: @unchecked Sendable {
        // @unchecked: swift-metrics' Timer and Counter are thread-safe classes.
        var timers: [String: CoreMetrics.Timer] = [:]
        var errors: [String: CoreMetrics.Counter] = [:]
    }
    private static let state = Mutex<(factory: (any MetricsFactory)?, handles: Handles)>((nil, Handles()))

    /// Measure every call from now on with `factory` (nil: stop).
    public static func install(_ factory: (any MetricsFactory)?) {
        state.withLock { $0 = (factory, Handles()) }
    }

    /// Run `body` (one call of `extensionID`'s `function` on `plugin`), measured.
    static func measure<T>(plugin: String, extension extensionID: String, function: String,
                           _ body: () async throws(ContainariumError) -> T) async throws(ContainariumError) -> T {
        guard state.withLock({ $0.factory != nil }) else { return try await body() }
        let started = ContinuousClock.now
        do throws(ContainariumError) {
            let value = try await body()
            record(plugin, extensionID, function, started, error: nil)
            return value
        } catch {
            record(plugin, extensionID, function, started, error: error.code.rawValue)
            throw error
        }
    }

    private static func record(_ plugin: String, _ ext: String, _ function: String, _ started: ContinuousClock.Instant, error: String?) {
        let elapsed = ContinuousClock.now - started
        let nanos = elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
        let key = "\(plugin)\u{1}\(ext)\u{1}\(function)"
        let (timer, counter) = state.withLock { s -> (CoreMetrics.Timer?, CoreMetrics.Counter?) in
            guard let factory = s.factory else { return (nil, nil) }
            let dims = [("plugin", plugin), ("extension", ext), ("function", function)]
            let timer = s.handles.timers[key] ?? {
                let t = CoreMetrics.Timer(label: "containarium_plugin_call_duration_seconds", dimensions: dims, factory: factory)
                s.handles.timers[key] = t
                return t
            }()
            var counter: CoreMetrics.Counter?
            if let error {
                let ekey = key + "\u{1}" + error
                counter = s.handles.errors[ekey] ?? {
                    let c = CoreMetrics.Counter(label: "containarium_plugin_call_errors_total", dimensions: dims + [("code", error)], factory: factory)
                    s.handles.errors[ekey] = c
                    return c
                }()
            }
            return (timer, counter)
        }
        timer?.recordNanoseconds(nanos)
        counter?.increment()
    }
}
