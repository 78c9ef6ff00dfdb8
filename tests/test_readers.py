"""Target profiles and manifests are read defensively: numbers within their declared bounds and finite, names that
cannot become paths, and no input (deep nesting, a huge or endless file, a pathological dotted key) that hangs the
reader or ends in a traceback. Every refusal is a one-line InputError naming the file (and the key)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from shvit_edge import bounds
from shvit_edge._strict import from_mapping
from shvit_edge.errors import InputError
from shvit_edge.manifest import (MAX_MANIFEST_BYTES, ArtifactRef, CheckpointRef, Manifest, Preprocessing, Quantization,
                                 TensorSpec, read_manifest)
from shvit_edge.targets import MAX_PROFILE_BYTES, Tolerance, is_plain_name, load_profile, resolve_target

from conftest import ROOT, time_limit

BASE = (ROOT / "targets" / "host-onnx.toml").read_text()


def refused(read, path, *needles: str) -> str:
    """``read(path)`` raises a one-line InputError that names ``path`` and holds every needle."""
    with time_limit(10), pytest.raises(InputError) as err:
        read(path)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{path}: "), message
    for needle in needles:  # not in the path: pytest names tmp_path after the test
        assert needle in message[len(str(path)):], message
    return message


def _profile(tmp_path, text: str, name: str = "mine.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- 1. bounds and finite floats, profiles ----------------------------------------------------------------------

@pytest.mark.parametrize("old,new,key", [
    ("warmup = 10", "warmup = -1", "harness.warmup"),
    ("warmup = 10", "warmup = 100001", "harness.warmup"),
    ("iterations = 100", "iterations = 0", "harness.iterations"),
    ("opset = 18", "opset = 17", "export.opset"),  # torch's exporter writes 18 for anything lower
    ("opset = 18", "opset = 24", "export.opset"),
    ("cosine = 0.99999", "cosine = 1.5", "tolerances.fp32.cosine"),
    ("cosine = 0.99999", "cosine = nan", "tolerances.fp32.cosine"),
    ("cosine = 0.99999", "cosine = -inf", "tolerances.fp32.cosine"),
    ("max_abs = 1e-3", "max_abs = -0.5", "tolerances.fp32.max_abs"),
    ("max_abs = 1e-3", "max_abs = inf", "tolerances.fp32.max_abs"),
    ("max_abs = 1e-3", "max_abs = 1e400", "tolerances.fp32.max_abs"),  # overflows to inf
    ("top1_agreement = 1.0", "top1_agreement = 2", "tolerances.fp32.top1_agreement"),
    ("sqnr_db = 20.0", "sqnr_db = 1e9", "tolerances.int8.sqnr_db"),
    ("sqnr_db = 20.0", "sqnr_db = nan", "tolerances.int8.sqnr_db"),
])
def test_profile_numbers_outside_their_bounds_or_not_finite_are_refused(tmp_path, old, new, key):
    assert BASE.count(old) >= 1
    path = _profile(tmp_path, BASE.replace(old, new, 1))
    refused(load_profile, path, key)


def test_profile_numbers_at_their_bounds_are_accepted(tmp_path):
    text = BASE.replace("opset = 18", "opset = 23").replace("warmup = 10", "warmup = 0") \
        .replace("cosine = 0.99999", "cosine = -1").replace("max_abs = 1e-3", "max_abs = 0").replace("sqnr_db = 20.0",
                                                                                                     "sqnr_db = -1000")
    profile = load_profile(_profile(tmp_path, text))
    assert profile.export.opset == 23 and profile.harness.warmup == 0
    assert profile.tolerances["fp32"] == Tolerance(cosine=-1.0, max_abs=0.0, top1_agreement=1.0)
    assert profile.tolerances["int8"].sqnr_db == -1000.0


@dataclass(frozen=True)
class _Shaped:
    dims: tuple[int, ...] = field(default=(), metadata=bounds.DIMENSION.meta)
    pair: tuple[int, int] = field(default=(1, 1), metadata=bounds.BATCH.meta)
    ratio: float | None = field(default=None, metadata=bounds.FRACTION.meta)
    free: float = 0.0


@pytest.mark.parametrize("data,key", [
    ({"dims": [1, 0, 3]}, "dims[1] must be from 1 to"),
    ({"pair": [1, 1025]}, "pair[1] must be from 1 to 1024"),
    ({"ratio": 1.5}, "ratio must be from 0 to 1"),
    ({"free": float("nan")}, "free must be a finite number"),
    ({"free": float("-inf")}, "free must be a finite number"),
    ({"free": 10 ** 400}, "free must be a finite number"),
])
def test_bounds_apply_to_a_field_and_to_each_item_of_a_tuple_field(data, key):
    with pytest.raises(InputError, match="^x.json: " + key.replace("[", r"\[").replace("]", r"\]")):
        from_mapping(_Shaped, data, "x.json")
    assert from_mapping(_Shaped, {"dims": [1, 2], "ratio": None, "free": 3}, "x.json") == \
        _Shaped(dims=(1, 2), free=3.0)


# --- 2. a profile name is a plain name ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fp16.mlpackage/../../../ESCAPED", "../escaped", "..", ".", ".hidden", "a/b",
                                  "a\\\\b", "", "a b", "x" * 65, "a..b", "-dash-first", "tab\\tname", "new\\nline"])
def test_a_profile_name_that_is_not_a_plain_name_is_refused(tmp_path, name):
    path = _profile(tmp_path, BASE.replace('name = "host-onnx"', f'name = "{name}"'))
    refused(load_profile, path, "name", "not a plain name")


@pytest.mark.parametrize("name", ["pixel-8", "a", "A.b_c-9", "x" * 64, "iphone12-ios16"])
def test_plain_profile_names_load(tmp_path, name):
    assert is_plain_name(name)
    assert load_profile(_profile(tmp_path, BASE.replace('name = "host-onnx"', f'name = "{name}"'))).name == name


# --- 4. the profile reader is bounded ----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [  # within the size cap, so the nesting itself is what is refused
    "x = " + "[" * 28_000 + "]" * 28_000,
    "x = " + "{a = " * 9_000 + "1" + "}" * 9_000,
    "x = " + "[" * 200 + "]" * 200,  # parses, then refused by depth
])
def test_deeply_nested_toml_is_refused(tmp_path, text):
    refused(load_profile, _profile(tmp_path, text + "\n" + BASE), "nested")


@pytest.mark.parametrize("text", [  # within the size cap (MAX_PROFILE_BYTES), so the scan is what refuses them
    "a." * 12_000 + "a = 1\n",
    "[" + "a." * 12_000 + "a]\n",
    "[[" + " a . " * 12_000 + "a]]\n",
    '"a".' * 12_000 + "'a' = 1\n",
    "x = {" + "a." * 12_000 + "a = 1}\n",
    "a." * 12_000 + "a\n",  # no '=': tomllib still builds the key part by part
])
def test_a_deep_dotted_key_is_refused_at_once(tmp_path, text):
    path = _profile(tmp_path, text)
    start = time.perf_counter()
    refused(load_profile, path, "dotted key of more than 16 parts", "line 1")
    assert time.perf_counter() - start < 1.0  # tomllib alone takes seconds (about 50 s at 50,000 parts)


def test_the_reported_50000_deep_dotted_key_is_refused_at_once(tmp_path):
    path = _profile(tmp_path, "a." * 49_999 + "a = 1\n")
    start = time.perf_counter()
    refused(load_profile, path, "more than the", str(MAX_PROFILE_BYTES))
    assert time.perf_counter() - start < 1.0


def test_dotted_keys_up_to_16_parts_and_dotted_text_in_strings_and_comments_load(tmp_path):
    dotted = ".".join("abcdefghijklmnop")
    text = BASE.replace('[device]', f'[device]\n# {"a." * 100}a = 1\nos_version = "{"1." * 100}1"') \
        .replace("[export]", f'[export]\nminimum_deployment_target = """\n{"b." * 100}b = 2\n"""') \
        + f"\n[{dotted}]\nx = 1\n"
    path = _profile(tmp_path, text)
    refused(load_profile, path, "unknown key 'a'")  # parsed: only the (16-part) table is unknown
    assert load_profile(_profile(tmp_path, text.split(f"\n[{dotted}]")[0])).device.os_version == "1." * 100 + "1"


def test_a_profile_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    path = _profile(tmp_path, BASE + "#" * MAX_PROFILE_BYTES)
    refused(load_profile, path, "more than the", str(MAX_PROFILE_BYTES))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_profile_or_manifest_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    refused(load_profile, fifo, "not a regular file")
    refused(read_manifest, fifo, "not a regular file")
    refused(resolve_target, fifo, "not a regular file")


def _limit_memory():  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.skipif(not os.path.exists("/dev/zero") or sys.platform != "linux", reason="no /dev/zero")
def test_dev_zero_is_not_read():
    """In a child with 1 GiB of address space and a timeout: a reader that read /dev/zero would fill memory."""
    code = ("from pathlib import Path\n"
            "from shvit_edge.errors import InputError\n"
            "from shvit_edge.manifest import read_manifest\n"
            "from shvit_edge.targets import load_profile\n"
            "for read in (load_profile, read_manifest):\n"
            "    try:\n"
            "        read(Path('/dev/zero'))\n"
            "    except InputError as exc:\n"
            "        print(exc)\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           preexec_fn=_limit_memory)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == ["/dev/zero: target profile is not a regular file",
                                         "/dev/zero: manifest is not a regular file"]


def test_folders_are_not_read(tmp_path):
    refused(load_profile, tmp_path, "not a regular file")
    refused(read_manifest, tmp_path, "not a regular file")


def test_missing_files_and_invalid_text_are_one_line_input_errors(tmp_path):
    refused(load_profile, tmp_path / "missing.toml", "cannot read target profile")
    refused(read_manifest, tmp_path / "missing.json", "cannot read manifest")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"name = \xff\n")
    refused(load_profile, bad, "not valid TOML")
    refused(load_profile, _profile(tmp_path, "x = 1" + "0" * 5000 + "\n"), "not valid TOML")


def test_keys_a_file_supplies_are_quoted_in_messages(tmp_path):
    extra = '\n[tolerances."fp8\\nx"]\ncosine = 1\nmax_abs = 1\ntop1_agreement = 1\n'
    message = refused(load_profile, _profile(tmp_path, BASE + extra), "unknown tolerance class")
    assert "'fp8\\nx'" in message


# --- 3. the manifest reader ---------------------------------------------------------------------------------------

def _manifest() -> Manifest:
    return Manifest(
        schema_version=2, shvit_edge_version="0.1.0", target="onnx", profile="host-onnx", variant="shvit_s1",
        resolution=(224, 224), batch=1, num_classes=1000, distillation=False,
        checkpoint=CheckpointRef(path="x.pth", sha256="ab" * 32, layout="official"),
        inputs=(TensorSpec("image", (1, 3, 224, 224), "float32", "NCHW", dynamic_axes=(0,)),),
        outputs=(TensorSpec("logits", (1, 1000), "float32", "NC"),),
        preprocessing=Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255,
                                    resize=256),
        precision="fp32", quantization=Quantization("int8", "random", 32), versions={"torch": "2.13.0"},
        artifact=ArtifactRef(file="a.onnx", sha256="cd" * 32, sha256_method="sha256 of the file's bytes",
                             size_bytes=10),
        export_seconds=1.5, details={"opset": 18},
        tolerances={"fp32": Tolerance(0.99999, 1e-3, 1.0), "int8": Tolerance(0.99, 1.0, 0.6, 20.0)})


def _write_manifest(tmp_path, data) -> os.PathLike:
    path = tmp_path / "a.onnx.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_full_manifest_round_trips(tmp_path):
    manifest = _manifest()
    assert read_manifest(_write_manifest(tmp_path, manifest.to_json())) == manifest


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit,needles", [
    (_set("inputs", []), ("inputs is empty",)),
    (_set("outputs", 0, "dtype", "float16"), ("no float32 output",)),
    (_set("outputs", []), ("no float32 output",)),
    (_set("resolution", [0, 224]), ("resolution[0] must be from 64 to 4096",)),
    (_set("resolution", [100000, 100000]), ("resolution[0]",)),
    (_set("batch", 0), ("batch must be",)),
    (_set("num_classes", 0), ("num_classes must be",)),
    (_set("export_seconds", -1), ("export_seconds must be",)),
    (_set("inputs", 0, "shape", [1, 3, 0, 224]), ("inputs[0].shape[2] must be",)),
    (_set("inputs", 0, "dynamic_axes", [4]), ("inputs[0].dynamic_axes",)),
    (_set("artifact", "size_bytes", -1), ("artifact.size_bytes must be",)),
    (_set("checkpoint", "seed", -1), ("checkpoint.seed must be",)),
    (_set("checkpoint", "seed", 2 ** 32), ("checkpoint.seed must be",)),
    (_set("quantization", "calibration_count", 10_001), ("quantization.calibration_count must be",)),
    (_set("preprocessing", "resize", 0), ("preprocessing.resize must be",)),
    (_set("preprocessing", "color", "BGR"), ("preprocessing.color 'BGR' is not one of RGB",)),
    (_set("preprocessing", "applied", "on-device"), ("preprocessing.applied 'on-device'",)),
    (_set("quantization", "mode", "int3"), ("quantization.mode 'int3'",)),
    (_set("target", "tvm"), ("target 'tvm'",)),
    (_set("precision", "fp8"), ("precision 'fp8'",)),
    (_set("profile", "../../evil.toml"), ("profile '../../evil.toml'",)),
    (_set("artifact", "file", "../a.onnx"), ("artifact.file '../a.onnx'",)),
    (_set("artifact", "file", "sub/a.onnx"), ("artifact.file",)),
    (_set("artifact", "file", "sub\\a.onnx"), ("artifact.file",)),
    (_set("artifact", "file", ".."), ("artifact.file",)),
    (_set("artifact", "file", ""), ("artifact.file",)),
    (_set("tolerances", "int9", {"cosine": 1, "max_abs": 1, "top1_agreement": 1}), ("tolerance class", "int9")),
    (_set("tolerances", "int8", "cosine", 7), ("tolerances.int8.cosine must be",)),
    (_set("versions", "torch", 2), ("versions.torch must be str",)),
    (_set("details", "deep", json.loads("[" * 70 + "]" * 70)), ("details.deep", "nested more than")),
])
def test_a_manifest_verify_cannot_use_is_refused(tmp_path, edit, needles):
    data = json.loads(_manifest().to_json())
    edit(data)
    refused(read_manifest, _write_manifest(tmp_path, data), *needles)


@pytest.mark.parametrize("old,new,key", [
    ('"export_seconds": 1.5', '"export_seconds": NaN', "export_seconds"),
    ('"export_seconds": 1.5', '"export_seconds": 1e400', "export_seconds"),
    ('"scale": 0.00392156862745098', '"scale": Infinity', "preprocessing.scale"),
    ('"opset": 18', '"opset": -Infinity', "details.opset"),
])
def test_nan_and_infinity_anywhere_in_a_manifest_are_refused(tmp_path, old, new, key):
    text = _manifest().to_json()
    assert old in text
    refused(read_manifest, _write_manifest(tmp_path, text.replace(old, new)), key, "finite")


def test_a_manifest_is_never_written_with_nan():
    with pytest.raises(ValueError):
        dataclasses.replace(_manifest(), details={"x": math.nan}).to_json()


@pytest.mark.parametrize("text,needle", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
    ("1" * 5000, "not valid JSON"),
    ('{"schema_version": 2, "schema_version": 2}', "appears twice"),
    ("[]", "must be a table/object"),
    ("\xff", "not valid JSON"),
])
def test_broken_manifest_text_is_a_one_line_input_error(tmp_path, text, needle):
    path = tmp_path / "a.onnx.json"
    path.write_bytes(text.encode("latin-1"))
    refused(read_manifest, path, needle)


def test_a_manifest_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "a.onnx.json"
    with open(path, "wb") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: nothing of it is read
    refused(read_manifest, path, "more than the", str(MAX_MANIFEST_BYTES))
