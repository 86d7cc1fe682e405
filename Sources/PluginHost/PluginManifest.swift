public import ContainariumCore
public import Foundation

/// The manifest (`plugin.json`) in a plugin directory, read before any plugin code is loaded.
public struct PluginManifest: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var version: String
    /// "MAJOR.MINOR" of the plugin ABI the library was built against.
    public var abi: String
    /// File name of the shared library, relative to the plugin directory.
    public var library: String
    /// Versioned extension ids the library provides ("instances/1").
    public var capabilities: [String]
    public var description: String?
    /// Whether the plugin is enabled on a node whose configuration does not mention it.
    public var defaultEnabled: Bool?
    /// Instance backends (instances/1) only: the kinds of environment they make ("lxc", "vm"),
    /// which the scheduler places by. Required with instances/1, refused without it.
    public var kinds: [String]?
    /// Instance backends only: the OS families they accept ("linux", "windows"), the one they
    /// serve best first. A create's OS type names its family (`HostConfig.osFamily`).
    public var osTypes: [String]?

    public static let fileName = "plugin.json"

    public struct ABIVersion: Sendable, Equatable, CustomStringConvertible {
        public var major: UInt32
        public var minor: UInt32
        public var description: String { "\(major).\(minor)" }
    }

    public var abiVersion: ABIVersion? {
        let parts = abi.split(separator: ".")
        guard parts.count == 2, let major = UInt32(parts[0]), let minor = UInt32(parts[1]) else { return nil }
        return ABIVersion(major: major, minor: minor)
    }

    /// Read and validate a manifest.
    public static func load(from directory: URL) throws(ContainariumError) -> PluginManifest {
        let url = directory.appendingPathComponent(fileName)
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ContainariumError(.pluginLoad, "cannot read manifest \(url.path)", cause: error.localizedDescription)
        }
        let manifest: PluginManifest
        do { manifest = try WireJSON.decoder().decode(PluginManifest.self, from: data) } catch {
            throw ContainariumError(.pluginLoad, "manifest \(url.path) is not valid: \(WireJSON.describe(error))")
        }
        try manifest.validate(path: url.path)
        return manifest
    }

    public func validate(path: String) throws(ContainariumError) {
        func bad(_ why: String) -> ContainariumError { ContainariumError(.pluginLoad, "manifest \(path): \(why)") }
        let idOK = !id.isEmpty && id.count <= 64 && id.utf8.allSatisfy { b in
            (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x2E || b == 0x5F
        }
        guard idOK else { throw bad("id '\(id)' must be 1-64 characters of a-z, 0-9, '-', '.', '_'") }
        guard !version.isEmpty, !name.isEmpty else { throw bad("name and version are required") }
        guard abiVersion != nil else { throw bad("abi '\(abi)' must read MAJOR.MINOR, e.g. \"1.0\"") }
        guard !library.isEmpty, !library.contains("/"), library != ".", library != ".." else {
            throw bad("library '\(library)' must be a file name inside the plugin directory")
        }
        for cap in capabilities {
            let parts = cap.split(separator: "/")
            guard parts.count == 2, UInt32(parts[1]) != nil else {
                throw bad("capability '\(cap)' must read NAME/VERSION, e.g. instances/1")
            }
        }
        if capabilities.contains(Self.instancesCapability) {
            guard let kinds, !kinds.isEmpty else { throw bad("an instances/1 plugin must declare \"kinds\" (e.g. [\"lxc\"] or [\"vm\"])") }
            guard let osTypes, !osTypes.isEmpty else { throw bad("an instances/1 plugin must declare \"osTypes\" (e.g. [\"linux\"])") }
            for (field, names) in [("kinds", kinds), ("osTypes", osTypes)] {
                for name in names where !Self.validWord(name) {
                    throw bad("\(field) entry '\(name)' must be 1-32 characters of a-z, 0-9, '-', starting with a letter")
                }
                guard Set(names).count == names.count else { throw bad("\(field) lists an entry twice") }
            }
        } else if kinds != nil || osTypes != nil {
            throw bad("\"kinds\" and \"osTypes\" belong to instance backends; this plugin does not declare instances/1")
        }
    }

    public static let instancesCapability = "instances/1"

    /// A kind or OS family: 1-32 of a-z, 0-9, '-', starting with a letter.
    public static func validWord(_ s: String) -> Bool {
        guard let first = s.utf8.first, first >= 0x61 && first <= 0x7A, s.utf8.count <= 32 else { return false }
        return s.utf8.allSatisfy { b in (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D }
    }
}
