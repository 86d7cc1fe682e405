import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import ContainariumService
import ContainariumStore
import ContainariumTelemetry
import Foundation
import Logging
import PluginHost
import TestSupport
import Testing

/// A control plane in this process: the fake instances/1 plugin (Tests/FakeInstances) loaded
/// by the real PluginHost loader, EnvironmentService, a SQLite store in a temp dir, the
/// inventory following the plugin's change stream, and a token issuer. No ports, no Incus.
final class Harness: Sendable {
    static let node = "test-node"
    static let secret = "in-process-tests-secret-0123456789abcdef"

    let dir: URL
    let journal: URL
    let plane: ControlPlane
    let tokens: Tokens
    let inventoryTask: Task<Void, Never>

    static var library: URL { TestEnv.buildDir.appendingPathComponent("libFakeInstances.so") }

    /// A plugin directory holding the fake's manifest and the library `swift build` made.
    /// Without `accounts`, the manifest does not declare accounts/1 (the configuration then
    /// hides it too: a backend like QemuWindows).
    static func pluginDir(in parent: URL, accounts: Bool = true) throws -> URL {
        guard FileManager.default.fileExists(atPath: library.path) else {
            throw TestFailure("\(library.path) is missing: build all products (swift build --build-tests) before the tests")
        }
        let dir = parent.appendingPathComponent("fake-instances")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let manifest = TestEnv.repoRoot.appendingPathComponent("Tests/FakeInstances/plugin.json")
        if accounts {
            try FileManager.default.copyItem(at: manifest, to: dir.appendingPathComponent("plugin.json"))
        } else {
            guard var fields = try JSONSerialization.jsonObject(with: Data(contentsOf: manifest)) as? [String: Any],
                  let capabilities = fields["capabilities"] as? [String], capabilities.contains("accounts/1") else {
                throw TestFailure("Tests/FakeInstances/plugin.json should declare accounts/1")
            }
            fields["capabilities"] = capabilities.filter { $0 != "accounts/1" }
            try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]).write(to: dir.appendingPathComponent("plugin.json"))
        }
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("libFakeInstances.so"), withDestinationURL: library)
        return dir
    }

    static let quiet = Logger(label: "in-process", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Load the fake through the real loader with `config` as its plugin configuration.
    /// Without `accounts`: the fake without accounts/1 (its manifest and its configuration).
    static func loadPlugins(in dir: URL, config: [String: JSONValue], enabled: Bool = true, accounts: Bool = true,
                            events: EventBus = EventBus(), gpu: JSONValue? = nil) throws -> PluginManager {
        let plugins = try pluginDir(in: dir, accounts: accounts)
        var config = config
        if !accounts { config["accounts"] = .bool(false) }
        var entries: [String: PluginSettings.Entry] = ["fake-instances": .init(enabled: enabled, config: .object(config))]
        var paths = [plugins]
        if let gpu {
            // The real nvidia-gpu plugin (C), configured with `gpu` (its sysfsPath).
            paths.append(try FakeGPU.buildPlugin(into: dir.appendingPathComponent("gpu-plugins")))
            entries["nvidia-gpu"] = .init(enabled: true, config: gpu)
        }
        let settings = PluginSettings(plugins: entries)
        return PluginManager(loader: PluginLoader(searchPaths: paths, settings: settings, node: node, logger: quiet, events: events))
    }

    /// The fake's accounts/1, called directly (as the host never would: to make accounts the
    /// control plane does not know about).
    let accounts: AccountsClient?

    init(config extra: [String: JSONValue] = [:], accounts withAccounts: Bool = true, gpu: JSONValue? = nil,
         hostConfig: (inout HostConfig) -> Void = { _ in }) async throws {
        dir = try TestEnv.tempDir("inproc")
        journal = dir.appendingPathComponent("journal.jsonl")
        var pluginConfig: [String: JSONValue] = ["node": .string(Self.node), "journal": .string(journal.path)]
        pluginConfig.merge(extra) { _, new in new }
        let plugins = try Self.loadPlugins(in: dir, config: pluginConfig, accounts: withAccounts, gpu: gpu)
        accounts = plugins.records.first { $0.id == "fake-instances" }?.plugin.flatMap { AccountsClient($0) }
        var config = HostConfig()
        config.node = Self.node
        config.backend = "fake-instances"
        config.stackPaths = [TestEnv.repoRoot.appendingPathComponent("stacks").path]
        hostConfig(&config)
        let service = EnvironmentService(config: config, plugins: plugins, stacks: StackCatalog(paths: [TestEnv.repoRoot.appendingPathComponent("stacks")]),
                                         logger: Self.quiet)
        let store = try Store.open(databaseURL: nil, stateDir: dir.appendingPathComponent("state").path, logger: Self.quiet)
        _ = try await store.migrate()
        let events = DaemonEvents()
        let inventory = Inventory(service: service, events: events, logger: Self.quiet)
        plane = ControlPlane(service: service, store: store, inventory: inventory, events: events, logger: Self.quiet,
                             telemetry: Telemetry(version: "test", reuseFor: .zero))
        tokens = try await Tokens(secret: Self.secret, revocations: plane.revocations)
        inventoryTask = Task { await inventory.run() }
        // The change stream is connected (and the first listing done) before a test starts.
        let deadline = Date().addingTimeInterval(10)
        while !inventory.isWatching {
            guard Date() < deadline else { throw TestFailure("the inventory never connected to the fake's watch") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    func close() async {
        inventoryTask.cancel()
        await inventoryTask.value
        await plane.store.db.close()
        TestEnv.cleanup(dir)
    }

    /// Run `body` with a fresh harness, closing it whatever happens.
    static func with<T>(config: [String: JSONValue] = [:], accounts: Bool = true, gpu: JSONValue? = nil, hostConfig: (inout HostConfig) -> Void = { _ in },
                        _ body: (Harness) async throws -> T) async throws -> T {
        let h = try await Harness(config: config, accounts: accounts, gpu: gpu, hostConfig: hostConfig)
        do {
            let value = try await body(h)
            await h.close()
            return value
        } catch {
            await h.close()
            throw error
        }
    }

    // MARK: - callers and tokens

    static func caller(_ subject: String, _ role: Role = .user) -> Caller { Caller(subject: subject, role: role, source: "test", interface: "test") }
    static let admin = caller("admin", .admin)
    static let nodeCaller = caller("node.other", .node)

    func token(_ subject: String, _ role: Role = .user, expiresIn: TimeInterval? = 3600, now: Date = Date()) async throws -> String {
        try await tokens.generate(username: subject, roles: [role], expiresIn: expiresIn, now: now)
    }

    // MARK: - fixtures

    /// An OpenSSH ed25519 public key line (the key blob's layout; the point need not be on the curve).
    static func sshKey(_ comment: String = "test@containarium") -> String {
        var blob = Data()
        func string(_ bytes: [UInt8]) {
            let n = UInt32(bytes.count)
            blob.append(contentsOf: [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)])
            blob.append(contentsOf: bytes)
        }
        string(Array("ssh-ed25519".utf8))
        string((0..<32).map { _ in UInt8.random(in: 0...255) })
        return "ssh-ed25519 \(blob.base64EncodedString()) \(comment)"
    }

    /// A synchronous create of `user`'s environment by `caller` (the owner by default).
    @discardableResult
    func create(_ user: String, by caller: Caller? = nil, keys: [String]? = nil, labels: [String: String] = [:], stack: String? = nil,
                memory: String? = nil) async throws -> ContainerView {
        let r = CreateEnvironmentRequest(username: user, sshKeys: keys ?? [Self.sshKey()], memory: memory, stack: stack, labels: labels)
        switch try await plane.createContainer(caller ?? Self.caller(user), r, async: false) {
        case .done(let view): return view
        case .started: throw TestFailure("a synchronous create returned an operation")
        }
    }

    // MARK: - the fake's journal

    struct Call: Sendable {
        var method: String
        var request: JSONValue
        var argv: [String] { request["command"]?.items?.compactMap(\.stringValue) ?? [] }
    }

    /// Every call the plugin received, in order.
    func calls(_ method: String? = nil) throws -> [Call] {
        let text = (try? String(contentsOf: journal, encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").compactMap { line in
            let v = try WireJSON.decode(JSONValue.self, from: Data(line.utf8))
            guard let m = v["method"]?.stringValue, method == nil || m == method else { return nil }
            return Call(method: m, request: v["request"] ?? .null)
        }
    }

    /// Audit entries for `target` (newest first), read as an admin.
    func audit(target: String? = nil, action: String? = nil) async throws -> [AuditEntry] {
        try await plane.auditLog(Self.admin, AuditFilter(action: action, target: target, limit: 1000))
    }
}

/// The error code a throwing call ends with, or nil when it succeeds.
func errorCode(_ body: () async throws -> some Any) async -> ContainariumError.Code? {
    do {
        _ = try await body()
        return nil
    } catch let e as ContainariumError {
        return e.code
    } catch {
        return .internal
    }
}

/// Wait until `condition` holds (the inventory follows the change stream asynchronously).
func eventually(_ what: String, within seconds: Double = 5, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while try await !condition() {
        guard Date() < deadline else { throw TestFailure("timed out waiting for: \(what)") }
        try await Task.sleep(for: .milliseconds(5))
    }
}
