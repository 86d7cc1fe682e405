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
