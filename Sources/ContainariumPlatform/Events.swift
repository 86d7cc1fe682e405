public import ContainariumCore
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
    /// A scan of an environment ended (`security.scan`).
    case scan(reportID: String, scanner: String, status: String, findings: Int)
    /// An alert rule's condition started (`alert.firing`) or stopped (`alert.resolved`) holding for a target.
    case alert(rule: String, target: String, severity: String, value: Double, threshold: Double)
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

/// Fan-out of daemon events to subscribers (SSE clients, EventService streams, the daemon's
/// own relays). Slow subscribers lose the oldest buffered events instead of slowing the daemon
/// down. Streams opened for callers are bounded: `perCaller` each, `total` in all, so nobody can
/// hold the daemon's memory with streams they never read.
public final class DaemonEvents: Sendable {
    private struct State {
        var closed = false
        var next: Int64 = 1
        var subscribers: [UUID: AsyncStream<DaemonEvent>.Continuation] = [:]
        /// The caller each bounded stream is for.
        var owners: [UUID: String] = [:]
    }
    private let state = Mutex(State())
    public let perCaller: Int
    public let total: Int

    public init(perCaller: Int = 16, total: Int = 1024) {
        self.perCaller = perCaller
        self.total = total
    }

    /// A stream for `caller` (SSE, EventService), within the limits; the daemon's own relays
    /// use `subscribe()`.
    public func subscribe(for caller: String, bufferSize: Int = 1024) throws(ContainariumError) -> (stream: AsyncStream<DaemonEvent>, cancel: @Sendable () -> Void) {
        let id = UUID()
        let refusal = state.withLock { s -> ContainariumError? in
            if let refusal = Self.refusal(s, caller, total: total, perCaller: perCaller) { return refusal }
            s.owners[id] = caller
            return nil
        }
        if let refusal { throw refusal }
        return subscribe(id: id, bufferSize: bufferSize)
    }

    /// Would a stream for `caller` be refused now? Adapters ask before they answer (so the
    /// refusal is the answer's status) and subscribe once the answer's body runs (so a client
    /// that goes away before that holds no stream).
    public func admits(_ caller: String) throws(ContainariumError) {
        if let refusal = state.withLock({ Self.refusal($0, caller, total: total, perCaller: perCaller) }) { throw refusal }
    }

    private static func refusal(_ s: State, _ caller: String, total: Int, perCaller: Int) -> ContainariumError? {
        if s.owners.count >= total {
            return ContainariumError(.resourceExhausted, "the daemon has \(total) event streams open: try again later")
        }
        let mine = s.owners.values.filter { $0 == caller }.count
        if mine >= perCaller {
            return ContainariumError(.resourceExhausted, "\(caller) has \(mine) event streams open, the most one caller may have: close one first")
        }
        return nil
    }

    /// Streams open for `caller`.
    public func streams(of caller: String) -> Int { state.withLock { s in s.owners.values.filter { $0 == caller }.count } }

    public func publish(_ type: String, username: String?, data: EventData) {
        state.withLock { s in
            let event = DaemonEvent(id: s.next, type: type, username: username, time: Date(), data: data)
            s.next += 1
            for c in s.subscribers.values { c.yield(event) }
        }
    }

    public func subscribe(bufferSize: Int = 1024) -> (stream: AsyncStream<DaemonEvent>, cancel: @Sendable () -> Void) {
        subscribe(id: UUID(), bufferSize: bufferSize)
    }

    private func subscribe(id: UUID, bufferSize: Int) -> (stream: AsyncStream<DaemonEvent>, cancel: @Sendable () -> Void) {
        let (stream, continuation) = AsyncStream<DaemonEvent>.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        let closed = state.withLock { s -> Bool in
            if !s.closed { s.subscribers[id] = continuation }
            return s.closed
        }
        if closed {
            continuation.finish()
            state.withLock { _ = $0.owners.removeValue(forKey: id) }
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { s in
                s.subscribers.removeValue(forKey: id)
                s.owners.removeValue(forKey: id)
            }
        }
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
