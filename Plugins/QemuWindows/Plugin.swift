import ContainariumCore
import Foundation
public import PluginABI
import PluginKit

// The C ABI surface of the qemu-windows plugin: instances/1 over QEMU/KVM virtual machines.

let pluginID = "qemu-windows"
let pluginVersion = "0.1.0"

final class VMPluginInstance: ServedPlugin {
    let label = "qemu-windows-op"
    let backend: VMBackend
    let host: HostServices
    let operations = OperationRegistry()
    let supervisor = CancellationFlag()
    let methods: [String: [String: PluginMethod]]

    init(backend b: VMBackend, host: HostServices) {
        self.backend = b
        self.host = host
        // No accounts/1: a VM's accounts are its guest's business (Windows setup, cloud-init),
        // so the host answers keys and collaborators with `unsupported`.
        methods = [
            CTM_EXT_INSTANCES_V1: [
                "create": .run { (r: InstanceCreateRequest, ctx) throws(ContainariumError) in try b.create(r, ctx) },
                "remove": .run { (r: InstanceRef, _) throws(ContainariumError) in try b.remove(r); return Empty() },
                "start": .run { (r: InstanceRef, _) throws(ContainariumError) in try b.start(r.name) },
                "stop": .run { (r: InstanceRef, _) throws(ContainariumError) in try b.stop(r.name, force: r.force ?? false) },
                "restart": .run { (r: InstanceRef, _) throws(ContainariumError) in try b.restart(r.name) },
                "list": .run { (_: Empty, _) throws(ContainariumError) in b.list() },
                "info": .run { (r: InstanceRef, _) throws(ContainariumError) in try b.info(r.name) },
                "resize": .run { (r: ResizeRequest, _) throws(ContainariumError) in try b.resize(r) },
                "exec": .run { (_: ExecRequest, _) throws(ContainariumError) -> ExecResult in
                    throw ContainariumError(.unsupported, "VMs have no exec: use RDP (Windows) or the console")
                },
                "capacity": .run { (_: Empty, _) throws(ContainariumError) in b.capacity() },
                "watch": .run { (_: Empty, ctx) throws(ContainariumError) in try b.watch(ctx) },
            ],
            // The Administrator password of a Windows VM, for its owner (the host authorizes).
            CTM_EXT_CREDENTIALS_V1: [
                "get": .run { (r: InstanceRef, _) throws(ContainariumError) in try b.credentials(r.name) }
            ],
            CTM_EXT_CONSOLE_V1: [
                "open": .handingOver { (r: ConsoleRequest, _) throws(ContainariumError) -> ([String: String], Int32) in
                    let (fd, proto) = try b.openConsole(r.instance, kind: r.kind ?? "serial")
                    return (["protocol": proto], fd)
                }
            ],
        ]
    }

    func health() -> JSONValue { backend.health() }

    func stop() { supervisor.cancel() }

    /// Every few seconds, detach the answer file of VMs that finished installing and (with
    /// `restart`, config `supervise`) restart VMs that should run but do not (crashed QEMU, host
    /// reboot).
    func startSupervisor(restart: Bool) {
        let backend = self.backend, flag = supervisor
        let thread = Thread {
            while !flag.isCancelled {
                backend.superviseOnce(restart: restart)
                for _ in 0..<20 where !flag.isCancelled { usleep(100_000) }
            }
        }
        thread.name = "qemu-windows-supervisor"
        thread.start()
    }
}

struct ConsoleRequest: Codable, Sendable {
    var instance: String
    var kind: String?
}

nonisolated(unsafe) private let pluginTable = PluginTables.plugin(id: pluginID, version: pluginVersion) { host, config, length, out, err in
    PluginTables.initialize(host, config, length, out, err) { (host, data) throws(ContainariumError) -> VMPluginInstance in
        let config: VMBackend.Config
        do throws(ContainariumError) {
            config = try WireJSON.decode(VMBackend.Config.self, from: data)
        } catch {
            throw ContainariumError(.invalidArgument, "qemu-windows configuration: \(error.message)")
        }
        let backend = VMBackend(config: config, host: host)
        do {
            try FileManager.default.createDirectory(atPath: backend.stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw ContainariumError(.failedPrecondition, "cannot create \(backend.stateDir): \(error)")
        }
        let instance = VMPluginInstance(backend: backend, host: host)
        instance.startSupervisor(restart: config.supervise ?? true)
        let running = backend.names().filter { backend.pid($0) != nil }
        host.log(.info, "qemu-windows \(pluginVersion) ready (\(backend.accel), \(backend.stateDir); found \(running.count) running VMs; "
                 + "QEMU runs as \(config.runAs ?? "containarium-vm"), guest network \(config.guestInternet == true ? "with" : "without") outside access)")
        if config.runAs == "root" { host.log(.warning, "qemu-windows: runAs is \"root\": QEMU runs as root (insecure)") }
        return instance
    }
}

@_cdecl("containarium_plugin_entry")
public func containarium_plugin_entry(_ major: UInt32, _ minor: UInt32) -> UnsafePointer<ctm_plugin>? {
    guard major == CTM_ABI_MAJOR else { return nil }
    return pluginTable
}
