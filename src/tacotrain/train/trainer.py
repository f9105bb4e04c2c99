"""The training loop, readable top to bottom.

:meth:`Trainer.fit` runs updates (train/update.py) until a limit or a decision stops it; after
each update the guard's verdict on it is carried out (skip, rollback, stop: train/recovery.py),
and every ``train.val_interval`` steps a validation round decides (train/rounds.py) and a
checkpoint is written. What the loop needs is prepared before it (train/setup.py).

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
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from tacotrain import metrics as M
from tacotrain.batch import Batch
from tacotrain.config import WIRED_PARAMETERS, Config, flatten, to_yaml
from tacotrain.fsutil import atomic_write_json, atomic_write_text
from tacotrain.infer.checkpoint import Checkpoint, CheckpointData, latest_checkpoint
from tacotrain.model.reduction import r_at
from tacotrain.track import Tracker
from tacotrain.train.ddp import SINGLE, Dist
from tacotrain.train.early_stop import EarlyStopper
from tacotrain.train.events import Muted, TrainingEvents
from tacotrain.train.feed import Feed
from tacotrain.train.guard import Guard, StepDecision
from tacotrain.train.inject import from_env
from tacotrain.train.progress import IntervalMeter, Loop, TrainBar
from tacotrain.train.recovery import GuardStop, Recovery, rng_state
from tacotrain.train.result import TrainResult
from tacotrain.train.rounds import ValidationRound, verdict_record
from tacotrain.train.schedules import entropy_weight_at, scheduled_value
from tacotrain.train.setup import TrainError, make_optimizer, prepare_run
from tacotrain.train.update import UpdateParams, Updater
from tacotrain.train.validation import ValidationResult, Validator

log = logging.getLogger(__name__)

__all__ = ["GuardStop", "StopRequested", "TrainError", "TrainResult", "Trainer"]  # re-exported


class StopRequested(KeyboardInterrupt):
    """A stop asked for with :meth:`Trainer.request_stop` (the CLI: Ctrl-C or SIGTERM), taken
    between two updates, on every rank at the same one; ``checkpoint`` holds that state."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(f"stopped on request; checkpoint {checkpoint}")
        self.checkpoint = checkpoint


