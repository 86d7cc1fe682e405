import ContainariumCore
import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A QEMU Machine Protocol client over the VM's unix socket: greeting, capabilities
/// negotiation, then one command at a time. Asynchronous events that arrive between replies are
/// collected, not mistaken for replies. Every read has a deadline.
final class QMP {
    private let fd: Int32
    private var buffer = [UInt8]()
    private(set) var events: [JSONValue] = []

    /// Connect and negotiate; fails when the socket does not answer within `timeout` seconds.
    init(socket path: String, timeout: Double = 5) throws(ContainariumError) {
        fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw .internal("socket() failed: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw .invalid("QMP socket path is too long: \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw ContainariumError(.unavailable, "QMP socket \(path): \(why)")
        }
        // struct timeval on x86_64/arm64 Linux: two longs (seconds, microseconds).
        var tv: [Int] = [Int(timeout), Int((timeout - Double(Int(timeout))) * 1_000_000)]
        let size = socklen_t(MemoryLayout<Int>.size * 2)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, size)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, size)
        do throws(ContainariumError) {
            let greeting = try readMessage()
            guard greeting["QMP"] != nil else { throw ContainariumError(.internal, "not a QMP greeting") }
            _ = try execute("qmp_capabilities")
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Run a command; returns its "return" value, or throws its error.
    @discardableResult
    func execute(_ command: String, _ arguments: [String: JSONValue] = [:]) throws(ContainariumError) -> JSONValue {
        var message: [String: JSONValue] = ["execute": .string(command)]
        if !arguments.isEmpty { message["arguments"] = .object(arguments) }
        var data = try WireJSON.encode(JSONValue.object(message))
        data.append(0x0A)
        let sent = data.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == data.count else { throw ContainariumError(.unavailable, "QMP: the VM's monitor went away") }
        while true {
            let reply = try readMessage()
            if let value = reply["return"] { return value }
            if let error = reply["error"] {
                throw ContainariumError(.internal, "QMP \(command): \(error["desc"]?.stringValue ?? "error")")
            }
            events.append(reply)
        }
    }

    /// The next event, waiting up to the socket's timeout; nil when the monitor closed.
    func nextEvent() throws(ContainariumError) -> JSONValue? {
        if !events.isEmpty { return events.removeFirst() }
        do {
            return try readMessage()
        } catch where error.code == .unavailable && error.message.contains("closed") {
            return nil
        }
    }

    private func readMessage() throws(ContainariumError) -> JSONValue {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = Data(buffer[..<nl])
                buffer.removeSubrange(...nl)
                if line.isEmpty { continue }
                return try WireJSON.decode(JSONValue.self, from: line)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { throw ContainariumError(.unavailable, "QMP: the monitor closed") }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { throw ContainariumError(.timeout, "QMP: no answer in time") }
                throw ContainariumError(.unavailable, "QMP: \(String(cString: strerror(errno)))")
            }
            buffer.append(contentsOf: chunk[..<n])
        }
    }
}
