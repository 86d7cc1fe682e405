import ContainariumCore
import Foundation
import PluginKit

// The "accounts/1" extension on Incus system containers: the owner's account, its SSH keys
// and collaborators' accounts. Commands run through the Incus exec API as argv arrays (never
// a shell) and files are written through the Incus file API; every name and key is validated
// here again, whatever the host checked.
extension IncusBackend {
    /// The account's passwd entry inside the instance, or nil when there is none.
    func passwd(_ instance: String, _ name: String, _ ctx: OperationContext) throws(ContainariumError) -> PasswdEntry? {
        let ent = try exec(ExecRequest(name: instance, command: ["getent", "passwd", name], timeoutSeconds: 30), ctx)
        switch ent.exitCode {
        case 0:
            guard let entry = PasswdEntry(line: ent.stdout) else { throw .internal("getent passwd \(name) printed something that is not a passwd entry") }
            return entry
        case 2:
            return nil  // getent: no such key
        default:
            throw .internal("getent passwd \(name) failed with exit status \(ent.exitCode)", cause: ent.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    private func existing(_ instance: String, _ name: String, _ ctx: OperationContext) throws(ContainariumError) -> PasswdEntry {
        _ = try Username(name)
        guard let entry = try passwd(instance, name, ctx) else { throw .notFound("there is no account \(name) in \(instance)") }
        return entry
    }

    /// Validated, normalised authorized_keys lines (no options, one key per line).
    private func keyLines(_ keys: [String]) throws(ContainariumError) -> [String] {
        var lines: [String] = []
        for raw in keys { lines.append(try SSHPublicKey(parsing: raw).authorizedKeysLine) }
        return lines
    }

    /// Replace `~/.ssh/authorized_keys` of `account`, owned by it, mode 0600 in a 0700 directory.
    private func writeKeys(_ instance: String, _ account: PasswdEntry, _ lines: [String]) throws(ContainariumError) {
        guard account.home.hasPrefix("/"), !account.home.contains("..") else { throw .internal("account \(account.name) has the home '\(account.home)'") }
        try api.push(instance: instance, path: account.home + "/.ssh", content: nil, uid: account.uid, gid: account.gid, mode: "0700", directory: true)
        let text = lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n"
        try api.push(
            instance: instance, path: account.home + "/.ssh/authorized_keys", content: Data(text.utf8), uid: account.uid, gid: account.gid,
            mode: "0600")
    }

    // MARK: - the methods

    func accountCreate(_ r: AccountCreateRequest, _ ctx: OperationContext) throws(ContainariumError) -> AccountInfo {
        let ids = try createAccount(r.instance, r.account, ctx)
        try installKeys(r.instance, account: r.account, uid: ids.uid, gid: ids.gid, home: ids.home)
        return AccountInfo(name: r.account.name, uid: ids.uid, gid: ids.gid, home: ids.home, shell: r.account.shell)
    }

    func setKeys(_ r: SetKeysRequest, _ ctx: OperationContext) throws(ContainariumError) -> KeyList {
        let lines = try keyLines(r.keys)
        let account = try existing(r.instance, r.name, ctx)
        try writeKeys(r.instance, account, lines)
        return KeyList(keys: lines)
    }

    func listKeys(_ r: AccountRef, _ ctx: OperationContext) throws(ContainariumError) -> KeyList {
        let account = try existing(r.instance, r.name, ctx)
        let data = try api.pull(instance: r.instance, path: account.home + "/.ssh/authorized_keys") ?? Data()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { try? SSHPublicKey(parsing: String($0)).authorizedKeysLine }
        return KeyList(keys: lines)
    }

    private static func sudoersPath(_ user: String) -> String { "/etc/sudoers.d/containarium-collaborator-\(user)" }

    /// Create (or update) a collaborator's own account: its keys, and either full sudo or only
    /// `sudo su - OWNER`, which sudo logs (with I/O logging) to
    /// /var/log/containarium-collaborators.log and /var/log/sudo-io.
    func addCollaborator(_ r: CollaboratorRequest, _ ctx: OperationContext) throws(ContainariumError) -> AccountInfo {
        let owner = try Username(r.owner), user = try Username(r.name)
        guard owner != user else { throw .invalid("\(owner.value) owns this environment already") }
        let lines = try keyLines(r.sshKeys)
        let marker = CollaboratorRequest.marker(owner: owner.value)
        if let found = try passwd(r.instance, user.value, ctx) {
            guard found.gecos == marker else { throw .alreadyExists("an account named \(user.value) already exists in this environment") }
        } else {
            let add = try exec(ExecRequest(name: r.instance, command: ["useradd", "-m", "-s", "/bin/bash", "-c", marker, user.value], timeoutSeconds: 60), ctx)
            // 9: it exists, which happens when a retried exec had in fact run the first time.
            guard add.exitCode == 0 || add.exitCode == 9 else {
                throw .internal("useradd \(user.value) failed with exit status \(add.exitCode)", cause: add.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        guard let account = try passwd(r.instance, user.value, ctx) else { throw .internal("could not read back the account \(user.value)") }
        try writeKeys(r.instance, account, lines)

        let rule: String
        if r.sudo {
            rule = "\(user.value) ALL=(ALL:ALL) NOPASSWD:ALL\n"
        } else {
            var su = "/bin/su"
            if try exec(ExecRequest(name: r.instance, command: ["test", "-x", "/usr/bin/su"], timeoutSeconds: 30), ctx).exitCode == 0 { su = "/usr/bin/su" }
            rule = "Defaults:\(user.value) logfile=/var/log/containarium-collaborators.log, log_input, log_output, iolog_dir=/var/log/sudo-io\n"
                + "\(user.value) ALL=(root) NOPASSWD: \(su) - \(owner.value)\n"
        }
        // sudo skips files whose names contain a dot, so the candidate is inert until checked.
        let path = Self.sudoersPath(user.value), candidate = Self.sudoersPath(user.value) + ".tmp"
        // Pushed, checked and moved into place; tried again when the candidate is gone before the
        // move (seen rarely on a busy host right after the same name's rule was removed).
        var attempt = 0
        while true {
            attempt += 1
            try api.push(instance: r.instance, path: candidate, content: Data(rule.utf8), uid: 0, gid: 0, mode: "0440")
            let check = try exec(ExecRequest(name: r.instance, command: ["visudo", "-cf", candidate], timeoutSeconds: 30), ctx)
            guard check.exitCode == 0 else {
                _ = try? exec(ExecRequest(name: r.instance, command: ["rm", "-f", candidate], timeoutSeconds: 30), ctx)
                throw .internal("the sudo rule for \(user.value) did not pass visudo", cause: (check.stdout + check.stderr).trimmingCharacters(in: .whitespacesAndNewlines))
            }
            let move = try exec(ExecRequest(name: r.instance, command: ["mv", "-f", candidate, path], timeoutSeconds: 30), ctx)
            if move.exitCode == 0 { break }
            guard attempt < 3, move.stderr.contains("cannot stat") else {
                throw .internal("could not install the sudo rule for \(user.value)", cause: move.stderr)
            }
        }

        if r.containerRuntime {
            let group = try exec(ExecRequest(name: r.instance, command: ["getent", "group", "docker"], timeoutSeconds: 30), ctx)
            if group.exitCode != 0 {
                let made = try exec(ExecRequest(name: r.instance, command: ["groupadd", "docker"], timeoutSeconds: 30), ctx)
                guard made.exitCode == 0 || made.exitCode == 9 else { throw .internal("groupadd docker failed", cause: made.stderr) }
            }
            let join = try exec(ExecRequest(name: r.instance, command: ["usermod", "-aG", "docker", user.value], timeoutSeconds: 60), ctx)
            guard join.exitCode == 0 else { throw .internal("could not add \(user.value) to the docker group", cause: join.stderr) }
        }
        return AccountInfo(name: account.name, uid: account.uid, gid: account.gid, home: account.home, shell: account.shell)
    }

    /// Remove a collaborator's account, its processes and its sudo rule. An account that this
    /// extension did not make for this owner is never touched (removed: false).
    func removeCollaborator(_ r: CollaboratorRef, _ ctx: OperationContext) throws(ContainariumError) -> RemovedResult {
        let owner = try Username(r.owner), user = try Username(r.name)
        guard let found = try passwd(r.instance, user.value, ctx), found.gecos == CollaboratorRequest.marker(owner: owner.value) else {
            return RemovedResult(removed: false)
        }
        _ = try? exec(ExecRequest(name: r.instance, command: ["pkill", "-KILL", "-u", user.value], timeoutSeconds: 30), ctx)
        let rm = try exec(ExecRequest(name: r.instance, command: ["rm", "-f", Self.sudoersPath(user.value)], timeoutSeconds: 30), ctx)
        guard rm.exitCode == 0 else { throw .internal("could not remove the sudo rule of \(user.value)", cause: rm.stderr) }
        // 12: the account is gone but its home could not be removed entirely.
        let del = try exec(ExecRequest(name: r.instance, command: ["userdel", "-r", user.value], timeoutSeconds: 60), ctx)
        if del.exitCode != 0 && del.exitCode != 12 {
            let again = try exec(ExecRequest(name: r.instance, command: ["userdel", user.value], timeoutSeconds: 60), ctx)
            // 6: no such user (a retried exec had in fact run).
            guard again.exitCode == 0 || again.exitCode == 6 else { throw .internal("userdel \(user.value) failed", cause: del.stderr + again.stderr) }
        }
        return RemovedResult(removed: true)
    }
}
