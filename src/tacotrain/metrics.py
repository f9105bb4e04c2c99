"""Metric names, each defined once.

Figures are computed under short keys (a loss name, an alignment metric, a verdict summary key)
and travel under a group prefix: ``train/`` (per update), ``val/`` (teacher-forced
validation), ``free/`` (free-running validation: the verdict's summary), ``guard/`` and
``early_stop/``. :func:`named` joins a group and its keys; the constants are the full names the
code refers to. Config values (early-stopping metrics, interventions, the tuner's objective)
name metrics by these strings.
"""

from __future__ import annotations

from collections.abc import Mapping

TRAIN, VAL, FREE, GUARD, EARLY_STOP = "train", "val", "free", "guard", "early_stop"


def name(group: str, key: str) -> str:
    return f"{group}/{key}"


def named(group: str, figures: Mapping[str, float]) -> dict[str, float]:
    """``figures`` under ``group``'s prefix."""
    return {name(group, k): v for k, v in figures.items()}


# per update (losses and alignment metrics also come under TRAIN with their own keys)
TRAIN_LOSS = name(TRAIN, "loss")
TRAIN_MEL_POST = name(TRAIN, "mel_post")
TRAIN_GATE = name(TRAIN, "gate")
TRAIN_GUIDED_ATTN = name(TRAIN, "guided_attn")
TRAIN_DIAGONALITY = name(TRAIN, "diagonality")
TRAIN_FOCUS = name(TRAIN, "focus")
TRAIN_FRAMES = name(TRAIN, "frames")
TRAIN_ITEMS = name(TRAIN, "items")
TRAIN_TOTALS = (TRAIN_FRAMES, TRAIN_ITEMS)  # summed over micro-batches and ranks, not means
TRAIN_GRAD_NORM = name(TRAIN, "grad_norm")
TRAIN_LR = name(TRAIN, "lr")
TRAIN_GA_WEIGHT = name(TRAIN, "ga_weight")
TRAIN_CLIPPED = name(TRAIN, "clipped")
TRAIN_R = name(TRAIN, "r")
TRAIN_STEPS_PER_SECOND = name(TRAIN, "steps_per_second")
TRAIN_FRAMES_PER_SECOND = name(TRAIN, "frames_per_second")
TRAIN_ITEMS_PER_SECOND = name(TRAIN, "items_per_second")

# a validation round
VAL_MEL_POST = name(VAL, "mel_post")
VAL_ALIGNED = name(VAL, "aligned")
FREE_MCD_DTW = name(FREE, "mcd_dtw_db")
FREE_FOCUS = name(FREE, "focus")
FREE_SKIPPED_SHARE = name(FREE, "skipped_share")
FREE_LENGTH_RATIO = name(FREE, "length_ratio")
FREE_ALIGNED_SHARE = name(FREE, "aligned_share")
FREE_IDENTIFIED_SHARE = name(FREE, "identified_share")
FREE_STOPPED_BY_GATE = name(FREE, "stopped_by_gate")
FREE_WER = name(FREE, "wer")  # the recogniser's word error rate on the synthesis
FREE_WER_RATIO = name(FREE, "wer_ratio")  # the recogniser's WER over its floor (ground truth)
EARLY_STOP_PHASE = name(EARLY_STOP, "phase")
# training minutes at the round (wall time since the start, across resumes), recorded with it
TRAIN_MINUTES = name(TRAIN, "minutes")

# the guard
GUARD_SKIPPED_STEPS = name(GUARD, "skipped_steps")
GUARD_ROLLBACKS = name(GUARD, "rollbacks")
GUARD_LR_SCALE = name(GUARD, "lr_scale")

# tracker tags of images and audio
TAG_TF_ALIGNMENT = name(VAL, "alignment_teacher_forced")
TAG_TF_MEL = name(VAL, "mel")
TAG_FREE_ALIGNMENT = name(VAL, "alignment_free_run")
TAG_FREE_MEL = name(VAL, "mel_free_run")
TAG_FREE_AUDIO = name(VAL, "free_run_audio")
