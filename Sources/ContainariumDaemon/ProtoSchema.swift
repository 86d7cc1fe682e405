public import ContainariumCore
public import ContainariumProto
public import ContainariumService
import Foundation
public import SwiftProtobuf

/// The API's contract as the REST adapter reads it: the messages, enums and HTTP routes
/// (`google.api.http`) of `proto/containarium/v1`, from the descriptor set embedded by
/// scripts/gen-proto.sh. REST routes, the strict decoding of their JSON, the defaults in their
/// answers and the OpenAPI document all come from here, so none of them is written twice.
struct ProtoSchema: Sendable {
    enum Kind: Sendable, Equatable {
        case string, bool, int32, uint32, int64, uint64, double, bytes
        case enumeration(String)
        case message(String)
    }

    struct Field: Sendable {
        var name: String
        var jsonName: String
        var kind: Kind
        var repeated: Bool
        /// A map field: its value's kind (keys are strings in this API).
        var mapValue: Kind?
        /// proto3 `optional`, or a message: "absent" differs from the default.
        var hasPresence: Bool
        var comment: String
    }

    struct MessageType: Sendable {
        var name: String
        var fields: [Field]
        var comment: String
        func field(_ key: String) -> Field? { fields.first { $0.jsonName == key || $0.name == key } }
    }

    struct Route: Sendable {
        /// containarium.v1.ContainerService/CreateContainer
        var method: String
        var service: String
        var name: String
        var verb: String
        /// Path segments; "{field}" marks one a request field takes.
        var segments: [String]
        /// "*" or empty.
        var body: String
        var responseBody: String
        var input: String
        var output: String
        var comment: String
        var pathFields: [String] { segments.filter { $0.hasPrefix("{") }.map { String($0.dropFirst().dropLast()) } }
        var path: String { "/" + segments.joined(separator: "/") }
    }

    let messages: [String: MessageType]
    let enums: [String: [String]]
    let routes: [Route]

    static let shared: ProtoSchema = {
        do { return try ProtoSchema(base64: ContainariumDescriptors.fileDescriptorSetBase64) } catch {
            // The descriptor set is generated and committed with the code: a failure here is a
            // broken build, which the unit tests catch.
            return ProtoSchema(messages: [:], enums: [:], routes: [])
        }
    }()

    private init(messages: [String: MessageType], enums: [String: [String]], routes: [Route]) {
        self.messages = messages
        self.enums = enums
        self.routes = routes
    }

    init(base64: String) throws(ContainariumError) {
        guard let data = Data(base64Encoded: base64) else { throw .internal("the embedded descriptor set is not base64") }
        let set: Google_Protobuf_FileDescriptorSet
        do { set = try Google_Protobuf_FileDescriptorSet(serializedBytes: data, extensions: Google_Api_Annotations_Extensions) } catch {
            throw .internal("the embedded descriptor set does not parse", cause: "\(error)")
        }
        var messages: [String: MessageType] = [:], enums: [String: [String]] = [:], routes: [Route] = []
        for file in set.file {
            let package = file.package.isEmpty ? "" : file.package + "."
            var comments: [[Int32]: String] = [:]
            for loc in file.sourceCodeInfo.location where !loc.leadingComments.isEmpty {
                comments[loc.path] = loc.leadingComments.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
                    .trimmingCharacters(in: .whitespaces)
            }
            func kind(_ f: Google_Protobuf_FieldDescriptorProto) -> Kind {
                let ref = f.typeName.hasPrefix(".") ? String(f.typeName.dropFirst()) : f.typeName
                switch f.type {
                case .string: return .string
                case .bool: return .bool
                case .int32, .sint32, .sfixed32: return .int32
                case .uint32, .fixed32: return .uint32
                case .int64, .sint64, .sfixed64: return .int64
                case .uint64, .fixed64: return .uint64
                case .double, .float: return .double
                case .bytes: return .bytes
                case .enum: return .enumeration(ref)
                default: return .message(ref)
                }
            }
            func add(_ m: Google_Protobuf_DescriptorProto, scope: String, path: [Int32]) {
                let name = scope + m.name
                for e in m.enumType { enums[name + "." + e.name] = e.value.map(\.name) }
                var entries: [String: Google_Protobuf_DescriptorProto] = [:]
                for (i, nested) in m.nestedType.enumerated() {
                    if nested.options.mapEntry { entries[name + "." + nested.name] = nested } else {
                        add(nested, scope: name + ".", path: path + [3, Int32(i)])
                    }
                }
                var fields: [Field] = []
                for (i, f) in m.field.enumerated() {
                    var field = Field(
                        name: f.name, jsonName: f.jsonName.isEmpty ? f.name : f.jsonName, kind: kind(f), repeated: f.label == .repeated,
                        mapValue: nil, hasPresence: (f.proto3Optional || f.type == .message || f.hasOneofIndex) && f.label != .repeated, comment: comments[path + [2, Int32(i)]] ?? "")
                    if case .message(let ref) = field.kind, let entry = entries[ref], entry.field.count == 2 {
                        field.mapValue = kind(entry.field[1])
                        field.repeated = false
                        field.hasPresence = false
                    }
                    fields.append(field)
                }
                messages[name] = MessageType(name: name, fields: fields, comment: comments[path] ?? "")
            }
            for (i, m) in file.messageType.enumerated() { add(m, scope: package, path: [4, Int32(i)]) }
            for e in file.enumType { enums[package + e.name] = e.value.map(\.name) }
            for (si, s) in file.service.enumerated() {
                for (mi, m) in s.method.enumerated() where m.options.hasGoogle_Api_http {
                    let rule = m.options.Google_Api_http
                    let (verb, path): (String, String) = switch rule.pattern {
                    case .get(let p)?: ("GET", p)
                    case .put(let p)?: ("PUT", p)
                    case .post(let p)?: ("POST", p)
                    case .delete(let p)?: ("DELETE", p)
                    case .patch(let p)?: ("PATCH", p)
                    case nil: ("", "")
                    }
                    guard !verb.isEmpty else { continue }
                    func strip(_ t: String) -> String { t.hasPrefix(".") ? String(t.dropFirst()) : t }
                    routes.append(Route(
                        method: package + s.name + "/" + m.name, service: package + s.name, name: m.name, verb: verb,
                        segments: path.split(separator: "/").map(String.init), body: rule.body, responseBody: rule.responseBody,
                        input: strip(m.inputType), output: strip(m.outputType), comment: comments[[6, Int32(si), 2, Int32(mi)]] ?? ""))
                }
            }
        }
        self.messages = messages
        self.enums = enums
        self.routes = routes
    }

