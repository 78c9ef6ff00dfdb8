"""The base tier: the package with no extra installed (no converter, no runtime), simulated by
tests/base_install/sitecustomize.py. What needs no extra must work (the registries, profiles, models and
checkpoints, the fake backend through export, verify and bench on torch alone, every option check); every
backend must say it is unavailable and how to install it; a test that needs an extra is skipped, naming it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the test files of the base tier (the family contract on S1 and the fake family: the larger SHViT variants add
#: time, not coverage, to what a base install is shown to do)
TIER = ("tests/test_imports.py", "tests/test_targets.py", "tests/test_backend_registry.py", "tests/test_families.py",
        "-k", "not shvit_s2 and not shvit_s3 and not shvit_s4")


def test_the_base_tier_passes_without_any_extra_and_says_what_it_skipped():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SHVIT_EDGE_"))}
    env.update(SHVIT_EDGE_BASE_INSTALL="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "tests" / "base_install"), env.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
                             *TIER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    summary = re.search(r"(\d+) passed, (\d+) skipped", result.stdout)
    assert summary and int(summary.group(1)) > 80 and int(summary.group(2)) > 0, tail
    # what was skipped, and why: each skip names the extra it needs
    skips = re.findall(r"SKIPPED \[\d+\] (\S+): (.*)", result.stdout)
    assert skips and all("extra: not in a base install" in why for _, why in skips), skips
    assert any("onnx" in why for _, why in skips)
    # the base-only checks ran there (they are skipped in this full run)
    assert "test_without_its_extra_export_says_how_to_install_it" not in " ".join(w for w, _ in skips)
