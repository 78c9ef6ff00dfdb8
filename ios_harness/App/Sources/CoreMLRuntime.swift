// HarnessCore's Runtime for Core ML (docs/bundle.md sections 3 and 4):
// - compile: MLModel.compileModel(at:) of the bundle's .mlpackage, timed by the harness as compile_ms;
// - load: MLModel(contentsOf: compiled, configuration:) with computeUnits from the setting (cpu_only -> .cpuOnly,
//   cpu_and_gpu -> .cpuAndGPU, cpu_and_ne -> .cpuAndNeuralEngine, all -> .all), timed as load_ms;
// - run: image inputs as a kCVPixelFormatType_32BGRA CVPixelBuffer built from the bundle's NCHW uint8 RGB (alpha
//   255), tensor inputs as a float32 MLMultiArray; an `NC` output read as floats (float16 / double / int32 converted,
//   strides honoured), a `classifier` output's probability dictionary read as a vector in
//   MLModelDescription.classLabels order;
// - details: on iOS 17.4+ the MLComputePlan of the compiled model under the run's compute units (the preferred and
//   supported devices of every operation, with its estimated cost), counted per device.
import CoreML
import CoreVideo
import Foundation
import HarnessCore

final class CoreMLRuntime: Runtime {
    static let settings = ["cpu_only", "cpu_and_gpu", "cpu_and_ne", "all"]

    let name = "Core ML"
    /// Core ML has no version of its own: it is the OS's
    var version: String? { "iOS \(DeviceFacts.osVersion)" }
    var compiles: Bool { true }

    /// the compiled model of the run in progress (compile, then load, in one run)
    private var compiled: URL?

    static func computeUnits(_ setting: String) -> MLComputeUnits? {
        switch setting {
        case "cpu_only": return .cpuOnly
        case "cpu_and_gpu": return .cpuAndGPU
        case "cpu_and_ne": return .cpuAndNeuralEngine
        case "all": return .all
        default: return nil
        }
    }

    func isAvailable(_ setting: String) -> String? {
        guard CoreMLRuntime.computeUnits(setting) != nil else {
            return "\(setting) is not a Core ML setting (\(CoreMLRuntime.settings.joined(separator: ", ")))"
        }
        if #available(iOS 17.0, *) {
            let devices = MLModel.availableComputeDevices
            let hasGPU = devices.contains { if case .gpu = $0 { return true } else { return false } }
            let hasNE = devices.contains { if case .neuralEngine = $0 { return true } else { return false } }
            if setting == "cpu_and_gpu" && !hasGPU { return "this device has no GPU that Core ML can use" }
            if setting == "cpu_and_ne" && !hasNE { return "this device has no Neural Engine that Core ML can use" }
        } else if DeviceFacts.isSimulator && setting == "cpu_and_ne" {
            return "the simulator has no Neural Engine"
        }
        return nil
    }

    func compile(_ artifact: Artifact, _ setting: String) throws {
        discardCompiled()
        guard artifact.path.pathExtension == "mlpackage" || artifact.path.pathExtension == "mlmodel" else {
            throw HarnessError("\(artifact.name) is not a Core ML model (.mlpackage or .mlmodel)")
        }
        compiled = try MLModel.compileModel(at: artifact.path)
    }

    func load(_ artifact: Artifact, _ setting: String, _ threads: Int) throws -> Session {
        guard let units = CoreMLRuntime.computeUnits(setting) else {
            throw HarnessError("\(setting) is not a Core ML setting")
        }
        guard let compiled else { throw HarnessError("\(artifact.name) was not compiled before it was loaded") }
        let configuration = MLModelConfiguration()
        configuration.computeUnits = units
        let model = try MLModel(contentsOf: compiled, configuration: configuration)
        self.compiled = nil // the session owns it now, and removes it when closed
        return try CoreMLSession(artifact, model, compiled, configuration)
    }

    private func discardCompiled() {
        if let compiled { try? FileManager.default.removeItem(at: compiled) }
        compiled = nil
    }

    deinit { discardCompiled() }
}

final class CoreMLSession: Session {
    let artifact: Artifact
    let model: MLModel
    let compiledURL: URL
    let configuration: MLModelConfiguration
    let inputIsImage: Bool
    let imageFormat: OSType
    let classLabels: [String]?
    /// the inputs of each chunk, built once in `prepare` (chunk i mod chunks is fed many times)
    private var providers: [Int: MLFeatureProvider] = [:]

