"""The reduction factor r (mel frames per decoder step) along training: the model's own
schedule, read by training, synthesis and export alike."""

from __future__ import annotations

from tacotrain.config import ModelConfig


def r_at(step: int, cfg: ModelConfig) -> int:
    """Reduction factor of training step ``step`` (0-based: the step that makes update
    ``step + 1``): the r of the last ``r_schedule`` pair starting at or before it, or
    ``n_frames_per_step`` without a schedule."""
    r = cfg.n_frames_per_step
    for start, scheduled in cfg.r_schedule:
        if start > step:
            break
        r = scheduled
    return r


__all__ = ["r_at"]
