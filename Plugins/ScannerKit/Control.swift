public import ContainariumCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What every step of a scan checks: the host's cancellation and the scan's deadline.
public struct ScanControl: Sendable {
    public let started: ContinuousClock.Instant
    public let deadline: ContinuousClock.Instant
    public let timeoutSeconds: Int
    private let cancelled: @Sendable () -> Bool

    public init(timeoutSeconds: Int, isCancelled: @escaping @Sendable () -> Bool) {
        let now = ContinuousClock.now
        self.started = now
        self.timeoutSeconds = timeoutSeconds
        self.deadline = now.advanced(by: .seconds(timeoutSeconds))
        self.cancelled = isCancelled
    }

    public var isCancelled: Bool { cancelled() }
    public var isPastDeadline: Bool { ContinuousClock.now >= deadline }

    /// Seconds left before the deadline (never negative).
    public var remainingSeconds: Double {
        let left = deadline - ContinuousClock.now
        let (s, atto) = left.components
        return max(0, Double(s) + Double(atto) / 1e18)
    }

    /// Milliseconds since the scan started.
    public var elapsedMilliseconds: Int {
        let (s, atto) = (ContinuousClock.now - started).components
        return max(0, Int(s) * 1000 + Int(atto / 1_000_000_000_000_000))
    }

    public var timeoutError: ContainariumError {
        ContainariumError(.timeout, "the scan did not finish within \(timeoutSeconds) s (config timeoutSeconds)")
    }

    /// Throws `cancelled` once the host cancelled the operation and `timeout` past the deadline.
    public func check() throws(ContainariumError) {
        if cancelled() { throw ContainariumError(.cancelled, "the scan was cancelled") }
        if isPastDeadline { throw timeoutError }
    }
}

/// Things a scan could not do, collected for the report's notes: a count and the first few
/// examples (never the whole list of a tree with millions of files).
public struct NoteTally: Sendable {
    public private(set) var count = 0
    public private(set) var examples: [String] = []
    public let keep: Int

    public init(keep: Int = 5) { self.keep = keep }

    public mutating func add(_ example: String) {
        count += 1
        if examples.count < keep { examples.append(example) }
    }

    public mutating func merge(_ other: NoteTally) {
        for e in other.examples where examples.count < keep { examples.append(e) }
        count += other.count
    }

    /// "3 files could not be read: /a (Permission denied), /b (…), …", or nil when empty.
    public func sentence(_ what: (Int) -> String) -> String? {
        guard count > 0 else { return nil }
        let more = count > examples.count ? ", …" : ""
        return "\(what(count)): \(examples.joined(separator: ", "))\(more)"
    }
}

extension String {
    /// `self` as seen from inside the scanned tree: "/home/alice/x" for `root` + "/home/alice/x";
    /// a relative path ("home/alice/x") gets its leading "/".
    public func relative(toRoot root: String) -> String {
        if root == "/" { return hasPrefix("/") ? self : "/" + self }
        if self == root { return "/" }
        if hasPrefix(root + "/") { return String(dropFirst(root.count)) }
        if hasPrefix("/") { return self }
        if hasPrefix("./") { return String(dropFirst(1)) }
        return "/" + self
    }
}

/// The text of errno `code`.
public func errorText(_ code: Int32) -> String { String(cString: strerror(code)) }
