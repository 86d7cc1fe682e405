import ContainariumCore
import Foundation
import PluginKit

#if canImport(Glibc)
import Glibc
#endif

/// The "instances/1" extension implemented on Incus system containers.
/// Every method runs on the plugin's queue (see Plugin.swift) and may block on the socket.
final class IncusBackend: Sendable {
    struct Config: Decodable, Sendable {
        var socket: String?
        var project: String?
        var pool: String?
        var profiles: [String]?
        var node: String?
        var networkTimeoutSeconds: Double?
        /// Generate SSH host keys on the host at create time (default true).
        var hostKeys: Bool?
        /// Most bytes of output (stdout and stderr together) an exec may write before it is
        /// stopped (default 16 MiB).
        var execOutputLimitBytes: Int?
        /// Incus's state directory, where its storage pools are mounted (default: $INCUS_DIR,
        /// else the socket's directory when it is `unix.socket`, else /var/lib/incus).
        var incusDir: String?
    }

    let api: IncusAPI
    let socketPath: String
    let pool: String
    let profiles: [String]
    let node: String
    let networkTimeout: Double
    let generateHostKeys: Bool
    let execOutputLimit: Int
    let incusDir: String
    let host: HostServices

    static let managedKey = "user.containarium.managed"
    static let ownerKey = "user.containarium.owner"
    static let imageKey = "user.containarium.image"
    static let labelPrefix = "user.containarium.label."
    static let hostKeysKey = "user.containarium.ssh-host-keys"
    /// A token unique to one create call: rollback deletes an instance only when it carries
    /// the token, so a failed create can never remove a container somebody else made.
    static let createTokenKey = "user.containarium.create-token"
    /// Set as the last step of a successful create: an instance without it is half-made.
    static let provisionedKey = "user.containarium.provisioned"

    init(config: Config, host: HostServices) {
        socketPath = config.socket ?? ProcessInfo.processInfo.environment["INCUS_SOCKET"] ?? "/var/lib/incus/unix.socket"
        api = IncusAPI(socketPath: socketPath, project: config.project ?? "default")
        pool = config.pool ?? "default"
        profiles = config.profiles ?? ["default"]
        node = config.node ?? ProcessInfo.processInfo.hostName
        networkTimeout = config.networkTimeoutSeconds ?? 60
        generateHostKeys = config.hostKeys ?? true
        execOutputLimit = max(4096, config.execOutputLimitBytes ?? 16 << 20)
        incusDir = config.incusDir ?? ProcessInfo.processInfo.environment["INCUS_DIR"]
            ?? ((socketPath as NSString).lastPathComponent == "unix.socket" ? (socketPath as NSString).deletingLastPathComponent : "/var/lib/incus")
        self.host = host
    }

    private func path(_ name: String) -> String { "/1.0/instances/\(IncusAPI.escape(name))" }

    // MARK: - health and capacity

    func health() -> HealthReport {
        do {
            let server = try api.sync("GET", "/1.0", timeout: 5)
            let version = server["environment"]?["server_version"]?.stringValue ?? "unknown"
            let pools = try api.sync("GET", "/1.0/storage-pools", timeout: 5).arrayValue.compactMap(\.stringValue)
            guard pools.contains(where: { $0.hasSuffix("/\(pool)") }) else {
                return HealthReport(status: "degraded", detail: "Incus \(version) at \(socketPath), but storage pool '\(pool)' is missing")
            }
            return HealthReport(status: "ok", detail: "Incus \(version) at \(socketPath), pool \(pool)")
        } catch {
            return HealthReport(status: "down", detail: error.description)
        }
    }

    func capacity() throws(ContainariumError) -> NodeCapacity {
        let resources = try api.sync("GET", "/1.0/resources")
        let server = try api.sync("GET", "/1.0")
        let poolInfo = try api.sync("GET", "/1.0/storage-pools/\(IncusAPI.escape(pool))")
        let poolRes = try api.sync("GET", "/1.0/storage-pools/\(IncusAPI.escape(pool))/resources")
        let instances = try api.sync("GET", "/1.0/instances", query: ["recursion": "1"]).arrayValue
        let total = poolRes["space"]?["total"]?.uint64Value ?? 0
        let used = poolRes["space"]?["used"]?.uint64Value ?? 0
        return NodeCapacity(
            node: node,
            cpus: resources["cpu"]?["total"]?.intValue ?? 0,
            memoryTotalBytes: resources["memory"]?["total"]?.uint64Value ?? 0,
            memoryUsedBytes: resources["memory"]?["used"]?.uint64Value ?? 0,
            diskTotalBytes: total,
            diskUsedBytes: used,
            pool: StoragePoolCapacity(name: pool, driver: poolInfo["driver"]?.stringValue ?? "unknown", totalBytes: total, usedBytes: used),
            instances: instances.count,
            runningInstances: instances.filter { $0["status"]?.stringValue == "Running" }.count,
            backendVersion: server["environment"]?["server_version"]?.stringValue)
    }

    // MARK: - read

    func info(_ name: String) throws(ContainariumError) -> InstanceInfo {
        let instance: JSONValue
        do {
            instance = try api.sync("GET", path(name))
        } catch where error.code == .notFound {
            throw .notFound("container \(name) does not exist")
        }
        let state = try? api.sync("GET", path(name) + "/state")
        return makeInfo(instance, state: state, networks: networkRecords(for: [instance]))
    }

