import ArgumentParser
import ContainariumCore
import ContainariumDaemon
import Foundation

/// `containarium service install|uninstall|status`: the daemon as a systemd unit.
struct ServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service", abstract: "Install, remove or inspect the daemon's systemd unit.",
        discussion: """
            Environment: CONTAINARIUM_SYSTEMCTL names the systemctl program to run (default /bin/systemctl); \
            CONTAINARIUM_SYSTEMD_RUNTIME the directory whose presence means the machine runs systemd \
            (default /run/systemd/system). Tests set both to stand-ins, so they never touch the host's units.
            """,
        subcommands: [ServiceInstall.self, ServiceUninstall.self, ServiceStatus.self])
}

/// Where the unit goes, and how systemd is reached.
///
/// Two environment variables point the commands at a systemd other than the machine's own,
/// for tests (which must never start or stop the host's real units) and for image builds.
/// Unset or empty, the real one is used:
/// - `CONTAINARIUM_SYSTEMCTL`: the systemctl program to run (default `/bin/systemctl`).
/// - `CONTAINARIUM_SYSTEMD_RUNTIME`: the directory whose presence means "this machine runs
///   systemd" (default `/run/systemd/system`, which systemd creates at boot).
struct ServicePaths: ParsableArguments {
    @Option(name: .customLong("unit-dir"), help: "Where the unit file goes.") var unitDir = "/etc/systemd/system"
    @Option(name: .customLong("unit-name"), help: "The unit's name.") var unitName = "containarium.service"
    @Option(name: .customLong("secret-file"), help: "The daemon's JWT secret file.") var secretFile = "/etc/containarium/jwt.secret"
    @Option(name: .customLong("binary"), help: "Path of the containarium executable the unit runs.") var binary = "/usr/local/bin/containarium"

    var unitPath: String { unitDir + "/" + unitName }
    var hasSystemd: Bool { FileManager.default.fileExists(atPath: Self.setting("CONTAINARIUM_SYSTEMD_RUNTIME") ?? "/run/systemd/system") }
    /// The systemctl program: $CONTAINARIUM_SYSTEMCTL, else the real one.
    var systemctl: String { Self.setting("CONTAINARIUM_SYSTEMCTL") ?? "/bin/systemctl" }

    private static func setting(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }

    func validate() throws {
        let stem: Substring = unitName.hasSuffix(".service") ? unitName.dropLast(".service".count) : ""
        guard !stem.isEmpty, stem.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-@:".contains($0)) }) else {
            throw ValidationError("--unit-name must be a service unit name such as containarium.service")
        }
    }
}

enum SystemdUnit {
    /// The unit: restart on failure, a hardened sandbox that still lets the daemon reach Incus.
    static func render(binary: String, secretFile: String, extraArgs: [String]) -> String {
        let args = (["daemon", "--jwt-secret-file", secretFile] + extraArgs).map(quote).joined(separator: " ")
        return """
            [Unit]
            Description=Containarium daemon (REST, gRPC, reconciler)
            Documentation=file:///usr/local/share/doc/containarium/operations.md
            After=network-online.target incus.service
            Wants=network-online.target
            Requires=incus.service

            [Service]
            Type=simple
            ExecStart=\(quote(binary)) \(args)
            Restart=on-failure
            RestartSec=2s
            KillSignal=SIGTERM
            TimeoutStopSec=45s
            StateDirectory=containarium
            StateDirectoryMode=0700
            UMask=0077
            NoNewPrivileges=yes
            ProtectHome=yes
            ProtectSystem=full
            PrivateTmp=yes
            LimitNOFILE=65536

            [Install]
            WantedBy=multi-user.target

            """
    }

    /// systemd's quoting for ExecStart words.
    static func quote(_ s: String) -> String {
        if !s.isEmpty, s.allSatisfy({ $0.isLetter || $0.isNumber || "/._-:=,@".contains($0) }) { return s }
        return "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}

struct ServiceInstall: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "install", abstract: "Write the unit and a fresh JWT secret (kept if one exists), then enable and start it.")
    @OptionGroup var paths: ServicePaths
    @Flag(name: .customLong("render-only"), help: "Print the unit instead of installing it.") var renderOnly = false
    @Argument(parsing: .postTerminator, help: "Extra daemon flags, after --.") var extra: [String] = []

    func run() async throws {
        let unit = SystemdUnit.render(binary: paths.binary, secretFile: paths.secretFile, extraArgs: extra)
        if renderOnly { print(unit, terminator: ""); return }
        let fm = FileManager.default
        if !fm.fileExists(atPath: paths.secretFile) {
            try? fm.createDirectory(atPath: (paths.secretFile as NSString).deletingLastPathComponent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            guard fm.createFile(atPath: paths.secretFile, contents: Data((Tokens.randomSecret() + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
                throw fail(.init(.unavailable, "cannot write \(paths.secretFile)"))
            }
            print("wrote a new JWT secret to \(paths.secretFile) (mode 600)")
        }
        try? fm.createDirectory(atPath: paths.unitDir, withIntermediateDirectories: true)
        guard fm.createFile(atPath: paths.unitPath, contents: Data(unit.utf8), attributes: [.posixPermissions: 0o644]) else {
            throw fail(.init(.unavailable, "cannot write \(paths.unitPath)"))
        }
        print("wrote \(paths.unitPath)")
        guard paths.hasSystemd else {
            print("this machine does not run systemd: start the daemon yourself with `\(paths.binary) daemon --jwt-secret-file \(paths.secretFile)`")
            return
        }
        let code = runTool(paths.systemctl, ["daemon-reload"]) + runTool(paths.systemctl, ["enable", "--now", paths.unitName])
        if code != 0 { throw fail(.init(.unavailable, "systemctl failed; see `journalctl -u \(paths.unitName)`")) }
        print("\(paths.unitName) enabled and started")
    }
}

struct ServiceUninstall: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "uninstall", abstract: "Stop and remove the unit and its secret file.")
    @OptionGroup var paths: ServicePaths
    @Flag(name: .customLong("keep-secret"), help: "Leave the JWT secret file (existing tokens stay valid on reinstall).") var keepSecret = false

    func run() async throws {
        if paths.hasSystemd { _ = runTool(paths.systemctl, ["disable", "--now", paths.unitName]) }
        let fm = FileManager.default
        var removed: [String] = []
        for f in [paths.unitPath] + (keepSecret ? [] : [paths.secretFile]) where fm.fileExists(atPath: f) {
            do { try fm.removeItem(atPath: f); removed.append(f) } catch { throw fail(.init(.unavailable, "cannot remove \(f)")) }
        }
        if paths.hasSystemd { _ = runTool(paths.systemctl, ["daemon-reload"]) }
        print(removed.isEmpty ? "nothing to remove" : removed.map { "removed \($0)" }.joined(separator: "\n"))
    }
}

struct ServiceStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show whether the unit is installed and running.")
    @OptionGroup var paths: ServicePaths

    func run() async throws {
        let fm = FileManager.default
        print("unit: \(fm.fileExists(atPath: paths.unitPath) ? paths.unitPath : "not installed")")
        print("secret: \(fm.fileExists(atPath: paths.secretFile) ? paths.secretFile : "missing")")
        guard paths.hasSystemd else {
            print("systemd: not running on this machine (no /run/systemd/system); the unit cannot be started here")
            return
        }
        _ = runTool(paths.systemctl, ["--no-pager", "status", paths.unitName])
    }
}

@discardableResult
func runTool(_ path: String, _ args: [String]) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    do { try p.run() } catch { return 127 }
    p.waitUntilExit()
    return p.terminationStatus
}
