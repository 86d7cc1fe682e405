public import ContainariumCore
import Foundation

/// Which plugins a node runs and how each is configured. Part of the node's config file:
///
/// ```json
/// { "pluginPaths": ["/usr/local/lib/containarium/plugins"],
///   "plugins": { "incus-lxc": { "enabled": true, "config": { "socket": "/var/lib/incus/unix.socket" } } },
///   "nodes":   { "gpu-node-1": { "plugins": { "nvidia-gpu": { "enabled": true } } } } }
/// ```
///
/// `nodes.<name>.plugins` entries override the top-level ones on the node called `<name>`,
/// so one file can be shared by a fleet while each node enables its own plugins.
public struct PluginSettings: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var enabled: Bool?
        public var config: JSONValue?
        /// "in-process" (default) or "process": serve the plugin from a child process, so a
        /// crash in the plugin cannot take the host down.
        public var isolation: String?
        public init(enabled: Bool? = nil, config: JSONValue? = nil, isolation: String? = nil) {
            self.enabled = enabled
            self.config = config
            self.isolation = isolation
        }
    }

    public struct NodeOverride: Codable, Sendable, Equatable {
        public var plugins: [String: Entry]?
        public init(plugins: [String: Entry]? = nil) { self.plugins = plugins }
    }

    public var pluginPaths: [String]?
    public var plugins: [String: Entry]?
    public var nodes: [String: NodeOverride]?

    public init(pluginPaths: [String]? = nil, plugins: [String: Entry]? = nil, nodes: [String: NodeOverride]? = nil) {
        self.pluginPaths = pluginPaths
        self.plugins = plugins
        self.nodes = nodes
    }

    /// The effective entry for a plugin on a node: top level, then the node's override.
    public func entry(for id: String, node: String) -> Entry {
        var result = plugins?[id] ?? Entry()
        if let over = nodes?[node]?.plugins?[id] {
            if let e = over.enabled { result.enabled = e }
            if let i = over.isolation { result.isolation = i }
            if let c = over.config { result.config = result.config.map { $0.merged(with: c) } ?? c }
        }
        return result
    }

    public func isEnabled(_ manifest: PluginManifest, node: String) -> Bool {
        entry(for: manifest.id, node: node).enabled ?? manifest.defaultEnabled ?? false
    }
}
