"""A validation round's decisions: validate, judge, decide, and every rank takes them over.

Rank 0 alone validates (train/validation.py) and decides: early stopping's phase and stop,
whether this is the best checkpoint so far (``best.pt``), the guard's interventions, and
whether the run stops because it aligned. The other ranks wait for the decision (broadcast) and
load rank 0's guard and early-stop state, so that every rank applies the same interventions
and stops at the same step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tacotrain import metrics as M
from tacotrain.config import Config
from tacotrain.track import Tracker
from tacotrain.train.ddp import Dist
from tacotrain.train.early_stop import PHASES, EarlyStopper
from tacotrain.train.events import TrainingEvents
from tacotrain.train.guard import Change, Guard
from tacotrain.train.result import RoundRecord, TrainResult
from tacotrain.train.validation import ValidationResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundDecision:
    """What rank 0 concluded from a validation round; every rank applies it."""

    aligned: bool
    is_best: bool
    changes: list[Change]  # interventions to apply now
    stop_reason: str | None  # None: go on
    guard: dict[str, Any]  # rank 0's guard and early-stop state after the round
    stopper: dict[str, Any]


class ValidationRound:
    def __init__(self, cfg: Config, dist: Dist, guard: Guard, stopper: EarlyStopper) -> None:
        self.cfg, self.dist, self.guard, self.stopper = cfg, dist, guard, stopper
        self.last: ValidationResult | None = None  # the latest round's result (rank 0)

    def decide(self, validate: Callable[[], ValidationResult], step: int, minutes: float,
               overrides: dict[str, float | None], result: TrainResult, tracker: Tracker,
               events: TrainingEvents) -> RoundDecision:
        """Every rank calls this at the same step; all return rank 0's decision."""
        main = self.dist.is_main()
        decided = self.dist.broadcast(
            self._judge(validate(), step, minutes, overrides, result, tracker, events)
            if main else None)
        if not main:
            self.guard.load_state_dict(decided.guard)
            self.stopper.load_state_dict(decided.stopper)
            result.aligned = decided.aligned
        return decided

    def _judge(self, res: ValidationResult, step: int, minutes: float,
               overrides: dict[str, float | None], result: TrainResult, tracker: Tracker,
               events: TrainingEvents) -> RoundDecision:
        """Rank 0's part: track, notify, update early stopping and the guard's
        interventions, record the round in ``result``."""
        self.last = res
        aligned = res.aligned
        val = res.metrics()
        val[M.VAL_ALIGNED] = float(aligned)
        decision = self.stopper.update(step, val, aligned)
        val[M.EARLY_STOP_PHASE] = float(PHASES.index(decision.phase))
        if res.free is not None:
            tracker.items(step, M.FREE, res.free.verdict.item_figures())
        tracker.scalars(step, {**val, M.TRAIN_MINUTES: minutes})
        result.aligned, result.last_val, result.verdict = aligned, val, res.describe()
        result.history.append(RoundRecord(step, minutes, decision.phase, dict(val)))
        if decision.phase_changed_from:
            log.info("step %d: phase %s -> %s", step, decision.phase_changed_from,
                     decision.phase)
            tracker.text(step, "early_stop",
                         f"phase {decision.phase_changed_from} -> {decision.phase}")
        events.validation(step, val, aligned, decision.phase_changed_from, decision.phase,
                          res.describe())
        is_best = self.stopper.is_best(val, aligned)
        if is_best:
            self.stopper.mark_best(val)
        changes = self.guard.observe(step, val, dict(overrides))
        log.info("step %d (%.1f min, %s): val mel %.4f | free-running: %s; focus %.2f, "
                 "skipped %.0f%%, length ratio %.2f, MCD-DTW %.2f dB%s", step, minutes,
                 decision.phase, val[M.VAL_MEL_POST], res.describe(),
                 val.get(M.FREE_FOCUS, float("nan")),
                 100 * val.get(M.FREE_SKIPPED_SHARE, float("nan")),
                 val.get(M.FREE_LENGTH_RATIO, float("nan")),
                 val.get(M.FREE_MCD_DTW, float("nan")), " ALIGNED" if aligned else "")
        stop_reason = None
        tc = self.cfg.train
        if tc.stop_when_aligned and self.stopper.aligned_streak >= tc.stop_when_aligned_rounds:
            stop_reason = "aligned"
        elif decision.stop:
            stop_reason = f"early_stop: {decision.reason}"
            log.info("early stop at step %d: %s", step, decision.reason)
        return RoundDecision(aligned, is_best, changes, stop_reason, self.guard.state_dict(),
                             self.stopper.state_dict())


def verdict_record(val: ValidationResult | None) -> dict[str, Any]:
    """The verdict of the validation a checkpoint was written after, as stored in it."""
    if val is None or val.free is None:
        return {}
    v = val.free.verdict
    return {"step": val.step, "aligned": v.aligned, "aligned_share": v.aligned_share,
            "description": v.describe(), "summary": v.summary(),
            "items": [i.as_dict() for i in v.items]}
