import ContainariumCore
import Foundation
import Logging
import ContainariumService
import PluginHost
import Synchronization

/// What this node's node.lifecycle/1 plugins announce: a coming preemption (`node.preempted`)
/// or maintenance (`node.maintenance`) of the machine by its provider. The node's reports then
/// carry the notice, and every control plane it reports to places nothing on it until a report
/// comes without one (the machine was restarted, so a fresh daemon reports; or the plugin
/// announced `node.recovered`).
extension ControlPlane {
    /// The notice in force, if any ("preempted", "maintenance: MIGRATE_ON_HOST_MAINTENANCE").
    public var preemption: String? { preemptionNotice.withLock { $0 } }

    /// The notice a lifecycle event gives, nil for events that are not about this machine's
    /// lifecycle; `.some(nil)` clears it.
    static func notice(of event: PluginEvent) -> String?? {
        struct Payload: Decodable { var node: String?; var state: String?; var event: String? }
        let payload = try? JSONDecoder().decode(Payload.self, from: event.json)
        switch event.type {
        case "node.preempted":
            return .some("preempted")
        case "node.maintenance":
            let what = payload?.event.map { $0.filter { !$0.isNewline }.prefix(160) }.map(String.init) ?? ""
            return .some(what.isEmpty ? "maintenance" : "maintenance: \(what)")
        case "node.recovered":
            return .some(nil)
        default:
            return nil
        }
    }

    /// Follow the plugins' lifecycle events until cancelled: each change of notice is logged,
    /// audited (`node.preempted`, `node.maintenance`, `node.recovered`, actor the plugin) and
    /// taken into this node's next report.
    public func followLifecycle() async {
        for await event in service.plugins.events.subscribe() {
            guard let notice = Self.notice(of: event) else { continue }
            let changed = preemptionNotice.withLock { current -> Bool in
                defer { current = notice }
                return current != notice
            }
            guard changed else { continue }
            if let notice {
                logger.warning("node \(node): \(notice) (announced by \(event.plugin)); nothing more is placed here until it is over")
            } else {
                logger.notice("node \(node): the provider's notice is over (announced by \(event.plugin))")
            }
            await audit(actor: "plugin:\(event.plugin)", role: "node", action: event.type, target: node, source: "local", interface: "plugin",
                        result: "ok", detail: notice ?? "recovered")
        }
    }
}
