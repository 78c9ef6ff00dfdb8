"""The coreml-sim kernels one op at a time: each MIL op, built into a one-op (or few-op) program with the MIL
builder and run through :class:`~shvit_edge.backends.coreml.sim.Program`, against its PyTorch counterpart on
seeded random inputs (float32, 1e-5 relative). Also the fp16 rounding the interpreter applies per op, the
:class:`Headroom` it records, subnormal flushing, and the refusal of an op type it has no kernel for."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.extras("coreml")

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from shvit_edge.backends.coreml.sim import Headroom, Program, SimOptions, UnsupportedProgram  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5
_SPEC_DTYPES = {np.dtype(np.float32): types.fp32, np.dtype(np.int32): types.int32}


def rand(*shape, seed=0, low=None, high=None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, high, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def build(fn, *arrays, opset=None):
    """The MIL program ``fn`` builds over inputs shaped (and typed) as ``arrays``, loaded by the interpreter."""
    specs = [mb.TensorSpec(shape=a.shape, dtype=_SPEC_DTYPES[a.dtype]) for a in arrays]
    prog = mb.program(input_specs=specs, opset_version=opset or ct.target.iOS16)(fn)
    return Program.from_mil(prog)


def sim(fn, *arrays, opset=None, **run):
    """The outputs (in order) of the program ``fn`` builds, run on ``arrays``."""
    program = build(fn, *arrays, opset=opset)
    out = program.run({spec.name: a for spec, a in zip(program.inputs, arrays, strict=True)}, **run)
    outs = [out[name] for name in program.outputs]
    return outs[0] if len(outs) == 1 else outs


def close(got, want, rtol=RTOL, atol=ATOL):
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# --- conv ----------------------------------------------------------------------------------------------------

def same_pads(pad_type, size, kernel, stride, dilation):
    """(begin, end) padding per spatial axis for MIL's ``same`` / ``same_lower`` (coremltools' aggregated_pad:
    total ``max(0, s * ceil(i / s) - i + k_eff - s)``; ``same`` puts the odd one at the end, ``same_lower`` at the
    start)."""
    pads = []
    for i, k, s, d in zip(size, kernel, stride, dilation, strict=True):
        k_eff = (k - 1) * d + 1
        total = max(0, s * math.ceil(i / s) - i + k_eff - s)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if pad_type == "same" else (big, small))
    return pads


def torch_conv(x, w, b, stride, dilation, groups, pads):
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad: the last axis first
    x = F.pad(t(x), flat)
    conv = F.conv1d if x.ndim == 3 else F.conv2d
    return conv(x, t(w), None if b is None else t(b), stride=stride, dilation=dilation, groups=groups)


#: name -> (input shape, weight shape, strides, dilations, groups, pad_type, custom pad)
CONV_CASES = {
    "plain3x3": ((2, 4, 9, 10), (6, 4, 3, 3), (1, 1), (1, 1), 1, "valid", None),
    "plain3x3_same": ((1, 4, 9, 10), (6, 4, 3, 3), (1, 1), (1, 1), 1, "same", None),
    "depthwise": ((2, 6, 9, 10), (6, 1, 3, 3), (1, 1), (1, 1), 6, "same", None),
    "depthwise_strided": ((1, 6, 9, 10), (6, 1, 5, 5), (2, 2), (1, 1), 6, "same_lower", None),
    "depthwise_dilated_custom": ((1, 6, 9, 10), (6, 1, 3, 3), (1, 2), (2, 1), 6, "custom", (2, 1, 0, 3)),
    "grouped2": ((2, 8, 7, 8), (6, 4, 3, 3), (1, 1), (1, 1), 2, "same", None),
    "grouped4": ((1, 8, 7, 8), (8, 2, 3, 3), (1, 1), (1, 1), 4, "valid", None),
    "multiplier": ((2, 4, 7, 8), (8, 1, 3, 3), (1, 1), (1, 1), 4, "same", None),
    "multiplier_strided": ((1, 3, 8, 7), (9, 1, 3, 3), (2, 2), (1, 1), 3, "custom", (1, 1, 1, 1)),
    "strided": ((1, 4, 9, 10), (5, 4, 3, 3), (2, 2), (1, 1), 1, "valid", None),
    "strided_same": ((1, 4, 9, 10), (5, 4, 3, 3), (2, 2), (1, 1), 1, "same", None),
    "strided_same_lower": ((1, 4, 9, 10), (5, 4, 4, 2), (2, 3), (1, 1), 1, "same_lower", None),
    "even_kernel_same": ((1, 3, 8, 9), (4, 3, 2, 4), (1, 1), (1, 1), 1, "same", None),
    "even_kernel_same_lower": ((1, 3, 8, 9), (4, 3, 2, 4), (1, 1), (1, 1), 1, "same_lower", None),
    "dilated": ((1, 4, 11, 12), (5, 4, 3, 3), (1, 1), (2, 2), 1, "valid", None),
    "dilated_same": ((1, 4, 11, 12), (5, 4, 3, 2), (1, 1), (2, 3), 1, "same", None),
    "dilated_same_lower_strided": ((1, 4, 11, 12), (5, 4, 2, 3), (2, 2), (3, 2), 1, "same_lower", None),
    "custom_asymmetric": ((1, 4, 8, 9), (5, 4, 3, 3), (1, 1), (1, 1), 1, "custom", (0, 2, 3, 1)),
    "custom_strided": ((1, 4, 8, 9), (5, 4, 3, 3), (2, 1), (1, 1), 1, "custom", (1, 0, 0, 2)),
    "pointwise": ((2, 8, 5, 6), (12, 8, 1, 1), (1, 1), (1, 1), 1, "valid", None),
    "pointwise_strided": ((1, 8, 5, 6), (12, 8, 1, 1), (2, 2), (1, 1), 1, "valid", None),
    "pointwise_padded": ((1, 8, 5, 6), (12, 8, 1, 1), (1, 1), (1, 1), 1, "custom", (1, 0, 0, 1)),
    "pointwise_grouped": ((1, 8, 5, 6), (6, 4, 1, 1), (1, 1), (1, 1), 2, "valid", None),
    "conv1d": ((2, 4, 13), (6, 4, 3), (1,), (1,), 1, "valid", None),
    "conv1d_same_strided": ((2, 4, 13), (6, 4, 4), (2,), (1,), 1, "same", None),
    "conv1d_same_lower_dilated": ((1, 4, 12), (6, 4, 2), (1,), (3,), 1, "same_lower", None),
    "conv1d_depthwise_custom": ((1, 4, 12), (8, 1, 3), (1,), (2,), 4, "custom", (3, 0)),
    "conv1d_pointwise": ((2, 4, 12), (6, 4, 1), (1,), (1,), 1, "valid", None),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv(case, bias):
    shape, wshape, strides, dilations, groups, pad_type, pad = CONV_CASES[case]
    x, w = rand(*shape, seed=1), rand(*wshape, seed=2)
    b = rand(wshape[0], seed=3) if bias else None
    kwargs = dict(weight=w, strides=list(strides), dilations=list(dilations), groups=groups, pad_type=pad_type)
    if b is not None:
        kwargs["bias"] = b
    if pad is not None:
        kwargs["pad"] = list(pad)
    got = sim(lambda x: mb.conv(x=x, **kwargs), x)
    if pad_type == "valid":
        pads = [(0, 0)] * len(strides)
    elif pad_type == "custom":
        pads = [(pad[2 * i], pad[2 * i + 1]) for i in range(len(strides))]
    else:
        pads = same_pads(pad_type, shape[2:], wshape[2:], strides, dilations)
    close(got, torch_conv(x, w, b, strides, dilations, groups, pads))


def test_same_pads_reference():
    """The reference padding agrees with coremltools' own output shapes for ``same``/``same_lower``."""
    for case, (shape, wshape, strides, dilations, _, pad_type, _) in CONV_CASES.items():
        if pad_type not in ("same", "same_lower"):
            continue
        pads = same_pads(pad_type, shape[2:], wshape[2:], strides, dilations)
        expected = [(i + b + e - (k - 1) * d - 1) // s + 1
                    for i, (b, e), k, s, d in zip(shape[2:], pads, wshape[2:], strides, dilations, strict=True)]
        assert expected == [math.ceil(i / s) for i, s in zip(shape[2:], strides, strict=True)], case


