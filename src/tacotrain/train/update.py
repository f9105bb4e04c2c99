"""One optimiser update: forward and backward over its micro-batches, clip, judge, apply.

For each of the update's ``train.grad_accum_steps`` micro-batches: forward under autocast ->
masked losses -> backward of loss / k; then unscale -> clip -> the guard judges the update ->
step, or skip it (the batch-norm statistics the forward passes changed are put back).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tacotrain import metrics as M
from tacotrain.batch import Batch
from tacotrain.judge.alignment import METRICS, alignment_metrics
from tacotrain.model import Tacotron2, Tacotron2Loss
from tacotrain.train.ddp import Dist
from tacotrain.train.guard import Guard, StepDecision
from tacotrain.train.inject import SPIKE_FACTOR, InjectedCrash, Injector
from tacotrain.train.setup import Autocast


@dataclass(frozen=True)
class UpdateParams:
    """The live values one update uses (schedules and interventions already applied)."""

    lr: float
    ga_weight: float
    entropy_weight: float
    grad_clip: float


class Updater:
    """``net``: what the forward runs through (DDP around ``model``, or ``model`` itself)."""

    def __init__(self, model: Tacotron2, net: torch.nn.Module, criterion: Tacotron2Loss,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, guard: Guard,
                 dist: Dist, device: torch.device, autocast: Autocast,
                 injector: Injector | None) -> None:
        self.model, self.net, self.criterion = model, net, criterion
        self.optimizer, self.scaler, self.guard = optimizer, scaler, guard
        self.dist, self.device, self.autocast, self.injector = dist, device, autocast, injector

    def run(self, micro: Sequence[Batch], p: UpdateParams, iteration: int,
            applying: Callable[[], None]) -> tuple[StepDecision, dict[str, float]]:
        """One update attempt over ``micro``; ``applying()`` is called once the guard has
        decided, before the state changes (the update is half applied until the caller says
        otherwise).

        Each micro-batch's loss is scaled by 1/k before its backward, so the gradients add up
        to the gradient of the mean micro-batch loss (under DDP also averaged over the ranks,
        once, in the last backward). The guard judges the whole update: its loss is the mean
        of the micro-batch losses (and of the ranks'), its gradient norm the norm of the summed
        gradient; a skip drops all of it. Returns the decision and the update's metrics
        (floats, equal on every rank): losses and alignment figures averaged, ``train/frames``
        and ``train/items`` summed over micro-batches and ranks."""
        for group in self.optimizer.param_groups:
            group["lr"] = p.lr
        self.model.train()
        # batch-norm statistics change in the forward pass: keep them to undo a skipped step
        buffers = {k: b.clone() for k, b in self.model.named_buffers()}
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, batch in enumerate(micro):
            with self.dist.sync_grads(self.net, sync=i == len(micro) - 1):
                figures = self._forward_backward(batch.to(self.device), p, len(micro),
                                                 iteration)
            for k, v in figures.items():
                sums[k] = sums.get(k, 0.0) + v
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), p.grad_clip))
        local = {k: v if k in M.TRAIN_TOTALS else v / len(micro) for k, v in sums.items()}
        # Under fp16 loss scaling, inf gradients with a finite loss are the scaler's business
        # (it skips the step and lowers the scale): only a non-finite loss concerns the guard.
        loss = local[M.TRAIN_LOSS]
        judged_norm = 0.0 if self.scaler.is_enabled() and math.isfinite(loss) else grad_norm
        local["nonfinite"] = float(not (math.isfinite(loss) and math.isfinite(judged_norm)))
        # one all-reduce: every rank's guard judges the same figures, so a NaN or a loss spike
        # on one rank is a skip on all of them
        metrics = self.dist.reduce(local, total=M.TRAIN_TOTALS)
        nonfinite = metrics.pop("nonfinite") > 0
        decision = self.guard.check_step(math.nan if nonfinite else metrics[M.TRAIN_LOSS],
                                         judged_norm)
        applying()
        if decision.action == "ok":
            self.scaler.step(self.optimizer)
        else:
            with torch.no_grad():
                for k, b in self.model.named_buffers():
                    b.copy_(buffers[k])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()
        metrics.update({M.TRAIN_GRAD_NORM: grad_norm, M.TRAIN_LR: p.lr,
                        M.TRAIN_GA_WEIGHT: p.ga_weight,
                        M.TRAIN_CLIPPED: float(grad_norm > p.grad_clip),
                        M.TRAIN_R: float(self.model.r)})
        return decision, metrics

    def _forward_backward(self, batch: Batch, p: UpdateParams, n_micro: int,
                          iteration: int) -> dict[str, float]:
        """Forward and backward of one micro-batch (its loss / ``n_micro``, so that the
        accumulated gradient is that of the mean loss);
        returns its figures: losses, alignment metrics (batch means), frames and items."""
        with self.autocast():
            out = self.net(batch.text, batch.text_lengths, batch.mels, batch.mel_lengths)
            losses = self.criterion(out, batch, p.ga_weight, p.entropy_weight)
        losses["loss"] = self._inject(losses["loss"], iteration)
        self.scaler.scale(losses["loss"] / n_micro).backward()
        r = self.model.r  # the reduction factor this batch was collated and run with
        dec_lengths = (batch.mel_lengths + r - 1) // r
        with torch.no_grad():
            am = alignment_metrics(out.alignments.float(), batch.text_lengths, dec_lengths)
        figures = {M.name(M.TRAIN, k): float(v.detach()) for k, v in losses.items()}
        figures.update({M.name(M.TRAIN, k): float(am[k].mean()) for k in METRICS})
        figures[M.TRAIN_FRAMES] = float(batch.mel_lengths.sum())
        figures[M.TRAIN_ITEMS] = float(len(batch.mel_lengths))
        return figures

    def _inject(self, loss: torch.Tensor, iteration: int) -> torch.Tensor:
        """TACOTRAIN_INJECT's faults (train/inject.py) at this iteration on this rank."""
        inj, rank = self.injector, self.dist.rank
        if inj is None:
            return loss
        if inj.active("crash", iteration, rank):
            raise InjectedCrash(f"injected crash at iteration {iteration}")
        if inj.active("nan", iteration, rank):
            loss = loss * float("nan")
        if inj.active("spike", iteration, rank):
            loss = loss * SPIKE_FACTOR
        return loss
