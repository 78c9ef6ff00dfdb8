"""The NumPy kernels of the ML-program interpreter (:mod:`.sim`), one per MIL op type.

Semantics follow coremltools' op definitions (``coremltools.converters.mil.mil.ops.defs``, iOS15 to iOS18);
the kernels are written here because the ops' own ``value_inference`` misses conv, batch_norm, the pools and
classify. Every kernel computes in float32 (integers stay integers) and returns its outputs as a tuple; the
interpreter then rounds each output to the dtype the program declares (float16 for an fp16 program).

A kernel is ``f(ctx, **inputs)``: ``inputs`` are the op's inputs by name (NumPy arrays, or Python values for
strings and lists), with the op's defaults filled in; ``ctx`` says whether float16 accumulation is emulated
(:class:`Context`). A kernel raises :class:`Unsupported` for a form of its op it does not implement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: op type -> kernel
KERNELS: dict[str, Callable] = {}
#: float16 accumulation: partial sums of this many products are added in float32, then accumulated in float16
#: (a GPU adds SIMD-group partial sums this way; the exact order on a device is not known)
FP16_ACCUMULATION_CHUNK = 32


class Unsupported(Exception):
    """A form of an op that the interpreter does not implement."""


@dataclass(frozen=True)
class Context:
    #: emulate float16 accumulation in this op's reductions (conv, linear, matmul, reduce_sum/mean)
    fp16_accumulation: bool = False


def kernel(*names: str):
    def register(fn):
        for name in names:
            KERNELS[name] = fn
        return fn
    return register


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _accumulate_fp16(partials: np.ndarray, axis: int) -> np.ndarray:
    """Sum ``partials`` along ``axis`` in float16, one addition at a time (each sum rounded)."""
    partials = np.moveaxis(partials, axis, 0).astype(np.float16)
    total = partials[0].copy()
    for part in partials[1:]:
        total = (total.astype(np.float32) + part.astype(np.float32)).astype(np.float16)
    return total.astype(np.float32)


def _matmul(a: np.ndarray, b: np.ndarray, ctx: Context) -> np.ndarray:
    """``a @ b`` (batched, broadcast), with float16 accumulation over K emulated when asked."""
    if not ctx.fp16_accumulation or a.shape[-1] <= FP16_ACCUMULATION_CHUNK:
        out = np.matmul(a, b)
        return out
    k = a.shape[-1]
    parts = [np.matmul(a[..., i:i + FP16_ACCUMULATION_CHUNK], b[..., i:i + FP16_ACCUMULATION_CHUNK, :])
             for i in range(0, k, FP16_ACCUMULATION_CHUNK)]
    return _accumulate_fp16(np.stack(parts), 0)


def _sum(x: np.ndarray, axes, keepdims: bool, ctx: Context) -> np.ndarray:
    if not ctx.fp16_accumulation:
        return np.sum(x, axis=axes, keepdims=keepdims, dtype=np.float32)
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, rest + list(axes)).reshape([x.shape[a] for a in rest] + [-1])
    n = moved.shape[-1]
    pad = (-n) % FP16_ACCUMULATION_CHUNK
    if pad:
        moved = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,), np.float32)], axis=-1)
    chunks = moved.reshape(moved.shape[:-1] + (-1, FP16_ACCUMULATION_CHUNK)).sum(-1, dtype=np.float32)
    total = _accumulate_fp16(chunks, -1)
    if keepdims:
        total = total.reshape([1 if a in axes else x.shape[a] for a in range(x.ndim)])
    return total


# --- elementwise ---------------------------------------------------------------------------------------------

_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum, "floor_div": np.floor_divide, "mod": np.mod,
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal, "logical_and": np.logical_and,
    "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}


def _binary(fn):
    def run(ctx, x, y):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            x, y = f32(x), f32(y)
        with np.errstate(all="ignore"):
            return (fn(x, y),)
    return run


for _name, _fn in _BINARY.items():
    KERNELS[_name] = _binary(_fn)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to within 1.2e-7 (Numerical Recipes' ``erfc`` Chebyshev fit), in float64 then float32."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(np.float32)


_UNARY = {
    "abs": np.abs, "acos": np.arccos, "asin": np.arcsin, "atan": np.arctan, "atanh": np.arctanh,
    "ceil": np.ceil, "cos": np.cos, "cosh": np.cosh, "exp": np.exp, "exp2": np.exp2, "floor": np.floor,
    "round": np.rint, "sign": np.sign, "sin": np.sin, "sinh": np.sinh, "sqrt": np.sqrt, "square": np.square,
    "tan": np.tan, "tanh": np.tanh, "erf": _erf, "logical_not": np.logical_not,
    "relu": lambda x: np.maximum(x, np.float32(0)), "relu6": lambda x: np.clip(x, np.float32(0), np.float32(6)),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "silu": lambda x: x / (1.0 + np.exp(-x)),
    "softsign": lambda x: x / (1.0 + np.abs(x)), "softplus": lambda x: np.logaddexp(np.float32(0), x),
    "identity": lambda x: x,
}


def _unary(fn):
    def run(ctx, x):
        x = np.asarray(x)
        with np.errstate(all="ignore"):
            return (fn(f32(x) if x.dtype.kind == "f" else x),)
    return run


for _name, _fn in _UNARY.items():
    KERNELS[_name] = _unary(_fn)


@kernel("rsqrt")
def _rsqrt(ctx, x, epsilon=1e-12):
    with np.errstate(all="ignore"):
        return (1.0 / np.sqrt(f32(x) + np.float32(epsilon)),)


@kernel("inverse")
def _inverse(ctx, x, epsilon=1e-4):
    with np.errstate(all="ignore"):
        return (1.0 / (f32(x) + np.float32(epsilon)),)


@kernel("log")
def _log(ctx, x, epsilon=1e-45):
    with np.errstate(all="ignore"):
        return (np.log(f32(x) + np.float32(epsilon)),)


@kernel("clip")
def _clip(ctx, x, alpha, beta):
    return (np.minimum(np.maximum(f32(x), np.float32(alpha)), np.float32(beta)),)


@kernel("threshold")
def _threshold(ctx, x, alpha):
    return (np.maximum(f32(x), np.float32(alpha)),)


@kernel("leaky_relu")
def _leaky_relu(ctx, x, alpha=0.01):
    x = f32(x)
    return (np.where(x >= 0, x, x * np.float32(alpha)),)


@kernel("elu")
def _elu(ctx, x, alpha=1.0):
    x = f32(x)
    with np.errstate(all="ignore"):
        return (np.where(x > 0, x, np.float32(alpha) * (np.exp(x) - 1)),)


@kernel("prelu")
def _prelu(ctx, x, alpha):
    x = f32(x)
    a = f32(alpha).reshape((1, -1) + (1,) * (x.ndim - 2))
    return (np.where(x >= 0, x, x * a),)


@kernel("sigmoid_hard")
def _sigmoid_hard(ctx, x, alpha=0.2, beta=0.5):
    return (np.clip(np.float32(alpha) * f32(x) + np.float32(beta), 0, 1),)


@kernel("linear_activation")
def _linear_activation(ctx, x, alpha, beta=0.0):
    return (np.float32(alpha) * f32(x) + np.float32(beta),)


@kernel("scaled_tanh")
def _scaled_tanh(ctx, x, alpha=1.0, beta=1.0):
    return (np.float32(alpha) * np.tanh(np.float32(beta) * f32(x)),)


@kernel("clamped_relu")
def _clamped_relu(ctx, x, alpha, beta):
    x = f32(x)
    return (np.minimum(np.where(x >= 0, x, x * np.float32(alpha)), np.float32(beta)),)


@kernel("thresholded_relu")
def _thresholded_relu(ctx, x, alpha=1.0):
    x = f32(x)
    return (np.where(x > alpha, x, np.float32(0)),)


@kernel("gelu")
def _gelu(ctx, x, mode="EXACT"):
    x = f32(x)
    with np.errstate(all="ignore"):
        if mode == "EXACT":
            return (0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0)))),)
        if mode == "TANH_APPROXIMATION":
            return (0.5 * x * (1.0 + np.tanh(np.float32(np.sqrt(2 / np.pi)) * (x + 0.044715 * x ** 3))),)
        if mode == "SIGMOID_APPROXIMATION":
            return (x / (1.0 + np.exp(-1.702 * x)),)
    raise Unsupported(f"gelu mode {mode!r}")


@kernel("softmax")
def _softmax(ctx, x, axis=-1):
    x = f32(x)
    with np.errstate(all="ignore"):
        e = np.exp(x - np.max(x, axis=int(axis), keepdims=True))
        return (e / np.sum(e, axis=int(axis), keepdims=True),)


@kernel("select")
def _select(ctx, cond, a, b):
    return (np.where(np.asarray(cond).astype(bool), a, b),)


_DTYPES = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int8": np.int8, "uint8": np.uint8,
           "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


@kernel("cast")
def _cast(ctx, x, dtype):
    if dtype not in _DTYPES:
        raise Unsupported(f"cast to {dtype!r}")
    x = np.asarray(x)
    if np.dtype(_DTYPES[dtype]).kind in "iu" and x.dtype.kind == "f":
        x = np.trunc(x)  # towards zero, as a C cast
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float16: inf, as on a device
        return (x.astype(_DTYPES[dtype]),)


# --- linear algebra ------------------------------------------------------------------------------------------

@kernel("linear")
def _linear(ctx, x, weight, bias=None):
    out = _matmul(f32(x), f32(weight).T, ctx)
    return (out if bias is None else out + f32(bias),)


@kernel("matmul")
def _matmul_op(ctx, x, y, transpose_x=False, transpose_y=False):
    x, y = f32(x), f32(y)
    x1, y1 = x.ndim == 1, y.ndim == 1
    if x1:
        x = x[None, :]
    elif transpose_x:
        x = np.swapaxes(x, -1, -2)
    if y1:
        y = y[:, None]
    elif transpose_y:
        y = np.swapaxes(y, -1, -2)
    out = _matmul(x, y, ctx)
    if x1:
        out = out[..., 0, :]
    if y1:
        out = out[..., 0]
    return (out,)


# --- convolution and pooling ---------------------------------------------------------------------------------

def _padding(pad_type: str, pad, spatial, kernel, strides, dilations, ceil_mode=False) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis."""
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        pad = [int(p) for p in (pad if pad is not None else [0] * (2 * n))]
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if pad_type == "same" else (big, small))
        return out
    raise Unsupported(f"pad_type {pad_type!r}")


