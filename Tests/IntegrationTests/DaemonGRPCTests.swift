import ContainariumCore
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// gRPC with mutual TLS, driven by the CLI's remote mode against a real daemon and Incus.
@Suite("Daemon gRPC with mTLS and the CLI's remote mode, on real Incus", .needsIncus, .serialized)
struct DaemonGRPCTests {
    @Test("every verb through --server/--certs-dir; no certificate or another CA's certificate is refused")
    func remoteMode() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let certs = box.dir.appendingPathComponent("certs"), otherCA = box.dir.appendingPathComponent("other-ca")
        let gen = try Run.run(TestEnv.cliPath, ["cert", "generate", "--server-ip", "127.0.0.1", "--output-dir", certs.path])
        #expect(gen.status == 0, "\(gen.output)")
        #expect(try Run.run(TestEnv.cliPath, ["cert", "generate", "--server-ip", "127.0.0.1", "--output-dir", otherCA.path,
                                              "--ca-dir", box.dir.appendingPathComponent("other-ca-key").path]).status == 0)
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--mtls", "--certs-dir", certs.path])
        try d.start()
        defer { d.stop() }
        let server = "127.0.0.1:\(d.grpcPort)"
        let user = "gr\(TestEnv.suffix())"
        defer { box.forceDelete("\(user)-container") }
        func remote(_ args: [String], certsDir: URL? = certs, env: [String: String] = [:]) throws -> ProcessResult {
            var opts = ["--server", server]
            if let certsDir { opts += ["--certs-dir", certsDir.path] }
            // Options go before a "--" that starts a command.
            let cut = args.firstIndex(of: "--") ?? args.endIndex
            let a = Array(args[..<cut]) + opts + Array(args[cut...])
            return try Run.run(TestEnv.cliPath, a, environment: env.merging(["CONTAINARIUM_TOKEN": ""]) { a, _ in a }, timeout: 600)
        }

        // create streams progress, then the container.
        let create = try remote(["create", user, "--ssh-key", box.key.publicKey.path, "--memory", "512MB"])
        #expect(create.status == 0, "\(create.output)")
        #expect(create.stdout.contains("[1/"), "progress streamed: \(create.stdout)")
        #expect(create.stdout.contains("created successfully"))
        let list = try remote(["list"])
        #expect(list.status == 0 && list.stdout.contains("\(user)-container"), "\(list.output)")
        let info = try remote(["info", user])
        #expect(info.status == 0, "\(info.output)")
        let ip = try #require(try JSONDecoder().decode(JSONValue.self, from: Data(info.stdout.utf8))["network"]?["ipAddress"]?.stringValue)
        #expect(try IncusEnv.ssh(user: user, host: ip, key: box.key.privateKey, "id -un").stdout.contains(user))
        let exec = try remote(["exec", user, "--", "cat", "/etc/hostname"])
        #expect(exec.status == 0 && exec.stdout.contains("\(user)-container"), "\(exec.output)")
        let failing = try remote(["exec", user, "--", "sh", "-c", "exit 3"])
        #expect(failing.status == 3, "exit status crosses the wire: \(failing.output)")
        #expect(try remote(["stop", user]).stdout.contains("is stopped"))
        #expect(try remote(["start", user]).stdout.contains("is running"))
        #expect(try remote(["restart", user]).status == 0)
        let resize = try remote(["resize", user, "--memory", "640MB"])
        #expect(resize.status == 0 && resize.stdout.contains("resized successfully") && resize.stdout.contains("Memory: 640MB"), "\(resize.output)")
        let export = try remote(["export", user, "--jump-ip", "203.0.113.9"])
        #expect(export.status == 0 && export.stdout.contains("ProxyJump") && export.stdout.contains(ip), "\(export.output)")
        #expect(try remote(["capacity"]).stdout.contains("cpus"))
        #expect(try remote(["stacks"]).stdout.contains("python"))
        let plugins = try remote(["plugin", "list"])
        #expect(plugins.status == 0 && plugins.stdout.contains("incus-lxc") && plugins.stdout.contains("ok"), "\(plugins.output)")
        let audit = try remote(["audit", "--action", "container.create", "--format", "json"])
        #expect(audit.status == 0 && audit.stdout.contains("\"interface\" : \"grpc\"") && audit.stdout.contains("\"actor\" : \"admin\""),
                "the certificate's identity is the actor: \(audit.output)")
        // Errors keep their code and exit status across gRPC.
        let missing = try remote(["info", "nobody\(TestEnv.suffix())"])
        #expect(missing.status == ContainariumError.Code.notFound.exitCode, "\(missing.output)")
        let bad = try remote(["info", "Not_Valid!"])
        #expect(bad.status == ContainariumError.Code.invalidArgument.exitCode, "\(bad.output)")

        // Refused: no client certificate, a certificate from another CA, plaintext.
        let ca = certs.appendingPathComponent("ca.crt")
        let noCert = box.dir.appendingPathComponent("nocert")
        try FileManager.default.createDirectory(at: noCert, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: ca, to: noCert.appendingPathComponent("ca.crt"))
        // openssl as an independent TLS client with no certificate: the server's TLS 1.3
        // certificate_required alert ends the connection.
        let openssl = try Run.run("/usr/bin/openssl", ["s_client", "-connect", server, "-CAfile", ca.path, "-alpn", "h2", "-ign_eof"], stdin: "\n", timeout: 30)
        #expect(openssl.output.contains("alert certificate required"), "a TLS client without a certificate is refused: \(openssl.output)")
        let mixed = box.dir.appendingPathComponent("mixed")
        try FileManager.default.createDirectory(at: mixed, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: ca, to: mixed.appendingPathComponent("ca.crt"))
        try FileManager.default.copyItem(at: otherCA.appendingPathComponent("client.crt"), to: mixed.appendingPathComponent("client.crt"))
        try FileManager.default.copyItem(at: otherCA.appendingPathComponent("client.key"), to: mixed.appendingPathComponent("client.key"))
        let foreign = try remote(["list"], certsDir: mixed)
        #expect(foreign.status != 0 && !foreign.stdout.contains("\(user)-container"), "another CA's client is refused: \(foreign.output)")
        let plaintext = try remote(["list"], certsDir: nil)
        #expect(plaintext.status != 0, "plaintext is refused: \(plaintext.output)")
        // The daemon is still healthy after the refusals.
        #expect(try remote(["list"]).stdout.contains("\(user)-container"))

        let del = try remote(["delete", user, "--force"])
        #expect(del.status == 0, "\(del.output)")
        #expect(try !box.exists("\(user)-container"))
    }

    @Test("without --mtls, gRPC takes bearer tokens with the same authorization as REST")
    func bearerTokens() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box)
        try d.start()
        defer { d.stop() }
        let server = "127.0.0.1:\(d.grpcPort)"
        let anonymous = try Run.run(TestEnv.cliPath, ["list", "--server", server], environment: ["CONTAINARIUM_TOKEN": ""])
        #expect(anonymous.status == ContainariumError.Code.unauthenticated.exitCode, "\(anonymous.output)")
        let user = try d.token("gu\(TestEnv.suffix())")
        let asUser = try Run.run(TestEnv.cliPath, ["list", "--server", server, "--token", user])
        #expect(asUser.status == 0, "\(asUser.output)")
        let capacity = try Run.run(TestEnv.cliPath, ["capacity", "--server", server, "--token", user])
        #expect(capacity.status == ContainariumError.Code.permissionDenied.exitCode, "admin only: \(capacity.output)")
        let forged = try d.token("admin", roles: "admin", secret: "another-secret-that-is-long-enough-0123456789")
        let refused = try Run.run(TestEnv.cliPath, ["capacity", "--server", server, "--token", forged])
        #expect(refused.status == ContainariumError.Code.unauthenticated.exitCode, "\(refused.output)")
        let audit = try HTTP.call("GET", d.base + "/v1/audit?action=auth.failure", token: try d.token("admin", roles: "admin"))
        #expect(audit.text.contains("\"grpc\""), "gRPC authentication failures are audited: \(audit.text)")
    }
}
