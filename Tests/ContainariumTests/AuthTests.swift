import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import Crypto
import Foundation
import TestSupport
import SwiftASN1
import Testing
import X509

@Suite("JWT tokens")
struct TokenTests {
    static let secret = "0123456789abcdef0123456789abcdef-test-secret"

    func b64(_ s: String) -> String {
        Data(s.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    }

    @Test("a token round-trips subject and role")
    func roundTrip() async throws {
        let t = try await Tokens(secret: Self.secret)
        let admin = try await t.generate(username: "admin", roles: [.admin], expiresIn: 3600)
        let a = try await t.verify(admin)
        #expect(a.subject == "admin" && a.role == .admin && abs(a.issuedAt.timeIntervalSinceNow) < 5)
        let user = try await t.generate(username: "alice", roles: [.user], expiresIn: nil)
        let u = try await t.verify(user)
        #expect(u.subject == "alice" && u.role == .user)
    }

    @Test("a node token names its node and expires: a bare `node` subject, another name's shape or no expiry is refused")
    func nodeTokens() async throws {
        let t = try await Tokens(secret: Self.secret)
        let good = try await t.verify(try await t.generate(username: "node.worker-1", roles: [.node], expiresIn: 3600))
        #expect(good.subject == "node.worker-1" && good.role == .node)
        for (subject, expiry) in [("node", 3600.0), ("node.", 3600), ("alice", 3600), ("node.worker-1", nil)] as [(String, TimeInterval?)] {
            let token = try await t.generate(username: subject, roles: [.node], expiresIn: expiry)
            do {
                _ = try await t.verify(token)
                Issue.record("\(subject) (expiry \(String(describing: expiry))) was accepted")
            } catch {
                #expect(error.code == .unauthenticated && error.message.contains("node token"), "\(subject): \(error)")
            }
        }
    }

    @Test("expired, forged, wrong-issuer, alg:none and garbage tokens are refused as unauthenticated")
    func rejects() async throws {
        let t = try await Tokens(secret: Self.secret)
        let expired = try await t.generate(username: "alice", roles: [.user], expiresIn: 60, now: Date().addingTimeInterval(-3600))
        let forged = try await Tokens(secret: Self.secret + "-other").generate(username: "alice", roles: [.admin], expiresIn: 3600)
        let now = Int(Date().timeIntervalSince1970)
        let noneToken = b64(#"{"alg":"none","typ":"JWT"}"#) + "." + b64(#"{"sub":"alice","iss":"containarium","iat":\#(now),"exp":\#(now + 3600),"jti":"x","roles":["admin"]}"#) + "."
        // Right key, wrong issuer: sign a payload by hand with HMAC-SHA256.
        let header = b64(#"{"alg":"HS256","typ":"JWT"}"#)
        let payload = b64(#"{"sub":"alice","iss":"someone-else","iat":\#(now),"exp":\#(now + 3600),"jti":"x","roles":["admin"]}"#)
        let sig = try hmacSHA256(key: Self.secret, message: header + "." + payload)
        let wrongIssuer = header + "." + payload + "." + sig
        // Sanity: the hand-made signer is right (same payload with the right issuer verifies).
        let goodPayload = b64(#"{"sub":"alice","iss":"containarium","iat":\#(now),"exp":\#(now + 3600),"jti":"x","roles":["user"]}"#)
        let good = header + "." + goodPayload + "." + (try hmacSHA256(key: Self.secret, message: header + "." + goodPayload))
        #expect(try await t.verify(good).subject == "alice")
        for (name, token) in [("expired", expired), ("forged", forged), ("alg none", noneToken), ("wrong issuer", wrongIssuer), ("garbage", "abc.def.ghi"), ("empty", "")] {
            do {
                _ = try await t.verify(token)
                Issue.record("\(name) token was accepted")
            } catch {
                #expect(error.code == .unauthenticated, "\(name): \(error)")
            }
        }
    }

    @Test("short secrets are refused; the secret's source follows env > file > flag > generated")
    func secrets() throws {
        #expect(throws: ContainariumError.self) { try Tokens.checkSecret("short") }
        let dir = try TestEnv.tempDir("secret")
        defer { TestEnv.cleanup(dir) }
        let file = dir.appendingPathComponent("s")
        try Data((Self.secret + "-file\n").utf8).write(to: file)
        let env = ["CONTAINARIUM_JWT_SECRET": Self.secret + "-env"]
        #expect(try JWTSecretSource.resolve(environment: env, file: file.path, flag: Self.secret).0 == Self.secret + "-env")
        #expect(try JWTSecretSource.resolve(environment: [:], file: file.path, flag: Self.secret) == (Self.secret + "-file", .file(file.path)))
        #expect(try JWTSecretSource.resolve(environment: [:], file: nil, flag: Self.secret) == (Self.secret, .flag))
        let (generated, source) = try JWTSecretSource.resolve(environment: [:], file: nil, flag: nil)
        #expect(source == .generated && generated.count >= 32)
        #expect(throws: ContainariumError.self) { try JWTSecretSource.resolve(environment: [:], file: nil, flag: "too-short") }
        #expect(throws: ContainariumError.self) { try JWTSecretSource.resolve(environment: [:], file: dir.appendingPathComponent("missing").path, flag: nil) }
    }

    @Test("expiry durations parse; nonsense is refused")
    func expiry() throws {
        #expect(try Tokens.parseExpiry("24h") == 86400)
        #expect(try Tokens.parseExpiry("30m") == 1800)
        #expect(try Tokens.parseExpiry("7d") == 7 * 86400)
        #expect(try Tokens.parseExpiry("0") == nil)
        for bad in ["", "-1h", "h", "12", "1y", "abc"] {
            #expect(throws: ContainariumError.self, "\(bad)") { try Tokens.parseExpiry(bad) }
        }
    }

    /// HMAC-SHA256 with the real openssl binary (an independent implementation), base64url.
    func hmacSHA256(key: String, message: String) throws -> String {
        let r = try Run.run("/usr/bin/openssl", ["dgst", "-sha256", "-mac", "HMAC", "-macopt", "key:\(key)", "-binary"], stdin: message)
        guard r.status == 0 else { throw TestFailure("openssl failed: \(r.stderr)") }
        // Binary output came back through a String; recompute from hex instead to be exact.
        let hex = try Run.run("/usr/bin/openssl", ["dgst", "-sha256", "-mac", "HMAC", "-macopt", "key:\(key)", "-hex"], stdin: message)
        let digest = hex.stdout.split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
        var bytes: [UInt8] = []
        var i = digest.startIndex
        while i < digest.endIndex, let j = digest.index(i, offsetBy: 2, limitedBy: digest.endIndex) {
            bytes.append(UInt8(digest[i..<j], radix: 16) ?? 0)
            i = j
        }
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    }
}

@Suite("mTLS certificates")
struct CertificateTests {
    @Test("cert generate writes a CA (its key in its own directory), server and admin client chain that openssl verifies, with private keys at 0600")
    func chain() throws {
        let root = try TestEnv.tempDir("certs")
        defer { TestEnv.cleanup(root) }
        let dir = root.appendingPathComponent("certs"), caDir = root.appendingPathComponent("ca")
        let out = try CertificateAuthority.generate(serverIPs: ["10.1.2.3"], serverNames: ["ctm.example"], outputDir: dir.path)
        #expect(out.files.count == 7)
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("ca.key").path), "the CA key is not next to the server's keys")
        #expect((try FileManager.default.attributesOfItem(atPath: caDir.appendingPathComponent("ca.key").path)[.posixPermissions] as? Int) == 0o600)
        #expect((try FileManager.default.attributesOfItem(atPath: caDir.path)[.posixPermissions] as? Int) == 0o700)
        for leaf in ["server", "client"] {
            let r = try Run.run("/usr/bin/openssl", ["verify", "-CAfile", dir.appendingPathComponent("ca.crt").path, "-purpose", leaf == "server" ? "sslserver" : "sslclient", dir.appendingPathComponent("\(leaf).crt").path])
            #expect(r.status == 0, "\(r.output)")
            let attrs = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("\(leaf).key").path)
            #expect((attrs[.posixPermissions] as? Int) == 0o600)
        }
        let text = try Run.run("/usr/bin/openssl", ["x509", "-in", dir.appendingPathComponent("server.crt").path, "-noout", "-text"]).stdout
        #expect(text.contains("IP Address:10.1.2.3"))
        #expect(text.contains("DNS:ctm.example"))
        #expect(text.contains("IP Address:127.0.0.1"))
        // The key matches the certificate.
        let certKey = try Run.run("/usr/bin/openssl", ["x509", "-in", dir.appendingPathComponent("client.crt").path, "-noout", "-pubkey"]).stdout
        let keyPub = try Run.run("/usr/bin/openssl", ["pkey", "-in", dir.appendingPathComponent("client.key").path, "-pubout"]).stdout
        #expect(certKey == keyPub && !certKey.isEmpty)
        // The client certificate names an administrator.
        let client = try Certificate(pemEncoded: String(contentsOf: dir.appendingPathComponent("client.crt"), encoding: .utf8))
        let id = try CertificateIdentity.of(client)
        #expect(id.subject == "admin" && id.role == .admin)
        // No silent overwrite; bad addresses are refused; the CA never goes to the output directory.
        #expect(throws: ContainariumError.self) { try CertificateAuthority.generate(serverIPs: [], serverNames: [], outputDir: dir.path) }
        #expect(throws: ContainariumError.self) { try CertificateAuthority.generate(serverIPs: ["10.1.2"], serverNames: [], outputDir: dir.path + "/x") }
        #expect(throws: ContainariumError.self) { try CertificateAuthority.generate(serverIPs: [], serverNames: [], outputDir: root.path + "/y", caDir: root.path + "/y") }
    }

    @Test("cert issue: a node's, a user's and an administrator's certificate each name their identity; a certificate without a role names nobody")
    func identities() throws {
        let root = try TestEnv.tempDir("certs")
        defer { TestEnv.cleanup(root) }
        let caDir = root.appendingPathComponent("ca")
        _ = try CertificateAuthority.generate(serverIPs: [], serverNames: [], outputDir: root.appendingPathComponent("certs").path, caDir: caDir.path)
        func issued(_ name: String, _ role: String) throws -> (subject: String, role: Role) {
            let out = root.appendingPathComponent("\(role)-\(name)")
            _ = try CertificateAuthority.issue(caDir: caDir.path, name: name, role: role, outputDir: out.path)
            let verify = try Run.run("/usr/bin/openssl", ["verify", "-CAfile", out.appendingPathComponent("ca.crt").path, "-purpose", "sslclient", out.appendingPathComponent("client.crt").path])
            #expect(verify.status == 0, "\(verify.output)")
            #expect((try FileManager.default.attributesOfItem(atPath: out.appendingPathComponent("client.key").path)[.posixPermissions] as? Int) == 0o600)
            let id = try CertificateIdentity.of(try Certificate(pemEncoded: String(contentsOf: out.appendingPathComponent("client.crt"), encoding: .utf8)))
            return (id.subject, id.role)
        }
        #expect(try issued("n1", "node") == ("node.n1", .node))
        #expect(try issued("node.n2", "node") == ("node.n2", .node))
        #expect(try issued("alice", "user") == ("alice", .user))
        #expect(try issued("ops", "admin") == ("ops", .admin))
        // Refused before anything is written: unknown roles, bad names, no CA.
        for (name, role) in [("x", "root"), ("Bad Name", "user"), ("-n", "node"), ("root", "user")] {
            #expect(throws: ContainariumError.self, "\(name) \(role)") {
                try CertificateAuthority.issue(caDir: caDir.path, name: name, role: role, outputDir: root.appendingPathComponent("refused").path)
            }
        }
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("refused").path))
        #expect(throws: ContainariumError.self) { try CertificateAuthority.issue(caDir: root.path + "/none", name: "a", role: "user", outputDir: root.path + "/z") }
        // A certificate from before roles (CN only) names nobody.
        let key = P256.Signing.PrivateKey()
        let legacy = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PrivateKey(key).publicKey,
            notValidBefore: Date(), notValidAfter: Date().addingTimeInterval(3600),
            issuer: try DistinguishedName { CommonName("admin") }, subject: try DistinguishedName { CommonName("admin") },
            signatureAlgorithm: .ecdsaWithSHA256, extensions: Certificate.Extensions(), issuerPrivateKey: Certificate.PrivateKey(key))
        #expect(throws: ContainariumError.self) { try CertificateIdentity.of(legacy) }
    }
}

@Suite("Error mapping")
struct ErrorMappingTests {
    @Test("every error code has one HTTP and one gRPC status, and unknown input never maps to 5xx")
    func mapping() {
        for code in ContainariumError.Code.all {
            #expect((400...599).contains(code.httpStatus))
            #expect((1...16).contains(code.grpcStatus))
        }
        #expect(ContainariumError.Code.invalidArgument.httpStatus == 400)
        #expect(ContainariumError.Code.unauthenticated.httpStatus == 401)
        #expect(ContainariumError.Code.permissionDenied.httpStatus == 403)
        #expect(ContainariumError.Code.notFound.httpStatus == 404)
        #expect(ContainariumError.Code.alreadyExists.httpStatus == 409)
        #expect(ContainariumError.Code.unauthenticated.grpcStatus == 16)
        #expect(ContainariumError.Code.permissionDenied.grpcStatus == 7)
    }
}
