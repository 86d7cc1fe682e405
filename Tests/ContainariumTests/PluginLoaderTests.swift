import ContainariumCore
import ContainariumService
import Foundation
import Logging
import PluginHost
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Builds fixture plugins with the system C compiler and loads them through the real loader.
struct PluginFixture {
    let root: URL

    init() throws { root = try TestEnv.tempDir("plugins") }

    /// Compile a C source into `<root>/<dir>/<library>` and write a manifest next to it.
    @discardableResult
    func make(
        dir: String, source: URL = TestEnv.repoRoot.appendingPathComponent("Tests/ContainariumTests/Fixtures/fixture_plugin.c"),
        defines: [String] = [], library: String = "libfixture.so", compile: Bool = true, manifest: [String: Any]? = nil
    ) throws -> URL {
        let d = root.appendingPathComponent(dir)
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        if compile {
            let args = ["-std=c11", "-Wall", "-Werror", "-Wno-unused", "-fPIC", "-shared", "-fvisibility=hidden", "-I", TestEnv.abiInclude.path]
                + defines.map { "-D" + $0 } + [source.path, "-o", d.appendingPathComponent(library).path, "-lpthread"]
            let r = try Run.run("/usr/bin/cc", args)
            guard r.status == 0 else { throw TestFailure("cc failed: \(r.output)") }
        }
        let m: [String: Any] = manifest ?? [
            "id": "fixture", "name": "Fixture", "version": "1.0.0", "abi": "1.0", "library": library, "capabilities": ["scanner/1"],
            "defaultEnabled": true,
        ]
        try JSONSerialization.data(withJSONObject: m).write(to: d.appendingPathComponent("plugin.json"))
        return d
    }

    func load(settings: PluginSettings = PluginSettings(), node: String = "test-node", paths: [URL]? = nil, events: EventBus = EventBus()) -> [PluginRecord] {
        PluginLoader(
            searchPaths: paths ?? [root], settings: settings, node: node, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
            events: events, serverExecutable: URL(fileURLWithPath: TestEnv.cliPath)
        ).loadAll()
    }

    /// Settings that serve the fixture from a child process.
    static let isolated = PluginSettings(plugins: ["fixture": .init(enabled: true, isolation: "process")])

    func record(_ dir: String, in records: [PluginRecord]) throws -> PluginRecord {
        try #require(records.first { $0.directory.lastPathComponent == dir })
    }

    func failure(_ dir: String, in records: [PluginRecord]) throws -> String {
        let r = try record(dir, in: records)
        guard case .failed(let why) = r.state else { throw TestFailure("\(dir) did not fail: \(r.state)") }
        return why
    }
}

