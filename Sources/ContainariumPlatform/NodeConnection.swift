public import ContainariumCore
public import ContainariumService

/// A connection to another node's daemon, as the platform uses it: unary calls, a create with
/// its progress, and a VM console. The daemon's gRPC client (`RemoteClient`) is the one
/// implementation; the platform never sees the transport.
public protocol NodeConnection: Sendable {
    /// One unary call (the gRPC method's name; JSON in and out).
    func call(_ method: String, _ request: JSONValue) async throws(ContainariumError) -> JSONValue

    /// A create: progress messages go to `progress`; returns the final container.
    func create(_ request: CreateEnvironmentRequest, progress: @escaping @Sendable (JSONValue) -> Void) async throws(ContainariumError) -> JSONValue

    /// A console: `input` goes to the console in order; `opened` runs once the node has opened
    /// it; `output` gets what the console sends; `ended` runs when the node ends the call (the
    /// owner of `input` should then finish it, so that the call can return).
    func console(username: String, kind: String, input: AsyncStream<[UInt8]>, opened: @escaping @Sendable () -> Void,
                 output: @escaping @Sendable ([UInt8]) -> Void, ended: @escaping @Sendable () -> Void) async throws(ContainariumError)
}

/// Makes connections to members: the daemon injects it when it builds the `Cluster`.
public protocol NodeConnector: Sendable {
    /// A member's node API through the local end of its link.
    func connection(linkSocket: String) -> any NodeConnection
    /// A member at its advertised HOST:PORT, with client certificates and a token.
    func connection(address: String, certsDir: String?, token: String?) throws(ContainariumError) -> any NodeConnection
}

/// The local ends of the links members keep open to this control plane (the daemon's
/// `NodeLinks`): a unix socket per node and target ("api" or "ssh") while the link is up.
public protocol LinkSockets: Sendable {
    func socket(of node: String, _ target: String) -> String?
}

/// A daemon's gRPC address.
public enum NodeAddress {
    /// HOST:PORT, with a port in 1...65535 and a host that is not empty.
    public static func parse(_ server: String) throws(ContainariumError) -> (host: String, port: Int) {
        let parts = server.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port), !parts[0].isEmpty else {
            throw .invalid("--server must be HOST:PORT, e.g. 10.0.0.5:50051")
        }
        return (String(parts[0]), port)
    }
}
