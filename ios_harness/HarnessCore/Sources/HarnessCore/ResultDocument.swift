// Mirror of ResultDocument.kt.
import Foundation

/// The app or tool that ran the bundle (a result's `harness`).
public struct HarnessInfo: Equatable {
    public let name: String
    public let version: String
    public let build: String?

    public init(_ name: String, _ version: String, _ build: String? = nil) {
        self.name = name
        self.version = version
        self.build = build
    }
}

/// The device (a result's `device`): `model` and `os` required, the rest when known.
public struct DeviceInfo: Equatable {
    public let model: String
    public let os: String
    public let manufacturer: String?
    public let osVersion: String?
    public let soc: String?
    public let arch: String?
    public let appVersion: String?
    public let cpus: Int?

    public init(model: String, os: String, manufacturer: String? = nil, osVersion: String? = nil, soc: String? = nil,
                arch: String? = nil, appVersion: String? = nil, cpus: Int? = nil) {
        self.model = model
        self.os = os
        self.manufacturer = manufacturer
        self.osVersion = osVersion
        self.soc = soc
        self.arch = arch
        self.appVersion = appVersion
        self.cpus = cpus
    }
}

/// A result document (docs/bundle.md section 5; result.schema.json `harness_result`, schema_version 2, kind
/// `shvit-edge-result`): written with no key outside the schema, outputs inline as base64; read back strictly,
/// including the documents Python's host harness writes.
public struct ResultDocument: Equatable {
    public let bundleId: String
    public let bundleName: String?
    public let harness: HarnessInfo
    public let device: DeviceInfo
    /// ISO 8601, e.g. `2026-12-03T03:32:07+00:00` (`isoUtc`)
    public let createdAt: String
    public let runs: [RunRecord]

    public init(bundleId: String, bundleName: String?, harness: HarnessInfo, device: DeviceInfo, createdAt: String,
                runs: [RunRecord]) {
        self.bundleId = bundleId
        self.bundleName = bundleName
        self.harness = harness
        self.device = device
        self.createdAt = createdAt
        self.runs = runs
    }

    /// The document as a JSON value, keys in a fixed order.
    public func toJson() -> JsonObject {
        var doc = JsonObject()
        doc["schema_version"] = .int(Int64(ResultDocument.SCHEMA_VERSION))
        doc["kind"] = .string(ResultDocument.KIND)
        var b = JsonObject()
        b["id"] = .string(bundleId)
        if let bundleName { b["name"] = .string(bundleName) }
        doc["bundle"] = .object(b)
        var h = JsonObject()
        h["name"] = .string(harness.name)
        h["version"] = .string(harness.version)
        if let build = harness.build { h["build"] = .string(build) }
        doc["harness"] = .object(h)
        var d = JsonObject()
        d["model"] = .string(device.model)
        if let v = device.manufacturer { d["manufacturer"] = .string(v) }
        d["os"] = .string(device.os)
        if let v = device.osVersion { d["os_version"] = .string(v) }
        if let v = device.soc { d["soc"] = .string(v) }
        if let v = device.arch { d["arch"] = .string(v) }
        if let v = device.appVersion { d["app_version"] = .string(v) }
        if let v = device.cpus { d["cpus"] = .int(Int64(v)) }
        doc["device"] = .object(d)
        doc["created_at"] = .string(createdAt)
        doc["runs"] = .array(runs.map { .object(ResultDocument.runJson($0)) })
        return doc
    }

    /// The document as JSON text (`indent`: spaces per level, nil for one line).
    public func toText(_ indent: Int? = 1) -> String { Json.write(.object(toJson()), indent: indent) + "\n" }

