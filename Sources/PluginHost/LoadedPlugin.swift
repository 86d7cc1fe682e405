import PluginABI
public import ContainariumCore
public import Foundation
import Logging
import Synchronization

/// A plugin whose library is loaded and whose instance is initialised. Calls cross the C ABI
/// with JSON payloads and complete through `hostCompletion`; Swift callers just `await`.
public final class LoadedPlugin: PluginEndpoint, @unchecked Sendable {
    // @unchecked: the pointers below are written once in init and only read afterwards; the
    // plugin tables they point at are immutable static storage owned by the library.
    public let manifest: PluginManifest
    public let directory: URL
    let table: UnsafePointer<ctm_plugin>
    let instance: UnsafeMutableRawPointer?
    let logger: Logger
    /// Keeps every call into the plugin (methods, get_extension, cancel) from overlapping or
    /// following `shutdown`.
    private let gate = CallGate()

    init(manifest: PluginManifest, directory: URL, table: UnsafePointer<ctm_plugin>, instance: UnsafeMutableRawPointer?, logger: Logger) {
        self.manifest = manifest
        self.directory = directory
        self.table = table
        self.instance = instance
        self.logger = logger
    }

    /// The ABI version the library's table declares.
    public var abiVersion: String {
        let t = DeclaredStruct(table)
        return "\(t.field(\.abi_major) ?? 0).\(t.field(\.abi_minor) ?? 0)"
    }

    public var isolation: String { "in-process" }

    /// Dispatch a named method to the function pointer in the extension's table, reading only
    /// within the table's declared size.
    public func call(extension extensionID: String, method: String, request: Data) async throws(ContainariumError) -> Data {
        if extensionID.isEmpty { return try await unmeasuredCall(extension: extensionID, method: method, request: request) }
        return try await PluginCallMetrics.measure(plugin: manifest.id, extension: extensionID, function: method) { () async throws(ContainariumError) -> Data in
            try await unmeasuredCall(extension: extensionID, method: method, request: request)
        }
    }

    func unmeasuredCall(extension extensionID: String, method: String, request: Data) async throws(ContainariumError) -> Data {
        guard let raw = extensionTable(extensionID) else {
            throw ContainariumError(.unsupported, "plugin \(manifest.id) does not provide \(extensionID)")
        }
        let fn: ctm_call_fn?
        switch extensionID {
        case CTM_EXT_INSTANCES_V1:
            let t = UncheckedTable<ctm_instances_v1>(raw)
            let fields: [String: KeyPath<ctm_instances_v1, ctm_call_fn?>] = [
                "create": \.create, "remove": \.remove, "start": \.start, "stop": \.stop, "restart": \.restart,
                "list": \.list, "info": \.info, "resize": \.resize, "exec": \.exec, "capacity": \.capacity, "watch": \.watch,
            ]
            fn = fields[method].flatMap { t.field($0) }
        case CTM_EXT_SCANNER_V1:
            fn = method == "scan" ? UncheckedTable<ctm_scanner_v1>(raw).field(\.scan) : nil
        case CTM_EXT_DEVICES_GPU_V1:
            let t = UncheckedTable<ctm_devices_gpu_v1>(raw)
            let fields: [String: KeyPath<ctm_devices_gpu_v1, ctm_call_fn?>] = ["list": \.list, "attach": \.attach, "detach": \.detach]
            fn = fields[method].flatMap { t.field($0) }
        case CTM_EXT_ACCOUNTS_V1:
            let t = UncheckedTable<ctm_accounts_v1>(raw)
            let fields: [String: KeyPath<ctm_accounts_v1, ctm_call_fn?>] = [
                "create": \.create, "set_keys": \.set_keys, "list_keys": \.list_keys,
                "add_collaborator": \.add_collaborator, "remove_collaborator": \.remove_collaborator,
            ]
            fn = fields[method].flatMap { t.field($0) }
        case CTM_EXT_FILESYSTEM_V1:
            fn = method == "locate" ? UncheckedTable<ctm_filesystem_v1>(raw).field(\.locate) : nil
        case CTM_EXT_CREDENTIALS_V1:
            fn = method == "get" ? UncheckedTable<ctm_credentials_v1>(raw).field(\.get) : nil
        case CTM_EXT_NODE_LIFECYCLE_V1:
            let t = UncheckedTable<ctm_node_lifecycle_v1>(raw)
            let fields: [String: KeyPath<ctm_node_lifecycle_v1, ctm_call_fn?>] = ["status": \.status, "start": \.start, "stop": \.stop]
            fn = fields[method].flatMap { t.field($0) }
        default:
            throw ContainariumError(.unsupported, "this host does not know extension \(extensionID)")
        }
        return try await invoke(fn, method: "\(extensionID).\(method)", request: request)
    }

    /// The raw table of an extension, or nil when the plugin does not provide it.
    func extensionTable(_ id: String) -> UnsafeRawPointer? {
        guard let get = DeclaredStruct(table).field(\.get_extension) ?? nil else { return nil }
        return gate.enter { id.withCString { get(instance, $0) } } ?? nil
    }

