"""Intelligibility along a training run: every checkpoint of RUN evaluated on held-out sentences
with recordings (e.g. the natural demo's free-form sentences), as a table.

    python benchmarks/natural_curve.py --run demo/runs/XXXX --data demo/data \
        --heldout demo/heldout/data [--every 2] [--json out.json]

Each checkpoint goes through exactly what `tacotrain eval` (and so the demo) computes on the
held-out source: free-running synthesis, Griffin-Lim, PocketSphinx; the round's WER (word errors
over reference words) beside the resynthesis floor (the recordings through our mel and the same
vocoder) and the raw recordings' WER, the share identified by the content test and the share
passing the item verdict. Minutes are the training wall time stored in the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import soundfile as sf

import tacotrain.infer.synth as synth_module
from tacotrain.audio import load_vocoder
from tacotrain.data.loader import PreparedData
from tacotrain.evaluate.run import prepared_items, run_eval
from tacotrain.infer.checkpoint import load_checkpoint
from tacotrain.judge.asr import transcribe
from tacotrain.judge.intelligibility import hear

import _common


def raw_wer(heldout: Path) -> float:
    """The recordings' own WER, straight from their wav files (no mel, no vocoder)."""
    data = PreparedData.load(heldout)
    report = json.loads((heldout / "report.json").read_text(encoding="utf-8"))
    corpus = Path(report["summary"]["corpus"]).parent
    errors = words = 0
    for row in data.items:
        wav, sr = sf.read(corpus / "wavs" / f"{row['id']}.wav", dtype="float32")
        h = hear(row["text"], transcribe(wav, sr))
        errors, words = errors + h.word_errors, words + h.words
    return errors / words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="run directory (checkpoints/)")
    ap.add_argument("--data", type=Path, required=True, help="the prepared training data")
    ap.add_argument("--heldout", type=Path, required=True, help="prepared held-out data")
    ap.add_argument("--every", type=int, default=1, help="every Nth checkpoint (and the last)")
    ap.add_argument("--steps", type=int, nargs="*", default=None,
                    help="only the checkpoints of these steps")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep each checkpoint's eval report (audio, mels) in KEEP/step-N")
    ap.add_argument("--griffin-lim-power", type=float, default=None,
                    help="Griffin-Lim's power instead of the one stored with the checkpoint's "
                         "data (runs prepared before its default changed)")
    args = ap.parse_args()
    if args.griffin_lim_power is not None:
        power = args.griffin_lim_power

        def vocoder_with_power(name, audio, *rest, **kw):
            return load_vocoder(name, audio.model_copy(update={"griffin_lim_power": power}),
                                *rest, **kw)

        synth_module.load_vocoder = vocoder_with_power

    ckpts = sorted((args.run / "checkpoints").glob("step-*.pt"))
    ckpts = [c for k, c in enumerate(ckpts) if k % args.every == 0 or c == ckpts[-1]]
    if args.steps:
        ckpts = [c for c in ckpts if int(c.stem.split("-")[1]) in args.steps]
    items = prepared_items(PreparedData.load(args.heldout), "heldout")
    raw = raw_wer(args.heldout)
    print(f"{len(items)} held-out sentences; the recordings' own WER (raw): {raw:.3f}")
    print("step | minutes | WER | floor WER | ratio | identified | item verdict passed")
    print("---|---|---|---|---|---|---")
    rows = []
    for ckpt in ckpts:
        meta = load_checkpoint(ckpt)
        with tempfile.TemporaryDirectory() as tmp:
            out = args.keep / ckpt.stem if args.keep else Path(tmp)
            report = run_eval(ckpt, args.data, out, heldout=items, include_validation=False,
                              progress=False)
        heard = report["summary"]["by_source"]["heldout"]["intelligibility"]
        held = [r for r in report["items"] if r["source"] == "heldout"]
        ident = sum(bool(r["identified"]) for r in held) / len(held)
        passed = sum(bool(r["aligned"]) for r in held) / len(held)
        minutes = float(meta.get("elapsed", 0.0)) / 60
        row = {"step": meta["step"], "minutes": round(minutes, 1), "raw_wer": round(raw, 4),
               "identified_share": round(ident, 4), "passed_share": round(passed, 4),
               **{k: heard.get(k) for k in ("wer", "floor_wer", "ratio", "intelligible")}}
        rows.append(row)
        wer = f"{heard['wer']:.3f} | {heard['floor_wer']:.3f} | {heard['ratio']:.2f}" \
            if heard["tested"] else "untested | | "
        print(f"{meta['step']} | {minutes:.1f} | {wer} | {ident:.2f} | {passed:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    with _common.machine_report():
        main()
