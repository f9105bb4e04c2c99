"""One validation round: teacher-forced losses, then free-running synthesis judged by the verdict.

The round's free-running items are fixed validation sentences spread over the length range;
their content test compares each synthesis with its own ground truth and with training items of
similar length (so that ``alignment.min_candidates`` ground truths are there to choose from).
The result is a :class:`ValidationResult`; the trainer decides what to do with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tacotrain import metrics as M
from tacotrain.audio import GriffinLim
from tacotrain.config import Config
from tacotrain.data.loader import BucketBatchSampler, Collate, TextMelDataset
from tacotrain.judge.alignment import (
    METRICS,
    alignment_metrics,
    plot_alignment,
    plot_mel,
    plot_mel_pair,
)
from tacotrain.judge.freerun import FreeRunRound, judge, nearest_in_length, synthesize
from tacotrain.judge.intelligibility import floor_sample, listener_for
from tacotrain.model import Tacotron2, Tacotron2Loss
from tacotrain.text import attached_marks, text_key
from tacotrain.track import Tracker

log = logging.getLogger(__name__)

PLOT_TF_ALIGNMENT = "val-teacher-forced-alignment.png"
PLOT_TF_MEL = "val-mel.png"
PLOT_FREE_ALIGNMENT = "val-free-run-alignment.png"
PLOT_FREE_MEL = "val-free-run-mel.png"


@dataclass(frozen=True)
class ValidationResult:
    step: int
    losses: dict[str, float]  # teacher-forced, "val/<loss or metric>" -> mean over the split
    free: FreeRunRound | None  # None when no validation item is free-run

    @property
    def aligned(self) -> bool:
        return self.free is not None and self.free.verdict.aligned

    def describe(self) -> str:
        return self.free.verdict.describe() if self.free else "no free-running items"

    def metrics(self) -> dict[str, float]:
        """Flat figures for trackers, early stopping and interventions (``free/<figure>``)."""
        out = dict(self.losses)
        if self.free is not None:
            out.update(M.named(M.FREE, self.free.verdict.summary()))
        return out


def free_run_items(lengths: list[int], k: int) -> list[int]:
    """``k`` validation items spread evenly over the length range (fixed for a run)."""
    k = min(k, len(lengths))
    if k == 0:
        return []
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[round(j * (len(order) - 1) / max(k - 1, 1))] for j in range(k)]


class Validator:
    def __init__(self, cfg: Config, val_set: TextMelDataset, train_set: TextMelDataset,
                 device: torch.device, vocoder: GriffinLim, plots_dir: Path) -> None:
        self.cfg = cfg
        self.val_set = val_set
        self.device = device
        self.vocoder = vocoder
        self.plots = plots_dir
        self.items = free_run_items(val_set.lengths, cfg.train.val_free_run_items)
        self.listener = listener_for(cfg.alignment, val_set.data.language, vocoder,
                                     vocoder.sample_rate) if self.items else None
        if self.listener is not None:
            self.listener.set_sample(lambda: floor_sample(val_set, train_set,
                                                          cfg.alignment.floor_items))
        # other ground truths for the content test: the other validation items first, then
        # training items as long as the free-run items
        others = [i for i in range(len(val_set)) if i not in self.items]
        self.candidates = [val_set[i][1] for i in others]
        self.candidate_texts = [val_set.items[i]["text"] for i in others]
        distinct = {text_key(val_set.items[i]["text"]) for i in range(len(val_set))}
        missing = cfg.alignment.min_candidates - len(distinct)
        if self.items and missing > 0:
            idx = nearest_in_length(train_set.lengths,
                                    [val_set.lengths[i] for i in self.items], missing)
            self.candidates += [train_set[i][1] for i in idx]
            self.candidate_texts += [train_set.items[i]["text"] for i in idx]

    @torch.no_grad()
    def run(self, model: Tacotron2, criterion: Tacotron2Loss, step: int, ga_weight: float,
            entropy_weight: float, autocast: Callable, tracker: Tracker | None
            ) -> ValidationResult:
        """Validate under a forked, fixed RNG (so validation never changes what training does
        next), with the model in eval mode and at its active reduction factor ``model.r`` (the
        criterion's ``r`` must match); restores train mode."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.train.seed + 1)
            model.eval()
            try:
                losses = self._teacher_forced(model, criterion, step, ga_weight,
                                              entropy_weight, autocast, tracker)
                free = self._free_run(model, step, autocast, tracker)
            finally:
                model.train()
        return ValidationResult(step, losses, free)

    def _teacher_forced(self, model, criterion, step, ga_w, ent_w, autocast,
                        tracker) -> dict[str, float]:
        r = model.r  # the reduction factor in effect (gradual training may lower it)
        if criterion.r != r:
            raise ValueError(f"the loss uses r={criterion.r} but the model r={r}")
        collate = Collate(r)
        sampler = BucketBatchSampler(self.val_set.lengths, self.cfg.train.batch_size,
                                     shuffle=False)
        sums: dict[str, float] = {}
        count = 0
        first = None
        for idx in sampler:
            batch = collate([self.val_set[i] for i in idx]).to(self.device)
            with autocast():
                out = model(batch.text, batch.text_lengths, batch.mels, batch.mel_lengths)
                losses = criterion(out, batch, ga_w, ent_w)
            dec = (batch.mel_lengths + r - 1) // r
            am = alignment_metrics(out.alignments.float(), batch.text_lengths, dec)
            n = len(idx)
            for k, v in losses.items():
                sums[M.name(M.VAL, k)] = sums.get(M.name(M.VAL, k), 0.0) + float(v) * n
            for k in METRICS:
                sums[M.name(M.VAL, k)] = sums.get(M.name(M.VAL, k), 0.0) + float(am[k].sum())
            count += n
            if first is None:
                t, f = int(dec[0]), int(batch.mel_lengths[0])
                first = (out.alignments[0, :t, : int(batch.text_lengths[0])].float().cpu(),
                         batch.mels[0, :, :f].cpu(), out.mel_post[0, :, :f].float().cpu())
        if tracker is not None and first is not None:
            plot_alignment(first[0], self.plots / PLOT_TF_ALIGNMENT,
                           title=f"teacher-forced alignment, step {step}")
            plot_mel(torch.cat([first[1], first[2]], dim=0), self.plots / PLOT_TF_MEL,
                     title=f"target (bottom) / predicted (top) mel, step {step}")
            tracker.image(step, M.TAG_TF_ALIGNMENT, self.plots / PLOT_TF_ALIGNMENT)
            tracker.image(step, M.TAG_TF_MEL, self.plots / PLOT_TF_MEL)
        return {k: v / count for k, v in sums.items()}

    def _free_run(self, model, step, autocast, tracker) -> FreeRunRound | None:
        if not self.items:
            return None
        entries = [self.val_set[i] for i in self.items]
        # frames past the verdict's longest accepted length cannot change the verdict
        bound = self.cfg.alignment.length_ratio_max * 1.05
        synth = synthesize(model, [t for t, _, _ in entries], autocast=autocast,
                           max_frames=[int(m.shape[1] * bound) + 1 for _, m, _ in entries])
        symbols = self.val_set.data.symbols
        rnd = judge(synth, [m for _, m, _ in entries], self.cfg.alignment,
                    self.val_set.data.settings.audio.frame_ms, self.candidates,
                    [self.val_set.items[i]["text"] for i in self.items], self.candidate_texts,
                    [attached_marks(t.tolist(), symbols) for t, _, _ in entries],
                    self.listener, listen_always=False)
        if tracker is not None:
            self._report(rnd, entries[0][1], step, tracker)
        return rnd

    def _report(self, rnd: FreeRunRound, gt_mel: torch.Tensor, step: int,
                tracker: Tracker) -> None:
        item = rnd.items[0]
        v = item.verdict
        info = (f"{'aligned' if v.aligned else 'NOT aligned: ' + ', '.join(v.reasons)}; "
                f"focus {v.focus:.2f}, skipped {v.skipped_tokens}, length ratio "
                f"{v.length_ratio or float('nan'):.2f}, MCD-DTW {v.mcd_dtw_db or float('nan'):.1f}"
                " dB")
        plot_alignment(item.attention, self.plots / PLOT_FREE_ALIGNMENT,
                       title=f"free-running alignment, step {step}", info=info)
        tracker.image(step, M.TAG_FREE_ALIGNMENT, self.plots / PLOT_FREE_ALIGNMENT)
        plot_mel_pair(gt_mel, item.mel, self.plots / PLOT_FREE_MEL,
                      f"free-running synthesis vs ground truth, step {step}")
        tracker.image(step, M.TAG_FREE_MEL, self.plots / PLOT_FREE_MEL)
        if self.cfg.track.log_audio:
            if torch.isfinite(item.mel).all():
                tracker.audio(step, M.TAG_FREE_AUDIO, self.vocoder(item.mel),
                              self.vocoder.sample_rate)
            else:
                log.warning("step %d: free-running validation mel is not finite; no audio", step)

