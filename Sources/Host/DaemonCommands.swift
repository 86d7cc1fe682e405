import ArgumentParser
import ContainariumClient
import ContainariumCore
import ContainariumProto
import ContainariumDaemon
import ContainariumPlatform
import ContainariumService
import Foundation
import SwiftProtobuf
import Logging
import PluginHost

/// Remote mode: every verb can run against a daemon's gRPC API instead of this node.
struct RemoteOptions: ParsableArguments {
    @Option(help: "Run against a remote daemon's gRPC API (HOST:PORT, e.g. 10.0.0.5:50051) instead of this node.")
    var server: String?

    @Option(name: .customLong("certs-dir"), help: "Directory with ca.crt, client.crt and client.key for mTLS (remote mode).")
    var certsDir: String?

    @Option(help: "Bearer token for remote mode (default: $CONTAINARIUM_TOKEN); not needed with mTLS client certificates.")
    var token: String?

    @Option(name: .customLong("state-dir"), help: "State directory of the daemon on this machine (default: $CONTAINARIUM_STATE_DIR or /var/lib/containarium). Without --server, verbs go through that daemon when it runs.")
    var stateDir: String?

    /// The daemon at --server, or nil.
    func client() throws -> ContainariumEndpoint? {
        guard let server else { return nil }
        let tok = (token ?? ProcessInfo.processInfo.environment["CONTAINARIUM_TOKEN"]).flatMap { $0.isEmpty ? nil : $0 }
        do { return try ContainariumEndpoint(server: server, certsDir: certsDir.map { ($0 as NSString).expandingTildeInPath }, token: tok) } catch { throw fail(error) }
    }

    /// The daemon a verb goes through: --server's, else the one running on this machine for the
    /// state directory (its local API socket; the caller is then `local-admin`, audited with
    /// interface cli), so every change passes through the daemon's authorization, bookkeeping
    /// and audit log. nil when neither: the verb then acts alone on this node's backends, and
    /// with no daemon there is no audit log to write.
    ///
    /// `global`: the verb's --config and --plugin-path, which only a CLI acting alone uses; with
    /// a daemon they would be silently ignored, so they are refused.
    func daemon(_ global: GlobalOptions? = nil) throws -> ContainariumEndpoint? {
        if let remote = try client() { return remote }
        let dir = LocalDaemon.stateDir(stateDir)
        guard let local = ContainariumEndpoint(answering: DaemonOptions.localSocket(stateDir: dir)) else { return nil }
        if let global, global.config != nil || !global.pluginPaths.isEmpty {
            throw fail(.invalid(
                "a daemon runs for \(dir): the change goes through it, with its own config and plugins; --config and --plugin-path apply only when the CLI acts alone (no daemon running)"))
        }
        return local
    }

    /// Where the answer comes from, for messages ("" for this machine's daemon).
    var whereabouts: String { server.map { " on \($0)" } ?? "" }
}

/// A daemon's answer as the REST API gives it: the proto3 JSON of the message, every field present.
func printRemote(_ message: some SwiftProtobuf.Message) throws {
    do { print(try APIJSON.render(message)) } catch { throw fail(error) }
}

extension ContainariumEndpoint {
    /// One connection for a verb: what `body` does with the daemon's API; a failure ends the
    /// CLI with the error's message and exit code.
    func cli<R: Sendable>(_ body: (DaemonConnection) async throws -> R) async throws -> R {
        try await ContainariumCLI.run { () async throws(ContainariumError) in try await connect(body) }
    }
}

