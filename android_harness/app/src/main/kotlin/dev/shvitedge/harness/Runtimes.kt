package dev.shvitedge.harness

import android.os.Build
import dev.shvitedge.harness.core.Artifact
import dev.shvitedge.harness.core.Chunk
import dev.shvitedge.harness.core.HarnessError
import dev.shvitedge.harness.core.Runtime
import dev.shvitedge.harness.core.Session
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Delegate
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.gpu.GpuDelegateFactory
import org.tensorflow.lite.nnapi.NnApiDelegate
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * LiteRT's Interpreter under the settings of the `android-arm64-tflite` profile: `xnnpack` (CPU, XNNPACK, the
 * bundle's threads), `gpu` (GPU delegate, fp32), `gpu-fp16` (GPU delegate, fp16 allowed), `nnapi` (NNAPI delegate,
 * where the OS has it; NNAPI is deprecated from Android 15).
 */
class LiteRtRuntime : Runtime {
    override val name = "LiteRT"
    override val version: String = "litert ${BuildConfig.LITERT_VERSION}" + try {
        // the runtime's own version, as the native library reports it
        " (TensorFlow Lite runtime ${org.tensorflow.lite.TensorFlowLite.runtimeVersion()})"
    } catch (e: Throwable) {
        ""
    }

    private val gpuSupported: Boolean by lazy {
        try {
            val list = CompatibilityList()
            try { list.isDelegateSupportedOnThisDevice } finally { list.close() }
        } catch (e: Throwable) {
            false
        }
    }

    override fun isAvailable(setting: String): String? = when (setting) {
        "xnnpack" -> null
        "gpu", "gpu-fp16" -> if (gpuSupported) null else
            "the LiteRT GPU delegate does not support this device's GPU (CompatibilityList)"
        "nnapi" -> nnapiProblem()
        else -> "LiteRT has no setting ${HarnessError.quoted(setting)} (this app runs xnnpack, gpu, gpu-fp16, nnapi)"
    }

    private fun nnapiProblem(): String? {
        if (Build.VERSION.SDK_INT < 27) return "NNAPI needs Android 8.1 (API 27); this is API ${Build.VERSION.SDK_INT}"
        return try {
            NnApiDelegate().close()
            null
        } catch (e: Throwable) {
            "NNAPI is not available on this device (${HarnessError.describe(e)})"
        }
    }

    override fun precisionFlags(setting: String): List<String> =
        if (setting == "gpu-fp16") listOf("allow_fp16") else emptyList()

    override fun load(artifact: Artifact, setting: String, threads: Int): Session {
        val options = Interpreter.Options().setNumThreads(threads)
        val details = LinkedHashMap<String, Any?>()
        var delegate: Delegate? = null
        when (setting) {
            "xnnpack" -> {
                options.setUseXNNPACK(true)
                details["delegate"] = "XNNPACK (CPU)"
            }
            "gpu", "gpu-fp16" -> {
                val gpuOptions = GpuDelegateFactory.Options()
                gpuOptions.setPrecisionLossAllowed(setting == "gpu-fp16")
                delegate = GpuDelegate(gpuOptions)
                options.addDelegate(delegate)
                options.setUseXNNPACK(false)
                details["delegate"] = if (setting == "gpu") "GPU (fp32)" else "GPU (fp16 allowed)"
            }
            "nnapi" -> {
                delegate = NnApiDelegate()
                options.addDelegate(delegate)
                options.setUseXNNPACK(false)
                details["delegate"] = "NNAPI"
                if (Build.VERSION.SDK_INT >= 35) details["nnapi"] = "deprecated since Android 15 (API 35)"
            }
            else -> throw HarnessError("LiteRT has no setting $setting")
        }
        val interpreter = try {
            Interpreter(artifact.path, options)
        } catch (e: Throwable) {
            delegate?.let { (it as? AutoCloseable)?.close() }
            throw e
        }
        return LiteRtSession(interpreter, delegate, artifact, details)
    }
}

