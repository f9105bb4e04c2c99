"""Pruning a trial against the others at the same training time, not at the same step.

Trials of one study train at different speeds (batch size, r and model widths change how long a
step takes), so "step 400" of two trials are different amounts of work; what a user pays for is
training time. Each validation, a trial's reporter (tune/study.py) appends a point to the
trial's ``curve`` (user attribute): points ``{minutes, step, value, items}``, where ``value`` is the
objective so far (tune/objective.py) and ``items`` the validation items' own figures for the
objective's metric (alignment first: an item that is not aligned counts ``unaligned_penalty``
above its figure; None where the metric has no per-item figure). Another trial's state "by the
same training time" is its points up to those minutes; where it had not validated yet by then
(early rounds), its points up to the same step stand in.

- ``median``: prune when the trial's best value so far is worse than the median of the finished
  trials' best values by the same training time.
- ``wilcoxon``: prune when, item by item, the trial is worse than the best finished trial was
  at the same training time: a one-sided Wilcoxon signed-rank test over the validation items
  (the same items in every trial of a study) gives p below ``p_threshold``.

Finished means COMPLETE; a study prunes nothing before ``n_startup_trials`` of them, nor before
a trial has trained ``n_warmup_steps``, and then checks at validations whose step is a multiple
of ``interval_steps`` past the warm-up (as Optuna's MedianPruner). A pruned trial's
``pruned_reason`` says why.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tacotrain.tune.objective import CURVE


def _reached(curve: list[dict[str, Any]], minutes: float, step: int) -> list[dict[str, Any]]:
    """The points of another trial's ``curve`` reached by ``minutes`` of training; where it had
    not validated yet by then, those reached by ``step`` (the same-step comparison)."""
    by_time = [p for p in curve if p["minutes"] is not None
               and float(p["minutes"]) <= minutes + 1e-9]
    return by_time or [p for p in curve if int(p["step"]) <= step]


class SameTimePruner(optuna.pruners.BasePruner):
    """Median or Wilcoxon pruning on the ``curve`` attribute (see the module doc)."""

    def __init__(self, kind: str = "median", n_startup_trials: int = 2, n_warmup_steps: int = 0,
                 interval_steps: int = 1, p_threshold: float = 0.1) -> None:
        if kind not in ("median", "wilcoxon"):
            raise ValueError(f"SameTimePruner kind {kind!r}: median or wilcoxon")
        self.kind = kind
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.p_threshold = p_threshold
        self.reason = ""  # why the last prune() said yes

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        self.reason = ""
        curve = trial.user_attrs.get(CURVE) or []
        step = trial.last_step
        if not curve or step is None or step < self.n_warmup_steps \
                or (step - self.n_warmup_steps) % self.interval_steps:
            return False
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get(CURVE)]
        if len(done) < max(self.n_startup_trials, 1):
            return False
        now = curve[-1]
        if now["minutes"] is None:
            return False
        minutes = float(now["minutes"])
        if self.kind == "median":
            return self._median(curve, done, minutes, step)
        return self._wilcoxon(now["items"], done, minutes, step)

    def _median(self, curve: list[dict[str, Any]], done: list[FrozenTrial], minutes: float,
                step: int) -> bool:
        others = [min(float(p["value"]) for p in pts) for t in done
                  if (pts := _reached(t.user_attrs[CURVE], minutes, step))]
        if not others:
            return False
        mine = min(float(p["value"]) for p in curve)
        median = statistics.median(others)
        if mine > median:
            self.reason = (f"best value {mine:.4g} after {minutes:.1f} min is worse than the "
                           f"median {median:.4g} of {len(others)} finished trials by then")
            return True
        return False

    def _wilcoxon(self, mine: list[float] | None, done: list[FrozenTrial], minutes: float,
                  step: int) -> bool:
        from scipy.stats import wilcoxon

        best = min(done, key=lambda t: t.value if t.value is not None else math.inf)
        then = [p for p in _reached(best.user_attrs[CURVE], minutes, step) if p["items"]]
        if not then or not mine or len(then[-1]["items"]) != len(mine):
            return False
        ref = then[-1]["items"]
        diffs = [a - b for a, b in zip(mine, ref, strict=True)]
        worse = sum(d > 0 for d in diffs)
        if not any(diffs) or worse <= len(diffs) / 2:
            return False
        p = float(wilcoxon(diffs, alternative="greater", zero_method="zsplit").pvalue)
        if p < self.p_threshold:
            self.reason = (f"worse than the best trial ({best.number}) at {minutes:.1f} min on "
                           f"{worse} of {len(diffs)} items (Wilcoxon p={p:.3f} < "
                           f"{self.p_threshold:g})")
            return True
        return False
