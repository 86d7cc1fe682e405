import ContainariumCore
import Foundation
public import PluginABI
import PluginKit

// The C ABI surface of the fake-instances plugin, glued exactly like Plugins/IncusLXC: one
// exported entry function, static tables, PluginKit's decode/run/complete-once per call.

let pluginID = "fake-instances"
let pluginVersion = "1.0.0"

final class FakePluginInstance: PluginInstance {
    let label = "fake-instances-op"
    let backend: FakeBackend
    let host: HostServices
    let operations = OperationRegistry()

    init(backend: FakeBackend, host: HostServices) {
        self.backend = backend
        self.host = host
    }

    /// Journal the call, then run it like every other Swift plugin does.
    func call<Request: Codable & Sendable, Response: Encodable & Sendable>(
        _ method: String, _ req: UnsafePointer<CChar>?, _ len: Int, _ op: UInt64, _ done: ctm_completion_fn?,
        _ ud: UnsafeMutableRawPointer?, _ err: UnsafeMutablePointer<ctm_error>?,
        _ body: @escaping @Sendable (Request, OperationContext) throws(ContainariumError) -> Response
    ) -> ctm_status {
        let backend = self.backend
        return run(req, len, op, done, ud, err) { (r: Request, ctx) throws(ContainariumError) -> Response in
            backend.journal(method, r)
            return try body(r, ctx)
        }
    }
}

nonisolated(unsafe) private let instancesTable: UnsafeMutablePointer<ctm_instances_v1> = {
    var t = ctm_instances_v1()
    t.struct_size = UInt32(MemoryLayout<ctm_instances_v1>.size)
    t.struct_version = 1
    t.create = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("create", req, len, op, done, ud, err) { (r: InstanceCreateRequest, ctx) throws(ContainariumError) in try p.backend.create(r, ctx) } }
    }
    t.remove = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("remove", req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.remove(r); return Empty() } }
    }
    t.start = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("start", req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.changeState(r, .start) } }
    }
    t.stop = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("stop", req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.changeState(r, .stop) } }
    }
    t.restart = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("restart", req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.changeState(r, .restart) } }
    }
    t.list = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("list", req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in p.backend.list() } }
    }
    t.info = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("info", req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.info(r.name) } }
    }
    t.resize = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("resize", req, len, op, done, ud, err) { (r: ResizeRequest, _) throws(ContainariumError) in try p.backend.resize(r) } }
    }
    t.exec = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("exec", req, len, op, done, ud, err) { (r: ExecRequest, _) throws(ContainariumError) in try p.backend.exec(r) } }
    }
    t.capacity = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("capacity", req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in p.backend.capacity() } }
    }
    t.watch = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.call("watch", req, len, op, done, ud, err) { (_: Empty, ctx) throws(ContainariumError) -> Empty in try p.backend.watch(ctx) } }
    }
    let p = UnsafeMutablePointer<ctm_instances_v1>.allocate(capacity: 1)
    p.initialize(to: t)
    return p
}()

nonisolated(unsafe) private let pluginTable: UnsafeMutablePointer<ctm_plugin> = {
    var t = ctm_plugin()
    t.struct_size = UInt32(MemoryLayout<ctm_plugin>.size)
    t.struct_version = 1
    t.abi_major = CTM_ABI_MAJOR
    t.abi_minor = CTM_ABI_MINOR
    t.id = pluginID.staticCString
    t.version = pluginVersion.staticCString
    t.initialize = { hostPtr, configJSON, configLen, out, err in
        guard let hostPtr, let out else { return PluginCall.fail(err, .invalid("initialize needs host services and an out pointer")) }
        let host = HostServices(hostPtr)
        let data = configJSON.map { Data(bytes: $0, count: configLen) } ?? Data()
        let config: FakeBackend.Config
        do throws(ContainariumError) {
            config = try WireJSON.decode(FakeBackend.Config.self, from: data.isEmpty ? Data("{}".utf8) : data)
        } catch {
            return PluginCall.fail(err, ContainariumError(.invalidArgument, "fake-instances configuration: \(error.message)"))
        }
        if let why = config.failInitialize {
            return PluginCall.fail(err, ContainariumError(.failedPrecondition, why))
        }
        let instance = FakePluginInstance(backend: FakeBackend(config: config, host: host), host: host)
        out.pointee = Unmanaged.passRetained(instance).toOpaque()
        host.log(.info, "fake-instances \(pluginVersion) ready (node \(config.node ?? FakeBackend.defaultNode))")
        return CTM_OK
    }
    t.get_extension = { _, id in
        guard let id else { return nil }
        return String(cString: id) == CTM_EXT_INSTANCES_V1 ? UnsafeRawPointer(instancesTable) : nil
    }
    t.cancel = { inst, op in FakePluginInstance.from(inst)?.operations.cancel(op) }
    t.health = { inst, req, len, op, done, ud, err in
        FakePluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in HealthReport(status: "ok", detail: "in memory") } }
    }
    t.shutdown = { inst in
        guard let inst else { return }
        let plugin = Unmanaged<FakePluginInstance>.fromOpaque(inst)
        plugin.takeUnretainedValue().operations.cancelAll()
        plugin.release()
    }
    let p = UnsafeMutablePointer<ctm_plugin>.allocate(capacity: 1)
    p.initialize(to: t)
    return p
}()

/// The one exported symbol. Returns the table for ABI major 1, NULL for anything else.
@_cdecl("containarium_plugin_entry")
public func containarium_plugin_entry(_ major: UInt32, _ minor: UInt32) -> UnsafePointer<ctm_plugin>? {
    guard major == CTM_ABI_MAJOR else { return nil }
    return UnsafePointer(pluginTable)
}
