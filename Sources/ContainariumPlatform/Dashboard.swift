public import ContainariumCore
public import ContainariumGateway
import ContainariumService
public import Foundation
import Glibc
public import NIOCore
import NIOPosix
import Synchronization

/// One point of an environment's (or the node's) usage history.
public struct UsageSample: Codable, Sendable, Equatable {
    public var at: Date
    /// Share of one CPU, in percent (200 = two CPUs busy), over the interval before `at`.
    public var cpuPercent: Double
    public var memoryBytes: UInt64
    public var diskBytes: UInt64
    public var rxBytesPerSecond: Double
    public var txBytesPerSecond: Double
    public init(at: Date, cpuPercent: Double, memoryBytes: UInt64, diskBytes: UInt64, rxBytesPerSecond: Double, txBytesPerSecond: Double) {
        self.at = at
        self.cpuPercent = cpuPercent
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
        self.rxBytesPerSecond = rxBytesPerSecond
        self.txBytesPerSecond = txBytesPerSecond
    }
}

/// Usage over the last hour, sampled from the backend: per environment, and the node's totals.
/// Rates (CPU, network) come from the difference between two samples' counters.
public final class MetricsHistory: Sendable {
    public static let window: TimeInterval = 3600
    struct Series {
        var samples: [UsageSample] = []
        var last: (at: Date, cpu: UInt64, rx: UInt64, tx: UInt64)?
    }
    private let state = Mutex<(envs: [String: Series], node: [UsageSample])>(([:], []))
    private let latest = Mutex<[InstanceInfo]>([])

    /// The instances as the last sample saw them (counters, usage and limits): /metrics reads these.
    public var latestInstances: [InstanceInfo] { latest.withLock { $0 } }

    public init() {}

    public func record(_ instances: [InstanceInfo], at now: Date = Date()) {
        latest.withLock { $0 = instances }
        state.withLock { s in
            var total = UsageSample(at: now, cpuPercent: 0, memoryBytes: 0, diskBytes: 0, rxBytesPerSecond: 0, txBytesPerSecond: 0)
            var present = Set<String>()
            for i in instances {
                present.insert(i.name)
                var series = s.envs[i.name] ?? Series()
                let cpu = i.cpuUsageNanoseconds ?? 0, rx = i.networkRxBytes ?? 0, tx = i.networkTxBytes ?? 0
                var sample = UsageSample(at: now, cpuPercent: 0, memoryBytes: i.memoryUsageBytes ?? 0, diskBytes: i.diskUsageBytes ?? 0,
                                         rxBytesPerSecond: 0, txBytesPerSecond: 0)
                if let last = series.last, now > last.at {
                    let dt = now.timeIntervalSince(last.at)
                    // Counters restart with the instance: a drop means "since the restart".
                    func rate(_ a: UInt64, _ b: UInt64) -> Double { Double(a >= b ? a - b : a) / dt }
                    sample.cpuPercent = rate(cpu, last.cpu) / 1e9 * 100
                    sample.rxBytesPerSecond = rate(rx, last.rx)
                    sample.txBytesPerSecond = rate(tx, last.tx)
                }
                series.last = (now, cpu, rx, tx)
                series.samples.append(sample)
                series.samples.removeAll { now.timeIntervalSince($0.at) > Self.window }
                s.envs[i.name] = series
                total.cpuPercent += sample.cpuPercent
                total.memoryBytes += sample.memoryBytes
                total.diskBytes += sample.diskBytes
                total.rxBytesPerSecond += sample.rxBytesPerSecond
                total.txBytesPerSecond += sample.txBytesPerSecond
            }
            for name in s.envs.keys where !present.contains(name) { s.envs[name] = nil }
            s.node.append(total)
            s.node.removeAll { now.timeIntervalSince($0.at) > Self.window }
        }
    }

    public func samples(for name: String) -> [UsageSample] { state.withLock { $0.envs[name]?.samples ?? [] } }
    public func latest(for name: String) -> UsageSample? { state.withLock { $0.envs[name]?.samples.last } }
    public var nodeTotals: [UsageSample] { state.withLock { $0.node } }
}

/// What the browser terminal talks to: a PTY shell over SSH (containers), or a VM's serial
/// console (console/1).
public protocol TerminalStream: Sendable {
    /// What the other side writes. At most a bounded amount waits here unread: the relay calls
    /// `consumed` as it hands chunks on, and the source is paused until it catches up.
    var output: AsyncStream<ByteBuffer> { get }
    func consumed(_ bytes: Int)
    func write(_ bytes: ByteBuffer) async throws
    func resize(cols: Int, rows: Int)
    func close()
    var exitStatus: Int? { get }
    var exitSignal: String? { get }
}

extension TerminalSession: TerminalStream {}

/// A VM's serial console: the descriptor the backend handed over, read and written with NIO.
/// Reading pauses while `budget` bytes wait for a stalled reader.
final class ConsoleStream: TerminalStream {
    let output: AsyncStream<ByteBuffer>
    let channel: any Channel
    let budget = ByteBudget()