    /// Whether the plugin provides an extension (asked of the library, not the manifest).
    public func provides(_ extensionID: String) -> Bool { extensionTable(extensionID) != nil }

    /// Invoke one `ctm_call_fn` and await its completion. Task cancellation reaches the plugin
    /// through its `cancel` function; the completion still arrives exactly once.
    func invoke(_ fn: ctm_call_fn?, method: String, request: Data) async throws(ContainariumError) -> Data {
        let (data, fd) = try await invokeWithDescriptor(fn, method: method, request: request)
        // Only console/1 hands over descriptors; one anywhere else is closed, never leaked.
        if let fd { close(fd) }
        return data
    }

    /// Call a console/1 method: the JSON answer and the connected descriptor it hands over.
    public func callWithDescriptor(extension extensionID: String, method: String, request: Data) async throws(ContainariumError) -> (Data, Int32) {
        guard extensionID == CTM_EXT_CONSOLE_V1, method == "open", let raw = extensionTable(extensionID) else {
            throw ContainariumError(.unsupported, "plugin \(manifest.id) hands over no descriptor for \(extensionID) \(method)")
        }
        let (data, fd) = try await invokeWithDescriptor(UncheckedTable<ctm_console_v1>(raw).field(\.open), method: "console/1.open", request: request)
        guard let fd else { throw ContainariumError(.internal, "plugin \(manifest.id) opened a console without handing over its descriptor") }
        return (data, fd)
    }

    func invokeWithDescriptor(_ fn: ctm_call_fn?, method: String, request: Data) async throws(ContainariumError) -> (Data, Int32?) {
        guard let fn else { throw ContainariumError(.unsupported, "plugin \(manifest.id) does not implement \(method)") }
        if Task.isCancelled { throw ContainariumError(.cancelled, "\(method) was cancelled before it started") }
        let op = PendingCalls.shared.makeOperationID()
        let cancel = DeclaredStruct(table).field(\.cancel) ?? nil
        let instance = UncheckedRaw(instance)
        let gate = self.gate, pluginID = manifest.id
        let outcome = await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<CallOutcome, Never>) in
                PendingCalls.shared.register(op, c)
                var err = makeError()
                let entered = gate.enter {
                    request.withUnsafeBytes { raw in
                        fn(
                            instance.raw, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count, op,
                            hostCompletion, UnsafeMutableRawPointer(bitPattern: UInt(op)), &err)
                    }
                }
                guard let status = entered else {
                    PendingCalls.shared.resume(op, with: CallOutcome(result: .failure(ContainariumError(.unavailable, "plugin \(pluginID) has been shut down"))))
                    return
                }
                if status != CTM_OK {
                    let message = withUnsafePointer(to: &err) { errorMessage($0) } ?? "\(method) was refused (status \(status))"
                    PendingCalls.shared.resume(
                        op, with: CallOutcome(result: .failure(ContainariumError(ContainariumError.Code(abiStatus: status), message))))
                }
            }
        } onCancel: {
            gate.enter { cancel?(instance.raw, op) }
        }
        logger.trace("plugin call finished", metadata: ["plugin": "\(manifest.id)", "method": "\(method)", "operation": "\(op)"])
        switch outcome.result {
        case .success(let data): return (data, outcome.fd)
        case .failure(let error):
            if let fd = outcome.fd { close(fd) }
            throw error
        }
    }

    /// The plugin's own health report.
    public func health() async -> HealthReport {
        do {
            let data = try await invoke(DeclaredStruct(table).field(\.health) ?? nil, method: "health", request: Data("{}".utf8))
            return try WireJSON.decode(HealthReport.self, from: data)
        } catch {
            return HealthReport(status: "down", detail: error.description)
        }
    }

    /// Shut the instance down, at most once, once no call into the plugin is under way; later
    /// calls fail with `unavailable` without reaching it. Completions of operations still
    /// running are delivered as usual.
    func shutdown() {
        guard gate.close() else { return }
        (DeclaredStruct(table).field(\.shutdown) ?? nil)?(instance)
    }
}

struct UncheckedRaw: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer?
    init(_ raw: UnsafeMutableRawPointer?) { self.raw = raw }
}

/// Admits calls into a plugin until it is closed; `close` waits for the calls under way to
/// return (they are quick: the ABI forbids blocking), so nothing enters the plugin after it.
final class CallGate: Sendable {
    private struct State {
        var closed = false
        var inside = 0
    }
    private let state = Mutex(State())

    /// Run `body` unless the gate is closed (then nil).
    @discardableResult
    func enter<T>(_ body: () -> T) -> T? {
        guard state.withLock({ s -> Bool in
            if s.closed { return false }
            s.inside += 1
            return true
        }) else { return nil }
        defer { state.withLock { $0.inside -= 1 } }
        return body()
    }

    /// Close the gate and wait until no call is inside; false when it was closed already.
    func close() -> Bool {
        guard state.withLock({ s -> Bool in
            if s.closed { return false }
            s.closed = true
            return true
        }) else { return false }
        while state.withLock({ $0.inside }) > 0 { usleep(1000) }
        return true
    }
}
