package dev.shvitedge.harness.core

import com.sun.net.httpserver.HttpServer
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File
import java.net.InetSocketAddress

class ResultDocumentTest {

    @Test
    fun hostResultRoundTrips() {
        val file = File(Golden.dir, "result_host.json")
        val original = Json.readFile(file, "result_host.json", 64L shl 20)
        val doc = ResultDocument.read(file)
        assertEquals((original as Map<*, *>)["bundle"].let { (it as Map<*, *>)["id"] }, doc.bundleId)
        val rewritten = Json.parse(doc.toText().toByteArray(), "rewritten")
        val diff = Json.difference(original, rewritten)
        assertNull("round trip differs at $diff", diff)
        // outputs decode to [N, classes]
        for (run in doc.runs.filter { it.status == RunRecord.OK }) {
            val v = run.output!!.values()
            assertEquals(run.output!!.shape[0] * run.output!!.shape[1], v.size)
        }
        // and it is written the same twice
        assertEquals(doc.toText(), ResultDocument.parse(doc.toText().toByteArray(), "again").toText())
    }

    private fun minimal(run: String): ByteArray = ("{\"schema_version\": 2, \"kind\": \"shvit-edge-result\", " +
        "\"bundle\": {\"id\": \"${"a".repeat(64)}\"}, \"harness\": {\"name\": \"h\", \"version\": \"1\"}, " +
        "\"device\": {\"model\": \"m\", \"os\": \"Android\"}, \"created_at\": \"2026-01-01T00:00:00+00:00\", \"runs\": [$run]}").toByteArray()

    @Test
    fun badDocumentsAreRefused() {
        val sha = "b".repeat(64)
        val head = "\"artifact\": \"a\", \"artifact_sha256\": \"$sha\", \"runtime\": \"r\", \"setting\": \"s\""
        ResultDocument.parse(minimal("{$head, \"status\": \"skipped\", \"error\": \"why\"}"), "ok")
        for ((run, fragment) in listOf(
            "{$head, \"status\": \"ok\", \"latencies_ms\": [1]}" to "an ok run has no output",
            "{$head, \"status\": \"done\"}" to "status is 'done'",
            "{$head, \"status\": \"failed\", \"latencies_ms\": [-1]}" to "-1.0 is less than the minimum of 0",
            "{$head, \"status\": \"failed\", \"extra\": 1}" to "unknown key extra",
            "{$head, \"status\": \"ok\", \"latencies_ms\": [], \"output\": {\"shape\": [1, 2], \"dtype\": \"float32\", \"base64\": \"AAAA\"}}" to "takes 8",
            "{$head, \"status\": \"ok\", \"latencies_ms\": [], \"output\": {\"shape\": [1, 1], \"dtype\": \"float32\", \"base64\": \"A\"}}" to "base64 is not valid",
            "{$head, \"status\": \"ok\", \"latencies_ms\": [], \"output\": {\"shape\": [1, 1], \"dtype\": \"float32\"}}" to "either base64, or file and sha256",
        )) {
            assertRefused(fragment) { ResultDocument.parse(minimal(run), "doc") }
        }
        assertRefused("not a harness result") { ResultDocument.parse("{\"schema_version\": 1}".toByteArray(), "doc") }
    }

    @Test
    fun writeIsAtomicAndValidated() {
        val dir = Temp.dir()
        val file = File(dir, "r.json")
        val doc = ResultDocument("c".repeat(64), "b", HarnessInfo("h", "1"), DeviceInfo("m", "Android", cpus = 8),
            ResultDocument.isoUtc(0), listOf(RunRecord("a", "d".repeat(64), "LiteRT", "nnapi", RunRecord.SKIPPED, "why")))
        doc.write(file)
        doc.write(file) // over an existing one
        assertEquals(listOf("r.json"), dir.list()!!.toList())
        assertSameJson(doc, ResultDocument.read(file))
        assertEquals("1970-01-01T00:00:00+00:00", ResultDocument.isoUtc(0))
        val bad = doc.copy(runs = emptyList())
        assertRefused("runs must have at least 1 items") { bad.write(File(dir, "bad.json")) }
        assertFalse(File(dir, "bad.json").exists())
        assertEquals(listOf("r.json"), dir.list()!!.toList())
    }

    @Test
    fun postsToResultsListen() {
        val server = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 0)
        val received = ArrayList<String>()
        server.createContext("/results") { ex ->
            val auth = ex.requestHeaders.getFirst("Authorization")
            val length = ex.requestHeaders.getFirst("Content-Length")
            val body = ex.requestBody.readBytes()
            received.add(String(body))
            val (code, answer) = when {
                auth != "Bearer TOKEN" -> 401 to "{\"error\": \"wrong token\"}"
                length == null -> 411 to "{\"error\": \"no length\"}"
                else -> 201 to "{\"stored\": {\"runs_stored\": 1}}"
            }
            val bytes = answer.toByteArray()
            if (code == 401) ex.responseHeaders.add("WWW-Authenticate", "Bearer")
            ex.sendResponseHeaders(code, bytes.size.toLong())
            ex.responseBody.use { it.write(bytes) }
        }
        server.start()
        try {
            val url = "http://127.0.0.1:${server.address.port}/results"
            val doc = ResultDocument("c".repeat(64), null, HarnessInfo("h", "1"), DeviceInfo("m", "Android"),
                ResultDocument.isoUtc(0), listOf(RunRecord("a", "d".repeat(64), "LiteRT", "nnapi", RunRecord.SKIPPED, "why")))
            val pairing = Pairing.parse("{\"url\": \"$url\", \"token\": \"TOKEN\"}")
            val ok = Posting.post(doc, pairing)
            assertTrue(ok.message, ok.stored)
            assertSameJson(doc, ResultDocument.parse(received[0].toByteArray(), "posted"))
            val wrong = Posting.post(doc, pairing.copy(token = "NOPE"))
            assertEquals(401, wrong.status)
            assertEquals("wrong token", wrong.message)
            assertFalse(wrong.retry)
            val unreachable = Posting.post(doc, Pairing("http://127.0.0.1:1/results", "T"), 2000)
            assertTrue(unreachable.retry)
        } finally {
            server.stop(0)
        }
        assertRefused("not an http(s) URL") { Pairing.parse("{\"url\": \"ftp://x\", \"token\": \"T\"}") }
    }
}
