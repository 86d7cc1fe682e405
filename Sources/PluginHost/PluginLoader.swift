import PluginABI
import ContainariumCore
public import Foundation
import Synchronization
public import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Serialises every plugin's `initialize` in this process (see the threading contract).
private let initializeLock = Mutex<Void>(())

/// Where a discovered plugin ended up.
public enum PluginState: Sendable, Equatable, CustomStringConvertible {
    /// Loaded, initialised, every declared capability present.
    case ready
    /// Turned off for this node by configuration; no code was loaded.
    case disabled
    /// Another plugin with the same id was found first (its directory given).
    case shadowed(by: String)
    /// Refused or failed; the message says why.
    case failed(String)

    public var description: String {
        switch self {
        case .ready: "ready"
        case .disabled: "disabled"
        case .shadowed(let by): "shadowed by \(by)"
        case .failed(let why): "failed: \(why)"
        }
    }

    public var label: String {
        switch self {
        case .ready: "ready"
        case .disabled: "disabled"
        case .shadowed: "shadowed"
        case .failed: "failed"
        }
    }
}

/// One plugin directory as the host sees it.
public struct PluginRecord: Sendable {
    public var directory: URL
    public var manifest: PluginManifest?
    public var enabled: Bool
    public var state: PluginState
    public var plugin: (any PluginEndpoint)?

    /// The plugin's id (from the manifest, or the directory name if the manifest is unreadable).
    public var id: String { manifest?.id ?? directory.lastPathComponent }
}

/// Discovers plugin directories and loads them: manifest -> enablement -> dlopen -> entry ->
/// version check -> identity check -> initialize -> capability check. Every failure becomes a
/// `.failed` record with a clear message; nothing here terminates the process.
public struct PluginLoader: Sendable {
    public var searchPaths: [URL]
    public var settings: PluginSettings
    public var node: String
    public var logger: Logger
    public var events: EventBus

    /// The executable that serves isolated plugins (`<it> plugin serve DIR`): by default
    /// $CONTAINARIUM_PLUGIN_SERVER, else this process's own executable.
    public var serverExecutable: URL

    public init(
        searchPaths: [URL], settings: PluginSettings, node: String, logger: Logger, events: EventBus, serverExecutable: URL? = nil
    ) {
        self.searchPaths = searchPaths
        self.settings = settings
        self.node = node
        self.logger = logger
        self.events = events
        self.serverExecutable =
            serverExecutable
            ?? ProcessInfo.processInfo.environment["CONTAINARIUM_PLUGIN_SERVER"].map { URL(fileURLWithPath: $0) }
            ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    }

    /// Plugin directories in search order: each search path may itself be a plugin directory
    /// or hold plugin directories (sorted by name, so the order is stable).
    public func discover() -> [URL] {
        let fm = FileManager.default
        var found: [URL] = []
        for path in searchPaths {
            let std = path.standardizedFileURL
            if fm.fileExists(atPath: std.appendingPathComponent(PluginManifest.fileName).path) {
                found.append(std)
                continue
            }
            guard let entries = try? fm.contentsOfDirectory(atPath: std.path) else {
                logger.debug("plugin path not readable", metadata: ["path": "\(std.path)"])
                continue
            }
            for name in entries.sorted() {
                let dir = std.appendingPathComponent(name)
                var isDir: ObjCBool = false
                if fm.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue,
                    fm.fileExists(atPath: dir.appendingPathComponent(PluginManifest.fileName).path)
                {
                    found.append(dir)
                }
            }
        }
        return found
    }

    /// Discover and load everything; one record per plugin directory, in search order.
    public func loadAll() -> [PluginRecord] {
        var records: [PluginRecord] = []
        var winners: [String: URL] = [:]
        for dir in discover() {
            let manifest: PluginManifest
            do {
                manifest = try PluginManifest.load(from: dir)
            } catch {
                records.append(PluginRecord(directory: dir, manifest: nil, enabled: false, state: .failed(error.message)))
                logger.error("plugin manifest refused", metadata: ["path": "\(dir.path)", "error": "\(error.message)"])
                continue
            }
            if let first = winners[manifest.id] {
                records.append(
                    PluginRecord(directory: dir, manifest: manifest, enabled: false, state: .shadowed(by: first.path)))
                logger.notice(
                    "duplicate plugin id; the first one found wins",
                    metadata: ["plugin": "\(manifest.id)", "path": "\(dir.path)", "winner": "\(first.path)"])
                continue
            }
            winners[manifest.id] = dir
            records.append(load(manifest: manifest, directory: dir))
        }
        return records
    }

    /// Load one plugin whose manifest has been read.
    public func load(manifest: PluginManifest, directory: URL) -> PluginRecord {
        let enabled = settings.isEnabled(manifest, node: node)
        var record = PluginRecord(directory: directory, manifest: manifest, enabled: enabled, state: .disabled)
        guard enabled else { return record }
        let entry = settings.entry(for: manifest.id, node: node)
        do throws(ContainariumError) {
            // Code is loaded only from where no one but root (or this user) can change it.
            for path in [directory.path, directory.appendingPathComponent(PluginManifest.fileName).path,
                         directory.appendingPathComponent(manifest.library).path] where FileManager.default.fileExists(atPath: path) {
                if let why = PluginTrust.problem(path) { throw ContainariumError(.pluginLoad, why) }
            }
            switch entry.isolation ?? "in-process" {
            case "in-process":
                record.plugin = try open(manifest: manifest, directory: directory)
            case "process":
                // Checks that need no plugin code happen here too, so refusals read the same.
                guard let abi = manifest.abiVersion, abi.major == HostABI.major else {
                    throw ContainariumError(.pluginLoad, "plugin needs ABI \(manifest.abi) but this host speaks ABI \(HostABI.version); majors must match")
                }
                record.plugin = try ProcessPlugin.launch(
                    manifest: manifest, directory: directory, config: entry.config ?? .object([:]), node: node,
                    server: serverExecutable, logger: logger, events: events)
            case let other:
                throw ContainariumError(.pluginLoad, "isolation '\(other)' is not one of in-process, process")
            }
            record.state = .ready
            logger.info(
                "plugin ready",
                metadata: ["plugin": "\(manifest.id)", "version": "\(manifest.version)", "capabilities": "\(manifest.capabilities.joined(separator: ","))"])
        } catch {
            record.state = .failed(error.message)
            logger.error("plugin failed to load", metadata: ["plugin": "\(manifest.id)", "error": "\(error.message)"])
        }
        return record
    }

