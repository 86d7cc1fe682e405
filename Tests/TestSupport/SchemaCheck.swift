public import Foundation

/// Validates JSON against the published schemas in docs/schemas with Python's `jsonschema`
/// (an independent implementation; scripts/test.sh installs it when missing).
public enum SchemaCheck {
    /// Returns nil when `json` conforms to `$defs/<definition>` of `docs/schemas/<file>`,
    /// else the validator's message.
    public static func violations(of json: Data, file: String, definition: String) throws -> String? {
        let dir = try TestEnv.tempDir("schema")
        defer { TestEnv.cleanup(dir) }
        let doc = dir.appendingPathComponent("doc.json")
        try json.write(to: doc)
        let script = """
            import json, sys, jsonschema
            schema = json.load(open(sys.argv[1]))
            wrapper = {"$schema": schema.get("$schema"), "$defs": schema["$defs"], "$ref": "#/$defs/" + sys.argv[2]}
            jsonschema.Draft202012Validator.check_schema(wrapper)
            errors = sorted(jsonschema.Draft202012Validator(wrapper).iter_errors(json.load(open(sys.argv[3]))), key=str)
            print("\\n".join(e.message + " at " + "/".join(map(str, e.absolute_path)) for e in errors))
            """
        let schema = TestEnv.repoRoot.appendingPathComponent("docs/schemas/\(file)").path
        let r = try Run.run("/usr/bin/env", ["python3", "-c", script, schema, definition, doc.path])
        guard r.status == 0 else { throw TestFailure("schema check could not run: \(r.output)") }
        let out = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return out.isEmpty ? nil : out
    }
}
