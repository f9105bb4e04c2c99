"""What training tells people: milestones turned into notifier events, each said once.

The trainer calls these at the moments they happen; the Notifier (notify/) decides what is
actually sent (severity floor, deduplication, rate limit, digest).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tacotrain import metrics as M
from tacotrain.config import NotifyConfig
from tacotrain.notify import Event, Notifier
from tacotrain.train.validation import PLOT_FREE_ALIGNMENT


class TrainingEvents:
    def __init__(self, cfg: NotifyConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.notifier = Notifier(cfg, run_name=run_dir.name)
        self.aligned = False
        self.warned_no_alignment = False
        self.last_loss: float | None = None
        self.rising = 0

    def send(self, key: str, severity: str, title: str, text: str, step: int,
             image: Path | None = None) -> None:
        self.notifier.notify(Event(key, severity, title, text, step=step, image=image))

    def started(self, step: int, text: str) -> None:
        title = "training started" if step == 0 else f"training resumed at step {step}"
        self.send("started", "info", title, text, step)

    def rollback(self, step: int, cause: str, lr_factor: float) -> None:
        self.send("rollback", "warning", f"rolled back to step {step}",
                  f"{cause}; learning rate x{lr_factor:g}", step)

    def validation(self, step: int, val: dict[str, float], aligned: bool,
                   old_phase: str | None, phase: str, verdict: str) -> None:
        """``aligned`` and ``verdict`` (in words) come from the verdict on the round."""
        image = self.run_dir / "plots" / PLOT_FREE_ALIGNMENT
        image = image if image.exists() else None
        summary = (f"free-running: {verdict}; MCD-DTW "
                   f"{val.get(M.FREE_MCD_DTW, float('nan')):.2f} dB, "
                   f"focus {val.get(M.FREE_FOCUS, float('nan')):.2f}; "
                   f"validation mel {val[M.VAL_MEL_POST]:.4f}")
        if aligned and not self.aligned:
            self.send("aligned", "info", "attention aligned", summary, step, image)
        self.aligned = self.aligned or aligned
        if old_phase:
            self.send("phase_change", "info", f"phase {old_phase} -> {phase}", summary, step)
        if not self.aligned and step >= self.cfg.no_alignment_step \
                and not self.warned_no_alignment:
            self.warned_no_alignment = True
            self.send("no_alignment", "warning", f"not aligned by step {step}", summary, step,
                      image)
        loss = val[M.VAL_MEL_POST]
        rose = self.last_loss is not None and loss > self.last_loss
        self.rising = self.rising + 1 if rose else 0
        self.last_loss = loss
        if self.rising >= self.cfg.val_rising_rounds - 1:
            self.send("val_loss_rising", "warning", "validation loss rising",
                      f"{self.rising + 1} validations in a row; {summary}", step)

    def finished(self, step: int, text: str) -> None:
        self.send("finished", "info", "training finished", text, step)

    def interrupted(self, step: int, checkpoint: Path | None) -> None:
        self.send("interrupted", "warning", "training interrupted", f"checkpoint {checkpoint}",
                  step)

    def resume_fallback(self, step: int, skipped: str, reason: str) -> None:
        """``--resume`` skipped ``skipped`` (it did not load) for an older checkpoint."""
        self.send("resume_fallback", "warning", f"resumed at step {step} from an older checkpoint",
                  f"skipped {skipped}: {reason}", step)

    def guard_stop(self, step: int, message: str) -> None:
        key = "nan_stop" if "non-finite" in message else "guard_gave_up"
        self.send(key, "critical", "training stopped by the guard", message, step)

    def crash(self, step: int, exc: BaseException) -> None:
        self.send("crash", "critical", "training crashed", f"{type(exc).__name__}: {exc}", step)

    def close(self) -> None:
        self.notifier.close()


class Muted:
    """Stands in for the Tracker and TrainingEvents on ranks other than 0, which track and
    notify nothing: every method is accepted and does nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return _nothing

    def __enter__(self) -> Muted:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _nothing(*args: object, **kwargs: object) -> None:
    return None
