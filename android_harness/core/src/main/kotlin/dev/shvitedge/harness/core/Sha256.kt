package dev.shvitedge.harness.core

import java.io.File
import java.io.FileInputStream
import java.security.MessageDigest

/** sha256, as lowercase hex, of bytes and of files (streamed: a file is never read whole). */
object Sha256 {
    private const val BLOCK = 1 shl 20

    fun hex(bytes: ByteArray): String = toHex(MessageDigest.getInstance("SHA-256").digest(bytes))

    fun toHex(digest: ByteArray): String {
        val sb = StringBuilder(digest.size * 2)
        for (b in digest) {
            val v = b.toInt() and 0xff
            sb.append("0123456789abcdef"[v ushr 4]).append("0123456789abcdef"[v and 15])
        }
        return sb.toString()
    }

    /** The sha256 of [file]'s bytes; [progress] gets the bytes read so far. */
    fun ofFile(file: File, progress: ((Long) -> Unit)? = null): String {
        val md = MessageDigest.getInstance("SHA-256")
        feed(md, file, progress)
        return toHex(md.digest())
    }

    private fun feed(md: MessageDigest, file: File, progress: ((Long) -> Unit)?) {
        val buffer = ByteArray(BLOCK)
        var total = 0L
        FileInputStream(file).use { input ->
            while (true) {
                val n = input.read(buffer)
                if (n < 0) break
                md.update(buffer, 0, n)
                total += n
                progress?.invoke(total)
            }
        }
    }

    /**
     * The framed folder digest of docs/bundle.md section 2 (`FOLDER_SHA256_METHOD` in shvit_edge/atomic.py): over
     * [relativePaths] (POSIX, relative to [folder]) in sorted order, each as the 8-byte big-endian length of its
     * UTF-8 path, the path, the 8-byte big-endian length of its bytes, then its bytes.
     */
    fun ofFolder(folder: File, relativePaths: Collection<String>): String {
        val md = MessageDigest.getInstance("SHA-256")
        // Python sorts str by code point; UTF-8 byte order is the same order
        val sorted = relativePaths.sortedWith { a, b -> compareUtf8(a, b) }
        for (relative in sorted) {
            val path = relative.toByteArray(Charsets.UTF_8)
            val file = File(folder, relative)
            md.update(bigEndian(path.size.toLong()))
            md.update(path)
            md.update(bigEndian(file.length()))
            feed(md, file, null)
        }
        return toHex(md.digest())
    }

    private fun compareUtf8(a: String, b: String): Int {
        val x = a.toByteArray(Charsets.UTF_8)
        val y = b.toByteArray(Charsets.UTF_8)
        for (k in 0 until minOf(x.size, y.size)) {
            val d = (x[k].toInt() and 0xff) - (y[k].toInt() and 0xff)
            if (d != 0) return d
        }
        return x.size - y.size
    }

    private fun bigEndian(v: Long) = ByteArray(8) { k -> (v ushr (56 - 8 * k)).toByte() }
}
