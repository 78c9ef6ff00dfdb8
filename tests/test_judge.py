"""Verify's judge, one check at a time (issue 13): each tolerance check fails on its own, by name, while the others
stay quiet; a value exactly at its bar passes; NaN and Inf never pass; and the command line's ``--max-abs``,
``--min-top1`` and ``--min-sqnr`` each change the verdict on their own (exit code, reason and ``--json``).

The unit tests judge :class:`ParityMetrics` built by hand and by :func:`compare` from arrays; the command-line
tests share one ONNX artifact at 64x64 from ``shvit_s1_calibrated`` (its reference guarded by ``assert_reacts``).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shvit_edge.cli import cli
from shvit_edge.parity.metrics import CONSTANT_RTOL, ParityMetrics, compare, constancy
from shvit_edge.targets import Tolerance, resolve_target
from shvit_edge.verify import VerifyResult, judge

from conftest import assert_reacts

NAN, INF = math.nan, math.inf
TOL = Tolerance(cosine=0.99, max_abs=0.5, top1_agreement=0.75, sqnr_db=20.0)
#: metrics that pass TOL with room on every check
GOOD = ParityMetrics(max_abs=0.1, mean_abs=0.01, cosine=0.999, sqnr_db=30.0, top1_agreement=1.0, top5_overlap=1.0,
                     finite=True, samples=8)
#: the name each check's problem starts with
NAMES = {"cosine": "cosine ", "max_abs": "max abs ", "top1_agreement": "top-1 agreement ", "sqnr_db": "SQNR "}


def only(problems: list[str], name: str) -> str:
    """The one problem in ``problems``, which must be ``name``'s."""
    assert len(problems) == 1, problems
    assert problems[0].startswith(NAMES[name]), problems
    return problems[0]


# --- the judge on hand-made metrics -------------------------------------------------------------------------------

def test_metrics_within_every_bar_pass():
    assert judge(GOOD, TOL) == []


@pytest.mark.parametrize("name,bad,shown", [
    ("cosine", 0.98, "cosine 0.980000 < 0.99"),
    ("max_abs", 0.75, "max abs 0.75 > 0.5"),
    ("top1_agreement", 0.5, "top-1 agreement 0.500 < 0.75"),
    ("sqnr_db", 19.5, "SQNR 19.5 dB < 20.0 dB"),
])
def test_each_check_fails_alone_and_by_name(name, bad, shown):
    assert only(judge(dataclasses.replace(GOOD, **{name: bad}), TOL), name) == shown


@pytest.mark.parametrize("name", list(NAMES))
def test_a_metric_exactly_at_its_bar_passes(name):
    assert judge(dataclasses.replace(GOOD, **{name: getattr(TOL, name)}), TOL) == []


@pytest.mark.parametrize("name,value", [(n, v) for n in NAMES for v in (NAN, -INF if n != "max_abs" else INF)])
def test_a_nan_or_infinite_metric_fails_its_check(name, value):
    """NaN compares False with everything: ``nan > bar`` would let it through. A NaN metric with a finite output
    comes from a NaN in the reference."""
    only(judge(dataclasses.replace(GOOD, **{name: value}), TOL), name)


def test_an_infinite_sqnr_passes_and_sqnr_is_judged_only_when_set():
    """Identical outputs have SQNR +inf (no noise); a class without an SQNR bar (fp32) never judges it."""
    assert judge(dataclasses.replace(GOOD, sqnr_db=INF, max_abs=0.0, cosine=1.0), TOL) == []
    no_sqnr = dataclasses.replace(TOL, sqnr_db=None)
    assert judge(dataclasses.replace(GOOD, sqnr_db=-500.0), no_sqnr) == []
    assert judge(dataclasses.replace(GOOD, sqnr_db=NAN), no_sqnr) == []


def test_every_check_that_fails_is_reported_in_order():
    worst = dataclasses.replace(GOOD, cosine=0.0, max_abs=9.0, top1_agreement=0.0, sqnr_db=-3.0)
    problems = judge(worst, TOL)
    assert [p.split(" ")[0] for p in problems] == ["cosine", "max", "top-1", "SQNR"], problems


def test_a_non_finite_output_fails_whatever_its_numbers():
    broken = dataclasses.replace(GOOD, finite=False)
    assert judge(broken, TOL) == ["NaN or Inf in the output"]
    loosest = Tolerance(cosine=-1.0, max_abs=1e300, top1_agreement=0.0, sqnr_db=-1000.0)
    assert judge(broken, loosest) == ["NaN or Inf in the output"]
    both = judge(dataclasses.replace(broken, reference_constant="all values equal"), loosest)
    assert len(both) == 2 and "reference model's output does not depend" in both[0] and "(all values equal)" in both[0]
    assert both[1] == "NaN or Inf in the output"


