// swift-tools-version:5.9
// HarnessCore: the bundle reader, run protocol and result document of the shvit-edge iOS harness.
// A mirror of the Kotlin core (android_harness/core/src/main/kotlin/dev/shvitedge/harness/core/), file for file.
import PackageDescription

let package = Package(
    name: "HarnessCore",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "HarnessCore", targets: ["HarnessCore"]),
    ],
    targets: [
        .target(name: "HarnessCore", path: "Sources/HarnessCore"),
        .testTarget(name: "HarnessCoreTests", dependencies: ["HarnessCore"], path: "Tests/HarnessCoreTests"),
    ]
)
