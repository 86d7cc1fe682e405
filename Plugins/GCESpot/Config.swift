import ContainariumCore
import Foundation

/// The plugin's configuration (its entry in the node config's `plugins.gce-spot.config`).
/// Strict: a key it does not know fails `initialize`, so a misspelt setting is never silently
/// ignored.
struct GCESpotConfig: Decodable {
    var project: String?
    var zone: String?
    var instances: [String]?
    var metadataHost: String?
    var computeBaseURL: String?
    var credentialsFile: String?
    var watch: Bool?
    var requestTimeoutSeconds: Double?
    var operationTimeoutSeconds: Double?

    static let keys: Set<String> = [
        "project", "zone", "instances", "metadataHost", "computeBaseURL", "credentialsFile", "watch", "requestTimeoutSeconds",
        "operationTimeoutSeconds",
    ]
}

/// The configuration, checked and with its defaults filled in.
struct Settings: Sendable {
    static let defaultMetadataHost = "metadata.google.internal"
    static let defaultComputeBaseURL = "https://compute.googleapis.com/compute/v1"

    let project: String
    let zone: String
    /// The GCE instances this plugin answers for (a request's `node` is one of them).
    let instances: [String]
    /// HOST[:PORT] of the metadata server, reached over plain http as Google documents it.
    let metadataHost: String
    /// The Compute Engine API root, without a trailing slash.
    let computeBaseURL: String
    /// Whether `computeBaseURL` came from the configuration (then plain http is allowed).
    let computeBaseURLExplicit: Bool
    let credentialsFile: String?
    let watch: Bool
    let requestTimeout: Double
    let operationTimeout: Double

    /// Check `data` (the configuration JSON); `environment` supplies GCE_METADATA_HOST.
    static func parse(_ data: Data, environment: [String: String]) throws(ContainariumError) -> Settings {
        let c = try decodeStrict(data)
        guard let project = c.project else { throw invalid("'project' is required (the GCE project id of the instances)") }
        guard isProjectID(project) else {
            throw invalid("project '\(project)' is not a GCE project id (6-30 of a-z, 0-9 and -, starting with a letter; a domain-scoped id as example.com:name)")
        }
        guard let zone = c.zone else { throw invalid("'zone' is required (e.g. us-central1-a)") }
        guard isName(zone) else { throw invalid("zone '\(zone)' is not a GCE zone name (such as us-central1-a)") }
        guard let instances = c.instances, !instances.isEmpty else {
            throw invalid("'instances' is required: the names of the GCE instances this plugin guards (at least one)")
        }
        for name in instances where !isName(name) {
            throw invalid("instance name '\(name)' is not a GCE instance name (1-63 of a-z, 0-9 and -, starting with a letter, not ending with -)")
        }
        if Set(instances).count != instances.count { throw invalid("'instances' names an instance twice") }

        let metadataHost = c.metadataHost ?? environment["GCE_METADATA_HOST"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultMetadataHost
        guard isHostPort(metadataHost) else {
            throw invalid("metadataHost '\(metadataHost)' must be HOST or HOST:PORT (no scheme, path or credentials), as GCE_METADATA_HOST is")
        }

        var base = c.computeBaseURL ?? defaultComputeBaseURL
        while base.hasSuffix("/") { base.removeLast() }
        guard let url = URL(string: base), let scheme = url.scheme?.lowercased(), scheme == "https" || scheme == "http",
              url.host?.isEmpty == false, url.query == nil, url.fragment == nil, url.user == nil, url.password == nil
        else {
            throw invalid("computeBaseURL '\(c.computeBaseURL ?? "")' must be an http or https URL without query, fragment or credentials")
        }

        if let file = c.credentialsFile, !file.hasPrefix("/") || file.utf8.contains(0) {
            throw invalid("credentialsFile must be an absolute path, not '\(file)'")
        }
        let requestTimeout = c.requestTimeoutSeconds ?? 30
        guard requestTimeout >= 1, requestTimeout <= 300 else {
            throw invalid("requestTimeoutSeconds must be between 1 and 300, not \(requestTimeout)")
        }
        let operationTimeout = c.operationTimeoutSeconds ?? 300
        guard operationTimeout >= 1, operationTimeout <= 3600 else {
            throw invalid("operationTimeoutSeconds must be between 1 and 3600, not \(operationTimeout)")
        }
        return Settings(
            project: project, zone: zone, instances: instances, metadataHost: metadataHost, computeBaseURL: base,
            computeBaseURLExplicit: c.computeBaseURL != nil, credentialsFile: c.credentialsFile, watch: c.watch ?? true,
            requestTimeout: requestTimeout, operationTimeout: operationTimeout)
    }

    private static func decodeStrict(_ data: Data) throws(ContainariumError) -> GCESpotConfig {
        let raw: JSONValue
        do throws(ContainariumError) {
            raw = try WireJSON.decode(JSONValue.self, from: data)
        } catch {
            throw invalid("not valid JSON: \(error.message)")
        }
        guard let object = raw.objectValue else { throw invalid("must be a JSON object") }
        let unknown = object.keys.filter { !GCESpotConfig.keys.contains($0) }.sorted()
        if !unknown.isEmpty {
            let s = unknown.count == 1 ? "" : "s"
            throw invalid(
                "unknown key\(s) \(unknown.map { "'\($0)'" }.joined(separator: ", ")) (known: \(GCESpotConfig.keys.sorted().joined(separator: ", ")))")
        }
        do throws(ContainariumError) {
            return try WireJSON.decode(GCESpotConfig.self, from: data)
        } catch {
            throw invalid(error.message)
        }
    }

    static func invalid(_ what: String) -> ContainariumError { .invalid("gce-spot configuration: \(what)") }

    /// A GCE resource name (RFC 1035 label): instances and zones.
    static func isName(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...63).contains(u.count), let first = u.first, let last = u.last else { return false }
        guard (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first), last != UInt8(ascii: "-") else { return false }
        return u.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "-") }
    }

    /// A project id (6-30 chars) or a domain-scoped one ("example.com:my-project").
    static func isProjectID(_ s: String) -> Bool {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2, let id = parts.last else { return false }
        if parts.count == 2 {
            let domain = parts[0].utf8
            guard !domain.isEmpty, domain.count <= 253, domain.allSatisfy({ isLowerAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") })
            else { return false }
        }
        return (6...30).contains(id.utf8.count) && isName(String(id))
    }

    /// HOST or HOST:PORT, HOST a DNS name, an IPv4 address or a bracketed IPv6 address.
    static func isHostPort(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 260 else { return false }
        var host = Substring(s)
        var port: Substring?
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { return false }
            host = s[s.index(after: s.startIndex)..<close]
            let rest = s[s.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return false }
                port = rest.dropFirst()
            }
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return false }
        } else {
            let parts = s.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { return false }
            host = parts[0]
            port = parts.count == 2 ? parts[1] : nil
            guard !host.isEmpty, host.utf8.allSatisfy({ isLowerAlnum($0) || (65...90).contains($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") })
            else { return false }
        }
        if let port {
            guard let n = Int(port), (1...65535).contains(n), port.allSatisfy(\.isASCII) else { return false }
        }
        return true
    }

    private static func isLowerAlnum(_ c: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
    }
}
