// Mirror of BundleZipTest.kt. Kotlin writes its zips with java.util.zip.ZipOutputStream; here a small writer
// (ZipWriter, below: stored or deflated entries, via the Compression framework) does, so the tests need no tools.
import Compression
import Foundation
import XCTest
@testable import HarnessCore

final class BundleZipTests: XCTestCase {

    private func zipOf(_ root: URL, _ out: URL, prefix: String = "", extra: [(String, Data)] = [], deflate: Bool = true) throws {
        var zip = ZipWriter(deflate: deflate)
        let fm = FileManager.default
        let base = root.standardizedFileURL.path
        var paths: [String] = []
        if let walker = fm.enumerator(atPath: base) {
            for case let relative as String in walker {
                var isDir: ObjCBool = false
                fm.fileExists(atPath: base + "/" + relative, isDirectory: &isDir)
                if !isDir.boolValue { paths.append(relative) }
            }
        }
        for relative in paths.sorted() {
            zip.add(prefix + relative, try Data(contentsOf: root.appendingPathComponent(relative)))
        }
        for (name, bytes) in extra { zip.add(name, bytes) }
        try zip.finish().write(to: out)
    }

    /// Set the external attributes of the central directory entry named `name` (as `zip -y` stores a symlink).
    private func setExternalAttr(_ zip: URL, _ name: String, _ attr: UInt32) throws {
        var b = [UInt8](try Data(contentsOf: zip))
        let n = Array(name.utf8)
        for p in 0..<(b.count - 46) where b[p] == 0x50 && b[p + 1] == 0x4B && b[p + 2] == 1 && b[p + 3] == 2 {
            let len = Int(b[p + 28]) | (Int(b[p + 29]) << 8)
            if len == n.count && Array(b[(p + 46)..<(p + 46 + len)]) == n {
                for k in 0..<4 { b[p + 38 + k] = UInt8(truncatingIfNeeded: attr >> (8 * UInt32(k))) }
            }
        }
        try Data(b).write(to: zip)
    }

    func testTheGoldenBundleUnzipsAndOpens() throws {
        let dir = try Temp.dir()
        let zip = dir.appendingPathComponent("b.zip")
        try zipOf(Golden.bundle, zip)
        let root = try BundleZip.unpack(zip, dir.appendingPathComponent("out"))
        XCTAssertEqual(try HarnessCore.Bundle.open(Golden.bundle).id, try HarnessCore.Bundle.open(root).id)
        // a zip of the folder (Finder's Compress): the one folder inside is the root
        let zip2 = dir.appendingPathComponent("c.zip")
        try zipOf(Golden.bundle, zip2, prefix: "mybundle/")
        let root2 = try BundleZip.unpack(zip2, dir.appendingPathComponent("out2"))
        XCTAssertEqual("mybundle", root2.lastPathComponent)
        _ = try HarnessCore.Bundle.open(root2)
        // stored entries too (Swift only: Kotlin's java.util.zip reads both without the core's code)
        let zip3 = dir.appendingPathComponent("s.zip")
        try zipOf(Golden.bundle, zip3, deflate: false)
        XCTAssertEqual(try HarnessCore.Bundle.open(Golden.bundle).id,
                       try HarnessCore.Bundle.open(try BundleZip.unpack(zip3, dir.appendingPathComponent("out3"))).id)
    }

    func testBadZipsAreRefusedAndLeaveNothing() throws {
        let fm = FileManager.default
        let dir = try Temp.dir()
        let src = dir.appendingPathComponent("src")
        try fm.createDirectory(at: src, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: src.appendingPathComponent("bundle.json"))
        for (name, fragment) in [("../evil", "'..' part"), ("/abs", "is absolute"), ("a\\b", "backslash")] {
            let zip = dir.appendingPathComponent("bad.zip")
            try? fm.removeItem(at: zip)
            try zipOf(src, zip, extra: [(name, Data([1]))])
            let out = dir.appendingPathComponent("out-bad")
            assertRefused(fragment) { _ = try BundleZip.unpack(zip, out) }
            XCTAssertFalse(fm.fileExists(atPath: out.path))
        }
        let zip = dir.appendingPathComponent("link.zip")
        try zipOf(src, zip, extra: [("link", Data("/etc/passwd".utf8))])
        try setExternalAttr(zip, "link", 0xA1FF << 16)
        assertRefused("entry 'link' is a symlink or special file") { _ = try BundleZip.unpack(zip, dir.appendingPathComponent("out-link")) }
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("out-link").path))
        var dup = ZipWriter(deflate: true)
        dup.add("a/", Data())
        dup.add("a", Data([1]))
        let dupFile = dir.appendingPathComponent("dup.zip")
        try dup.finish().write(to: dupFile)
        assertRefused("appears twice") { _ = try BundleZip.unpack(dupFile, dir.appendingPathComponent("out-dup")) }
        let notZip = dir.appendingPathComponent("x.zip")
        try Data("hello".utf8).write(to: notZip)
        assertRefused("not a readable zip") { _ = try BundleZip.unpack(notZip, dir.appendingPathComponent("out-x")) }
        // Swift only: an entry holding more than it declares (its declared size lowered after writing)
        var liar = ZipWriter(deflate: false)
        liar.add("bundle.json", Data("{\"a\": 1}".utf8), declaredSize: 3)
        let liarFile = dir.appendingPathComponent("liar.zip")
        try liar.finish().write(to: liarFile)
        assertRefused("holds more than it declares") { _ = try BundleZip.unpack(liarFile, dir.appendingPathComponent("out-liar")) }
        let left = try fm.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("out") }
        XCTAssertEqual([], left)
    }
}

