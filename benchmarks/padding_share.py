"""Padding share of batches: bucket batch sampler vs random batching on the mini corpus.

Padding share = padded frames / all frames of a batch, over all batches of an epoch, averaged
over several epochs. The bucket sampler groups items of similar mel length.

    python benchmarks/padding_share.py [--size 200] [--batch-size 16] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from tacotrain.data.loader import BucketBatchSampler, PreparedData, padding_share

import _common
from _common import prepared


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--r", type=int, default=1, help="reduction factor (pads to a multiple)")
    args = ap.parse_args()
    data = PreparedData.load(prepared("en", args.size))
    lengths = [i["frames"] for i in data.split("train")]
    n, bs = len(lengths), args.batch_size
    out = {"items": n, "batch_size": bs, "mel_frames_min": min(lengths),
           "mel_frames_max": max(lengths)}
    for name, bucket_batches in (("bucket", 1), ("bucket_x4", 4)):
        shares = []
        for epoch in range(args.epochs):
            s = BucketBatchSampler(lengths, bs, seed=0, bucket_batches=bucket_batches)
            s.set_epoch(epoch)
            shares.append(padding_share(s.batches(), lengths, args.r))
        out[name] = round(float(np.mean(shares)), 4)
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(args.epochs):
        perm = rng.permutation(n)
        shares.append(padding_share([perm[k:k + bs] for k in range(0, n, bs)], lengths, args.r))
    out["random"] = round(float(np.mean(shares)), 4)
    print(f"{n} items, batch {bs}, mel frames {out['mel_frames_min']}-{out['mel_frames_max']}")
    print(f"padding share, bucket sampler:                 {out['bucket']:.1%}")
    print(f"padding share, bucket sampler (4-batch mixing): {out['bucket_x4']:.1%}")
    print(f"padding share, random batches:                 {out['random']:.1%}")
    print(json.dumps(out))


if __name__ == "__main__":
    with _common.machine_report():
        main()
