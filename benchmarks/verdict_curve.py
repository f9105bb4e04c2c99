"""The verdict along a training run: every checkpoint of RUN judged on every validation item of
DATA (and, with --heldout, on other recorded sentences), as a table.

    python benchmarks/verdict_curve.py --run demo/runs/XXXX --data demo/data [--heldout H]

Each group of items is judged as training's validation round judges its items
(train/validation.py): free-running synthesis (seed 0) capped at the longest length the verdict
accepts, then the verdict with the items' texts (recordings of the same sentence stand aside
from each other's comparison), their phoneme marks (a mark is read with the sound before it),
training items of similar length as further candidates for the content test when the group
has fewer than `alignment.min_candidates` sentences, and the recogniser that the checkpoint's
`alignment.asr` names (heard only when everything else passes, as in training). Columns:
aligned share, identified share (the content test), the smallest and largest content margin,
mean skipped tokens, median length ratio and median MCD-DTW of the predicted mel against its
recording. Minutes are the training wall time stored in the checkpoint (they include
validation, and any slowdown from other processes on the machine).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from tacotrain.audio import GriffinLim
from tacotrain.config import Config
from tacotrain.data.loader import PreparedData, TextMelDataset
from tacotrain.evaluate.run import EvalItem, prepared_items
from tacotrain.infer.checkpoint import load_checkpoint
from tacotrain.judge.freerun import judge, nearest_in_length, synthesize
from tacotrain.judge.intelligibility import Listener, listener_for
from tacotrain.judge.verdict import RoundVerdict
from tacotrain.model import Tacotron2
from tacotrain.text import attached_marks, text_key

import _common

COLUMNS = "aligned | identified | margin min | margin max | skipped | length ratio | MCD-DTW dB"


def judge_items(model: Tacotron2, cfg: Config, items: list[EvalItem], train: TextMelDataset,
                symbols: list[str], frame_ms: float, listener: Listener | None) -> RoundVerdict:
    """The verdict on ``items``, with the arguments training's validation round passes."""
    torch.manual_seed(0)
    gts = [i.gt_mel for i in items]
    bound = cfg.alignment.length_ratio_max * 1.05  # as validation: longer cannot pass
    synth = synthesize(model, [i.ids for i in items],
                       max_frames=[int(g.shape[1] * bound) + 1 for g in gts])
    missing = cfg.alignment.min_candidates - len({text_key(i.text) for i in items})
    idx = nearest_in_length(train.lengths, [g.shape[1] for g in gts], missing) \
        if missing > 0 else []
    return judge(synth, gts, cfg.alignment, frame_ms, [train[i][1] for i in idx],
                 [i.text for i in items], [train.items[i]["text"] for i in idx],
                 [attached_marks(i.ids.tolist(), symbols) for i in items], listener,
                 listen_always=False).verdict


def row(v: RoundVerdict) -> str:
    items = v.items
    ident = [i.identified for i in items if i.identified is not None]
    margins = [i.content_margin for i in items if i.content_margin is not None]
    low, high = (f"{min(margins):.3f}", f"{max(margins):.3f}") if margins else ("-", "-")
    return (f"{v.aligned_share:.2f} | {sum(ident) / max(len(ident), 1):.2f} | {low} | {high} | "
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
    audio = data.settings.audio
    head = f"| step | minutes | {COLUMNS} |" + (f" held-out: {COLUMNS} |" if held else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    ckpts = sorted((args.run / "checkpoints").glob("step-*.pt"))[args.every - 1::args.every]
    for path in ckpts:
        ck = load_checkpoint(path, map_location="cpu")
        cfg = Config.from_saved(ck["config"])
        model = Tacotron2(cfg.model, len(ck["data"]["symbols"]), audio.n_mels)
        model.load_state_dict(ck["model"])
        model.eval()
        listener = listener_for(cfg.alignment, data.language, GriffinLim(audio),
                                audio.sample_rate)
        line = f"| {ck['step']} | {ck['elapsed'] / 60:.1f} | " + row(judge_items(
            model, cfg, val, train, data.symbols, audio.frame_ms, listener)) + " |"
        if held:
            line += " " + row(judge_items(model, cfg, held, train, data.symbols, audio.frame_ms,
                                          listener)) + " |"
        print(line, flush=True)


if __name__ == "__main__":
    with _common.machine_report():
        main()
