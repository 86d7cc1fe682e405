import ContainariumCore
import Foundation
import TestSupport
import Testing

/// The MCP server through the official Python client (PyPI `mcp`), over streamable HTTP at the
/// daemon's /mcp and over stdio (`containarium mcp`), against real Incus environments.
enum MCPClient {
    static let available = (try? Run.run("/usr/bin/env", ["python3", "-c", "import mcp, jsonschema"]))?.status == 0
}

@Suite("MCP: the Python MCP client over HTTP and stdio, on real Incus", .needsIncus, .serialized,
       .enabled(if: MCPClient.available, "the Python mcp package is not installed (scripts/test.sh installs it)"))
struct MCPTests {
    static var script: String { TestEnv.repoRoot.appendingPathComponent("Tests/Helpers/mcp_session.py").path }

    /// Run `steps` in one MCP session; the outcome of each.
    static func session(_ mode: [String], _ steps: [[String: Any]]) throws -> [JSONValue] {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: steps), as: UTF8.self)
        let r = try Run.run("/usr/bin/env", ["python3", script] + mode + [json], timeout: 600)
        guard r.status == 0, let out = try? WireJSON.decode(JSONValue.self, from: Data(r.stdout.utf8)), let items = out.items else {
            throw TestFailure("mcp_session.py \(mode.first ?? "") failed: \(r.output)")
        }
        return items
    }

    @Test("over HTTP: tools listed with valid schemas and annotations; a real environment created with progress, `id` run in it, deleted; another user's token sees and touches nothing; bad arguments are MCP errors; resources and prompts")
    func overHTTP() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600"])
        try d.start()
        defer { d.stop() }
        let sfx = TestEnv.suffix()
        let alice = "ma\(sfx)", bob = "mb\(sfx)"
        defer { box.forceDelete("\(alice)-container") }
        let aliceT = try d.token(alice), bobT = try d.token(bob)
        let key = box.key.publicText.trimmingCharacters(in: .whitespacesAndNewlines)
        let url = d.base + "/mcp"
        let a = try Self.session(["http", url, aliceT], [
            ["op": "list_tools"],
            ["op": "schemas", "samples": [
                "create_container": [["args": ["username": alice, "sshKeys": [key]], "valid": true],
                                     ["args": ["username": alice, "nonsense": 1], "valid": false]],
                "exec": [["args": ["username": alice, "command": ["id"]], "valid": true]],
            ]],
            ["op": "call", "tool": "create_container", "args": ["username": alice, "sshKeys": [key]], "progress": true],
            ["op": "call", "tool": "exec", "args": ["username": alice, "command": ["id", "-un"], "asUser": true]],
            ["op": "call", "tool": "create_container", "args": ["username": alice, "cpu_cores": "lots"]],
            ["op": "call", "tool": "get_container", "args": ["username": 42]],
            ["op": "call", "tool": "no_such_tool", "args": [:]],
            ["op": "list_resources"],
            ["op": "read", "uri": "containarium://environments/\(alice)/ssh-config"],
            ["op": "read", "uri": "containarium://catalog"],
            ["op": "list_prompts"],
            ["op": "prompt", "name": "new-developer", "args": ["username": "newdev", "ssh_public_key": key]],
        ])
        try #require(a.count == 12, "\(a)")
        // Tools: the CLI's verbs, with destructive and read-only marked.
        let tools = a[0]["tools"]?.items ?? []
        let names = Set(tools.compactMap { $0["name"]?.stringValue })
        for n in ["list_containers", "get_container", "create_container", "delete_container", "start_container", "stop_container", "restart_container",
                  "resize_container", "exec", "install_stack", "add_ssh_key", "add_collaborator", "get_system_info", "list_nodes", "list_plugins",
                  "explain_schedule", "list_audit", "scan_clam_av", "create_alert", "list_alerts"] {
            #expect(names.contains(n), "no tool \(n) in \(names.sorted())")
        }
        func annotations(_ name: String) -> JSONValue? { tools.first { $0["name"]?.stringValue == name }?["annotations"] }
        #expect(annotations("delete_container")?["destructiveHint"] == .bool(true))
        #expect(annotations("list_containers")?["readOnlyHint"] == .bool(true))
        // Every input schema is valid JSON Schema, and it accepts and refuses as the contract does.
        #expect(a[1]["invalid"]?.items?.isEmpty == true, "\(a[1])")
        #expect((a[1]["checked"]?.number ?? 0) == Double(tools.count))
        for s in a[1]["samples"]?.items ?? [] { #expect(s["valid"] == s["want"], "\(s)") }
        // The create ran for real, reporting its steps as progress.
        #expect(a[2]["isError"] == .bool(false), "\(a[2])")
        #expect((a[2]["progress"]?.items?.count ?? 0) >= 2, "progress notifications: \(a[2])")
        #expect(try box.exists("\(alice)-container"))
        #expect(a[3]["isError"] == .bool(false) && a[3]["structured"]?["stdout"]?.stringValue?.contains(alice) == true, "\(a[3])")
        // Bad arguments: MCP errors (invalid params) naming what is wrong; nothing made.
        #expect(a[4]["error"]?["code"]?.number == -32602 && a[4]["error"]?["message"]?.stringValue?.contains("cpu_cores") == true, "\(a[4])")
        #expect(a[5]["error"]?["code"]?.number == -32602, "\(a[5])")
        #expect(a[6]["error"]?["code"]?.number == -32602 && a[6]["error"]?["message"]?.stringValue?.contains("no_such_tool") == true, "\(a[6])")
        // Resources: hers, the catalog; prompts.
        let uris = Set((a[7]["resources"]?.items ?? []).compactMap { $0["uri"]?.stringValue })
        #expect(uris.contains("containarium://environments/\(alice)") && uris.contains("containarium://catalog"), "\(uris)")
        #expect(a[8]["contents"]?.items?.first?["text"]?.stringValue?.contains("Host") == true, "\(a[8])")
        #expect(a[9]["contents"]?.items?.first?["text"]?.stringValue?.contains("debian") == true, "\(a[9])")
        #expect(Set((a[10]["prompts"]?.items ?? []).compactMap { $0["name"]?.stringValue }) == ["new-developer", "diagnose-environment"])
        #expect(a[11]["messages"]?.items?.first?.stringValue?.contains("create_container") == true, "\(a[11])")

        // Bob sees none of it and touches nothing.
        let b = try Self.session(["http", url, bobT], [
            ["op": "call", "tool": "get_container", "args": ["username": alice]],
            ["op": "call", "tool": "exec", "args": ["username": alice, "command": ["id"], "asUser": true]],
            ["op": "call", "tool": "delete_container", "args": ["username": alice]],
            ["op": "call", "tool": "list_containers", "args": [:]],
            ["op": "list_resources"],
            ["op": "read", "uri": "containarium://environments/\(alice)"],
        ])
        for i in 0..<3 {
            #expect(b[i]["isError"] == .bool(true) && b[i]["structured"]?["error"]?["code"]?.stringValue == "permission_denied", "\(b[i])")
        }
        let listed: String = b[3]["text"]?.stringValue ?? ""
        #expect(!listed.contains(alice), "\(b[3])")
        let bobsResources: [JSONValue] = b[4]["resources"]?.items ?? []
        let seesAlice = bobsResources.contains { r in r["uri"]?.stringValue?.contains(alice) == true }
        #expect(!seesAlice, "\(b[4])")
        #expect(b[5]["error"] != nil, "\(b[5])")
        #expect(try box.exists("\(alice)-container"), "bob's delete did nothing")
        // No token, a bad token: refused before any MCP.
        let noToken = try HTTP.call("POST", url, body: #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
                                    headers: ["Accept: application/json, text/event-stream"])
        #expect(noToken.status == 401)
        #expect(try HTTP.call("POST", url, token: try d.token("prometheus", roles: "metrics"), body: "{}", headers: ["Accept: application/json, text/event-stream"]).status == 403)

        // Alice deletes it.
        let gone = try Self.session(["http", url, aliceT], [["op": "call", "tool": "delete_container", "args": ["username": alice]]])
        #expect(gone.first?["isError"] == .bool(false), "\(gone)")
        #expect(try !box.exists("\(alice)-container"))
        // Every call was audited with the MCP interface.
        let admin = try d.token("admin", roles: "admin")
        let audit = try HTTP.call("GET", d.base + "/v1/audit?limit=200", token: admin).json?["entries"]?.items ?? []
        #expect(audit.contains { $0["action"]?.stringValue == "container.create" && $0["interface"]?.stringValue == "mcp" }, "\(audit.prefix(5))")
        let refused = audit.contains { e in
            e["action"]?.stringValue == "container.delete" && e["interface"]?.stringValue == "mcp" && e["actor"]?.stringValue == bob && e["result"]?.stringValue == "permission_denied"
        }
        #expect(refused, "bob's refused delete is audited")
    }

    @Test("over stdio (`containarium mcp`, relayed to the daemon): tools, a real create with progress, exec, a bad argument, another user refused, delete; a cancelled create leaves nothing behind")
    func overStdio() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--reconcile-interval", "3600"])
        try d.start()
        defer { d.stop() }
        let sfx = TestEnv.suffix()
        let carol = "mc\(sfx)", dave = "md\(sfx)", erin = "me\(sfx)"
        defer { [carol, erin].forEach { box.forceDelete("\($0)-container") } }
        let carolT = try d.token(carol), daveT = try d.token(dave), erinT = try d.token(erin)
        let key = box.key.publicText.trimmingCharacters(in: .whitespacesAndNewlines)
        let c = try Self.session(["stdio", TestEnv.cliPath, d.base, carolT], [
            ["op": "list_tools"],
            ["op": "call", "tool": "create_container", "args": ["username": carol, "sshKeys": [key]], "progress": true],
            ["op": "call", "tool": "exec", "args": ["username": carol, "command": ["id", "-un"], "asUser": true]],
            ["op": "call", "tool": "delete_container", "args": ["username": carol, "force": "yes"]],
        ])
        try #require(c.count == 4, "\(c)")
        #expect((c[0]["tools"]?.items?.count ?? 0) >= 40, "\(c[0])")
        #expect(c[1]["isError"] == .bool(false), "\(c[1])")
        #expect((c[1]["progress"]?.items?.count ?? 0) >= 2, "progress through the relay: \(c[1])")
        #expect(c[2]["structured"]?["stdout"]?.stringValue?.contains(carol) == true, "\(c[2])")
        #expect(c[3]["error"]?["code"]?.number == -32602 && c[3]["error"]?["message"]?.stringValue?.contains("force") == true, "\(c[3])")
        // Dave, through his own stdio session, cannot touch it.
        let dd = try Self.session(["stdio", TestEnv.cliPath, d.base, daveT], [
            ["op": "call", "tool": "delete_container", "args": ["username": carol]],
        ])
        #expect(dd.first?["structured"]?["error"]?["code"]?.stringValue == "permission_denied", "\(dd)")
        #expect(try box.exists("\(carol)-container"))
        let gone = try Self.session(["stdio", TestEnv.cliPath, d.base, carolT], [["op": "call", "tool": "delete_container", "args": ["username": carol]]])
        #expect(gone.first?["isError"] == .bool(false), "\(gone)")
        #expect(try !box.exists("\(carol)-container"))
        // A bad token: the relay says why, as a JSON-RPC error, and stops.
        let bad = try Run.run("/usr/bin/env", ["python3", Self.script, "stdio", TestEnv.cliPath, d.base, "not-a-token", #"[{"op": "list_tools"}]"#], timeout: 60)
        #expect(bad.status != 0 && bad.output.contains("401"), "\(bad.output)")

        // Cancelled after its first step: the create rolls back; nothing is left.
        let x = try Self.session(["http", d.base + "/mcp", erinT], [
            ["op": "cancel", "tool": "create_container", "args": ["username": erin, "sshKeys": [key]]],
        ])
        #expect(x.first?["cancelled"] == .bool(true) && (x.first?["progress"]?.items?.count ?? 0) >= 1, "\(x)")
        try eventually("the cancelled create is rolled back", within: 120) { try !box.exists("\(erin)-container") }
        let admin = try d.token("admin", roles: "admin")
        let ops = try HTTP.call("GET", d.base + "/v1/audit?action=container.create&limit=50", token: admin).json?["entries"]?.items ?? []
        #expect(ops.contains { $0["target"]?.stringValue == erin && $0["result"]?.stringValue == "cancelled" }, "\(ops.prefix(3))")
    }
}