def test_constant_outputs_fail_on_top_of_the_numbers():
    out = judge(dataclasses.replace(GOOD, output_constant="all values equal", max_abs=0.75), TOL)
    assert out == ["the artifact's output does not depend on its input (all values equal)", "max abs 0.75 > 0.5"]
    ref = judge(dataclasses.replace(GOOD, reference_constant="the same output for all 8 inputs"), TOL)
    assert ref == ["the reference model's output does not depend on its input (the same output for all 8 inputs): "
                   "no comparison with it can show the artifact works; check the checkpoint's weights"]


def test_compare_measures_constancy_of_each_side():
    varying = reacting()
    same = np.repeat(varying[:1], len(varying), axis=0)
    m = compare(same, varying)
    assert m.output_constant == "the same output for all 8 inputs" and m.reference_constant == ""
    m = compare(varying, same)
    assert m.output_constant == "" and m.reference_constant == "the same output for all 8 inputs"


# --- compare, then judge: arrays with one thing wrong -------------------------------------------------------------

def reacting(samples=8, classes=20, seed=0) -> np.ndarray:
    """A reference whose rows differ (a model that reacts to its input), with a clear arg-max per row."""
    ref = np.random.default_rng(seed).standard_normal((samples, classes))
    ref[np.arange(samples), np.arange(samples) % classes] += 5.0
    assert constancy(ref) is None
    return ref


def test_a_near_tie_flipped_fails_top1_alone_under_the_shipped_fp32_tolerances():
    """The finding of issue 13: without the top-1 check an output that changes a prediction passes, because a
    near tie flips with a tiny difference. Here every row's two best classes are 1e-5 apart and the output swaps
    one row's: max abs 2e-5, cosine 0.99999999, no other check fires."""
    fp32 = resolve_target("host-onnx").tolerance("fp32")
    ref = reacting()
    row = ref[3]
    best = int(row.argmax())
    runner_up = int(np.argsort(row)[-2])
    row[runner_up] = row[best] - 1e-5
    out = ref.copy()
    out[3, runner_up] += 2e-5
    metrics = compare(out, ref)
    assert metrics.top1_agreement == 7 / 8 and metrics.max_abs == pytest.approx(2e-5)
    assert "top-1 agreement 0.875 < 1.0" == only(judge(metrics, fp32), "top1_agreement")
    assert judge(compare(ref.copy(), ref), fp32) == []


@pytest.mark.parametrize("name", ["max_abs", "cosine", "sqnr_db"])
def test_compare_then_judge_fails_one_check_alone(name):
    ref = reacting(classes=50) * 10  # |ref|^2 ~ 6e4
    signs = np.sign(np.random.default_rng(1).standard_normal(ref.shape))
    out = ref.copy()
    if name == "max_abs":  # one value off by 0.6 (not an arg-max): max abs 0.6 > 0.5, SQNR 52 dB, cosine 0.999997
        out[0, 10] -= 0.6
        tolerance = TOL
    elif name == "cosine":  # +-0.2 everywhere: cosine 0.99987 < 0.9999, SQNR 35.7 dB, max abs 0.2
        out += 0.2 * signs
        tolerance = dataclasses.replace(TOL, cosine=0.9999)
    else:  # +-1 everywhere: SQNR 21.7 dB < 25 dB, cosine 0.9966 > 0.99, max abs 1.0 <= 1.5
        out += signs
        tolerance = dataclasses.replace(TOL, sqnr_db=25.0, max_abs=1.5)
    only(judge(compare(out, ref), tolerance), name)


@pytest.mark.parametrize("where", ["output", "reference"])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_nan_or_inf_in_either_array_never_passes(where, value):
    """Even with every bar at its loosest: a NaN in the reference makes NaN metrics, which must fail."""
    ref = reacting()
    out = ref + 1e-6
    (out if where == "output" else ref)[2, 5] = value
    loosest = Tolerance(cosine=-1.0, max_abs=1e300, top1_agreement=0.0, sqnr_db=-1000.0)
    problems = judge(compare(out, ref), loosest)
    assert problems, (where, value)
    if where == "output":
        assert problems == ["NaN or Inf in the output"]


