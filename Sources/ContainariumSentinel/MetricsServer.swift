import ContainariumCore
import ContainariumTelemetry
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// `sentinel.metricsListen`: GET /metrics (Prometheus's text format) and nothing else, with the
/// bearer token of `sentinel.metricsTokenFile` when one is set (compared in constant time).
enum MetricsServer {
    static func bind(_ listen: String, telemetry: Telemetry, token: String?) async throws(ContainariumError) -> any Channel {
        let (host, port) = try NodeAddress.parse(listen)
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(telemetry: telemetry, token: token))
                }
            }
        do {
            return try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw ContainariumError(.unavailable, "cannot serve metrics on \(listen)", cause: "\(error)")
        }
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let telemetry: Telemetry
        let token: String?
        private var head: HTTPRequestHead?

        init(telemetry: Telemetry, token: String?) {
            self.telemetry = telemetry
            self.token = token
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h
            case .body: break
            case .end:
                guard let h = head else { return }
                head = nil
                respond(context, h)
            }
        }

        func respond(_ context: ChannelHandlerContext, _ h: HTTPRequestHead) {
            let path = h.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? h.uri
            let (status, type, body): (HTTPResponseStatus, String, [UInt8])
            if path != "/metrics" {
                (status, type, body) = (.notFound, "text/plain", Array("only /metrics is served here\n".utf8))
            } else if h.method != .GET && h.method != .HEAD {
                (status, type, body) = (.methodNotAllowed, "text/plain", Array("GET /metrics\n".utf8))
            } else if let token, !Self.authorized(h.headers["authorization"].first, token) {
                (status, type, body) = (.unauthorized, "text/plain", Array("a bearer token is required\n".utf8))
            } else {
                (status, type, body) = (.ok, Telemetry.contentType, telemetry.render())
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: String(body.count))
            headers.add(name: "Cache-Control", value: "no-store")
            if status == .unauthorized { headers.add(name: "WWW-Authenticate", value: "Bearer realm=\"containarium-sentinel\"") }
            let keepAlive = h.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: status, headers: headers))), promise: nil)
            if h.method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil) }
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let channel = context.channel
                done.whenComplete { _ in channel.close(promise: nil) }
            }
        }

        /// "Bearer TOKEN" equal to `token`, compared through digests (no early exit on a mismatch).
        static func authorized(_ header: String?, _ token: String) -> Bool {
            guard let header, header.hasPrefix("Bearer ") else { return false }
            let given = SHA256.hash(data: Data(header.dropFirst("Bearer ".count).utf8))
            let want = SHA256.hash(data: Data(token.utf8))
            return given == want
        }
    }
}
