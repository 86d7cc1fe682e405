public import ContainariumCore
public import Foundation
public import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// Crash isolation: the same plugin, loaded by a child process (`containarium plugin serve DIR`)
// and reached over a pipe with JSON lines. The child loads the library exactly as the host
// would (manifest, dlopen, version and identity checks); the messages carry the same JSON the
// C ABI carries, so a plugin cannot tell the difference, and a plugin that crashes takes only
// its child down: pending calls fail with `unavailable`, the host carries on.

/// Host -> child messages.
struct HostMessage: Codable, Sendable {
    var config: String?  // first line only: the plugin's configuration (JSON text)
    var node: String?
    var id: UInt64?
    var `extension`: String?
    var method: String?
    var request: String?  // JSON text
    var cancel: UInt64?
}

/// Child -> host messages.
struct ChildMessage: Codable, Sendable {
    struct Ready: Codable, Sendable {
        var abi: String
        var provides: [String]
    }
    struct Failure: Codable, Sendable {
        var code: String
        var message: String
    }
    struct Event: Codable, Sendable {
        var type: String
        var json: String
    }

    var ready: Ready?
    var failed: String?
    var id: UInt64?
    var ok: String?  // JSON text
    var error: Failure?
    var event: Event?
}

/// Reads newline-delimited messages from a file descriptor (blocking; use on a dedicated thread).
final class LineReader: @unchecked Sendable {
    private let fd: Int32
    private var buffer: [UInt8] = []

    init(fd: Int32) { self.fd = fd }

    func next() -> Data? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = Data(buffer[..<nl])
                buffer.removeSubrange(...nl)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }
}

/// Writes whole lines to a file descriptor, one writer at a time. Returns false once the
/// other side is gone (EPIPE; SIGPIPE is ignored by the host while isolation is in use).
final class LineWriter: Sendable {
    private let fd: Int32
    private let lock = Mutex(())

    init(fd: Int32) { self.fd = fd }

    func send<T: Encodable>(_ message: T) -> Bool {
        guard var data = try? JSONEncoder().encode(message) else { return false }
        data.append(0x0A)
        return lock.withLock { _ in
            data.withUnsafeBytes { raw -> Bool in
                guard let base = raw.baseAddress else { return true }
                var offset = 0
                while offset < raw.count {
                    let n = write(fd, base + offset, raw.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        return false
                    }
                    offset += n
                }
                return true
            }
        }
    }
}

/// A plugin served by a child process.
public final class ProcessPlugin: PluginEndpoint, @unchecked Sendable {
    // @unchecked: `process` and `writer` are set once in init; mutable state is in `state`.
    public let manifest: PluginManifest
    public let directory: URL
    public let abiVersion: String
    public var isolation: String { "process" }
    private let provided: Set<String>
    private let process: Process
    private let writer: LineWriter
    private let logger: Logger

    private struct State {
        var nextID: UInt64 = 1
        var pending: [UInt64: CheckedContinuation<Result<Data, ContainariumError>, Never>] = [:]
        var dead: String?
    }

    private let state = Mutex(State())

    private init(manifest: PluginManifest, directory: URL, abi: String, provides: [String], process: Process, writer: LineWriter, logger: Logger) {
        self.manifest = manifest
        self.directory = directory
        self.abiVersion = abi
        self.provided = Set(provides)
        self.process = process
        self.writer = writer
        self.logger = logger
    }

    /// Why the child is gone, or nil while it serves.
    public var exitReason: String? { state.withLock { $0.dead } }

    public func provides(_ extensionID: String) -> Bool { provided.contains(extensionID) }

