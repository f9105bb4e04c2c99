"""The training guard: decides, from the metrics the trainer feeds it, when to skip an update,
roll back to the last good state, stop, or make a bounded, reversible intervention.

It never reaches into the model: the trainer applies every decision and logs it. Rules:

* a step whose loss or gradient norm is not finite is skipped (no weight changes);
* a step whose loss is above ``spike_factor`` x the running median of the last
  ``spike_window`` good losses is a spike: also skipped;
* ``nonfinite_patience`` non-finite steps in a row, or ``spike_patience`` spikes in a row, roll
  back to the last good state with the learning rate multiplied by ``rollback_lr_factor``;
  after ``max_rollbacks`` rollbacks the next one stops the run instead;
* interventions (off unless declared in config) trigger on a validation metric, set one wired
  parameter to a value inside its declared bounds, and are judged after a probation window:
  kept if the metric improved by ``min_improvement``, reverted otherwise. Each has a cooldown in
  steps and a maximum count; one intervention per parameter is active at a time.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from tacotrain.config import GuardConfig, InterventionConfig

Action = Literal["ok", "skip", "rollback", "stop"]


@dataclass(frozen=True)
class StepDecision:
    action: Action
    cause: str = ""


@dataclass(frozen=True)
class Change:
    """An intervention decision: ``apply`` sets the parameter, ``revert``/``keep`` end one."""

    kind: Literal["apply", "revert", "keep"]
    name: str
    parameter: str
    step: int
    before: float | None  # the value before (None: the schedule's value)
    after: float | None  # the value after (None: back to the schedule)
    metric: str
    metric_value: float
    baseline: float | None = None
    rollback_weights: bool = False
    trigger_step: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Active:
    trigger_step: int
    baseline: float
    before: float | None


@dataclass
class _InterventionState:
    cfg: InterventionConfig
    count: int = 0
    last_trigger: int | None = None
    active: _Active | None = None
    history: list[int] = field(default_factory=list)


class Guard:
    def __init__(self, cfg: GuardConfig) -> None:
        self.cfg = cfg
        self.losses: deque[float] = deque(maxlen=cfg.spike_window)
        self.nonfinite_streak = 0
        self.spike_streak = 0
        self.rollbacks = 0
        self.skipped = 0
        self._iv = [_InterventionState(c) for c in cfg.interventions]

    # ------------------------------------------------------------------ per step
    def check_step(self, loss: float, grad_norm: float) -> StepDecision:
        """Judge one step *before* its update is applied."""
        if not self.cfg.enabled:
            return StepDecision("ok")
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.nonfinite_streak += 1
            self.spike_streak = 0
            if self.nonfinite_streak >= self.cfg.nonfinite_patience:
                return self._escalate(f"non-finite loss or gradient norm for "
                                      f"{self.nonfinite_streak} step(s) in a row")
            self.skipped += 1
            return StepDecision("skip", "non-finite loss or gradient norm")
        self.nonfinite_streak = 0
        median = self.median()
        if median is not None and loss > self.cfg.spike_factor * median:
            self.spike_streak += 1
            cause = (f"loss spike: {loss:.4g} > {self.cfg.spike_factor:g} x running median "
                     f"{median:.4g}")
            if self.spike_streak >= self.cfg.spike_patience:
                return self._escalate(f"{cause} for {self.spike_streak} step(s) in a row")
            self.skipped += 1
            return StepDecision("skip", cause)
        self.spike_streak = 0
        self.losses.append(loss)
        return StepDecision("ok")

    def median(self) -> float | None:
        """Running median of recent good losses (None until the window is a fifth full)."""
        if len(self.losses) < max(5, self.cfg.spike_window // 5):
            return None
        return statistics.median(self.losses)

    def healthy(self) -> bool:
        """No anomaly pending: a good moment for a snapshot."""
        return self.nonfinite_streak == 0 and self.spike_streak == 0

    def _escalate(self, cause: str) -> StepDecision:
        self.nonfinite_streak = self.spike_streak = 0
        if self.rollbacks >= self.cfg.max_rollbacks:
            return StepDecision("stop", f"{cause}; {self.rollbacks} rollback(s) did not help")
        self.rollbacks += 1
        return StepDecision("rollback", cause)

    # ------------------------------------------------------------------ interventions
    def observe(self, step: int, metrics: dict[str, float],
                current: dict[str, float | None]) -> list[Change]:
        """Feed validation metrics; returns the intervention changes to apply now.

        ``current`` maps each wired parameter to its current override (None = schedule).
        """
        changes: list[Change] = []
        busy = {s.cfg.parameter for s in self._iv if s.active is not None}
        for st in self._iv:
            c = st.cfg
            value = metrics.get(c.metric)
            if value is None or not math.isfinite(value):
                continue
            if st.active is not None:
                if step - st.active.trigger_step < c.probation_steps:
                    continue
                gain = (value - st.active.baseline) if c.compare == "<" else \
                    (st.active.baseline - value)
                ok = gain >= c.min_improvement and gain > 0
                changes.append(Change(
                    "keep" if ok else "revert", c.name, c.parameter, step,
                    before=c.value, after=c.value if ok else st.active.before, metric=c.metric,
                    metric_value=value, baseline=st.active.baseline,
                    rollback_weights=(not ok) and c.rollback_on_failure,
                    trigger_step=st.active.trigger_step))
                st.active = None
                busy.discard(c.parameter)
                continue
            triggered = value < c.threshold if c.compare == "<" else value > c.threshold
            if not triggered or step < c.not_before_step or st.count >= c.max_count:
                continue
            if st.last_trigger is not None and step - st.last_trigger < c.cooldown_steps:
                continue
            if c.parameter in busy:
                continue
            before = current.get(c.parameter)
            st.active = _Active(step, value, before)
            st.count += 1
            st.last_trigger = step
            st.history.append(step)
            busy.add(c.parameter)
            changes.append(Change("apply", c.name, c.parameter, step, before=before,
                                  after=min(max(c.value, c.min), c.max), metric=c.metric,
                                  metric_value=value, trigger_step=step))
        return changes

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return {
            "losses": list(self.losses), "rollbacks": self.rollbacks, "skipped": self.skipped,
            "interventions": [
                {"count": s.count, "last_trigger": s.last_trigger, "history": s.history,
                 "active": None if s.active is None else vars(s.active)} for s in self._iv],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses.clear()
        self.losses.extend(state["losses"])
        self.rollbacks, self.skipped = state["rollbacks"], state["skipped"]
        for s, d in zip(self._iv, state["interventions"], strict=False):
            s.count, s.last_trigger, s.history = d["count"], d["last_trigger"], d["history"]
            s.active = None if d["active"] is None else _Active(**d["active"])
