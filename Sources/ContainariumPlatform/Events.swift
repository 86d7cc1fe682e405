public import Foundation
import Synchronization

/// What an event says, by kind (`containarium.v1.Event`'s `data`).
public enum EventData: Sendable, Equatable {
    /// An environment appeared or changed, or went: its name, its member (from another node)
    /// and the backend's state when the change says.
    case container(name: String, node: String?, state: String?)
    /// A step of a create (with its operation) or of a stack's install.
    case progress(operationID: String?, step: Int, total: Int, message: String)
    /// An operation ended: succeeded or failed (with why).
    case operation(id: String, state: String, error: String?)
    /// An audit entry was written.
    case audit(action: String, actor: String, result: String)
}

/// One event on the daemon's stream (EventService.Subscribe, `GET /v1/events`).
public struct DaemonEvent: Sendable, Equatable {
    public var id: Int64
    public var type: String
    /// The environment (username) the event is about, when any: used to filter by access.
    public var username: String?
    public var time: Date
    public var data: EventData
}

/// Fan-out of daemon events to any number of subscribers (SSE clients, tests). Slow
/// subscribers lose the oldest buffered events instead of slowing the daemon down.
public final class DaemonEvents: Sendable {
    private struct State {
        var closed = false
        var next: Int64 = 1
        var subscribers: [UUID: AsyncStream<DaemonEvent>.Continuation] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    public func publish(_ type: String, username: String?, data: EventData) {
        state.withLock { s in
            let event = DaemonEvent(id: s.next, type: type, username: username, time: Date(), data: data)
            s.next += 1
            for c in s.subscribers.values { c.yield(event) }
        }
    }

    public func subscribe(bufferSize: Int = 1024) -> (stream: AsyncStream<DaemonEvent>, cancel: @Sendable () -> Void) {
        let id = UUID()
        let (stream, continuation) = AsyncStream<DaemonEvent>.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        let closed = state.withLock { s -> Bool in
            if !s.closed { s.subscribers[id] = continuation }
            return s.closed
        }
        if closed { continuation.finish() }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.subscribers.removeValue(forKey: id) } }
        return (stream, { continuation.finish() })
    }

    /// End every stream (graceful shutdown: SSE clients get a clean end of stream, so the
    /// HTTP server is not held open by them). Later subscriptions end at once.
    public func close() {
        let subs = state.withLock { s -> [AsyncStream<DaemonEvent>.Continuation] in
            s.closed = true
            defer { s.subscribers = [:] }
            return Array(s.subscribers.values)
        }
        subs.forEach { $0.finish() }
    }

    public var subscriberCount: Int { state.withLock { $0.subscribers.count } }
}