private class LiteRtSession(
    val interpreter: Interpreter,
    val delegate: Delegate?,
    val artifact: Artifact,
    val details: MutableMap<String, Any?>,
) : Session {
    private val outputIndex: Int
    private val output: ByteBuffer
    private var inputs: List<ByteBuffer> = emptyList()

    init {
        // the output the bundle names, else the only one
        val names = (0 until interpreter.outputTensorCount).map { interpreter.getOutputTensor(it).name() }
        outputIndex = names.indexOf(artifact.output.name).takeIf { it >= 0 }
            ?: if (names.size == 1) 0 else throw HarnessError(
                "the model has no output ${artifact.output.name} (it has ${names.joinToString(", ")})")
        details["output_tensor"] = names[outputIndex]
        val input = interpreter.getInputTensor(0)
        if (input.dataType() != DataType.FLOAT32) {
            throw HarnessError("the model's input is ${input.dataType()}; the bundle feeds float32")
        }
        val wanted = intArrayOf(artifact.batch) + input.shape().drop(1).toIntArray()
        if (!input.shape().contentEquals(wanted)) interpreter.resizeInput(0, wanted)
        interpreter.allocateTensors()
        val out = interpreter.getOutputTensor(outputIndex)
        if (out.dataType() != DataType.FLOAT32) {
            throw HarnessError("the model's output ${out.name()} is ${out.dataType()}; this harness reads float32")
        }
        output = ByteBuffer.allocateDirect(out.numBytes()).order(ByteOrder.nativeOrder())
    }

    override fun prepare(chunks: List<Chunk>) {
        val want = interpreter.getInputTensor(0).numBytes()
        inputs = chunks.map { chunk ->
            val values = chunk.tensor.floats ?: throw HarnessError("a LiteRT model takes float32 input tensors")
            if (values.size * 4 != want) {
                throw HarnessError("the model's input takes ${want / 4} values per inference; a chunk of the bundle holds " +
                    "${values.size} (shape ${chunk.tensor.shape})")
            }
            ByteBuffer.allocateDirect(values.size * 4).order(ByteOrder.nativeOrder()).also {
                it.asFloatBuffer().put(values)
            }
        }
    }

    override fun run(chunkIndex: Int, input: Chunk): FloatArray {
        val buffer = inputs.getOrNull(chunkIndex) ?: throw HarnessError("chunk $chunkIndex was not prepared")
        buffer.rewind()
        output.rewind()
        interpreter.runForMultipleInputsOutputs(arrayOf<Any>(buffer), mapOf(outputIndex to output))
        output.rewind()
        val values = FloatArray(output.capacity() / 4)
        output.asFloatBuffer().get(values)
        return values
    }

    override fun details(): Map<String, Any?> = details

    override fun close() {
        interpreter.close()
        (delegate as? AutoCloseable)?.close()
    }
}

/** ExecuTorch's Module (the .pte's own delegates, XNNPACK for the android-arm64-executorch profile): `xnnpack`. */
class ExecuTorchRuntime : Runtime {
    override val name = "ExecuTorch"
    override val version: String = "executorch-android ${BuildConfig.EXECUTORCH_VERSION}"

    override fun isAvailable(setting: String): String? =
        if (setting == "xnnpack") null
        else "ExecuTorch runs the .pte's own delegates; this app has no setting ${HarnessError.quoted(setting)} (it runs xnnpack)"

    override fun load(artifact: Artifact, setting: String, threads: Int): Session {
        val details = LinkedHashMap<String, Any?>()
        val path = artifact.path.absolutePath
        // Module.load(path, mode, numThreads) exists in newer releases only: use it when it is there
        val module = try {
            val load = Module::class.java.getMethod("load", String::class.java, Int::class.javaPrimitiveType, Int::class.javaPrimitiveType)
            details["threads_applied"] = true
            load.invoke(null, path, Module.LOAD_MODE_MMAP, threads) as Module
        } catch (e: NoSuchMethodException) {
            details["threads_applied"] = false
            Module.load(path, Module.LOAD_MODE_MMAP)
        } catch (e: java.lang.reflect.InvocationTargetException) {
            throw e.targetException
        }
        // methods load lazily: load forward now, so load_ms is the load and first_inference_ms the inference
        val error = module.loadMethod("forward")
        if (error != 0) {
            module.destroy()
            throw HarnessError("ExecuTorch could not load the method forward (error 0x${Integer.toHexString(error)})")
        }
        try {
            // Module.getMethodMetadata (newer releases): the backends the method delegates to, e.g. XnnpackBackend
            val metadata = Module::class.java.getMethod("getMethodMetadata", String::class.java).invoke(module, "forward")
            @Suppress("UNCHECKED_CAST")
            val backends = metadata.javaClass.getMethod("getBackends").invoke(metadata) as Array<String>
            details["backends"] = backends.toList()
        } catch (e: Throwable) {
            details["backends"] = "unknown (this ExecuTorch has no method metadata)"
        }
        return ExecuTorchSession(module, details)
    }
}

private class ExecuTorchSession(val module: Module, val details: Map<String, Any?>) : Session {
    private var inputs: List<EValue> = emptyList()

    override fun prepare(chunks: List<Chunk>) {
        inputs = chunks.map { chunk ->
            val values = chunk.tensor.floats ?: throw HarnessError("an ExecuTorch model takes float32 input tensors")
            EValue.from(org.pytorch.executorch.Tensor.fromBlob(values, chunk.tensor.shape.map { it.toLong() }.toLongArray()))
        }
    }

    override fun run(chunkIndex: Int, input: Chunk): FloatArray {
        val value = inputs.getOrNull(chunkIndex) ?: throw HarnessError("chunk $chunkIndex was not prepared")
        val outputs = module.forward(value)
        if (outputs.isEmpty()) throw HarnessError("ExecuTorch returned no output (the module was destroyed, or forward failed)")
        return outputs[0].toTensor().dataAsFloatArray
    }

    override fun details(): Map<String, Any?> = details

    override fun close() = module.destroy()
}