    /// filesystem/1 `locate`: the host directory of a container's root filesystem, from Incus's
    /// own record of it (its root disk's pool, its project), never from inside the guest:
    /// `INCUS_DIR/storage-pools/POOL/containers/[PROJECT_]NAME/rootfs`. Only containers this
    /// plugin manages; the directory must be there (a driver that mounts a container's volume only
    /// while it runs says so) and must be a directory, not a link.
    func locate(_ name: String) throws(ContainariumError) -> FilesystemLocation {
        let instance: JSONValue
        do {
            instance = try api.sync("GET", path(name))
        } catch where error.code == .notFound {
            throw .notFound("container \(name) does not exist")
        }
        guard instance["config"]?[Self.managedKey]?.stringValue == "true" else {
            throw .denied("\(name) is not managed by Containarium")
        }
        guard instance["type"]?.stringValue ?? "container" == "container" else {
            throw ContainariumError(.unsupported, "\(name) is an Incus VM: its disk is an image, not a tree the host can read")
        }
        let root = instance["expanded_devices"]?["root"] ?? instance["devices"]?["root"]
        let rootPool = root?["pool"]?.stringValue ?? pool
        let project = api.project
        let volume = project == "default" ? name : "\(project)_\(name)"
        for part in [rootPool, volume] where part.isEmpty || part.contains("/") || part == "." || part == ".." {
            throw .internal("unexpected storage name '\(part)' for \(name)")
        }
        let dir = [incusDir, "storage-pools", rootPool, "containers", volume, "rootfs"].joined(separator: "/")
        var st = stat()
        guard lstat(dir, &st) == 0 else {
            throw ContainariumError(.failedPrecondition, "the root filesystem of \(name) is not at \(dir) (its storage driver mounts it only while it runs, or incusDir is not \(incusDir)): start it, or set incus-lxc's incusDir")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw .internal("\(dir) is not a directory") }
        return FilesystemLocation(path: dir)
    }

    /// Follow Incus's lifecycle events and emit "instance.changed" for each instance event.
    func watch(_ ctx: OperationContext) throws(ContainariumError) -> Empty {
        let project = api.project
        try api.http.followEvents(
            "/1.0/events?type=lifecycle&project=\(IncusAPI.escape(project))",
            isCancelled: { ctx.isCancelled },
            onConnected: { host.emit(type: "instances.watch.connected", ["backend": "incus-lxc"]) },
            onMessage: { data in
                guard let event = try? WireJSON.decode(JSONValue.self, from: data),
                      let action = event["metadata"]?["action"]?.stringValue,
                      let source = event["metadata"]?["source"]?.stringValue,
                      source.hasPrefix("/1.0/instances/")
                else { return }
                let rest = source.dropFirst("/1.0/instances/".count)
                let raw = rest.split(separator: "?").first.map(String.init) ?? ""
                let name = (raw.split(separator: "/").first.map(String.init) ?? raw).removingPercentEncoding ?? raw
                guard !name.isEmpty else { return }
                host.emit(type: "instance.changed", ["name": name, "action": action])
            })
        throw ContainariumError(.unavailable, "Incus closed its event stream")
    }

    func list() throws(ContainariumError) -> InstanceList {
        let all = try api.sync("GET", "/1.0/instances", query: ["recursion": "2"]).arrayValue
        let managed = all.filter { $0["config"]?[Self.managedKey]?.stringValue == "true" }
        let networks = networkRecords(for: managed)
        return InstanceList(instances: managed.map { makeInfo($0, state: $0["state"], networks: networks) }.sorted { $0.name < $1.name })
    }

    // MARK: - the backend's own record of addresses

    /// What Incus itself knows about its managed networks: each one's subnet (with the host's
    /// address on it) and the DHCP leases its dnsmasq handed out, by MAC address.
    struct NetworkRecords {
        var subnets: [String: IPv4Network] = [:]
        var leases: [String: [String: IPv4Address]] = [:]
    }

    /// The managed networks an instance's NICs attach to, eth0 first: (device, network).
    static func managedNICs(_ i: JSONValue) -> [(device: String, network: String, spec: JSONValue)] {
        let devices = i["expanded_devices"]?.objectValue ?? i["devices"]?.objectValue ?? [:]
        return devices.sorted { interfaceRank($0.key) < interfaceRank($1.key) }.compactMap { name, d in
            guard d["type"]?.stringValue == "nic" else { return nil }
            guard let network = d["network"]?.stringValue ?? (d["nictype"]?.stringValue == "bridged" ? d["parent"]?.stringValue : nil)
            else { return nil }
            return (name, network, d)
        }
    }

    /// Subnets and leases of the networks `instances` use: the leases on every call (they
    /// change), the subnets from Incus's network configuration.
    func networkRecords(for instances: [JSONValue]) -> NetworkRecords {
        var records = NetworkRecords()
        for network in Set(instances.flatMap { Self.managedNICs($0).map(\.network) }) {
            let escaped = IncusAPI.escape(network)
            guard let net = try? api.sync("GET", "/1.0/networks/\(escaped)"), net["managed"]?.bool == true,
                  let cidr = net["config"]?["ipv4.address"]?.stringValue, let subnet = IPv4Network(cidr: cidr) else { continue }
            records.subnets[network] = subnet
            var byMAC: [String: IPv4Address] = [:]
            for lease in (try? api.sync("GET", "/1.0/networks/\(escaped)/leases"))?.arrayValue ?? []
            where ["dynamic", "static"].contains(lease["type"]?.stringValue ?? "") {
                guard let mac = lease["hwaddr"]?.stringValue?.lowercased(), !mac.isEmpty,
                      let a = lease["address"]?.stringValue.flatMap({ IPv4Address($0) }) else { continue }
                byMAC[mac] = a
            }
            records.leases[network] = byMAC
        }
        return records
    }

