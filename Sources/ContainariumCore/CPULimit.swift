import Foundation

/// A CPU limit: either a number of CPUs (`4`), which the backend balances across the host,
/// or an explicit set of host CPUs to pin to: a range (`0-3`, `2-4`) or a list (`0,2,4-5`).
public enum CPULimit: Sendable, Hashable, Codable, CustomStringConvertible {
    case count(Int)
    case pinned([Int])

    public static let maxCount = 1024

    public init(parsing raw: String) throws(ContainariumError) {
        let text = raw.trimmingCharacters(in: .whitespaces)
        guard !text.isEmpty else { throw .invalid("CPU limit is empty (use e.g. 4, 2-4 or 0,2)") }
        if let n = Int(text) {
            guard n >= 1, n <= Self.maxCount else {
                throw .invalid("CPU count \(n) is out of range (1...\(Self.maxCount))")
            }
            self = .count(n)
            return
        }
        var cpus = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            switch bounds.count {
            case 1:
                guard let c = Int(bounds[0]), c >= 0, c < Self.maxCount else {
                    throw .invalid("CPU limit '\(raw)': '\(part)' is not a CPU number")
                }
                cpus.insert(c)
            case 2:
                guard let lo = Int(bounds[0]), let hi = Int(bounds[1]), lo >= 0, hi < Self.maxCount else {
                    throw .invalid("CPU limit '\(raw)': '\(part)' is not a range like 0-3")
                }
                guard lo <= hi else { throw .invalid("CPU limit '\(raw)': range '\(part)' runs backwards") }
                cpus.formUnion(lo...hi)
            default:
                throw .invalid("CPU limit '\(raw)' is not a count (4), a range (0-3) or a list (0,2)")
            }
        }
        self = .pinned(cpus.sorted())
    }

    /// How many CPUs the limit allows.
    public var cpuCount: Int {
        switch self {
        case .count(let n): n
        case .pinned(let cpus): cpus.count
        }
    }

    /// The Incus `limits.cpu` value.
    public var incusValue: String {
        switch self {
        case .count(let n): return String(n)
        case .pinned(let cpus):
            // Compress runs back into ranges: [0,1,2,5] -> "0-2,5"
            var parts: [String] = []
            var i = 0
            while i < cpus.count {
                var j = i
                while j + 1 < cpus.count, cpus[j + 1] == cpus[j] + 1 { j += 1 }
                parts.append(i == j ? String(cpus[i]) : "\(cpus[i])-\(cpus[j])")
                i = j + 1
            }
            // A single pinned CPU must not read as a count.
            if cpus.count == 1 { return "\(cpus[0])-\(cpus[0])" }
            return parts.joined(separator: ",")
        }
    }

    public var description: String {
        switch self {
        case .count(let n): "\(n)"
        case .pinned: "cpus \(incusValue)"
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int.self) {
            self = try CPULimit(parsing: String(n))
        } else {
            self = try CPULimit(parsing: c.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(incusValue)
    }
}
