import ContainariumCore
import Foundation
import ScannerKit

#if canImport(Glibc)
import Glibc
#endif

/// A client of clamd's unix socket (clamd(8), "COMMANDS"): NUL-terminated `z` commands, one
/// session per connection (`zIDSESSION` … `zEND`), one command in flight at a time, files
/// passed as descriptors with `zFILDES` (SCM_RIGHTS), so clamd reads exactly the file this
/// plugin opened, whatever user clamd runs as and whatever happens to the path meanwhile.
final class ClamdConnection {
    /// What clamd said about one file.
    enum Verdict: Equatable {
        case clean
        case found(String)
        case error(String)
    }

    let socketPath: String
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var lastID = 0
    private var inSession = false

    /// Replies longer than this are not clamd's (a reply is one line).
    private static let maxReply = 64 * 1024

    /// Connect; fails with `unavailable` (and the reason) when nothing answers at `path`.
    init(socket path: String) throws(ContainariumError) {
        socketPath = path
        fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .internal("socket() failed: \(errorText(errno))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            Glibc.close(fd)
            throw .invalid("clamd socket path is too long: \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let why = errorText(errno)
            Glibc.close(fd)
            throw ContainariumError(.unavailable, "no clamd answers at \(path): \(why)")
        }
        // struct timeval (two longs): a send that cannot go out within 30 s is a dead clamd.
        var tv: [Int] = [30, 0]
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<Int>.size * 2))
    }

    deinit { Glibc.close(fd) }

    /// `zVERSION` outside a session: "ClamAV 1.4.6/27000/Mon Jan  1 08:00:00 2026".
    func version(control: ScanControl) throws(ContainariumError) -> String {
        try send("zVERSION")
        return try readReply(control: control)
    }

    /// Start a session (`zIDSESSION`): later commands on this connection are numbered.
    func startSession() throws(ContainariumError) {
        try send("zIDSESSION")
        inSession = true
    }

    /// End the session politely (`zEND`); clamd closes the connection.
    func end() {
        if inSession { try? send("zEND") }
        inSession = false
    }

    /// Scan the open file `file` (`zFILDES`): the descriptor is duplicated into clamd, ours stays open.
    func scan(descriptor file: Int32, control: ScanControl) throws(ContainariumError) -> Verdict {
        try send("zFILDES")
        try sendDescriptor(file)
        let reply = try readReply(control: control)
        return try Self.verdict(of: reply)
    }

    /// Strip the session's "N: " and the "fd[M]: " prefix; "OK", "NAME FOUND" or "… ERROR".
    static func verdict(of reply: String) throws(ContainariumError) -> Verdict {
        var body = Substring(reply)
        if let open = body.range(of: "fd["), let close = body[open.upperBound...].range(of: "]: ") {
            body = body[close.upperBound...]
        } else {
            // A command-level answer ("UNKNOWN COMMAND", "COMMAND READ TIMED OUT", a protocol error).
            throw ContainariumError(.internal, "unexpected answer from clamd: \(reply.prefix(300))")
        }
        if body == "OK" { return .clean }
        if body.hasSuffix(" FOUND") { return .found(String(body.dropLast(" FOUND".count))) }
        if body.hasSuffix(" ERROR") { return .error(String(body.dropLast(" ERROR".count))) }
        throw ContainariumError(.internal, "unexpected answer from clamd: \(reply.prefix(300))")
    }

    private func send(_ command: String) throws(ContainariumError) {
        var bytes = Array(command.utf8)
        bytes.append(0)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ContainariumError(.unavailable, "clamd at \(socketPath) stopped taking commands: \(errorText(errno))") }
            sent += n
        }
        if inSession { lastID += 1 }
    }

    /// One byte of payload carrying `file` as SCM_RIGHTS ancillary data, as clamdscan --fdpass does.
    private func sendDescriptor(_ file: Int32) throws(ContainariumError) {
        // CMSG_LEN/CMSG_SPACE by hand: the header padded to size_t alignment, then one int.
        let align = MemoryLayout<Int>.size
        let header = (MemoryLayout<cmsghdr>.size + align - 1) / align * align
        let length = header + MemoryLayout<Int32>.size
        let space = header + (MemoryLayout<Int32>.size + align - 1) / align * align
        let control = UnsafeMutableRawPointer.allocate(byteCount: space, alignment: MemoryLayout<cmsghdr>.alignment)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0, count: space)
        let cmsg = control.bindMemory(to: cmsghdr.self, capacity: 1)
        cmsg.pointee.cmsg_len = length
        cmsg.pointee.cmsg_level = SOL_SOCKET
        cmsg.pointee.cmsg_type = Int32(SCM_RIGHTS)
        (control + header).storeBytes(of: file, as: Int32.self)
        var payload: UInt8 = 0
        let n: Int = withUnsafeMutablePointer(to: &payload) { p in
            var iov = iovec(iov_base: UnsafeMutableRawPointer(p), iov_len: 1)
            return withUnsafeMutablePointer(to: &iov) { iovp in
                var msg = msghdr()
                msg.msg_iov = iovp
                msg.msg_iovlen = 1
                msg.msg_control = control
                msg.msg_controllen = space
                var r: Int
                repeat { r = sendmsg(fd, &msg, Int32(MSG_NOSIGNAL)) } while r < 0 && errno == EINTR
                return r
            }
        }
        guard n == 1 else { throw ContainariumError(.unavailable, "clamd at \(socketPath) did not take the file descriptor: \(errorText(errno))") }
    }

    /// The next NUL-terminated reply, waiting in short slices so cancellation and the deadline
    /// are seen while clamd works on a large file. In a session the "N: " prefix is checked
    /// and removed.
    private func readReply(control: ScanControl) throws(ContainariumError) -> String {
        while true {
            if let nul = buffer.firstIndex(of: 0) {
                let line = String(decoding: buffer[..<nul], as: UTF8.self)
                buffer.removeSubrange(...nul)
                guard inSession else { return line }
                let prefix = "\(lastID): "
                guard line.hasPrefix(prefix) else {
                    throw ContainariumError(.internal, "clamd answered out of turn (expected reply \(lastID)): \(line.prefix(300))")
                }
                return String(line.dropFirst(prefix.count))
            }
            try control.check()
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 200)
            if ready < 0 {
                if errno == EINTR { continue }
                throw ContainariumError(.unavailable, "clamd at \(socketPath): \(errorText(errno))")
            }
            if ready == 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { throw ContainariumError(.unavailable, "clamd at \(socketPath) closed the connection") }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw ContainariumError(.unavailable, "clamd at \(socketPath): \(errorText(errno))")
            }
            buffer.append(contentsOf: chunk[..<n])
            if buffer.count > Self.maxReply { throw ContainariumError(.internal, "clamd at \(socketPath) sent a reply longer than \(Self.maxReply) bytes") }
        }
    }
}
