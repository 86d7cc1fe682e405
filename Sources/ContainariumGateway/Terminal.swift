public import ContainariumCore
import Foundation
public import NIOCore
import NIOPosix
import NIOSSH
import Synchronization

/// A login shell on a pseudo-terminal inside an environment, for the browser terminal. It is
/// the gateway's own upstream login (the same key, host-key pinning, enrollment and node hops
/// as SSH sessions), as the route's account, with `pty-req` and `shell` on one session channel.
public final class TerminalSession: Sendable {
    /// What the shell writes (stdout and stderr together, as a terminal shows them). Ends when
    /// the session does.
    public let output: AsyncStream<ByteBuffer>
    let channel: any Channel
    let parent: any Channel
    let exit: ExitBox
    /// Output waiting for a stalled reader: past its limit the channel stops reading, so SSH
    /// flow control holds the shell back.
    let budget: ByteBudget

    init(output: AsyncStream<ByteBuffer>, channel: any Channel, parent: any Channel, exit: ExitBox, budget: ByteBudget) {
        self.output = output
        self.channel = channel
        self.parent = parent
        self.exit = exit
        self.budget = budget
        budget.onResume { channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in } }
    }

    /// The reader handed `bytes` of output on.
    public func consumed(_ bytes: Int) { budget.release(bytes) }

    /// The shell's exit status or signal, once it ended.
    public var exitStatus: Int? { exit.state.withLock { $0.status } }
    public var exitSignal: String? { exit.state.withLock { $0.signal } }

    /// Keystrokes (and pastes) for the shell.
    public func write(_ bytes: ByteBuffer) async throws {
        try await channel.writeAndFlush(SSHChannelData(type: .channel, data: .byteBuffer(bytes)))
    }

    /// The browser's terminal changed size: the remote PTY follows (SIGWINCH inside).
    public func resize(cols: Int, rows: Int) {
        let event = SSHChannelRequestEvent.WindowChangeRequest(terminalCharacterWidth: cols, terminalRowHeight: rows, terminalPixelWidth: 0, terminalPixelHeight: 0)
        channel.triggerUserOutboundEvent(event, promise: nil)
    }

    /// Hang up: the session channel and the upstream connection close.
    public func close() {
        budget.cancel()
        channel.close(promise: nil)
        parent.close(promise: nil)
    }
}

extension SSHGateway {
    /// Open a terminal for `route` with a `cols` x `rows` PTY.
    public func openTerminal(route: GatewayRoute, cols: Int, rows: Int) async throws(ContainariumError) -> TerminalSession {
        guard (1...1000).contains(cols), (1...1000).contains(rows) else { throw .invalid("terminal size \(cols)x\(rows) is out of range") }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let parent: any Channel
        do {
            parent = try await Upstream.connectEnrolling(route: route, loop: loop, gateway: self)
        } catch {
            throw ContainariumError(.unavailable, "cannot reach \(route.containerName)'s sshd", cause: "\(error)")
        }
        let (output, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .unbounded)
        let ready = loop.makePromise(of: Void.self)
        let exit = ExitBox()
        let budget = ByteBudget()
        do {
            let child = try await loop.flatSubmit { () -> EventLoopFuture<any Channel> in
                let handler = TerminalHandler(cols: cols, rows: rows, output: continuation, ready: ready, exit: exit, budget: budget)
                let bound = NIOLoopBound(handler, eventLoop: loop)
                let promise = loop.makePromise(of: (any Channel).self)
                do {
                    let ssh = try parent.pipeline.syncOperations.handler(type: NIOSSHHandler.self)
                    ssh.createChannel(promise, channelType: .session) { channel, _ in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(bound.value) }
                    }
                } catch {
                    promise.fail(error)
                }
                return promise.futureResult
            }.get()
            try await ready.futureResult.get()
            return TerminalSession(output: output, channel: child, parent: parent, exit: exit, budget: budget)
        } catch {
            parent.close(promise: nil)
            continuation.finish()
            throw ContainariumError(.unavailable, "\(route.containerName) refused a terminal", cause: "\(error)")
        }
    }
}

/// How a shell ended.
final class ExitBox: Sendable {
    let state = Mutex<(status: Int?, signal: String?)>((nil, nil))
}

/// The session channel's handler: asks for a PTY and a shell, then moves bytes.
final class TerminalHandler: ChannelDuplexHandler {
    typealias InboundIn = SSHChannelData
    typealias OutboundIn = SSHChannelData
    typealias OutboundOut = SSHChannelData

    let cols: Int
    let rows: Int
    let output: AsyncStream<ByteBuffer>.Continuation
    let ready: EventLoopPromise<Void>
    let exit: ExitBox
    let budget: ByteBudget
    var replies = 0
    var settled = false

    init(cols: Int, rows: Int, output: AsyncStream<ByteBuffer>.Continuation, ready: EventLoopPromise<Void>, exit: ExitBox, budget: ByteBudget) {
        self.exit = exit
        self.budget = budget
        self.cols = cols
        self.rows = rows
        self.output = output
        self.ready = ready
    }

    func channelActive(context: ChannelHandlerContext) {
        let pty = SSHChannelRequestEvent.PseudoTerminalRequest(
            wantReply: true, term: "xterm-256color", terminalCharacterWidth: cols, terminalRowHeight: rows,
            terminalPixelWidth: 0, terminalPixelHeight: 0, terminalModes: SSHTerminalModes([:]))
        context.triggerUserOutboundEvent(pty, promise: nil)
        context.triggerUserOutboundEvent(SSHChannelRequestEvent.ShellRequest(wantReply: true), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = unwrapInboundIn(data)
        if case .byteBuffer(let bytes) = message.data {
            if budget.add(bytes.readableBytes) { context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
            output.yield(bytes)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelSuccessEvent:
            replies += 1
            if replies == 2, !settled {
                settled = true
                ready.succeed(())
            }
        case is ChannelFailureEvent:
            if !settled {
                settled = true
                ready.fail(GatewayError.upstream("the environment's sshd refused the PTY or the shell"))
            }
        case let e as SSHChannelRequestEvent.ExitStatus:
            exit.state.withLock { $0.status = e.exitStatus }
        case let e as SSHChannelRequestEvent.ExitSignal:
            exit.state.withLock { $0.signal = e.signalName }
        case ChannelEvent.inputClosed:
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !settled {
            settled = true
            ready.fail(error)
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !settled {
            settled = true
            ready.fail(GatewayError.upstream("the session closed before the shell started"))
        }
        output.finish()
        context.fireChannelInactive()
    }
}