/// A minimal zip writer for the tests: stored or raw-deflated entries, a central directory, no zip64.
struct ZipWriter {
    let deflate: Bool
    private var body = Data()
    private var central = Data()
    private var count = 0

    init(deflate: Bool) { self.deflate = deflate }

    private static func le16(_ v: Int) -> Data { Data([UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)]) }
    private static func le32(_ v: UInt32) -> Data { Data((0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) }) }

    private static func crc(_ data: Data) -> UInt32 {
        var c = ZipFile.CRC32()
        data.withUnsafeBytes { c.update($0) }
        return c.value
    }

    private static func rawDeflate(_ data: Data) -> Data {
        if data.isEmpty { return Data([0x03, 0x00]) } // an empty final fixed-Huffman block
        let capacity = data.count + 1024
        var out = [UInt8](repeating: 0, count: capacity)
        let written = data.withUnsafeBytes { (src: UnsafeRawBufferPointer) -> Int in
            compression_encode_buffer(&out, capacity, src.bindMemory(to: UInt8.self).baseAddress!, data.count, nil,
                                      COMPRESSION_ZLIB)
        }
        precondition(written > 0, "deflate failed")
        return Data(out[0..<written])
    }

    mutating func add(_ name: String, _ data: Data, declaredSize: Int? = nil) {
        let isDir = name.hasSuffix("/")
        let method = deflate && !isDir ? 8 : 0
        let stored = method == 8 ? ZipWriter.rawDeflate(data) : data
        let crc = ZipWriter.crc(data)
        let nameBytes = Data(name.utf8)
        let size = UInt32(declaredSize ?? data.count)
        let offset = UInt32(body.count)
        var local = Data()
        local += ZipWriter.le32(0x04034b50) + ZipWriter.le16(20) + ZipWriter.le16(0x0800) + ZipWriter.le16(method)
        local += ZipWriter.le16(0) + ZipWriter.le16(0x21) + ZipWriter.le32(crc) + ZipWriter.le32(UInt32(stored.count))
        local += ZipWriter.le32(size) + ZipWriter.le16(nameBytes.count) + ZipWriter.le16(0) + nameBytes
        body += local + stored
        let mode: UInt32 = isDir ? 0o040755 : 0o100644
        var entry = Data()
        entry += ZipWriter.le32(0x02014b50) + ZipWriter.le16(0x031E) + ZipWriter.le16(20) + ZipWriter.le16(0x0800)
        entry += ZipWriter.le16(method) + ZipWriter.le16(0) + ZipWriter.le16(0x21) + ZipWriter.le32(crc)
        entry += ZipWriter.le32(UInt32(stored.count)) + ZipWriter.le32(size) + ZipWriter.le16(nameBytes.count)
        entry += ZipWriter.le16(0) + ZipWriter.le16(0) + ZipWriter.le16(0) + ZipWriter.le16(0)
        entry += ZipWriter.le32(mode << 16) + ZipWriter.le32(offset) + nameBytes
        central += entry
        count += 1
    }

    func finish() -> Data {
        var end = Data()
        end += ZipWriter.le32(0x06054b50) + ZipWriter.le16(0) + ZipWriter.le16(0) + ZipWriter.le16(count)
        end += ZipWriter.le16(count) + ZipWriter.le32(UInt32(central.count)) + ZipWriter.le32(UInt32(body.count))
        end += ZipWriter.le16(0)
        return body + central + end
    }
}
