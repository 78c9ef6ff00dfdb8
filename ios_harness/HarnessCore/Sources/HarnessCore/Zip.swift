// Zip.swift: Swift only. Kotlin's `BundleZip` (Bundle.kt, mirrored in Bundle.swift) reads the central directory
// and checks every entry rule itself, then unpacks with java.util.zip.ZipFile. iOS has no public zip API, so
// `ZipFile` here is the Swift stand-in for java.util.zip.ZipFile's reading: an entry's local header, its stored
// (method 0) or deflated (method 8) bytes (the Compression framework's COMPRESSION_ZLIB is raw RFC 1951 deflate,
// as zip stores it), its CRC-32. Encrypted entries and other methods are refused (java.util.zip refuses them too).
// The entry rules of docs/bundle.md section 2 (symlinks, absolute paths, `..`, duplicates, counts, sizes) are
// BundleZip's, checked before anything is unpacked.
import Compression
import Foundation

public enum ZipFile {
    /// One entry of the central directory (Kotlin's BundleZip.Entry has the name and the external attributes;
    /// the rest is what java.util.zip's ZipEntry knows).
    public struct Entry: Equatable {
        public let name: String
        public let method: Int
        public let flags: Int
        public let crc32: UInt32
        public let compressedSize: Int64
        public let size: Int64
        public let localHeaderOffset: Int64
        public let externalAttributes: UInt32

        /// Kotlin's `Entry.externalAttr`
        public var externalAttr: Int64 { Int64(externalAttributes) }
    }

