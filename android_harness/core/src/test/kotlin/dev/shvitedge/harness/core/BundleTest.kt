package dev.shvitedge.harness.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File
import java.io.RandomAccessFile
import java.nio.file.Files

class BundleTest {

    @Test
    fun goldenBundleOpensAndPassesItsSha256Checks() {
        val messages = ArrayList<String>()
        val bundle = Bundle.open(Golden.bundle) { messages.add(it) }
        val doc = Golden.json("bundle/bundle.json") as Map<*, *>
        assertEquals(doc["id"], bundle.id)
        assertEquals("bundle", bundle.name)
        assertEquals((doc["files"] as List<*>).size, bundle.files.size)
        assertEquals(bundle.files.size, messages.count { it.startsWith("checking ") })
        assertEquals(listOf("onnx", "executorch", "tflite", "coreml"), bundle.artifacts.map { it.target })
        val tflite = bundle.artifacts.single { it.target == "tflite" }
        assertEquals(listOf("xnnpack", "gpu", "gpu-fp16", "nnapi"), tflite.run.settings)
        assertEquals(4, tflite.run.threads)
        assertEquals("tensor", tflite.input.kind)
        assertEquals(0.99999, tflite.tolerance.cosine, 0.0)
        assertNull(tflite.tolerance.sqnrDb)
        val pte = bundle.artifacts.single { it.target == "executorch" }
        assertEquals("artifacts/tinyfake_a_64x64.pte.bpte", pte.bundledProgram)
        val coreml = bundle.artifacts.single { it.target == "coreml" }
        assertTrue("an .mlpackage is a folder", coreml.isFolder)
        assertEquals("image", coreml.input.kind)
        assertEquals("classifier", coreml.output.layout)
        assertTrue(coreml.path.isDirectory)
    }

    @Test
    fun tensorsReadWithTheirShapesAndValues() {
        val bundle = Bundle.open(Golden.bundle)
        val tflite = bundle.artifacts.single { it.target == "tflite" }
        val x = bundle.inputOf(tflite)
        val spec = bundle.tensorSpec(tflite.input.tensor)
        assertEquals(spec.shape, x.shape)
        assertEquals("float32", x.dtype)
        val raw = floatsOf(File(Golden.bundle, spec.file))
        assertEquals(raw.size, x.count)
        for (k in listOf(0, 1, 4095, 4096, 12287, raw.size / 2, raw.size - 1)) assertEquals(raw[k], x.floats!![k], 0f)
        val ref = bundle.referenceOf(tflite)
        assertEquals(listOf(x.samples, 10), ref.shape)
        val rawRef = floatsOf(File(Golden.bundle, bundle.tensorSpec(tflite.output.reference).file))
        assertTrue(rawRef.contentEquals(ref.floats!!))

        val coreml = bundle.artifacts.single { it.target == "coreml" }
        val pixels = bundle.inputOf(coreml)
        assertEquals("uint8", pixels.dtype)
        val rawBytes = File(Golden.bundle, bundle.tensorSpec(coreml.input.tensor).file).readBytes()
        assertTrue(rawBytes.contentEquals(pixels.bytes!!))
        assertEquals(listOf(4, 3, 64, 64), pixels.shape)
        // NCHW -> BGRA: pixel (y, x) of sample 1 takes B = x[1,2,y,x], G = x[1,1,y,x], R = x[1,0,y,x], A = 255
        val bgra = Tensors.pixels(pixels, 1, Tensors.PixelFormat.BGRA)
        val plane = 64 * 64
        for ((y, xx) in listOf(0 to 0, 5 to 17, 63 to 63)) {
            val o = (y * 64 + xx) * 4
            val base = 3 * plane
            assertEquals(rawBytes[base + 2 * plane + y * 64 + xx], bgra[o])
            assertEquals(rawBytes[base + plane + y * 64 + xx], bgra[o + 1])
            assertEquals(rawBytes[base + y * 64 + xx], bgra[o + 2])
            assertEquals(255.toByte(), bgra[o + 3])
        }
    }

    @Test
    fun everyBadGoldenBundleIsRefusedWithItsReason() {
        val cases = File(Golden.dir, "bad").listFiles { f -> f.isDirectory }!!.sortedBy { it.name }
        assertTrue("golden bad bundles exist", cases.size >= 10)
        for (case in cases) {
            val why = File(case, "why.txt").readText().trim()
            try {
                Bundle.open(case)
                throw AssertionError("${case.name}: not refused (expected '$why')")
            } catch (e: HarnessError) {
                assertTrue("${case.name}: '${e.message}' does not contain '$why'", e.message.contains(why))
            }
        }
    }

    private fun goldenCopy(): File {
        val dir = Temp.dir()
        val root = File(dir, "bundle")
        Temp.copyTree(Golden.bundle, root)
        return root
    }

