public import ContainariumCore
public import Foundation
public import Logging
public import PluginHost
import Synchronization

/// What a caller asks for when creating an environment. Raw strings from the edge; the
/// service validates every field before anything is created.
public struct CreateEnvironmentRequest: Sendable {
    public var username: String
    public var sshKeys: [String]
    public var image: String?
    public var osType: String?
    public var cpu: String?
    public var memory: String?
    public var disk: String?
    public var autostart: Bool?
    public var nesting: Bool?
    public var stack: String?
    public var labels: [String: String]
    /// How many GPUs to pass through, optionally only of one model.
    public var gpus: Int?
    public var gpuModel: String?
    /// Which GPUs (PCI addresses): set by the scheduler, not by users.
    public var gpuDevices: [String]
    /// The node to create it on (the scheduler's filters still apply); nil lets it choose.
    public var node: String?
    /// Container runtimes to install inside (the reference's `enablePodman` / `enableDocker`).
    public var runtimes: [ContainerRuntime]
    /// The backend kind to create it with ("lxc", "vm"): set by the control plane from the
    /// scheduler's placement; nil lets the node choose by OS family (`osFamily`).
    public var kind: String?
    /// Keep it off preemptible nodes (the scheduler's rule; see SchedulingPolicy).
    public var critical = false

    /// The OS family the request asks for, which picks the instance backend (a manifest's
    /// `osTypes`): that of the OS type, else of the image name, else "linux" (the default image).
    public var osFamily: String { HostConfig.osFamily(of: osType ?? image ?? HostConfig.builtinImage) }

    public init(
        username: String, sshKeys: [String], image: String? = nil, osType: String? = nil, cpu: String? = nil,
        memory: String? = nil, disk: String? = nil, autostart: Bool? = nil, nesting: Bool? = nil, stack: String? = nil,
        labels: [String: String] = [:], gpus: Int? = nil, gpuModel: String? = nil, gpuDevices: [String] = [], node: String? = nil,
        runtimes: [ContainerRuntime] = []
    ) {
        self.node = node
        self.runtimes = runtimes
        self.gpus = gpus
        self.gpuModel = gpuModel
        self.gpuDevices = gpuDevices
        self.username = username
        self.sshKeys = sshKeys
        self.image = image
        self.osType = osType
        self.cpu = cpu
        self.memory = memory
        self.disk = disk
        self.autostart = autostart
        self.nesting = nesting
        self.stack = stack
        self.labels = labels
    }
}

/// A container engine installed inside an environment on request. Each is the stack of the same
/// name in the catalog, offered only when the node's config lists it (`runtimes`).
public enum ContainerRuntime: String, Sendable, Codable, CaseIterable {
    case podman
    case docker

    /// The reference's request field for it.
    public var requestField: String { self == .podman ? "enablePodman" : "enableDocker" }
}

/// One numbered step of a long operation, for progress displays.
public struct StepProgress: Sendable, Equatable {
    public var step: Int
    public var total: Int
    public var message: String
    public init(step: Int, total: Int, message: String) {
        self.step = step
        self.total = total
        self.message = message
    }
}

/// The environments service: the one place every adapter (CLI, and later REST, gRPC, web,
/// MCP) goes through to create, inspect, change and remove environments.
public struct EnvironmentService: Sendable {
    public let config: HostConfig
    public let plugins: PluginManager
    public let stacks: StackCatalog
    public let logger: Logger
    /// The config file this service was built from (nil: built in memory).
    public private(set) var configPath: String?

    public static let minimumMemory = ByteSize(bytes: 128 << 20)
    public static let minimumDisk = ByteSize(bytes: 1 << 30)

    public init(config: HostConfig, plugins: PluginManager, stacks: StackCatalog, logger: Logger) {
        self.config = config
        self.plugins = plugins
        self.stacks = stacks
        self.logger = logger
    }

    /// Build the service from the config file: discover and load the node's plugins.
    public static func bootstrap(configPath: String?, extraPluginPaths: [String] = [], logger: Logger) throws(ContainariumError) -> EnvironmentService {
        let config = try HostConfig.load(path: configPath)
        let loader = PluginLoader(
            searchPaths: config.pluginSearchPaths(extra: extraPluginPaths), settings: config.pluginSettings,
            node: config.nodeName, logger: logger, events: EventBus())
        var service = EnvironmentService(
            config: config, plugins: PluginManager(loader: loader), stacks: StackCatalog(paths: config.stackSearchPaths()),
            logger: logger)
        service.configPath = HostConfig.resolvedPath(configPath)
        return service
    }