    /// Whether the file at `url` starts like a zip archive (a local header or an empty archive's end record).
    public static func isZip(_ url: URL) -> Bool {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return false }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: 4), head.count == 4 else { return false }
        let sig = BundleZip.le32(head, 0)
        return sig == 0x04034b50 || sig == 0x06054b50
    }

    static func readAt(_ handle: FileHandle, _ offset: Int64, _ count: Int, _ place: String) throws -> Data {
        do {
            try handle.seek(toOffset: UInt64(offset))
            let data = try handle.read(upToCount: count) ?? Data()
            if data.count != count { throw HarnessError("\(place): not a readable zip (cut short)") }
            return data
        } catch let error as HarnessError {
            throw error
        } catch {
            throw HarnessError("\(place): not a readable zip (\(HarnessError.describe(error)))")
        }
    }

    /// Write `entry`'s bytes to `target`, refusing more bytes than it declares, fewer, or a wrong CRC-32.
    static func extract(_ handle: FileHandle, _ entry: Entry, _ target: URL, _ place: String) throws {
        let quotedName = HarnessError.quoted(entry.name)
        if entry.flags & 1 != 0 { throw HarnessError("\(place): cannot unpack (entry \(quotedName) is encrypted)") }
        if entry.method != 0 && entry.method != 8 {
            throw HarnessError("\(place): cannot unpack (entry \(quotedName) uses compression method \(entry.method); only stored and deflate are read)")
        }
        let local = try readAt(handle, entry.localHeaderOffset, 30, place)
        if BundleZip.le32(local, 0) != 0x04034b50 { throw HarnessError("\(place): not a readable zip (no local header for \(quotedName))") }
        let dataOffset = entry.localHeaderOffset + 30 + BundleZip.le16(local, 26) + BundleZip.le16(local, 28)
        let out: FileHandle
        do {
            out = try FileHandle(forWritingTo: target)
        } catch {
            throw HarnessError("\(place): cannot unpack \(quotedName) (\(HarnessError.describe(error)))")
        }
        defer { try? out.close() }
        var written: Int64 = 0
        var crc = CRC32()
        func emit(_ bytes: UnsafeRawBufferPointer) throws {
            if bytes.isEmpty { return }
            written += Int64(bytes.count)
            if written > entry.size { throw HarnessError("\(place): entry \(quotedName) holds more than it declares") }
            crc.update(bytes)
            try out.write(contentsOf: Data(bytes))
        }
        do {
            try handle.seek(toOffset: UInt64(dataOffset))
        } catch {
            throw HarnessError("\(place): not a readable zip (\(HarnessError.describe(error)))")
        }
        var remaining = entry.compressedSize
        let chunkBytes = 1 << 20
        if entry.method == 0 {
            while remaining > 0 {
                let chunk = try readChunk(handle, Int(min(Int64(chunkBytes), remaining)), place)
                remaining -= Int64(chunk.count)
                try chunk.withUnsafeBytes { try emit($0) }
            }
        } else {
            try inflate(handle, &remaining, chunkBytes, place, quotedName, emit)
        }
        if written != entry.size {
            throw HarnessError("\(place): not a readable zip (entry \(quotedName) holds \(written) bytes; it declares \(entry.size))")
        }
        if crc.value != entry.crc32 {
            throw HarnessError("\(place): not a readable zip (entry \(quotedName) fails its CRC-32)")
        }
    }

    static func readChunk(_ handle: FileHandle, _ count: Int, _ place: String) throws -> Data {
        let data: Data
        do {
            data = try handle.read(upToCount: count) ?? Data()
        } catch {
            throw HarnessError("\(place): not a readable zip (\(HarnessError.describe(error)))")
        }
        if data.count != count { throw HarnessError("\(place): not a readable zip (cut short)") }
        return data
    }

    /// Raw deflate (RFC 1951) from `handle`, `remaining` compressed bytes, each piece of output to `emit`.
    static func inflate(_ handle: FileHandle, _ remaining: inout Int64, _ chunkBytes: Int, _ place: String,
                        _ quotedName: String, _ emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        let stream = UnsafeMutablePointer<compression_stream>.allocate(capacity: 1)
        defer { stream.deallocate() }
        guard compression_stream_init(stream, COMPRESSION_STREAM_DECODE, COMPRESSION_ZLIB) == COMPRESSION_STATUS_OK else {
            throw HarnessError("\(place): cannot inflate \(quotedName)")
        }
        defer { compression_stream_destroy(stream) }
        let outSize = 1 << 16
        let outBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: outSize)
        defer { outBuffer.deallocate() }
        var finished = false
        while !finished {
            let last = remaining <= Int64(chunkBytes)
            let chunk = try remaining > 0 ? readChunk(handle, Int(min(Int64(chunkBytes), remaining)), place) : Data()
            remaining -= Int64(chunk.count)
            try chunk.withUnsafeBytes { (src: UnsafeRawBufferPointer) in
                stream.pointee.src_ptr = src.bindMemory(to: UInt8.self).baseAddress ?? UnsafePointer(outBuffer)
                stream.pointee.src_size = src.count
                while true {
                    stream.pointee.dst_ptr = outBuffer
                    stream.pointee.dst_size = outSize
                    let flags = last ? Int32(bitPattern: COMPRESSION_STREAM_FINALIZE.rawValue) : 0
                    let status = compression_stream_process(stream, flags)
                    let produced = outSize - stream.pointee.dst_size
                    try emit(UnsafeRawBufferPointer(start: outBuffer, count: produced))
                    if status == COMPRESSION_STATUS_END {
                        finished = true
                        return
                    }
                    if status != COMPRESSION_STATUS_OK {
                        throw HarnessError("\(place): not a readable zip (entry \(quotedName) is not valid deflate data)")
                    }
                    // more input needed (not the last piece), or the stream is stuck on the last one
                    if stream.pointee.src_size == 0 && produced < outSize {
                        if last {
                            throw HarnessError("\(place): not a readable zip (entry \(quotedName) is cut short)")
                        }
                        return
                    }
                }
            }
        }
    }

    /// CRC-32 (IEEE 802.3, as zip uses it).
    struct CRC32 {
        static let table: [UInt32] = (0..<256).map { n -> UInt32 in
            var c = UInt32(n)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            return c
        }

        private var crc: UInt32 = 0xFFFF_FFFF

        mutating func update(_ bytes: UnsafeRawBufferPointer) {
            var c = crc
            for b in bytes { c = CRC32.table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
            crc = c
        }

        var value: UInt32 { crc ^ 0xFFFF_FFFF }
    }
}
