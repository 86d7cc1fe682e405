import ContainariumCore
import Foundation
public import PluginABI
import PluginKit

// The C ABI surface of the IncusLXC plugin: one exported entry function and static tables
// whose functions decode JSON, run the work on a thread of the plugin's own and complete once.

let pluginID = "incus-lxc"
let pluginVersion = "0.1.0"

/// One initialised plugin instance (the `void *instance` of the ABI).
final class IncusPluginInstance: PluginInstance {
    let label = "incus-lxc-op"
    let backend: IncusBackend
    let host: HostServices
    let operations = OperationRegistry()

    init(backend: IncusBackend, host: HostServices) {
        self.backend = backend
        self.host = host
    }
}

nonisolated(unsafe) private let instancesTable: UnsafeMutablePointer<ctm_instances_v1> = {
    var t = ctm_instances_v1()
    t.struct_size = UInt32(MemoryLayout<ctm_instances_v1>.size)
    t.struct_version = 1
    t.create = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceCreateRequest, ctx) throws(ContainariumError) in try p.backend.create(r, ctx) } }
    }
    t.remove = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, ctx) throws(ContainariumError) in try p.backend.remove(r, ctx); return Empty() } }
    }
    t.start = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, ctx) throws(ContainariumError) in try p.backend.changeState(r, action: "start", ctx) } }
    }
    t.stop = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, ctx) throws(ContainariumError) in try p.backend.changeState(r, action: "stop", ctx) } }
    }
    t.restart = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, ctx) throws(ContainariumError) in try p.backend.changeState(r, action: "restart", ctx) } }
    }
    t.list = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in try p.backend.list() } }
    }
    t.info = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.info(r.name) } }
    }
    t.resize = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: ResizeRequest, ctx) throws(ContainariumError) in try p.backend.resize(r, ctx) } }
    }
    t.exec = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: ExecRequest, ctx) throws(ContainariumError) in try p.backend.exec(r, ctx) } }
    }
    t.capacity = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in try p.backend.capacity() } }
    }
    t.watch = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (_: Empty, ctx) throws(ContainariumError) in try p.backend.watch(ctx) } }
    }
    let p = UnsafeMutablePointer<ctm_instances_v1>.allocate(capacity: 1)
    p.initialize(to: t)
    return p
}()

nonisolated(unsafe) private let accountsTable: UnsafeMutablePointer<ctm_accounts_v1> = {
    var t = ctm_accounts_v1()
    t.struct_size = UInt32(MemoryLayout<ctm_accounts_v1>.size)
    t.struct_version = 1
    t.create = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: AccountCreateRequest, ctx) throws(ContainariumError) in try p.backend.accountCreate(r, ctx) } }
    }
    t.set_keys = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: SetKeysRequest, ctx) throws(ContainariumError) in try p.backend.setKeys(r, ctx) } }
    }
    t.list_keys = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: AccountRef, ctx) throws(ContainariumError) in try p.backend.listKeys(r, ctx) } }
    }
    t.add_collaborator = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: CollaboratorRequest, ctx) throws(ContainariumError) in try p.backend.addCollaborator(r, ctx) } }
    }
    t.remove_collaborator = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: CollaboratorRef, ctx) throws(ContainariumError) in try p.backend.removeCollaborator(r, ctx) } }
    }
    let p = UnsafeMutablePointer<ctm_accounts_v1>.allocate(capacity: 1)
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
        let data = configJSON.map { Data(bytes: $0, count: configLen) } ?? Data("{}".utf8)
        let config: IncusBackend.Config
        do throws(ContainariumError) {
            config = try WireJSON.decode(IncusBackend.Config.self, from: data.isEmpty ? Data("{}".utf8) : data)
        } catch {
            return PluginCall.fail(err, ContainariumError(.invalidArgument, "incus-lxc configuration: \(error.message)"))
        }
        let backend = IncusBackend(config: config, host: host)
        if !FileManager.default.fileExists(atPath: backend.socketPath) {
            host.log(.warning, "Incus socket \(backend.socketPath) does not exist yet; calls will fail until incusd runs")
        }
        let instance = IncusPluginInstance(backend: backend, host: host)
        out.pointee = Unmanaged.passRetained(instance).toOpaque()
        host.log(.info, "incus-lxc \(pluginVersion) ready (socket \(backend.socketPath), pool \(backend.pool))")
        return CTM_OK
    }
    t.get_extension = { _, id in
        guard let id else { return nil }
        switch String(cString: id) {
        case CTM_EXT_INSTANCES_V1: return UnsafeRawPointer(instancesTable)
        case CTM_EXT_ACCOUNTS_V1: return UnsafeRawPointer(accountsTable)
        default: return nil
        }
    }
    t.cancel = { inst, op in IncusPluginInstance.from(inst)?.operations.cancel(op) }
    t.health = { inst, req, len, op, done, ud, err in
        IncusPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in p.backend.health() } }
    }
    t.shutdown = { inst in
        guard let inst else { return }
        let plugin = Unmanaged<IncusPluginInstance>.fromOpaque(inst)
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
