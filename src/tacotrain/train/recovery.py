"""The good states a run can return to, and the way back to them.

- The snapshot: an in-memory CPU copy of the whole training state (a :class:`Checkpoint`
  without a validation result), taken at every checkpoint and every
  ``guard.snapshot_interval`` steps while the guard is healthy. A rollback restores its
  weights, optimiser, scaler and step; on a guard stop it is written as a step checkpoint when
  it is newer than every checkpoint on disk, so that ``--resume`` continues from it exactly.
- Per-intervention snapshots, for interventions that roll the weights back when reverted.
- Step checkpoints (atomic, pruned to ``train.keep_last``) and ``best.pt``; under DDP every
  rank's RNG states go into the file.
- Resume with fallback: the newest step checkpoint that loads; newer ones that do not are
  renamed ``NAME.skipped`` and reported.
- ``guard.jsonl``: every skip, rollback, intervention, stop and resume fallback, with time,
  step and iteration.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tacotrain import metrics as M
from tacotrain.config import Config
from tacotrain.infer.checkpoint import (
    Checkpoint,
    CheckpointError,
    cpu_copy,
    load_checkpoint,
    numpy_rng_from_saved,
    numpy_rng_to_saved,
    prune,
    sidecar_path,
    state_hash,
    step_checkpoints,
)
from tacotrain.track import Tracker
from tacotrain.train.ddp import Dist
from tacotrain.train.events import Muted, TrainingEvents
from tacotrain.train.guard import Change, Guard, StepDecision
from tacotrain.train.setup import TrainError, seed_everything

log = logging.getLogger(__name__)


class GuardStop(RuntimeError):
    """The guard gave up (rollback cap reached); the last good state is on disk as a step
    checkpoint (the in-memory snapshot is written when it is newer than every checkpoint)."""


class Recovery:
    """``position()`` gives the step and iteration that guard.jsonl records carry."""

    def __init__(self, run_dir: Path, dist: Dist, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, guard: Guard,
                 cfg: Config, position: Callable[[], dict[str, int]]) -> None:
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.dist = dist
        self.model, self.optimizer, self.scaler, self.guard = model, optimizer, scaler, guard
        self.keep_last = cfg.train.keep_last
        self.lr_factor = cfg.guard.rollback_lr_factor
        self.position = position
        self.lr_scale = 1.0  # product of the rollbacks' learning-rate factors
        self.snapshot: Checkpoint | None = None
        self.for_intervention: dict[str, Checkpoint] = {}

    # ------------------------------------------------------------------ the guard's decisions
    def on_guard(self, decision: StepDecision, tracker: Tracker | Muted,
                 events: TrainingEvents | Muted) -> int | None:
        """Carry out the guard's verdict on an update it did not let through: ``skip``
        (logged), ``rollback`` (the snapshot restored, the learning rate lowered; returns the
        step it restored), ``stop`` (the snapshot kept on disk; raises :class:`GuardStop`)."""
        at = self.position()
        if decision.action == "skip":
            log.warning("iteration %d (step %d): update skipped: %s", at["iteration"],
                        at["step"], decision.cause)
            self.log(tracker, {"action": "skip", "cause": decision.cause})
        elif decision.action == "rollback":
            return self._rollback(decision.cause, tracker, events)
        elif decision.action == "stop":
            last, written = self.keep_on_stop()
            msg = (f"training stopped by the guard at step {at['step']} (iteration "
                   f"{at['iteration']}): {decision.cause}. Last good checkpoint: {last}"
                   f"{' (written now from the last good state)' if written else ''}")
            self.log(tracker, {"action": "stop", "cause": decision.cause,
                               "checkpoint": str(last), "checkpoint_written": written})
            raise GuardStop(msg)
        return None

    def _rollback(self, cause: str, tracker: Tracker | Muted,
                  events: TrainingEvents | Muted) -> int:
        assert self.snapshot is not None
        at, before_scale = self.position(), self.lr_scale
        step = self.restore(self.snapshot)
        self.lr_scale *= self.lr_factor
        log.warning("iteration %d: rolled back from step %d to step %d (%s); learning rate "
                    "x%g", at["iteration"], at["step"], step, cause, self.lr_factor)
        self.log(tracker, {
            "action": "rollback", "cause": cause, "from_step": at["step"], "to_step": step,
            "parameter": "lr_scale", "before": before_scale, "after": self.lr_scale,
            "rollbacks": self.guard.rollbacks,
            "restored_model_sha256": state_hash(self.model.state_dict())}, step=step)
        tracker.scalars(step, {M.GUARD_ROLLBACKS: self.guard.rollbacks,
                               M.GUARD_LR_SCALE: self.lr_scale})
        events.rollback(step, cause, self.lr_factor)
        return step

    # ------------------------------------------------------------------ in memory
    def keep(self, state: Checkpoint) -> None:
        """Make ``state`` the snapshot a rollback returns to."""
        self.snapshot = state.cpu_copy()

    def restore(self, state: Checkpoint) -> int:
        """Load a snapshot's weights, optimiser and scaler; returns its step."""
        self.model.load_state_dict(state.model)
        # a copy: Optimizer.load_state_dict keeps tensors already on the parameters' device and
        # dtype, and the next steps' in-place updates would otherwise rewrite the snapshot
        self.optimizer.load_state_dict(cpu_copy(state.optimizer))
        self.scaler.load_state_dict(state.scaler)
        return state.step

    def intervene(self, ch: Change, overrides: dict[str, float | None],
                  state: Callable[[], Checkpoint], tracker: Tracker | Muted) -> int | None:
        """Carry out one of the guard's interventions on ``overrides``: on ``apply`` keep the
        state it starts from; where it rolls the weights back, restore that state (returns its
        step; None otherwise)."""
        restored = None
        if ch.kind == "apply":
            self.for_intervention[ch.name] = state().cpu_copy()
        if ch.rollback_weights and ch.name in self.for_intervention:
            restored = self.restore(self.for_intervention[ch.name])
        if ch.kind in ("apply", "revert"):
            overrides[ch.parameter] = ch.after
        if ch.kind != "apply":
            self.for_intervention.pop(ch.name, None)
        log.warning("intervention %s: %s %s (%s -> %s; %s = %.4g)", ch.name, ch.kind,
                    ch.parameter, ch.before, ch.after, ch.metric, ch.metric_value)
        self.log(tracker, {"action": f"intervention_{ch.kind}", **ch.as_dict()}, step=restored)
        return restored

    # ------------------------------------------------------------------ on disk
    def write(self, state: Checkpoint, best: bool = False, collective: bool = True) -> Path:
        """``state`` as ``step-N.pt`` of its step (and ``best.pt``); older ones pruned.

        Under DDP, with ``collective``, every rank's RNG states go into the file
        (``rng_ranks``, so each rank resumes its own dropout stream), rank 0 writes and the
        others wait for it. Without (an interrupt, when the other ranks may be gone) rank 0
        writes its own state alone, and the other ranks reseed on resume."""
        path = self.ckpt_dir / f"step-{state.step:07d}.pt"
        rngs = self.dist.gather(state.rng) if collective else None
        if self.dist.is_main():
            if self.dist.active and rngs is not None:
                state = replace(state, rng_ranks=rngs)
            state.write(path)
            if best:
                state.write(self.ckpt_dir / "best.pt")
            prune(self.ckpt_dir, self.keep_last)
        if collective:
            self.dist.barrier()
        return path

    def keep_on_stop(self) -> tuple[Path | None, bool]:
        """On a guard stop: write the snapshot as a step checkpoint when it is newer than every
        checkpoint on disk. Returns the newest checkpoint and whether it was written now. Under
        DDP every rank calls this (the stop is agreed) and goes by rank 0's view."""
        assert self.snapshot is not None
        found = step_checkpoints(self.ckpt_dir)
        newest = self.dist.broadcast(found[-1] if found else None)
        step = self.snapshot.step
        if newest is not None and newest[0] >= step:
            return newest[1], False
        path = self.write(self.snapshot)
        if self.dist.is_main():
            log.warning("guard stop: the last good state (step %d) written to %s", step, path)
        return path, True

    def resume(self, cfg: Config, device: torch.device, trust: bool,
               take_over: Callable[[Checkpoint], None]) -> list[dict[str, Any]]:
        """Continue from the newest step checkpoint that loads: weights, optimiser, scaler,
        learning-rate scale, guard and this rank's RNG states here, the rest by
        ``take_over(checkpoint)``. Newer checkpoints that do not load (checksum, truncation,
        bad header, refused unpickling) are renamed ``NAME.skipped``: kept for inspection
        (``--trust-checkpoint`` may load a refused one), but out of the way of pruning, of the
        guard's "newest checkpoint" and of the next resume. Returns their guard.jsonl records
        (rank 0), which fit() repeats in events.jsonl and notifies. TrainError when none loads
        or the model section of the config differs."""
        ck, path, failed = self.newest_loadable(device, trust)
        if Config.from_saved(ck.config).model != cfg.model:
            raise TrainError(f"cannot resume {path}: the model section of the config differs "
                             "from the one the checkpoint was trained with")
        self.model.load_state_dict(ck.model)
        self.optimizer.load_state_dict(ck.optimizer)
        self.scaler.load_state_dict(ck.scaler)
        self.lr_scale = ck.lr_scale
        self.guard.load_state_dict(ck.guard)
        take_over(ck)
        set_rng_state(rank_rng(ck, self.dist, cfg.train.seed, device), device)
        log.info("resumed from %s at step %d", path, ck.step)
        if ck.world_size != self.dist.world_size and self.dist.is_main():
            log.warning("--resume: the checkpoint was written by %d process(es), this run has "
                        "%d: the data position carries over, but the run does not repeat what "
                        "it would have done in %d", ck.world_size, self.dist.world_size,
                        ck.world_size)
        self.dist.barrier()  # every rank has read its checkpoint before rank 0 renames any
        return self.set_aside(failed, path) if self.dist.is_main() else []

    def newest_loadable(self, device: torch.device, trust: bool
                        ) -> tuple[Checkpoint, Path, list[tuple[Path, str]]]:
        """The newest step checkpoint that loads, its path, and the newer ones that did not
        (path, reason). TrainError naming every file and why when none loads."""
        failed: list[tuple[Path, str]] = []
        for _, path in reversed(step_checkpoints(self.ckpt_dir)):
            try:
                return (Checkpoint.from_payload(
                    load_checkpoint(path, map_location=device, trust=trust), path),
                    path, failed)
            except CheckpointError as exc:
                failed.append((path, str(exc)))
                log.warning("--resume: %s", exc)
        tried = "\n".join(f"  {reason}" for _, reason in failed)
        raise TrainError(f"cannot resume: none of the {len(failed)} checkpoint(s) in "
                         f"{self.ckpt_dir} loads:\n{tried}")

    def set_aside(self, failed: list[tuple[Path, str]], resumed_from: Path
                  ) -> list[dict[str, Any]]:
        """Rename checkpoints that did not load to ``NAME.skipped`` (kept for inspection, out
        of the way of pruning and the next resume); returns their guard.jsonl records."""
        records = []
        for bad, reason in failed:
            moved = bad.with_name(bad.name + ".skipped")
            os.replace(bad, moved)
            sidecar_path(bad).unlink(missing_ok=True)  # it describes a file no longer listed
            log.warning("--resume: skipped %s, renamed to %s; resumed from the older %s",
                        bad.name, moved.name, resumed_from.name)
            records.append(self.log(None, {
                "action": "resume_skip", "cause": reason, "checkpoint": str(bad),
                "moved_to": str(moved), "resumed_from": str(resumed_from)}))
        return records

    def log(self, tracker: Tracker | Muted | None, record: dict[str, Any],
            step: int | None = None) -> dict[str, Any]:
        """Append ``record`` (with time, step, iteration) to guard.jsonl and, given a tracker,
        to events.jsonl; returns the record as written. ``step``: the step now, where the
        trainer has not taken it over yet (a rollback)."""
        at = self.position()
        if step is not None:
            at["step"] = step
        record = {"time": round(time.time(), 3), **at, **record}
        if not self.dist.is_main():
            return record
        with open(self.run_dir / "guard.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if tracker is not None:
            tracker.text(record["step"], "guard", json.dumps(record))
        return record


# ---------------------------------------------------------------------- random states
def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG training draws from, as tensors and plain values (see infer/checkpoint.py)."""
    state = {"python": random.getstate(),
             "numpy": numpy_rng_to_saved(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(numpy_rng_from_saved(state["numpy"]))
    # the states are CPU byte tensors; a checkpoint loaded onto the GPU moved them there
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def rank_rng(ck: Checkpoint, dist: Dist, seed: int, device: torch.device) -> dict[str, Any]:
    """This rank's RNG states from a checkpoint: its own where the checkpoint has every
    rank's (``rng_ranks``, written under DDP), rank 0's otherwise. A rank > 0 without its
    own (a checkpoint from fewer processes, or written on an interrupt) reseeds with
    ``seed + rank`` and the step instead, so that the ranks' dropout still differs."""
    per_rank = ck.rng_ranks or []
    if dist.rank < len(per_rank):
        return per_rank[dist.rank]
    if not dist.is_main():
        log.warning("rank %d: the checkpoint holds no RNG state of this rank; dropout "
                    "reseeded, so this run does not repeat the original exactly", dist.rank)
        seed_everything(dist.seed(seed) + 1_000_003 * ck.step)
        return rng_state(device)
    return ck.rng
