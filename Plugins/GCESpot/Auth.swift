import ContainariumCore
import Foundation
import Synchronization
import _CryptoExtras

/// A service-account JSON key file as Google issues it (only the fields the JWT bearer grant
/// needs). The private key never leaves this struct: it is not logged, printed or put in errors.
struct ServiceAccountKey: Sendable {
    static let scope = "https://www.googleapis.com/auth/compute"

    let clientEmail: String
    let privateKeyID: String
    let tokenURI: URL
    private let key: _RSA.Signing.PrivateKey

    private struct File: Decodable {
        var type: String?
        var client_email: String?
        var private_key_id: String?
        var private_key: String?
        var token_uri: String?
    }

    /// Read and check the key file at `path`.
    static func load(path: String) throws(ContainariumError) -> ServiceAccountKey {
        let where_ = "gce-spot configuration: credentialsFile \(path)"
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .invalid("\(where_) cannot be read: \((error as NSError).localizedDescription)")
        }
        let f: File
        do { f = try JSONDecoder().decode(File.self, from: data) } catch {
            throw .invalid("\(where_) is not a service-account JSON key (not a JSON object)")
        }
        guard f.type == "service_account" else {
            throw .invalid("\(where_) is not a service-account key (its type is '\(f.type ?? "missing")', not 'service_account')")
        }
        guard let email = f.client_email, !email.isEmpty else { throw .invalid("\(where_) has no client_email") }
        guard let kid = f.private_key_id, !kid.isEmpty else { throw .invalid("\(where_) has no private_key_id") }
        guard let uri = f.token_uri, let url = URL(string: uri), let scheme = url.scheme?.lowercased(), scheme == "https" || scheme == "http",
              url.host?.isEmpty == false
        else { throw .invalid("\(where_): token_uri must be an http or https URL") }
        guard let pem = f.private_key, pem.contains("PRIVATE KEY") else { throw .invalid("\(where_) has no PEM private_key") }
        let key: _RSA.Signing.PrivateKey
        do { key = try _RSA.Signing.PrivateKey(pemRepresentation: pem) } catch {
            // Never the key itself in the message.
            throw .invalid("\(where_): private_key is not an RSA private key of 2048 bits or more in PEM (\(type(of: error)))")
        }
        return ServiceAccountKey(clientEmail: email, privateKeyID: kid, tokenURI: url, key: key)
    }

    /// The signed JWT of the bearer grant (RFC 7523, RS256 = RSASSA-PKCS1-v1_5 with SHA-256).
    func assertion(now: Date = Date()) throws(ContainariumError) -> String {
        struct Header: Encodable {
            var alg = "RS256"
            var typ = "JWT"
            var kid: String
        }
        struct Claims: Encodable {
            var iss: String
            var scope: String
            var aud: String
            var iat: Int
            var exp: Int
        }
        let iat = Int(now.timeIntervalSince1970)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let header: Data
        let claims: Data
        do {
            header = try e.encode(Header(kid: privateKeyID))
            claims = try e.encode(Claims(iss: clientEmail, scope: Self.scope, aud: tokenURI.absoluteString, iat: iat, exp: iat + 3600))
        } catch {
            throw .internal("cannot encode the JWT of the service-account grant")
        }
        let signingInput = Base64URL.encode(header) + "." + Base64URL.encode(claims)
        let signature: _RSA.Signing.RSASignature
        do { signature = try key.signature(for: Data(signingInput.utf8), padding: .insecurePKCS1v1_5) } catch {
            throw .internal("cannot sign the JWT with the service-account key \(privateKeyID) (\(type(of: error)))")
        }
        return signingInput + "." + Base64URL.encode(signature.rawRepresentation)
    }
}

