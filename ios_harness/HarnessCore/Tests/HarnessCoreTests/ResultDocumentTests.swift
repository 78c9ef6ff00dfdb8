// Mirror of ResultDocumentTest.kt. (Kotlin serves posts with the JDK's HttpServer; here a URLProtocol answers them.)
import Foundation
import XCTest
@testable import HarnessCore

final class ResultDocumentTests: XCTestCase {

    func testHostResultRoundTrips() throws {
        let file = Golden.dir.appendingPathComponent("result_host.json")
        let original = try Json.readFile(file, where: "result_host.json", maxBytes: 64 << 20)
        let doc = try ResultDocument.read(file)
        XCTAssertEqual(original.objectValue?["bundle"]?.objectValue?["id"]?.stringValue, doc.bundleId)
        let rewritten = try Json.parse(Data(doc.toText().utf8), where: "rewritten")
        let diff = Json.difference(original, rewritten)
        XCTAssertNil(diff, "round trip differs at \(diff ?? "")")
        // outputs decode to [N, classes]
        for run in doc.runs where run.status == RunRecord.OK {
            let v = try run.output!.values()
            XCTAssertEqual(run.output!.shape[0] * run.output!.shape[1], v.count)
        }
        // and it is written the same twice
        XCTAssertEqual(doc.toText(), try ResultDocument.parse(Data(doc.toText().utf8), where: "again").toText())
    }

    private func minimal(_ run: String) -> Data {
        Data(("{\"schema_version\": 2, \"kind\": \"shvit-edge-result\", " +
              "\"bundle\": {\"id\": \"\(String(repeating: "a", count: 64))\"}, \"harness\": {\"name\": \"h\", \"version\": \"1\"}, " +
              "\"device\": {\"model\": \"m\", \"os\": \"Android\"}, \"created_at\": \"2026-01-01T00:00:00+00:00\", \"runs\": [\(run)]}").utf8)
    }

    func testBadDocumentsAreRefused() throws {
        let sha = String(repeating: "b", count: 64)
        let head = "\"artifact\": \"a\", \"artifact_sha256\": \"\(sha)\", \"runtime\": \"r\", \"setting\": \"s\""
        _ = try ResultDocument.parse(minimal("{\(head), \"status\": \"skipped\", \"error\": \"why\"}"), where: "ok")
        let cases: [(String, String)] = [
            ("{\(head), \"status\": \"ok\", \"latencies_ms\": [1]}", "an ok run has no output"),
            ("{\(head), \"status\": \"done\"}", "status is 'done'"),
            ("{\(head), \"status\": \"failed\", \"latencies_ms\": [-1]}", "-1.0 is less than the minimum of 0"),
            ("{\(head), \"status\": \"failed\", \"extra\": 1}", "unknown key extra"),
            ("{\(head), \"status\": \"ok\", \"latencies_ms\": [], \"output\": {\"shape\": [1, 2], \"dtype\": \"float32\", \"base64\": \"AAAA\"}}", "takes 8"),
            ("{\(head), \"status\": \"ok\", \"latencies_ms\": [], \"output\": {\"shape\": [1, 1], \"dtype\": \"float32\", \"base64\": \"A\"}}", "base64 is not valid"),
            ("{\(head), \"status\": \"ok\", \"latencies_ms\": [], \"output\": {\"shape\": [1, 1], \"dtype\": \"float32\"}}", "either base64, or file and sha256"),
        ]
        for (run, fragment) in cases {
            assertRefused(fragment) { _ = try ResultDocument.parse(self.minimal(run), where: "doc") }
        }
        assertRefused("not a harness result") { _ = try ResultDocument.parse(Data("{\"schema_version\": 1}".utf8), where: "doc") }
    }

