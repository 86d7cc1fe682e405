import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import Synchronization

/// Bounds the REST connections open at once, in all and per address. A connection is counted
/// from the moment it is accepted until its socket closes (WebSocket upgrades included); one
/// past either limit is closed before anything is read from it. A connection that has not sent
/// a complete request head within `silence` is closed, however slowly bytes trickle in (after
/// the first request, HTTP's idle timeout applies).
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
            // A hard deadline for the first request head: bytes trickling in do not extend it
            // (once a request is in, HTTP's own idle timeout takes over).
            let deadline = channel.eventLoop.scheduleTask(in: limiter.silence) { channel.close(promise: nil) }
            channel.closeFuture.whenComplete { _ in
                deadline.cancel()
                limiter.leave(address)
            }
            return base.setup(channel: channel, logger: logger).flatMapThrowing { value in
                // Watch the plaintext: after TLS when there is TLS, else before everything.
                let watcher = FirstHead(deadline)
                let ops = channel.pipeline.syncOperations
                if let tls = try? ops.handler(type: NIOSSLServerHandler.self) {
                    try ops.addHandler(watcher, position: .after(tls))
                } else {
                    try ops.addHandler(watcher, position: .first)
                }
                return value
            }
        }

        func handle(value: Value, logger: Logger) async { await base.handle(value: value, logger: logger) }
    }

    /// Cancels the first-request deadline once a complete request head (up to the blank line)
    /// has arrived, then leaves the pipeline.
    final class FirstHead: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        let deadline: Scheduled<Void>
        var tail: [UInt8] = []
        init(_ deadline: Scheduled<Void>) { self.deadline = deadline }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            let seen = tail + bytes.readableBytesView
            if seen.count >= 4, zip(seen.indices.dropLast(3), seen.indices.dropFirst(3)).contains(where: { i, _ in
                seen[i] == 13 && seen[i + 1] == 10 && seen[i + 2] == 13 && seen[i + 3] == 10
            }) {
                deadline.cancel()
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
            tail = Array(seen.suffix(3))
            context.fireChannelRead(data)
        }
    }
}
