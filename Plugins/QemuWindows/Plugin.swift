import ContainariumCore
import Foundation
public import PluginABI
import PluginKit

// The C ABI surface of the qemu-windows plugin: instances/1 over QEMU/KVM virtual machines.

let pluginID = "qemu-windows"
let pluginVersion = "0.1.0"

final class VMPluginInstance: PluginInstance {
    let label = "qemu-windows-op"
    let backend: VMBackend
    let host: HostServices
    let operations = OperationRegistry()
    let supervisor = CancellationFlag()

    init(backend: VMBackend, host: HostServices) {
        self.backend = backend
        self.host = host
    }

    /// Every few seconds, restart VMs that should run but do not (crashed QEMU, host reboot).
    func startSupervisor() {
        let backend = self.backend, flag = supervisor
        let thread = Thread {
            while !flag.isCancelled {
                backend.superviseOnce()
                for _ in 0..<20 where !flag.isCancelled { usleep(100_000) }
            }
        }
        thread.name = "qemu-windows-supervisor"
        thread.start()
    }
}

nonisolated(unsafe) private let instancesTable: UnsafeMutablePointer<ctm_instances_v1> = {
    var t = ctm_instances_v1()
    t.struct_size = UInt32(MemoryLayout<ctm_instances_v1>.size)
    t.struct_version = 1
    t.create = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceCreateRequest, ctx) throws(ContainariumError) in try p.backend.create(r, ctx) } }
    }
    t.remove = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.remove(r); return Empty() } }
    }
    t.start = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.start(r.name) } }
    }
    t.stop = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.stop(r.name, force: r.force ?? false) } }
    }
    t.restart = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.restart(r.name) } }
    }
    t.list = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in p.backend.list() } }
    }
    t.info = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: InstanceRef, _) throws(ContainariumError) in try p.backend.info(r.name) } }
    }
    t.resize = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (r: ResizeRequest, _) throws(ContainariumError) in try p.backend.resize(r) } }
    }
    t.exec = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in
            p.run(req, len, op, done, ud, err) { (r: ExecRequest, _) throws(ContainariumError) -> ExecResult in
                throw ContainariumError(.unsupported, "VMs have no exec: use RDP (Windows) or the console")
            }
        }
    }
    t.capacity = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in p.backend.capacity() } }
    }
    t.watch = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (_: Empty, ctx) throws(ContainariumError) in try p.backend.watch(ctx) } }
    }
    let p = UnsafeMutablePointer<ctm_instances_v1>.allocate(capacity: 1)
    p.initialize(to: t)
    return p
}()

struct ConsoleRequest: Codable, Sendable {
    var instance: String
    var kind: String?
}

nonisolated(unsafe) private let consoleTable: UnsafeMutablePointer<ctm_console_v1> = {
    var t = ctm_console_v1()
    t.struct_size = UInt32(MemoryLayout<ctm_console_v1>.size)
    t.struct_version = 1
    t.open = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in
            PluginCall.runHandingOver(request: req, length: len, operation: op, completion: done, userData: ud, error: err, host: p.host,
                                      registry: p.operations) { (r: ConsoleRequest, _) throws(ContainariumError) -> ([String: String], Int32) in
                let (fd, proto) = try p.backend.openConsole(r.instance, kind: r.kind ?? "serial")
                return (["protocol": proto], fd)
            }
        }
    }
    let p = UnsafeMutablePointer<ctm_console_v1>.allocate(capacity: 1)
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
        let config: VMBackend.Config
        do throws(ContainariumError) {
            config = try WireJSON.decode(VMBackend.Config.self, from: data.isEmpty ? Data("{}".utf8) : data)
        } catch {
            return PluginCall.fail(err, ContainariumError(.invalidArgument, "qemu-windows configuration: \(error.message)"))
        }
        let backend = VMBackend(config: config, host: host)
        do {
            try FileManager.default.createDirectory(atPath: backend.stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            return PluginCall.fail(err, ContainariumError(.failedPrecondition, "cannot create \(backend.stateDir): \(error)"))
        }
        let instance = VMPluginInstance(backend: backend, host: host)
        if config.supervise ?? true { instance.startSupervisor() }
        out.pointee = Unmanaged.passRetained(instance).toOpaque()
        let running = backend.names().filter { backend.pid($0) != nil }
        host.log(.info, "qemu-windows \(pluginVersion) ready (\(backend.accel), \(backend.stateDir); found \(running.count) running VMs)")
        return CTM_OK
    }
    t.get_extension = { _, id in
        guard let id else { return nil }
        switch String(cString: id) {
        case CTM_EXT_INSTANCES_V1: return UnsafeRawPointer(instancesTable)
        case CTM_EXT_CONSOLE_V1: return UnsafeRawPointer(consoleTable)
        default: return nil
        }
    }
    t.cancel = { inst, op in VMPluginInstance.from(inst)?.operations.cancel(op) }
    t.health = { inst, req, len, op, done, ud, err in
        VMPluginInstance.dispatch(inst, err) { p in p.run(req, len, op, done, ud, err) { (_: Empty, _) throws(ContainariumError) in p.backend.health() } }
    }
    t.shutdown = { inst in
        guard let inst else { return }
        let plugin = Unmanaged<VMPluginInstance>.fromOpaque(inst)
        plugin.takeUnretainedValue().supervisor.cancel()
        plugin.takeUnretainedValue().operations.cancelAll()
        plugin.release()
    }
    let p = UnsafeMutablePointer<ctm_plugin>.allocate(capacity: 1)
    p.initialize(to: t)
    return p
}()

@_cdecl("containarium_plugin_entry")
public func containarium_plugin_entry(_ major: UInt32, _ minor: UInt32) -> UnsafePointer<ctm_plugin>? {
    guard major == CTM_ABI_MAJOR else { return nil }
    return UnsafePointer(pluginTable)
}