    /// The outcome of `setPluginEnabled`.
    public struct PluginToggle: Sendable {
        public var id: String
        public var enabled: Bool
        public var node: String
        public var path: String
        public var section: String
        /// Whether this process runs the plugin differently from the new setting: plugins are
        /// loaded once, at start, so a running daemon takes the change when it restarts.
        public var restartRequired: Bool
        public var message: String
    }

    /// Enable or disable a plugin found on this node, in this node's config file. Disabling an
    /// instance backend that still holds environments is refused unless `force`: they would
    /// be out of reach after the restart.
    public func setPluginEnabled(_ id: String, enabled: Bool, force: Bool = false) async throws(ContainariumError) -> PluginToggle {
        guard let record = plugins.records.first(where: { $0.id == id }) else {
            let known = plugins.records.map(\.id).sorted().joined(separator: ", ")
            throw .notFound("no plugin \(id) on node \(config.nodeName) (found: \(known.isEmpty ? "none" : known))")
        }
        if !enabled, !force, let client = plugins.instances(id: id) {
            let held = try await client.list().map(\.name).sorted()
            if !held.isEmpty {
                throw ContainariumError(.failedPrecondition, "\(id) still holds \(held.count) environment(s) (\(held.prefix(10).joined(separator: ", "))): delete them first, or force it (they stay, out of reach until it is enabled again)")
            }
        }
        guard let path = configPath else { throw ContainariumError(.failedPrecondition, "this service has no config file to change") }
        let change = try HostConfig.setPluginEnabled(id, enabled, node: config.nodeName, path: path)
        let restart = record.enabled != enabled
        let word = enabled ? "enabled" : "disabled"
        let message = restart
            ? "\(id) \(word) on node \(config.nodeName) (\(change.section) in \(change.path)); plugins are loaded at start: restart the daemon there (systemctl restart containarium) for it to take effect"
            : "\(id) \(word) on node \(config.nodeName) (\(change.section) in \(change.path)); it already runs that way, no restart needed"
        logger.info("plugin setting changed", metadata: ["plugin": "\(id)", "enabled": "\(enabled)", "file": "\(change.path)"])
        return PluginToggle(id: id, enabled: enabled, node: config.nodeName, path: change.path, section: change.section,
                            restartRequired: restart, message: message)
    }

    /// This node's default instance backend: the config's `backend`, else the first ready one.
    /// Node-wide questions (capacity) go to it: every backend of a node shares the same host.
    private func backend() throws(ContainariumError) -> InstancesClient {
        try plugins.instances(backend: config.backend)
    }

    /// Which backend holds which instance (learnt from creates, listings and lookups).
    let holders = BackendHolders()

    /// The backend a new environment goes to: by the request's kind and OS family, the config's
    /// `backend` preferred (see `BackendOffer.choose`).
    public func backend(forCreate r: CreateEnvironmentRequest) throws(ContainariumError) -> InstancesClient {
        if let kind = r.kind, !PluginManifest.validWord(kind) { throw .invalid("kind '\(kind)' is not a backend kind (e.g. lxc, vm)") }
        let client = try plugins.instances(kind: r.kind, os: r.osFamily, preferred: config.backend)
        // Keys are installed by the backend's accounts/1; one without it could only drop them.
        if !r.sshKeys.isEmpty, AccountsClient(client.plugin) == nil {
            throw .invalid("sshKeys cannot be installed: the \(client.backendID) backend does not manage accounts (accounts/1); create it without keys (a Windows VM is reached over RDP)")
        }
        return client
    }

    /// The backend holding instance `name`: with one backend that one; with several, the one
    /// that last answered for it, else the first that knows it.
    public func backend(holding name: String) async throws(ContainariumError) -> InstancesClient {
        let all = plugins.instanceBackends
        guard all.count > 1 else { return try backend() }
        if let id = holders.get(name), let known = all.first(where: { $0.backendID == id }) { return known }
        var failure: ContainariumError?
        for client in all {
            do {
                _ = try await client.info(InstanceRef(name: name))
                holders.set(name, client.backendID)
                return client
            } catch where error.code == .notFound {
                continue
            } catch {
                failure = failure ?? error
            }
        }
        throw failure ?? .notFound("\(name) not found on any instance backend of this node (\(all.map(\.backendID).joined(separator: ", ")))")
    }

    /// One instance by its name, from the backend holding it, tagged with that backend.
    public func instance(_ name: String) async throws(ContainariumError) -> InstanceInfo {
        let client = try await backend(holding: name)
        return Self.tagged(try await client.info(InstanceRef(name: name)), client)
    }

    static func tagged(_ info: InstanceInfo, _ client: InstancesClient) -> InstanceInfo {
        var i = info
        if i.backend == nil { i.backend = client.backendID }
        return i
    }

    // MARK: - create

