import ContainariumCore
import Foundation
public import PluginABI
import PluginKit

// The C ABI surface of the fake-instances plugin, built like Plugins/IncusLXC: one exported
// entry function; PluginKit builds the C tables from the methods listed here (each decodes
// JSON, runs on a thread of the plugin's own and completes once). Every call is journaled
// first, so tests can read what the host asked for.

let pluginID = "fake-instances"
let pluginVersion = "1.0.0"

final class FakePluginInstance: ServedPlugin {
    let label = "fake-instances-op"
    let backend: FakeBackend
    let host: HostServices
    let operations = OperationRegistry()
    let methods: [String: [String: PluginMethod]]

    init(backend b: FakeBackend, host: HostServices) {
        self.backend = b
        self.host = host
        /// A method that journals its request (as `name`) before it runs.
        func j<Request: Codable & Sendable, Response: Encodable & Sendable>(
            _ name: String, _ body: @escaping @Sendable (Request, OperationContext) throws(ContainariumError) -> Response
        ) -> PluginMethod {
            .run { (r: Request, ctx) throws(ContainariumError) -> Response in
                b.journal(name, r)
                return try body(r, ctx)
            }
        }
        var methods: [String: [String: PluginMethod]] = [
            CTM_EXT_INSTANCES_V1: [
                "create": j("create") { (r: InstanceCreateRequest, ctx) throws(ContainariumError) in try b.create(r, ctx) },
                "remove": j("remove") { (r: InstanceRef, _) throws(ContainariumError) in try b.remove(r); return Empty() },
                "start": j("start") { (r: InstanceRef, _) throws(ContainariumError) in try b.changeState(r, .start) },
                "stop": j("stop") { (r: InstanceRef, _) throws(ContainariumError) in try b.changeState(r, .stop) },
                "restart": j("restart") { (r: InstanceRef, _) throws(ContainariumError) in try b.changeState(r, .restart) },
                "list": j("list") { (_: Empty, _) throws(ContainariumError) in b.list() },
                "info": j("info") { (r: InstanceRef, _) throws(ContainariumError) in try b.info(r.name) },
                "resize": j("resize") { (r: ResizeRequest, _) throws(ContainariumError) in try b.resize(r) },
                "exec": j("exec") { (r: ExecRequest, _) throws(ContainariumError) in try b.exec(r) },
                "capacity": j("capacity") { (_: Empty, _) throws(ContainariumError) in b.capacity() },
                "watch": j("watch") { (_: Empty, ctx) throws(ContainariumError) -> Empty in try b.watch(ctx) },
            ]
        ]
        // accounts/1 unless configured away (`"accounts": false`), for a backend like
        // QemuWindows that has none; its manifest must then not declare it either.
        if b.servesAccounts {
            methods[CTM_EXT_ACCOUNTS_V1] = [
                "create": j("accounts.create") { (r: AccountCreateRequest, _) throws(ContainariumError) in try b.accountCreate(r) },
                "set_keys": j("accounts.set_keys") { (r: SetKeysRequest, _) throws(ContainariumError) in try b.setKeys(r) },
                "list_keys": j("accounts.list_keys") { (r: AccountRef, _) throws(ContainariumError) in try b.listKeys(r) },
                "add_collaborator": j("accounts.add_collaborator") { (r: CollaboratorRequest, _) throws(ContainariumError) in try b.addCollaborator(r) },
                "remove_collaborator": j("accounts.remove_collaborator") { (r: CollaboratorRef, _) throws(ContainariumError) in
                    try b.removeCollaborator(r)
                },
            ]
        }
        self.methods = methods
    }

    func health() -> HealthReport { HealthReport(status: "ok", detail: "in memory") }
}

nonisolated(unsafe) private let pluginTable = PluginTables.plugin(id: pluginID, version: pluginVersion) { host, config, length, out, err in
    PluginTables.initialize(host, config, length, out, err) { (host, data) throws(ContainariumError) -> FakePluginInstance in
        let config: FakeBackend.Config
        do throws(ContainariumError) {
            config = try WireJSON.decode(FakeBackend.Config.self, from: data)
        } catch {
            throw ContainariumError(.invalidArgument, "fake-instances configuration: \(error.message)")
        }
        if let why = config.failInitialize { throw ContainariumError(.failedPrecondition, why) }
        let instance = FakePluginInstance(backend: FakeBackend(config: config, host: host), host: host)
        host.log(.info, "fake-instances \(pluginVersion) ready (node \(config.node ?? FakeBackend.defaultNode))")
        return instance
    }
}

/// The one exported symbol. Returns the table for ABI major 1, NULL for anything else.
@_cdecl("containarium_plugin_entry")
public func containarium_plugin_entry(_ major: UInt32, _ minor: UInt32) -> UnsafePointer<ctm_plugin>? {
    guard major == CTM_ABI_MAJOR else { return nil }
    return pluginTable
}
