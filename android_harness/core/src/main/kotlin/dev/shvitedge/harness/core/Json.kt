package dev.shvitedge.harness.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction
import java.nio.file.Files
import java.nio.file.LinkOption
import java.nio.file.attribute.BasicFileAttributes

/**
 * Strict JSON (RFC 8259), read and written the way shvit-edge's Python side reads and writes it.
 *
 * Values: an object is a `Map<String, Any?>` (a [LinkedHashMap], keys in document order), an array a `List<Any?>`,
 * a string a [String], `true`/`false` a [Boolean], `null` Kotlin's null, a number without fraction or exponent a
 * [Long] (a [Double] when it does not fit), any other number a [Double].
 *
 * Reading refuses (one-line [HarnessError]) what Python's `load_json` refuses: text that is not UTF-8, a byte-order
 * mark, duplicate keys, `NaN`/`Infinity` (and numbers that overflow to infinity), nesting deeper than [MAX_DEPTH]
 * containers, lone surrogates, trailing commas, comments, single quotes, anything after the value. (Android's own
 * org.json is lenient about all of these, so it is not used.)
 *
 * Writing is deterministic: keys in the map's order, integers ([Int], [Long]) without a fraction, doubles as the
 * shortest decimal that reads back to the same double, strings UTF-8 with only `"`, `\` and control characters
 * escaped. NaN and infinities are refused: they are not JSON.
 */
object Json {
    const val MAX_DEPTH = 64
    const val MAX_FILE_BYTES = 16L shl 20

    /** The JSON value of the regular file [file] (at most [maxBytes]); [where] names it in errors. */
    fun readFile(file: File, where: String, maxBytes: Long = MAX_FILE_BYTES): Any? =
        parse(readCapped(file, where, maxBytes), where)

    /** The bytes of the regular file [file], refused when it is a symlink, not a regular file or over [maxBytes]. */
    fun readCapped(file: File, where: String, maxBytes: Long): ByteArray {
        val attrs = try {
            Files.readAttributes(file.toPath(), BasicFileAttributes::class.java, LinkOption.NOFOLLOW_LINKS)
        } catch (e: Exception) {
            throw HarnessError("$where is missing")
        }
        if (attrs.isSymbolicLink) throw HarnessError("$where is a symlink; refused")
        if (!attrs.isRegularFile) throw HarnessError("$where is not a regular file")
        if (attrs.size() > maxBytes) throw HarnessError("$where is ${attrs.size()} bytes, more than the $maxBytes allowed")
        val data = try { file.readBytes() } catch (e: Exception) {
            throw HarnessError("$where: cannot read it (${HarnessError.describe(e)})")
        }
        if (data.size > maxBytes) throw HarnessError("$where is more than the $maxBytes bytes allowed")
        return data
    }

