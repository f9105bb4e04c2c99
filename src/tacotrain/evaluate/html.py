"""The HTML page of ``tacotrain eval``: one self-contained file that opens offline.

Everything (CSS, the sorting script, alignment PNGs and WAVs as ``data:`` URIs) is inlined so
the page can be copied off a training box, mailed or archived and still shows and plays as is.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from tacotrain.fsutil import atomic_write_text

# (key, header, kind): kind picks the cell rendering and whether the column sorts as numbers.
COLUMNS: list[tuple[str, str, str]] = [
    ("id", "id", "text"),
    ("source", "source", "text"),
    ("category", "category", "text"),
    ("text", "text", "text"),
    ("aligned", "aligned", "bool"),
    ("reasons", "reasons", "list"),
    ("stopped_by_gate", "stopped by gate", "bool"),
    ("frames", "frames", "num"),
    ("length_ratio", "length ratio", "num"),
    ("skipped_tokens", "skipped", "num"),
    ("repeated_tokens", "repeated", "num"),
    ("stalled_tokens", "stalled", "num"),
    ("identified", "identified", "bool"),
    ("content_margin", "content margin", "num"),
    ("diagonality", "diagonality", "num"),
    ("focus", "focus", "num"),
    ("coverage", "coverage", "num"),
    ("monotonicity", "monotonicity", "num"),
    ("mcd_dtw_db", "MCD-DTW dB", "num"),
    ("wer", "WER (recogniser)", "num"),
    ("floor_wer", "WER of the ground truth through the vocoder (floor)", "num"),
    ("transcript", "what the recogniser heard", "text"),
    ("rtf", "RTF", "num"),
    ("wav", "audio", "audio"),
    ("alignment_png", "alignment", "img"),
    ("mel_png", "mel: ground truth above, synthesis below", "melimg"),
]

# what the content test establishes: which sentence the synthesis says, told apart by recordings
# of several sentences; not how near its sound comes to its own recording (MCD-DTW says that)
CONTENT_TESTED = ("items tested for content (each synthesis identified as its own sentence among "
                  "the recordings of other sentences: what it says, not how near its sound is to "
                  "its recording; the others are judged on attention and the gate alone)")

# (key, words, unit) of the scalar summary figures; shares also get their "(k/n)" count.
SUMMARY: list[tuple[str, str, str]] = [
    ("items", "items", ""),
    ("content_tested_items", CONTENT_TESTED, ""),
    ("aligned_share", "aligned share", ""),
    ("gate_stop_share", "stopped by the gate", ""),
    ("median_length_ratio", "median length ratio (output / expected)", ""),
    ("median_mcd_dtw_db", "median MCD-DTW", " dB"),
    ("gt_resynthesis_mcd_dtw_db", "ground-truth resynthesis MCD-DTW (vocoder floor)", " dB"),
    ("rtf", "real-time factor", ""),
]

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; }
th { background: #eee; position: sticky; top: 0; }
#items th { cursor: pointer; user-select: none; }
#items th[data-dir=asc]::after { content: " \\25B2"; }
#items th[data-dir=desc]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.c-text { max-width: 22em; }
tr.fail { background: #fde2e2; }
tr.fail td.c-reasons { color: #a00; font-weight: bold; }
img.align { width: 300px; display: block; }
img.mel { width: 420px; display: block; }
.missing { color: #a00; font-style: italic; }
"""

# Sort by the clicked column: numbers as numbers, empty (null) values last in both directions.
SCRIPT = """
document.querySelectorAll('#items th[data-key]').forEach(th => th.addEventListener('click', () => {
  const body = document.querySelector('#items tbody'), col = th.cellIndex;
  const asc = th.dataset.dir !== 'asc', num = th.dataset.type === 'num';
  document.querySelectorAll('#items th').forEach(h => delete h.dataset.dir);
  th.dataset.dir = asc ? 'asc' : 'desc';
  const rows = [...body.rows].sort((a, b) => {
    const x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
    if (x === '' || y === '') return (x === '') - (y === '');
    const c = num ? Number(x) - Number(y) : x.localeCompare(y);
    return asc ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}));
"""


