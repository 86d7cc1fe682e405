import PluginABI
import ContainariumCore
import Foundation
import Logging
import Synchronization

/// Host-side state behind one plugin's `ctm_host_services.host_context`.
final class HostContext: Sendable {
    let pluginID: String
    let logger: Logger
    let events: EventBus

    init(pluginID: String, logger: Logger, events: EventBus) {
        self.pluginID = pluginID
        self.logger = logger
        self.events = events
    }

    /// A services table pointing at this context. Allocated once per plugin and never freed:
    /// the plugin may keep it until shutdown, and libraries are never unloaded.
    func makeServicesTable() -> UnsafePointer<ctm_host_services> {
        let table = UnsafeMutablePointer<ctm_host_services>.allocate(capacity: 1)
        table.initialize(to: ctm_host_services())
        table.pointee.struct_size = UInt32(MemoryLayout<ctm_host_services>.size)
        table.pointee.struct_version = 1
        table.pointee.abi_major = HostABI.major
        table.pointee.abi_minor = HostABI.minor
        table.pointee.host_context = Unmanaged.passRetained(self).toOpaque()
        table.pointee.log = hostLog
        table.pointee.emit_event = hostEmit
        table.pointee.get_host_extension = hostExtension
        return UnsafePointer(table)
    }
}

public enum HostABI {
    public static let major: UInt32 = CTM_ABI_MAJOR
    public static let minor: UInt32 = CTM_ABI_MINOR
    public static var version: String { "\(major).\(minor)" }
}

private func context(_ raw: UnsafeMutableRawPointer?) -> HostContext? {
    guard let raw else { return nil }
    return Unmanaged<HostContext>.fromOpaque(raw).takeUnretainedValue()
}

private let hostLog: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?) -> Void = { raw, level, message in
    guard let ctx = context(raw), let message else { return }
    let text = String(cString: message)
    let lvl: Logger.Level =
        switch level {
        case 0: .trace
        case 1: .debug
        case 2: .info
        case 3: .notice
        case 4: .warning
        default: .error
        }
    ctx.logger.log(level: lvl, "\(text)", metadata: ["plugin": "\(ctx.pluginID)"])
}

private let hostEmit: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?, UnsafePointer<CChar>?, Int) -> Void = {
    raw, type, json, length in
    guard let ctx = context(raw), let type else { return }
    let data = json.map { Data(bytes: $0, count: max(0, length)) } ?? Data("{}".utf8)
    ctx.events.publish(PluginEvent(plugin: ctx.pluginID, type: String(cString: type), json: data))
}

private let hostExtension: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?) -> UnsafeRawPointer? = { _, _ in
    // The host offers no extensions in ABI 1.0.
    nil
}

// MARK: - Completion bridging

/// The outcome of one plugin call.
struct CallOutcome: Sendable {
    var result: Result<Data, ContainariumError>
    /// A descriptor the plugin handed over (console/1); the receiver owns it.
    var fd: Int32? = nil
}

/// Outstanding calls, keyed by operation id. The completion's user_data is the operation id
/// itself, never a pointer, so a plugin that completes twice (a bug) is caught and logged
/// instead of touching freed memory.
final class PendingCalls: Sendable {
    static let shared = PendingCalls()

    private let pending = Mutex<[UInt64: CheckedContinuation<CallOutcome, Never>]>([:])
    private let nextID = Atomic<UInt64>(1)
    private let strays = Mutex<[String]>([])

    func makeOperationID() -> UInt64 { nextID.add(1, ordering: .relaxed).oldValue }

    func register(_ id: UInt64, _ c: CheckedContinuation<CallOutcome, Never>) {
        pending.withLock { $0[id] = c }
    }

    /// Resume and forget; false when the id was not pending (double completion).
    @discardableResult
    func resume(_ id: UInt64, with outcome: CallOutcome) -> Bool {
        guard let c = pending.withLock({ $0.removeValue(forKey: id) }) else {
            strays.withLock { $0.append("operation \(id) completed more than once or was never started") }
            return false
        }
        c.resume(returning: outcome)
        return true
    }

    /// Protocol violations seen so far (for `plugin status` and tests).
    var violations: [String] { strays.withLock { $0 } }
}

let hostCompletion: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<ctm_result>?) -> Void = { userData, result in
    let id = UInt64(UInt(bitPattern: userData))
    guard let result else {
        PendingCalls.shared.resume(id, with: CallOutcome(result: .failure(.internal("plugin completed with a NULL result"))))
        return
    }
    let fd = handedDescriptor(result)
    if !PendingCalls.shared.resume(id, with: CallOutcome(result: readResult(result), fd: fd)), let fd { close(fd) }
}

/// The descriptor a plugin handed over in a result, if the struct has the field and it is set.
func handedDescriptor(_ result: UnsafePointer<ctm_result>) -> Int32? {
    guard let fd = DeclaredStruct(result).field(\.fd), fd >= 0 else { return nil }
    return fd
}

/// Copy a borrowed ctm_result into Swift values, reading only the fields inside struct_size
/// (field by field: never the whole struct, which may be longer than the plugin's).
func readResult(_ result: UnsafePointer<ctm_result>) -> Result<Data, ContainariumError> {
    let r = DeclaredStruct(result)
    guard let status = r.field(\.status) else {
        return .failure(.internal("plugin returned a ctm_result of \(r.declaredSize) bytes"))
    }
    if status == CTM_OK {
        guard let json = r.field(\.json) ?? nil, let length = r.field(\.json_len), length > 0 else {
            return .success(Data("{}".utf8))
        }
        return .success(Data(bytes: json, count: length))
    }
    var message = "plugin reported status \(status)"
    if let err = r.field(\.error) ?? nil {
        message = errorMessage(err) ?? message
    }
    return .failure(ContainariumError(ContainariumError.Code(abiStatus: status), message))
}

/// The message of a ctm_error, bounded by its buffer and by the struct_size its writer
/// declared, even if the plugin forgot the NUL.
func errorMessage(_ err: UnsafePointer<ctm_error>) -> String? {
    let bytes = DeclaredStruct(err).bytes(of: \.message)
    let end = bytes.firstIndex(of: 0) ?? bytes.endIndex
    let text = String(decoding: bytes[bytes.startIndex..<end], as: UTF8.self)
    return text.isEmpty ? nil : text
}

/// A fresh, caller-owned error struct.
func makeError() -> ctm_error {
    var e = ctm_error()
    e.struct_size = UInt32(MemoryLayout<ctm_error>.size)
    e.struct_version = 1
    e.status = CTM_OK
    return e
}

/// Diagnostics about plugins that broke the ABI's rules (and were contained).
public enum PluginDiagnostics {
    /// Completions that arrived for operations that were not pending (for example twice).
    public static var protocolViolations: [String] { PendingCalls.shared.violations }
}