    /// Write the document to `file` atomically (a temporary file in the same folder, synced, then renamed over
    /// `file`), after checking that it reads back as a valid document.
    public func write(_ file: URL) throws {
        let text = toText()
        let data = Data(text.utf8)
        _ = try ResultDocument.parse(data, where: "the document about to be written") // never write what ingest refuses
        let folder = file.deletingLastPathComponent()
        var isDir: ObjCBool = false
        if !FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDir) || !isDir.boolValue {
            throw HarnessError("\(folder.path): no such folder")
        }
        let tmp = folder.appendingPathComponent(".\(file.lastPathComponent).\(UUID().uuidString).tmp", isDirectory: false)
        defer { try? FileManager.default.removeItem(at: tmp) }
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
            throw HarnessError("\(tmp.path): cannot be created")
        }
        do {
            let out = try FileHandle(forWritingTo: tmp)
            try out.write(contentsOf: data)
            try out.synchronize()
            try out.close()
        } catch {
            throw HarnessError("\(file.path): cannot be written (\(HarnessError.describe(error)))")
        }
        // rename(2) replaces `file` atomically
        if rename(tmp.path, file.path) != 0 {
            throw HarnessError("\(file.path): cannot be written (\(String(cString: strerror(errno))))")
        }
    }

    public static let SCHEMA_VERSION = 2
    public static let KIND = "shvit-edge-result"
    public static let MAX_DOCUMENT_BYTES: Int64 = 64 << 20
    /// the most a posted document may hold (`results listen`)
    public static let MAX_POST_BYTES: Int64 = 32 << 20
    private static let TEXT = 1024

    /// `epochMillis` as ISO 8601 UTC to the second, as Python's `isoformat(timespec="seconds")`.
    public static func isoUtc(_ epochMillis: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) -> String {
        let format = DateFormatter()
        format.locale = Locale(identifier: "en_US_POSIX")
        format.calendar = Calendar(identifier: .gregorian)
        format.timeZone = TimeZone(identifier: "UTC")
        format.dateFormat = "yyyy-MM-dd'T'HH:mm:ssxxx"
        return format.string(from: Date(timeIntervalSince1970: Double(epochMillis) / 1000.0))
    }

    /// The document of `bundle`'s runs.
    public static func of(_ bundle: Bundle, _ harness: HarnessInfo, _ device: DeviceInfo, _ runs: [RunRecord],
                          createdAt: String = ResultDocument.isoUtc()) -> ResultDocument {
        ResultDocument(bundleId: bundle.id, bundleName: bundle.name, harness: harness, device: device,
                       createdAt: createdAt, runs: runs)
    }

    public static func runJson(_ r: RunRecord) -> JsonObject {
        var m = JsonObject()
        func nullable(_ key: String, _ v: JsonValue?) {
            if let v { m[key] = v } else if r.explicitNulls.contains(key) { m[key] = .null }
        }
        m["artifact"] = .string(r.artifact)
        m["artifact_sha256"] = .string(r.artifactSha256)
        m["runtime"] = .string(r.runtime)
        if let v = r.runtimeVersion { m["runtime_version"] = .string(v) }
        m["setting"] = .string(r.setting)
        if let v = r.threads { m["threads"] = .int(Int64(v)) }
        if let v = r.meaning { m["meaning"] = .string(v) }
        if let v = r.warmup { m["warmup"] = .int(Int64(v)) }
        if let v = r.loadMs { m["load_ms"] = .double(v) }
        if let v = r.compileMs { m["compile_ms"] = .double(v) }
        if let v = r.firstInferenceMs { m["first_inference_ms"] = .double(v) }
        if let v = r.latenciesMs { m["latencies_ms"] = .array(v.map { .double($0) }) }
        if let v = r.precisionFlags { m["precision_flags"] = .array(v.map { .string($0) }) }
        nullable("peak_memory_mb", r.peakMemoryMb.map { .double($0) })
        nullable("thermal_before", r.thermalBefore.map { .string($0) })
        nullable("thermal_after", r.thermalAfter.map { .string($0) })
        m["status"] = .string(r.status)
        nullable("error", r.error.map { .string($0) })
        if let o = r.output {
            var out = JsonObject()
            out["shape"] = .array(o.shape.map { .int(Int64($0)) })
            out["dtype"] = .string("float32")
            if let b64 = o.base64 {
                out["base64"] = .string(b64)
            } else {
                out["file"] = o.file.map { .string($0) } ?? .null
                out["sha256"] = o.sha256.map { .string($0) } ?? .null
            }
            m["output"] = .object(out)
        }
        if let v = r.appParity { m["app_parity"] = .object(v) }
        if let v = r.details { m["details"] = .object(v) }
        return m
    }

    public static func read(_ file: URL) throws -> ResultDocument {
        try parse(Json.readCapped(file, where: file.path, maxBytes: MAX_DOCUMENT_BYTES), where: file.path)
    }

    /// Parse and check a result document (schema_version 2) as result.schema.json and Python's ingest do.
    public static func parse(_ data: Data, where place: String) throws -> ResultDocument {
        let doc = try JsonObj.of(Json.parse(data, where: place), "\(place): not a valid result document: at the top level")
        let w = "\(place): not a valid result document: at"
        let sv = doc.map["schema_version"]
        guard let given = sv, case let .int(version) = given, version == Int64(SCHEMA_VERSION) else {
            throw HarnessError("\(place): schema_version \(sv.map { Json.write($0) } ?? "null") is not a harness result (2)")
        }
        let top = try JsonObj(doc.map, "\(w) top level")
            .keys(["schema_version", "kind", "bundle", "harness", "device", "created_at", "runs"],
                  ["schema_version", "kind", "bundle", "harness", "device", "created_at", "runs"])
        if top.map["kind"] != .string(KIND) { throw HarnessError("\(w) kind: must be \(KIND)") }
        let b = try JsonObj.of(doc.map["bundle"], "\(w) bundle").keys(["id"], ["id", "name"])
        let h = try JsonObj.of(doc.map["harness"], "\(w) harness").keys(["name", "version"], ["name", "version", "build"])
        let d = try JsonObj.of(doc.map["device"], "\(w) device").keys(["model", "os"],
            ["model", "manufacturer", "os", "os_version", "soc", "arch", "app_version", "cpus"])
        let runs = try JsonObj(doc.map, w).list("runs", 1, 4096).enumerated().map { i, run in
            try parseRun(JsonObj.of(run, "\(w) runs[\(i)]"))
        }
        func opt(_ o: JsonObj, _ key: String) throws -> String? {
            if !o.has(key) { return nil }
            return try o.string(key, TEXT)
        }
        return ResultDocument(
            bundleId: try sha(b, "id"), bundleName: try opt(b, "name"),
            harness: HarnessInfo(try h.string("name", TEXT), try h.string("version", TEXT), try opt(h, "build")),
            device: DeviceInfo(model: try d.string("model", TEXT), os: try d.string("os", TEXT),
                               manufacturer: try opt(d, "manufacturer"), osVersion: try opt(d, "os_version"),
                               soc: try opt(d, "soc"), arch: try opt(d, "arch"), appVersion: try opt(d, "app_version"),
                               cpus: try d.has("cpus") ? d.int("cpus", min: 1) : nil),
            createdAt: try JsonObj(doc.map, w).string("created_at", TEXT),
            runs: runs)
    }

    private static func sha(_ o: JsonObj, _ key: String) throws -> String {
        let v = try o.string(key)
        if !Bundle.isSha256(v) { throw HarnessError("\(o.at(key)): \(HarnessError.quoted(v)) is not a sha256") }
        return v
    }

    private static let RUN_KEYS = ["artifact", "artifact_sha256", "runtime", "runtime_version", "setting",
        "precision_flags", "threads", "status", "error", "meaning", "load_ms", "compile_ms", "first_inference_ms",
        "warmup", "latencies_ms", "peak_memory_mb", "thermal_before", "thermal_after", "output", "app_parity", "details"]

    private static func parseRun(_ o: JsonObj) throws -> RunRecord {
        try o.keys(["artifact", "artifact_sha256", "runtime", "setting", "status"], RUN_KEYS)
        let status = try o.stringIn("status", RunRecord.STATUSES)
        if status == RunRecord.OK && (!o.has("output") || !o.has("latencies_ms")) {
            throw HarnessError("\(o.place): an ok run has no \(!o.has("output") ? "output" : "latencies_ms")")
        }
        var nulls = Set<String>()
        for key in ["error", "peak_memory_mb", "thermal_before", "thermal_after"] where o.has(key) && o[key] == nil {
            nulls.insert(key)
        }
        func ms(_ key: String) throws -> Double? {
            if !o.has(key) { return nil }
            return try o.double(key, min: 0.0)
        }
        func short(_ key: String, _ max: Int) throws -> String? {
            if o[key] == nil { return nil }
            return try o.string(key, max)
        }
        var latencies: [Double]?
        if o.has("latencies_ms") {
            latencies = try o.list("latencies_ms", 0, 1_000_000).enumerated().map { i, v in
                try asDouble(v, "\(o.at("latencies_ms"))[\(i)]", min: 0.0)
            }
        }
        var flags: [String]?
        if o.has("precision_flags") {
            flags = try o.list("precision_flags", 0, 32).enumerated().map { i, v -> String in
                guard let s = v.stringValue else { throw HarnessError("\(o.at("precision_flags"))[\(i)] must be a string") }
                if s.utf16.count > TEXT { throw HarnessError("\(o.at("precision_flags"))[\(i)] is longer than \(TEXT) characters") }
                return s
            }
        }
        let output = try o.has("output") ? parseOutput(o.obj("output")) : nil
        return RunRecord(
            artifact: try o.string("artifact", TEXT), artifactSha256: try sha(o, "artifact_sha256"),
            runtime: try o.string("runtime", TEXT), setting: try o.string("setting", TEXT), status: status,
            error: try short("error", 4096),
            runtimeVersion: try o.has("runtime_version") ? o.string("runtime_version", TEXT) : nil,
            threads: try o.has("threads") ? o.int("threads", min: 1) : nil,
            meaning: try o.has("meaning") ? o.stringIn("meaning", RunRecord.MEANINGS) : nil,
            warmup: try o.has("warmup") ? o.int("warmup", min: 0) : nil,
            loadMs: try ms("load_ms"), compileMs: try ms("compile_ms"), firstInferenceMs: try ms("first_inference_ms"),
            latenciesMs: latencies, precisionFlags: flags,
            peakMemoryMb: try o.doubleOrNull("peak_memory_mb", min: 0.0),
            thermalBefore: try short("thermal_before", 64), thermalAfter: try short("thermal_after", 64),
            output: output,
            appParity: try o.has("app_parity") ? o.obj("app_parity").map : nil,
            details: try o.has("details") ? o.obj("details").map : nil,
            explicitNulls: nulls)
    }

    private static func parseOutput(_ o: JsonObj) throws -> RunOutput {
        try o.keys(["shape", "dtype"], ["shape", "dtype", "base64", "file", "sha256"])
        let shape = try o.list("shape", 2, 2).enumerated().map { i, v in
            try Int(asLong(v, "\(o.at("shape"))[\(i)]", min: 1, max: 1_048_576))
        }
        _ = try o.stringIn("dtype", ["float32"])
        let inline = o.has("base64")
        let file = o.has("file")
        if inline == file || (file && !o.has("sha256")) {
            throw HarnessError("\(o.place): holds either base64, or file and sha256")
        }
        if inline {
            let out = RunOutput(shape, try o.string("base64", 67_108_864))
            _ = try out.values(o.place) // the bytes must match the shape
            return out
        }
        let path = try o.string("file", 1024)
        if path.isEmpty { throw HarnessError("\(o.at("file")): a path is not empty") }
        return RunOutput(shape, nil, path, try sha(o, "sha256"))
    }
}

