"""What a training run ends with: :class:`TrainResult`, also written as RUN/train_result.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tacotrain import metrics as M


@dataclass(frozen=True)
class RoundRecord:
    """One validation round of the run: when, in which early-stopping phase, its figures
    (metric name -> value, tacotrain/metrics.py)."""

    step: int
    minutes: float  # training time at the round, over every session of the run
    phase: str
    figures: dict[str, float]

    def get(self, metric: str) -> float | None:
        return self.figures.get(metric)

    def as_row(self) -> dict[str, Any]:
        """The train_result.json history row: step, minutes, phase and the figures, flat and
        unrounded (the tuner scores a trial from them: its value equals the figure in the
        checkpoint it keeps)."""
        return {"step": self.step, "minutes": round(self.minutes, 2), "phase": self.phase,
                **self.figures}


@dataclass
class TrainResult:
    step: int
    # max_steps, time_budget, aligned, early_stop: REASON, guard, interrupted, crash: ERROR
    stop_reason: str
    aligned: bool
    wall_seconds: float
    last_val: dict[str, float] = field(default_factory=dict)
    verdict: str = ""  # the last validation's verdict in words
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    history: list[RoundRecord] = field(default_factory=list)  # one per validation round

    def record(self, iteration: int, phase: str, skipped: int, rollbacks: int
               ) -> dict[str, Any]:
        """The train_result.json document (with the run's guard counts and phase)."""
        return {
            "step": self.step, "iteration": iteration, "stop_reason": self.stop_reason,
            "aligned": self.aligned, "verdict": self.verdict, "phase": phase,
            "wall_seconds": round(self.wall_seconds, 1), "last_val": self.last_val,
            "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "skipped_steps": skipped, "rollbacks": rollbacks,
            "history": [h.as_row() for h in self.history]}

    def summary(self, rollbacks: int, skipped: int) -> str:
        """One line for the "finished" notification."""
        mel = self.last_val.get(M.VAL_MEL_POST, float("nan"))
        return (f"{self.stop_reason} at step {self.step}; aligned: {self.aligned} "
                f"({self.verdict}); validation mel {mel:.4f}; "
                f"{rollbacks} rollback(s), {skipped} skipped step(s)")