def _fmt(value: Any) -> str:
    """Short display text: "-" for null, yes/no for bools, 2-3 decimals for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def _sort_value(value: Any) -> str:
    """What the script sorts on (``data-v``): "" for null so it always lands last."""
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _data_uri(out_dir: Path, rel: Any, mime: str) -> str | None:
    """Base64 ``data:`` URI of ``out_dir/rel``, or None when it is not given or not on disk."""
    if not rel:
        return None
    path = out_dir / str(rel)
    if not path.is_file():
        return None
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _cell(item: dict[str, Any], key: str, kind: str, out_dir: Path) -> str:
    value = item.get(key)
    attrs = f'class="{kind} c-{escape(key)}" data-v="{escape(_sort_value(value))}"'
    if kind == "audio":
        uri = _data_uri(out_dir, value, "audio/wav")
        body = (f'<audio controls preload="metadata" src="{uri}"></audio>' if uri
                else '<span class="missing">missing</span>')
    elif kind == "img":
        uri = _data_uri(out_dir, value, "image/png")
        body = (f'<img class="align" alt="alignment {escape(str(item.get("id")))}" src="{uri}">'
                if uri else '<span class="missing">missing</span>')
    elif kind == "melimg":  # only items with ground truth have one: "-" elsewhere
        uri = _data_uri(out_dir, value, "image/png")
        body = (f'<img class="mel" alt="mel {escape(str(item.get("id")))}" src="{uri}">'
                if uri else "-" if not value else '<span class="missing">missing</span>')
    else:
        body = escape(_fmt(value))
    return f"<td {attrs}>{body}</td>"


def _heard_text(heard: dict[str, Any] | None) -> str:
    if not heard:
        return "not listened"
    if not heard.get("tested"):
        return f"untested: {heard.get('note', '')}"
    verdict = "intelligible" if heard["intelligible"] else "NOT intelligible"
    return (f"{verdict}: WER {_fmt(heard['wer'])}, floor {_fmt(heard['floor_wer'])}, "
            f"bound {_fmt(heard['wer_bound'])}")


def _summary_html(summary: dict[str, Any]) -> str:
    """Every summary figure in words, then the per-source and robustness tables."""
    n = summary.get("items")
    lines = []
    for key, words, unit in SUMMARY:
        value = summary.get(key)
        text = f"{words}: {_fmt(value)}{unit if value is not None else ''}"
        if key.endswith("_share") and value is not None and isinstance(n, int) and n:
            text += f" ({round(value * n)}/{n})"
        lines.append(f"<li>{escape(text)}</li>")
    parts = [f"<ul>{''.join(lines)}</ul>"]
    by_source = summary.get("by_source") or {}
    if by_source:
        rows = "".join(
            f"<tr><td>{escape(str(src))}</td><td class='num'>{escape(_fmt(s.get('items')))}</td>"
            f"<td class='num'>{escape(_fmt(s.get('aligned_share')))}</td>"
            f"<td>{escape(_heard_text(s.get('intelligibility')))}</td></tr>"
            for src, s in by_source.items()
        )
        parts.append("<h3>By source</h3><table id='by-source'><tr><th>source</th><th>items</th>"
                     "<th>aligned share</th><th>recogniser: WER against its resynthesis floor"
                     f"</th></tr>{rows}</table>")
    failures = summary.get("robustness_failure_rate") or {}
    if failures:
        rows = "".join(f"<tr><td>{escape(str(cat))}</td><td class='num'>{escape(_fmt(rate))}"
                       "</td></tr>" for cat, rate in failures.items())
        parts.append("<h3>Robustness failure rate</h3><table id='robustness'><tr>"
                     f"<th>category</th><th>failure rate</th></tr>{rows}</table>")
    return "\n".join(parts)


def _render_page(report: dict[str, Any], out_dir: Path) -> str:
    """The page as a string; media paths in ``report`` are read relative to ``out_dir``."""
    out_dir = Path(out_dir)
    checkpoint = escape(str(report.get("checkpoint", "")))
    head = "".join(
        f'<th data-key="{key}" data-type="{kind}">{escape(label)}</th>'
        for key, label, kind in COLUMNS
    )
    rows = []
    for item in report.get("items", []):
        cls = "item" if item.get("aligned") else "item fail"
        cells = "".join(_cell(item, key, kind, out_dir) for key, _, kind in COLUMNS)
        rows.append(f'<tr class="{cls}" data-id="{escape(str(item.get("id")))}">{cells}</tr>')
    body = "\n".join(rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>tacotrain eval: {checkpoint}</title>
<style>{STYLE}</style></head>
<body>
<h1>Evaluation of {checkpoint}</h1>
<h2>Summary</h2>
{_summary_html(report.get("summary") or {})}
<h2>Items</h2>
<p>Click a column header to sort; click again to reverse. Red rows did not align.</p>
<table id="items"><thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody></table>
<script>{SCRIPT}</script>
</body></html>
"""


def write_report_html(report: dict[str, Any], out_dir: Path, path: Path | None = None) -> Path:
    """Write the page to ``path`` (default ``out_dir/report.html``) atomically; return the path.

    Atomic so that a browser tab reloading it mid-write never shows a truncated page.
    """
    out_dir = Path(out_dir)
    target = Path(path) if path is not None else out_dir / "report.html"
    atomic_write_text(target, _render_page(report, out_dir))
    return target
