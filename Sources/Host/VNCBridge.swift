import ContainariumCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `containarium console NAME --vnc-listen 127.0.0.1:PORT`: a VM's screen for a native VNC
/// viewer. Each viewer that connects gets its own console/1 VNC connection (on this node, or
/// through a daemon's OpenConsole stream in remote mode). Loopback only: the VM's VNC server
/// asks for no password, so reaching it from elsewhere goes through `ssh -L`.
enum VNCBridge {
    /// A listening loopback socket for `spec` (HOST:PORT; port 0 picks one): its descriptor and port.
    static func listen(_ spec: String) throws(ContainariumError) -> (fd: Int32, port: Int) {
        let parts = spec.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let port = Int(parts[1]), (0...65535).contains(port) else {
            throw .invalid("--vnc-listen must be HOST:PORT, e.g. 127.0.0.1:5901")
        }
        guard ["127.0.0.1", "localhost"].contains(String(parts[0])) else {
            throw .invalid("--vnc-listen takes a loopback address (127.0.0.1 or localhost): the VM's VNC server asks for no password; reach it from elsewhere with ssh -L")
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ContainariumError(.internal, "socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        // A sockaddr_in written as bytes (family at 0, port at 2, address at 4): its members can
        // resolve to another C module's copy of <netinet/in.h> than this file imports.
        var addr = sockaddr_storage()
        withUnsafeMutableBytes(of: &addr) { raw in
            raw.storeBytes(of: sa_family_t(AF_INET), toByteOffset: 0, as: sa_family_t.self)
            raw.storeBytes(of: UInt16(port).bigEndian, toByteOffset: 2, as: UInt16.self)
            raw.storeBytes(of: inet_addr("127.0.0.1"), toByteOffset: 4, as: in_addr_t.self)
        }
        var size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) } }
        guard bound == 0, Glibc.listen(fd, 8) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ContainariumError(.unavailable, "cannot listen on 127.0.0.1:\(port): \(reason)")
        }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &size) } }
        return (fd, Int(UInt16(bigEndian: withUnsafeBytes(of: &addr) { $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self) })))
    }

    /// The next viewer's connection (blocking), or nil when the socket is gone.
    static func accept(_ listener: Int32) -> Int32? {
        while true {
            let c = Glibc.accept(listener, nil, nil)
            if c >= 0 {
                _ = fcntl(c, F_SETFD, FD_CLOEXEC)
                return c
            }
            if errno == EINTR || errno == ECONNABORTED { continue }
            return nil
        }
    }

    /// Copies bytes both ways between two descriptors until either side ends; closes both.
    static func splice(_ a: Int32, _ b: Int32) {
        defer {
            close(a)
            close(b)
        }
        var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            guard poll(&fds, 2, -1) > 0 else { if errno == EINTR { continue } else { return } }
            for (from, to) in [(0, 1), (1, 0)] where fds[from].revents != 0 {
                let n = read(fds[from].fd, &buffer, buffer.count)
                if n <= 0 || !writeAll(fds[to].fd, buffer, n) { return }
            }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ count: Int) -> Bool {
        var offset = 0
        while offset < count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress.map { $0 + offset }, count - offset) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }
}
