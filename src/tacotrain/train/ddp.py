"""Training in several processes (torchrun, DistributedDataParallel): the process group, the
rank helpers and the reductions the trainer uses, so the trainer itself only asks small
questions (``dist.is_main()``) and calls small functions (``dist.reduce(...)``).

``torchrun --standalone --nproc_per_node N -m tacotrain train ...`` starts N copies of the
command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``)
set. :func:`process_group` sees them and joins the group: backend gloo on the CPU, NCCL on CUDA,
where each process trains on ``cuda:LOCAL_RANK``. Without them, or with a world of one, it yields
:data:`SINGLE`, whose methods are the one-process identities (no communication, values returned
unchanged), so a one-process run computes exactly what it did before DDP existed.

Every method that communicates is a *collective*: every rank must call it at the same point of
the run, or the others wait for it until ``train.ddp_timeout_minutes`` runs out. The trainer
keeps to that by taking every branch on values that are equal on all ranks: the guard judges
figures reduced over the ranks, and rank 0's validation decisions are broadcast.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # set by torchrun for every process
T = TypeVar("T")


class DistError(RuntimeError):
    """The torchrun environment is incomplete or inconsistent."""


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes. ``world_size`` 1: no group."""

    rank: int = 0
    local_rank: int = 0  # the process's index on its machine: its GPU under NCCL
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def is_main(self) -> bool:
        """Rank 0: the one process that writes into the run directory, tracks, notifies and
        validates."""
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """The device this rank trains on: ``cuda:LOCAL_RANK`` for CUDA under DDP (whatever
        index ``train.device`` named), else ``device`` itself."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def seed(self, seed: int) -> int:
        """The seed of this rank's global RNGs (dropout): ``seed + rank``, so that the ranks do
        not draw the same dropout masks. The data order has its own seed, the same on all."""
        return seed + self.rank

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training forward runs through: DistributedDataParallel around
        ``model`` (which all-reduces the gradients, averaging them over the ranks, in the
        backward pass), or ``model`` itself in one process. Its construction broadcasts rank 0's
        parameters and buffers, so every rank starts from the same weights."""
        if not self.active:
            return model
        on_cuda = next(model.parameters()).device.type == "cuda"
        return DistributedDataParallel(model, device_ids=[self.local_rank] if on_cuda else None)

    @staticmethod
    def sync_grads(net: nn.Module, sync: bool) -> AbstractContextManager[Any]:
        """The context of one micro-batch's backward: without ``sync`` (every micro-batch of an
        accumulated update but the last) DDP keeps the gradients local; the last backward
        all-reduces the sum of them all once."""
        if sync or not isinstance(net, DistributedDataParallel):
            return nullcontext()
        return net.no_sync()

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def reduce(self, values: Mapping[str, float], total: Collection[str] = ()) -> dict[str, float]:
        """``values`` (the same keys on every rank) averaged over the ranks, except the keys in
        ``total``, which are summed (counts: frames, items). One all-reduce in float64; a NaN or
        inf on any rank makes that figure non-finite on every rank."""
        if not self.active:
            return dict(values)
        keys = list(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                         device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out = t.cpu().tolist()
        return {k: v if k in total else v / self.world_size for k, v in zip(keys, out,
                                                                             strict=True)}

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a decision all must share, such as
        "the time budget is spent", taken from clocks that differ a little)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (pickled; the others' ``obj`` is ignored)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank (pickled)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def _comm_device(self) -> torch.device:
        """NCCL moves CUDA tensors only; gloo CPU tensors."""
        if dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


SINGLE = Dist()


def from_env(environ: Mapping[str, str] | None = None) -> Dist | None:
    """The torchrun placement from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, or None when none of
    them is set. DistError when only some are, or they do not fit together."""
    env = os.environ if environ is None else environ
    present = [k for k in ENV_VARS if k in env]
    if not present:
        return None
    if len(present) < len(ENV_VARS):
        missing = ", ".join(k for k in ENV_VARS if k not in env)
        raise DistError(f"{', '.join(present)} set but {missing} not: start several training "
                        "processes with torchrun (see README, 'Several processes and "
                        "machines'), or unset them for one process")
    try:
        rank, world, local = (int(env[k]) for k in ENV_VARS)
    except ValueError:
        raise DistError("RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                        f"{[env[k] for k in ENV_VARS]}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not fit "
                        "together: need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0")
    return Dist(rank, local, world)


@contextmanager
def process_group(device: torch.device, timeout_minutes: float = 30.0) -> Iterator[Dist]:
    """Join the torchrun process group for the length of the block (gloo when ``device`` is
    the CPU, NCCL on CUDA, after selecting ``cuda:LOCAL_RANK``) and leave it afterwards.
    Yields :data:`SINGLE` when not started by torchrun or when the world is one process."""
    placed = from_env()
    if placed is None or not placed.active:
        yield SINGLE
        return
    if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
        raise DistError("RANK/WORLD_SIZE/LOCAL_RANK are set but MASTER_ADDR/MASTER_PORT are "
                        "not: start the processes with torchrun (it sets both)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        if placed.local_rank >= torch.cuda.device_count():
            raise DistError(f"LOCAL_RANK={placed.local_rank} but this machine has "
                            f"{torch.cuda.device_count()} CUDA device(s): use "
                            "--nproc-per-node <= the number of GPUs")
        torch.cuda.set_device(placed.local_rank)
    dist.init_process_group(backend, init_method="env://", rank=placed.rank,
                            world_size=placed.world_size,
                            timeout=timedelta(minutes=timeout_minutes))
    try:
        yield placed
        dist.barrier()  # leave together: no rank tears its connections down under another
    finally:
        dist.destroy_process_group()
