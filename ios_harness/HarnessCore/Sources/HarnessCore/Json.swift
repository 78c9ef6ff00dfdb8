// Mirror of Json.kt.
//
// Strict JSON (RFC 8259), read and written the way shvit-edge's Python side reads and writes it.
//
// Values: Kotlin uses `Map<String, Any?>` / `List<Any?>` / String / Boolean / Long / Double / null; Swift has the
// enum `JsonValue` (an object is a `JsonObject`, keys in document order; a number without fraction or exponent is
// `.int` (a `.double` when it does not fit 64 bits), any other number `.double`).
//
// Reading refuses (one-line HarnessError) what Python's `load_json` refuses: text that is not UTF-8, a byte-order
// mark, duplicate keys, `NaN`/`Infinity` (and numbers that overflow to infinity), nesting deeper than `maxDepth`
// containers, lone surrogates, trailing commas, comments, single quotes, anything after the value. (Foundation's
// JSONSerialization is lenient about duplicate keys and turns `true` into 1, so it is not used.) The parser walks
// UTF-16 code units, as the Kotlin one walks a String's chars, so its offsets in messages are the same.
//
// Writing is deterministic: keys in the object's order, integers without a fraction, doubles as the shortest
// decimal that reads back to the same double (formatted exactly as Kotlin's `Json.number`), strings UTF-8 with only
// `"`, `\` and control characters escaped. NaN and infinities are refused: they are not JSON.
import Foundation

