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
        try writeAll(fd, payload)
        let raw = try readAll(fd)
        return try Self.parse(raw)
    }

    private func connect(timeout: Double) throws(ContainariumError) -> Int32 {
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

    private func writeAll(_ fd: Int32, _ data: Data) throws(ContainariumError) {
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