    /** The JSON value in [data] (UTF-8), strictly. */
    fun parse(data: ByteArray, where: String): Any? {
        val text = try {
            Charsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT)
                .decode(ByteBuffer.wrap(data)).toString()
        } catch (e: CharacterCodingException) {
            throw HarnessError("$where: not UTF-8 text")
        }
        return Parser(text, where).document()
    }

    fun parse(text: String, where: String): Any? = Parser(text, where).document()

    private class Parser(val s: String, val where: String) {
        var i = 0

        fun fail(what: String): Nothing {
            val line = s.substring(0, minOf(i, s.length)).count { it == '\n' } + 1
            throw HarnessError("$where: not valid JSON ($what at line $line, offset $i)")
        }

        fun document(): Any? {
            skip()
            val value = value(1)
            skip()
            if (i != s.length) fail("extra data after the value")
            return value
        }

        fun skip() {
            while (i < s.length) {
                val c = s[i]
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r') i++ else return
            }
        }

        fun value(depth: Int): Any? {
            if (i >= s.length) fail("a value expected")
            return when (val c = s[i]) {
                '{' -> obj(depth)
                '[' -> arr(depth)
                '"' -> string()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || c in '0'..'9') number() else {
                    if (s.startsWith("NaN", i) || s.startsWith("Infinity", i) || s.startsWith("-Infinity", i)) {
                        throw HarnessError("$where: not valid JSON (NaN and Infinity are not JSON numbers, at offset $i)")
                    }
                    fail("a value expected")
                }
            }
        }

        fun literal(word: String, v: Any?): Any? {
            if (!s.startsWith(word, i)) fail("a value expected")
            i += word.length
            return v
        }

        fun nested(depth: Int) {
            if (depth > MAX_DEPTH) {
                throw HarnessError("$where: not valid JSON (nested more than $MAX_DEPTH levels deep)")
            }
        }

        fun obj(depth: Int): Map<String, Any?> {
            nested(depth)
            i++
            val map = LinkedHashMap<String, Any?>()
            skip()
            if (i < s.length && s[i] == '}') { i++; return map }
            while (true) {
                skip()
                if (i >= s.length || s[i] != '"') fail("a key in double quotes expected")
                val key = string()
                skip()
                if (i >= s.length || s[i] != ':') fail("':' expected")
                i++
                skip()
                val v = value(depth + 1)
                if (map.containsKey(key)) {
                    throw HarnessError("$where: the key ${keyName(key)} appears twice in one object")
                }
                map[key] = v
                skip()
                if (i >= s.length) fail("'}' expected")
                when (s[i]) {
                    ',' -> i++
                    '}' -> { i++; return map }
                    else -> fail("',' or '}' expected")
                }
            }
        }

        fun arr(depth: Int): List<Any?> {
            nested(depth)
            i++
            val list = ArrayList<Any?>()
            skip()
            if (i < s.length && s[i] == ']') { i++; return list }
            while (true) {
                skip()
                list.add(value(depth + 1))
                skip()
                if (i >= s.length) fail("']' expected")
                when (s[i]) {
                    ',' -> i++
                    ']' -> { i++; return list }
                    else -> fail("',' or ']' expected")
                }
            }
        }

        fun string(): String {
            i++ // opening quote
            val sb = StringBuilder()
            while (true) {
                if (i >= s.length) fail("unterminated string")
                val c = s[i++]
                when {
                    c == '"' -> break
                    c == '\\' -> {
                        if (i >= s.length) fail("unterminated string")
                        when (val e = s[i++]) {
                            '"' -> sb.append('"'); '\\' -> sb.append('\\'); '/' -> sb.append('/')
                            'b' -> sb.append('\b'); 'f' -> sb.append('\u000c'); 'n' -> sb.append('\n')
                            'r' -> sb.append('\r'); 't' -> sb.append('\t')
                            'u' -> {
                                if (i + 4 > s.length) fail("a bad \\u escape")
                                val hex = s.substring(i, i + 4)
                                if (!hex.all { it in '0'..'9' || it in 'a'..'f' || it in 'A'..'F' }) fail("a bad \\u escape")
                                sb.append(hex.toInt(16).toChar())
                                i += 4
                            }
                            else -> fail("a bad escape \\$e")
                        }
                    }
                    c.code < 0x20 -> fail("a control character in a string")
                    else -> sb.append(c)
                }
            }
            val text = sb.toString()
            // a lone surrogate can only come from a \uD800-\uDFFF escape (the input was decoded from UTF-8)
            var k = 0
            while (k < text.length) {
                val c = text[k]
                if (Character.isHighSurrogate(c) && k + 1 < text.length && Character.isLowSurrogate(text[k + 1])) {
                    k += 2; continue
                }
                if (Character.isSurrogate(c)) {
                    throw HarnessError("$where: a string is not valid Unicode text (a lone surrogate)")
                }
                k++
            }
            return text
        }

        fun number(): Any {
            val start = i
            if (s[i] == '-') i++
            if (i >= s.length) fail("a bad number")
            if (s[i] == '0') i++ else if (s[i] in '1'..'9') { while (i < s.length && s[i] in '0'..'9') i++ } else {
                if (s.startsWith("Infinity", i)) {
                    throw HarnessError("$where: not valid JSON (NaN and Infinity are not JSON numbers, at offset $start)")
                }
                fail("a bad number")
            }
            var integral = true
            if (i < s.length && s[i] == '.') {
                integral = false
                i++
                val d = i
                while (i < s.length && s[i] in '0'..'9') i++
                if (i == d) fail("a bad number")
            }
            if (i < s.length && (s[i] == 'e' || s[i] == 'E')) {
                integral = false
                i++
                if (i < s.length && (s[i] == '+' || s[i] == '-')) i++
                val d = i
                while (i < s.length && s[i] in '0'..'9') i++
                if (i == d) fail("a bad number")
            }
            val text = s.substring(start, i)
            if (integral) text.toLongOrNull()?.let { return it }
            val d = text.toDouble()
            if (d.isInfinite() || d.isNaN()) {
                throw HarnessError("$where: a number ($text) is not finite")
            }
            return d
        }
    }

    /** A key as Python's `key_name` shows it: as is when plain, else quoted. */
    fun keyName(key: String): String =
        if (key.length in 1..64 && key.all { it.isLetterOrDigit() && it.code < 128 || it == '_' || it == '-' }) key
        else HarnessError.quoted(key)

    // -- writing --

    /** [value] as JSON text; [indent] null: compact, else that many spaces per level (Python's `indent=`). */
    fun write(value: Any?, indent: Int? = null): String {
        val sb = StringBuilder()
        writeValue(sb, value, indent, 0)
        return sb.toString()
    }

    private fun newline(sb: StringBuilder, indent: Int?, level: Int) {
        if (indent == null) return
        sb.append('\n')
        repeat(indent * level) { sb.append(' ') }
    }

    private fun writeValue(sb: StringBuilder, value: Any?, indent: Int?, level: Int) {
        when (value) {
            null -> sb.append("null")
            is Boolean -> sb.append(if (value) "true" else "false")
            is String -> writeString(sb, value)
            is Int, is Long, is Short, is Byte -> sb.append(value.toString())
            is java.math.BigInteger -> sb.append(value.toString())
            is Double -> sb.append(number(value))
            is Float -> sb.append(number(value.toDouble()))
            is Map<*, *> -> {
                if (value.isEmpty()) { sb.append("{}"); return }
                sb.append('{')
                var first = true
                for ((k, v) in value) {
                    if (!first) sb.append(if (indent == null) "," else ",")
                    first = false
                    newline(sb, indent, level + 1)
                    writeString(sb, k as? String ?: throw IllegalArgumentException("JSON keys are strings, not $k"))
                    sb.append(if (indent == null) ":" else ": ")
                    writeValue(sb, v, indent, level + 1)
                }
                newline(sb, indent, level)
                sb.append('}')
            }
            is List<*> -> {
                if (value.isEmpty()) { sb.append("[]"); return }
                sb.append('[')
                var first = true
                for (v in value) {
                    if (!first) sb.append(',')
                    first = false
                    newline(sb, indent, level + 1)
                    writeValue(sb, v, indent, level + 1)
                }
                newline(sb, indent, level)
                sb.append(']')
            }
            is DoubleArray -> writeValue(sb, value.toList(), indent, level)
            is IntArray -> writeValue(sb, value.toList(), indent, level)
            else -> throw IllegalArgumentException("not a JSON value: ${value.javaClass.name}")
        }
    }

    /** A finite double as the shortest JSON number that reads back to it (`7.0`, `0.001`, `1.0E-5`). */
    fun number(d: Double): String {
        require(!d.isNaN() && !d.isInfinite()) { "NaN and infinities are not JSON numbers" }
        if (d == 0.0) return if (1.0 / d < 0) "-0.0" else "0.0"
        val text = d.toString()
        // Double.toString reads back to d; before JDK 19 it is not always the shortest such text: shorten it
        val exact = java.math.BigDecimal(d)
        for (digits in 1..17) {
            val candidate = exact.round(java.math.MathContext(digits, java.math.RoundingMode.HALF_EVEN))
            if (candidate.toDouble() == d) {
                val short = candidate.toString().replace("E+", "E")
                val plain = if (short.contains('E') || short.contains('.')) short else "$short.0"
                return if (plain.length < text.length) plain else text
            }
        }
        return text
    }

    private fun writeString(sb: StringBuilder, s: String) {
        sb.append('"')
        for (c in s) {
            when {
                c == '"' -> sb.append("\\\"")
                c == '\\' -> sb.append("\\\\")
                c == '\n' -> sb.append("\\n")
                c == '\r' -> sb.append("\\r")
                c == '\t' -> sb.append("\\t")
                c == '\b' -> sb.append("\\b")
                c == '\u000c' -> sb.append("\\f")
                c.code < 0x20 -> sb.append("\\u%04x".format(c.code))
                else -> sb.append(c)
            }
        }
        sb.append('"')
    }

    /** Whether two JSON values are equal as values (numbers by value: `7` equals `7.0`; objects regardless of key order). */
    fun equal(a: Any?, b: Any?): Boolean = difference(a, b, "") == null

    /** Where two JSON values first differ (a JSON pointer-like path and what differs), or null when equal. */
    fun difference(a: Any?, b: Any?, at: String = ""): String? {
        if (a is Number && b is Number) {
            return if (a.toDouble() == b.toDouble()) null else "${at.ifEmpty { "/" }}: $a != $b"
        }
        if (a is Map<*, *> && b is Map<*, *>) {
            if (a.keys != b.keys) return "${at.ifEmpty { "/" }}: keys ${a.keys.sortedBy { it.toString() }} != ${b.keys.sortedBy { it.toString() }}"
            for (k in a.keys) difference(a[k], b[k], "$at/$k")?.let { return it }
            return null
        }
        if (a is List<*> && b is List<*>) {
            if (a.size != b.size) return "${at.ifEmpty { "/" }}: ${a.size} items != ${b.size} items"
            for (k in a.indices) difference(a[k], b[k], "$at/$k")?.let { return it }
            return null
        }
        return if (a == b) null else "${at.ifEmpty { "/" }}: ${write(a).take(80)} != ${write(b).take(80)}"
    }
}

