import PluginABI
public import ContainariumCore
import Foundation

/// A typed client for a plugin's "instances/1" extension.
public struct InstancesClient: Sendable {
    public let plugin: any PluginEndpoint

    public static let extensionID = CTM_EXT_INSTANCES_V1

    public init?(_ plugin: any PluginEndpoint) {
        guard plugin.provides(CTM_EXT_INSTANCES_V1) else { return nil }
        self.plugin = plugin
    }

    public var backendID: String { plugin.manifest.id }

    private func call<Request: Encodable, Response: Decodable>(
        _ method: String, _ request: Request, as: Response.Type
    ) async throws(ContainariumError) -> Response {
        let data = try await plugin.call(extension: Self.extensionID, method: method, request: WireJSON.encode(request))
        do {
            return try WireJSON.decoder().decode(Response.self, from: data)
        } catch {
            throw .internal("plugin \(plugin.manifest.id) answered \(method) with malformed JSON", cause: WireJSON.describe(error))
        }
    }

    public func create(_ r: InstanceCreateRequest) async throws(ContainariumError) -> InstanceInfo {
        try await call("create", r, as: InstanceInfo.self)
    }
    public func remove(_ r: InstanceRef) async throws(ContainariumError) {
        _ = try await call("remove", r, as: JSONValue.self)
    }
    public func start(_ r: InstanceRef) async throws(ContainariumError) -> InstanceInfo {
        try await call("start", r, as: InstanceInfo.self)
    }
    public func stop(_ r: InstanceRef) async throws(ContainariumError) -> InstanceInfo {
        try await call("stop", r, as: InstanceInfo.self)
    }
    public func restart(_ r: InstanceRef) async throws(ContainariumError) -> InstanceInfo {
        try await call("restart", r, as: InstanceInfo.self)
    }
    public func list() async throws(ContainariumError) -> [InstanceInfo] {
        try await call("list", [String: String](), as: InstanceList.self).instances
    }
    public func info(_ r: InstanceRef) async throws(ContainariumError) -> InstanceInfo {
        try await call("info", r, as: InstanceInfo.self)
    }
    public func resize(_ r: ResizeRequest) async throws(ContainariumError) -> InstanceInfo {
        try await call("resize", r, as: InstanceInfo.self)
    }
    public func exec(_ r: ExecRequest) async throws(ContainariumError) -> ExecResult {
        try await call("exec", r, as: ExecResult.self)
    }
    /// Follow the backend's change stream ("instance.changed" events on the event bus) until
    /// the calling task is cancelled or the stream breaks. Backends built for ABI 1.0 lack it.
    public func watch() async throws(ContainariumError) {
        _ = try await call("watch", [String: String](), as: JSONValue.self)
    }

    public func capacity() async throws(ContainariumError) -> NodeCapacity {
        try await call("capacity", [String: String](), as: NodeCapacity.self)
    }
}

/// A typed client for a plugin's "accounts/1" extension: accounts, SSH keys and
/// collaborators inside an instance (docs/schemas/accounts-1.schema.json).
public struct AccountsClient: Sendable {
    public let plugin: any PluginEndpoint

    public static let extensionID = CTM_EXT_ACCOUNTS_V1

    public init?(_ plugin: any PluginEndpoint) {
        guard plugin.provides(CTM_EXT_ACCOUNTS_V1) else { return nil }
        self.plugin = plugin
    }

    private func call<Request: Encodable, Response: Decodable>(
        _ method: String, _ request: Request, as: Response.Type
    ) async throws(ContainariumError) -> Response {
        let data = try await plugin.call(extension: Self.extensionID, method: method, request: WireJSON.encode(request))
        do {
            return try WireJSON.decoder().decode(Response.self, from: data)
        } catch {
            throw .internal("plugin \(plugin.manifest.id) answered \(method) with malformed JSON", cause: WireJSON.describe(error))
        }
    }

    public func create(_ r: AccountCreateRequest) async throws(ContainariumError) -> AccountInfo {
        try await call("create", r, as: AccountInfo.self)
    }
    public func setKeys(_ r: SetKeysRequest) async throws(ContainariumError) -> [String] {
        try await call("set_keys", r, as: KeyList.self).keys
    }
    public func listKeys(_ r: AccountRef) async throws(ContainariumError) -> [String] {
        try await call("list_keys", r, as: KeyList.self).keys
    }
    public func addCollaborator(_ r: CollaboratorRequest) async throws(ContainariumError) -> AccountInfo {
        try await call("add_collaborator", r, as: AccountInfo.self)
    }
    /// False when there was no collaborator account of that name for this owner.
    public func removeCollaborator(_ r: CollaboratorRef) async throws(ContainariumError) -> Bool {
        try await call("remove_collaborator", r, as: RemovedResult.self).removed
    }
}

