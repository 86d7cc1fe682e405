public import ContainariumCore
public import ContainariumPlatform
import Crypto
public import Foundation
import SwiftASN1
public import X509

#if canImport(Glibc)
import Glibc
#endif

/// `containarium cert generate`: a deployment CA, a server certificate (for the daemon's
/// gRPC port) and an administrator's client certificate, all P-256/ECDSA; `cert issue`: a client
/// certificate for one identity. A client certificate names its identity: the common name is
/// the subject (a user name, `node.NAME`, or an administrator's name) and the organizational
/// unit its role (`admin`, `user` or `node`). The CA's private key is written to its own
/// directory, never next to the server's keys.
public enum CertificateAuthority {
    /// The roles a client certificate can name.
    public static let roles = ["admin", "user", "node"]

    /// Where the CA's private key goes when no --ca-dir is given: `ca` beside the output directory.
    public static func defaultCADir(for outputDir: String) -> String {
        ((outputDir as NSString).deletingLastPathComponent as NSString).appendingPathComponent("ca")
    }

    public struct Output: Sendable {
        public var files: [String]
        /// The client certificate's serial (what `cert revoke --serial` takes).
        public var serial: String?
    }

    public static func generate(serverIPs: [String], serverNames: [String], outputDir: String, caDir: String? = nil, validDays: Int = 825,
                                clientName: String = "admin", overwrite: Bool = false) throws(ContainariumError) -> Output {
        let caDir = caDir ?? defaultCADir(for: outputDir)
        guard (caDir as NSString).standardizingPath != (outputDir as NSString).standardizingPath else {
            throw .invalid("--ca-dir must not be the output directory: the CA's key is kept apart from the server's keys")
        }
        guard (1...3650).contains(validDays) else { throw .invalid("--days must be between 1 and 3650") }
        var ipBytes: [[UInt8]] = []
        for ip in serverIPs {
            guard let bytes = ipv4Bytes(ip) else { throw .invalid("'\(ip)' is not an IPv4 address") }
            ipBytes.append(bytes)
        }
        let fm = FileManager.default
        let names = ["ca.crt", "server.crt", "server.key", "client.crt", "client.key"]
        let paths = names.map { "\(outputDir)/\($0)" } + ["\(caDir)/ca.crt", "\(caDir)/ca.key"]
        if !overwrite, let existing = paths.first(where: { fm.fileExists(atPath: $0) }) {
            throw .alreadyExists("\(existing) exists; pass --force to replace the deployment's certificates")
        }
        do {
            try fm.createDirectory(atPath: outputDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try fm.createDirectory(atPath: caDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            chmod(caDir, 0o700)
            let now = Date().addingTimeInterval(-300)
            let until = now.addingTimeInterval(Double(validDays) * 86400)
            let caKey = P256.Signing.PrivateKey()
            let caPriv = Certificate.PrivateKey(caKey)
            let caName = try DistinguishedName {
                OrganizationName("Containarium")
                CommonName("Containarium deployment CA")
            }
            let ca = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: caPriv.publicKey, notValidBefore: now, notValidAfter: until,
                issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                    SubjectKeyIdentifier(hash: caPriv.publicKey)
                },
                issuerPrivateKey: caPriv)

            func leaf(_ cn: String, server: Bool) throws -> (Certificate, P256.Signing.PrivateKey) {
                let key = P256.Signing.PrivateKey()
                let priv = Certificate.PrivateKey(key)
                let subject = try DistinguishedName {
                    OrganizationName("Containarium")
                    if !server { OrganizationalUnitName("admin") }
                    CommonName(cn)
                }
                var sans: [GeneralName] = []
                if server {
                    sans = (serverNames + ["localhost"]).map { .dnsName($0) }
                    sans += (ipBytes + [[127, 0, 0, 1]]).map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
                }
                let extensions = try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                    try ExtendedKeyUsage([server ? .serverAuth : .clientAuth])
                    AuthorityKeyIdentifier(keyIdentifier: try ca.extensions.subjectKeyIdentifier?.keyIdentifier)
                    if server { SubjectAlternativeNames(sans) }
                }
                let cert = try Certificate(
                    version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: priv.publicKey, notValidBefore: now, notValidAfter: until,
                    issuer: caName, subject: subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: caPriv)
                return (cert, key)
            }
            let (server, serverKey) = try leaf(serverNames.first ?? serverIPs.first ?? "containarium", server: true)
            let (client, clientKey) = try leaf(clientName, server: false)

            func write(_ name: String, _ text: String, secret: Bool, in dir: String = outputDir) throws {
                try writeFile("\(dir)/\(name)", text, secret: secret)
            }
            try write("ca.crt", try ca.serializeAsPEM().pemString + "\n", secret: false)
            try write("ca.crt", try ca.serializeAsPEM().pemString + "\n", secret: false, in: caDir)
            try write("ca.key", caKey.pemRepresentation + "\n", secret: true, in: caDir)
            try write("server.crt", try server.serializeAsPEM().pemString + "\n", secret: false)
            try write("server.key", serverKey.pemRepresentation + "\n", secret: true)
            try write("client.crt", try client.serializeAsPEM().pemString + "\n", secret: false)
            try write("client.key", clientKey.pemRepresentation + "\n", secret: true)
            return Output(files: paths)
        } catch let e as ContainariumError {
            throw e
        } catch {
            throw ContainariumError(.internal, "certificate generation failed", cause: "\(error)")
        }
    }

    static func validDNSName(_ s: String) -> Bool {
        let labels = s.split(separator: ".", omittingEmptySubsequences: false)
        return (1...253).contains(s.utf8.count) && labels.allSatisfy { l in
            (1...63).contains(l.utf8.count) && l.first != "-" && l.last != "-"
                && l.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
        }
    }

    static func ipv4Bytes(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, let v = UInt8(p) else { return nil }
            out.append(v)
        }
        return out
    }

    static func writeFile(_ path: String, _ text: String, secret: Bool) throws {
        try? FileManager.default.removeItem(atPath: path)
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: secret ? 0o600 : 0o644]) else {
            throw ContainariumError(.unavailable, "cannot write \(path)")
        }
    }

    /// `containarium cert issue`: a client certificate for one identity, signed with the CA in
    /// `caDir`, written as `client.crt`/`client.key` (with `ca.crt`) to `outputDir`, which is what
    /// `--certs-dir` (the CLI's, or `node join`'s) reads.
    ///
    /// A node may also get a server certificate of its own (`server.crt`/`server.key`, for its
    /// gRPC port under `--mtls`), naming the addresses and names the control plane dials it at:
    /// no member serves with another's certificate.
    public static func issue(caDir: String, name: String, role: String, outputDir: String, validDays: Int = 397,
                             serverIPs: [String] = [], serverNames: [String] = [], overwrite: Bool = false) throws(ContainariumError) -> Output {
        guard roles.contains(role) else { throw .invalid("--role must be one of \(roles.joined(separator: ", "))") }
        guard (1...3650).contains(validDays) else { throw .invalid("--days must be between 1 and 3650") }
        let serves = !serverIPs.isEmpty || !serverNames.isEmpty
        guard !serves || role == "node" else { throw .invalid("--server-ip and --server-name are for a node's own server certificate (--role node)") }
        var ipBytes: [[UInt8]] = []
        for ip in serverIPs {
            guard let bytes = ipv4Bytes(ip) else { throw .invalid("'\(ip)' is not an IPv4 address") }
            ipBytes.append(bytes)
        }
        for n in serverNames where !Self.validDNSName(n) { throw .invalid("'\(n)' is not a DNS name") }
        let subject: String
        switch role {
        case "node":
            let bare = name.hasPrefix("node.") ? String(name.dropFirst(5)) : name
            guard Cluster.validNodeName(bare) else { throw .invalid("'\(bare)' is not a node name (1-63 of a-z 0-9 . - starting with a letter or digit)") }
            subject = "node." + bare
        case "admin":
            guard Tokens.validSubject(name) else { throw .invalid("'\(name)' is not a valid administrator name") }
            subject = name
        default:
            subject = try Username(name).value
        }
        let fm = FileManager.default
        let files = (["ca.crt", "client.crt", "client.key"] + (serves ? ["server.crt", "server.key"] : [])).map { "\(outputDir)/\($0)" }
        if !overwrite, let existing = files.first(where: { fm.fileExists(atPath: $0) }) {
            throw .alreadyExists("\(existing) exists; pass --force to replace it")
        }
        do {
            let caPEM = try String(contentsOfFile: "\(caDir)/ca.crt", encoding: .utf8)
            let caKeyPEM = try String(contentsOfFile: "\(caDir)/ca.key", encoding: .utf8)
            let ca = try Certificate(pemEncoded: caPEM)
            let caPriv = Certificate.PrivateKey(try P256.Signing.PrivateKey(pemRepresentation: caKeyPEM))
            let key = P256.Signing.PrivateKey()
            let priv = Certificate.PrivateKey(key)
            let now = Date().addingTimeInterval(-300)
            let dn = try DistinguishedName {
                OrganizationName("Containarium")
                OrganizationalUnitName(role)
                CommonName(subject)
            }
            let cert = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: priv.publicKey, notValidBefore: now,
                notValidAfter: min(now.addingTimeInterval(Double(validDays) * 86400), ca.notValidAfter),
                issuer: ca.subject, subject: dn, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                    try ExtendedKeyUsage([.clientAuth])
                    AuthorityKeyIdentifier(keyIdentifier: try ca.extensions.subjectKeyIdentifier?.keyIdentifier)
                },
                issuerPrivateKey: caPriv)
            try fm.createDirectory(atPath: outputDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try writeFile(files[0], caPEM, secret: false)
            try writeFile(files[1], try cert.serializeAsPEM().pemString + "\n", secret: false)
            try writeFile(files[2], key.pemRepresentation + "\n", secret: true)
            if serves {
                let serverKey = P256.Signing.PrivateKey()
                let serverPriv = Certificate.PrivateKey(serverKey)
                let sans: [GeneralName] = serverNames.map { .dnsName($0) } + ipBytes.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
                let serverCert = try Certificate(
                    version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: serverPriv.publicKey, notValidBefore: now,
                    notValidAfter: min(now.addingTimeInterval(Double(validDays) * 86400), ca.notValidAfter),
                    issuer: ca.subject, subject: try DistinguishedName {
                        OrganizationName("Containarium")
                        CommonName(serverNames.first ?? serverIPs.first ?? subject)
                    }, signatureAlgorithm: .ecdsaWithSHA256,
                    extensions: try Certificate.Extensions {
                        Critical(BasicConstraints.notCertificateAuthority)
                        Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                        try ExtendedKeyUsage([.serverAuth])
                        AuthorityKeyIdentifier(keyIdentifier: try ca.extensions.subjectKeyIdentifier?.keyIdentifier)
                        SubjectAlternativeNames(sans)
                    },
                    issuerPrivateKey: caPriv)
                try writeFile(files[3], try serverCert.serializeAsPEM().pemString + "\n", secret: false)
                try writeFile(files[4], serverKey.pemRepresentation + "\n", secret: true)
            }
            return Output(files: files, serial: CertificateIdentity.serial(of: cert))
        } catch let e as ContainariumError {
            throw e
        } catch {
            throw ContainariumError(.invalidArgument, "cannot issue a certificate with the CA in \(caDir) (ca.crt and ca.key)", cause: "\(error)")
        }
    }
}

