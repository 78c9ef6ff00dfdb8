package dev.shvitedge.harness.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File
import java.io.FileOutputStream
import java.util.zip.ZipEntry
import java.util.zip.ZipOutputStream

class BundleZipTest {

    private fun zipOf(root: File, out: File, prefix: String = "", extra: List<Pair<String, ByteArray>> = emptyList()) {
        ZipOutputStream(FileOutputStream(out)).use { z ->
            root.walkTopDown().filter { it.isFile }.sortedBy { it.path }.forEach { f ->
                z.putNextEntry(ZipEntry(prefix + f.relativeTo(root).invariantSeparatorsPath))
                z.write(f.readBytes())
                z.closeEntry()
            }
            for ((name, bytes) in extra) {
                z.putNextEntry(ZipEntry(name))
                z.write(bytes)
                z.closeEntry()
            }
        }
    }

    /** Set the external attributes of the central directory entry named [name] (as `zip -y` stores a symlink). */
    private fun setExternalAttr(zip: File, name: String, attr: Long) {
        val b = zip.readBytes()
        val n = name.toByteArray()
        for (p in 0 until b.size - 46) {
            if (b[p] == 0x50.toByte() && b[p + 1] == 0x4b.toByte() && b[p + 2] == 1.toByte() && b[p + 3] == 2.toByte()) {
                val len = (b[p + 28].toInt() and 0xff) or ((b[p + 29].toInt() and 0xff) shl 8)
                if (len == n.size && b.copyOfRange(p + 46, p + 46 + len).contentEquals(n)) {
                    for (k in 0 until 4) b[p + 38 + k] = (attr ushr (8 * k)).toByte()
                }
            }
        }
        zip.writeBytes(b)
    }

    @Test
    fun theGoldenBundleUnzipsAndOpens() {
        val dir = Temp.dir()
        val zip = File(dir, "b.zip")
        zipOf(Golden.bundle, zip)
        val root = BundleZip.unpack(zip, File(dir, "out"))
        assertEquals(Bundle.open(Golden.bundle).id, Bundle.open(root).id)
        // a zip of the folder (Finder's Compress): the one folder inside is the root
        val zip2 = File(dir, "c.zip")
        zipOf(Golden.bundle, zip2, prefix = "mybundle/")
        val root2 = BundleZip.unpack(zip2, File(dir, "out2"))
        assertEquals("mybundle", root2.name)
        Bundle.open(root2)
    }

    @Test
    fun badZipsAreRefusedAndLeaveNothing() {
        val dir = Temp.dir()
        val src = File(dir, "src").also { it.mkdirs(); File(it, "bundle.json").writeText("{}") }
        for ((name, fragment) in listOf("../evil" to "'..' part", "/abs" to "is absolute", "a\\b" to "backslash")) {
            val zip = File(dir, "bad.zip")
            zipOf(src, zip, extra = listOf(name to byteArrayOf(1)))
            val out = File(dir, "out-bad")
            assertRefused(fragment) { BundleZip.unpack(zip, out) }
            assertFalse(out.exists())
        }
        val zip = File(dir, "link.zip")
        zipOf(src, zip, extra = listOf("link" to "/etc/passwd".toByteArray()))
        setExternalAttr(zip, "link", 0xA1FFL shl 16)
        assertRefused("entry 'link' is a symlink or special file") { BundleZip.unpack(zip, File(dir, "out-link")) }
        assertFalse(File(dir, "out-link").exists())
        val dup = File(dir, "dup.zip")
        ZipOutputStream(FileOutputStream(dup)).use { z ->
            z.putNextEntry(ZipEntry("a/")); z.closeEntry()
            z.putNextEntry(ZipEntry("a")); z.write(1); z.closeEntry()
        }
        assertRefused("appears twice") { BundleZip.unpack(dup, File(dir, "out-dup")) }
        val notZip = File(dir, "x.zip").also { it.writeText("hello") }
        assertRefused("not a readable zip") { BundleZip.unpack(notZip, File(dir, "out-x")) }
        assertTrue(dir.listFiles()!!.none { it.name.startsWith("out") })
    }
}
