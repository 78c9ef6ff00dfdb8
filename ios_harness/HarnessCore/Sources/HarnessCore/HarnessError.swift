// Mirror of HarnessError.kt.
import Foundation

/// The one error type of the core: a bundle refused, a result document that cannot be read, a tensor that does not
/// hold its shape. `message` is one line a person can read (it names the file, key or value at fault); it never
/// holds a newline.
public struct HarnessError: Error, LocalizedError, CustomStringConvertible, Equatable {
    public let message: String

    public init(_ message: String) {
        self.message = HarnessError.oneLine(message)
    }

    public var description: String { message }
    public var errorDescription: String? { message }

    /// `text` on one line (whitespace runs folded to one space), at most `limit` characters.
    public static func oneLine(_ text: String, limit: Int = 4096) -> String {
        let folded = text.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
        return folded.count <= limit ? folded : String(folded.prefix(limit - 3)) + "..."
    }

    /// How a caught error reads in a run's `error`: its type and message, on one line.
    public static func describe(_ error: Error) -> String {
        if let harness = error as? HarnessError { return harness.message }
        let ns = error as NSError
        var name = String(describing: type(of: error))
        if name == "NSError" || name.hasPrefix("__") { name = "\(ns.domain) \(ns.code)" }
        let text = ns.localizedDescription.trimmingCharacters(in: .whitespacesAndNewlines)
        return oneLine(text.isEmpty ? name : "\(name): \(text)")
    }

    /// `value` quoted as Python's `repr` of a short string would be (for messages), cut to 80 characters.
    public static func quoted(_ value: String) -> String {
        var out = "'"
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "'": out += "\\'"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 32 || scalar.value == 127 {
                    out += String(format: "\\x%02x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "'"
        return out.count <= 80 ? out : String(out.prefix(77)) + "..."
    }
}
