/// An IPv4 address, parsed strictly from dotted-quad text ("10.0.0.5"; no leading zeros, no
/// shorthand): addresses that decide where the host connects are never guessed at.
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    public let value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard (1...3).contains(p.count), p.allSatisfy({ $0.isASCII && $0.isNumber }),
                  p.count == 1 || p.first != "0", let octet = UInt32(p), octet <= 255 else { return nil }
            v = v << 8 | octet
        }
        value = v
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    /// Why the host must never connect here on a guest's behalf, or nil for an ordinary unicast
    /// address: "this network" (0/8), loopback (127/8), link-local including cloud metadata
    /// (169.254/16), multicast (224/4), reserved and broadcast (240/4).
    public var specialUse: String? {
        switch value >> 24 {
        case 0: return "an unspecified address"
        case 127: return "a loopback address"
        case 224...239: return "a multicast address"
        case 240...255: return "a reserved or broadcast address"
        default: return value >> 16 == 0xa9fe ? "a link-local (metadata) address" : nil
        }
    }
}

/// An IPv4 network in CIDR form ("10.87.0.1/24": the interface's own address and its prefix).
public struct IPv4Network: Hashable, Sendable, CustomStringConvertible {
    /// The address as written (for a bridge, the host's own address on it).
    public let address: IPv4Address
    public let prefixLength: Int

    public init?(cidr: some StringProtocol) {
        let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = IPv4Address(parts[0]), parts[1].allSatisfy({ $0.isASCII && $0.isNumber }),
              let n = Int(parts[1]), (0...32).contains(n) else { return nil }
        address = a
        prefixLength = n
    }

    public var mask: UInt32 { prefixLength == 0 ? 0 : UInt32.max << (32 - prefixLength) }

    /// Whether `a` is a host address of this network (not its network or broadcast address).
    public func containsHost(_ a: IPv4Address) -> Bool {
        guard a.value & mask == address.value & mask else { return false }
        guard prefixLength < 31 else { return true }
        let host = a.value & ~mask
        return host != 0 && host != ~mask
    }

    public var description: String { "\(address)/\(prefixLength)" }
}
