// Mirror of BundleTest.kt.
import Foundation
import XCTest
@testable import HarnessCore

final class BundleTests: XCTestCase {

    func testGoldenBundleOpensAndPassesItsSha256Checks() throws {
        var messages: [String] = []
        let bundle = try HarnessCore.Bundle.open(Golden.bundle) { messages.append($0) }
        let doc = try Golden.json("bundle/bundle.json").objectValue!
        XCTAssertEqual(doc["id"]?.stringValue, bundle.id)
        XCTAssertEqual("bundle", bundle.name)
        XCTAssertEqual(doc["files"]?.arrayValue?.count, bundle.files.count)
        XCTAssertEqual(bundle.files.count, messages.filter { $0.hasPrefix("checking ") }.count)
        XCTAssertEqual(["onnx", "executorch", "tflite", "coreml"], bundle.artifacts.map { $0.target })
        let tflite = bundle.artifacts.first { $0.target == "tflite" }!
        XCTAssertEqual(["xnnpack", "gpu", "gpu-fp16", "nnapi"], tflite.run.settings)
        XCTAssertEqual(4, tflite.run.threads)
        XCTAssertEqual("tensor", tflite.input.kind)
        XCTAssertEqual(0.99999, tflite.tolerance.cosine)
        XCTAssertNil(tflite.tolerance.sqnrDb)
        let pte = bundle.artifacts.first { $0.target == "executorch" }!
        XCTAssertEqual("artifacts/tinyfake_a_64x64.pte.bpte", pte.bundledProgram)
        let coreml = bundle.artifacts.first { $0.target == "coreml" }!
        XCTAssertTrue(coreml.isFolder, "an .mlpackage is a folder")
        XCTAssertEqual("image", coreml.input.kind)
        XCTAssertEqual("classifier", coreml.output.layout)
        var isDir: ObjCBool = false
        XCTAssertTrue(FileManager.default.fileExists(atPath: coreml.path.path, isDirectory: &isDir) && isDir.boolValue)
    }

    func testTensorsReadWithTheirShapesAndValues() throws {
        let bundle = try HarnessCore.Bundle.open(Golden.bundle)
        let tflite = bundle.artifacts.first { $0.target == "tflite" }!
        let x = try bundle.inputOf(tflite)
        let spec = try bundle.tensorSpec(tflite.input.tensor)
        XCTAssertEqual(spec.shape, x.shape)
        XCTAssertEqual("float32", x.dtype)
        let raw = try floatsOf(Golden.bundle.appendingPathComponent(spec.file))
        XCTAssertEqual(raw.count, x.count)
        for k in [0, 1, 4095, 4096, 12287, raw.count / 2, raw.count - 1] { XCTAssertEqual(raw[k], x.floats![k]) }
        let ref = try bundle.referenceOf(tflite)
        XCTAssertEqual([x.samples, 10], ref.shape)
        let rawRef = try floatsOf(Golden.bundle.appendingPathComponent(try bundle.tensorSpec(tflite.output.reference).file))
        XCTAssertEqual(rawRef, ref.floats!)

        let coreml = bundle.artifacts.first { $0.target == "coreml" }!
        let pixels = try bundle.inputOf(coreml)
        XCTAssertEqual("uint8", pixels.dtype)
        let rawBytes = [UInt8](try Data(contentsOf: Golden.bundle.appendingPathComponent(try bundle.tensorSpec(coreml.input.tensor).file)))
        XCTAssertEqual(rawBytes, pixels.bytes!)
        XCTAssertEqual([4, 3, 64, 64], pixels.shape)
        // NCHW -> BGRA: pixel (y, x) of sample 1 takes B = x[1,2,y,x], G = x[1,1,y,x], R = x[1,0,y,x], A = 255
        let bgra = try Tensors.pixels(pixels, 1, .BGRA)
        let plane = 64 * 64
        for (y, xx) in [(0, 0), (5, 17), (63, 63)] {
            let o = (y * 64 + xx) * 4
            let base = 3 * plane
            XCTAssertEqual(rawBytes[base + 2 * plane + y * 64 + xx], bgra[o])
            XCTAssertEqual(rawBytes[base + plane + y * 64 + xx], bgra[o + 1])
            XCTAssertEqual(rawBytes[base + y * 64 + xx], bgra[o + 2])
            XCTAssertEqual(255, bgra[o + 3])
        }
    }

