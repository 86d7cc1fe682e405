import ContainariumCore
import Foundation
import TestSupport
import Testing

/// The scanner plugins' manifests follow docs/schemas/manifest.schema.json (checked with
/// Python's jsonschema) and tell the truth the loader checks: id, library, scanner/1 only.
@Suite("Scanner plugins: manifests")
struct ManifestTests {
    @Test("clamav and trivy manifests conform to the manifest schema", arguments: [
        ("Plugins/ClamAV/plugin.json", "clamav", "libClamAVScanner.so"),
        ("Plugins/Trivy/plugin.json", "trivy", "libTrivyScanner.so"),
    ])
    func manifest(path: String, id: String, library: String) throws {
        let file = TestEnv.repoRoot.appendingPathComponent(path)
        let r = try Run.run(
            "/usr/bin/env",
            ["python3", "-c", "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))",
             TestEnv.repoRoot.appendingPathComponent("docs/schemas/manifest.schema.json").path, file.path])
        #expect(r.status == 0, "\(path): \(r.output)")
        let manifest = try WireJSON.decode(JSONValue.self, from: Data(contentsOf: file))
        #expect(manifest["id"]?.stringValue == id)
        #expect(manifest["library"]?.stringValue == library)
        #expect(manifest["capabilities"] == .array([.string("scanner/1")]))
        #expect(manifest["defaultEnabled"] == .bool(false))
    }
}
