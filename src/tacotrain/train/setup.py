"""Everything a run needs before its first update, prepared in one fixed order.

Device and precision, the warm-start plan (``train.init_from``, checked before the run
directory is touched), the run directory, the seed, the data sets, the model (warm-started),
the loss, ``train.batch_size: auto`` resolved to an integer, and the data order. The order is
part of the contract: the seed comes before the model's initialisation and the batch-size
search, so the same config and seed give the same weights, bit for bit.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tacotrain.audio import GriffinLim
from tacotrain.config import Config, OptimConfig
from tacotrain.data.loader import Collate, DistributedBucketSampler, PreparedData, TextMelDataset
from tacotrain.fsutil import atomic_write_json
from tacotrain.infer.checkpoint import latest_checkpoint
from tacotrain.infer.device import resolve_device
from tacotrain.infer.pretrained import plan_warm_start
from tacotrain.model import Tacotron2, Tacotron2Loss
from tacotrain.train.batch_size import choose_batch_size, saved_batch_size
from tacotrain.train.ddp import Dist
from tacotrain.train.schedules import lr_at

log = logging.getLogger(__name__)

Autocast = Callable[[], AbstractContextManager[Any]]


class TrainError(RuntimeError):
    pass


@dataclass
class RunParts:
    """What :func:`prepare_run` built; ``cfg`` holds the chosen integer batch size."""

    cfg: Config
    data: PreparedData
    device: torch.device
    amp_dtype: torch.dtype | None
    train_set: TextMelDataset
    val_set: TextMelDataset
    collate: Collate
    vocoder: GriffinLim
    model: Tacotron2
    criterion: Tacotron2Loss
    sampler: DistributedBucketSampler
    init_record: dict[str, Any] | None  # what the warm start took from where

    @property
    def autocast(self) -> Autocast:
        return autocast_for(self.device, self.amp_dtype)


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


def autocast_for(device: torch.device, dtype: torch.dtype | None) -> Autocast:
    """A factory of the forward pass's autocast context (a no-op for fp32)."""
    if dtype is None:
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_run(cfg: Config, data_dir: str | Path, run_dir: Path, resume: bool, trust: bool,
                dist: Dist) -> RunParts:
    """Build a run's parts in the order the module docstring gives. TrainError for a run
    directory that does not fit ``resume``, a warm start combined with ``resume`` and a train
    split too small for one update."""
    data = PreparedData.load(data_dir)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = dist.place(resolve_device(tc.device))
    amp_dtype = resolve_precision(tc.precision, device)
    n_mels = data.settings.audio.n_mels
    warm = None
    if tc.init_from:
        if resume:
            raise TrainError("--init-from (train.init_from) does not combine with --resume: a "
                             "resumed run continues from its own checkpoint. Drop --init-from "
                             "(or --set train.init_from=null) to resume, or start a new run "
                             "(a new --out) without --resume")
        warm = plan_warm_start(tc.init_from, cfg.model, data.symbols, n_mels, tc.ignore_layers,
                               trust=trust)
    check_run_dir(run_dir, resume, dist)
    seed_everything(dist.seed(tc.seed))
    train_set, val_set = TextMelDataset(data, "train"), TextMelDataset(data, "val")
    model = Tacotron2(cfg.model, len(data.symbols), n_mels).to(device)
    init_record = warm.apply(model) if warm else None
    if init_record and dist.is_main():
        atomic_write_json(run_dir / "init_from.json", init_record)
    criterion = Tacotron2Loss(cfg.loss, cfg.model.n_frames_per_step)
    if tc.batch_size == "auto":
        cfg = auto_batch_size(cfg, run_dir, resume, dist, model, criterion, train_set,
                              device, autocast_for(device, amp_dtype))
    sampler = data_order(cfg, train_set, dist)
    return RunParts(cfg, data, device, amp_dtype, train_set, val_set,
                    Collate(cfg.model.n_frames_per_step), GriffinLim(data.settings.audio),
                    model, criterion, sampler, init_record)


def check_run_dir(run_dir: Path, resume: bool, dist: Dist) -> None:
    """Every rank checks (reading only) before rank 0 creates anything, so that no rank
    mistakes rank 0's fresh directories for an earlier run."""
    ckpt_dir = run_dir / "checkpoints"
    has_ckpt = latest_checkpoint(ckpt_dir) is not None
    if resume and not has_ckpt:
        raise TrainError(f"--resume: no checkpoint in {ckpt_dir}")
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise TrainError(f"{run_dir} is not empty; pass --resume to continue that run "
                         "or choose a new --out")
    dist.barrier()
    if dist.is_main():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "plots").mkdir(exist_ok=True)


def auto_batch_size(cfg: Config, run_dir: Path, resume: bool, dist: Dist, model: Tacotron2,
                    criterion: Tacotron2Loss, train_set: TextMelDataset, device: torch.device,
                    autocast: Autocast) -> Config:
    """A copy of the config with ``train.batch_size`` auto replaced by an integer: the one
    saved in RUN/config.yaml on --resume, else the largest that fits the device (the
    smallest over the ranks under DDP), logged and recorded in RUN/batch_size.json."""
    if resume:
        size = saved_batch_size(run_dir)
        log.info("train.batch_size auto: %d, as saved in %s", size, run_dir / "config.yaml")
    else:
        choice = choose_batch_size(cfg, model, criterion, train_set, device, autocast,
                                   dist.world_size * cfg.train.grad_accum_steps)
        size = min(dist.gather(choice.batch_size))
        if dist.is_main():
            log.info("%s%s", choice.describe(),
                     f"; {size} on every rank" if size != choice.batch_size else "")
            atomic_write_json(run_dir / "batch_size.json",
                              {**choice.as_dict(), "batch_size": size})
    cfg = cfg.model_copy(deep=True)
    cfg.train.batch_size = size
    return cfg


def data_order(cfg: Config, train_set: TextMelDataset, dist: Dist) -> DistributedBucketSampler:
    """This rank's batches; the order's seed is the same on every rank, so that together they
    see one global order. TrainError when an epoch holds no whole update."""
    tc = cfg.train
    sampler = DistributedBucketSampler(
        train_set.lengths, tc.batch_size, seed=tc.seed, bucket_batches=tc.bucket_batches,
        num_replicas=dist.world_size, rank=dist.rank, group=tc.grad_accum_steps)
    if sampler.min_updates_per_epoch() < 1:
        raise TrainError(
            f"the train split ({len(train_set)} items) gives fewer batches of "
            f"train.batch_size {tc.batch_size} per epoch than one optimiser update takes: "
            f"{dist.world_size} process(es) x train.grad_accum_steps "
            f"{tc.grad_accum_steps}. Lower train.batch_size or train.grad_accum_steps, or "
            "start fewer processes")
    return sampler


def make_optimizer(model: torch.nn.Module, oc: OptimConfig) -> torch.optim.Optimizer:
    opt_cls = torch.optim.AdamW if oc.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(model.parameters(), lr=lr_at(0, oc), betas=(oc.beta1, oc.beta2), eps=oc.eps,
                   weight_decay=oc.weight_decay)
