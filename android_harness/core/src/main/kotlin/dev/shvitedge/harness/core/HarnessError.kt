package dev.shvitedge.harness.core

/**
 * The one error type of the core: a bundle refused, a result document that cannot be read, a tensor that does not
 * hold its shape. [message] is one line a person can read (it names the file, key or value at fault); it never
 * holds a newline.
 */
class HarnessError(message: String, cause: Throwable? = null) :
    Exception(oneLine(message), cause) {

    override val message: String get() = super.message ?: ""

    companion object {
        /** [text] on one line (whitespace runs folded to one space), at most [limit] characters. */
        fun oneLine(text: String, limit: Int = 4096): String {
            val folded = text.split(Regex("\\s+")).filter { it.isNotEmpty() }.joinToString(" ")
            return if (folded.length <= limit) folded else folded.substring(0, limit - 3) + "..."
        }

        /** How a caught throwable reads in a run's `error`: its class and message, on one line. */
        fun describe(error: Throwable): String {
            if (error is HarnessError) return error.message
            val name = error.javaClass.simpleName.ifEmpty { error.javaClass.name }
            val text = error.message?.takeIf { it.isNotBlank() }
            return oneLine(if (text == null) name else "$name: $text")
        }

        /** [value] quoted as Python's `repr` of a short string would be (for messages), cut to 80 characters. */
        fun quoted(value: String): String {
            val sb = StringBuilder("'")
            for (c in value) {
                when {
                    c == '\\' -> sb.append("\\\\")
                    c == '\'' -> sb.append("\\'")
                    c == '\n' -> sb.append("\\n")
                    c == '\r' -> sb.append("\\r")
                    c == '\t' -> sb.append("\\t")
                    c.code < 32 || c.code == 127 -> sb.append("\\x%02x".format(c.code))
                    else -> sb.append(c)
                }
            }
            sb.append('\'')
            val text = sb.toString()
            return if (text.length <= 80) text else text.substring(0, 77) + "..."
        }
    }
}
