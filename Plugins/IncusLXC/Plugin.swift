import ContainariumCore
import Foundation
public import PluginABI
import PluginKit

// The C ABI surface of the IncusLXC plugin: one exported entry function; PluginKit builds the
// C tables from the methods listed here (each decodes JSON, runs the work on a thread of the
// plugin's own and completes once).

let pluginID = "incus-lxc"
let pluginVersion = "0.1.0"

/// One initialised plugin instance (the `void *instance` of the ABI).
final class IncusPluginInstance: ServedPlugin {
    let label = "incus-lxc-op"
    let backend: IncusBackend
    let host: HostServices
    let operations = OperationRegistry()
    let methods: [String: [String: PluginMethod]]

    init(backend b: IncusBackend, host: HostServices) {
        self.backend = b
        self.host = host
        methods = [
            CTM_EXT_INSTANCES_V1: [
                "create": .run { (r: InstanceCreateRequest, ctx) throws(ContainariumError) in try b.create(r, ctx) },
                "remove": .run { (r: InstanceRef, ctx) throws(ContainariumError) in try b.remove(r, ctx); return Empty() },
                "start": .run { (r: InstanceRef, ctx) throws(ContainariumError) in try b.changeState(r, action: "start", ctx) },
                "stop": .run { (r: InstanceRef, ctx) throws(ContainariumError) in try b.changeState(r, action: "stop", ctx) },
                "restart": .run { (r: InstanceRef, ctx) throws(ContainariumError) in try b.changeState(r, action: "restart", ctx) },
                "list": .run { (_: Empty, _) throws(ContainariumError) in try b.list() },
                "info": .run { (r: InstanceRef, _) throws(ContainariumError) in try b.info(r.name) },
                "resize": .run { (r: ResizeRequest, ctx) throws(ContainariumError) in try b.resize(r, ctx) },
                "exec": .run { (r: ExecRequest, ctx) throws(ContainariumError) in try b.exec(r, ctx) },
                "capacity": .run { (_: Empty, _) throws(ContainariumError) in try b.capacity() },
                "watch": .run { (_: Empty, ctx) throws(ContainariumError) in try b.watch(ctx) },
            ],
            // Where the host reads a container's root filesystem (scanners), from Incus's records.
            CTM_EXT_FILESYSTEM_V1: [
                "locate": .run { (r: InstanceRef, _) throws(ContainariumError) in try b.locate(r.name) }
            ],
            CTM_EXT_ACCOUNTS_V1: [
                "create": .run { (r: AccountCreateRequest, ctx) throws(ContainariumError) in try b.accountCreate(r, ctx) },
                "set_keys": .run { (r: SetKeysRequest, ctx) throws(ContainariumError) in try b.setKeys(r, ctx) },
                "list_keys": .run { (r: AccountRef, ctx) throws(ContainariumError) in try b.listKeys(r, ctx) },
                "add_collaborator": .run { (r: CollaboratorRequest, ctx) throws(ContainariumError) in try b.addCollaborator(r, ctx) },
                "remove_collaborator": .run { (r: CollaboratorRef, ctx) throws(ContainariumError) in try b.removeCollaborator(r, ctx) },
            ],
        ]
    }

    func health() -> HealthReport { backend.health() }
}

nonisolated(unsafe) private let pluginTable = PluginTables.plugin(id: pluginID, version: pluginVersion) { host, config, length, out, err in
    PluginTables.initialize(host, config, length, out, err) { (host, data) throws(ContainariumError) -> IncusPluginInstance in
        let config: IncusBackend.Config
        do throws(ContainariumError) {
            config = try WireJSON.decode(IncusBackend.Config.self, from: data)
        } catch {
            throw ContainariumError(.invalidArgument, "incus-lxc configuration: \(error.message)")
        }
        let backend = IncusBackend(config: config, host: host)
        if !FileManager.default.fileExists(atPath: backend.socketPath) {
            host.log(.warning, "Incus socket \(backend.socketPath) does not exist yet; calls will fail until incusd runs")
        }
        host.log(.info, "incus-lxc \(pluginVersion) ready (socket \(backend.socketPath), pool \(backend.pool))")
        return IncusPluginInstance(backend: backend, host: host)
    }
}

/// The one exported symbol. Returns the table for ABI major 1, NULL for anything else.
@_cdecl("containarium_plugin_entry")
public func containarium_plugin_entry(_ major: UInt32, _ minor: UInt32) -> UnsafePointer<ctm_plugin>? {
    guard major == CTM_ABI_MAJOR else { return nil }
    return pluginTable
}
