public import ContainariumCore

#if canImport(Glibc)
import Glibc
#endif

/// Where the gateway may connect from the host's network namespace on a client's behalf. The
/// route's address already comes from the backend's own record of the environment's NIC (see
/// `InstanceInfo.address`); this is the second wall: whatever a route says, the gateway never
/// dials loopback, link-local (cloud metadata), multicast, reserved or unspecified addresses,
/// nor any address of the host itself.
public enum GatewayTargets {
    /// Why the gateway must not connect to `address`, or nil when it may.
    public static func refusal(_ address: String) -> String? {
        guard let a = IPv4Address(address) else { return "\(address) is not an IPv4 address" }
        if let special = a.specialUse { return "\(address) is \(special)" }
        if hostAddresses().contains(a) { return "\(address) is an address of this host" }
        return nil
    }

    /// The host's own IPv4 addresses, read afresh (interfaces come and go).
    public static func hostAddresses() -> Set<IPv4Address> {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0 else { return [] }
        defer { freeifaddrs(head) }
        var found: Set<IPv4Address> = []
        var cursor = head
        while let entry = cursor {
            // Read as bytes (Linux's sockaddr_in: family at 0, port at 2, address at 4): the
            // struct's members can resolve to another C module's copy of <netinet/in.h> (NIO's),
            // which this file does not import.
            if let sa = entry.pointee.ifa_addr, UnsafeRawPointer(sa).loadUnaligned(as: sa_family_t.self) == sa_family_t(AF_INET) {
                let raw = UnsafeRawPointer(sa).loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                found.insert(IPv4Address(UInt32(bigEndian: raw)))
            }
            cursor = entry.pointee.ifa_next
        }
        return found
    }
}
