import ContainariumCore
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSH
import Synchronization

/// The gateway's own SSH connection to an environment's sshd: one per client connection, made
/// on its first channel, logged in as the route's account with the gateway's upstream key, and
/// checked against the environment's pinned host keys.
enum Upstream {
    struct Failure: Error, CustomStringConvertible {
        var authRejected: Bool
        var hostKeyRejected: Bool
        var localAddress: String?
        var cause: String
        var description: String {
            authRejected ? "the environment's sshd refused the gateway's key" :
                hostKeyRejected ? "the environment's sshd presented a host key that is not pinned" : cause
        }
    }

    final class Flags: Sendable {
        let state = Mutex<(auth: Bool, host: Bool)>((false, false))
    }

    static func connect(route: GatewayRoute, loop: any EventLoop, gateway: SSHGateway) -> EventLoopFuture<any Channel> {
        let promise = loop.makePromise(of: (any Channel).self)
        promise.completeWithTask { try await connectEnrolling(route: route, loop: loop, gateway: gateway) }
        return promise.futureResult
    }

    /// Log in; if the environment does not know the gateway yet (made before the gateway ran,
    /// or its keys were reset), enroll it through the control plane and try again.
    static func connectEnrolling(route: GatewayRoute, loop: any EventLoop, gateway: SSHGateway) async throws -> any Channel {
        // Through another node's gateway: that gateway enrolls the environment itself.
        if route.via != nil { return try await attemptRetrying(route: route, loop: loop, gateway: gateway) }
        do {
            return try await attemptRetrying(route: route, loop: loop, gateway: gateway)
        } catch let failure as Failure where failure.authRejected || failure.hostKeyRejected {
            var route = route
            route.hostKeys = try await gateway.directory.enroll(
                environment: route.environment, gatewayKey: gateway.keys.upstreamPublicKey, from: failure.localAddress ?? route.address)
            gateway.logger.info("SSH gateway: enrolled \(route.containerName) (\(failure))")
            // sshd re-executes itself to read the new configuration: retry for a moment.
            var last: any Error = failure
            for _ in 0..<30 {
                do { return try await attempt(route: route, loop: loop, gateway: gateway) } catch { last = error }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw last
        }
    }

    /// sshd drops connections beyond MaxStartups before they authenticate; a burst of logins
    /// may hit that before enrollment raised it. Such failures are retried with backoff.
    static func attemptRetrying(route: GatewayRoute, loop: any EventLoop, gateway: SSHGateway) async throws -> any Channel {
        var delay = 50
        for _ in 0..<5 {
            do {
                return try await attempt(route: route, loop: loop, gateway: gateway)
            } catch let failure as Failure where !failure.authRejected && !failure.hostKeyRejected {
                gateway.logger.debug("SSH gateway: upstream login to \(route.containerName) failed (\(failure)); retrying")
            }
            try await Task.sleep(for: .milliseconds(delay + Int.random(in: 0...delay)))
            delay *= 2
        }
        return try await attempt(route: route, loop: loop, gateway: gateway)
    }

    static func attempt(route: GatewayRoute, loop: any EventLoop, gateway: SSHGateway) async throws -> any Channel {
        let ready = loop.makePromise(of: Void.self)
        let flags = Flags()
        let channel: any Channel
        do {
            let bootstrap = ClientBootstrap(group: loop)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let config = SSHClientConfiguration(
                            userAuthDelegate: UpstreamUserAuth(account: route.via == nil ? route.account : route.hopUser,
                                                               key: gateway.keys.upstreamKey, flags: flags),
                            serverAuthDelegate: PinnedHostKeys(pinned: route.via.map { [$0.hostKey] } ?? route.hostKeys, flags: flags))
                        let ssh = NIOSSHHandler(
                            role: .client(config), allocator: channel.allocator,
                            inboundChildChannelInitializer: { child, _ in
                                // The environment may not open channels towards the gateway (agent, X11, -R).
                                child.eventLoop.makeFailedFuture(GatewayError.refused("channels from the environment are refused"))
                            })
                        try channel.pipeline.syncOperations.addHandlers([ssh, UpstreamWatcher(ready: ready)])
                    }
                }
            if route.via == nil, let refused = GatewayTargets.refusal(route.address) {
                throw GatewayError.refused(refused)
            }
            if let path = route.via?.socketPath {
                channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            } else {
                channel = try await bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .connect(host: route.via?.host ?? route.address, port: route.via?.port ?? 22).get()
            }
        } catch {
            ready.fail(error)  // never completed otherwise: the watcher was not installed
            throw Failure(authRejected: false, hostKeyRejected: false, localAddress: nil, cause: "cannot connect to \(route.via.map { "\($0.host):\($0.port)" } ?? route.address + ":22"): \(error)")
        }
        let local = channel.localAddress?.ipAddress
        do {
            try await ready.futureResult.get()
        } catch {
            channel.close(promise: nil)
            let f = flags.state.withLock { $0 }
            throw Failure(authRejected: f.auth, hostKeyRejected: f.host, localAddress: local, cause: "\(error)")
        }
        return channel
    }
}

final class UpstreamUserAuth: NIOSSHClientUserAuthenticationDelegate, Sendable {
    let account: String
    let key: NIOSSHPrivateKey
    let flags: Upstream.Flags
    let offered = Mutex(false)
    init(account: String, key: NIOSSHPrivateKey, flags: Upstream.Flags) {
        self.account = account
        self.key = key
        self.flags = flags
    }

    func nextAuthenticationType(availableMethods: NIOSSHAvailableUserAuthenticationMethods,
                                nextChallengePromise: EventLoopPromise<NIOSSHUserAuthenticationOffer?>) {
        let first = offered.withLock { o in defer { o = true }; return !o }
        guard first, availableMethods.contains(.publicKey) else {
            flags.state.withLock { $0.auth = true }
            nextChallengePromise.fail(GatewayError.upstream("the environment refused the gateway's key"))
            return
        }
        nextChallengePromise.succeed(NIOSSHUserAuthenticationOffer(username: account, serviceName: "ssh-connection",
                                                                   offer: .privateKey(.init(privateKey: key))))
    }
}

final class PinnedHostKeys: NIOSSHClientServerAuthenticationDelegate, Sendable {
    let pinned: Set<String>
    let flags: Upstream.Flags
    init(pinned: [String], flags: Upstream.Flags) {
        self.pinned = Set(pinned.compactMap(PinnedHostKeys.normalize))
        self.flags = flags
    }

    /// "type base64" without a comment.
    static func normalize(_ line: String) -> String? {
        let parts = line.split(separator: " ")
        guard parts.count >= 2 else { return nil }
        return "\(parts[0]) \(parts[1])"
    }

    func validateHostKey(hostKey: NIOSSHPublicKey, validationCompletePromise: EventLoopPromise<Void>) {
        if pinned.contains(String(openSSHPublicKey: hostKey)) {
            validationCompletePromise.succeed(())
        } else {
            flags.state.withLock { $0.host = true }
            validationCompletePromise.fail(GatewayError.upstream("host key not pinned"))
        }
    }
}

/// Completes `ready` when the upstream login succeeded, or fails it with the reason.
final class UpstreamWatcher: ChannelInboundHandler {
    typealias InboundIn = Any
    let ready: EventLoopPromise<Void>
    var done = false
    init(ready: EventLoopPromise<Void>) { self.ready = ready }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is UserAuthSuccessEvent, !done {
            done = true
            ready.succeed(())
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done {
            done = true
            ready.fail(error)
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            ready.fail(GatewayError.upstream("the environment's sshd closed the connection"))
        }
        context.fireChannelInactive()
    }
}
