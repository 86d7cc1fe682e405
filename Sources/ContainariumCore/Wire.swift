public import Foundation

// The JSON shapes that cross the plugin ABI for the "instances/1" extension.
// docs/schemas/instances-1.schema.json is the published schema; keep both in step.

/// An account to create inside the instance.
public struct AccountSpec: Codable, Sendable, Equatable {
    public var name: String
    /// OpenSSH public keys, one per entry, already validated by the host.
    public var sshKeys: [String]
    public var sudo: Bool
    public var shell: String

    public init(name: String, sshKeys: [String], sudo: Bool = true, shell: String = "/bin/bash") {
        self.name = name
        self.sshKeys = sshKeys
        self.sudo = sudo
        self.shell = shell
    }
}

public struct InstanceCreateRequest: Codable, Sendable, Equatable {
    public var name: String
    public var image: String
    public var cpu: String?
    public var memoryBytes: UInt64?
    public var diskBytes: UInt64?
    public var autostart: Bool
    public var nesting: Bool
    public var labels: [String: String]
    public var account: AccountSpec?
    /// Seconds to wait for the instance's IPv4 address.
    public var networkTimeoutSeconds: Double?
    /// PCI addresses of GPUs to pass through (chosen by the scheduler from the node's
    /// devices.gpu/1 list).
    public var gpus: [String]?

    public init(
        name: String, image: String, cpu: String? = nil, memoryBytes: UInt64? = nil, diskBytes: UInt64? = nil,
        autostart: Bool = false, nesting: Bool = true, labels: [String: String] = [:], account: AccountSpec? = nil,
        networkTimeoutSeconds: Double? = nil, gpus: [String]? = nil
    ) {
        self.gpus = gpus
        self.name = name
        self.image = image
        self.cpu = cpu
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
        self.autostart = autostart
        self.nesting = nesting
        self.labels = labels
        self.account = account
        self.networkTimeoutSeconds = networkTimeoutSeconds
    }
}

/// credentials/1 `get`: how to sign in to an instance the backend made a secret for (a VM's
/// Administrator account). `password` is a secret: handed to the owner only, never logged.
public struct InstanceCredentials: Codable, Sendable, Equatable, CustomStringConvertible {
    public var username: String
    public var password: String
    /// How the account is used: "rdp", "console", "ssh".
    public var `protocol`: String?
    public init(username: String, password: String, protocol: String? = nil) {
        self.username = username
        self.password = password
        self.protocol = `protocol`
    }
    /// Without the password, for logs and error messages.
    public var description: String { "InstanceCredentials(username: \(username), protocol: \(`protocol` ?? "-"), password: <redacted>)" }
}

public struct InstanceRef: Codable, Sendable, Equatable {
    public var name: String
    public var force: Bool?
    public init(name: String, force: Bool? = nil) {
        self.name = name
        self.force = force
    }
}

public struct ResizeRequest: Codable, Sendable, Equatable {
    public var name: String
    public var cpu: String?
    public var memoryBytes: UInt64?
    public var diskBytes: UInt64?
    public init(name: String, cpu: String? = nil, memoryBytes: UInt64? = nil, diskBytes: UInt64? = nil) {
        self.name = name
        self.cpu = cpu
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
    }
}

public struct ExecRequest: Codable, Sendable, Equatable {
    public var name: String
    /// argv; never passed through a shell by the backend.
    public var command: [String]
    public var environment: [String: String]
    public var user: UInt32?
    public var group: UInt32?
    public var cwd: String?
    public var timeoutSeconds: Double?

    public init(
        name: String, command: [String], environment: [String: String] = [:], user: UInt32? = nil,
        group: UInt32? = nil, cwd: String? = nil, timeoutSeconds: Double? = nil
    ) {
        self.name = name
        self.command = command
        self.environment = environment
        self.user = user
        self.group = group
        self.cwd = cwd
        self.timeoutSeconds = timeoutSeconds
    }
}

public struct ExecResult: Codable, Sendable, Equatable {
    public var exitCode: Int32
    public var stdout: String
    public var stderr: String
    public init(exitCode: Int32, stdout: String, stderr: String) {
        self.exitCode = exitCode
        self.stdout = stdout
        self.stderr = stderr
    }
}