    func testEveryBadGoldenBundleIsRefusedWithItsReason() throws {
        let badDir = Golden.dir.appendingPathComponent("bad")
        let cases = try FileManager.default.contentsOfDirectory(at: badDir, includingPropertiesForKeys: nil)
            .filter { (try? $0.resourceValues(forKeys: [.isDirectoryKey]).isDirectory) == true }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        XCTAssertTrue(cases.count >= 10, "golden bad bundles exist")
        for folder in cases {
            let why = try String(contentsOf: folder.appendingPathComponent("why.txt"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            do {
                _ = try HarnessCore.Bundle.open(folder)
                XCTFail("\(folder.lastPathComponent): not refused (expected '\(why)')")
            } catch let e as HarnessError {
                XCTAssertTrue(e.message.contains(why), "\(folder.lastPathComponent): '\(e.message)' does not contain '\(why)'")
            }
        }
    }

    private func goldenCopy() throws -> URL {
        let dir = try Temp.dir()
        let root = dir.appendingPathComponent("bundle", isDirectory: true)
        try Temp.copyTree(Golden.bundle, root)
        return root
    }

    func testAFlippedByteIsRefusedNamingTheFile() throws {
        let root = try goldenCopy()
        let bundle = try HarnessCore.Bundle.open(root)
        let file = try bundle.tensorSpec(bundle.artifacts[0].input.tensor).file
        let url = root.appendingPathComponent(file)
        var data = try Data(contentsOf: url)
        data[1000] ^= 0x01
        try data.write(to: url)
        assertRefused("\(file) fails its sha256") { _ = try HarnessCore.Bundle.open(root) }
    }

    func testAFlippedArtifactByteIsRefused() throws {
        let root = try goldenCopy()
        let file = "artifacts/tinyfake_a_64x64.tflite"
        let url = root.appendingPathComponent(file)
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count - 1] ^= 0x80
        try bytes.write(to: url)
        assertRefused(file) { _ = try HarnessCore.Bundle.open(root) }
    }

    func testDotDotAbsoluteAndOtherBadPathsAreRefused() throws {
        let cases: [(String, String)] = [
            ("../x", "'../x'"), ("/etc/passwd", "'/etc/passwd' is absolute"), ("tensors/./a", "'tensors/./a'"),
            ("tensors//a", "tensors//a"), ("a\\b", "backslash"), ("a\u{0000}b", "NUL"), ("a\u{001f}b", "control"),
            ("C:/x", "absolute"), ("tensors/", "empty"),
        ]
        for (bad, fragment) in cases {
            let root = try goldenCopy()
            try SyntheticBundle.edit(root) { doc in
                doc.modifyArrayItem("files", 0) { $0["path"] = .string(bad) }
            }
            assertRefused(fragment) { _ = try HarnessCore.Bundle.open(root) }
        }
    }

    func testATensorPathLeavingTheBundleIsRefused() throws {
        let root = try goldenCopy()
        try SyntheticBundle.edit(root) { doc in
            doc.modifyObject("tensors") { tensors in
                let first = tensors.keys[0]
                tensors.modifyObject(first) { $0["file"] = .string("../bundle/tensors/x.f32") }
            }
        }
        assertRefused("'..' part") { _ = try HarnessCore.Bundle.open(root) }
    }

    func testSymlinksAreRefused() throws {
        let fm = FileManager.default
        // a listed file that is a symlink (to the very same bytes)
        let root = try goldenCopy()
        let file = root.appendingPathComponent("artifacts/tinyfake_a_64x64.onnx")
        let outside = root.deletingLastPathComponent().appendingPathComponent("outside.onnx")
        try fm.copyItem(at: file, to: outside)
        try fm.removeItem(at: file)
        try fm.createSymbolicLink(at: file, withDestinationURL: outside)
        assertRefused("artifacts/tinyfake_a_64x64.onnx is (or passes through) a symlink") { _ = try HarnessCore.Bundle.open(root) }

        // a folder on the way that is a symlink
        let root2 = try goldenCopy()
        let tensors = root2.appendingPathComponent("tensors")
        let elsewhere = root2.deletingLastPathComponent().appendingPathComponent("elsewhere")
        try fm.moveItem(at: tensors, to: elsewhere)
        try fm.createSymbolicLink(at: tensors, withDestinationURL: elsewhere)
        assertRefused("symlink") { _ = try HarnessCore.Bundle.open(root2) }

        // bundle.json itself
        let root3 = try goldenCopy()
        let json = root3.appendingPathComponent("bundle.json")
        let moved = root3.deletingLastPathComponent().appendingPathComponent("moved.json")
        try fm.moveItem(at: json, to: moved)
        try fm.createSymbolicLink(at: json, withDestinationURL: moved)
        assertRefused("bundle.json is a symlink") { _ = try HarnessCore.Bundle.open(root3) }
    }

    func testAWrongSizeIsRefused() throws {
        let root = try goldenCopy()
        let file = "artifacts/tinyfake_a_64x64.pte.bpte"
        let handle = try FileHandle(forWritingTo: root.appendingPathComponent(file))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data([0]))
        try handle.close()
        assertRefused("\(file) is 202337 bytes; bundle.json says 202336") { _ = try HarnessCore.Bundle.open(root) }
    }

