import ArgumentParser
import ContainariumCore
import Foundation
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `containarium mcp`: the MCP server over stdio for desktop clients that launch it. It relays
/// each JSON-RPC message between stdin/stdout and the daemon's streamable HTTP endpoint
/// (`--server`'s `/mcp`), authenticated by the same JWT (`--token` or $CONTAINARIUM_JWT_TOKEN):
/// the daemon does the work, the authorization and the audit, as it does for REST.
struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp", abstract: "Serve MCP over stdio (for desktop assistants), relayed to a daemon's /mcp.",
        discussion: """
            Client configuration (e.g. Claude Desktop's claude_desktop_config.json):
              {"mcpServers": {"containarium": {"command": "containarium", "args": ["mcp", "--server", "https://containarium.example:8080"],
                                               "env": {"CONTAINARIUM_JWT_TOKEN": "<token>"}}}}
            See docs/mcp.md.
            """)
    @Option(help: "The daemon's REST address (http://HOST:PORT or https://HOST:PORT).") var server: String
    @Option(help: "The JWT (prefer $CONTAINARIUM_JWT_TOKEN: a flag shows in the process list).") var token: String?

    func validate() throws {
        guard let u = URL(string: server), let scheme = u.scheme, ["http", "https"].contains(scheme), u.host != nil else {
            throw ValidationError("--server must be http://HOST:PORT or https://HOST:PORT")
        }
    }

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        guard let jwt = token ?? env["CONTAINARIUM_JWT_TOKEN"], !jwt.isEmpty else {
            throw fail(.invalid("give a token: $CONTAINARIUM_JWT_TOKEN (or --token)"))
        }
        let base = server.hasSuffix("/") ? String(server.dropLast()) : server
        guard let endpoint = URL(string: base + "/mcp") else { throw fail(.invalid("--server \(server) is not a URL")) }
        let relay = MCPRelay(endpoint: endpoint, token: jwt)
        await relay.run()
    }
}

/// Moves JSON-RPC messages between stdio and a streamable HTTP endpoint.
final class MCPRelay: Sendable {
    let endpoint: URL
    let token: String
    private let session: URLSession
    private let state = Mutex<(sessionID: String?, protocolVersion: String?, listening: Bool)>((nil, nil, false))
    private let output = Mutex(())

    init(endpoint: URL, token: String) {
        self.endpoint = endpoint
        self.token = token
        let c = URLSessionConfiguration.ephemeral
        c.timeoutIntervalForRequest = 3600
        c.timeoutIntervalForResource = 24 * 3600
        session = URLSession(configuration: c)
    }

    /// Until stdin ends: each line a message, relayed at once (answers may come out of order, as
    /// JSON-RPC allows); then the daemon's session is closed.
    func run() async {
        let lines = AsyncStream<String> { continuation in
            Thread.detachNewThread {
                while let line = readLine(strippingNewline: true) { continuation.yield(line) }
                continuation.finish()
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for await line in lines where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                group.addTask { await self.relay(line) }
            }
        }
        if let id = state.withLock({ $0.sessionID }) {
            var request = request("DELETE")
            request.setValue(id, forHTTPHeaderField: "Mcp-Session-Id")
            _ = try? await send(request)
        }
    }

    func request(_ method: String) -> URLRequest {
        var r = URLRequest(url: endpoint)
        r.httpMethod = method
        r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        r.setValue("application/json, text/event-stream", forHTTPHeaderField: "Accept")
        let (id, version, _) = state.withLock { $0 }
        if let id { r.setValue(id, forHTTPHeaderField: "Mcp-Session-Id") }
        if let version { r.setValue(version, forHTTPHeaderField: "MCP-Protocol-Version") }
        return r
    }

    func send(_ r: URLRequest) async throws -> (Data, HTTPURLResponse) {
        try await withCheckedThrowingContinuation { c in
            session.dataTask(with: r) { data, response, error in
                if let http = response as? HTTPURLResponse { c.resume(returning: (data ?? Data(), http)) }
                else { c.resume(throwing: error ?? URLError(.badServerResponse)) }
            }.resume()
        }
    }

