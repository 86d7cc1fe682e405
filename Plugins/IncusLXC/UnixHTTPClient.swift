import ContainariumCore
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A minimal, blocking HTTP/1.1 client over a unix socket: one connection per request
/// (`Connection: close`), deadlines through socket timeouts, chunked and sized bodies.
/// It runs on the plugin's own queue, never on the host's threads.
struct UnixHTTPClient: Sendable {
    let socketPath: String

    struct Response: Sendable {
        var status: Int
        var headers: [String: String]
        var body: Data
    }

    func request(
        _ method: String, _ path: String, body: Data? = nil, headers: [String: String] = [:], timeout: Double = 30
    ) throws(ContainariumError) -> Response {
        let fd = try connect(timeout: timeout)
        defer { close(fd) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: incus\r\nUser-Agent: containarium\r\nConnection: close\r\n"
        var allHeaders = headers
        if let body {
            if allHeaders["Content-Type"] == nil { allHeaders["Content-Type"] = "application/json" }
            allHeaders["Content-Length"] = String(body.count)
        }
        for (k, v) in allHeaders.sorted(by: { $0.key < $1.key }) { head += "\(k): \(v)\r\n" }
        head += "\r\n"
        var payload = Data(head.utf8)
        if let body { payload.append(body) }
        try Self.writeAll(fd, payload)
        let raw = try readAll(fd)
        return try Self.parse(raw)
    }

    /// Follow Incus's event stream (`GET /1.0/events`, a WebSocket) and hand each JSON message
    /// to `onMessage` until `isCancelled` turns true (checked at least once a second) or the
    /// connection ends. Server frames are unmasked; pings are answered; close ends the stream.
    func followEvents(
        _ path: String, isCancelled: () -> Bool, onConnected: () -> Void, onMessage: (Data) -> Void
    ) throws(ContainariumError) {
        let fd = try connect(timeout: 1)
        defer { close(fd) }
        var nonce = [UInt8](repeating: 0, count: 16)
        for i in nonce.indices { nonce[i] = UInt8.random(in: 0...255) }
        let head = "GET \(path) HTTP/1.1\r\nHost: incus\r\nUser-Agent: containarium\r\nUpgrade: websocket\r\n"
            + "Connection: Upgrade\r\nSec-WebSocket-Key: \(Data(nonce).base64EncodedString())\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try Self.writeAll(fd, Data(head.utf8))
        var buffer = Data()
        // Read the handshake response up to the blank line.
        while true {
            if let end = buffer.range(of: Data("\r\n\r\n".utf8)) {
                let status = String(decoding: buffer[buffer.startIndex..<end.lowerBound], as: UTF8.self).split(separator: " ").dropFirst().first
                guard status == "101" else {
                    throw ContainariumError(.unavailable, "Incus refused the event stream (HTTP \(status ?? "?"))")
                }
                buffer = Data(buffer[end.upperBound...])
                break
            }
            guard try readSome(fd, into: &buffer, isCancelled: isCancelled) else {
                throw ContainariumError(.unavailable, "Incus closed the event stream during the handshake")
            }
        }
        onConnected()
        var message = Data()
        while true {
            // Parse as many complete frames as the buffer holds.
            while let frame = Self.frame(in: buffer) {
                buffer = Data(buffer.dropFirst(frame.consumed))
                switch frame.opcode {
                case 0x0, 0x1, 0x2:
                    message.append(frame.payload)
                    if frame.fin {
                        onMessage(message)
                        message = Data()
                    }
                case 0x8:
                    return
                case 0x9:
                    // Pong with the same payload, masked as a client must.
                    var pong = Data([0x8A, 0x80 | UInt8(min(frame.payload.count, 125))])
                    let mask: [UInt8] = [1, 2, 3, 4]
                    pong.append(contentsOf: mask)
                    for (i, b) in frame.payload.prefix(125).enumerated() { pong.append(b ^ mask[i % 4]) }
                    try Self.writeAll(fd, pong)
                default:
                    break
                }
            }
            guard try readSome(fd, into: &buffer, isCancelled: isCancelled) else { return }
        }
    }

    /// One WebSocket frame at the start of `data`, or nil when it is not complete yet.
    static func frame(in data: Data) -> (fin: Bool, opcode: UInt8, payload: Data, consumed: Int)? {
        let b = [UInt8](data.prefix(14))
        guard b.count >= 2 else { return nil }
        let fin = b[0] & 0x80 != 0
        let opcode = b[0] & 0x0F
        let masked = b[1] & 0x80 != 0
        var length = Int(b[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard b.count >= 4 else { return nil }
            length = Int(b[2]) << 8 | Int(b[3])
            offset = 4
        } else if length == 127 {
            guard b.count >= 10 else { return nil }
            length = 0
            for i in 2..<10 { length = length << 8 | Int(b[i]) }
            offset = 10
        }
        var mask: [UInt8] = []
        if masked {
            guard b.count >= offset + 4 else { return nil }
            mask = Array(b[offset..<offset + 4])
            offset += 4
        }
        guard length >= 0, data.count >= offset + length else { return nil }
        var payload = Data(data.dropFirst(offset).prefix(length))
        if masked { payload = Data(payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }) }
        return (fin, opcode, payload, offset + length)
    }

    /// Read what is available; false at end of stream. Times out every second to poll `isCancelled`.
    private func readSome(_ fd: Int32, into buffer: inout Data, isCancelled: () -> Bool) throws(ContainariumError) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if isCancelled() { throw ContainariumError(.cancelled, "event stream cancelled") }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return false }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { continue }
                throw ContainariumError(.unavailable, "reading Incus events failed", cause: String(cString: strerror(errno)))
            }
            buffer.append(contentsOf: chunk[0..<n])
            return true
        }
    }

    func connect(timeout: Double) throws(ContainariumError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ContainariumError(.unavailable, "cannot create a socket", cause: String(cString: strerror(errno))) }
        // struct timeval is { long tv_sec; long tv_usec; } on 64-bit Linux. Spelled out as two
        // Ints because the imported `timeval` resolves to different Clang modules per build mode.
        var tv: (Int, Int) = (Int(timeout), Int((timeout - timeout.rounded(.down)) * 1_000_000))
        let tvSize = socklen_t(MemoryLayout<(Int, Int)>.size)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, tvSize)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, tvSize)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard pathBytes.count < capacity else {
            close(fd)
            throw ContainariumError(.invalidArgument, "Incus socket path is too long: \(socketPath)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw ContainariumError(.unavailable, "cannot reach Incus at \(socketPath) (is incusd running?)", cause: why)
        }
        return fd
    }

    static func writeAll(_ fd: Int32, _ data: Data) throws(ContainariumError) {
        let ok: Bool = data.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return true }
            var offset = 0
            while offset < raw.count {
                let n = send(fd, base + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
        guard ok else { throw ContainariumError(.unavailable, "writing to Incus failed", cause: String(cString: strerror(errno))) }
    }

    private func readAll(_ fd: Int32) throws(ContainariumError) -> Data {
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    throw ContainariumError(.timeout, "Incus did not answer in time")
                }
                throw ContainariumError(.unavailable, "reading from Incus failed", cause: String(cString: strerror(errno)))
            }
            out.append(contentsOf: buffer[0..<n])
        }
        return out
    }

    static func parse(_ raw: Data) throws(ContainariumError) -> Response {
        let separator = Data("\r\n\r\n".utf8)
        guard let range = raw.range(of: separator) else {
            throw ContainariumError(.unavailable, "Incus closed the connection without a complete answer")
        }
        let head = String(decoding: raw[raw.startIndex..<range.lowerBound], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else {
            throw ContainariumError(.internal, "Incus sent a malformed status line")
        }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(raw[range.upperBound...])
        if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            body = try dechunk(body)
        } else if let len = headers["content-length"].flatMap(Int.init), len <= body.count {
            body = body.prefix(len)
        }
        return Response(status: status, headers: headers, body: body)
    }

    static func dechunk(_ data: Data) throws(ContainariumError) -> Data {
        var out = Data()
        var i = data.startIndex
        let crlf = Data("\r\n".utf8)
        while i < data.endIndex {
            guard let lineEnd = data.range(of: crlf, in: i..<data.endIndex) else { break }
            let sizeText = String(decoding: data[i..<lineEnd.lowerBound], as: UTF8.self)
                .split(separator: ";").first.map(String.init) ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                throw ContainariumError(.internal, "Incus sent a malformed chunked body")
            }
            if size == 0 { break }
            let start = lineEnd.upperBound
            guard data.endIndex - start >= size else { throw ContainariumError(.internal, "Incus sent a truncated chunk") }
            out.append(data[start..<start + size])
            i = start + size + 2
        }
        return out
    }
}
