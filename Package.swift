// swift-tools-version: 6.1
import PackageDescription

// CI and scripts/test.sh set CONTAINARIUM_WERROR=1: warnings are errors in our own targets
// (never in dependencies, which SwiftPM builds with warnings suppressed).
let werror = Context.environment["CONTAINARIUM_WERROR"] == "1"

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
] + (werror ? [.unsafeFlags(["-warnings-as-errors"])] : [])

let package = Package(
    name: "containarium",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "containarium", targets: ["containarium"]),
        // Plugins are shared libraries loaded by the host with dlopen; never linked into it.
        .library(name: "IncusLXC", type: .dynamic, targets: ["IncusLXC"]),
        .library(name: "QemuWindows", type: .dynamic, targets: ["QemuWindows"]),
        // scanner/1 plugins: ClamAV (clamd, else clamscan) and Trivy (secrets, vulnerabilities, misconfigurations).
        .library(name: "ClamAVScanner", type: .dynamic, targets: ["ClamAVScanner"]),
        .library(name: "TrivyScanner", type: .dynamic, targets: ["TrivyScanner"]),
        // node.lifecycle/1 plugin: GCE spot VMs over the Compute Engine API and the metadata server.
        .library(name: "GCESpot", type: .dynamic, targets: ["GCESpot"]),
        // Test double of an instances/1 backend, loaded by the in-process tests with dlopen.
        .library(name: "FakeInstances", type: .dynamic, targets: ["FakeInstances"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // The daemon (issue 3): REST, JWT, gRPC with mTLS, SQLite and PostgreSQL state.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.7.1"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // The SSH gateway (issue 4).
        .package(url: "https://github.com/apple/swift-nio-ssh", from: "0.15.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        // The API contract (proto/): generated messages and gRPC stubs (scripts/gen-proto.sh).
        // Exact: Sources/ContainariumProto is generated with these versions (scripts/gen-proto.sh --check).
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
        // Metrics (issue 19): the swift-metrics API, exported in Prometheus's text format.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // MCP (issue 20): the daemon's API as tools, resources and prompts (streamable HTTP at /mcp).
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk", from: "0.12.1"),
    ],
    targets: [
        // The C header of the plugin ABI (plus compile-time layout checks).
        .target(
            name: "PluginABI", path: "Sources/PluginABI", exclude: ["README.md"],
            cSettings: [.unsafeFlags(["-std=c99", "-Wall", "-Wextra", "-pedantic"] + (werror ? ["-Werror"] : []))]),

        // Generated from proto/ by scripts/gen-proto.sh (committed; the build never runs protoc).
        .target(
            name: "ContainariumProto",
            dependencies: [
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ],
            exclude: ["README.md"],
            swiftSettings: [.swiftLanguageMode(.v6)]),

        // The client of the API: the generated stubs over one connection type (unix socket or
        // HOST:PORT with mTLS), with errors as ContainariumError. The CLI's remote mode, nodes
        // and the control plane's calls to its members use it.
        .target(
            name: "ContainariumClient",
            dependencies: [
                "ContainariumCore", "ContainariumProto",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // Leaf: errors, validation of user input, wire models. Foundation only.
        .target(name: "ContainariumCore", exclude: ["README.md"], swiftSettings: strict),

        // Helpers for plugins written in Swift: C entry glue, JSON, completion, cancellation.
        .target(name: "PluginKit", dependencies: ["PluginABI", "ContainariumCore"], exclude: ["README.md"], swiftSettings: strict),

        // Manifest discovery, dlopen, version negotiation, extension lookup, async bridging.
        .target(
            name: "PluginHost",
            dependencies: ["PluginABI", "ContainariumCore", .product(name: "Logging", package: "swift-log"),
                           .product(name: "CoreMetrics", package: "swift-metrics")],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // The service layer every adapter (CLI today; REST, gRPC, web later) calls.
        .target(
            name: "ContainariumService",
            dependencies: ["PluginHost", "ContainariumCore", "ContainariumTelemetry", .product(name: "Logging", package: "swift-log")],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // Metrics and notifications: the Prometheus registry a daemon or sentinel exports at
        // /metrics (swift-metrics handles over swift-prometheus), and webhook delivery (generic
        // JSON, Slack, Zulip; HMAC-signed, retried) for alerts and the sentinel.
        .target(
            name: "ContainariumTelemetry",
            dependencies: [
                "ContainariumCore",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // Persistent state: one store protocol, SQLite (GRDB) and PostgreSQL (postgres-nio),
        // one set of versioned migrations.
        .target(
            name: "ContainariumStore",
            dependencies: [
                "ContainariumCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // The unified scheduler (issue 5): filters and scores nodes for each placement. Pure
        // logic, no I/O, so it is tested as tables and benchmarked on synthetic clusters.
        .target(name: "ContainariumScheduler", exclude: ["README.md"], swiftSettings: strict),
        .executableTarget(name: "scheduler-bench", dependencies: ["ContainariumScheduler"], path: "bench/SchedulerBench", swiftSettings: strict),

        // The SSH gateway: an SSH server (swift-nio-ssh) that routes each login to the
        // environment it names and relays sessions, SFTP and forwards to that environment's sshd.
        .target(
            name: "ContainariumGateway",
            dependencies: [
                "ContainariumCore", "ContainariumStore",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOSSH", package: "swift-nio-ssh"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // The platform: the control plane every adapter calls (authorization, audit, operations,
        // the inventory cache, the cluster and forwarding to its nodes, the reconciler). No
        // transport: members are reached through the `NodeConnector` the daemon injects.
        .target(
            name: "ContainariumPlatform",
            dependencies: [
                "ContainariumService", "ContainariumStore", "ContainariumScheduler", "ContainariumGateway", "ContainariumCore", "PluginHost",
                "ContainariumTelemetry", .product(name: "CoreMetrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // The daemon: adapters and wiring only. REST (Hummingbird), gRPC (mTLS) and the dashboard's
        // HTTP and WebSocket routes over the platform, JWT, certificates, node links.
        .target(
            name: "ContainariumDaemon",
            dependencies: [
                "ContainariumPlatform", "ContainariumProto", "ContainariumClient", "ContainariumTelemetry",
                .product(name: "MCP", package: "swift-sdk"),
                .product(name: "CoreMetrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus"),
                "ContainariumService", "ContainariumStore", "ContainariumCore", "PluginHost", "ContainariumGateway", "ContainariumScheduler",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // The sentinel: the always-on process in front of a preemptible machine (forwarding,
        // maintenance answers, restarts through the machine's node.lifecycle/1 plugin).
        .target(
            name: "ContainariumSentinel",
            dependencies: [
                "ContainariumService", "ContainariumGateway", "ContainariumCore", "PluginHost", "ContainariumTelemetry",
                .product(name: "CoreMetrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOSSH", package: "swift-nio-ssh"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // The `containarium` executable: CLI adapter over the service layer.
        .executableTarget(
            name: "containarium",
            dependencies: [
                "ContainariumService", "PluginHost", "ContainariumCore", "ContainariumPlatform", "ContainariumDaemon", "ContainariumGateway",
                "ContainariumClient", "ContainariumProto", "ContainariumSentinel",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Host",
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // Backend plugin: Incus system containers over the Incus REST API (unix socket).
        .target(
            name: "IncusLXC",
            dependencies: ["PluginKit", "PluginABI", "ContainariumCore"],
            path: "Plugins/IncusLXC",
            exclude: ["plugin.json", "README.md"],
            swiftSettings: strict
        ),

        // Backend plugin: QEMU/KVM virtual machines (Windows Server with RDP) driven through QMP.
        .target(
            name: "QemuWindows",
            dependencies: ["PluginKit", "PluginABI", "ContainariumCore"],
            path: "Plugins/QemuWindows",
            exclude: ["plugin.json", "README.md"],
            swiftSettings: strict
        ),

        // What the scanner plugins share: roots confinement, the descriptor-based tree walk,
        // child processes with a deadline, strict configuration. Linked into each plugin.
        .target(
            name: "ScannerKit",
            dependencies: ["PluginKit", "ContainariumCore"],
            path: "Plugins/ScannerKit",
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // Scanner plugin: ClamAV over clamd's socket (zFILDES), clamscan when no clamd answers.
        .target(
            name: "ClamAVScanner",
            dependencies: ["ScannerKit", "PluginKit", "PluginABI", "ContainariumCore"],
            path: "Plugins/ClamAV",
            exclude: ["plugin.json", "README.md"],
            swiftSettings: strict
        ),

        // Scanner plugin: Trivy (`trivy rootfs`, offline).
        .target(
            name: "TrivyScanner",
            dependencies: ["ScannerKit", "PluginKit", "PluginABI", "ContainariumCore"],
            path: "Plugins/Trivy",
            exclude: ["plugin.json", "README.md"],
            swiftSettings: strict
        ),

        // Lifecycle plugin: GCE spot VMs (status/start/stop over the Compute Engine API, the
        // metadata server's preemption and maintenance notices as events). _CryptoExtras signs
        // the service-account grant (RS256).
        .target(
            name: "GCESpot",
            dependencies: ["PluginKit", "PluginABI", "ContainariumCore", .product(name: "_CryptoExtras", package: "swift-crypto")],
            path: "Plugins/GCESpot",
            exclude: ["plugin.json", "README.md"],
            swiftSettings: strict
        ),

        // The in-memory instances/1 backend the in-process tests load through PluginHost.
        .target(
            name: "FakeInstances",
            dependencies: ["PluginKit", "PluginABI", "ContainariumCore"],
            path: "Tests/FakeInstances",
            exclude: ["plugin.json", "README.md"],
            swiftSettings: strict
        ),

        // Helpers shared by the test targets (process runner, key pairs, fixture plugin dirs).
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(
            name: "ContainariumTests",
            dependencies: [
                "ContainariumCore", "PluginHost", "PluginKit", "ContainariumService", "PluginABI", "TestSupport",
                "ContainariumStore", "ContainariumPlatform", "ContainariumDaemon", "ContainariumGateway", "ContainariumScheduler", "ContainariumTelemetry",
                .product(name: "X509", package: "swift-certificates"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        // The service layer, REST and gRPC in one process over the fake backend: seconds, any host.
        .testTarget(
            name: "InProcessTests",
            dependencies: [
                "ContainariumCore", "PluginHost", "ContainariumService", "ContainariumStore", "ContainariumPlatform", "ContainariumDaemon", "TestSupport",
                "ContainariumProto", "ContainariumClient", "ContainariumScheduler", "ContainariumTelemetry", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The scanner plugins against the real clamd, clamscan and trivy (scripts/scanners.sh).
        .testTarget(
            name: "ScannerTests",
            dependencies: ["ContainariumCore", "PluginHost", "TestSupport", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["ContainariumCore", "PluginHost", "ContainariumService", "TestSupport", "ContainariumStore", "ContainariumDaemon", "ContainariumGateway",
                           .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
    ]
)
