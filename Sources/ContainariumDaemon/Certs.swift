public import ContainariumCore
import Crypto
import Foundation
import SwiftASN1
import X509

/// `containarium cert generate`: a deployment CA, a server certificate (for the daemon's
/// gRPC port) and a client certificate (for the CLI's remote mode), all P-256/ECDSA.
public enum CertificateAuthority {
    public struct Output: Sendable {
        public var files: [String]
    }

    public static func generate(serverIPs: [String], serverNames: [String], outputDir: String, validDays: Int = 825,
                                clientName: String = "admin", overwrite: Bool = false) throws(ContainariumError) -> Output {
        guard (1...3650).contains(validDays) else { throw .invalid("--days must be between 1 and 3650") }
        var ipBytes: [[UInt8]] = []
        for ip in serverIPs {
            guard let bytes = ipv4Bytes(ip) else { throw .invalid("'\(ip)' is not an IPv4 address") }
            ipBytes.append(bytes)
        }
        let fm = FileManager.default
        let names = ["ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"]
        if !overwrite, let existing = names.first(where: { fm.fileExists(atPath: "\(outputDir)/\($0)") }) {
            throw .alreadyExists("\(outputDir)/\(existing) exists; pass --force to replace the deployment's certificates")
        }
        do {
            try fm.createDirectory(atPath: outputDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
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

            func write(_ name: String, _ text: String, secret: Bool) throws {
                let path = "\(outputDir)/\(name)"
                try? fm.removeItem(atPath: path)
                guard fm.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: secret ? 0o600 : 0o644]) else {
                    throw ContainariumError(.unavailable, "cannot write \(path)")
                }
            }
            try write("ca.crt", try ca.serializeAsPEM().pemString + "\n", secret: false)
            try write("ca.key", caKey.pemRepresentation + "\n", secret: true)
            try write("server.crt", try server.serializeAsPEM().pemString + "\n", secret: false)
            try write("server.key", serverKey.pemRepresentation + "\n", secret: true)
            try write("client.crt", try client.serializeAsPEM().pemString + "\n", secret: false)
            try write("client.key", clientKey.pemRepresentation + "\n", secret: true)
            return Output(files: names.map { "\(outputDir)/\($0)" })
        } catch let e as ContainariumError {
            throw e
        } catch {
            throw ContainariumError(.internal, "certificate generation failed", cause: "\(error)")
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
}