# --- linear and matmul ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear(bias):
    x, w, b = rand(2, 5, 7, seed=1), rand(3, 7, seed=2), rand(3, seed=3)
    kwargs = {"bias": b} if bias else {}
    got = sim(lambda x: mb.linear(x=x, weight=w, **kwargs), x)
    close(got, F.linear(t(x), t(w), t(b) if bias else None))


@pytest.mark.parametrize("transpose_y", [False, True], ids=["y", "yT"])
@pytest.mark.parametrize("transpose_x", [False, True], ids=["x", "xT"])
@pytest.mark.parametrize("form", ["batched", "broadcast", "broadcast_left", "2d", "batch_broadcast"])
def test_matmul(form, transpose_x, transpose_y):
    m, k, n = 4, 6, 5
    xs, ys = {"batched": ((2, 3), (2, 3)), "broadcast": ((2,), ()), "broadcast_left": ((), (2,)),
              "2d": ((), ()), "batch_broadcast": ((2, 1), (3,))}[form]
    x = rand(*xs, *((k, m) if transpose_x else (m, k)), seed=1)
    y = rand(*ys, *((n, k) if transpose_y else (k, n)), seed=2)
    got = sim(lambda x, y: mb.matmul(x=x, y=y, transpose_x=transpose_x, transpose_y=transpose_y), x, y)
    tx, ty = t(x), t(y)
    close(got, torch.matmul(tx.transpose(-1, -2) if transpose_x else tx, ty.transpose(-1, -2) if transpose_y else ty))


@pytest.mark.parametrize("shapes", [((6,), (6, 5)), ((6,), (2, 6, 5)), ((6,), (2, 5, 6))],
                         ids=["vec_mat", "vec_batched", "vec_batched_yT"])
def test_matmul_1d(shapes):
    x, y = rand(*shapes[0], seed=1), rand(*shapes[1], seed=2)
    transpose_y = shapes[1][-1] == 6
    got = sim(lambda x, y: mb.matmul(x=x, y=y, transpose_y=transpose_y), x, y)
    close(got, torch.matmul(t(x), t(y).transpose(-1, -2) if transpose_y else t(y)))


@pytest.mark.parametrize("shapes", [((4, 6), (6,)), ((2, 4, 6), (6,)), ((6,), (6,))],
                         ids=["mat_vec", "batched_vec", "vec_vec"])
def test_matmul_1d_y_kernel(shapes):
    """A 1-D ``y``: coremltools' builder cannot build it (matmul's type inference indexes ``y.shape[-2]``), but a
    loaded program may hold one, so the kernel is checked directly."""
    from shvit_edge.backends.coreml.kernels import KERNELS, Context

    x, y = rand(*shapes[0], seed=1), rand(*shapes[1], seed=2)
    (got,) = KERNELS["matmul"](Context(), x=x, y=y, transpose_x=False, transpose_y=False)
    close(got, torch.matmul(t(x), t(y)))


