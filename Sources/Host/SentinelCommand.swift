import ArgumentParser
import ContainariumCore
import ContainariumSentinel
import ContainariumService
import Foundation
import Logging

/// `containarium sentinel`: the always-on process in front of a preemptible machine
/// (docs/sentinel.md); `sentinel timeline` prints what its outages looked like.
struct SentinelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sentinel",
        abstract: "Stand in front of a spot machine: forward its ports, serve a maintenance answer while it is down, restart it.",
        subcommands: [SentinelRun.self, SentinelTimeline.self], defaultSubcommand: SentinelRun.self)
}

struct SentinelRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the sentinel of the config's `sentinel` block until SIGTERM.")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let service = try global.service()
        let logger = Logger(label: "containarium.sentinel")
        do {
            try await Sentinel.serve(config: service.config, plugins: service.plugins, logger: logger) { bound in
                print("sentinel listening on \(bound.joined(separator: ", "))")
                fflush(nil)
            }
        } catch {
            throw fail(error)
        }
    }
}

struct SentinelTimeline: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "timeline", abstract: "The outages the sentinel saw: each one's detection, start attempts and recovery.")
    @Option(help: "The timeline file (default: the config's sentinel.timeline).") var file: String?
    @Option(help: "Output format.") var format: OutputFormat = .table
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let path: String
        if let file { path = file } else {
            let config: HostConfig
            do { config = try HostConfig.load(path: global.config) } catch { throw fail(error) }
            guard let policy = config.sentinel else { throw fail(.invalid("the config has no `sentinel` block: give --file")) }
            path = policy.timelinePath
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw fail(.notFound("no timeline at \(path) (no outage yet?)")) }
        let entries = text.split(separator: "\n").compactMap { try? WireJSON.decode(TimelineEntry.self, from: Data($0.utf8)) }
        if format == .json {
            print(String(decoding: try WireJSON.encode(entries), as: UTF8.self))
            return
        }
        var outage = ""
        for e in entries {
            if e.outage != outage {
                outage = e.outage
                print(outage)
            }
            print("  \(ISO8601DateFormatter().string(from: e.at))  \(e.kind.rawValue.padding(toLength: 16, withPad: " ", startingAt: 0))\(e.detail)")
        }
    }
}
