// Mirror of SafePath.kt.
import Foundation

/// The path rules of docs/bundle.md section 2 (Python `safe_relative` and `inside` in harness/documents.py): a path
/// in a bundle is POSIX and relative, with no `..`, `.` or empty part, no backslash, NUL or control character; and
/// the file it names is reached without passing through a symlink, and is a regular file.
public enum SafePath {

    /// `text` if it is a safe relative path, else a HarnessError naming `where` and the path.
    @discardableResult
    public static func check(_ text: String, where place: String) throws -> String {
        let units = Array(text.utf16)
        var problem: String?
        if text.isEmpty {
            problem = "is not a non-empty string"
        } else if text.hasPrefix("/") || (units.count > 1 && units[1] == 0x3A) {
            problem = "is absolute"
        } else if units.contains(where: { $0 == 0x5C || $0 < 32 }) {
            problem = "holds a backslash, NUL or control character"
        } else if text.split(separator: "/", omittingEmptySubsequences: false)
                    .contains(where: { $0 == "" || $0 == "." || $0 == ".." }) {
            problem = "has an empty, '.' or '..' part"
        }
        if let problem {
            throw HarnessError("\(place): the path \(HarnessError.quoted(text)) \(problem): it must stay inside the bundle")
        }
        return text
    }

    /// `root/relative` (`relative` already checked), refused when any part of it is a symlink, is missing, or the
    /// last part is not a regular file (`directory`: not a folder).
    public static func inside(_ root: URL, _ relative: String, where place: String, directory: Bool = false) throws -> URL {
        var path = root
        var type: FileAttributeType?
        for part in relative.split(separator: "/", omittingEmptySubsequences: false) {
            path = path.appendingPathComponent(String(part), isDirectory: false)
            // attributesOfItem does not follow a symlink: it describes the link itself
            guard let attrs = try? FileManager.default.attributesOfItem(atPath: path.path) else {
                throw HarnessError("\(place): \(relative) is missing")
            }
            type = attrs[.type] as? FileAttributeType
            if type == .typeSymbolicLink {
                throw HarnessError("\(place): \(relative) is (or passes through) a symlink; refused")
            }
        }
        if directory {
            if type != .typeDirectory { throw HarnessError("\(place): \(relative) is not a folder") }
        } else if type != .typeRegular {
            throw HarnessError("\(place): \(relative) is not a regular file")
        }
        return path
    }

    /// The size of the regular file `file` without following a symlink.
    public static func size(_ file: URL) throws -> Int64 {
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: file.path),
              let size = attrs[.size] as? NSNumber else {
            throw HarnessError("\(file.path) is missing")
        }
        return size.int64Value
    }
}
