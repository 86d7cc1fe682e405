public import ContainariumCore
public import Foundation

/// Strict configuration decoding shared by the scanner plugins: a JSON object whose keys are
/// all known (a misspelt key is an error at initialize, not a silently ignored setting).
public enum ScannerConfig {
    /// Decode `T` from `data` after checking that `data` is a JSON object whose keys are all
    /// in `allowed`. Errors are `invalid_argument`, prefixed "<plugin> configuration".
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, plugin: String, allowed: Set<String>) throws(ContainariumError) -> T {
        let raw: JSONValue
        do throws(ContainariumError) {
            raw = try WireJSON.decode(JSONValue.self, from: data)
        } catch {
            throw .invalid("\(plugin) configuration is not valid JSON: \(error.message)")
        }
        guard let object = raw.objectValue else { throw .invalid("\(plugin) configuration must be a JSON object") }
        let unknown = object.keys.filter { !allowed.contains($0) }.sorted()
        if !unknown.isEmpty {
            let s = unknown.count == 1 ? "" : "s"
            throw .invalid("\(plugin) configuration: unknown key\(s) \(unknown.map { "'\($0)'" }.joined(separator: ", ")) (known: \(allowed.sorted().joined(separator: ", ")))")
        }
        do throws(ContainariumError) {
            return try WireJSON.decode(T.self, from: data)
        } catch {
            throw .invalid("\(plugin) configuration: \(error.message)")
        }
    }

    /// An absolute path without NUL bytes, or an `invalid_argument` naming the key.
    public static func absolutePath(_ value: String, key: String, plugin: String) throws(ContainariumError) -> String {
        guard value.hasPrefix("/"), !value.utf8.contains(0) else {
            throw .invalid("\(plugin) configuration: \(key) must be an absolute path, not '\(value)'")
        }
        return value
    }

    /// An integer inside `range`, or an `invalid_argument` naming the key and the range.
    public static func bounded<I: BinaryInteger>(_ value: I, key: String, plugin: String, _ range: ClosedRange<I>) throws(ContainariumError) -> I {
        guard range.contains(value) else {
            throw .invalid("\(plugin) configuration: \(key) must be between \(range.lowerBound) and \(range.upperBound), not \(value)")
        }
        return value
    }
}