@Suite("Plugin loader")
struct PluginLoaderTests {
    @Test("a good C plugin loads, reports its capabilities and health")
    func loadsGoodPlugin() async throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "good")
        let records = fx.load()
        let r = try fx.record("good", in: records)
        #expect(r.state == .ready)
        let plugin = try #require(r.plugin)
        #expect(plugin.abiVersion == "1.0")
        #expect(plugin.provides("scanner/1"))
        #expect(!plugin.provides("instances/1"))
        let health = await plugin.health()
        #expect(health.status == "ok")
    }

    @Test("code loads only from where no one else can change it: a world-writable plugin directory, a group-writable library, another user's files are refused by path")
    func untrustedPaths() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        chmod(fx.root.path, 0o755)
        // Each is loaded on its own (they are the same plugin, whose id its library checks).
        let open = try fx.make(dir: "open")
        chmod(open.path, 0o777)
        let lib = try fx.make(dir: "lib")
        chmod(lib.appendingPathComponent("libfixture.so").path, 0o775)
        let good = try fx.make(dir: "good")
        var expected = [open: "\(open.path) is writable by group or others (mode 777)", lib: "libfixture.so is writable by group or others (mode 775)"]
        if geteuid() == 0 {
            // Root's host must not load what another user could have written.
            let theirs = try fx.make(dir: "theirs")
            #expect(chown(theirs.appendingPathComponent("plugin.json").path, 65534, 65534) == 0)
            expected[theirs] = "plugin.json belongs to uid 65534"
        }
        for (dir, why) in expected {
            let r = try fx.record(dir.lastPathComponent, in: fx.load(paths: [dir]))
            guard case .failed(let message) = r.state else {
                Issue.record("\(dir.lastPathComponent) loaded: \(r.state)")
                continue
            }
            #expect(message.contains(why) && message.contains("refusing to load code"), "\(dir.lastPathComponent): \(message)")
            #expect(r.plugin == nil)
        }
        #expect(try fx.record("good", in: fx.load(paths: [good])).state == .ready)
        // A world-writable directory above a plugin is refused too; root's sticky /tmp is not.
        #expect(PluginTrust.problem(good.path) == nil, "\(String(describing: PluginTrust.problem(good.path)))")
        chmod(fx.root.path, 0o777)
        defer { chmod(fx.root.path, 0o755) }
        #expect(PluginTrust.problem(good.appendingPathComponent("plugin.json").path)?.contains("\(fx.root.path) is writable") == true)
    }

    @Test("the executable is found through /proc/self/exe, never argv[0]: run by name from a directory an attacker prepared, it loads nothing from there")
    func argvZeroIsNotTrusted() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        // The attacker's layout: <dir>/work as the current directory and the plugin where
        // argv[0]-relative lookup would find it (<dir>/lib/containarium/plugins).
        let planted = try fx.make(dir: "lib/containarium/plugins/planted", manifest: [
            "id": "planted", "name": "Planted", "version": "1.0.0", "abi": "1.0", "library": "libfixture.so", "capabilities": ["scanner/1"],
            "defaultEnabled": true,
        ])
        let work = fx.root.appendingPathComponent("work"), bin = fx.root.appendingPathComponent("bin")
        for d in [work, bin] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        try FileManager.default.createSymbolicLink(at: bin.appendingPathComponent("containarium"), withDestinationURL: URL(fileURLWithPath: TestEnv.cliPath))
        #expect(FileManager.default.fileExists(atPath: planted.appendingPathComponent("plugin.json").path))
        let r = try Run.run("/usr/bin/env", ["-C", work.path, "PATH=\(bin.path):/usr/bin:/bin", "containarium", "plugin", "list", "--format", "json"],
                            environment: ["CONTAINARIUM_PLUGIN_PATH": ""])
        #expect(r.status == 0, "\(r.output)")
        #expect(!r.stdout.contains("planted"), "argv[0] led the host to the attacker's plugin: \(r.stdout)")
    }

    @Test("missing library: clear message, nothing loaded")
    func missingLibrary() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "nolib", compile: false)
        let why = try fx.failure("nolib", in: fx.load())
        #expect(why.contains("library libfixture.so not found"))
    }

    @Test("a file that is not a shared library is refused with dlopen's reason")
    func notASharedLibrary() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        let d = try fx.make(dir: "text", compile: false)
        try Data("this is not an ELF file\n".utf8).write(to: d.appendingPathComponent("libfixture.so"))
        let why = try fx.failure("text", in: fx.load())
        #expect(why.contains("cannot load libfixture.so as a shared library"))
        #expect(why.contains("header") || why.contains("ELF") || why.contains("too short"))
    }

    @Test("a library without the entry function is refused")
    func missingEntry() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "noentry", defines: ["NO_ENTRY"])
        let why = try fx.failure("noentry", in: fx.load())
        #expect(why.contains("does not export the entry function containarium_plugin_entry"))
    }

    @Test("ABI major mismatch in the manifest is refused before any code is loaded")
    func manifestMajorMismatch() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        // The library would crash the test if loaded: it is a text file. Refusal must come first.
        let d = try fx.make(
            dir: "abi2", compile: false,
            manifest: ["id": "abi2", "name": "x", "version": "1.0.0", "abi": "2.0", "library": "lib.so", "capabilities": [], "defaultEnabled": true])
        try Data("not loaded".utf8).write(to: d.appendingPathComponent("lib.so"))
        let why = try fx.failure("abi2", in: fx.load())
        #expect(why.contains("plugin needs ABI 2.0 but this host speaks ABI 1.1"))
    }

    @Test("a library that refuses the host's ABI, or claims another major, is refused")
    func libraryMajorMismatch() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "refuses", defines: ["ENTRY_RETURNS_NULL"])
        try fx.make(
            dir: "major2", defines: ["TABLE_MAJOR=2"],
            manifest: ["id": "major2", "name": "x", "version": "1.0.0", "abi": "1.0", "library": "libfixture.so", "capabilities": [], "defaultEnabled": true])
        let records = fx.load()
        #expect(try fx.failure("refuses", in: records).contains("cannot serve ABI 1.1"))
        #expect(try fx.failure("major2", in: records).contains("built for ABI 2.0"))
    }

    @Test("a manifest that does not match its library is refused")
    func manifestMismatch() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "wrongid", defines: ["PLUGIN_ID=\"somebody-else\""])
        try fx.make(
            dir: "wrongversion",
            manifest: ["id": "fixture-v", "name": "x", "version": "9.9.9", "abi": "1.0", "library": "libfixture.so", "capabilities": [], "defaultEnabled": true],
        )
        try fx.make(
            dir: "wrongcaps",
            defines: ["PLUGIN_ID=\"caps\"", "NO_EXTENSION"],
            manifest: ["id": "caps", "name": "x", "version": "1.0.0", "abi": "1.0", "library": "libfixture.so", "capabilities": ["scanner/1"], "defaultEnabled": true])
        let records = fx.load()
        #expect(try fx.failure("wrongid", in: records).contains("manifest id 'fixture', library id 'somebody-else'"))
        #expect(try fx.failure("wrongversion", in: records).contains("manifest does not match library"))
        #expect(try fx.failure("wrongcaps", in: records).contains("declares capability scanner/1 but the library does not provide it"))
    }

    @Test("duplicate ids: the first found wins, the other is reported as shadowed")
    func duplicates() throws {
        let first = try PluginFixture(), second = try PluginFixture()
        defer { TestEnv.cleanup(first.root); TestEnv.cleanup(second.root) }
        try first.make(dir: "a")
        try second.make(dir: "b")
        let records = first.load(paths: [first.root, second.root])
        #expect(records.count == 2)
        #expect(records[0].state == .ready)
        #expect(records[1].state == .shadowed(by: first.root.appendingPathComponent("a").path))
        #expect(records[1].plugin == nil)
    }

    @Test("a plugin whose initialize fails is reported with the plugin's own message")
    func initFails() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "initfail", defines: ["INIT_FAILS"])
        let why = try fx.failure("initfail", in: fx.load())
        #expect(why == "initialization failed: fixture refuses to start: no backend configured")
    }

    @Test("malformed manifests are refused with the field at fault")
    func badManifests() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        let d1 = fx.root.appendingPathComponent("garbage")
        try FileManager.default.createDirectory(at: d1, withIntermediateDirectories: true)
        try Data("{not json".utf8).write(to: d1.appendingPathComponent("plugin.json"))
        try fx.make(
            dir: "escape", compile: false,
            manifest: ["id": "escape", "name": "x", "version": "1", "abi": "1.0", "library": "../../etc/passwd", "capabilities": []])
        try fx.make(dir: "nover", compile: false, manifest: ["id": "nover", "name": "x", "abi": "1.0", "library": "l.so", "capabilities": []])
        let records = fx.load()
        #expect(try fx.failure("garbage", in: records).contains("is not valid"))
        #expect(try fx.failure("escape", in: records).contains("must be a file name inside the plugin directory"))
        #expect(try fx.failure("nover", in: records).contains("missing field 'version'"))
    }

    @Test("per-node enablement: disabled plugins load no code; node overrides win")
    func enablement() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        // A library that would fail loudly if loaded proves that disabled means "not loaded".
        try fx.make(dir: "off", defines: ["INIT_FAILS"])
        let settings = PluginSettings(
            plugins: ["fixture": .init(enabled: false)],
            nodes: ["gpu-1": .init(plugins: ["fixture": .init(enabled: true)])])
        #expect(try fx.record("off", in: fx.load(settings: settings, node: "cpu-1")).state == .disabled)
        #expect(try fx.failure("off", in: fx.load(settings: settings, node: "gpu-1")).contains("initialization failed"))
        // defaultEnabled: false in the manifest, nothing in the config: disabled.
        let other = try PluginFixture()
        defer { TestEnv.cleanup(other.root) }
        try other.make(
            dir: "optin",
            manifest: ["id": "fixture", "name": "x", "version": "1.0.0", "abi": "1.0", "library": "libfixture.so", "capabilities": [], "defaultEnabled": false])
        #expect(try other.record("optin", in: other.load()).state == .disabled)
    }

    @Test("a plugin that completes twice is caught, not crashed on")
    func doubleCompletion() async throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "double", defines: ["DOUBLE_COMPLETE"])
        let plugin = try #require(try fx.record("double", in: fx.load()).plugin)
        let scanner = try #require(ScannerClient(plugin))
        let before = PluginDiagnostics.protocolViolations.count
        let report = try await scanner.scan(.object([:]))
        #expect(report["clean"] == .bool(true))
        #expect(PluginDiagnostics.protocolViolations.count == before + 1)
    }

    @Test("cancelling the awaiting Swift task reaches the plugin, whose completion reports CTM_E_CANCELLED", .timeLimit(.minutes(2)))
    func cancellation() async throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "slow", defines: ["SLOW_SCAN"])
        let events = EventBus()
        let plugin = try #require(try fx.record("slow", in: fx.load(events: events)).plugin)
        let scanner = try #require(ScannerClient(plugin))
        let started = events.subscribe()
        let task = Task { try await scanner.scan(.object([:])) }
        for await e in started where e.type == "fixture.scan-started" { break }  // the scan is running
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("the scan finished although it was cancelled")
        } catch let error as ContainariumError {
            // The plugin says this only when its cancel function was called while the scan ran
            // (the scan would otherwise complete with CTM_OK after 60 s).
            #expect(error.code == .cancelled)
            #expect(error.message == "fixture scan cancelled")
        }
    }

    @Test("process isolation: a plugin that crashes takes only its child down; the host reports it and carries on")
    func isolatedCrash() async throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "crash", defines: ["CRASH_ON_SCAN"])
        let record = try fx.record("crash", in: fx.load(settings: PluginFixture.isolated))
        #expect(record.state == .ready)
        let plugin = try #require(record.plugin)
        #expect(plugin.isolation == "process")
        #expect(await plugin.health().status == "ok")
        let scanner = try #require(ScannerClient(plugin))
        do {
            _ = try await scanner.scan(.object([:]))
            Issue.record("the crashing scan returned")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("crashed (signal 11)"), "\(error)")
        }
        // Later calls fail at once with the same reason; the host process is still here.
        await #expect(throws: ContainariumError.self) { try await scanner.scan(.object([:])) }
        #expect(await plugin.health().status == "down")
    }

    @Test("process isolation: load failures read as they do in-process; calls, events and cancellation cross the pipe", .timeLimit(.minutes(2)))
    func isolatedBehavesTheSame() async throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "initfail", defines: ["INIT_FAILS"])
        let why = try fx.failure("initfail", in: fx.load(settings: PluginFixture.isolated))
        #expect(why == "initialization failed: fixture refuses to start: no backend configured")

        let other = try PluginFixture()
        defer { TestEnv.cleanup(other.root) }
        try other.make(dir: "slow", defines: ["SLOW_SCAN"])
        let events = EventBus()
        let plugin = try #require(try other.record("slow", in: other.load(settings: PluginFixture.isolated, events: events)).plugin)
        #expect(plugin.isolation == "process")
        let scanner = try #require(ScannerClient(plugin))
        let started = events.subscribe()
        let task = Task { try await scanner.scan(.object([:])) }
        // The plugin's event crosses the pipe: the scan is running in the child.
        for await e in started where e.type == "fixture.scan-started" { #expect(e.plugin == "fixture"); break }
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("the isolated scan finished although it was cancelled")
        } catch let error as ContainariumError {
            #expect(error.code == .cancelled)
            #expect(error.message == "fixture scan cancelled")
        }
    }

    @Test("an unknown isolation mode is refused")
    func badIsolation() throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "x")
        let why = try fx.failure("x", in: fx.load(settings: PluginSettings(plugins: ["fixture": .init(isolation: "vm")])))
        #expect(why.contains("isolation 'vm' is not one of in-process, process"))
    }
}

