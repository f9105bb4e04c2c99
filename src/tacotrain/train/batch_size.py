"""``train.batch_size: auto``: the largest batch whose training step fits the device.

Chosen once at the start of a run (a resumed run keeps the size saved in its config.yaml), by
trial forwards and backwards on the *longest* items of the train split, padded as ``Collate``
pads them: that batch is the largest a length-bucketed epoch can produce, so every other batch
of the run fits too. The step is measured at the smallest reduction factor r the run will use
(``model.r_schedule``), which has the most decoder steps and so the most activations.

* CUDA: try ``train.max_batch_size``, halve on ``torch.cuda.OutOfMemoryError`` (cache emptied
  between tries) until one fits, then bisect between that size and the smallest failing one.
* CPU: there is no allocator limit to run into and torch keeps no CPU allocator statistics, so
  the memory a step adds is *measured* as the process's peak resident set: freed heap memory is
  handed back to the OS (glibc ``malloc_trim``), the high-water mark is reset (``5`` written to
  ``/proc/self/clear_refs``), the step is run and ``VmHWM`` minus the ``VmRSS`` before it is
  read from ``/proc/self/status``. Two small sizes give a fixed part and a part per item, which
  is extrapolated linearly to ``train.memory_budget_gb`` and verified by one trial at the
  chosen size (lowered in proportion when the trial exceeds the budget).

Each trial also holds a placeholder as large as Adam's two moment buffers, which the optimiser
allocates only at its first step. The trials change nothing training depends on: no optimiser
step, batch-norm statistics and the active r restored, gradients cleared, and every RNG stream
(Python, NumPy, torch CPU and CUDA) put back as it was.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tacotrain.batch import Batch
from tacotrain.config import Config, load_config
from tacotrain.data.loader import Collate, TextMelDataset
from tacotrain.model import Tacotron2, Tacotron2Loss

log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_CPU_SIZES = (2, 4)  # the two small batches whose peaks give the fixed and per-item parts
_CPU_VERIFY_TRIES = 3  # trials at the chosen size before settling on the last lowered one


class BatchSizeError(RuntimeError):
    """No batch size could be chosen; the message says what to set instead."""


@dataclass(frozen=True)
class BatchSizeChoice:
    """The chosen size and how: ``method`` is ``cuda_oom_search``, ``cpu_rss_extrapolation``
    or ``saved`` (a resumed run); ``tried`` lists ``(size, fitted)`` in order; ``measured``
    holds the figures the choice came from (bytes, on CPU)."""

    batch_size: int
    method: str
    limit: int  # the largest size considered: train.max_batch_size, or what the split allows
    tried: tuple[tuple[int, bool], ...] = ()
    measured: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        tried = ", ".join(f"{s} {'fits' if ok else 'too large'}" for s, ok in self.tried)
        figures = ", ".join(f"{k} {v / 2**20:.1f} MiB" if k.endswith("bytes") else f"{k} {v:g}"
                            for k, v in self.measured.items())
        parts = [f"train.batch_size auto -> {self.batch_size} ({self.method}, at most "
                 f"{self.limit})"]
        if tried:
            parts.append(f"tried: {tried}")
        if figures:
            parts.append(f"measured: {figures}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "method": self.method, "limit": self.limit,
                "tried": [list(t) for t in self.tried], "measured": dict(self.measured)}


def saved_batch_size(run_dir: Path) -> int:
    """The integer batch size a run chose at its start, from ``RUN/config.yaml``."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise BatchSizeError(f"--resume with train.batch_size auto: {path} is missing, so the "
                             "size the run started with is unknown; pass it with --set "
                             "train.batch_size=N")
    size = load_config(path).train.batch_size
    if not isinstance(size, int):
        raise BatchSizeError(f"--resume with train.batch_size auto: {path} holds "
                             f"train.batch_size {size!r}, not an integer; pass the size the run "
                             "used with --set train.batch_size=N")
    return size