    // MARK: - requests

    /// A REST request as the JSON object of its request message: the body's fields (checked
    /// against the message: unknown fields and wrong types are refused, with the field named),
    /// then the path's and the query's. Null means "left out", as in the proto3 JSON mapping.
    func requestObject(_ route: Route, path: [String: String], query: [String: String], body: Data) throws(ContainariumError) -> JSONValue {
        guard let input = messages[route.input] else { throw .internal("no message \(route.input) in the contract") }
        var object: [String: JSONValue] = [:]
        let blank = body.allSatisfy { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        if !blank {
            guard route.body == "*" else { throw .invalid("\(route.verb) \(route.path) takes no body (its fields are query parameters)") }
            let value: JSONValue
            do { value = try JSONDecoder().decode(JSONValue.self, from: body) } catch {
                throw .invalid("malformed JSON: \(WireJSON.describe(error))")
            }
            guard case .object(let o) = value else { throw .invalid("the body must be a JSON object") }
            object = try checked(o, input, at: "", excluding: Set(route.pathFields))
        }
        for (name, value) in path {
            guard let f = input.field(name) else { throw .internal("path field \(name) is not in \(route.input)") }
            object[f.jsonName] = .string(value)
        }
        for (key, text) in query.sorted(by: { $0.key < $1.key }) {
            guard route.body != "*", let f = input.field(key), !route.pathFields.contains(f.name), !f.repeated, f.mapValue == nil else {
                let allowed = route.body == "*" ? [] : input.fields.filter { !route.pathFields.contains($0.name) && !$0.repeated && $0.mapValue == nil }.map(\.jsonName)
                throw .invalid("unknown query parameter '\(key)'" + (allowed.isEmpty ? " (this route takes none)" : " (allowed: \(allowed.joined(separator: ", ")))"))
            }
            object[f.jsonName] = try queryValue(text, f)
        }
        return .object(object)
    }

    /// A JSON object checked against `type`: every key a field, every value of its field's
    /// type. Nulls are dropped.
    func checked(_ o: [String: JSONValue], _ type: MessageType, at prefix: String, excluding: Set<String> = []) throws(ContainariumError) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for key in o.keys.sorted() {
            guard let value = o[key] else { continue }
            guard let f = type.field(key), !excluding.contains(f.name) else {
                if let f = type.field(key), excluding.contains(f.name) { throw .invalid("'\(prefix + key)' comes from the path, not the body") }
                let allowed = type.fields.filter { !excluding.contains($0.name) }.map(\.jsonName)
                throw .invalid("unknown field '\(prefix + key)' (allowed: \(allowed.isEmpty ? "none" : allowed.joined(separator: ", ")))")
            }
            // proto3 JSON: null is the field left out.
            guard value != .null else { continue }
            let name = prefix + f.jsonName
            if let valueKind = f.mapValue {
                guard case .object(let entries) = value else { throw .invalid("field '\(name)' must be an object") }
                var m: [String: JSONValue] = [:]
                for (k, v) in entries {
                    guard v != .null else { throw .invalid("field '\(name).\(k)' may not be null") }
                    m[k] = try checkedValue(v, valueKind, name: "\(name).\(k)")
                }
                out[f.jsonName] = .object(m)
            } else if f.repeated {
                guard case .array(let items) = value else { throw .invalid("field '\(name)' must be an array") }
                var a: [JSONValue] = []
                for (i, item) in items.enumerated() {
                    guard item != .null else { throw .invalid("field '\(name)[\(i)]' may not be null") }
                    a.append(try checkedValue(item, f.kind, name: "\(name)[\(i)]"))
                }
                out[f.jsonName] = .array(a)
            } else {
                out[f.jsonName] = try checkedValue(value, f.kind, name: name)
            }
        }
        return out
    }