/// What `shvit-edge results listen` prints for an app to pair with: `{"url": ..., "token": ...}`.
public struct Pairing: Equatable, Codable {
    public let url: String
    public let token: String

    public init(_ url: String, _ token: String) {
        self.url = url
        self.token = token
    }

    /// The pairing JSON as scanned or pasted.
    public static func parse(_ text: String) throws -> Pairing {
        let o = try JsonObj.of(Json.parse(text.trimmingCharacters(in: .whitespacesAndNewlines), where: "the pairing"), "the pairing")
        let url = try o.string("url")
        let token = try o.string("token")
        if !url.hasPrefix("http://") && !url.hasPrefix("https://") {
            throw HarnessError("the pairing's url is not an http(s) URL: \(HarnessError.quoted(url))")
        }
        if token.isEmpty || token.utf16.contains(where: { $0 < 33 || $0 > 126 }) {
            throw HarnessError("the pairing's token is empty or holds spaces or control characters")
        }
        return Pairing(url, token)
    }
}

/// The answer of `results listen` to a posted document (docs/bundle.md section 7).
public struct PostOutcome: Equatable {
    public let status: Int
    public let body: String
    public let message: String

    public init(_ status: Int, _ body: String, _ message: String) {
        self.status = status
        self.body = body
        self.message = message
    }

