// Mirror of Bundle.kt.
//
// The type is named `Bundle` as in the Kotlin core. Code that imports both Foundation and HarnessCore must write
// `HarnessCore.Bundle` and `Foundation.Bundle` (an unqualified `Bundle` is ambiguous there).
import Foundation

/// One raw tensor of a bundle (`tensors.<id>` of bundle.json).
public struct TensorSpec: Equatable {
    public let id: String
    public let file: String
    /// `float32` or `uint8`
    public let dtype: String
    public let shape: [Int]
    /// `NCHW` / `NHWC` (inputs), `NC` (references)
    public let layout: String
    /// `input`, `reference`, or nil
    public let role: String?
    public let description: String?

    public var itemSize: Int { dtype == "uint8" ? 1 : 4 }
    public var count: Int64 { shape.reduce(Int64(1)) { $0 * Int64($1) } }
    public var byteSize: Int64 { count * Int64(itemSize) }
}

public struct ArtifactInput: Equatable {
    public let tensor: String
    public let name: String
    /// `tensor` or `image`
    public let kind: String
}

public struct ArtifactOutput: Equatable {
    public let name: String
    /// `NC` or `classifier`
    public let layout: String
    public let reference: String
}

/// What the host judges an artifact's outputs by: cosine >=, max_abs <=, top1_agreement >=, sqnr_db >= (if set).
public struct Tolerance: Equatable {
    public let tolClass: String
    public let cosine: Double
    public let maxAbs: Double
    public let top1Agreement: Double
    public let sqnrDb: Double?
    public let source: String?

    public init(tolClass: String, cosine: Double, maxAbs: Double, top1Agreement: Double, sqnrDb: Double?, source: String?) {
        self.tolClass = tolClass
        self.cosine = cosine
        self.maxAbs = maxAbs
        self.top1Agreement = top1Agreement
        self.sqnrDb = sqnrDb
        self.source = source
    }
}

public struct RunSettings: Equatable {
    public let warmup: Int
    public let iterations: Int
    public let threads: Int
    public let settings: [String]
}

/// One entry of `artifacts` in bundle.json.
public struct Artifact: Equatable {
    public let index: Int
    public let name: String
    public let file: String
    public let manifest: String
    public let sha256: String
    /// `coreml`, `executorch`, `tflite`, `onnx`
    public let target: String
    public let family: String
    public let variant: String
    public let resolution: [Int]
    public let batch: Int
    public let precision: String
    public let quantization: String?
    public let input: ArtifactInput
    public let output: ArtifactOutput
    public let tolerance: Tolerance
    public let run: RunSettings
    public let bundledProgram: String?
    public let profile: String?
    public let device: JsonObject?
    /// a folder (`.mlpackage`) rather than a file
    public var isFolder: Bool
    /// the artifact's file (or folder) in the bundle
    public var path: URL
}

public struct FileEntry: Equatable {
    public let path: String
    public let sha256: String
    public let size: Int64
}

public struct BundleInputs: Equatable {
    public let images: [String]
    public let samples: Int
    public let seed: Int64
}

/// A checked bundle (docs/bundle.md section 2): `open` parses bundle.json and refuses, with a one-line
/// HarnessError naming the file, everything Python's `open_bundle` refuses, except that the `id` is not
/// recomputed (docs/bundle.md: an app need not; it is copied into the result).
public final class Bundle {
    public let root: URL
    /// bundle.json as parsed
    public let json: JsonObject
    public let id: String
    public let shvitEdgeVersion: String
    public let createdAt: String
    public let inputs: BundleInputs
    public let tensors: [String: TensorSpec]
    public let artifacts: [Artifact]
    public let files: [FileEntry]

    private init(_ root: URL, _ json: JsonObject, _ id: String, _ shvitEdgeVersion: String, _ createdAt: String,
                 _ inputs: BundleInputs, _ tensors: [String: TensorSpec], _ artifacts: [Artifact], _ files: [FileEntry]) {
        self.root = root
        self.json = json
        self.id = id
        self.shvitEdgeVersion = shvitEdgeVersion
        self.createdAt = createdAt
        self.inputs = inputs
        self.tensors = tensors
        self.artifacts = artifacts
        self.files = files
    }