    func checkedValue(_ v: JSONValue, _ kind: Kind, name: String) throws(ContainariumError) -> JSONValue {
        switch kind {
        case .string, .bytes:
            guard case .string = v else { throw .invalid("field '\(name)' must be a string") }
            return v
        case .bool:
            guard case .bool = v else { throw .invalid("field '\(name)' must be true or false") }
            return v
        case .int32, .uint32, .int64, .uint64:
            let unsigned = kind == .uint32 || kind == .uint64
            let wide = kind == .int64 || kind == .uint64
            let refusal = ContainariumError.invalid("field '\(name)' must be a whole number" + (unsigned ? " of at least 0" : "")
                + (wide ? " (as a string beyond 2^53)" : " (at most \(kind == .int32 ? "2147483647" : "4294967295"))"))
            // 64-bit numbers may come as decimal strings (proto3 JSON encoders write them so):
            // kept as strings, so that no digit is lost on the way to the message.
            if case .string(let s) = v {
                guard wide, s.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-") }),
                      unsigned ? UInt64(s) != nil : Int64(s) != nil else { throw refusal }
                return v
            }
            let limit: Double = kind == .int32 ? 2_147_483_647 : kind == .uint32 ? 4_294_967_295 : 9_007_199_254_740_992
            guard case .number(let n) = v, n == n.rounded(), abs(n) <= limit, !unsigned || n >= 0 else { throw refusal }
            return .number(n)
        case .double:
            guard case .number = v else { throw .invalid("field '\(name)' must be a number") }
            return v
        case .enumeration(let e):
            let names = enums[e] ?? []
            guard case .string(let s) = v, names.contains(s) else {
                throw .invalid("field '\(name)' must be one of \(names.dropFirst().joined(separator: ", "))")
            }
            return v
        case .message(let m) where m == "google.protobuf.Timestamp":
            guard case .string(let s) = v, Self.isTimestamp(s) else { throw .invalid("field '\(name)' must be an RFC 3339 time such as 2026-01-02T15:04:05Z") }
            return v
        case .message(let m):
            guard let type = messages[m] else { throw .internal("no message \(m) in the contract") }
            guard case .object(let o) = v else { throw .invalid("field '\(name)' must be an object") }
            return .object(try checked(o, type, at: name + "."))
        }
    }

