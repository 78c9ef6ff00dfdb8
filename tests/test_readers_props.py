"""Property tests of the two readers of untrusted files: target profiles (TOML) and manifests (JSON).

Each case writes a document (a shipped profile or a valid manifest with generated mutations: numbers of every
kind, path-like and odd strings, nested tables, lists, missing and extra keys; raw generated text or bytes; a valid
document with a nasty fragment spliced in) and reads it. It must either succeed, and then every declared bound
holds, every float is finite and every name is plain, or raise a one-line InputError/UsageError naming the file.
Anything else (another exception, a RecursionError, taking more than CASE_SECONDS) fails.

Derandomized, without an example database: CI runs the same cases every time.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import time_limit
from shvit_edge import bounds
from shvit_edge.errors import InputError, UsageError
from shvit_edge.manifest import (ArtifactRef, CheckpointRef, Manifest, Preprocessing, Quantization, TensorSpec,
                                 is_plain_file_name, read_manifest)
from shvit_edge.backends.base import backends
from shvit_edge.quantize import modes
from shvit_edge.targets import (PRECISIONS, Tolerance, available_profiles, is_plain_name, load_profile,
                                tolerance_classes)

CASES = 2000
CASE_SECONDS = 5
SETTINGS = settings(max_examples=CASES, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


# --- what a successful read must satisfy -------------------------------------------------------------------------

def assert_bounded(obj, where: str = "") -> None:
    """Every field with declared bounds is within them (each item of a tuple field), every float is finite."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            limits = f.metadata.get("bounds")
            if limits is not None and value is not None:
                for item in value if isinstance(value, tuple) else (value,):
                    assert limits.problem(item) is None, (f"{where}.{f.name}", item)
            assert_bounded(value, f"{where}.{f.name}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            assert_bounded(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            assert_bounded(v, f"{where}[{i}]")
    elif isinstance(obj, float):
        assert math.isfinite(obj), (where, obj)


def assert_refusal_is_clean(exc: BaseException, path) -> None:
    assert isinstance(exc, (InputError, UsageError)), repr(exc)
    message = str(exc)
    assert len(message.splitlines()) == 1, message
    if isinstance(exc, InputError):
        assert message.startswith(f"{path}: "), message


def read(reader, path, outcomes: dict):
    """``reader(path)``, or None after a clean refusal; any other outcome fails the case."""
    try:
        with time_limit(CASE_SECONDS):
            result = reader(path)
    except (InputError, UsageError) as exc:
        assert_refusal_is_clean(exc, path)
        outcomes["refused"] += 1
        return None
    outcomes["read"] += 1
    return result


# --- generated values ----------------------------------------------------------------------------------------------

BACKENDS = tuple(backends())
MODE_NAMES = tuple(m.name for b in backends().values() for m in b.quantization_modes)
_ALL_BOUNDS = [b for b in vars(bounds).values() if isinstance(b, bounds.Bounds)]
_EDGES = sorted({v for b in _ALL_BOUNDS for end in (b.lo, b.hi) if end is not None
                 for v in (end - 1, end, end + 1, end - 0.5, end + 0.5)}, key=float)
_NAMES = (*BACKENDS, *PRECISIONS, *MODE_NAMES, *tolerance_classes(), "host-onnx", "pixel-8", "nchw", "nhwc",
          "xnnpack", "iOS16", "all", "cpu_only", "float32", "float16", "uint8", "NCHW", "NC", "image", "tensor")
_PATHLIKE = ("fp16.mlpackage/../../../ESCAPED", "../x", "..", ".", "", "a/b", "a\\b", "/etc/passwd", "x\x00y",
             "new\nline", "tab\tname", " lead", "trail ", ".hidden", "-dash", "a..b", "x" * 64, "x" * 65, "\u2028",
             "\ud800", "\ufffd", "con")

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from([0, 1, -1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 63, 2 ** 64, 10 ** 400, -(10 ** 400)]),
    st.sampled_from(_EDGES),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-300, 1e300, 5e-324]),
)
strings = st.one_of(st.text(max_size=40), st.sampled_from(_NAMES), st.sampled_from(_PATHLIKE),
                    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True))
scalars = st.one_of(numbers, strings, st.booleans(), st.none())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(strings, inner, max_size=4)),
                      max_leaves=8)