    /// Start the child, hand it the configuration and wait until it has loaded the plugin.
    static func launch(
        manifest: PluginManifest, directory: URL, config: JSONValue, node: String, server: URL, logger: Logger, events: EventBus,
        timeout: Double = 30
    ) throws(ContainariumError) -> ProcessPlugin {
        signal(SIGPIPE, SIG_IGN)  // a dead child must be an error on write, not the host's death
        let toChild = Pipe(), fromChild = Pipe()
        let process = Process()
        process.executableURL = server
        process.arguments = ["plugin", "serve", directory.path]
        process.standardInput = toChild
        process.standardOutput = fromChild
        process.standardError = FileHandle.standardError
        do { try process.run() } catch {
            throw ContainariumError(.pluginLoad, "cannot start the plugin server \(server.path)", cause: error.localizedDescription)
        }
        let writer = LineWriter(fd: toChild.fileHandleForWriting.fileDescriptor)
        let reader = LineReader(fd: fromChild.fileHandleForReading.fileDescriptor)
        let configText = (try? WireJSON.encode(config)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        guard writer.send(HostMessage(config: configText, node: node)) else {
            process.terminate()
            throw ContainariumError(.pluginLoad, "the plugin server for \(manifest.id) exited at once")
        }
        // The first line says whether the child could load the plugin.
        let hello = Mutex<ChildMessage?>(nil)
        let arrived = DispatchSemaphore(value: 0)
        let firstLine = Thread {
            if let line = reader.next(), let msg = try? JSONDecoder().decode(ChildMessage.self, from: line) {
                hello.withLock { $0 = msg }
            }
            arrived.signal()
        }
        firstLine.start()
        guard arrived.wait(timeout: .now() + timeout) == .success, let msg = hello.withLock({ $0 }) else {
            process.terminate()
            throw ContainariumError(.pluginLoad, "the plugin server for \(manifest.id) did not report within \(Int(timeout))s")
        }
        if let failed = msg.failed {
            process.waitUntilExit()
            throw ContainariumError(.pluginLoad, failed)
        }
        guard let ready = msg.ready else {
            process.terminate()
            throw ContainariumError(.pluginLoad, "the plugin server for \(manifest.id) sent an unexpected first message")
        }
        let plugin = ProcessPlugin(
            manifest: manifest, directory: directory, abi: ready.abi, provides: ready.provides, process: process, writer: writer, logger: logger)
        let loop = Thread { plugin.readLoop(reader, events: events) }
        loop.name = "plugin-\(manifest.id)-reader"
        loop.start()
        return plugin
    }

    private func readLoop(_ reader: LineReader, events: EventBus) {
        while let line = reader.next() {
            guard let msg = try? JSONDecoder().decode(ChildMessage.self, from: line) else {
                logger.warning("plugin server sent a malformed line", metadata: ["plugin": "\(manifest.id)"])
                continue
            }
            if let event = msg.event {
                events.publish(PluginEvent(plugin: manifest.id, type: event.type, json: Data(event.json.utf8)))
            } else if let id = msg.id {
                let outcome: Result<Data, ContainariumError> =
                    if let ok = msg.ok {
                        .success(Data(ok.utf8))
                    } else {
                        .failure(
                            ContainariumError(
                                msg.error.flatMap { ContainariumError.Code(rawValue: $0.code) } ?? .internal,
                                msg.error?.message ?? "plugin server sent neither a result nor an error"))
                    }
                state.withLock { $0.pending.removeValue(forKey: id) }?.resume(returning: outcome)
            }
        }
        // End of stream: the child exited or crashed.
        process.waitUntilExit()
        let how =
            process.terminationReason == .uncaughtSignal
            ? "crashed (signal \(process.terminationStatus))" : "exited with status \(process.terminationStatus)"
        let reason = "plugin \(manifest.id) (isolated process \(process.processIdentifier)) \(how)"
        logger.error("isolated plugin is gone", metadata: ["plugin": "\(manifest.id)", "reason": "\(how)"])
        let orphans = state.withLock { s -> [CheckedContinuation<Result<Data, ContainariumError>, Never>] in
            s.dead = reason
            defer { s.pending.removeAll() }
            return Array(s.pending.values)
        }
        for c in orphans { c.resume(returning: .failure(ContainariumError(.unavailable, reason))) }
    }

    public func call(extension extensionID: String, method: String, request: Data) async throws(ContainariumError) -> Data {
        if extensionID.isEmpty { return try await unmeasuredCall(extension: extensionID, method: method, request: request) }
        return try await PluginCallMetrics.measure(plugin: manifest.id, extension: extensionID, function: method) { () async throws(ContainariumError) -> Data in
            try await unmeasuredCall(extension: extensionID, method: method, request: request)
        }
    }

    func unmeasuredCall(extension extensionID: String, method: String, request: Data) async throws(ContainariumError) -> Data {
        if Task.isCancelled { throw ContainariumError(.cancelled, "\(extensionID).\(method) was cancelled before it started") }
        guard extensionID.isEmpty || provided.contains(extensionID) else {
            throw ContainariumError(.unsupported, "plugin \(manifest.id) does not provide \(extensionID)")
        }
        let id = state.withLock { s -> UInt64 in
            defer { s.nextID += 1 }
            return s.nextID
        }
        let message = HostMessage(id: id, extension: extensionID, method: method, request: String(decoding: request, as: UTF8.self))
        let writer = self.writer
        let outcome = await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Result<Data, ContainariumError>, Never>) in
                let dead = state.withLock { s -> String? in
                    if s.dead == nil { s.pending[id] = c }
                    return s.dead
                }
                if let dead {
                    c.resume(returning: .failure(ContainariumError(.unavailable, dead)))
                } else if !writer.send(message) {
                    state.withLock { $0.pending.removeValue(forKey: id) }?
                        .resume(returning: .failure(ContainariumError(.unavailable, "plugin \(manifest.id): its process is gone")))
                }
            }
        } onCancel: {
            _ = writer.send(HostMessage(cancel: id))
        }
        return try outcome.get()
    }

    public func health() async -> HealthReport {
        do {
            return try WireJSON.decode(HealthReport.self, from: await call(extension: "", method: "health", request: Data("{}".utf8)))
        } catch {
            return HealthReport(status: "down", detail: error.description)
        }
    }
}

