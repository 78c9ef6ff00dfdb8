"""Validation bundles: everything a device needs to run artifacts and everything the host needs to judge them.

``shvit-edge bundle ARTIFACT... --out DIR`` (:func:`write_bundle`) writes::

    DIR/bundle.json                     what is here (shvit_edge/schemas/bundle.schema.json; docs/bundle.md)
    DIR/artifacts/<artifact>            each artifact (a folder for .mlpackage) and its manifest <artifact>.json
    DIR/artifacts/<artifact>.bpte       ExecuTorch: the program with the same inputs and expected outputs
    DIR/tensors/<id>.f32|.u8            raw little-endian inputs (as verify feeds them) and reference outputs

The inputs are verify's (:class:`~shvit_edge.verify.Inputs`: the images preprocessed as each manifest says, then
seeded random inputs), the references are the PyTorch model's outputs on them in the artifact's output space,
the tolerances are those verify judges the artifact by, and the run settings (warm-up, iterations, threads,
the delegates or compute units to sweep) come from the artifact's profile. ``--zip`` writes one archive instead.
Nothing is half-written: the bundle appears complete or not at all.

:func:`open_bundle` reads a bundle (a folder or a zip) for the host harness and the results store, and refuses,
with a one-line :class:`~shvit_edge.errors.InputError`, anything that does not hold: a ``bundle.json`` that
breaks its schema, a path outside the bundle (absolute, ``..``, through a symlink), a zip entry that is a
symlink or leaves the folder, a file missing, of another size or sha256, an artifact that is not the one its
manifest names, a tensor whose file does not hold its shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .. import __version__
from .._strict import read_capped
from ..artifacts import find_artifacts
from ..atomic import atomic_outputs, sha256_of
from ..bounds import ITERATIONS, SAMPLES, SEED, THREADS, WARMUP
from ..errors import InputError, UsageError
from ..manifest import Manifest, manifest_path, read_manifest
from ..targets import Tolerance
from .documents import inside, load_json, safe_relative, validate

SCHEMA_VERSION = 1
KIND = "shvit-edge-bundle"
BUNDLE_JSON = "bundle.json"
#: a bundle.json larger than this is refused before it is read
MAX_BUNDLE_JSON_BYTES = 16 << 20
#: a zip whose entries would unpack to more than this (or hold more entries than MAX_ZIP_ENTRIES) is refused
MAX_ZIP_BYTES = 8 << 30
MAX_ZIP_ENTRIES = 100_000
DTYPES = {"float32": (np.dtype("<f4"), ".f32"), "uint8": (np.dtype("u1"), ".u8")}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BundleOptions:
    images: str | None = None
    samples: int = 8
    seed: int = 0
    #: the reference checkpoint instead of the one each manifest names (as verify's ``--checkpoint``)
    checkpoint: str | None = None
    trust_checkpoint: bool = False
    #: the run settings, when not the profile's
    warmup: int | None = None
    iterations: int | None = None
    threads: int | None = None
    zip: bool = False


def check_run_settings(warmup: int | None, iterations: int | None, threads: int | None) -> None:
    """``--warmup``, ``--iterations`` and ``--threads`` within their bounds (None: not given)."""
    for flag, bounds, value in (("--warmup", WARMUP, warmup), ("--iterations", ITERATIONS, iterations),
                                ("--threads", THREADS, threads)):
        if value is not None:
            bounds.check(flag, value)


def check_options(options: BundleOptions) -> None:
    SAMPLES.check("--samples", options.samples)
    SEED.check("--seed", options.seed)
    check_run_settings(options.warmup, options.iterations, options.threads)
    if options.trust_checkpoint and options.checkpoint is None:
        raise UsageError("--trust-checkpoint applies to --checkpoint FILE only")


def _write_tensor(folder: Path, tensors: dict, array: np.ndarray, layout: str, role: str, description: str) -> str:
    """Write ``array`` once (tensors with equal bytes, shape and layout share a file); its tensor id."""
    dtype, suffix = DTYPES[str(array.dtype)]
    data = np.ascontiguousarray(array.astype(dtype, copy=False)).tobytes()
    digest = hashlib.sha256(data + repr((array.shape, layout)).encode()).hexdigest()[:16]
    tensor_id = f"{role}-{digest}"
    if tensor_id not in tensors:
        relative = f"tensors/{tensor_id}{suffix}"
        (folder / relative).write_bytes(data)
        tensors[tensor_id] = {"file": relative, "dtype": str(array.dtype), "shape": list(array.shape),
                              "layout": layout, "role": role, "description": description}
    return tensor_id


def _copy_artifact(artifact: Path, folder: Path) -> None:
    target = folder / "artifacts" / artifact.name
    if target.exists() or (folder / "artifacts" / manifest_path(artifact).name).exists():
        raise UsageError(f"two artifacts named {artifact.name}: a bundle holds each name once")
    if artifact.is_dir():
        shutil.copytree(artifact, target, symlinks=True)
    else:
        shutil.copyfile(artifact, target)
    shutil.copyfile(manifest_path(artifact), folder / "artifacts" / manifest_path(artifact).name)


def _files(folder: Path) -> list[dict]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / BUNDLE_JSON):
        found.append({"path": path.relative_to(folder).as_posix(), "sha256": sha256_of(path),
                      "size": path.stat().st_size})
    return found


def bundle_id(doc: dict) -> str:
    """The bundle's identity: the sha256 of ``bundle.json`` without its ``id``, as canonical JSON (keys sorted, no
    spaces, UTF-8). Every file is in it by its sha256 (``files``), and so is every tolerance and setting: a
    bundle.json edited by hand no longer matches its id."""
    rest = {k: v for k, v in doc.items() if k != "id"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_bundle(paths, out: Path, options: BundleOptions, progress: Progress | None = None) -> Path:
    """Write the bundle of the artifacts in ``paths`` at ``out`` (a folder, or with ``options.zip`` the archive
    ``out`` with ``.zip`` added unless it has it); returns what was written. Refuses (:class:`UsageError`) an
    existing ``out`` and (:class:`InputError`) an artifact that is not the file its manifest describes."""
    from ..backends.base import get_backend, require
    from ..images import list_images
    from ..verify import Inputs, References, VerifyOptions, judged_by, profile_of, reference_space

    progress = progress or (lambda message: None)
    check_options(options)
    out = Path(out)
    final = out.with_name(out.name + ".zip") if options.zip and out.suffix != ".zip" else out
    if final.exists() or final.is_symlink():
        raise UsageError(f"{final} exists; give a new --out")
    if not final.parent.is_dir():
        raise UsageError(f"{final.parent}: no such folder for --out")
    images = list_images(options.images) if options.images is not None else []
    if not images and options.samples == 0:
        raise UsageError("nothing to bundle as input: give --images, or --samples above 0")
    artifacts = find_artifacts(paths)
    manifests = {a: read_manifest(manifest_path(a)) for a in artifacts}
    for artifact, manifest in manifests.items():
        sha = sha256_of(artifact)
        if sha != manifest.artifact.sha256:
            raise InputError(f"{artifact}: its sha256 is not the one its manifest records (the artifact changed "
                             "after export); re-export it before bundling")
        if get_backend(manifest.target).bundled_program_suffix:
            require(manifest.target)
    names = [a.name for a in artifacts]
    if len(set(names)) != len(names):
        raise UsageError(f"two artifacts named {next(n for n in names if names.count(n) > 1)}: a bundle holds each "
                         "name once")
    verify_options = VerifyOptions(images=options.images, samples=options.samples, seed=options.seed,
                                   checkpoint=options.checkpoint, trust_checkpoint=options.trust_checkpoint)
    inputs, references = Inputs(verify_options, images), References(verify_options)
    with atomic_outputs(final) as (tmp,):
        folder = Path(tempfile.mkdtemp(prefix=".shvit-edge-bundle-", dir=final.parent)) if options.zip else tmp
        try:
            (folder / "artifacts").mkdir(parents=True)
            (folder / "tensors").mkdir()
            tensors: dict = {}
            entries = []
            for artifact, manifest in manifests.items():
                progress(f"bundling {artifact.name} ...")
                entries.append(_bundle_artifact(artifact, manifest, folder, tensors, inputs, references, options,
                                                judged_by, profile_of, reference_space))
            files = _files(folder)
            doc = {"schema_version": SCHEMA_VERSION, "kind": KIND, "id": "",
                   "shvit_edge_version": __version__,
                   "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "inputs": {"images": [p.name for p in images], "samples": options.samples, "seed": options.seed},
                   "tensors": tensors, "artifacts": entries, "files": files}
            doc["id"] = bundle_id(doc)
            validate(doc, "bundle", BUNDLE_JSON)  # never write a bundle this shvit-edge would refuse
            (folder / BUNDLE_JSON).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
            if options.zip:
                _zip(folder, tmp)
        finally:
            if options.zip:
                shutil.rmtree(folder, ignore_errors=True)
    return final


def _bundle_artifact(artifact: Path, manifest: Manifest, folder: Path, tensors: dict, inputs, references,
                     options: BundleOptions, judged_by, profile_of, reference_space) -> dict:
    from ..backends.base import get_backend

    spec = manifest.inputs[0]
    image_input = spec.kind == "image"
    x, x_ref, inputs_key = inputs.get(manifest, image_input=image_input)
    key, source = references.source(manifest, artifact)
    reference = reference_space(manifest, references.outputs(key, source, x_ref, inputs_key)).astype(np.float32)
    layout = spec.layout if spec.layout in ("NCHW", "NHWC") else "NCHW"
    fed = x.transpose(0, 2, 3, 1) if layout == "NHWC" else x
    what = (f"{len(inputs.images)} images then {options.samples} random inputs, "
            f"{manifest.resolution[0]}x{manifest.resolution[1]}")
    input_id = _write_tensor(folder, tensors, fed, layout, "input",
                             f"{what}: {'RGB pixels 0..255' if image_input else 'normalized'}")
    output = next(o for o in manifest.outputs if o.dtype == "float32")
    space = "probabilities" if output.layout == "classifier" else "outputs"
    reference_id = _write_tensor(folder, tensors, reference, "NC", "reference",
                                 f"the PyTorch model's {space} on {input_id}")
    _copy_artifact(artifact, folder)
    profile = profile_of(manifest)
    tolerance, tolerance_json = judged_by(manifest, manifest_path(artifact))
    entry = {
        "name": artifact.name, "file": f"artifacts/{artifact.name}",
        "manifest": f"artifacts/{manifest_path(artifact).name}", "sha256": manifest.artifact.sha256,
        "target": manifest.target, "family": manifest.family, "variant": manifest.variant,
        "resolution": list(manifest.resolution), "batch": manifest.batch, "precision": manifest.precision,
        "quantization": manifest.quantization.mode if manifest.quantization else None,
        "input": {"tensor": input_id, "name": spec.name, "kind": spec.kind},
        "output": {"name": output.name, "layout": "classifier" if output.layout == "classifier" else "NC",
                   "reference": reference_id},
        "tolerance": tolerance_json,
        "run": {"warmup": profile.harness.warmup if options.warmup is None else options.warmup,
                "iterations": profile.harness.iterations if options.iterations is None else options.iterations,
                "threads": profile.harness.threads if options.threads is None else options.threads,
                "settings": list(profile.harness.sweep(profile.export))},
        "profile": profile.name, "device": dataclasses.asdict(profile.device),
    }
    backend = get_backend(manifest.target)
    if backend.bundled_program_suffix:
        relative = f"artifacts/{artifact.name}{backend.bundled_program_suffix}"
        cases = [(chunk, ref) for chunk, ref in batches(fed, manifest, reference)]
        backend.write_bundled_program(artifact, cases, folder / relative)
        entry["bundled_program"] = relative
    return entry


def batches(x: np.ndarray, manifest: Manifest, reference: np.ndarray | None = None):
    """(input chunk, reference rows or None) of the artifact's batch, the last chunk padded by repeating its first
    sample (the padded reference rows too): the order an app feeds a bundle's input tensor in."""
    batch = manifest.batch
    for start in range(0, x.shape[0], batch):
        chunk = x[start:start + batch]
        ref = None if reference is None else reference[start:start + batch]
        if chunk.shape[0] < batch:
            pad = batch - chunk.shape[0]
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)])
            if ref is not None:
                ref = np.concatenate([ref, np.repeat(ref[:1], pad, axis=0)])
        yield np.ascontiguousarray(chunk), ref


