import ContainariumCore
@testable import ContainariumDaemon
import ContainariumProto
import Foundation
import Testing

/// REST is made from the contract: the routes, the strict decoding and the answers' shape come
/// from the descriptors of proto/ (google.api.http), and each route has its binding.
@Suite("REST from the protobuf contract")
struct ContractTests {
    @Test("every RPC the contract binds to HTTP has a REST binding and every binding a route; the document lists each route")
    func bindings() throws {
        let schema = ProtoSchema.shared
        let routed = Set(schema.routes.map(\.method)), bound = Set(RESTBindings.all.keys)
        #expect(routed.count >= 30, "\(routed.sorted())")
        #expect(routed == bound, "routes without a binding: \(routed.subtracting(bound).sorted()); bindings without a route: \(bound.subtracting(routed).sorted())")
        for route in schema.routes {
            #expect(schema.messages[route.input] != nil && schema.messages[route.output] != nil, "\(route.method)")
            for field in route.pathFields { #expect(schema.messages[route.input]?.field(field) != nil, "\(route.method): {\(field)} is a request field") }
            #expect(OpenAPI.document["paths"]?[route.path]?[route.verb.lowercased()] != nil, "\(route.verb) \(route.path) is in the OpenAPI document")
        }
        #expect(RESTAPI.routes.count == schema.routes.count + RESTAPI.streamRoutes.count)
    }

    @Test("a request is its message's JSON: unknown fields, wrong types, path fields in the body, bad query parameters are refused by name")
    func requests() throws {
        let schema = ProtoSchema.shared
        let create = try #require(schema.routes.first { $0.name == "CreateContainer" })
        let delete = try #require(schema.routes.first { $0.name == "DeleteContainer" })
        let resize = try #require(schema.routes.first { $0.name == "ResizeContainer" })
        func refusal(_ route: ProtoSchema.Route, path: [String: String] = [:], query: [String: String] = [:], _ body: String) -> String? {
            do {
                _ = try schema.requestObject(route, path: path, query: query, body: Data(body.utf8))
                return nil
            } catch {
                return error.code == .invalidArgument ? error.message : "not invalid_argument: \(error)"
            }
        }
        #expect(refusal(create, #"{"username": "a", "colour": "red"}"#)?.contains("unknown field 'colour'") == true)
        #expect(refusal(create, #"{"username": "a", "resources": {"gpu": "1"}}"#)?.contains("unknown field 'resources.gpu'") == true)
        #expect(refusal(create, #"{"username": 7}"#)?.contains("'username' must be a string") == true)
        #expect(refusal(create, #"{"username": "a", "osType": "OS_TYPE_PLAN9"}"#)?.contains("must be one of") == true)
        #expect(refusal(create, #"{"username": "a", "gpus": -1}"#)?.contains("'gpus' must be a whole number") == true)
        #expect(refusal(create, #"{"username": "a", "sshKeys": [null]}"#)?.contains("may not be null") == true)
        #expect(refusal(create, #"{"": null}"#)?.contains("unknown field ''") == true, "an unknown field is refused even when null")
        #expect(refusal(resize, path: ["username": "a"], #"{"username": "b"}"#)?.contains("comes from the path") == true)
        #expect(refusal(delete, path: ["username": "a"], query: ["force": "yes"], "")?.contains("is not a boolean") == true)
        #expect(refusal(delete, path: ["username": "a"], query: ["forse": "true"], "")?.contains("unknown query parameter 'forse'") == true)
        #expect(refusal(delete, path: ["username": "a"], #"{"force": true}"#)?.contains("takes no body") == true)

        // Accepted: nulls are fields left out, both field names work, the path and query fill the message.
        let object = try schema.requestObject(create, path: [:], query: [:], body: Data(#"{"username": "a", "ssh_keys": ["k"], "image": null, "resources": {"memory": "1GB"}}"#.utf8))
        let message = try ProtoSchema.decode(Containarium_V1_CreateContainerRequest.self, object)
        #expect(message.username == "a" && message.sshKeys == ["k"] && message.image.isEmpty && message.resources.memory == "1GB")
        let forced = try ProtoSchema.decode(Containarium_V1_DeleteContainerRequest.self,
                                            try schema.requestObject(delete, path: ["username": "a"], query: ["force": "false"], body: Data()))
        #expect(forced.username == "a" && forced.hasForce && !forced.force)
    }

    @Test("an answer carries every field: defaults for unset scalars, null for unset messages and optionals, 64-bit numbers as numbers")
    func answers() throws {
        var container = Containarium_V1_Container()
        container.name = "a-container"
        container.usage.memoryBytes = 5_000_000_000
        let json = try ProtoSchema.shared.answer(container)
        #expect(json["name"] == .string("a-container") && json["owner"] == .string("") && json["autostart"] == .bool(false))
        #expect(json["labels"] == .object([:]) && json["gpus"] == .array([]) && json["createdAt"] == .null)
        #expect(json["type"] == .string("ENVIRONMENT_TYPE_UNSPECIFIED") && json["state"] == .string("CONTAINER_STATE_UNSPECIFIED"))
        #expect(json["usage"]?["memoryBytes"] == .number(5_000_000_000) && json["usage"]?["processes"] == .number(0))
        #expect(json["resources"] == .null, "an unset message is null")
        container.usage.cpuNanoseconds = 1 << 60
        let big = try ProtoSchema.shared.answer(container)
        #expect(big["usage"]?["cpuNanoseconds"] == .string("1152921504606846976"), "beyond 2^53 a 64-bit number stays the mapping's decimal string")
        #expect(big["usage"]?["memoryBytes"] == .number(5_000_000_000))
        let metrics = try ProtoSchema.shared.answer(Containarium_V1_ContainerMetrics())
        #expect(metrics["cpuPercent"] == .null, "an unset optional is null")
    }
}
