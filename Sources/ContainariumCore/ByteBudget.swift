import Synchronization

/// Bytes in flight between a producer and a consumer that may stall (a browser's WebSocket, a
/// slow gRPC peer): at most `limit` are queued. A producer that can pause (a NIO channel's
/// reads) pauses when `add` says so and is resumed through `onResume`; one that can wait awaits
/// `waitForRoom`. The consumer calls `release` as it hands bytes on, and `cancel` when it is gone.
public final class ByteBudget: Sendable {
    public let limit: Int

    private struct State {
        var queued = 0
        var paused = false
        var cancelled = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var resume: (@Sendable () -> Void)?
    }
    private let state = Mutex(State())

    public init(limit: Int = 4 << 20) { self.limit = max(1, limit) }

    /// What to run when a paused producer may go on (for example, turning autoRead back on).
    public func onResume(_ body: @escaping @Sendable () -> Void) { state.withLock { $0.resume = body } }

    /// Count `n` more bytes queued. True when the producer should pause now (once, until resumed).
    public func add(_ n: Int) -> Bool {
        state.withLock { s in
            s.queued += n
            guard s.queued >= limit, !s.paused, !s.cancelled else { return false }
            s.paused = true
            return true
        }
    }

    /// Bytes queued now.
    public var queued: Int { state.withLock { $0.queued } }

    /// Wait until fewer than `limit` bytes are queued (at once when the consumer is gone, or
    /// when the waiting task is cancelled).
    public func waitForRoom() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.queued < limit || s.cancelled || Task.isCancelled { return true }
                    s.waiters.append(c)
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            // Wake the waiters (a waiter that was not cancelled re-checks nothing: at worst it
            // queues once more past the limit).
            let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                let w = s.waiters
                s.waiters = []
                return w
            }
            waiters.forEach { $0.resume() }
        }
    }

    /// `n` bytes left the queue.
    public func release(_ n: Int) {
        let (waiters, resume) = state.withLock { s -> ([CheckedContinuation<Void, Never>], (@Sendable () -> Void)?) in
            s.queued = max(0, s.queued - n)
            guard s.queued < limit else { return ([], nil) }
            let w = s.waiters
            s.waiters = []
            let r = s.paused ? s.resume : nil
            s.paused = false
            return (w, r)
        }
        waiters.forEach { $0.resume() }
        resume?()
    }

    /// The consumer is gone: nobody waits any more, nothing pauses again.
    public func cancel() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.cancelled = true
            let w = s.waiters
            s.waiters = []
            return w
        }
        waiters.forEach { $0.resume() }
    }
}
