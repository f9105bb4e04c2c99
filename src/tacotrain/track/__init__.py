"""One metrics stream: the trainer emits each value once; the tracker fans it out to sinks.

There is one entry point: every call writes one line to ``RUN/events.jsonl`` (always;
the durable record that reports, the demo and ``tacotrain track sync`` read), then hands that
same event, once, to each enabled sink: TensorBoard (``RUN/tb``, ``track.tensorboard``) and
MLflow (``track.mlflow.enabled``; see mlflow_sink.py). Lines of ``events.jsonl``::

    {"time": 1700000000.0, "kind": "params", "values": {"optim.lr": 0.001, ...}}
    {"time": ..., "step": 120, "kind": "scalars", "values": {"train/loss": 1.2, ...}}
    {"time": ..., "step": 120, "kind": "image", "tag": "val/alignment", "path": "plots/..png"}
    {"time": ..., "step": 120, "kind": "audio", "tag": "val/sample", "path": "audio/...wav",
     "sample_rate": 22050, "seconds": 1.4}
    {"time": ..., "step": 120, "kind": "text", "tag": "...", "text": "..."}
    {"time": ..., "step": 120, "kind": "items", "tag": "free", "values": {"mcd_dtw_db": [...]}}

(``items``: per-item figures of a validation round, in item order; the sinks leave them to
``events.jsonl``, where the tuner compares trials item by item.)

A non-finite scalar is written (and sent) as null. Paths are relative to the run directory.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from tacotrain.config import TrackConfig
from tacotrain.track.jsonl_sink import EVENTS_FILE, JsonlSink, iter_events, read_events

__all__ = ["EVENTS_FILE", "Sink", "Tracker", "exit_status", "iter_events", "read_events"]

log = logging.getLogger(__name__)


class Sink(Protocol):
    """A destination besides events.jsonl. ``index`` is the event's line in events.jsonl."""

    def emit(self, index: int, event: dict[str, Any], wav: np.ndarray | None = None) -> None: ...

    def close(self, status: str) -> None: ...


def exit_status(exc_type: type[BaseException] | None) -> str:
    """How a run ended, in MLflow's words: Ctrl-C is KILLED, any other exception FAILED."""
    if exc_type is None:
        return "FINISHED"
    if issubclass(exc_type, KeyboardInterrupt | SystemExit):
        return "KILLED"
    return "FAILED"


class Tracker:
    """Context manager around a training session; ``params`` (flattened config) is logged once.

    A new Tracker on a run directory that already has events (``--resume``) appends to them and
    continues the same MLflow run.
    """

    def __init__(self, run_dir: str | Path, cfg: TrackConfig | None = None,
                 params: dict[str, Any] | None = None) -> None:
        cfg = cfg or TrackConfig()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = JsonlSink(self.run_dir)
        self.sinks: list[Sink] = []
        self.status: str | None = None  # set by close()
        try:
            if cfg.tensorboard:
                from tacotrain.track.tensorboard_sink import TensorBoardSink

                self.sinks.append(TensorBoardSink(self.run_dir))
            if cfg.mlflow.enabled:
                from tacotrain.extras import require

                require("mlflow", "track.mlflow.enabled", "mlflow")
                from tacotrain.track.mlflow_sink import MlflowSink

                self.sinks.append(MlflowSink(self.run_dir, cfg.mlflow, self._jsonl))
        except BaseException:
            self.close("FAILED")
            raise
        if params:
            self._emit({"kind": "params", "values": dict(params)})


    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(exit_status(exc_type))

    def _emit(self, event: dict[str, Any], wav: np.ndarray | None = None) -> None:
        if self.status is not None:
            raise RuntimeError("Tracker is closed")
        event = {"time": round(time.time(), 3), **event}
        index = self._jsonl.write(event)
        for sink in self.sinks:
            sink.emit(index, event, wav)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        clean = {}
        for k, v in values.items():
            f = float(v)
            clean[k] = f if math.isfinite(f) else None
        self._emit({"step": step, "kind": "scalars", "values": clean})

    def image(self, step: int, tag: str, png: str | Path) -> None:
        """Record an image already written to ``png`` (inside the run directory)."""
        png = Path(png)
        rel = png.relative_to(self.run_dir) if png.is_relative_to(self.run_dir) else png
        self._emit({"step": step, "kind": "image", "tag": tag, "path": str(rel)})

    def audio(self, step: int, tag: str, wav: np.ndarray, sample_rate: int) -> None:
        """Write ``wav`` to ``RUN/audio/TAG/step-N.wav`` (so it outlives the process and can be
        sent to MLflow later) and record it."""
        import soundfile as sf

        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if wav.size == 0:  # e.g. a free-running item stopped by its gate on the first step
            log.warning("step %d: %s: no audio samples; nothing recorded", step, tag)
            return
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
        rel = Path("audio") / safe / f"step-{step:07d}.wav"
        (self.run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(self.run_dir / rel, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16")
        self._emit({"step": step, "kind": "audio", "tag": tag, "path": str(rel),
                    "sample_rate": int(sample_rate), "seconds": round(len(wav) / sample_rate, 3)},
                   wav)

    def items(self, step: int, tag: str, values: dict[str, list[float | None]]) -> None:
        """Per-item figures (lists in item order; non-finite -> null)."""
        clean = {k: [None if v is None or not math.isfinite(float(v)) else float(v) for v in vs]
                 for k, vs in values.items()}
        self._emit({"step": step, "kind": "items", "tag": tag, "values": clean})

    def text(self, step: int, tag: str, text: str) -> None:
        self._emit({"step": step, "kind": "text", "tag": tag, "text": text})

    def close(self, status: str = "FINISHED") -> None:
        """Flush and end every sink (the MLflow run ends with ``status``); idempotent."""
        if self.status is not None:
            return
        self.status = status
        for sink in self.sinks:
            try:
                sink.close(status)
            except Exception:  # one sink's failure must not hide the others or the real error
                log.exception("closing %s failed", type(sink).__name__)
        self._jsonl.close()