def test_matmul_const_operand():
    x, w = rand(2, 3, 4, 6, seed=1), rand(5, 6, seed=2)
    close(sim(lambda x: mb.matmul(x=x, y=w, transpose_y=True), x), torch.matmul(t(x), t(w).T))


# --- softmax and reductions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_softmax(axis):
    x = rand(2, 3, 4, 5, seed=axis + 10) * 4
    close(sim(lambda x: mb.softmax(x=x, axis=axis), x), F.softmax(t(x), dim=axis))


def _torch_prod(x, dims, keep):
    for d in sorted((d % x.ndim for d in dims), reverse=True):
        x = torch.prod(x, dim=d, keepdim=keep)
    return x


def _all(dims, x):
    return tuple(range(x.ndim)) if dims is None else dims


TORCH_REDUCE = {
    "reduce_mean": lambda x, d, k: torch.mean(x, dim=_all(d, x), keepdim=k),
    "reduce_sum": lambda x, d, k: torch.sum(x, dim=_all(d, x), keepdim=k),
    "reduce_max": lambda x, d, k: torch.amax(x, dim=_all(d, x), keepdim=k),
    "reduce_min": lambda x, d, k: torch.amin(x, dim=_all(d, x), keepdim=k),
    "reduce_prod": lambda x, d, k: _torch_prod(x, _all(d, x), k),
    "reduce_l2_norm": lambda x, d, k: torch.linalg.vector_norm(x, dim=_all(d, x), keepdim=k),
    "reduce_log_sum_exp": lambda x, d, k: torch.logsumexp(x, dim=_all(d, x), keepdim=k),
    "reduce_sum_square": lambda x, d, k: torch.sum(x * x, dim=_all(d, x), keepdim=k),
    "reduce_l1_norm": lambda x, d, k: torch.sum(x.abs(), dim=_all(d, x), keepdim=k),
}


@pytest.mark.parametrize("keep_dims", [False, True], ids=["drop", "keep"])
@pytest.mark.parametrize("axes", [[1], [-1], [2, 3], [0, -2], None], ids=["1", "-1", "2_3", "0_-2", "all"])
@pytest.mark.parametrize("op", list(TORCH_REDUCE))
def test_reduce(op, axes, keep_dims):
    x = rand(2, 3, 4, 5, seed=7, low=0.6, high=1.4) if op == "reduce_prod" else rand(2, 3, 4, 5, seed=7)
    kwargs = {"keep_dims": keep_dims} if axes is None else {"axes": axes, "keep_dims": keep_dims}
    got = sim(lambda x: getattr(mb, op)(x=x, **kwargs), x)
    close(got, TORCH_REDUCE[op](t(x), None if axes is None else tuple(axes), keep_dims))


@pytest.mark.parametrize("keep_dims", [False, True], ids=["drop", "keep"])
@pytest.mark.parametrize("axis", [0, 1, -1, 2])
@pytest.mark.parametrize("op", ["reduce_argmax", "reduce_argmin"])
def test_reduce_arg(op, axis, keep_dims):
    x = rand(2, 3, 4, 5, seed=8)
    got = sim(lambda x: getattr(mb, op)(x=x, axis=axis, keep_dims=keep_dims), x)
    want = (torch.argmax if op == "reduce_argmax" else torch.argmin)(t(x), dim=axis, keepdim=keep_dims)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want.numpy())


# --- elementwise ---------------------------------------------------------------------------------------------

TORCH_BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "real_div": torch.div,
                "maximum": torch.maximum, "minimum": torch.minimum, "pow": torch.pow}


@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (3, 1, 5)),
                                    ((1, 3, 1, 5), (2, 1, 4, 1)), ((4, 5), (2, 3, 4, 5))],
                         ids=["same", "right", "both", "left"])
@pytest.mark.parametrize("op", list(TORCH_BINARY))
def test_binary(op, shapes):
    positive = op in ("pow", "real_div")
    x = rand(*shapes[0], seed=1, low=0.5, high=2.0) if op == "pow" else rand(*shapes[0], seed=1)
    y = rand(*shapes[1], seed=2, low=0.5, high=2.0) if positive else rand(*shapes[1], seed=2)
    if op == "real_div":
        y = y * np.where(rand(*shapes[1], seed=3) > 0, 1, -1).astype(np.float32)
    close(sim(lambda x, y: getattr(mb, op)(x=x, y=y), x, y), TORCH_BINARY[op](t(x), t(y)))


@pytest.mark.parametrize("op", ["add", "mul", "sub", "real_div", "pow"])
def test_binary_const_scalar(op):
    x = rand(3, 4, seed=4, low=0.5, high=2.0)
    got = sim(lambda x: getattr(mb, op)(x=x, y=np.float32(1.5)), x)
    close(got, TORCH_BINARY[op](t(x), 1.5))


