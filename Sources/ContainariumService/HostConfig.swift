public import ContainariumCore
public import Foundation
public import PluginHost

/// The node's configuration file (JSON). Every field is optional; see docs/operations.md.
///
/// ```json
/// {
///   "node": "node-1",
///   "pluginPaths": ["/usr/local/lib/containarium/plugins"],
///   "plugins": { "incus-lxc": { "enabled": true, "config": { "socket": "/var/lib/incus/unix.socket", "pool": "default" } } },
///   "nodes": { "gpu-1": { "plugins": { "nvidia-gpu": { "enabled": true } } } },
///   "images": { "debian12": "containarium/debian12", "OS_TYPE_DEBIAN_12": "containarium/debian12" },
///   "defaultImage": "containarium/debian12",
///   "stackPaths": ["/usr/local/share/containarium/stacks"],
///   "defaults": { "cpu": "2", "memory": "2GB", "disk": "10GB" },
///   "runtimes": ["podman", "docker"],
///   "cpuOvercommit": 4
/// }
/// ```
public struct HostConfig: Codable, Sendable, Equatable {
    public struct Defaults: Codable, Sendable, Equatable {
        public var cpu: String?
        public var memory: String?
        public var disk: String?
        public var autostart: Bool?
        public var nesting: Bool?

        public init(cpu: String? = nil, memory: String? = nil, disk: String? = nil, autostart: Bool? = nil, nesting: Bool? = nil) {
            self.cpu = cpu
            self.memory = memory
            self.disk = disk
            self.autostart = autostart
            self.nesting = nesting
        }
    }

    public var node: String?
    public var pluginPaths: [String]?
    public var plugins: [String: PluginSettings.Entry]?
    public var nodes: [String: PluginSettings.NodeOverride]?
    public var images: [String: String]?
    public var defaultImage: String?
    public var stackPaths: [String]?
    public var defaults: Defaults?
    /// The instance backend to use when several are ready (a plugin id).
    public var backend: String?
    /// Container runtimes this node installs on request (`enablePodman`, `enableDocker`), each
    /// from the stack of the same name. Default: every runtime whose stack exists; `[]` offers none.
    public var runtimes: [String]?
    /// How far a CPU *count* may exceed this node's cores (a count is a share that Incus
    /// balances; the environment sees at most the node's cores). Default 4, the scheduler's.
    public var cpuOvercommit: Double?
    /// What users (not admins) may ask for: sizes, GPUs, nesting, images, kinds.
    public var userPolicy: UserPolicy?
    /// Scheduled security scans (`SecurityPolicy`).
    public var security: SecurityPolicy?
    /// `containarium sentinel` (`SentinelPolicy`).
    public var sentinel: SentinelPolicy?
    /// Where this deployment's Grafana and Prometheus are (GET /v1/system/monitoring).
    public var monitoring: MonitoringLinks?

    public struct MonitoringLinks: Codable, Sendable, Equatable {
        public var grafanaURL: String?
        public var prometheusURL: String?
        public init(grafanaURL: String? = nil, prometheusURL: String? = nil) {
            self.grafanaURL = grafanaURL
            self.prometheusURL = prometheusURL
        }

        func validate() throws(ContainariumError) {
            for (key, value) in [("grafanaURL", grafanaURL), ("prometheusURL", prometheusURL)] {
                guard let value else { continue }
                guard let u = URLComponents(string: value), ["http", "https"].contains(u.scheme?.lowercased() ?? ""), u.host?.isEmpty == false, u.user == nil else {
                    throw .invalid("monitoring.\(key) '\(value)' must be an http:// or https:// URL without credentials")
                }
            }
        }
    }

    public init() {}

    public static let defaultPath = "/etc/containarium/config.json"
    public static let builtinImage = "containarium/debian12"