/**
 * Typed access to one parsed JSON object, every failure a [HarnessError] naming [where] and the key (the checks a
 * schema makes: required keys, no others, types, ranges).
 */
class JsonObj(val map: Map<String, Any?>, val where: String) {

    companion object {
        fun of(value: Any?, where: String): JsonObj {
            @Suppress("UNCHECKED_CAST")
            if (value !is Map<*, *>) throw HarnessError("$where: must be an object")
            @Suppress("UNCHECKED_CAST")
            return JsonObj(value as Map<String, Any?>, where)
        }
    }

    fun at(key: String) = if (where.endsWith(":") || where.endsWith(" at")) "$where $key" else "$where.$key"

    fun has(key: String) = map.containsKey(key)

    /** Refuse keys other than [allowed] and a missing [required] key. */
    fun keys(required: Collection<String>, allowed: Collection<String>): JsonObj {
        for (k in required) if (!map.containsKey(k)) throw HarnessError("$where: missing key ${Json.keyName(k)}")
        for (k in map.keys) if (k !in allowed) throw HarnessError("$where: unknown key ${Json.keyName(k)}")
        return this
    }

    fun obj(key: String): JsonObj = of(map[key], at(key))

    fun objOrNull(key: String): JsonObj? = if (map[key] == null && !has(key)) null else obj(key)

