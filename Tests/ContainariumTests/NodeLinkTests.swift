import ContainariumCore
@testable import ContainariumDaemon
import ContainariumService
import Foundation
import NIOCore
import Testing

@Suite("The node link's frames and channels, and the create message nodes are handed")
struct NodeLinkTests {
    @Test("every field of a create survives the trip to another node")
    func createRoundTrip() {
        var full = CreateEnvironmentRequest(
            username: "alice", sshKeys: ["ssh-ed25519 AAAA a@b"], image: "images:debian/12", osType: "linux", cpu: "2", memory: "2GB",
            disk: "10GB", autostart: false, nesting: true, stack: "nodejs", labels: ["team": "x", "node.zone": "a"], gpus: 1,
            gpuModel: "A100", gpuDevices: ["0000:65:00.0"], node: "n1", runtimes: [.docker, .podman])
        full.kind = "vm"
        let back = CreateEnvironmentRequest(grpcMessage: full.grpcMessage)
        #expect(back.username == full.username && back.sshKeys == full.sshKeys && back.image == full.image && back.osType == full.osType)
        #expect(back.cpu == full.cpu && back.memory == full.memory && back.disk == full.disk && back.autostart == false && back.nesting == true)
        #expect(back.stack == full.stack && back.labels == full.labels && back.gpus == 1 && back.gpuModel == "A100")
        #expect(back.gpuDevices == full.gpuDevices && back.node == "n1" && Set(back.runtimes) == [.docker, .podman] && back.kind == "vm")
        let bare = CreateEnvironmentRequest(grpcMessage: CreateEnvironmentRequest(username: "bob", sshKeys: []).grpcMessage)
        #expect(bare.image == nil && bare.kind == nil && bare.autostart == nil && bare.gpus == nil && bare.runtimes.isEmpty && bare.labels.isEmpty)
    }

    @Test("frames: data is carried byte for byte; malformed frames are ignored, never trusted")
    func frames() throws {
        let bytes: [UInt8] = Array(0...255)
        let f = try #require(LinkFrame.parse(LinkFrame.data(7, ByteBuffer(bytes: bytes))))
        #expect(f.ch == 7 && f.op == "data" && f.bytes == bytes)
        let open = try #require(LinkFrame.parse(LinkFrame.open(3, "ssh")))
        #expect(open.op == "open" && open.target == "ssh")
        #expect(LinkFrame.parse(LinkFrame.close(9))?.op == "close")
        for bad: JSONValue in [.object([:]), .object(["ch": .number(0), "op": .string("data")]), .object(["ch": .number(1.5), "op": .string("data")]),
                               .object(["ch": .string("1"), "op": .string("data")]), .object(["ch": .number(-1), "op": .string("close")]),
                               .object(["ch": .number(1e12), "op": .string("close")]), .string("x")] {
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