struct DaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon", abstract: "Run the API daemon: REST (JWT) and gRPC (mTLS), state, audit log and reconciler.")

    @Flag(inversion: .prefixedNo, help: "Serve the REST API (on by default).") var rest = true
    @Option(name: .customLong("http-port"), help: "REST port.") var httpPort = 8080
    @Option(name: .customLong("http-host"), help: "REST listen address.") var httpHost = "0.0.0.0"
    @Option(name: .customLong("tls-cert"), help: "Serve REST over TLS with this certificate chain (PEM; with --tls-key), e.g. server.crt from `cert generate`.") var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "The private key (PEM) for --tls-cert.") var tlsKey: String?
    @Option(name: .customLong("http-max-connections"), help: "REST connections open at once, in all.") var httpMaxConnections = 4096
    @Option(name: .customLong("http-max-connections-per-address"), help: "REST connections open at once from one address.") var httpMaxPerAddress = 256
    @Option(name: .customLong("http-idle-timeout"), help: "Seconds after which a silent or idle REST connection is closed.") var httpIdleTimeout = 120
    @Option(help: "gRPC port (0 turns gRPC off).") var port = 50051
    @Option(name: .customLong("grpc-host"), help: "gRPC listen address.") var grpcHost = "0.0.0.0"
    @Flag(help: "Require client certificates signed by the deployment CA on gRPC.") var mtls = false
    @Option(name: .customLong("grpc-max-connections"), help: "gRPC connections open at once, in all.") var grpcMaxConnections = 4096
    @Option(name: .customLong("grpc-max-connections-per-address"), help: "gRPC connections open at once from one address.") var grpcMaxPerAddress = 256
    @Option(name: .customLong("grpc-idle-timeout"), help: "Seconds after which a gRPC connection without calls is closed.") var grpcIdleTimeout = 300
    @Flag(name: .customLong("insecure-plaintext-nodes"), help: "Without --mtls, still take node reports and links (a test bed only: node tokens travel in clear).") var insecurePlaintextNodes = false
    @Option(name: .customLong("certs-dir"), help: "Where ca.crt, server.crt and server.key live.") var certsDir = "/etc/containarium/certs"
    @Option(name: .customLong("jwt-secret"), help: "JWT secret (testing only: visible in ps; prefer the file or $CONTAINARIUM_JWT_SECRET).") var jwtSecret: String?
    @Option(name: .customLong("jwt-secret-file"), help: "File holding the JWT secret.") var jwtSecretFile: String?
    @Option(name: .customLong("state-dir"), help: "Directory of the embedded SQLite state.") var stateDir = "/var/lib/containarium"
    @Option(name: .customLong("database-url"), help: "postgres://user:pass@host:5432/db to share state between daemons (default: SQLite in --state-dir).") var databaseURL: String?
    @Option(name: .customLong("reconcile-interval"), help: "Seconds between reconciliations.") var reconcileInterval = 60
    @Option(name: .customLong("audit-max-age-days"), help: "Remove audit entries older than this (0 keeps them forever).") var auditMaxAgeDays = 365
    @Option(name: .customLong("audit-max-rows"), help: "Keep at most this many audit entries, the newest (0: no limit).") var auditMaxRows = 1_000_000
    @Option(name: .customLong("orphan-grace"), help: "Seconds before a half-made container nobody is creating is removed.") var orphanGrace = 300
    @Option(name: .customLong("swagger-dir"), help: "Directory with the Swagger UI assets.") var swaggerDir: String?
    @Option(name: .customLong("metrics-interval"), help: "Seconds between usage samples (the dashboard's charts, GET /metrics, alert rules).") var metricsInterval = 15
    @Flag(name: .customLong("no-metrics"), help: "No Prometheus metrics: GET /metrics answers 404 and nothing is measured.") var noMetrics = false
    @Option(name: .customLong("metrics-listen"), help: "Also serve GET /metrics without a token on HOST:PORT (a private network only).") var metricsListen: String?
    @Option(name: .customLong("webui-dir"), help: "Directory with the dashboard (web/ with vendor/ from scripts/webui-assets.sh), served at /webui/.") var webuiDir: String?
    @Option(name: .customLong("ssh-port"), help: "Also run the SSH gateway on this port (0: off).") var sshPort = 0
    @OptionGroup var gateway: GatewayFlags
    @OptionGroup var cluster: ClusterFlags
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        if mtls && insecurePlaintextNodes {
            throw fail(.invalid("--insecure-plaintext-nodes is for a control plane without --mtls: with --mtls every node uses its certificate"))
        }
        let service = try global.service()
        let logger = Logger(label: "containarium.daemon")
        let (secret, source) = try await ContainariumCLI.run { () throws(ContainariumError) in
            try JWTSecretSource.resolve(environment: ProcessInfo.processInfo.environment, file: jwtSecretFile, flag: jwtSecret)
        }
        if source == .generated {
            // Printed once, to the terminal of whoever started the daemon; never logged.
            print("""
                ──────────────────────────────────────────────────────────────
                JWT secret (auto-generated; tokens die with this process):
                \(secret)
                Mint a token: containarium token generate --username admin --roles admin --expiry 24h --secret '<secret>'
                ──────────────────────────────────────────────────────────────
                """)
            fflush(nil)
        }
        guard (1...65535).contains(httpPort), (0...65535).contains(port) else { throw fail(.invalid("ports must be between 1 and 65535")) }
        var options = DaemonOptions(jwtSecret: secret)
        options.restEnabled = rest
        options.restHost = httpHost
        options.restPort = httpPort
        guard grpcMaxConnections >= 1, grpcMaxPerAddress >= 1, grpcIdleTimeout >= 1 else {
            throw fail(.invalid("--grpc-max-connections, --grpc-max-connections-per-address and --grpc-idle-timeout must be positive"))
        }
        guard httpMaxConnections >= 1, httpMaxPerAddress >= 1, httpIdleTimeout >= 1 else {
            throw fail(.invalid("--http-max-connections, --http-max-connections-per-address and --http-idle-timeout must be positive"))
        }
        options.restMaxConnections = httpMaxConnections
        options.restMaxConnectionsPerAddress = httpMaxPerAddress
        options.restIdleTimeoutSeconds = httpIdleTimeout
        switch (tlsCert, tlsKey) {
        case (nil, nil): break
        case (let cert?, let key?):
            for f in [cert, key] where !FileManager.default.isReadableFile(atPath: f) { throw fail(.invalid("cannot read \(f)")) }
            options.restTLS = (cert, key)
        default: throw fail(.invalid("--tls-cert and --tls-key go together"))
        }
        options.stateDir = stateDir
        options.databaseURL = databaseURL
        options.reconcileInterval = .seconds(max(1, reconcileInterval))
        guard auditMaxAgeDays >= 0, auditMaxRows >= 0 else { throw fail(.invalid("--audit-max-age-days and --audit-max-rows must be 0 or more")) }
        options.auditMaxAgeDays = auditMaxAgeDays
        options.auditMaxRows = auditMaxRows
        options.orphanGrace = TimeInterval(max(0, orphanGrace))
        options.swaggerDir = swaggerDir ?? Self.defaultSwaggerDir()
        options.webuiDir = webuiDir ?? Self.defaultWebUIDir()
        guard (1...3600).contains(metricsInterval) else { throw ValidationError("--metrics-interval must be 1-3600 seconds") }
        options.metricsInterval = .seconds(metricsInterval)
        options.metricsEnabled = !noMetrics
        if let listen = metricsListen {
            guard !noMetrics else { throw fail(.invalid("--metrics-listen serves the metrics that --no-metrics turns off: give one of them")) }
            let (host, port) = try await ContainariumCLI.run { () throws(ContainariumError) in try Cluster.hostPort(listen) }
            guard (1...65535).contains(port), port != httpPort else { throw fail(.invalid("--metrics-listen needs a port of its own (1-65535, not --port's)")) }
            options.metricsListen = (host, port)
        }
        if sshPort > 0 {
            options.ssh = try gateway.options(port: sshPort, stateDir: stateDir)
        }
        try cluster.apply(to: &options)
        options.join = try JoinFile.load(stateDir)
        if port > 0 {
            var g = GRPCOptions()
            g.host = grpcHost
            g.port = port
            g.mtls = mtls
            g.plaintextNodes = insecurePlaintextNodes
            g.maxConnections = grpcMaxConnections
            g.maxConnectionsPerAddress = grpcMaxPerAddress
            g.idleTimeout = grpcIdleTimeout
            g.certsDir = certsDir
            options.grpc = g
        }
        try await ContainariumCLI.run { () async throws(ContainariumError) in
            try await Daemon.run(service: service, options: options, logger: logger)
        }
    }

    static func defaultWebUIDir() -> String? { installed("webui", marker: "index.html") }
    static func defaultSwaggerDir() -> String? { installed("swagger-ui", marker: "swagger-ui-bundle.js") }

    /// share/containarium/NAME next to the executable's prefix, or in the usual prefixes.
    static func installed(_ name: String, marker: String) -> String? {
        let exe = PluginTrust.executable.deletingLastPathComponent()
        for dir in [exe.appendingPathComponent("../share/containarium/\(name)").standardized.path, "/usr/local/share/containarium/\(name)",
                    "/usr/share/containarium/\(name)"] where FileManager.default.fileExists(atPath: dir + "/" + marker) {
            return dir
        }
        return nil
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "API tokens.", subcommands: [TokenGenerate.self, CertRevoke.self])
}