class Trainer:
    """``dist``: this process's place under torchrun (train/ddp.py; ``process_group`` gives
    it); None trains in one process. ``trust``: --trust-checkpoint."""

    def __init__(self, cfg: Config, data_dir: str | Path, run_dir: str | Path,
                 resume: bool = False, progress: bool = True, trust: bool = False,
                 dist: Dist | None = None) -> None:
        self.dist = dist or SINGLE
        self._stop_requested = False  # request_stop(): stop at the next update boundary
        self._mutating = False  # an update or rollback is half applied: no checkpoint now
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress and self.dist.is_main()
        self.trust = trust
        parts = prepare_run(cfg, data_dir, self.run_dir, resume, trust, self.dist)
        self.cfg, self.data, self.device = parts.cfg, parts.data, parts.device
        self.amp_dtype, self._autocast = parts.amp_dtype, parts.autocast
        self.train_set, self.val_set, self.collate = parts.train_set, parts.val_set, parts.collate
        self.vocoder, self.model, self.criterion = parts.vocoder, parts.model, parts.criterion
        self.sampler, self.init_record = parts.sampler, parts.init_record
        cfg, tc = self.cfg, self.cfg.train
        self.feed = Feed(cfg, self.train_set, self.sampler, self.collate, self.device)
        self.validator = Validator(cfg, self.val_set, self.train_set, self.device, self.vocoder,
                                   self.run_dir / "plots")
        self.optimizer = make_optimizer(self.model, cfg.optim)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.step = 0  # optimiser updates applied (a rollback rewinds it)
        self.iteration = 0  # update attempts (never rewinds; what TACOTRAIN_INJECT counts)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.overrides: dict[str, float | None] = {p: None for p in WIRED_PARAMETERS}
        self.guard = Guard(cfg.guard)
        self.stopper = EarlyStopper(cfg.early_stop, tc.max_steps, tc.best_metric)
        self.rounds = ValidationRound(cfg, self.dist, self.guard, self.stopper)
        self.recovery = Recovery(self.run_dir, self.dist, self.model, self.optimizer,
                                 self.scaler, self.guard, cfg,
                                 lambda: {"step": self.step, "iteration": self.iteration})
        self.elapsed_before = 0.0  # wall seconds of earlier sessions of this run
        self._t0 = time.monotonic()
        # checkpoints --resume skipped (guard.jsonl records); fit() reports them to the tracker
        self._resume_skips: list[dict] = []
        if resume:
            self._resume_skips = self.recovery.resume(self.cfg, self.device, self.trust,
                                                      self._take_over)
        elif self.dist.is_main():
            atomic_write_text(self.run_dir / "config.yaml", to_yaml(cfg))
        self._set_r()
        # self.model stays the bare model (checkpoints, validation), so a state dict has no
        # "module." prefix and loads in one process and under DDP alike
        self.updater = Updater(self.model, self.dist.wrap(self.model), self.criterion,
                               self.optimizer, self.scaler, self.guard, self.dist, self.device,
                               self._autocast, from_env())
        self.recovery.keep(self.state())

    # ------------------------------------------------------------------ state
    def state(self, val: ValidationResult | None = None) -> Checkpoint:
        """The whole training state as a checkpoint holds it; ``val``: the validation round it
        follows (None: a snapshot)."""
        return Checkpoint(
            step=self.step, iteration=self.iteration, epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch, world_size=self.dist.world_size,
            lr_scale=self.recovery.lr_scale, overrides=dict(self.overrides),
            guard=self.guard.state_dict(), early_stop=self.stopper.state_dict(),
            elapsed=self.elapsed_before + (time.monotonic() - self._t0),
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            schedule={"lr": self.param("optim.lr"),
                      "ga_weight": self.param("loss.guided_attention.weight")},
            r=r_at(self.step, self.cfg.model),  # validation used it, synthesis sets it
            rng=rng_state(self.device), config=self.cfg.model_dump(mode="json"),
            data=CheckpointData.of(self.data),
            val=val.metrics() if val else {}, verdict=verdict_record(val))

    def save(self, val: ValidationResult | None, best: bool = False,
             collective: bool = True) -> Path:
        """Snapshot and checkpoint the current state. Under DDP every rank calls this at the
        same point (``collective``) and rank 0 writes (see :meth:`Recovery.write`)."""
        if self.guard.healthy():
            self.recovery.keep(self.state())  # a checkpointed state is a good state
        return self.recovery.write(self.state(val), best, collective)

    def _take_over(self, ck: Checkpoint) -> None:
        """On --resume: the positions and loop state of the checkpoint resumed from."""
        self.step, self.iteration, self.epoch = ck.step, ck.iteration, ck.epoch
        self.batch_in_epoch = ck.batch_in_epoch
        self.overrides.update(ck.overrides)
        self.stopper.load_state_dict(ck.early_stop)
        self.elapsed_before = ck.elapsed

    # ------------------------------------------------------------------ one update
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

    def param(self, name: str) -> float:
        """The live value of a wired parameter: an intervention's override, else the schedule."""
        override = self.overrides.get(name)
        if override is not None:
            return override
        return scheduled_value(name, self.step, self.cfg, self.recovery.lr_scale)

    def train_step(self, batches: Batch | Sequence[Batch]
                   ) -> tuple[StepDecision, dict[str, float]]:
        """One update attempt over ``batches`` (its micro-batches; one Batch: k = 1) at the
        live parameter values; the guard decides whether it is applied (train/update.py)."""
        micro = [batches] if isinstance(batches, Batch) else list(batches)
        self.iteration += 1
        p = UpdateParams(self.param("optim.lr"), self.param("loss.guided_attention.weight"),
                         entropy_weight_at(self.step, self.cfg.loss.attention_entropy),
                         self.param("optim.grad_clip"))
        decision, metrics = self.updater.run(micro, p, self.iteration, self._applying)
        if decision.action == "ok":
            self.step += 1
        return decision, metrics

    def _applying(self) -> None:
        self._mutating = True  # until fit() has counted the batch as consumed

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

    def _validation_round(self, loop: Loop, elapsed: float) -> bool:
        """Validate and decide (train/rounds.py), apply the interventions, checkpoint (and
        best.pt). Returns True when training should stop."""
        decided = self.rounds.decide(
            lambda: self.validate(loop.tracker), self.step, (self.elapsed_before + elapsed) / 60,
            self.overrides, loop.result, loop.tracker, self.events)
        for change in decided.changes:
            self._mutating = self._mutating or change.rollback_weights  # half restored
            restored = self.recovery.intervene(change, self.overrides, self.state, loop.tracker)
            self.step = self.step if restored is None else restored
            loop.tracker.scalars(self.step, {M.name(M.GUARD, change.parameter):
                                             self.param(change.parameter)})
        loop.result.last_checkpoint = self.save(self.rounds.last, best=decided.is_best)
        if decided.stop_reason:
            loop.result.stop_reason = decided.stop_reason
        return decided.stop_reason is not None

    def _epoch_updates(self) -> Iterator[list[Batch]]:
        """The rest of the epoch in updates (train/feed.py), each at its step's r."""
        return self.feed.updates(lambda: (self.epoch, self.batch_in_epoch), self._set_r,
                                 lambda: r_at(self.step, self.cfg.model))

    # ------------------------------------------------------------------ the loop
    def fit(self, max_steps: int | None = None) -> TrainResult:
        """Train until ``max_steps`` (default ``train.max_steps``), the time budget, early
        stopping, alignment (``train.stop_when_aligned``), the guard or a stop request.
        Returns the result, also written as RUN/train_result.json on every way out."""
        loop = self._start(max_steps or self.cfg.train.max_steps)
        with loop.tracker:
            self._first_records(loop.tracker)
            try:
                self._train(loop)
                self.events.finished(self.step, loop.result.summary(
                    self.guard.rollbacks, self.guard.skipped))
            except KeyboardInterrupt as exc:
                self._interrupted(loop.result, exc)
                raise
            except GuardStop as exc:
                loop.result.last_checkpoint = latest_checkpoint(self.ckpt_dir)
                self._ended(loop.result, "guard")
                self.events.guard_stop(self.step, str(exc))
                raise
            except Exception as exc:
                self._ended(loop.result, f"crash: {type(exc).__name__}")
                self.events.crash(self.step, exc)
                raise
            finally:
                loop.bar.bar.close()
                self.events.close()
        self._write_result(loop.result)
        self.dist.barrier()  # no rank leaves before rank 0 has written everything
        return loop.result

    def _start(self, max_steps: int) -> Loop:
        """Announce the run, open the bar, the notifier and (rank 0) the tracker."""
        cfg, tc = self.cfg, self.cfg.train
        self.stopper.max_steps = max_steps
        self._t0 = time.monotonic()
        self.rounds.last = None
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("training %.2fM parameters on %s (%s), %d train / %d val items, from step %d; "
                 "one update: batch %d x %d process(es) x %d micro-batch(es)",
                 n_params / 1e6, self.device, self.amp_dtype or "fp32", len(self.train_set),
                 len(self.val_set), self.step, tc.batch_size, self.dist.world_size,
                 tc.grad_accum_steps)
        if cfg.model.r_schedule:
            log.info("reduction factor r %d at step %d (model.r_schedule %s)", self.model.r,
                     self.step, [list(p) for p in cfg.model.r_schedule])
        if self.updater.injector:
            log.warning("fault injection active: %s", self.updater.injector)
        budget = tc.time_budget_minutes * 60 if tc.time_budget_minutes else math.inf
        bar = TrainBar(max_steps, budget, self.step, self.stopper.phase, self.progress)
        loop = Loop(max_steps, budget, TrainResult(self.step, "max_steps", False, 0.0), bar,
                     IntervalMeter(), Muted())
        self._show_limit(loop)
        main = self.dist.is_main()  # rank 0 alone tracks and notifies
        self.events = TrainingEvents(cfg.notify, self.run_dir) if main else Muted()
        self.events.started(self.step, f"{n_params / 1e6:.2f}M parameters on {self.device}"
                            + (f", {self.dist.world_size} processes" if self.dist.active else ""))
        if main:
            loop.tracker = Tracker(self.run_dir, cfg.track,
                                   params=flatten(cfg.model_dump(mode="json")))
        return loop

    def _first_records(self, tracker: Tracker | Muted) -> None:
        """Resume fallbacks (already in guard.jsonl) and, on a fresh run, config and warm start
        go to the tracker."""
        for record in self._resume_skips:
            tracker.text(self.step, "guard", json.dumps(record))
            self.events.resume_fallback(self.step, record["checkpoint"], record["cause"])
        self._resume_skips = []
        if self.step == 0:
            tracker.text(0, "config", to_yaml(self.cfg))
            if self.init_record:
                tracker.text(0, "init_from", json.dumps(self.init_record))

    def _train(self, loop: Loop) -> None:
        """Epochs of updates until a limit or a decision stops the run."""
        stop = self.step >= loop.max_steps
        while not stop:
            for micro in self._epoch_updates():
                stop = self._update(micro, loop)
                if stop:
                    break
                self._stop_if_requested()
            else:
                self.epoch += 1
                self.batch_in_epoch = 0

    def _update(self, micro: list[Batch], loop: Loop) -> bool:
        """One update and what follows it; True when the run stops here."""
        decision, m = self.train_step(micro)
        self.batch_in_epoch += self.sampler.stride  # global batches consumed
        if decision.action != "ok":
            restored = self.recovery.on_guard(decision, loop.tracker, self.events)
            self.step = self.step if restored is None else restored
            self._mutating = False
            loop.bar.move_to(self.step)
            return False
        self._mutating = False
        loop.meter.add(m)
        loop.bar.bar.update()
        if self.step % self.cfg.guard.snapshot_interval == 0 and self.guard.healthy():
            self.recovery.keep(self.state())
        if self.step % self.cfg.train.log_interval == 0:
            figures = loop.meter.means()
            figures[M.GUARD_SKIPPED_STEPS] = self.guard.skipped
            figures[M.TRAIN_R] = m[M.TRAIN_R]  # in effect now, not averaged
            loop.tracker.scalars(self.step, figures)
            self._show_limit(loop)
            loop.bar.show_figures(figures)
        return self._limits(loop)

    def _limits(self, loop: Loop) -> bool:
        """A validation round when one is due, then: has a limit or a decision been reached?"""
        val_interval = self.cfg.train.val_interval
        elapsed = time.monotonic() - self._t0
        stop = False
        if self.step % val_interval == 0 or self.step >= loop.max_steps:
            stop = self._validation_round(loop, elapsed)
            self._show_limit(loop)
            loop.bar.bar.refresh()
        if self.step >= loop.max_steps:
            return True
        if not stop and self._budget_spent(loop.budget, elapsed):
            loop.result.stop_reason = "time_budget"
            if self.step % val_interval:
                self._validation_round(loop, elapsed)
            return True
        return stop

    def _show_limit(self, loop: Loop) -> None:
        loop.bar.show_limit(self.step, self.elapsed_before + time.monotonic() - self._t0,
                            self.stopper.phase)

    def request_stop(self) -> None:
        """Ask :meth:`fit` to stop before its next update: it writes a checkpoint of that state
        (under DDP with every rank's random streams, as a regular one: ``--resume`` continues
        exactly) and raises :class:`StopRequested`. Safe to call from a signal handler."""
        self._stop_requested = True

    def _stop_if_requested(self) -> None:
        """Between two updates: on a stop request (on any rank; every rank checks here after
        the same update) write the checkpoint and raise StopRequested."""
        if self.dist.any(self._stop_requested):
            raise StopRequested(self.save(self.rounds.last))

    def _budget_spent(self, budget: float, elapsed: float) -> bool:
        """Whether ``train.time_budget_minutes`` has run out; under DDP true on every rank
        once true on any (their clocks differ a little)."""
        return math.isfinite(budget) and self.dist.any(self.elapsed_before + elapsed >= budget)

    # ------------------------------------------------------------------ the way out
    def _interrupted(self, result: TrainResult, exc: KeyboardInterrupt) -> None:
        if isinstance(exc, StopRequested):  # every rank's state, between two updates
            last = exc.checkpoint
        elif self._mutating:  # a half-applied update is not a state to resume from
            last = latest_checkpoint(self.ckpt_dir)
        else:  # not collective: under DDP the other ranks may be gone already
            last = self.save(self.rounds.last, collective=False)
        if self.dist.is_main():
            log.warning("interrupted at step %d; resume from %s", self.step, last)
        result.last_checkpoint = last
        self._ended(result, "interrupted")
        self.events.interrupted(self.step, last)

    def _ended(self, result: TrainResult, reason: str) -> None:
        result.stop_reason = reason
        self._write_result(result)

    def _write_result(self, result: TrainResult) -> None:
        result.step = self.step
        result.wall_seconds = self.elapsed_before + time.monotonic() - self._t0
        best = self.ckpt_dir / "best.pt"
        result.best_checkpoint = best if best.exists() else None
        if self.dist.is_main():
            atomic_write_json(self.run_dir / "train_result.json", result.record(
                self.iteration, self.stopper.phase, self.guard.skipped, self.guard.rollbacks))
