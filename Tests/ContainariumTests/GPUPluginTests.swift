import ContainariumCore
import Foundation
import Logging
import PluginHost
import TestSupport
import Testing

/// The GPU discovery plugin (Plugins/NvidiaGPU, C over libpci), built with its own Makefile and
/// loaded by the real host. Exact answers are checked against a PCI tree of the tests' own
/// (`sysfsPath`): the same files the kernel publishes under /sys/bus/pci, read by the same
/// libpci code. The machine's real tree is listed too, with only what holds on every machine
/// (with GPUs or without): the listing succeeds and every GPU in it is well-formed.
@Suite("GPU plugin: nvidia-gpu (devices.gpu/1)")
struct GPUPluginTests {
    func load(_ plugins: URL, config: JSONValue, isolation: String = "in-process") throws -> PluginRecord {
        let settings = PluginSettings(plugins: ["nvidia-gpu": .init(enabled: true, config: config, isolation: isolation)])
        let records = PluginLoader(
            searchPaths: [plugins], settings: settings, node: "n", logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }),
            events: EventBus(), serverExecutable: URL(fileURLWithPath: TestEnv.cliPath)
        ).loadAll()
        return try #require(records.first { $0.id == "nvidia-gpu" })
    }

    @Test("lists the NVIDIA GPUs of a PCI tree with pci.ids names, NUMA node and address", arguments: ["in-process", "process"])
    func listsGPUs(isolation: String) async throws {
        let work = try TestEnv.tempDir("gpu")
        defer { TestEnv.cleanup(work) }
        let plugins = work.appendingPathComponent("plugins")
        _ = try FakeGPU.buildPlugin(into: plugins)
        let tree = work.appendingPathComponent("pci")
        try FakeGPU.tree(tree)

        let record = try load(plugins, config: .object(["sysfsPath": .string(tree.path)]), isolation: isolation)
        #expect(record.state == .ready)
        let client = try #require(record.plugin.flatMap(GPUDevicesClient.init))
        let gpus = try await client.list()
        #expect(gpus.map(\.pciAddress) == ["0000:65:00.0", "0000:ca:00.0"])
        #expect(gpus.map(\.model) == ["GA100 [A100 SXM4 40GB]", "AD102 [GeForce RTX 4090]"])
        #expect(gpus.allSatisfy { $0.vendor.contains("NVIDIA") && $0.attachedTo == nil })
        #expect(gpus.map(\.numaNode) == [0, 1])
        #expect(gpus.map(\.deviceId) == ["20b0", "2684"])
        // The answer follows the published schema.
        let raw = try await record.plugin?.call(extension: GPUDevicesClient.extensionID, method: "list", request: Data("{}".utf8))
        let body = try #require(raw)
        let devices = try WireJSON.decode(JSONValue.self, from: body)["devices"]?.items ?? []
        #expect(devices.count == 2)
        for d in devices { #expect(try SchemaCheck.violations(of: WireJSON.encode(d), file: "devices.gpu-1.schema.json", definition: "Device") == nil) }

        // "any" vendor: the virtio GPU too, never the network card.
        let any = try load(plugins, config: .object(["sysfsPath": .string(tree.path), "vendor": .string("any")]), isolation: isolation)
        let all = try await #require(any.plugin.flatMap(GPUDevicesClient.init)).list()
        #expect(all.map(\.pciAddress) == ["0000:00:02.0", "0000:65:00.0", "0000:ca:00.0"])

        // This machine's real PCI tree: no GPU on most test machines, several on a GPU host.
        // Whatever it holds, listing succeeds and each GPU is a well-formed, schema-valid
        // NVIDIA device (the default vendor) with its own id and PCI address.
        let real = try load(plugins, config: .object([:]), isolation: isolation)
        #expect(real.state == .ready)
        let realGPUs = try await #require(real.plugin.flatMap(GPUDevicesClient.init)).list()
        for g in realGPUs {
            #expect(Self.isPCIAddress(g.pciAddress), "\(g.pciAddress)")
            #expect(g.vendorId == "10de", "\(g.pciAddress): vendor \(g.vendorId ?? "-")")
        }
        #expect(realGPUs.map(\.id) == realGPUs.indices.map { "gpu\($0)" })
        #expect(Set(realGPUs.map(\.pciAddress)).count == realGPUs.count)
        let realRaw = try await #require(real.plugin).call(extension: GPUDevicesClient.extensionID, method: "list", request: Data("{}".utf8))
        let realDevices = try WireJSON.decode(JSONValue.self, from: realRaw)["devices"]?.items ?? []
        #expect(realDevices.count == realGPUs.count)
        for d in realDevices { #expect(try SchemaCheck.violations(of: WireJSON.encode(d), file: "devices.gpu-1.schema.json", definition: "Device") == nil) }
        #expect(await real.plugin?.health().status == "ok")
    }

    /// DOMAIN:BUS:DEVICE.FUNCTION in lowercase hex, as the schema's `pciAddress` pattern says.
    static func isPCIAddress(_ s: String) -> Bool {
        let hex = { (part: Substring, count: Int) in part.count == count && part.allSatisfy { "0123456789abcdef".contains($0) } }
        let fields = s.split(separator: ":", omittingEmptySubsequences: false)
        guard fields.count == 3 else { return false }
        let slot = fields[2].split(separator: ".", omittingEmptySubsequences: false)
        guard slot.count == 2, let function = Int(slot[1]) else { return false }
        return hex(fields[0], 4) && hex(fields[1], 2) && hex(slot[0], 2) && slot[1].count == 1 && (0...7).contains(function)
    }

    @Test("a missing tree is an error, not a crash; bad config fails initialize; attach is unsupported")
    func errors() async throws {
        let work = try TestEnv.tempDir("gpu")
        defer { TestEnv.cleanup(work) }
        let plugins = work.appendingPathComponent("plugins")
        _ = try FakeGPU.buildPlugin(into: plugins)
        let gone = try load(plugins, config: .object(["sysfsPath": .string(work.appendingPathComponent("nope").path)]))
        let client = try #require(gone.plugin.flatMap(GPUDevicesClient.init))
        do {
            _ = try await client.list()
            Issue.record("listing a missing tree succeeded")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("no PCI tree"))
        }
        #expect(await gone.plugin?.health().status == "down")
        // libpci's own fatal errors (a device directory it cannot read) come back as errors too.
        let broken = work.appendingPathComponent("broken")
        try FileManager.default.createDirectory(at: broken.appendingPathComponent("devices/0000:01:00.0"), withIntermediateDirectories: true)
        let b = try load(plugins, config: .object(["sysfsPath": .string(broken.path)]))
        let bc = try #require(b.plugin.flatMap(GPUDevicesClient.init))
        do {
            _ = try await bc.list()
            Issue.record("listing a broken tree succeeded")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("libpci"))
        }
        let bad = try load(plugins, config: .object(["vendor": .string("nvidia")]))
        #expect(bad.state != .ready)
        #expect("\(bad.state)".contains("vendor"))
        let ok = try #require(try load(plugins, config: .object([:])).plugin)
        do {
            _ = try await ok.call(extension: GPUDevicesClient.extensionID, method: "attach", request: Data("{\"device\":\"gpu0\",\"instance\":\"x\"}".utf8))
            Issue.record("attach succeeded")
        } catch {
            #expect(error.code == .unsupported)
        }
    }
}
