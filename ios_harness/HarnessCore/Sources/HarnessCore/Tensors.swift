// Mirror of Tensors.kt.
import Foundation

/// A raw tensor in memory: `float32` values in `floats`, or `uint8` values in `bytes` (exactly one is set), C order,
/// samples first.
public final class Tensor {
    public let dtype: String
    public let shape: [Int]
    public let floats: [Float]?
    public let bytes: [UInt8]?

    public init(_ dtype: String, _ shape: [Int], _ floats: [Float]?, _ bytes: [UInt8]?) {
        precondition((floats == nil) != (bytes == nil), "a tensor holds floats or bytes")
        self.dtype = dtype
        self.shape = shape
        self.floats = floats
        self.bytes = bytes
        precondition(count == shape.reduce(1, *), "a tensor of shape \(shape) holds \(count) values")
    }

    public var count: Int { floats?.count ?? bytes!.count }

    /// the number of samples (the first axis)
    public var samples: Int { shape[0] }

    /// the values of one sample
    public var sampleSize: Int { shape.dropFirst().reduce(1, *) }

    /// One value as a float (a uint8 as 0..255).
    public func value(_ index: Int) -> Float {
        if let floats { return floats[index] }
        return Float(bytes![index])
    }

    /// The raw little-endian bytes, as in the bundle's file.
    public func toBytes() -> Data {
        if let bytes { return Data(bytes) }
        return Tensors.floatsToBytes(floats!)
    }
}

/// One chunk of the input tensor as fed to the model: `batch` samples (section 3 of docs/bundle.md), the last chunk
/// padded by repeating its first sample (`padded` rows, dropped from the outputs). `tensor` has shape
/// `[batch, ...]` of the input tensor's layout.
public final class Chunk {
    public let index: Int
    public let start: Int
    public let padded: Int
    public let tensor: Tensor

    public init(_ index: Int, _ start: Int, _ padded: Int, _ tensor: Tensor) {
        self.index = index
        self.start = start
        self.padded = padded
        self.tensor = tensor
    }

    public var batch: Int { tensor.shape[0] }

    /// the rows of this chunk's output that belong to real samples
    public var realRows: Int { batch - padded }
}

/// The outputs of every input sample: float32 `[samples, classes]`.
public final class Outputs {
    public let samples: Int
    public let classes: Int
    public let values: [Float]

    public init(_ samples: Int, _ classes: Int, _ values: [Float]) {
        self.samples = samples
        self.classes = classes
        self.values = values
    }

    public var shape: [Int] { [samples, classes] }
}

public enum Tensors {

    /// The tensor in `file` as `spec` describes it (little-endian float32 `.f32` or uint8 `.u8`).
    public static func read(_ file: URL, _ spec: TensorSpec) throws -> Tensor {
        try read(file, spec.dtype, spec.shape)
    }

    public static func read(_ file: URL, _ dtype: String, _ shape: [Int]) throws -> Tensor {
        let count = shape.reduce(Int64(1)) { $0 * Int64($1) }
        let itemSize: Int64 = dtype == "uint8" ? 1 : 4
        if count * itemSize > Int64(Int32.max) {
            throw HarnessError("\(file.path): a tensor of shape \(shapeText(shape)) is too large to read")
        }
        let size = (try? SafePath.size(file)) ?? -1
        if size != count * itemSize {
            throw HarnessError("\(file.path) is \(size) bytes; its shape \(shapeText(shape)) \(dtype) takes \(count * itemSize)")
        }
        let data: Data
        do {
            data = try Data(contentsOf: file)
        } catch {
            throw HarnessError("\(file.path): cannot read it (\(HarnessError.describe(error)))")
        }
        switch dtype {
        case "uint8": return Tensor(dtype, shape, nil, [UInt8](data))
        case "float32": return Tensor(dtype, shape, try bytesToFloats(data), nil)
        default: throw HarnessError("\(file.path): dtype \(dtype) is neither float32 nor uint8")
        }
    }

