public import PluginABI
public import ContainariumCore
public import Foundation
import Synchronization

// The C tables of a Swift plugin, built here once for every plugin: the plugin table and one
// table per extension the host knows. A plugin lists the methods it serves (`ServedPlugin`)
// and writes only its `initialize` (it alone knows its configuration and its type) and the
// entry function.
//
// Every slot is a C function that finds the instance behind `void *instance` and dispatches by
// extension id and method name; a method the instance does not serve is a NULL slot, and an
// extension it does not serve is a NULL table, as the ABI wants.

/// One method a Swift plugin serves: decode the request, run on a thread of its own, encode,
/// complete exactly once.
public struct PluginMethod: Sendable {
    typealias Invoke = @Sendable (
        any PluginInstance, UnsafePointer<CChar>?, Int, UInt64, ctm_completion_fn?, UnsafeMutableRawPointer?, UnsafeMutablePointer<ctm_error>?
    ) -> ctm_status
    let invoke: Invoke

    /// A method answering JSON (`Request` and `Response` as in docs/schemas).
    public static func run<Request: Decodable & Sendable, Response: Encodable & Sendable>(
        _ body: @escaping @Sendable (Request, OperationContext) throws(ContainariumError) -> Response
    ) -> PluginMethod {
        PluginMethod { p, req, len, op, done, ud, err in p.run(req, len, op, done, ud, err, body) }
    }

    /// A method that also hands over a descriptor the host will own (console/1 `open`).
    public static func handingOver<Request: Decodable & Sendable, Response: Encodable & Sendable>(
        _ body: @escaping @Sendable (Request, OperationContext) throws(ContainariumError) -> (Response, Int32)
    ) -> PluginMethod {
        PluginMethod { p, req, len, op, done, ud, err in
            PluginCall.runHandingOver(
                request: req, length: len, operation: op, completion: done, userData: ud, error: err, host: p.host, registry: p.operations, body)
        }
    }
}

/// A Swift plugin instance whose C tables PluginKit builds.
public protocol ServedPlugin: PluginInstance {
    /// The methods it serves, by extension id (`CTM_EXT_INSTANCES_V1`) and method name (the
    /// table's field name: "create", "set_keys"); fixed for the life of the instance.
    var methods: [String: [String: PluginMethod]] { get }
    /// What `health` answers: {"status": "ok"|"degraded"|"down", "detail": "…"} and more.
    associatedtype Health: Encodable & Sendable
    /// The plugin table's `health`.
    func health() -> Health
    /// Stop background work at `shutdown` (operations in flight are cancelled by PluginKit).
    func stop()
}

extension ServedPlugin {
    public func stop() {}

    func serveHealth(
        _ req: UnsafePointer<CChar>?, _ len: Int, _ op: UInt64, _ done: ctm_completion_fn?, _ ud: UnsafeMutableRawPointer?,
        _ err: UnsafeMutablePointer<ctm_error>?
    ) -> ctm_status {
        run(req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in self.health() }
    }
}

/// The tables PluginKit builds.
public enum PluginTables {
    public typealias Initialize = @convention(c) (
        UnsafePointer<ctm_host_services>?, UnsafePointer<CChar>?, Int, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
        UnsafeMutablePointer<ctm_error>?
    ) -> ctm_status

    /// The plugin table (static storage, never freed): `initialize` is the plugin's own; the
    /// rest is served through `ServedPlugin`.
    public static func plugin(id: String, version: String, initialize: Initialize) -> UnsafePointer<ctm_plugin> {
        var t = ctm_plugin()
        t.struct_size = UInt32(MemoryLayout<ctm_plugin>.size)
        t.struct_version = 1
        t.abi_major = CTM_ABI_MAJOR
        t.abi_minor = CTM_ABI_MINOR
        t.id = id.staticCString
        t.version = version.staticCString
        t.initialize = initialize
        t.get_extension = { inst, id in
            guard let p = served(inst), let id else { return nil }
            return PluginTables.table(for: p, String(cString: id))
        }
        t.cancel = { inst, op in served(inst)?.operations.cancel(op) }
        t.health = { inst, req, len, op, done, ud, err in
            guard let p = served(inst) else { return PluginCall.fail(err, .invalid("instance pointer is NULL")) }
            return p.serveHealth(req, len, op, done, ud, err)
        }
        t.shutdown = { inst in
            guard let inst else { return }
            let object = Unmanaged<AnyObject>.fromOpaque(inst)
            if let p = object.takeUnretainedValue() as? any ServedPlugin {
                p.stop()
                p.operations.cancelAll()
            }
            // Operations still running hold the instance until they complete.
            object.release()
        }
        let p = UnsafeMutablePointer<ctm_plugin>.allocate(capacity: 1)
        p.initialize(to: t)
        return UnsafePointer(p)
    }

