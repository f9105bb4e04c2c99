"""The recogniser's floor on prepared data: each item's recording -> our mel -> Griffin-Lim ->
PocketSphinx, pooled WER (word errors over reference words), for several Griffin-Lim powers,
beside the recordings' own WER.

    python benchmarks/asr_floor.py --data DATA [--split val] [--items 12] [--powers 1.0 1.5]

This is the floor that the verdict's intelligibility check compares a voice with
(tacotrain/judge/intelligibility.py), so the vocoder setting that lets the recogniser read the
recordings best is the one that lets it judge voices at all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from tacotrain.audio import GriffinLim
from tacotrain.data.loader import PreparedData
from tacotrain.judge.asr import transcribe
from tacotrain.judge.intelligibility import Listener, hear

import _common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="prepared data directory")
    ap.add_argument("--split", default="val", choices=["train", "val", "all"])
    ap.add_argument("--items", type=int, default=12, help="the first N items of the split")
    ap.add_argument("--powers", type=float, nargs="+", default=[0.8, 1.0, 1.2, 1.5, 2.0])
    ap.add_argument("--iters", type=int, default=None, help="Griffin-Lim iterations")
    args = ap.parse_args()

    data = PreparedData.load(args.data)
    rows = (data.items if args.split == "all" else data.split(args.split))[: args.items]
    report = json.loads((args.data / "report.json").read_text(encoding="utf-8"))
    corpus = Path(report["summary"]["corpus"]).parent
    errors = words = 0
    for r in rows:
        wav, sr = sf.read(corpus / "wavs" / f"{r['id']}.wav", dtype="float32")
        h = hear(r["text"], transcribe(wav, sr))
        errors, words = errors + h.word_errors, words + h.words
    print(f"{len(rows)} items, {words} words; the recordings' own WER: {errors / words:.3f}")
    print("griffin_lim_power | iterations | floor WER")
    for power in args.powers:
        update = {"griffin_lim_power": power}
        if args.iters:
            update["griffin_lim_iters"] = args.iters
        audio = data.settings.audio.model_copy(update=update)
        listener = Listener(GriffinLim(audio), audio.sample_rate)
        errors = 0
        for r in rows:
            mel = torch.from_numpy(np.load(data.root / r["mel"], allow_pickle=False))
            errors += listener.hear_mel(mel, r["text"]).word_errors
        print(f"{power} | {audio.griffin_lim_iters} | {errors / words:.3f}", flush=True)


if __name__ == "__main__":
    with _common.machine_report():
        main()
