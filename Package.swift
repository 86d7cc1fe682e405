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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // The C header of the plugin ABI (plus compile-time layout checks).
        .target(
            name: "PluginABI", path: "Sources/PluginABI", exclude: ["README.md"],
            cSettings: [.unsafeFlags(["-std=c99", "-Wall", "-Wextra", "-pedantic"] + (werror ? ["-Werror"] : []))]),

        // Leaf: errors, validation of user input, wire models. Foundation only.
        .target(name: "ContainariumCore", exclude: ["README.md"], swiftSettings: strict),

        // Helpers for plugins written in Swift: C entry glue, JSON, completion, cancellation.
        .target(name: "PluginKit", dependencies: ["PluginABI", "ContainariumCore"], exclude: ["README.md"], swiftSettings: strict),

        // Manifest discovery, dlopen, version negotiation, extension lookup, async bridging.
        .target(
            name: "PluginHost",
            dependencies: ["PluginABI", "ContainariumCore", .product(name: "Logging", package: "swift-log")],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // The service layer every adapter (CLI today; REST, gRPC, web later) calls.
        .target(
            name: "ContainariumService",
            dependencies: ["PluginHost", "ContainariumCore", .product(name: "Logging", package: "swift-log")],
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // The `containarium` executable: CLI adapter over the service layer.
        .executableTarget(
            name: "containarium",
            dependencies: [
                "ContainariumService", "PluginHost", "ContainariumCore",
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

        // Helpers shared by the test targets (process runner, key pairs, fixture plugin dirs).
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(
            name: "ContainariumTests",
            dependencies: ["ContainariumCore", "PluginHost", "ContainariumService", "PluginABI", "TestSupport"],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["ContainariumCore", "PluginHost", "ContainariumService", "TestSupport"],
            swiftSettings: strict
        ),
    ]
)
