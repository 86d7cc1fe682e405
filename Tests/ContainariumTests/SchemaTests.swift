import ContainariumCore
import Foundation
import TestSupport
import Testing

/// The JSON the host and Swift plugins exchange conforms to the published schemas, and the
/// schemas reject what they should.
@Suite("Published JSON schemas")
struct SchemaTests {
    static let info = InstanceInfo(
        name: "alice-container", state: .running, image: "containarium/debian12", ipv4: ["10.0.0.2"], cpuLimit: "0-1",
        memoryLimitBytes: 1 << 30, diskLimitBytes: 10 << 30, cpuUsageNanoseconds: 5, memoryUsageBytes: 7, diskUsageBytes: 9,
        processes: 3, startedAt: Date(timeIntervalSince1970: 1_800_000_000), createdAt: Date(timeIntervalSince1970: 1_700_000_000),
        autostart: true, nesting: true, labels: ["owner": "alice"], backend: "incus-lxc", node: "n1", sshHostKeys: ["ssh-ed25519 AAAA"])

    @Test("wire models conform to instances/1")
    func instances() throws {
        let create = InstanceCreateRequest(
            name: "alice-container", image: "img", cpu: "2", memoryBytes: 1 << 30, diskBytes: 1 << 33, autostart: false, nesting: true,
            labels: ["a": "b"], account: AccountSpec(name: "alice", sshKeys: ["ssh-ed25519 AAAA"]))
        #expect(try SchemaCheck.violations(of: WireJSON.encode(create), file: "instances-1.schema.json", definition: "InstanceCreateRequest") == nil)
        #expect(try SchemaCheck.violations(of: WireJSON.encode(Self.info), file: "instances-1.schema.json", definition: "InstanceInfo") == nil)
        #expect(try SchemaCheck.violations(of: WireJSON.encode(InstanceList(instances: [Self.info])), file: "instances-1.schema.json", definition: "InstanceList") == nil)
        #expect(try SchemaCheck.violations(of: WireJSON.encode(ResizeRequest(name: "x", cpu: "0,2", diskBytes: 5)), file: "instances-1.schema.json", definition: "ResizeRequest") == nil)
        #expect(try SchemaCheck.violations(of: WireJSON.encode(ExecRequest(name: "x", command: ["id"])), file: "instances-1.schema.json", definition: "ExecRequest") == nil)
        #expect(try SchemaCheck.violations(of: WireJSON.encode(ExecResult(exitCode: 0, stdout: "", stderr: "")), file: "instances-1.schema.json", definition: "ExecResult") == nil)
        let cap = NodeCapacity(
            node: "n", cpus: 2, memoryTotalBytes: 1, memoryUsedBytes: 1, diskTotalBytes: 1, diskUsedBytes: 1,
            pool: StoragePoolCapacity(name: "default", driver: "btrfs", totalBytes: 1, usedBytes: 1), instances: 1, runningInstances: 1, backendVersion: "6.0.4")
        #expect(try SchemaCheck.violations(of: WireJSON.encode(cap), file: "instances-1.schema.json", definition: "NodeCapacity") == nil)
        let progress = ProgressEvent(operation: 7, instance: "x", step: 1, total: 5, message: "Creating")
        #expect(try SchemaCheck.violations(of: WireJSON.encode(progress), file: "common.schema.json", definition: "ProgressEvent") == nil)
        #expect(try SchemaCheck.violations(of: WireJSON.encode(HealthReport(status: "ok")), file: "common.schema.json", definition: "Health") == nil)
    }

    @Test("credentials/1: the wire model conforms, and an answer without a password or with an unknown protocol does not")
    func credentials() throws {
        let c = InstanceCredentials(username: "Administrator", password: "s3cret-Pw", protocol: "rdp")
        #expect(try SchemaCheck.violations(of: WireJSON.encode(c), file: "credentials-1.schema.json", definition: "Credentials") == nil)
        #expect(try SchemaCheck.violations(of: WireJSON.encode(InstanceRef(name: "winnie-container")), file: "credentials-1.schema.json", definition: "InstanceRef") == nil)
        #expect(try SchemaCheck.violations(of: Data(#"{"username": "Administrator"}"#.utf8), file: "credentials-1.schema.json", definition: "Credentials") != nil)
        #expect(try SchemaCheck.violations(of: Data(#"{"username": "a", "password": "b", "protocol": "telnet"}"#.utf8), file: "credentials-1.schema.json", definition: "Credentials") != nil)
        // Its description never carries the secret (logs and errors print it).
        #expect(!"\(c)".contains("s3cret-Pw") && "\(c)".contains("Administrator"))
    }

    @Test("the schemas reject malformed documents")
    func rejects() throws {
        let bad = Data(#"{"name":"x","type":"container","state":"Sleeping","ipv4":[],"autostart":true,"nesting":false,"labels":{}}"#.utf8)
        #expect(try SchemaCheck.violations(of: bad, file: "instances-1.schema.json", definition: "InstanceInfo")?.contains("Sleeping") == true)
        let noPath = Data(#"{"instance":"x"}"#.utf8)
        #expect(try SchemaCheck.violations(of: noPath, file: "scanner-1.schema.json", definition: "ScanRequest")?.contains("path") == true)
    }

    @Test("the example plugin's manifests conform to the manifest schema")
    func manifests() throws {
        for path in ["Plugins/IncusLXC/plugin.json", "Plugins/QemuWindows/plugin.json", "Plugins/ExampleScanner/plugin.json", "Plugins/NvidiaGPU/plugin.json"] {
            let data = try Data(contentsOf: TestEnv.repoRoot.appendingPathComponent(path))
            let r = try Run.run(
                "/usr/bin/env",
                ["python3", "-c", "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))",
                 TestEnv.repoRoot.appendingPathComponent("docs/schemas/manifest.schema.json").path,
                 TestEnv.repoRoot.appendingPathComponent(path).path])
            #expect(r.status == 0, "\(path): \(r.output)")
            #expect(try JSONSerialization.jsonObject(with: data) is [String: Any])
        }
        let bad = try TestEnv.tempDir("m")
        defer { TestEnv.cleanup(bad) }
        let f = bad.appendingPathComponent("plugin.json")
        try Data(#"{"id":"x","name":"x","version":"1","abi":"1","library":"a/b.so","capabilities":[]}"#.utf8).write(to: f)
        let r = try Run.run(
            "/usr/bin/env",
            ["python3", "-c", "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))",
             TestEnv.repoRoot.appendingPathComponent("docs/schemas/manifest.schema.json").path, f.path])
        #expect(r.status != 0, "a manifest with abi '1' and a library path must be refused by the schema")
        // An instance backend must say what it serves; other plugins must not.
        for (body, why) in [
            (#"{"id":"x","name":"x","version":"1","abi":"1.1","library":"x.so","capabilities":["instances/1"],"osTypes":["linux"]}"#, "instances/1 without kinds"),
            (#"{"id":"x","name":"x","version":"1","abi":"1.1","library":"x.so","capabilities":["instances/1"],"kinds":["LXC"],"osTypes":["linux"]}"#, "a kind in capitals"),
            (#"{"id":"x","name":"x","version":"1","abi":"1.1","library":"x.so","capabilities":["scanner/1"],"kinds":["lxc"]}"#, "kinds on a scanner"),
        ] {
            try Data(body.utf8).write(to: f)
            let refused = try Run.run(
                "/usr/bin/env",
                ["python3", "-c", "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))",
                 TestEnv.repoRoot.appendingPathComponent("docs/schemas/manifest.schema.json").path, f.path])
            #expect(refused.status != 0, "the schema must refuse \(why)")
        }
    }
}