/// The child side: `containarium plugin serve DIR`. Loads the plugin in this (child) process
/// and serves calls from stdin until the host closes it.
public enum PluginServer {
    public static func serve(directory: URL, logger: Logger) async -> Int32 {
        let reader = LineReader(fd: 0)
        let writer = LineWriter(fd: 1)
        guard let first = reader.next(), let hello = try? JSONDecoder().decode(HostMessage.self, from: first) else {
            _ = writer.send(ChildMessage(failed: "plugin server: no configuration received"))
            return 2
        }
        let manifest: PluginManifest
        do { manifest = try PluginManifest.load(from: directory) } catch {
            _ = writer.send(ChildMessage(failed: error.message))
            return 1
        }
        let config = hello.config.flatMap { try? WireJSON.decode(JSONValue.self, from: Data($0.utf8)) } ?? .object([:])
        // Events go out synchronously, on the plugin's thread, so they precede the result of
        // the call that emitted them.
        let events = EventBus(tap: { e in
            _ = writer.send(ChildMessage(event: .init(type: e.type, json: String(decoding: e.json, as: UTF8.self))))
        })
        let settings = PluginSettings(plugins: [manifest.id: .init(enabled: true, config: config)])
        let loader = PluginLoader(searchPaths: [], settings: settings, node: hello.node ?? "", logger: logger, events: events)
        let record = loader.load(manifest: manifest, directory: directory)
        guard let plugin = record.plugin else {
            if case .failed(let why) = record.state { _ = writer.send(ChildMessage(failed: why)) }
            return 1
        }
        let provides = ExtensionMethods.known.keys.sorted().filter { plugin.provides($0) }
        _ = writer.send(ChildMessage(ready: .init(abi: plugin.abiVersion, provides: provides)))

        // Serve until stdin closes.
        let running = RunningCalls()
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                while let line = reader.next() {
                    guard let msg = try? JSONDecoder().decode(HostMessage.self, from: line) else { continue }
                    if let cancel = msg.cancel {
                        running.cancel(cancel)
                        continue
                    }
                    guard let id = msg.id, let method = msg.method else { continue }
                    let request = Data((msg.request ?? "{}").utf8)
                    let task = Task {
                        let reply: ChildMessage
                        do throws(ContainariumError) {
                            let data: Data
                            if method == "health", (msg.extension ?? "").isEmpty {
                                data = try WireJSON.encode(await plugin.health())
                            } else {
                                data = try await plugin.call(extension: msg.extension ?? "", method: method, request: request)
                            }
                            reply = ChildMessage(id: id, ok: String(decoding: data, as: UTF8.self))
                        } catch {
                            reply = ChildMessage(id: id, error: .init(code: error.code.rawValue, message: error.description))
                        }
                        _ = writer.send(reply)
                        running.finished(id)
                    }
                    running.started(id, task)
                }
                done.resume()
            }
            thread.name = "plugin-server-stdin"
            thread.start()
        }
        return 0
    }
}

/// The calls a plugin server is running, by request id (for cancellation).
final class RunningCalls: Sendable {
    private struct State {
        var tasks: [UInt64: Task<Void, Never>] = [:]
        var finishedEarly: Set<UInt64> = []
    }

    private let state = Mutex(State())

    /// Record a started call, unless it has already finished (tasks start at once).
    func started(_ id: UInt64, _ task: Task<Void, Never>) {
        state.withLock { s in
            if s.finishedEarly.remove(id) == nil { s.tasks[id] = task }
        }
    }

    func finished(_ id: UInt64) {
        state.withLock { s in
            if s.tasks.removeValue(forKey: id) == nil { s.finishedEarly.insert(id) }
        }
    }

    func cancel(_ id: UInt64) { state.withLock { $0.tasks[id] }?.cancel() }
}
