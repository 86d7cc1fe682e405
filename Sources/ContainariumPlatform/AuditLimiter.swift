public import Foundation
import Synchronization

/// Bounds what unauthenticated traffic can write to the audit log: per source address, at most
/// `perWindow` refusals in each `window`; the rest are counted, and the first refusal admitted
/// after a window that dropped some carries the count (`auth.failure.suppressed`). Addresses are
/// forgotten once their window has passed, and at most `maxAddresses` are tracked at once.
public final class AuditLimiter: Sendable {
    public let perWindow: Int
    public let window: TimeInterval
    public let maxAddresses: Int

    struct Slot { var start: Date; var admitted: Int; var suppressed: Int }
    private let slots = Mutex<[String: Slot]>([:])

    public init(perWindow: Int = 20, window: TimeInterval = 60, maxAddresses: Int = 10_000) {
        self.perWindow = perWindow
        self.window = window
        self.maxAddresses = maxAddresses
    }

    public enum Decision: Equatable, Sendable {
        /// Write it; `suppressedBefore` refusals from the address were dropped in its last window.
        case write(suppressedBefore: Int)
        case drop
    }

    /// The address part of a source ("ipv4:10.0.0.1:5678", "10.0.0.1:5678", "[::1]:22", "ipv6:[::1]:22").
    public static func address(of source: String) -> String {
        var s = Substring(source)
        for prefix in ["ipv4:", "ipv6:", "unix:"] where s.hasPrefix(prefix) { s = s.dropFirst(prefix.count) }
        if s.hasPrefix("["), let end = s.firstIndex(of: "]") { return String(s[s.index(after: s.startIndex)..<end]) }
        if s.filter({ $0 == ":" }).count == 1, let colon = s.lastIndex(of: ":") { return String(s[..<colon]) }
        return String(s)
    }

    public func admit(source: String, now: Date = Date()) -> Decision {
        let key = Self.address(of: source)
        return slots.withLock { slots in
            if var slot = slots[key], now.timeIntervalSince(slot.start) < window {
                guard slot.admitted < perWindow else {
                    slot.suppressed += 1
                    slots[key] = slot
                    return .drop
                }
                slot.admitted += 1
                slots[key] = slot
                return .write(suppressedBefore: 0)
            }
            let carried = slots[key]?.suppressed ?? 0
            if slots[key] == nil, slots.count >= maxAddresses {
                // Forget every address whose window has passed; if none has, the oldest.
                slots = slots.filter { now.timeIntervalSince($0.value.start) < window }
                if slots.count >= maxAddresses, let oldest = slots.min(by: { $0.value.start < $1.value.start })?.key {
                    slots[oldest] = nil
                }
            }
            slots[key] = Slot(start: now, admitted: 1, suppressed: 0)
            return .write(suppressedBefore: carried)
        }
    }
}
