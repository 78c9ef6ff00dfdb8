"""``results report DIR``: every run of the results store, host and device together, as ``results.md`` and
``results.html`` (one table, the failed and skipped runs with their errors, and plots).

The rows are :meth:`~shvit_edge.harness.store.Store.runs`' dicts. Nothing is hidden and nothing is passed off as
what it is not: a run that failed or was skipped is listed with its error; a run not tied to an artifact of a
stored bundle is marked untied; a hosted service's estimate and an interpreter's time (numerics only, not a
latency) say so in the table, and the interpreter's are left out of the latency plot (said under it).

Plots (matplotlib PNGs beside ``results.md``, embedded base64 in ``results.html`` so the page is one file):

- ``latency_by_device.png``: p50 (whisker to p90) of every ok run with a p50, grouped by device, one bar per
  model and runtime setting, coloured by target (:func:`shvit_edge.bench.report.colours`);
- ``parity_by_device.png``: 1 - cosine to the reference (log axis) of every judged run, per device and setting,
  the tolerance's 1 - cosine as a tick on each row; failures in red.

Written atomically: the files appear together, or none of them. A store without ok runs still gets its report:
it says so, lists the failed and skipped runs, and has no plots.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from .records import HOSTED_ESTIMATE, INTERPRETED
from ..bench.report import figure, png

FILES = ("results.md", "results.html", "latency_by_device.png", "parity_by_device.png")
LATENCY_PNG, PARITY_PNG = FILES[2], FILES[3]

#: what each meaning of a run's numbers says in the report
MEANING_NOTES = {
    "in-app wall time": "timed around each inference by the app or tool on the device",
    "host wall time": "timed on the host machine",
    HOSTED_ESTIMATE: "a hosted service's profile of a device it runs: an estimate, not measured here",
    INTERPRETED: "an interpreter's time: numerics only, NOT a latency (left out of the latency plot)",
}
#: the mark of a run's source when its numbers are not a measured latency
MARKS = {HOSTED_ESTIMATE: "HOSTED ESTIMATE", INTERPRETED: "INTERPRETER, NOT A LATENCY"}
NO_SHA = "untied (no artifact sha256)"
NO_BUNDLE = "untied (its bundle is not in the store)"
NO_RUNS = "The store holds no runs."
NO_OK_RUNS = "No ok runs: every run in the store failed or was skipped (see below). No plots."
#: the colour of a series whose target is not known (the backends' default)
OTHER_COLOUR = "#9467bd"
PASS_COLOUR, FAIL_COLOUR = "#2ca02c", "#d62728"
#: 1 - cosine of an output identical to its reference, on the log axis
FLOOR = 1e-9
#: runtime or tool names that tell a run's target when the store does not (an untied run)
_TARGET_HINTS = (("executorch", "executorch"), ("core ml", "coreml"), ("coreml", "coreml"), ("litert", "tflite"),
                 ("tflite", "tflite"), ("tensorflow lite", "tflite"), ("onnx", "onnx"), ("pytorch", "pytorch"))
_LABEL_CHARS = 60


# -- what a row says --


def device_label(row: dict) -> str:
    """``model · soc · os version`` of the run's device, as far as its source said."""
    os_part = " ".join(str(p) for p in (row.get("device_os"), row.get("device_os_version")) if p)
    parts = [str(p) for p in (row.get("device_model"), row.get("device_soc")) if p] + ([os_part] if os_part else [])
    return " · ".join(parts) if parts else "(device not given)"


def model_label(row: dict) -> str:
    return str(row.get("variant") or row.get("model") or "(model not given)")


def runtime_label(row: dict) -> str:
    runtime = row.get("runtime") or "-"
    return f"{runtime} / {row['setting']}" if row.get("setting") else str(runtime)


def target_of(row: dict) -> str | None:
    """The run's target: the store's (a tied run), else what its runtime or tool names."""
    if row.get("target"):
        return str(row["target"])
    for text in (row.get("runtime"), row.get("source_tool")):
        lowered = str(text or "").lower()
        for hint, target in _TARGET_HINTS:
            if hint in lowered:
                return target
    return None


