public import PluginABI
import ContainariumCore
public import Foundation

/// The host's services table as a Swift value. The table is copied (only the bytes the host
/// declared in `struct_size`), so later host changes to the struct never reach past it.
public struct HostServices: @unchecked Sendable {
    private let table: ctm_host_services

    public init(_ pointer: UnsafePointer<ctm_host_services>) {
        var copy = ctm_host_services()
        let declared = Int(pointer.pointee.struct_size)
        withUnsafeMutableBytes(of: &copy) { dst in
            let n = min(declared, dst.count)
            dst.copyMemory(from: UnsafeRawBufferPointer(start: UnsafeRawPointer(pointer), count: n))
        }
        self.table = copy
    }

    public enum Level: Int32, Sendable {
        case trace = 0, debug, info, notice, warning, error
    }

    private var hasLog: Bool {
        Int(table.struct_size) >= MemoryLayout<ctm_host_services>.offset(of: \.log).map { $0 + MemoryLayout<UnsafeRawPointer>.size } ?? .max
    }

    private var hasEmit: Bool {
        Int(table.struct_size) >= MemoryLayout<ctm_host_services>.offset(of: \.emit_event).map { $0 + MemoryLayout<UnsafeRawPointer>.size } ?? .max
    }

    public func log(_ level: Level, _ message: String) {
        guard hasLog, let fn = table.log else { return }
        message.withCString { fn(table.host_context, level.rawValue, $0) }
    }

    public func emit(type: String, json: Data) {
        guard hasEmit, let fn = table.emit_event else { return }
        json.withUnsafeBytes { raw in
            type.withCString { t in
                fn(table.host_context, t, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
            }
        }
    }

    public func emit<T: Encodable>(type: String, _ value: T) {
        guard let data = try? WireJSON.encode(value) else { return }
        emit(type: type, json: data)
    }
}
