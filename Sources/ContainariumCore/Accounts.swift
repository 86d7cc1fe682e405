import Foundation

/// One `/etc/passwd` entry, as `getent passwd NAME` prints it.
public struct PasswdEntry: Sendable, Equatable {
    public var name: String
    public var uid: UInt32
    public var gid: UInt32
    public var home: String
    public var shell: String
    /// The comment field (GECOS); accounts/1 marks collaborator accounts with it.
    public var gecos: String = ""

    /// Parse `name:x:uid:gid:gecos:home:shell` (trailing newline allowed); nil when malformed.
    public init?(line: String) {
        let f = line.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":", omittingEmptySubsequences: false)
        guard f.count == 7, let uid = UInt32(f[2]), let gid = UInt32(f[3]) else { return nil }
        self.name = String(f[0])
        self.uid = uid
        self.gid = gid
        self.gecos = String(f[4])
        self.home = String(f[5])
        self.shell = String(f[6])
    }
}

// MARK: - accounts/1 (docs/schemas/accounts-1.schema.json; keep both in step)

/// accounts/1 `create`: the instance owner's account.
public struct AccountCreateRequest: Codable, Sendable, Equatable {
    public var instance: String
    public var account: AccountSpec
    public init(instance: String, account: AccountSpec) {
        self.instance = instance
        self.account = account
    }
}

/// An account as it exists inside an instance.
public struct AccountInfo: Codable, Sendable, Equatable {
    public var name: String
    public var uid: UInt32
    public var gid: UInt32
    public var home: String
    public var shell: String
    public init(name: String, uid: UInt32, gid: UInt32, home: String, shell: String) {
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.shell = shell
    }
}

/// accounts/1 `list_keys`: one account of one instance.
public struct AccountRef: Codable, Sendable, Equatable {
    public var instance: String
    public var name: String
    public init(instance: String, name: String) {
        self.instance = instance
        self.name = name
    }
}

/// accounts/1 `set_keys`: replace the account's authorized keys with exactly these.
public struct SetKeysRequest: Codable, Sendable, Equatable {
    public var instance: String
    public var name: String
    /// authorized_keys lines.
    public var keys: [String]
    public init(instance: String, name: String, keys: [String]) {
        self.instance = instance
        self.name = name
        self.keys = keys
    }
}

/// The authorized_keys lines of an account, as installed.
public struct KeyList: Codable, Sendable, Equatable {
    public var keys: [String]
    public init(keys: [String]) { self.keys = keys }
}

/// accounts/1 `add_collaborator`: a collaborator's own account in the owner's instance.
public struct CollaboratorRequest: Codable, Sendable, Equatable {
    public var instance: String
    public var owner: String
    public var name: String
    public var sshKeys: [String]
    /// Full sudo; otherwise only `sudo su - OWNER` (logged).
    public var sudo: Bool
    /// Join the docker group.
    public var containerRuntime: Bool
    public init(instance: String, owner: String, name: String, sshKeys: [String], sudo: Bool, containerRuntime: Bool) {
        self.instance = instance
        self.owner = owner
        self.name = name
        self.sshKeys = sshKeys
        self.sudo = sudo
        self.containerRuntime = containerRuntime
    }

    /// The GECOS comment that marks an account as this owner's collaborator: an account
    /// without it is never touched by add_collaborator or remove_collaborator.
    public static func marker(owner: String) -> String { "containarium collaborator on \(owner)" }
}

/// accounts/1 `remove_collaborator`.
public struct CollaboratorRef: Codable, Sendable, Equatable {
    public var instance: String
    public var owner: String
    public var name: String
    public init(instance: String, owner: String, name: String) {
        self.instance = instance
        self.owner = owner
        self.name = name
    }
}

/// The answer of remove_collaborator: false when there was no such collaborator account.
public struct RemovedResult: Codable, Sendable, Equatable {
    public var removed: Bool
    public init(removed: Bool) { self.removed = removed }
}

/// Free-form labels on an environment: keys of a-z, 0-9, '.', '-', '_' (at most 63), values
/// of at most 255 characters on one line.
public enum Labels {
    public static func validate(_ labels: [String: String]) throws(ContainariumError) {
        for (k, v) in labels {
            let ok = !k.isEmpty && k.utf8.count <= 63 && k.utf8.allSatisfy {
                ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x2E || $0 == 0x5F
            }
            guard ok else { throw .invalid("label key '\(k)' may use only a-z, 0-9, '.', '-' and '_' (at most 63 characters)") }
            guard v.count <= 255, !v.contains(where: \.isNewline) else {
                throw .invalid("label '\(k)' has a value that is too long or spans lines")
            }
        }
    }
}
