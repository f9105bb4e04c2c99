"""The training loop, readable top to bottom.

One optimiser step: forward under autocast -> masked losses (guided-attention weight from its
schedule) -> backward -> unscale -> clip -> skip the update if anything is non-finite -> step.
Validation runs under a forked, fixed RNG so it never changes what training does next; that,
with the RNG states, data order position and optimiser state in every checkpoint, makes
``--resume`` continue exactly where the run stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tacotrain.alignment import METRICS, alignment_metrics
from tacotrain.audio import GriffinLim
from tacotrain.batch import Batch
from tacotrain.config import WIRED_PARAMETERS, Config, flatten, to_yaml
from tacotrain.data.loader import BucketBatchSampler, Collate, PreparedData, TextMelDataset
from tacotrain.fsutil import atomic_write_json, atomic_write_text
from tacotrain.model import Tacotron2, Tacotron2Loss
from tacotrain.pretrained import WarmStart, plan_warm_start
from tacotrain.track import Tracker
from tacotrain.train.checkpoint import (
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
from tacotrain.train.early_stop import PHASES, EarlyStopper
from tacotrain.train.events import TrainingEvents
from tacotrain.train.guard import Change, Guard, StepDecision
from tacotrain.train.inject import SPIKE_FACTOR, InjectedCrash, from_env
from tacotrain.train.schedules import entropy_weight_at, ga_weight_at, lr_at, r_at
from tacotrain.train.validation import ValidationResult, Validator

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    pass


class GuardStop(RuntimeError):
    """The guard gave up (rollback cap reached); the last good state is on disk as a step
    checkpoint (the in-memory snapshot is written when it is newer than every checkpoint)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"train.device={name!r} but CUDA is not available; use auto or cpu")
    return dev


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. Mixed precision is used on CUDA only."""
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
    def __init__(self, cfg: Config, data_dir: str | Path, run_dir: str | Path,
                 resume: bool = False, progress: bool = True, trust: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress
        self.data = PreparedData.load(data_dir)
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.device = resolve_device(tc.device)
        self.amp_dtype = resolve_precision(tc.precision, self.device)
        self.trust = trust  # --trust-checkpoint: checkpoints may unpickle arbitrary objects
        n_mels = self.data.settings.audio.n_mels
        # warm start (train.init_from): checked before the run directory is touched
        warm = self._plan_warm_start(resume, n_mels) if tc.init_from else None

        self._check_run_dir(resume)
        self._seed_everything(tc.seed)
        self.train_set = TextMelDataset(self.data, "train")
        self.val_set = TextMelDataset(self.data, "val")
        self.collate = Collate(cfg.model.n_frames_per_step)
        self.sampler = BucketBatchSampler(self.train_set.lengths, tc.batch_size, seed=tc.seed,
                                          bucket_batches=tc.bucket_batches)
        self.vocoder = GriffinLim(self.data.settings.audio)
        self.model = Tacotron2(cfg.model, len(self.data.symbols), n_mels).to(self.device)
        self.init_record = warm.apply(self.model) if warm else None  # what came from where
        if self.init_record:
            atomic_write_json(self.run_dir / "init_from.json", self.init_record)
        self.validator = Validator(cfg, self.val_set, self.train_set, self.device, self.vocoder,
                                   self.run_dir / "plots")
        self.criterion = Tacotron2Loss(cfg.loss, cfg.model.n_frames_per_step)
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
        else:
            atomic_write_text(self.run_dir / "config.yaml", to_yaml(cfg))
        self._set_r()
        self._snapshot: dict[str, Any] = self._take_snapshot()
        self._trigger_snapshots: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ set-up helpers
    def _check_run_dir(self, resume: bool) -> None:
        has_ckpt = latest_checkpoint(self.ckpt_dir) is not None
        if resume and not has_ckpt:
            raise TrainError(f"--resume: no checkpoint in {self.ckpt_dir}")
        if not resume and self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise TrainError(f"{self.run_dir} is not empty; pass --resume to continue that run "
                             "or choose a new --out")
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "plots").mkdir(exist_ok=True)

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
        """Every RNG training draws from, as tensors and plain values (see checkpoint.py)."""
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
            "batch_in_epoch": self.batch_in_epoch,
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

    def save(self, val: ValidationResult | None, best: bool = False) -> Path:
        if self.guard.healthy():
            self._snapshot = self._take_snapshot()  # a checkpointed state is a good state
        return self._write_checkpoint(self.checkpoint_payload(val), best)

    def _write_checkpoint(self, payload: dict[str, Any], best: bool = False) -> Path:
        """``payload`` as ``step-N.pt`` of its step (and ``best.pt``); older ones pruned."""
        path = self.ckpt_dir / f"step-{payload['step']:07d}.pt"
        save_checkpoint(path, payload)
        if best:
            save_checkpoint(self.ckpt_dir / "best.pt", payload)
        prune(self.ckpt_dir, self.cfg.train.keep_last)
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
        self._set_rng_state(ck["rng"])
        log.info("resumed from %s at step %d", path, self.step)
        for bad, reason in failed:
            moved = bad.with_name(bad.name + ".skipped")
            os.replace(bad, moved)
            log.warning("--resume: skipped %s, renamed to %s; resumed from the older %s",
                        bad.name, moved.name, path.name)
            self._resume_skips.append(self._guard_log(None, {
                "action": "resume_skip", "cause": reason, "checkpoint": str(bad),
                "moved_to": str(moved), "resumed_from": str(path)}))

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
        inj, it = self.injector, self.iteration
        if inj is None:
            return loss
        if inj.active("crash", it):
            raise InjectedCrash(f"injected crash at iteration {it}")
        if inj.active("nan", it):
            loss = loss * float("nan")
        if inj.active("spike", it):
            loss = loss * SPIKE_FACTOR
        return loss

    def train_step(self, batch) -> tuple[StepDecision, dict[str, float]]:
        """One update attempt on ``batch``: the guard decides whether the update is applied.

        Returns the guard's decision and the step's metrics (floats).
        """
        cfg = self.cfg
        self.iteration += 1
        lr = self.param("optim.lr")
        ga_w = self.param("loss.guided_attention.weight")
        clip = self.param("optim.grad_clip")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(self.device)
        self.model.train()
        # batch-norm statistics change in the forward pass: keep them to undo a skipped step
        buffers = {k: b.clone() for k, b in self.model.named_buffers()}
        ent_w = entropy_weight_at(self.step, cfg.loss.attention_entropy)
        with self._autocast():
            out = self.model(batch.text, batch.text_lengths, batch.mels, batch.mel_lengths)
            losses = self.criterion(out, batch, ga_w, ent_w)
        losses["loss"] = self._inject(losses["loss"])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        loss = float(losses["loss"].detach())
        # Under fp16 loss scaling, inf gradients with a finite loss are the scaler's business
        # (it skips the step and lowers the scale): only a non-finite loss concerns the guard.
        judged_norm = 0.0 if self.scaler.is_enabled() and math.isfinite(loss) else grad_norm
        decision = self.guard.check_step(loss, judged_norm)
        if decision.action == "ok":
            self.scaler.step(self.optimizer)
            self.step += 1
        else:
            with torch.no_grad():
                for k, b in self.model.named_buffers():
                    b.copy_(buffers[k])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()
        r = self.model.r  # the reduction factor this batch was collated and run with
        dec_lengths = (batch.mel_lengths + r - 1) // r
        am = alignment_metrics(out.alignments.float(), batch.text_lengths, dec_lengths)
        metrics = {f"train/{k}": float(v.detach()) for k, v in losses.items()}
        metrics.update({f"train/{k}": float(am[k].mean()) for k in METRICS})
        metrics.update({"train/grad_norm": grad_norm, "train/lr": lr, "train/ga_weight": ga_w,
                        "train/clipped": float(grad_norm > clip), "train/r": float(r),
                        "train/frames": float(batch.mel_lengths.sum())})
        return decision, metrics

    # ------------------------------------------------------------------ guard actions
    def _take_snapshot(self) -> dict[str, Any]:
        """A CPU copy of the whole training state, exactly as a checkpoint holds it (no
        validation result): a rollback restores its weights, optimiser, scaler and step; a guard
        stop writes all of it as a step checkpoint, RNG states, data position, guard and
        early-stop state included, so that resuming from it is exact."""
        return _cpu_copy(self.checkpoint_payload(None))

    def _restore(self, snap: dict[str, Any]) -> None:
        self.model.load_state_dict(snap["model"])
        # a copy: Optimizer.load_state_dict keeps tensors already on the parameters' device and
        # dtype, and the next steps' in-place updates would otherwise rewrite the snapshot
        self.optimizer.load_state_dict(_cpu_copy(snap["optimizer"]))
        self.scaler.load_state_dict(snap["scaler"])
        self.step = snap["step"]

    def _keep_snapshot(self) -> tuple[Path | None, bool]:
        """On a guard stop: write the last good snapshot as a step checkpoint when it is newer
        than every checkpoint on disk, so that ``--resume`` continues from it. Returns the
        newest checkpoint and whether it was written now."""
        found = step_checkpoints(self.ckpt_dir)
        step = self._snapshot["step"]
        if found and found[-1][0] >= step:
            return found[-1][1], False
        path = self._write_checkpoint(self._snapshot)
        log.warning("guard stop: the last good state (step %d) written to %s", step, path)
        return path, True

    def _guard_log(self, tracker: Tracker | None, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` (with time, step, iteration) to guard.jsonl and, given a tracker,
        to events.jsonl; returns the record as written."""
        record = {"time": round(time.time(), 3), "step": self.step, "iteration": self.iteration,
                  **record}
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
        self.sampler.set_epoch(self.epoch)
        batches = self.sampler.batches()[self.batch_in_epoch:]
        gen = torch.Generator().manual_seed(self.cfg.train.seed + self.epoch)
        return DataLoader(self.train_set, batch_sampler=batches, collate_fn=self.collate,
                          num_workers=self.cfg.train.num_workers, generator=gen,
                          pin_memory=self.device.type == "cuda")

    def _epoch_batches(self) -> Iterator[Batch]:
        """The rest of the epoch's batches, each collated with the reduction factor of the step
        it is used at. When the schedule (or a rollback) changes r, the loader is rebuilt at
        the current position: worker processes hold their own copy of the collate."""
        while True:
            r = self._set_r()
            for batch in self._loader():
                yield batch
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
        log.info("training %.2fM parameters on %s (%s), %d train / %d val items, from step %d",
                 n_params / 1e6, self.device, self.amp_dtype or "fp32", len(self.train_set),
                 len(self.val_set), self.step)
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
        self.events = TrainingEvents(cfg.notify, self.run_dir)
        self.events.started(self.step, f"{n_params / 1e6:.2f}M parameters on {self.device}")
        with Tracker(self.run_dir, cfg.track,
                     params=flatten(cfg.model_dump(mode="json"))) as tracker:
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
                    for batch in self._epoch_batches():
                        decision, m = self.train_step(batch)
                        self.batch_in_epoch += 1
                        if decision.action != "ok":
                            self._on_guard(decision, tracker)  # raises GuardStop on "stop"
                            bar.n = self.step
                            bar.refresh()
                            continue
                        for k, v in m.items():
                            acc[k] = acc.get(k, 0.0) + v
                        acc_n += 1
                        bar.update()
                        if self.step % cfg.guard.snapshot_interval == 0 and self.guard.healthy():
                            self._snapshot = self._take_snapshot()
                        if self.step % tc.log_interval == 0:
                            now = time.monotonic()
                            vals = {k: v / acc_n for k, v in acc.items() if k != "train/frames"}
                            vals["train/steps_per_second"] = acc_n / (now - t_log)
                            vals["train/frames_per_second"] = acc["train/frames"] / (now - t_log)
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
                        elif not stop and self.elapsed_before + elapsed >= budget:
                            result.stop_reason = "time_budget"
                            if self.step % tc.val_interval:
                                self._validation_round(tracker, result, elapsed)
                            stop = True
                        if stop:
                            break
                    else:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                self.events.finished(self.step, self._finished_text(result))
            except KeyboardInterrupt:
                result.stop_reason = "interrupted"
                result.last_checkpoint = self.save(self._last_validation)
                log.warning("interrupted: checkpoint written to %s", result.last_checkpoint)
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
        return result

    def _write_result(self, result: TrainResult) -> None:
        result.step = self.step
        result.wall_seconds = self.elapsed_before + time.monotonic() - self._t0
        best = self.ckpt_dir / "best.pt"
        result.best_checkpoint = best if best.exists() else None
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
        Returns True when training should stop."""
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
        self._apply_changes(self.guard.observe(self.step, val, dict(self.overrides)), tracker)
        result.last_checkpoint = self.save(res, best=is_best)
        log.info("step %d (%.1f min, %s): val mel %.4f | free-running: %s; focus %.2f, "
                 "skipped %.0f%%, length ratio %.2f, MCD-DTW %.2f dB%s", self.step, minutes,
                 decision.phase, val["val/mel_post"], res.describe(),
                 val.get("free/focus", float("nan")),
                 100 * val.get("free/skipped_share", float("nan")),
                 val.get("free/length_ratio", float("nan")),
                 val.get("free/mcd_dtw_db", float("nan")), " ALIGNED" if aligned else "")
        if (self.cfg.train.stop_when_aligned
                and self.stopper.aligned_streak >= self.cfg.train.stop_when_aligned_rounds):
            result.stop_reason = "aligned"
            return True
        if decision.stop:
            result.stop_reason = f"early_stop: {decision.reason}"
            log.info("early stop at step %d: %s", self.step, decision.reason)
            return True
        return False


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