def tie_label(row: dict) -> str:
    if row.get("tied"):
        return "tied"
    return NO_BUNDLE if row.get("artifact_sha256") else NO_SHA


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _fixed(value, digits: int = 2) -> str:
    value = _number(value)
    return "-" if value is None else f"{value:.{digits}f}"


def _cv(value) -> str:
    value = _number(value)
    return "-" if value is None else f"{100 * value:.1f}%"


def _stats(row: dict) -> str:
    source = row.get("stats_from") or "none"
    if source == "raw" and row.get("count"):
        return f"raw, n={row['count']}"
    if source == "reported" and _number(row.get("p50")) is None:
        said = [f"{k} {_fixed(row.get(k))}" for k in ("mean", "min") if _number(row.get(k)) is not None]
        return "reported" + (f" ({', '.join(said)} ms)" if said else "")
    return source


def _thermal(row: dict) -> str:
    before, after = row.get("thermal_before"), row.get("thermal_after")
    if before is None and after is None:
        return "-"
    return f"{before or '?'} -> {after or '?'}"


def _precision(row: dict) -> str:
    parts = [str(p) for p in (row.get("precision"), row.get("quantization")) if p]
    return " / ".join(parts) if parts else "-"


def _cosine_distance(metrics: dict | None) -> float | None:
    cosine = _number((metrics or {}).get("cosine"))
    return None if cosine is None else max(1.0 - cosine, FLOOR)


def parity_label(row: dict) -> str:
    """``pass``/``fail`` with cosine and SQNR against the tolerance, or what the status is."""
    status = row.get("parity_status") or "none"
    if status not in ("pass", "fail"):
        return {"none": "none (no outputs)", "unjudged": "unjudged (no reference in the store)"}.get(status, status)
    metrics, tolerance = row.get("parity_metrics") or {}, row.get("tolerance") or {}
    parts = []
    cosine = metrics.get("cosine")
    if cosine is not None or tolerance.get("cosine") is not None:
        bar = f" (>= {tolerance['cosine']})" if tolerance.get("cosine") is not None else ""
        parts.append(f"cos {_fixed(cosine, 6) if cosine is not None else 'n/a'}{bar}")
    if "sqnr_db" in metrics or tolerance.get("sqnr_db") is not None:
        sqnr = metrics.get("sqnr_db")
        bar = f" (>= {tolerance['sqnr_db']} dB)" if tolerance.get("sqnr_db") is not None else ""
        parts.append(f"SQNR {'inf' if sqnr is None else _fixed(sqnr, 1)} dB{bar}")
    if tolerance.get("class"):
        parts.append(f"tolerance {tolerance['class']}")
    return status + (f": {', '.join(parts)}" if parts else "")


def summary_rows(rows) -> list[dict]:
    """One JSON-ready dict per run, in the order given: what ``results list`` prints."""
    out = []
    for row in rows:
        out.append({"id": row.get("id"), "status": row.get("status"), "device": device_label(row),
                    "runtime": row.get("runtime"), "setting": row.get("setting"), "model": model_label(row),
                    "meaning": row.get("meaning"), "p50": _number(row.get("p50")), "p90": _number(row.get("p90")),
                    "cv": _number(row.get("cv")), "parity": row.get("parity_status"), "tied": bool(row.get("tied"))})
    return out


# -- the table --

HEAD = ["id", "device", "source (what its numbers are)", "runtime / setting", "model", "precision / quant.",
        "batch", "p50 ms", "p90 ms", "p99 ms", "stats", "CV", "load ms", "first ms", "peak MB",
        "thermal", "parity", "tie"]


def _ok_rows(rows) -> list[dict]:
    ok = [r for r in rows if r.get("status") == "ok"]
    return sorted(ok, key=lambda r: (device_label(r), model_label(r), runtime_label(r), r.get("id") or 0))


def _source(row: dict) -> str:
    meaning = row.get("meaning") or "?"
    mark = MARKS.get(meaning)
    return f"{row.get('source_tool') or '?'} ({mark or meaning})"