def _zip(folder: Path, out: Path) -> None:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())


# -- reading --


@dataclass(frozen=True)
class BundleArtifact:
    entry: dict
    path: Path
    manifest: Manifest
    tolerance: Tolerance
    bundle: "Bundle" = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.entry["name"]

    def inputs(self) -> np.ndarray:
        return self.bundle.tensor(self.entry["input"]["tensor"])

    def reference(self) -> np.ndarray:
        return self.bundle.tensor(self.entry["output"]["reference"])


@dataclass(frozen=True)
class Bundle:
    root: Path
    doc: dict
    artifacts: tuple[BundleArtifact, ...] = ()

    @property
    def id(self) -> str:
        return self.doc["id"]

    def tensor(self, tensor_id: str) -> np.ndarray:
        spec = self.doc["tensors"][tensor_id]
        dtype, _ = DTYPES[spec["dtype"]]
        data = (self.root / spec["file"]).read_bytes()
        return np.frombuffer(data, dtype=dtype).reshape(spec["shape"]).astype(dtype.newbyteorder("="))


@contextlib.contextmanager
def open_bundle(path, check_sha256: bool = True) -> Iterator[Bundle]:
    """The bundle at ``path`` (a folder holding ``bundle.json``, the ``bundle.json`` itself, or a zip of such a
    folder), every file checked (:func:`read_bundle`). A zip is unpacked into a temporary folder that is removed
    on exit."""
    path = Path(path)
    if path.is_file() and path.name == BUNDLE_JSON:
        path = path.parent
    if path.is_dir():
        yield read_bundle(path, check_sha256)
        return
    if not path.exists():
        raise InputError(f"{path}: no such bundle (a folder with {BUNDLE_JSON}, or its .zip)")
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a bundle (a folder with {BUNDLE_JSON}, or its .zip)")
    with tempfile.TemporaryDirectory(prefix="shvit-edge-bundle-") as tmp:
        root = Path(tmp)
        unzip(path, root)
        inner = [p for p in root.iterdir() if p.name != "__MACOSX"]
        if not (root / BUNDLE_JSON).exists() and len(inner) == 1 and (inner[0] / BUNDLE_JSON).is_file():
            root = inner[0]  # a zip of the bundle's folder (Finder's Compress) rather than of its contents
        yield read_bundle(root, check_sha256, shown=str(path))