    public static func bytesToFloats(_ data: Data) throws -> [Float] {
        if data.count % 4 != 0 { throw HarnessError("\(data.count) bytes are not a whole number of float32 values") }
        let count = data.count / 4
        var out = [Float](repeating: 0, count: count)
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            for k in 0..<count {
                out[k] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: k * 4, as: UInt32.self)))
            }
        }
        return out
    }

    public static func floatsToBytes(_ values: [Float]) -> Data {
        var data = Data(count: values.count * 4)
        data.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) in
            for (k, v) in values.enumerated() {
                raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: k * 4, as: UInt32.self)
            }
        }
        return data
    }

    /// Standard base64 of the raw little-endian float32 bytes (a result's `output.base64`).
    public static func base64(_ values: [Float]) -> String { floatsToBytes(values).base64EncodedString() }

    /// The float32 values of a result's `output.base64` (strict: no line breaks, correct padding).
    public static func fromBase64(_ text: String, where place: String) throws -> [Float] {
        try bytesToFloats(decodeBase64(text, where: place))
    }

    /// The bytes of standard base64 `text` (strict, as Java's Base64.getDecoder(): no line breaks or other
    /// characters; the final padding may be left out).
    public static func decodeBase64(_ text: String, where place: String) throws -> Data {
        var padded = text
        let rest = text.utf8.count % 4
        if !text.contains("=") && (rest == 2 || rest == 3) { padded += String(repeating: "=", count: 4 - rest) }
        guard let raw = Data(base64Encoded: padded) else { throw HarnessError("\(place): base64 is not valid") }
        return raw
    }

    /// How many chunks of `batch` samples `samples` make (the last one may be short).
    public static func chunkCount(_ samples: Int, _ batch: Int) -> Int {
        precondition(batch >= 1 && samples >= 0)
        return (samples + batch - 1) / batch
    }

    /// The chunks of `tensor` (samples first) for an artifact of batch `batch`, as Python's `batches`
    /// (harness/bundle.py): consecutive, the last one padded by repeating ITS first sample.
    public static func chunks(_ tensor: Tensor, _ batch: Int) -> [Chunk] {
        let n = tensor.samples
        let size = tensor.sampleSize
        let chunkShape = [batch] + Array(tensor.shape.dropFirst())
        return (0..<chunkCount(n, batch)).map { c -> Chunk in
            let start = c * batch
            let real = min(batch, n - start)
            let padded = batch - real
            let t: Tensor
            if let floats = tensor.floats {
                var out = Array(floats[(start * size)..<((start + real) * size)])
                for _ in 0..<padded { out.append(contentsOf: floats[(start * size)..<((start + 1) * size)]) }
                t = Tensor(tensor.dtype, chunkShape, out, nil)
            } else {
                let bytes = tensor.bytes!
                var out = Array(bytes[(start * size)..<((start + real) * size)])
                for _ in 0..<padded { out.append(contentsOf: bytes[(start * size)..<((start + 1) * size)]) }
                t = Tensor(tensor.dtype, chunkShape, nil, out)
            }
            return Chunk(c, start, padded, t)
        }
    }

    /// The outputs of one pass over `chunks` (`outputs`: one array per chunk, `batch * classes` values each),
    /// concatenated with the padded rows dropped: `[samples, classes]`.
    public static func assemble(_ chunks: [Chunk], _ outputs: [[Float]]) throws -> Outputs {
        precondition(chunks.count == outputs.count, "one output per chunk")
        if chunks.isEmpty { throw HarnessError("no chunks: the input tensor has no samples") }
        let batch = chunks[0].batch
        let first = outputs[0].count
        if first == 0 || first % batch != 0 {
            throw HarnessError("the output of chunk 0 holds \(first) values, not a whole number of rows for batch \(batch)")
        }
        let classes = first / batch
        let samples = chunks.reduce(0) { $0 + $1.realRows }
        var out: [Float] = []
        out.reserveCapacity(samples * classes)
        for (k, chunk) in chunks.enumerated() {
            let o = outputs[k]
            if o.count != batch * classes {
                throw HarnessError("the output of chunk \(k) holds \(o.count) values; chunk 0's held \(batch * classes)")
            }
            out.append(contentsOf: o[0..<(chunk.realRows * classes)])
        }
        return Outputs(samples, classes, out)
    }

    /// Pixel layouts for `pixels`.
    public enum PixelFormat {
        case RGB, RGBA, BGRA

        public var channels: Int {
            switch self {
            case .RGB: return 3
            case .RGBA, .BGRA: return 4
            }
        }
    }

    /// Sample `sample` of a uint8 NCHW tensor `[N, 3, H, W]` as interleaved pixel rows (docs/bundle.md section 3:
    /// pixel (y, x) takes R = x[n,0,y,x], G = x[n,1,y,x], B = x[n,2,y,x]; alpha 255), row stride `rowBytes`
    /// (at least `W * channels`; e.g. a CVPixelBuffer's bytes per row).
    public static func pixels(_ tensor: Tensor, _ sample: Int, _ format: PixelFormat, rowBytes: Int = 0) throws -> [UInt8] {
        guard let bytes = tensor.bytes else {
            throw HarnessError("pixels come from a uint8 tensor, not \(tensor.dtype)")
        }
        if tensor.shape.count != 4 || tensor.shape[1] != 3 {
            throw HarnessError("pixels come from an NCHW [N, 3, H, W] tensor, not \(shapeText(tensor.shape))")
        }
        let h = tensor.shape[2]
        let w = tensor.shape[3]
        let stride = rowBytes > 0 ? rowBytes : w * format.channels
        precondition(stride >= w * format.channels, "rowBytes \(rowBytes) is less than a row of \(w) pixels")
        var out = [UInt8](repeating: 0, count: stride * h)
        let plane = h * w
        let base = sample * 3 * plane
        for y in 0..<h {
            for x in 0..<w {
                let r = bytes[base + y * w + x]
                let g = bytes[base + plane + y * w + x]
                let b = bytes[base + 2 * plane + y * w + x]
                let o = y * stride + x * format.channels
                switch format {
                case .RGB: out[o] = r; out[o + 1] = g; out[o + 2] = b
                case .RGBA: out[o] = r; out[o + 1] = g; out[o + 2] = b; out[o + 3] = 0xFF
                case .BGRA: out[o] = b; out[o + 1] = g; out[o + 2] = r; out[o + 3] = 0xFF
                }
            }
        }
        return out
    }

    /// A shape as Kotlin's List.toString shows it: `[8, 1000]`.
    public static func shapeText(_ shape: [Int]) -> String {
        "[" + shape.map(String.init).joined(separator: ", ") + "]"
    }
}
