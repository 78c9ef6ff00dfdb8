package dev.shvitedge.harness.core

import java.io.File

/** One raw tensor of a bundle (`tensors.<id>` of bundle.json). */
data class TensorSpec(
    val id: String,
    val file: String,
    /** `float32` or `uint8` */
    val dtype: String,
    val shape: List<Int>,
    /** `NCHW` / `NHWC` (inputs), `NC` (references) */
    val layout: String,
    /** `input`, `reference`, or null */
    val role: String?,
    val description: String?,
) {
    val itemSize: Int get() = if (dtype == "uint8") 1 else 4
    val count: Long get() = shape.fold(1L) { a, b -> a * b }
    val byteSize: Long get() = count * itemSize
}

data class ArtifactInput(val tensor: String, val name: String, /** `tensor` or `image` */ val kind: String)

data class ArtifactOutput(val name: String, /** `NC` or `classifier` */ val layout: String, val reference: String)

/** What the host judges an artifact's outputs by: cosine >=, max_abs <=, top1_agreement >=, sqnr_db >= (if set). */
data class Tolerance(
    val tolClass: String,
    val cosine: Double,
    val maxAbs: Double,
    val top1Agreement: Double,
    val sqnrDb: Double?,
    val source: String?,
)

data class RunSettings(val warmup: Int, val iterations: Int, val threads: Int, val settings: List<String>)

/** One entry of `artifacts` in bundle.json. */
data class Artifact(
    val index: Int,
    val name: String,
    val file: String,
    val manifest: String,
    val sha256: String,
    /** `coreml`, `executorch`, `tflite`, `onnx` */
    val target: String,
    val family: String,
    val variant: String,
    val resolution: List<Int>,
    val batch: Int,
    val precision: String,
    val quantization: String?,
    val input: ArtifactInput,
    val output: ArtifactOutput,
    val tolerance: Tolerance,
    val run: RunSettings,
    val bundledProgram: String?,
    val profile: String?,
    val device: Map<String, Any?>?,
    /** a folder (`.mlpackage`) rather than a file */
    val isFolder: Boolean,
    /** the artifact's file (or folder) in the bundle */
    val path: File,
)

data class FileEntry(val path: String, val sha256: String, val size: Long)

data class BundleInputs(val images: List<String>, val samples: Int, val seed: Long)

/**
 * A checked bundle (docs/bundle.md section 2): [open] parses bundle.json and refuses, with a one-line
 * [HarnessError] naming the file, everything Python's `open_bundle` refuses, except that the `id` is not
 * recomputed (docs/bundle.md: an app need not; it is copied into the result).
 */
