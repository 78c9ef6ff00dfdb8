// Mirror of Sha256.kt.
import CryptoKit
import Foundation

/// sha256, as lowercase hex, of bytes and of files (streamed: a file is never read whole).
public enum Sha256 {
    private static let block = 1 << 20

    public static func hex(_ bytes: Data) -> String { toHex(SHA256.hash(data: bytes)) }

    public static func toHex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef")
        var sb = ""
        for b in digest {
            sb.append(digits[Int(b >> 4)])
            sb.append(digits[Int(b & 15)])
        }
        return sb
    }

    /// The sha256 of `file`'s bytes; `progress` gets the bytes read so far.
    public static func ofFile(_ file: URL, progress: ((Int64) -> Void)? = nil) throws -> String {
        var md = SHA256()
        try feed(&md, file, progress)
        return toHex(md.finalize())
    }

    private static func feed(_ md: inout SHA256, _ file: URL, _ progress: ((Int64) -> Void)?) throws {
        let input: FileHandle
        do {
            input = try FileHandle(forReadingFrom: file)
        } catch {
            throw HarnessError("\(file.path): cannot read it (\(HarnessError.describe(error)))")
        }
        defer { try? input.close() }
        var total: Int64 = 0
        while true {
            let read: Data?
            do {
                read = try input.read(upToCount: block)
            } catch {
                throw HarnessError("\(file.path): cannot read it (\(HarnessError.describe(error)))")
            }
            guard let chunk = read, !chunk.isEmpty else { break }
            md.update(data: chunk)
            total += Int64(chunk.count)
            progress?(total)
        }
    }

    /// The framed folder digest of docs/bundle.md section 2 (`FOLDER_SHA256_METHOD` in shvit_edge/atomic.py): over
    /// `relativePaths` (POSIX, relative to `folder`) in sorted order, each as the 8-byte big-endian length of its
    /// UTF-8 path, the path, the 8-byte big-endian length of its bytes, then its bytes.
    public static func ofFolder(_ folder: URL, _ relativePaths: [String]) throws -> String {
        var md = SHA256()
        // Python sorts str by code point; UTF-8 byte order is the same order
        let sorted = relativePaths.sorted { compareUtf8($0, $1) < 0 }
        for relative in sorted {
            let path = Data(relative.utf8)
            let file = folder.appendingPathComponent(relative, isDirectory: false)
            let size = ((try? FileManager.default.attributesOfItem(atPath: file.path))?[.size] as? NSNumber)?.int64Value ?? 0
            md.update(data: bigEndian(Int64(path.count)))
            md.update(data: path)
            md.update(data: bigEndian(size))
            try feed(&md, file, nil)
        }
        return toHex(md.finalize())
    }

    private static func compareUtf8(_ a: String, _ b: String) -> Int {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        for k in 0..<min(x.count, y.count) {
            let d = Int(x[k]) - Int(y[k])
            if d != 0 { return d }
        }
        return x.count - y.count
    }

    private static func bigEndian(_ v: Int64) -> Data {
        Data((0..<8).map { k in UInt8(truncatingIfNeeded: UInt64(bitPattern: v) >> (56 - 8 * UInt64(k))) })
    }
}