def _windows(x: np.ndarray, kernel, strides, dilations, pads, value=0.0, ceil_mode=False, beyond=None):
    """(view of shape (N, C, *out_spatial, *kernel), out_spatial) over ``x`` (N, C, *spatial) padded with
    ``value``; the windows ``ceil_mode`` adds past the padding read ``beyond`` (default ``value``)."""
    extra = []
    for size, k, s, d, (b, e) in zip(x.shape[2:], kernel, strides, dilations, pads, strict=True):
        span = (k - 1) * d + 1
        if ceil_mode:  # one more window where it would start inside the input (or its begin padding)
            total = size + b + e - span
            out = -(-total // s) + 1
            if (out - 1) * s >= size + b:
                out -= 1
            extra.append(max((out - 1) * s + span - (size + b + e), 0))
        else:
            extra.append(0)
    widths = [(0, 0), (0, 0)] + list(pads)
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, constant_values=value)
    if any(extra):
        x = np.pad(x, [(0, 0), (0, 0)] + [(0, x_) for x_ in extra],
                   constant_values=value if beyond is None else beyond)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    view = np.lib.stride_tricks.sliding_window_view(x, spans, axis=tuple(range(2, x.ndim)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + \
        tuple(slice(None, None, d) for d in dilations)
    view = view[index]
    return view, view.shape[2:2 + len(kernel)]


def _as_2d(x: np.ndarray, weight: np.ndarray | None = None):
    """A 1-D conv/pool as 2-D (a height of 1)."""
    return x[:, :, None, :], (None if weight is None else weight[:, :, None, :])


@kernel("conv")
def _conv(ctx, x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    x, w = f32(x), f32(weight)
    one_d = x.ndim == 3
    n_spatial = x.ndim - 2
    strides = [int(s) for s in (strides if strides is not None else [1] * n_spatial)]
    dilations = [int(d) for d in (dilations if dilations is not None else [1] * n_spatial)]
    pads = _padding(str(pad_type), pad, x.shape[2:], w.shape[2:], strides, dilations)
    if one_d:
        x, w = _as_2d(x, w)
        strides, dilations, pads = [1] + strides, [1] + dilations, [(0, 0)] + pads
    if x.ndim != 4:
        raise Unsupported(f"conv over {x.ndim - 2} spatial dimensions")
    groups = int(groups)
    n, c = x.shape[:2]
    cout, cg, kh, kw = w.shape
    if cg * groups != c or cout % groups:
        raise ValueError(f"conv: weight {w.shape} with {groups} groups does not fit an input of {c} channels")
    if kh == kw == 1 and strides == [1, 1] and all(p == (0, 0) for p in pads) and groups == 1:
        out = _matmul(w[:, :, 0, 0][None], x.reshape(n, c, -1), ctx).reshape(n, cout, *x.shape[2:])
    elif groups == c and cg == 1:  # depthwise (channel multiplier cout // c)
        view, (ho, wo) = _windows(x, (kh, kw), strides, dilations, pads)
        mult = cout // c
        if mult > 1:
            view = np.repeat(view, mult, axis=1)
        taps = [view[..., i, j] * w[None, :, 0, i, j, None, None] for i in range(kh) for j in range(kw)]
        if ctx.fp16_accumulation:
            out = _accumulate_fp16(np.stack(taps), 0)
        else:
            out = taps[0].copy()
            for tap in taps[1:]:
                out += tap
    else:
        view, (ho, wo) = _windows(x, (kh, kw), strides, dilations, pads)
        outs = []
        for g in range(groups):  # im2col per group: (N, Ho*Wo, Cg*kh*kw) @ (Cg*kh*kw, Cout/g)
            cols = view[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n, ho * wo, cg * kh * kw)
            wg = w[g * (cout // groups):(g + 1) * (cout // groups)].reshape(cout // groups, -1)
            outs.append(_matmul(cols, wg.T[None], ctx).transpose(0, 2, 1).reshape(n, cout // groups, ho, wo))
        out = np.concatenate(outs, axis=1) if groups > 1 else outs[0]
    if bias is not None:
        out = out + f32(bias).reshape(1, -1, 1, 1)
    return (out[:, :, 0, :] if one_d else out,)


def _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, reduce, value):
    x = f32(x)
    one_d = x.ndim == 3
    kernel_sizes = [int(k) for k in kernel_sizes]
    strides = [int(s) for s in (strides if strides is not None else [1] * len(kernel_sizes))]
    pads = _padding(str(pad_type), pad, x.shape[2:], kernel_sizes, strides, [1] * len(kernel_sizes))
    if one_d:
        x = x[:, :, None, :]
        kernel_sizes, strides, pads = [1] + kernel_sizes, [1] + strides, [(0, 0)] + pads
    if x.ndim != 4:
        raise Unsupported(f"pooling over {x.ndim - 2} spatial dimensions")
    view, _ = _windows(x, kernel_sizes, strides, [1, 1], pads, value=value, ceil_mode=bool(ceil_mode))
    out = reduce(view, x, kernel_sizes, strides, pads)
    return out[:, :, 0, :] if one_d else out


@kernel("max_pool")
def _max_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    return (_pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode,
                  lambda view, *_: view.max(axis=(-2, -1)), -np.inf),)


@kernel("avg_pool")
def _avg_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, exclude_padding_from_average=False,
              ceil_mode=False):
    def mean(view, xin, kernel_sizes, strides, pads):
        """The window's sum over its count: of input values (excluding padding), or of input and padding values
        (a window that ``ceil_mode`` lets run past the padding counts only what it covers of both)."""
        total = view.sum(axis=(-2, -1), dtype=np.float32)
        if not exclude_padding_from_average and not ceil_mode:
            return total / np.float32(kernel_sizes[0] * kernel_sizes[1])
        ones = np.ones((1, 1) + xin.shape[2:], np.float32)
        counts, _ = _windows(ones, kernel_sizes, strides, [1, 1], pads, value=0.0 if exclude_padding_from_average
                             else 1.0, ceil_mode=bool(ceil_mode), beyond=0.0)
        return total / counts.sum(axis=(-2, -1))
    return (_pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, mean, 0.0),)


# --- normalization -------------------------------------------------------------------------------------------

def _channel(v, ndim):
    return f32(v).reshape((1, -1) + (1,) * (ndim - 2))


def _affine(out, gamma, beta, shape):
    """``out * gamma + beta``, each reshaped to ``shape`` for broadcasting (either may be absent)."""
    if gamma is not None:
        out = out * f32(gamma).reshape(shape)
    if beta is not None:
        out = out + f32(beta).reshape(shape)
    return out


@kernel("batch_norm")
def _batch_norm(ctx, x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    x = f32(x)
    out = (x - _channel(mean, x.ndim)) / np.sqrt(_channel(variance, x.ndim) + np.float32(epsilon))
    return (_affine(out, gamma, beta, (1, -1) + (1,) * (x.ndim - 2)),)


@kernel("instance_norm")
def _instance_norm(ctx, x, gamma=None, beta=None, epsilon=1e-5):
    x = f32(x)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + np.float32(epsilon))
    return (_affine(out, gamma, beta, (1, -1) + (1,) * (x.ndim - 2)),)


@kernel("layer_norm")
def _layer_norm(ctx, x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    x = f32(x)
    axes = tuple(range(x.ndim)) if axes is None else tuple(int(a) % x.ndim for a in np.atleast_1d(axes))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + np.float32(epsilon))
    return (_affine(out, gamma, beta, [x.shape[a] if a in axes else 1 for a in range(x.ndim)]),)


@kernel("l2_norm")
def _l2_norm(ctx, x, axes=None, epsilon=1e-6):
    """``x / sqrt(sum(x**2) + epsilon)`` over the last three axes (the op's own value inference)."""
    x = f32(x)
    axes = tuple(range(max(x.ndim - 3, 0), x.ndim)) if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
    norm = np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + np.float32(epsilon))
    return (x / norm,)


# --- reductions ----------------------------------------------------------------------------------------------

def _axes(axes):
    return None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))


