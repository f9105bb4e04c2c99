"""How the content test's margin depends on the number of candidates, for voices that read and
voices that do not.

    python benchmarks/content_margin.py --checkpoints RUN/checkpoints/step-0000500.pt \
        RUN/checkpoints/step-0003226.pt --heldout HELDOUT_DATA [--sizes 8 16 30] [--draws 50]

Each checkpoint free-runs every held-out sentence once (seed 0); the MCD-DTW matrix between the
syntheses and the recordings is computed once, then for each candidate count N, ``--draws``
random sets of N sentences are judged as a round of N items (every item a candidate for every
other). Two margins per item, each the smaller over both directions (the synthesis against the
other recordings, the recording against the other syntheses): against the *nearest* other
(``min(d_other) / d_own - 1``: it shrinks as N grows, since the nearest of more distances is
nearer) and against the *median* other (``median(d_other) / d_own - 1``: the content test's
margin, an estimate that does not drift with N). Printed: the 5th, 50th and 95th percentiles of
each over all items of all draws, the share of items that are mutual nearest neighbours, and
the share identified by the old rule (nearest margin above 0.1) and by today's (mutual nearest
and median margin above each of ``--margins``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tacotrain.data.loader import PreparedData
from tacotrain.evaluate.run import prepared_items
from tacotrain.infer.synth import Synthesizer
from tacotrain.judge.freerun import synthesize
from tacotrain.judge.verdict import cepstral_distance, mel_cepstra

import _common


def margins(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a round's square distance matrix ``[N, N]`` (synthesis i, recording j): per item the
    nearest-other margin, the median-other margin and whether it is a mutual nearest neighbour."""
    n = dist.shape[0]
    near, med, mutual = [], [], []
    for i in range(n):
        others = np.concatenate([np.delete(dist[i], i), np.delete(dist[:, i], i)])
        rows, cols = np.delete(dist[i], i), np.delete(dist[:, i], i)
        d = dist[i, i]
        near.append(others.min() / d - 1)
        med.append(min(np.median(rows), np.median(cols)) / d - 1)
        mutual.append(d < others.min())
    return np.array(near), np.array(med), np.array(mutual)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=Path, nargs="+", required=True)
    ap.add_argument("--heldout", type=Path, required=True, help="prepared held-out data")
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 30])
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--n-cepstra", type=int, default=13)
    ap.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.25])
    args = ap.parse_args()
    items = prepared_items(PreparedData.load(args.heldout), "heldout")
    gts = [mel_cepstra(i.gt_mel, args.n_cepstra) for i in items]
    rules = " | ".join(f"median > {m}" for m in args.margins)
    print("checkpoint | N | nearest margin p5/p50/p95 | median margin p5/p50/p95 | mutual "
          f"nearest | nearest > 0.1 | {rules}")
    print("---|---|---|---|---|---" + "|---" * len(args.margins))
    for ckpt in args.checkpoints:
        synth = Synthesizer.from_checkpoint(ckpt, device="cpu", vocoder="griffin_lim")
        torch.manual_seed(0)
        out = synthesize(synth.model, [i.ids for i in items])
        syn = [mel_cepstra(mel, args.n_cepstra) for mel, _, _ in out]
        dist = np.array([[cepstral_distance(s, g) for g in gts] for s in syn])
        rng = np.random.default_rng(0)
        for n in args.sizes:
            n = min(n, len(items))
            near, med, mutual = [], [], []
            for _ in range(args.draws if n < len(items) else 1):
                pick = rng.choice(len(items), size=n, replace=False)
                a, b, c = margins(dist[np.ix_(pick, pick)])
                near.append(a)
                med.append(b)
                mutual.append(c)
            near, med, mutual = map(np.concatenate, (near, med, mutual))
            p = lambda x: "/".join(f"{v:.3f}" for v in np.percentile(x, [5, 50, 95]))  # noqa: E731
            shares = " | ".join(f"{(mutual & (med > m)).mean():.2f}" for m in args.margins)
            print(f"{ckpt.name} | {n} | {p(near)} | {p(med)} | {mutual.mean():.2f} | "
                  f"{(near > 0.1).mean():.2f} | {shares}", flush=True)


if __name__ == "__main__":
    with _common.machine_report():
        main()