    func testAMissingFileAndAFolderInsteadOfAFileAreRefused() throws {
        let fm = FileManager.default
        let root = try goldenCopy()
        try fm.removeItem(at: root.appendingPathComponent("artifacts/tinyfake_a_64x64.tflite.json"))
        assertRefused("artifacts/tinyfake_a_64x64.tflite.json is missing") { _ = try HarnessCore.Bundle.open(root) }
        let root2 = try goldenCopy()
        try fm.removeItem(at: root2.appendingPathComponent("artifacts/tinyfake_a_64x64.tflite.json"))
        try fm.createDirectory(at: root2.appendingPathComponent("artifacts/tinyfake_a_64x64.tflite.json"), withIntermediateDirectories: false)
        assertRefused("is not a regular file") { _ = try HarnessCore.Bundle.open(root2) }
    }

    func testSchemaViolationsAreRefused() throws {
        let cases: [(String, (inout JsonObject) -> Void)] = [
            ("unknown key extra", { d in d["extra"] = .int(1) }),
            ("missing key inputs", { d in d["inputs"] = nil }),
            ("threads: 0 is less than the minimum of 1", { d in d.modifyArrayItem("artifacts", 0) { a in a.modifyObject("run") { $0["threads"] = .int(0) } } }),
            ("settings must have at least 1 items", { d in d.modifyArrayItem("artifacts", 0) { a in a.modifyObject("run") { $0["settings"] = .array([]) } } }),
            ("is not a sha256", { d in d["id"] = .string("ABC") }),
            ("dtype is 'float64'", { d in d.modifyObject("tensors") { t in t.modifyObject(t.keys[0]) { $0["dtype"] = .string("float64") } } }),
            ("kind is 'pixels'", { d in d.modifyArrayItem("artifacts", 0) { a in a.modifyObject("input") { $0["kind"] = .string("pixels") } } }),
            ("batch must be an integer", { d in d.modifyArrayItem("artifacts", 0) { $0["batch"] = .bool(true) } }),
            ("bundle schema_version 2 is not supported", { d in d["schema_version"] = .int(2) }),
        ]
        for (fragment, edit) in cases {
            let root = try goldenCopy()
            try SyntheticBundle.edit(root, edit)
            assertRefused(fragment) { _ = try HarnessCore.Bundle.open(root) }
        }
    }

