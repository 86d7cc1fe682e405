import ContainariumTelemetry
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// `--metrics-listen HOST:PORT`: GET /metrics without a token, on an address of its own (for a
/// Prometheus on a private network that holds no token). Nothing else is served there.
enum MetricsListener {
    static func make(telemetry: Telemetry, host: String, port: Int, logger: Logger) -> some Service {
        let router = Router()
        router.get("/metrics") { _, _ -> Response in
            let bytes = telemetry.render()
            var headers = HTTPFields()
            headers[.contentType] = Telemetry.contentType
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        return Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "containarium-metrics"),
            onServerRunning: { _ in logger.notice("metrics (no token) on http://\(host):\(port)/metrics") },
            logger: logger)
    }
}
