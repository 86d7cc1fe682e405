import ContainariumCore
import Foundation
import TestSupport
import Testing

/// The API of proto/ with stock clients only: Python's grpcio with stubs that grpcio-tools
/// generates from proto/ while the test runs, grpcio-reflection, and REST with the same
/// request as proto3 JSON.
@Suite("The protobuf API from a stock Python gRPC client, over mTLS, on real Incus", .needsIncus, .serialized)
struct ProtoAPITests {
    @Test("reflection lists the services; create, get, list, exec and delete; errors carry their status codes; REST with the same proto3 JSON agrees")
    func stockPythonClient() throws {
        let box = try IncusEnv.Sandbox(ownProject: true)
        defer { box.cleanup() }
        let certs = box.dir.appendingPathComponent("certs")
        let gen = try Run.run(TestEnv.cliPath, ["cert", "generate", "--server-ip", "127.0.0.1", "--output-dir", certs.path])
        #expect(gen.status == 0, "\(gen.output)")
        let d = try DaemonProcess(sandbox: box, extraArgs: ["--mtls", "--certs-dir", certs.path])
        try d.start()
        defer { d.stop() }
        let admin = try d.token("admin", roles: "admin")
        let user = "pg\(TestEnv.suffix())"
        defer {
            box.forceDelete("\(user)-container")
            box.forceDelete("\(user)r-container")
            box.forceDelete("\(user)x-container")
        }
        let script = TestEnv.repoRoot.appendingPathComponent("Tests/python/grpc_stock_client.py").path
        let run = try Run.run("/usr/bin/env", [
            "python3", script, "--proto", TestEnv.repoRoot.appendingPathComponent("proto").path, "--target", "127.0.0.1:\(d.grpcPort)",
            "--certs", certs.path, "--user", user, "--key", box.key.publicKey.path, "--rest", d.base, "--token", admin,
        ], timeout: 900)
        try #require(run.status == 0, "\(run.output)")
        let seen = try #require(try? JSONDecoder().decode(JSONValue.self, from: Data(run.stdout.utf8)), "\(run.output)")

        let services = Set(seen["services"]?.items?.compactMap(\.stringValue) ?? [])
        for s in ["containarium.v1.ContainerService", "containarium.v1.SystemService", "containarium.v1.ClusterService",
                  "containarium.v1.AuditService", "containarium.v1.OperationService", "grpc.health.v1.Health",
                  "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"] {
            #expect(services.contains(s), "reflection (v1alpha) lists \(s): \(services)")
        }
        #expect(Set(seen["services_v1"]?.items?.compactMap(\.stringValue) ?? []) == services, "v1 and v1alpha agree")
        #expect(seen["reflected_file"]?.stringValue == "containarium/v1/container.proto")

        #expect(seen["created"]?["name"]?.stringValue == "\(user)-container")
        #expect(seen["created"]?["state"]?.stringValue == "CONTAINER_STATE_RUNNING")
        #expect(seen["created"]?["ipv4"]?.items?.isEmpty == false, "\(seen)")
        #expect(seen["got"]?["memory"]?.stringValue?.isEmpty == false && seen["got"]?["type"]?.stringValue == "ENVIRONMENT_TYPE_CONTAINER")
        #expect(seen["got"]?["backend"]?.stringValue == "incus-lxc")
        #expect(seen["listed"]?.items?.compactMap(\.stringValue).contains(user) == true)
        #expect(seen["exec"]?["exit_code"]?.number == 0 && seen["exec"]?["stdout"]?.stringValue == user, "runs as the user: \(seen)")
        #expect(seen["exec_false"]?.number == 1)

        #expect(seen["errors"]?["missing"]?.stringValue == "NOT_FOUND")
        #expect(seen["errors"]?["bad_name"]?.stringValue == "INVALID_ARGUMENT")
        #expect(seen["errors"]?["duplicate"]?.stringValue == "ALREADY_EXISTS")
        #expect(seen["errors"]?["bad_size"]?.stringValue == "INVALID_ARGUMENT")

        // The same request as proto3 JSON through REST: created the same way, seen the same way.
        #expect(seen["rest_status"]?.number == 201, "\(seen)")
        #expect(seen["rest_body"]?["sshKeys"]?.items?.count == 1 && seen["rest_body"]?["osType"]?.stringValue == "OS_TYPE_DEBIAN_12",
                "camelCase proto3 JSON: \(seen["rest_body"].map { "\($0)" } ?? "-")")
        for field in ["name", "state", "memory", "ipv4", "type", "created"] {
            let pair = seen["rest_vs_grpc"]?[field]?.items ?? []
            #expect(pair.count == 2 && pair[0] == pair[1], "\(field): REST and gRPC answer alike: \(pair)")
        }
        // List, exec and delete through REST, each answer parsed by the stock proto3 JSON parser.
        #expect(seen["rest_listed"]?.items?.compactMap(\.stringValue).contains(user + "r") == true, "\(seen)")
        #expect(seen["rest_exec"]?["status"]?.number == 200 && seen["rest_exec"]?["exit_code"]?.number == 0
                && seen["rest_exec"]?["stdout"]?.stringValue == user + "r", "\(seen)")
        #expect(seen["rest_exec_false"]?.number == 1)
        // The same mistakes, the same codes: gRPC's status and REST's HTTP status and error code.
        for (label, grpc, http, code) in [("missing", "NOT_FOUND", 404, "not_found"), ("bad_name", "INVALID_ARGUMENT", 400, "invalid_argument"),
                                          ("duplicate", "ALREADY_EXISTS", 409, "already_exists"), ("bad_size", "INVALID_ARGUMENT", 400, "invalid_argument")] {
            #expect(seen["errors"]?[label]?.stringValue == grpc)
            let rest = seen["rest_errors"]?[label]?.items ?? []
            #expect(rest.count == 2 && rest[0].number == Double(http) && rest[1].stringValue == code, "\(label) through REST: \(rest)")
        }
        #expect(seen["rest_deleted"]?.number == 200 && seen["rest_after_delete"]?.number == 404, "\(seen)")
        #expect(seen["after_delete"]?.stringValue == "NOT_FOUND")

        // Refusals are audited like every other interface's.
        let audit = try HTTP.call("GET", d.base + "/v1/audit?action=container.create&target=\(user)", token: admin).json?["entries"]?.items ?? []
        #expect(audit.contains { $0["interface"]?.stringValue == "grpc" && $0["result"]?.stringValue == "ok" && $0["actor"]?.stringValue == "admin" }, "the client certificate's CN is the actor")
        #expect(audit.contains { $0["result"]?.stringValue == "already_exists" })
    }
}