    /// Validated form of a create request (pure; no side effects).
    public struct ValidatedCreate: Sendable {
        public var user: Username
        public var keys: [SSHPublicKey]
        public var request: InstanceCreateRequest
        public var stack: Stack?
        /// Container runtimes to install after the stack (their stacks, in order).
        public var runtimes: [Stack]
        /// enableDocker: the owner joins the docker group (also when `stack` is docker).
        public var joinDockerGroup: Bool = false
        /// GPUs asked for (their addresses are in `request.gpus` once chosen).
        public var gpuCount: Int
        public var gpuModel: String?
    }

    public static let maximumGPUs = 16

    /// Count, model and addresses of a GPU request, checked.
    public static func validateGPUs(_ r: CreateEnvironmentRequest) throws(ContainariumError) -> (Int, String?, [String]) {
        let count = r.gpus ?? r.gpuDevices.count
        guard (0...maximumGPUs).contains(count) else { throw .invalid("gpus must be between 0 and \(maximumGPUs), not \(count)") }
        if let m = r.gpuModel, m.isEmpty || m.count > 200 || m.unicodeScalars.contains(where: { $0.value < 0x20 }) {
            throw .invalid("gpuModel must be 1-200 printable characters")
        }
        if r.gpuModel != nil && count == 0 { throw .invalid("gpuModel needs gpus of at least 1") }
        for a in r.gpuDevices where !GPUInfo.validPCIAddress(a) { throw .invalid("'\(a)' is not a PCI address (dddd:bb:dd.f)") }
        guard r.gpuDevices.isEmpty || r.gpuDevices.count == count, Set(r.gpuDevices).count == r.gpuDevices.count else {
            throw .invalid("gpuDevices must list \(count) different PCI addresses")
        }
        return (count, r.gpuModel, r.gpuDevices)
    }

    /// The runtimes this node's config offers (default: all).
    var offeredRuntimes: [String] { config.runtimes ?? ContainerRuntime.allCases.map(\.rawValue) }

    /// Whether this node installs `runtime`: offered by the config, with a stack to install it from.
    public func offers(_ runtime: ContainerRuntime) -> Bool {
        offeredRuntimes.contains(runtime.rawValue) && (try? stacks.stack(runtime.rawValue)) != nil
    }

    public func validate(_ r: CreateEnvironmentRequest) throws(ContainariumError) -> ValidatedCreate {
        let user = try Username(r.username)
        // Keys are optional: without one the environment is reached through the browser
        // terminal until keys are added (POST /v1/containers/{user}/ssh-keys).
        var keys: [SSHPublicKey] = []
        for text in r.sshKeys { keys += try SSHPublicKey.parseMany(text) }
        for key in keys { try key.requireGatewayCompatible() }
        if r.image != nil && r.osType != nil { throw .invalid("give either an image or an OS type, not both") }
        let image: String
        if let explicit = r.image {
            image = explicit
        } else if let osType = r.osType {
            image = try config.image(forOSType: osType)
        } else {
            image = config.defaultImage ?? HostConfig.builtinImage
        }
        guard !image.isEmpty, image.count <= 255, !image.contains(where: { $0.isWhitespace || $0 == "?" || $0 == "#" }) else {
            throw .invalid("image alias '\(image)' is not valid")
        }
        let defaults = config.defaults
        let cpu = try (r.cpu ?? defaults?.cpu).map { c throws(ContainariumError) in try CPULimit(parsing: c).incusValue }
        let memory = try (r.memory ?? defaults?.memory).map { m throws(ContainariumError) in try ByteSize(parsing: m) }
        let disk = try (r.disk ?? defaults?.disk).map { d throws(ContainariumError) in try ByteSize(parsing: d) }
        if let memory, memory < Self.minimumMemory { throw .invalid("memory \(memory) is below the minimum of \(Self.minimumMemory)") }
        if let disk, disk < Self.minimumDisk { throw .invalid("disk \(disk) is below the minimum of \(Self.minimumDisk)") }
        // An unknown stack in a create is a bad value (400), not a missing resource.
        let stack = try r.stack.map { s throws(ContainariumError) in
            do throws(ContainariumError) { return try stacks.stack(s) } catch { throw .invalid(error.message) }
        }
        // A runtime asked for turns nesting on unless the request itself turns it off.
        let nesting = r.nesting ?? (r.runtimes.isEmpty ? defaults?.nesting ?? true : true)
        var runtimes: [Stack] = []
        for runtime in r.runtimes where !runtimes.contains(where: { $0.name == runtime.rawValue }) {
            guard nesting else { throw .invalid("\(runtime.requestField) needs nesting; do not set nesting to false with it") }
            let offered = offeredRuntimes
            guard offered.contains(runtime.rawValue) else {
                throw .invalid("\(runtime.rawValue) is not offered on this node (the config's \"runtimes\" lists: \(offered.isEmpty ? "none" : offered.joined(separator: ", ")))")
            }
            let runtimeStack: Stack
            do { runtimeStack = try stacks.stack(runtime.rawValue) } catch {
                throw .invalid("\(runtime.requestField): this node has no '\(runtime.rawValue)' stack to install it from")
            }
            if runtimeStack.name != stack?.name { runtimes.append(runtimeStack) }
        }
        try Labels.validate(r.labels)
        let (gpuCount, gpuModel, gpuDevices) = try Self.validateGPUs(r)
        var labels = r.labels
        if let stack { labels["stack"] = stack.name }
        let request = InstanceCreateRequest(
            name: user.containerName, image: image, cpu: cpu, memoryBytes: memory?.bytes, diskBytes: disk?.bytes,
            autostart: r.autostart ?? defaults?.autostart ?? false, nesting: nesting,
            labels: labels, account: AccountSpec(name: user.value, sshKeys: keys.map(\.authorizedKeysLine)),
            gpus: gpuDevices.isEmpty ? nil : gpuDevices)
        var validated = ValidatedCreate(user: user, keys: keys, request: request, stack: stack, runtimes: runtimes, gpuCount: gpuCount, gpuModel: gpuModel)
        validated.joinDockerGroup = r.runtimes.contains(.docker)
        return validated
    }

