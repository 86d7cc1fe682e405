import ArgumentParser
import ContainariumClient
import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import ContainariumProto
import ContainariumService
import Foundation
import SwiftProtobuf
import PluginHost
import Logging

struct PluginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin", abstract: "Inspect the plugins found on this node.",
        subcommands: [PluginList.self, PluginStatus.self, PluginEnable.self, PluginDisable.self, PluginServe.self])
}

/// `plugin enable|disable ID [--node N]`: the node's config file changes (its `plugins` section,
/// or `nodes.NODE.plugins` where the file has an entry for the node); with `--server`, the
/// daemon there makes the change, on `--node`'s member when given. Plugins are loaded when a
/// daemon starts: the answer says when one must restart.
struct PluginToggleOptions: ParsableArguments {
    @Argument(help: "The plugin id (as `plugin list` shows it).") var id: String
    @Option(help: "The cluster member to change (needs --server pointing at its control plane).") var node: String?
    @Flag(help: "Disable an instance backend even though it still holds environments.") var force = false
    @Option(help: "Output format.") var format: OutputFormat = .table
}

func togglePlugin(_ o: PluginToggleOptions, enabled: Bool, global: GlobalOptions, remote: RemoteOptions) async throws {
    if let client = try remote.daemon(global) {
        let request = Containarium_V1_SetPluginEnabledRequest.with {
            $0.id = o.id
            $0.enabled = enabled
            $0.force = o.force
            $0.node = o.node ?? ""
        }
        let v = try await client.cli { c in try await c.system.setPluginEnabled(request, metadata: c.metadata) }
        if o.format == .json { return try printRemote(v) }
        print(v.message.isEmpty ? "\(o.id) \(enabled ? "enabled" : "disabled")" : v.message)
        return
    }
    let service = try global.service()
    if let node = o.node, node != service.config.nodeName {
        throw fail(ContainariumError.invalid("--node \(node) is another node: give --server with its control plane's address (this node is \(service.config.nodeName))"))
    }
    let t = try await ContainariumCLI.run { () async throws(ContainariumError) in try await service.setPluginEnabled(o.id, enabled: enabled, force: o.force) }
    if o.format == .json {
        return try printJSON(PluginToggleView(id: t.id, enabled: t.enabled, node: t.node, configPath: t.path, section: t.section,
                                              restartRequired: t.restartRequired, message: t.message))
    }
    print(t.message)
}

struct PluginEnable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enable", abstract: "Enable a plugin on this node (or on --node through --server).")
    @OptionGroup var options: PluginToggleOptions
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions
    func run() async throws { try await togglePlugin(options, enabled: true, global: global, remote: remote) }
}

struct PluginDisable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Disable a plugin on this node (or on --node through --server).")
    @OptionGroup var options: PluginToggleOptions
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions
    func run() async throws { try await togglePlugin(options, enabled: false, global: global, remote: remote) }
}

/// The child side of process isolation; started by the host, not by people.
struct PluginServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve one plugin over stdin/stdout for an isolating host.", shouldDisplay: false)

    @Argument(help: "The plugin directory.") var directory: String

    func run() async throws {
        bootstrapLogging(verbose: false)
        let status = await PluginServer.serve(directory: URL(fileURLWithPath: directory), logger: Logger(label: "containarium.plugin-server"))
        if status != 0 { throw ExitCode(status) }
    }
}

struct PluginRow: Encodable {
    var id: String
    var name: String?
    var version: String?
    var abi: String?
    var capabilities: [String]
    var enabled: Bool
    var state: String
    var detail: String?
    var directory: String
    var isolation: String?
    var health: String?
    var healthDetail: String?

    init(_ r: PluginRecord) {
        id = r.id
        name = r.manifest?.name
        version = r.manifest?.version
        abi = r.plugin?.abiVersion ?? r.manifest?.abi
        capabilities = r.manifest?.capabilities ?? []
        enabled = r.enabled
        state = r.state.label
        switch r.state {
        case .failed(let why): detail = why
        case .shadowed(let by): detail = "shadowed by \(by)"
        default: detail = nil
        }
        directory = r.directory.path
        isolation = r.plugin?.isolation
    }
}

struct PluginList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List plugins: version, ABI, capabilities, enabled, state.")
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let client = try remote.client() {
            let v = try await client.cli { c in try await c.system.listPlugins(.init(), metadata: c.metadata) }
            if format == .json { return try printRemote(v) }
            let rows = v.plugins.map { p in
                [p.id, dash(p.version), dash(p.abi), p.capabilities.joined(separator: ","), p.enabled ? "yes" : "no", dash(p.state), dash(p.health)]
            }
            print(Table.render(header: ["ID", "VERSION", "ABI", "CAPABILITIES", "ENABLED", "STATE", "HEALTH"], rows: rows))
            return
        }
        let service = try global.service()
        let rows = service.plugins.records.map(PluginRow.init)
        if format == .json { return try printJSON(["plugins": rows]) }
        print(Table.render(
            header: ["ID", "VERSION", "ABI", "CAPABILITIES", "ENABLED", "STATE", "ISOLATION", "DIRECTORY"],
            rows: rows.map { [$0.id, $0.version ?? "-", $0.abi ?? "-", $0.capabilities.joined(separator: ","), $0.enabled ? "yes" : "no", $0.state, $0.isolation ?? "-", $0.directory] }))
        for r in rows { if let d = r.detail { print("  \(r.id): \(d)") } }
        if rows.isEmpty { print("(no plugins found; search path: \(service.config.pluginSearchPaths(extra: global.pluginPaths).map(\.path).joined(separator: ":")))") }
    }
}

struct PluginStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Check each plugin's health (asks the loaded plugins).")
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let service = try global.service()
        var rows: [PluginRow] = []
        for r in service.plugins.records {
            var row = PluginRow(r)
            if let p = r.plugin {
                let h = await p.health()
                row.health = h.status
                row.healthDetail = h.detail
            } else {
                row.health = r.state == .disabled || r.state.label == "shadowed" ? r.state.label : "down"
                row.healthDetail = row.detail
            }
            rows.append(row)
        }
        if format == .json {
            try printJSON(["plugins": rows])
        } else {
            print(Table.render(
                header: ["ID", "VERSION", "ABI", "CAPABILITIES", "ENABLED", "STATE", "HEALTH", "DETAIL"],
                rows: rows.map { [$0.id, $0.version ?? "-", $0.abi ?? "-", $0.capabilities.joined(separator: ","), $0.enabled ? "yes" : "no", $0.state, $0.health ?? "-", $0.healthDetail ?? ""] }))
        }
        // Scripts and monitors can rely on the exit status: 1 when an enabled plugin is not healthy.
        if rows.contains(where: { $0.enabled && $0.health != "ok" }) { throw ExitCode(1) }
    }
}