    func relay(_ line: String) async {
        let message = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        let id = message?["id"]
        var r = request("POST")
        r.setValue("application/json", forHTTPHeaderField: "Content-Type")
        r.httpBody = Data(line.utf8)
        let data: Data, http: HTTPURLResponse
        do {
            (data, http) = try await send(r)
        } catch {
            if let id { write(error: "the daemon at \(endpoint.absoluteString) did not answer: \(error.localizedDescription)", id: id) }
            return
        }
        if let sid = http.value(forHTTPHeaderField: "Mcp-Session-Id") { state.withLock { $0.sessionID = sid } }
        let type = http.value(forHTTPHeaderField: "Content-Type") ?? ""
        var answered = false
        if type.hasPrefix("text/event-stream") {
            for payload in Self.events(data) {
                noteVersion(payload)
                write(payload)
                answered = true
            }
        } else if let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], o["jsonrpc"] != nil {
            noteVersion(String(decoding: data, as: UTF8.self))
            write(String(decoding: data, as: UTF8.self))
            answered = true
        }
        if !answered, let id, http.statusCode >= 400 {
            // The daemon's own refusal (a bad token: 401), as the JSON-RPC error of this request.
            let envelope = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["error"] as? [String: Any]
            let why = (envelope?["message"] as? String) ?? String(decoding: data.prefix(300), as: UTF8.self)
            write(error: "the daemon answered HTTP \(http.statusCode): \(why)", id: id)
        }
        // Server-initiated messages (progress) arrive on the session's own stream.
        if message?["method"] as? String == "initialize", state.withLock({ $0.sessionID != nil && !$0.listening }) {
            state.withLock { $0.listening = true }
            Task { await self.listen() }
        }
    }

    /// The initialize answer's protocol version, sent as MCP-Protocol-Version from then on.
    func noteVersion(_ payload: String) {
        guard let o = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any],
              let result = o["result"] as? [String: Any], let v = result["protocolVersion"] as? String else { return }
        state.withLock { $0.protocolVersion = v }
    }

    /// The session's GET stream, relayed as it arrives, reopened while the relay runs.
    func listen() async {
        while !Task.isCancelled {
            let reader = SSEReader { payload in self.write(payload) }
            let streamSession = URLSession(configuration: .ephemeral, delegate: reader, delegateQueue: nil)
            var r = request("GET")
            r.timeoutInterval = 24 * 3600
            let task = streamSession.dataTask(with: r)
            task.resume()
            await reader.ended()
            streamSession.finishTasksAndInvalidate()
            if reader.status == 404 || reader.status == 405 || reader.status == 401 { return }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// The `data:` payloads of an event stream's complete events.
    static func events(_ data: Data) -> [String] {
        var out: [String] = []
        var lines: [String] = []
        for raw in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : String(raw)
            if line.isEmpty {
                if !lines.isEmpty { out.append(lines.joined(separator: "\n")) }
                lines = []
            } else if line.hasPrefix("data:") {
                lines.append(String(line.dropFirst(5)).trimmingCharacters(in: .whitespaces))
            }
        }
        if !lines.isEmpty { out.append(lines.joined(separator: "\n")) }
        return out.filter { !$0.isEmpty }
    }

    func write(_ payload: String) {
        output.withLock { _ in
            FileHandle.standardOutput.write(Data((payload.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
        }
    }

    func write(error message: String, id: Any) {
        let object: [String: Any] = ["jsonrpc": "2.0", "id": id, "error": ["code": -32603, "message": message]]
        if let data = try? JSONSerialization.data(withJSONObject: object) { write(String(decoding: data, as: UTF8.self)) }
    }
}

/// Reads an event stream as it arrives and hands on each event's data.
final class SSEReader: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    // @unchecked: the buffer and status are touched only by URLSession's serial delegate queue
    // and, after `ended`, by the waiting task.
    private var buffer = Data()
    private(set) var status = 0
    private let deliver: @Sendable (String) -> Void
    private let done = AsyncStream<Void>.makeStream()

    init(deliver: @escaping @Sendable (String) -> Void) { self.deliver = deliver }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void) {
        status = (response as? HTTPURLResponse)?.statusCode ?? 0
        completionHandler(status == 200 ? .allow : .cancel)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        buffer.append(data)
        // Complete events end with a blank line.
        while let range = buffer.range(of: Data("\n\n".utf8)) ?? buffer.range(of: Data("\r\n\r\n".utf8)) {
            let event = buffer.subdata(in: buffer.startIndex..<range.upperBound)
            buffer.removeSubrange(buffer.startIndex..<range.upperBound)
            for payload in MCPRelay.events(event) { deliver(payload) }
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        done.continuation.finish()
    }

    func ended() async { for await _ in done.stream {} }
}