#: name -> (builder kwargs beyond x, the torch function, input domain)
UNARY = {
    "relu": ({}, F.relu, None),
    "relu6": ({}, F.relu6, None),
    "sigmoid": ({}, torch.sigmoid, None),
    "silu": ({}, F.silu, None),
    "tanh": ({}, torch.tanh, None),
    "exp": ({}, torch.exp, None),
    "sqrt": ({}, torch.sqrt, (0.0, 9.0)),
    "rsqrt": ({"epsilon": 1e-3}, lambda x: torch.rsqrt(x + 1e-3), (0.0, 9.0)),
    "gelu:EXACT": ({"mode": "EXACT"}, lambda x: F.gelu(x, approximate="none"), None),
    "gelu:TANH_APPROXIMATION": ({"mode": "TANH_APPROXIMATION"}, lambda x: F.gelu(x, approximate="tanh"), None),
    "gelu:SIGMOID_APPROXIMATION": ({"mode": "SIGMOID_APPROXIMATION"}, lambda x: x * torch.sigmoid(1.702 * x), None),
    "erf": ({}, torch.erf, None),
    "leaky_relu": ({"alpha": 0.2}, lambda x: F.leaky_relu(x, 0.2), None),
    "clip": ({"alpha": -0.5, "beta": 1.25}, lambda x: torch.clamp(x, -0.5, 1.25), None),
    "abs": ({}, torch.abs, None),
    "elu": ({"alpha": 0.7}, lambda x: F.elu(x, 0.7), None),
    "softplus": ({}, F.softplus, None),
    "square": ({}, torch.square, None),
    "log": ({}, torch.log, (0.1, 9.0)),
    "floor": ({}, torch.floor, None),
    "ceil": ({}, torch.ceil, None),
    "sign": ({}, torch.sign, None),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary(name):
    kwargs, fn, domain = UNARY[name]
    op = name.split(":")[0]
    x = rand(3, 4, 5, seed=5, low=domain[0], high=domain[1]) if domain else rand(3, 4, 5, seed=5) * 3
    if domain is None:  # the kinks and the edges of clip/relu6 exactly
        x.flat[:6] = [0.0, -0.5, 1.25, 6.0, 7.5, -20.0]
    close(sim(lambda x: getattr(mb, op)(x=x, **kwargs), x), fn(t(x)))


# --- shapes --------------------------------------------------------------------------------------------------

def test_reshape():
    x = rand(2, 3, 4, 5, seed=1)
    close(sim(lambda x: mb.reshape(x=x, shape=[2, -1, 5]), x), t(x).reshape(2, -1, 5))
    close(sim(lambda x: mb.reshape(x=x, shape=[-1]), x), t(x).reshape(-1))


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [3, 2, 1, 0], [1, 0, 2, 3]])
def test_transpose(perm):
    x = rand(2, 3, 4, 5, seed=1)
    close(sim(lambda x: mb.transpose(x=x, perm=perm), x), t(x).permute(*perm))


#: name -> (slice_by_index kwargs, the same slice as an index into the tensor)
SLICES = {
    "plain": (dict(begin=[0, 1, 1, 0], end=[2, 3, 4, 5]), np.s_[0:2, 1:3, 1:4, 0:5]),
    "strides": (dict(begin=[0, 0, 1, 4], end=[2, 3, 4, 0], stride=[1, 2, 2, -1]), np.s_[0:2, 0:3:2, 1:4:2, 4:0:-1]),
    "negative": (dict(begin=[0, -2, -3, 1], end=[2, -1, -1, -1]), np.s_[0:2, -2:-1, -3:-1, 1:-1]),
    "masks": (dict(begin=[1, 0, 2, 3], end=[0, 2, 0, 4], begin_mask=[True, False, False, True],
                   end_mask=[True, False, True, False]), np.s_[:, 0:2, 2:, :4]),
    "masks_strided": (dict(begin=[1, 2, -1, 1], end=[2, 0, 0, -1], stride=[1, -1, -2, 2],
                           begin_mask=[False, False, True, False], end_mask=[False, True, True, False]),
                      np.s_[1:2, 2::-1, ::-2, 1:-1:2]),
    "squeeze": (dict(begin=[1, 0, 2, 0], end=[2, 3, 3, 5], squeeze_mask=[True, False, True, False]),
                np.s_[1, 0:3, 2, 0:5]),
    "squeeze_negative": (dict(begin=[0, -1, 0, -2], end=[2, 0, 4, -1], squeeze_mask=[False, True, False, True]),
                         np.s_[0:2, -1, 0:4, -2]),
    "reverse_masks": (dict(begin=[0, 0, 0, 0], end=[0, 0, 0, 0], stride=[1, -1, 1, -2],
                           begin_mask=[True] * 4, end_mask=[True] * 4), np.s_[:, ::-1, :, ::-2]),
}


@pytest.mark.parametrize("case", list(SLICES))
def test_slice_by_index(case):
    kwargs, index = SLICES[case]
    x = rand(2, 3, 4, 5, seed=1)
    close(sim(lambda x: mb.slice_by_index(x=x, **kwargs), x), x[index])


@pytest.mark.parametrize("begin,size", [([0, 1, 1, 0], [2, 2, 3, 5]), ([1, 0, 2, 1], [-1, 3, -1, 2])])
def test_slice_by_size(begin, size):
    x = rand(2, 3, 4, 5, seed=1)
    index = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size, strict=True))
    close(sim(lambda x: mb.slice_by_size(x=x, begin=begin, size=size), x), x[index])


@pytest.mark.parametrize("kwargs,sections", [({"num_splits": 3, "axis": 1}, 3), ({"num_splits": 2, "axis": -1}, 2),
                                             ({"split_sizes": [1, 4, 1], "axis": 2}, [1, 4, 1])],
                         ids=["num1", "num-1", "sizes"])
def test_split(kwargs, sections):
    x = rand(2, 6, 6, 4, seed=1)
    got = sim(lambda x: mb.split(x=x, **kwargs), x)
    axis = kwargs["axis"]
    size = x.shape[axis] // sections if isinstance(sections, int) else sections
    want = torch.split(t(x), size, dim=axis)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        close(g, w)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("interleave", [False, True], ids=["concat", "interleave"])