def test_an_all_nan_reference_fails_with_the_loosest_bars():
    ref = np.full((4, 10), NAN)
    out = reacting(4, 10)
    metrics = compare(out, ref)
    assert metrics.finite  # ``finite`` is the output's
    loosest = Tolerance(cosine=-1.0, max_abs=1e300, top1_agreement=0.0, sqnr_db=-1000.0)
    assert any(p.startswith("max abs nan") for p in judge(metrics, loosest))


# --- compare's numbers --------------------------------------------------------------------------------------------

def test_compare_computes_each_metric():
    ref = np.array([[3.0, 4.0, 0.0, 1.0, 0.5, 0.25], [0.0, 1.0, 2.0, 0.5, 0.25, 3.0]])
    out = ref.copy()
    out[0, 0] = 5.0  # row 0's arg-max moves from 1 to 0; its top-5 keeps the same set
    out[1, 4] = 0.0  # row 1: 0.25 -> 0.0 (ties class 0, which is outside both top-5s by index order)
    m = compare(out, ref)
    diff = out - ref
    assert m.max_abs == 2.0 and m.mean_abs == pytest.approx(np.abs(diff).mean())
    assert m.mean_abs == pytest.approx(2.25 / 12)
    assert m.cosine == pytest.approx(float(np.dot(out.ravel(), ref.ravel()) / np.linalg.norm(out) /
                                           np.linalg.norm(ref)))
    assert m.sqnr_db == pytest.approx(10 * math.log10(float((ref ** 2).sum()) / float((diff ** 2).sum())))
    assert m.top1_agreement == 0.5 and m.samples == 2 and m.finite
    assert m.output_constant == m.reference_constant == ""


def test_compare_top5_overlap_and_few_classes():
    ref = np.array([[9.0, 8, 7, 6, 5, 4, 3, 2], [1.0, 2, 3, 4, 5, 6, 7, 8]])
    out = ref.copy()
    out[0, 7] = 100.0  # row 0: class 7 enters the top 5, class 4 (value 5) drops out: overlap 4/5
    assert compare(out, ref).top5_overlap == pytest.approx((4 / 5 + 1) / 2)
    three = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    m = compare(three[:, ::-1].copy(), three)  # k is min(5, classes) = 3: the same set, whatever the order
    assert m.top5_overlap == 1.0 and m.top1_agreement == 0.0


def test_identical_outputs_and_zero_arrays():
    ref = reacting()
    m = compare(ref.copy(), ref)
    assert m.max_abs == 0.0 and m.sqnr_db == INF and m.cosine == pytest.approx(1.0) and m.top1_agreement == 1.0
    assert m.as_dict()["sqnr_db"] is None and m.as_dict()["cosine"] == m.cosine
    zeros = np.zeros((3, 4))
    assert compare(zeros, zeros).cosine == 1.0  # no direction to compare: equal arrays agree
    assert compare(zeros, np.ones((3, 4))).cosine == 0.0


def test_compare_refuses_shapes_that_differ():
    with pytest.raises(ValueError, match=r"output shape \(2, 3\) differs from the reference's \(3, 2\)"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)))


def test_a_non_finite_output_has_no_numbers():
    ref = reacting(4, 10)
    out = ref.copy()
    out[1, 1] = INF
    m = compare(out, ref)
    assert not m.finite and m.samples == 4 and m.top1_agreement == 0.0 and m.top5_overlap == 0.0
    assert all(math.isnan(getattr(m, k)) for k in ("max_abs", "mean_abs", "cosine", "sqnr_db"))
    assert m.as_dict()["max_abs"] is None and m.as_dict()["finite"] is False
    same = np.repeat(ref[:1], 4, axis=0)
    assert compare(out, same).reference_constant == "the same output for all 4 inputs"
    assert compare(out, ref).output_constant == ""


def test_constancy_is_relative_to_the_largest_magnitude():
    rows = np.repeat(np.array([[1000.0, -2.0, 3.0]]), 3, axis=0)
    within = rows.copy()
    within[1, 1] += 0.9 * CONSTANT_RTOL * 1000  # below the tolerance: still the same output
    assert constancy(within) == "the same output for all 3 inputs"
    beyond = rows.copy()
    beyond[1, 1] += 1.1 * CONSTANT_RTOL * 1000
    assert constancy(beyond) is None
    flat = np.full((2, 3), 7.0)
    flat[0, 0] += 0.9 * CONSTANT_RTOL * 7
    assert constancy(flat) == "all values equal"
    assert constancy(np.zeros((0, 3))) is None and constancy(np.array([[1.0, NAN]] * 2)) is None
    assert constancy(np.zeros((2, 3, 4))) == "all values equal"  # any shape, samples first
    assert constancy(np.arange(6.0).reshape(2, 3) * np.array([[1.0], [1.0]])) is None