def _cells(row: dict) -> list[str]:
    threads = f", {row['threads']} thr" if row.get("threads") else ""
    model = model_label(row)
    if row.get("variant") and row.get("model") and row["model"] != row["variant"]:
        model += f" ({row['model']})"
    batch = row.get("batch")
    return [str(row.get("id", "")), device_label(row), _source(row), runtime_label(row) + threads, model,
            _precision(row), "-" if batch is None else str(batch), _fixed(row.get("p50")), _fixed(row.get("p90")),
            _fixed(row.get("p99")), _stats(row), _cv(row.get("cv")), _fixed(row.get("load_ms"), 1),
            _fixed(row.get("first_inference_ms"), 1), _fixed(row.get("peak_memory_mb"), 1), _thermal(row),
            parity_label(row), tie_label(row)]


def _problem_rows(rows) -> list[dict]:
    return sorted((r for r in rows if r.get("status") != "ok"), key=lambda r: (r.get("status") or "", r.get("id") or 0))


PROBLEM_HEAD = ["id", "status", "device", "source", "runtime / setting", "model", "error"]


def _problem_cells(row: dict) -> list[str]:
    return [str(row.get("id", "")), str(row.get("status")), device_label(row), str(row.get("source_tool") or "?"),
            runtime_label(row), model_label(row), str(row.get("error") or "(no error given)")]


def _counts(rows) -> str:
    by_status: dict[str, int] = {}
    parity: dict[str, int] = {}
    for r in rows:
        by_status[str(r.get("status"))] = by_status.get(str(r.get("status")), 0) + 1
        if r.get("status") == "ok":
            parity[str(r.get("parity_status"))] = parity.get(str(r.get("parity_status")), 0) + 1
    devices = sorted({device_label(r) for r in rows})
    untied = sum(1 for r in rows if not r.get("tied"))
    text = f"{len(rows)} run(s): " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    if parity:
        text += "; parity of the ok runs: " + ", ".join(f"{n} {s}" for s, n in sorted(parity.items()))
    text += f"; {untied} untied; {len(devices)} device(s): " + "; ".join(devices)
    return text


# -- plots --


def _plain(text: str) -> str:
    """``text`` for a matplotlib label: one line, not too long, no mathtext."""
    text = " ".join(str(text).split())
    if len(text) > _LABEL_CHARS:
        text = text[:_LABEL_CHARS - 1] + "…"
    return text.replace("$", r"\$")


def _grouped(rows: list[dict], label) -> tuple[list[tuple[str, bool]], list[int | None]]:
    """Y labels (text, is a device header) and, per label, the index of its row in ``rows`` (None: a header);
    ``rows`` must be sorted by device."""
    labels: list[tuple[str, bool]] = []
    index: list[int | None] = []
    device = None
    for i, r in enumerate(rows):
        if device_label(r) != device:
            device = device_label(r)
            labels.append((_plain(device), True))
            index.append(None)
        labels.append(("   " + _plain(label(r)), False))
        index.append(i)
    return labels, index


def _y_axis(ax, labels: list[tuple[str, bool]]) -> None:
    ax.set_yticks(range(len(labels)), [text for text, _ in labels], fontsize=8)
    for tick, (_, header) in zip(ax.get_yticklabels(), labels, strict=True):
        if header:
            tick.set_fontweight("bold")
    for y, (_, header) in enumerate(labels):
        if header and y:
            ax.axhline(y - 0.5, color="#bbbbbb", linewidth=0.8)
    ax.set_ylim(len(labels) - 0.5, -0.5)


def latency_rows(rows) -> tuple[list[dict], int, int]:
    """(the ok runs the latency plot shows, interpreter runs left out, runs without a p50 left out)."""
    ok = _ok_rows(rows)
    interpreted = sum(1 for r in ok if r.get("meaning") == INTERPRETED)
    timed = [r for r in ok if r.get("meaning") != INTERPRETED]
    shown = [r for r in timed if _number(r.get("p50")) is not None]
    return shown, interpreted, len(timed) - len(shown)


