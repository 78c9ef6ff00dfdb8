"""Property: every numeric option of every command, given any value a user could type, either is accepted (and
the command goes on to its next check) or ends in one ``Error:`` line with exit 2: no traceback, no hang, no
file written. Each command here is pointed at a path that does not exist, so an accepted value ends at that
path's one-line error and nothing heavy ever runs."""

from __future__ import annotations


import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from shvit_edge import bounds
from shvit_edge.bench import usable_cpus
from conftest import time_limit
from shvit_edge.cli import cli

MISSING = "/nonexistent-shvit-edge/model"

#: (command, the arguments around the option, {option: its Bounds, or None for a free-form option})
COMMANDS = {
    "export": (["export", "--target", "onnx", "--checkpoint", f"{MISSING}.pth"],
               {"--batch": bounds.BATCH, "--seed": bounds.SEED, "--calibration-samples": bounds.CALIBRATION_SAMPLES,
                "--jobs": None, "--resolution": None}),
    "quantize-report": (["quantize-report", "--target", "onnx", "--checkpoint", f"{MISSING}.pth", "--quantize",
                         "int8-dynamic"],
                        {"--samples": bounds.SAMPLES, "--keep": bounds.LAYER_COUNT, "--show": bounds.LAYER_COUNT,
                         "--seed": bounds.SEED, "--calibration-samples": bounds.CALIBRATION_SAMPLES,
                         "--resolution": None}),
    "verify": (["verify", f"{MISSING}.onnx"],
               {"--samples": bounds.SAMPLES, "--seed": bounds.SEED, "--min-cosine": bounds.COSINE,
                "--max-abs": bounds.MAX_ABS, "--min-top1": bounds.FRACTION, "--min-sqnr": bounds.SQNR_DB,
                "--threads": bounds.THREADS}),
    "bench": (["bench", f"{MISSING}.onnx"],
              {"--threads": bounds.Bounds(1, len(usable_cpus()), integer=True), "--warmup": bounds.WARMUP,
               "--iterations": bounds.ITERATIONS, "--seconds": bounds.SECONDS, "--rounds": bounds.ROUNDS}),
}

NUMBERISH = st.one_of(
    st.integers(min_value=-(2 ** 80), max_value=2 ** 80).map(str),
    st.integers(min_value=-3, max_value=5000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-2, max_value=2).map(str),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-0", "0.0", "1e-320", "0x10", "", " 7",
                     "1_000", "\u0663", "7\n", "auto", "64x64", "0x0", "100000", "64x100000", "-64", "None",
                     "224x", "x", "16x16x16", "1e3"]),
    st.text(max_size=12),
)


def _parsed(text: str, rule: bounds.Bounds):
    try:
        return int(text.strip()) if rule.integer else float(text.strip())
    except ValueError:
        return None


def _accepted(text: str, rule: bounds.Bounds | None) -> bool | None:
    """Whether the value is in range (None: the option is free-form; only the error's shape is checked)."""
    if rule is None:
        return None
    value = _parsed(text, rule)
    return value is not None and rule.problem(value) is None


@pytest.mark.parametrize("command", list(COMMANDS))
@settings(max_examples=400, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_numeric_options_accept_their_range_and_refuse_the_rest_in_one_line(command, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base, options = COMMANDS[command]
    option = data.draw(st.sampled_from(sorted(options)), label="option")
    text = data.draw(NUMBERISH, label="value")
    with time_limit(20):
        result = CliRunner().invoke(cli, [*base, f"{option}={text}"])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1, result.output
    accepted = _accepted(text, options[option])
    if accepted is True:  # in range: the command went on to the missing path (or another check of its own)
        assert f"Invalid value for '{option}'" not in errors[0] and f"{option} must" not in errors[0], errors[0]
    elif accepted is False:
        assert option in errors[0], errors[0]
    assert list(tmp_path.iterdir()) == [], "a refused command wrote a file"