/// A typed client for a plugin's "credentials/1" extension: the sign-in secret the backend
/// made for an instance (docs/schemas/credentials-1.schema.json). The answer is a secret:
/// callers hand it to the instance's owner only, and never log it.
public struct CredentialsClient: Sendable {
    public let plugin: any PluginEndpoint

    public static let extensionID = CTM_EXT_CREDENTIALS_V1

    public init?(_ plugin: any PluginEndpoint) {
        guard plugin.provides(CTM_EXT_CREDENTIALS_V1) else { return nil }
        self.plugin = plugin
    }

    public func get(_ r: InstanceRef) async throws(ContainariumError) -> InstanceCredentials {
        let data = try await plugin.call(extension: Self.extensionID, method: "get", request: WireJSON.encode(r))
        do {
            return try WireJSON.decoder().decode(InstanceCredentials.self, from: data)
        } catch {
            // Never the answer itself in the error: it may hold the secret.
            throw .internal("plugin \(plugin.manifest.id) answered credentials get with malformed JSON")
        }
    }
}

/// A typed client for a plugin's "devices.gpu/1" extension (GPU discovery).
public struct GPUDevicesClient: Sendable {
    public let plugin: any PluginEndpoint

    public static let extensionID = CTM_EXT_DEVICES_GPU_V1

    public init?(_ plugin: any PluginEndpoint) {
        guard plugin.provides(CTM_EXT_DEVICES_GPU_V1) else { return nil }
        self.plugin = plugin
    }

    public func list() async throws(ContainariumError) -> [GPUInfo] {
        let data = try await plugin.call(extension: Self.extensionID, method: "list", request: Data("{}".utf8))
        do {
            return try WireJSON.decoder().decode(GPUList.self, from: data).devices
        } catch {
            throw .internal("plugin \(plugin.manifest.id) answered list with malformed JSON", cause: WireJSON.describe(error))
        }
    }
}

/// A typed client for a plugin's "console/1" extension: a connected stream to an instance's
/// console (serial or VNC), as a descriptor the caller owns.
public struct ConsoleClient: Sendable {
    public let plugin: any PluginEndpoint
    public static let extensionID = CTM_EXT_CONSOLE_V1

    public init?(_ plugin: any PluginEndpoint) {
        guard plugin.provides(CTM_EXT_CONSOLE_V1) else { return nil }
        self.plugin = plugin
    }

    public func open(instance: String, kind: String) async throws(ContainariumError) -> (protocolName: String, fd: Int32) {
        let request = try WireJSON.encode(["instance": instance, "kind": kind])
        let (data, fd) = try await plugin.callWithDescriptor(extension: Self.extensionID, method: "open", request: request)
        let proto = (try? WireJSON.decode(JSONValue.self, from: data))?["protocol"]?.stringValue ?? kind
        return (proto, fd)
    }
}

/// A typed client for a plugin's "scanner/1" extension.
public struct ScannerClient: Sendable {
    public let plugin: any PluginEndpoint

    public static let extensionID = CTM_EXT_SCANNER_V1

    public init?(_ plugin: any PluginEndpoint) {
        guard plugin.provides(CTM_EXT_SCANNER_V1) else { return nil }
        self.plugin = plugin
    }

    /// The scanner's name: its plugin's id ("clamav", "trivy").
    public var name: String { plugin.manifest.id }

    /// Run a scan; request and report follow docs/schemas/scanner-1.schema.json.
    public func scan(_ request: JSONValue) async throws(ContainariumError) -> JSONValue {
        let data = try await plugin.call(extension: Self.extensionID, method: "scan", request: WireJSON.encode(request))
        return try WireJSON.decode(JSONValue.self, from: data)
    }

    /// Run a scan, typed.
    public func scan(_ request: ScanRequest) async throws(ContainariumError) -> ScanReport {
        let data = try await plugin.call(extension: Self.extensionID, method: "scan", request: WireJSON.encode(request))
        do {
            return try WireJSON.decoder().decode(ScanReport.self, from: data)
        } catch {
            throw .internal("plugin \(plugin.manifest.id) answered scan with malformed JSON", cause: WireJSON.describe(error))
        }
    }
}

/// A typed client for a plugin's "filesystem/1" extension: where the host reads an
/// instance's root filesystem (docs/schemas/filesystem-1.schema.json).
public struct FilesystemClient: Sendable {
    public let plugin: any PluginEndpoint