_SAME_KIND = {bool: st.booleans(), (int, float): numbers, str: strings, list: st.lists(scalars, max_size=5),
              dict: st.dictionaries(strings, scalars, max_size=4)}


def _paths(doc, prefix=()):
    """Every place in ``doc`` (the root too), as key/index tuples."""
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


@st.composite
def mutated(draw, bases: list, field_names: tuple):
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        target = parent[path[-1]] if path else doc
        op = draw(st.sampled_from(["tweak", "tweak", "tweak", "set", "delete", "add"]))
        if op == "tweak" and path:  # a value of the same kind: often still a valid document
            kind = (bool if isinstance(target, bool) else
                    (int, float) if isinstance(target, (int, float)) else type(target))
            parent[path[-1]] = draw(_SAME_KIND.get(kind, values))
        elif op == "add" and isinstance(target, dict):
            target[draw(st.one_of(st.sampled_from(field_names), strings))] = draw(values)
        elif op == "add" and isinstance(target, list):
            target.append(draw(values))
        elif op == "delete" and path:
            del parent[path[-1]]
        elif path:
            parent[path[-1]] = draw(values)
    return doc


# --- writing TOML (no writer in the standard library) ------------------------------------------------------------

def _toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"


def to_toml(doc: dict, sections: bool) -> str:
    """``doc`` as TOML: top-level tables as ``[sections]`` (deeper ones inline), or everything inline. TOML has
    no null: a None is left out."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items()
             if v is not None and not (sections and isinstance(v, dict))]
    for k, v in doc.items():
        if sections and isinstance(v, dict):
            lines.append(f"[{_toml_key(k)}]")
            lines += [f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items() if vv is not None]
    return "\n".join(lines) + "\n"


def spliced(texts: st.SearchStrategy, fragments: tuple):
    """A text with a nasty fragment inserted at a drawn place."""
    @st.composite
    def build(draw):
        text = draw(texts)
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.one_of(st.sampled_from(fragments), st.text(max_size=10))) + text[at:]
    return build()


def _write(path, content) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8", "surrogatepass"))


# --- target profiles -----------------------------------------------------------------------------------------------

PROFILES = [tomllib.loads(p.read_text()) for p in available_profiles().values()]
PROFILE_FIELDS = ("name", "description", "backend", "device", "export", "harness", "tolerances", "precision",
                  "precisions", "quantization", "opset", "warmup", "iterations", "cosine", "max_abs",
                  "top1_agreement", "sqnr_db", "fp32", "fp16", "int8", "palettize-4", "os", "arch", "source")
TOML_FRAGMENTS = ("[" * 300, "{a=" * 300, "a." * 3000 + "a = 1\n", "\n[" + "a." * 3000 + "a]\n", "nan", "inf",
                  "-inf", "1e400", "9" * 5000, '"""', "'''", "#", "\n", "=", "\\", "\x00", "\x7f", "\r", "\ud800",
                  "\ufeff", "\n[tolerances.fp32]\ncosine = nan\n", '\nname = "../x"\n', "\n[harness]\nwarmup = -1\n",
                  "\nopset = 17\n", ".", "[[", "]]", "{", "}", ",", '"', "'")
toml_docs = st.builds(to_toml, mutated(PROFILES, PROFILE_FIELDS), st.booleans())
profile_texts = st.one_of(
    toml_docs, toml_docs, toml_docs,
    st.text(max_size=300),
    st.binary(max_size=300),
    spliced(st.builds(to_toml, st.sampled_from(PROFILES), st.booleans()), TOML_FRAGMENTS),
)


def test_the_profile_loader_reads_or_refuses_cleanly(tmp_path_factory):
    path = tmp_path_factory.mktemp("props") / "generated.toml"
    outcomes = {"read": 0, "refused": 0}

    @SETTINGS
    @given(profile_texts)
    def case(content):
        _write(path, content)
        profile = read(load_profile, path, outcomes)
        if profile is not None:
            assert is_plain_name(profile.name), profile.name
            assert profile.backend in BACKENDS
            assert set(profile.export.precisions) <= set(PRECISIONS)
            assert set(profile.tolerances) <= set(tolerance_classes())
            assert_bounded(profile)

    case()
    print(f"\n{outcomes}")
    assert outcomes["read"] + outcomes["refused"] >= CASES
    assert outcomes["read"] >= CASES // 50, outcomes  # the properties of a read profile were checked often enough


