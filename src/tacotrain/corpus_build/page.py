"""The listening page: every clip with its transcript, doubtful ones first.

One self-contained HTML file (no scripts, no outside resources) beside ``wavs/`` and
``review/``: a section for the clips set aside for review, one for the rejected ones (with the
reason) and one for the kept ones, each sorted by confidence, lowest first.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from tacotrain.corpus_build.report import REASONS
from tacotrain.fsutil import atomic_write_text

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px;
text-align:left;vertical-align:middle}.c{font-family:monospace}.low{color:#a00}"""
_TITLES = {"review": "Set aside for review", "rejected": "Rejected", "kept": "Kept"}


def _row(c: dict[str, Any], min_confidence: float) -> str:
    scores = ", ".join(f"{k} {v:.2f}" for k, v in c.get("scores", {}).items())
    reason = REASONS.get(c.get("reason") or "", c.get("reason") or "")
    cls = "c low" if c["confidence"] < min_confidence else "c"
    return (f"<tr><td class='{cls}'>{c['confidence']:.2f}</td><td><audio controls "
            f"preload='none' src='{escape(c['wav'])}'></audio></td><td>{escape(c['text'])}"
            f"<br><small>{escape(c['id'])} {c['start']:.2f}-{c['end']:.2f} s"
            f"{' | ' + escape(scores) if scores else ''}"
            f"{' | ' + escape(reason) if reason else ''}</small></td></tr>")


def render(report: dict[str, Any]) -> str:
    clips = report["clips"]
    min_conf = report["config"]["min_confidence"]
    parts = [f"<!doctype html><meta charset='utf-8'><title>corpus build</title>"
             f"<style>{_STYLE}</style><h1>corpus build</h1>"]
    s = report["summary"]
    parts.append(f"<p>{s['clips']['kept']} kept, {s['clips']['review']} for review, "
                 f"{s['clips']['rejected']} rejected; seconds: "
                 + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()) + "</p>")
    for status in ("review", "rejected", "kept"):
        chosen = sorted((c for c in clips if c["status"] == status),
                        key=lambda c: c["confidence"])
        parts.append(f"<h2>{_TITLES[status]} ({len(chosen)})</h2>")
        if chosen:
            parts.append("<table><tr><th>confidence</th><th>audio</th><th>transcript</th></tr>"
                         + "".join(_row(c, min_conf) for c in chosen) + "</table>")
    return "\n".join(parts) + "\n"


def write_page(path: str | Path, report: dict[str, Any]) -> None:
    atomic_write_text(path, render(report))