    public static let defaultCPUOvercommit = 4.0

    /// The CPU rule, the same for creates and resizes on every interface: a count may exceed
    /// the node's cores up to `overcommit` times them (it is a share: Incus balances it and
    /// the environment sees at most the node's cores), consistent with the scheduler's CPU
    /// over-commit ratio; pinned CPUs must exist on the node.
    public static func checkCPU(_ raw: String, nodeCPUs: Int, overcommit: Double) throws(ContainariumError) {
        let limit = try CPULimit(parsing: raw)
        guard nodeCPUs > 0 else { return }
        switch limit {
        case .count(let n):
            let ratio = overcommit.isFinite ? min(max(overcommit, 1), 1024) : 1
            let most = max(nodeCPUs, Int((Double(nodeCPUs) * ratio).rounded(.down)))
            if n > most {
                throw .invalid("CPU count \(n) is more than this node allows: \(nodeCPUs) CPUs at \(ratio.formatted())x over-commit is at most \(most)")
            }
        case .pinned(let cpus):
            if let bad = cpus.first(where: { $0 >= nodeCPUs }) {
                throw .invalid("CPU \(bad) does not exist on this node (it has CPUs 0-\(nodeCPUs - 1))")
            }
        }
    }

    /// Check a CPU value against this node's backend (synchronously, before any work starts).
    public func checkCPU(_ raw: String?, overcommit: Double? = nil) async throws(ContainariumError) {
        guard let raw else { return }
        _ = try CPULimit(parsing: raw)
        // The node's size is needed only for the check: if the backend cannot say, the backend's
        // own validation (pinned CPUs) still applies.
        guard let cpus = try? await backend().capacity().cpus else { return }
        try Self.checkCPU(raw, nodeCPUs: cpus, overcommit: overcommit ?? config.cpuOvercommit ?? Self.defaultCPUOvercommit)
    }

    /// Create an environment: a container with the user's account, keys and (optionally) a
    /// stack. Any failure after the container exists removes it again before returning.
    public func create(
        _ r: CreateEnvironmentRequest, cpuOvercommit: Double? = nil, progress: @escaping @Sendable (StepProgress) -> Void = { _ in }
    ) async throws(ContainariumError) -> InstanceInfo {
        var v = try validate(r)
        let client = try backend(forCreate: r)
        try await checkCPU(v.request.cpu, overcommit: cpuOvercommit)
        if v.gpuCount > 0 && v.request.gpus == nil {
            v.request.gpus = try await pickGPUs(v.gpuCount, model: v.gpuModel, client: client)
        } else if let chosen = v.request.gpus {
            try await checkGPUs(chosen, client: client)
        }
        let toInstall = (v.stack.map { [$0] } ?? []) + v.runtimes
        let extra = toInstall.isEmpty ? 0 : 2
        let name = v.request.name

        // Relay the plugin's progress events for this instance, renumbered to include ours.
        let subscription = plugins.events.subscription()
        let backendSteps = Mutex(0)
        let relay = Task {
            for await e in subscription.events where e.type == "instance.progress" {
                guard let p = try? WireJSON.decode(ProgressEvent.self, from: e.json), p.instance == name else { continue }
                backendSteps.withLock { $0 = p.total }
                progress(StepProgress(step: p.step, total: p.total + extra, message: p.message))
            }
        }
        logger.info("creating environment", metadata: ["user": "\(v.user)", "image": "\(v.request.image)", "backend": "\(client.backendID)"])
        let created: Result<InstanceInfo, ContainariumError>
        do { created = .success(try await client.create(v.request)) } catch { created = .failure(error) }
        // Plugins emit progress before they complete: deliver what is buffered, then stop.
        subscription.finish()
        await relay.value
        var info = Self.tagged(try created.get(), client)
        holders.set(name, client.backendID)

        if !toInstall.isEmpty {
            let base = backendSteps.withLock { $0 }  // the backend's create steps
            do {
                try await install(toInstall, in: name, client: client) { step, message in
                    progress(StepProgress(step: base + step, total: base + extra, message: message))
                }
                if v.joinDockerGroup {
                    try await joinGroup("docker", user: v.user, in: name, client: client)
                }
                info = Self.tagged(try await client.info(InstanceRef(name: name)), client)
            } catch {
                logger.warning("stack install failed; removing the environment", metadata: ["user": "\(v.user)", "error": "\(error.message)"])
                // Detached: the cleanup must run even when the create was cancelled.
                let removal = Task.detached { try await client.remove(InstanceRef(name: name, force: true)) }
                if case .failure(let cleanupError) = await removal.result {
                    logger.error("could not remove the environment after a failed create", metadata: ["user": "\(v.user)", "error": "\(cleanupError)"])
                }
                throw error
            }
        }
        return info
    }