/// The identity a verified client certificate names: its common name and, as its organizational
/// unit, its role. A certificate without a role names nobody (certificates from before roles
/// existed must be re-issued).
public enum CertificateIdentity {
    /// A certificate's serial number as revocations name it: lower-case hex without leading zeros.
    public static func serial(of cert: Certificate) -> String {
        let hex = cert.serialNumber.bytes.map { String(format: "%02x", $0) }.joined()
        let trimmed = hex.drop { $0 == "0" }
        return trimmed.isEmpty ? "0" : String(trimmed)
    }

    /// The serial of the PEM certificate in `path` (`cert revoke --cert`).
    public static func serial(ofPEMFile path: String) throws(ContainariumError) -> String {
        do {
            return serial(of: try Certificate(pemEncoded: String(contentsOfFile: path, encoding: .utf8)))
        } catch {
            throw ContainariumError(.invalidArgument, "cannot read a PEM certificate from \(path)", cause: "\(error)")
        }
    }

    public static func of(_ cert: Certificate) throws(ContainariumError) -> (subject: String, role: Role, issuedAt: Date, expiresAt: Date) {
        var cn: [String] = [], ou: [String] = []
        for rdn in cert.subject {
            for attribute in rdn {
                if attribute.type == .RDNAttributeType.commonName { cn.append(String(describing: attribute.value)) }
                if attribute.type == .RDNAttributeType.organizationalUnitName { ou.append(String(describing: attribute.value)) }
            }
        }
        guard cn.count == 1, ou.count == 1, let subject = cn.first, let roleName = ou.first else {
            throw .unauthenticated("the client certificate names no identity (one CN and one OU role): issue one with `containarium cert issue`")
        }
        switch roleName {
        case "admin":
            guard Tokens.validSubject(subject) else { throw .unauthenticated("the client certificate's CN is not a valid name") }
            return (subject, .admin, cert.notValidBefore, cert.notValidAfter)
        case "user":
            guard let user = try? Username(subject) else { throw .unauthenticated("the client certificate's CN is not a valid user name") }
            return (user.value, .user, cert.notValidBefore, cert.notValidAfter)
        case "node":
            guard subject.hasPrefix("node."), Cluster.validNodeName(String(subject.dropFirst(5))) else {
                throw .unauthenticated("a node certificate's CN must be node.NAME")
            }
            return (subject, .node, cert.notValidBefore, cert.notValidAfter)
        default:
            throw .unauthenticated("the client certificate's role '\(roleName)' is not one of admin, user, node")
        }
    }
}
