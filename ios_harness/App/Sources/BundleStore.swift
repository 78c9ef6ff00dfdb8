// Where bundles and results live: the app's Documents folder (visible in the Files app and in Finder's file sharing,
// Info.plist UIFileSharingEnabled + LSSupportsOpeningDocumentsInPlace):
//   Documents/Bundles/<import id>/<bundle folder>   bundles imported from a .zip or a folder
//   Documents/<anything>/bundle.json                a bundle folder copied in by hand (Finder, Files)
//   Documents/Results/<bundle>-<time>.json         the result documents this app wrote
//   Documents/Outbox.json                           which results still have to be posted (Outbox.swift)
import Foundation
import HarnessCore

enum BundleStore {
    static var documents: URL {
        FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
    }

    static var bundlesFolder: URL { documents.appendingPathComponent("Bundles", isDirectory: true) }
    static var resultsFolder: URL { documents.appendingPathComponent("Results", isDirectory: true) }

    /// A bundle found on the device: its folder (holding bundle.json) and how to show it.
    struct Found: Identifiable, Hashable {
        let root: URL
        var id: String { root.path }
        var title: String { root.lastPathComponent }
        var subtitle: String { root.deletingLastPathComponent().path.replacingOccurrences(of: documents.path, with: "Documents") }
    }

    /// Every bundle folder under Documents (two levels down: Documents/X and Documents/Bundles/ID/X), and the .zip
    /// files at the top of Documents (imported when chosen).
    static func list() -> (bundles: [Found], zips: [URL]) {
        let fm = FileManager.default
        var bundles: [Found] = []
        var zips: [URL] = []
        let top = (try? fm.contentsOfDirectory(at: documents, includingPropertiesForKeys: [.isDirectoryKey])) ?? []
        for url in top {
            if url.pathExtension.lowercased() == "zip" { zips.append(url); continue }
            if fm.fileExists(atPath: url.appendingPathComponent(HarnessCore.Bundle.BUNDLE_JSON).path) {
                bundles.append(Found(root: url))
            }
        }
        let imports = (try? fm.contentsOfDirectory(at: bundlesFolder, includingPropertiesForKeys: nil)) ?? []
        for folder in imports {
            let root = HarnessCore.Bundle.findRoot(folder)
            if fm.fileExists(atPath: root.appendingPathComponent(HarnessCore.Bundle.BUNDLE_JSON).path) {
                bundles.append(Found(root: root))
            } else {
                // a folder holding the bundle folder (the import keeps the bundle's own name)
                for inner in (try? fm.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)) ?? [] {
                    let innerRoot = HarnessCore.Bundle.findRoot(inner)
                    if fm.fileExists(atPath: innerRoot.appendingPathComponent(HarnessCore.Bundle.BUNDLE_JSON).path) {
                        bundles.append(Found(root: innerRoot))
                    }
                }
            }
        }
        return (bundles.sorted { $0.root.path < $1.root.path }, zips.sorted { $0.path < $1.path })
    }

    /// Bring the bundle at `url` (a .zip, a bundle folder, or a bundle.json) into Documents/Bundles and return its
    /// folder. A zip is unpacked with HarnessCore's BundleZip (every entry rule checked before anything is written); a
    /// folder is copied as it is (a symlink stays a symlink, and Bundle.open then refuses it). The bundle keeps its
    /// own folder name (a result quotes it as `bundle.name`). Nothing is checked here beyond the zip rules:
    /// Bundle.open checks everything before a run.
    static func importItem(_ url: URL, progress: ((String) -> Void)? = nil) throws -> URL {
        let fm = FileManager.default
        let scoped = url.startAccessingSecurityScopedResource()
        defer { if scoped { url.stopAccessingSecurityScopedResource() } }
        var source = url
        if source.lastPathComponent == HarnessCore.Bundle.BUNDLE_JSON { source = source.deletingLastPathComponent() }
        // a bundle already inside Documents (copied in by hand) is used where it is
        if source.standardizedFileURL.path.hasPrefix(documents.standardizedFileURL.path + "/"),
           source.pathExtension.lowercased() != "zip",
           fm.fileExists(atPath: source.appendingPathComponent(HarnessCore.Bundle.BUNDLE_JSON).path) {
            return source
        }
        let destination = bundlesFolder.appendingPathComponent(importName(), isDirectory: true)
        try fm.createDirectory(at: destination, withIntermediateDirectories: true)
        do {
            var coordinationError: NSError?
            var failure: Error?
            var root: URL?
            // coordinated reading: a file provider (iCloud Drive ...) delivers the item before it is read
            NSFileCoordinator(filePresenter: nil).coordinate(readingItemAt: source, options: [], error: &coordinationError) { readable in
                do {
                    var isDir: ObjCBool = false
                    guard fm.fileExists(atPath: readable.path, isDirectory: &isDir) else {
                        throw HarnessError("\(source.lastPathComponent): no such file")
                    }
                    if isDir.boolValue {
                        let target = destination.appendingPathComponent(source.lastPathComponent, isDirectory: true)
                        progress?("copying \(source.lastPathComponent) ...")
                        try fm.copyItem(at: readable, to: target)
                        root = HarnessCore.Bundle.findRoot(target)
                    } else if ZipFile.isZip(readable) {
                        let name = source.deletingPathExtension().lastPathComponent
                        let target = destination.appendingPathComponent(name.isEmpty ? "bundle" : name, isDirectory: true)
                        progress?("unpacking \(source.lastPathComponent) ...")
                        root = try BundleZip.unpack(readable, target)
                    } else {
                        throw HarnessError("\(source.lastPathComponent): not a bundle (a folder with bundle.json, or its .zip)")
                    }
                } catch {
                    failure = error
                }
            }
            if let coordinationError { throw coordinationError }
            if let failure { throw failure }
            guard let imported = root else { throw HarnessError("\(source.lastPathComponent): nothing was imported") }
            removeInboxCopy(url)
            return imported
        } catch {
            try? fm.removeItem(at: destination)
            throw error
        }
    }

    /// AirDrop and "Open in" deliver a copy into Documents/Inbox: once imported it is not needed.
    private static func removeInboxCopy(_ url: URL) {
        let inbox = documents.appendingPathComponent("Inbox", isDirectory: true).standardizedFileURL.path + "/"
        if url.standardizedFileURL.path.hasPrefix(inbox) { try? FileManager.default.removeItem(at: url) }
    }

    private static func importName() -> String {
        let format = DateFormatter()
        format.locale = Locale(identifier: "en_US_POSIX")
        format.dateFormat = "yyyyMMdd-HHmmss"
        return "\(format.string(from: Date()))-\(UUID().uuidString.prefix(8))"
    }

    /// Where a result of `bundle` is written: Documents/Results/<bundle name>-<time, UTC>.json.
    static func resultFile(for bundle: HarnessCore.Bundle) throws -> URL {
        try FileManager.default.createDirectory(at: resultsFolder, withIntermediateDirectories: true)
        let format = DateFormatter()
        format.locale = Locale(identifier: "en_US_POSIX")
        format.timeZone = TimeZone(identifier: "UTC")
        format.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let safeName = bundle.name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" }
        return resultsFolder.appendingPathComponent("\(String(safeName))-\(format.string(from: Date())).json")
    }
}
