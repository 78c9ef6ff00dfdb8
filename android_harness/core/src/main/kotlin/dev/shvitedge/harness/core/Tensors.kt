package dev.shvitedge.harness.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.Base64

/**
 * A raw tensor in memory: `float32` values in [floats], or `uint8` values in [bytes] (exactly one is set), C order,
 * samples first.
 */
class Tensor(val dtype: String, val shape: List<Int>, val floats: FloatArray?, val bytes: ByteArray?) {
    init {
        require((floats == null) != (bytes == null)) { "a tensor holds floats or bytes" }
        require(count.toLong() == shape.fold(1L) { a, b -> a * b }) { "a tensor of shape $shape holds $count values" }
    }

    val count: Int get() = floats?.size ?: bytes!!.size

    /** the number of samples (the first axis) */
    val samples: Int get() = shape[0]

    /** the values of one sample */
    val sampleSize: Int get() = shape.drop(1).fold(1) { a, b -> a * b }

    /** One value as a float (a uint8 as 0..255). */
    fun value(index: Int): Float = floats?.get(index) ?: (bytes!![index].toInt() and 0xff).toFloat()

    /** The raw little-endian bytes, as in the bundle's file. */
    fun toBytes(): ByteArray = bytes?.copyOf() ?: Tensors.floatsToBytes(floats!!)
}

/**
 * One chunk of the input tensor as fed to the model: [batch] samples (section 3 of docs/bundle.md), the last chunk
 * padded by repeating its first sample ([padded] rows, dropped from the outputs). [tensor] has shape
 * `[batch, ...]` of the input tensor's layout.
 */
class Chunk(val index: Int, val start: Int, val padded: Int, val tensor: Tensor) {
    val batch: Int get() = tensor.shape[0]

    /** the rows of this chunk's output that belong to real samples */
    val realRows: Int get() = batch - padded
}

/** The outputs of every input sample: float32 `[samples, classes]`. */
class Outputs(val samples: Int, val classes: Int, val values: FloatArray) {
    val shape: List<Int> get() = listOf(samples, classes)
}

object Tensors {

    /** The tensor in [file] as [spec] describes it (little-endian float32 `.f32` or uint8 `.u8`). */
    fun read(file: File, spec: TensorSpec): Tensor = read(file, spec.dtype, spec.shape)

    fun read(file: File, dtype: String, shape: List<Int>): Tensor {
        val count = shape.fold(1L) { a, b -> a * b }
        val itemSize = if (dtype == "uint8") 1 else 4
        if (count * itemSize > Int.MAX_VALUE) throw HarnessError("${file.path}: a tensor of shape $shape is too large to read")
        val size = file.length()
        if (size != count * itemSize) {
            throw HarnessError("${file.path} is $size bytes; its shape $shape $dtype takes ${count * itemSize}")
        }
        val data = file.readBytes()
        return when (dtype) {
            "uint8" -> Tensor(dtype, shape, null, data)
            "float32" -> Tensor(dtype, shape, bytesToFloats(data), null)
            else -> throw HarnessError("${file.path}: dtype $dtype is neither float32 nor uint8")
        }
    }