def latency_plot(rows: list[dict]) -> bytes:
    from ..bench.report import colours

    palette = colours()
    labels, index = _grouped(rows, lambda r: f"{model_label(r)} | {runtime_label(r)}")
    plt, (fig, ax) = figure(11, min(1.6 + 0.3 * len(labels), 500.0))
    p50 = [float(r["p50"]) for r in rows]
    p90 = [max(_number(r.get("p90")) or p, p) for r, p in zip(rows, p50, strict=True)]
    ys = [y for y, i in enumerate(index) if i is not None]
    colour = [palette.get(target_of(r) or "", OTHER_COLOUR) for r in rows]
    hatch = ["//" if r.get("meaning") == HOSTED_ESTIMATE else "" for r in rows]
    ax.barh(ys, p50, color=colour, hatch=hatch, edgecolor="#333333", linewidth=0.4,
            xerr=[[0] * len(rows), [b - a for a, b in zip(p50, p90, strict=True)]], capsize=3)
    for y, r, a, b in zip(ys, rows, p50, p90, strict=True):
        note = " (estimate)" if r.get("meaning") == HOSTED_ESTIMATE else ""
        ax.text(b, y, f"  {a:.2f} ms{note}", va="center", fontsize=7)
    _y_axis(ax, labels)
    ax.set_xlim(0, max(p90) * 1.3)
    ax.set_xlabel("latency per inference, ms (bar: p50, whisker to p90)")
    shown = [t for t in palette if any(target_of(r) == t for r in rows)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[t]) for t in shown]
    names = list(shown)
    if any(target_of(r) not in palette for r in rows):
        handles.append(plt.Rectangle((0, 0), 1, 1, color=OTHER_COLOUR))
        names.append("other / unknown")
    if any(h for h in hatch):
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="#333333", hatch="//"))
        names.append("hosted estimate")
    ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("Latency by device, model and runtime setting")
    return png(plt, fig)


def parity_rows(rows) -> tuple[list[dict], int]:
    """(the judged ok runs with a finite cosine, judged runs without one)."""
    judged = [r for r in _ok_rows(rows) if r.get("parity_status") in ("pass", "fail")]
    shown = [r for r in judged if _cosine_distance(r.get("parity_metrics")) is not None]
    return shown, len(judged) - len(shown)


def parity_plot(rows: list[dict]) -> bytes:
    labels, index = _grouped(rows, lambda r: f"{model_label(r)} | {runtime_label(r)}")
    plt, (fig, ax) = figure(11, min(1.6 + 0.3 * len(labels), 500.0))
    ys = [y for y, i in enumerate(index) if i is not None]
    distance = [_cosine_distance(r["parity_metrics"]) for r in rows]
    failed = [r.get("parity_status") == "fail" for r in rows]
    ax.scatter(distance, ys, c=[FAIL_COLOUR if f else PASS_COLOUR for f in failed], s=36, zorder=3)
    bars = []
    for y, r in zip(ys, rows, strict=True):
        cosine = _number((r.get("tolerance") or {}).get("cosine"))
        if cosine is not None:
            bars.append(max(1.0 - cosine, FLOOR))
            ax.plot([bars[-1]] * 2, [y - 0.38, y + 0.38], color="black", linewidth=2, zorder=2)
    for y, d, f in zip(ys, distance, failed, strict=True):
        ax.annotate(f"FAIL {d:.1e}" if f else f"{d:.1e}", (d, y), xytext=(6, -3), textcoords="offset points",
                    fontsize=7, color=FAIL_COLOUR if f else "#333333")
    ax.set_xscale("log")
    low, high = min(distance + bars), max(distance + bars)
    ax.set_xlim(low / 5, high * 20)
    _y_axis(ax, labels)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=PASS_COLOUR),
               plt.Line2D([], [], marker="o", linestyle="", color=FAIL_COLOUR),
               plt.Line2D([], [], marker="|", linestyle="", color="black", markersize=12, markeredgewidth=2)]
    ax.legend(handles, ["pass", "fail", "tolerance\n(1 - its cosine)"], loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize=8)
    ax.set_xlabel(f"1 - cosine of the output to the bundle's reference (log; lower is closer; {FLOOR:g}: identical)")
    ax.set_title("Parity by device and runtime setting")
    return png(plt, fig)


