import HummingbirdCore
import Logging
import NIOCore
import Synchronization

/// Bounds the REST connections open at once, in all and per address. A connection is counted
/// from the moment it is accepted until its socket closes (WebSocket upgrades included); one
/// past either limit is closed before anything is read from it. A connection that sends nothing
/// at all is closed after `silence` (the idle timeout covers connections that have spoken).
final class ConnectionLimiter: Sendable {
    let total: Int
    let perAddress: Int
    let silence: TimeAmount
    private let open = Mutex<(total: Int, byAddress: [String: Int])>((0, [:]))

    init(total: Int, perAddress: Int, silence: TimeAmount) {
        self.total = max(1, total)
        self.perAddress = max(1, perAddress)
        self.silence = silence
    }

    /// Take a place for `address`; false when either limit is reached.
    func enter(_ address: String) -> Bool {
        open.withLock { o in
            guard o.total < total, o.byAddress[address, default: 0] < perAddress else { return false }
            o.total += 1
            o.byAddress[address, default: 0] += 1
            return true
        }
    }

    func leave(_ address: String) {
        open.withLock { o in
            o.total -= 1
            let n = o.byAddress[address, default: 1] - 1
            o.byAddress[address] = n > 0 ? n : nil
        }
    }

    var count: Int { open.withLock { $0.total } }

    /// `base` (the HTTP/WebSocket channel, possibly under TLS) behind this limiter.
    func wrap(_ base: some ServerChildChannel) -> any ServerChildChannel { Limited(base: base, limiter: self) }

    struct Limited<Base: ServerChildChannel>: ServerChildChannel {
        typealias Value = Base.Value
        let base: Base
        let limiter: ConnectionLimiter

        func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
            let address = channel.remoteAddress?.ipAddress ?? "unknown"
            guard limiter.enter(address) else {
                logger.notice("REST: refused a connection from \(address): too many connections open")
                return channel.close().flatMapThrowing { throw ChannelError.ioOnClosedChannel }
            }
            let limiter = self.limiter
            channel.closeFuture.whenComplete { _ in limiter.leave(address) }
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(SilenceTimeout(limiter.silence), position: .first)
            }.flatMap { base.setup(channel: channel, logger: logger) }
        }

        func handle(value: Value, logger: Logger) async { await base.handle(value: value, logger: logger) }
    }

    /// Closes a connection that sends nothing within `after`.
    final class SilenceTimeout: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        let after: TimeAmount
        var timer: Scheduled<Void>?
        init(_ after: TimeAmount) { self.after = after }

        func handlerAdded(context: ChannelHandlerContext) {
            let channel = context.channel
            timer = context.eventLoop.scheduleTask(in: after) { channel.close(promise: nil) }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if let timer {
                timer.cancel()
                self.timer = nil
            }
            context.fireChannelRead(data)
        }

        func handlerRemoved(context: ChannelHandlerContext) { timer?.cancel() }
    }
}
