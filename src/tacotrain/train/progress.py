"""What a run shows while it trains: the progress bar and the interval's mean figures."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from tqdm import tqdm

from tacotrain import metrics as M
from tacotrain.track import Tracker
from tacotrain.train.events import Muted
from tacotrain.train.result import TrainResult


@dataclass(frozen=True)
class BarLimit:
    """What the progress bar counts towards: ``total`` steps (None: not known yet) and the
    limit that will stop the run, in words."""

    total: int | None
    label: str


def bar_limit(max_steps: int, budget_seconds: float | None, elapsed_seconds: float, step: int,
              steps_per_second: float | None) -> BarLimit:
    """The nearer of ``train.max_steps`` and ``train.time_budget_minutes`` for the progress bar.

    With a time budget the total is the step the budget runs out at, at the measured speed
    (capped at ``max_steps``), so the bar's ETA is the time the run has left; before the speed
    is measured the total is unknown. ``elapsed_seconds`` counts resumed time too."""
    if budget_seconds is None:
        return BarLimit(max_steps, f"max_steps {max_steps}")
    minutes = f"{elapsed_seconds / 60:.1f}/{budget_seconds / 60:g} min"
    if not steps_per_second:
        return BarLimit(None, f"time budget {minutes}")
    # the step that crosses the budget still runs: round up
    reach = step + math.ceil(max(budget_seconds - elapsed_seconds, 0.0) * steps_per_second)
    if reach < max_steps:
        return BarLimit(reach, f"time budget {minutes}")
    return BarLimit(max_steps, f"max_steps {max_steps} (before the time budget, {minutes})")


class TrainBar:
    """A tqdm bar over steps whose total and label follow the nearer limit (:func:`bar_limit`),
    at the speed measured since the bar was made."""

    def __init__(self, max_steps: int, budget: float, step: int, phase: str,
                 enabled: bool) -> None:
        self.max_steps, self.budget = max_steps, budget
        self.bar = tqdm(total=max_steps, initial=step, unit="step", disable=not enabled,
                        dynamic_ncols=True, desc=phase)
        self.speed_from = (step, time.monotonic())

    def show_limit(self, step: int, elapsed: float, phase: str) -> None:
        """Bar total and description from the nearer limit; ``elapsed``: the run's seconds."""
        steps, secs = step - self.speed_from[0], time.monotonic() - self.speed_from[1]
        lim = bar_limit(self.max_steps, None if math.isinf(self.budget) else self.budget,
                        elapsed, step, steps / secs if steps > 0 and secs > 0 else None)
        self.bar.total = lim.total
        self.bar.set_description(f"{phase} | {lim.label}", refresh=False)

    def show_figures(self, means: dict[str, float]) -> None:
        self.bar.set_postfix(loss=f"{means[M.TRAIN_LOSS]:.3f}",
                             diag=f"{means[M.TRAIN_DIAGONALITY]:.2f}",
                             focus=f"{means[M.TRAIN_FOCUS]:.2f}")

    def move_to(self, step: int) -> None:
        self.bar.n = step
        self.bar.refresh()


class IntervalMeter:
    """The mean of each update figure over the updates since the last :meth:`means`, and the
    interval's throughput (updates, frames and items per second, over every rank)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.since = time.monotonic()

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def means(self) -> dict[str, float]:
        """The interval's figures; starts the next interval."""
        now = time.monotonic()
        secs = now - self.since
        out = {k: v / self.n for k, v in self.sums.items() if k not in M.TRAIN_TOTALS}
        out[M.TRAIN_STEPS_PER_SECOND] = self.n / secs
        out[M.TRAIN_FRAMES_PER_SECOND] = self.sums[M.TRAIN_FRAMES] / secs
        out[M.TRAIN_ITEMS_PER_SECOND] = self.sums[M.TRAIN_ITEMS] / secs
        self.sums, self.n, self.since = {}, 0, now
        return out


@dataclass
class Loop:
    """One fit() call's limits and companions."""

    max_steps: int
    budget: float  # seconds; inf: none
    result: TrainResult
    bar: TrainBar
    meter: IntervalMeter
    tracker: Tracker | Muted