    func testWriteIsAtomicAndValidated() throws {
        let dir = try Temp.dir()
        let file = dir.appendingPathComponent("r.json")
        let doc = ResultDocument(bundleId: String(repeating: "c", count: 64), bundleName: "b", harness: HarnessInfo("h", "1"),
                                 device: DeviceInfo(model: "m", os: "Android", cpus: 8), createdAt: ResultDocument.isoUtc(0),
                                 runs: [RunRecord(artifact: "a", artifactSha256: String(repeating: "d", count: 64),
                                                  runtime: "LiteRT", setting: "nnapi", status: RunRecord.SKIPPED, error: "why")])
        try doc.write(file)
        try doc.write(file) // over an existing one
        XCTAssertEqual(["r.json"], try FileManager.default.contentsOfDirectory(atPath: dir.path))
        assertSameJson(doc, try ResultDocument.read(file))
        XCTAssertEqual("1970-01-01T00:00:00+00:00", ResultDocument.isoUtc(0))
        let bad = ResultDocument(bundleId: doc.bundleId, bundleName: doc.bundleName, harness: doc.harness, device: doc.device,
                                 createdAt: doc.createdAt, runs: [])
        assertRefused("runs must have at least 1 items") { try bad.write(dir.appendingPathComponent("bad.json")) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("bad.json").path))
        XCTAssertEqual(["r.json"], try FileManager.default.contentsOfDirectory(atPath: dir.path))
    }

    func testPostsToResultsListen() async throws {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.protocolClasses = [FakeListen.self]
        let session = URLSession(configuration: configuration)
        FakeListen.received = []
        let url = "http://127.0.0.1:8765/results"
        let doc = ResultDocument(bundleId: String(repeating: "c", count: 64), bundleName: nil, harness: HarnessInfo("h", "1"),
                                 device: DeviceInfo(model: "m", os: "Android"), createdAt: ResultDocument.isoUtc(0),
                                 runs: [RunRecord(artifact: "a", artifactSha256: String(repeating: "d", count: 64),
                                                  runtime: "LiteRT", setting: "nnapi", status: RunRecord.SKIPPED, error: "why")])
        let pairing = try Pairing.parse("{\"url\": \"\(url)\", \"token\": \"TOKEN\"}")
        let ok = await Posting.post(doc, pairing, session: session)
        XCTAssertTrue(ok.stored, ok.message)
        assertSameJson(doc, try ResultDocument.parse(FakeListen.received[0], where: "posted"))
        let wrong = await Posting.post(doc, Pairing(pairing.url, "NOPE"), session: session)
        XCTAssertEqual(401, wrong.status)
        XCTAssertEqual("wrong token", wrong.message)
        XCTAssertFalse(wrong.retry)
        let unreachable = await Posting.post(doc, Pairing("http://127.0.0.1:1/results", "T"), timeoutMillis: 2000)
        XCTAssertTrue(unreachable.retry)
        assertRefused("not an http(s) URL") { _ = try Pairing.parse("{\"url\": \"ftp://x\", \"token\": \"T\"}") }
    }
}

/// `results listen` in miniature: 401 without the token, 411 without Content-Length, else 201.
final class FakeListen: URLProtocol {
    static var received: [Data] = []

    override class func canInit(with request: URLRequest) -> Bool { true }
    override class func canonicalRequest(for request: URLRequest) -> URLRequest { request }

    override func startLoading() {
        var body = request.httpBody ?? Data()
        if body.isEmpty, let stream = request.httpBodyStream {
            stream.open()
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while stream.hasBytesAvailable {
                let n = stream.read(&buffer, maxLength: buffer.count)
                if n <= 0 { break }
                body.append(buffer, count: n)
            }
            stream.close()
        }
        FakeListen.received.append(body)
        let auth = request.value(forHTTPHeaderField: "Authorization")
        let length = request.value(forHTTPHeaderField: "Content-Length")
        let (code, answer): (Int, String)
        if auth != "Bearer TOKEN" {
            (code, answer) = (401, "{\"error\": \"wrong token\"}")
        } else if length == nil {
            (code, answer) = (411, "{\"error\": \"no length\"}")
        } else {
            (code, answer) = (201, "{\"stored\": {\"runs_stored\": 1}}")
        }
        let response = HTTPURLResponse(url: request.url!, statusCode: code, httpVersion: "HTTP/1.1",
                                       headerFields: ["Content-Type": "application/json"])!
        client?.urlProtocol(self, didReceive: response, cacheStoragePolicy: .notAllowed)
        client?.urlProtocol(self, didLoad: Data(answer.utf8))
        client?.urlProtocolDidFinishLoading(self)
    }

    override func stopLoading() {}
}
