import ContainariumCore
import ContainariumPlatform
import ContainariumGateway
import Foundation
public import HTTPTypes
import Hummingbird
public import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket

/// The dashboard's static files (`/webui/`), cross-origin access for dashboards that manage
/// several daemons, and the terminal WebSocket.
extension RESTAPI {
    static let webTypes: [String: String] = [
        "html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
        "png": "image/png", "svg": "image/svg+xml", "json": "application/json", "copyright": "text/plain; charset=utf-8",
    ]
    /// Scripts only from the daemon itself; API calls may go to any daemon the user added.
    static let contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; " +
        "connect-src 'self' http: https: ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

    /// A file of the dashboard, or a redirect to it.
    func webui(_ parts: ArraySlice<String>, path: String) -> Response {
        if parts.isEmpty && !path.hasSuffix("/") {
            var r = Response(status: .movedPermanently)
            r.headers[.location] = "/webui/"
            return r
        }
        guard let dir = webuiDir else {
            return error(ContainariumError(.notFound, "the dashboard is not installed (scripts/install.sh installs it; or pass --webui-dir)"))
        }
        let rel = parts.isEmpty ? ["index.html"] : Array(parts)
        guard rel.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.hasPrefix(".") && !$0.contains("\0") }),
              let ext = rel.last?.split(separator: ".").last.map(String.init), let type = Self.webTypes[ext] else {
            return error(ContainariumError(.notFound, "no such file \(path)"))
        }
        let file = ([dir] + rel).joined(separator: "/")
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &isDir), !isDir.boolValue,
              let data = FileManager.default.contents(atPath: file) else {
            return error(ContainariumError(.notFound, "no such file \(path)"))
        }
        var r = raw(.ok, data, contentType: type)
        r.headers[.cacheControl] = "no-cache"
        r.headers[.contentSecurityPolicy] = Self.contentSecurityPolicy
        r.headers[.xContentTypeOptions] = "nosniff"
        r.headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        return r
    }

    /// Answers CORS preflights, so a dashboard served by one daemon can manage others. Tokens
    /// travel in the Authorization header, never in cookies: another origin gains nothing
    /// without the user's token.
    func preflight(_ request: Request) -> Response {
        var r = Response(status: .noContent)
        r.headers[.accessControlAllowOrigin] = request.headers[.origin] ?? "*"
        r.headers[.accessControlAllowMethods] = "GET, POST, PUT, DELETE, OPTIONS"
        r.headers[.accessControlAllowHeaders] = "Authorization, Content-Type"
        r.headers[.accessControlMaxAge] = "600"
        r.headers[.vary] = "Origin"
        return r
    }

    static func withCORS(_ response: Response, origin: String?) -> Response {
        guard let origin else { return response }
        var r = response
        r.headers[.accessControlAllowOrigin] = origin
        r.headers[.accessControlExposeHeaders] = "Location"
        r.headers[.vary] = "Origin"
        return r
    }

    /// The bearer token a WebSocket client sent as a subprotocol ("bearer.TOKEN"): browsers
    /// cannot set Authorization on a WebSocket, and a token in the URL would end up in logs.
    static func webSocketToken(_ headers: HTTPFields) -> String? {
        let offered = headers[values: .secWebSocketProtocol].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        guard offered.contains("containarium.v1") else { return nil }
        return offered.first { $0.hasPrefix("bearer.") }.map { String($0.dropFirst("bearer.".count)) }
    }

    /// The environment and the kind of a WebSocket route: `terminal` (a shell, or a VM's
    /// serial console) or `vnc` (a VM's screen, raw RFB bytes for noVNC).
    static func webSocketTarget(_ path: String) -> (username: String, kind: String)? {
        let parts = split(path)
        guard parts.count == 4, parts[0] == "v1", parts[1] == "containers", ["terminal", "vnc"].contains(parts[3]) else { return nil }
        return (parts[2].removingPercentEncoding ?? parts[2], parts[3])
    }

    /// The terminal WebSocket: binary frames carry terminal bytes both ways; text frames carry
    /// JSON control messages ({"type": "resize", "cols", "rows"} from the browser; {"type":
    /// "exit"} or {"type": "error"} from the daemon). Anything that is not a valid, authorized
    /// terminal request is not upgraded, and the REST route answers it with the right error.
    public func webSocketUpgrade(_ request: HTTPRequest, remote: String) async -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        guard let path = request.path?.split(separator: "?", maxSplits: 1).first.map(String.init), let (username, kind) = Self.webSocketTarget(path) else {
            plane.logger.info("WebSocket upgrade refused: \(request.path ?? "-") is not a terminal or console")
            return .dontUpgrade
        }
        guard let token = Self.webSocketToken(request.headerFields) else {
            plane.logger.info("WebSocket upgrade refused: no 'containarium.v1, bearer.<token>' subprotocols")
            return .dontUpgrade
        }
        let query = Self.query(request.path?.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init))
        let cols = Int(query["cols"] ?? "80") ?? 80, rows = Int(query["rows"] ?? "24") ?? 24
        let caller: Caller
        do throws(ContainariumError) {
            let (subject, role, issued, expires) = try await tokens.verify(token)
            caller = Caller(subject: subject, role: role, source: remote, interface: "rest", issuedAt: issued, expiresAt: expires)
            try await plane.authorize(caller, username, .act)
        } catch {
            await plane.auditAuthFailure(source: remote, interface: "rest", action: "container.\(kind)", reason: error.message)
            return .dontUpgrade
        }
        var headers = HTTPFields()
        headers[.secWebSocketProtocol] = "containarium.v1"
        let plane = self.plane
        if kind == "vnc" { return .upgrade(headers) { inbound, outbound, _ in try await Self.relayVNC(plane, caller, username, inbound, outbound) } }
        plane.logger.debug("terminal upgrade for \(caller.subject) to \(username)")
        return .upgrade(headers) { inbound, outbound, _ in
            let started = Date()
            let session: any TerminalStream
            let account: String
            do throws(ContainariumError) {
                (session, account) = try await plane.openTerminal(caller, username, cols: cols, rows: rows)
            } catch {
                let message = TerminalControl(type: "error", code: error.code.rawValue, message: error.message).text
                try await outbound.write(.text(message ?? #"{"type":"error"}"#))
                try await outbound.close(.unexpectedServerError, reason: String(error.message.prefix(100)))
                return
            }
            defer { session.close() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await chunk in session.output {
                        try await outbound.write(.binary(chunk))
                        session.consumed(chunk.readableBytes)
                    }
                    // The shell ended: say how, then hang up.
                    try? await Task.sleep(for: .milliseconds(50))
                    let text = TerminalControl(type: "exit", status: session.exitStatus, signal: session.exitSignal).text ?? #"{"type":"exit"}"#
                    try await outbound.write(.text(text))
                    try await outbound.close(.normalClosure, reason: "session ended")
                }
                group.addTask {
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        switch message {
                        case .binary(let bytes): try await session.write(bytes)
                        case .text(let text):
                            guard let v = try? JSONDecoder().decode(TerminalControl.self, from: Data(text.utf8)), v.type == "resize",
                                  let c = v.cols, let r = v.rows, (1...1000).contains(c), (1...1000).contains(r) else { continue }
                            session.resize(cols: c, rows: r)
                        }
                    }
                }
                _ = try await group.next()
                session.close()  // wakes a side waiting on the session, so the group can end
                group.cancelAll()
            }
            let how = session.exitStatus.map { "exit \($0)" } ?? session.exitSignal.map { "signal \($0)" } ?? "closed by the browser"
            await plane.terminalClosed(caller, username, account: account, seconds: Date().timeIntervalSince(started), exit: how)
        }
    }

    /// A VM's VNC server for noVNC: binary frames carry RFB bytes both ways, unchanged.
    static func relayVNC(_ plane: ControlPlane, _ caller: Caller, _ username: String,
                         _ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter) async throws {
        let started = Date()
        let screen: any TerminalStream
        do throws(ContainariumError) {
            screen = try await plane.openConsoleStream(caller, username, kind: "vnc")
        } catch {
            try await outbound.close(.unexpectedServerError, reason: String(error.message.prefix(100)))
            return
        }
        defer { screen.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await chunk in screen.output {
                    try await outbound.write(.binary(chunk))
                    screen.consumed(chunk.readableBytes)
                }
                try await outbound.close(.normalClosure, reason: "console closed")
            }
            group.addTask {
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    if case .binary(let bytes) = message { try await screen.write(bytes) }
                }
            }
            _ = try await group.next()
            screen.close()
            group.cancelAll()
        }
        await plane.consoleClosed(caller, username, kind: "vnc", seconds: Date().timeIntervalSince(started))
    }
}

/// The terminal WebSocket's text messages (docs/dashboard.md): `resize` from the browser;
/// `error` and `exit` from the daemon. Bytes of the session travel as binary messages.
struct TerminalControl: Codable {
    var type: String
    var cols: Int?
    var rows: Int?
    var code: String?
    var message: String?
    var status: Int?
    var signal: String?

    init(type: String, code: String? = nil, message: String? = nil, status: Int? = nil, signal: String? = nil) {
        self.type = type
        self.code = code
        self.message = message
        self.status = status
        self.signal = signal
    }

    var text: String? { (try? WireJSON.encode(self)).map { String(decoding: $0, as: UTF8.self) } }
}