    /// The body of a Swift plugin's `initialize`: copy the host services, decode the
    /// configuration (`{}` when empty), make the instance and hand the host a retained pointer.
    public static func initialize<P: ServedPlugin>(
        _ hostPointer: UnsafePointer<ctm_host_services>?, _ config: UnsafePointer<CChar>?, _ length: Int,
        _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ errorOut: UnsafeMutablePointer<ctm_error>?,
        _ make: (HostServices, Data) throws(ContainariumError) -> P
    ) -> ctm_status {
        guard let hostPointer, let out else { return PluginCall.fail(errorOut, .invalid("initialize needs host services and an out pointer")) }
        let host = HostServices(hostPointer)
        let data = config.map { Data(bytes: $0, count: length) } ?? Data()
        do throws(ContainariumError) {
            let instance = try make(host, data.isEmpty ? Data("{}".utf8) : data)
            out.pointee = Unmanaged.passRetained(instance).toOpaque()
            return CTM_OK
        } catch {
            return PluginCall.fail(errorOut, error)
        }
    }

    // MARK: - extension tables

    /// A table depends only on the extension and the methods served (its slots are the same
    /// trampolines for every instance): never on an instance, whose address a later one may reuse.
    private struct Key: Hashable {
        let extensionID: String
        let methods: Set<String>
    }

    /// Tables built so far, per extension and served methods: allocated once, never freed (the
    /// host may keep a table pointer for the life of any instance); a handful per process.
    private static let built = Mutex<[Key: UncheckedTablePointer]>([:])

    static func table(for p: any ServedPlugin, _ extensionID: String) -> UnsafeRawPointer? {
        guard let served = p.methods[extensionID], !served.isEmpty else { return nil }
        let key = Key(extensionID: extensionID, methods: Set(served.keys))
        return built.withLock { tables -> UncheckedTablePointer? in
            if let t = tables[key] { return t }
            guard let made = make(extensionID, key.methods) else { return nil }
            tables[key] = made
            return made
        }?.raw
    }

    private static func allocate<T>(_ value: T) -> UncheckedTablePointer {
        let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
        p.initialize(to: value)
        return UncheckedTablePointer(raw: UnsafeRawPointer(p))
    }

