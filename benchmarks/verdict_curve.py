"""The verdict along a training run: every checkpoint of RUN judged on every validation item of
DATA (and, with --heldout, on other recorded sentences), as a table.

    python benchmarks/verdict_curve.py --run demo/runs/XXXX --data demo/data [--heldout H]

Each checkpoint free-runs every item once (seed 0); the figures are those of `tacotrain eval`:
aligned share, identified share (the content test), mean skipped tokens, median length ratio
and median MCD-DTW against the ground truth. Minutes are the training wall time stored in the
checkpoint (they include validation, and any slowdown from other processes on the machine).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from tacotrain.config import Config
from tacotrain.data.loader import PreparedData, TextMelDataset
from tacotrain.evaluate.run import prepared_items
from tacotrain.infer.checkpoint import load_checkpoint
from tacotrain.judge.freerun import judge, nearest_in_length, synthesize
from tacotrain.model import Tacotron2

import _common


def judge_items(model: Tacotron2, cfg: Config, items, train: TextMelDataset):
    torch.manual_seed(0)
    synth = synthesize(model, [i.ids for i in items])
    gts = [i.gt_mel for i in items]
    missing = cfg.alignment.min_candidates - len(gts)
    extra = []
    if missing > 0:
        idx = nearest_in_length(train.lengths, [g.shape[1] for g in gts], missing)
        extra = [train[i][1] for i in idx]
    return judge(synth, gts, cfg.alignment, cfg.audio.frame_ms, extra).verdict


def row(v) -> str:
    items = v.items
    ident = [i.identified for i in items if i.identified is not None]
    return (f"{v.aligned_share:.2f} | {sum(ident) / max(len(ident), 1):.2f} | "
            f"{statistics.mean(i.skipped_tokens for i in items):.1f} | "
            f"{statistics.median(i.length_ratio for i in items):.2f} | "
            f"{statistics.median(i.mcd_dtw_db for i in items):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--heldout", type=Path, default=None, help="prepared data of other sentences")
    ap.add_argument("--every", type=int, default=1, help="judge every k-th checkpoint")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = PreparedData.load(args.data)
    train = TextMelDataset(data, "train")
    val = prepared_items(data, "validation", "val")
    held = prepared_items(PreparedData.load(args.heldout), "heldout") if args.heldout else []
    head = "| step | minutes | aligned | identified | skipped | length ratio | MCD-DTW dB |"
    if held:
        head += " held-out: aligned | identified | skipped | length ratio | MCD-DTW dB |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    ckpts = sorted((args.run / "checkpoints").glob("step-*.pt"))[args.every - 1::args.every]
    for path in ckpts:
        ck = load_checkpoint(path, map_location="cpu")
        cfg = Config.from_saved(ck["config"])
        model = Tacotron2(cfg.model, len(ck["data"]["symbols"]), data.settings.audio.n_mels)
        model.load_state_dict(ck["model"])
        model.eval()
        verdict = judge_items(model, cfg, val, train)
        line = f"| {ck['step']} | {ck['elapsed'] / 60:.1f} | {row(verdict)} |"
        if held:
            line += f" {row(judge_items(model, cfg, held, train))} |"
        print(line, flush=True)


if __name__ == "__main__":
    with _common.machine_report():
        main()
