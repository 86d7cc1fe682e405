import Foundation

/// A size in bytes, parsed from operator input such as `8GB`, `4096MB`, `8GiB` or `512MiB`.
///
/// Decimal units (`KB`, `MB`, `GB`, `TB`) are powers of 1000 and binary units (`KiB`, `MiB`,
/// `GiB`, `TiB`) powers of 1024, as in Incus. Units are case-insensitive (`8gb` = `8GB`); a
/// bare number is refused because it is ambiguous. Fractions are allowed (`1.5GiB`).
public struct ByteSize: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public let bytes: UInt64

    public init(bytes: UInt64) { self.bytes = bytes }

    private static let units: [(String, UInt64)] = [
        ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40),
        ("kb", 1_000), ("mb", 1_000_000), ("gb", 1_000_000_000), ("tb", 1_000_000_000_000),
        ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40),
        ("b", 1),
    ]

    public init(parsing raw: String) throws(ContainariumError) {
        let text = raw.trimmingCharacters(in: .whitespaces).lowercased()
        guard !text.isEmpty else { throw .invalid("size is empty (use e.g. 8GB, 4096MB or 8GiB)") }
        var numberEnd = text.startIndex
        while numberEnd < text.endIndex, text[numberEnd].isNumber || text[numberEnd] == "." {
            numberEnd = text.index(after: numberEnd)
        }
        let numberPart = String(text[..<numberEnd])
        let unitPart = String(text[numberEnd...]).trimmingCharacters(in: .whitespaces)
        guard !numberPart.isEmpty, let number = Double(numberPart), number.isFinite, number >= 0 else {
            throw .invalid("size '\(raw)' does not start with a number (use e.g. 8GB, 4096MB or 8GiB)")
        }
        guard !unitPart.isEmpty else {
            throw .invalid("size '\(raw)' has no unit: write \(numberPart)GB, \(numberPart)MB or \(numberPart)GiB")
        }
        guard let multiplier = Self.units.first(where: { $0.0 == unitPart })?.1 else {
            throw .invalid("size '\(raw)' has an unknown unit '\(unitPart)' (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")
        }
        let value = number * Double(multiplier)
        guard value < 9.0e18 else { throw .invalid("size '\(raw)' is too large") }
        guard value >= 1 else { throw .invalid("size '\(raw)' must be greater than zero") }
        self.bytes = UInt64(value.rounded())
    }

    /// The Incus form: an exact byte count (`"8589934592B"`).
    public var incusValue: String { "\(bytes)B" }

    /// A short human form in binary units (`8GiB`, `1.5GiB`, `512MiB`).
    public var description: String { Self.format(bytes) }

    public static func format(_ bytes: UInt64) -> String {
        // Exact forms first, so what an operator typed reads back the same (8GB, 8GiB).
        for (name, size) in [("TiB", UInt64(1) << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)] where bytes >= size && bytes % size == 0 {
            return "\(bytes / size)\(name)"
        }
        for (name, size) in [("TB", UInt64(1_000_000_000_000)), ("GB", 1_000_000_000), ("MB", 1_000_000)] where bytes >= size && bytes % size == 0 {
            return "\(bytes / size)\(name)"
        }
        let units: [(String, Double)] = [("TiB", 1_099_511_627_776), ("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024)]
        for (name, size) in units where Double(bytes) >= size {
            let v = Double(bytes) / size
            if v.rounded() == v { return "\(Int(v))\(name)" }
            return String(format: "%.1f%@", v, name)
        }
        return "\(bytes)B"
    }

    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(UInt64.self) {
            self.bytes = n
        } else {
            self = try ByteSize(parsing: c.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(bytes)
    }
}