def test_concat(axis, interleave):
    a, b, c = rand(2, 3, 4, seed=1), rand(2, 3, 4, seed=2), rand(2, 3, 4, seed=3)
    got = sim(lambda a, b, c: mb.concat(values=[a, b, c], axis=axis, interleave=interleave), a, b, c)
    if interleave:
        want = torch.stack([t(a), t(b), t(c)], dim=axis % 3 + 1).flatten(axis % 3, axis % 3 + 1)
    else:
        want = torch.cat([t(a), t(b), t(c)], dim=axis)
    close(got, want)


def test_concat_uneven_with_const():
    a, b = rand(2, 3, 4, seed=1), rand(2, 5, 4, seed=2)
    got = sim(lambda a: mb.concat(values=[a, b, a], axis=1), a)
    close(got, torch.cat([t(a), t(b), t(a)], dim=1))


@pytest.mark.parametrize("axes", [[0], [-1], [1, 3], [0, -1]])
def test_expand_dims(axes):
    x = rand(2, 3, seed=1)
    want = t(x)
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        want = want.unsqueeze(a)
    close(sim(lambda x: mb.expand_dims(x=x, axes=axes), x), want)


@pytest.mark.parametrize("axes", [[1], [-1], [1, 3], None])
def test_squeeze(axes):
    x = rand(2, 1, 3, 1, seed=1)
    kwargs = {} if axes is None else {"axes": axes}
    want = t(x).squeeze() if axes is None else t(x).squeeze(tuple(axes))
    close(sim(lambda x: mb.squeeze(x=x, **kwargs), x), want)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(axis):
    a, b = rand(3, 4, seed=1), rand(3, 4, seed=2)
    close(sim(lambda a, b: mb.stack(values=[a, b], axis=axis), a, b), torch.stack([t(a), t(b)], dim=axis))


