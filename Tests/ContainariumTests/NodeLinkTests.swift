import ContainariumCore
@testable import ContainariumPlatform
import ContainariumProto
import ContainariumScheduler
@testable import ContainariumDaemon
import ContainariumService
import Foundation
import NIOCore
import SwiftProtobuf
import Testing

@Suite("The node link's frames and channels, and the create message nodes are handed")
struct NodeLinkTests {
    @Test("every field of a create survives the trip to another node, as the CreateContainerRequest message and back")
    func createRoundTrip() throws {
        var full = CreateEnvironmentRequest(
            username: "alice", sshKeys: ["ssh-ed25519 AAAA a@b"], image: "images:debian/12", osType: "linux", cpu: "2", memory: "2GB",
            disk: "10GB", autostart: false, nesting: true, stack: "nodejs", labels: ["team": "x", "node.zone": "a"], gpus: 1,
            gpuModel: "A100", gpuDevices: ["0000:65:00.0"], node: "n1", runtimes: [.docker, .podman])
        full.kind = "vm"
        // Over the wire (binary protobuf), as a node receives it.
        let wire = try ProtoMap.createMessage(full).serializedBytes() as [UInt8]
        let back = try ProtoMap.create(try Containarium_V1_CreateContainerRequest(serializedBytes: wire))
        #expect(back.username == full.username && back.sshKeys == full.sshKeys && back.image == full.image && back.osType == full.osType)
        #expect(back.cpu == full.cpu && back.memory == full.memory && back.disk == full.disk && back.autostart == false && back.nesting == true)
        #expect(back.stack == full.stack && back.labels == full.labels && back.gpus == 1 && back.gpuModel == "A100")
        #expect(back.gpuDevices == full.gpuDevices && back.node == "n1" && Set(back.runtimes) == [.docker, .podman] && back.kind == "vm")
        // An OS type the enum names travels as the enum.
        var ubuntu = CreateEnvironmentRequest(username: "carl", sshKeys: [])
        ubuntu.osType = "OS_TYPE_UBUNTU_2404"
        let m = ProtoMap.createMessage(ubuntu)
        #expect(m.osType == .ubuntu2404 && m.os.isEmpty)
        #expect(try ProtoMap.create(m).osType == "OS_TYPE_UBUNTU_2404")
        let bare = try ProtoMap.create(ProtoMap.createMessage(CreateEnvironmentRequest(username: "bob", sshKeys: [])))
        #expect(bare.image == nil && bare.kind == nil && bare.autostart == false && bare.gpus == nil && bare.runtimes.isEmpty && bare.labels.isEmpty)
    }

    @Test("a node's report survives the trip to its control plane; a report without a name is refused")
    func reportRoundTrip() throws {
        let info = NodeInfo(name: "w1", kinds: ["lxc", "vm"], capacity: Resources(cpuMillis: 8000, memoryBytes: 16 << 30, diskBytes: 1 << 40),
                            reserved: Resources(cpuMillis: 500), gpus: [GPUDevice(pciAddress: "0000:65:00.0", model: "H200", attachedTo: "a-container")],
                            labels: ["zone": "a"], pool: "spot", preemptible: true)
        let report = NodeReport(address: "10.0.0.5:50051", token: "t0k", info: info, environments: ["a-container": Resources(cpuMillis: 1000)],
                                gateway: .init(address: "10.0.0.5:2222", hostKey: "ssh-ed25519 AAAA"),
                                plugins: [NodePlugin(id: "incus-lxc", version: "1.0", abi: "1.1", state: "ready", capabilities: ["instances/1"],
                                                     kinds: ["lxc"], osTypes: ["linux"])])
        let wire = try ProtoMap.nodeReport(report).serializedBytes() as [UInt8]
        #expect(try ProtoMap.nodeReport(try Containarium_V1_NodeReport(serializedBytes: wire)) == report)
        var bare = NodeReport(address: "", token: nil, info: NodeInfo(name: "w2", kinds: [], capacity: .zero), environments: [:])
        bare.plugins = nil
        #expect(try ProtoMap.nodeReport(ProtoMap.nodeReport(bare)) == bare)
        #expect(throws: ContainariumError.self) { try ProtoMap.nodeReport(Containarium_V1_NodeReport()) }
    }

    @Test("frames: data is carried byte for byte; frames without a channel or an op are ignored, never trusted")
    func frames() throws {
        let bytes: [UInt8] = Array(0...255)
        let f = try #require(LinkFrame.parse(LinkFrame.data(7, ByteBuffer(bytes: bytes))))
        #expect(f.ch == 7 && f.op == .data(bytes))
        let open = try #require(LinkFrame.parse(LinkFrame.open(3, "ssh")))
        #expect(open.op == .open("ssh"))
        #expect(LinkFrame.parse(LinkFrame.open(4, "api"))?.op == .open("api"))
        #expect(LinkFrame.parse(LinkFrame.close(9))?.op == .close)
        let unknownTarget = Containarium_V1_LinkFrame.with {
            $0.channel = 2
            $0.open = .unspecified
        }
        #expect(LinkFrame.parse(unknownTarget)?.op == .open(nil))
        for bad in [Containarium_V1_LinkFrame(), .with { $0.close = true }, .with { $0.channel = 5 }] {
            #expect(LinkFrame.parse(bad) == nil, "\(bad)")
        }
    }

    @Test("channels: bytes arrive in order on their own channel; finishing one ends only it")
    func channels() async {
        let channels = LinkChannels()
        let (a, streamA) = channels.add()
        let (b, streamB) = channels.add()
        #expect(a != b)
        let (c, streamC) = channels.add(41)
        #expect(c == 41 && channels.add().0 == 42)
        for i in 0..<100 { channels.deliver(a, [UInt8(i)]) }
        channels.deliver(b, [9])
        channels.deliver(1000, [1])  // no such channel: dropped
        channels.finish(a)
        var got: [UInt8] = []
        for await chunk in streamA { got += chunk }
        #expect(got == (0..<100).map { UInt8($0) })
        channels.finishAll()
        var gotB: [UInt8] = []
        for await chunk in streamB { gotB += chunk }
        #expect(gotB == [9])
        var gotC = 0
        for await _ in streamC { gotC += 1 }
        #expect(gotC == 0)
    }

    @Test("a channel opened after its link closed ends at once, so nothing waits on it")
    func afterClose() async {
        let channels = LinkChannels()
        channels.finishAll()
        let (_, late) = channels.add()
        channels.deliver(1, [1, 2, 3])
        var got = 0
        for await _ in late { got += 1 }
        #expect(got == 0)
    }

    @Test("relays forget themselves when they end: a long-lived link holds only the channels open now")
    func relaysForget() async throws {
        let relays = RelayTasks()
        for ch in 1...200 { relays.start(ch) { try? await Task.sleep(for: .milliseconds(1)) } }
        let deadline = ContinuousClock.now + .seconds(10)
        while relays.count > 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(relays.count == 0)
        // One that never ends stays until cancelled with its link.
        relays.start(1) { try? await Task.sleep(for: .seconds(60)) }
        #expect(relays.count == 1)
        relays.cancelAll()
        while relays.count > 0 && ContinuousClock.now < deadline + .seconds(10) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(relays.count == 0)
    }
}
