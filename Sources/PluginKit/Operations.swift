public import PluginABI
public import ContainariumCore
public import Foundation
import Synchronization

/// A cancellation flag for one operation, set by the host's `cancel`.
public final class CancellationFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public var isCancelled: Bool { flag.load(ordering: .acquiring) }
    public func cancel() { flag.store(true, ordering: .releasing) }
}

/// The operations a plugin instance is running, so `cancel(operation_id)` can reach them.
public final class OperationRegistry: Sendable {
    private struct State {
        var running: [UInt64: CancellationFlag] = [:]
        /// Cancels that arrived before their operation was registered (a host may cancel as
        /// soon as it has chosen the id); bounded, oldest dropped first.
        var early: [UInt64] = []
    }

    private let state = Mutex(State())
    /// Operations (each on a thread of its own) this plugin instance runs at once; past it a
    /// call is refused with CTM_E_RESOURCE_EXHAUSTED instead of starting yet another thread.
    public let maxRunning: Int
    public init(maxRunning: Int = 512) { self.maxRunning = max(1, maxRunning) }

    /// The operation's cancellation flag, or nil when `maxRunning` operations run already.
    public func register(_ id: UInt64) -> CancellationFlag? {
        let flag = CancellationFlag()
        let admitted = state.withLock { s -> Bool in
            guard s.running.count < maxRunning else { return false }
            s.running[id] = flag
            if let i = s.early.firstIndex(of: id) {
                s.early.remove(at: i)
                flag.cancel()
            }
            return true
        }
        return admitted ? flag : nil
    }

    /// Operations running now.
    public var count: Int { state.withLock { $0.running.count } }

    static func busy(_ max: Int) -> ContainariumError {
        ContainariumError(.resourceExhausted, "the plugin runs \(max) operations at once already (its bound); try again when one ends")
    }

    public func finish(_ id: UInt64) { _ = state.withLock { $0.running.removeValue(forKey: id) } }

    public func cancel(_ id: UInt64) {
        let flag = state.withLock { s -> CancellationFlag? in
            if let f = s.running[id] { return f }
            s.early.append(id)
            if s.early.count > 256 { s.early.removeFirst(s.early.count - 256) }
            return nil
        }
        flag?.cancel()
    }

    public func cancelAll() { state.withLock { Array($0.running.values) }.forEach { $0.cancel() } }
}

/// What a running operation can see: its id, cancellation, and a way to report progress.
public struct OperationContext: Sendable {
    public let id: UInt64
    public let host: HostServices
    private let flag: CancellationFlag

    public init(id: UInt64, host: HostServices, flag: CancellationFlag) {
        self.id = id
        self.host = host
        self.flag = flag
    }

    public var isCancelled: Bool { flag.isCancelled }

    public func checkCancelled() throws(ContainariumError) {
        if flag.isCancelled { throw ContainariumError(.cancelled, "operation \(id) was cancelled") }
    }

    /// Emit an `instance.progress` event for this operation (and a debug log line).
    public func progress(instance: String, step: Int, of total: Int, _ message: String) {
        host.log(.debug, "operation \(id) \(instance) step \(step)/\(total): \(message)")
        host.emit(type: "instance.progress", ProgressEvent(operation: id, instance: instance, step: step, total: total, message: message))
    }
}

/// A raw pointer carried across threads; the ABI guarantees the host keeps it valid.
struct UncheckedPointer: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer?
}

