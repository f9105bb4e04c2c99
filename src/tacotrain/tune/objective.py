"""What a trial is worth: its quality (with alignment first), its time to speak, or both.

``objective.kind`` (tune/space.py) chooses what Optuna is told: ``quality`` (the score below),
``time_to_speak`` or ``both`` (the pair, a multi-objective study). :func:`trial_values` gives
all of them from a trial's validation history.

Time to speak: the training minutes at the first validation that completes
``train.stop_when_aligned_rounds`` validations in a row judged aligned by the verdict (its
intelligibility test included where a recogniser judges the voice): the moment the trainer
itself would stop with ``train.stop_when_aligned``. A trial that never gets there is censored:
P + the minutes it trained, behind every trial that did (3P when it diverged).

Quality: the score of the checkpoint the trial keeps.

Lower is better. Why alignment comes first: a Tacotron 2 that does not read its text cannot
speak, however low its loss, so such a trial must never beat one that reads. Whether a validation
is aligned is the verdict of the trainer (tacotrain/judge/verdict.py, recorded as ``val/aligned``):
the tuner has no rule of its own. With P = ``objective.unaligned_penalty`` (default 1000, far
above any plausible value) and L = the validation ``objective.metric`` (default
``free/mcd_dtw_db``, the free-running MCD-DTW against ground truth over the validation items,
which, unlike a teacher-forced loss, does not move with r or dropout):

=============  ==========================================================  ==============
outcome        score                                                       range
=============  ==========================================================  ==============
aligned        min(L, P) over the validations that were aligned             [0, P]
unaligned      P + min(L, P) over all validations                          [P, 2P]
diverged       3P (stopped by the guard, or no finite validation value)     3P
=============  ==========================================================  ==============

so ranks are lexicographic: aligned before unaligned before diverged, then by L. A trial that
aligned and later lost it still counts as aligned, scored on its aligned validations only (the
ones its ``best.pt`` can come from).

The same function, applied to the validations seen so far, gives the intermediate values
reported to Optuna at each validation (for pruning), so intermediate and final values are on
one scale. The metric name is checked against what the trainer writes (a trial whose
validations lack it fails with that reason instead of scoring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tacotrain import metrics as M
from tacotrain.tune.space import ObjectiveSpec

ALIGNED, UNALIGNED, DIVERGED = "aligned", "unaligned", "diverged"


# a trial's user attribute (tune/pruning.py): [{minutes, step, value, items}, ...]
CURVE = "curve"


def item_values(items: dict[str, list[float | None]] | None, metric_key: str,
                penalty: float) -> list[float] | None:
    """The objective's per-item figures from a round's ``items`` event (None when the round
    has none or the metric has no per-item figure): unaligned items count ``penalty`` above
    their figure, items without one 2 x ``penalty`` (worst)."""
    if not items or metric_key not in items:
        return None
    figures = items[metric_key]
    aligned = items.get("aligned") or [1.0] * len(figures)
    out = []
    for v, a in zip(figures, aligned, strict=False):
        base = 2 * penalty if v is None or not math.isfinite(v) else min(float(v), penalty)
        out.append(base if (a or 0.0) >= 0.5 else base + penalty)
    return out


class MetricMissing(KeyError):
    """The validations lack the objective's metric (a misspelt ``objective.metric``)."""


@dataclass(frozen=True)
class Score:
    value: float
    outcome: str  # aligned, unaligned or diverged
    best_loss: float | None  # the L the score is built from (None when diverged)
    best_step: int | None  # the step of that validation
    aligned_step: int | None  # first aligned validation
    aligned_minutes: float | None  # its training wall time (minutes), when known
    validations: int


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _aligned(row: dict[str, Any]) -> bool:
    """The trainer's verdict on one validation (a row of ``train_result.json``'s history)."""
    return (_finite(row.get(M.VAL_ALIGNED)) or 0.0) >= 0.5


def time_to_speak(history: list[dict[str, Any]], rounds: int) -> tuple[float | None, int | None]:
    """(minutes, step) of the first validation that completes ``rounds`` aligned validations in
    a row; (None, None) when none does."""
    streak = 0
    for row in history:
        streak = streak + 1 if _aligned(row) else 0
        if streak >= rounds:
            return _finite(row.get("minutes")), int(row["step"])
    return None, None


@dataclass(frozen=True)
class TrialValues:
    """A trial's figures: ``values`` are what Optuna is told (one per direction)."""

    values: list[float]
    quality: Score
    speak_minutes: float | None  # None: it never passed (censored)
    speak_step: int | None
    time_value: float  # the time-to-speak objective (censored and diverged trials included)


def trial_values(history: list[dict[str, Any]], spec: ObjectiveSpec, rounds: int,
                 diverged: bool = False) -> TrialValues:
    """All objectives of a trial from its validations ``history`` (see the module doc);
    ``rounds``: train.stop_when_aligned_rounds. :class:`MetricMissing` as :func:`score`."""
    quality = score(history, spec, diverged)
    minutes, step = time_to_speak(history, rounds)
    p = spec.unaligned_penalty
    if diverged:
        t = 3 * p
    elif step is not None:  # passed (every history row records its minutes)
        t = minutes if minutes is not None else 0.0
    else:
        trained = [m for r in history if (m := _finite(r.get("minutes"))) is not None]
        t = p + (max(trained) if trained else 0.0)
    values = {"quality": [quality.value], "time_to_speak": [t], "both": [t, quality.value]}
    return TrialValues(values[spec.kind], quality, minutes, step, t)


def score(history: list[dict[str, Any]], spec: ObjectiveSpec, diverged: bool = False) -> Score:
    """Score validations ``history`` (dicts with ``step``, ``val/aligned``, metrics, optionally
    ``minutes``). ``diverged`` marks a trial the guard stopped. Raises :class:`MetricMissing`
    when no validation has ``spec.metric``."""
    p = spec.unaligned_penalty
    if history and not any(spec.metric in row for row in history):
        raise MetricMissing(f"objective metric {spec.metric!r} is not among the validation "
                            f"metrics ({', '.join(sorted(history[0]))})")
    aligned_rows = [r for r in history if _aligned(r)]
    first = aligned_rows[0] if aligned_rows else None
    aligned_step = int(first["step"]) if first else None
    aligned_minutes = _finite(first.get("minutes")) if first else None

    def best(rows: list[dict[str, Any]]) -> tuple[float, int] | None:
        pts = [(v, int(r["step"])) for r in rows if (v := _finite(r.get(spec.metric))) is not None]
        return min(pts) if pts else None

    n = len(history)
    if diverged:
        return Score(3 * p, DIVERGED, None, None, aligned_step, aligned_minutes, n)
    hit = best(aligned_rows)
    if hit is not None:
        return Score(min(hit[0], p), ALIGNED, hit[0], hit[1], aligned_step, aligned_minutes, n)
    hit = best(history)
    if hit is None:
        return Score(3 * p, DIVERGED, None, None, aligned_step, aligned_minutes, n)
    return Score(p + min(hit[0], p), UNALIGNED, hit[0], hit[1], aligned_step, aligned_minutes, n)
