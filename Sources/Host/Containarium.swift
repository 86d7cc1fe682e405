import ArgumentParser
import ContainariumCore
import ContainariumDaemon
import ContainariumPlatform
import ContainariumService
import Foundation
import Logging

@main
struct Containarium: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "containarium",
        abstract: "Persistent, SSH-reachable development environments on Incus, driven by plugins.",
        version: ContainariumVersion.string,
        subcommands: [
            Create.self, List.self, Info.self, Delete.self, Start.self, Stop.self, Restart.self, Resize.self,
            Exec.self, Console.self, Export.self, Credentials.self, Scan.self, SecurityCommand.self, AlertCommand.self, MCPCommand.self, InstallStack.self, Capacity.self, PluginCommand.self, StacksCommand.self, Version.self,
            DaemonCommand.self, TokenCommand.self, CertCommand.self, AuditCommand.self, ServiceCommand.self,
            GatewayCommand.self, CollaboratorCommand.self, NodeCommand.self, ScheduleCommand.self, OpenAPICommand.self, SentinelCommand.self,
        ]
    )
}


/// Options every verb understands.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Config file (default: $CONTAINARIUM_CONFIG or /etc/containarium/config.json).")
    var config: String?

    @Option(name: .customLong("plugin-path"), help: "Extra plugin directory to search first (repeatable).")
    var pluginPaths: [String] = []

    @Flag(name: [.short, .long], help: "Log what happens underneath (plugins, backend calls).")
    var verbose = false

    func service() throws -> EnvironmentService {
        bootstrapLogging(verbose: verbose)
        do {
            return try EnvironmentService.bootstrap(configPath: config, extraPluginPaths: pluginPaths, logger: Logger(label: "containarium"))
        } catch {
            throw fail(error)
        }
    }
}

nonisolated(unsafe) private var loggingBootstrapped = false

func bootstrapLogging(verbose: Bool) {
    guard !loggingBootstrapped else { return }
    loggingBootstrapped = true
    let env = ProcessInfo.processInfo.environment["CONTAINARIUM_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
    let level: Logger.Level = verbose ? .debug : (env ?? .warning)
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = level
        return h
    }
}

/// Print a ContainariumError the way operators expect and turn it into an exit status.
func fail(_ error: ContainariumError) -> ExitCode {
    FileHandle.standardError.write(Data("Error: \(error.description)\n".utf8))
    return ExitCode(error.code.exitCode)
}

func printJSON<T: Encodable>(_ value: T) throws {
    let e = WireJSON.encoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data = try e.encode(value)
    print(String(decoding: data, as: UTF8.self))
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}
