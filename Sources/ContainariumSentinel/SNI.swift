import NIOCore

/// The server name a TLS ClientHello asks for (RFC 6066 `server_name`), read from the first
/// bytes of a connection without terminating TLS.
enum ClientHello {
    enum Outcome: Equatable {
        /// More bytes are needed.
        case incomplete
        /// A ClientHello, with its host name when it names one.
        case hello(serverName: String?)
        /// Not a TLS ClientHello.
        case notTLS
    }

    /// Parse what has arrived so far (only the first handshake record is read; a ClientHello
    /// split over several records is read from the first, which holds the SNI in practice).
    static func parse(_ bytes: [UInt8]) -> Outcome {
        guard bytes.count >= 5 else { return .incomplete }
        guard bytes[0] == 0x16, bytes[1] == 0x03 else { return .notTLS }
        let recordLength = Int(bytes[3]) << 8 | Int(bytes[4])
        guard recordLength <= 16_384 + 2048 else { return .notTLS }
        guard bytes.count >= 5 + recordLength else { return .incomplete }
        var r = Reader(bytes: Array(bytes[5..<(5 + recordLength)]))
        guard r.u8() == 0x01, let _ = r.u24(), r.skip(2 + 32),  // type, length, version, random
              let sid = r.u8(), r.skip(Int(sid)),
              let suites = r.u16(), r.skip(Int(suites)),
              let comp = r.u8(), r.skip(Int(comp)) else { return .notTLS }
        guard let extLength = r.u16() else { return .hello(serverName: nil) }  // no extensions
        var end = r.offset + Int(extLength)
        end = min(end, r.bytes.count)
        while r.offset + 4 <= end {
            guard let type = r.u16(), let length = r.u16() else { break }
            if type == 0x0000 {
                var s = Reader(bytes: Array(r.bytes[r.offset..<min(r.offset + Int(length), r.bytes.count)]))
                guard let listLength = s.u16() else { return .hello(serverName: nil) }
                let listEnd = min(s.offset + Int(listLength), s.bytes.count)
                while s.offset + 3 <= listEnd {
                    guard let nameType = s.u8(), let nameLength = s.u16() else { break }
                    guard s.offset + Int(nameLength) <= s.bytes.count else { break }
                    let name = s.bytes[s.offset..<(s.offset + Int(nameLength))]
                    if nameType == 0 {
                        guard name.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return .hello(serverName: nil) }
                        let host = String(decoding: name, as: UTF8.self)
                        return .hello(serverName: host.lowercased())
                    }
                    _ = s.skip(Int(nameLength))
                }
                return .hello(serverName: nil)
            }
            guard r.skip(Int(length)) else { break }
        }
        return .hello(serverName: nil)
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0
        mutating func u8() -> UInt8? {
            guard offset < bytes.count else { return nil }
            defer { offset += 1 }
            return bytes[offset]
        }
        mutating func u16() -> UInt16? {
            guard offset + 2 <= bytes.count else { return nil }
            defer { offset += 2 }
            return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
        }
        mutating func u24() -> UInt32? {
            guard offset + 3 <= bytes.count else { return nil }
            defer { offset += 3 }
            return UInt32(bytes[offset]) << 16 | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2])
        }
        mutating func skip(_ n: Int) -> Bool {
            guard n >= 0, offset + n <= bytes.count else { return false }
            offset += n
            return true
        }
    }
}

/// Holds a new connection's first bytes until its ClientHello can be read (at most 18 KiB, or
/// `timeout`), then stops reading, removes itself and hands the bytes and the server name on.
final class ClientHelloSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private var buffered: [UInt8] = []
    private var done = false
    private let decided: (ChannelHandlerContext, String?, ByteBuffer) -> Void
    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount = .seconds(10), decided: @escaping (ChannelHandlerContext, String?, ByteBuffer) -> Void) {
        self.timeout = timeout
        self.decided = decided
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        let chunk = unwrapInboundIn(data)
        buffered.append(contentsOf: chunk.readableBytesView)
        switch ClientHello.parse(buffered) {
        case .incomplete where buffered.count < 18_432:
            return
        case .hello(let name):
            finish(context, name)
        case .incomplete, .notTLS:
            finish(context, nil)
        }
    }

    private func finish(_ context: ChannelHandlerContext, _ name: String?) {
        done = true
        timer?.cancel()
        context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        let bytes = ByteBuffer(bytes: buffered)
        buffered = []
        decided(context, name, bytes)
    }
}