def test_a_result_in_json_has_no_nan_or_infinity():
    result = VerifyResult(artifact="a", target="onnx", runtime="onnxruntime", status="fail",
                          metrics={"logits": {"sqnr_db": INF, "cosine": NAN, "max_abs": 0.5, "list": [NAN, 1.0],
                                              "tuple": (-INF, 2)}},
                          tolerances={"sqnr_db": None}, reason="x")
    doc = result.as_json()
    assert doc["metrics"]["logits"] == {"sqnr_db": None, "cosine": None, "max_abs": 0.5, "list": [None, 1.0],
                                        "tuple": [None, 2]}
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


# --- the command line: each option on its own changes the verdict -------------------------------------------------

def random_inputs():
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def onnx64(calibrated_source, tmp_path_factory):
    """``shvit_s1_calibrated`` as ONNX at 64x64, its reference checked to react to 64x64 random inputs."""
    from shvit_edge.export import ExportOptions, export, resolve_targets

    assert_reacts(calibrated_source.deploy_model(), random_inputs())
    folder = tmp_path_factory.mktemp("judge")
    (artifact,) = export(calibrated_source, resolve_targets("onnx"), ExportOptions(resolution=(64, 64)),
                         folder).artifacts
    return artifact.path


@pytest.fixture(scope="module")
def permuted_checkpoint(calibrated_source, tmp_path_factory):
    """The calibrated weights with the classifier's rows shuffled: a reference that reacts to its input as much
    as the real one, whose predictions are other classes."""
    state = {k: v.clone() for k, v in calibrated_source.model.state_dict().items()}
    rows = torch.randperm(calibrated_source.num_classes, generator=torch.Generator().manual_seed(0))
    heads = [k for k, v in state.items() if k.startswith("head.") and v.shape[:1] == (calibrated_source.num_classes,)]
    assert heads
    for k in heads:
        state[k] = state[k][rows]
    path = tmp_path_factory.mktemp("permuted") / "permuted.pth"
    torch.save(state, path)
    from shvit_edge.export import load_source

    model = load_source(variant=None, checkpoint=str(path)).deploy_model()
    assert_reacts(model, random_inputs())
    return path


def verify_json(artifact, *options):
    result = CliRunner().invoke(cli, ["verify", str(artifact), "--samples", "4", *map(str, options), "--json"])
    assert result.exit_code in (0, 1), result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == ("pass" if result.exit_code == 0 else "fail"), (result.exit_code, r)
    return result.exit_code, r


def test_cli_the_fp32_artifact_passes_by_default(onnx64):
    code, r = verify_json(onnx64)
    assert code == 0 and r["reason"].startswith("within tolerance"), r
    assert r["tolerances"]["max_abs"] == 1e-3 and r["tolerances"]["sqnr_db"] is None


@pytest.mark.parametrize("option,value,name,field", [
    ("--max-abs", "1e-12", "max abs", "max_abs"),
    ("--min-sqnr", "999", "SQNR", "sqnr_db"),
])
def test_cli_max_abs_and_min_sqnr_each_fail_it_alone(onnx64, option, value, name, field):
    code, r = verify_json(onnx64, option, value)
    assert code == 1, r
    assert r["reason"].startswith(name) and ";" not in r["reason"], r
    assert r["tolerances"][field] == float(value)
    measured = r["metrics"]["logits"][field]
    assert measured is not None and (measured > 1e-12 if field == "max_abs" else measured < 999), r


def test_cli_min_top1_alone_decides_against_a_reference_that_predicts_other_classes(onnx64, permuted_checkpoint):
    loose = ["--checkpoint", permuted_checkpoint, "--min-cosine", "-1", "--max-abs", "1e6"]
    code, r = verify_json(onnx64, *loose)
    assert code == 1, r
    assert "top-1 agreement" in r["reason"] and "cosine" not in r["reason"] and "max abs" not in r["reason"], r
    assert r["metrics"]["logits"]["top1_agreement"] < 1.0 and r["tolerances"]["top1_agreement"] == 1.0
    code, r = verify_json(onnx64, *loose, "--min-top1", "0")
    assert code == 0 and r["tolerances"]["top1_agreement"] == 0.0, r


# --- verify's other judging helpers -------------------------------------------------------------------------------

