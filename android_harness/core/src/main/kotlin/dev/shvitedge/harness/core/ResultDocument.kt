package dev.shvitedge.harness.core

import java.io.File
import java.io.FileOutputStream
import java.net.HttpURLConnection
import java.net.URL
import java.time.Instant
import java.time.ZoneOffset
import java.time.format.DateTimeFormatter

/** The app or tool that ran the bundle (a result's `harness`). */
data class HarnessInfo(val name: String, val version: String, val build: String? = null)

/** The device (a result's `device`): [model] and [os] required, the rest when known. */
data class DeviceInfo(
    val model: String,
    val os: String,
    val manufacturer: String? = null,
    val osVersion: String? = null,
    val soc: String? = null,
    val arch: String? = null,
    val appVersion: String? = null,
    val cpus: Int? = null,
)

/**
 * A result document (docs/bundle.md section 5; result.schema.json `harness_result`, schema_version 2, kind
 * `shvit-edge-result`): written with no key outside the schema, outputs inline as base64; read back strictly,
 * including the documents Python's host harness writes.
 */
data class ResultDocument(
    val bundleId: String,
    val bundleName: String?,
    val harness: HarnessInfo,
    val device: DeviceInfo,
    /** ISO 8601, e.g. `2026-12-03T03:32:07+00:00` ([isoUtc]) */
    val createdAt: String,
    val runs: List<RunRecord>,
) {
    /** The document as a JSON value, keys in a fixed order. */
    fun toJson(): Map<String, Any?> {
        val doc = LinkedHashMap<String, Any?>()
        doc["schema_version"] = SCHEMA_VERSION
        doc["kind"] = KIND
        doc["bundle"] = linkedMapOf<String, Any?>("id" to bundleId).also { b -> bundleName?.let { b["name"] = it } }
        doc["harness"] = linkedMapOf<String, Any?>("name" to harness.name, "version" to harness.version)
            .also { h -> harness.build?.let { h["build"] = it } }
        val d = linkedMapOf<String, Any?>("model" to device.model)
        device.manufacturer?.let { d["manufacturer"] = it }
        d["os"] = device.os
        device.osVersion?.let { d["os_version"] = it }
        device.soc?.let { d["soc"] = it }
        device.arch?.let { d["arch"] = it }
        device.appVersion?.let { d["app_version"] = it }
        device.cpus?.let { d["cpus"] = it }
        doc["device"] = d
        doc["created_at"] = createdAt
        doc["runs"] = runs.map { runJson(it) }
        return doc
    }

    /** The document as JSON text ([indent]: spaces per level, null for one line). */
    fun toText(indent: Int? = 1): String = Json.write(toJson(), indent) + "\n"

    /**
     * Write the document to [file] atomically (a temporary file in the same folder, synced, then renamed over
     * [file]), after checking that it reads back as a valid document.
     */
    fun write(file: File) {
        val text = toText()
        parse(text.toByteArray(Charsets.UTF_8), "the document about to be written") // never write what ingest refuses
        val folder = file.absoluteFile.parentFile ?: throw HarnessError("${file.path}: no folder to write into")
        if (!folder.isDirectory) throw HarnessError("${folder.path}: no such folder")
        val tmp = File.createTempFile(".${file.name}.", ".tmp", folder)
        try {
            FileOutputStream(tmp).use { out ->
                out.write(text.toByteArray(Charsets.UTF_8))
                out.fd.sync()
            }
            if (!tmp.renameTo(file)) {
                java.nio.file.Files.move(tmp.toPath(), file.toPath(), java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE)
            }
        } finally {
            if (tmp.exists()) tmp.delete()
        }
    }

    companion object {
        const val SCHEMA_VERSION = 2
        const val KIND = "shvit-edge-result"
        const val MAX_DOCUMENT_BYTES = 64L shl 20
        /** the most a posted document may hold (`results listen`) */
        const val MAX_POST_BYTES = 32L shl 20
        private const val TEXT = 1024
        private val SHA256 = Regex("^[0-9a-f]{64}$")
        private val FORMAT = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ssxxx")

        /** [epochMillis] as ISO 8601 UTC to the second, as Python's `isoformat(timespec="seconds")`. */
        fun isoUtc(epochMillis: Long = System.currentTimeMillis()): String =
            FORMAT.format(Instant.ofEpochMilli(epochMillis).atOffset(ZoneOffset.UTC))

        /** The document of [bundle]'s runs. */
        fun of(bundle: Bundle, harness: HarnessInfo, device: DeviceInfo, runs: List<RunRecord>,
               createdAt: String = isoUtc()): ResultDocument =
            ResultDocument(bundle.id, bundle.name, harness, device, createdAt, runs)

        fun runJson(r: RunRecord): Map<String, Any?> {
            val m = LinkedHashMap<String, Any?>()
            fun nullable(key: String, v: Any?) {
                if (v != null) m[key] = v else if (key in r.explicitNulls) m[key] = null
            }
            m["artifact"] = r.artifact
            m["artifact_sha256"] = r.artifactSha256
            m["runtime"] = r.runtime
            r.runtimeVersion?.let { m["runtime_version"] = it }
            m["setting"] = r.setting
            r.threads?.let { m["threads"] = it }
            r.meaning?.let { m["meaning"] = it }
            r.warmup?.let { m["warmup"] = it }
            r.loadMs?.let { m["load_ms"] = it }
            r.compileMs?.let { m["compile_ms"] = it }
            r.firstInferenceMs?.let { m["first_inference_ms"] = it }
            r.latenciesMs?.let { m["latencies_ms"] = it }
            r.precisionFlags?.let { m["precision_flags"] = it }
            nullable("peak_memory_mb", r.peakMemoryMb)
            nullable("thermal_before", r.thermalBefore)
            nullable("thermal_after", r.thermalAfter)
            m["status"] = r.status
            nullable("error", r.error)
            r.output?.let { o ->
                val out = linkedMapOf<String, Any?>("shape" to o.shape, "dtype" to "float32")
                if (o.base64 != null) out["base64"] = o.base64 else { out["file"] = o.file; out["sha256"] = o.sha256 }
                m["output"] = out
            }
            r.appParity?.let { m["app_parity"] = it }
            r.details?.let { m["details"] = it }
            return m
        }

        fun read(file: File): ResultDocument =
            parse(Json.readCapped(file, file.path, MAX_DOCUMENT_BYTES), file.path)

        /** Parse and check a result document (schema_version 2) as result.schema.json and Python's ingest do. */
        fun parse(data: ByteArray, where: String): ResultDocument {
            val doc = JsonObj.of(Json.parse(data, where), "$where: not a valid result document: at the top level")
            val w = "$where: not a valid result document: at"
            val sv = doc.map["schema_version"]
            if (sv !is Long || sv != SCHEMA_VERSION.toLong()) {
                throw HarnessError("$where: schema_version ${Json.write(sv)} is not a harness result (2)")
            }
            val top = JsonObj(doc.map, "$w top level")
                .keys(listOf("schema_version", "kind", "bundle", "harness", "device", "created_at", "runs"),
                    listOf("schema_version", "kind", "bundle", "harness", "device", "created_at", "runs"))
            if (top.map["kind"] != KIND) throw HarnessError("$w kind: must be $KIND")
            val b = JsonObj.of(doc.map["bundle"], "$w bundle").keys(listOf("id"), listOf("id", "name"))
            val h = JsonObj.of(doc.map["harness"], "$w harness").keys(listOf("name", "version"), listOf("name", "version", "build"))
            val d = JsonObj.of(doc.map["device"], "$w device").keys(listOf("model", "os"),
                listOf("model", "manufacturer", "os", "os_version", "soc", "arch", "app_version", "cpus"))
            val runs = JsonObj(doc.map, w).list("runs", 1, 4096).mapIndexed { i, run -> parseRun(JsonObj.of(run, "$w runs[$i]")) }
            fun opt(o: JsonObj, key: String) = if (o.has(key)) o.string(key, TEXT) else null
            return ResultDocument(
                bundleId = sha(b, "id"), bundleName = opt(b, "name"),
                harness = HarnessInfo(h.string("name", TEXT), h.string("version", TEXT), opt(h, "build")),
                device = DeviceInfo(d.string("model", TEXT), d.string("os", TEXT), opt(d, "manufacturer"),
                    opt(d, "os_version"), opt(d, "soc"), opt(d, "arch"), opt(d, "app_version"),
                    if (d.has("cpus")) d.int("cpus", 1) else null),
                createdAt = JsonObj(doc.map, w).string("created_at", TEXT),
                runs = runs)
        }

        private fun sha(o: JsonObj, key: String): String {
            val v = o.string(key)
            if (!SHA256.matches(v)) throw HarnessError("${o.at(key)}: ${HarnessError.quoted(v)} is not a sha256")
            return v
        }

        private val RUN_KEYS = listOf("artifact", "artifact_sha256", "runtime", "runtime_version", "setting",
            "precision_flags", "threads", "status", "error", "meaning", "load_ms", "compile_ms", "first_inference_ms",
            "warmup", "latencies_ms", "peak_memory_mb", "thermal_before", "thermal_after", "output", "app_parity", "details")

        @Suppress("UNCHECKED_CAST")
        private fun parseRun(o: JsonObj): RunRecord {
            o.keys(listOf("artifact", "artifact_sha256", "runtime", "setting", "status"), RUN_KEYS)
            val status = o.stringIn("status", RunRecord.STATUSES)
            if (status == RunRecord.OK && (!o.has("output") || !o.has("latencies_ms"))) {
                throw HarnessError("${o.where}: an ok run has no ${if (!o.has("output")) "output" else "latencies_ms"}")
            }
            val nulls = HashSet<String>()
            for (key in listOf("error", "peak_memory_mb", "thermal_before", "thermal_after")) {
                if (o.has(key) && o.map[key] == null) nulls.add(key)
            }
            fun ms(key: String) = if (o.has(key)) o.double(key, 0.0) else null
            fun short(key: String, max: Int) = if (o.map[key] == null) null else o.string(key, max)
            val latencies = if (o.has("latencies_ms")) o.list("latencies_ms", 0, 1_000_000).mapIndexed { i, v ->
                asDouble(v, "${o.at("latencies_ms")}[$i]", 0.0)
            } else null
            val flags = if (o.has("precision_flags")) o.list("precision_flags", 0, 32).mapIndexed { i, v ->
                val s = v as? String ?: throw HarnessError("${o.at("precision_flags")}[$i] must be a string")
                if (s.length > TEXT) throw HarnessError("${o.at("precision_flags")}[$i] is longer than $TEXT characters")
                s
            } else null
            val output = if (o.has("output")) parseOutput(o.obj("output")) else null
            return RunRecord(
                artifact = o.string("artifact", TEXT), artifactSha256 = sha(o, "artifact_sha256"),
                runtime = o.string("runtime", TEXT), setting = o.string("setting", TEXT), status = status,
                error = short("error", 4096),
                runtimeVersion = if (o.has("runtime_version")) o.string("runtime_version", TEXT) else null,
                threads = if (o.has("threads")) o.int("threads", 1) else null,
                meaning = if (o.has("meaning")) o.stringIn("meaning", RunRecord.MEANINGS) else null,
                warmup = if (o.has("warmup")) o.int("warmup", 0) else null,
                loadMs = ms("load_ms"), compileMs = ms("compile_ms"), firstInferenceMs = ms("first_inference_ms"),
                latenciesMs = latencies, precisionFlags = flags,
                peakMemoryMb = o.doubleOrNull("peak_memory_mb", 0.0),
                thermalBefore = short("thermal_before", 64), thermalAfter = short("thermal_after", 64),
                output = output,
                appParity = if (o.has("app_parity")) o.obj("app_parity").map else null,
                details = if (o.has("details")) o.obj("details").map else null,
                explicitNulls = nulls,
            )
        }

        private fun parseOutput(o: JsonObj): RunOutput {
            o.keys(listOf("shape", "dtype"), listOf("shape", "dtype", "base64", "file", "sha256"))
            val shape = o.list("shape", 2, 2).mapIndexed { i, v -> asLong(v, "${o.at("shape")}[$i]", 1, 1048576).toInt() }
            o.stringIn("dtype", listOf("float32"))
            val inline = o.has("base64")
            val file = o.has("file")
            if (inline == file || (file && !o.has("sha256"))) {
                throw HarnessError("${o.where}: holds either base64, or file and sha256")
            }
            if (inline) {
                val out = RunOutput(shape, o.string("base64", 67108864))
                out.values(o.where) // the bytes must match the shape
                return out
            }
            val path = o.string("file", 1024)
            if (path.isEmpty()) throw HarnessError("${o.at("file")}: a path is not empty")
            return RunOutput(shape, null, path, sha(o, "sha256"))
        }
    }
}