public enum InstanceState: String, Codable, Sendable, CaseIterable {
    case running = "Running"
    case stopped = "Stopped"
    case frozen = "Frozen"
    case starting = "Starting"
    case stopping = "Stopping"
    case error = "Error"
    case unknown = "Unknown"

    public init(backendStatus: String) {
        self = InstanceState.allCases.first { $0.rawValue.lowercased() == backendStatus.lowercased() } ?? .unknown
    }
}

public struct InstanceInfo: Codable, Sendable, Equatable {
    public var name: String
    /// "container" or "vm".
    public var type: String
    public var state: InstanceState
    public var image: String?
    /// Addresses the instance reports for its own interfaces (informational: a guest can add
    /// any address it likes to an interface of its own).
    public var ipv4: [String]
    /// The address the backend itself gave the instance's NIC on its managed network, from the
    /// backend's own records (a static assignment or the DHCP lease for the NIC's MAC address),
    /// never from inside the guest. The gateway connects to this address only.
    public var address: String?
    public var cpuLimit: String?
    public var memoryLimitBytes: UInt64?
    public var diskLimitBytes: UInt64?
    /// CPU time used since start, in nanoseconds.
    public var cpuUsageNanoseconds: UInt64?
    public var memoryUsageBytes: UInt64?
    public var diskUsageBytes: UInt64?
    public var processes: Int?
    public var startedAt: Date?
    public var createdAt: Date?
    public var autostart: Bool
    public var nesting: Bool
    public var labels: [String: String]
    public var backend: String?
    public var node: String?
    /// Public SSH host keys of the instance, when the backend knows them (known_hosts lines).
    public var sshHostKeys: [String]?
    /// Whether the backend finished creating it (accounts, keys, network). A managed instance
    /// that is not provisioned is half-made: a create is running or was interrupted.
    public var provisioned: Bool?
    /// PCI addresses of the GPUs passed through to it.
    public var gpus: [String]?
    /// How to reach it besides SSH, e.g. ["rdp": "HOST:PORT"] for a Windows VM.
    public var endpoints: [String: String]?
    /// Bytes received and sent on its own network interfaces since it started.
    public var networkRxBytes: UInt64?
    public var networkTxBytes: UInt64?

    public init(
        name: String, type: String = "container", state: InstanceState, image: String? = nil, ipv4: [String] = [],
        cpuLimit: String? = nil, memoryLimitBytes: UInt64? = nil, diskLimitBytes: UInt64? = nil,
        cpuUsageNanoseconds: UInt64? = nil, memoryUsageBytes: UInt64? = nil, diskUsageBytes: UInt64? = nil,
        processes: Int? = nil, startedAt: Date? = nil, createdAt: Date? = nil, autostart: Bool = false,
        nesting: Bool = false, labels: [String: String] = [:], backend: String? = nil, node: String? = nil,
        sshHostKeys: [String]? = nil, provisioned: Bool? = nil, gpus: [String]? = nil
    ) {
        self.gpus = gpus
        self.name = name
        self.type = type
        self.state = state
        self.image = image
        self.ipv4 = ipv4
        self.cpuLimit = cpuLimit
        self.memoryLimitBytes = memoryLimitBytes
        self.diskLimitBytes = diskLimitBytes
        self.cpuUsageNanoseconds = cpuUsageNanoseconds
        self.memoryUsageBytes = memoryUsageBytes
        self.diskUsageBytes = diskUsageBytes
        self.processes = processes
        self.startedAt = startedAt
        self.createdAt = createdAt
        self.autostart = autostart
        self.nesting = nesting
        self.labels = labels
        self.backend = backend
        self.node = node
        self.sshHostKeys = sshHostKeys
        self.provisioned = provisioned
    }

    /// Seconds since the instance started, when it is running.
    public func uptime(now: Date = Date()) -> TimeInterval? {
        guard state == .running, let startedAt else { return nil }
        return max(0, now.timeIntervalSince(startedAt))
    }
}

public struct InstanceList: Codable, Sendable, Equatable {
    public var instances: [InstanceInfo]
    public init(instances: [InstanceInfo]) { self.instances = instances }
}

public struct StoragePoolCapacity: Codable, Sendable, Equatable {
    public var name: String
    public var driver: String
    public var totalBytes: UInt64
    public var usedBytes: UInt64
    public init(name: String, driver: String, totalBytes: UInt64, usedBytes: UInt64) {
        self.name = name
        self.driver = driver
        self.totalBytes = totalBytes
        self.usedBytes = usedBytes
    }
}