enum Base64URL {
    static func encode(_ d: Data) -> String {
        d.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// Access tokens for the Compute API: from a service-account key (JWT bearer grant at the
/// key's token_uri) or from the metadata server's default service account. A token is kept
/// until a minute before it expires. Tokens are never logged or put in an error.
final class TokenProvider: Sendable {
    static let service = "token endpoint"

    enum Source: Sendable {
        case metadata(MetadataClient)
        case serviceAccount(ServiceAccountKey)
    }

    private struct Cached: Sendable {
        var token: String
        var renewAt: Date
    }

    let source: Source
    private let http: HTTPClient
    private let requestTimeout: Double
    private let reach: Reachability
    private let cache = Mutex<Cached?>(nil)

    init(source: Source, http: HTTPClient, requestTimeout: Double, reach: Reachability) {
        self.source = source
        self.http = http
        self.requestTimeout = requestTimeout
        self.reach = reach
    }

    /// Where tokens come from, for logs and messages.
    var description: String {
        switch source {
        case .metadata(let m): "the default service account of the metadata server \(m.host)"
        case .serviceAccount(let k): "service-account key \(k.privateKeyID) of \(k.clientEmail)"
        }
    }

    /// A valid access token, fetched when none is cached or the cached one is about to expire.
    func token(cancelled: () -> Bool) throws(ContainariumError) -> String {
        if let c = cache.withLock({ $0 }), c.renewAt > Date() { return c.token }
        let fetched: (token: String, lifetime: Double)
        switch source {
        case .metadata(let m):
            fetched = try m.token(cancelled: cancelled)
        case .serviceAccount(let key):
            fetched = try grant(key, cancelled: cancelled)
        }
        let (token, lifetime) = fetched
        let margin = lifetime > 120 ? 60 : lifetime / 2
        cache.withLock { $0 = Cached(token: token, renewAt: Date().addingTimeInterval(lifetime - margin)) }
        return token
    }

    /// Forget the cached token (the API refused it).
    func invalidate() { cache.withLock { $0 = nil } }

    private func grant(_ key: ServiceAccountKey, cancelled: () -> Bool) throws(ContainariumError) -> (String, Double) {
        let body = Percent.query([("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", try key.assertion())])
        let what = "the token endpoint \(key.tokenURI.absoluteString)"
        let r: HTTPResponse
        do throws(HTTPClient.Failure) {
            r = try http.send(
                "POST", key.tokenURI, headers: ["Content-Type": "application/x-www-form-urlencoded"], body: Data(body.utf8),
                deadline: Date().addingTimeInterval(requestTimeout), cancelled: cancelled)
        } catch {
            switch error {
            case .cancelled: throw ContainariumError(.cancelled, "\(what): cancelled")
            case .timedOut(let s):
                reach.failed(Self.service, "\(what) did not answer within \(Int(s.rounded())) s")
                throw ContainariumError(.timeout, "\(what) did not answer within \(Int(s.rounded())) s")
            case .transport(let t):
                reach.failed(Self.service, "\(what) is unreachable: \(t)")
                throw ContainariumError(.unavailable, "\(what) is unreachable: \(t)")
            }
        }
        let answer = try? JSONDecoder().decode(TokenAnswer.self, from: r.body)
        if r.status == 200, let token = answer?.access_token, !token.isEmpty {
            reach.answered(Self.service)
            return (token, answer?.expires_in ?? 3600)
        }
        let google = [answer?.error, answer?.error_description].compactMap { $0 }.joined(separator: ": ")
        let detail = google.isEmpty ? "HTTP \(r.status)" : google
        if (400..<500).contains(r.status) {
            // Google answers a key it does not know, a bad signature or a wrong claim with 400/401
            // invalid_grant: the credentials are refused, not the service unreachable.
            let why = "unauthenticated: \(what) refused service-account key \(key.privateKeyID) of \(key.clientEmail): \(detail)"
            reach.failed(Self.service, why)
            throw ContainariumError(.unauthenticated, why)
        }
        let why = "\(what) answered \(r.status): \(detail)"
        reach.failed(Self.service, why)
        throw ContainariumError(.unavailable, why)
    }
}
