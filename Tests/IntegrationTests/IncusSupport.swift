import ContainariumCore
import ContainariumService
import Foundation
import Logging
import PluginHost
import TestSupport
import Testing

/// Integration tests run against the real Incus daemon the test bed set up
/// (scripts/testbed.sh). Set CONTAINARIUM_SKIP_INCUS=1 to skip them on a machine without it;
/// otherwise a missing Incus is a failure, not a silent pass.
enum IncusEnv {
    static let skip = ProcessInfo.processInfo.environment["CONTAINARIUM_SKIP_INCUS"] == "1"
    static let image = ProcessInfo.processInfo.environment["CONTAINARIUM_IMAGE"] ?? "containarium/debian12"

    /// A private plugin directory, stack path and empty config for one test.
    struct Sandbox {
        let dir: URL
        let plugins: URL
        let config: URL
        /// A key pair made by ssh-keygen for this test's user.
        let key: KeyPair
        /// The Incus project of this sandbox (its own with `ownProject`, else "default").
        let project: String

        /// `ownProject`: give the sandbox an Incus project of its own (sharing the default
        /// project's images, profiles and networks), so a daemon under test sees, adopts and
        /// reconciles only what this test makes, whatever other tests run beside it.
        /// `extraConfig`: more top-level keys of the node config (e.g. "images", "runtimes").
        init(pluginConfig: [String: Any] = [:], ownProject: Bool = false, extraConfig: [String: Any] = [:]) throws {
            var pluginConfig = pluginConfig
            if ownProject {
                project = "ctmt\(TestEnv.suffix())"
                let r = try IncusEnv.incus(["project", "create", project, "-c", "features.images=false", "-c", "features.profiles=false",
                                            "-c", "features.storage.volumes=false", "-c", "features.networks=false"])
                guard r.status == 0 else { throw TestFailure("incus project create failed: \(r.output)") }
                pluginConfig["project"] = project
            } else {
                project = "default"
            }
            dir = try TestEnv.tempDir("it")
            let keys = dir.appendingPathComponent("keys")
            try FileManager.default.createDirectory(at: keys, withIntermediateDirectories: true)
            key = try KeyPair.generate(in: keys)
            plugins = dir.appendingPathComponent("plugins")
            _ = try TestEnv.incusPluginDir(in: plugins)
            config = dir.appendingPathComponent("config.json")
            var cfg: [String: Any] = [
                "plugins": ["incus-lxc": ["enabled": true, "config": pluginConfig]],
                "defaultImage": IncusEnv.image,
                "stackPaths": [TestEnv.repoRoot.appendingPathComponent("stacks").path],
            ]
            cfg.merge(extraConfig) { _, new in new }
            try JSONSerialization.data(withJSONObject: cfg).write(to: config)
        }

        /// The CLI's environment: this sandbox's plugins and config, and its own state directory
        /// (where `DaemonProcess` runs a daemon by default), so the CLI goes through the sandbox's
        /// daemon when one runs, and never through a daemon the host runs.
        var environment: [String: String] {
            ["CONTAINARIUM_PLUGIN_PATH": plugins.path, "CONTAINARIUM_CONFIG": config.path, "CONTAINARIUM_STACK_PATH": "",
             "CONTAINARIUM_STATE_DIR": dir.appendingPathComponent("state").path]
        }

        /// The real `containarium` binary.
        @discardableResult
        func cli(_ args: [String], timeout: Double = 600) throws -> ProcessResult {
            try Run.run(TestEnv.cliPath, args, environment: environment, timeout: timeout)
        }

        /// The service layer, loaded the same way the binary loads it.
        func service() throws -> EnvironmentService {
            let config = try HostConfig.load(path: config.path)
            let loader = PluginLoader(
                searchPaths: [plugins], settings: config.pluginSettings, node: config.nodeName,
                logger: Logger(label: "it", factory: { _ in SwiftLogNoOpLogHandler() }), events: EventBus())
            return EnvironmentService(
                config: config, plugins: PluginManager(loader: loader), stacks: StackCatalog(paths: config.stackSearchPaths()),
                logger: Logger(label: "it", factory: { _ in SwiftLogNoOpLogHandler() }))
        }

        func cleanup() {
            TestEnv.cleanup(dir)
            guard project != "default" else { return }
            let names = (try? IncusEnv.incus(["list", "--project", project, "--format", "csv", "--columns", "n"]).stdout) ?? ""
            for n in names.split(separator: "\n") { _ = try? IncusEnv.incus(["delete", "--force", "--project", project, String(n)]) }
            _ = try? IncusEnv.incus(["project", "delete", project])
        }

        /// `incus` in this sandbox's project.
        @discardableResult
        func incus(_ args: [String]) throws -> ProcessResult {
            try IncusEnv.incus(["--project", project] + args)
        }

        func exists(_ name: String) throws -> Bool {
            let r = try incus(["list", "--format", "csv", "--columns", "n"])
            guard r.status == 0 else { throw TestFailure("incus list failed: \(r.output)") }
            return r.stdout.split(separator: "\n").contains { $0 == name }
        }

        func forceDelete(_ name: String) { _ = try? incus(["delete", "--force", name]) }
    }

    /// `incus ARGS`. An exec that Incus fails before the command starts ("Failed to retrieve PID
    /// of executing child process", seen under load) is tried again: nothing ran.
    @discardableResult
    static func incus(_ args: [String]) throws -> ProcessResult {
        var attempt = 0
        while true {
            let r = try Run.run("/usr/bin/incus", args, timeout: 120)
            attempt += 1
            guard args.contains("exec"), r.status != 0, r.stderr.contains("Failed to retrieve PID of executing child process"), attempt < 4 else { return r }
            usleep(300_000)
        }
    }

    /// Whether Incus knows an instance by this name.
    static func exists(_ name: String) throws -> Bool {
        let r = try incus(["list", "--format", "csv", "--columns", "n"])
        guard r.status == 0 else { throw TestFailure("incus list failed: \(r.output)") }
        return r.stdout.split(separator: "\n").contains { $0 == name }
    }

    /// Whether the storage pool still holds a volume for this instance.
    static func hasVolume(_ name: String) throws -> Bool {
        let r = try incus(["storage", "volume", "list", "default", "--format", "csv", "--columns", "tn"])
        return r.stdout.split(separator: "\n").contains { $0.hasSuffix(",\(name)") }
    }

    /// Best-effort removal for test cleanup.
    static func forceDelete(_ name: String) {
        _ = try? incus(["delete", "--force", name])
    }

    /// Log in with the real OpenSSH client and run a command; retries while sshd starts.
    static func ssh(user: String, host: String, key: URL, _ command: String, within seconds: Double = 45) throws -> ProcessResult {
        let deadline = Date().addingTimeInterval(seconds)
        var last = ProcessResult(status: -1, stdout: "", stderr: "never tried")
        while Date() < deadline {
            last = try Run.run(
                "/usr/bin/ssh",
                [
                    "-i", key.path, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                    "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR", "\(user)@\(host)", command,
                ], timeout: 30)
            // 255 is ssh's own failure (connection refused, auth); anything else came from the command.
            if last.status != 255 { return last }
            usleep(300_000)
        }
        return last
    }
}

extension Trait where Self == ConditionTrait {
    static var needsIncus: ConditionTrait { .enabled(if: !IncusEnv.skip, "CONTAINARIUM_SKIP_INCUS=1") }
}