def unzip(archive: Path, folder: Path) -> None:
    """Unpack ``archive`` into ``folder``, refusing first (nothing unpacked) a symlink entry, an entry whose path
    is absolute or holds ``..``, a duplicate, too many entries or too many bytes."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise InputError(f"{archive}: more than {MAX_ZIP_ENTRIES} entries")
            total, names = 0, set()
            for info in infos:
                where = f"{archive}: entry {info.filename!r}"
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise InputError(f"{where} is a symlink or special file; refused")
                name = info.filename.rstrip("/") if info.is_dir() else info.filename
                relative = safe_relative(name, where)
                if relative in names:
                    raise InputError(f"{where} appears twice")
                names.add(relative)
                total += info.file_size
                if total > MAX_ZIP_BYTES:
                    raise InputError(f"{archive}: unpacks to more than {MAX_ZIP_BYTES} bytes")
            files = {safe_relative(i.filename, archive.name) for i in infos if not i.is_dir()}
            parents = {"/".join(n.split("/")[:k]) for n in names for k in range(1, n.count("/") + 1)}
            clash = sorted(files & parents)
            if clash:
                raise InputError(f"{archive}: entry {clash[0]!r} is both a file and a folder")
            created: list[Path] = []
            try:
                for info in infos:
                    _unpack(zf, info, folder, archive, created)
            except BaseException:
                for path in reversed(created):  # nothing half-unpacked stays behind
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error, RuntimeError,
            ValueError) as exc:  # RuntimeError: an encrypted entry; ValueError: a bad entry header
        raise InputError(f"{archive}: not a readable zip ({' '.join(str(exc).split())[:200]})") from None
    except FileExistsError:
        raise InputError(f"{archive}: an entry appears twice") from None
    except OSError as exc:
        raise InputError(f"{archive}: cannot unpack ({exc.strerror or exc})") from None


def _unpack(zf: zipfile.ZipFile, info: zipfile.ZipInfo, folder: Path, archive: Path, created: list[Path]) -> None:
    parts = safe_relative(info.filename.rstrip("/"), archive.name).split("/")
    for k in range(1, len(parts) + (1 if info.is_dir() else 0)):
        step = folder.joinpath(*parts[:k])
        if not step.exists():
            step.mkdir()
            created.append(step)
    if info.is_dir():
        return
    target = folder.joinpath(*parts)
    with zf.open(info) as src, open(target, "xb") as dst:
        created.append(target)
        copied = 0
        for chunk in iter(lambda: src.read(1 << 20), b""):
            copied += len(chunk)
            if copied > info.file_size:
                raise InputError(f"{archive}: entry {info.filename!r} holds more than it declares")
            dst.write(chunk)


def read_bundle(root: Path, check_sha256: bool = True, shown: str | None = None) -> Bundle:
    """Read and check the bundle in the folder ``root`` (``shown``: how to name it in messages)."""
    where = shown or str(root)
    json_path = root / BUNDLE_JSON
    if json_path.is_symlink():
        raise InputError(f"{where}: {BUNDLE_JSON} is a symlink; refused")
    doc = load_json(read_capped(json_path, MAX_BUNDLE_JSON_BYTES, BUNDLE_JSON), f"{where}/{BUNDLE_JSON}")
    if isinstance(doc, dict) and doc.get("kind") == KIND and doc.get("schema_version") not in (None, SCHEMA_VERSION):
        raise InputError(f"{where}: bundle schema_version {doc.get('schema_version')!r} is not supported (this "
                         f"shvit-edge reads {SCHEMA_VERSION})")
    validate(doc, "bundle", f"{where}/{BUNDLE_JSON}")
    listed = {}
    for i, entry in enumerate(doc["files"]):
        relative = safe_relative(entry["path"], f"{where}: files[{i}]")
        if relative in listed or relative == BUNDLE_JSON:
            raise InputError(f"{where}: files[{i}] lists {relative} {'twice' if relative in listed else ''}".strip())
        listed[relative] = entry
    for relative, entry in listed.items():
        path = inside(root, relative, where)
        if path.stat().st_size != entry["size"]:
            raise InputError(f"{where}: {relative} is {path.stat().st_size} bytes; bundle.json says {entry['size']}")
        if check_sha256 and sha256_of(path) != entry["sha256"]:
            raise InputError(f"{where}: {relative} fails its sha256 (it differs from bundle.json's); the bundle "
                             "was changed or damaged in transit")
    if bundle_id(doc) != doc["id"]:
        raise InputError(f"{where}: its id is not the sha256 of its bundle.json; bundle.json was edited after it "
                         "was written")
    for tensor_id, spec in doc["tensors"].items():
        relative = _listed(spec["file"], listed, where, f"tensors.{tensor_id}")
        dtype, _ = DTYPES[spec["dtype"]]
        expected = int(np.prod(spec["shape"], dtype=np.int64)) * dtype.itemsize
        if listed[relative]["size"] != expected:
            raise InputError(f"{where}: tensor {tensor_id} ({relative}) is {listed[relative]['size']} bytes; its shape "
                             f"{spec['shape']} {spec['dtype']} takes {expected}")
    bundle = Bundle(root, doc)
    artifacts = tuple(_read_artifact(bundle, i, entry, listed, where) for i, entry in enumerate(doc["artifacts"]))
    return dataclasses.replace(bundle, artifacts=artifacts)


def _listed(path: str, listed: dict, where: str, what: str) -> str:
    relative = safe_relative(path, f"{where}: {what}")
    if relative not in listed:
        raise InputError(f"{where}: {what} names {relative}, which the files list does not hold")
    return relative


def _read_artifact(bundle: Bundle, i: int, entry: dict, listed: dict, where: str) -> BundleArtifact:
    what = f"artifacts[{i}]"
    manifest_relative = _listed(entry["manifest"], listed, where, f"{what}.manifest")
    manifest = read_manifest(bundle.root / manifest_relative)
    file_relative = safe_relative(entry["file"], f"{where}: {what}.file")
    path = bundle.root / file_relative
    if file_relative not in listed:
        inside_folder = [p for p in listed if p.startswith(file_relative + "/")]
        if not inside_folder:
            raise InputError(f"{where}: {what}.file names {file_relative}, which the files list does not hold")
        if path.is_symlink() or not path.is_dir():
            raise InputError(f"{where}: {what}.file {file_relative} is not a folder")
    if entry["sha256"] != manifest.artifact.sha256 or sha256_of(path) != manifest.artifact.sha256:
        raise InputError(f"{where}: {what} ({entry['name']}) is not the artifact its manifest describes (sha256)")
    for key in ("target", "variant", "batch"):
        if entry[key] != getattr(manifest, key):
            raise InputError(f"{where}: {what}.{key} is {entry[key]!r}; its manifest says {getattr(manifest, key)!r}")
    for side, key in (("input", "tensor"), ("output", "reference")):
        if entry[side][key] not in bundle.doc["tensors"]:
            raise InputError(f"{where}: {what}.{side}.{key} names the tensor {entry[side][key]!r}, which "
                             "tensors does not hold")
    x_spec = bundle.doc["tensors"][entry["input"]["tensor"]]
    ref_spec = bundle.doc["tensors"][entry["output"]["reference"]]
    h, w = manifest.resolution
    expected = [x_spec["shape"][0], 3, h, w] if x_spec["layout"] == "NCHW" else [x_spec["shape"][0], h, w, 3]
    if x_spec["shape"] != expected or x_spec["layout"] not in ("NCHW", "NHWC"):
        raise InputError(f"{where}: {what}'s input tensor is {x_spec['layout']} {x_spec['shape']}; the artifact takes "
                         f"{h}x{w} RGB samples")
    want_dtype = "uint8" if manifest.inputs[0].kind == "image" else "float32"
    if x_spec["dtype"] != want_dtype:
        raise InputError(f"{where}: {what}'s input tensor is {x_spec['dtype']}; the artifact takes {want_dtype}")
    if len(ref_spec["shape"]) != 2 or ref_spec["shape"][0] != x_spec["shape"][0] or ref_spec["dtype"] != "float32":
        raise InputError(f"{where}: {what}'s reference is {ref_spec['dtype']} {ref_spec['shape']}; it must be float32 "
                         f"({x_spec['shape'][0]}, classes), one row per input")
    if entry.get("bundled_program") is not None:
        _listed(entry["bundled_program"], listed, where, f"{what}.bundled_program")
    return BundleArtifact(entry, path, manifest, Tolerance.from_record(entry["tolerance"]), bundle)