    fun string(key: String, maxLength: Int = Int.MAX_VALUE): String {
        val v = map[key] as? String ?: throw HarnessError("${at(key)} must be a string")
        if (v.codePointCount(0, v.length) > maxLength) throw HarnessError("${at(key)} is longer than $maxLength characters")
        return v
    }

    fun stringOrNull(key: String, maxLength: Int = Int.MAX_VALUE): String? =
        if (map[key] == null) null else string(key, maxLength)

    fun long(key: String, min: Long = Long.MIN_VALUE, max: Long = Long.MAX_VALUE): Long =
        asLong(map[key], at(key), min, max)

    fun int(key: String, min: Long = Int.MIN_VALUE.toLong(), max: Long = Int.MAX_VALUE.toLong()): Int =
        long(key, min, max).toInt()

    fun intOrNull(key: String, min: Long = Int.MIN_VALUE.toLong(), max: Long = Int.MAX_VALUE.toLong()): Int? =
        if (!has(key)) null else int(key, min, max)

    fun double(key: String, min: Double = Double.NEGATIVE_INFINITY, max: Double = Double.POSITIVE_INFINITY): Double =
        asDouble(map[key], at(key), min, max)

    fun doubleOrNull(key: String, min: Double = Double.NEGATIVE_INFINITY, max: Double = Double.POSITIVE_INFINITY): Double? =
        if (map[key] == null) null else double(key, min, max)

    fun list(key: String, minItems: Int = 0, maxItems: Int = Int.MAX_VALUE): List<Any?> {
        val v = map[key] as? List<*> ?: throw HarnessError("${at(key)} must be a list")
        if (v.size < minItems) throw HarnessError("${at(key)} must have at least $minItems items")
        if (v.size > maxItems) throw HarnessError("${at(key)} has more than $maxItems items")
        return v
    }

    fun stringIn(key: String, choices: Collection<String>): String {
        val v = string(key)
        if (v !in choices) throw HarnessError("${at(key)} is ${HarnessError.quoted(v)}, not one of ${choices.joinToString(", ")}")
        return v
    }
}

internal fun asLong(v: Any?, where: String, min: Long = Long.MIN_VALUE, max: Long = Long.MAX_VALUE): Long {
    val n = when (v) {
        is Long -> v
        is Int -> v.toLong()
        // JSON Schema counts 7.0 as an integer too
        is Double -> if (v == Math.floor(v) && Math.abs(v) < 9.0e15) v.toLong() else throw HarnessError("$where must be an integer")
        else -> throw HarnessError("$where must be an integer")
    }
    if (n < min) throw HarnessError("$where: $n is less than the minimum of $min")
    if (n > max) throw HarnessError("$where: $n is more than the maximum of $max")
    return n
}

internal fun asDouble(v: Any?, where: String, min: Double = Double.NEGATIVE_INFINITY, max: Double = Double.POSITIVE_INFINITY): Double {
    val d = when (v) {
        is Long -> v.toDouble()
        is Int -> v.toDouble()
        is Double -> v
        else -> throw HarnessError("$where must be a number")
    }
    if (d < min) throw HarnessError("$where: $d is less than the minimum of $min")
    if (d > max) throw HarnessError("$where: $d is more than the maximum of $max")
    return d
}
