import ContainariumCore
import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs a long operation so that Ctrl-C (SIGINT) or SIGTERM cancels it instead of killing the
/// process: cancellation reaches the plugin, which stops and removes what it made, and the
/// command then exits with status 130. Only the executable installs signal handling; plugins
/// never do (docs/plugin-abi.md, rule 6).
enum Interrupts {
    static func cancelling<T: Sendable>(
        _ body: @escaping @Sendable () async throws(ContainariumError) -> T
    ) async throws(ContainariumError) -> T {
        let task = Task { () async throws(ContainariumError) -> T in try await body() }
        let signals = [SIGINT, SIGTERM]
        for s in signals { signal(s, SIG_IGN) }
        let sources = signals.map { s in
            let source = DispatchSource.makeSignalSource(signal: s, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(Data("\nInterrupted: cancelling and cleaning up...\n".utf8))
                task.cancel()
            }
            source.resume()
            return source
        }
        defer {
            for source in sources { source.cancel() }
            for s in signals { signal(s, SIG_DFL) }
        }
        do {
            return try await task.value
        } catch let error as ContainariumError {
            throw error
        } catch {
            throw .internal("operation failed", cause: "\(error)")
        }
    }
}