def _reduce(fn):
    def run(ctx, x, axes=None, keep_dims=False):
        with np.errstate(all="ignore"):
            return (fn(f32(x), _axes(axes), bool(keep_dims), ctx),)
    return run


def _mean(x, axes, keep, ctx):
    count = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    return _sum(x, axes, keep, ctx) / np.float32(count)


_REDUCE = {
    "reduce_sum": lambda x, a, k, c: _sum(x, a, k, c),
    "reduce_mean": _mean,
    "reduce_max": lambda x, a, k, c: np.max(x, axis=a, keepdims=k),
    "reduce_min": lambda x, a, k, c: np.min(x, axis=a, keepdims=k),
    "reduce_prod": lambda x, a, k, c: np.prod(x, axis=a, keepdims=k),
    "reduce_sum_square": lambda x, a, k, c: _sum(x * x, a, k, c),
    "reduce_l1_norm": lambda x, a, k, c: _sum(np.abs(x), a, k, c),
    "reduce_l2_norm": lambda x, a, k, c: np.sqrt(_sum(x * x, a, k, c)),
    "reduce_log_sum": lambda x, a, k, c: np.log(_sum(x, a, k, c)),
    "reduce_log_sum_exp": lambda x, a, k, c: np.log(_sum(np.exp(x), a, k, c)),
}
for _name, _fn in _REDUCE.items():
    KERNELS[_name] = _reduce(_fn)


