"""Every model family on every host runtime: the comparisons the SHViT, EfficientViT and SepViT papers make,
measured on this machine.

For each registered variant (all families, or ``--variants``) at its default resolution, exports ONNX,
ExecuTorch (XNNPACK) and LiteRT artifacts at batch 1 (latency) and batch 16 (the papers' CPU throughput
protocol), from a trained-like checkpoint written here (``models.weights.trained_like``: random fan-in scaled
weights and norms, the residual branches' last norms small, BatchNorm statistics measured on random inputs;
latency does not depend on the weights, but parity needs outputs that depend on the input, which freshly
initialised weights barely give: untrained EfficientViT-M2 in fp16 Core ML returns one output for every input).
Batch 1 is also exported for Core ML, and every batch-1 artifact is verified (``verify``, coreml-sim for Core ML)
and every .pte's ExecuTorch delegation (both batches) recorded: the record that every variant of every family
converts to all four targets. Then it times them all and each variant's fused
PyTorch eager model in ONE ``bench`` run: one thread, rounds alternating between every candidate, so a drift of
the machine hits all alike. There are too many candidates for their workers to stay loaded together, so the run is
non-resident (``BenchOptions.resident=False``: each worker is started, warmed up, timed and stopped within each
round). Core ML has no runtime off Apple hardware and is left out.

Writes benchmarks/results/compare.json (every row, the throughput table, the papers' claimed ratios next to the
measured ones) and benchmarks/results/compare/ (report.md with the table; plots of latency against MACs and
against the papers' ImageNet top-1, one panel per runtime).

    .venv/bin/python benchmarks/compare.py [--variants all|shvit_s4,mobilevitv2_100,...] [--seconds 6]
                                           [--rounds 3] [--artifacts DIR] [--jobs 2]

``--artifacts DIR`` keeps the exports there and reuses those already present (a second run only times;
``--export-only`` fills it and stops, so the exports can run while the machine is busy and the timing when quiet).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
#: the real photos verify judges every artifact on (../shared beside the clone, as CI has it)
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "images"
TARGETS = ("onnx", "executorch", "tflite")
#: batch 1 is also exported for Core ML and verified on every target: the record that every variant converts
ALL_TARGETS = ("coreml", *TARGETS)
RUNTIMES = ("pytorch", *TARGETS)
BATCHES = (1, 16)

#: ImageNet-1k top-1 (%) as each family's authors report it (single crop, the variant's default resolution,
#: ImageNet-1k training only); facts from the papers, not measured here
TOP1 = {
    # Yun & Ro, "SHViT", CVPR 2024, Table 1; ysj9909/SHViT README "Pre-trained Models" (S4 at 256)
    "shvit_s1": 72.8, "shvit_s2": 75.2, "shvit_s3": 77.4, "shvit_s4": 79.4,
    # Liu et al., "EfficientViT", CVPR 2023, Table 1; microsoft/Cream EfficientViT/classification/README.md
    "efficientvit_m0": 63.2, "efficientvit_m1": 68.4, "efficientvit_m2": 70.8, "efficientvit_m3": 73.4,
    "efficientvit_m4": 74.3, "efficientvit_m5": 77.1,
    # Li et al., "SepViT", arXiv 2203.15380; liwei109/SepViT readme (Lite: no published accuracy)
    "sepvit_t": 82.7, "sepvit_s": 83.6, "sepvit_b": 84.2,
    # Mehta & Rastegari, "Separable Self-attention for Mobile Vision Transformers", TMLR 2023, Table 1 (256x256);
    # apple/corenet projects/mobilevit_v2/README.md
    "mobilevitv2_050": 70.18, "mobilevitv2_075": 75.56, "mobilevitv2_100": 78.09, "mobilevitv2_125": 79.65,
    "mobilevitv2_150": 80.38, "mobilevitv2_175": 80.84, "mobilevitv2_200": 81.17,
}

#: speed claims the papers make that this tool can check: (fast variant, slow variant, claimed speedup, where)
CLAIMS = (
    {"claim": "SHViT-S4 vs MobileViTv2-1.0 on CPU", "fast": "shvit_s4", "slow": "mobilevitv2_100", "speedup": 8.1,
     "source": "Yun & Ro, SHViT (CVPR 2024), abstract and Table 1: Intel CPU, one thread, batch 16 throughput",
     "batch": 16},
    {"claim": "SHViT-S4 vs MobileViTv2-1.0 on iPhone 12", "fast": "shvit_s4", "slow": "mobilevitv2_100",
     "speedup": 2.4, "source": "Yun & Ro, SHViT (CVPR 2024), abstract: iPhone 12 Core ML latency, batch 1",
     "batch": 1, "device_only": True},
    {"claim": "EfficientViT-M2 vs MobileViT-XXS on CPU", "fast": "efficientvit_m2", "slow": "mobilevit_xxs",
     "speedup": 3.7, "source": "Liu et al., EfficientViT (CVPR 2023), abstract: CPU throughput", "batch": 16},
    {"claim": "EfficientViT-M5 vs MobileNetV3-Large on CPU", "fast": "efficientvit_m5",
     "slow": "mobilenetv3_large_100", "speedup": 1.45,
     "source": "Liu et al., EfficientViT (CVPR 2023), Section 4.2: 45% more CPU throughput", "batch": 16},
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="all")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="timed seconds per candidate, split over the rounds (each round runs at least once)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--artifacts", default=None, help="keep the exports here (and reuse those present)")
    parser.add_argument("--jobs", type=int, default=2, help="targets exported at once")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="the batch sizes to export and time")
    parser.add_argument("--export-only", action="store_true", help="fill --artifacts and stop (time later)")
    parser.add_argument("--verify-only", action="store_true", help="export and verify into --artifacts, then stop")
    parser.add_argument("--images", default=str(PHOTOS) if PHOTOS.is_dir() else None,
                        help="photos verify runs every batch-1 artifact on (default: the shared fixtures' five)")
    parser.add_argument("--samples", type=int, default=8, help="seeded random inputs verify adds to the photos")
    parser.add_argument("--update-verify", action="store_true",
                        help="with --artifacts: export batch 1 and verify it, then replace the verification and "
                             "batch-1 delegation of the record at --out, keeping its timing")
    parser.add_argument("--out", default=str(RESULTS / "compare.json"))
    args = parser.parse_args()
    from shvit_edge.models.registry import families

    variants = [v for f in families() for v in f.variants()] if args.variants == "all" else args.variants.split(",")
    batches = tuple(int(b) for b in args.batches.split(","))
    if args.update_verify:
        if not args.artifacts:
            parser.error("--update-verify needs --artifacts DIR (the batch-1 exports it verifies)")
        update_verify(variants, Path(args.artifacts), args)
        return
    if args.artifacts:
        folders, exports = export_all(variants, batches, Path(args.artifacts), args.jobs)
        if args.export_only:
            return
        verified = verify_all(folders, args.images, args.samples, Path(args.artifacts) / "verify.json")
        if args.verify_only:
            return
        doc = time_all(folders, args)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folders, exports = export_all(variants, batches, Path(tmp), args.jobs)
            verified = verify_all(folders, args.images, args.samples)
            doc = time_all(folders, args)
    doc = summarize(doc, variants, exports)
    doc["verify"] = verified
    doc["delegation"] = delegation(folders)
    doc["command"] = (f"python benchmarks/compare.py --variants {args.variants} --batches {args.batches} "
                      f"--seconds {args.seconds:g} "
                      f"--rounds {args.rounds} --warmup {args.warmup}{verify_options(args)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    write_report(doc, out.with_suffix(""))
    print(markdown_table(doc))
    print(json.dumps(doc["claims"], indent=1))
    print(f"wrote {out} and {out.with_suffix('')}/")


def export_all(variants: list[str], batches: tuple[int, ...], root: Path, jobs: int) -> tuple[list[Path], dict]:
    """Export every variant for every host target at both batch sizes into ``root/b<batch>/<variant>``; an
    artifact already there (a kept ``--artifacts`` folder) is reused. Returns the folders and, per variant and
    batch, the export seconds and any failure."""
    from shvit_edge.artifacts import find_artifacts
    from shvit_edge.export import ExportOptions, export, resolve_targets
    from shvit_edge.manifest import manifest_path, read_manifest
    from shvit_edge.models.source import load_source

    folders, exports = [], {}
    for variant in variants:
        source = load_source(variant=variant, checkpoint=str(checkpoint(variant, root / "checkpoints")))
        side = source.default_resolution
        for batch in batches:
            folder = root / f"b{batch}" / variant
            have = {read_manifest(manifest_path(p)).target for p in find_artifacts([folder])} if folder.is_dir() \
                else set()
            missing = [t for t in (ALL_TARGETS if batch == 1 else TARGETS) if t not in have]
            record = exports.setdefault(variant, {})[f"b{batch}"] = {"reused": sorted(have), "failures": {}}
            if missing:
                start = time.perf_counter()
                report = export(source, resolve_targets(",".join(missing)),
                                ExportOptions(resolution=(side, side), batch=batch), folder, jobs=jobs)
                record["seconds"] = round(time.perf_counter() - start, 1)
                record["failures"] = {f.target: f.error for f in report.failures}
                print(f"exported {variant} b{batch} ({', '.join(missing)}) in {record['seconds']:.0f} s"
                      + (f"; FAILED {record['failures']}" if record["failures"] else ""), flush=True)
            folders.append(folder)
    return folders, exports


def checkpoint(variant: str, folder: Path) -> Path:
    """A trained-like checkpoint of ``variant`` (seeded by its name) in its family's own key layout, as
    safetensors; written once into ``folder``."""
    import zlib

    from safetensors.torch import save_file

    from shvit_edge.models.registry import resolve_variant
    from shvit_edge.models.weights import trained_like

    path = folder / f"{variant}.safetensors"
    if not path.is_file():
        family, name = resolve_variant(variant)
        side = family.default_resolution(name)
        mean, std, _ = family.preprocessing(name)
        model = trained_like(family.create(name), seed=zlib.crc32(name.encode()), resolution=side, mean=mean,
                             std=std)
        state = family.from_model_keys(model.state_dict(), family.layouts[0])
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").rename(path)
    return path


def verify_all(folders: list[Path], images: str | None, samples: int, cache: Path | None = None) -> dict:
    """``verify`` of every batch-1 artifact against its checkpoint, on ``images`` (a folder of photos, as a user's
    ``verify --images`` does) and ``samples`` seeded random inputs: per variant and target its status, reason
    and cosine (the .pte's delegation is :func:`delegation`'s). ``cache``: a JSON file of earlier results (a kept
    ``--artifacts`` folder's) on the same inputs, whose variants are not verified again; it is rewritten after
    each variant."""
    from shvit_edge.artifacts import find_artifacts
    from shvit_edge.images import list_images
    from shvit_edge.manifest import manifest_path, read_manifest
    from shvit_edge.verify import VerifyOptions, verify

    inputs = {"images": [p.name for p in list_images(images)] if images else [], "random": samples}
    record: dict = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    if record.get("inputs") != inputs:
        record = {"inputs": inputs}  # verified on other inputs: not this run's record
    for folder in folders:
        if folder.parent.name != "b1" or folder.name in record:
            continue
        start = time.perf_counter()
        results = {Path(r.artifact).name: r
                   for r in verify([folder], VerifyOptions(images=images, samples=samples))}
        for path in find_artifacts([folder]):
            manifest = read_manifest(manifest_path(path))
            result = results.get(path.name)
            entry = {"artifact": path.name, "status": result.status if result else "missing",
                     "reason": result.reason if result else "verify returned no result",
                     "cosine": (next(iter(result.metrics.values()), {}) or {}).get("cosine") if result else None}
            record.setdefault(manifest.variant, {})[manifest.target] = entry
        print(f"verified {folder.name} in {time.perf_counter() - start:.0f} s: "
              + ", ".join(f"{t} {e['status']}" for t, e in record.get(folder.name, {}).items()), flush=True)
        if cache is not None:
            cache.write_text(json.dumps(record, indent=1))
    return record


def verify_options(args) -> str:
    """The command line's verify options, as the record quotes them (the photos by their path beside a clone)."""
    return f" --samples {args.samples}" + (" --images ../shared/fixtures/images" if args.images else "")


def update_verify(variants: list[str], root: Path, args) -> None:
    """Export batch 1 of every variant into ``root`` (from this code's trained-like checkpoints), verify it, and
    put that verification, with the batch-1 delegation and how it was made, into the record at ``--out`` in place
    of its own; the record's timing stays. For a change to the weights or to what verify runs on: latency does
    not depend on the weights, and a timing run needs an hour of a quiet machine."""
    out = Path(args.out)
    doc = json.loads(out.read_text())
    start = time.perf_counter()
    folders, exports = export_all(variants, (1,), root, args.jobs)
    verified = verify_all(folders, args.images, args.samples, root / "verify.json")
    lowered = delegation(folders)
    for variant, found in lowered.items():
        doc["delegation"].setdefault(variant, {})["b1"] = found["b1"]
    doc["verify"] = verified
    doc["verify_run"] = {
        "command": (f"python benchmarks/compare.py --update-verify --artifacts DIR --variants {args.variants}"
                    f"{verify_options(args)}"),
        "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - start, 1),
        "weights": "models.weights.trained_like with each family's mean and std (this code's), seeded by name",
        "exports": exports,
        "timing_from": doc["command"],
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    write_report(doc, out.with_suffix(""))
    print(verify_line(verified))
    print(f"updated {out} and {out.with_suffix('')}/")


def delegation(folders: list[Path]) -> dict:
    """Per variant and batch, how ExecuTorch lowered its .pte (XNNPACK partitions, ops left outside), from the
    export manifests: batch 16 is not verified (verify takes batch 1's record), but its graph is exported anew."""
    from shvit_edge.artifacts import find_artifacts
    from shvit_edge.manifest import manifest_path, read_manifest

    record: dict = {}
    for folder in folders:
        for path in find_artifacts([folder]):
            manifest = read_manifest(manifest_path(path))
            if manifest.target == "executorch":
                found = manifest.details.get("delegation", {})
                record.setdefault(manifest.variant, {})[f"b{manifest.batch}"] = {
                    k: found.get(k) for k in ("partitions", "ops_outside_total", "ops_outside")}
    return record


def time_all(folders: list[Path], args) -> dict:
    from shvit_edge.bench import BenchOptions, bench

    options = BenchOptions(threads=1, seconds=args.seconds, rounds=args.rounds, warmup=args.warmup, resident=False)
    start = time.perf_counter()
    report = bench(folders, options, progress=lambda what, done, total: print(f"  [{done + 1}/{total}] {what}",
                                                                                flush=True))
    doc = report.as_json()
    doc["bench_seconds"] = round(time.perf_counter() - start, 1)
    return doc


def summarize(doc: dict, variants: list[str], exports: dict) -> dict:
    """The bench document with each row's family, params and the papers' top-1, the throughput table
    (variant -> batch -> runtime), and the claims next to what was measured."""
    from shvit_edge.models.registry import resolve_variant, variant_stats

    for row in [*doc["baselines"], *doc["results"]]:
        row["artifact"] = "/".join(Path(row["artifact"]).parts[-3:]) if row["target"] != "pytorch" else row["artifact"]
    facts = {}
    for variant in variants:
        family, _ = resolve_variant(variant)
        stats = variant_stats(variant)
        facts[variant] = {"family": family.name, "params": stats["params"], "macs": stats["macs"],
                          "resolution": family.default_resolution(variant), "paper_top1": TOP1.get(variant)}
    table: dict = {}
    for row in [*doc["baselines"], *doc["results"]]:
        table.setdefault(row["variant"], {}).setdefault(f"b{row['batch']}", {})[row["target"]] = {
            "latency_p50_ms": row["latency_ms"]["p50"], "throughput_ips": row["throughput_ips"],
            "gflops": row["gflops"]}
    claims = []
    for claim in CLAIMS:
        entry = dict(claim)
        fast, slow = table.get(claim["fast"], {}), table.get(claim["slow"], {})
        key = f"b{claim['batch']}"
        if claim.get("device_only"):
            entry["measured"] = None
            entry["why_not"] = "an iPhone measurement: no device result is in the store yet (device run / harness)"
        elif not fast or not slow:
            missing = claim["slow"] if not slow else claim["fast"]
            entry["measured"] = None
            entry["why_not"] = f"{missing} is not a registered variant here (its family is not added)" \
                if missing not in facts else f"{missing} was not measured in this run"
        else:
            entry["measured"] = {runtime: round(fast[key][runtime]["throughput_ips"] /
                                                slow[key][runtime]["throughput_ips"], 2)
                                 for runtime in RUNTIMES if runtime in fast.get(key, {}) and
                                 runtime in slow.get(key, {})}
            entry["macs_ratio"] = round(facts[claim["slow"]]["macs"] / facts[claim["fast"]]["macs"], 2)
        claims.append(entry)
    doc["protocol"] = {"threads": 1, "batches": sorted({row["batch"] for row in doc["results"]}),
                       "weights": "trained-like, seeded (models.weights.trained_like); latency does not depend on them",
                       "metric": "latency p50 (batch 1), throughput = batch / mean latency (batch 16)",
                       "non_resident": True}
    doc["variants"] = facts
    doc["exports"] = exports
    doc["table"] = table
    doc["claims"] = claims
    return doc


def markdown_table(doc: dict) -> str:
    """One row per variant: params, MACs, the papers' top-1, batch-1 latency and batch-16 throughput per runtime."""
    head = ["variant", "params (M)", "MACs (G)", "top-1 (paper)"] + \
        [f"{r} b1 ms" for r in RUNTIMES] + [f"{r} b16 img/s" for r in RUNTIMES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, facts in doc["variants"].items():
        row = doc["table"].get(variant, {})
        cells = [variant, f"{facts['params'] / 1e6:.2f}", f"{facts['macs'] / 1e9:.3f}",
                 "" if facts["paper_top1"] is None else f"{facts['paper_top1']:.1f}"]
        for runtime in RUNTIMES:
            value = row.get("b1", {}).get(runtime)
            cells.append("failed" if value is None else f"{value['latency_p50_ms']:.1f}")
        for runtime in RUNTIMES:
            value = row.get("b16", {}).get(runtime)
            cells.append("failed" if value is None else f"{value['throughput_ips']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scatter(doc: dict, x_of, x_label: str, log_x: bool) -> bytes:
    """Batch-1 latency (log) against ``x_of(variant facts)``, one panel per runtime, one colour per family, each
    family's variants joined in size order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shvit_edge.bench.report import png

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), dpi=110)
    families = sorted({f["family"] for f in doc["variants"].values()})
    colour = {name: plt.get_cmap("tab10")(i) for i, name in enumerate(families)}
    for ax, runtime in zip(axes.flat, RUNTIMES, strict=True):
        for family in families:
            points = []
            for variant, facts in doc["variants"].items():
                cell = doc["table"].get(variant, {}).get("b1", {}).get(runtime)
                x = x_of(facts)
                if facts["family"] == family and cell is not None and x is not None:
                    points.append((x, cell["latency_p50_ms"], variant))
            points.sort()
            if not points:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=colour[family], label=family)
            for x, y, name in points:
                ax.annotate(name.split("_", 1)[1], (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_yscale("log")
        if log_x:
            ax.set_xscale("log")
        ax.set_title(runtime, fontsize=10)
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel("latency, ms (p50, batch 1, 1 thread)", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return png(plt, fig)


def verify_line(verified: dict) -> str:
    """How many batch-1 artifacts passed verify, on what, and which did not."""
    inputs = verified.get("inputs", {})
    entries = [(v, t, e) for v, targets in verified.items() if v != "inputs" for t, e in targets.items()]
    failed = [f"{v} {t} ({e['status']}: {e['reason']})" for v, t, e in entries if e["status"] != "pass"]
    return (f"verify (batch 1, against each checkpoint's PyTorch model, on {len(inputs.get('images', []))} photos + "
            f"{inputs.get('random', 0)} seeded random inputs): {len(entries) - len(failed)} of {len(entries)} "
            "artifacts pass" + (f"; not: {'; '.join(failed)}" if failed else ""))


def write_report(doc: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"latency_vs_macs.png": scatter(doc, lambda f: f["macs"] / 1e9, "MACs per image (G)", True),
             "latency_vs_top1.png": scatter(doc, lambda f: f["paper_top1"], "ImageNet top-1 (%, the papers)", False)}
    for name, data in plots.items():
        (out_dir / name).write_bytes(data)
    claims = ["| claim | paper | measured here (fast / slow throughput) | MACs ratio |", "|---|---|---|---|"]
    for claim in doc["claims"]:
        measured = claim["measured"]
        text = ", ".join(f"{k} {v:.2f}x" for k, v in measured.items()) if measured else claim["why_not"]
        claims.append(f"| {claim['claim']} (batch {claim['batch']}) | {claim['speedup']}x | {text} | "
                      f"{claim.get('macs_ratio', '')} |")
    machine = doc["machine"]
    text = [
        "# Model families compared on this machine's runtimes", "",
        f"`{doc['command']}`: {machine.get('processor') or machine.get('machine')}, {machine['cpus']} CPUs, one "
        f"thread, torch {machine.get('torch')}; every candidate in one run, rounds alternating; trained-like seeded "
        "weights.",
        "", verify_line(doc["verify"])
        + (f" (`{doc['verify_run']['command']}`, {doc['verify_run']['date']}; the timing is the run above's)"
           if "verify_run" in doc else ""),
        "", "## Claims", "", *claims, "", "## All variants", "", markdown_table(doc), "",
        *(f"![{name}]({name})" for name in plots), "",
    ]
    if doc["failures"] or any(e["failures"] for v in doc["exports"].values() for e in v.values()):
        text += ["## Failures", "", "```", json.dumps({"bench": doc["failures"], "exports": doc["exports"]},
                                                    indent=1), "```", ""]
    (out_dir / "report.md").write_text("\n".join(text), encoding="utf-8")


if __name__ == "__main__":
    main()
