public import Foundation
import Synchronization

/// An event emitted by a plugin (through the host services table) or by the host itself.
public struct PluginEvent: Sendable {
    public var plugin: String
    public var type: String
    public var json: Data
    public var time: Date
    public init(plugin: String, type: String, json: Data, time: Date = Date()) {
        self.plugin = plugin
        self.type = type
        self.json = json
        self.time = time
    }
}

/// Fans events out to any number of subscribers. Publishing never blocks: a subscriber that
/// falls behind loses its oldest events (bounded buffer), never the publisher's thread.
public final class EventBus: Sendable {
    private let subscribers = Mutex<[UUID: AsyncStream<PluginEvent>.Continuation]>([:])
    private let tap: (@Sendable (PluginEvent) -> Void)?

    /// `tap`, when given, sees every event synchronously on the publisher's thread (the plugin
    /// server uses it to keep events ahead of the call's result on the wire).
    public init(tap: (@Sendable (PluginEvent) -> Void)? = nil) {
        self.tap = tap
    }

    public func publish(_ event: PluginEvent) {
        tap?(event)
        for c in subscribers.withLock({ Array($0.values) }) { c.yield(event) }
    }

    /// A stream of every event published from now on. Ends when the consumer stops iterating.
    public func subscribe(bufferSize: Int = 1024) -> AsyncStream<PluginEvent> {
        subscription(bufferSize: bufferSize).events
    }

    /// Like `subscribe`, with a way for the subscriber to end the stream itself: after
    /// `finish()`, iteration still delivers what was already published, then ends.
    public func subscription(bufferSize: Int = 1024) -> Subscription {
        let id = UUID()
        let (stream, continuation) = AsyncStream<PluginEvent>.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
        }
        subscribers.withLock { $0[id] = continuation }
        return Subscription(events: stream, continuation: continuation)
    }

    public struct Subscription: Sendable {
        public let events: AsyncStream<PluginEvent>
        let continuation: AsyncStream<PluginEvent>.Continuation

        /// Stop receiving new events; those already buffered are still delivered.
        public func finish() { continuation.finish() }
    }
}