    /// The address Incus assigned to the instance on a managed network: the NIC's static
    /// `ipv4.address`, else the DHCP lease for the MAC address Incus gave the NIC. It must be
    /// a host address of that network and not the host's own. Nothing the guest reports about
    /// its interfaces is used: a guest can add any address to an interface of its own.
    static func assignedAddress(_ i: JSONValue, _ records: NetworkRecords) -> IPv4Address? {
        let config = i["expanded_config"]?.objectValue ?? i["config"]?.objectValue ?? [:]
        for nic in managedNICs(i) {
            guard let subnet = records.subnets[nic.network] else { continue }
            var candidate = nic.spec["ipv4.address"]?.stringValue.flatMap { IPv4Address($0) }
            if candidate == nil, let mac = config["volatile.\(nic.device).hwaddr"]?.stringValue?.lowercased() {
                candidate = records.leases[nic.network]?[mac]
            }
            if let a = candidate, subnet.containsHost(a), a != subnet.address, a.specialUse == nil { return a }
        }
        return nil
    }

    private func makeInfo(_ i: JSONValue, state: JSONValue?, networks: NetworkRecords) -> InstanceInfo {
        let config = i["config"]?.objectValue ?? [:]
        let expanded = i["expanded_config"]?.objectValue ?? config
        let rootDevice = i["expanded_devices"]?["root"] ?? i["devices"]?["root"]
        let gpus = (i["expanded_devices"]?.objectValue ?? i["devices"]?.objectValue ?? [:]).values
            .filter { $0["type"]?.stringValue == "gpu" }.compactMap { $0["pci"]?.stringValue }.sorted()
        var labels: [String: String] = [:]
        for (k, v) in config where k.hasPrefix(Self.labelPrefix) {
            labels[String(k.dropFirst(Self.labelPrefix.count))] = v.stringValue
        }
        if let owner = config[Self.ownerKey]?.stringValue { labels["owner"] = owner }
        var ipv4: [String] = []
        var rx: UInt64 = 0, tx: UInt64 = 0
        if case .object(let nets)? = state?["network"] {
            for (ifname, net) in nets.sorted(by: { Self.interfaceRank($0.key) < Self.interfaceRank($1.key) })
            where ifname != "lo" && !Self.isInnerBridge(ifname) {
                rx &+= net["counters"]?["bytes_received"]?.uint64Value ?? 0
                tx &+= net["counters"]?["bytes_sent"]?.uint64Value ?? 0
                for a in net["addresses"]?.arrayValue ?? []
                where a["family"]?.stringValue == "inet" && a["scope"]?.stringValue == "global" {
                    if let addr = a["address"]?.stringValue { ipv4.append(addr) }
                }
            }
        }
        let status = InstanceState(backendStatus: state?["status"]?.stringValue ?? i["status"]?.stringValue ?? "")
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        func date(_ v: JSONValue?) -> Date? {
            guard let s = v?.stringValue else { return nil }
            let d = iso.date(from: s) ?? ISO8601DateFormatter().date(from: s)
            guard let d, d.timeIntervalSince1970 > 86_400 else { return nil }  // Incus uses year 1 for "never"
            return d
        }
        var info = InstanceInfo(
            name: i["name"]?.stringValue ?? "",
            type: i["type"]?.stringValue ?? "container",
            state: status,
            image: config[Self.imageKey]?.stringValue ?? config["image.description"]?.stringValue,
            ipv4: ipv4,
            cpuLimit: expanded["limits.cpu"]?.stringValue,
            memoryLimitBytes: expanded["limits.memory"]?.stringValue.flatMap { try? ByteSize(parsing: $0).bytes },
            diskLimitBytes: rootDevice?["size"]?.stringValue.flatMap { try? ByteSize(parsing: $0).bytes },
            cpuUsageNanoseconds: state?["cpu"]?["usage"]?.uint64Value,
            memoryUsageBytes: state?["memory"]?["usage"]?.uint64Value,
            diskUsageBytes: state?["disk"]?["root"]?["usage"]?.uint64Value,
            processes: state?["processes"]?.intValue,
            startedAt: status == .running ? (date(state?["started_at"]) ?? date(i["last_used_at"])) : nil,
            createdAt: date(i["created_at"]),
            autostart: expanded["boot.autostart"]?.stringValue == "true",
            nesting: expanded["security.nesting"]?.stringValue == "true",
            labels: labels,
            backend: "incus-lxc",
            node: node,
            sshHostKeys: config[Self.hostKeysKey]?.stringValue.map { $0.split(separator: "\n").map(String.init) } ?? [],
            provisioned: config[Self.provisionedKey]?.stringValue == "true",
            gpus: gpus.isEmpty ? nil : gpus)
        info.address = Self.assignedAddress(i, networks)?.description
        info.networkRxBytes = state?["network"] == nil ? nil : rx
        info.networkTxBytes = state?["network"] == nil ? nil : tx
        return info
    }

