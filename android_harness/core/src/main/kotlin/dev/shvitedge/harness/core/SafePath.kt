package dev.shvitedge.harness.core

import java.io.File
import java.nio.file.Files
import java.nio.file.LinkOption
import java.nio.file.attribute.BasicFileAttributes

/**
 * The path rules of docs/bundle.md section 2 (Python `safe_relative` and `inside` in harness/documents.py): a path
 * in a bundle is POSIX and relative, with no `..`, `.` or empty part, no backslash, NUL or control character; and
 * the file it names is reached without passing through a symlink, and is a regular file.
 */
object SafePath {

    /** [text] if it is a safe relative path, else a [HarnessError] naming [where] and the path. */
    fun check(text: String, where: String): String {
        val problem = when {
            text.isEmpty() -> "is not a non-empty string"
            text.startsWith("/") || (text.length > 1 && text[1] == ':') -> "is absolute"
            text.any { it == '\\' || it.code < 32 } -> "holds a backslash, NUL or control character"
            text.split("/").any { it == "" || it == "." || it == ".." } -> "has an empty, '.' or '..' part"
            else -> null
        }
        if (problem != null) {
            throw HarnessError("$where: the path ${HarnessError.quoted(text)} $problem: it must stay inside the bundle")
        }
        return text
    }

    /**
     * `root/relative` ([relative] already [check]ed), refused when any part of it is a symlink, is missing, or
     * the last part is not a regular file ([directory]: not a folder).
     */
    fun inside(root: File, relative: String, where: String, directory: Boolean = false): File {
        var path = root
        var attrs: BasicFileAttributes? = null
        for (part in relative.split("/")) {
            path = File(path, part)
            attrs = try {
                Files.readAttributes(path.toPath(), BasicFileAttributes::class.java, LinkOption.NOFOLLOW_LINKS)
            } catch (e: Exception) {
                throw HarnessError("$where: $relative is missing")
            }
            if (attrs.isSymbolicLink) throw HarnessError("$where: $relative is (or passes through) a symlink; refused")
        }
        if (directory) {
            if (attrs?.isDirectory != true) throw HarnessError("$where: $relative is not a folder")
        } else if (attrs?.isRegularFile != true) {
            throw HarnessError("$where: $relative is not a regular file")
        }
        return path
    }

    /** The size of the regular file [file] without following a symlink. */
    fun size(file: File): Long =
        Files.readAttributes(file.toPath(), BasicFileAttributes::class.java, LinkOption.NOFOLLOW_LINKS).size()
}