    func testAnArtifactNotTheOneItsManifestDescribesIsRefused() throws {
        let root = try goldenCopy()
        try SyntheticBundle.edit(root) { d in d.modifyArrayItem("artifacts", 2) { $0["batch"] = .int(2) } }
        assertRefused("artifacts[2].batch is 2; its manifest says 1") { _ = try HarnessCore.Bundle.open(root) }
        let root2 = try goldenCopy()
        try SyntheticBundle.edit(root2) { d in d.modifyArrayItem("artifacts", 2) { $0["sha256"] = .string(String(repeating: "a", count: 64)) } }
        assertRefused("not the artifact its manifest describes") { _ = try HarnessCore.Bundle.open(root2) }
    }

    func testTheMlpackageFolderDigestIsRecomputed() throws {
        let root = try goldenCopy()
        let bundle = try HarnessCore.Bundle.open(root)
        let coreml = bundle.artifacts.first { $0.isFolder }!
        let inside = bundle.files.map { $0.path }.filter { $0.hasPrefix(coreml.file + "/") }
        XCTAssertEqual(coreml.sha256, try Sha256.ofFolder(coreml.path, inside.map { String($0.dropFirst(coreml.file.count + 1)) }))
    }

    func testStrictJson() throws {
        let cases: [(String, String)] = [
            ("{\"a\":1,\"a\":2}", "the key a appears twice"), ("[NaN]", "NaN"), ("[Infinity]", "Infinity"),
            ("[-Infinity]", "Infinity"), ("{'a':1}", "not valid JSON"), ("[1,]", "not valid JSON"),
            ("{\"a\":1} // c", "extra data"), ("[1e400]", "not finite"), ("[\"\\ud800\"]", "lone surrogate"),
            ("[01]", "not valid JSON"), ("\u{FEFF}{}", "not valid JSON"), ("[\"a\u{0001}\"]", "control character"),
            (String(repeating: "[", count: 65) + String(repeating: "]", count: 65), "nested more than 64"),
        ]
        for (text, fragment) in cases {
            assertRefused(fragment) { _ = try Json.parse(Data(text.utf8), where: "t") }
        }
        XCTAssertEqual(64, depth(try Json.parse(Data((String(repeating: "[", count: 64) + String(repeating: "]", count: 64)).utf8), where: "t")))
        assertRefused("not UTF-8") { _ = try Json.parse(Data([0x22, 0xFF, 0x22]), where: "t") }
        let v = try Json.parse(Data("{\"i\": 7, \"f\": 7.0, \"e\": 1e-5, \"s\": \"\\u00e9\\n\", \"n\": null}".utf8), where: "t").objectValue!
        if case .int(7) = v["i"]! {} else { XCTFail("7 is an integer") }
        if case .double(7.0) = v["f"]! {} else { XCTFail("7.0 is a double") }
        XCTAssertEqual("{\"i\":7,\"f\":7.0,\"e\":1.0E-5,\"s\":\"é\\n\",\"n\":null}", Json.write(.object(v)))
        for d in [0.1, 1.0 / 3, 2.0e-3, 123456.789, 1e300, 4.9e-324, 0.30000000000000004, 5e-324 * 3] {
            let back = try Json.parse(Data("[\(Json.number(d))]".utf8), where: "t").arrayValue![0].number!
            XCTAssertEqual(d, back)
        }
        // the text Kotlin's Json.number writes (Java's Double.toString, or BigDecimal's when strictly shorter)
        for (d, text) in [(7.0, "7.0"), (0.5, "0.5"), (1e-5, "1.0E-5"), (1000.0, "1E3"), (30.0, "3E1"), (32.0, "32.0"),
                          (12.5, "12.5"), (1.5e7, "1.5E7"), (0.001, "0.001"), (150.56096400076058, "150.56096400076058"),
                          (-2.25, "-2.25"), (1234567.0, "1234567.0"), (1e21, "1E21")] {
            XCTAssertEqual(text, Json.number(d), "\(d)")
        }
        let big = try Temp.dir().appendingPathComponent("big.json")
        try Data(repeating: 0x20, count: (16 << 20) + 1).write(to: big)
        assertRefused("more than the 16777216 allowed") { _ = try Json.readFile(big, where: "big.json") }
    }

    private func depth(_ v: JsonValue) -> Int {
        guard let list = v.arrayValue else { return 0 }
        return 1 + (list.first.map { depth($0) } ?? 0)
    }
}