    /// The bundle's folder name: a result's `bundle.name`.
    public var name: String { root.lastPathComponent }

    /// The artifact's file (or folder).
    public func artifactFile(_ artifact: Artifact) -> URL { artifact.path }

    public func tensorSpec(_ id: String) throws -> TensorSpec {
        guard let spec = tensors[id] else { throw HarnessError("\(name): no tensor \(id)") }
        return spec
    }

    /// The tensor `id`, read (its size was checked when the bundle was opened).
    public func tensor(_ id: String) throws -> Tensor {
        try Tensors.read(root.appendingPathComponent(tensorSpec(id).file, isDirectory: false), tensorSpec(id))
    }

    public func inputOf(_ artifact: Artifact) throws -> Tensor { try tensor(artifact.input.tensor) }

    public func referenceOf(_ artifact: Artifact) throws -> Tensor { try tensor(artifact.output.reference) }

    public static let SCHEMA_VERSION: Int64 = 1
    public static let KIND = "shvit-edge-bundle"
    public static let BUNDLE_JSON = "bundle.json"
    public static let MAX_BUNDLE_JSON_BYTES: Int64 = 16 << 20
    public static let MAX_MANIFEST_BYTES: Int64 = 16 << 20

    static func isSha256(_ v: String) -> Bool {
        v.utf8.count == 64 && v.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    static func isId(_ v: String) -> Bool {
        let b = Array(v.utf8)
        func alnum(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) }
        // a character outside ASCII is more than one UTF-8 byte, and never matches
        return !b.isEmpty && b.count <= 128 && alnum(b[0]) && b.dropFirst().allSatisfy { alnum($0) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }
    }

    /// Open and check the bundle in the folder `root` (or `root` is its bundle.json). `progress` gets one-line
    /// messages while the files are checked.
    public static func open(_ root: URL, progress: ((String) -> Void)? = nil) throws -> Bundle {
        var isDir: ObjCBool = false
        let rootIsFile = FileManager.default.fileExists(atPath: root.path, isDirectory: &isDir) && !isDir.boolValue
        let folder = (root.lastPathComponent == BUNDLE_JSON && rootIsFile) ? root.deletingLastPathComponent() : root
        let place = folder.path
        var folderIsDir: ObjCBool = false
        if !FileManager.default.fileExists(atPath: folder.path, isDirectory: &folderIsDir) || !folderIsDir.boolValue {
            throw HarnessError("\(place): no such bundle (a folder with \(BUNDLE_JSON))")
        }
        let raw = try Json.readCapped(folder.appendingPathComponent(BUNDLE_JSON, isDirectory: false),
                                      where: "\(place): \(BUNDLE_JSON)", maxBytes: MAX_BUNDLE_JSON_BYTES)
        let doc = try Json.parse(raw, where: "\(place)/\(BUNDLE_JSON)")
        let sv = doc.objectValue?["schema_version"]
        if let map = doc.objectValue, map["kind"] == .string(KIND), let version = sv, !version.isNull,
           !(version.number != nil && version.number! == Double(SCHEMA_VERSION)) {
            throw HarnessError("\(place): bundle schema_version \(Json.write(version)) is not supported " +
                               "(this harness reads \(SCHEMA_VERSION))")
        }
        let top = try JsonObj.of(doc, "\(place)/\(BUNDLE_JSON): not a valid bundle document: at the top level")
        return try Reader(folder, place, top, progress).read()
    }

    /// Kotlin's `is Long`: an integer as parsed (not `1.0`).
    static func isLong(_ v: JsonValue) -> Bool {
        if case .int = v { return true }
        return false
    }

