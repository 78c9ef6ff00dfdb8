#!/usr/bin/env python3
"""Export the shvit-edge result documents attached to an .xcresult by HarnessRunTests ("shvit-edge-result.json").

    python3 export_xcresult.py R.xcresult OUT_DIR

Writes OUT_DIR/shvit-edge-result.json (a second one -2, and so on) and prints each path; exit 1 when the result
bundle holds none. Needs Xcode's `xcrun xcresulttool` (macOS). Tries Xcode 16's `export attachments` first, then
the JSON graph of Xcode 15 and older (`get --format json` / `export --type file`, with `--legacy` on Xcode 16).
Standard library only. Not run where it was written (no Xcode there): see README.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NAME = "shvit-edge-result"


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["xcrun", "xcresulttool", *args], capture_output=True, text=True, check=False)


def place(out: Path, k: int) -> Path:
    return out / (f"{NAME}.json" if k == 0 else f"{NAME}-{k + 1}.json")


def modern(xcresult: Path, out: Path) -> list[Path] | None:
    """Xcode 16+: `export attachments` writes the files and a manifest.json naming them."""
    with tempfile.TemporaryDirectory() as tmp:
        done = run(["export", "attachments", "--path", str(xcresult), "--output-path", tmp])
        if done.returncode != 0:
            return None
        manifest_path = Path(tmp) / "manifest.json"
        if not manifest_path.is_file():
            return None
        found = []
        for test in json.loads(manifest_path.read_text(encoding="utf-8")):
            for attachment in test.get("attachments", []):
                shown = attachment.get("suggestedHumanReadableName", "") or attachment.get("name", "")
                if shown.startswith(NAME):
                    found.append(Path(tmp) / attachment["exportedFileName"])
        written = []
        for k, source in enumerate(found):
            target = place(out, k)
            shutil.copyfile(source, target)
            written.append(target)
        return written


def value(node):
    """The plain value of the legacy JSON's typed nodes: {"_value": x} -> x, {"_values": [...]} -> [...]."""
    if isinstance(node, dict):
        if "_value" in node:
            return node["_value"]
        if "_values" in node:
            return node["_values"]
    return node


def legacy(xcresult: Path, out: Path) -> list[Path]:
    """Xcode 15 and older (Xcode 16 with --legacy): walk the object graph from the root to every attachment."""
    flags: list[str] = []

    def get(ref: str | None = None):
        args = ["get", *flags, "--format", "json", "--path", str(xcresult)] + (["--id", ref] if ref else [])
        done = run(args)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip() or "xcresulttool get failed")
        return json.loads(done.stdout)

    try:
        root = get()
    except RuntimeError:
        flags.append("--legacy")  # Xcode 16 keeps the old commands behind --legacy
        root = get()
    attachments: list[str] = []
    seen: set[str] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = value(node.get("_type", {}).get("_name")) if isinstance(node.get("_type"), dict) else None
        if kind == "ActionTestAttachment" or ("payloadRef" in node and "name" in node):
            name = str(value(node.get("name", "")))
            ref = value(node.get("payloadRef", {}).get("id", {}))
            if name.startswith(NAME) and ref and ref not in attachments:
                attachments.append(ref)
            continue
        for key in ("testsRef", "summaryRef"):
            ref = node.get(key)
            if isinstance(ref, dict):
                ident = value(ref.get("id", {}))
                if ident and ident not in seen:
                    seen.add(ident)
                    pending.append(get(ident))
        for key, child in node.items():
            if key not in ("testsRef", "summaryRef", "_type") and isinstance(child, (dict, list)):
                pending.append(child)
    written = []
    for k, ref in enumerate(attachments):
        target = place(out, k)
        done = run(["export", *flags, "--type", "file", "--path", str(xcresult), "--id", ref,
                    "--output-path", str(target)])
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip() or "xcresulttool export failed")
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    xcresult, out = Path(argv[0]), Path(argv[1])
    if not xcresult.is_dir():
        print(f"{xcresult}: no such .xcresult", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    written = modern(xcresult, out)
    if not written:
        try:
            written = legacy(xcresult, out)
        except (RuntimeError, json.JSONDecodeError, OSError) as exc:
            print(f"{xcresult}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
            return 1
    if not written:
        print(f"{xcresult}: no attachment named {NAME}.json (did HarnessRunTests run a bundle?)", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
