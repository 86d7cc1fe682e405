import ContainariumCore
public import Foundation
import HTTPTypes

/// The REST API's OpenAPI 3 document, made from the contract (`ProtoSchema`: the messages, their
/// comments and the `google.api.http` routes) and the REST bindings (success statuses). Served
/// at /openapi.json; `containarium openapi` prints it, and scripts/gen-openapi.sh writes it to
/// docs/openapi.json (CI checks that file is current).
public enum OpenAPI {
    static let document: JSONValue = make(ProtoSchema.shared)

    public static let json: Data = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return (try? encoder.encode(document)).map { $0 + Data("\n".utf8) } ?? Data("{}".utf8)
    }()

    static func ref(_ name: String) -> JSONValue { .object(["$ref": .string("#/components/schemas/" + name)]) }
    static func short(_ fullName: String) -> String { fullName.split(separator: ".").last.map(String.init) ?? fullName }

    static func error(_ description: String) -> JSONValue {
        .object(["description": .string(description), "content": .object(["application/json": .object(["schema": ref("ErrorResponse")])])])
    }

    static let codes = ["invalid_argument", "not_found", "already_exists", "failed_precondition", "resource_exhausted", "permission_denied",
                        "unauthenticated", "unavailable", "timeout", "cancelled", "unsupported", "internal", "plugin_load"]

    /// The component a message field refers to: request objects have their own (every field
    /// optional and nullable), answers theirs (every field present).
    static func component(_ message: String, request: Bool) -> String { short(message) + (request ? "Input" : "") }

    /// What any authenticated route may answer besides its success.
    static let errors: [String: JSONValue] = [
        "400": error("Invalid input: malformed JSON, an unknown field or query parameter, a value of the wrong type or out of range"),
        "401": error("Missing, expired or invalid token"),
        "403": error("Authenticated, but not allowed"),
        "404": error("No such environment, node, operation or route"),
        "409": error("Already exists, or another operation holds it"),
        "412": error("Not in a state that allows it (e.g. not running, still being created, would remove the last key)"),
        "429": error("No node has room for it"),
        "499": error("Cancelled"),
        "500": error("Internal error"),
        "501": error("Not supported by this node's backend"),
        "503": error("A backend or node is unavailable"),
        "504": error("Timed out"),
    ]

    /// A field's schema. `request`: null is accepted (it means the field is left out).
    static func schema(_ f: ProtoSchema.Field, _ schema: ProtoSchema, request: Bool) -> JSONValue {
        func scalar(_ k: ProtoSchema.Kind) -> JSONValue {
            switch k {
            case .string: return .object(["type": .string("string")])
            case .bytes: return .object(["type": .string("string"), "format": .string("byte")])
            case .bool: return .object(["type": .string("boolean")])
            case .int32: return .object(["type": .string("integer"), "format": .string("int32")])
            case .uint32: return .object(["type": .string("integer"), "format": .string("int64"), "minimum": .number(0), "maximum": .number(4_294_967_295)])
            // 64-bit numbers: JSON numbers up to 2^53, decimal strings beyond (as the proto3
            // JSON mapping writes them); requests may give either.
            case .int64:
                return .object(["anyOf": .array([.object(["type": .string("integer"), "format": .string("int64")]),
                                                 .object(["type": .string("string"), "pattern": .string("^-?[0-9]{1,19}$")])])])
            case .uint64:
                return .object(["anyOf": .array([.object(["type": .string("integer"), "format": .string("int64"), "minimum": .number(0)]),
                                                 .object(["type": .string("string"), "pattern": .string("^[0-9]{1,20}$")])])])
            case .double: return .object(["type": .string("number"), "format": .string("double")])
            case .enumeration(let e): return .object(["type": .string("string"), "enum": .array((schema.enums[e] ?? []).map { .string($0) })])
            case .message(let m) where m == "google.protobuf.Timestamp": return .object(["type": .string("string"), "format": .string("date-time")])
            case .message(let m): return ref(component(m, request: request))
            }
        }
        var s: JSONValue
        if let v = f.mapValue {
            s = .object(["type": .string("object"), "additionalProperties": scalar(v)])
        } else if f.repeated {
            s = .object(["type": .string("array"), "items": scalar(f.kind)])
        } else {
            s = scalar(f.kind)
        }
        // Null is a value: for a request field it means "left out"; an answer has null for an
        // unset message or optional field. (OpenAPI 3.0 ignores nullable beside a $ref, hence allOf.)
        if request || f.hasPresence {
            if case .object(var o) = s {
                if o["$ref"] != nil { o = ["allOf": .array([s])] }
                o["nullable"] = .bool(true)
                // OpenAPI 3.0: a nullable enum lists null among its values.
                if case .array(let values)? = o["enum"] { o["enum"] = .array(values + [.null]) }
                s = .object(o)
            }
        }
        if !f.comment.isEmpty, case .object(var o) = s {
            o["description"] = .string(f.comment)
            s = .object(o)
        }
        return s
    }

    static func object(_ type: ProtoSchema.MessageType, _ schema: ProtoSchema, request: Bool, excluding: Set<String> = []) -> JSONValue {
        var props: [String: JSONValue] = [:]
        for f in type.fields where !excluding.contains(f.name) { props[f.jsonName] = self.schema(f, schema, request: request) }
        var o: [String: JSONValue] = ["type": .string("object"), "properties": .object(props), "additionalProperties": .bool(false)]
        if !request { o["required"] = .array(type.fields.map { .string($0.jsonName) }) }
        if !type.comment.isEmpty { o["description"] = .string(type.comment) }
        return .object(o)
    }

    static func make(_ schema: ProtoSchema) -> JSONValue {
        // (Not "Error": that is containarium.v1.Error, the error inside an Operation.)
        var components: [String: JSONValue] = [
            "ErrorResponse": .object([
                "type": .string("object"), "required": .array([.string("error")]),
                "properties": .object(["error": .object([
                    "type": .string("object"), "required": .array([.string("code"), .string("message")]),
                    "properties": .object([
                        "code": .object(["type": .string("string"), "enum": .array(codes.map { .string($0) })]),
                        "message": .object(["type": .string("string")]), "cause": .object(["type": .string("string")]),
                    ]),
                ])]),
            ]),
        ]
        // Answers: every message an answer can reach, all fields present.
        var answerTypes: [String] = []
        func reach(_ name: String) {
            guard name != "google.protobuf.Timestamp", !answerTypes.contains(name), let t = schema.messages[name] else { return }
            answerTypes.append(name)
            for f in t.fields {
                if case .message(let m) = f.kind { reach(m) }
            }
        }
        var inputTypes: [String] = []
        func inputs(_ name: String) {
            guard name != "google.protobuf.Timestamp", !inputTypes.contains(name), let t = schema.messages[name] else { return }
            inputTypes.append(name)
            for f in t.fields {
                if case .message(let m) = f.kind { inputs(m) }
            }
        }
        var paths: [String: [String: JSONValue]] = [:]
        for route in schema.routes {
            guard let binding = RESTBindings.all[route.method], let input = schema.messages[route.input] else { continue }
            var op: [String: JSONValue] = [
                "operationId": .string(route.name), "tags": .array([.string(short(route.service))]),
                "summary": .string(route.comment.isEmpty ? route.name : route.comment),
                "security": .array([.object(["bearer": .array([])])]),
            ]
            var parameters: [JSONValue] = []
            for name in route.pathFields {
                guard let f = input.field(name) else { continue }
                var p: [String: JSONValue] = ["name": .string(f.name), "in": .string("path"), "required": .bool(true), "schema": .object(["type": .string("string")])]
                // What the service accepts, so that fuzzers reach past validation.
                if f.name == "username" || f.name == "collaborator_username" {
                    p["schema"] = .object(["type": .string("string"), "pattern": .string("^[a-z_][a-z0-9_-]{0,31}$")])
                } else if f.name == "name" {
                    p["schema"] = .object(["type": .string("string"), "pattern": .string("^[a-z0-9][a-z0-9.-]{0,62}$")])
                }
                // An example fuzzers use: the fuzz test makes an environment of that name.
                if f.name == "username" { p["example"] = .string("alice") }
                parameters.append(.object(p))
            }
            if route.body == "*" {
                let name = short(route.input)
                components[name] = object(input, schema, request: true, excluding: Set(route.pathFields))
                for f in input.fields {
                    if case .message(let m) = f.kind { inputs(m) }
                }
                op["requestBody"] = .object(["required": .bool(false), "content": .object(["application/json": .object(["schema": ref(name)])])])
            } else {
                for f in input.fields where !route.pathFields.contains(f.name) && !f.repeated && f.mapValue == nil {
                    var p: [String: JSONValue] = ["name": .string(f.jsonName), "in": .string("query"), "required": .bool(false),
                                                  "schema": self.schema(ProtoSchema.Field(name: f.name, jsonName: f.jsonName, kind: f.kind, repeated: false, mapValue: nil,
                                                                                          hasPresence: false, comment: ""), schema, request: false)]
                    if !f.comment.isEmpty { p["description"] = .string(f.comment) }
                    parameters.append(.object(p))
                }
            }
            if !parameters.isEmpty { op["parameters"] = .array(parameters) }
            var responses = errors
            func success(_ type: String, _ description: String) -> JSONValue {
                reach(type)
                return .object(["description": .string(description), "content": .object(["application/json": .object(["schema": ref(short(type))])])])
            }
            if route.method.hasSuffix("/CreateContainer") {
                responses["201"] = success("containarium.v1.Container", "Created: the environment")
                responses["202"] = success("containarium.v1.Operation", "Accepted (async): the operation to poll, also in Location")
            } else {
                responses[String(binding.status.code)] = success(route.output, "OK")
            }
            op["responses"] = .object(responses)
            paths[route.path, default: [:]][route.verb.lowercased()] = .object(op)
        }
        for name in answerTypes {
            guard let t = schema.messages[name] else { continue }
            components[component(name, request: false)] = object(t, schema, request: false)
        }
        for name in inputTypes {
            guard let t = schema.messages[name] else { continue }
            components[component(name, request: true)] = object(t, schema, request: true)
        }
        // The routes that are not RPCs.
        paths["/healthz"] = ["get": .object([
            "summary": .string("Liveness (no authentication)"), "tags": .array([.string("health")]), "security": .array([]),
            "responses": .object(["200": .object(["description": .string("OK"), "content": .object(["application/json": .object(["schema": .object([
                "type": .string("object"), "properties": .object(["status": .object(["type": .string("string")])]),
            ])])])])]),
        ])]
        let username: JSONValue = .object(["name": .string("username"), "in": .string("path"), "required": .bool(true),
                                           "schema": .object(["type": .string("string")]), "example": .string("alice")])
        func webSocket(_ summary: String, _ extra: [JSONValue]) -> JSONValue {
            var responses = errors
            responses["101"] = .object(["description": .string("Switching Protocols (WebSocket)")])
            return .object(["summary": .string(summary), "tags": .array([.string("ContainerService")]), "parameters": .array([username] + extra),
                            "security": .array([.object(["bearer": .array([])])]), "responses": .object(responses)])
        }
        let size: (String) -> JSONValue = { n in
            .object(["name": .string(n), "in": .string("query"), "required": .bool(false),
                     "schema": .object(["type": .string("integer"), "minimum": .number(1), "maximum": .number(1000)])])
        }
        paths["/v1/containers/{username}/terminal"] = ["get": webSocket(
            "Browser terminal: a WebSocket (Sec-WebSocket-Protocol: containarium.v1, bearer.<token>); binary frames carry terminal bytes, "
                + "text frames JSON control ({type: resize, cols, rows}; {type: exit|error}). A plain GET is authorized, then answered 400.",
            [size("cols"), size("rows")])]
        paths["/v1/containers/{username}/vnc"] = ["get": webSocket(
            "A VM's screen: a WebSocket (Sec-WebSocket-Protocol: containarium.v1, bearer.<token>) whose binary frames carry the VM's VNC "
                + "(RFB) stream both ways, for noVNC. A plain GET is authorized, then answered 400.", [])]
        paths["/v1/events"] = ["get": .object([
            "summary": .string("Server-Sent Events: progress, state changes, audit (filtered by access). Each event's data is JSON: {id, type, username, time, data}."),
            "tags": .array([.string("events")]), "security": .array([.object(["bearer": .array([])])]),
            "responses": .object(["200": .object(["description": .string("text/event-stream"), "content": .object([
                "text/event-stream": .object(["schema": .object(["type": .string("string")])]),
            ])]), "401": error("Missing, expired or invalid token")]),
        ])]
        return .object([
            "openapi": .string("3.0.3"),
            "info": .object([
                "title": .string("Containarium REST API"), "version": .string(ContainariumVersionInfo.api),
                "description": .string(
                    "Made from proto/containarium/v1 (google.api.http routes): each route's JSON is the proto3 JSON mapping of its RPC's messages "
                        + "(camelCase; null is a field left out; answers carry every field, 64-bit numbers as JSON numbers). Every route except "
                        + "/healthz needs `Authorization: Bearer <token>` (`containarium token generate`). Errors are {\"error\": {\"code\", \"message\"}} "
                        + "with a stable code."),
            ]),
            "servers": .array([.object(["url": .string("/")])]),
            "security": .array([.object(["bearer": .array([])])]),
            "components": .object([
                "securitySchemes": .object(["bearer": .object(["type": .string("http"), "scheme": .string("bearer"), "bearerFormat": .string("JWT")])]),
                "schemas": .object(components),
            ]),
            "paths": .object(paths.mapValues { .object($0) }),
        ])
    }
}

enum ContainariumVersionInfo {
    static let api = "1.0.0"
}