    init(_ artifact: Artifact, _ model: MLModel, _ compiledURL: URL, _ configuration: MLModelConfiguration) throws {
        self.artifact = artifact
        self.model = model
        self.compiledURL = compiledURL
        self.configuration = configuration
        let description = model.modelDescription
        guard let input = description.inputDescriptionsByName[artifact.input.name] else {
            throw HarnessError("\(artifact.name) has no input \(artifact.input.name) (it has: " +
                               "\(description.inputDescriptionsByName.keys.sorted().joined(separator: ", ")))")
        }
        guard description.outputDescriptionsByName[artifact.output.name] != nil else {
            throw HarnessError("\(artifact.name) has no output \(artifact.output.name) (it has: " +
                               "\(description.outputDescriptionsByName.keys.sorted().joined(separator: ", ")))")
        }
        // locals first: a class's stored properties are not read before all of them are set
        let isImage = input.type == .image
        let format = input.imageConstraint?.pixelFormatType ?? kCVPixelFormatType_32BGRA
        inputIsImage = isImage
        imageFormat = format
        if artifact.input.kind == "image" && !isImage {
            throw HarnessError("the bundle feeds \(artifact.input.name) pixels, but the model's input is not an image")
        }
        if artifact.input.kind == "tensor" && isImage {
            throw HarnessError("the bundle feeds \(artifact.input.name) a float tensor, but the model's input is an image")
        }
        if isImage && format != kCVPixelFormatType_32BGRA && format != kCVPixelFormatType_32ARGB {
            throw HarnessError("\(artifact.name)'s image input takes pixel format \(format); this harness feeds " +
                               "32BGRA or 32ARGB (RGB models)")
        }
        if artifact.output.layout == "classifier" {
            guard let labels = description.classLabels, !labels.isEmpty else {
                throw HarnessError("\(artifact.name) is not a classifier (no class labels), but the bundle reads its " +
                                   "output as one")
            }
            classLabels = labels.map { "\($0)" }
        } else {
            classLabels = nil
        }
    }

    /// Every chunk's inputs built before the first inference (untimed): `run` times the prediction alone.
    func prepare(_ chunks: [Chunk]) throws {
        for chunk in chunks where providers[chunk.index] == nil {
            providers[chunk.index] = try features(chunk)
        }
    }

    func run(_ chunkIndex: Int, _ input: Chunk) throws -> [Float] {
        let provider: MLFeatureProvider
        if let cached = providers[chunkIndex] {
            provider = cached
        } else {
            provider = try features(input)
            providers[chunkIndex] = provider
        }
        let prediction = try model.prediction(from: provider)
        guard let value = prediction.featureValue(for: artifact.output.name) else {
            throw HarnessError("the prediction has no output \(artifact.output.name)")
        }
        if let labels = classLabels {
            return try probabilities(value, labels, input.batch)
        }
        guard let array = value.multiArrayValue else {
            throw HarnessError("the output \(artifact.output.name) is not a multi-array (its type: \(value.type.rawValue))")
        }
        return try CoreMLSession.floats(array)
    }

    /// The model's inputs for one chunk.
    private func features(_ chunk: Chunk) throws -> MLFeatureProvider {
        let value: MLFeatureValue
        if inputIsImage {
            if chunk.batch != 1 {
                throw HarnessError("an image input takes one sample at a time; the artifact's batch is \(chunk.batch)")
            }
            value = MLFeatureValue(pixelBuffer: try pixelBuffer(chunk.tensor))
        } else {
            guard let floats = chunk.tensor.floats else {
                throw HarnessError("a tensor input is float32; this chunk is \(chunk.tensor.dtype)")
            }
            let array = try MLMultiArray(shape: chunk.tensor.shape.map { NSNumber(value: $0) }, dataType: .float32)
            let pointer = array.dataPointer.bindMemory(to: Float.self, capacity: floats.count)
            floats.withUnsafeBufferPointer { source in
                pointer.update(from: source.baseAddress!, count: floats.count)
            }
            value = MLFeatureValue(multiArray: array)
        }
        return try MLDictionaryFeatureProvider(dictionary: [artifact.input.name: value])
    }