@Suite("Plugin structs and accounts/1")
struct AccountsExtensionTests {
    static let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"

    static func manifest(_ capabilities: [String]) -> [String: Any] {
        var m: [String: Any] = ["id": "fixture", "name": "Fixture", "version": "1.0.0", "abi": "1.0", "library": "libfixture.so",
                                "capabilities": capabilities, "defaultEnabled": true]
        // An instance backend says what it serves (docs/plugin-abi.md).
        if capabilities.contains("instances/1") {
            m["kinds"] = ["lxc"]
            m["osTypes"] = ["linux"]
        }
        return m
    }

    @Test("the host reads a plugin's structs only up to the struct_size it declared (each one ends where an inaccessible page begins)")
    func structSizeBounds() async throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "short", defines: ["SHORT_STRUCTS"], manifest: Self.manifest(["scanner/1", "instances/1"]))
        let record = try fx.record("short", in: fx.load())
        #expect(record.state == .ready)
        let plugin = try #require(record.plugin)
        #expect(plugin.abiVersion == "1.0")
        #expect(await plugin.health().status == "ok")
        // A result that ends before its `error` field.
        let report = try await #require(ScannerClient(plugin)).scan(.object([:]))
        #expect(report["clean"] == .bool(true))
        let instances = try #require(InstancesClient(plugin))
        // An error whose 16 message bytes fill its declared size without a NUL.
        do {
            _ = try await instances.list()
            Issue.record("list succeeded although the plugin failed it")
        } catch {
            #expect(error.code == .notFound)
            #expect(error.message == "0123456789abcdef")
        }
        // An older minor's instances/1 table ends before `watch`: unsupported, never read.
        do {
            try await instances.watch()
            Issue.record("watch succeeded although the table has no such field")
        } catch {
            #expect(error.code == .unsupported)
        }
    }

    @Test("accounts/1: the typed client reaches every method of a C plugin's table; its requests and answers match the schema")
    func clientAndSchema() async throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "acc", defines: ["ACCOUNTS"], manifest: Self.manifest(["scanner/1", "instances/1", "accounts/1"]))
        let plugin = try #require(try fx.record("acc", in: fx.load()).plugin)
        let accounts = try #require(AccountsClient(plugin))
        let create = AccountCreateRequest(instance: "alice-container", account: AccountSpec(name: "alice", sshKeys: [Self.key]))
        let ref = AccountRef(instance: "alice-container", name: "alice")
        let set = SetKeysRequest(instance: "alice-container", name: "alice", keys: [Self.key])
        let add = CollaboratorRequest(instance: "alice-container", owner: "alice", name: "bob", sshKeys: [Self.key], sudo: false, containerRuntime: true)
        let remove = CollaboratorRef(instance: "alice-container", owner: "alice", name: "bob")

        let account = try await accounts.create(create)
        #expect(account == AccountInfo(name: "alice", uid: 1000, gid: 1000, home: "/home/alice", shell: "/bin/bash"))
        #expect(try await accounts.listKeys(ref) == [Self.key])
        #expect(try await accounts.setKeys(set) == [Self.key])
        #expect(try await accounts.addCollaborator(add).name == "bob")
        #expect(try await accounts.removeCollaborator(remove))

        let shapes: [(Data, String)] = [
            (try WireJSON.encode(create), "AccountCreateRequest"), (try WireJSON.encode(ref), "AccountRef"),
            (try WireJSON.encode(set), "SetKeysRequest"), (try WireJSON.encode(add), "CollaboratorRequest"),
            (try WireJSON.encode(remove), "CollaboratorRef"), (try WireJSON.encode(account), "Account"),
            (try WireJSON.encode(KeyList(keys: [Self.key])), "KeyList"), (try WireJSON.encode(RemovedResult(removed: false)), "Removed"),
        ]
        for (json, definition) in shapes {
            #expect(try SchemaCheck.violations(of: json, file: "accounts-1.schema.json", definition: definition) == nil, "\(definition)")
        }
        // The schema is no rubber stamp.
        let bad = Data(#"{"instance": "x", "owner": "Alice", "name": "bob"}"#.utf8)
        #expect(try SchemaCheck.violations(of: bad, file: "accounts-1.schema.json", definition: "CollaboratorRef") != nil)
    }

    @Test("a backend without accounts/1: keys and collaborators fail with a clear unsupported error, never silently")
    func unsupportedBackend() async throws {
        let fx = try PluginFixture()
        defer { TestEnv.cleanup(fx.root) }
        try fx.make(dir: "noaccounts", defines: ["SHORT_STRUCTS"], manifest: Self.manifest(["scanner/1", "instances/1"]))
        let logger = Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() })
        let loader = PluginLoader(searchPaths: [fx.root], settings: PluginSettings(), node: "n", logger: logger, events: EventBus())
        let service = EnvironmentService(
            config: HostConfig(), plugins: PluginManager(loader: loader),
            stacks: StackCatalog(paths: [TestEnv.repoRoot.appendingPathComponent("stacks")]), logger: logger)
        let plugin = try #require(service.plugins.ready.first)
        #expect(AccountsClient(plugin) == nil)
        let expected = "the fixture backend does not manage accounts (accounts/1)"
        let key = try SSHPublicKey(parsing: Self.key)
        let attempts: [(String, @Sendable () async throws(ContainariumError) -> Void)] = [
            ("list keys", { () async throws(ContainariumError) in _ = try await service.authorizedKeys(username: "alice") }),
            ("set keys", { () async throws(ContainariumError) in try await service.setAuthorizedKeys(username: "alice", [key]) }),
            ("add collaborator", { () async throws(ContainariumError) in _ = try await service.addCollaboratorAccount(owner: "alice", collaborator: "bob", keys: [key], sudo: false, containerRuntime: false) }),
            ("remove collaborator", { () async throws(ContainariumError) in try await service.removeCollaboratorAccount(owner: "alice", collaborator: "bob") }),
        ]
        for (what, attempt) in attempts {
            do {
                try await attempt()
                Issue.record("\(what) succeeded on a backend without accounts/1")
            } catch {
                #expect(error.code == .unsupported, "\(what)")
                #expect(error.message == expected, "\(what)")
            }
        }
        // The host itself says so for a direct call too.
        await #expect(throws: ContainariumError.self) { try await plugin.call(extension: "accounts/1", method: "list_keys", request: Data("{}".utf8)) }
    }
}
