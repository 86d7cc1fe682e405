public import Foundation

/// GPUs for machines without one: a PCI tree in the layout the kernel publishes under
/// /sys/bus/pci, which the nvidia-gpu plugin's libpci reads with the code it uses on /sys.
public enum FakeGPU {
    public static func buildPlugin(into dir: URL) throws -> URL {
        let out = dir.appendingPathComponent("nvidia-gpu")
        let r = try Run.run(
            "/usr/bin/make",
            ["-s", "-C", TestEnv.repoRoot.appendingPathComponent("Plugins/NvidiaGPU").path, "OUT=\(out.path)", "\(out.path)/libnvidia_gpu.so"])
        guard r.status == 0 else { throw TestFailure("make failed: \(r.output)") }
        return out
    }

    /// One PCI function as the kernel shows it in sysfs: ids, class, the first 256 bytes of
    /// config space, irq, resources and NUMA node.
    public static func device(in tree: URL, address: String, vendor: UInt16, device: UInt16, classCode: UInt32, numa: Int = 0) throws {
        let dir = tree.appendingPathComponent("devices/\(address)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var config = [UInt8](repeating: 0, count: 256)
        config[0] = UInt8(vendor & 0xff); config[1] = UInt8(vendor >> 8)
        config[2] = UInt8(device & 0xff); config[3] = UInt8(device >> 8)
        config[9] = UInt8(classCode & 0xff); config[10] = UInt8((classCode >> 8) & 0xff); config[11] = UInt8(classCode >> 16)
        try Data(config).write(to: dir.appendingPathComponent("config"))
        func put(_ name: String, _ text: String) throws { try Data((text + "\n").utf8).write(to: dir.appendingPathComponent(name)) }
        try put("vendor", String(format: "0x%04x", vendor))
        try put("device", String(format: "0x%04x", device))
        try put("class", String(format: "0x%06x", classCode))
        try put("irq", "0")
        try put("numa_node", String(numa))
        try put("resource", Array(repeating: "0x0000000000000000 0x0000000000000000 0x0000000000000000", count: 13).joined(separator: "\n"))
    }

    /// Two NVIDIA GPUs, a GPU of another vendor and a network card.
    public static func tree(_ root: URL) throws {
        try device(in: root, address: "0000:65:00.0", vendor: 0x10de, device: 0x20b0, classCode: 0x030200, numa: 0)
        try device(in: root, address: "0000:ca:00.0", vendor: 0x10de, device: 0x2684, classCode: 0x030000, numa: 1)
        try device(in: root, address: "0000:00:02.0", vendor: 0x1af4, device: 0x1050, classCode: 0x030000)
        try device(in: root, address: "0000:00:03.0", vendor: 0x1af4, device: 0x1041, classCode: 0x020000)
    }

}