def test_an_input_is_judged_against_the_manifest_with_dynamic_axes_masked():
    from shvit_edge.manifest import TensorSpec
    from shvit_edge.verify import input_mismatch

    fixed = TensorSpec(name="x", shape=(1, 3, 64, 64), dtype="float32", layout="NCHW")
    assert not input_mismatch((1, 3, 64, 64), "float32", fixed)
    assert not input_mismatch([1, 3, 64, 64], "float32", fixed)
    assert input_mismatch((2, 3, 64, 64), "float32", fixed)
    assert input_mismatch((1, 3, 64, 64), "float16", fixed)
    assert input_mismatch((1, 3, 64, 32), "float32", fixed)
    dynamic = dataclasses.replace(fixed, dynamic_axes=(0,))
    assert not input_mismatch((8, 3, 64, 64), "float32", dynamic)
    assert input_mismatch((8, 3, 64, 65), "float32", dynamic)
    last = dataclasses.replace(fixed, dynamic_axes=(3,))
    assert not input_mismatch((1, 3, 64, 7), "float32", last) and input_mismatch((2, 3, 64, 7), "float32", last)


def test_softmax_of_the_reference_is_a_stable_distribution_per_row():
    from shvit_edge.verify import _softmax

    x = np.array([[1000.0, 1000.0, 0.0], [0.0, math.log(3.0), -1000.0]])
    p = _softmax(x)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]], atol=1e-12)


@pytest.mark.parametrize("options,flag", [
    ({"samples": 1025}, "--samples"), ({"samples": -1}, "--samples"), ({"seed": -1}, "--seed"),
    ({"seed": 2 ** 32}, "--seed"), ({"threads": 0}, "--threads"),
    ({"overrides": {"cosine": 1.5}}, "--min-cosine"), ({"overrides": {"max_abs": -1.0}}, "--max-abs"),
    ({"overrides": {"top1_agreement": -0.1}}, "--min-top1"), ({"overrides": {"sqnr_db": NAN}}, "--min-sqnr"),
    ({"overrides": {"top5": 1.0}}, "unknown tolerance 'top5'"),
    ({"trust_checkpoint": True}, "--trust-checkpoint applies to --checkpoint FILE only"),
])
def test_options_outside_their_range_are_usage_errors(options, flag):
    from shvit_edge.errors import UsageError
    from shvit_edge.verify import VerifyOptions, check_options

    with pytest.raises(UsageError) as caught:
        check_options(VerifyOptions(**options))
    assert str(caught.value).startswith(flag), str(caught.value)
    if "trust_checkpoint" in options:
        assert str(caught.value) == ("--trust-checkpoint applies to --checkpoint FILE only: a checkpoint a manifest "
                                     "names is always loaded safely (weights only); give the file you trust with "
                                     "--checkpoint")


def test_options_at_their_bounds_pass():
    from shvit_edge.verify import VerifyOptions, check_options

    check_options(VerifyOptions(samples=0, seed=0, threads=None))
    check_options(VerifyOptions(samples=1024, seed=2 ** 32 - 1, threads=1, checkpoint="x", trust_checkpoint=True,
                                overrides={"cosine": -1.0, "max_abs": 0.0, "top1_agreement": 1.0, "sqnr_db": None}))


def test_integer_outputs_are_compared_as_numbers_without_wraparound():
    """A quantized runtime can hand back int8: 100 against -100 is 200 apart, not int8's wrapped -56."""
    out = np.array([[100, -100, 3], [-100, 100, 4]], dtype=np.int8)
    ref = np.array([[-100, 100, 3], [100, -100, 5]], dtype=np.int8)
    m = compare(out, ref)
    assert m.max_abs == 200.0 and m.mean_abs == pytest.approx(801 / 6)
    assert m.sqnr_db == pytest.approx(10 * math.log10(40034 / 160001))
    assert constancy(np.array([[-100, 100], [100, -100]], dtype=np.int8)) is None


def test_small_outputs_have_a_cosine_too():
    ref = 1e-3 * reacting()
    out = ref + 1e-9
    assert compare(out, ref).cosine == pytest.approx(1.0, abs=1e-6)


def test_constancy_needs_two_inputs_to_call_them_the_same_and_equality_includes_the_bound():
    row = np.array([[1.0, 2.0, 3.0]])
    assert constancy(row) is None  # one input: a row that varies says nothing
    assert constancy(np.repeat(row, 2, axis=0)) == "the same output for all 2 inputs"
    bound = CONSTANT_RTOL * 1024  # exact: 1024 is a power of two
    at = np.array([[1024.0, 0.0], [1024.0, bound]])
    assert constancy(at) == "the same output for all 2 inputs"