    /// The table of one extension with a slot for each served method (NULL for the others).
    private static func make(_ extensionID: String, _ s: Set<String>) -> UncheckedTablePointer? {
        switch extensionID {
        case CTM_EXT_INSTANCES_V1:
            var t = ctm_instances_v1()
            t.struct_size = UInt32(MemoryLayout<ctm_instances_v1>.size)
            t.struct_version = 1
            if s.contains("create") { t.create = { dispatch(CTM_EXT_INSTANCES_V1, "create", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("remove") { t.remove = { dispatch(CTM_EXT_INSTANCES_V1, "remove", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("start") { t.start = { dispatch(CTM_EXT_INSTANCES_V1, "start", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("stop") { t.stop = { dispatch(CTM_EXT_INSTANCES_V1, "stop", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("restart") { t.restart = { dispatch(CTM_EXT_INSTANCES_V1, "restart", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("list") { t.list = { dispatch(CTM_EXT_INSTANCES_V1, "list", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("info") { t.info = { dispatch(CTM_EXT_INSTANCES_V1, "info", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("resize") { t.resize = { dispatch(CTM_EXT_INSTANCES_V1, "resize", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("exec") { t.exec = { dispatch(CTM_EXT_INSTANCES_V1, "exec", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("capacity") { t.capacity = { dispatch(CTM_EXT_INSTANCES_V1, "capacity", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("watch") { t.watch = { dispatch(CTM_EXT_INSTANCES_V1, "watch", $0, $1, $2, $3, $4, $5, $6) } }
            return allocate(t)
        case CTM_EXT_ACCOUNTS_V1:
            var t = ctm_accounts_v1()
            t.struct_size = UInt32(MemoryLayout<ctm_accounts_v1>.size)
            t.struct_version = 1
            if s.contains("create") { t.create = { dispatch(CTM_EXT_ACCOUNTS_V1, "create", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("set_keys") { t.set_keys = { dispatch(CTM_EXT_ACCOUNTS_V1, "set_keys", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("list_keys") { t.list_keys = { dispatch(CTM_EXT_ACCOUNTS_V1, "list_keys", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("add_collaborator") {
                t.add_collaborator = { dispatch(CTM_EXT_ACCOUNTS_V1, "add_collaborator", $0, $1, $2, $3, $4, $5, $6) }
            }
            if s.contains("remove_collaborator") {
                t.remove_collaborator = { dispatch(CTM_EXT_ACCOUNTS_V1, "remove_collaborator", $0, $1, $2, $3, $4, $5, $6) }
            }
            return allocate(t)
        case CTM_EXT_FILESYSTEM_V1:
            var t = ctm_filesystem_v1()
            t.struct_size = UInt32(MemoryLayout<ctm_filesystem_v1>.size)
            t.struct_version = 1
            if s.contains("locate") { t.locate = { dispatch(CTM_EXT_FILESYSTEM_V1, "locate", $0, $1, $2, $3, $4, $5, $6) } }
            return allocate(t)
        case CTM_EXT_CREDENTIALS_V1:
            var t = ctm_credentials_v1()
            t.struct_size = UInt32(MemoryLayout<ctm_credentials_v1>.size)
            t.struct_version = 1
            if s.contains("get") { t.get = { dispatch(CTM_EXT_CREDENTIALS_V1, "get", $0, $1, $2, $3, $4, $5, $6) } }
            return allocate(t)
        case CTM_EXT_CONSOLE_V1:
            var t = ctm_console_v1()
            t.struct_size = UInt32(MemoryLayout<ctm_console_v1>.size)
            t.struct_version = 1
            if s.contains("open") { t.open = { dispatch(CTM_EXT_CONSOLE_V1, "open", $0, $1, $2, $3, $4, $5, $6) } }
            return allocate(t)
        case CTM_EXT_SCANNER_V1:
            var t = ctm_scanner_v1()
            t.struct_size = UInt32(MemoryLayout<ctm_scanner_v1>.size)
            t.struct_version = 1
            if s.contains("scan") { t.scan = { dispatch(CTM_EXT_SCANNER_V1, "scan", $0, $1, $2, $3, $4, $5, $6) } }
            return allocate(t)
        case CTM_EXT_DEVICES_GPU_V1:
            var t = ctm_devices_gpu_v1()
            t.struct_size = UInt32(MemoryLayout<ctm_devices_gpu_v1>.size)
            t.struct_version = 1
            if s.contains("list") { t.list = { dispatch(CTM_EXT_DEVICES_GPU_V1, "list", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("attach") { t.attach = { dispatch(CTM_EXT_DEVICES_GPU_V1, "attach", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("detach") { t.detach = { dispatch(CTM_EXT_DEVICES_GPU_V1, "detach", $0, $1, $2, $3, $4, $5, $6) } }
            return allocate(t)
        case CTM_EXT_NODE_LIFECYCLE_V1:
            var t = ctm_node_lifecycle_v1()
            t.struct_size = UInt32(MemoryLayout<ctm_node_lifecycle_v1>.size)
            t.struct_version = 1
            if s.contains("status") { t.status = { dispatch(CTM_EXT_NODE_LIFECYCLE_V1, "status", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("start") { t.start = { dispatch(CTM_EXT_NODE_LIFECYCLE_V1, "start", $0, $1, $2, $3, $4, $5, $6) } }
            if s.contains("stop") { t.stop = { dispatch(CTM_EXT_NODE_LIFECYCLE_V1, "stop", $0, $1, $2, $3, $4, $5, $6) } }
            return allocate(t)
        default:
            return nil
        }
    }
}

/// The Swift plugin behind `void *instance`, whatever its class.
private func served(_ raw: UnsafeMutableRawPointer?) -> (any ServedPlugin)? {
    guard let raw else { return nil }
    return Unmanaged<AnyObject>.fromOpaque(raw).takeUnretainedValue() as? any ServedPlugin
}

/// What every slot of every extension table does.
private func dispatch(
    _ extensionID: String, _ method: String, _ inst: UnsafeMutableRawPointer?, _ req: UnsafePointer<CChar>?, _ len: Int, _ op: UInt64,
    _ done: ctm_completion_fn?, _ ud: UnsafeMutableRawPointer?, _ err: UnsafeMutablePointer<ctm_error>?
) -> ctm_status {
    guard let p = served(inst) else { return PluginCall.fail(err, .invalid("instance pointer is NULL")) }
    guard let m = p.methods[extensionID]?[method] else {
        return PluginCall.fail(err, ContainariumError(.unsupported, "\(extensionID) \(method) is not served by this plugin"))
    }
    return m.invoke(p, req, len, op, done, ud, err)
}

/// A table pointer in static storage (immutable once built).
struct UncheckedTablePointer: @unchecked Sendable {
    let raw: UnsafeRawPointer
}