def _arg(fn):
    def run(ctx, x, axis=-1, keep_dims=False, output_dtype="int32"):
        out = fn(np.asarray(x), axis=int(axis))
        if keep_dims:
            out = np.expand_dims(out, int(axis))
        return (out.astype(_DTYPES.get(str(output_dtype), np.int32)),)
    return run


KERNELS["reduce_argmax"], KERNELS["reduce_argmin"] = _arg(np.argmax), _arg(np.argmin)


# --- shapes --------------------------------------------------------------------------------------------------

@kernel("reshape")
def _reshape(ctx, x, shape):
    x = np.asarray(x)
    shape = [int(s) for s in np.atleast_1d(shape)]
    shape = [x.shape[i] if s == 0 and i < x.ndim else s for i, s in enumerate(shape)]
    return (x.reshape(shape),)


@kernel("transpose")
def _transpose(ctx, x, perm):
    return (np.transpose(np.asarray(x), [int(p) for p in perm]),)


@kernel("expand_dims")
def _expand_dims(ctx, x, axes):
    x = np.asarray(x)
    rank = x.ndim + len(np.atleast_1d(axes))
    for a in sorted(int(a) % rank for a in np.atleast_1d(axes)):
        x = np.expand_dims(x, a)
    return (x,)


@kernel("squeeze")
def _squeeze(ctx, x, axes=None):
    x = np.asarray(x)
    return (np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(int(a) for a in np.atleast_1d(axes))),)


