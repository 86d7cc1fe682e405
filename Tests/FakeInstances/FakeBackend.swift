import ContainariumCore
import Foundation
import PluginKit
import Synchronization

/// Instances in memory, behaving as the instances/1 and accounts/1 contracts
/// (docs/plugin-abi.md, docs/schemas/instances-1.schema.json, accounts-1.schema.json) and the
/// IncusLXC plugin do: the same progress steps, error codes and idempotence; accounts, their
/// authorized keys and collaborators' accounts (with their sudo rules) in the modelled state;
/// and an `exec` that answers the commands the host still runs inside a Debian environment
/// (getent, usermod, apt-get, the cleanup script, stack checks) from that state.
///
/// Faults, set per create through labels (labels are part of the ABI request):
/// - `fake.fail-step: N` fails the create at step N (after its progress event); what the
///   create made is removed, as a real backend must.
/// - `fake.fail-code: CODE` the error code of that failure (default `internal`).
/// - `fake.exec-fail: ARGV0` every later exec of ARGV0 in that instance exits 100.
/// - `fake.step-delay-ms: N` each create step takes N ms (for creates in flight).
final class FakeBackend: Sendable {
    static let defaultNode = "fake-node"

    struct Config: Decodable, Sendable {
        var node: String?
        var cpus: Int?
        var memoryBytes: UInt64?
        var diskBytes: UInt64?
        /// A file to append one JSON line per call to: {"method": ..., "request": ...}.
        var journal: String?
        /// When set, only these image aliases exist (others: not found).
        var images: [String]?
        /// Makes `initialize` fail with this message.
        var failInitialize: String?
        /// Serve accounts/1 (default true). false: a backend without it, as QemuWindows is (its
        /// manifest must not declare it); a create then makes no account, only the owner label.
        var accounts: Bool?
    }

    struct Account: Sendable {
        var name: String
        var uid: UInt32
        var gid: UInt32
        var gecos: String
        var home: String
        var shell: String
        var authorizedKeys: [String] = []
        var groups: Set<String> = []

        var passwdLine: String { "\(name):x:\(uid):\(gid):\(gecos):\(home):\(shell)" }
    }

    struct Box: Sendable {
        var info: InstanceInfo
        var accounts: [String: Account]
        /// Files the model knows, by path (sudo rules), with their content.
        var files: [String: String] = [:]
        var packages: Set<String> = []
        var groups: Set<String> = ["sudo", "users"]
        var execFail: String?
    }

    struct State {
        var instances: [String: Box] = [:]
        var watchers = 0
    }

    let config: Config
    let host: HostServices
    let node: String
    var servesAccounts: Bool { config.accounts ?? true }
    private let state = Mutex(State())
    private let journalLock = Mutex(())
    private let addresses = Mutex(10)

    static let baseDiskUsage: UInt64 = 1536 << 20
    static let baseMemoryUsage: UInt64 = 96 << 20

    init(config: Config, host: HostServices) {
        self.config = config
        self.host = host
        self.node = config.node ?? Self.defaultNode
    }

    // MARK: - journal and events

