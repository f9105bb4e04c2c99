"""One metrics stream: the trainer emits each value once; the tracker fans it out to sinks.

Sinks now: ``RUN/events.jsonl`` (always; machine-readable, read by tests, reports and the demo)
and TensorBoard (``RUN/tb``, optional). Lines of ``events.jsonl``::

    {"time": 1700000000.0, "step": 120, "kind": "scalars", "values": {"train/loss": 1.2, ...}}
    {"time": ..., "step": 120, "kind": "image", "tag": "val/alignment", "path": "plots/..png"}
    {"time": ..., "step": 120, "kind": "text", "tag": "...", "text": "..."}
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from tacotrain.config import TrackConfig


class Tracker:
    def __init__(self, run_dir: str | Path, cfg: TrackConfig | None = None,
                 params: dict[str, Any] | None = None) -> None:
        cfg = cfg or TrackConfig()
        tensorboard = cfg.tensorboard
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._events = open(self.run_dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        self._events.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._events.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}
        self._write({"step": step, "kind": "scalars", "values": clean})
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, float(v), step)

    def image(self, step: int, tag: str, png: str | Path) -> None:
        """Record an image already written to ``png`` (inside the run directory)."""
        png = Path(png)
        rel = png.relative_to(self.run_dir) if png.is_relative_to(self.run_dir) else png
        self._write({"step": step, "kind": "image", "tag": tag, "path": str(rel)})
        if self._tb is not None:
            import matplotlib.image as mpimg

            img = mpimg.imread(png)
            if img.dtype != np.uint8:
                img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
            self._tb.add_image(tag, img[..., :3], step, dataformats="HWC")

    def audio(self, step: int, tag: str, wav: np.ndarray, sample_rate: int) -> None:
        self._write({"step": step, "kind": "audio", "tag": tag, "seconds": len(wav) / sample_rate})
        if self._tb is not None:
            self._tb.add_audio(tag, np.asarray(wav, dtype=np.float32)[None], step, sample_rate)

    def text(self, step: int, tag: str, text: str) -> None:
        self._write({"step": step, "kind": "text", "tag": tag, "text": text})
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if not self._events.closed:
            self._events.close()


def read_events(run_dir: str | Path, kind: str = "scalars") -> list[dict[str, Any]]:
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("kind") == kind:
                out.append(rec)
    return out