def _plots(rows) -> tuple[dict[str, bytes], dict[str, str]]:
    """The plots (file name: PNG) and the note under each."""
    plots, notes = {}, {}
    shown, interpreted, without = latency_rows(rows)
    if shown:
        plots[LATENCY_PNG] = latency_plot(shown)
        note = "Bars: p50 of each ok run, whisker to p90, coloured by target; hatched: a hosted estimate."
        if interpreted:
            note += (f" {interpreted} interpreter run(s) (numerics only, not a latency) are left out of this "
                     "plot.")
        else:
            note += " Interpreter runs (numerics only, not a latency) would be left out of this plot."
        if without:
            note += f" {without} run(s) without a p50 are left out."
        notes[LATENCY_PNG] = note
    judged, no_cosine = parity_rows(rows)
    if judged:
        plots[PARITY_PNG] = parity_plot(judged)
        note = ("Dots: 1 - cosine of each judged run's output to the bundle's reference (red: a parity failure); "
                "the black tick on each row is its tolerance.")
        if no_cosine:
            note += f" {no_cosine} judged run(s) without a finite cosine are left out (see the table)."
        notes[PARITY_PNG] = note
    return plots, notes


# -- rendering --

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\|<>`*[]"})


def _md(text: str) -> str:
    return " ".join(str(text).split()).translate(_MD_SPECIAL)


def render_markdown(rows: list[dict], plots: dict[str, bytes], notes: dict[str, str]) -> str:
    lines = ["# shvit-edge results", "", _md(_counts(rows)) if rows else NO_RUNS, ""]
    lines += [f"- *{_md(m)}*: {_md(n)}" for m, n in MEANING_NOTES.items()]
    lines.append("")
    ok = _ok_rows(rows)
    if ok:
        lines += ["| " + " | ".join(_md(h) for h in HEAD) + " |", "|" + "---|" * len(HEAD)]
        lines += ["| " + " | ".join(_md(c) for c in _cells(r)) + " |" for r in ok]
    elif rows:
        lines.append(NO_OK_RUNS)
    problems = _problem_rows(rows)
    lines += ["", "## Failed and skipped runs", ""]
    if problems:
        lines += ["| " + " | ".join(PROBLEM_HEAD) + " |", "|" + "---|" * len(PROBLEM_HEAD)]
        lines += ["| " + " | ".join(_md(c) for c in _problem_cells(r)) + " |" for r in problems]
    else:
        lines.append("None.")
    for name in plots:
        lines += ["", f"![{name}]({name})", "", _md(notes[name])]
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num, td.nowrap { text-align: right; white-space: nowrap; }
td.nowrap { text-align: left; }
td.parity, td.tie { font-size: 11px; }
tr.interpreter td.lat { color: #999; font-style: italic; }
.mark { font-weight: bold; color: #8a5a00; }
.untied { color: #8a5a00; }
.fail, tr.failed td { color: #b00; }
figure { margin: 16px 0; } img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #444; max-width: 1100px; }
"""

_NUMERIC = {"batch", "p50 ms", "p90 ms", "p99 ms", "CV", "load ms", "first ms", "peak MB"}
_LATENCY = {"p50 ms", "p90 ms", "p99 ms", "CV"}


def _html_row(row: dict) -> str:
    esc = html.escape
    meaning = row.get("meaning")
    classes = ["interpreter"] if meaning == INTERPRETED else ["estimate"] if meaning == HOSTED_ESTIMATE else []
    cells = []
    for head, cell in zip(HEAD, _cells(row), strict=True):
        attrs = []
        kind = ("num " if head in _NUMERIC else "nowrap " if head == "thermal" else "") + \
            ("lat" if head in _LATENCY else head if head in ("parity", "tie") else "")
        if kind.strip():
            attrs.append(f'class="{kind.strip()}"')
        text = esc(cell)
        if head.startswith("source") and meaning in MARKS:
            text = (f"{esc(str(row.get('source_tool') or '?'))} "
                    f"<span class=\"mark\">({esc(MARKS[meaning])})</span>")
        elif head == "parity" and row.get("parity_status") == "fail":
            reason = row.get("parity_reason")
            text = f'<span class="fail">{text}</span>' + (f"<br><small>{esc(str(reason))}</small>" if reason else "")
        elif head == "parity" and row.get("parity_reason") and row.get("parity_status") == "unjudged":
            text = f'<span title="{esc(str(row["parity_reason"]))}">{text}</span>'
        elif head == "tie" and not row.get("tied"):
            text = f'<span class="untied">{text}</span>'
        cells.append(f"<td {' '.join(attrs)}>{text}</td>" if attrs else f"<td>{text}</td>")
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return f'<tr id="run-{esc(str(row.get("id")))}"{cls}>' + "".join(cells) + "</tr>"


def render_html(rows: list[dict], plots: dict[str, bytes], notes: dict[str, str]) -> str:
    esc = html.escape
    ok = _ok_rows(rows)
    if ok:
        table = (f'<table id="runs"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in HEAD)}</tr></thead>\n'
                 "<tbody>\n" + "\n".join(_html_row(r) for r in ok) + "\n</tbody></table>")
    else:
        table = f'<p id="no-results">{esc(NO_OK_RUNS if rows else NO_RUNS)}</p>'
    problems = _problem_rows(rows)
    if problems:
        body = "\n".join(
            f'<tr id="problem-{esc(str(r.get("id")))}" class="{esc(str(r.get("status")))}">'
            + "".join(f"<td>{esc(c)}</td>" for c in _problem_cells(r)) + "</tr>" for r in problems)
        failures = (f'<table id="problems"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in PROBLEM_HEAD)}'
                    f"</tr></thead>\n<tbody>\n{body}\n</tbody></table>")
    else:
        failures = '<p id="no-problems">None.</p>'
    meanings = "".join(f"<li><b>{esc(m)}</b>: {esc(n)}</li>" for m, n in MEANING_NOTES.items())
    images = "\n".join(
        f'<figure><img id="plot-{Path(name).stem}" alt="{esc(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{esc(notes[name])}</figcaption></figure>" for name, png in plots.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shvit-edge results</title>
<style>{_CSS}</style></head>
<body>
<h1>shvit-edge results</h1>
<p id="summary">{esc(_counts(rows)) if rows else esc(NO_RUNS)}</p>
<ul id="meanings">{meanings}</ul>
<h2>Runs</h2>
{table}
<h2>Failed and skipped runs</h2>
{failures}
{"<h2>Plots</h2>" if plots else ""}
{images}
</body></html>
"""


def _check_dir(out_dir) -> Path:
    from ..bench.report import check_report_dir
    from ..errors import UsageError

    out = check_report_dir(out_dir)
    for name in FILES:
        if (out / name).is_dir() and not (out / name).is_symlink():
            raise UsageError(f"{out}: {out / name} is a folder; the report would replace it")
    return out


def write_results_report(rows: list[dict], out_dir) -> list[Path]:
    """Write ``results.md``, ``results.html`` and the plot PNGs for the store's ``rows`` into ``out_dir``; the
    paths written. All of them appear, or none; a plot an earlier report left there that this one has not (it
    has no ok runs, or none judged) is removed afterwards, so the folder never shows an old plot as this one's."""
    from ..atomic import atomic_outputs

    rows = list(rows)
    out = _check_dir(out_dir)
    plots: dict[str, bytes] = {}
    notes: dict[str, str] = {}
    if latency_rows(rows)[0] or parity_rows(rows)[0]:
        from ..bench.report import require_matplotlib

        require_matplotlib()
        plots, notes = _plots(rows)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / FILES[0], out / FILES[1], *(out / name for name in plots)]
    with atomic_outputs(*paths, overwrite=True) as temporaries:
        temporaries[0].write_text(render_markdown(rows, plots, notes), encoding="utf-8")
        temporaries[1].write_text(render_html(rows, plots, notes), encoding="utf-8")
        for tmp, png in zip(temporaries[2:], plots.values(), strict=True):
            tmp.write_bytes(png)
    for name in FILES[2:]:
        stale = out / name
        if name not in plots and (stale.is_file() or stale.is_symlink()):
            stale.unlink()
    return paths
