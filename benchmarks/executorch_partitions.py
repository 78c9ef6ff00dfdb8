"""ExecuTorch XNNPACK: partitions and host latency of the naive fused graph vs shvit-edge's deploy form.

The naive form is the fused model as the authors' SHSA computes it (nn.GroupNorm, torch.split, `@`, and a
global mean without keepdim); the deploy form is what `shvit-edge export` lowers (SHSADeploy). Both hold the
same weights. Latency: executorch.runtime, batch 1, XNNPACK threadpool set to 1 thread, the two programs run
alternately so drift hits both alike. Results go to benchmarks/results/executorch_partitions.json.

    .venv/bin/python benchmarks/executorch_partitions.py [--variants shvit_s1,shvit_s4] [--runs 100]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from shvit_edge.backends._quiet import quiet
from shvit_edge.backends.executorch import delegation_report
from shvit_edge.models.build import untrained_model
from shvit_edge.models.reparam import reparameterize
from shvit_edge.models.shvit import SHSADeploy
from shvit_edge.models.variants import get_variant


class NaiveSHSA(nn.Module):
    """The fused SHSA computed the authors' way, from a SHSADeploy's weights."""

    def __init__(self, d: SHSADeploy):
        super().__init__()
        self.dim, self.qk_dim, self.pdim = d.dim, d.qk_dim, d.pdim
        self.scale = 1.0  # q's rows in d.qkv already carry qk_dim ** -0.5; the multiply stays, as in the authors' graph
        self.pre_norm = nn.GroupNorm(1, d.pdim, eps=d.eps, affine=False)
        self.qkv, self.proj = d.qkv, d.proj

    def forward(self, x):
        b, _, h, w = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        q, k, v = torch.split(self.qkv(self.pre_norm(x1)), [self.qk_dim, self.qk_dim, self.pdim], dim=1)
        q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
        return self.proj(torch.cat([(v @ attn.transpose(-2, -1)).reshape(b, self.pdim, h, w), x2], dim=1))


class NaivePool(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.head(self.model.forward_features(x).mean((2, 3)))


def naive_form(deploy):
    model = copy.deepcopy(deploy)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, SHSADeploy):
                setattr(module, name, NaiveSHSA(child))
    return NaivePool(model).eval()


def lower(model, x, path):
    with quiet():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        start = time.perf_counter()
        edge = to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])
        report = delegation_report(edge)
        program = edge.to_executorch()
        seconds = time.perf_counter() - start
    path.write_bytes(program.buffer)
    return report, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="shvit_s1,shvit_s4")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "executorch_partitions.json"))
    args = parser.parse_args()
    with quiet():
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
    portable_lib._unsafe_reset_threadpool(1)
    rows = []
    for name in args.variants.split(","):
        res = get_variant(name).resolution
        deploy = reparameterize(untrained_model(name, seed=0))
        x = torch.randn(1, 3, res, res)
        forms = {"naive": naive_form(deploy), "deploy": deploy}
        with torch.no_grad():
            assert (forms["naive"](x) - forms["deploy"](x)).abs().max() < 1e-4
        methods, entry = {}, {"variant": name, "resolution": res}
        with tempfile.TemporaryDirectory() as folder:
            for form, model in forms.items():
                report, seconds = lower(model, x, Path(folder) / f"{form}.pte")
                with quiet():
                    methods[form] = Runtime.get().load_program(Path(folder) / f"{form}.pte").load_method("forward")
                entry[form] = {"partitions": report["partitions"], "ops_outside": report["ops_outside"],
                               "lower_seconds": round(seconds, 1)}
            times = {form: [] for form in forms}
            for method in methods.values():  # warm-up
                for _ in range(10):
                    method.execute([x])
            for _ in range(args.runs):
                for form, method in methods.items():  # alternate, so drift hits both alike
                    start = time.perf_counter()
                    method.execute([x])
                    times[form].append((time.perf_counter() - start) * 1e3)
        for form in forms:
            entry[form]["latency_ms_p50"] = round(statistics.median(times[form]), 2)
            entry[form]["latency_ms_min"] = round(min(times[form]), 2)
        entry["deploy_over_naive_p50"] = round(entry["deploy"]["latency_ms_p50"] / entry["naive"]["latency_ms_p50"], 3)
        rows.append(entry)
        print(json.dumps(entry))
    result = {"command": f"python benchmarks/executorch_partitions.py --variants {args.variants} --runs {args.runs}",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "threads": 1, "batch": 1, "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
