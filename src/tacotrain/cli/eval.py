"""``tacotrain eval``: does the voice say the sentence? A report."""

from __future__ import annotations

import argparse
from pathlib import Path

from tacotrain.cli.common import (
    EXIT_OK,
    QUIET_HELP,
    RAW,
    add_voice_options,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    ep = sub.add_parser(
        "eval", formatter_class=RAW, help="does the voice say the sentence? a report",
        description="Free-run CKPT on every validation item of DATA (with ground truth), every "
                    "line of --sentences (no ground truth) and, with --robustness, a built-in "
                    "hard set in the corpus language (sentences 2x and 3x the longest training "
                    "text, repeated words, long numbers, comma lists, questions, capitals). "
                    "Each item gets the alignment verdict (the `alignment` section of the "
                    "checkpoint's config): stopped by the gate, length ratio within bounds, no "
                    "skipped, repeated or stalled tokens, attention focus and coverage, and, "
                    "with ground truth, MCD-DTW (dB) and the content test: nearer to its own "
                    "recording than to any of at least alignment.min_candidates others.\n"
                    "Writes OUT/report.json, OUT/report.html (one self-contained page: summary, "
                    "a sortable table, audio and alignment per item, failures with reasons), "
                    "OUT/wav/ and OUT/img/. English items also get ASR word/character error "
                    "rates when pocketsphinx is installed (pip install 'tacotrain[asr]'; weak "
                    "on espeak-ng voices). Exit 0 whatever the verdict; 1 when an input does "
                    "not load or does not fit (checkpoint, data, sentences).",
    )
    ep.add_argument("--checkpoint", type=Path, required=True, help="checkpoint (.pt)")
    ep.add_argument("--data", type=Path, required=True,
                    help="prepared data the checkpoint was trained on (validation split)")
    ep.add_argument("--sentences", type=Path, default=None,
                    help="text file, one sentence per line (no ground truth)")
    ep.add_argument("--heldout", type=Path, default=None,
                    help="prepared data (from `tacotrain prepare`) of other recorded sentences: "
                         "every item is judged against its ground truth (source 'heldout')")
    ep.add_argument("--robustness", action="store_true", help="add the built-in hard set")
    ep.add_argument("--out", type=Path, default=Path("eval"), help="report directory")
    add_voice_options(ep)
    ep.add_argument("--seed", type=int, default=0, help="seed for the prenet's dropout")
    ep.add_argument("--no-asr", action="store_true", help="skip ASR even where installed")
    ep.add_argument("--asr-model", type=Path, default=None, metavar="DIR",
                    help="listen through this Vosk model directory (any language Vosk has a "
                         "model for; the 'vosk' extra) instead of the checkpoint's "
                         "alignment.asr")
    ep.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    ep.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from tacotrain.data.loader import PreparedData
    from tacotrain.evaluate.run import EvalError, format_summary, prepared_items, run_eval

    heldout = None
    if args.heldout:
        held, data = PreparedData.load(args.heldout), PreparedData.load(args.data)
        if (held.language, held.symbols, held.settings.audio) != (
                data.language, data.symbols, data.settings.audio):
            raise EvalError(f"--heldout {args.heldout}: its language, symbol table "
                            f"(text.phonemes) or audio settings differ "
                            f"from {args.data}'s; prepare it with the same settings "
                            f"(DATA/settings.yaml) and language")
        heldout = prepared_items(held, "heldout")
    report = run_eval(args.checkpoint, args.data, args.out, sentences=args.sentences,
                      robustness=args.robustness, vocoder=args.vocoder,
                      vocoder_config=args.vocoder_config, device=args.device,
                      seed=args.seed, asr=not args.no_asr, progress=not args.quiet,
                      heldout=heldout, trust=args.trust_checkpoint, asr_model=args.asr_model)
    print(format_summary(report))
    print(f"report: {args.out / 'report.json'} and {args.out / 'report.html'}")
    return EXIT_OK