/** What `shvit-edge results listen` prints for an app to pair with: `{"url": ..., "token": ...}`. */
data class Pairing(val url: String, val token: String) {
    companion object {
        /** The pairing JSON as scanned or pasted. */
        fun parse(text: String): Pairing {
            val o = JsonObj.of(Json.parse(text.trim(), "the pairing"), "the pairing")
            val url = o.string("url")
            val token = o.string("token")
            if (!url.startsWith("http://") && !url.startsWith("https://")) {
                throw HarnessError("the pairing's url is not an http(s) URL: ${HarnessError.quoted(url)}")
            }
            if (token.isEmpty() || token.any { it.code < 33 || it.code > 126 }) {
                throw HarnessError("the pairing's token is empty or holds spaces or control characters")
            }
            return Pairing(url, token)
        }
    }
}

/** The answer of `results listen` to a posted document (docs/bundle.md section 7). */
data class PostOutcome(val status: Int, val body: String, val message: String) {
    val stored: Boolean get() = status == 201
    /** 408, 429, 500, 503 (or no answer): send the same document again later; any other failure: do not. */
    val retry: Boolean get() = status in setOf(0, 408, 429, 500, 503)
}

/** Posting a result document to `results listen` (one request per connection, Content-Length, no chunking). */
object Posting {
    fun post(document: ResultDocument, pairing: Pairing, timeoutMillis: Int = 60_000): PostOutcome {
        val body = document.toText(null).toByteArray(Charsets.UTF_8)
        if (body.size > ResultDocument.MAX_POST_BYTES) {
            return PostOutcome(413, "", "the document is ${body.size} bytes, over the ${ResultDocument.MAX_POST_BYTES} a post may hold")
        }
        val connection = try { URL(pairing.url).openConnection() as HttpURLConnection } catch (e: Exception) {
            return PostOutcome(0, "", "cannot reach ${pairing.url}: ${HarnessError.describe(e)}")
        }
        return try {
            connection.requestMethod = "POST"
            connection.doOutput = true
            connection.instanceFollowRedirects = false
            connection.connectTimeout = timeoutMillis
            connection.readTimeout = timeoutMillis
            // no streaming mode: the body is buffered and sent with its Content-Length (never chunked), and an
            // error answer's body stays readable (the JDK drops it for a 401 in streaming mode)
            connection.setRequestProperty("Authorization", "Bearer ${pairing.token}")
            connection.setRequestProperty("Content-Type", "application/json")
            connection.setRequestProperty("Connection", "close")
            connection.outputStream.use { it.write(body) }
            val status = connection.responseCode
            val stream = try { if (status >= 400) connection.errorStream else connection.inputStream } catch (e: java.io.IOException) { null }
            val text = try { stream?.use { it.readBytes().toString(Charsets.UTF_8) } ?: "" } catch (e: java.io.IOException) { "" }
            val message = try {
                val answer = Json.parse(text, "the answer") as? Map<*, *>
                when {
                    answer?.get("error") is String -> answer["error"] as String
                    answer?.get("stored") != null -> "stored: " + Json.write(answer["stored"])
                    else -> "HTTP $status"
                }
            } catch (e: HarnessError) { "HTTP $status" }
            PostOutcome(status, text, HarnessError.oneLine(message))
        } catch (e: Exception) {
            PostOutcome(0, "", "cannot post to ${pairing.url}: ${HarnessError.describe(e)}")
        } finally {
            connection.disconnect()
        }
    }
}