class Bundle private constructor(
    val root: File,
    /** bundle.json as parsed */
    val json: Map<String, Any?>,
    val id: String,
    val shvitEdgeVersion: String,
    val createdAt: String,
    val inputs: BundleInputs,
    val tensors: Map<String, TensorSpec>,
    val artifacts: List<Artifact>,
    val files: List<FileEntry>,
) {
    /** The bundle's folder name: a result's `bundle.name`. */
    val name: String get() = root.name

    /** The artifact's file (or folder). */
    fun artifactFile(artifact: Artifact): File = artifact.path

    fun tensorSpec(id: String): TensorSpec = tensors[id] ?: throw HarnessError("$name: no tensor $id")

    /** The tensor [id], read (its size was checked when the bundle was opened). */
    fun tensor(id: String): Tensor = Tensors.read(File(root, tensorSpec(id).file), tensorSpec(id))

    fun inputOf(artifact: Artifact): Tensor = tensor(artifact.input.tensor)

    fun referenceOf(artifact: Artifact): Tensor = tensor(artifact.output.reference)

    companion object {
        const val SCHEMA_VERSION = 1L
        const val KIND = "shvit-edge-bundle"
        const val BUNDLE_JSON = "bundle.json"
        const val MAX_BUNDLE_JSON_BYTES = 16L shl 20
        const val MAX_MANIFEST_BYTES = 16L shl 20
        private val SHA256 = Regex("^[0-9a-f]{64}$")
        private val ID = Regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

        /**
         * Open and check the bundle in the folder [root] (or [root] is its bundle.json). [progress] gets one-line
         * messages while the files are checked.
         */
        fun open(root: File, progress: ((String) -> Unit)? = null): Bundle {
            val folder = if (root.name == BUNDLE_JSON && root.isFile) root.absoluteFile.parentFile else root
            val where = folder.path
            if (!folder.isDirectory) throw HarnessError("$where: no such bundle (a folder with $BUNDLE_JSON)")
            val raw = Json.readCapped(File(folder, BUNDLE_JSON), "$where: $BUNDLE_JSON", MAX_BUNDLE_JSON_BYTES)
            val doc = Json.parse(raw, "$where/$BUNDLE_JSON")
            val sv = (doc as? Map<*, *>)?.get("schema_version")
            if (doc is Map<*, *> && doc["kind"] == KIND && sv != null &&
                !(sv is Number && sv.toDouble() == SCHEMA_VERSION.toDouble())) {
                throw HarnessError("$where: bundle schema_version ${Json.write(sv)} is not supported " +
                    "(this harness reads $SCHEMA_VERSION)")
            }
            val top = JsonObj.of(doc, "$where/$BUNDLE_JSON: not a valid bundle document: at the top level")
            return Reader(folder, where, top, progress).read()
        }
    }

    private class Reader(
        val root: File, val where: String, val top: JsonObj,
        val progress: ((String) -> Unit)?,
    ) {
        val schemaWhere = "$where/$BUNDLE_JSON: not a valid bundle document: at"

        fun read(): Bundle {
            // -- the schema (bundle.schema.json), checked by hand --
            top.keys(
                listOf("schema_version", "kind", "id", "shvit_edge_version", "created_at", "inputs", "tensors",
                    "artifacts", "files"),
                listOf("schema_version", "kind", "id", "shvit_edge_version", "created_at", "inputs", "tensors",
                    "artifacts", "files"))
            val t = JsonObj(top.map, "$schemaWhere")
            if (t.long("schema_version") != SCHEMA_VERSION) throw HarnessError("$schemaWhere schema_version: must be 1")
            if (t.string("kind") != KIND) throw HarnessError("$schemaWhere kind: must be $KIND")
            val id = sha(t, "id")
            val version = t.string("shvit_edge_version", 64)
            val createdAt = t.string("created_at", 64)
            val inputs = readInputs(t.obj("inputs"))
            val tensors = readTensors(t.obj("tensors"))
            val artifactList = t.list("artifacts", 1, 256)
            val artifacts = artifactList.mapIndexed { i, a -> readArtifact(i, JsonObj.of(a, "$schemaWhere artifacts[$i]")) }
            val fileList = t.list("files", 1, 100_000)
            val files = fileList.mapIndexed { i, f ->
                val o = JsonObj.of(f, "$schemaWhere files[$i]").keys(listOf("path", "sha256", "size"), listOf("path", "sha256", "size"))
                FileEntry(path(o, "path"), sha(o, "sha256"), o.long("size", 0))
            }

            // -- every listed file: path rules, size, sha256 --
            val listed = LinkedHashMap<String, FileEntry>()
            files.forEachIndexed { i, entry ->
                val relative = SafePath.check(entry.path, "$where: files[$i]")
                if (relative in listed) throw HarnessError("$where: files[$i] lists $relative twice")
                if (relative == BUNDLE_JSON) throw HarnessError("$where: files[$i] lists $relative")
                listed[relative] = entry
            }
            val total = listed.values.sumOf { it.size }
            var done = 0L
            var k = 0
            for ((relative, entry) in listed) {
                k++
                val file = SafePath.inside(root, relative, where)
                val size = SafePath.size(file)
                if (size != entry.size) throw HarnessError("$where: $relative is $size bytes; bundle.json says ${entry.size}")
                progress?.invoke("checking $relative ($k/${listed.size})")
                val sha = Sha256.ofFile(file) { read ->
                    if (read % (64L shl 20) == 0L) progress?.invoke("checking $relative: ${percent(done + read, total)}")
                }
                if (sha != entry.sha256) {
                    throw HarnessError("$where: $relative fails its sha256 (it differs from bundle.json's); the " +
                        "bundle was changed or damaged in transit")
                }
                done += entry.size
            }

            // -- tensors hold their shapes --
            for ((tensorId, spec) in tensors) {
                val relative = listedPath(spec.file, listed, "tensors.$tensorId")
                val expected = spec.byteSize
                if (listed.getValue(relative).size != expected) {
                    throw HarnessError("$where: tensor $tensorId ($relative) is ${listed.getValue(relative).size} bytes; " +
                        "its shape ${spec.shape} ${spec.dtype} takes $expected")
                }
            }

            // -- artifacts: their manifests, inputs and references --
            val checked = artifacts.map { checkArtifact(it, listed, tensors) }
            return Bundle(root, top.map, id, version, createdAt, inputs, tensors, checked, files)
        }

        fun percent(a: Long, b: Long) = if (b <= 0) "100%" else "${(100 * a / b)}%"

        fun sha(o: JsonObj, key: String): String {
            val v = o.string(key)
            if (!SHA256.matches(v)) throw HarnessError("${o.at(key)}: ${HarnessError.quoted(v)} is not a sha256 (64 lowercase hex digits)")
            return v
        }

        fun tensorId(o: JsonObj, key: String): String {
            val v = o.string(key)
            if (!ID.matches(v)) throw HarnessError("${o.at(key)}: ${HarnessError.quoted(v)} is not a tensor id")
            return v
        }

        fun path(o: JsonObj, key: String): String {
            val v = o.string(key, 1024)
            if (v.isEmpty()) throw HarnessError("${o.at(key)}: a path is not empty")
            return v
        }

        fun readInputs(o: JsonObj): BundleInputs {
            o.keys(listOf("images", "samples", "seed"), listOf("images", "samples", "seed"))
            val images = o.list("images", 0, 4096).mapIndexed { i, v ->
                val s = v as? String ?: throw HarnessError("${o.at("images")}[$i] must be a string")
                if (s.length > 255) throw HarnessError("${o.at("images")}[$i] is longer than 255 characters")
                s
            }
            return BundleInputs(images, o.int("samples", 0, 1024), o.long("seed", 0, 4294967295L))
        }

        fun readTensors(o: JsonObj): Map<String, TensorSpec> {
            if (o.map.size > 4096) throw HarnessError("${o.where}: more than 4096 tensors")
            val out = LinkedHashMap<String, TensorSpec>()
            for ((key, value) in o.map) {
                if (!ID.matches(key)) throw HarnessError("${o.where}: ${HarnessError.quoted(key)} is not a tensor id")
                val s = JsonObj.of(value, "${o.where}.$key")
                    .keys(listOf("file", "dtype", "shape", "layout"), listOf("file", "dtype", "shape", "layout", "role", "description"))
                val shape = s.list("shape", 1, 8).mapIndexed { i, d -> asLong(d, "${s.at("shape")}[$i]", 1, 1073741824).toInt() }
                out[key] = TensorSpec(
                    key, path(s, "file"), s.stringIn("dtype", listOf("float32", "uint8")), shape,
                    s.stringIn("layout", listOf("NCHW", "NHWC", "NC")),
                    if (s.has("role")) s.stringIn("role", listOf("input", "reference")) else null,
                    if (s.has("description")) s.string("description", 1024) else null)
            }
            return out
        }

        fun readArtifact(i: Int, o: JsonObj): Artifact {
            val required = listOf("name", "file", "manifest", "sha256", "target", "family", "variant", "resolution",
                "batch", "precision", "quantization", "input", "output", "tolerance", "run")
            o.keys(required, required + listOf("bundled_program", "profile", "device"))
            val resolution = o.list("resolution", 2, 2).mapIndexed { k, d -> asLong(d, "${o.at("resolution")}[$k]", 1, Int.MAX_VALUE.toLong()).toInt() }
            val input = o.obj("input").keys(listOf("tensor", "name", "kind"), listOf("tensor", "name", "kind"))
            val output = o.obj("output").keys(listOf("name", "layout", "reference"), listOf("name", "layout", "reference"))
            val tol = o.obj("tolerance").keys(listOf("class", "cosine", "max_abs", "top1_agreement"),
                listOf("class", "cosine", "max_abs", "top1_agreement", "sqnr_db", "source"))
            val run = o.obj("run").keys(listOf("warmup", "iterations", "threads", "settings"),
                listOf("warmup", "iterations", "threads", "settings"))
            val settings = run.list("settings", 1).mapIndexed { k, v ->
                val s = v as? String ?: throw HarnessError("${run.at("settings")}[$k] must be a string")
                if (s.length > 64) throw HarnessError("${run.at("settings")}[$k] is longer than 64 characters")
                s
            }
            if (o.has("quantization") && o.map["quantization"] != null) o.string("quantization")
            if (o.has("device")) o.obj("device")
            @Suppress("UNCHECKED_CAST")
            return Artifact(
                index = i,
                name = o.string("name", 255), file = path(o, "file"), manifest = path(o, "manifest"),
                sha256 = sha(o, "sha256"), target = o.string("target", 64), family = o.string("family", 64),
                variant = o.string("variant", 64), resolution = resolution, batch = o.int("batch", 1),
                precision = o.string("precision"), quantization = o.stringOrNull("quantization"),
                input = ArtifactInput(tensorId(input, "tensor"), input.string("name", 255), input.stringIn("kind", listOf("tensor", "image"))),
                output = ArtifactOutput(output.string("name", 255), output.stringIn("layout", listOf("NC", "classifier")), tensorId(output, "reference")),
                tolerance = Tolerance(tol.string("class"), tol.double("cosine", -1.0, 1.0), tol.double("max_abs", 0.0),
                    tol.double("top1_agreement", 0.0, 1.0), tol.doubleOrNull("sqnr_db"),
                    if (tol.has("source")) tol.string("source") else null),
                run = RunSettings(run.int("warmup", 0), run.int("iterations", 1), run.int("threads", 1), settings),
                bundledProgram = if (o.has("bundled_program")) path(o, "bundled_program") else null,
                profile = if (o.has("profile")) o.string("profile", 64) else null,
                device = if (o.has("device")) o.map["device"] as Map<String, Any?> else null,
                isFolder = false,
                path = File(root, o.string("file")),
            )
        }

        fun listedPath(path: String, listed: Map<String, FileEntry>, what: String): String {
            val relative = SafePath.check(path, "$where: $what")
            if (relative !in listed) throw HarnessError("$where: $what names $relative, which the files list does not hold")
            return relative
        }

        fun checkArtifact(a: Artifact, listed: Map<String, FileEntry>, tensors: Map<String, TensorSpec>): Artifact {
            val what = "artifacts[${a.index}]"
            val manifestRelative = listedPath(a.manifest, listed, "$what.manifest")
            val manifestWhere = "$where: $manifestRelative"
            val manifest = JsonObj.of(
                Json.parse(Json.readCapped(File(root, manifestRelative), manifestWhere, MAX_MANIFEST_BYTES), manifestWhere),
                "$manifestWhere:")
            val fileRelative = SafePath.check(a.file, "$where: $what.file")
            val isFolder: Boolean
            val sha: String
            if (fileRelative in listed) {
                isFolder = false
                sha = listed.getValue(fileRelative).sha256 // checked against the file above
            } else {
                val inFolder = listed.keys.filter { it.startsWith("$fileRelative/") }
                if (inFolder.isEmpty()) throw HarnessError("$where: $what.file names $fileRelative, which the files list does not hold")
                val folder = SafePath.inside(root, fileRelative, "$where: $what.file", directory = true)
                isFolder = true
                sha = Sha256.ofFolder(folder, inFolder.map { it.substring(fileRelative.length + 1) })
            }
            val artifactRef = manifest.obj("artifact")
            val manifestSha = artifactRef.string("sha256")
            if (a.sha256 != manifestSha || sha != manifestSha) {
                throw HarnessError("$where: $what (${a.name}) is not the artifact its manifest describes (sha256)")
            }
            for ((key, mine) in listOf("target" to a.target, "variant" to a.variant, "batch" to a.batch.toLong())) {
                val theirs = manifest.map[key]
                if (theirs != mine) {
                    throw HarnessError("$where: $what.$key is ${show(mine)}; its manifest says ${show(theirs)}")
                }
            }
            for ((side, id) in listOf("input.tensor" to a.input.tensor, "output.reference" to a.output.reference)) {
                if (id !in tensors) throw HarnessError("$where: $what.$side names the tensor ${HarnessError.quoted(id)}, which tensors does not hold")
            }
            val x = tensors.getValue(a.input.tensor)
            val ref = tensors.getValue(a.output.reference)
            val resolution = manifest.list("resolution", 2, 2).mapIndexed { k, v -> asLong(v, "${manifest.at("resolution")}[$k]").toInt() }
            val (h, w) = resolution
            val n = x.shape[0]
            val expected = if (x.layout == "NCHW") listOf(n, 3, h, w) else listOf(n, h, w, 3)
            if (x.shape != expected || x.layout !in listOf("NCHW", "NHWC")) {
                throw HarnessError("$where: $what's input tensor is ${x.layout} ${x.shape}; the artifact takes ${h}x$w RGB samples")
            }
            val manifestInputs = manifest.list("inputs", 1)
            val kind = (manifestInputs[0] as? Map<*, *>)?.get("kind") as? String ?: "tensor"
            val wantDtype = if (kind == "image") "uint8" else "float32"
            if (x.dtype != wantDtype) {
                throw HarnessError("$where: $what's input tensor is ${x.dtype}; the artifact takes $wantDtype")
            }
            if (ref.shape.size != 2 || ref.shape[0] != n || ref.dtype != "float32") {
                throw HarnessError("$where: $what's reference is ${ref.dtype} ${ref.shape}; it must be float32 ($n, classes), one row per input")
            }
            a.bundledProgram?.let { listedPath(it, listed, "$what.bundled_program") }
            return a.copy(isFolder = isFolder, path = File(root, fileRelative))
        }

        fun show(v: Any?): String = if (v is String) HarnessError.quoted(v) else Json.write(v)
    }
}

