import ContainariumCore
import ContainariumPlatform
import PluginKit
import Testing

/// The bounds on work that runs at once: commands per environment and per node (the control
/// plane's exec slots) and operations per plugin instance (a thread each).
@Suite("concurrency bounds")
struct LimitsTests {
    @Test("exec slots: per environment and per node, refused at once with resource_exhausted naming the bound, released when a command ends or fails")
    func execSlots() async throws {
        let slots = ExecSlots(perEnvironment: 2, total: 3)
        let (gate, open) = AsyncStream<Void>.makeStream()
        let waiting = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for name in ["a-container", "a-container", "b-container"] {
                    group.addTask {
                        try await slots.run(name) { () async throws(ContainariumError) in
                            for await _ in gate { break }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        while slots.running() < 3 { await Task.yield() }
        #expect(slots.running("a-container") == 2 && slots.running("b-container") == 1)
        for name in ["a-container", "c-container"] {
            do {
                try await slots.run(name) { () async throws(ContainariumError) in Issue.record("ran past the bound in \(name)") }
            } catch {
                #expect(error.code == .resourceExhausted)
                #expect(error.message.contains(name == "a-container" ? "2 commands are running in a-container" : "3 commands are running through this daemon"), "\(error)")
            }
        }
        open.yield()
        open.finish()
        try await waiting.value
        #expect(slots.running() == 0 && slots.running("a-container") == 0)
        // A failing command gives its slot back too.
        for _ in 0..<5 {
            _ = try? await slots.run("a-container") { () async throws(ContainariumError) in throw .internal("boom") }
        }
        #expect(slots.running() == 0)
        try await slots.run("a-container") { () async throws(ContainariumError) in }
    }

    @Test("a plugin instance runs at most maxRunning operations; the next is refused until one finishes")
    func operationBound() {
        let registry = OperationRegistry(maxRunning: 3)
        let flags = (1...3).map { registry.register(UInt64($0)) }
        #expect(flags.allSatisfy { $0 != nil } && registry.count == 3)
        #expect(registry.register(4) == nil)
        registry.finish(2)
        #expect(registry.register(5) != nil && registry.count == 3)
        // An early cancel still reaches an operation registered later.
        registry.finish(1)
        registry.cancel(6)
        #expect(registry.register(6)?.isCancelled == true)
    }
}