    private func open(manifest: PluginManifest, directory: URL) throws(ContainariumError) -> LoadedPlugin {
        func fail(_ message: String) -> ContainariumError { ContainariumError(.pluginLoad, message) }

        // 1. ABI major, from the manifest: refused before any code is loaded.
        guard let abi = manifest.abiVersion else { throw fail("manifest abi '\(manifest.abi)' is not MAJOR.MINOR") }
        guard abi.major == HostABI.major else {
            throw fail("plugin needs ABI \(abi) but this host speaks ABI \(HostABI.version); majors must match")
        }

        // 2. The library file.
        let libraryURL = directory.appendingPathComponent(manifest.library)
        guard FileManager.default.fileExists(atPath: libraryURL.path) else {
            throw fail("library \(manifest.library) not found in \(directory.path)")
        }

        // 3. dlopen: RTLD_NOW so missing symbols fail here, RTLD_LOCAL so plugins cannot see
        //    each other's symbols. The handle is never closed (Swift code cannot be unloaded).
        _ = dlerror()
        // The very file the trust check looked at (symlinks resolved), not a path that could be
        // pointed elsewhere between the check and the load.
        let resolved = realpath(libraryURL.path, nil).map { p in
            defer { free(p) }
            return String(cString: p)
        } ?? libraryURL.path
        guard let handle = dlopen(resolved, RTLD_NOW | RTLD_LOCAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            throw fail("cannot load \(manifest.library) as a shared library: \(why)")
        }

        // 4. The one entry function.
        guard let symbol = dlsym(handle, CTM_ENTRY_SYMBOL) else {
            throw fail("\(manifest.library) does not export the entry function \(CTM_ENTRY_SYMBOL)")
        }
        let entry = unsafeBitCast(symbol, to: ctm_entry_fn.self)

        // 5. Version negotiation.
        guard let table = entry(HostABI.major, HostABI.minor) else {
            throw fail("\(manifest.library) cannot serve ABI \(HostABI.version) (its entry function returned NULL)")
        }
        // Field by field within the declared size, never `table.pointee`: a table from an
        // older minor may be shorter than this host's struct.
        let t = DeclaredStruct(table)
        let needed = (MemoryLayout<ctm_plugin>.offset(of: \.shutdown) ?? MemoryLayout<ctm_plugin>.size) + MemoryLayout<UnsafeRawPointer>.size
        guard t.declaredSize >= needed, let tableMajor = t.field(\.abi_major), let tableMinor = t.field(\.abi_minor) else {
            throw fail("plugin table is \(t.declaredSize) bytes; ABI \(HostABI.major).0 needs at least \(needed)")
        }
        guard tableMajor == HostABI.major else {
            throw fail("library was built for ABI \(tableMajor).\(tableMinor) but this host speaks ABI \(HostABI.version)")
        }

        // 6. The library must be what the manifest says it is.
        let libID = (t.field(\.id) ?? nil).map { String(cString: $0) } ?? ""
        let libVersion = (t.field(\.version) ?? nil).map { String(cString: $0) } ?? ""
        guard libID == manifest.id else {
            throw fail("manifest does not match library: manifest id '\(manifest.id)', library id '\(libID)'")
        }
        guard libVersion == manifest.version else {
            throw fail("manifest does not match library: manifest version \(manifest.version), library version \(libVersion)")
        }
        guard tableMinor == abi.minor else {
            throw fail("manifest does not match library: manifest ABI \(abi), library ABI \(tableMajor).\(tableMinor)")
        }
        guard let initialize = t.field(\.initialize) ?? nil else { throw fail("plugin table has no initialize function") }

        // 7. Initialise with the operator's per-plugin configuration.
        let context = HostContext(pluginID: manifest.id, logger: logger, events: events)
        let services = context.makeServicesTable()
        let config = settings.entry(for: manifest.id, node: node).config ?? .object([:])
        let configData = (try? WireJSON.encode(config)) ?? Data("{}".utf8)
        var err = makeError()
        var instance: UnsafeMutableRawPointer?
        // The threading contract (docs/plugin-abi.md): initialize runs once per instance and
        // never concurrently with another initialize in this process, so a library that keeps
        // global state needs no lock of its own around it.
        let status = initializeLock.withLock { _ in
            configData.withUnsafeBytes { raw in
                initialize(services, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count, &instance, &err)
            }
        }
        guard status == CTM_OK else {
            let why = withUnsafePointer(to: &err) { errorMessage($0) } ?? "status \(status)"
            throw fail("initialization failed: \(why)")
        }

        let plugin = LoadedPlugin(manifest: manifest, directory: directory, table: table, instance: instance, logger: logger)

        // 8. Every capability the manifest declares must really be there.
        for cap in manifest.capabilities where !plugin.provides(cap) {
            plugin.shutdown()
            throw fail("manifest declares capability \(cap) but the library does not provide it")
        }
        return plugin
    }
}
