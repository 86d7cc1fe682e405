public import ContainariumCore
public import ContainariumService

/// A connection to another node's daemon, as the platform uses it: every per-environment verb
/// the control plane forwards, typed in the platform's own views. The daemon's
/// `GRPCNodeConnection` (the generated stubs of proto/containarium/v1, through the member's
/// link or at its address) is the one implementation; the platform never sees the transport.
/// Calls run on the node as `control-plane`: the control plane has authorized and audited them.
public protocol NodeConnection: Sendable {
    func listContainers() async throws(ContainariumError) -> [ContainerView]
    func container(_ user: Username) async throws(ContainariumError) -> ContainerView
    func delete(_ user: Username, force: Bool) async throws(ContainariumError)
    func power(_ user: Username, _ action: ControlPlane.PowerAction, force: Bool) async throws(ContainariumError) -> ContainerView
    func resize(_ user: Username, cpu: String?, memory: String?, disk: String?) async throws(ContainariumError) -> ContainerView
    /// Run `command` as `account` in the environment (nil: root).
    func exec(_ user: Username, _ command: [String], account: String?) async throws(ContainariumError) -> ExecResult
    /// Install a stack; the answer is the stack's check output.
    func installStack(_ user: Username, stack: String) async throws(ContainariumError) -> String
    func cleanupDisk(_ user: Username) async throws(ContainariumError) -> CleanupView
    /// The keys that open the owner's account, as authorized_keys lines.
    func keys(_ user: Username) async throws(ContainariumError) -> [String]
    func credentials(_ user: Username) async throws(ContainariumError) -> InstanceCredentials
    /// Scan the environment on that node (its own scan slots and scanner plugins).
    func scan(_ user: Username, scanner: String) async throws(ContainariumError) -> ScanReport
    func addKey(_ user: Username, _ key: SSHPublicKey) async throws(ContainariumError)
    func removeKey(_ user: Username, fingerprint: String) async throws(ContainariumError)
    func addCollaborator(_ user: Username, _ other: Username, keys: [SSHPublicKey], sudo: Bool, containerRuntime: Bool) async throws(ContainariumError)
    func removeCollaborator(_ user: Username, _ other: Username) async throws(ContainariumError)
    func metricsHistory(_ user: Username) async throws(ContainariumError) -> [UsageSample]
    func setPluginEnabled(_ id: String, enabled: Bool, force: Bool) async throws(ContainariumError) -> PluginToggleView

    /// A create the node places on its own backends: its progress goes to `progress`; returns
    /// the environment.
    func create(_ request: CreateEnvironmentRequest, progress: @escaping @Sendable (StepProgress) -> Void) async throws(ContainariumError) -> ContainerView

    /// A console: `input` goes to the console in order; `opened` runs once the node has opened
    /// it; `output` gets what the console sends; `ended` runs when the node ends the call (the
    /// owner of `input` should then finish it, so that the call can return).
    func console(username: String, kind: String, input: AsyncStream<[UInt8]>, opened: @escaping @Sendable () -> Void,
                 output: @escaping @Sendable ([UInt8]) async -> Void, ended: @escaping @Sendable () -> Void) async throws(ContainariumError)
}

/// Makes connections to members: the daemon injects it when it builds the `Cluster`.
public protocol NodeConnector: Sendable {
    /// A member's node API through the local end of its link.
    func connection(linkSocket: String) -> any NodeConnection
    /// A member at its advertised HOST:PORT, with client certificates and a token.
    func connection(address: String, certsDir: String?, token: String?) throws(ContainariumError) -> any NodeConnection
}

/// The local ends of the links members keep open to this control plane (the daemon's
/// `NodeLinks`): a unix socket per node and target ("api" or "ssh") while the link is up.
public protocol LinkSockets: Sendable {
    func socket(of node: String, _ target: String) -> String?
    /// End `node`'s link, if it holds one (it was removed from the cluster).
    func disconnect(_ node: String)
}