    public static let extensionID = CTM_EXT_FILESYSTEM_V1

    public init?(_ plugin: any PluginEndpoint) {
        guard plugin.provides(CTM_EXT_FILESYSTEM_V1) else { return nil }
        self.plugin = plugin
    }

    public func locate(_ r: InstanceRef) async throws(ContainariumError) -> FilesystemLocation {
        let data = try await plugin.call(extension: Self.extensionID, method: "locate", request: WireJSON.encode(r))
        do {
            return try WireJSON.decoder().decode(FilesystemLocation.self, from: data)
        } catch {
            throw .internal("plugin \(plugin.manifest.id) answered locate with malformed JSON", cause: WireJSON.describe(error))
        }
    }
}

/// An extension table in the plugin's static storage, read only within its declared size.
struct UncheckedTable<T>: @unchecked Sendable {
    let pointer: UnsafePointer<T>
    init(_ raw: UnsafeRawPointer) { self.pointer = raw.assumingMemoryBound(to: T.self) }

    /// The function in `field`, or nil when the plugin's table is too short to hold it.
    func field(_ field: KeyPath<T, ctm_call_fn?>) -> ctm_call_fn? {
        // Never `pointer.pointee`: that would copy the whole struct as this host knows it,
        // reading past the end of an older plugin's shorter table.
        DeclaredStruct(pointer).field(field) ?? nil
    }
}

/// A struct a plugin wrote (a table, a result, an error), read field by field and only within
/// the `struct_size` the plugin declared: the struct as this host knows it may be longer than
/// the plugin's (an older minor), and the bytes after the plugin's end are not its to read.
struct DeclaredStruct<T> {
    let raw: UnsafeRawPointer

    init(_ pointer: UnsafePointer<T>) { self.raw = UnsafeRawPointer(pointer) }

    /// The size the writer declared (the first field of every ABI struct).
    var declaredSize: Int { Int(raw.load(as: UInt32.self)) }

    /// Whether `field` lies wholly inside the declared size.
    func has<V>(_ field: KeyPath<T, V>) -> Bool {
        guard let offset = MemoryLayout<T>.offset(of: field) else { return false }
        return offset + MemoryLayout<V>.size <= declaredSize
    }

    /// The value of `field`, or nil when the writer's struct is too short to hold it.
    func field<V>(_ field: KeyPath<T, V>) -> V? {
        guard let offset = MemoryLayout<T>.offset(of: field), offset + MemoryLayout<V>.size <= declaredSize else { return nil }
        return raw.load(fromByteOffset: offset, as: V.self)
    }

    /// The bytes of `field` that lie inside the declared size (a prefix of it, for a fixed
    /// buffer such as `ctm_error.message`); empty when none do.
    func bytes<V>(of field: KeyPath<T, V>) -> UnsafeRawBufferPointer {
        guard let offset = MemoryLayout<T>.offset(of: field) else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        let count = min(MemoryLayout<V>.size, max(0, declaredSize - offset))
        return UnsafeRawBufferPointer(start: raw + offset, count: count)
    }
}

/// A typed client for a plugin's "node.lifecycle/1" extension: a machine's state, and starting
/// or stopping it (docs/schemas/node.lifecycle-1.schema.json).
public struct NodeLifecycleClient: Sendable {
    public let plugin: any PluginEndpoint

    public static let extensionID = CTM_EXT_NODE_LIFECYCLE_V1

    public init?(_ plugin: any PluginEndpoint) {
        guard plugin.provides(CTM_EXT_NODE_LIFECYCLE_V1) else { return nil }
        self.plugin = plugin
    }

    public func status(_ node: String) async throws(ContainariumError) -> NodeLifecycleStatus { try await call("status", node) }
    public func start(_ node: String) async throws(ContainariumError) -> NodeLifecycleStatus { try await call("start", node) }
    public func stop(_ node: String) async throws(ContainariumError) -> NodeLifecycleStatus { try await call("stop", node) }

    private func call(_ method: String, _ node: String) async throws(ContainariumError) -> NodeLifecycleStatus {
        let data = try await plugin.call(extension: Self.extensionID, method: method, request: WireJSON.encode(["node": node]))
        do {
            return try WireJSON.decoder().decode(NodeLifecycleStatus.self, from: data)
        } catch {
            throw .internal("plugin \(plugin.manifest.id) answered \(method) with malformed JSON", cause: WireJSON.describe(error))
        }
    }
}