/// Glue between `ctm_call_fn` and Swift: decode the request, run the body on a background
/// thread, and call the completion exactly once with JSON or an error.
public enum PluginCall {
    /// Fill a caller-owned error struct.
    /// Writes only inside the `struct_size` the host declared for it.
    public static func fail(_ error: UnsafeMutablePointer<ctm_error>?, _ e: ContainariumError) -> ctm_status {
        let status = e.code.abiStatus
        guard let error else { return status }
        let raw = UnsafeMutableRawPointer(error)
        let declared = Int(raw.load(as: UInt32.self))
        if declared >= MemoryLayout<ctm_error>.size {
            e.description.withCString { ctm_error_set(error, status, $0) }
            return status
        }
        // A shorter error struct than this plugin knows: fill what lies inside it.
        if let offset = MemoryLayout<ctm_error>.offset(of: \.status), offset + 4 <= declared {
            raw.storeBytes(of: status, toByteOffset: offset, as: ctm_status.self)
        }
        if let offset = MemoryLayout<ctm_error>.offset(of: \.message), declared > offset {
            let room = declared - offset
            let bytes = Array(e.description.utf8.prefix(room - 1)) + [0]
            bytes.withUnsafeBytes { b in
                if let base = b.baseAddress { (raw + offset).copyMemory(from: base, byteCount: b.count) }
            }
        }
        return status
    }

    /// Deliver one result through a completion function (with a descriptor the host will own,
    /// for console/1).
    public static func complete(
        _ completion: ctm_completion_fn, _ userData: UnsafeMutableRawPointer?, _ outcome: Result<Data, ContainariumError>, fd: Int32 = -1
    ) {
        var result = ctm_result()
        result.struct_size = UInt32(MemoryLayout<ctm_result>.size)
        result.struct_version = 1
        result.fd = fd
        switch outcome {
        case .success(let data):
            result.status = CTM_OK
            data.withUnsafeBytes { raw in
                result.json = raw.baseAddress?.assumingMemoryBound(to: CChar.self)
                result.json_len = raw.count
                completion(userData, &result)
            }
        case .failure(let e):
            var err = ctm_error()
            err.struct_size = UInt32(MemoryLayout<ctm_error>.size)
            err.struct_version = 1
            e.description.withCString { ctm_error_set(&err, e.code.abiStatus, $0) }
            result.status = e.code.abiStatus
            withUnsafePointer(to: &err) { ep in
                result.error = ep
                completion(userData, &result)
            }
        }
    }

    /// Decode `Request`, run `body` on a thread of its own, complete with the encoded `Response`.
    ///
    /// A thread per operation, not a Dispatch queue: plugin work blocks (sockets, child
    /// processes) for seconds, and Dispatch's concurrent queues are bounded by the CPU count,
    /// so a few slow operations would hold up every other one.
    public static func run<Request: Decodable & Sendable, Response: Encodable & Sendable>(
        request: UnsafePointer<CChar>?, length: Int, operation: UInt64,
        completion: ctm_completion_fn?, userData: UnsafeMutableRawPointer?, error: UnsafeMutablePointer<ctm_error>?,
        host: HostServices, registry: OperationRegistry, label: String = "containarium-plugin-op",
        _ body: @escaping @Sendable (Request, OperationContext) throws(ContainariumError) -> Response
    ) -> ctm_status {
        guard let completion else { return fail(error, .invalid("completion function is NULL")) }
        let data: Data
        if let request, length > 0 {
            data = Data(bytes: request, count: length)
        } else {
            data = Data("{}".utf8)
        }
        let decoded: Request
        do {
            decoded = try WireJSON.decode(Request.self, from: data)
        } catch let decodeError {
            return fail(error, decodeError)
        }
        guard let flag = registry.register(operation) else { return fail(error, OperationRegistry.busy(registry.maxRunning)) }
        let ctx = OperationContext(id: operation, host: host, flag: flag)
        let box = UncheckedPointer(raw: userData)
        let thread = Thread {
            let outcome: Result<Data, ContainariumError>
            do throws(ContainariumError) {
                let response = try body(decoded, ctx)
                outcome = .success(try WireJSON.encode(response))
            } catch {
                outcome = .failure(error)
            }
            registry.finish(operation)
            complete(completion, box.raw, outcome)
        }
        thread.name = "\(label)-\(operation)"
        thread.stackSize = 1 << 20
        thread.start()
        return CTM_OK
    }
}

