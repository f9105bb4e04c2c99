"""Every second of the input, accounted for: kept in a clip, set aside for review, rejected with a
reason, or dropped as silence between clips. Pure functions on clip records (dicts with
``source``, ``start``, ``end``, ``status``, ``reason``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

STATUSES = ("kept", "review", "rejected")
REASONS = {
    "match": "the audio does not sound like its text (alignment distance high)",
    "boundary": "a text boundary lies far from any pause",
    "pauses": "a sentence ends where the audio does not pause: text and audio disagree",
    "duration": "the speech is much longer or shorter than its text",
    "too_long": "longer than max_clip and no pause at a text boundary to cut at",
    "no_words": "the recogniser heard no words",
    "low_confidence": "the recogniser is not sure of its transcript",
}


def account(duration: float, clips: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds of one input by fate; ``silence`` lists the dropped intervals between clips.
    ``total`` equals the sum of the parts (clips never overlap: each ends at or before the next
    one's cut point)."""
    seconds: dict[str, Any] = {s: 0.0 for s in STATUSES}
    by_reason: dict[str, float] = defaultdict(float)
    silence, t = [], 0.0
    for c in sorted(clips, key=lambda c: c["start"]):
        if c["start"] < t - 1e-6:
            raise ValueError(f"clip {c['id']} overlaps the clip before it")
        if c["start"] > t:
            silence.append([round(t, 4), round(c["start"], 4)])
        seconds[c["status"]] += c["end"] - c["start"]
        if c["status"] == "rejected":
            by_reason[c["reason"]] += c["end"] - c["start"]
        t = c["end"]
    if duration > t:
        silence.append([round(t, 4), round(duration, 4)])
    seconds["silence"] = sum(b - a for a, b in silence)
    seconds["total"] = duration
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    return {"seconds": seconds, "rejected_by_reason": {k: round(v, 3) for k, v in
                                                       sorted(by_reason.items())},
            "silence": silence}


def summary(inputs: list[dict[str, Any]], clips: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole build: clip counts by status and seconds by fate over all inputs."""
    seconds: dict[str, float] = defaultdict(float)
    by_reason: dict[str, float] = defaultdict(float)
    for item in inputs:
        for k, v in item["accounting"]["seconds"].items():
            seconds[k] += v
        for k, v in item["accounting"]["rejected_by_reason"].items():
            by_reason[k] += v
    counts = {s: sum(c["status"] == s for c in clips) for s in STATUSES}
    return {"clips": counts, "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "rejected_by_reason": {k: round(v, 3) for k, v in sorted(by_reason.items())}}


def format_summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    sec = s["seconds"]
    lines = [f"clips: {s['clips']['kept']} kept, {s['clips']['review']} set aside for review, "
             f"{s['clips']['rejected']} rejected",
             f"seconds: {sec.get('total', 0):.1f} in = {sec.get('kept', 0):.1f} kept + "
             f"{sec.get('review', 0):.1f} review + {sec.get('rejected', 0):.1f} rejected + "
             f"{sec.get('silence', 0):.1f} silence dropped"]
    for reason, v in s["rejected_by_reason"].items():
        lines.append(f"  rejected {v:.1f} s: {REASONS.get(reason, reason)}")
    return "\n".join(lines)