    /// The instance's own NICs first (eth0, then eth*/en*), then anything else, by name.
    static func interfaceRank(_ name: String) -> String {
        if name == "eth0" { return "0" }
        if name.hasPrefix("eth") || name.hasPrefix("en") { return "1" + name }
        return "2" + name
    }

    /// Bridges and veths that software inside the environment creates (Docker, Podman, nested
    /// Incus/LXC, libvirt): their addresses are not the environment's address.
    static func isInnerBridge(_ name: String) -> Bool {
        ["docker", "br-", "veth", "virbr", "lxcbr", "incusbr", "lxdbr", "cni", "podman", "flannel", "cali"].contains { name.hasPrefix($0) }
    }

    // MARK: - lifecycle

    func create(_ r: InstanceCreateRequest, _ ctx: OperationContext) throws(ContainariumError) -> InstanceInfo {
        let steps = r.account == nil ? 3 : 5
        // Nothing is created until every check has passed.
        guard !r.name.isEmpty, r.name.utf8.count <= 63 else { throw .invalid("instance name '\(r.name)' is not valid") }
        if (try? api.sync("GET", path(r.name))) != nil {
            throw ContainariumError(.alreadyExists, "container \(r.name) already exists")
        }
        do {
            try api.sync("GET", "/1.0/images/aliases/\(IncusAPI.escape(r.image))")
        } catch where error.code == .notFound {
            throw .notFound("image alias '\(r.image)' does not exist on this node (see `incus image list`)")
        }
        if let cpu = r.cpu { try checkCPU(cpu) }
        try ctx.checkCancelled()

        let token = UUID().uuidString
        var config: [String: JSONValue] = [
            Self.managedKey: .string("true"),
            Self.createTokenKey: .string(token),
            Self.imageKey: .string(r.image),
            "security.privileged": .string("false"),
            "boot.autostart": .string(r.autostart ? "true" : "false"),
        ]
        if let owner = r.account?.name { config[Self.ownerKey] = .string(owner) }
        if r.nesting {
            config["security.nesting"] = .string("true")
            config["security.syscalls.intercept.mknod"] = .string("true")
            config["security.syscalls.intercept.setxattr"] = .string("true")
        }
        if let cpu = r.cpu { config["limits.cpu"] = .string(try CPULimit(parsing: cpu).incusValue) }
        if let mem = r.memoryBytes { config["limits.memory"] = .string(ByteSize(bytes: mem).incusValue) }
        try Labels.validate(r.labels)
        for (k, v) in r.labels { config[Self.labelPrefix + k] = .string(v) }
        let hostKeys = generateHostKeys && r.account != nil ? try HostKeys.generate(comment: "root@\(r.name)") : nil
        if let hostKeys { config[Self.hostKeysKey] = .string(hostKeys.publicLines) }
        var root: [String: JSONValue] = ["type": .string("disk"), "path": .string("/"), "pool": .string(pool)]
        if let disk = r.diskBytes { root["size"] = .string(ByteSize(bytes: disk).incusValue) }
        var devices: [String: JSONValue] = ["root": .object(root)]
        // GPUs by PCI address: Incus passes the card's device nodes through at start, and
        // refuses to start when the address is not a GPU it can find.
        for (n, address) in (r.gpus ?? []).enumerated() {
            guard GPUInfo.validPCIAddress(address) else { throw .invalid("'\(address)' is not a PCI address (dddd:bb:dd.f)") }
            devices["gpu\(n)"] = .object(["type": .string("gpu"), "gputype": .string("physical"), "pci": .string(address)])
        }
        let body: JSONValue = .object([
            "name": .string(r.name),
            "type": .string("container"),
            "source": .object(["type": .string("image"), "alias": .string(r.image)]),
            "profiles": .array(profiles.map { .string($0) }),
            "config": .object(config),
            "devices": .object(devices),
        ])

        ctx.progress(instance: r.name, step: 1, of: steps, "Creating container \(r.name)")
        do {
            try api.operation("POST", "/1.0/instances", body: body, timeout: 300, context: ctx)
        } catch {
            rollback(r.name, token: token)  // Incus may have left a partial instance behind
            throw error
        }
        do {
            try installIdentity(r.name)
            if let hostKeys { try installHostKeys(r.name, hostKeys) }
            ctx.progress(instance: r.name, step: 2, of: steps, "Starting container")
            try ctx.checkCancelled()
            try api.operation("PUT", path(r.name) + "/state", body: .object(["action": .string("start"), "timeout": .number(60)]), context: ctx)
            if let account = r.account {
                ctx.progress(instance: r.name, step: 3, of: steps, "Creating user \(account.name) with sudo")
                let ids = try createAccount(r.name, account, ctx)
                ctx.progress(instance: r.name, step: 4, of: steps, "Installing \(account.sshKeys.count) SSH key(s)")
                try installKeys(r.name, account: account, uid: ids.uid, gid: ids.gid, home: ids.home)
            }
            ctx.progress(instance: r.name, step: steps, of: steps, "Waiting for network")
            try waitForIPv4(r.name, timeout: r.networkTimeoutSeconds ?? networkTimeout, ctx)
            // The promise of a create is an environment one can log in to: when it has an
            // account, wait (a little) until its sshd accepts connections.
            if r.account != nil { try waitForSSH(r.name, timeout: 20, ctx) }
            try api.sync("PATCH", path(r.name), body: .object(["config": .object([Self.provisionedKey: .string("true")])]))
            return try info(r.name)
        } catch {
            host.log(.warning, "create of \(r.name) failed, removing the half-made container: \(error.description)")
            rollback(r.name, token: token)
            throw error
        }
    }