@kernel("flatten2d")
def _flatten2d(ctx, x, axis=1):
    x = np.asarray(x)
    axis = int(axis) % x.ndim if x.ndim else 0
    return (x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1),)


@kernel("slice_by_index")
def _slice_by_index(ctx, x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    x = np.asarray(x)
    n = x.ndim
    stride = [1] * n if stride is None else [int(s) for s in stride]
    begin_mask = [False] * n if begin_mask is None else list(begin_mask)
    end_mask = [False] * n if end_mask is None else list(end_mask)
    squeeze_mask = [False] * n if squeeze_mask is None else list(squeeze_mask)
    index = []
    for i in range(n):
        b, e = int(begin[i]), int(end[i])
        if squeeze_mask[i]:
            index.append(b)
        else:
            index.append(slice(None if begin_mask[i] else b, None if end_mask[i] else e, stride[i]))
    return (x[tuple(index)],)


@kernel("slice_by_size")
def _slice_by_size(ctx, x, begin, size):
    x = np.asarray(x)
    index = tuple(slice(int(b), None if int(s) == -1 else int(b) + int(s)) for b, s in zip(begin, size, strict=True))
    return (x[index],)


@kernel("concat")
def _concat(ctx, values, axis, interleave=False):
    values = [np.asarray(v) for v in values]
    axis = int(axis)
    if not interleave:
        return (np.concatenate(values, axis=axis),)
    stacked = np.stack(values, axis=(axis % values[0].ndim) + 1)
    shape = list(values[0].shape)
    shape[axis] = -1
    return (stacked.reshape(shape),)


@kernel("split")
def _split(ctx, x, num_splits=None, split_sizes=None, axis=0):
    x = np.asarray(x)
    axis = int(axis)
    if split_sizes is not None:
        points = np.cumsum([int(s) for s in split_sizes])[:-1]
        return tuple(np.split(x, points, axis=axis))
    return tuple(np.split(x, int(num_splits), axis=axis))


@kernel("stack")
def _stack(ctx, values, axis=0):
    return (np.stack([np.asarray(v) for v in values], axis=int(axis)),)


@kernel("tile")
def _tile(ctx, x, reps):
    return (np.tile(np.asarray(x), [int(r) for r in reps]),)


@kernel("pad")
def _pad(ctx, x, pad, mode="constant", constant_val=0.0):
    x = np.asarray(x)
    pad = [int(p) for p in pad]
    k = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)]
    if mode == "constant":
        return (np.pad(x, widths, constant_values=constant_val),)
    if mode in ("reflect", "replicate"):
        return (np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge"),)
    raise Unsupported(f"pad mode {mode!r}")


@kernel("gather")
def _gather(ctx, x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(batch_dims) != 0:
        raise Unsupported("gather with batch_dims")
    x, indices = np.asarray(x), np.asarray(indices).astype(np.int64)
    axis = int(axis)
    indices = np.where(indices < 0, indices + x.shape[axis], indices)
    return (np.take(x, indices, axis=axis),)


# --- quantization (iOS17) and the classifier -----------------------------------------------------------------

def _per_axis(v, x: np.ndarray, axis):
    v = np.asarray(v)
    if v.ndim == 0 or axis is None:
        return v
    shape = [1] * x.ndim
    shape[int(axis)] = -1
    return v.reshape(shape)


@kernel("quantize")
def _quantize(ctx, input, scale, zero_point=None, axis=None, output_dtype="uint8"):
    x = f32(input)
    dtype = _DTYPES[str(output_dtype)]
    info = np.iinfo(dtype)
    q = np.rint(x / f32(_per_axis(scale, x, axis)))
    if zero_point is not None:
        q = q + _per_axis(zero_point, x, axis).astype(np.float32)
    return (np.clip(q, info.min, info.max).astype(dtype),)


@kernel("dequantize")
def _dequantize(ctx, input, scale, zero_point=None, axis=None):
    q = np.asarray(input).astype(np.float32)
    if zero_point is not None:
        q = q - _per_axis(zero_point, q, axis).astype(np.float32)
    return (q * f32(_per_axis(scale, q, axis)),)


@kernel("classify")
def _classify(ctx, probabilities, classes):
    """(the top class, the probabilities): a classifier's dictionary output is kept as the vector, in the
    order of ``classes``."""
    probs = f32(probabilities).reshape(-1)
    return (np.asarray(list(classes)[int(np.argmax(probs))]), probs)