@pytest.mark.parametrize("reps", [[1, 2, 3], [2, 1, 1]])
def test_tile(reps):
    x = rand(2, 3, 4, seed=1)
    close(sim(lambda x: mb.tile(x=x, reps=reps), x), t(x).repeat(*reps))


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
@pytest.mark.parametrize("pad", [[1, 2, 3, 0], [0, 0, 2, 1], [2, 1]], ids=["hw", "w_only", "last"])
def test_pad(mode, pad):
    x = rand(2, 3, 5, 6, seed=1)
    kwargs = {"constant_val": np.float32(0.75)} if mode == "constant" else {}
    got = sim(lambda x: mb.pad(x=x, pad=np.array(pad, np.int32), mode=mode, **kwargs), x)
    flat = [p for i in reversed(range(len(pad) // 2)) for p in pad[2 * i:2 * i + 2]]
    # torch pads the last axis alone (reflect/replicate) only of a 2-D or 3-D tensor
    tx = t(x).reshape(6, 5, 6) if len(pad) == 2 else t(x)
    want = F.pad(tx, flat, mode=mode, **({"value": 0.75} if mode == "constant" else {}))
    close(got, want.reshape(got.shape))


@pytest.mark.parametrize("axis,indices", [(0, [2, 0, 1, 2]), (1, [[4, 0], [1, 1]]), (-1, [3, 0, 5]),
                                          (2, [-1, 0, -4])],
                         ids=["0", "1_2d", "-1", "negative"])
def test_gather(axis, indices):
    x = rand(3, 5, 6, seed=1)
    idx = np.array(indices, np.int32)
    got = sim(lambda x: mb.gather(x=x, indices=idx, axis=axis), x)
    ti = torch.from_numpy(np.where(idx < 0, idx + x.shape[axis], idx).astype(np.int64))
    want = torch.index_select(t(x), axis, ti.reshape(-1))
    shape = x.shape[:axis % 3] + idx.shape + x.shape[axis % 3 + 1:]
    close(got, want.reshape(shape))


def test_gather_runtime_indices():
    x, idx = rand(4, 5, seed=1), np.array([3, 1, 1, 0], np.int32)
    got = sim(lambda x, i: mb.gather(x=x, indices=i, axis=0), x, idx)
    close(got, t(x)[torch.from_numpy(idx).long()])


def test_cast_fp16_rounds():
    x = np.array([1 / 3, 1e-3, 2049.0, 65504.0, 65519.0, 65520.0, -1e5, 1e-6, 1e-8, -0.0, 3.14159],
                 np.float32)
    got = sim(lambda x: mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"), x)
    want = t(x).half().float().numpy()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert np.isinf(got[5]) and got[4] == 65504.0 and got[2] == 2048.0  # 65520 rounds to inf, 2049 to even


def test_cast_int32_truncates():
    x = np.array([-2.7, -1.0, -0.5, 0.0, 0.5, 0.99, 2.5, 3.7, 1e4 + 0.6], np.float32)
    got = sim(lambda x: mb.cast(x=x, dtype="int32"), x)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, t(x).to(torch.int32).numpy())


def test_cast_int32_to_fp32():
    x = np.array([-3, 0, 7, 1 << 20], np.int32)
    got = sim(lambda x: mb.cast(x=x, dtype="fp32"), x)
    np.testing.assert_array_equal(got, x.astype(np.float32))


# --- normalization -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batch_norm(affine):
    x = rand(2, 4, 5, 6, seed=1)
    mean, var = rand(4, seed=2), rand(4, seed=3, low=0.2, high=2.0)
    gamma, beta = rand(4, seed=4), rand(4, seed=5)
    kwargs = {"gamma": gamma, "beta": beta} if affine else {}
    got = sim(lambda x: mb.batch_norm(x=x, mean=mean, variance=var, epsilon=1e-3, **kwargs), x)
    want = F.batch_norm(t(x), t(mean), t(var), t(gamma) if affine else None, t(beta) if affine else None,
                        training=False, eps=1e-3)
    close(got, want)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("axes", [[-1], [3], [1, 2, 3], [2, 3]])
def test_layer_norm(axes, affine):
    x = rand(2, 3, 4, 5, seed=1) * 3 + 1
    shape = tuple(x.shape[a] for a in axes)
    gamma, beta = rand(*shape, seed=2), rand(*shape, seed=3)
    kwargs = {"gamma": gamma, "beta": beta} if affine else {}
    got = sim(lambda x: mb.layer_norm(x=x, axes=axes, epsilon=1e-5, **kwargs), x)
    want = F.layer_norm(t(x), shape, t(gamma) if affine else None, t(beta) if affine else None, eps=1e-5)
    close(got, want)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_instance_norm(affine):
    x = rand(2, 4, 5, 6, seed=1) * 2 - 1
    gamma, beta = rand(4, seed=2), rand(4, seed=3)
    kwargs = {"gamma": gamma, "beta": beta} if affine else {}
    got = sim(lambda x: mb.instance_norm(x=x, epsilon=1e-5, **kwargs), x)
    want = F.instance_norm(t(x), weight=t(gamma) if affine else None, bias=t(beta) if affine else None, eps=1e-5)
    close(got, want)


@pytest.mark.parametrize("shape,epsilon", [((2, 3, 4, 5), 1e-6), ((3, 4, 5), 1e-6), ((2, 2, 3, 2, 2), 0.5)])
def test_l2_norm(shape, epsilon):
    """Over the last three axes, ``x / sqrt(sum(x**2) + epsilon)`` (coremltools' value inference; a large
    epsilon tells it from F.normalize's ``max(norm, epsilon)``)."""
    x = rand(*shape, seed=1) * 0.1
    got = sim(lambda x: mb.l2_norm(x=x, epsilon=np.float32(epsilon)), x)
    tx = t(x)
    dims = tuple(range(tx.ndim - 3, tx.ndim))
    close(got, tx / torch.sqrt((tx * tx).sum(dim=dims, keepdim=True) + epsilon))


# --- pooling -------------------------------------------------------------------------------------------------

#: name -> (input shape, kernel, stride, padding (symmetric), ceil_mode)
POOL_CASES = {
    "k2s2": ((2, 3, 8, 9), (2, 2), (2, 2), (0, 0), False),
    "k3s2_pad1": ((1, 3, 8, 9), (3, 3), (2, 2), (1, 1), False),
    "k3s2_pad1_ceil": ((1, 3, 8, 9), (3, 3), (2, 2), (1, 1), True),
    "k3s2_pad1_ceil_odd": ((1, 3, 7, 10), (3, 3), (2, 2), (1, 1), True),
    "k3s2_ceil": ((1, 3, 8, 9), (3, 3), (2, 2), (0, 0), True),
    "k2s2_ceil": ((1, 3, 7, 9), (2, 2), (2, 2), (0, 0), True),
    "k3s1_pad1": ((1, 3, 6, 7), (3, 3), (1, 1), (1, 1), False),
    "k4s3_pad2_ceil": ((1, 2, 10, 11), (4, 4), (3, 3), (2, 2), True),
    "rect": ((1, 2, 9, 10), (3, 2), (2, 1), (1, 0), False),
    "rect_ceil": ((1, 2, 9, 10), (3, 2), (2, 2), (1, 1), True),
}


def _pool_kwargs(kernel, stride, padding, ceil_mode):
    kwargs = dict(kernel_sizes=list(kernel), strides=list(stride), ceil_mode=ceil_mode)
    if any(padding):
        kwargs.update(pad_type="custom", pad=[p for p in padding for _ in range(2)])
    else:
        kwargs.update(pad_type="valid")
    return kwargs


@pytest.mark.parametrize("exclude", [True, False], ids=["exclude_pad", "count_pad"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_avg_pool(case, exclude):
    shape, kernel, stride, padding, ceil_mode = POOL_CASES[case]
    x = rand(*shape, seed=1)
    kwargs = _pool_kwargs(kernel, stride, padding, ceil_mode)
    got = sim(lambda x: mb.avg_pool(x=x, exclude_padding_from_average=exclude, **kwargs), x)
    want = F.avg_pool2d(t(x), kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=not exclude)
    close(got, want)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_max_pool(case):
    shape, kernel, stride, padding, ceil_mode = POOL_CASES[case]
    x = rand(*shape, seed=1) - 3  # all negative near the edges too: padding must never win
    got = sim(lambda x: mb.max_pool(x=x, **_pool_kwargs(kernel, stride, padding, ceil_mode)), x)
    close(got, F.max_pool2d(t(x), kernel, stride, padding, ceil_mode=ceil_mode))


@pytest.mark.parametrize("pad_type", ["same", "same_lower"])
def test_pool_same(pad_type):
    x = rand(1, 2, 7, 8, seed=1)
    kwargs = dict(kernel_sizes=[4, 2], strides=[2, 3], pad_type=pad_type)
    got_max, got_avg, got_avg_excl = sim(lambda x: (
        mb.max_pool(x=x, **kwargs), mb.avg_pool(x=x, exclude_padding_from_average=False, **kwargs),
        mb.avg_pool(x=x, exclude_padding_from_average=True, **kwargs)), x)
    pads = same_pads(pad_type, x.shape[2:], (4, 2), (2, 3), (1, 1))
    flat = [p for pair in reversed(pads) for p in pair]
    assert any(b != e for b, e in pads)  # the asymmetric case
    close(got_max, F.max_pool2d(F.pad(t(x), flat, value=-math.inf), (4, 2), (2, 3)))
    close(got_avg, F.avg_pool2d(F.pad(t(x), flat), (4, 2), (2, 3)))
    counts = F.avg_pool2d(F.pad(torch.ones_like(t(x)), flat), (4, 2), (2, 3))
    close(got_avg_excl, F.avg_pool2d(F.pad(t(x), flat), (4, 2), (2, 3)) / counts)


@pytest.mark.parametrize("exclude", [True, False], ids=["exclude_pad", "count_pad"])
def test_avg_pool_1d(exclude):
    x = rand(2, 3, 11, seed=1)
    got = sim(lambda x: mb.avg_pool(x=x, kernel_sizes=[3], strides=[2], pad_type="custom", pad=[1, 1],
                                    exclude_padding_from_average=exclude), x)
    close(got, F.avg_pool1d(t(x), 3, 2, 1, count_include_pad=not exclude))


# --- quantization (iOS17) ------------------------------------------------------------------------------------

#: torch's quantized tensors are deprecated, but still the reference for affine quantization
torch_quantized = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


@torch_quantized
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_per_tensor(dtype):
    x = rand(2, 3, 4, 5, seed=1) * 2
    scale, zp = 0.02, (3 if dtype == "int8" else 128)
    np_dtype = np.int8 if dtype == "int8" else np.uint8

    def fn(x):
        q = mb.quantize(input=x, scale=np.float32(scale), zero_point=np_dtype(zp), output_dtype=dtype)
        return q, mb.dequantize(input=q, scale=np.float32(scale), zero_point=np_dtype(zp))

    q, dq = sim(fn, x, opset=ct.target.iOS17)
    want = torch.quantize_per_tensor(t(x), scale, zp, torch.qint8 if dtype == "int8" else torch.quint8)
    assert q.dtype == np_dtype
    np.testing.assert_array_equal(q, want.int_repr().numpy())
    assert (q == np.iinfo(np_dtype).min).any() and (q == np.iinfo(np_dtype).max).any()  # clamped both ways
    close(dq, want.dequantize())


@torch_quantized
@pytest.mark.parametrize("axis", [1, -1, 0])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_per_channel(dtype, axis):
    x = rand(2, 3, 4, 5, seed=2)
    n = x.shape[axis]
    scale = np.linspace(0.004, 0.03, n).astype(np.float32)
    np_dtype = np.int8 if dtype == "int8" else np.uint8
    zp = (np.arange(n) - n // 2).astype(np_dtype) if dtype == "int8" else (np.arange(n) * 9 + 100).astype(np_dtype)

    def fn(x):
        q = mb.quantize(input=x, scale=scale, zero_point=zp, axis=axis, output_dtype=dtype)
        return q, mb.dequantize(input=q, scale=scale, zero_point=zp, axis=axis)

    q, dq = sim(fn, x, opset=ct.target.iOS17)
    want = torch.quantize_per_channel(t(x), torch.from_numpy(scale).double(), torch.from_numpy(zp.astype(np.int64)),
                                      axis % 4, torch.qint8 if dtype == "int8" else torch.quint8)
    np.testing.assert_array_equal(q, want.int_repr().numpy())
    close(dq, want.dequantize())


@torch_quantized
def test_quantize_rounds_half_to_even():
    x = (np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -128.5, -129.5], np.float32) * 0.25)
    q = sim(lambda x: mb.quantize(input=x, scale=np.float32(0.25), zero_point=np.int8(0), output_dtype="int8"),
            x, opset=ct.target.iOS17)
    want = torch.quantize_per_tensor(t(x), 0.25, 0, torch.qint8).int_repr().numpy()
    np.testing.assert_array_equal(q, want)
    np.testing.assert_array_equal(q, [0, 2, 2, 0, -2, -2, 126, 127, -128, -128])


@torch_quantized
def test_quantize_without_zero_point():
    x = rand(3, 8, seed=3)
    q = sim(lambda x: mb.quantize(input=x, scale=np.float32(0.05), output_dtype="int8"), x,
            opset=ct.target.iOS17)
    np.testing.assert_array_equal(q, torch.quantize_per_tensor(t(x), 0.05, 0, torch.qint8).int_repr().numpy())


# --- fp16: rounding per op, headroom, subnormals -------------------------------------------------------------

def _fp16_program(factor):
    def fn(x):
        h = mb.cast(x=x, dtype="fp16", name="to16")
        big = mb.mul(x=h, y=np.float16(factor), name="big")
        small = mb.mul(x=h, y=np.float16(0.5), name="small")
        return mb.cast(x=mb.add(x=big, y=small, name="sum"), dtype="fp32", name="out")
    return fn


def test_fp16_op_rounds_its_output():
    x = rand(4, 6, seed=1) * 10
    got = sim(lambda x: mb.cast(x=mb.mul(x=mb.cast(x=x, dtype="fp16"), y=np.float16(1.1)), dtype="fp32"), x)
    x16 = t(x).half()
    want = (x16.float() * torch.tensor(1.1).half().float()).half().float()
    np.testing.assert_array_equal(got, want.numpy())
    assert not np.array_equal(got, (t(x).float() * 1.1).numpy())


def test_fp16_overflow_named_in_headroom():
    x = rand(3, 5, seed=1, low=-300, high=300)
    x[0, 0] = 300.0
    program = build(_fp16_program(300.0), x)
    h = Headroom()
    out = program.run({program.inputs[0].name: x}, headroom=h)[program.outputs[0]]
    assert np.isinf(out[0, 0])
    names = [s.name for s in h.overflowing()]
    assert "big" in names and "to16" not in names and "small" not in names
    stats = h.ops["big"]
    assert stats.op_type == "mul" and stats.overflow == int((np.abs(x) * 300 > 65519).sum()) > 0
    assert stats.max_abs <= 65504.0
    assert h.first_nonfinite == "big"


def test_fp16_headroom_below_limit():
    x = rand(3, 5, seed=2, low=-100, high=100)
    program = build(_fp16_program(300.0), x)
    h = Headroom()
    out = program.run({program.inputs[0].name: x}, headroom=h)[program.outputs[0]]
    assert np.isfinite(out).all()
    assert h.overflowing() == []
    least = h.least()
    assert least.name == "sum" and least.op_type == "add"
    np.testing.assert_allclose(least.max_abs, np.abs(out).max())
    assert h.ops["big"].max_abs < least.max_abs and least.margin > 1


def test_flush_subnormals():
    x = np.array([1e-6, -3e-5, 1.0, 7e-5, 0.0, -2.0], np.float32)  # 1e-6 and -3e-5 are fp16 subnormals

    def fn(x):
        return mb.cast(x=mb.cast(x=x, dtype="fp16", name="to16"), dtype="fp32", name="out")

    program = build(fn, x)
    feeds = {program.inputs[0].name: x}
    h = Headroom()
    flushed = program.run(feeds, options=SimOptions(flush_subnormals=True), headroom=h)[program.outputs[0]]
    np.testing.assert_array_equal(flushed, [0.0, 0.0, 1.0, t(x[3:4]).half().item(), 0.0, -2.0])
    assert h.ops["to16"].flushed == 2
    h = Headroom()
    kept = program.run(feeds, headroom=h)[program.outputs[0]]
    np.testing.assert_array_equal(kept, t(x).half().float().numpy())
    assert kept[0] != 0 and h.ops["to16"].flushed == 0


# --- refusal -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["topk", "upsample_bilinear"])
def test_unsupported_op_refused(op):
    x = rand(1, 2, 4, 4, seed=1)

    def fn(x):
        if op == "topk":
            return mb.topk(x=x, k=2)[0]
        return mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=2.0)

    specs = [mb.TensorSpec(shape=x.shape)]
    prog = mb.program(input_specs=specs, opset_version=ct.target.iOS16)(fn)
    with pytest.raises(UnsupportedProgram, match=op):
        Program.from_mil(prog)


def test_an_op_of_an_opset_the_interpreter_does_not_know_is_refused(monkeypatch):
    from shvit_edge.backends.coreml import sim as sim_module

    x = rand(2, 3, seed=1)
    program = mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS16)(
        lambda x: mb.relu(x=x, name="r"))
    monkeypatch.setattr(sim_module, "KNOWN_OPSETS", ("iOS14",))  # as if iOS15 were newer than it knows
    with pytest.raises(UnsupportedProgram, match=r"op 'r' is relu of opset iOS15"):
        Program.from_mil(program)


def test_image_pixels_in_the_channel_order_of_the_color_space():
    from shvit_edge.backends.coreml.sim import to_color_space

    rgb = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5)).astype(np.uint8)
    np.testing.assert_array_equal(to_color_space(rgb, "RGB"), rgb.astype(np.float32))
    np.testing.assert_array_equal(to_color_space(rgb, "BGR"), rgb[:, ::-1].astype(np.float32))
    gray = to_color_space(rgb, "GRAYSCALE")
    r, g, b = (rgb[:, i:i + 1].astype(np.float64) for i in range(3))
    assert gray.shape == (2, 1, 4, 5)
    np.testing.assert_allclose(gray, 0.299 * r + 0.587 * g + 0.114 * b, rtol=1e-6)  # ITU-R BT.601 luma