/**
 * Unpacking a bundle's zip (`shvit-edge bundle --zip`) as Python's `unzip` (harness/bundle.py) does: everything is
 * checked before anything is unpacked, and a symlink or special entry, an absolute path or `..`, a duplicate, more
 * than [MAX_ENTRIES] entries or [MAX_BYTES] unpacked, or an entry that holds more than it declares is refused.
 * Nothing half-unpacked stays behind.
 */
object BundleZip {
    const val MAX_ENTRIES = 100_000
    const val MAX_BYTES = 8L shl 30

    private class Entry(val name: String, val externalAttr: Long)

    /**
     * Unpack [archive] into the empty or missing folder [folder]; the bundle's root inside it (the folder itself,
     * or its one subfolder holding bundle.json, as a zip of the bundle's folder made by Finder has).
     */
    fun unpack(archive: File, folder: File): File {
        val shown = archive.name
        val entries = try { centralDirectory(archive) } catch (e: HarnessError) { throw e } catch (e: Exception) {
            throw HarnessError("$shown: not a readable zip (${HarnessError.describe(e)})")
        }
        if (entries.size > MAX_ENTRIES) throw HarnessError("$shown: more than $MAX_ENTRIES entries")
        val names = HashSet<String>()
        val files = HashSet<String>()
        for (e in entries) {
            val where = "$shown: entry ${HarnessError.quoted(e.name)}"
            val kind = (e.externalAttr ushr 16) and 0xF000L
            if (kind != 0L && kind != 0x8000L && kind != 0x4000L) throw HarnessError("$where is a symlink or special file; refused")
            val isDir = e.name.endsWith("/")
            val relative = SafePath.check(if (isDir) e.name.trimEnd('/') else e.name, where)
            if (!names.add(relative)) throw HarnessError("$where appears twice")
            if (!isDir) files.add(relative)
        }
        val parents = names.flatMap { n -> n.split("/").let { parts -> (1 until parts.size).map { parts.take(it).joinToString("/") } } }.toSet()
        (files intersect parents).minOrNull()?.let { throw HarnessError("$shown: entry ${HarnessError.quoted(it)} is both a file and a folder") }

        val created = ArrayList<File>()
        try {
            java.util.zip.ZipFile(archive).use { zip ->
                var total = 0L
                for (entry in zip.entries().asSequence().toList()) {
                    if (entry.size > 0) total += entry.size
                    if (total > MAX_BYTES) throw HarnessError("$shown: unpacks to more than $MAX_BYTES bytes")
                }
                if (!folder.exists()) { if (!folder.mkdirs()) throw HarnessError("${folder.path}: cannot create it"); created.add(folder) }
                for (entry in zip.entries().asSequence().toList()) {
                    val isDir = entry.name.endsWith("/")
                    val parts = SafePath.check(entry.name.trimEnd('/'), "$shown: entry ${HarnessError.quoted(entry.name)}").split("/")
                    var step = folder
                    for (k in 0 until (if (isDir) parts.size else parts.size - 1)) {
                        step = File(step, parts[k])
                        if (!step.exists()) {
                            if (!step.mkdir()) throw HarnessError("$shown: cannot create ${step.path}")
                            created.add(step)
                        }
                    }
                    if (isDir) continue
                    val target = File(folder, parts.joinToString("/"))
                    if (target.exists()) throw HarnessError("$shown: an entry appears twice")
                    created.add(target)
                    zip.getInputStream(entry).use { input ->
                        java.io.FileOutputStream(target).use { out ->
                            val buffer = ByteArray(1 shl 20)
                            var copied = 0L
                            while (true) {
                                val n = input.read(buffer)
                                if (n < 0) break
                                copied += n
                                if (entry.size >= 0 && copied > entry.size) {
                                    throw HarnessError("$shown: entry ${HarnessError.quoted(entry.name)} holds more than it declares")
                                }
                                out.write(buffer, 0, n)
                            }
                        }
                    }
                }
            }
        } catch (e: Throwable) {
            for (f in created.asReversed()) if (f.isDirectory) f.deleteRecursively() else f.delete()
            if (e is HarnessError) throw e
            throw HarnessError("$shown: cannot unpack (${HarnessError.describe(e)})")
        }
        if (File(folder, Bundle.BUNDLE_JSON).isFile) return folder
        val inner = folder.listFiles()!!.filter { it.name != "__MACOSX" }
        if (inner.size == 1 && File(inner[0], Bundle.BUNDLE_JSON).isFile) return inner[0]
        return folder
    }