    public var stored: Bool { status == 201 }
    /// 408, 429, 500, 503 (or no answer): send the same document again later; any other failure: do not.
    public var retry: Bool { [0, 408, 429, 500, 503].contains(status) }
}

/// Posting a result document to `results listen` (one request, Content-Length, no chunking, no redirects).
/// Kotlin's `post` blocks its thread (HttpURLConnection); this one is async (URLSession).
public enum Posting {
    public static func post(_ document: ResultDocument, _ pairing: Pairing, timeoutMillis: Int = 60_000,
                            session: URLSession = .shared) async -> PostOutcome {
        let body = Data(document.toText(nil).utf8)
        if Int64(body.count) > ResultDocument.MAX_POST_BYTES {
            return PostOutcome(413, "", "the document is \(body.count) bytes, over the \(ResultDocument.MAX_POST_BYTES) a post may hold")
        }
        guard let url = URL(string: pairing.url) else {
            return PostOutcome(0, "", "cannot reach \(pairing.url): not a URL")
        }
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalAndRemoteCacheData,
                                 timeoutInterval: Double(timeoutMillis) / 1000.0)
        request.httpMethod = "POST"
        request.httpBody = body // URLSession sends Content-Length for a Data body, never chunked
        request.setValue("Bearer \(pairing.token)", forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue(String(body.count), forHTTPHeaderField: "Content-Length")
        do {
            let (data, response) = try await session.data(for: request, delegate: NoRedirects())
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            let text = String(decoding: data, as: UTF8.self)
            var message = "HTTP \(status)"
            if let answer = try? Json.parse(text, where: "the answer").objectValue {
                if let error = answer["error"]?.stringValue {
                    message = error
                } else if let stored = answer["stored"], !stored.isNull {
                    message = "stored: " + Json.write(stored)
                }
            }
            return PostOutcome(status, text, HarnessError.oneLine(message))
        } catch {
            return PostOutcome(0, "", "cannot post to \(pairing.url): \(HarnessError.describe(error))")
        }
    }

    /// A redirect is not followed (the pairing's url is where the document goes, or nowhere).
    final class NoRedirects: NSObject, URLSessionTaskDelegate {
        func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
            completionHandler(nil)
        }
    }
}
