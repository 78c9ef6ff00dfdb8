// The one screen: the bundle, the run (progress, then a summary with the quick parity check), the pairing with
// `results listen`, and the outbox.
import HarnessCore
import SwiftUI
import UniformTypeIdentifiers

struct ContentView: View {
    @EnvironmentObject var model: AppModel
    @State private var importing = false
    @State private var scanning = false
    @State private var pasting = false
    @State private var pasted = ""

    var body: some View {
        NavigationStack {
            Form {
                bundleSection
                runSection
                if let outcome = model.outcome { summarySection(outcome) }
                pairingSection
                if !model.outbox.isEmpty { outboxSection }
            }
            .navigationTitle("shvit-edge")
            .toolbar {
                ToolbarItem(placement: .navigationBarTrailing) {
                    Button { model.refresh() } label: { Image(systemName: "arrow.clockwise") }
                        .disabled(model.running)
                }
            }
            .fileImporter(isPresented: $importing, allowedContentTypes: [.zip, .folder], allowsMultipleSelection: false) { result in
                switch result {
                case let .success(urls):
                    if let url = urls.first { model.open(url) }
                case let .failure(error):
                    model.problem = HarnessError.describe(error)
                }
            }
            .sheet(isPresented: $scanning) {
                NavigationStack {
                    QRScannerView(onCode: { code in
                        scanning = false
                        model.pair(code)
                    }, onProblem: { why in
                        scanning = false
                        model.problem = why
                    })
                    .ignoresSafeArea()
                    .navigationTitle("Scan the listen QR code")
                    .navigationBarTitleDisplayMode(.inline)
                    .toolbar {
                        ToolbarItem(placement: .cancellationAction) { Button("Cancel") { scanning = false } }
                    }
                }
            }
            .sheet(isPresented: $pasting) {
                NavigationStack {
                    Form {
                        Section(footer: Text("The JSON `shvit-edge results listen --host 0.0.0.0` prints: {\"url\": \"http://HOST:8765/results\", \"token\": \"TOKEN\"}")) {
                            TextEditor(text: $pasted)
                                .font(.system(.footnote, design: .monospaced))
                                .frame(minHeight: 120)
                                .autocorrectionDisabled(true)
                                .textInputAutocapitalization(.never)
                        }
                    }
                    .navigationTitle("Paste the pairing")
                    .navigationBarTitleDisplayMode(.inline)
                    .toolbar {
                        ToolbarItem(placement: .cancellationAction) { Button("Cancel") { pasting = false } }
                        ToolbarItem(placement: .confirmationAction) {
                            Button("Pair") {
                                pasting = false
                                model.pair(pasted)
                            }
                        }
                    }
                }
            }
            .alert("shvit-edge", isPresented: Binding(get: { model.problem != nil }, set: { if !$0 { model.problem = nil } })) {
                Button("OK", role: .cancel) { model.problem = nil }
            } message: {
                Text(model.problem ?? "")
            }
        }
    }

    private var bundleSection: some View {
        Section(header: Text("Bundle"), footer: Text("A .zip or a folder from `shvit-edge bundle`, from Files, AirDrop or Finder (Documents).")) {
            Button { importing = true } label: { Label("Open a bundle…", systemImage: "folder") }
                .disabled(model.running)
            ForEach(model.zips, id: \.self) { zip in
                Button { model.open(zip) } label: {
                    Label("Import \(zip.lastPathComponent)", systemImage: "doc.zipper")
                }
                .disabled(model.running)
            }
            if model.bundles.isEmpty {
                Text("No bundle on this device yet.").foregroundColor(.secondary)
            }
            ForEach(model.bundles) { found in
                Button {
                    model.selected = found
                } label: {
                    HStack {
                        Image(systemName: model.selected == found ? "checkmark.circle.fill" : "circle")
                        VStack(alignment: .leading) {
                            Text(found.title)
                            Text(found.subtitle).font(.caption).foregroundColor(.secondary)
                        }
                    }
                }
                .disabled(model.running)
                .swipeActions {
                    Button(role: .destructive) { model.delete(found) } label: { Label("Delete", systemImage: "trash") }
                }
            }
        }
    }

    private var runSection: some View {
        Section(header: Text("Run"), footer: Text("Every Core ML artifact under each compute-unit setting of the bundle; other targets are recorded as skipped. The device measures, the host judges (`shvit-edge results ingest`).")) {
            Picker("Cooldown between runs", selection: Binding(get: { model.cooldownSeconds }, set: { model.setCooldown($0) })) {
                Text("none").tag(0.0)
                Text("5 s").tag(5.0)
                Text("15 s").tag(15.0)
                Text("30 s").tag(30.0)
                Text("60 s").tag(60.0)
            }
            .disabled(model.running)
            if model.running {
                HStack {
                    ProgressView()
                    Text(model.status).font(.footnote).lineLimit(3)
                }
                Button(role: .destructive) { model.stop() } label: { Label("Stop", systemImage: "stop.circle") }
            } else {
                Button { model.run() } label: { Label("Run \(model.selected?.title ?? "")", systemImage: "play.circle") }
                    .disabled(model.selected == nil)
                Text(model.status).font(.footnote).foregroundColor(.secondary)
            }
        }
    }

