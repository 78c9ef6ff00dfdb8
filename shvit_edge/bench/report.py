"""``bench --report DIR``: the results as ``report.md`` and ``report.html``, a table and plots people can read.

The plots are matplotlib PNGs: written beside ``report.md`` (which links them) and embedded in ``report.html``
(base64), so the page is one file that opens anywhere. Plots:

- latency (p50, with p90 as a whisker) of every candidate, grouped by variant and resolution, one colour per
  backend, the eager baseline included;
- achieved GFLOP/s against the machine's fp32 GEMM peak (the roofline's ceiling);
- for artifacts whose manifest records a verify result (quantized exports do): latency against the cosine of
  their output to the fp32 model, the trade a quantization mode makes.

Written atomically: the files appear together, or none of them. A run without results (every candidate
failed or was skipped) still gets its report: it says so and lists why, without plots.
:func:`check_report_dir` tells, before a benchmark runs, whether the report could be written at all.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

#: the eager PyTorch baseline's colour; each backend declares its own (``Backend.colour``)
BASELINE_COLOUR = "#7f7f7f"


def colours() -> dict[str, str]:
    """Series colour by target: the baseline, then every registered backend in registry order."""
    from ..backends.registry import backends

    return {"pytorch": BASELINE_COLOUR, **{name: b.colour for name, b in backends().items()}}


FILES = ("report.md", "report.html", "latency.png", "roofline.png", "tradeoff.png")


def require_matplotlib() -> None:
    """The plots need the ``report`` extra; say so in one line, before a long benchmark runs."""
    from ..backends.base import MissingExtraError, modules_available

    if not modules_available("matplotlib"):

        raise MissingExtraError("--report needs matplotlib: pip install 'shvit-edge[report]'")


def check_report_dir(out_dir) -> Path:
    """``out_dir`` as a Path, or :class:`~shvit_edge.errors.UsageError` when the report could not be written
    there: it is a file, a folder that is not writable, or a folder that cannot be created (a file on its path,
    an unwritable parent); or a report file's name in it is taken by a folder (writing would replace that
    folder). Creates nothing: called before a benchmark runs, so a bad ``--report`` costs no benchmark."""
    from ..errors import UsageError

    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--report {out}: this is a file, not a folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"--report {out}: this folder is not writable")
        for name in FILES:
            if (out / name).is_dir() and not (out / name).is_symlink():
                raise UsageError(f"--report {out}: {out / name} is a folder; the report would replace it")
        return out
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--report {out}: this folder cannot be created ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--report {out}: this folder cannot be created ({parent} is not writable)")
    return out


def _rows(doc: dict) -> list[dict]:
    return [*doc.get("baselines", []), *doc["results"]]


def _name(row: dict) -> str:
    return Path(row["artifact"]).name if row["target"] != "pytorch" else "PyTorch eager (fused)"


def _group(row: dict) -> str:
    h, w = row.get("resolution") or ("?", "?")
    return f"{row.get('variant', '?')} {h}x{w} b{row['batch']}"


def figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")  # no display; and only for this figure's backend, set before pyplot is imported
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(width, height), dpi=110)


def png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def latency_plot(doc: dict) -> bytes:
    rows = sorted(_rows(doc), key=lambda r: (_group(r), r["target"] != "pytorch", r["latency_ms"]["p50"]))
    plt, (fig, ax) = figure(9, 1.2 + 0.42 * len(rows))
    labels = [f"{_group(r)} | {_name(r)}" for r in rows]
    p50 = [r["latency_ms"]["p50"] for r in rows]
    p90 = [r["latency_ms"]["p90"] for r in rows]
    ax.barh(range(len(rows)), p50, color=[colours().get(r["target"], "#9467bd") for r in rows],
            xerr=[[0] * len(rows), [b - a for a, b in zip(p50, p90, strict=True)]], capsize=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    for i, r in enumerate(rows):
        ratio = r.get("ratio_to_eager")
        ax.text(p90[i], i, f"  {p50[i]:.2f} ms" + (f" ({ratio:.2f}x eager)" if ratio else ""), va="center",
                fontsize=8)
    ax.set_xlabel(f"latency per inference, ms (p50, whisker to p90), {doc['machine']['threads']} thread(s)")
    ax.set_xlim(0, max(p90) * 1.45)
    palette = colours()
    shown = [t for t in palette if any(r["target"] == t for r in rows)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[t]) for t in shown]
    ax.legend(handles, shown, loc="lower right", fontsize=8)
    ax.set_title("Latency by variant and backend")
    return png(plt, fig)


def roofline_plot(doc: dict) -> bytes:
    rows = _rows(doc)
    plt, (fig, ax) = figure(9, 1.2 + 0.42 * len(rows))
    ax.barh(range(len(rows)), [r["gflops"] for r in rows], color=[colours().get(r["target"], "#9467bd") for r in rows])
    ax.set_yticks(range(len(rows)), [f"{_group(r)} | {_name(r)}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    peak = doc["machine"].get("fp32_gemm_peak_gflops")
    if peak:
        ax.axvline(peak, color="black", linestyle="--", label=f"fp32 GEMM peak, {peak:.0f} GFLOP/s")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, max([peak or 0.0] + [r["gflops"] for r in rows]) * 1.15)
    ax.set_xlabel("achieved GFLOP/s (2 x MACs x batch / p50)")
    ax.set_title("Achieved throughput against the machine's fp32 GEMM peak")
    return png(plt, fig)


def tradeoff_plot(doc: dict) -> bytes | None:
    rows = [r for r in doc["results"] if (r.get("verify") or {}).get("cosine") is not None]
    if not rows:
        return None
    plt, (fig, ax) = figure(7.5, 4.5)
    for i, r in enumerate(sorted(rows, key=lambda r: r["latency_ms"]["p50"])):
        distance = max(1.0 - r["verify"]["cosine"], 1e-9)  # fp32 artifacts sit at the floor
        ax.scatter(r["latency_ms"]["p50"], distance, color=colours().get(r["target"], "#9467bd"), s=40)
        ax.annotate(f"{r['target']} {r.get('quantization') or r.get('precision')}",
                    (r["latency_ms"]["p50"], distance), fontsize=8, xytext=(5, 6 if i % 2 else -11),
                    textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("latency p50, ms")
    ax.set_ylabel("1 - cosine to the fp32 model (verify); lower is closer")
    ax.set_title("Latency against accuracy of the verified artifacts")
    return png(plt, fig)


def _table(doc: dict) -> tuple[list[str], list[list[str]]]:
    head = ["group", "artifact", "runtime", "p50 ms", "p90 ms", "p99 ms", "min ms", "img/s", "x eager",
            "load ms", "first ms", "peak RSS MB", "GFLOP/s", "verify cosine"]
    body = []
    for r in _rows(doc):
        lat = r["latency_ms"]
        ratio = r.get("ratio_to_eager")
        verify = r.get("verify") or {}
        cosine = verify.get("cosine")
        body.append([_group(r), _name(r), r["runtime"], f"{lat['p50']:.2f}", f"{lat['p90']:.2f}",
                     f"{lat['p99']:.2f}", f"{lat['min']:.2f}", f"{r['throughput_ips']:.1f}",
                     "-" if ratio is None else f"{ratio:.2f}", f"{r['load_ms']:.0f}",
                     f"{r['first_inference_ms']:.1f}", "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}",
                     f"{r['gflops']:.1f}", f"{cosine:.5f}" if cosine is not None else verify.get("status") or "-"])
    return head, body


def _machine_line(doc: dict) -> str:
    m, s = doc["machine"], doc.get("settings", {})
    peak = m.get("fp32_gemm_peak_gflops")
    amount = f"{s['seconds']} s" if s.get("seconds") else f"{s.get('iterations')} iterations"
    return (f"{m.get('processor') or m.get('device', '?')}, {m.get('platform', '')}; {m['threads']} thread(s) on "
            f"CPUs {m.get('cpu_set')}; {s.get('warmup')} warm-up, {amount} per candidate in {s.get('rounds')} "
            "alternating rounds" + (f"; fp32 GEMM peak {peak:.1f} GFLOP/s" if peak else ""))


#: what a report without results says in place of its table
NO_RESULTS = "No results: every candidate failed or was skipped (see below)."


def render_markdown(doc: dict, plots: dict[str, bytes]) -> str:
    head, body = _table(doc)
    lines = ["# shvit-edge bench", "", _machine_line(doc), ""]
    if body:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    else:
        lines.append(NO_RESULTS)
    lines.append("")
    for item in doc.get("skipped", []):
        lines.append(f"- skipped {item['artifact']}: {item['reason']}")
    for item in doc.get("failures", []):
        lines.append(f"- FAILED {item['artifact']}: {item['error']}")
    lines.append("")
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    return "\n".join(lines)


def render_html(doc: dict, plots: dict[str, bytes]) -> str:
    head, body = _table(doc)
    esc = html.escape
    rows = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    notes = "".join(f"<li>skipped {esc(i['artifact'])}: {esc(i['reason'])}</li>" for i in doc.get("skipped", []))
    notes += "".join(f"<li class='fail'>FAILED {esc(i['artifact'])}: {esc(i['error'])}</li>"
                     for i in doc.get("failures", []))
    table = (f'''<table id="results"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>
<tbody>
{rows}
</tbody></table>''' if body else f'<p id="no-results">{esc(NO_RESULTS)}</p>')
    images = "\n".join(
        f'<figure><img id="plot-{Path(name).stem}" alt="{esc(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></figure>'
        for name, png in plots.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shvit-edge bench</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f0f0f0; }} td:nth-child(-n+3) {{ text-align: left; }}
figure {{ margin: 16px 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
.fail {{ color: #b00; }}
</style></head>
<body>
<h1>shvit-edge bench</h1>
<p id="machine">{esc(_machine_line(doc))}</p>
{table}
<ul>{notes}</ul>
{images}
</body></html>
"""


def write_report(doc: dict, out_dir) -> list[Path]:
    """Write ``report.md``, ``report.html`` and the plot PNGs into ``out_dir``; the paths written."""
    from ..atomic import atomic_outputs

    check_report_dir(out_dir)
    plots = {}
    if _rows(doc):  # without results: the report says so, and has no plots
        require_matplotlib()
        plots = {"latency.png": latency_plot(doc), "roofline.png": roofline_plot(doc)}
        tradeoff = tradeoff_plot(doc)
        if tradeoff is not None:
            plots["tradeoff.png"] = tradeoff
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.md", out / "report.html", *(out / name for name in plots)]
    with atomic_outputs(*paths, overwrite=True) as temporaries:
        temporaries[0].write_text(render_markdown(doc, plots), encoding="utf-8")
        temporaries[1].write_text(render_html(doc, plots), encoding="utf-8")
        for tmp, png in zip(temporaries[2:], plots.values(), strict=True):
            tmp.write_bytes(png)
    return paths
