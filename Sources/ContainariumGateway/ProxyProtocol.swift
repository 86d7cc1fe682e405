public import NIOCore

/// The PROXY protocol (HAProxy's, versions 1 and 2): a proxy in front of a server (the
/// sentinel) says, before anything else on a connection, whose connection it is. Only headers
/// from addresses the server trusts (`GatewayOptions.trustedProxies`) are read.
public enum ProxyProtocol {
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// A version 2 header (PROXY command, TCP) for a connection from `source` to `destination`.
    public static func v2Header(source: SocketAddress?, destination: SocketAddress?) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeBytes(v2Signature)
        if let s = source, let d = destination, let sp = s.port, let dp = d.port, let sa = s.ipAddress, let da = d.ipAddress,
           let sb = bytes(of: sa), let db = bytes(of: da), sb.count == db.count {
            b.writeInteger(UInt8(0x21))  // version 2, PROXY
            b.writeInteger(UInt8(sb.count == 4 ? 0x11 : 0x21))  // AF_INET or AF_INET6, STREAM
            b.writeInteger(UInt16(sb.count * 2 + 4))
            b.writeBytes(sb)
            b.writeBytes(db)
            b.writeInteger(UInt16(clamping: sp))
            b.writeInteger(UInt16(clamping: dp))
        } else {
            b.writeInteger(UInt8(0x20))  // version 2, LOCAL: no address to tell
            b.writeInteger(UInt8(0x00))
            b.writeInteger(UInt16(0))
        }
        return b
    }

    /// The 4 or 16 bytes of an address as NIO prints it.
    static func bytes(of address: String) -> [UInt8]? {
        if !address.contains(":") {
            let parts = address.split(separator: ".").compactMap { UInt8($0) }
            return parts.count == 4 ? parts : nil
        }
        guard let packed = try? SocketAddress(ipAddress: address, port: 0), case .v6(let v6) = packed else { return nil }
        // The socket address's bytes: family (2), port (2), flowinfo (4), then the address (16).
        return withUnsafeBytes(of: v6.address) { raw in raw.count >= 24 ? Array(raw[8..<24]) : nil }
    }

    enum Parsed: Equatable {
        case incomplete
        /// The header's length and the source address it names (nil: LOCAL or UNKNOWN).
        case header(length: Int, source: String?)
        case invalid(String)
    }

    /// Read a v1 or v2 header from the start of `bytes`.
    static func parse(_ bytes: [UInt8]) -> Parsed {
        let v1 = Array("PROXY ".utf8)
        let isV1 = bytes.count >= v1.count && Array(bytes.prefix(v1.count)) == v1
        if !isV1 && bytes.count < 16 {
            // Enough to tell a v2 signature or "PROXY " apart from anything else?
            let v2 = Array(v2Signature.prefix(bytes.count)), v1Part = Array(v1.prefix(bytes.count))
            let maybe = Array(bytes.prefix(12)) == Array(v2.prefix(min(12, bytes.count))) || Array(bytes.prefix(v1Part.count)) == v1Part
            return maybe ? .incomplete : .invalid("no PROXY protocol header")
        }
        if !isV1, Array(bytes.prefix(12)) == v2Signature {
            guard bytes[12] >> 4 == 2 else { return .invalid("PROXY protocol version \(bytes[12] >> 4)") }
            let length = Int(bytes[14]) << 8 | Int(bytes[15])
            guard length <= 1024 else { return .invalid("a PROXY v2 header of \(length) bytes") }
            guard bytes.count >= 16 + length else { return .incomplete }
            let command = bytes[12] & 0x0F, family = bytes[13] >> 4
            guard command == 1 else { return .header(length: 16 + length, source: nil) }  // LOCAL
            switch family {
            case 1 where length >= 12:
                return .header(length: 16 + length, source: bytes[16..<20].map(String.init).joined(separator: "."))
            case 2 where length >= 36:
                var groups: [String] = []
                for i in stride(from: 16, to: 32, by: 2) { groups.append(String(Int(bytes[i]) << 8 | Int(bytes[i + 1]), radix: 16)) }
                let text = groups.joined(separator: ":")
                // In the form NIO gives a peer's address, so a client is one address however it came.
                return .header(length: 16 + length, source: (try? SocketAddress(ipAddress: text, port: 0))?.ipAddress ?? text)
            default:
                return .header(length: 16 + length, source: nil)
            }
        }
        guard Array(bytes.prefix(6)) == Array("PROXY ".utf8) else { return .invalid("no PROXY protocol header") }
        guard let cr = bytes.firstIndex(of: 0x0D) else { return bytes.count > 107 ? .invalid("a PROXY v1 line longer than 107 bytes") : .incomplete }
        guard cr + 1 < bytes.count else { return .incomplete }
        guard bytes[cr + 1] == 0x0A, cr + 2 <= 107 else { return .invalid("a malformed PROXY v1 line") }
        let words = String(decoding: bytes[6..<cr], as: UTF8.self).split(separator: " ")
        if words.first == "UNKNOWN" { return .header(length: cr + 2, source: nil) }
        guard words.count == 5, words[0] == "TCP4" || words[0] == "TCP6" else { return .invalid("a malformed PROXY v1 line") }
        guard let address = try? SocketAddress(ipAddress: String(words[1]), port: 0), let source = address.ipAddress else {
            return .invalid("a PROXY v1 line whose source is not an address")
        }
        return .header(length: cr + 2, source: source)
    }
}

/// First on a connection from a trusted proxy: reads its PROXY header (within 10 s and 1 KiB),
/// then removes itself and hands on the source address it names and whatever followed the
/// header. A connection without a valid header is closed.
public final class ProxyHeaderReader: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    private var buffered: [UInt8] = []
    private var done = false
    private var timer: Scheduled<Void>?
    private let decided: (ChannelHandlerContext, String?, ByteBuffer) -> Void

    /// `decided(context, source, rest)`: source is nil for a LOCAL header (the proxy's own
    /// connection, e.g. a health check).
    public init(decided: @escaping (ChannelHandlerContext, String?, ByteBuffer) -> Void) {
        self.decided = decided
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        buffered.append(contentsOf: unwrapInboundIn(data).readableBytesView)
        switch ProxyProtocol.parse(buffered) {
        case .incomplete where buffered.count <= 1040:
            return
        case .header(let length, let source):
            done = true
            timer?.cancel()
            let rest = ByteBuffer(bytes: buffered[length...])
            buffered = []
            decided(context, source, rest)
        case .incomplete, .invalid:
            done = true
            timer?.cancel()
            context.close(promise: nil)
        }
    }
}