    /// The folder of a bundle unpacked at `folder`: `folder` itself when it holds bundle.json, or its one
    /// subfolder that does (a zip of the bundle's folder, as Finder's Compress makes, rather than of its
    /// contents; `__MACOSX` is passed over), as Python's `open_bundle`. (Swift only: the Android app unpacks with
    /// java.util.zip and has its own.)
    public static func findRoot(_ folder: URL) -> URL {
        let fm = FileManager.default
        if fm.fileExists(atPath: folder.appendingPathComponent(BUNDLE_JSON).path) { return folder }
        let inner = ((try? fm.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0 != "__MACOSX" }
        if inner.count == 1 {
            let candidate = folder.appendingPathComponent(inner[0], isDirectory: true)
            if let attrs = try? fm.attributesOfItem(atPath: candidate.path),
               (attrs[.type] as? FileAttributeType) == .typeDirectory,
               fm.fileExists(atPath: candidate.appendingPathComponent(BUNDLE_JSON).path) {
                return candidate
            }
        }
        return folder
    }

    private struct Reader {
        let root: URL
        let place: String
        let top: JsonObj
        let progress: ((String) -> Void)?
        let schemaWhere: String

        init(_ root: URL, _ place: String, _ top: JsonObj, _ progress: ((String) -> Void)?) {
            self.root = root
            self.place = place
            self.top = top
            self.progress = progress
            self.schemaWhere = "\(place)/\(Bundle.BUNDLE_JSON): not a valid bundle document: at"
        }

        func read() throws -> Bundle {
            // -- the schema (bundle.schema.json), checked by hand --
            try top.keys(
                ["schema_version", "kind", "id", "shvit_edge_version", "created_at", "inputs", "tensors",
                 "artifacts", "files"],
                ["schema_version", "kind", "id", "shvit_edge_version", "created_at", "inputs", "tensors",
                 "artifacts", "files"])
            let t = JsonObj(top.map, schemaWhere)
            if try t.long("schema_version") != Bundle.SCHEMA_VERSION { throw HarnessError("\(schemaWhere) schema_version: must be 1") }
            if try t.string("kind") != Bundle.KIND { throw HarnessError("\(schemaWhere) kind: must be \(Bundle.KIND)") }
            let id = try sha(t, "id")
            let version = try t.string("shvit_edge_version", 64)
            let createdAt = try t.string("created_at", 64)
            let inputs = try readInputs(t.obj("inputs"))
            let (tensors, tensorOrder) = try readTensors(t.obj("tensors"))
            let artifactList = try t.list("artifacts", 1, 256)
            let artifacts = try artifactList.enumerated().map { i, a in
                try readArtifact(i, JsonObj.of(a, "\(schemaWhere) artifacts[\(i)]"))
            }
            let fileList = try t.list("files", 1, 100_000)
            let files = try fileList.enumerated().map { i, f -> FileEntry in
                let o = try JsonObj.of(f, "\(schemaWhere) files[\(i)]").keys(["path", "sha256", "size"], ["path", "sha256", "size"])
                return FileEntry(path: try path(o, "path"), sha256: try sha(o, "sha256"), size: try o.long("size", min: 0))
            }

            // -- every listed file: path rules, size, sha256 --
            var listed: [String: FileEntry] = [:]
            var listedOrder: [String] = []
            for (i, entry) in files.enumerated() {
                let relative = try SafePath.check(entry.path, where: "\(place): files[\(i)]")
                if listed[relative] != nil { throw HarnessError("\(place): files[\(i)] lists \(relative) twice") }
                if relative == Bundle.BUNDLE_JSON { throw HarnessError("\(place): files[\(i)] lists \(relative)") }
                listed[relative] = entry
                listedOrder.append(relative)
            }
            let total = listed.values.reduce(Int64(0)) { $0 + $1.size }
            var done: Int64 = 0
            var k = 0
            for relative in listedOrder {
                let entry = listed[relative]!
                k += 1
                let file = try SafePath.inside(root, relative, where: place)
                let size = try SafePath.size(file)
                if size != entry.size { throw HarnessError("\(place): \(relative) is \(size) bytes; bundle.json says \(entry.size)") }
                progress?("checking \(relative) (\(k)/\(listed.count))")
                let doneSoFar = done
                let sha = try Sha256.ofFile(file) { read in
                    if read % (64 << 20) == 0 { progress?("checking \(relative): \(percent(doneSoFar + read, total))") }
                }
                if sha != entry.sha256 {
                    throw HarnessError("\(place): \(relative) fails its sha256 (it differs from bundle.json's); the " +
                                       "bundle was changed or damaged in transit")
                }
                done += entry.size
            }

            // -- tensors hold their shapes --
            for tensorId in tensorOrder {
                let spec = tensors[tensorId]!
                let relative = try listedPath(spec.file, listed, "tensors.\(tensorId)")
                let expected = spec.byteSize
                if listed[relative]!.size != expected {
                    throw HarnessError("\(place): tensor \(tensorId) (\(relative)) is \(listed[relative]!.size) bytes; " +
                                       "its shape \(Tensors.shapeText(spec.shape)) \(spec.dtype) takes \(expected)")
                }
            }

            // -- artifacts: their manifests, inputs and references --
            let checked = try artifacts.map { try checkArtifact($0, listed, tensors) }
            return Bundle(root, top.map, id, version, createdAt, inputs, tensors, checked, files)
        }

        func percent(_ a: Int64, _ b: Int64) -> String { b <= 0 ? "100%" : "\(100 * a / b)%" }

        func sha(_ o: JsonObj, _ key: String) throws -> String {
            let v = try o.string(key)
            if !Bundle.isSha256(v) { throw HarnessError("\(o.at(key)): \(HarnessError.quoted(v)) is not a sha256 (64 lowercase hex digits)") }
            return v
        }

        func tensorId(_ o: JsonObj, _ key: String) throws -> String {
            let v = try o.string(key)
            if !Bundle.isId(v) { throw HarnessError("\(o.at(key)): \(HarnessError.quoted(v)) is not a tensor id") }
            return v
        }

        func path(_ o: JsonObj, _ key: String) throws -> String {
            let v = try o.string(key, 1024)
            if v.isEmpty { throw HarnessError("\(o.at(key)): a path is not empty") }
            return v
        }

        func readInputs(_ o: JsonObj) throws -> BundleInputs {
            try o.keys(["images", "samples", "seed"], ["images", "samples", "seed"])
            let images = try o.list("images", 0, 4096).enumerated().map { i, v -> String in
                guard let s = v.stringValue else { throw HarnessError("\(o.at("images"))[\(i)] must be a string") }
                if s.utf16.count > 255 { throw HarnessError("\(o.at("images"))[\(i)] is longer than 255 characters") }
                return s
            }
            return BundleInputs(images: images, samples: try o.int("samples", min: 0, max: 1024),
                                seed: try o.long("seed", min: 0, max: 4_294_967_295))
        }

        func readTensors(_ o: JsonObj) throws -> ([String: TensorSpec], [String]) {
            if o.map.count > 4096 { throw HarnessError("\(o.place): more than 4096 tensors") }
            var out: [String: TensorSpec] = [:]
            var order: [String] = []
            for (key, value) in o.map {
                if !Bundle.isId(key) { throw HarnessError("\(o.place): \(HarnessError.quoted(key)) is not a tensor id") }
                let s = try JsonObj.of(value, "\(o.place).\(key)")
                    .keys(["file", "dtype", "shape", "layout"], ["file", "dtype", "shape", "layout", "role", "description"])
                let shape = try s.list("shape", 1, 8).enumerated().map { i, d in
                    try Int(asLong(d, "\(s.at("shape"))[\(i)]", min: 1, max: 1_073_741_824))
                }
                out[key] = TensorSpec(
                    id: key, file: try path(s, "file"), dtype: try s.stringIn("dtype", ["float32", "uint8"]), shape: shape,
                    layout: try s.stringIn("layout", ["NCHW", "NHWC", "NC"]),
                    role: try s.has("role") ? s.stringIn("role", ["input", "reference"]) : nil,
                    description: try s.has("description") ? s.string("description", 1024) : nil)
                order.append(key)
            }
            return (out, order)
        }

        func readArtifact(_ i: Int, _ o: JsonObj) throws -> Artifact {
            let required = ["name", "file", "manifest", "sha256", "target", "family", "variant", "resolution",
                            "batch", "precision", "quantization", "input", "output", "tolerance", "run"]
            try o.keys(required, required + ["bundled_program", "profile", "device"])
            let resolution = try o.list("resolution", 2, 2).enumerated().map { k, d in
                try Int(asLong(d, "\(o.at("resolution"))[\(k)]", min: 1, max: Int64(Int32.max)))
            }
            let input = try o.obj("input").keys(["tensor", "name", "kind"], ["tensor", "name", "kind"])
            let output = try o.obj("output").keys(["name", "layout", "reference"], ["name", "layout", "reference"])
            let tol = try o.obj("tolerance").keys(["class", "cosine", "max_abs", "top1_agreement"],
                                                  ["class", "cosine", "max_abs", "top1_agreement", "sqnr_db", "source"])
            let run = try o.obj("run").keys(["warmup", "iterations", "threads", "settings"],
                                            ["warmup", "iterations", "threads", "settings"])
            let settings = try run.list("settings", 1).enumerated().map { k, v -> String in
                guard let s = v.stringValue else { throw HarnessError("\(run.at("settings"))[\(k)] must be a string") }
                if s.utf16.count > 64 { throw HarnessError("\(run.at("settings"))[\(k)] is longer than 64 characters") }
                return s
            }
            if o.has("quantization") && o["quantization"] != nil { _ = try o.string("quantization") }
            if o.has("device") { _ = try o.obj("device") }
            return Artifact(
                index: i,
                name: try o.string("name", 255), file: try path(o, "file"), manifest: try path(o, "manifest"),
                sha256: try sha(o, "sha256"), target: try o.string("target", 64), family: try o.string("family", 64),
                variant: try o.string("variant", 64), resolution: resolution, batch: try o.int("batch", min: 1),
                precision: try o.string("precision"), quantization: try o.stringOrNull("quantization"),
                input: ArtifactInput(tensor: try tensorId(input, "tensor"), name: try input.string("name", 255),
                                     kind: try input.stringIn("kind", ["tensor", "image"])),
                output: ArtifactOutput(name: try output.string("name", 255),
                                       layout: try output.stringIn("layout", ["NC", "classifier"]),
                                       reference: try tensorId(output, "reference")),
                tolerance: Tolerance(tolClass: try tol.string("class"), cosine: try tol.double("cosine", min: -1.0, max: 1.0),
                                     maxAbs: try tol.double("max_abs", min: 0.0),
                                     top1Agreement: try tol.double("top1_agreement", min: 0.0, max: 1.0),
                                     sqnrDb: try tol.doubleOrNull("sqnr_db"),
                                     source: try tol.has("source") ? tol.string("source") : nil),
                run: RunSettings(warmup: try run.int("warmup", min: 0), iterations: try run.int("iterations", min: 1),
                                 threads: try run.int("threads", min: 1), settings: settings),
                bundledProgram: try o.has("bundled_program") ? path(o, "bundled_program") : nil,
                profile: try o.has("profile") ? o.string("profile", 64) : nil,
                device: o.has("device") ? o.map["device"]?.objectValue : nil,
                isFolder: false,
                path: root.appendingPathComponent(try o.string("file"), isDirectory: false))
        }

        func listedPath(_ path: String, _ listed: [String: FileEntry], _ what: String) throws -> String {
            let relative = try SafePath.check(path, where: "\(place): \(what)")
            if listed[relative] == nil { throw HarnessError("\(place): \(what) names \(relative), which the files list does not hold") }
            return relative
        }

        func checkArtifact(_ a: Artifact, _ listed: [String: FileEntry], _ tensors: [String: TensorSpec]) throws -> Artifact {
            let what = "artifacts[\(a.index)]"
            let manifestRelative = try listedPath(a.manifest, listed, "\(what).manifest")
            let manifestWhere = "\(place): \(manifestRelative)"
            let manifest = try JsonObj.of(
                Json.parse(Json.readCapped(root.appendingPathComponent(manifestRelative, isDirectory: false),
                                           where: manifestWhere, maxBytes: Bundle.MAX_MANIFEST_BYTES), where: manifestWhere),
                "\(manifestWhere):")
            let fileRelative = try SafePath.check(a.file, where: "\(place): \(what).file")
            let isFolder: Bool
            let sha: String
            if let entry = listed[fileRelative] {
                isFolder = false
                sha = entry.sha256 // checked against the file above
            } else {
                let inFolder = listed.keys.filter { $0.hasPrefix("\(fileRelative)/") }
                if inFolder.isEmpty { throw HarnessError("\(place): \(what).file names \(fileRelative), which the files list does not hold") }
                let folder = try SafePath.inside(root, fileRelative, where: "\(place): \(what).file", directory: true)
                isFolder = true
                sha = try Sha256.ofFolder(folder, inFolder.map { String($0.dropFirst(fileRelative.count + 1)) })
            }
            let artifactRef = try manifest.obj("artifact")
            let manifestSha = try artifactRef.string("sha256")
            if a.sha256 != manifestSha || sha != manifestSha {
                throw HarnessError("\(place): \(what) (\(a.name)) is not the artifact its manifest describes (sha256)")
            }
            let pairs: [(String, JsonValue)] = [("target", .string(a.target)), ("variant", .string(a.variant)),
                                                ("batch", .int(Int64(a.batch)))]
            for (key, mine) in pairs {
                let theirs = manifest.map[key] ?? .null
                // Kotlin compares a Long with a Long: 1.0 in a manifest is not the batch 1
                if theirs != mine || Bundle.isLong(theirs) != Bundle.isLong(mine) {
                    throw HarnessError("\(place): \(what).\(key) is \(show(mine)); its manifest says \(show(theirs))")
                }
            }
            for (side, id) in [("input.tensor", a.input.tensor), ("output.reference", a.output.reference)] where tensors[id] == nil {
                throw HarnessError("\(place): \(what).\(side) names the tensor \(HarnessError.quoted(id)), which tensors does not hold")
            }
            let x = tensors[a.input.tensor]!
            let ref = tensors[a.output.reference]!
            let resolution = try manifest.list("resolution", 2, 2).enumerated().map { k, v in
                try Int(asLong(v, "\(manifest.at("resolution"))[\(k)]"))
            }
            let h = resolution[0], w = resolution[1]
            let n = x.shape[0]
            let expected = x.layout == "NCHW" ? [n, 3, h, w] : [n, h, w, 3]
            if x.shape != expected || !["NCHW", "NHWC"].contains(x.layout) {
                throw HarnessError("\(place): \(what)'s input tensor is \(x.layout) \(Tensors.shapeText(x.shape)); the artifact takes \(h)x\(w) RGB samples")
            }
            let manifestInputs = try manifest.list("inputs", 1)
            let kind = manifestInputs[0].objectValue?["kind"]?.stringValue ?? "tensor"
            let wantDtype = kind == "image" ? "uint8" : "float32"
            if x.dtype != wantDtype {
                throw HarnessError("\(place): \(what)'s input tensor is \(x.dtype); the artifact takes \(wantDtype)")
            }
            if ref.shape.count != 2 || ref.shape[0] != n || ref.dtype != "float32" {
                throw HarnessError("\(place): \(what)'s reference is \(ref.dtype) \(Tensors.shapeText(ref.shape)); it must be float32 (\(n), classes), one row per input")
            }
            if let program = a.bundledProgram { _ = try listedPath(program, listed, "\(what).bundled_program") }
            var checked = a
            checked.isFolder = isFolder
            checked.path = root.appendingPathComponent(fileRelative, isDirectory: isFolder)
            return checked
        }

        func show(_ v: JsonValue) -> String {
            if let s = v.stringValue { return HarnessError.quoted(s) }
            return Json.write(v)
        }
    }
}

/// A bundle's .zip (docs/bundle.md section 2), unpacked with every entry rule checked first, from the central
/// directory, before anything is written: a symlink or special file, an absolute path, `..`, a duplicate (also a
/// file that is also a folder), more than MAX_ENTRIES entries or MAX_BYTES unpacked are refused, and so is an entry
/// that holds more than it declares; a refused or broken archive leaves nothing behind. (Kotlin reads the bytes with
/// java.util.zip.ZipFile; Swift with ZipFile in Zip.swift.)
public enum BundleZip {
    public static let MAX_ENTRIES = 100_000
    public static let MAX_BYTES: Int64 = 8 << 30