struct TokenGenerate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "Mint a JWT (HS256) for the REST and gRPC APIs.")
    @Option(help: "Subject of the token (required).") var username: String
    @Option(help: "Comma-separated roles: admin, user; or metrics alone (a scraper that may read GET /metrics and nothing else).") var roles = "user"
    @Option(help: "Validity, e.g. 30m, 24h, 720h; 0 for none.") var expiry = "24h"
    @Option(help: "JWT secret (prefer --secret-file or $CONTAINARIUM_JWT_SECRET).") var secret: String?
    @Option(name: .customLong("secret-file"), help: "File holding the JWT secret.") var secretFile: String?

    func run() async throws {
        let token = try await ContainariumCLI.run { () async throws(ContainariumError) -> String in
            var list: [Role] = []
            for r in roles.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !r.isEmpty {
                guard let role = Role(rawValue: r) else { throw .invalid("unknown role '\(r)' (admin, user, metrics, node)") }
                list.append(role)
            }
            if list.contains(.metrics), list.count > 1 { throw .invalid("a metrics token has the metrics role only") }
            let env = ProcessInfo.processInfo.environment
            guard env["CONTAINARIUM_JWT_SECRET"]?.isEmpty == false || secretFile != nil || secret != nil else {
                throw .invalid("give the daemon's secret: --secret-file FILE, --secret S or $CONTAINARIUM_JWT_SECRET")
            }
            let (s, _) = try JWTSecretSource.resolve(environment: env, file: secretFile, flag: secret)
            let expires = try Tokens.parseExpiry(expiry)
            return try await Tokens(secret: s).generate(username: username, roles: list, expiresIn: expires)
        }
        print(token)
    }
}

