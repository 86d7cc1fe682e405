import ArgumentParser
import ContainariumCore
import ContainariumService
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `containarium console NAME`: the serial console of a VM on this node (console/1), on this
/// terminal. Ctrl-] leaves it.
struct Console: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Attach this terminal to a VM's serial console (Ctrl-] leaves).")

    @Argument var username: String
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let service = try global.service()
        let (_, fd) = try await ContainariumCLI.audited("container.console", username, detail: "serial") { () async throws(ContainariumError) in
            try await service.openConsole(username: username, kind: "serial")
        }
        defer { close(fd) }
        FileHandle.standardError.write(Data("Connected to \(username)'s serial console; Ctrl-] leaves.\r\n".utf8))
        // Raw mode while attached, restored on the way out.
        let tty = isatty(0) == 1
        let saved = UnsafeMutablePointer<termios>.allocate(capacity: 2)
        defer { saved.deallocate() }
        if tty {
            tcgetattr(0, saved)
            (saved + 1).initialize(from: saved, count: 1)
            cfmakeraw(saved + 1)
            tcsetattr(0, TCSANOW, saved + 1)
        }
        defer { if tty { tcsetattr(0, TCSANOW, saved) } }
        var fds = [pollfd(fd: 0, events: Int16(POLLIN), revents: 0), pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        var buffer = [UInt8](repeating: 0, count: 4096)
        loop: while true {
            guard poll(&fds, 2, -1) > 0 else { if errno == EINTR { continue } else { break } }
            if fds[1].revents != 0 {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                _ = buffer.withUnsafeBytes { write(1, $0.baseAddress, n) }
            }
            if fds[0].revents != 0 {
                let n = read(0, &buffer, buffer.count)
                if n <= 0 { break }
                if let i = buffer[..<n].firstIndex(of: 0x1d) {  // Ctrl-]
                    if i > 0 { _ = buffer.withUnsafeBytes { write(fd, $0.baseAddress, i) } }
                    break loop
                }
                _ = buffer.withUnsafeBytes { write(fd, $0.baseAddress, n) }
            }
        }
        FileHandle.standardError.write(Data("\r\nLeft the console.\r\n".utf8))
    }
}
