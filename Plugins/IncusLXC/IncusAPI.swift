import ContainariumCore
import Foundation
import PluginKit

/// The Incus REST API (https://linuxcontainers.org/incus/docs/main/rest-api/) over its unix
/// socket: sync and async (operation) responses, errors mapped to ContainariumError.
struct IncusAPI: Sendable {
    let http: UnixHTTPClient
    let project: String

    init(socketPath: String, project: String) {
        self.http = UnixHTTPClient(socketPath: socketPath)
        self.project = project
    }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~/"))) ?? s
    }

    private func url(_ path: String, query: [String: String] = [:]) -> String {
        var q = query
        if project != "default" { q["project"] = project }
        guard !q.isEmpty else { return path }
        let qs = q.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.escape($0.value))" }.joined(separator: "&")
        return path + (path.contains("?") ? "&" : "?") + qs
    }

    private func envelope(_ response: UnixHTTPClient.Response, _ what: String) throws(ContainariumError) -> JSONValue {
        let json: JSONValue
        do { json = try WireJSON.decoder().decode(JSONValue.self, from: response.body) } catch {
            throw ContainariumError(.internal, "Incus answered \(what) with something that is not JSON (HTTP \(response.status))")
        }
        if json["type"]?.stringValue == "error" || response.status >= 400 {
            let message = json["error"]?.stringValue ?? "HTTP \(response.status)"
            let code = json["error_code"]?.intValue ?? response.status
            throw Self.mapError(code: code, message: message, what: what)
        }
        return json
    }

    static func mapError(code: Int, message: String, what: String) -> ContainariumError {
        let c: ContainariumError.Code =
            switch code {
            case 400: .invalidArgument
            case 403: .permissionDenied
            case 404: .notFound
            case 409: .alreadyExists
            case 412: .failedPrecondition
            case 503: .unavailable
            default: .internal
            }
        return ContainariumError(c, "Incus refused \(what): \(message)")
    }

    /// A synchronous call: the response's metadata.
    @discardableResult
    func sync(_ method: String, _ path: String, query: [String: String] = [:], body: JSONValue? = nil, timeout: Double = 30)
        throws(ContainariumError) -> JSONValue
    {
        let data = try body.map { v throws(ContainariumError) in try WireJSON.encode(v) }
        let r = try http.request(method, url(path, query: query), body: data, timeout: timeout)
        return try envelope(r, "\(method) \(path)")["metadata"] ?? .null
    }

    /// The raw body of a call (exec output logs are plain files, not JSON envelopes).
    func raw(_ method: String, _ path: String) throws(ContainariumError) -> Data {
        let r = try http.request(method, url(path))
        guard r.status < 400 else { _ = try envelope(r, "\(method) \(path)"); return Data() }
        return r.body
    }

    /// Push a file or directory into an instance, with ownership and mode set atomically by Incus.
    func push(instance: String, path: String, content: Data?, uid: UInt32, gid: UInt32, mode: String, directory: Bool = false)
        throws(ContainariumError)
    {
        let headers = [
            "X-Incus-uid": String(uid), "X-Incus-gid": String(gid), "X-Incus-mode": mode,
            "X-Incus-type": directory ? "directory" : "file", "X-Incus-write": "overwrite",
            "Content-Type": "application/octet-stream",
        ]
        let target = url("/1.0/instances/\(Self.escape(instance))/files", query: ["path": path])
        let r = try http.request("POST", target, body: content ?? Data(), headers: headers)
        _ = try envelope(r, "file push \(path)")
    }

    /// Pull a file out of an instance; nil when there is no such file.
    func pull(instance: String, path: String) throws(ContainariumError) -> Data? {
        let target = url("/1.0/instances/\(Self.escape(instance))/files", query: ["path": path])
        let r = try http.request("GET", target)
        if r.status == 404 { return nil }
        guard r.status < 400 else { _ = try envelope(r, "file pull \(path)"); return nil }
        return r.body
    }

    /// An asynchronous call: start the operation, then wait for it (cancellable), and return
    /// the finished operation's metadata.
    @discardableResult
    func operation(
        _ method: String, _ path: String, body: JSONValue? = nil, timeout: Double = 120, context: OperationContext? = nil
    ) throws(ContainariumError) -> JSONValue {
        let data = try body.map { v throws(ContainariumError) in try WireJSON.encode(v) }
        let r = try http.request(method, url(path), body: data, timeout: 30)
        let json = try envelope(r, "\(method) \(path)")
        guard let opPath = json["operation"]?.stringValue, !opPath.isEmpty else { return json["metadata"] ?? .null }
        return try wait(operation: opPath, timeout: timeout, context: context, what: "\(method) \(path)")
    }

    /// Start an asynchronous call and return its operation's path and metadata without waiting
    /// (an exec whose streams the caller attaches to).
    func start(_ method: String, _ path: String, body: JSONValue) throws(ContainariumError) -> (operation: String, metadata: JSONValue) {
        let r = try http.request(method, url(path), body: try WireJSON.encode(body), timeout: 30)
        let json = try envelope(r, "\(method) \(path)")
        guard let opPath = json["operation"]?.stringValue, !opPath.isEmpty else {
            throw ContainariumError(.internal, "Incus answered \(method) \(path) without an operation")
        }
        return (opPath, json["metadata"] ?? .null)
    }

    /// The path of one of an operation's WebSockets.
    func websocket(operation opPath: String, secret: String) -> String {
        url(opPath + "/websocket", query: ["secret": secret])
    }

    func wait(operation opPath: String, timeout: Double, context: OperationContext?, what: String) throws(ContainariumError) -> JSONValue {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let slice = max(1, min(2, Int(deadline.timeIntervalSinceNow.rounded(.up))))
            let r = try http.request("GET", url(opPath + "/wait", query: ["timeout": String(slice)]), timeout: Double(slice) + 10)
            let op: JSONValue
            do {
                op = try envelope(r, "waiting for \(what)")["metadata"] ?? .null
            } catch where error.message.contains("deadline exceeded") || r.status == 504 {
                // The wait slice ended with the operation still running.
                op = .object(["status": .string("Running")])
            }
            let status = op["status"]?.stringValue ?? ""
            switch status {
            case "Success":
                return op["metadata"] ?? .null
            case "Failure":
                let err = op["err"]?.stringValue ?? "operation failed"
                throw Self.mapError(code: Self.guessCode(err), message: err, what: what)
            case "Cancelled":
                throw ContainariumError(.cancelled, "\(what) was cancelled")
            default:
                if context?.isCancelled == true {
                    _ = try? http.request("DELETE", url(opPath))
                    throw ContainariumError(.cancelled, "\(what) was cancelled")
                }
                if Date() >= deadline {
                    throw ContainariumError(.timeout, "\(what) did not finish within \(Int(timeout))s")
                }
            }
        }
    }

    /// Wait out the background tasks Incus is running on an instance (a restart, a stop another
    /// client started): Incus refuses a delete or a state change meanwhile ("Instance is busy
    /// running a restart operation"). Websocket operations (exec sessions, consoles) are not
    /// waited for: they last as long as someone is typing. Their outcome is not ours to report.
    func settle(instance: String, timeout: Double, context: OperationContext?) throws(ContainariumError) {
        let mine = "/1.0/instances/" + Self.escape(instance)
        let running = try sync("GET", "/1.0/operations", query: ["recursion": "1"])["running"]?.items ?? []
        let deadline = Date().addingTimeInterval(timeout)
        for op in running where op["class"]?.stringValue == "task" {
            let instances = op["resources"]?["instances"]?.items?.compactMap(\.stringValue) ?? []
            guard instances.contains(where: { $0 == mine || $0.hasPrefix(mine + "?") }), let id = op["id"]?.stringValue else { continue }
            // Waited in short slices without our context: cancelling our call must never cancel
            // somebody else's operation (`wait` would DELETE the one it waits for). Whatever
            // becomes of it (done, failed, cancelled, gone) it is settled for us.
            while deadline.timeIntervalSinceNow > 0 {
                try context?.checkCancelled()
                do {
                    _ = try wait(operation: "/1.0/operations/" + Self.escape(id), timeout: min(2, deadline.timeIntervalSinceNow), context: nil,
                                 what: "Incus's own task on \(instance)")
                    break
                } catch where error.code == .timeout {
                    continue  // still running: wait another slice
                } catch {
                    break
                }
            }
        }
    }

    /// Incus reports operation failures as text only; recognise the common ones.
    static func guessCode(_ message: String) -> Int {
        let m = message.lowercased()
        if m.contains("not found") { return 404 }
        if m.contains("already exists") { return 409 }
        if m.contains("invalid") { return 400 }
        return 500
    }
}

extension JSONValue {
    var intValue: Int? {
        if case .number(let n) = self { return Int(exactly: n.rounded()) }
        if case .string(let s) = self { return Int(s) }
        return nil
    }

    var uint64Value: UInt64? {
        if case .number(let n) = self, n >= 0 { return UInt64(exactly: n.rounded()) }
        if case .string(let s) = self { return UInt64(s) }
        return nil
    }

    var arrayValue: [JSONValue] {
        if case .array(let a) = self { return a }
        return []
    }

    var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        if case .string(let s) = self { return s == "true" }
        return nil
    }
}