    /// Load from `path`, or from $CONTAINARIUM_CONFIG, or from /etc/containarium/config.json
    /// when it exists; a missing default file means built-in defaults.
    public static func load(path: String?) throws(ContainariumError) -> HostConfig {
        let env = ProcessInfo.processInfo.environment["CONTAINARIUM_CONFIG"]
        let explicit = path ?? env
        let chosen = explicit ?? defaultPath
        guard FileManager.default.fileExists(atPath: chosen) else {
            if explicit != nil { throw .invalid("config file \(chosen) does not exist") }
            return HostConfig()
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: chosen)) } catch {
            throw ContainariumError(.invalidArgument, "cannot read config file \(chosen)", cause: error.localizedDescription)
        }
        let config: HostConfig
        do {
            config = try WireJSON.decoder().decode(HostConfig.self, from: data)
        } catch {
            throw .invalid("config file \(chosen) is not valid: \(WireJSON.describe(error))")
        }
        do throws(ContainariumError) {
            try config.userPolicy?.validate()
            try config.security?.validate()
            try config.sentinel?.validate()
            try config.monitoring?.validate()
        } catch {
            throw .invalid("config file \(chosen): \(error.message)")
        }
        return config
    }

    public var nodeName: String { node ?? ProcessInfo.processInfo.hostName }

    /// The file `load(path:)` reads: `path`, else $CONTAINARIUM_CONFIG, else the default.
    public static func resolvedPath(_ path: String?) -> String {
        path ?? ProcessInfo.processInfo.environment["CONTAINARIUM_CONFIG"] ?? defaultPath
    }

    /// Where `setPluginEnabled` wrote.
    public struct PluginSettingChange: Sendable, Equatable {
        public var path: String
        /// "plugins.ID" or "nodes.NODE.plugins.ID".
        public var section: String
    }

    /// Turn plugin `id` on or off for node `node` in the config file at `path`, keeping
    /// everything else in the file. The node's own entry (`nodes.NODE.plugins.ID`) is changed
    /// when the file has one, else the top-level `plugins.ID`; a missing file is created. The
    /// result is read back and must say what was asked.
    public static func setPluginEnabled(_ id: String, _ enabled: Bool, node: String, path: String) throws(ContainariumError) -> PluginSettingChange {
        let fm = FileManager.default
        var root: [String: Any] = [:]
        var permissions: Any?
        if fm.fileExists(atPath: path) {
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: path))
                guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                    throw ContainariumError.invalid("config file \(path) is not a JSON object")
                }
                root = object
                permissions = try fm.attributesOfItem(atPath: path)[.posixPermissions]
            } catch let error as ContainariumError {
                throw error
            } catch {
                throw .invalid("config file \(path) is not valid JSON: \(error.localizedDescription)")
            }
        }
        func object(_ value: Any?, _ name: String) throws(ContainariumError) -> [String: Any] {
            guard let value else { return [:] }
            guard let o = value as? [String: Any] else { throw .invalid("config file \(path): \(name) must be an object") }
            return o
        }
        var nodes = try object(root["nodes"], "nodes")
        var nodeEntry = try object(nodes[node], "nodes.\(node)")
        var nodePlugins = try object(nodeEntry["plugins"], "nodes.\(node).plugins")
        let section: String
        if let existing = nodePlugins[id] {
            var entry = try object(existing, "nodes.\(node).plugins.\(id)")
            entry["enabled"] = enabled
            nodePlugins[id] = entry
            nodeEntry["plugins"] = nodePlugins
            nodes[node] = nodeEntry
            root["nodes"] = nodes
            section = "nodes.\(node).plugins.\(id)"
        } else {
            var plugins = try object(root["plugins"], "plugins")
            var entry = try object(plugins[id], "plugins.\(id)")
            entry["enabled"] = enabled
            plugins[id] = entry
            root["plugins"] = plugins
            section = "plugins.\(id)"
        }
        do {
            let data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            // Read back before writing: the new file must parse and say what was asked.
            let check = try WireJSON.decoder().decode(HostConfig.self, from: data)
            guard check.pluginSettings.entry(for: id, node: node).enabled == enabled else {
                throw ContainariumError.internal("the changed config would not \(enabled ? "enable" : "disable") \(id) on \(node)")
            }
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
            try fm.createDirectory(at: dir, withIntermediateDirectories: true)
            // A new file beside it with the old file's mode from the start (the config may hold
            // secrets), then renamed over it: readers see the old file or the new, never half.
            let temp = dir.appendingPathComponent(".\(URL(fileURLWithPath: path).lastPathComponent).\(UUID().uuidString).tmp").path
            let mode = mode_t((permissions as? Int) ?? 0o644)
            let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
            guard fd >= 0 else { throw ContainariumError(.internal, "cannot write config file \(path)", cause: String(cString: strerror(errno))) }
            let file = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
            do {
                _ = fchmod(fd, mode)  // exactly the old mode, whatever the umask
                try file.write(contentsOf: data + Data("\n".utf8))
                try file.close()
            } catch {
                try? fm.removeItem(atPath: temp)
                throw error
            }
            guard rename(temp, path) == 0 else {
                let why = String(cString: strerror(errno))
                try? fm.removeItem(atPath: temp)
                throw ContainariumError(.internal, "cannot write config file \(path)", cause: why)
            }
        } catch let error as ContainariumError {
            throw error
        } catch {
            throw ContainariumError(.internal, "cannot write config file \(path)", cause: error.localizedDescription)
        }
        return PluginSettingChange(path: path, section: section)
    }

    public var pluginSettings: PluginSettings {
        PluginSettings(pluginPaths: pluginPaths, plugins: plugins, nodes: nodes)
    }

    /// The directory of the running executable (/proc/self/exe, never argv[0]).
    static var executableDirectory: URL { PluginTrust.executable.deletingLastPathComponent() }

    private static func envPaths(_ name: String) -> [String] {
        (ProcessInfo.processInfo.environment[name] ?? "").split(separator: ":").map(String.init).filter { !$0.isEmpty }
    }

    /// Plugin search order: $CONTAINARIUM_PLUGIN_PATH, extra paths, the config's pluginPaths,
    /// then `<prefix>/lib/containarium/plugins` next to the executable, then /usr/local and /usr.
    public func pluginSearchPaths(extra: [String] = []) -> [URL] {
        var paths = Self.envPaths("CONTAINARIUM_PLUGIN_PATH") + extra + (pluginPaths ?? [])
        paths.append(Self.executableDirectory.deletingLastPathComponent().appendingPathComponent("lib/containarium/plugins").path)
        paths += ["/usr/local/lib/containarium/plugins", "/usr/lib/containarium/plugins"]
        var seen = Set<String>()
        return paths.map { URL(fileURLWithPath: $0).standardizedFileURL }.filter { seen.insert($0.path).inserted }
    }

    /// Stack search order: $CONTAINARIUM_STACK_PATH, the config's stackPaths, then
    /// `<prefix>/share/containarium/stacks`, /usr/local and /usr.
    public func stackSearchPaths() -> [URL] {
        var paths = Self.envPaths("CONTAINARIUM_STACK_PATH") + (stackPaths ?? [])
        paths.append(Self.executableDirectory.deletingLastPathComponent().appendingPathComponent("share/containarium/stacks").path)
        paths += ["/usr/local/share/containarium/stacks", "/usr/share/containarium/stacks"]
        var seen = Set<String>()
        return paths.map { URL(fileURLWithPath: $0).standardizedFileURL }.filter { seen.insert($0.path).inserted }
    }

    /// OS types the reference knows, mapped to this node's images unless the config overrides them.
    public static let osTypeAliases: [String: String] = [
        "OS_TYPE_DEBIAN_12": "debian12", "debian": "debian12", "debian-12": "debian12",
        "OS_TYPE_UBUNTU_2404": "ubuntu2404", "ubuntu": "ubuntu2404", "ubuntu-24.04": "ubuntu2404",
        "OS_TYPE_UBUNTU_2204": "ubuntu2204", "OS_TYPE_ROCKY_9": "rocky9", "rocky": "rocky9",
    ]

    /// The OS family of an OS type or image name, which picks the instance backend (its
    /// manifest's `osTypes`): "windows" for names starting with "windows" (any case) or the
    /// reference's "OS_TYPE_WINDOWS", "linux" for everything else.
    public static func osFamily(of name: String) -> String {
        let n = name.lowercased()
        return n.hasPrefix("windows") || n.hasPrefix("os_type_windows") ? "windows" : "linux"
    }

    /// The image alias for an OS type (`debian12`, `OS_TYPE_UBUNTU_2404`, ...).
    public func image(forOSType osType: String) throws(ContainariumError) -> String {
        let map = images ?? ["debian12": defaultImage ?? Self.builtinImage]
        if let alias = map[osType] { return alias }
        if let canonical = Self.osTypeAliases[osType], let alias = map[canonical] { return alias }
        let known = map.keys.sorted().joined(separator: ", ")
        throw .invalid("OS type '\(osType)' is not configured on this node (configured: \(known.isEmpty ? "none" : known)); add it under \"images\" in the config file")
    }
}
