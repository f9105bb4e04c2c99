"""How well `tacotrain corpus build` cuts a long recording whose truth is known.

Joins the one-sentence clips of a corpus (LJSpeech layout: a mini corpus of either engine, or
any other) with pauses of drawn length and noise (data/joined.py), builds a corpus from it with
the text, and prints: clips kept, the share whose transcript equals the truth (clips between
two cuts at true pauses taken together: see data/joined.py ``score_clips``), cuts inside a
source clip and whether each is sound, the cut-point error against the true pauses (mean and
max, ms), the seconds accounted for, the time taken.
With --wrong CORPUS2 it also builds with CORPUS2's text and says whether the mismatch was
caught.

    python benchmarks/corpus_build.py CORPUS --lang en --clips 100 [--snr 20] [--noise pink]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from tacotrain.config import CorpusBuildConfig
from tacotrain.corpus_build.build import BuildError, Source, build
from tacotrain.data.joined import joined_recording, score_clips

import _common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--lang", default="en")
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--snr", type=float, default=25.0)
    ap.add_argument("--noise", choices=["white", "pink"], default="white")
    ap.add_argument("--pauses", default="0.3,1.5", help="shortest,longest pause (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wrong", type=Path, default=None, help="a corpus whose text is not this")
    args = ap.parse_args()
    lo, hi = (float(x) for x in args.pauses.split(","))
    rec = joined_recording(args.corpus, args.clips, args.lang, args.seed, args.snr, (lo, hi),
                           args.noise)
    cfg = CorpusBuildConfig()
    result: dict = {"corpus": str(args.corpus), "source_clips": len(rec.texts),
                    "seconds": round(len(rec.samples) / rec.sample_rate, 1),
                    "snr_db": args.snr, "noise": args.noise, "pauses": [lo, hi]}
    with tempfile.TemporaryDirectory() as tmp:
        wav, txt = Path(tmp) / "long.wav", Path(tmp) / "long.txt"
        sf.write(wav, rec.samples, rec.sample_rate, subtype="PCM_16")
        txt.write_text(" ".join(rec.texts), encoding="utf-8")
        t0 = time.perf_counter()
        report = build([Source(wav, txt)], Path(tmp) / "out", args.lang, cfg, progress=False)
        result["build_s"] = round(time.perf_counter() - t0, 1)
        clips = report["clips"]
        kept = [c for c in clips if c["status"] == "kept"]
        score = score_clips(rec, clips)
        cuts = score["cut_errors_ms"]
        s = report["summary"]["seconds"]
        result.update(
            clips=len(clips), kept=len(kept), exact_share=round(score["exact_share"], 4),
            inside_cuts=score["inside_cuts"], inside_cuts_sound=score["inside_cuts_sound"],
            kept_exact_share=round(float(np.mean([c["text"] == rec.text_between(
                c["cut_before"], c["cut_after"]) for c in kept])), 4),
            cut_error_ms_mean=round(float(np.mean(cuts)), 1),
            cut_error_ms_max=round(float(np.max(cuts)), 1),
            seconds_unaccounted=round(s["total"] - s["kept"] - s["review"] - s["rejected"]
                                      - s["silence"], 4),
            confidence_min=round(min(c["confidence"] for c in clips), 3))
        if args.wrong:
            other = joined_recording(args.wrong, args.clips, args.lang, args.seed + 1)
            txt.write_text(" ".join(other.texts), encoding="utf-8")
            try:
                build([Source(wav, txt)], Path(tmp) / "wrong", args.lang, cfg, progress=False)
                result["wrong_text"] = "NOT caught"
            except BuildError as exc:
                result["wrong_text"] = f"caught: {str(exc).rsplit(': ', 1)[-1]}"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    with _common.machine_report():
        main()