    @Test
    fun aFlippedByteIsRefusedNamingTheFile() {
        val root = goldenCopy()
        val bundle = Bundle.open(root)
        val file = bundle.tensorSpec(bundle.artifacts[0].input.tensor).file
        RandomAccessFile(File(root, file), "rw").use { f ->
            f.seek(1000)
            val b = f.read()
            f.seek(1000)
            f.write(b xor 0x01)
        }
        assertRefused("$file fails its sha256") { Bundle.open(root) }
    }

    @Test
    fun aFlippedArtifactByteIsRefused() {
        val root = goldenCopy()
        val file = "artifacts/tinyfake_a_64x64.tflite"
        val bytes = File(root, file).readBytes()
        bytes[bytes.size - 1] = (bytes[bytes.size - 1].toInt() xor 0x80).toByte()
        File(root, file).writeBytes(bytes)
        assertRefused(file) { Bundle.open(root) }
    }

    @Test
    fun dotDotAbsoluteAndOtherBadPathsAreRefused() {
        for ((bad, fragment) in listOf("../x" to "'../x'", "/etc/passwd" to "'/etc/passwd' is absolute",
            "tensors/./a" to "'tensors/./a'", "tensors//a" to "tensors//a", "a\\b" to "backslash", "a\u0000b" to "NUL",
            "a\u001fb" to "control", "C:/x" to "absolute", "tensors/" to "empty")) {
            val root = goldenCopy()
            SyntheticBundle.edit(root) { doc ->
                @Suppress("UNCHECKED_CAST")
                ((doc["files"] as MutableList<Any?>)[0] as MutableMap<String, Any?>)["path"] = bad
            }
            assertRefused(fragment) { Bundle.open(root) }
        }
    }

    @Test
    fun aTensorPathLeavingTheBundleIsRefused() {
        val root = goldenCopy()
        SyntheticBundle.edit(root) { doc ->
            @Suppress("UNCHECKED_CAST")
            val tensors = doc["tensors"] as MutableMap<String, Any?>
            @Suppress("UNCHECKED_CAST")
            (tensors.values.first() as MutableMap<String, Any?>)["file"] = "../bundle/tensors/x.f32"
        }
        assertRefused("'..' part") { Bundle.open(root) }
    }

    @Test
    fun symlinksAreRefused() {
        // a listed file that is a symlink (to the very same bytes)
        val root = goldenCopy()
        val file = File(root, "artifacts/tinyfake_a_64x64.onnx")
        val outside = File(root.parentFile, "outside.onnx")
        file.copyTo(outside)
        file.delete()
        Files.createSymbolicLink(file.toPath(), outside.toPath())
        assertRefused("artifacts/tinyfake_a_64x64.onnx is (or passes through) a symlink") { Bundle.open(root) }

        // a folder on the way that is a symlink
        val root2 = goldenCopy()
        val tensors = File(root2, "tensors")
        val elsewhere = File(root2.parentFile, "elsewhere")
        Files.move(tensors.toPath(), elsewhere.toPath())
        Files.createSymbolicLink(tensors.toPath(), elsewhere.toPath())
        assertRefused("symlink") { Bundle.open(root2) }

        // bundle.json itself
        val root3 = goldenCopy()
        val json = File(root3, "bundle.json")
        val moved = File(root3.parentFile, "moved.json")
        Files.move(json.toPath(), moved.toPath())
        Files.createSymbolicLink(json.toPath(), moved.toPath())
        assertRefused("bundle.json is a symlink") { Bundle.open(root3) }
    }

    @Test
    fun aWrongSizeIsRefused() {
        val root = goldenCopy()
        val file = "artifacts/tinyfake_a_64x64.pte.bpte"
        File(root, file).appendBytes(byteArrayOf(0))
        assertRefused("$file is 202337 bytes; bundle.json says 202336") { Bundle.open(root) }
    }

    @Test
    fun aMissingFileAndAFolderInsteadOfAFileAreRefused() {
        val root = goldenCopy()
        File(root, "artifacts/tinyfake_a_64x64.tflite.json").delete()
        assertRefused("artifacts/tinyfake_a_64x64.tflite.json is missing") { Bundle.open(root) }
        val root2 = goldenCopy()
        File(root2, "artifacts/tinyfake_a_64x64.tflite.json").delete()
        File(root2, "artifacts/tinyfake_a_64x64.tflite.json").mkdir()
        assertRefused("is not a regular file") { Bundle.open(root2) }
    }