def test_fp16_accumulation_loses_what_fp32_accumulation_keeps():
    """A long fp16 dot product: accumulated in float32 (then rounded once) it is within an fp16 rounding of the
    exact sum; accumulated in fp16 (the GPU-like mode) the error grows with the length."""
    x = rand(4, 2048, seed=3, low=0.5, high=1.5)
    w = rand(8, 2048, seed=4, low=0.5, high=1.5)

    def fn(x):
        h = mb.cast(x=x, dtype="fp16")
        return mb.cast(x=mb.linear(x=h, weight=w.astype(np.float16), name="dot"), dtype="fp32")

    program = build(fn, x)
    feeds = {program.inputs[0].name: x}
    exact = x.astype(np.float16).astype(np.float64) @ w.astype(np.float16).astype(np.float64).T
    wide = program.run(feeds)[program.outputs[0]]
    narrow = program.run(feeds, options=SimOptions(fp16_accumulation=True))[program.outputs[0]]
    ulp = np.spacing(exact.astype(np.float16)).astype(np.float64)
    assert (np.abs(wide - exact) <= ulp).all()
    assert np.abs(narrow - exact).max() > 2 * ulp.max()


def test_ios18_blockwise_compressed_weights_decompress_once_into_the_op():
    """An iOS 18 weight compressed blockwise (int8 data, one scale and offset per block of 4 input channels, as
    coremltools' per-block int8 quantization writes it) is decompressed at load and feeds the linear."""
    rng = np.random.default_rng(5)
    data = rng.integers(-127, 128, (6, 8)).astype(np.int8)
    scale = rng.uniform(0.01, 0.1, (6, 2)).astype(np.float32)
    offset = rng.integers(-3, 4, (6, 2)).astype(np.int8)
    x = rand(3, 8, seed=6)

    def fn(x):
        w = mb.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=offset, name="w")
        return mb.linear(x=x, weight=w)

    got = sim(fn, x, opset=ct.target.iOS18)
    dense = np.repeat(scale, 4, axis=1) * (data.astype(np.float32) - np.repeat(offset, 4, axis=1))
    close(got, x @ dense.T)
