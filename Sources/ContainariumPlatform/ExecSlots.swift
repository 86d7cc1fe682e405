public import ContainariumCore
import Synchronization

/// Bounds the commands (`exec`) that run at once through this daemon: per environment and in all
/// (a control plane counts the commands it forwards to its members too). Each running
/// command holds a thread in its backend plugin and a stream from the backend until it ends,
/// so without a bound a loop of slow commands exhausts the node. Past either bound a call is
/// refused at once with `.resourceExhausted` (HTTP 429), naming the bound; nothing is queued.
public final class ExecSlots: Sendable {
    public let perEnvironment: Int
    public let total: Int
    private struct State { var running: [String: Int] = [:]; var total = 0 }
    private let state = Mutex(State())

    public init(perEnvironment: Int = 8, total: Int = 64) {
        self.perEnvironment = max(1, perEnvironment)
        self.total = max(1, total)
    }

    /// Run `body` in a slot for `environment`, or refuse at once when none is free.
    @discardableResult
    public func run<T>(_ environment: String, _ body: () async throws(ContainariumError) -> T) async throws(ContainariumError) -> T {
        try take(environment)
        defer { release(environment) }
        return try await body()
    }

    func take(_ environment: String) throws(ContainariumError) {
        let refusal: String? = state.withLock { s in
            let mine = s.running[environment, default: 0]
            if mine >= perEnvironment { return "\(perEnvironment) commands are running in \(environment) already (the bound per environment); try again when one ends" }
            if s.total >= total { return "\(total) commands are running through this daemon already (its bound); try again when one ends" }
            s.running[environment] = mine + 1
            s.total += 1
            return nil
        }
        if let refusal { throw ContainariumError(.resourceExhausted, refusal) }
    }

    func release(_ environment: String) {
        state.withLock { s in
            s.total -= 1
            let left = s.running[environment, default: 1] - 1
            s.running[environment] = left > 0 ? left : nil
        }
    }

    /// Commands running now (in all, and in `environment`).
    public func running(_ environment: String? = nil) -> Int {
        state.withLock { s in environment.map { s.running[$0, default: 0] } ?? s.total }
    }
}
