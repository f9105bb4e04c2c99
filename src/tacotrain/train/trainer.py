"""The training loop, readable top to bottom.

One optimiser step: for each of its ``train.grad_accum_steps`` micro-batches, forward under
autocast -> masked losses (guided-attention weight from its schedule) -> backward of loss / k;
then unscale -> clip -> skip the update if anything is non-finite -> step.
Validation runs under a forked, fixed RNG so it never changes what training does next; that,
with the RNG states, data order position and optimiser state in every checkpoint, makes
``--resume`` continue exactly where the run stopped.

Under torchrun (train/ddp.py) every process runs this same loop on its own share of the
batches and DistributedDataParallel averages the gradients. Every branch is taken on values
equal on all ranks (figures reduced over the ranks, rank 0's validation decisions broadcast),
and rank 0 alone writes into the run directory, tracks, notifies and validates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tacotrain.audio import GriffinLim
from tacotrain.batch import Batch
from tacotrain.config import WIRED_PARAMETERS, Config, flatten, to_yaml
from tacotrain.data.loader import Collate, DistributedBucketSampler, PreparedData, TextMelDataset
from tacotrain.fsutil import atomic_write_json, atomic_write_text
from tacotrain.infer.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    numpy_rng_from_saved,
    numpy_rng_to_saved,
    prune,
    save_checkpoint,
    state_hash,
    step_checkpoints,
)
from tacotrain.infer.device import resolve_device
from tacotrain.infer.pretrained import WarmStart, plan_warm_start
from tacotrain.judge.alignment import METRICS, alignment_metrics
from tacotrain.model import Tacotron2, Tacotron2Loss
from tacotrain.model.reduction import r_at
from tacotrain.track import Tracker
from tacotrain.train.batch_size import choose_batch_size, saved_batch_size
from tacotrain.train.ddp import SINGLE, Dist
from tacotrain.train.early_stop import PHASES, EarlyStopper
from tacotrain.train.events import TrainingEvents
from tacotrain.train.guard import Change, Guard, StepDecision
from tacotrain.train.inject import SPIKE_FACTOR, InjectedCrash, from_env
from tacotrain.train.schedules import entropy_weight_at, ga_weight_at, lr_at
from tacotrain.train.validation import ValidationResult, Validator

log = logging.getLogger(__name__)

# per-update figures that are totals (summed over micro-batches and ranks), not means
_TOTALS = ("train/frames", "train/items")


class TrainError(RuntimeError):
    pass


class GuardStop(RuntimeError):
    """The guard gave up (rollback cap reached); the last good state is on disk as a step
    checkpoint (the in-memory snapshot is written when it is newer than every checkpoint)."""


class StopRequested(KeyboardInterrupt):
    """A stop asked for with :meth:`Trainer.request_stop` (the CLI: Ctrl-C or SIGTERM), taken
    between two updates, on every rank at the same one; ``checkpoint`` holds that state."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(f"stopped on request; checkpoint {checkpoint}")
        self.checkpoint = checkpoint


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. ``auto`` and ``fp16`` use mixed precision on CUDA
    only; an explicit ``bf16`` is honoured on the CPU too (CPU autocast supports it, and it
    lets the mixed-precision path be tested without a GPU)."""
    if device.type == "cpu" and name == "bf16":
        return torch.bfloat16
    if device.type != "cuda" or name == "fp32":
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


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


@dataclass
class TrainResult:
    step: int
    stop_reason: str
    aligned: bool
    wall_seconds: float
    last_val: dict[str, float] = field(default_factory=dict)
    verdict: str = ""  # the last validation's verdict in words
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """``dist``: this process's place under torchrun (train/ddp.py; ``process_group`` gives
    it); None trains in one process."""

    def __init__(self, cfg: Config, data_dir: str | Path, run_dir: str | Path,
                 resume: bool = False, progress: bool = True, trust: bool = False,
                 dist: Dist | None = None) -> None:
        self.cfg = cfg
        self.dist = dist or SINGLE
        self._stop_requested = False  # request_stop(): stop at the next update boundary
        self._mutating = False  # an update or rollback is half applied: no checkpoint now
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress and self.dist.is_main()
        self.data = PreparedData.load(data_dir)
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.device = self.dist.place(resolve_device(tc.device))
        self.amp_dtype = resolve_precision(tc.precision, self.device)
        self.trust = trust  # --trust-checkpoint: checkpoints may unpickle arbitrary objects
        n_mels = self.data.settings.audio.n_mels
        # warm start (train.init_from): checked before the run directory is touched
        warm = self._plan_warm_start(resume, n_mels) if tc.init_from else None

        self._check_run_dir(resume)
        self._seed_everything(self.dist.seed(tc.seed))
        self.train_set = TextMelDataset(self.data, "train")
        self.val_set = TextMelDataset(self.data, "val")
        self.collate = Collate(cfg.model.n_frames_per_step)
        self.vocoder = GriffinLim(self.data.settings.audio)
        self.model = Tacotron2(cfg.model, len(self.data.symbols), n_mels).to(self.device)
        self.init_record = warm.apply(self.model) if warm else None  # what came from where
        if self.init_record and self.dist.is_main():
            atomic_write_json(self.run_dir / "init_from.json", self.init_record)
        self.criterion = Tacotron2Loss(cfg.loss, cfg.model.n_frames_per_step)
        if tc.batch_size == "auto":  # from here on the config holds the chosen integer
            cfg = self.cfg = self._auto_batch_size(resume)
            tc = cfg.train
        # the data order's seed is the same on every rank: together they see one global order
        self.sampler = DistributedBucketSampler(
            self.train_set.lengths, tc.batch_size, seed=tc.seed, bucket_batches=tc.bucket_batches,
            num_replicas=self.dist.world_size, rank=self.dist.rank, group=tc.grad_accum_steps)
        self._check_updates_per_epoch()
        self.validator = Validator(cfg, self.val_set, self.train_set, self.device, self.vocoder,
                                   self.run_dir / "plots")
        oc = cfg.optim
        opt_cls = torch.optim.AdamW if oc.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=lr_at(0, oc),
                                 betas=(oc.beta1, oc.beta2), eps=oc.eps,
                                 weight_decay=oc.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.step = 0  # optimiser updates applied (a rollback rewinds it)
        self.iteration = 0  # update attempts (never rewinds; what TACOTRAIN_INJECT counts)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.lr_scale = 1.0  # product of the guard's rollback LR factors
        self.overrides: dict[str, float | None] = {p: None for p in WIRED_PARAMETERS}
        self.guard = Guard(cfg.guard)
        self.stopper = EarlyStopper(cfg.early_stop, tc.max_steps)
        self.injector = from_env()
        self.elapsed_before = 0.0  # wall seconds of earlier sessions of this run
        self._t0 = time.monotonic()
        # checkpoints --resume skipped (guard.jsonl records); fit() reports them to the tracker
        self._resume_skips: list[dict[str, Any]] = []
        if resume:
            self._resume()
        elif self.dist.is_main():
            atomic_write_text(self.run_dir / "config.yaml", to_yaml(cfg))
        self._set_r()
        # what the training forward runs through: DDP around the model, or the model itself;
        # self.model stays the bare model (checkpoints, validation), so a state dict has no
        # "module." prefix and loads in one process and under DDP alike
        self.net = self.dist.wrap(self.model)
        self._snapshot: dict[str, Any] = self._take_snapshot()
        self._trigger_snapshots: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ set-up helpers
    def _check_run_dir(self, resume: bool) -> None:
        """Every rank checks (reading only) before rank 0 creates anything, so that no rank
        mistakes rank 0's fresh directories for an earlier run."""
        has_ckpt = latest_checkpoint(self.ckpt_dir) is not None
        if resume and not has_ckpt:
            raise TrainError(f"--resume: no checkpoint in {self.ckpt_dir}")
        if not resume and self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise TrainError(f"{self.run_dir} is not empty; pass --resume to continue that run "
                             "or choose a new --out")
        self.dist.barrier()
        if self.dist.is_main():
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "plots").mkdir(exist_ok=True)

    def _check_updates_per_epoch(self) -> None:
        if self.sampler.min_updates_per_epoch() >= 1:
            return
        tc = self.cfg.train
        raise TrainError(
            f"the train split ({len(self.train_set)} items) gives fewer batches of "
            f"train.batch_size {tc.batch_size} per epoch than one optimiser update takes: "
            f"{self.dist.world_size} process(es) x train.grad_accum_steps "
            f"{tc.grad_accum_steps}. Lower train.batch_size or train.grad_accum_steps, or "
            "start fewer processes")

    def _auto_batch_size(self, resume: bool) -> Config:
        """A copy of the config with ``train.batch_size`` auto replaced by an integer: the one
        saved in RUN/config.yaml on --resume, else the largest that fits the device (the
        smallest over the ranks under DDP), logged and recorded in RUN/batch_size.json."""
        if resume:
            size = saved_batch_size(self.run_dir)
            log.info("train.batch_size auto: %d, as saved in %s", size,
                     self.run_dir / "config.yaml")
        else:
            choice = choose_batch_size(self.cfg, self.model, self.criterion, self.train_set,
                                       self.device, self._autocast,
                                       self.dist.world_size * self.cfg.train.grad_accum_steps)
            size = min(self.dist.gather(choice.batch_size))
            if self.dist.is_main():
                log.info("%s%s", choice.describe(),
                         f"; {size} on every rank" if size != choice.batch_size else "")
                atomic_write_json(self.run_dir / "batch_size.json",
                                  {**choice.as_dict(), "batch_size": size})
        cfg = self.cfg.model_copy(deep=True)
        cfg.train.batch_size = size
        return cfg

    def _plan_warm_start(self, resume: bool, n_mels: int) -> WarmStart:
        tc = self.cfg.train
        if resume:
            raise TrainError("--init-from (train.init_from) does not combine with --resume: a "
                             "resumed run continues from its own checkpoint. Drop --init-from "
                             "(or --set train.init_from=null) to resume, or start a new run "
                             "(a new --out) without --resume")
        return plan_warm_start(tc.init_from, self.cfg.model, self.data.symbols, n_mels,
                               tc.ignore_layers, trust=self.trust)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _rng_state(self) -> dict[str, Any]:
        """Every RNG training draws from, as tensors and plain values (see infer/checkpoint.py)."""
        state = {"python": random.getstate(),
                 "numpy": numpy_rng_to_saved(np.random.get_state()),
                 "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        np.random.set_state(numpy_rng_from_saved(state["numpy"]))
        # the states are CPU byte tensors; a checkpoint loaded onto the GPU moved them there
        torch.set_rng_state(state["torch"].cpu())
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"].cpu(), self.device)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_payload(self, val: ValidationResult | None) -> dict[str, Any]:
        return {
            "format": 1,
            "step": self.step,
            "iteration": self.iteration,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,  # global batches (all ranks) of the epoch
            "world_size": self.dist.world_size,
            "lr_scale": self.lr_scale,
            "overrides": dict(self.overrides),
            "guard": self.guard.state_dict(),
            "early_stop": self.stopper.state_dict(),
            "elapsed": self.elapsed_before + (time.monotonic() - self._t0),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": {"lr": self.param("optim.lr"),
                         "ga_weight": self.param("loss.guided_attention.weight")},
            # the reduction factor of this step: validation used it, synthesis sets it
            "r": r_at(self.step, self.cfg.model),
            "rng": self._rng_state(),
            "config": self.cfg.model_dump(mode="json"),
            "data": {"language": self.data.language, "symbols": self.data.symbols,
                     "phonemes": self.data.phonemes,
                     "audio": self.data.settings.audio.model_dump(mode="json"),
                     "root": str(self.data.root)},
            "val": val.metrics() if val else {},
            "verdict": verdict_record(val),
        }

    def save(self, val: ValidationResult | None, best: bool = False,
             collective: bool = True) -> Path:
        """Snapshot and checkpoint the current state. Under DDP every rank calls this at the
        same point (``collective``) and rank 0 writes; see :meth:`_write_checkpoint`."""
        if self.guard.healthy():
            self._snapshot = self._take_snapshot()  # a checkpointed state is a good state
        return self._write_checkpoint(self.checkpoint_payload(val), best, collective)

    def _write_checkpoint(self, payload: dict[str, Any], best: bool = False,
                          collective: bool = True) -> Path:
        """``payload`` as ``step-N.pt`` of its step (and ``best.pt``); older ones pruned.

        Under DDP, with ``collective``, every rank's RNG states go into the file
        (``rng_ranks``, so each rank resumes its own dropout stream), rank 0 writes and the
        others wait for it. Without (an interrupt, when the other ranks may be gone) rank 0
        writes its own state alone, and the other ranks reseed on resume."""
        path = self.ckpt_dir / f"step-{payload['step']:07d}.pt"
        rngs = self.dist.gather(payload["rng"]) if collective else None
        if self.dist.is_main():
            if self.dist.active and rngs is not None:
                payload = {**payload, "rng_ranks": rngs}
            save_checkpoint(path, payload)
            if best:
                save_checkpoint(self.ckpt_dir / "best.pt", payload)
            prune(self.ckpt_dir, self.cfg.train.keep_last)
        if collective:
            self.dist.barrier()
        return path

    def _resume(self) -> None:
        """Continue from the newest step checkpoint that loads.

        Newer ones that do not (checksum, truncation, bad header, refused unpickling) are
        renamed ``NAME.skipped``: kept for inspection (``--trust-checkpoint`` may load a refused
        one), but out of the way of pruning, of the guard's "newest checkpoint" and of the next
        resume. Each gets a warning and a guard.jsonl record; fit() repeats the records in
        events.jsonl and notifies. When none loads: TrainError naming every file and why."""
        failed: list[tuple[Path, str]] = []
        for _, path in reversed(step_checkpoints(self.ckpt_dir)):
            try:
                ck = load_checkpoint(path, map_location=self.device, trust=self.trust)
                break
            except CheckpointError as exc:
                failed.append((path, str(exc)))
                log.warning("--resume: %s", exc)
        else:
            tried = "\n".join(f"  {reason}" for _, reason in failed)
            raise TrainError(f"cannot resume: none of the {len(failed)} checkpoint(s) in "
                             f"{self.ckpt_dir} loads:\n{tried}")
        saved = Config.from_saved(ck["config"])
        if saved.model != self.cfg.model:
            raise TrainError(f"cannot resume {path}: the model section of the config differs "
                             "from the one the checkpoint was trained with")
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.step, self.iteration, self.epoch = ck["step"], ck["iteration"], ck["epoch"]
        self.batch_in_epoch = ck["batch_in_epoch"]
        self.lr_scale = ck["lr_scale"]
        self.overrides.update(ck["overrides"])
        self.guard.load_state_dict(ck["guard"])
        self.stopper.load_state_dict(ck["early_stop"])
        self.elapsed_before = ck["elapsed"]
        self._set_rng_state(self._saved_rng(ck))
        log.info("resumed from %s at step %d", path, self.step)
        saved_world = ck.get("world_size", 1)
        if saved_world != self.dist.world_size and self.dist.is_main():
            log.warning("--resume: the checkpoint was written by %d process(es), this run has "
                        "%d: the data position carries over, but the run does not repeat what "
                        "it would have done in %d", saved_world, self.dist.world_size,
                        saved_world)
        self.dist.barrier()  # every rank has read its checkpoint before rank 0 renames any
        if not self.dist.is_main():
            return
        for bad, reason in failed:
            moved = bad.with_name(bad.name + ".skipped")
            os.replace(bad, moved)
            log.warning("--resume: skipped %s, renamed to %s; resumed from the older %s",
                        bad.name, moved.name, path.name)
            self._resume_skips.append(self._guard_log(None, {
                "action": "resume_skip", "cause": reason, "checkpoint": str(bad),
                "moved_to": str(moved), "resumed_from": str(path)}))

    def _saved_rng(self, ck: dict[str, Any]) -> dict[str, Any]:
        """This rank's RNG states from a checkpoint: its own where the checkpoint has every
        rank's (``rng_ranks``, written under DDP), rank 0's otherwise. A rank > 0 without its
        own (a checkpoint from fewer processes, or written on an interrupt) reseeds with
        ``seed + rank`` and the step instead, so that the ranks' dropout still differs."""
        per_rank = ck.get("rng_ranks") or []
        if self.dist.rank < len(per_rank):
            return per_rank[self.dist.rank]
        if not self.dist.is_main():
            log.warning("rank %d: the checkpoint holds no RNG state of this rank; dropout "
                        "reseeded, so this run does not repeat the original exactly",
                        self.dist.rank)
            self._seed_everything(self.dist.seed(self.cfg.train.seed) + 1_000_003 * self.step)
            return self._rng_state()
        return ck["rng"]

    # ------------------------------------------------------------------ one step
    def _set_r(self) -> int:
        """Bring the model, the loss and the training collate to the reduction factor of the
        current step (``model.r_schedule``); a change is logged. Returns that r."""
        r = r_at(self.step, self.cfg.model)
        if r != self.model.r:
            log.info("step %d: reduction factor r %d -> %d", self.step, self.model.r, r)
        self.model.set_r(r)
        self.criterion.r = r
        self.collate.r = r
        return r

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def param(self, name: str) -> float:
        """The live value of a wired parameter: an intervention's override, else the schedule."""
        override = self.overrides.get(name)
        if override is not None:
            return override
        if name == "optim.lr":
            return lr_at(self.step, self.cfg.optim) * self.lr_scale
        if name == "loss.guided_attention.weight":
            return ga_weight_at(self.step, self.cfg.loss.guided_attention)
        if name == "optim.grad_clip":
            return self.cfg.optim.grad_clip
        raise KeyError(name)

    def _inject(self, loss: torch.Tensor) -> torch.Tensor:
        inj, it, rank = self.injector, self.iteration, self.dist.rank
        if inj is None:
            return loss
        if inj.active("crash", it, rank):
            raise InjectedCrash(f"injected crash at iteration {it}")
        if inj.active("nan", it, rank):
            loss = loss * float("nan")
        if inj.active("spike", it, rank):
            loss = loss * SPIKE_FACTOR
        return loss

    def train_step(self, batches: Batch | Sequence[Batch]
                   ) -> tuple[StepDecision, dict[str, float]]:
        """One update attempt over ``batches``, its micro-batches (one Batch: k = 1); the guard
        decides whether the update is applied.

        Each micro-batch's loss is scaled by 1/k before its backward, so the gradients add up
        to the gradient of the mean micro-batch loss (under DDP also averaged over the ranks,
        once, in the last backward). The guard judges the whole update: its loss is the mean
        of the micro-batch losses (and of the ranks'), its gradient norm the norm of the summed
        gradient; a skip drops all of it. Returns the decision and the update's metrics
        (floats, equal on every rank): losses and alignment figures averaged, ``train/frames``
        and ``train/items`` summed over micro-batches and ranks.
        """
        micro = [batches] if isinstance(batches, Batch) else list(batches)
        self.iteration += 1
        lr = self.param("optim.lr")
        ga_w = self.param("loss.guided_attention.weight")
        clip = self.param("optim.grad_clip")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        # batch-norm statistics change in the forward pass: keep them to undo a skipped step
        buffers = {k: b.clone() for k, b in self.model.named_buffers()}
        ent_w = entropy_weight_at(self.step, self.cfg.loss.attention_entropy)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, batch in enumerate(micro):
            with self.dist.sync_grads(self.net, sync=i == len(micro) - 1):
                figures = self._forward_backward(batch.to(self.device), ga_w, ent_w, len(micro))
            for k, v in figures.items():
                sums[k] = sums.get(k, 0.0) + v
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        local = {k: v if k in _TOTALS else v / len(micro) for k, v in sums.items()}
        # Under fp16 loss scaling, inf gradients with a finite loss are the scaler's business
        # (it skips the step and lowers the scale): only a non-finite loss concerns the guard.
        loss = local["train/loss"]
        judged_norm = 0.0 if self.scaler.is_enabled() and math.isfinite(loss) else grad_norm
        local["nonfinite"] = float(not (math.isfinite(loss) and math.isfinite(judged_norm)))
        # one all-reduce: every rank's guard judges the same figures, so a NaN or a loss spike
        # on one rank is a skip on all of them
        metrics = self.dist.reduce(local, total=_TOTALS)
        nonfinite = metrics.pop("nonfinite") > 0
        decision = self.guard.check_step(math.nan if nonfinite else metrics["train/loss"],
                                         judged_norm)
        self._mutating = True  # until fit() has counted the batch as consumed
        if decision.action == "ok":
            self.scaler.step(self.optimizer)
            self.step += 1
        else:
            with torch.no_grad():
                for k, b in self.model.named_buffers():
                    b.copy_(buffers[k])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()
        metrics.update({"train/grad_norm": grad_norm, "train/lr": lr, "train/ga_weight": ga_w,
                        "train/clipped": float(grad_norm > clip),
                        "train/r": float(self.model.r)})
        return decision, metrics

    def _forward_backward(self, batch: Batch, ga_w: float, ent_w: float,
                          n_micro: int) -> dict[str, float]:
        """Forward and backward of one micro-batch (its loss / ``n_micro``, so that the
        accumulated gradient is that of the mean loss);
        returns its figures: losses, alignment metrics (batch means), frames and items."""
        with self._autocast():
            out = self.net(batch.text, batch.text_lengths, batch.mels, batch.mel_lengths)
            losses = self.criterion(out, batch, ga_w, ent_w)
        losses["loss"] = self._inject(losses["loss"])
        self.scaler.scale(losses["loss"] / n_micro).backward()
        r = self.model.r  # the reduction factor this batch was collated and run with
        dec_lengths = (batch.mel_lengths + r - 1) // r
        with torch.no_grad():
            am = alignment_metrics(out.alignments.float(), batch.text_lengths, dec_lengths)
        figures = {f"train/{k}": float(v.detach()) for k, v in losses.items()}
        figures.update({f"train/{k}": float(am[k].mean()) for k in METRICS})
        figures["train/frames"] = float(batch.mel_lengths.sum())
        figures["train/items"] = float(len(batch.mel_lengths))
        return figures

    # ------------------------------------------------------------------ guard actions
    def _take_snapshot(self) -> dict[str, Any]:
        """A CPU copy of the whole training state, exactly as a checkpoint holds it (no
        validation result): a rollback restores its weights, optimiser, scaler and step; a guard
        stop writes all of it as a step checkpoint, RNG states, data position, guard and
        early-stop state included, so that resuming from it is exact."""
        return _cpu_copy(self.checkpoint_payload(None))

    def _restore(self, snap: dict[str, Any]) -> None:
        self._mutating = True  # until fit() is past the guard's decision
        self.model.load_state_dict(snap["model"])
        # a copy: Optimizer.load_state_dict keeps tensors already on the parameters' device and
        # dtype, and the next steps' in-place updates would otherwise rewrite the snapshot
        self.optimizer.load_state_dict(_cpu_copy(snap["optimizer"]))
        self.scaler.load_state_dict(snap["scaler"])
        self.step = snap["step"]

    def _keep_snapshot(self) -> tuple[Path | None, bool]:
        """On a guard stop: write the last good snapshot as a step checkpoint when it is newer
        than every checkpoint on disk, so that ``--resume`` continues from it. Returns the
        newest checkpoint and whether it was written now. Under DDP every rank calls this (the
        stop is agreed) and goes by rank 0's view of the checkpoint directory."""
        found = step_checkpoints(self.ckpt_dir)
        newest = self.dist.broadcast(found[-1] if found else None)
        step = self._snapshot["step"]
        if newest is not None and newest[0] >= step:
            return newest[1], False
        path = self._write_checkpoint(self._snapshot)
        if self.dist.is_main():
            log.warning("guard stop: the last good state (step %d) written to %s", step, path)
        return path, True

    def _guard_log(self, tracker: Tracker | None, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` (with time, step, iteration) to guard.jsonl and, given a tracker,
        to events.jsonl; returns the record as written."""
        record = {"time": round(time.time(), 3), "step": self.step, "iteration": self.iteration,
                  **record}
        if not self.dist.is_main():
            return record
        with open(self.run_dir / "guard.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if tracker is not None:
            tracker.text(self.step, "guard", json.dumps(record))
        return record

    def _on_guard(self, decision: StepDecision, tracker: Tracker) -> None:
        if decision.action == "skip":
            log.warning("iteration %d (step %d): update skipped: %s", self.iteration, self.step,
                        decision.cause)
            self._guard_log(tracker, {"action": "skip", "cause": decision.cause})
        elif decision.action == "rollback":
            before_step, before_scale = self.step, self.lr_scale
            self._restore(self._snapshot)
            self.lr_scale *= self.cfg.guard.rollback_lr_factor
            log.warning("iteration %d: rolled back from step %d to step %d (%s); learning rate "
                        "x%g", self.iteration, before_step, self.step, decision.cause,
                        self.cfg.guard.rollback_lr_factor)
            self._guard_log(tracker, {
                "action": "rollback", "cause": decision.cause, "from_step": before_step,
                "to_step": self.step, "parameter": "lr_scale", "before": before_scale,
                "after": self.lr_scale, "rollbacks": self.guard.rollbacks,
                "restored_model_sha256": state_hash(self.model.state_dict())})
            tracker.scalars(self.step, {"guard/rollbacks": self.guard.rollbacks,
                                        "guard/lr_scale": self.lr_scale})
            self.events.rollback(self.step, decision.cause, self.cfg.guard.rollback_lr_factor)
        elif decision.action == "stop":
            last, written = self._keep_snapshot()
            msg = (f"training stopped by the guard at step {self.step} (iteration "
                   f"{self.iteration}): {decision.cause}. Last good checkpoint: {last}"
                   f"{' (written now from the last good state)' if written else ''}")
            self._guard_log(tracker, {"action": "stop", "cause": decision.cause,
                                      "checkpoint": str(last), "checkpoint_written": written})
            raise GuardStop(msg)

    def _apply_changes(self, changes: list[Change], tracker: Tracker) -> None:
        for ch in changes:
            if ch.kind == "apply":
                self._trigger_snapshots[ch.name] = self._take_snapshot()
            if ch.rollback_weights and ch.name in self._trigger_snapshots:
                self._restore(self._trigger_snapshots[ch.name])
            if ch.kind in ("apply", "revert"):
                self.overrides[ch.parameter] = ch.after
            if ch.kind != "apply":
                self._trigger_snapshots.pop(ch.name, None)
            log.warning("intervention %s: %s %s (%s -> %s; %s = %.4g)", ch.name, ch.kind,
                        ch.parameter, ch.before, ch.after, ch.metric, ch.metric_value)
            self._guard_log(tracker, {"action": f"intervention_{ch.kind}", **ch.as_dict()})
            tracker.scalars(self.step, {f"guard/{ch.parameter}": self.param(ch.parameter)})

    # ------------------------------------------------------------------ validation
    def validate(self, tracker: Tracker | None = None) -> ValidationResult:
        """Teacher-forced losses on the validation split and the verdict on free-running
        synthesis of fixed validation items (see train/validation.py), at the reduction
        factor of the current step (the one the checkpoint records)."""
        self._set_r()
        return self.validator.run(
            self.model, self.criterion, self.step, self.param("loss.guided_attention.weight"),
            entropy_weight_at(self.step, self.cfg.loss.attention_entropy), self._autocast,
            tracker)

    def _finished_text(self, result: TrainResult) -> str:
        v = result.last_val
        return (f"{result.stop_reason} at step {self.step}; aligned: {result.aligned} "
                f"({result.verdict}); validation mel {v.get('val/mel_post', float('nan')):.4f}; "
                f"{self.guard.rollbacks} rollback(s), {self.guard.skipped} skipped step(s)")

    # ------------------------------------------------------------------ the loop
    def _loader(self) -> DataLoader:
        """This rank's batches of the epoch from the data position (a global batch index)."""
        self.sampler.set_epoch(self.epoch)
        batches = self.sampler.batches(self.batch_in_epoch)
        gen = torch.Generator().manual_seed(self.cfg.train.seed + self.epoch)
        return DataLoader(self.train_set, batch_sampler=batches, collate_fn=self.collate,
                          num_workers=self.cfg.train.num_workers, generator=gen,
                          pin_memory=self.device.type == "cuda")

    def _epoch_updates(self) -> Iterator[list[Batch]]:
        """The rest of the epoch in updates of ``train.grad_accum_steps`` micro-batches (an
        epoch holds whole updates: see DistributedBucketSampler), each collated with the
        reduction factor of the step it is used at. When the schedule (or a rollback) changes r,
        the loader is rebuilt at the current position: worker processes hold their own copy of
        the collate."""
        k = self.cfg.train.grad_accum_steps
        while True:
            r = self._set_r()
            micro: list[Batch] = []
            for batch in self._loader():
                micro.append(batch)
                if len(micro) < k:
                    continue
                yield micro
                micro = []
                if r_at(self.step, self.cfg.model) != r:
                    break
            else:
                return

    def fit(self, max_steps: int | None = None) -> TrainResult:
        cfg, tc = self.cfg, self.cfg.train
        max_steps = max_steps or tc.max_steps
        self.stopper.max_steps = max_steps
        budget = tc.time_budget_minutes * 60 if tc.time_budget_minutes else math.inf
        self._t0 = time.monotonic()
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("training %.2fM parameters on %s (%s), %d train / %d val items, from step %d; "
                 "one update: batch %d x %d process(es) x %d micro-batch(es)",
                 n_params / 1e6, self.device, self.amp_dtype or "fp32", len(self.train_set),
                 len(self.val_set), self.step, tc.batch_size, self.dist.world_size,
                 tc.grad_accum_steps)
        if cfg.model.r_schedule:
            log.info("reduction factor r %d at step %d (model.r_schedule %s)", self.model.r,
                     self.step, [list(p) for p in cfg.model.r_schedule])
        if self.injector:
            log.warning("fault injection active: %s", self.injector)
        result = TrainResult(self.step, "max_steps", False, 0.0)
        self._last_validation: ValidationResult | None = None
        acc: dict[str, float] = {}
        acc_n = 0
        t_log = time.monotonic()
        bar = tqdm(total=max_steps, initial=self.step, unit="step", disable=not self.progress,
                   dynamic_ncols=True, desc=self.stopper.phase)
        speed_from = (self.step, time.monotonic())

        def show_limit() -> None:
            """Bar total and description from the nearer limit (steps or time budget)."""
            now = time.monotonic()
            steps, secs = self.step - speed_from[0], now - speed_from[1]
            lim = bar_limit(max_steps, None if math.isinf(budget) else budget,
                            self.elapsed_before + now - self._t0, self.step,
                            steps / secs if steps > 0 and secs > 0 else None)
            bar.total = lim.total
            bar.set_description(f"{self.stopper.phase} | {lim.label}", refresh=False)

        show_limit()
        # rank 0 alone tracks and notifies; the other ranks' stand-ins do nothing
        main = self.dist.is_main()
        self.events = TrainingEvents(cfg.notify, self.run_dir) if main else _Muted()
        self.events.started(self.step, f"{n_params / 1e6:.2f}M parameters on {self.device}"
                            + (f", {self.dist.world_size} processes" if self.dist.active else ""))
        params = flatten(cfg.model_dump(mode="json"))
        with Tracker(self.run_dir, cfg.track, params=params) if main else _Muted() as tracker:
            for record in self._resume_skips:  # already in guard.jsonl (see _resume)
                tracker.text(self.step, "guard", json.dumps(record))
                self.events.resume_fallback(self.step, record["checkpoint"], record["cause"])
            self._resume_skips = []
            if self.step == 0:
                tracker.text(0, "config", to_yaml(cfg))
                if self.init_record:
                    tracker.text(0, "init_from", json.dumps(self.init_record))
            stop = self.step >= max_steps
            try:
                while not stop:
                    for micro in self._epoch_updates():
                        decision, m = self.train_step(micro)
                        self.batch_in_epoch += self.sampler.stride  # global batches consumed
                        if decision.action != "ok":
                            self._on_guard(decision, tracker)  # raises GuardStop on "stop"
                            self._mutating = False
                            bar.n = self.step
                            bar.refresh()
                            self._stop_if_requested()
                            continue
                        self._mutating = False
                        for k, v in m.items():
                            acc[k] = acc.get(k, 0.0) + v
                        acc_n += 1
                        bar.update()
                        if self.step % cfg.guard.snapshot_interval == 0 and self.guard.healthy():
                            self._snapshot = self._take_snapshot()
                        if self.step % tc.log_interval == 0:
                            now = time.monotonic()
                            vals = {k: v / acc_n for k, v in acc.items() if k not in _TOTALS}
                            # updates/s; frames and items of every micro-batch of every rank
                            vals["train/steps_per_second"] = acc_n / (now - t_log)
                            vals["train/frames_per_second"] = acc["train/frames"] / (now - t_log)
                            vals["train/items_per_second"] = acc["train/items"] / (now - t_log)
                            vals["guard/skipped_steps"] = self.guard.skipped
                            vals["train/r"] = m["train/r"]  # in effect now, not averaged
                            tracker.scalars(self.step, vals)
                            show_limit()
                            bar.set_postfix(loss=f"{vals['train/loss']:.3f}",
                                            diag=f"{vals['train/diagonality']:.2f}",
                                            focus=f"{vals['train/focus']:.2f}")
                            acc, acc_n, t_log = {}, 0, now
                        elapsed = time.monotonic() - self._t0
                        if self.step % tc.val_interval == 0 or self.step >= max_steps:
                            stop = self._validation_round(tracker, result, elapsed)
                            show_limit()
                            bar.refresh()
                        if self.step >= max_steps:
                            stop = True
                        elif not stop and self._budget_spent(budget, elapsed):
                            result.stop_reason = "time_budget"
                            if self.step % tc.val_interval:
                                self._validation_round(tracker, result, elapsed)
                            stop = True
                        if stop:
                            break
                        self._stop_if_requested()
                    else:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                self.events.finished(self.step, self._finished_text(result))
            except KeyboardInterrupt as exc:
                result.stop_reason = "interrupted"
                if isinstance(exc, StopRequested):  # every rank's state, between two updates
                    result.last_checkpoint = exc.checkpoint
                elif self._mutating:  # a half-applied update is not a state to resume from
                    result.last_checkpoint = latest_checkpoint(self.ckpt_dir)
                else:  # not collective: under DDP the other ranks may be gone already
                    result.last_checkpoint = self.save(self._last_validation, collective=False)
                if main:
                    log.warning("interrupted at step %d; resume from %s", self.step,
                                result.last_checkpoint)
                self._write_result(result)
                self.events.interrupted(self.step, result.last_checkpoint)
                raise
            except GuardStop as exc:
                result.stop_reason = "guard"
                result.last_checkpoint = latest_checkpoint(self.ckpt_dir)
                self._write_result(result)
                self.events.guard_stop(self.step, str(exc))
                raise
            except Exception as exc:
                result.stop_reason = f"crash: {type(exc).__name__}"
                self._write_result(result)
                self.events.crash(self.step, exc)
                raise
            finally:
                bar.close()
                self.events.close()
        self._write_result(result)
        self.dist.barrier()  # no rank leaves before rank 0 has written everything
        return result

    def request_stop(self) -> None:
        """Ask :meth:`fit` to stop before its next update: it writes a checkpoint of that state
        (under DDP with every rank's random streams, as a regular one: ``--resume`` continues
        exactly) and raises :class:`StopRequested`. Safe to call from a signal handler."""
        self._stop_requested = True

    def _stop_if_requested(self) -> None:
        """Between two updates: on a stop request (on any rank; every rank checks here after
        the same update) write the checkpoint and raise StopRequested."""
        if self.dist.any(self._stop_requested):
            raise StopRequested(self.save(self._last_validation))

    def _budget_spent(self, budget: float, elapsed: float) -> bool:
        """Whether ``train.time_budget_minutes`` has run out; under DDP true on every rank
        once true on any (their clocks differ a little)."""
        return math.isfinite(budget) and self.dist.any(self.elapsed_before + elapsed >= budget)

    def _write_result(self, result: TrainResult) -> None:
        result.step = self.step
        result.wall_seconds = self.elapsed_before + time.monotonic() - self._t0
        best = self.ckpt_dir / "best.pt"
        result.best_checkpoint = best if best.exists() else None
        if not self.dist.is_main():
            return
        atomic_write_json(self.run_dir / "train_result.json", {
            "step": result.step, "iteration": self.iteration, "stop_reason": result.stop_reason,
            "aligned": result.aligned, "verdict": result.verdict, "phase": self.stopper.phase,
            "wall_seconds": round(result.wall_seconds, 1), "last_val": result.last_val,
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
            "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
            "skipped_steps": self.guard.skipped, "rollbacks": self.guard.rollbacks,
            "history": result.history})

    def _validation_round(self, tracker: Tracker, result: TrainResult, elapsed: float) -> bool:
        """Validate, update early stopping, the best checkpoint and interventions, checkpoint.
        Returns True when training should stop.

        Rank 0 alone validates and decides; the other ranks wait for its decisions (broadcast)
        and take them over, so that every rank applies the same interventions, keeps the same
        guard and early-stop state and stops at the same step."""
        main = self.dist.is_main()
        decided = self.dist.broadcast(self._judge_round(tracker, result, elapsed)
                                      if main else None)
        if not main:
            self.guard.load_state_dict(decided.guard)
            self.stopper.load_state_dict(decided.stopper)
            result.aligned = decided.aligned
        self._apply_changes(decided.changes, tracker)
        result.last_checkpoint = self.save(self._last_validation, best=decided.is_best)
        if decided.stop_reason:
            result.stop_reason = decided.stop_reason
            return True
        return False

    def _judge_round(self, tracker: Tracker, result: TrainResult,
                     elapsed: float) -> RoundDecision:
        """Rank 0's part of a validation round: validate, track, notify, update early stopping
        and the guard's interventions; returns what every rank must apply."""
        res = self.validate(tracker)
        self._last_validation = res
        aligned = res.aligned
        val = res.metrics()
        val["val/aligned"] = float(aligned)
        decision = self.stopper.update(self.step, val, aligned)
        val["early_stop/phase"] = float(PHASES.index(decision.phase))
        tracker.scalars(self.step, val)
        result.aligned = aligned
        result.last_val = val
        result.verdict = res.describe()
        minutes = (self.elapsed_before + elapsed) / 60
        result.history.append({"step": self.step, "minutes": round(minutes, 2),
                               "phase": decision.phase,
                               **{k: round(v, 4) for k, v in val.items()}})
        if decision.phase_changed_from:
            log.info("step %d: phase %s -> %s", self.step, decision.phase_changed_from,
                     decision.phase)
            tracker.text(self.step, "early_stop",
                         f"phase {decision.phase_changed_from} -> {decision.phase}")
        self.events.validation(self.step, val, aligned, decision.phase_changed_from,
                               decision.phase, res.describe())
        is_best = self.stopper.is_best(val, aligned)
        if is_best:
            self.stopper.mark_best(val)
        changes = self.guard.observe(self.step, val, dict(self.overrides))
        log.info("step %d (%.1f min, %s): val mel %.4f | free-running: %s; focus %.2f, "
                 "skipped %.0f%%, length ratio %.2f, MCD-DTW %.2f dB%s", self.step, minutes,
                 decision.phase, val["val/mel_post"], res.describe(),
                 val.get("free/focus", float("nan")),
                 100 * val.get("free/skipped_share", float("nan")),
                 val.get("free/length_ratio", float("nan")),
                 val.get("free/mcd_dtw_db", float("nan")), " ALIGNED" if aligned else "")
        stop_reason = None
        if (self.cfg.train.stop_when_aligned
                and self.stopper.aligned_streak >= self.cfg.train.stop_when_aligned_rounds):
            stop_reason = "aligned"
        elif decision.stop:
            stop_reason = f"early_stop: {decision.reason}"
            log.info("early stop at step %d: %s", self.step, decision.reason)
        return RoundDecision(aligned, is_best, changes, stop_reason, self.guard.state_dict(),
                             self.stopper.state_dict())


@dataclass(frozen=True)
class RoundDecision:
    """What rank 0 concluded from a validation round; every rank applies it."""

    aligned: bool
    is_best: bool
    changes: list[Change]  # interventions to apply now
    stop_reason: str | None  # None: go on
    guard: dict[str, Any]  # rank 0's guard and early-stop state after the round
    stopper: dict[str, Any]


class _Muted:
    """Stands in for the Tracker and TrainingEvents on ranks other than 0, which track and
    notify nothing: every method is accepted and does nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return _nothing

    def __enter__(self) -> _Muted:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _nothing(*args: object, **kwargs: object) -> None:
    return None


def _cpu_copy(obj: Any) -> Any:
    """A deep copy of a state (nested dicts, lists, tuples) with every tensor copied to the
    CPU: independent of the live training state it was taken from."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, _cpu_copy(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a module state dict's per-module versions
            out._metadata = _cpu_copy(obj._metadata)
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def verdict_record(val: ValidationResult | None) -> dict[str, Any]:
    """The verdict of the validation a checkpoint was written after, as stored in it."""
    if val is None or val.free is None:
        return {}
    v = val.free.verdict
    return {"step": val.step, "aligned": v.aligned, "aligned_share": v.aligned_share,
            "description": v.describe(), "summary": v.summary(),
            "items": [i.as_dict() for i in v.items]}