    /** The central directory's entries (name and external attributes), zip64 included. */
    private fun centralDirectory(archive: File): List<Entry> {
        java.io.RandomAccessFile(archive, "r").use { f ->
            val length = f.length()
            val tailSize = minOf(length, 65557L).toInt()
            val tail = ByteArray(tailSize)
            f.seek(length - tailSize)
            f.readFully(tail)
            var eocd = -1
            for (k in tailSize - 22 downTo 0) {
                if (le32(tail, k) == 0x06054b50L) { eocd = k; break }
            }
            if (eocd < 0) throw HarnessError("${archive.name}: not a readable zip (no end of central directory)")
            var count = le16(tail, eocd + 10)
            var size = le32(tail, eocd + 12)
            var offset = le32(tail, eocd + 16)
            if (count == 0xFFFFL || size == 0xFFFFFFFFL || offset == 0xFFFFFFFFL) {
                val locator = eocd - 20
                if (locator < 0 || le32(tail, locator) != 0x07064b50L) throw HarnessError("${archive.name}: not a readable zip (no zip64 locator)")
                val recordAt = le64(tail, locator + 8)
                val record = ByteArray(56)
                f.seek(recordAt)
                f.readFully(record)
                if (le32(record, 0) != 0x06064b50L) throw HarnessError("${archive.name}: not a readable zip (no zip64 record)")
                count = le64(record, 32)
                size = le64(record, 40)
                offset = le64(record, 48)
            }
            if (count > MAX_ENTRIES) throw HarnessError("${archive.name}: more than $MAX_ENTRIES entries")
            if (size > 64L shl 20 || offset + size > length) throw HarnessError("${archive.name}: not a readable zip (a bad central directory)")
            val cd = ByteArray(size.toInt())
            f.seek(offset)
            f.readFully(cd)
            val out = ArrayList<Entry>()
            var p = 0
            for (i in 0 until count) {
                if (p + 46 > cd.size || le32(cd, p) != 0x02014b50L) throw HarnessError("${archive.name}: not a readable zip (a bad central directory entry)")
                val nameLength = le16(cd, p + 28).toInt()
                val extraLength = le16(cd, p + 30).toInt()
                val commentLength = le16(cd, p + 32).toInt()
                val external = le32(cd, p + 38)
                if (p + 46 + nameLength > cd.size) throw HarnessError("${archive.name}: not a readable zip (a bad entry name)")
                val name = String(cd, p + 46, nameLength, Charsets.UTF_8)
                out.add(Entry(name, external))
                p += 46 + nameLength + extraLength + commentLength
            }
            return out
        }
    }

    private fun le16(b: ByteArray, at: Int): Long = ((b[at].toLong() and 0xff) or ((b[at + 1].toLong() and 0xff) shl 8))
    private fun le32(b: ByteArray, at: Int): Long = le16(b, at) or (le16(b, at + 2) shl 16)
    private fun le64(b: ByteArray, at: Int): Long = le32(b, at) or (le32(b, at + 4) shl 32)
}
