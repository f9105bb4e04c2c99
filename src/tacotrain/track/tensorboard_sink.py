"""TensorBoard sink (``RUN/tb``): the default live view of a run.

It receives the very events written to ``events.jsonl`` (a non-finite scalar arrives as None and
is shown as NaN), with each event's wall time, so what TensorBoard plots is what the file says.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

TB_DIR = "tb"


class TensorBoardSink:
    def __init__(self, run_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when enabled

        self.run_dir = Path(run_dir)
        self._writer: Any = SummaryWriter(str(self.run_dir / TB_DIR))

    def emit(self, index: int, event: dict[str, Any], wav: np.ndarray | None = None) -> None:
        w = self._writer
        if w is None:
            return
        kind, step, when = event["kind"], event.get("step", 0), event.get("time")
        if kind == "scalars":
            for key, value in event["values"].items():
                w.add_scalar(key, math.nan if value is None else value, step, walltime=when)
        elif kind == "image":
            import matplotlib.image as mpimg

            img = mpimg.imread(self.run_dir / event["path"])
            if img.dtype != np.uint8:
                img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            w.add_image(event["tag"], img[..., :3], step, dataformats="HWC", walltime=when)
        elif kind == "audio" and wav is not None:
            w.add_audio(event["tag"], np.asarray(wav, dtype=np.float32)[None], step,
                        event["sample_rate"], walltime=when)
        elif kind == "text":
            w.add_text(event["tag"], event["text"], step, walltime=when)
        # "params": the config is already shown as the step-0 "config" text

    def close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
