// The shvit-edge iOS harness: opens a validation bundle (docs/bundle.md), runs its Core ML artifacts under every
// compute-unit setting the bundle asks for, writes the result document to Documents/Results and posts it to
// `shvit-edge results listen`. The bundle reader, the run protocol and the result document are HarnessCore's
// (a mirror of the Kotlin core); this target holds what is Apple's: Core ML, the device probe, files, the screen.
import SwiftUI

@main
struct ShvitEdgeHarnessApp: App {
    @StateObject private var model = AppModel()

    var body: some Scene {
        WindowGroup {
            ContentView()
                .environmentObject(model)
                // AirDrop, "Open in", the Files app: a .zip or a bundle folder handed to the app
                .onOpenURL { url in model.open(url) }
        }
    }
}