    init(fd: Int32) async throws(ContainariumError) {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .unbounded)
        output = stream
        let budget = budget
        do {
            channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(ConsoleReader(continuation, budget: budget)) } }
                .takingOwnershipOfDescriptor(inputOutput: fd).get()
        } catch {
            Glibc.close(fd)
            continuation.finish()
            throw ContainariumError(.unavailable, "cannot attach to the console", cause: "\(error)")
        }
        let channel = channel
        budget.onResume { channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in } }
    }

    func consumed(_ bytes: Int) { budget.release(bytes) }
    func write(_ bytes: ByteBuffer) async throws { try await channel.writeAndFlush(bytes) }
    func resize(cols: Int, rows: Int) {}  // a serial line has no window size
    func close() {
        budget.cancel()
        channel.close(promise: nil)
    }
    var exitStatus: Int? { nil }
    var exitSignal: String? { nil }
}

final class ConsoleReader: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let continuation: AsyncStream<ByteBuffer>.Continuation
    let budget: ByteBudget
    init(_ continuation: AsyncStream<ByteBuffer>.Continuation, budget: ByteBudget) {
        self.continuation = continuation
        self.budget = budget
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if budget.add(bytes.readableBytes) { context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
        continuation.yield(bytes)
    }
    func channelInactive(context: ChannelHandlerContext) {
        continuation.finish()
        context.fireChannelInactive()
    }
}

extension ControlPlane {
    // MARK: - dashboard

    /// An environment's usage over the last hour, wherever it lives.
    public func metricsHistory(_ caller: Caller, _ username: String) async throws(ContainariumError) -> [UsageSample] {
        let user = try await authorize(caller, username, .read)
        try await requireEnvironment(user)
        if let remote = try await remoteNode(of: user) {
            return try await member(remote).client.metricsHistory(user)
        }
        return metrics.samples(for: user.containerName)
    }

    /// This node's totals over the last hour, with its capacity (admin).
    public func nodeMetrics(_ caller: Caller) async throws(ContainariumError) -> NodeMetricsView {
        try requireAdmin(caller, "node metrics")
        let cap = try? await service.capacity()
        return NodeMetricsView(
            node: node,
            capacity: cap.map { c in .init(cpus: c.cpus, memoryBytes: c.memoryTotalBytes, diskBytes: c.pool?.totalBytes ?? c.diskTotalBytes) },
            samples: metrics.nodeTotals)
    }

    /// What a create form offers: OS types, stacks, the default image.
    public func catalog(_ caller: Caller) -> CatalogView {
        let config = service.config
        return CatalogView(
            osTypes: (config.images ?? ["debian12": config.defaultImage ?? HostConfig.builtinImage]).keys.sorted(),
            defaultImage: config.defaultImage ?? HostConfig.builtinImage,
            stacks: service.stacks.stacks.values.sorted { $0.name < $1.name }.map {
                CatalogView.Stack(name: $0.name, description: $0.description, packages: $0.packages, check: $0.check)
            })
    }

    /// A login shell on a PTY in `username`'s environment, as the caller's own account there
    /// (the owner's for admins), for the browser terminal. Audited when it opens; the adapter
    /// audits the end with `terminalClosed`.
    public func openTerminal(_ caller: Caller, _ username: String, cols: Int, rows: Int) async throws(ContainariumError) -> (any TerminalStream, account: String) {
        try await audited(caller, "terminal.open", username, detail: "\(cols)x\(rows)") { () async throws(ContainariumError) -> (any TerminalStream, account: String) in
            let user = try await authorize(caller, username, .act)
            // A VM, here or on another node: its serial console (there is no sshd to log in to).
            if try await isVM(user) {
                return (try await consoleStream(user, kind: "serial"), "console")
            }
            guard let host = terminalHost.withLock({ $0 }) else { throw ContainariumError(.unavailable, "this daemon has no terminal support") }
            let account = caller.isAdmin || caller.subject == user.value ? user : try Username(caller.subject)
            // Just started, the environment may have no address yet, or its sshd may not
            // listen yet: keep trying for a while.
            let deadline = Date().addingTimeInterval(20)
            while true {
                do throws(ContainariumError) {
                    let route: GatewayRoute
                    switch await host.directory.route(owner: user, account: account) {
                    case .success(let r): route = r
                    case .failure(.notRunning): throw ContainariumError(.failedPrecondition, "\(user.value)'s environment is not running")
                    case .failure(.unknownEnvironment): throw .notFound("no environment for \(user.value)")
                    case .failure(.keyNotAuthorized): throw .denied("\(account.value) has no account in \(user.value)'s environment")
                    case .failure(let other): throw ContainariumError(.unavailable, other.description)
                    }
                    let session: any TerminalStream = try await host.gateway.openTerminal(route: route, cols: cols, rows: rows)
                    return (session, account.value)
                } catch where error.code == .unavailable && Date() < deadline {
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }

    public func terminalClosed(_ caller: Caller, _ username: String, account: String, seconds: Double, exit: String) async {
        await audit(caller, "terminal.close", target: username, result: .success(()),
                    detail: "as \(account) after \(String(format: "%.1f", seconds)) s, \(exit)")
    }
}
