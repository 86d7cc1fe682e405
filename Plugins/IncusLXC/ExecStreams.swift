import ContainariumCore
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One of an Incus operation's WebSockets (`/1.0/operations/ID/websocket?secret=...`), as a
/// client: what it sends is masked; what it receives is read as far as it arrives, so a
/// caller can stop reading (and stop the command) the moment it has had enough.
final class IncusWebSocket {
    let fd: Int32
    private var buffer = Data()
    private var message = Data()
    private(set) var ended = false

    init(http: UnixHTTPClient, path: String, timeout: Double = 10) throws(ContainariumError) {
        fd = try http.connect(timeout: timeout)
        var nonce = [UInt8](repeating: 0, count: 16)
        for i in nonce.indices { nonce[i] = UInt8.random(in: 0...255) }
        let head = "GET \(path) HTTP/1.1\r\nHost: incus\r\nUser-Agent: containarium\r\nUpgrade: websocket\r\n"
            + "Connection: Upgrade\r\nSec-WebSocket-Key: \(Data(nonce).base64EncodedString())\r\nSec-WebSocket-Version: 13\r\n\r\n"
        // On a throw from here on, deinit closes fd.
        try UnixHTTPClient.writeAll(fd, Data(head.utf8))
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let end = buffer.range(of: Data("\r\n\r\n".utf8)) {
                let status = String(decoding: buffer[buffer.startIndex..<end.lowerBound], as: UTF8.self).split(separator: " ").dropFirst().first
                guard status == "101" else { throw ContainariumError(.unavailable, "Incus refused the exec stream (HTTP \(status ?? "?"))") }
                buffer = Data(buffer[end.upperBound...])
                break
            }
            guard try receive() else { throw ContainariumError(.unavailable, "Incus closed the exec stream during the handshake") }
            guard Date() < deadline else { throw ContainariumError(.timeout, "Incus did not open the exec stream within \(Int(timeout)) s") }
        }
    }

    deinit { close(fd) }

    /// Read once (blocking up to the socket timeout) and append the payload of every complete
    /// data frame to `output`. False once the stream has ended (a close frame or end of file).
    func pump(into output: inout Data) throws(ContainariumError) -> Bool {
        guard !ended else { return false }
        if !(try receive()) { ended = true }
        while let frame = UnixHTTPClient.frame(in: buffer) {
            buffer = Data(buffer.dropFirst(frame.consumed))
            switch frame.opcode {
            case 0x0, 0x1, 0x2:
                message.append(frame.payload)
                if frame.fin {
                    output.append(message)
                    message = Data()
                }
            case 0x8:
                ended = true
            case 0x9:
                try? send(opcode: 0xA, frame.payload.prefix(125))  // a peer that is gone needs no answer
            default:
                break
            }
        }
        return !ended
    }

    /// Send one masked frame.
    func send(opcode: UInt8, _ payload: Data) throws(ContainariumError) {
        var frame = Data([0x80 | opcode])
        let n = payload.count
        if n < 126 {
            frame.append(0x80 | UInt8(n))
        } else if n <= 0xFFFF {
            frame.append(0x80 | 126)
            frame.append(contentsOf: [UInt8(n >> 8), UInt8(n & 0xFF)])
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8((UInt64(n) >> UInt64(shift)) & 0xFF)) }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame.append(contentsOf: mask)
        frame.append(contentsOf: payload.enumerated().map { $0.element ^ mask[$0.offset % 4] })
        try UnixHTTPClient.writeAll(fd, frame)
    }

    /// A close frame: end of input on a stdin stream, or "done" on any other.
    func sendClose() { try? send(opcode: 0x8, Data([0x03, 0xE8])) }

    /// Close the connection both ways now (Incus stops writing to it at once).
    func hangUp() {
        ended = true
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    /// False at end of file. A read that times out is not an error (nothing arrived yet).
    private func receive() throws(ContainariumError) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return false }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return true }
                // A unix socket reports a reset only once everything sent before it was read:
                // Incus closed its end without reading ours (our close frame). Nothing is lost.
                if errno == ECONNRESET { return false }
                throw ContainariumError(.unavailable, "reading an exec stream from Incus failed", cause: String(cString: strerror(errno)))
            }
            buffer.append(contentsOf: chunk[0..<n])
            return true
        }
    }
}

/// Which of `sockets` have something to read (or have ended), waiting at most `milliseconds`.
func readable(_ sockets: [IncusWebSocket], milliseconds: Int32) -> [IncusWebSocket] {
    var fds = sockets.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
    let n = poll(&fds, nfds_t(fds.count), milliseconds)
    guard n > 0 else { return [] }
    return zip(sockets, fds).filter { $0.1.revents != 0 }.map(\.0)
}