    /// Sample 0 of an NCHW uint8 RGB chunk as a 32BGRA (or 32ARGB) pixel buffer, alpha 255 (docs/bundle.md section 3).
    private func pixelBuffer(_ tensor: Tensor) throws -> CVPixelBuffer {
        guard tensor.shape.count == 4, tensor.shape[1] == 3 else {
            throw HarnessError("an image input is NCHW [1, 3, H, W]; this one is \(Tensors.shapeText(tensor.shape))")
        }
        let height = tensor.shape[2]
        let width = tensor.shape[3]
        var buffer: CVPixelBuffer?
        let attributes: [String: Any] = [kCVPixelBufferIOSurfacePropertiesKey as String: [String: Any]()]
        let status = CVPixelBufferCreate(kCFAllocatorDefault, width, height, imageFormat, attributes as CFDictionary, &buffer)
        guard status == kCVReturnSuccess, let buffer else {
            throw HarnessError("cannot create a \(width)x\(height) pixel buffer (CVReturn \(status))")
        }
        CVPixelBufferLockBaseAddress(buffer, [])
        defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
        guard let base = CVPixelBufferGetBaseAddress(buffer) else {
            throw HarnessError("the pixel buffer has no memory")
        }
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        var pixels: [UInt8]
        if imageFormat == kCVPixelFormatType_32BGRA {
            pixels = try Tensors.pixels(tensor, 0, .BGRA, rowBytes: rowBytes)
        } else {
            // 32ARGB: RGBA moved one byte to the right, alpha first
            pixels = try Tensors.pixels(tensor, 0, .RGBA, rowBytes: rowBytes)
            for y in 0..<height {
                for x in 0..<width {
                    let o = y * rowBytes + x * 4
                    let (r, g, b) = (pixels[o], pixels[o + 1], pixels[o + 2])
                    pixels[o] = 255
                    pixels[o + 1] = r
                    pixels[o + 2] = g
                    pixels[o + 3] = b
                }
            }
        }
        pixels.withUnsafeBytes { source in
            base.copyMemory(from: source.baseAddress!, byteCount: min(source.count, rowBytes * height))
        }
        return buffer
    }

    /// A classifier's probability dictionary as a vector in class-label order (docs/bundle.md section 3).
    private func probabilities(_ value: MLFeatureValue, _ labels: [String], _ batch: Int) throws -> [Float] {
        if batch != 1 {
            throw HarnessError("a classifier output gives one sample at a time; the artifact's batch is \(batch)")
        }
        let dictionary = value.dictionaryValue
        if dictionary.isEmpty {
            throw HarnessError("the output \(artifact.output.name) is not a probability dictionary")
        }
        var byLabel: [String: Float] = [:]
        for (key, probability) in dictionary { byLabel["\(key)"] = probability.floatValue }
        return try labels.map { label in
            guard let p = byLabel[label] else {
                throw HarnessError("the output \(artifact.output.name) has no probability for the class \(label)")
            }
            return p
        }
    }

    /// Every value of `array` in C order as float32, whatever its data type and strides.
    static func floats(_ array: MLMultiArray) throws -> [Float] {
        let shape = array.shape.map { $0.intValue }
        let strides = array.strides.map { $0.intValue }
        let count = shape.reduce(1, *)
        var out = [Float](repeating: 0, count: count)
        if count == 0 { return out }
        // the offset (in elements) of each C-order index
        var index = [Int](repeating: 0, count: shape.count)
        func offset() -> Int { zip(index, strides).reduce(0) { $0 + $1.0 * $1.1 } }
        func advance() {
            var axis = shape.count - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < shape[axis] { return }
                index[axis] = 0
                axis -= 1
            }
        }
        let raw = array.dataPointer
        // the usual case, timed with every inference: float32 in C order, one copy
        var contiguous = true
        var expected = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            if shape[axis] > 1 && strides[axis] != expected { contiguous = false }
            expected *= shape[axis]
        }
        if contiguous && array.dataType == .float32 {
            let p = raw.bindMemory(to: Float.self, capacity: count)
            out.withUnsafeMutableBufferPointer { target in target.baseAddress!.update(from: p, count: count) }
            return out
        }
        switch array.dataType {
        case .float32:
            let p = raw.bindMemory(to: Float.self, capacity: 1)
            for k in 0..<count { out[k] = p[offset()]; advance() }
        case .double:
            let p = raw.bindMemory(to: Double.self, capacity: 1)
            for k in 0..<count { out[k] = Float(p[offset()]); advance() }
        case .int32:
            let p = raw.bindMemory(to: Int32.self, capacity: 1)
            for k in 0..<count { out[k] = Float(p[offset()]); advance() }
        case .float16:
            #if arch(arm64)
            let p = raw.bindMemory(to: Float16.self, capacity: 1)
            for k in 0..<count { out[k] = Float(p[offset()]); advance() }
            #else
            // no Float16 type on x86_64 (an Intel Mac's simulator): NSNumber, slower but the same values
            for k in 0..<count {
                out[k] = array[index.map { NSNumber(value: $0) }].floatValue
                advance()
            }
            #endif
        @unknown default:
            for k in 0..<count {
                out[k] = array[index.map { NSNumber(value: $0) }].floatValue
                advance()
            }
        }
        return out
    }

    func details() -> JsonObject? {
        var facts = JsonObject()
        facts["compute_units"] = .string(CoreMLSession.unitsName(configuration.computeUnits))
        if #available(iOS 17.4, *) {
            facts["compute_plan"] = ComputePlanReader.read(compiledURL, configuration)
        } else {
            facts["compute_plan"] = .string("MLComputePlan needs iOS 17.4 (this is iOS \(DeviceFacts.osVersion))")
        }
        return facts
    }

    static func unitsName(_ units: MLComputeUnits) -> String {
        switch units {
        case .cpuOnly: return "cpuOnly"
        case .cpuAndGPU: return "cpuAndGPU"
        case .cpuAndNeuralEngine: return "cpuAndNeuralEngine"
        case .all: return "all"
        @unknown default: return "unknown (\(units.rawValue))"
        }
    }

    func close() {
        providers.removeAll()
        try? FileManager.default.removeItem(at: compiledURL)
    }
}