struct CertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cert", abstract: "mTLS certificates.", subcommands: [CertGenerate.self, CertIssue.self, CertRevoke.self])
}

struct CertGenerate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "Write a deployment CA, a server and a client certificate.")
    @Option(name: .customLong("server-ip"), help: "IPv4 address clients use to reach the daemon (repeatable).") var serverIPs: [String] = []
    @Option(name: .customLong("server-name"), help: "DNS name clients use to reach the daemon (repeatable).") var serverNames: [String] = []
    @Option(name: .customLong("output-dir"), help: "Where to write the PEM files.") var outputDir = "/etc/containarium/certs"
    @Option(name: .customLong("ca-dir"), help: "Where to write the CA (ca.key and ca.crt); default: 'ca' beside --output-dir. Never the output directory.") var caDir: String?
    @Option(help: "Validity in days.") var days = 825
    @Flag(help: "Replace existing certificates.") var force = false

    func run() async throws {
        let out = try await ContainariumCLI.run { () throws(ContainariumError) in
            try CertificateAuthority.generate(serverIPs: serverIPs, serverNames: serverNames, outputDir: outputDir, caDir: caDir, validDays: days, overwrite: force)
        }
        for f in out.files { print("wrote \(f)") }
        print("client.crt is an administrator's (CN admin, OU admin). Issue each node and user its own with `containarium cert issue`; keep the CA directory offline.")
    }
}

struct CertIssue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue", abstract: "Issue a client certificate for one identity: a node, a user or an administrator.")
    @Option(name: .customLong("ca-dir"), help: "The CA from `cert generate` (ca.crt and ca.key).") var caDir = "/etc/containarium/ca"
    @Option(help: "The identity: a user name, or a node's name for --role node.") var name: String
    @Option(help: "admin, user or node.") var role: String
    @Option(name: .customLong("output-dir"), help: "Where to write ca.crt, client.crt and client.key (a --certs-dir).") var outputDir: String
    @Option(help: "Validity in days.") var days = 397
    @Option(name: .customLong("server-ip"), help: "For --role node: also a server certificate for the node's own gRPC port, valid for this IPv4 address (repeatable).") var serverIPs: [String] = []
    @Option(name: .customLong("server-name"), help: "For --role node: a DNS name for the node's server certificate (repeatable).") var serverNames: [String] = []
    @Flag(help: "Replace existing files.") var force = false

    func run() async throws {
        let out = try await ContainariumCLI.run { () throws(ContainariumError) in
            try CertificateAuthority.issue(caDir: caDir, name: name, role: role, outputDir: outputDir, validDays: days,
                                           serverIPs: serverIPs, serverNames: serverNames, overwrite: force)
        }
        for f in out.files { print("wrote \(f)") }
        if let serial = out.serial { print("client certificate serial \(serial) (revoke it with `containarium cert revoke --serial \(serial)`)") }
    }
}