    private func summarySection(_ outcome: RunOutcome) -> some View {
        Section(header: Text("Summary"), footer: Text("Quick parity (cosine, max abs, top-1, SQNR against the bundle's reference, by its tolerance) is the app's own look: the host judges again at ingest.")) {
            Text("\(outcome.okCount) ok · \(outcome.failedCount) failed · \(outcome.skippedCount) skipped · \(outcome.parityFailures) beyond tolerance")
                .font(.subheadline)
            ForEach(outcome.summaries) { s in
                VStack(alignment: .leading, spacing: 2) {
                    HStack {
                        Image(systemName: icon(s))
                            .foregroundColor(color(s))
                        Text("\(s.artifact)").font(.footnote).lineLimit(1)
                        Spacer()
                        Text(s.setting).font(.footnote.monospaced())
                    }
                    if s.status == RunRecord.OK {
                        Text(line(s)).font(.caption.monospaced()).foregroundColor(.secondary)
                        if !s.problems.isEmpty {
                            Text(s.problems.joined(separator: "; ")).font(.caption).foregroundColor(.red)
                        }
                    } else if let error = s.error {
                        Text("\(s.status): \(error)").font(.caption).foregroundColor(.secondary)
                    }
                }
            }
            ShareLink(item: outcome.file) { Label("Share the result document", systemImage: "square.and.arrow.up") }
        }
    }

    private func line(_ s: RunSummary) -> String {
        var parts: [String] = []
        if let p50 = s.p50 { parts.append(String(format: "p50 %.2f ms", p50)) }
        if let load = s.loadMs { parts.append(String(format: "load %.0f ms", load)) }
        if let compile = s.compileMs { parts.append(String(format: "compile %.0f ms", compile)) }
        if let cosine = s.cosine { parts.append(String(format: "cos %.6f", cosine)) }
        return parts.joined(separator: " · ")
    }

    private func icon(_ s: RunSummary) -> String {
        switch s.status {
        case RunRecord.OK: return s.parityPass == false ? "exclamationmark.triangle.fill" : "checkmark.circle.fill"
        case RunRecord.FAILED: return "xmark.octagon.fill"
        default: return "minus.circle"
        }
    }

    private func color(_ s: RunSummary) -> Color {
        switch s.status {
        case RunRecord.OK: return s.parityPass == false ? .orange : .green
        case RunRecord.FAILED: return .red
        default: return .secondary
        }
    }

    private var pairingSection: some View {
        Section(header: Text("Results listen"), footer: Text("On the host: `shvit-edge results listen --host 0.0.0.0`, then scan its QR code. Results are also in Documents/Results (Files app).")) {
            if let pairing = model.pairing {
                Text(pairing.url).font(.footnote.monospaced())
                Toggle("Post each result when written", isOn: Binding(get: { model.postAutomatically }, set: { model.setPostAutomatically($0) }))
                Button(role: .destructive) { model.unpair() } label: { Text("Forget this pairing") }
            } else {
                Text("Not paired").foregroundColor(.secondary)
            }
            Button { scanning = true } label: { Label("Scan the QR code", systemImage: "qrcode.viewfinder") }
            Button { pasted = ""; pasting = true } label: { Label("Paste the pairing JSON", systemImage: "doc.on.clipboard") }
        }
    }

    private var outboxSection: some View {
        Section(header: Text("Outbox")) {
            ForEach(model.outbox) { item in
                VStack(alignment: .leading, spacing: 2) {
                    HStack {
                        Text(item.file).font(.footnote).lineLimit(1)
                        Spacer()
                        Text(item.state.rawValue).font(.caption).foregroundColor(item.state == .stored ? .green : .secondary)
                    }
                    Text(item.message).font(.caption).foregroundColor(.secondary).lineLimit(3)
                }
                .swipeActions {
                    if item.state != .stored && item.state != .refused {
                        Button { Task { await model.resend(item) } } label: { Label("Send", systemImage: "paperplane") }
                    }
                    Button(role: .destructive) { model.forget(item) } label: { Label("Forget", systemImage: "trash") }
                }
            }
            Button { Task { await model.postDue(force: true) } } label: { Label("Send pending now", systemImage: "paperplane") }
                .disabled(model.pairing == nil)
        }
    }
}