/// What a node can still hold, for the scheduler.
public struct NodeCapacity: Codable, Sendable, Equatable {
    public var node: String
    public var cpus: Int
    public var memoryTotalBytes: UInt64
    public var memoryUsedBytes: UInt64
    public var diskTotalBytes: UInt64
    public var diskUsedBytes: UInt64
    public var pool: StoragePoolCapacity?
    public var instances: Int
    public var runningInstances: Int
    public var backendVersion: String?

    public init(
        node: String, cpus: Int, memoryTotalBytes: UInt64, memoryUsedBytes: UInt64, diskTotalBytes: UInt64,
        diskUsedBytes: UInt64, pool: StoragePoolCapacity?, instances: Int, runningInstances: Int,
        backendVersion: String?
    ) {
        self.node = node
        self.cpus = cpus
        self.memoryTotalBytes = memoryTotalBytes
        self.memoryUsedBytes = memoryUsedBytes
        self.diskTotalBytes = diskTotalBytes
        self.diskUsedBytes = diskUsedBytes
        self.pool = pool
        self.instances = instances
        self.runningInstances = runningInstances
        self.backendVersion = backendVersion
    }
}

public struct HealthReport: Codable, Sendable, Equatable {
    public var status: String
    public var detail: String?
    public init(status: String, detail: String? = nil) {
        self.status = status
        self.detail = detail
    }
}

/// One step of a long operation, emitted as an `instance.progress` event.
public struct ProgressEvent: Codable, Sendable, Equatable {
    public var operation: UInt64
    public var instance: String
    public var step: Int
    public var total: Int
    public var message: String
    public init(operation: UInt64, instance: String, step: Int, total: Int, message: String) {
        self.operation = operation
        self.instance = instance
        self.step = step
        self.total = total
        self.message = message
    }
}

/// JSON coding with one date format (ISO 8601) everywhere.
public enum WireJSON {
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys]
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }

    public static func encode<T: Encodable>(_ value: T) throws(ContainariumError) -> Data {
        do { return try encoder().encode(value) } catch {
            throw .internal("could not encode \(T.self) as JSON", cause: "\(error)")
        }
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws(ContainariumError) -> T {
        do { return try decoder().decode(type, from: data) } catch let e as ContainariumError {
            throw e
        } catch {
            throw .invalid("malformed \(T.self) JSON: \(describe(error))")
        }
    }

    /// A one-line description of a DecodingError (which field, what was wrong).
    public static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        func path(_ ctx: DecodingError.Context) -> String {
            let p = ctx.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "top level" : p
        }
        switch error {
        case .keyNotFound(let key, let ctx): return "missing field '\(key.stringValue)' at \(path(ctx))"
        case .typeMismatch(_, let ctx): return "wrong type at \(path(ctx)): \(ctx.debugDescription)"
        case .valueNotFound(_, let ctx): return "null value at \(path(ctx))"
        case .dataCorrupted(let ctx): return "invalid data at \(path(ctx)): \(ctx.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

/// One GPU as a devices.gpu/1 plugin lists it (docs/schemas/devices.gpu-1.schema.json).
public struct GPUInfo: Codable, Sendable, Equatable {
    public var id: String
    public var vendor: String
    public var model: String
    public var pciAddress: String
    public var vendorId: String?
    public var deviceId: String?
    public var numaNode: Int?
    public var driver: String?
    public var memoryBytes: UInt64?
    public var attachedTo: String?

    public init(id: String, vendor: String, model: String, pciAddress: String, attachedTo: String? = nil) {
        self.id = id
        self.vendor = vendor
        self.model = model
        self.pciAddress = pciAddress
        self.attachedTo = attachedTo
    }

    /// dddd:bb:dd.f, lower-case hex, as the kernel and Incus write it.
    public static func validPCIAddress(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count == 12, u[4] == UInt8(ascii: ":"), u[7] == UInt8(ascii: ":"), u[10] == UInt8(ascii: "."),
              (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(u[11]) else { return false }
        let hex = Set("0123456789abcdef".utf8)
        return [0, 1, 2, 3, 5, 6, 8, 9].allSatisfy { hex.contains(u[$0]) }
    }
}

public struct GPUList: Codable, Sendable, Equatable {
    public var devices: [GPUInfo]
    public init(devices: [GPUInfo]) { self.devices = devices }
}
