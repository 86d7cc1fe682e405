public import CoreMetrics
import NIOCore
import NIOSSH

/// The gateway's metrics (swift-metrics handles from the factory it is given; no-ops without):
/// sessions (logins) in all and open now, bytes of session and forward channels in each
/// direction, authentication failures and bans.
public final class GatewayMeter: Sendable {
    let sessions: CoreMetrics.Counter
    let active: CoreMetrics.Meter
    let bytesIn: CoreMetrics.Counter
    let bytesOut: CoreMetrics.Counter
    let authFailures: CoreMetrics.Counter
    let bans: CoreMetrics.Counter

    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance) {
        sessions = CoreMetrics.Counter(label: "containarium_gateway_sessions_total", factory: factory)
        active = CoreMetrics.Meter(label: "containarium_gateway_sessions_active", factory: factory)
        bytesIn = CoreMetrics.Counter(label: "containarium_gateway_bytes_total", dimensions: [("direction", "in")], factory: factory)
        bytesOut = CoreMetrics.Counter(label: "containarium_gateway_bytes_total", dimensions: [("direction", "out")], factory: factory)
        authFailures = CoreMetrics.Counter(label: "containarium_gateway_auth_failures_total", factory: factory)
        bans = CoreMetrics.Counter(label: "containarium_gateway_bans_total", factory: factory)
    }

    /// Count what an audit row says happened (every row the gateway writes passes here).
    func observe(_ event: GatewayAuditEvent) {
        switch event.action {
        case "gateway.auth":
            if event.result == "ok" {
                sessions.increment()
                active.increment()
            } else {
                authFailures.increment()
            }
        case "gateway.disconnect" where !event.preLogin:
            active.decrement()
        case "gateway.ban":
            bans.increment()
        default:
            break
        }
    }
}

/// Counts the data of one client-side SSH channel: what the client sent ("in") and what it
/// was sent ("out"). Passes everything through untouched.
final class ChannelBytesMeter: ChannelDuplexHandler {
    typealias InboundIn = SSHChannelData
    typealias InboundOut = SSHChannelData
    typealias OutboundIn = SSHChannelData
    typealias OutboundOut = SSHChannelData

    private let meter: GatewayMeter

    init(_ meter: GatewayMeter) { self.meter = meter }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .byteBuffer(let b) = unwrapInboundIn(data).data { meter.bytesIn.increment(by: b.readableBytes) }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .byteBuffer(let b) = unwrapOutboundIn(data).data { meter.bytesOut.increment(by: b.readableBytes) }
        context.write(data, promise: promise)
    }
}