    fun bytesToFloats(data: ByteArray): FloatArray {
        if (data.size % 4 != 0) throw HarnessError("${data.size} bytes are not a whole number of float32 values")
        val out = FloatArray(data.size / 4)
        ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out)
        return out
    }

    fun floatsToBytes(values: FloatArray): ByteArray {
        val buffer = ByteBuffer.allocate(values.size * 4).order(ByteOrder.LITTLE_ENDIAN)
        buffer.asFloatBuffer().put(values)
        return buffer.array()
    }

    /** Standard base64 of the raw little-endian float32 bytes (a result's `output.base64`). */
    fun base64(values: FloatArray): String = Base64.getEncoder().encodeToString(floatsToBytes(values))

    /** The float32 values of a result's `output.base64` (strict: no line breaks, correct padding). */
    fun fromBase64(text: String, where: String): FloatArray = bytesToFloats(decodeBase64(text, where))

    /** The bytes of standard base64 [text] (strict). */
    fun decodeBase64(text: String, where: String): ByteArray = try { Base64.getDecoder().decode(text) } catch (e: IllegalArgumentException) {
        throw HarnessError("$where: base64 is not valid")
    }

    /** How many chunks of [batch] samples [samples] make (the last one may be short). */
    fun chunkCount(samples: Int, batch: Int): Int {
        require(batch >= 1 && samples >= 0)
        return (samples + batch - 1) / batch
    }

    /**
     * The chunks of [tensor] (samples first) for an artifact of batch [batch], as Python's `batches`
     * (harness/bundle.py): consecutive, the last one padded by repeating ITS first sample.
     */
    fun chunks(tensor: Tensor, batch: Int): List<Chunk> {
        val n = tensor.samples
        val size = tensor.sampleSize
        val chunkShape = listOf(batch) + tensor.shape.drop(1)
        return (0 until chunkCount(n, batch)).map { c ->
            val start = c * batch
            val real = minOf(batch, n - start)
            val padded = batch - real
            val t = if (tensor.floats != null) {
                val out = FloatArray(batch * size)
                System.arraycopy(tensor.floats, start * size, out, 0, real * size)
                for (p in 0 until padded) System.arraycopy(tensor.floats, start * size, out, (real + p) * size, size)
                Tensor(tensor.dtype, chunkShape, out, null)
            } else {
                val out = ByteArray(batch * size)
                System.arraycopy(tensor.bytes!!, start * size, out, 0, real * size)
                for (p in 0 until padded) System.arraycopy(tensor.bytes, start * size, out, (real + p) * size, size)
                Tensor(tensor.dtype, chunkShape, null, out)
            }
            Chunk(c, start, padded, t)
        }
    }

    /**
     * The outputs of one pass over [chunks] ([outputs]: one array per chunk, `batch * classes` values each),
     * concatenated with the padded rows dropped: `[samples, classes]`.
     */
    fun assemble(chunks: List<Chunk>, outputs: List<FloatArray>): Outputs {
        require(chunks.size == outputs.size) { "one output per chunk" }
        if (chunks.isEmpty()) throw HarnessError("no chunks: the input tensor has no samples")
        val batch = chunks[0].batch
        val first = outputs[0].size
        if (first == 0 || first % batch != 0) {
            throw HarnessError("the output of chunk 0 holds $first values, not a whole number of rows for batch $batch")
        }
        val classes = first / batch
        val samples = chunks.sumOf { it.realRows }
        val out = FloatArray(samples * classes)
        var at = 0
        for ((k, chunk) in chunks.withIndex()) {
            val o = outputs[k]
            if (o.size != batch * classes) {
                throw HarnessError("the output of chunk $k holds ${o.size} values; chunk 0's held ${batch * classes}")
            }
            System.arraycopy(o, 0, out, at, chunk.realRows * classes)
            at += chunk.realRows * classes
        }
        return Outputs(samples, classes, out)
    }

    /** Pixel layouts for [pixels]. */
    enum class PixelFormat(val channels: Int) { RGB(3), RGBA(4), BGRA(4) }

    /**
     * Sample [sample] of a uint8 NCHW tensor `[N, 3, H, W]` as interleaved pixel rows (docs/bundle.md section 3:
     * pixel (y, x) takes R = x[n,0,y,x], G = x[n,1,y,x], B = x[n,2,y,x]; alpha 255), row stride [rowBytes]
     * (at least `W * channels`; e.g. a CVPixelBuffer's bytes per row).
     */
    fun pixels(tensor: Tensor, sample: Int, format: PixelFormat, rowBytes: Int = 0): ByteArray {
        val bytes = tensor.bytes ?: throw HarnessError("pixels come from a uint8 tensor, not ${tensor.dtype}")
        if (tensor.shape.size != 4 || tensor.shape[1] != 3) throw HarnessError("pixels come from an NCHW [N, 3, H, W] tensor, not ${tensor.shape}")
        val h = tensor.shape[2]
        val w = tensor.shape[3]
        val stride = if (rowBytes > 0) rowBytes else w * format.channels
        require(stride >= w * format.channels) { "rowBytes $rowBytes is less than a row of $w pixels" }
        val out = ByteArray(stride * h)
        val plane = h * w
        val base = sample * 3 * plane
        for (y in 0 until h) {
            for (x in 0 until w) {
                val r = bytes[base + y * w + x]
                val g = bytes[base + plane + y * w + x]
                val b = bytes[base + 2 * plane + y * w + x]
                val o = y * stride + x * format.channels
                when (format) {
                    PixelFormat.RGB -> { out[o] = r; out[o + 1] = g; out[o + 2] = b }
                    PixelFormat.RGBA -> { out[o] = r; out[o + 1] = g; out[o + 2] = b; out[o + 3] = 0xff.toByte() }
                    PixelFormat.BGRA -> { out[o] = b; out[o + 1] = g; out[o + 2] = r; out[o + 3] = 0xff.toByte() }
                }
            }
        }
        return out
    }
}