    /// Remove a container this create made. Retries: Incus can refuse a delete for a moment
    /// while a just-failed operation still holds the instance.
    private func rollback(_ name: String, token: String) {
        let deadline = Date().addingTimeInterval(60)
        var lastError = ""
        while Date() < deadline {
            let current: JSONValue
            do {
                current = try api.sync("GET", path(name))
            } catch where error.code == .notFound {
                return  // gone
            } catch {
                lastError = error.description
                usleep(250_000)
                continue
            }
            guard current["config"]?[Self.createTokenKey]?.stringValue == token else {
                host.log(.warning, "not removing \(name): it was not made by this create")
                return
            }
            if current["status"]?.stringValue != "Stopped" {
                do {
                    try api.operation("PUT", path(name) + "/state", body: .object(["action": .string("stop"), "force": .bool(true)]), timeout: 60)
                } catch { lastError = error.description }
            }
            do {
                try api.operation("DELETE", path(name), timeout: 120)
                return
            } catch where error.code == .notFound {
                return
            } catch {
                lastError = error.description
            }
            usleep(250_000)
        }
        host.log(.error, "could not remove the half-made container \(name): \(lastError)")
    }

    /// The container's own name as its host name (images often ship a generic /etc/hostname),
    /// resolvable locally so sudo and friends do not stall on DNS.
    private func installIdentity(_ name: String) throws(ContainariumError) {
        try api.push(instance: name, path: "/etc/hostname", content: Data("\(name)\n".utf8), uid: 0, gid: 0, mode: "0644")
        let hosts = "127.0.0.1\tlocalhost\n127.0.1.1\t\(name)\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        try api.push(instance: name, path: "/etc/hosts", content: Data(hosts.utf8), uid: 0, gid: 0, mode: "0644")
    }

    /// Place pre-generated host keys into the (not yet started) container.
    private func installHostKeys(_ name: String, _ keys: HostKeys) throws(ContainariumError) {
        for key in keys.keys {
            let base = "/etc/ssh/ssh_host_\(key.type)_key"
            try api.push(instance: name, path: base, content: key.privateKey, uid: 0, gid: 0, mode: "0600")
            try api.push(instance: name, path: base + ".pub", content: Data((key.publicKey + "\n").utf8), uid: 0, gid: 0, mode: "0644")
        }
        try api.push(
            instance: name, path: "/etc/ssh/sshd_config.d/10-containarium-hostkeys.conf", content: Data(keys.sshdConfig.utf8),
            uid: 0, gid: 0, mode: "0644")
    }

    private func checkCPU(_ cpu: String) throws(ContainariumError) {
        let limit = try CPULimit(parsing: cpu)
        let total = (try? api.sync("GET", "/1.0/resources"))?["cpu"]?["total"]?.intValue ?? 0
        guard total > 0 else { return }
        // A count above the node's cores is a share Incus balances (the host decides how far
        // to over-commit: see EnvironmentService.checkCPU); pinned CPUs must exist.
        if case .pinned(let cpus) = limit, let bad = cpus.first(where: { $0 >= total }) {
            throw .invalid("CPU \(bad) does not exist on this node (it has CPUs 0-\(total - 1))")
        }
    }

    /// The address to wait on: Incus's own record where the instance is on a managed network
    /// (what the gateway will use), else the first address the instance reports (there is no
    /// record to check it against, and the gateway will not route to it).
    private func currentAddress(_ name: String) throws(ContainariumError) -> String? {
        let instance = try api.sync("GET", path(name))
        let records = networkRecords(for: [instance])
        // Only a NIC on a network Incus manages (with an IPv4 subnet) has a record to wait for.
        if Self.managedNICs(instance).contains(where: { records.subnets[$0.network] != nil }) {
            // The record, once the guest has brought it up (a lease outlives a stop, so on a
            // start the record alone says nothing about the network being up yet).
            guard let assigned = Self.assignedAddress(instance, records)?.description else { return nil }
            let state = try api.sync("GET", path(name) + "/state")
            let reported = makeInfo(.object(["name": .string(name)]), state: state, networks: NetworkRecords()).ipv4
            return reported.contains(assigned) ? assigned : nil
        }
        let state = try api.sync("GET", path(name) + "/state")
        return makeInfo(.object(["name": .string(name)]), state: state, networks: NetworkRecords()).ipv4.first
    }

