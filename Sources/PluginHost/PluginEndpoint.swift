public import ContainariumCore
public import Foundation

/// A ready plugin as the rest of the host sees it, wherever it runs: loaded into this process
/// (`LoadedPlugin`) or served from a child process for crash isolation (`ProcessPlugin`).
/// Both speak the same extension methods with the same JSON.
public protocol PluginEndpoint: AnyObject, Sendable {
    var manifest: PluginManifest { get }
    var directory: URL { get }
    /// The ABI version the library declares ("1.0").
    var abiVersion: String { get }
    /// "in-process" or "process".
    var isolation: String { get }
    /// Whether the library provides an extension (asked of the library, not the manifest).
    func provides(_ extensionID: String) -> Bool
    /// Call one method of an extension ("instances/1", "create") with a JSON request.
    func call(extension extensionID: String, method: String, request: Data) async throws(ContainariumError) -> Data
    /// The plugin's own health report ("down" when it cannot be asked).
    func health() async -> HealthReport
    /// Call a method that hands over a descriptor (console/1 `open`); the caller owns it.
    func callWithDescriptor(extension extensionID: String, method: String, request: Data) async throws(ContainariumError) -> (Data, Int32)
}

extension PluginEndpoint {
    /// Descriptors cannot cross the process-isolation pipe: only in-process plugins hand them over.
    public func callWithDescriptor(extension extensionID: String, method: String, request: Data) async throws(ContainariumError) -> (Data, Int32) {
        throw ContainariumError(.unsupported, "\(extensionID) \(method) needs an in-process plugin (\(manifest.id) runs isolated)")
    }
}

/// The extension methods the host knows, in ABI table order.
public enum ExtensionMethods {
    public static let known: [String: [String]] = [
        "instances/1": ["create", "remove", "start", "stop", "restart", "list", "info", "resize", "exec", "capacity", "watch"],
        "devices.gpu/1": ["list", "attach", "detach"],
        "node.lifecycle/1": ["status", "start", "stop"],
        "scanner/1": ["scan"],
        "console/1": ["open"],
        "accounts/1": ["create", "set_keys", "list_keys", "add_collaborator", "remove_collaborator"],
        "credentials/1": ["get"],
        "filesystem/1": ["locate"],
    ]
}