/// Revocation goes through a daemon (it keeps the list in its store): tokens by subject, or
/// one client certificate by serial (or read from its PEM file).
struct CertRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "Revoke a client certificate (by serial or file), or every token of a subject issued until now.")
    @Option(help: "The certificate's serial number (hex), as `cert issue` printed it.") var serial: String?
    @Option(help: "The certificate's PEM file (its serial is read from it).") var cert: String?
    @Option(name: .customLong("tokens-of"), help: "Revoke every token of this subject (a user, an administrator's name, node.NAME) issued until now.") var tokensOf: String?
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard [serial, cert, tokensOf].compactMap({ $0 }).count == 1 else { throw fail(.invalid("give exactly one of --serial, --cert and --tokens-of")) }
        var request = Containarium_V1_RevokeCredentialsRequest()
        if let tokensOf { request.subject = tokensOf }
        if let serial { request.certificateSerial = serial }
        if let cert {
            request.certificateSerial = try await ContainariumCLI.run { () throws(ContainariumError) in try CertificateIdentity.serial(ofPEMFile: cert) }
        }
        guard let client = try remote.daemon() else {
            throw fail(ContainariumError(.failedPrecondition, "no daemon runs here: revocations live in a daemon's store; give --server"))
        }
        let r = try await client.cli { c in try await c.system.revokeCredentials(request, metadata: c.metadata) }
        if r.subject.isEmpty {
            print("✓ revoked certificate \(r.certificateSerial) at \(r.revokedAt.date.formatted(.iso8601))")
        } else {
            print("✓ revoked the tokens of \(r.subject) issued until \(r.revokedAt.date.formatted(.iso8601))")
        }
    }
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Query the audit log (through the daemon: --server's, or the one running on this machine).")
    @Option(help: "Only entries by this actor.") var actor: String?
    @Option(help: "Only this action, e.g. container.create or auth.failure.") var action: String?
    @Option(help: "Only entries about this environment.") var target: String?
    @Option(help: "Only this result: ok or an error code.") var result: String?
    @Option(help: "At most this many entries, newest first.") var limit = 50
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        guard let client = try remote.daemon() else {
            throw fail(LocalDaemon.notRunning(remote.stateDir, "the audit log is the daemon's"))
        }
        guard (1...10000).contains(limit) else { throw fail(.invalid("--limit must be 1 to 10000")) }
        let request = Containarium_V1_ListAuditRequest.with {
            $0.limit = UInt32(limit)
            $0.actor = actor ?? ""
            $0.action = action ?? ""
            $0.target = target ?? ""
            $0.result = result ?? ""
        }
        let answer = try await client.cli { c in try await c.audit.listAudit(request, metadata: c.metadata) }
        if format == .json { return try printRemote(answer) }
        let entries = answer.entries
        let f = ISO8601DateFormatter()
        print(Table.render(header: ["TIME", "ACTOR", "ROLE", "ACTION", "TARGET", "SOURCE", "VIA", "RESULT"],
                           rows: entries.map { [f.string(from: $0.at.date), $0.actor, $0.role, $0.action, $0.target, $0.source, $0.interface, $0.result] }))
    }
}

/// `containarium openapi`: the REST API's OpenAPI document, made from proto/ as the daemon
/// serves it at /openapi.json (scripts/gen-openapi.sh writes it to docs/openapi.json).
struct OpenAPICommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "openapi", abstract: "Print the REST API's OpenAPI document (from proto/).")

    func run() throws {
        FileHandle.standardOutput.write(OpenAPI.json)
    }
}