/// A JSON value. Equality is JSON value equality (`Json.equal`): numbers by value (`7` equals `7.0`), objects
/// regardless of key order.
public indirect enum JsonValue: Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JsonValue])
    case object(JsonObject)

    public var description: String { Json.write(self) }

    public static func == (lhs: JsonValue, rhs: JsonValue) -> Bool {
        Json.equal(lhs, rhs)
    }

    public var number: Double? {
        switch self {
        case let .int(value): return Double(value)
        case let .double(value): return value
        default: return nil
        }
    }

    public var objectValue: JsonObject? {
        if case let .object(value) = self { return value }
        return nil
    }

    public var arrayValue: [JsonValue]? {
        if case let .array(value) = self { return value }
        return nil
    }

    public var stringValue: String? {
        if case let .string(value) = self { return value }
        return nil
    }

    public var boolValue: Bool? {
        if case let .bool(value) = self { return value }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

/// A JSON object whose keys keep the order they were first set in (as Kotlin's LinkedHashMap: setting a key again
/// keeps its place).
public struct JsonObject: Equatable, Sequence {
    public private(set) var keys: [String] = []
    private var values: [String: JsonValue] = [:]

    public init() {}

    public init(_ pairs: KeyValuePairs<String, JsonValue>) {
        for (key, value) in pairs { self[key] = value }
    }

    public init(pairs: [(String, JsonValue)]) {
        for (key, value) in pairs { self[key] = value }
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    public subscript(key: String) -> JsonValue? {
        get { values[key] }
        set {
            if let newValue {
                if values.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public func containsKey(_ key: String) -> Bool { values[key] != nil }

    /// Every key of `other` set here, in `other`'s order (Kotlin's putAll).
    public mutating func putAll(_ other: JsonObject) {
        for (key, value) in other { self[key] = value }
    }

    public func makeIterator() -> AnyIterator<(key: String, value: JsonValue)> {
        var position = 0
        let keys = self.keys
        let values = self.values
        return AnyIterator {
            guard position < keys.count else { return nil }
            let key = keys[position]
            position += 1
            return (key: key, value: values[key]!)
        }
    }

    public static func == (lhs: JsonObject, rhs: JsonObject) -> Bool {
        Json.equal(.object(lhs), .object(rhs))
    }
}

public enum Json {
    public static let maxDepth = 64
    public static let maxFileBytes: Int64 = 16 << 20

    /// The JSON value of the regular file `file` (at most `maxBytes`); `where` names it in errors.
    public static func readFile(_ file: URL, where place: String, maxBytes: Int64 = Json.maxFileBytes) throws -> JsonValue {
        try parse(readCapped(file, where: place, maxBytes: maxBytes), where: place)
    }

    /// The bytes of the regular file `file`, refused when it is a symlink, not a regular file or over `maxBytes`.
    public static func readCapped(_ file: URL, where place: String, maxBytes: Int64) throws -> Data {
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: file.path) else {
            throw HarnessError("\(place) is missing")
        }
        let type = attrs[.type] as? FileAttributeType
        if type == .typeSymbolicLink { throw HarnessError("\(place) is a symlink; refused") }
        if type != .typeRegular { throw HarnessError("\(place) is not a regular file") }
        let size = (attrs[.size] as? NSNumber)?.int64Value ?? 0
        if size > maxBytes { throw HarnessError("\(place) is \(size) bytes, more than the \(maxBytes) allowed") }
        let data: Data
        do {
            data = try Data(contentsOf: file)
        } catch {
            throw HarnessError("\(place): cannot read it (\(HarnessError.describe(error)))")
        }
        if Int64(data.count) > maxBytes { throw HarnessError("\(place) is more than the \(maxBytes) bytes allowed") }
        return data
    }

    /// The JSON value in `data` (UTF-8), strictly.
    public static func parse(_ data: Data, where place: String) throws -> JsonValue {
        guard let text = String(data: data, encoding: .utf8) else {
            throw HarnessError("\(place): not UTF-8 text")
        }
        // Foundation drops a leading byte-order mark when decoding; Kotlin's decoder keeps it (then refused)
        if data.starts(with: [0xEF, 0xBB, 0xBF]) {
            throw HarnessError("\(place): not valid JSON (a value expected at line 1, offset 0)")
        }
        return try parse(text, where: place)
    }

    public static func parse(_ text: String, where place: String) throws -> JsonValue {
        var parser = Parser(Array(text.utf16), place)
        return try parser.document()
    }

    private struct Parser {
        let s: [UInt16]
        let place: String
        var i = 0

        init(_ s: [UInt16], _ place: String) {
            self.s = s
            self.place = place
        }

        static func c(_ ascii: Unicode.Scalar) -> UInt16 { UInt16(ascii.value) }

        func fail(_ what: String) -> HarnessError {
            let line = s[0..<min(i, s.count)].filter { $0 == 0x0A }.count + 1
            return HarnessError("\(place): not valid JSON (\(what) at line \(line), offset \(i))")
        }

        func startsWith(_ word: String, _ at: Int) -> Bool {
            let units = Array(word.utf16)
            guard at + units.count <= s.count else { return false }
            return Array(s[at..<(at + units.count)]) == units
        }

        mutating func document() throws -> JsonValue {
            skip()
            let value = try self.value(1)
            skip()
            if i != s.count { throw fail("extra data after the value") }
            return value
        }

        mutating func skip() {
            while i < s.count {
                let c = s[i]
                if c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { i += 1 } else { return }
            }
        }

        mutating func value(_ depth: Int) throws -> JsonValue {
            if i >= s.count { throw fail("a value expected") }
            let c = s[i]
            switch c {
            case Parser.c("{"): return try obj(depth)
            case Parser.c("["): return try arr(depth)
            case Parser.c("\""): return .string(try string())
            case Parser.c("t"): return try literal("true", .bool(true))
            case Parser.c("f"): return try literal("false", .bool(false))
            case Parser.c("n"): return try literal("null", .null)
            default:
                if c == Parser.c("-") || (c >= Parser.c("0") && c <= Parser.c("9")) { return try number() }
                if startsWith("NaN", i) || startsWith("Infinity", i) || startsWith("-Infinity", i) {
                    throw HarnessError("\(place): not valid JSON (NaN and Infinity are not JSON numbers, at offset \(i))")
                }
                throw fail("a value expected")
            }
        }

        mutating func literal(_ word: String, _ v: JsonValue) throws -> JsonValue {
            if !startsWith(word, i) { throw fail("a value expected") }
            i += word.utf16.count
            return v
        }

        func nested(_ depth: Int) throws {
            if depth > Json.maxDepth {
                throw HarnessError("\(place): not valid JSON (nested more than \(Json.maxDepth) levels deep)")
            }
        }

        mutating func obj(_ depth: Int) throws -> JsonValue {
            try nested(depth)
            i += 1
            var map = JsonObject()
            skip()
            if i < s.count && s[i] == Parser.c("}") { i += 1; return .object(map) }
            while true {
                skip()
                if i >= s.count || s[i] != Parser.c("\"") { throw fail("a key in double quotes expected") }
                let key = try string()
                skip()
                if i >= s.count || s[i] != Parser.c(":") { throw fail("':' expected") }
                i += 1
                skip()
                let v = try value(depth + 1)
                if map.containsKey(key) {
                    throw HarnessError("\(place): the key \(Json.keyName(key)) appears twice in one object")
                }
                map[key] = v
                skip()
                if i >= s.count { throw fail("'}' expected") }
                switch s[i] {
                case Parser.c(","): i += 1
                case Parser.c("}"): i += 1; return .object(map)
                default: throw fail("',' or '}' expected")
                }
            }
        }

        mutating func arr(_ depth: Int) throws -> JsonValue {
            try nested(depth)
            i += 1
            var list: [JsonValue] = []
            skip()
            if i < s.count && s[i] == Parser.c("]") { i += 1; return .array(list) }
            while true {
                skip()
                list.append(try value(depth + 1))
                skip()
                if i >= s.count { throw fail("']' expected") }
                switch s[i] {
                case Parser.c(","): i += 1
                case Parser.c("]"): i += 1; return .array(list)
                default: throw fail("',' or ']' expected")
                }
            }
        }

        mutating func string() throws -> String {
            i += 1 // opening quote
            var sb: [UInt16] = []
            while true {
                if i >= s.count { throw fail("unterminated string") }
                let c = s[i]
                i += 1
                if c == Parser.c("\"") { break }
                if c == Parser.c("\\") {
                    if i >= s.count { throw fail("unterminated string") }
                    let e = s[i]
                    i += 1
                    switch e {
                    case Parser.c("\""): sb.append(0x22)
                    case Parser.c("\\"): sb.append(0x5C)
                    case Parser.c("/"): sb.append(0x2F)
                    case Parser.c("b"): sb.append(0x08)
                    case Parser.c("f"): sb.append(0x0C)
                    case Parser.c("n"): sb.append(0x0A)
                    case Parser.c("r"): sb.append(0x0D)
                    case Parser.c("t"): sb.append(0x09)
                    case Parser.c("u"):
                        if i + 4 > s.count { throw fail("a bad \\u escape") }
                        var code: UInt16 = 0
                        for unit in s[i..<(i + 4)] {
                            let digit: UInt16
                            switch unit {
                            case 0x30...0x39: digit = unit - 0x30
                            case 0x61...0x66: digit = unit - 0x61 + 10
                            case 0x41...0x46: digit = unit - 0x41 + 10
                            default: throw fail("a bad \\u escape")
                            }
                            code = code &* 16 &+ digit
                        }
                        sb.append(code)
                        i += 4
                    default:
                        throw fail("a bad escape \\\(String(decoding: [e], as: UTF16.self))")
                    }
                } else if c < 0x20 {
                    throw fail("a control character in a string")
                } else {
                    sb.append(c)
                }
            }
            // a lone surrogate can only come from a \uD800-\uDFFF escape (the input was decoded from UTF-8)
            var k = 0
            while k < sb.count {
                let c = sb[k]
                if UTF16.isLeadSurrogate(c) && k + 1 < sb.count && UTF16.isTrailSurrogate(sb[k + 1]) {
                    k += 2
                    continue
                }
                if UTF16.isLeadSurrogate(c) || UTF16.isTrailSurrogate(c) {
                    throw HarnessError("\(place): a string is not valid Unicode text (a lone surrogate)")
                }
                k += 1
            }
            return String(decoding: sb, as: UTF16.self)
        }

        func isDigit(_ k: Int) -> Bool { k < s.count && s[k] >= 0x30 && s[k] <= 0x39 }

        mutating func number() throws -> JsonValue {
            let start = i
            if s[i] == Parser.c("-") { i += 1 }
            if i >= s.count { throw fail("a bad number") }
            if s[i] == Parser.c("0") {
                i += 1
            } else if s[i] >= Parser.c("1") && s[i] <= Parser.c("9") {
                while isDigit(i) { i += 1 }
            } else {
                if startsWith("Infinity", i) {
                    throw HarnessError("\(place): not valid JSON (NaN and Infinity are not JSON numbers, at offset \(start))")
                }
                throw fail("a bad number")
            }
            var integral = true
            if i < s.count && s[i] == Parser.c(".") {
                integral = false
                i += 1
                let d = i
                while isDigit(i) { i += 1 }
                if i == d { throw fail("a bad number") }
            }
            if i < s.count && (s[i] == Parser.c("e") || s[i] == Parser.c("E")) {
                integral = false
                i += 1
                if i < s.count && (s[i] == Parser.c("+") || s[i] == Parser.c("-")) { i += 1 }
                let d = i
                while isDigit(i) { i += 1 }
                if i == d { throw fail("a bad number") }
            }
            let text = String(decoding: s[start..<i], as: UTF16.self)
            if integral, let v = Int64(text) { return .int(v) }
            guard let d = Double(text), d.isFinite else {
                throw HarnessError("\(place): a number (\(text)) is not finite")
            }
            return .double(d)
        }
    }

    /// A key as Python's `key_name` shows it: as is when plain, else quoted.
    public static func keyName(_ key: String) -> String {
        let count = key.utf16.count
        let plain = count >= 1 && count <= 64 && key.unicodeScalars.allSatisfy { (c: Unicode.Scalar) -> Bool in
            let v = c.value
            return (v >= 0x30 && v <= 0x39) || (v >= 0x41 && v <= 0x5A) || (v >= 0x61 && v <= 0x7A) || v == 0x5F || v == 0x2D
        }
        return plain ? key : HarnessError.quoted(key)
    }

    // MARK: writing

    /// `value` as JSON text; `indent` nil: compact, else that many spaces per level (Python's `indent=`).
    public static func write(_ value: JsonValue, indent: Int? = nil) -> String {
        var sb = ""
        writeValue(&sb, value, indent, 0)
        return sb
    }

    private static func newline(_ sb: inout String, _ indent: Int?, _ level: Int) {
        guard let indent else { return }
        sb += "\n"
        sb += String(repeating: " ", count: indent * level)
    }

    private static func writeValue(_ sb: inout String, _ value: JsonValue, _ indent: Int?, _ level: Int) {
        switch value {
        case .null: sb += "null"
        case let .bool(v): sb += v ? "true" : "false"
        case let .string(v): writeString(&sb, v)
        case let .int(v): sb += String(v)
        case let .double(v): sb += number(v)
        case let .object(map):
            if map.isEmpty { sb += "{}"; return }
            sb += "{"
            var first = true
            for (k, v) in map {
                if !first { sb += "," }
                first = false
                newline(&sb, indent, level + 1)
                writeString(&sb, k)
                sb += indent == nil ? ":" : ": "
                writeValue(&sb, v, indent, level + 1)
            }
            newline(&sb, indent, level)
            sb += "}"
        case let .array(list):
            if list.isEmpty { sb += "[]"; return }
            sb += "["
            var first = true
            for v in list {
                if !first { sb += "," }
                first = false
                newline(&sb, indent, level + 1)
                writeValue(&sb, v, indent, level + 1)
            }
            newline(&sb, indent, level)
            sb += "]"
        }
    }

    /// A finite double as the shortest JSON number that reads back to it (`7.0`, `0.001`, `1.0E-5`), the same
    /// text as Kotlin's `Json.number`: Java's `Double.toString` of the shortest digits, or, when strictly shorter,
    /// `BigDecimal.toString` of them with `E+` written `E` (`1E3` for 1000.0, `3E1` for 30.0).
    /// A NaN or an infinity is a programming error (the core never makes one): it is written as null.
    public static func number(_ d: Double) -> String {
        guard d.isFinite else {
            assertionFailure("NaN and infinities are not JSON numbers")
            return "null"
        }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        let sign = d < 0 ? "-" : ""
        let (digits, exponent) = shortestDigits(abs(d))
        let text = sign + javaText(digits, exponent)
        let short = sign + bigDecimalText(digits, exponent).replacingOccurrences(of: "E+", with: "E")
        let plain = (short.contains("E") || short.contains(".")) ? short : short + ".0"
        return plain.count < text.count ? plain : text
    }

    /// The shortest decimal digits (no leading or trailing zeros) that read back to `d` > 0, and the exponent E of
    /// `d = d1.d2d3... x 10^E`. Swift's `description` gives the shortest round-trip digits ("123.45", "1e-05",
    /// "1.2345e+16", "0.0001").
    static func shortestDigits(_ d: Double) -> ([Character], Int) {
        let text = "\(d)"
        var mantissa = Substring(text)
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = text[text.startIndex..<e]
            exponent = Int(text[text.index(after: e)...].replacingOccurrences(of: "+", with: "")) ?? 0
        }
        var intPart = mantissa
        var fracPart: Substring = ""
        if let dot = mantissa.firstIndex(of: ".") {
            intPart = mantissa[mantissa.startIndex..<dot]
            fracPart = mantissa[mantissa.index(after: dot)...]
        }
        var digits = Array(String(intPart) + String(fracPart))
        var point = intPart.count + exponent // the decimal point falls after `point` digits
        while let first = digits.first, first == "0" {
            digits.removeFirst()
            point -= 1
        }
        while let last = digits.last, last == "0" { digits.removeLast() }
        if digits.isEmpty { return (["0"], 0) }
        return (digits, point - 1)
    }

    /// Java's Double.toString layout: plain for 1e-3 <= |d| < 1e7 (always with a fraction), else `d.dddE-n`.
    static func javaText(_ digits: [Character], _ e: Int) -> String {
        if e >= -3 && e < 7 {
            let point = e + 1
            if point <= 0 { return "0." + String(repeating: "0", count: -point) + String(digits) }
            if point >= digits.count { return String(digits) + String(repeating: "0", count: point - digits.count) + ".0" }
            return String(digits[0..<point]) + "." + String(digits[point...])
        }
        let rest = digits.count > 1 ? String(digits[1...]) : "0"
        return String(digits[0]) + "." + rest + "E" + String(e)
    }

    /// Java's BigDecimal.toString of unscaled `digits` with scale `len - 1 - e`.
    static func bigDecimalText(_ digits: [Character], _ e: Int) -> String {
        let scale = digits.count - 1 - e
        if scale >= 0 && e >= -6 {
            if scale == 0 { return String(digits) }
            if digits.count > scale {
                let cut = digits.count - scale
                return String(digits[0..<cut]) + "." + String(digits[cut...])
            }
            return "0." + String(repeating: "0", count: scale - digits.count) + String(digits)
        }
        var out = String(digits[0])
        if digits.count > 1 { out += "." + String(digits[1...]) }
        if e != 0 { out += "E" + (e > 0 ? "+" : "") + String(e) }
        return out
    }

    private static func writeString(_ sb: inout String, _ s: String) {
        sb += "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": sb += "\\\""
            case "\\": sb += "\\\\"
            case "\n": sb += "\\n"
            case "\r": sb += "\\r"
            case "\t": sb += "\\t"
            case "\u{08}": sb += "\\b"
            case "\u{0C}": sb += "\\f"
            default:
                if c.value < 0x20 {
                    sb += String(format: "\\u%04x", c.value)
                } else {
                    sb.unicodeScalars.append(c)
                }
            }
        }
        sb += "\""
    }

    /// Whether two JSON values are equal as values (numbers by value: `7` equals `7.0`; objects regardless of key order).
    public static func equal(_ a: JsonValue, _ b: JsonValue) -> Bool { difference(a, b) == nil }

    /// Where two JSON values first differ (a JSON pointer-like path and what differs), or nil when equal.
    public static func difference(_ a: JsonValue, _ b: JsonValue, _ at: String = "") -> String? {
        let here = at.isEmpty ? "/" : at
        if let x = a.number, let y = b.number {
            return x == y ? nil : "\(here): \(write(a)) != \(write(b))"
        }
        if case let .object(x) = a, case let .object(y) = b {
            if Set(x.keys) != Set(y.keys) {
                return "\(here): keys \(x.keys.sorted()) != \(y.keys.sorted())"
            }
            for k in x.keys {
                if let found = difference(x[k]!, y[k]!, "\(at)/\(k)") { return found }
            }
            return nil
        }
        if case let .array(x) = a, case let .array(y) = b {
            if x.count != y.count { return "\(here): \(x.count) items != \(y.count) items" }
            for k in x.indices {
                if let found = difference(x[k], y[k], "\(at)/\(k)") { return found }
            }
            return nil
        }
        switch (a, b) {
        case (.null, .null): return nil
        case let (.bool(x), .bool(y)) where x == y: return nil
        case let (.string(x), .string(y)) where x == y: return nil
        default: return "\(here): \(write(a).prefix(80)) != \(write(b).prefix(80))"
        }
    }
}

/// Typed access to one parsed JSON object, every failure a HarnessError naming `where` and the key (the checks a
/// schema makes: required keys, no others, types, ranges).
public struct JsonObj {
    public let map: JsonObject
    public let place: String

    public init(_ map: JsonObject, _ place: String) {
        self.map = map
        self.place = place
    }

    public static func of(_ value: JsonValue?, _ place: String) throws -> JsonObj {
        guard let value, case let .object(map) = value else { throw HarnessError("\(place): must be an object") }
        return JsonObj(map, place)
    }

    public func at(_ key: String) -> String {
        (place.hasSuffix(":") || place.hasSuffix(" at")) ? "\(place) \(key)" : "\(place).\(key)"
    }

    public func has(_ key: String) -> Bool { map.containsKey(key) }

    /// The value of `key`, with JSON null and a missing key both nil (Kotlin's `map[key]`).
    public subscript(key: String) -> JsonValue? {
        guard let v = map[key], !v.isNull else { return nil }
        return v
    }

    /// Refuse keys other than `allowed` and a missing `required` key.
    @discardableResult
    public func keys(_ required: [String], _ allowed: [String]) throws -> JsonObj {
        for k in required where !map.containsKey(k) { throw HarnessError("\(place): missing key \(Json.keyName(k))") }
        for k in map.keys where !allowed.contains(k) { throw HarnessError("\(place): unknown key \(Json.keyName(k))") }
        return self
    }

    public func obj(_ key: String) throws -> JsonObj { try JsonObj.of(self[key], at(key)) }

    public func objOrNull(_ key: String) throws -> JsonObj? {
        if self[key] == nil && !has(key) { return nil }
        return try obj(key)
    }

    public func string(_ key: String, _ maxLength: Int = Int.max) throws -> String {
        guard let v = self[key]?.stringValue else { throw HarnessError("\(at(key)) must be a string") }
        if v.unicodeScalars.count > maxLength { throw HarnessError("\(at(key)) is longer than \(maxLength) characters") }
        return v
    }

    public func stringOrNull(_ key: String, _ maxLength: Int = Int.max) throws -> String? {
        if self[key] == nil { return nil }
        return try string(key, maxLength)
    }

    public func long(_ key: String, min: Int64 = Int64.min, max: Int64 = Int64.max) throws -> Int64 {
        try asLong(self[key], at(key), min: min, max: max)
    }

    public func int(_ key: String, min: Int64 = Int64(Int32.min), max: Int64 = Int64(Int32.max)) throws -> Int {
        Int(try long(key, min: min, max: max))
    }

    public func intOrNull(_ key: String, min: Int64 = Int64(Int32.min), max: Int64 = Int64(Int32.max)) throws -> Int? {
        if !has(key) { return nil }
        return try int(key, min: min, max: max)
    }

    public func double(_ key: String, min: Double = -Double.infinity, max: Double = Double.infinity) throws -> Double {
        try asDouble(self[key], at(key), min: min, max: max)
    }

    public func doubleOrNull(_ key: String, min: Double = -Double.infinity, max: Double = Double.infinity) throws -> Double? {
        if self[key] == nil { return nil }
        return try double(key, min: min, max: max)
    }

    public func list(_ key: String, _ minItems: Int = 0, _ maxItems: Int = Int.max) throws -> [JsonValue] {
        guard let v = self[key]?.arrayValue else { throw HarnessError("\(at(key)) must be a list") }
        if v.count < minItems { throw HarnessError("\(at(key)) must have at least \(minItems) items") }
        if v.count > maxItems { throw HarnessError("\(at(key)) has more than \(maxItems) items") }
        return v
    }

    public func stringIn(_ key: String, _ choices: [String]) throws -> String {
        let v = try string(key)
        if !choices.contains(v) {
            throw HarnessError("\(at(key)) is \(HarnessError.quoted(v)), not one of \(choices.joined(separator: ", "))")
        }
        return v
    }
}

func asLong(_ v: JsonValue?, _ place: String, min: Int64 = Int64.min, max: Int64 = Int64.max) throws -> Int64 {
    let n: Int64
    switch v {
    case let .int(value)?: n = value
    // JSON Schema counts 7.0 as an integer too
    case let .double(value)?:
        if value == value.rounded(.down) && abs(value) < 9.0e15 { n = Int64(value) } else {
            throw HarnessError("\(place) must be an integer")
        }
    default: throw HarnessError("\(place) must be an integer")
    }
    if n < min { throw HarnessError("\(place): \(n) is less than the minimum of \(min)") }
    if n > max { throw HarnessError("\(place): \(n) is more than the maximum of \(max)") }
    return n
}

func asDouble(_ v: JsonValue?, _ place: String, min: Double = -Double.infinity, max: Double = Double.infinity) throws -> Double {
    guard let d = v?.number else { throw HarnessError("\(place) must be a number") }
    if d < min { throw HarnessError("\(place): \(Json.kotlinDouble(d)) is less than the minimum of \(Json.kotlinDouble(min))") }
    if d > max { throw HarnessError("\(place): \(Json.kotlinDouble(d)) is more than the maximum of \(Json.kotlinDouble(max))") }
    return d
}

extension Json {
    /// A double as Kotlin's string template shows it (`1.0`, `0.5`, `1.0E-5`): Java's Double.toString.
    static func kotlinDouble(_ d: Double) -> String {
        if !d.isFinite { return d.isNaN ? "NaN" : (d > 0 ? "Infinity" : "-Infinity") }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        let (digits, e) = shortestDigits(abs(d))
        return (d < 0 ? "-" : "") + javaText(digits, e)
    }
}
