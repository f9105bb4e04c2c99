"""Phase-aware early stopping: alignment -> learning -> fine-tuning.

* alignment: until a validation round is first aligned by the verdict (tacotrain/judge/verdict.py);
  stops the run if the watched metric (default free/mcd_dtw_db, the free-running distance to the
  ground truth) has not improved by ``min_delta`` for ``patience`` rounds (not aligning).
* learning: watches validation mel loss; moves to fine-tuning when the step reaches
  ``fine_tuning_share`` of the step budget or when it plateaus (``patience`` rounds).
* fine-tuning: stops the run when its metric plateaus.

"Best" is the lowest value of ``train.best_metric`` (default: the validation mel loss) among
validations the verdict judged aligned (see :meth:`EarlyStopper.is_best`): a lower loss from a
model that does not read is not better.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from tacotrain import metrics as M
from tacotrain.config import EarlyStopConfig, PhaseConfig

log = logging.getLogger(__name__)

PHASES = ("alignment", "learning", "fine_tuning")
BEST_METRIC = M.VAL_MEL_POST


@dataclass(frozen=True)
class StopDecision:
    phase: str
    stop: bool = False
    reason: str = ""
    phase_changed_from: str | None = None


class EarlyStopper:
    def __init__(self, cfg: EarlyStopConfig, max_steps: int,
                 best_key: str = BEST_METRIC) -> None:
        self.cfg = cfg
        self.best_key = best_key  # train.best_metric
        self._warned = False
        self.max_steps = max_steps
        self.phase = PHASES[0]
        self.best_metric: float | None = None
        self.wait = 0
        self.best_loss: float | None = None
        self.aligned_streak = 0  # consecutive validation rounds the verdict judged aligned

    def phase_cfg(self, phase: str | None = None) -> PhaseConfig:
        return getattr(self.cfg, phase or self.phase)

    def _improved(self, value: float) -> bool:
        pc = self.phase_cfg()
        if self.best_metric is None:
            return True
        if pc.mode == "min":
            return value < self.best_metric - pc.min_delta
        return value > self.best_metric + pc.min_delta

    def _enter(self, phase: str) -> str:
        old, self.phase = self.phase, phase
        self.best_metric, self.wait = None, 0
        return old

    def update(self, step: int, metrics: dict[str, float], aligned: bool) -> StopDecision:
        """Feed one validation round (its figures and the verdict on it); returns the phase and
        whether to stop."""
        changed = None
        self.aligned_streak = self.aligned_streak + 1 if aligned else 0
        if self.phase == "alignment" and aligned:
            changed = self._enter("learning")
        if self.phase == "learning" and step >= self.cfg.fine_tuning_share * self.max_steps:
            changed = changed or self._enter("fine_tuning")
        pc = self.phase_cfg()
        value = metrics.get(pc.metric)
        if value is None or not math.isfinite(value):
            self.wait += 1
        elif self._improved(value):
            self.best_metric, self.wait = value, 0
        else:
            self.wait += 1
        if self.cfg.enabled and self.wait >= pc.patience:
            if self.phase == "learning":
                old = self._enter("fine_tuning")
                return StopDecision(self.phase, phase_changed_from=old)
            reason = (f"{self.phase} phase: {pc.metric} did not improve by {pc.min_delta} for "
                      f"{pc.patience} validation round(s)")
            if self.phase == "alignment":
                reason += " (the model is not aligning)"
            return StopDecision(self.phase, True, reason, changed)
        return StopDecision(self.phase, phase_changed_from=changed)

    def is_best(self, metrics: dict[str, float], aligned: bool) -> bool:
        """Lowest ``best_key`` (train.best_metric) so far among validations the verdict judged
        aligned. Call after :meth:`update` and record with :meth:`mark_best`."""
        loss = metrics.get(self.best_key)
        if loss is None and not self._warned:
            self._warned = True  # e.g. free/wer_ratio where no recogniser judged the round
            log.warning("train.best_metric %s is not among this validation's metrics: no "
                        "best.pt from it", self.best_key)
        if not aligned or loss is None or not math.isfinite(loss):
            return False
        return self.best_loss is None or loss < self.best_loss

    def mark_best(self, metrics: dict[str, float]) -> None:
        self.best_loss = metrics[self.best_key]

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "best_metric": self.best_metric, "wait": self.wait,
                "best_loss": self.best_loss, "aligned_streak": self.aligned_streak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase, self.best_metric = state["phase"], state["best_metric"]
        self.wait, self.best_loss = state["wait"], state["best_loss"]
        self.aligned_streak = state.get("aligned_streak", 0)  # a state without it: no streak
