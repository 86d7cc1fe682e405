public import NIOCore
import NIOSSH

/// One half of a pair that joins two channels on the same event loop: what one reads, the
/// other writes. Flow control is end to end: a half reads only while its partner can write, so
/// a slow reader on one side throttles the SSH window (or TCP) on the other.
///
/// `session` pairs join an SSH session channel from the client to one on the environment's
/// sshd and also carry the session's requests (pty, shell, exec, subsystem, window changes,
/// signals) one way and exit status/signal the other way, with the replies to each.
/// `stream` pairs join byte streams (forwarded TCP) and carry data and half-closes only.
final class Relay: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    enum Side { case client, upstream }

    /// What the session did, for its audit entries.
    final class Observer {
        var onRequest: (String, String) -> Void = { _, _ in }
        var onExit: (String) -> Void = { _ in }
        var onClose: () -> Void = {}
    }

    private let side: Side
    private let session: Bool
    private let observer: Observer?
    private var partner: Relay?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Completes once everything written so far (data, then EOF) has left this channel.
    private var lastWrite: EventLoopFuture<Void>?
    private var eofSent: EventLoopFuture<Void>?
    private var closing = false
    /// Upstream half of a session: sshd's exit status and EOF, held until both are known (or
    /// the channel closes) so they reach the client after all output and in the right order.
    private var heldExit: Any?
    private var sawEOF = false
    private var finished = false

    private init(side: Side, session: Bool, observer: Observer?) {
        self.side = side
        self.session = session
        self.observer = observer
    }

    /// (client half, upstream half).
    static func pair(session: Bool, observer: Observer? = nil) -> (Relay, Relay) {
        let client = Relay(side: .client, session: session, observer: observer)
        let upstream = Relay(side: .upstream, session: session, observer: nil)
        client.partner = upstream
        upstream.partner = client
        return (client, upstream)
    }

    // MARK: called by the partner

    private func partnerWrite(_ data: NIOAny) {
        guard let context, !closing else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(data, promise: promise)
        lastWrite = promise.futureResult
    }

    private func partnerFlush() { context?.flush() }

    private func partnerEOF() {
        guard let context, eofSent == nil else { return }
        context.flush()
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: promise)
        eofSent = promise.futureResult
    }

    /// The end of a session towards the client: the last output, then the exit status (or
    /// signal), then EOF. The client may close the channel as soon as it has seen EOF both
    /// ways, so EOF must never overtake the exit status, and nothing may overtake the output.
    private func partnerFinish(exit: Any?) {
        guard let context, eofSent == nil else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        eofSent = promise.futureResult
        let finish = { [context] in
            if let exit { context.triggerUserOutboundEvent(exit, promise: nil) }
            context.close(mode: .output, promise: promise)
        }
        context.flush()
        if let lastWrite {
            lastWrite.assumeIsolated().whenComplete { _ in finish() }
        } else {
            finish()
        }
    }

    /// Close once what is already queued (output, exit status, EOF) has gone out.
    private func partnerClose() {
        guard let context, !closing else { return }
        closing = true
        if eofSent == nil { partnerEOF() }
        let channel = context.channel
        (eofSent ?? context.eventLoop.makeSucceededVoidFuture()).whenComplete { _ in channel.close(promise: nil) }
    }

    private func partnerTrigger(_ event: Any) {
        context?.triggerUserOutboundEvent(event, promise: nil)
    }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    // MARK: ChannelDuplexHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    /// A child channel is added before it is open (while its peer waits for the confirmation),
    /// and may report itself unwritable until then: let the partner read once it is open.
    func channelActive(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if side == .client { observer?.onClose() }
        if session, side == .upstream, !finished {
            finished = true
            partner?.partnerFinish(exit: heldExit)
        }
        partner?.partnerClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        partner?.partnerClose()
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.partnerWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, case .inputClosed = e {
            if session, side == .upstream {
                sawEOF = true
                if let heldExit, !finished {
                    finished = true
                    partner?.partnerFinish(exit: heldExit)
                }
            } else {
                partner?.partnerEOF()
            }
            return
        }
        guard session else { context.fireUserInboundEventTriggered(event); return }
        switch (side, event) {
        // Replies travel back to whoever asked.
        case (_, is ChannelSuccessEvent), (_, is ChannelFailureEvent):
            partner?.partnerTrigger(event)
        // From the client: what a session may ask of the environment's sshd.
        case (.client, let e as SSHChannelRequestEvent.PseudoTerminalRequest):
            observer?.onRequest("pty", e.term)
            partner?.partnerTrigger(e)
        case (.client, let e as SSHChannelRequestEvent.ShellRequest):
            observer?.onRequest("shell", "")
            partner?.partnerTrigger(e)
        case (.client, let e as SSHChannelRequestEvent.ExecRequest):
            observer?.onRequest("exec", e.command)
            partner?.partnerTrigger(e)
        case (.client, let e as SSHChannelRequestEvent.SubsystemRequest):
            observer?.onRequest("subsystem", e.subsystem)
            partner?.partnerTrigger(e)
        case (.client, is SSHChannelRequestEvent.EnvironmentRequest),
             (.client, is SSHChannelRequestEvent.WindowChangeRequest),
             (.client, is SSHChannelRequestEvent.SignalRequest),
             (_, is SSHChannelRequestEvent.LocalFlowControlRequest):
            partner?.partnerTrigger(event)
        // From the environment: how the command ended, after its last output.
        case (.upstream, let e as SSHChannelRequestEvent.ExitStatus):
            partner?.observer?.onExit("exit status \(e.exitStatus)")
            exited(e)
        case (.upstream, let e as SSHChannelRequestEvent.ExitSignal):
            partner?.observer?.onExit("signal \(e.signalName)")
            exited(e)
        default:
            // Anything else (agent or X11 forwarding, exit status from a client...) is refused.
            if Self.wantsReply(event) { context.triggerUserOutboundEvent(ChannelFailureEvent(), promise: nil) }
        }
    }

    /// sshd reported how the command ended. Its output may still be buffered in this channel
    /// (flow control), but EOF is delivered in order after it: forward both once EOF is here.
    private func exited(_ event: Any) {
        guard !finished else { return }
        if sawEOF {
            finished = true
            partner?.partnerFinish(exit: event)
        } else {
            heldExit = event
        }
    }

    private static func wantsReply(_ event: Any) -> Bool {
        switch event {
        case let e as SSHChannelRequestEvent.PseudoTerminalRequest: e.wantReply
        case let e as SSHChannelRequestEvent.ShellRequest: e.wantReply
        case let e as SSHChannelRequestEvent.ExecRequest: e.wantReply
        case let e as SSHChannelRequestEvent.SubsystemRequest: e.wantReply
        case let e as SSHChannelRequestEvent.EnvironmentRequest: e.wantReply
        default: false
        }
    }
}

/// Turns an SSH channel's data messages into plain bytes and back, so a forwarded SSH channel
/// can be joined to a TCP connection. Extended data (stderr) has no meaning on a forward and
/// is dropped.
final class SSHChannelBytes: ChannelDuplexHandler {
    typealias InboundIn = SSHChannelData
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = SSHChannelData

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = unwrapInboundIn(data)
        guard message.type == .channel, case .byteBuffer(let bytes) = message.data else { return }
        context.fireChannelRead(wrapInboundOut(bytes))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        context.write(wrapOutboundOut(SSHChannelData(type: .channel, data: .byteBuffer(bytes))), promise: promise)
    }
}

/// Joins two TCP connections on one event loop (the sentinel's proxy): bytes and half-closes
/// each way, a side reading only while the other can write. Call on that event loop, before
/// either channel reads (accept with `autoRead` off and `allowRemoteHalfClosure` on).
public enum StreamJoin {
    public static func join(_ a: any Channel, _ b: any Channel) throws {
        let (x, y) = Relay.pair(session: false)
        try a.pipeline.syncOperations.addHandler(x)
        try b.pipeline.syncOperations.addHandler(y)
    }
}
