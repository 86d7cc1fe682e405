public import ContainariumCore
public import Foundation
import PluginHost

/// A software stack installed into an environment from the distribution's packages.
/// Stacks are data files (`<name>.json`) that operators can add to or override.
public struct Stack: Codable, Sendable, Equatable {
    public var name: String
    public var description: String
    /// Debian package names, installed with apt-get.
    public var packages: [String]
    /// argv run after installation; exit status 0 means the stack works.
    public var check: [String]
    /// argvs run, in order, after installation and before the check (as root, never through a
    /// shell unless the stack file itself names one): configuration the packages need here.
    public var setup: [[String]]?

    public func validate(source: String) throws(ContainariumError) {
        func bad(_ why: String) -> ContainariumError { .invalid("stack file \(source): \(why)") }
        guard !name.isEmpty, name.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }) else {
            throw bad("name '\(name)' must use a-z, 0-9 and '-'")
        }
        guard !packages.isEmpty else { throw bad("lists no packages") }
        for p in packages {
            // Debian policy: lowercase letters, digits, + - . ; at least two characters; starts alphanumeric.
            let ok = p.count >= 2 && p.utf8.first.map { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) } == true
                && p.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2B || $0 == 0x2D || $0 == 0x2E }
            guard ok else { throw bad("'\(p)' is not a valid Debian package name") }
        }
        guard !check.isEmpty else { throw bad("has no check command") }
        if let setup, setup.contains(where: \.isEmpty) { throw bad("has an empty setup command") }
    }
}

/// The stacks found in the stack search paths (the first file for a name wins).
public struct StackCatalog: Sendable {
    public var stacks: [String: Stack]
    public var problems: [String]

    public init(paths: [URL]) {
        var stacks: [String: Stack] = [:]
        var problems: [String] = []
        let fm = FileManager.default
        for dir in paths {
            guard let files = try? fm.contentsOfDirectory(atPath: dir.path) else { continue }
            for file in files.sorted() where file.hasSuffix(".json") {
                let url = dir.appendingPathComponent(file)
                // A stack's setup runs as root in every environment that installs it: only files
                // no one but root (or this user) can change are read.
                if let why = PluginTrust.problem(url.path) {
                    problems.append("stack file skipped: \(why)")
                    continue
                }
                do {
                    let data = try Data(contentsOf: url)
                    let stack = try WireJSON.decoder().decode(Stack.self, from: data)
                    try stack.validate(source: url.path)
                    if stacks[stack.name] == nil { stacks[stack.name] = stack }
                } catch let e as ContainariumError {
                    problems.append(e.message)
                } catch {
                    problems.append("stack file \(url.path): \(WireJSON.describe(error))")
                }
            }
        }
        self.stacks = stacks
        self.problems = problems
    }

    public func stack(_ name: String) throws(ContainariumError) -> Stack {
        guard let s = stacks[name] else {
            let known = stacks.keys.sorted().joined(separator: ", ")
            throw .invalid("unknown stack '\(name)' (available: \(known.isEmpty ? "none found in the stack paths" : known))")
        }
        return s
    }
}