    func journal<R: Encodable>(_ method: String, _ request: R) {
        guard let path = config.journal, let body = try? WireJSON.encode(request) else { return }
        var line = Data(#"{"method":""#.utf8) + Data(method.utf8) + Data(#"","request":"#.utf8) + body
        line.append(contentsOf: Array("}\n".utf8))
        journalLock.withLock { _ in
            if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
            guard let handle = FileHandle(forWritingAtPath: path) else { return }
            defer { try? handle.close() }
            _ = try? handle.seekToEnd()
            try? handle.write(contentsOf: line)
        }
    }

    /// An `instance.changed` event, as the change stream of a real backend reports it, while
    /// a watch runs.
    private func changed(_ name: String, _ action: String) {
        guard state.withLock({ $0.watchers > 0 }) else { return }
        host.emit(type: "instance.changed", ["name": name, "action": action])
    }

    // MARK: - reading

    private func view(_ box: Box) -> InstanceInfo {
        var info = box.info
        if info.state == .running {
            info.memoryUsageBytes = Self.baseMemoryUsage
            info.processes = 12 + box.accounts.count
            info.cpuUsageNanoseconds = UInt64(max(0, Date().timeIntervalSince(info.startedAt ?? Date())) * 1e7)
        } else {
            info.memoryUsageBytes = 0
            info.processes = 0
            info.cpuUsageNanoseconds = 0
        }
        return info
    }

    func list() -> InstanceList {
        InstanceList(instances: state.withLock { s in s.instances.values.map { view($0) } }.sorted { $0.name < $1.name })
    }

    func info(_ name: String) throws(ContainariumError) -> InstanceInfo {
        guard let box = state.withLock({ $0.instances[name] }) else { throw .notFound("instance \(name) not found") }
        return view(box)
    }

    func capacity() -> NodeCapacity {
        let (all, running, memory, disk) = state.withLock { s in
            (s.instances.count, s.instances.values.filter { $0.info.state == .running }.count,
             s.instances.values.reduce(UInt64(0)) { $0 + ($1.info.memoryLimitBytes ?? 0) },
             s.instances.values.reduce(UInt64(0)) { $0 + ($1.info.diskUsageBytes ?? 0) })
        }
        let total = config.diskBytes ?? 500 << 30
        return NodeCapacity(
            node: node, cpus: config.cpus ?? 8, memoryTotalBytes: config.memoryBytes ?? 32 << 30, memoryUsedBytes: memory,
            diskTotalBytes: total, diskUsedBytes: disk, pool: StoragePoolCapacity(name: "default", driver: "dir", totalBytes: total, usedBytes: disk),
            instances: all, runningInstances: running, backendVersion: "fake-instances \(pluginVersion)")
    }

    // MARK: - create

    private static let namePattern = try? NSRegularExpression(pattern: "^[a-z][a-z0-9-]{0,62}$")

    static func validName(_ name: String) -> Bool {
        guard let re = namePattern else { return false }
        return re.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
    }

    func create(_ r: InstanceCreateRequest, _ ctx: OperationContext) throws(ContainariumError) -> InstanceInfo {
        guard Self.validName(r.name) else { throw .invalid("'\(r.name)' is not a valid instance name") }
        guard !r.image.isEmpty else { throw .invalid("image is empty") }
        if let images = config.images, !images.contains(r.image) { throw .notFound("image alias \(r.image) not found") }
        try Labels.validate(r.labels)
        if let cpu = r.cpu { try checkCPU(cpu) }
        for a in r.gpus ?? [] where !GPUInfo.validPCIAddress(a) { throw .invalid("'\(a)' is not a PCI address (dddd:bb:dd.f)") }
        // The account is made only by a backend with accounts/1, validated as its create
        // validates it (never trusting the host); without it only the owner label says who owns.
        let account = servesAccounts ? r.account : nil
        var keyLines: [String] = []
        if let account {
            try Self.checkSpec(account)
            keyLines = try Self.keyLines(account.sshKeys)
        }
        let failStep = r.labels["fake.fail-step"].flatMap { Int($0) }
        let failCode = r.labels["fake.fail-code"].flatMap(ContainariumError.Code.init(rawValue:)) ?? .internal
        let delay = r.labels["fake.step-delay-ms"].flatMap { UInt32($0) } ?? 0
        let steps = account == nil ? 3 : 5

        var labels = r.labels
        if let owner = r.account?.name { labels["owner"] = owner }
        let info = InstanceInfo(
            name: r.name, state: .stopped, image: r.image, cpuLimit: r.cpu, memoryLimitBytes: r.memoryBytes, diskLimitBytes: r.diskBytes,
            diskUsageBytes: Self.baseDiskUsage, createdAt: Date(), autostart: r.autostart, nesting: r.nesting, labels: labels,
            backend: pluginID, node: node, provisioned: false, gpus: r.gpus)
        let accounts: [String: Account] = [
            "root": Account(name: "root", uid: 0, gid: 0, gecos: "root", home: "/root", shell: "/bin/bash"),
            "daemon": Account(name: "daemon", uid: 1, gid: 1, gecos: "daemon", home: "/usr/sbin", shell: "/usr/sbin/nologin"),
            "nobody": Account(name: "nobody", uid: 65534, gid: 65534, gecos: "nobody", home: "/nonexistent", shell: "/usr/sbin/nologin"),
        ]

        let inserted = state.withLock { s -> Bool in
            guard s.instances[r.name] == nil else { return false }
            s.instances[r.name] = Box(info: info, accounts: accounts, execFail: r.labels["fake.exec-fail"])
            return true
        }
        guard inserted else { throw .alreadyExists("instance \(r.name) already exists") }
        changed(r.name, "instance-created")

        /// One step: progress first (as IncusLXC does), then the fault, delay or cancellation.
        func step(_ n: Int, _ message: String) throws(ContainariumError) {
            ctx.progress(instance: r.name, step: n, of: steps, message)
            if delay > 0 { usleep(delay * 1000) }
            try ctx.checkCancelled()
            if failStep == n { throw ContainariumError(failCode, "injected failure at step \(n) of creating \(r.name) (fake.fail-step)") }
        }
        do throws(ContainariumError) {
            try step(1, "Creating container \(r.name)")
            try step(2, "Starting container")
            try mutate(r.name) { box in
                box.info.state = .running
                box.info.startedAt = Date()
            }
            if let account {
                try step(3, "Creating user \(account.name) with sudo")
                try mutate(r.name) { box in Self.makeAccount(account, in: &box) }
                try step(4, "Installing \(account.sshKeys.count) SSH key(s)")
                try mutate(r.name) { box in box.accounts[account.name]?.authorizedKeys = keyLines }
            }
            try step(steps, "Waiting for network")
            let final = try mutate(r.name) { box in
                box.info.ipv4 = [allocateAddress()]
                box.info.address = box.info.ipv4.first
                box.info.provisioned = true
                return view(box)
            }
            changed(r.name, "instance-updated")
            return final
        } catch {
            host.log(.warning, "create of \(r.name) failed, removing the half-made container: \(error.description)")
            _ = state.withLock { $0.instances.removeValue(forKey: r.name) }
            changed(r.name, "instance-deleted")
            throw error
        }
    }

    /// A fresh address (its own lock: callers may hold the state's).
    private func allocateAddress() -> String {
        addresses.withLock { n in
            defer { n += 1 }
            return "10.99.\(n / 250).\(n % 250 + 2)"
        }
    }

    @discardableResult
    private func mutate<T>(_ name: String, _ body: (inout Box) throws(ContainariumError) -> T) throws(ContainariumError) -> T {
        let result = state.withLock { s -> Result<T, ContainariumError> in
            guard var box = s.instances[name] else { return .failure(.notFound("instance \(name) not found")) }
            do throws(ContainariumError) {
                let value = try body(&box)
                s.instances[name] = box
                return .success(value)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private func checkCPU(_ raw: String) throws(ContainariumError) {
        let limit = try CPULimit(parsing: raw)
        if case .pinned(let cpus) = limit, let bad = cpus.first(where: { $0 >= (config.cpus ?? 8) }) {
            throw .invalid("CPU \(bad) does not exist on this node")
        }
    }

    // MARK: - lifecycle

    func remove(_ r: InstanceRef) throws(ContainariumError) {
        try state.withLock { s throws(ContainariumError) in
            guard let box = s.instances[r.name] else { throw .notFound("instance \(r.name) not found") }
            if box.info.state == .running && r.force != true {
                throw ContainariumError(.failedPrecondition, "\(r.name) is running: stop it first or force the removal")
            }
            s.instances.removeValue(forKey: r.name)
        }
        changed(r.name, "instance-deleted")
    }

    enum Action { case start, stop, restart }

    func changeState(_ r: InstanceRef, _ action: Action) throws(ContainariumError) -> InstanceInfo {
        let info = try mutate(r.name) { box in
            switch action {
            case .start, .restart:
                if box.info.state != .running || action == .restart {
                    box.info.state = .running
                    box.info.startedAt = Date()
                    if box.info.ipv4.isEmpty { box.info.ipv4 = [allocateAddress()] }
                    box.info.address = box.info.ipv4.first
                }
            case .stop:
                box.info.state = .stopped
                box.info.startedAt = nil
                box.info.ipv4 = []
                box.info.address = nil
            }
            return view(box)
        }
        changed(r.name, action == .stop ? "instance-stopped" : action == .start ? "instance-started" : "instance-restarted")
        return info
    }


    func resize(_ r: ResizeRequest) throws(ContainariumError) -> InstanceInfo {
        if let cpu = r.cpu { try checkCPU(cpu) }
        let info = try mutate(r.name) { box throws(ContainariumError) in
            if let disk = r.diskBytes, disk < box.info.diskUsageBytes ?? 0 {
                throw ContainariumError(
                    .failedPrecondition, "disk \(ByteSize(bytes: disk)) is below what \(r.name) uses (\(ByteSize(bytes: box.info.diskUsageBytes ?? 0)))")
            }
            if let cpu = r.cpu { box.info.cpuLimit = cpu }
            if let m = r.memoryBytes { box.info.memoryLimitBytes = m }
            if let d = r.diskBytes { box.info.diskLimitBytes = d }
            return view(box)
        }
        changed(r.name, "instance-updated")
        return info
    }

    // MARK: - watch

    /// Runs until cancelled: `instances.watch.connected` now, `instance.changed` per change.
    func watch(_ ctx: OperationContext) throws(ContainariumError) -> Empty {
        state.withLock { $0.watchers += 1 }
        defer { state.withLock { $0.watchers -= 1 } }
        host.emit(type: "instances.watch.connected", json: Data("{}".utf8))
        while !ctx.isCancelled { usleep(5_000) }
        throw ContainariumError(.cancelled, "watch \(ctx.id) was cancelled")
    }

    // MARK: - accounts/1

    /// The owner account's spec, checked as IncusLXC checks it: a user name, an absolute shell.
    static func checkSpec(_ a: AccountSpec) throws(ContainariumError) {
        _ = try Username(a.name)
        guard a.shell.hasPrefix("/"), !a.shell.contains(".."), a.shell.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .invalid("shell '\(a.shell)' must be an absolute path")
        }
    }

    /// Validated, normalised authorized_keys lines (no options, one key per line).
    static func keyLines(_ keys: [String]) throws(ContainariumError) -> [String] {
        var lines: [String] = []
        for raw in keys { lines.append(try SSHPublicKey(parsing: raw).authorizedKeysLine) }
        return lines
    }

    /// The next uid `useradd` would give: one above the highest regular account, from 1000.
    static func nextUID(_ box: Box) -> UInt32 {
        (box.accounts.values.map(\.uid).filter { $0 >= 1000 && $0 < 60000 }.max() ?? 999) + 1
    }

    static func ownerSudoersPath(_ user: String) -> String { "/etc/sudoers.d/90-containarium-\(user)" }
    static func collaboratorSudoersPath(_ user: String) -> String { "/etc/sudoers.d/containarium-collaborator-\(user)" }

    /// The owner's account (idempotent: an account of that name is kept), with the sudo group
    /// and rule when asked for, as IncusLXC's `useradd --user-group [--groups sudo]` does.
    @discardableResult
    static func makeAccount(_ a: AccountSpec, in box: inout Box) -> Account {
        if box.accounts[a.name] == nil {
            let uid = nextUID(box)
            box.accounts[a.name] = Account(name: a.name, uid: uid, gid: uid, gecos: "", home: "/home/\(a.name)", shell: a.shell)
        }
        if a.sudo {
            box.accounts[a.name]?.groups.insert("sudo")
            box.files[ownerSudoersPath(a.name)] = "\(a.name) ALL=(ALL:ALL) NOPASSWD: ALL\n"
        }
        return box.accounts[a.name]!
    }

    private static func info(_ a: Account) -> AccountInfo { AccountInfo(name: a.name, uid: a.uid, gid: a.gid, home: a.home, shell: a.shell) }

    /// Work on a running instance, as every accounts/1 method does (Incus exec and file calls
    /// need it running): not_found without it, failed_precondition when it is not running.
    private func inRunning<T>(_ name: String, _ body: (inout Box) throws(ContainariumError) -> T) throws(ContainariumError) -> T {
        try mutate(name) { box throws(ContainariumError) in
            guard box.info.state == .running else { throw ContainariumError(.failedPrecondition, "\(name) is not running: start it first") }
            return try body(&box)
        }
    }

    func accountCreate(_ r: AccountCreateRequest) throws(ContainariumError) -> AccountInfo {
        try Self.checkSpec(r.account)
        let lines = try Self.keyLines(r.account.sshKeys)
        return try inRunning(r.instance) { box in
            Self.makeAccount(r.account, in: &box)
            box.accounts[r.account.name]?.authorizedKeys = lines
            return Self.info(box.accounts[r.account.name]!)
        }
    }

    func setKeys(_ r: SetKeysRequest) throws(ContainariumError) -> KeyList {
        let lines = try Self.keyLines(r.keys)
        _ = try Username(r.name)
        return try inRunning(r.instance) { box throws(ContainariumError) in
            guard box.accounts[r.name] != nil else { throw .notFound("there is no account \(r.name) in \(r.instance)") }
            box.accounts[r.name]?.authorizedKeys = lines
            return KeyList(keys: lines)
        }
    }

    func listKeys(_ r: AccountRef) throws(ContainariumError) -> KeyList {
        _ = try Username(r.name)
        return try inRunning(r.instance) { box throws(ContainariumError) in
            guard let a = box.accounts[r.name] else { throw .notFound("there is no account \(r.name) in \(r.instance)") }
            return KeyList(keys: a.authorizedKeys.compactMap { try? SSHPublicKey(parsing: $0).authorizedKeysLine })
        }
    }

    /// A collaborator's own account, marked in its GECOS as this owner's (IncusLXC's
    /// `useradd -c MARKER`); an account of that name without the mark is refused. Its keys, and
    /// a sudo rule: full sudo, or only `sudo su - OWNER`, logged with I/O logging.
    func addCollaborator(_ r: CollaboratorRequest) throws(ContainariumError) -> AccountInfo {
        let owner = try Username(r.owner), user = try Username(r.name)
        guard owner != user else { throw .invalid("\(owner.value) owns this environment already") }
        let lines = try Self.keyLines(r.sshKeys)
        let marker = CollaboratorRequest.marker(owner: owner.value)
        return try inRunning(r.instance) { box throws(ContainariumError) in
            if let found = box.accounts[user.value] {
                guard found.gecos == marker else { throw .alreadyExists("an account named \(user.value) already exists in this environment") }
            } else {
                let uid = Self.nextUID(box)
                box.accounts[user.value] = Account(name: user.value, uid: uid, gid: uid, gecos: marker, home: "/home/\(user.value)", shell: "/bin/bash")
            }
            box.accounts[user.value]?.authorizedKeys = lines
            box.files[Self.collaboratorSudoersPath(user.value)] = r.sudo
                ? "\(user.value) ALL=(ALL:ALL) NOPASSWD:ALL\n"
                : "Defaults:\(user.value) logfile=/var/log/containarium-collaborators.log, log_input, log_output, iolog_dir=/var/log/sudo-io\n"
                    + "\(user.value) ALL=(root) NOPASSWD: /usr/bin/su - \(owner.value)\n"
            if r.containerRuntime {
                box.groups.insert("docker")
                box.accounts[user.value]?.groups.insert("docker")
            }
            return Self.info(box.accounts[user.value]!)
        }
    }

    /// Remove a collaborator's account and its sudo rule; an account this extension did not
    /// make for this owner is never touched (removed: false).
    func removeCollaborator(_ r: CollaboratorRef) throws(ContainariumError) -> RemovedResult {
        let owner = try Username(r.owner), user = try Username(r.name)
        return try inRunning(r.instance) { box in
            guard box.accounts[user.value]?.gecos == CollaboratorRequest.marker(owner: owner.value) else { return RemovedResult(removed: false) }
            box.accounts.removeValue(forKey: user.value)
            box.files.removeValue(forKey: Self.collaboratorSudoersPath(user.value))
            return RemovedResult(removed: true)
        }
    }

    // MARK: - exec

    /// The binaries stack checks run, by the Debian package that installs them.
    static let binaries: [String: String] = [
        "psql": "postgresql-client", "python3": "python3", "jq": "jq", "docker": "docker.io", "node": "nodejs", "go": "golang-go",
        "podman": "podman", "cargo": "cargo", "git": "git", "make": "make", "curl": "curl",
    ]

    /// Group ids of the groups the model knows (others get one above 1000 by name order).
    static let groupIDs: [String: Int] = ["sudo": 27, "users": 100, "docker": 999]

    func exec(_ r: ExecRequest) throws(ContainariumError) -> ExecResult {
        guard !r.command.isEmpty else { throw .invalid("command is empty") }
        return try mutate(r.name) { box throws(ContainariumError) in
            guard box.info.state == .running else { throw ContainariumError(.failedPrecondition, "\(r.name) is not running: start it first") }
            return Self.run(r, in: &box)
        }
    }

    private static func ok(_ out: String = "") -> ExecResult { ExecResult(exitCode: 0, stdout: out, stderr: "") }
    private static func fail(_ code: Int32, _ err: String) -> ExecResult { ExecResult(exitCode: code, stdout: "", stderr: err) }

    static func run(_ r: ExecRequest, in box: inout Box) -> ExecResult {
        let argv = r.command
        if let bad = box.execFail, argv[0] == bad { return fail(100, "E: \(bad) failed (fault injected by fake.exec-fail)\n") }
        let caller = box.accounts.values.first { $0.uid == (r.user ?? 0) }
        let root = (r.user ?? 0) == 0
        switch argv[0] {
        case "true": return ok()
        case "false": return fail(1, "")
        case "echo": return ok(argv.dropFirst().joined(separator: " ") + "\n")
        case "whoami": return ok((caller?.name ?? "\(r.user ?? 0)") + "\n")
        case "id" where argv.count == 2 && argv[1] == "-un": return ok((caller?.name ?? "\(r.user ?? 0)") + "\n")
        case "cat" where argv.count == 2:
            let path = argv[1]
            if path == "/etc/os-release" {
                return ok("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n")
            }
            if let text = box.files[path] {
                // sudo rules are 0440 root:root
                return root ? ok(text) : fail(1, "cat: \(path): Permission denied\n")
            }
            if let a = box.accounts.values.first(where: { $0.home + "/.ssh/authorized_keys" == path }) {
                // 0600, owned by the account
                guard root || caller?.uid == a.uid else { return fail(1, "cat: \(path): Permission denied\n") }
                return ok(a.authorizedKeys.map { $0 + "\n" }.joined())
            }
            return fail(1, "cat: \(path): No such file or directory\n")
        case "getent":
            guard argv.count == 3, argv[1] == "passwd" || argv[1] == "group" else { return fail(1, "getent: unsupported by the fake\n") }
            if argv[1] == "group" {
                guard box.groups.contains(argv[2]) else { return fail(2, "") }
                let members = box.accounts.values.filter { $0.groups.contains(argv[2]) }.map(\.name).sorted()
                let gid = groupIDs[argv[2]] ?? 1000 + (box.groups.sorted().firstIndex(of: argv[2]) ?? 0)
                return ok("\(argv[2]):x:\(gid):\(members.joined(separator: ","))\n")
            }
            guard let a = box.accounts[argv[2]] else { return fail(2, "") }
            return ok(a.passwdLine + "\n")
        case "usermod":
            guard argv.count == 4, argv[1] == "-aG" else { return fail(2, "usermod: unsupported by the fake\n") }
            guard root else { return fail(1, "usermod: Permission denied.\n") }
            guard box.accounts[argv[3]] != nil else { return fail(6, "usermod: user '\(argv[3])' does not exist\n") }
            guard box.groups.contains(argv[2]) else { return fail(6, "usermod: group '\(argv[2])' does not exist\n") }
            box.accounts[argv[3]]?.groups.insert(argv[2])
            return ok()
        case "apt-get":
            guard root else { return fail(100, "E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)\n") }
            if argv.contains("update") { return ok("Reading package lists...\n") }
            if let i = argv.firstIndex(of: "install") {
                let packages = argv[(i + 1)...].filter { !$0.hasPrefix("-") }
                box.packages.formUnion(packages)
                if packages.contains("docker.io") { box.groups.insert("docker") }
                return ok("Setting up \(packages.joined(separator: ", ")) ...\n")
            }
            if argv.contains("clean") { return ok() }
            return fail(100, "E: Invalid operation \(argv.dropFirst().joined(separator: " "))\n")
        case "sh" where argv.count >= 3 && argv[1] == "-c":
            return shell(argv[2], as: caller, in: &box)
        default:
            if let package = binaries[argv[0]], box.packages.contains(package) {
                return ok("\(argv[0]) (\(package), Debian 12)\n")
            }
            return fail(127, "exec: \"\(argv[0])\": executable file not found in $PATH\n")
        }
    }

    /// The scripts the host still runs through exec, recognised by what they do: the
    /// cleanup-disk script (Sources/ContainariumDaemon/Nodes.swift) and stack setup. Accounts,
    /// keys and collaborators are accounts/1 calls, never scripts; anything else exits 127.
    static func shell(_ script: String, as caller: Account?, in box: inout Box) -> ExecResult {
        let root = caller?.uid == 0
        if script.contains("apt-get clean") {
            guard root else { return ok() }
            box.info.diskUsageBytes = max(baseDiskUsage - (64 << 20), (box.info.diskUsageBytes ?? baseDiskUsage) - (64 << 20))
            return ok()
        }
        if script.contains("/sys/fs/cgroup") { return ok() }  // the podman stack's setup: a cgroup v2 host needs nothing
        return fail(127, "fake-instances does not emulate this script\n")
    }
}
