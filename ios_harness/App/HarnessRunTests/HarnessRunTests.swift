// Runs one bundle headless, on a device or a simulator, hosted by the app (so Core ML runs exactly as it does in the
// app), and attaches the result document to the test result as "shvit-edge-result.json" (kept always).
//
// The bundle, first found wins:
//   1. SHVIT_EDGE_BUNDLE (the test plan's or scheme's environment; from the command line pass
//      TEST_RUNNER_SHVIT_EDGE_BUNDLE=... to xcodebuild, which hands it to the test process without the prefix):
//      an absolute path (a simulator sees the Mac's files), or a path relative to the app's Documents folder
//      (copy the bundle there with Finder / `xcrun devicectl device copy to ...`); a folder or a .zip;
//   2. a bundle copied into this test bundle's resources at build time: HarnessRunTests/Resources/bundle.zip or
//      HarnessRunTests/Resources/bundle/ (project.yml adds the folder when it exists; device farms use this).
// Optional: SHVIT_EDGE_PAIRING (the pairing JSON of `shvit-edge results listen`) posts the result too, and the test
// then requires a 201.
// Export the attachment: README.md ("Bringing results home").
import Foundation
import XCTest
@testable import ShvitEdgeHarness

final class HarnessRunTests: XCTestCase {

    override func setUp() {
        super.setUp()
        continueAfterFailure = true
        executionTimeAllowance = 3 * 60 * 60 // a full sweep (4 compute-unit settings x 100 iterations) fits easily
    }

    /// The bundle to run (a folder or a .zip), or nil when none is given.
    private func bundleLocation() -> URL? {
        let environment = ProcessInfo.processInfo.environment
        if let given = environment["SHVIT_EDGE_BUNDLE"], !given.isEmpty {
            let url = given.hasPrefix("/") ? URL(fileURLWithPath: given)
                : BundleStore.documents.appendingPathComponent(given)
            return url
        }
        // project.yml copies HarnessRunTests/Resources as a folder reference: Resources/bundle.zip in the test bundle
        let resources = Foundation.Bundle(for: HarnessRunTests.self)
        for subdirectory in [nil, "Resources"] as [String?] {
            if let zip = resources.url(forResource: "bundle", withExtension: "zip", subdirectory: subdirectory) { return zip }
            if let folder = resources.url(forResource: "bundle", withExtension: nil, subdirectory: subdirectory) { return folder }
        }
        return nil
    }

    func testRunBundle() throws {
        guard let location = bundleLocation() else {
            throw XCTSkip("no bundle: set SHVIT_EDGE_BUNDLE, or put bundle.zip (or a bundle/ folder) in HarnessRunTests/Resources")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: location.path), "\(location.path) does not exist on this device")
        // a zip (and a folder outside Documents) is imported into Documents/Bundles first, as the app does
        let root = try BundleStore.importItem(location) { print("shvit-edge: \($0)") }
        let outcome = try BundleRunner.run(root, message: { print("shvit-edge: \($0)") })

        let attachment = XCTAttachment(contentsOfFile: outcome.file)
        attachment.name = "shvit-edge-result.json"
        attachment.lifetime = .keepAlways
        add(attachment)
        print("shvit-edge: result document \(outcome.file.path)")
        print("shvit-edge: \(outcome.okCount) ok, \(outcome.failedCount) failed, \(outcome.skippedCount) skipped, " +
              "\(outcome.parityFailures) beyond tolerance (the app's quick look; the host judges)")
        for s in outcome.summaries {
            var line = "shvit-edge: \(s.artifact) \(s.setting) \(s.status)"
            if let error = s.error { line += ": \(error)" }
            if let p50 = s.p50 { line += String(format: " p50 %.3f ms", p50) }
            if let cosine = s.cosine { line += String(format: " cosine %.6f", cosine) }
            print(line)
        }

        // the device measures, the host judges: a run that failed is recorded (and shown), not a test failure,
        // but a bundle whose Core ML artifacts could not run at all is one
        let attempted = outcome.summaries.filter {
            !($0.status == "skipped" && ($0.error ?? "").contains("does not run on iOS"))
        }
        XCTAssertFalse(attempted.isEmpty, "the bundle has no Core ML artifact to run on iOS")
        XCTAssertGreaterThan(outcome.okCount, 0, "no run completed")

        if let pairingText = ProcessInfo.processInfo.environment["SHVIT_EDGE_PAIRING"], !pairingText.isEmpty {
            let done = expectation(description: "posted")
            var answer: (status: Int, message: String)?
            Task {
                answer = await BundleRunner.post(outcome, pairingJSON: pairingText)
                done.fulfill()
            }
            wait(for: [done], timeout: 180)
            XCTAssertEqual(201, answer?.status, "results listen answered: \(answer?.message ?? "nothing")")
        }
    }
}