    @Test
    fun schemaViolationsAreRefused() {
        val cases: List<Pair<String, (MutableMap<String, Any?>) -> Unit>> = listOf(
            "unknown key extra" to { d -> d["extra"] = 1 },
            "missing key inputs" to { d -> d.remove("inputs") },
            "threads: 0 is less than the minimum of 1" to { d -> run(d, 0)["threads"] = 0 },
            "settings must have at least 1 items" to { d -> run(d, 0)["settings"] = emptyList<String>() },
            "is not a sha256" to { d -> d["id"] = "ABC" },
            "dtype is 'float64'" to { d -> tensor(d)["dtype"] = "float64" },
            "kind is 'pixels'" to { d -> input(d)["kind"] = "pixels" },
            "batch must be an integer" to { d -> art(d, 0)["batch"] = true },
            "bundle schema_version 2 is not supported" to { d -> d["schema_version"] = 2 },
        )
        for ((fragment, edit) in cases) {
            val root = goldenCopy()
            SyntheticBundle.edit(root, edit)
            assertRefused(fragment) { Bundle.open(root) }
        }
    }

    @Test
    fun anArtifactNotTheOneItsManifestDescribesIsRefused() {
        val root = goldenCopy()
        SyntheticBundle.edit(root) { d -> art(d, 2)["batch"] = 2 }
        assertRefused("artifacts[2].batch is 2; its manifest says 1") { Bundle.open(root) }
        val root2 = goldenCopy()
        SyntheticBundle.edit(root2) { d -> art(d, 2)["sha256"] = "a".repeat(64) }
        assertRefused("not the artifact its manifest describes") { Bundle.open(root2) }
    }

    @Test
    fun theMlpackageFolderDigestIsRecomputed() {
        val root = goldenCopy()
        val bundle = Bundle.open(root)
        val coreml = bundle.artifacts.single { it.isFolder }
        val inside = bundle.files.map { it.path }.filter { it.startsWith(coreml.file + "/") }
        assertEquals(coreml.sha256, Sha256.ofFolder(coreml.path, inside.map { it.removePrefix(coreml.file + "/") }))
    }

    @Test
    fun strictJson() {
        for ((text, fragment) in listOf(
            "{\"a\":1,\"a\":2}" to "the key a appears twice", "[NaN]" to "NaN", "[Infinity]" to "Infinity",
            "[-Infinity]" to "Infinity", "{'a':1}" to "not valid JSON", "[1,]" to "not valid JSON",
            "{\"a\":1} // c" to "extra data", "[1e400]" to "not finite", "[\"\\ud800\"]" to "lone surrogate",
            "[01]" to "not valid JSON", "\uFEFF{}" to "not valid JSON", "[\"a\u0001\"]" to "control character",
            "[".repeat(65) + "]".repeat(65) to "nested more than 64")) {
            assertRefused(fragment) { Json.parse(text.toByteArray(), "t") }
        }
        assertEquals(64, depth(Json.parse(("[".repeat(64) + "]".repeat(64)).toByteArray(), "t")))
        assertRefused("not UTF-8") { Json.parse(byteArrayOf(0x22, 0xff.toByte(), 0x22), "t") }
        val v = Json.parse("{\"i\": 7, \"f\": 7.0, \"e\": 1e-5, \"s\": \"\\u00e9\\n\", \"n\": null}".toByteArray(), "t") as Map<*, *>
        assertEquals(7L, v["i"])
        assertEquals(7.0, v["f"])
        assertEquals("{\"i\":7,\"f\":7.0,\"e\":1.0E-5,\"s\":\"é\\n\",\"n\":null}", Json.write(v))
        for (d in listOf(0.1, 1.0 / 3, 2.0e-3, 123456.789, 1e300, 4.9e-324, 0.30000000000000004, 5e-324 * 3)) {
            assertEquals(d, (Json.parse("[${Json.number(d)}]".toByteArray(), "t") as List<*>)[0] as Double, 0.0)
        }
        val big = File(Temp.dir(), "big.json")
        big.writeBytes(ByteArray((16 shl 20) + 1) { ' '.code.toByte() })
        assertRefused("more than the 16777216 allowed") { Json.readFile(big, "big.json") }
    }

    private fun depth(v: Any?): Int = if (v is List<*>) 1 + (v.firstOrNull()?.let { depth(it) } ?: 0) else 0

    @Suppress("UNCHECKED_CAST")
    private fun art(d: MutableMap<String, Any?>, i: Int) = (d["artifacts"] as MutableList<Any?>)[i] as MutableMap<String, Any?>

    @Suppress("UNCHECKED_CAST")
    private fun run(d: MutableMap<String, Any?>, i: Int) = art(d, i)["run"] as MutableMap<String, Any?>

    @Suppress("UNCHECKED_CAST")
    private fun input(d: MutableMap<String, Any?>) = art(d, 0)["input"] as MutableMap<String, Any?>

    @Suppress("UNCHECKED_CAST")
    private fun tensor(d: MutableMap<String, Any?>) = (d["tensors"] as MutableMap<String, Any?>).values.first() as MutableMap<String, Any?>
}