extension PluginCall {
    /// Like `run`, for a method that hands over a descriptor with its answer (console/1 open).
    public static func runHandingOver<Request: Decodable & Sendable, Response: Encodable & Sendable>(
        request: UnsafePointer<CChar>?, length: Int, operation: UInt64,
        completion: ctm_completion_fn?, userData: UnsafeMutableRawPointer?, error: UnsafeMutablePointer<ctm_error>?,
        host: HostServices, registry: OperationRegistry,
        _ body: @escaping @Sendable (Request, OperationContext) throws(ContainariumError) -> (Response, Int32)
    ) -> ctm_status {
        guard let completion else { return fail(error, .invalid("completion function is NULL")) }
        let data = request.map { Data(bytes: $0, count: length) } ?? Data("{}".utf8)
        let decoded: Request
        do {
            decoded = try WireJSON.decode(Request.self, from: data.isEmpty ? Data("{}".utf8) : data)
        } catch let decodeError {
            return fail(error, decodeError)
        }
        guard let flag = registry.register(operation) else { return fail(error, OperationRegistry.busy(registry.maxRunning)) }
        let ctx = OperationContext(id: operation, host: host, flag: flag)
        let box = UncheckedPointer(raw: userData)
        let thread = Thread {
            var fd: Int32 = -1
            let outcome: Result<Data, ContainariumError>
            do throws(ContainariumError) {
                let (response, handed) = try body(decoded, ctx)
                fd = handed
                outcome = .success(try WireJSON.encode(response))
            } catch {
                if fd >= 0 { close(fd) }
                fd = -1
                outcome = .failure(error)
            }
            registry.finish(operation)
            complete(completion, box.raw, outcome, fd: fd)
        }
        thread.name = "console-op-\(operation)"
        thread.start()
        return CTM_OK
    }
}

/// An empty JSON object, for methods that take or return nothing.
public struct Empty: Codable, Sendable, Equatable {
    public init() {}
}

extension String {
    /// A C string in static storage: allocated once, never freed (ABI tables point at it).
    public var staticCString: UnsafePointer<CChar> {
        let bytes = Array(utf8CString)
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
        p.initialize(from: bytes, count: bytes.count)
        return UnsafePointer(p)
    }
}

/// The `void *instance` of a Swift plugin: its host services and running operations. The
/// helpers below are what every table function needs: find the instance, decode, run, complete.
public protocol PluginInstance: AnyObject, Sendable {
    var host: HostServices { get }
    var operations: OperationRegistry { get }
    /// Names the threads of its operations.
    var label: String { get }
}

extension PluginInstance {
    public static func from(_ raw: UnsafeMutableRawPointer?) -> Self? {
        guard let raw else { return nil }
        return Unmanaged<Self>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Decode the request, run `body` on a thread of its own, complete exactly once.
    public func run<Request: Decodable & Sendable, Response: Encodable & Sendable>(
        _ request: UnsafePointer<CChar>?, _ length: Int, _ op: UInt64, _ completion: ctm_completion_fn?,
        _ userData: UnsafeMutableRawPointer?, _ error: UnsafeMutablePointer<ctm_error>?,
        _ body: @escaping @Sendable (Request, OperationContext) throws(ContainariumError) -> Response
    ) -> ctm_status {
        PluginCall.run(
            request: request, length: length, operation: op, completion: completion, userData: userData, error: error,
            host: host, registry: operations, label: label, body)
    }

    /// The instance behind `raw`, or a filled error when it is NULL.
    public static func dispatch(
        _ raw: UnsafeMutableRawPointer?, _ error: UnsafeMutablePointer<ctm_error>?, _ body: (Self) -> ctm_status
    ) -> ctm_status {
        guard let plugin = from(raw) else { return PluginCall.fail(error, .invalid("instance pointer is NULL")) }
        return body(plugin)
    }
}
