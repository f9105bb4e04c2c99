"""Training throughput on the GPU: real (unpadded) mel frames per second of the ``default``
preset at batch 64 and 128, in fp32 and under bf16 autocast (``train.precision``).

Synthetic batches shaped like LJSpeech: clip durations drawn from a fixed distribution (normal,
mean 6.6 s, sd 2.2 s, clipped to 1-10 s: about 570 mel frames at 22.05 kHz / hop 256), text
about 15 symbols per second; the drawn items are sorted by length and cut into batches, as the
bucket sampler does, so padding is realistic. Each configuration runs warm-up steps, then timed
full optimiser steps (forward, masked losses, backward, clip, Adam). Prints a table with the
peak CUDA memory of each configuration. Not a test.

Without CUDA it says so and exits 0; ``--cpu-smoke`` then runs the same code path on the CPU
at a tiny size (tiny preset, short clips), so that the script cannot rot.

    python benchmarks/gpu_throughput.py [--batches 64 128] [--warmup 3] [--steps 10]
    python benchmarks/gpu_throughput.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

from tacotrain.batch import Batch
from tacotrain.config import AudioConfig, load_config
from tacotrain.data.loader import Collate
from tacotrain.model import Tacotron2, Tacotron2Loss

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

N_SYMBOLS = 148  # about the size of an English letter table; speed does not depend on it
FRAMES_PER_SECOND = 22050 / 256
SYMBOLS_PER_SECOND = 15.0


def synthetic_batches(n_batches: int, batch: int, n_mels: int, r: int, seconds_scale: float,
                      seed: int = 0) -> list[Batch]:
    """``n_batches`` length-bucketed batches of LJSpeech-like items (see the module doc);
    ``seconds_scale`` shrinks the durations (the CPU smoke run)."""
    rng = np.random.default_rng(seed)
    n = n_batches * batch
    secs = np.clip(rng.normal(6.6, 2.2, n), 1.0, 10.0) * seconds_scale
    frames = np.maximum((secs * FRAMES_PER_SECOND).astype(int), 2)
    chars = np.maximum((secs * SYMBOLS_PER_SECOND).astype(int), 2)
    order = np.argsort(frames)
    g = torch.Generator().manual_seed(seed)
    collate = Collate(r)
    out = []
    for k in range(n_batches):
        idx = order[k * batch:(k + 1) * batch]
        items = [(torch.randint(1, N_SYMBOLS, (int(chars[i]),), generator=g),
                  torch.randn(n_mels, int(frames[i]), generator=g) - 5.0, f"s{i}") for i in idx]
        out.append(collate(items))
    rng.shuffle(out)
    return out


def run(preset: str, batch: int, bf16: bool, device: torch.device, warmup: int, steps: int,
        seconds_scale: float) -> dict:
    """Frames/s of ``steps`` timed optimiser steps after ``warmup`` untimed ones."""
    cfg = load_config(preset)
    n_mels = AudioConfig().n_mels
    torch.manual_seed(0)
    model = Tacotron2(cfg.model, N_SYMBOLS, n_mels).to(device).train()
    crit = Tacotron2Loss(cfg.loss, cfg.model.n_frames_per_step)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = synthetic_batches(warmup + steps, batch, n_mels, cfg.model.n_frames_per_step,
                                seconds_scale)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step(b: Batch) -> float:
        b = b.to(device, non_blocking=True)
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            out = model(b.text, b.text_lengths, b.mels, b.mel_lengths)
            loss = crit(out, b, 1.0)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    try:
        for b in batches[:warmup]:
            step(b)
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        losses = [step(b) for b in batches[warmup:]]  # float(): one sync per step
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    except torch.cuda.OutOfMemoryError:
        return {"preset": preset, "batch": batch, "precision": "bf16" if bf16 else "fp32",
                "error": "out of memory"}
    timed = batches[warmup:]
    real = sum(int(b.mel_lengths.sum()) for b in timed)
    padded = sum(b.mels.shape[0] * b.mels.shape[2] for b in timed)
    return {"preset": preset, "batch": batch, "precision": "bf16" if bf16 else "fp32",
            "frames_per_second": round(real / seconds, 1),
            "seconds_per_step": round(seconds / len(timed), 4),
            "mean_frames_per_item": round(real / sum(len(b.mel_lengths) for b in timed), 1),
            "padding_share": round(1 - real / padded, 4),
            "peak_cuda_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if cuda else None,
            "final_loss_finite": bool(np.isfinite(losses[-1]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="without CUDA: run the same path on the CPU at a tiny size")
    args = ap.parse_args()
    if torch.cuda.is_available():
        device, preset, batches, scale = torch.device("cuda"), args.preset, args.batches, 1.0
        warmup, steps = args.warmup, args.steps
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        print("no CUDA device: nothing to measure on the GPU")
        if not args.cpu_smoke:
            return 0
        device, preset, batches, scale, warmup, steps = torch.device("cpu"), "tiny", [2, 4], \
            0.1, 1, 1
        torch.set_num_threads(1)
        print("--cpu-smoke: tiny preset, batch 2 and 4, clips at 1/10 length, 1 warm-up and "
              "1 timed step (figures say nothing about a GPU)")
    rows = [run(preset, b, bf16, device, warmup, steps, scale)
            for b in batches for bf16 in (False, True)]
    print(f"{'preset':8} {'batch':>5} {'prec':>5} {'frames/s':>10} {'s/step':>8} "
          f"{'frames/item':>11} {'padding':>8} {'peak GiB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:8} {r['batch']:5d} {r['precision']:>5} {r['error']}")
            continue
        peak = f"{r['peak_cuda_gib']:.2f}" if r["peak_cuda_gib"] is not None else "-"
        print(f"{r['preset']:8} {r['batch']:5d} {r['precision']:>5} "
              f"{r['frames_per_second']:10.1f} {r['seconds_per_step']:8.3f} "
              f"{r['mean_frames_per_item']:11.1f} {r['padding_share']:8.1%} {peak:>8}")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    with _common.machine_report():
        sys.exit(main())
