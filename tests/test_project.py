"""The README's two commands are the contract; CI must run exactly the test command."""

from __future__ import annotations

import re
import tomllib

from conftest import ROOT


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_has_exactly_two_setup_commands():
    main_job, tests = _setup_commands()
    for cmd in (main_job, tests):
        assert "\n" not in cmd and "python3 -m venv .venv" in cmd and "-c constraints.txt" in cmd
    assert "'.[all]'" in main_job and "shvit-edge" in main_job
    assert "'.[test]'" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _setup_commands()[1] in ci


def test_constraints_pin_torch_first_and_cover_the_extras():
    lines = [ln.strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "torch==2.13.0"
    pins = dict(ln.split("==", 1) for ln in lines)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pins["coremltools"] == "9.0" and pins["executorch"] == "1.5.1"
    assert pins["litert-torch"] == "0.10.0" and pins["ai-edge-litert"] == "2.3.0"
    extras = project["optional-dependencies"]
    for extra in ("coreml", "executorch", "tflite", "onnx", "all", "test"):
        assert extra in extras
    for dep in project["dependencies"] + [d for deps in extras.values() for d in deps]:
        name = re.split(r"[<>=\[ ]", dep, maxsplit=1)[0].lower()
        assert name == "shvit-edge" or name in {k.lower() for k in pins}, f"{name} is not pinned"
