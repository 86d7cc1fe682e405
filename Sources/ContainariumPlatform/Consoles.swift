public import ContainariumCore
import ContainariumService
import ContainariumStore
import Foundation
import NIOCore
import Synchronization

/// VM consoles wherever the VM runs. On the VM's own node the console is the descriptor the
/// backend hands over through console/1; on a control plane it is the owning node's console,
/// relayed over the node's gRPC API (OpenConsole, a bidirectional stream).
extension ControlPlane {
    public static let consoleKinds = ["serial", "vnc"]

    /// Opens `kind` (serial or vnc) of `username`'s VM, for the dashboard (terminal and VNC
    /// WebSockets), the CLI in remote mode, and other control planes. Audited as
    /// `console.open`; the adapter audits the end with `consoleClosed`.
    public func openConsoleStream(_ caller: Caller, _ username: String, kind: String) async throws(ContainariumError) -> any TerminalStream {
        try await audited(caller, "console.open", username, detail: kind) { () async throws(ContainariumError) -> any TerminalStream in
            let user = try await authorize(caller, username, .act)
            return try await consoleStream(user, kind: kind)
        }
    }

    public func consoleClosed(_ caller: Caller, _ username: String, kind: String, seconds: Double) async {
        await audit(caller, "console.close", target: username, result: .success(()),
                    detail: "\(kind) after \(String(format: "%.1f", seconds)) s")
    }

    /// The console of an environment the caller is already authorized for.
    func consoleStream(_ user: Username, kind: String) async throws(ContainariumError) -> any TerminalStream {
        guard Self.consoleKinds.contains(kind) else { throw .invalid("a console is serial or vnc, not \(kind)") }
        if let remote = try await remoteNode(of: user) {
            guard let cluster else { throw .internal("no cluster") }
            return try await RemoteConsoleStream.open(try cluster.client(for: remote), username: user.value, kind: kind)
        }
        guard try await store.container(user.value) != nil || inventory.get(user.containerName) != nil else {
            throw .notFound("no environment for \(user.value)")
        }
        let (_, fd) = try await service.openConsole(username: user.value, kind: kind)
        return try await ConsoleStream(fd: fd)
    }

    /// Whether `user`'s environment is a VM (its terminal is then its serial console).
    func isVM(_ user: Username) async throws(ContainariumError) -> Bool {
        if let remote = try await remoteNode(of: user) {
            return try await member(remote).view(user).type == "vm"
        }
        return inventory.get(user.containerName)?.type == "vm"
    }
}

/// A console on another node, through its OpenConsole stream. Both ways, at most a bounded
/// amount waits in between: output is read from the node only as fast as the relay hands it
/// on, and input is taken from the relay only as fast as the node accepts it. `close` ends the
/// call, which closes the console on the node.
final class RemoteConsoleStream: TerminalStream {
    let output: AsyncStream<ByteBuffer>
    private let input: AsyncStream<[UInt8]>.Continuation
    private let call: Task<Void, Never>
    private let outBudget: ByteBudget
    private let inBudget: ByteBudget

    private init(output: AsyncStream<ByteBuffer>, input: AsyncStream<[UInt8]>.Continuation, call: Task<Void, Never>, outBudget: ByteBudget, inBudget: ByteBudget) {
        self.output = output
        self.input = input
        self.call = call
        self.outBudget = outBudget
        self.inBudget = inBudget
    }

    /// The next queued chunk for the node, released from the input budget when taken.
    final class Pull: @unchecked Sendable {
        var iterator: AsyncStream<[UInt8]>.Iterator
        init(_ stream: AsyncStream<[UInt8]>) { iterator = stream.makeAsyncIterator() }
    }

    /// Returns once the node has opened the console, or throws what the node said.
    static func open(_ client: any NodeConnection, username: String, kind: String) async throws(ContainariumError) -> RemoteConsoleStream {
        let outBudget = ByteBudget(), inBudget = ByteBudget(limit: 1 << 20)
        let (output, out) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .unbounded)
        let (queue, inbound) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .unbounded)
        let pull = Pull(queue)
        // AsyncStream(unfolding:) is asked for one element at a time, when the call is ready to send it.
        let input = AsyncStream<[UInt8]> {
            let next = await pull.iterator.next()
            if let next { inBudget.release(next.count) }
            return next
        }
        let (opened, openedContinuation) = AsyncStream<ContainariumError?>.makeStream(bufferingPolicy: .bufferingOldest(1))
        let call = Task {
            do throws(ContainariumError) {
                try await client.console(username: username, kind: kind, input: input,
                                         opened: { openedContinuation.yield(nil) },
                                         output: { bytes in
                                             await outBudget.waitForRoom()
                                             _ = outBudget.add(bytes.count)
                                             out.yield(ByteBuffer(bytes: bytes))
                                         },
                                         ended: {
                                             inbound.finish()
                                             inBudget.cancel()  // nothing will take input any more: no writer waits
                                         })
            } catch {
                openedContinuation.yield(error)
            }
            openedContinuation.finish()
            out.finish()
        }
        for await result in opened {
            if let error = result {
                call.cancel()
                throw error
            }
            return RemoteConsoleStream(output: output, input: inbound, call: call, outBudget: outBudget, inBudget: inBudget)
        }
        call.cancel()  // the caller went away (or the node hung up) before the console opened
        throw ContainariumError(.unavailable, "the node closed the console before opening it")
    }

    func consumed(_ bytes: Int) { outBudget.release(bytes) }
    func write(_ bytes: ByteBuffer) async throws {
        await inBudget.waitForRoom()
        _ = inBudget.add(bytes.readableBytes)
        input.yield(Array(bytes.readableBytesView))
    }
    func resize(cols: Int, rows: Int) {}  // serial lines and VNC have no window size to send
    func close() {
        outBudget.cancel()
        inBudget.cancel()
        input.finish()
        call.cancel()
    }
    var exitStatus: Int? { nil }
    var exitSignal: String? { nil }
}