    func waitForIPv4(_ name: String, timeout: Double, _ ctx: OperationContext) throws(ContainariumError) {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if try currentAddress(name) != nil { return }
            try ctx.checkCancelled()
            guard Date() < deadline else {
                throw ContainariumError(.timeout, "container \(name) got no IPv4 address within \(String(format: "%g", timeout))s")
            }
            usleep(25_000)
        }
    }

    /// Wait until the instance's address accepts TCP connections on port 22, for at most
    /// `timeout` seconds. An image without sshd is not an error: the create goes on, with a
    /// warning in the log.
    func waitForSSH(_ name: String, timeout: Double, _ ctx: OperationContext) throws(ContainariumError) {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let ip = try currentAddress(name), Self.accepts(ip, port: 22, within: 0.25) { return }
            try ctx.checkCancelled()
            guard Date() < deadline else {
                host.log(.warning, "\(name): nothing accepts SSH connections on port 22 after \(Int(timeout)) s; the create goes on")
                return
            }
            usleep(100_000)
        }
    }

    /// Does `ip:port` accept a TCP connection within `seconds`?
    static func accepts(_ ip: String, port: UInt16, within seconds: Double) -> Bool {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, ip, &addr.sin_addr) == 1 else { return false }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc == 0 { return true }
        guard errno == EINPROGRESS else { return false }
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&pfd, 1, Int32(seconds * 1000)) == 1 else { return false }
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 else { return false }
        return err == 0
    }

    func createAccount(_ name: String, _ a: AccountSpec, _ ctx: OperationContext) throws(ContainariumError) -> (uid: UInt32, gid: UInt32, home: String) {
        _ = try Username(a.name)  // the plugin validates too: it never trusts its caller
        guard a.shell.hasPrefix("/"), !a.shell.contains(".."), a.shell.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .invalid("shell '\(a.shell)' must be an absolute path")
        }
        var argv = ["useradd", "--create-home", "--shell", a.shell, "--user-group"]
        if a.sudo { argv += ["--groups", "sudo"] }
        argv.append(a.name)
        let add = try exec(ExecRequest(name: name, command: argv, timeoutSeconds: 60), ctx)
        // 9: the account exists, which happens when a retried exec had in fact run the first time.
        guard add.exitCode == 0 || add.exitCode == 9 else {
            throw .internal("useradd \(a.name) failed with exit status \(add.exitCode)", cause: add.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        if a.sudo {
            try api.push(
                instance: name, path: "/etc/sudoers.d/90-containarium-\(a.name)",
                content: Data("\(a.name) ALL=(ALL:ALL) NOPASSWD: ALL\n".utf8), uid: 0, gid: 0, mode: "0440")
        }
        let ent = try exec(ExecRequest(name: name, command: ["getent", "passwd", a.name], timeoutSeconds: 30), ctx)
        guard ent.exitCode == 0, let account = PasswdEntry(line: ent.stdout) else {
            throw .internal("could not read back the account \(a.name)", cause: ent.stderr)
        }
        return (account.uid, account.gid, account.home)
    }

    func installKeys(_ name: String, account: AccountSpec, uid: UInt32, gid: UInt32, home: String) throws(ContainariumError) {
        var lines: [String] = []
        for raw in account.sshKeys { lines.append(try SSHPublicKey(parsing: raw).authorizedKeysLine) }
        try api.push(instance: name, path: home + "/.ssh", content: nil, uid: uid, gid: gid, mode: "0700", directory: true)
        try api.push(
            instance: name, path: home + "/.ssh/authorized_keys", content: Data((lines.joined(separator: "\n") + "\n").utf8),
            uid: uid, gid: gid, mode: "0600")
    }

    func remove(_ r: InstanceRef, _ ctx: OperationContext) throws(ContainariumError) {
        // A restart or stop still running (the owner's, the reconciler's) makes Incus refuse
        // the stop and the delete below as busy: let it finish first.
        try api.settle(instance: r.name, timeout: 120, context: ctx)
        let current = try info(r.name)
        if current.state == .running || current.state == .frozen {
            guard r.force == true else {
                throw ContainariumError(.failedPrecondition, "container \(r.name) is running; stop it first or delete with --force")
            }
            do {
                try api.operation("PUT", path(r.name) + "/state", body: .object(["action": .string("stop"), "force": .bool(true), "timeout": .number(30)]), context: ctx)
            } catch {
                // A stop racing this one (the owner, the reconciler) is fine: it is stopped.
                guard let now = try? info(r.name), now.state == .stopped else { throw error }
            }
        }
        // Under load Incus can fail a delete transiently (a busy subvolume, a lock): retry a
        // little before giving up. Gone already is done.
        var attempt = 0
        while true {
            do {
                try api.operation("DELETE", path(r.name), timeout: 300, context: ctx)
                return
            } catch where error.code == .notFound {
                return
            } catch where error.code != .cancelled && attempt < 2 {
                attempt += 1
                host.log(.warning, "deleting \(r.name) failed (\(error.message)); retrying")
                Thread.sleep(forTimeInterval: Double(attempt))
                try api.settle(instance: r.name, timeout: 120, context: ctx)
            }
        }
    }

    func changeState(_ r: InstanceRef, action: String, _ ctx: OperationContext) throws(ContainariumError) -> InstanceInfo {
        try api.settle(instance: r.name, timeout: 120, context: ctx)
        let current = try info(r.name)
        switch (action, current.state) {
        case ("start", .running), ("stop", .stopped): return current
        default: break
        }
        var body: [String: JSONValue] = ["action": .string(action), "timeout": .number(30)]
        if action != "start" { body["force"] = .bool(r.force ?? false) }
        do {
            try api.operation("PUT", path(r.name) + "/state", body: .object(body), timeout: 90, context: ctx)
        } catch {
            // Someone else got there first (another start or stop racing this one): done.
            if let now = try? info(r.name), (action == "start" && now.state == .running) || (action == "stop" && now.state == .stopped) {
                return now
            }
            guard action == "stop" || action == "restart", r.force != true, error.code == .internal || error.code == .timeout else { throw error }
            // A clean shutdown that hangs, or that the guest refuses (an init still booting
            // ignores the shutdown signal: "Failed shutting down instance, status is Running"):
            // fall back to a forced stop or restart, as `incus stop --force` would.
            host.log(.warning, "clean \(action) of \(r.name) failed (\(error.message)); forcing it")
            // Right after a start, liblxc may refuse even a forced stop ("Failed stopping
            // instance") until the container's monitor settles: try a few times.
            var attempt = 0
            while true {
                do {
                    try api.operation("PUT", path(r.name) + "/state", body: .object(["action": .string(action), "force": .bool(true)]), timeout: 90, context: ctx)
                    break
                } catch where attempt < 4 && error.code != .cancelled && error.code != .notFound {
                    attempt += 1
                    try ctx.checkCancelled()
                    if action == "stop", let now = try? info(r.name), now.state == .stopped { break }
                    Thread.sleep(forTimeInterval: 0.5 * Double(attempt))
                }
            }
        }
        if action != "stop" {
            // A started environment is usable once it has an address; wait for it, but a
            // slow DHCP server does not make the start itself fail.
            try? waitForIPv4(r.name, timeout: networkTimeout, ctx)
        }
        return try info(r.name)
    }

    // MARK: - resize

    func resize(_ r: ResizeRequest, _ ctx: OperationContext) throws(ContainariumError) -> InstanceInfo {
        guard r.cpu != nil || r.memoryBytes != nil || r.diskBytes != nil else {
            throw .invalid("nothing to resize: give a CPU, memory or disk value")
        }
        if let cpu = r.cpu { try checkCPU(cpu) }
        if let mem = r.memoryBytes, mem < 64 << 20 { throw .invalid("memory below 64MiB is not allowed") }
        var current = try info(r.name)
        if r.diskBytes != nil, current.state == .running {
            // Flush the container's writes first: btrfs accounts usage at transaction commit,
            // seconds behind the writes, and both the shrink check below and Incus's own
            // bookkeeping on a nearly full volume need settled figures.
            try syncFilesystem(r.name, ctx)
            current = try info(r.name)
        }
        let shrinking = r.diskBytes.map { $0 < (current.diskLimitBytes ?? .max) } ?? false
        let instance = try api.sync("GET", path(r.name))
        if let disk = r.diskBytes, let used = current.diskUsageBytes, disk < used {
            throw ContainariumError(
                .failedPrecondition,
                "cannot shrink the disk of \(r.name) to \(ByteSize(bytes: disk)): it already uses \(ByteSize(bytes: used))")
        }
        guard case .object(var obj) = instance else { throw .internal("Incus returned a malformed instance") }
        // The CPU limit goes in a PATCH of its own, after the rest: when limits.memory and
        // limits.cpu change in one update, Incus 6.0 applies the memory limit but its CPU
        // scheduler does not re-pin a count limit (nproc inside kept the old count).
        let cpuPatch: JSONValue? = try r.cpu.map { c throws(ContainariumError) in
            .object(["config": .object(["limits.cpu": .string(try CPULimit(parsing: c).incusValue)])])
        }
        var config = obj["config"]?.objectValue ?? [:]
        if let mem = r.memoryBytes { config["limits.memory"] = .string(ByteSize(bytes: mem).incusValue) }
        obj["config"] = .object(config)
        if let disk = r.diskBytes {
            var devices = obj["devices"]?.objectValue ?? [:]
            var root = devices["root"]?.objectValue
                ?? ["type": .string("disk"), "path": .string("/"), "pool": .string(pool)]
            root["size"] = .string(ByteSize(bytes: disk).incusValue)
            devices["root"] = .object(root)
            obj["devices"] = .object(devices)
        }
        let body = JSONValue.object(obj.filter { ["architecture", "config", "devices", "ephemeral", "profiles", "description"].contains($0.key) })
        let needsPut = r.memoryBytes != nil || r.diskBytes != nil
        try ctx.checkCancelled()
        var attempt = 0
        while true {
            attempt += 1
            do {
                if needsPut { try api.operation("PUT", path(r.name), body: body, timeout: 120, context: ctx) }
                if let cpuPatch { try api.sync("PATCH", path(r.name), body: cpuPatch, timeout: 60) }
                return try info(r.name)
            } catch where r.diskBytes != nil && error.message.lowercased().contains("quota exceeded") {
                if shrinking {
                    // The storage driver itself refuses a quota below what is in use.
                    throw ContainariumError(
                        .failedPrecondition,
                        "cannot shrink the disk of \(r.name) to \(ByteSize(bytes: r.diskBytes ?? 0)): it already uses more than that",
                        cause: error.message)
                }
                // Growing a volume that is full to the last byte: Incus may fail to write its
                // own bookkeeping file into it and revert. Let the filesystem settle and retry.
                guard attempt < 10 else {
                    throw ContainariumError(
                        .failedPrecondition,
                        "cannot grow the disk of \(r.name) while it is completely full; free a little space and retry",
                        cause: error.message)
                }
                host.log(.info, "growing the full disk of \(r.name) failed (attempt \(attempt)); retrying")
                if current.state == .running { try? syncFilesystem(r.name, ctx) }
                usleep(UInt32(min(500_000 * attempt, 3_000_000)))
            }
        }
    }

    /// `sync` inside a running container, without recording output (works on a full disk).
    private func syncFilesystem(_ name: String, _ ctx: OperationContext) throws(ContainariumError) {
        let body: JSONValue = .object([
            "command": .array([.string("sync")]), "interactive": .bool(false),
            "wait-for-websocket": .bool(false), "record-output": .bool(false),
        ])
        try api.operation("POST", path(name) + "/exec", body: body, timeout: 60, context: ctx)
    }

    // MARK: - exec

    /// Incus sometimes fails an exec before the command starts ("Failed to retrieve PID of
    /// executing child process": right after start, or under load); retry such transient
    /// failures for a while. Other failures, and any exit status of the command, are returned.
    func exec(_ r: ExecRequest, _ ctx: OperationContext, within seconds: Double = 20) throws(ContainariumError) -> ExecResult {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            do {
                return try execOnce(r, ctx)
            } catch {
                let notRunning = error.message.contains("not running")
                // An exec stream that could not be opened: Incus starts the command only once
                // every stream is attached, so nothing ran and trying again is safe.
                let unopened = error.message.contains("exec stream during the handshake") || error.message.contains("refused the exec stream")
                    || error.message.contains("did not open the exec stream")
                let transient = error.message.contains("Failed to retrieve PID") || notRunning || unopened
                // A stopped environment will not start by itself: say so at once rather than
                // retrying (only one that is starting or stopping is worth waiting for).
                if notRunning, let now = try? info(r.name), now.state == .stopped || now.state == .frozen {
                    throw ContainariumError(.failedPrecondition, "\(r.name) is not running: start it first")
                }
                guard transient, Date() < deadline else { throw error }
                try ctx.checkCancelled()
                host.log(.debug, "exec in \(r.name) hit a transient Incus error; retrying: \(error.message)")
                usleep(100_000)
            }
        }
    }

    private func execOnce(_ r: ExecRequest, _ ctx: OperationContext) throws(ContainariumError) -> ExecResult {
        guard !r.command.isEmpty else { throw .invalid("exec needs a command") }
        var env: [String: JSONValue] = [:]
        for (k, v) in r.environment { env[k] = .string(v) }
        // The output streams back over WebSockets and is read only up to the limit: nothing is
        // recorded on the host's disk, and a command that writes without end (`yes`) is
        // stopped once it has written more than the limit.
        var body: [String: JSONValue] = [
            "command": .array(r.command.map { .string($0) }),
            "environment": .object(env),
            "interactive": .bool(false),
            "wait-for-websocket": .bool(true),
            "record-output": .bool(false),
        ]
        if let u = r.user { body["user"] = .number(Double(u)) }
        if let g = r.group { body["group"] = .number(Double(g)) }
        if let cwd = r.cwd { body["cwd"] = .string(cwd) }
        let started = try api.start("POST", path(r.name) + "/exec", body: .object(body))
        let what = "exec in \(r.name)"
        let fds = started.metadata["metadata"]?["fds"]
        var streams: [String: IncusWebSocket] = [:]
        do throws(ContainariumError) {
            for fd in ["control", "0", "1", "2"] {
                guard let secret = fds?[fd]?.stringValue else { throw ContainariumError(.internal, "Incus gave no stream \(fd) for \(what)") }
                streams[fd] = try IncusWebSocket(http: api.http, path: api.websocket(operation: started.operation, secret: secret))
            }
        } catch {
            _ = try? api.http.request("DELETE", started.operation)
            throw error
        }
        guard let control = streams["control"], let stdin = streams["0"], let stdout = streams["1"], let stderr = streams["2"] else {
            throw ContainariumError(.internal, "exec streams missing")
        }
        stdin.sendClose()  // no input: end of file at once

        var out = Data(), err = Data()
        let deadline = Date().addingTimeInterval(r.timeoutSeconds ?? 600)
        var stop: ContainariumError?
        while !(stdout.ended && stderr.ended) {
            for ws in readable([stdout, stderr].filter { !$0.ended }, milliseconds: 250) {
                if ws === stdout { _ = try stdout.pump(into: &out) } else { _ = try stderr.pump(into: &err) }
            }
            if out.count + err.count > execOutputLimit {
                stop = ContainariumError(.resourceExhausted,
                    "the command wrote more than \(ByteSize(bytes: UInt64(execOutputLimit))) of output and was stopped; write large output to a file in the environment instead")
            } else if ctx.isCancelled {
                stop = ContainariumError(.cancelled, "\(what) was cancelled")
            } else if Date() >= deadline {
                stop = ContainariumError(.timeout, "\(what) did not finish within \(Int(r.timeoutSeconds ?? 600))s")
            }
            if let stop {
                // SIGKILL to the command, then end the operation; nothing more is read.
                try? control.send(opcode: 0x1, Data(#"{"command":"signal","signal":9}"#.utf8))
                for ws in [stdin, stdout, stderr] { ws.hangUp() }
                _ = try? api.wait(operation: started.operation, timeout: 10, context: nil, what: what)
                control.hangUp()
                throw stop
            }
        }
        control.sendClose()
        let meta = try api.wait(operation: started.operation, timeout: max(5, deadline.timeIntervalSinceNow), context: ctx, what: what)
        let code = Int32(meta["return"]?.intValue ?? -1)
        return ExecResult(exitCode: code, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
    }
}