def longest_batch(dataset: TextMelDataset, size: int, r: int) -> Batch:
    """The ``size`` longest items of ``dataset`` (by mel frames; repeated in turn when the
    split holds fewer), padded by ``Collate(r)``: text ``[size, N]``, mels ``[size, M, T]``."""
    order = sorted(range(len(dataset)), key=lambda i: dataset.lengths[i], reverse=True)
    return Collate(r)([dataset[order[k % len(order)]] for k in range(size)])


def probe_step(model: Tacotron2, criterion: Tacotron2Loss, batch: Batch,
               autocast: Callable[[], AbstractContextManager[Any]]) -> None:
    """One training forward and backward of ``batch`` (already on the model's device), with a
    placeholder for the optimiser's moment buffers held throughout. Gradients are left in
    ``.grad``; the caller clears them. Module-level so that tests can replace it."""
    params = list(model.parameters())
    moments = torch.zeros(2 * sum(p.numel() for p in params), device=params[0].device)
    with autocast():
        out = model(batch.text, batch.text_lengths, batch.mels, batch.mel_lengths)
        loss = criterion(out, batch, 1.0, 0.0)["loss"]
    loss.backward()
    del moments


class _Restorer:
    """Puts back what a trial step may change: batch-norm buffers, train/eval mode, r of the
    model and loss, gradients (cleared) and every RNG stream."""

    def __init__(self, model: Tacotron2, criterion: Tacotron2Loss, device: torch.device) -> None:
        self.model, self.criterion, self.device = model, criterion, device
        self.buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        self.training, self.r, self.loss_r = model.training, model.r, criterion.r
        self.rng: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                                    "torch": torch.get_rng_state()}
        if device.type == "cuda":
            self.rng["cuda"] = torch.cuda.get_rng_state(device)

    def clear_grads(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def restore(self) -> None:
        self.clear_grads()
        with torch.no_grad():
            for k, b in self.model.named_buffers():
                b.copy_(self.buffers[k])
        self.model.train(self.training)
        self.model.set_r(self.r)
        self.criterion.r = self.loss_r
        random.setstate(self.rng["python"])
        np.random.set_state(self.rng["numpy"])
        torch.set_rng_state(self.rng["torch"])
        if "cuda" in self.rng:
            torch.cuda.set_rng_state(self.rng["cuda"], self.device)


def choose_batch_size(cfg: Config, model: Tacotron2, criterion: Tacotron2Loss,
                      dataset: TextMelDataset, device: torch.device,
                      autocast: Callable[[], AbstractContextManager[Any]],
                      batches_per_update: int = 1) -> BatchSizeChoice:
    """The largest batch size (at most ``train.max_batch_size``, and small enough that the
    split gives ``batches_per_update`` batches: ranks x grad_accum_steps) whose training step
    fits ``device``. Leaves the model, loss and RNG streams as it found them."""
    tc = cfg.train
    limit = max(1, min(tc.max_batch_size, len(dataset) // batches_per_update))
    sched = cfg.model.r_schedule
    r = min(r for _, r in sched) if sched else cfg.model.n_frames_per_step
    saved = _Restorer(model, criterion, device)
    model.train()
    model.set_r(r)
    criterion.r = r

    def trial(size: int) -> None:
        batch = longest_batch(dataset, size, r).to(device)
        try:
            probe_step(model, criterion, batch, autocast)
        finally:
            saved.clear_grads()

    try:
        if device.type == "cuda":
            return cuda_search(trial, limit, device)
        return cpu_search(trial, limit, tc.memory_budget_gb * 2**30)
    finally:
        saved.restore()


def cuda_search(trial: Callable[[int], None], limit: int,
                device: torch.device | None = None) -> BatchSizeChoice:
    """Halve from ``limit`` until ``trial`` stops raising ``torch.cuda.OutOfMemoryError``,
    then bisect up to the largest size that does not."""
    tried: list[tuple[int, bool]] = []

    def fits(size: int) -> bool:
        try:
            trial(size)
            ok = True
        except torch.cuda.OutOfMemoryError:
            ok = False  # the exception (and the tensors its frames hold) is gone past here
        gc.collect()
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()
        tried.append((size, ok))
        return ok

    size = limit
    while not fits(size):
        if size == 1:
            raise BatchSizeError("train.batch_size auto: even a batch of 1 of the longest "
                                 "train items runs out of GPU memory; use a smaller model "
                                 "preset, drop the longest clips (prepare.max_seconds) or set "
                                 "train.precision bf16")
        size //= 2
    fails = [s for s, ok in tried if not ok]
    if fails:  # the smallest size that ran out of memory: the answer lies below it
        lo, hi = size, min(fails)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        size = lo
    peak = (float(torch.cuda.max_memory_allocated(device))
            if device is not None and device.type == "cuda" else math.nan)
    measured = {} if math.isnan(peak) else {"peak_allocated_bytes": peak}
    return BatchSizeChoice(size, "cuda_oom_search", limit, tuple(tried), measured)


def cpu_search(trial: Callable[[int], None], limit: int, budget_bytes: float,
               measure: Callable[[Callable[[], None]], float] | None = None) -> BatchSizeChoice:
    """Extrapolate the memory of ``trial`` measured at two small sizes to ``budget_bytes``
    (the memory a step may add to what the process holds) and verify at the chosen size.

    ``measure(run)`` returns the bytes ``run()`` adds at its peak (default: :func:`rss_peak`)."""
    measure = measure or rss_peak
    tried: list[tuple[int, bool]] = []
    a, b = (min(s, limit) for s in _CPU_SIZES)
    peak_a = measure(lambda: trial(a))
    measured = {f"peak_at_{a}_bytes": peak_a}
    if b > a:
        peak_b = measure(lambda: trial(b))
        measured[f"peak_at_{b}_bytes"] = peak_b
        # a difference lost in measurement noise: assume the whole peak scales with the batch
        per_item = (peak_b - peak_a) / (b - a) if peak_b > peak_a else peak_b / b
        per_item = max(per_item, 1.0)
    else:
        per_item = max(peak_a / a, 1.0)
    fixed = max(peak_a - a * per_item, 0.0)
    measured.update({"per_item_bytes": per_item, "fixed_bytes": fixed,
                     "budget_bytes": budget_bytes})
    size = int(max(1, min(limit, (budget_bytes - fixed) // per_item)))
    for _ in range(_CPU_VERIFY_TRIES):
        peak = measure(lambda size=size: trial(size))
        measured[f"peak_at_{size}_bytes"] = peak
        tried.append((size, peak <= budget_bytes))
        if peak <= budget_bytes or size == 1:
            break
        size = max(1, min(size - 1, int(size * budget_bytes / peak)))
    if not tried[-1][1]:
        log.warning("train.batch_size auto: a step of batch %d of the longest items adds "
                    "%.1f MiB, over train.memory_budget_gb (%.1f MiB)%s", size,
                    measured[f"peak_at_{tried[-1][0]}_bytes"] / 2**20, budget_bytes / 2**20,
                    "; training at batch 1" if size == 1 else "")
    return BatchSizeChoice(size, "cpu_rss_extrapolation", limit, tuple(tried), measured)


def _status_kb(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BatchSizeError(f"{_STATUS} has no {key} line; set train.batch_size to an integer")


def _malloc_trim() -> None:
    """Return freed heap memory to the OS (glibc), so that it counts again when reused."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: freed memory may be reused unseen and the peak read low


def rss_peak(run: Callable[[], None]) -> float:
    """Bytes ``run()`` adds to the process's resident set at its peak (Linux)."""
    gc.collect()
    _malloc_trim()
    try:
        _CLEAR_REFS.write_text("5")  # reset VmHWM to the current VmRSS
    except OSError as exc:
        raise BatchSizeError(f"train.batch_size auto on the CPU needs {_CLEAR_REFS} to reset "
                             f"the peak memory reading ({exc}); set train.batch_size to an "
                             "integer") from exc
    before = _status_kb("VmRSS")
    run()
    return float(max(_status_kb("VmHWM") - before, 0) * 1024)

