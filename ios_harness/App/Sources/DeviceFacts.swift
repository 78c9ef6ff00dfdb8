// What the device says about itself: the result document's `device`, and HarnessCore's DeviceProbe (thermal state
// before/after each run, the process's peak memory footprint).
import Foundation
import HarnessCore

enum DeviceFacts {
    /// The hardware model identifier, e.g. `iPhone13,2` (on a simulator: the simulated device's).
    static var modelIdentifier: String {
        if let simulated = ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"], !simulated.isEmpty {
            return simulated
        }
        var size = 0
        guard sysctlbyname("hw.machine", nil, &size, nil, 0) == 0, size > 0 else { return "unknown" }
        var bytes = [CChar](repeating: 0, count: size)
        guard sysctlbyname("hw.machine", &bytes, &size, nil, 0) == 0 else { return "unknown" }
        return String(cString: bytes)
    }

    static var isSimulator: Bool {
        #if targetEnvironment(simulator)
        return true
        #else
        return false
        #endif
    }

    static var osVersion: String {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        return "\(v.majorVersion).\(v.minorVersion).\(v.patchVersion)"
    }

    static var arch: String {
        #if arch(arm64)
        return "arm64"
        #elseif arch(x86_64)
        return "x86_64"
        #else
        return "unknown"
        #endif
    }

    static var appVersion: String {
        (Foundation.Bundle.main.object(forInfoDictionaryKey: "CFBundleShortVersionString") as? String) ?? "0.0.0"
    }

    static var appBuild: String {
        (Foundation.Bundle.main.object(forInfoDictionaryKey: "CFBundleVersion") as? String) ?? "0"
    }

    /// The chip of the common iPhone and iPad model identifiers (nil when not in the table: `soc` is optional).
    static func soc(_ model: String) -> String? {
        let table: [(String, String)] = [
            ("iPhone11,", "Apple A12 Bionic"), ("iPhone12,", "Apple A13 Bionic"), ("iPhone13,", "Apple A14 Bionic"),
            ("iPhone14,2", "Apple A15 Bionic"), ("iPhone14,3", "Apple A15 Bionic"), ("iPhone14,4", "Apple A15 Bionic"),
            ("iPhone14,5", "Apple A15 Bionic"), ("iPhone14,6", "Apple A15 Bionic"), ("iPhone14,7", "Apple A15 Bionic"),
            ("iPhone14,8", "Apple A15 Bionic"), ("iPhone15,2", "Apple A16 Bionic"), ("iPhone15,3", "Apple A16 Bionic"),
            ("iPhone15,4", "Apple A16 Bionic"), ("iPhone15,5", "Apple A16 Bionic"), ("iPhone16,", "Apple A17 Pro"),
            ("iPhone17,", "Apple A18"),
        ]
        for (prefix, chip) in table where model.hasPrefix(prefix) {
            if prefix.hasSuffix(",") || model == prefix { return chip }
        }
        return nil
    }

    /// The result document's `device`.
    static func deviceInfo() -> DeviceInfo {
        let model = modelIdentifier
        return DeviceInfo(model: isSimulator ? "\(model) (simulator)" : model, os: "iOS", manufacturer: "Apple",
                          osVersion: osVersion, soc: soc(model), arch: arch, appVersion: appVersion,
                          cpus: ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The result document's `harness`.
    static func harnessInfo() -> HarnessInfo {
        HarnessInfo("shvit-edge ios harness", appVersion, appBuild)
    }

    /// ProcessInfo.thermalState as docs/bundle.md names it.
    static func thermalState() -> String {
        switch ProcessInfo.processInfo.thermalState {
        case .nominal: return "nominal"
        case .fair: return "fair"
        case .serious: return "serious"
        case .critical: return "critical"
        @unknown default: return "unknown"
        }
    }

    /// (the process's physical footprint now, its peak so far) in bytes, from task_vm_info; nil if unavailable.
    static func footprint() -> (now: UInt64, peak: UInt64)? {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<integer_t>.size)
        let result = withUnsafeMutablePointer(to: &info) { pointer in
            pointer.withMemoryRebound(to: integer_t.self, capacity: Int(count)) { rebound in
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), rebound, &count)
            }
        }
        guard result == KERN_SUCCESS else { return nil }
        // ledger_phys_footprint_peak is in revision 2 of the structure (iOS 11 and later); 0 when not filled in
        let peak = max(info.phys_footprint, info.ledger_phys_footprint_peak)
        return (info.phys_footprint, peak)
    }
}

/// HarnessCore's DeviceProbe on iOS: ProcessInfo.thermalState, and the process's peak physical footprint
/// (task_vm_info's ledger_phys_footprint_peak: the peak since the process started; iOS cannot reset it, so a run's
/// value is the peak of every run so far; each run's `details` also has the footprint before and after it).
final class IOSDeviceProbe: DeviceProbe {
    func thermal() -> String? { DeviceFacts.thermalState() }

    func peakMemoryMb() -> Double? {
        guard let footprint = DeviceFacts.footprint() else { return nil }
        return Double(footprint.peak) / 1_048_576.0
    }

    func beforeRun() {}

    func details(_ phase: String) -> JsonObject {
        var facts = JsonObject()
        if let footprint = DeviceFacts.footprint() {
            facts["phys_footprint_mb_\(phase)"] = .double(Double(footprint.now) / 1_048_576.0)
        }
        facts["low_power_mode_\(phase)"] = .bool(ProcessInfo.processInfo.isLowPowerModeEnabled)
        return facts
    }
}