    public typealias Entry = ZipFile.Entry

    /// Unpack `archive` into the empty or missing folder `folder`; the bundle's root inside it (the folder itself,
    /// or its one subfolder holding bundle.json, as a zip of the bundle's folder made by Finder has).
    public static func unpack(_ archive: URL, _ folder: URL) throws -> URL {
        let shown = archive.lastPathComponent
        let entries: [Entry]
        do {
            entries = try centralDirectory(archive)
        } catch let e as HarnessError {
            throw e
        } catch {
            throw HarnessError("\(shown): not a readable zip (\(HarnessError.describe(error)))")
        }
        if entries.count > MAX_ENTRIES { throw HarnessError("\(shown): more than \(MAX_ENTRIES) entries") }
        var names = Set<String>()
        var files = Set<String>()
        for e in entries {
            let place = "\(shown): entry \(HarnessError.quoted(e.name))"
            let kind = (e.externalAttr >> 16) & 0xF000
            if kind != 0 && kind != 0x8000 && kind != 0x4000 { throw HarnessError("\(place) is a symlink or special file; refused") }
            let isDir = e.name.hasSuffix("/")
            let relative = try SafePath.check(isDir ? trimEndSlashes(e.name) : e.name, where: place)
            if !names.insert(relative).inserted { throw HarnessError("\(place) appears twice") }
            if !isDir { files.insert(relative) }
        }
        var parents = Set<String>()
        for n in names {
            let parts = n.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count > 1 {
                for k in 1..<parts.count { parents.insert(parts[0..<k].joined(separator: "/")) }
            }
        }
        if let clash = files.intersection(parents).min() {
            throw HarnessError("\(shown): entry \(HarnessError.quoted(clash)) is both a file and a folder")
        }

        let fm = FileManager.default
        var created: [URL] = []
        do {
            let zip = try FileHandle(forReadingFrom: archive)
            defer { try? zip.close() }
            var total: Int64 = 0
            for entry in entries {
                if entry.size > 0 { total += entry.size }
                if total > MAX_BYTES { throw HarnessError("\(shown): unpacks to more than \(MAX_BYTES) bytes") }
            }
            if !fm.fileExists(atPath: folder.path) {
                do {
                    try fm.createDirectory(at: folder, withIntermediateDirectories: true)
                } catch {
                    throw HarnessError("\(folder.path): cannot create it")
                }
                created.append(folder)
            }
            for entry in entries {
                let isDir = entry.name.hasSuffix("/")
                let parts = try SafePath.check(trimEndSlashes(entry.name), where: "\(shown): entry \(HarnessError.quoted(entry.name))")
                    .split(separator: "/").map(String.init)
                var step = folder
                for k in 0..<(isDir ? parts.count : parts.count - 1) {
                    step = step.appendingPathComponent(parts[k], isDirectory: true)
                    if !fm.fileExists(atPath: step.path) {
                        do {
                            try fm.createDirectory(at: step, withIntermediateDirectories: false)
                        } catch {
                            throw HarnessError("\(shown): cannot create \(step.path)")
                        }
                        created.append(step)
                    }
                }
                if isDir { continue }
                let target = folder.appendingPathComponent(parts.joined(separator: "/"), isDirectory: false)
                if fm.fileExists(atPath: target.path) { throw HarnessError("\(shown): an entry appears twice") }
                guard fm.createFile(atPath: target.path, contents: nil) else {
                    throw HarnessError("\(shown): cannot create \(target.path)")
                }
                created.append(target)
                try ZipFile.extract(zip, entry, target, shown)
            }
        } catch {
            for f in created.reversed() { try? fm.removeItem(at: f) }
            if let e = error as? HarnessError { throw e }
            throw HarnessError("\(shown): cannot unpack (\(HarnessError.describe(error)))")
        }
        if fm.fileExists(atPath: folder.appendingPathComponent(Bundle.BUNDLE_JSON).path) { return folder }
        let inner = ((try? fm.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0 != "__MACOSX" }
        if inner.count == 1 {
            let candidate = folder.appendingPathComponent(inner[0], isDirectory: true)
            if fm.fileExists(atPath: candidate.appendingPathComponent(Bundle.BUNDLE_JSON).path) { return candidate }
        }
        return folder
    }

    /// Kotlin's `trimEnd('/')`.
    static func trimEndSlashes(_ name: String) -> String {
        var text = Substring(name)
        while text.hasSuffix("/") { text = text.dropLast() }
        return String(text)
    }

    /// The central directory's entries (name and external attributes, and what extraction needs), zip64 included.
    static func centralDirectory(_ archive: URL) throws -> [Entry] {
        let shown = archive.lastPathComponent
        let f = try FileHandle(forReadingFrom: archive)
        defer { try? f.close() }
        let length = Int64(try f.seekToEnd())
        let tailSize = Int(min(length, 65557))
        let tail = try ZipFile.readAt(f, length - Int64(tailSize), tailSize, shown)
        var eocd = -1
        var k = tailSize - 22
        while k >= 0 {
            if le32(tail, k) == 0x06054b50 { eocd = k; break }
            k -= 1
        }
        if eocd < 0 { throw HarnessError("\(shown): not a readable zip (no end of central directory)") }
        var count = le16(tail, eocd + 10)
        var size = le32(tail, eocd + 12)
        var offset = le32(tail, eocd + 16)
        if count == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
            let locator = eocd - 20
            if locator < 0 || le32(tail, locator) != 0x07064b50 { throw HarnessError("\(shown): not a readable zip (no zip64 locator)") }
            let recordAt = le64(tail, locator + 8)
            let record = try ZipFile.readAt(f, recordAt, 56, shown)
            if le32(record, 0) != 0x06064b50 { throw HarnessError("\(shown): not a readable zip (no zip64 record)") }
            count = le64(record, 32)
            size = le64(record, 40)
            offset = le64(record, 48)
        }
        if count > Int64(MAX_ENTRIES) { throw HarnessError("\(shown): more than \(MAX_ENTRIES) entries") }
        if size > (64 << 20) || offset < 0 || offset + size > length {
            throw HarnessError("\(shown): not a readable zip (a bad central directory)")
        }
        let cd = try ZipFile.readAt(f, offset, Int(size), shown)
        var out: [Entry] = []
        var p = 0
        for _ in 0..<count {
            if p + 46 > cd.count || le32(cd, p) != 0x02014b50 { throw HarnessError("\(shown): not a readable zip (a bad central directory entry)") }
            let nameLength = Int(le16(cd, p + 28))
            let extraLength = Int(le16(cd, p + 30))
            let commentLength = Int(le16(cd, p + 32))
            let external = le32(cd, p + 38)
            if p + 46 + nameLength > cd.count { throw HarnessError("\(shown): not a readable zip (a bad entry name)") }
            let name = String(decoding: cd[(cd.startIndex + p + 46)..<(cd.startIndex + p + 46 + nameLength)], as: UTF8.self)
            // what java.util.zip reads for Kotlin: method, flags, CRC-32, sizes and offset (zip64 extra field too)
            var compressed = le32(cd, p + 20)
            var uncompressed = le32(cd, p + 24)
            var local = le32(cd, p + 42)
            var e = p + 46 + nameLength
            let extraEnd = min(e + extraLength, cd.count)
            while e + 4 <= extraEnd {
                let id = le16(cd, e)
                let fieldLength = Int(le16(cd, e + 2))
                if e + 4 + fieldLength > extraEnd { break }
                if id == 0x0001 {
                    var q = e + 4
                    let limit = e + 4 + fieldLength
                    if uncompressed == 0xFFFF_FFFF && q + 8 <= limit { uncompressed = le64(cd, q); q += 8 }
                    if compressed == 0xFFFF_FFFF && q + 8 <= limit { compressed = le64(cd, q); q += 8 }
                    if local == 0xFFFF_FFFF && q + 8 <= limit { local = le64(cd, q); q += 8 }
                }
                e += 4 + fieldLength
            }
            out.append(Entry(name: name, method: Int(le16(cd, p + 10)), flags: Int(le16(cd, p + 8)),
                             crc32: UInt32(truncatingIfNeeded: le32(cd, p + 16)), compressedSize: compressed,
                             size: uncompressed, localHeaderOffset: local, externalAttributes: UInt32(truncatingIfNeeded: external)))
            p += 46 + nameLength + extraLength + commentLength
        }
        return out
    }

    static func le16(_ b: Data, _ at: Int) -> Int64 {
        Int64(b[b.startIndex + at]) | (Int64(b[b.startIndex + at + 1]) << 8)
    }

    static func le32(_ b: Data, _ at: Int) -> Int64 { le16(b, at) | (le16(b, at + 2) << 16) }

    static func le64(_ b: Data, _ at: Int) -> Int64 { le32(b, at) | (le32(b, at + 4) << 32) }
}