    /// A query parameter's text as its field's JSON value.
    func queryValue(_ text: String, _ f: Field) throws(ContainariumError) -> JSONValue {
        switch f.kind {
        case .bool:
            switch text {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: throw .invalid("query parameter '\(f.jsonName)': '\(text)' is not a boolean")
            }
        case .int64, .uint64: return try checkedValue(.string(text), f.kind, name: f.jsonName)
        case .int32, .uint32:
            guard !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-") }), let n = Int64(text) else {
                throw .invalid("query parameter '\(f.jsonName)' must be a whole number")
            }
            return try checkedValue(.number(Double(n)), f.kind, name: f.jsonName)
        case .double:
            guard let d = Double(text), d.isFinite else { throw .invalid("query parameter '\(f.jsonName)' must be a number") }
            return .number(d)
        default: return try checkedValue(.string(text), f.kind, name: f.jsonName)
        }
    }

    /// An RFC 3339 time as the proto3 JSON mapping takes it (SwiftProtobuf's own parser decides).
    static func isTimestamp(_ s: String) -> Bool {
        guard let quoted = try? WireJSON.encode(JSONValue.string(s)) else { return false }
        return (try? Google_Protobuf_Timestamp(jsonUTF8Data: quoted)) != nil
    }

    /// The request message from its checked JSON object.
    static func decode<M: SwiftProtobuf.Message>(_ type: M.Type, _ object: JSONValue) throws(ContainariumError) -> M {
        do {
            let data = try WireJSON.encode(object)
            var options = JSONDecodingOptions()
            options.ignoreUnknownFields = false
            return try M(jsonUTF8Data: data, options: options)
        } catch let e as ContainariumError {
            throw e
        } catch {
            throw .invalid("the request does not match \(M.protoMessageName): \(error)")
        }
    }

    // MARK: - answers

    /// A message as REST answers it: the proto3 JSON mapping with every field present (unset
    /// fields at their defaults; unset messages and optionals as null) and 64-bit numbers as
    /// JSON numbers where a double holds them exactly (up to 2^53; larger ones stay decimal
    /// strings, as the mapping writes them), so clients see one stable shape.
    func answer<M: SwiftProtobuf.Message>(_ message: M) throws(ContainariumError) -> JSONValue {
        let data: Data
        do {
            data = try message.jsonUTF8Data()
        } catch {
            throw .internal("could not encode \(M.protoMessageName)", cause: "\(error)")
        }
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw .internal("could not read back \(M.protoMessageName)", cause: "\(error)")
        }
        return withDefaults(value, M.protoMessageName)
    }

    func withDefaults(_ value: JSONValue, _ typeName: String) -> JSONValue {
        guard typeName != "google.protobuf.Timestamp", let type = messages[typeName], case .object(var o) = value else { return value }
        for f in type.fields {
            if let present = o[f.jsonName] {
                if f.kind == .int64 || f.kind == .uint64 {
                    o[f.jsonName] = f.repeated ? .array((present.items ?? []).map(Self.exactNumber)) : Self.exactNumber(present)
                } else if f.mapValue == .int64 || f.mapValue == .uint64, case .object(let entries) = present {
                    o[f.jsonName] = .object(entries.mapValues(Self.exactNumber))
                } else if case .message(let m) = f.kind, f.mapValue == nil {
                    o[f.jsonName] = f.repeated ? .array((present.items ?? []).map { withDefaults($0, m) }) : withDefaults(present, m)
                } else if case .message(let m)? = f.mapValue, case .object(let entries) = present {
                    o[f.jsonName] = .object(entries.mapValues { withDefaults($0, m) })
                }
                continue
            }
            o[f.jsonName] = defaultValue(f)
        }
        return .object(o)
    }

    /// A 64-bit number the mapping wrote as a string, as a JSON number when a double holds it exactly.
    static func exactNumber(_ v: JSONValue) -> JSONValue {
        guard case .string(let s) = v else { return v }
        if let n = Int64(s), n.magnitude <= 1 << 53 { return .number(Double(n)) }
        if let n = UInt64(s), n <= 1 << 53 { return .number(Double(n)) }
        return v
    }

    func defaultValue(_ f: Field) -> JSONValue {
        if f.mapValue != nil { return .object([:]) }
        if f.repeated { return .array([]) }
        if f.hasPresence { return .null }
        switch f.kind {
        case .string, .bytes: return .string("")
        case .bool: return .bool(false)
        case .int32, .uint32, .int64, .uint64, .double: return .number(0)
        case .enumeration(let e): return .string(enums[e]?.first ?? "")
        case .message: return .null
        }
    }
}

/// A message as the REST API answers with it (proto3 JSON, every field present), pretty-printed
/// with sorted keys: the CLI's `--format json` in remote mode.
public enum APIJSON {
    public static func render(_ message: some SwiftProtobuf.Message) throws(ContainariumError) -> String {
        let value = try ProtoSchema.shared.answer(message)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do { return String(decoding: try enc.encode(value), as: UTF8.self) } catch {
            throw .internal("cannot print the answer", cause: "\(error)")
        }
    }
}

/// Requests built from the service layer's types, for the CLI's remote mode.
public enum APIMessages {
    /// A create as `CreateContainer`/`CreateContainerStream` carry it.
    public static func createRequest(_ r: CreateEnvironmentRequest) -> Containarium_V1_CreateContainerRequest { ProtoMap.createMessage(r) }

    /// An OS type by name: the enum when it names one (OS_TYPE_UBUNTU_2404), else `os` (a
    /// name the node's config gives it).
    public static func osType(_ name: String) -> (osType: Containarium_V1_OSType, os: String) {
        if let t = Containarium_V1_OSType.allCases.first(where: { (try? ProtoMap.osType($0)) == name }) { return (t, "") }
        return (.unspecified, name)
    }
}