/// Core ML's compute plan (iOS 17.4+): where each operation of the model would run under the run's compute units.
@available(iOS 17.4, *)
enum ComputePlanReader {
    /// A box the plan is handed over in from the async loader (the harness runs on a background thread).
    private final class Box: @unchecked Sendable {
        var plan: MLComputePlan?
        var error: Error?
    }

    static func read(_ compiled: URL, _ configuration: MLModelConfiguration) -> JsonValue {
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let url = compiled
        let config = configuration
        Task.detached {
            do {
                box.plan = try await MLComputePlan.load(contentsOf: url, configuration: config)
            } catch {
                box.error = error
            }
            done.signal()
        }
        if done.wait(timeout: .now() + 120) == .timedOut {
            return .string("the compute plan did not load within 120 s")
        }
        guard let plan = box.plan else {
            return .string("the compute plan did not load: \(HarnessError.describe(box.error ?? HarnessError("no plan")))")
        }
        var operations: [JsonValue] = []
        var counts: [String: Int] = [:]
        switch plan.modelStructure {
        case let .program(program):
            for (functionName, function) in program.functions.sorted(by: { $0.key < $1.key }) {
                walk(function.block, plan, functionName, &operations, &counts)
            }
        case let .neuralNetwork(network):
            for layer in network.layers {
                var entry = JsonObject()
                entry["layer"] = .string(layer.name)
                entry["type"] = .string(layer.type)
                if let usage = plan.deviceUsage(for: layer) {
                    let preferred = deviceName(usage.preferred)
                    entry["preferred"] = .string(preferred)
                    entry["supported"] = .array(usage.supported.map { .string(deviceName($0)) })
                    counts[preferred, default: 0] += 1
                }
                operations.append(.object(entry))
            }
        default:
            return .string("the model's structure is neither an ML program nor a neural network; no plan per operation")
        }
        var result = JsonObject()
        result["operations"] = .int(Int64(operations.count))
        var preferred = JsonObject()
        for key in counts.keys.sorted() { preferred[key] = .int(Int64(counts[key]!)) }
        result["preferred_device_counts"] = .object(preferred)
        result["per_operation"] = .array(operations)
        return .object(result)
    }

    private static func walk(_ block: MLModelStructure.Program.Block, _ plan: MLComputePlan, _ function: String,
                             _ operations: inout [JsonValue], _ counts: inout [String: Int]) {
        for operation in block.operations {
            var entry = JsonObject()
            entry["function"] = .string(function)
            entry["op"] = .string(operation.operatorName)
            if let output = operation.outputs.first { entry["output"] = .string(output.name) }
            if let usage = plan.deviceUsage(for: operation) {
                let preferred = deviceName(usage.preferred)
                entry["preferred"] = .string(preferred)
                entry["supported"] = .array(usage.supported.map { .string(deviceName($0)) })
                counts[preferred, default: 0] += 1
            }
            if let cost = plan.estimatedCost(of: operation) {
                entry["cost"] = .double(cost.weight)
            }
            operations.append(.object(entry))
            for inner in operation.blocks {
                walk(inner, plan, function, &operations, &counts)
            }
        }
    }

    private static func deviceName(_ device: MLComputeDevice) -> String {
        switch device {
        case .cpu: return "cpu"
        case .gpu: return "gpu"
        case .neuralEngine: return "neural_engine"
        @unknown default: return "other"
        }
    }
}
