import ArgumentParser
import ContainariumClient
import ContainariumCore
import ContainariumDaemon
import ContainariumService
import ContainariumProto
import Foundation
import SwiftProtobuf

#if canImport(Glibc)
import Glibc
#endif

/// `containarium console NAME`: the serial console of a VM on this node (console/1), or with
/// --server of a VM on any node of the cluster, on this terminal. Ctrl-] leaves it. With
/// --vnc-listen, the VM's screen for VNC viewers instead (VNCBridge).
struct Console: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attach this terminal to a VM's serial console (Ctrl-] leaves), or serve its screen to VNC viewers (--vnc-listen).")

    @Argument var username: String
    @Option(name: .customLong("vnc-listen"), help: ArgumentHelp(
        "Instead of the serial console, serve the VM's screen (VNC) on this loopback HOST:PORT for a VNC viewer (port 0 picks one; runs until interrupted).",
        valueName: "host:port"))
    var vncListen: String?
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let vncListen { return try await runVNCBridge(vncListen, client: try remote.daemon(global)) }
        if let client = try remote.daemon(global) { return try await runRemote(client) }
        let service = try global.service()
        let (_, fd) = try await ContainariumCLI.run { () async throws(ContainariumError) in
            try await service.openConsole(username: username, kind: "serial")
        }
        defer { close(fd) }
        FileHandle.standardError.write(Data("Connected to \(username)'s serial console; Ctrl-] leaves.\r\n".utf8))
        let terminal = RawTerminal()
        defer { terminal.restore() }
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

    /// Remote mode: the console of a VM on any node, through a daemon's OpenConsole stream
    /// (a control plane relays it from the VM's node).
    func runRemote(_ client: ContainariumEndpoint) async throws {
        let (input, feed) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .unbounded)
        let name = username
        let terminal = RawTerminal(deferred: true)
        // Standard input on a thread of its own: a blocking read must not hold a task.
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(0, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                if let i = buffer[..<n].firstIndex(of: 0x1d) {  // Ctrl-]
                    if i > 0 { feed.yield(Array(buffer[..<i])) }
                    break
                }
                feed.yield(Array(buffer[..<n]))
            }
            feed.finish()
        }
        do {
            try await client.console(username: name, kind: .serial, input: input, opened: {
                FileHandle.standardError.write(Data("Connected to \(name)'s serial console; Ctrl-] leaves.\r\n".utf8))
                terminal.enter()
            }, output: { bytes in _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, bytes.count) } },
               ended: { feed.finish() })
        } catch {
            terminal.restore()
            throw fail(error)
        }
        terminal.restore()
        FileHandle.standardError.write(Data("\r\nLeft the console.\r\n".utf8))
    }
}

extension Console {
    /// The VM's screen for VNC viewers on a loopback port: each viewer gets its own VNC
    /// connection, from console/1 here or through the daemon's OpenConsole in remote mode.
    func runVNCBridge(_ spec: String, client: ContainariumEndpoint?) async throws {
        let listener: Int32, port: Int
        do { (listener, port) = try VNCBridge.listen(spec) } catch { throw fail(error) }
        let service = client == nil ? try global.service() : nil
        FileHandle.standardOutput.write(Data("127.0.0.1:\(port)\n".utf8))
        FileHandle.standardError.write(Data("The screen of \(username)-container is on 127.0.0.1:\(port): point a VNC viewer there. Ctrl-C stops.\n".utf8))
        // accept() blocks: a thread of its own hands each viewer over.
        let (viewers, arrivals) = AsyncStream<Int32>.makeStream(bufferingPolicy: .unbounded)
        Thread.detachNewThread {
            while let viewer = VNCBridge.accept(listener) { arrivals.yield(viewer) }
            arrivals.finish()
        }
        let name = username
        await withTaskGroup(of: Void.self) { group in
            for await viewer in viewers {
                group.addTask {
                    if let client { await Self.serveRemote(viewer, name, client) } else if let service { await Self.serveLocal(viewer, name, service) }
                }
            }
        }
    }

    static func serveLocal(_ viewer: Int32, _ username: String, _ service: EnvironmentService) async {
        do {
            let (_, fd) = try await ContainariumCLI.run { () async throws(ContainariumError) in
                try await service.openConsole(username: username, kind: "vnc")
            }
            Thread.detachNewThread { VNCBridge.splice(viewer, fd) }
        } catch {
            close(viewer)  // the error was printed by run
        }
    }

    static func serveRemote(_ viewer: Int32, _ username: String, _ client: ContainariumEndpoint) async {
        let (input, feed) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .unbounded)
        // The viewer's bytes on a thread that owns its descriptor and closes it at the end.
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(viewer, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                feed.yield(Array(buffer[..<n]))
            }
            feed.finish()
            close(viewer)
        }
        do {
            try await client.console(username: username, kind: .vnc, input: input, opened: {},
                                     output: { bytes in _ = VNCBridge.writeAll(viewer, bytes, bytes.count) },
                                     ended: { feed.finish() })
        } catch {
            FileHandle.standardError.write(Data("Error: \(error.description)\n".utf8))
        }
        shutdown(viewer, Int32(SHUT_RDWR))  // wakes the reader, which closes it
    }
}

/// Standard input in raw mode while attached (when it is a terminal), restored on the way out.
final class RawTerminal: @unchecked Sendable {
    private let saved = UnsafeMutablePointer<termios>.allocate(capacity: 1)
    private let lock = NSLock()
    private var raw = false

    init(deferred: Bool = false) {
        if !deferred { enter() }
    }

    func enter() {
        lock.lock()
        defer { lock.unlock() }
        guard !raw, isatty(0) == 1, tcgetattr(0, saved) == 0 else { return }
        let mode = UnsafeMutablePointer<termios>.allocate(capacity: 1)
        defer { mode.deallocate() }
        mode.initialize(from: saved, count: 1)
        cfmakeraw(mode)
        tcsetattr(0, TCSANOW, mode)
        raw = true
    }

    func restore() {
        lock.lock()
        defer { lock.unlock() }
        if raw { tcsetattr(0, TCSANOW, saved) }
        raw = false
    }

    deinit { saved.deallocate() }
}