    // MARK: - consoles

    /// A connected stream to the console of `username`'s environment (serial or VNC), from the
    /// instance backend's console/1; the caller owns the descriptor.
    public func openConsole(username: String, kind: String = "serial") async throws(ContainariumError) -> (protocolName: String, fd: Int32) {
        let user = try Username(username)
        let client = try await backend(holding: user.containerName)
        guard let console = ConsoleClient(client.plugin) else {
            throw ContainariumError(.unsupported, "the \(client.backendID) backend has no console (console/1)")
        }
        return try await console.open(instance: user.containerName, kind: kind)
    }

    // MARK: - GPUs

    /// This node's GPUs from every devices.gpu/1 plugin, each marked with the environment it
    /// is passed through to (from the backend's own view of its instances).
    public func gpus(instances: [InstanceInfo]? = nil) async throws(ContainariumError) -> [GPUInfo] {
        let providers = plugins.gpuProviders()
        guard !providers.isEmpty else { return [] }
        var all: [GPUInfo] = []
        for p in providers { all += try await p.list() }
        let listed: [InstanceInfo]
        if let instances { listed = instances } else { listed = try await list() }
        var owner: [String: String] = [:]
        for i in listed { for a in i.gpus ?? [] { owner[a] = i.name } }
        for k in all.indices { all[k].attachedTo = owner[all[k].pciAddress] ?? all[k].attachedTo }
        return all.sorted { $0.pciAddress < $1.pciAddress }
    }

    /// The first `count` free GPUs (of `model`), for a create on this node alone.
    func pickGPUs(_ count: Int, model: String?, client: InstancesClient) async throws(ContainariumError) -> [String] {
        let free = try await gpus(instances: client.list()).filter { $0.attachedTo == nil && (model == nil || $0.model == model) }
        guard free.count >= count else {
            throw ContainariumError(.resourceExhausted, "\(count) GPU(s)\(model.map { " of model \($0)" } ?? "") asked for, \(free.count) free on this node")
        }
        return free.prefix(count).map(\.pciAddress)
    }

    /// GPUs a scheduler chose must exist here and be free.
    func checkGPUs(_ chosen: [String], client: InstancesClient) async throws(ContainariumError) {
        let known = Dictionary(try await gpus(instances: client.list()).map { ($0.pciAddress, $0) }, uniquingKeysWith: { a, _ in a })
        for a in chosen {
            guard let g = known[a] else { throw .invalid("this node has no GPU at \(a)") }
            if let user = g.attachedTo { throw ContainariumError(.resourceExhausted, "the GPU at \(a) is already passed through to \(user)") }
        }
    }

    /// Install a stack into a running environment, then run its check.
    public func installStack(username: String, stack name: String, progress: @escaping @Sendable (StepProgress) -> Void = { _ in })
        async throws(ContainariumError) -> ExecResult
    {
        let user = try Username(username)
        let stack = try stacks.stack(name)
        let client = try await backend(holding: user.containerName)
        return try await install([stack], in: user.containerName, client: client) { step, message in
            progress(StepProgress(step: step, total: 2, message: message))
        }
    }

