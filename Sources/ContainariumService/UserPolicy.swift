public import ContainariumCore
import Foundation

/// What users (not admins) may ask for, from the config's `userPolicy` (docs/operations.md).
/// Every field is optional: an absent one sets no limit. Admins are not bound by it.
///
/// ```json
/// "userPolicy": { "maxCPU": 4, "maxMemory": "8GB", "maxDisk": "50GB", "maxGPUs": 0,
///                 "allowNesting": false, "images": ["images:debian/12"], "kinds": ["lxc"] }
/// ```
public struct UserPolicy: Codable, Sendable, Equatable {
    /// CPUs an environment may have (a count, or the CPUs a range or list pins); a request
    /// without a limit gets this many.
    public var maxCPU: Int?
    /// Memory and disk an environment may have ("8GB", "50GiB"); an environment must have
    /// a limit then (a request without one gets the maximum).
    public var maxMemory: String?
    public var maxDisk: String?
    /// GPUs an environment may have (0: none).
    public var maxGPUs: Int?
    /// Nesting (Docker and Podman inside). false: environments are made without it, and asking
    /// for it (or for a container runtime) is refused.
    public var allowNesting: Bool?
    /// Images a request may name with `image` (exact aliases). OS types the config maps are
    /// always allowed. Absent: any image the backend has.
    public var images: [String]?
    /// Backend kinds users may create (`lxc`, `vm`). Absent: any.
    public var kinds: [String]?

    public init(maxCPU: Int? = nil, maxMemory: String? = nil, maxDisk: String? = nil, maxGPUs: Int? = nil, allowNesting: Bool? = nil,
                images: [String]? = nil, kinds: [String]? = nil) {
        self.maxCPU = maxCPU
        self.maxMemory = maxMemory
        self.maxDisk = maxDisk
        self.maxGPUs = maxGPUs
        self.allowNesting = allowNesting
        self.images = images
        self.kinds = kinds
    }

    /// The policy's own values, checked once (a config with a bad size is refused at start).
    public func validate() throws(ContainariumError) {
        if let maxCPU, maxCPU < 1 { throw .invalid("userPolicy.maxCPU must be 1 or more") }
        if let maxGPUs, maxGPUs < 0 { throw .invalid("userPolicy.maxGPUs must be 0 or more") }
        for (name, size) in [("maxMemory", maxMemory), ("maxDisk", maxDisk)] {
            if let size { do { _ = try ByteSize(parsing: size) } catch { throw .invalid("userPolicy.\(name): \(error.message)") } }
        }
    }

    /// A user's create as the policy shapes it before it is validated. Every bounded value is
    /// made explicit (the node's default, else the maximum), so a create handed to another node
    /// is checked here and made there with the same values; nesting is off where the policy
    /// forbids it (asking for it, or for a container runtime, `check` refuses).
    public func shape(_ r: CreateEnvironmentRequest, defaults: HostConfig.Defaults?) -> CreateEnvironmentRequest {
        var r = r
        if allowNesting == false, r.nesting == nil { r.nesting = false }
        if r.cpu == nil, let maxCPU { r.cpu = defaults?.cpu ?? String(maxCPU) }
        if r.memory == nil, maxMemory != nil { r.memory = defaults?.memory ?? maxMemory }
        if r.disk == nil, maxDisk != nil { r.disk = defaults?.disk ?? maxDisk }
        return r
    }

    /// Refuse (403, naming the limit) what a user's validated create asks beyond the policy.
    /// What can be refused from the request alone, before it is validated (so the refusal is
    /// the policy's 403, not a validation error of what the shaping changed).
    public func precheck(_ r: CreateEnvironmentRequest) throws(ContainariumError) {
        if allowNesting == false, let runtime = r.runtimes.first {
            throw .denied("the user policy does not allow nesting, which \(runtime.requestField) needs")
        }
        if allowNesting == false, r.nesting == true { throw .denied("the user policy does not allow nesting (nor Docker or Podman inside)") }
    }

    public func check(_ v: EnvironmentService.ValidatedCreate, image explicit: String?, kind: String?) throws(ContainariumError) {
        try checkSizes(cpu: v.request.cpu, memory: v.request.memoryBytes, disk: v.request.diskBytes, unlimitedRefused: true)
        if let maxGPUs, v.gpuCount > maxGPUs { throw .denied("the user policy allows at most \(maxGPUs) GPUs, not \(v.gpuCount)") }
        if allowNesting == false, v.request.nesting { throw .denied("the user policy does not allow nesting (nor Docker or Podman inside)") }
        if let images, let explicit, !images.contains(explicit) {
            throw .denied("the user policy does not allow the image '\(explicit)': ask for an OS type, or one of \(images.joined(separator: ", "))")
        }
        if let kinds, let kind, !kinds.contains(kind) { throw .denied("the user policy does not allow \(kind) environments (only \(kinds.joined(separator: ", ")))") }
    }

    /// Refuse sizes beyond the policy (creates and resizes). `cpu` in Incus's form.
    public func checkSizes(cpu: String?, memory: UInt64?, disk: UInt64?, unlimitedRefused: Bool) throws(ContainariumError) {
        if let maxCPU {
            if let cpu, let count = try? CPULimit(parsing: cpu).cpuCount, count > maxCPU {
                throw .denied("the user policy allows at most \(maxCPU) CPUs, not \(count)")
            }
            if cpu == nil && unlimitedRefused { throw .denied("the user policy allows at most \(maxCPU) CPUs: an environment must have a limit") }
        }
        for (name, limit, value) in [("memory", maxMemory, memory), ("disk", maxDisk, disk)] {
            guard let limit, let max = try? ByteSize(parsing: limit) else { continue }
            if let value, value > max.bytes { throw .denied("the user policy allows at most \(limit) of \(name), not \(ByteSize(bytes: value))") }
            if value == nil && unlimitedRefused { throw .denied("the user policy allows at most \(limit) of \(name): an environment must have a limit") }
        }
    }
}