# --- manifests -----------------------------------------------------------------------------------------------------

def _manifest() -> Manifest:
    return Manifest(
        schema_version=2, shvit_edge_version="0.1.0", target="onnx", profile="host-onnx", variant="shvit_s1",
        resolution=(224, 224), batch=1, num_classes=1000, distillation=False,
        checkpoint=CheckpointRef(path="x.pth", sha256="ab" * 32, layout="official", seed=0),
        inputs=(TensorSpec("image", (1, 3, 224, 224), "float32", "NCHW", dynamic_axes=(0,)),),
        outputs=(TensorSpec("logits", (1, 1000), "float32", "NC"),),
        preprocessing=Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255,
                                    resize=256),
        precision="fp32", quantization=Quantization("int8", "random", 32, keep_float=("head",)),
        versions={"torch": "2.13.0"},
        artifact=ArtifactRef(file="a.onnx", sha256="cd" * 32, sha256_method="sha256 of the file's bytes",
                             size_bytes=10),
        export_seconds=1.5, details={"opset": 18, "nested": {"list": [1, 2.5, "x"]}},
        verification={"results": [{"status": "pass", "metrics": {"logits": {"cosine": 0.99}}}]},
        tolerances={"fp32": Tolerance(0.99999, 1e-3, 1.0), "int8": Tolerance(0.99, 1.0, 0.6, 20.0)})


MANIFESTS = [json.loads(_manifest().to_json()),
             json.loads(dataclasses.replace(_manifest(), quantization=None, tolerances=None, schema_version=1,
                                            verification=None).to_json())]
MANIFEST_FIELDS = tuple(dict.fromkeys(
    f.name for cls in (Manifest, TensorSpec, Preprocessing, CheckpointRef, Quantization, ArtifactRef, Tolerance)
    for f in dataclasses.fields(cls)))
JSON_FRAGMENTS = ("[" * 3000, '{"a":' * 3000, "NaN", "Infinity", "-Infinity", "1e400", "9" * 5000, '"\\ud800"',
                  "\\", '"', ",", "{", "}", "[", "]", ":", "null", "\x00", "\ufeff", '"inputs": [],', '"batch": 0,')
json_docs = st.builds(json.dumps, mutated(MANIFESTS, MANIFEST_FIELDS))
manifest_texts = st.one_of(
    json_docs, json_docs, json_docs,
    st.text(max_size=300),
    st.binary(max_size=300),
    spliced(st.builds(json.dumps, st.sampled_from(MANIFESTS)), JSON_FRAGMENTS),
)


def test_the_manifest_reader_reads_or_refuses_cleanly(tmp_path_factory):
    path = tmp_path_factory.mktemp("props") / "a.onnx.json"
    outcomes = {"read": 0, "refused": 0}

    @SETTINGS
    @given(manifest_texts)
    def case(content):
        _write(path, content)
        manifest = read(read_manifest, path, outcomes)
        if manifest is not None:
            assert manifest.target in BACKENDS and manifest.precision in PRECISIONS
            assert is_plain_name(manifest.profile) and is_plain_file_name(manifest.artifact.file)
            assert manifest.inputs and any(o.dtype == "float32" for o in manifest.outputs)
            assert manifest.quantization is None or manifest.quantization.mode in modes(manifest.target)
            assert set(manifest.tolerances or {}) <= set(tolerance_classes())
            assert_bounded(manifest)
            assert read_manifest(path) == manifest  # and reading is repeatable
            path.write_text(manifest.to_json())  # what was read can be written and read back
            assert read_manifest(path) == manifest

    case()
    print(f"\n{outcomes}")
    assert outcomes["read"] + outcomes["refused"] >= CASES
    assert outcomes["read"] >= CASES // 50, outcomes


@pytest.mark.parametrize("text", [to_toml(p, sections) for p in PROFILES for sections in (True, False)])
def test_the_toml_writer_round_trips_the_shipped_profiles(tmp_path, text):
    """The generator's TOML writer is right: a shipped profile written back loads."""
    path = tmp_path / "p.toml"
    path.write_text(text)
    assert load_profile(path).name in available_profiles()