    /// Put the owner's account in a group made by a runtime's packages (docker), so the engine
    /// works without sudo. Arguments go as an argv, never through a shell.
    private func joinGroup(_ group: String, user: Username, in name: String, client: InstancesClient) async throws(ContainariumError) {
        let r = try await client.exec(ExecRequest(name: name, command: ["usermod", "-aG", group, user.value], timeoutSeconds: 60))
        guard r.exitCode == 0 else {
            throw ContainariumError(.internal, "could not add \(user) to the \(group) group (exit \(r.exitCode))", cause: lastLines(r.stderr))
        }
    }

    /// apt-get inside an environment, waiting for apt's locks: a freshly booted system may be
    /// running its own `apt-daily` update ("Could not get lock /var/lib/apt/lists/lock").
    /// dpkg's lock has apt's own timeout; the lists lock is retried here, up to `timeout`.
    private func aptGet(_ args: [String], in name: String, env: [String: String], timeout: Double, client: InstancesClient)
        async throws(ContainariumError) -> ExecResult
    {
        let argv = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=\(Int(timeout))"] + args
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = max(30, deadline.timeIntervalSinceNow)
            let r = try await client.exec(ExecRequest(name: name, command: argv, environment: env, timeoutSeconds: left))
            let locked = r.exitCode != 0 && (r.stderr.contains("Could not get lock") || r.stderr.contains("Unable to lock"))
            guard locked, Date() < deadline else { return r }
            logger.info("apt is busy in the environment; waiting for its lock", metadata: ["instance": "\(name)"])
            do { try await Task.sleep(for: .seconds(2)) } catch { throw ContainariumError(.cancelled, "cancelled while waiting for apt's lock in \(name)") }
        }
    }

    /// Install stacks (one apt transaction), then run each one's check; returns the last check.
    @discardableResult
    private func install(_ stacks: [Stack], in name: String, client: InstancesClient, step: (Int, String) -> Void) async throws(ContainariumError) -> ExecResult {
        let names = stacks.map(\.name).joined(separator: ", ")
        let packages = stacks.flatMap(\.packages)
        step(1, "Installing \(stacks.count == 1 ? "stack" : "stacks") \(names): \(packages.joined(separator: " "))")
        let env = ["DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        let update = try await aptGet(["update"], in: name, env: env, timeout: 600, client: client)
        guard update.exitCode == 0 else {
            throw ContainariumError(.unavailable, "apt-get update failed in \(name) (exit \(update.exitCode))", cause: lastLines(update.stderr))
        }
        let install = try await aptGet(["-y", "--no-install-recommends", "install"] + packages, in: name, env: env, timeout: 1800, client: client)
        guard install.exitCode == 0 else {
            throw ContainariumError(.internal, "installing \(names) failed (exit \(install.exitCode))", cause: lastLines(install.stderr))
        }
        for stack in stacks {
            for argv in stack.setup ?? [] {
                let r = try await client.exec(ExecRequest(name: name, command: argv, environment: env, timeoutSeconds: 300))
                guard r.exitCode == 0 else {
                    throw ContainariumError(.internal, "setting up stack \(stack.name) failed (exit \(r.exitCode))", cause: lastLines(r.stderr + r.stdout))
                }
            }
        }
        var last = ExecResult(exitCode: 0, stdout: "", stderr: "")
        for (i, stack) in stacks.enumerated() {
            if i == 0 {
                step(2, stacks.count == 1 ? "Checking stack \(stack.name): \(stack.check.joined(separator: " "))" : "Checking stacks \(names)")
            }
            let check = try await client.exec(ExecRequest(name: name, command: stack.check, environment: env, timeoutSeconds: 120))
            guard check.exitCode == 0 else {
                throw ContainariumError(.internal, "stack \(stack.name) installed but its check failed (exit \(check.exitCode))", cause: lastLines(check.stderr + check.stdout))
            }
            last = check
        }
        return last
    }

    private func lastLines(_ s: String, _ n: Int = 5) -> String {
        s.split(separator: "\n").suffix(n).joined(separator: " | ")
    }

    // MARK: - everything else

    /// Every instance of every ready backend of this node, each tagged with its backend.
    public func list() async throws(ContainariumError) -> [InstanceInfo] {
        let all = plugins.instanceBackends
        guard all.count > 1 else {
            let client = try backend()
            return try await client.list().map { Self.tagged($0, client) }
        }
        // All or nothing: a partial listing would read as "deleted" to the reconciler and to
        // creates that drop records of vanished environments; a failing backend fails the list.
        var out: [InstanceInfo] = []
        for client in all {
            let part = try await client.list()
            for i in part { holders.set(i.name, client.backendID) }
            out += part.map { Self.tagged($0, client) }
        }
        return out
    }

    public func info(username: String) async throws(ContainariumError) -> InstanceInfo {
        let user = try Username(username)
        return try await instance(user.containerName)
    }

    public func delete(username: String, force: Bool) async throws(ContainariumError) {
        let user = try Username(username)
        try await backend(holding: user.containerName).remove(InstanceRef(name: user.containerName, force: force))
        holders.set(user.containerName, nil)
        logger.info("environment deleted", metadata: ["user": "\(user)"])
    }

    public func start(username: String) async throws(ContainariumError) -> InstanceInfo {
        let user = try Username(username)
        let client = try await backend(holding: user.containerName)
        return Self.tagged(try await client.start(InstanceRef(name: user.containerName)), client)
    }

    public func stop(username: String, force: Bool = false) async throws(ContainariumError) -> InstanceInfo {
        let user = try Username(username)
        let client = try await backend(holding: user.containerName)
        return Self.tagged(try await client.stop(InstanceRef(name: user.containerName, force: force)), client)
    }

    public func restart(username: String) async throws(ContainariumError) -> InstanceInfo {
        let user = try Username(username)
        let client = try await backend(holding: user.containerName)
        return Self.tagged(try await client.restart(InstanceRef(name: user.containerName)), client)
    }

    public func resize(username: String, cpu: String?, memory: String?, disk: String?, cpuOvercommit: Double? = nil) async throws(ContainariumError) -> InstanceInfo {
        let user = try Username(username)
        guard cpu != nil || memory != nil || disk != nil else { throw .invalid("nothing to resize: give --cpu, --memory or --disk") }
        let cpuValue = try cpu.map { c throws(ContainariumError) in try CPULimit(parsing: c).incusValue }
        let mem = try memory.map { m throws(ContainariumError) in try ByteSize(parsing: m) }
        let dsk = try disk.map { d throws(ContainariumError) in try ByteSize(parsing: d) }
        if let mem, mem < Self.minimumMemory { throw .invalid("memory \(mem) is below the minimum of \(Self.minimumMemory)") }
        if let dsk, dsk < Self.minimumDisk { throw .invalid("disk \(dsk) is below the minimum of \(Self.minimumDisk)") }
        try await checkCPU(cpuValue, overcommit: cpuOvercommit)
        let client = try await backend(holding: user.containerName)
        return Self.tagged(try await client.resize(ResizeRequest(name: user.containerName, cpu: cpuValue, memoryBytes: mem?.bytes, diskBytes: dsk?.bytes)), client)
    }

    /// Run `command` in `username`'s environment: as root, as the owner's account (`asUser`),
    /// or as `account` (a collaborator's own).
    public func exec(username: String, command: [String], asUser: Bool = false, account: String? = nil) async throws(ContainariumError) -> ExecResult {
        let user = try Username(username)
        let client = try await backend(holding: user.containerName)
        var request = ExecRequest(name: user.containerName, command: command)
        if let name = try account.map(Username.init) ?? (asUser ? user : nil) {
            // Resolve the account's ids inside the container rather than assuming 1000.
            let ent = try await client.exec(ExecRequest(name: user.containerName, command: ["getent", "passwd", name.value]))
            guard ent.exitCode == 0, let entry = PasswdEntry(line: ent.stdout) else {
                throw .notFound("account \(name) does not exist in \(user.containerName)")
            }
            request.user = entry.uid
            request.group = entry.gid
            request.cwd = entry.home
            request.environment = ["HOME": entry.home, "USER": name.value, "LOGNAME": name.value]
        }
        return try await client.exec(request)
    }

    // MARK: - accounts, keys and collaborators (accounts/1)

    /// The accounts/1 extension of the backend behind `client`, or a clear `.unsupported` that
    /// names the backend: keys and collaborators are never attempted through exec and a shell.
    func accounts(_ client: InstancesClient) throws(ContainariumError) -> AccountsClient {
        guard let accounts = AccountsClient(client.plugin) else {
            throw ContainariumError(.unsupported, "the \(client.backendID) backend does not manage accounts (accounts/1)")
        }
        return accounts
    }

    /// The sign-in secret the backend made for `username`'s environment (a Windows VM's
    /// Administrator password), through its credentials/1; a backend without it says so.
    /// A secret: the caller hands it to the owner only and never logs it.
    public func credentials(username: String) async throws(ContainariumError) -> InstanceCredentials {
        let user = try Username(username)
        let client = try await backend(holding: user.containerName)
        guard let credentials = CredentialsClient(client.plugin) else {
            throw ContainariumError(.unsupported, "the \(client.backendID) backend keeps no sign-in secret for \(user.containerName) (credentials/1): log in with your SSH key")
        }
        return try await credentials.get(InstanceRef(name: user.containerName))
    }

    /// The scanners ready on this node (scanner/1 plugins), by name.
    public var scannerNames: [String] { plugins.scanners().map(\.name).sorted() }

    /// What a scan of `username`'s environment with `scanner` needs, checked before it is
    /// queued: the scanner is ready here, and the backend holding the environment gives the host
    /// a view of its filesystem (filesystem/1; VMs do not).
    @discardableResult
    public func checkScannable(username: String, scanner: String) async throws(ContainariumError) -> (ScannerClient, FilesystemClient, Username) {
        let user = try Username(username)
        let available = plugins.scanners()
        guard let engine = available.first(where: { $0.name == scanner }) else {
            let ready = available.map(\.name).sorted()
            throw ContainariumError(.failedPrecondition, "no scanner '\(scanner)' is ready on \(config.nodeName) (ready: \(ready.isEmpty ? "none" : ready.joined(separator: ", "))): enable its plugin")
        }
        let client = try await backend(holding: user.containerName)
        guard let filesystem = FilesystemClient(client.plugin) else {
            throw ContainariumError(.unsupported, "the \(client.backendID) backend gives the host no view of \(user.containerName)'s filesystem (filesystem/1): its disk is not scanned")
        }
        return (engine, filesystem, user)
    }

    /// Scan `username`'s environment with the scanner plugin `scanner`, from the host side: its
    /// backend's filesystem/1 says where its root filesystem is, and the scanner reads it there;
    /// nothing runs inside the environment. A backend without filesystem/1 (VMs) says so.
    public func scan(username: String, scanner: String) async throws(ContainariumError) -> ScanReport {
        let (engine, filesystem, user) = try await checkScannable(username: username, scanner: scanner)
        let location = try await filesystem.locate(InstanceRef(name: user.containerName))
        var report = try await engine.scan(ScanRequest(path: location.path, instance: user.containerName))
        report.target = user.containerName
        return report
    }

    /// The SSH keys installed for `username` in their environment (the environment is the truth).
    public func authorizedKeys(username: String) async throws(ContainariumError) -> [SSHPublicKey] {
        let user = try Username(username)
        let lines = try await accounts(try await backend(holding: user.containerName)).listKeys(AccountRef(instance: user.containerName, name: user.value))
        return lines.compactMap { try? SSHPublicKey(parsing: $0) }
    }

    /// Replace the SSH keys of `username` in their environment with exactly `keys`.
    public func setAuthorizedKeys(username: String, _ keys: [SSHPublicKey]) async throws(ContainariumError) {
        let user = try Username(username)
        _ = try await accounts(try await backend(holding: user.containerName)).setKeys(
            SetKeysRequest(instance: user.containerName, name: user.value, keys: keys.map(\.authorizedKeysLine)))
    }

    /// Create (or update) `collaborator`'s own account in `owner`'s environment.
    public func addCollaboratorAccount(
        owner: String, collaborator: String, keys: [SSHPublicKey], sudo: Bool, containerRuntime: Bool
    ) async throws(ContainariumError) -> AccountInfo {
        let user = try Username(owner), other = try Username(collaborator)
        return try await accounts(try await backend(holding: user.containerName)).addCollaborator(
            CollaboratorRequest(
                instance: user.containerName, owner: user.value, name: other.value, sshKeys: keys.map(\.authorizedKeysLine), sudo: sudo,
                containerRuntime: containerRuntime))
    }

    /// Remove `collaborator`'s account from `owner`'s environment; false when there was none.
    @discardableResult
    public func removeCollaboratorAccount(owner: String, collaborator: String) async throws(ContainariumError) -> Bool {
        let user = try Username(owner), other = try Username(collaborator)
        return try await accounts(try await backend(holding: user.containerName)).removeCollaborator(
            CollaboratorRef(instance: user.containerName, owner: user.value, name: other.value))
    }

    public func capacity() async throws(ContainariumError) -> NodeCapacity {
        try await backend().capacity()
    }

    /// An OpenSSH client configuration for reaching a user's environment through a jump host.
    public func exportSSHConfig(username: String, jumpHost: String?, keyPath: String?, gateway: SSHConfigExport.Gateway? = nil,
                                now: Date = Date()) async throws(ContainariumError) -> String {
        let user = try Username(username)
        let info = try await instance(user.containerName)
        guard let ip = info.address ?? info.ipv4.first else {
            throw ContainariumError(.failedPrecondition, "\(user.containerName) has no IPv4 address (is it running?)")
        }
        return try SSHConfigExport(user: user, jumpHost: jumpHost, containerIP: ip, keyPath: keyPath, gateway: gateway,
                                   containerHostKeys: info.sshHostKeys ?? []).render(now: now)
    }
}

/// Which backend holds which instance, on a node with several instance backends.
final class BackendHolders: Sendable {
    private let map = Mutex<[String: String]>([:])
    func get(_ name: String) -> String? { map.withLock { $0[name] } }
    func set(_ name: String, _ backend: String?) { map.withLock { $0[name] = backend } }
}
