"""``tacotrain corpus mini``: write the built-in mini corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from tacotrain.cli.common import EXIT_OK, QUIET_HELP, RAW


def add_parser(sub: argparse._SubParsersAction) -> None:
    cp = sub.add_parser("corpus", help="built-in corpora (the mini corpus)",
                        description="Built-in corpora.")
    csub = cp.add_subparsers(dest="corpus_command", metavar="KIND", required=True)
    mp = csub.add_parser(
        "mini", formatter_class=RAW, help="write the mini corpus (LJSpeech format)",
        description="Write an LJSpeech-format corpus (wavs/*.wav 22050 Hz mono 16-bit, "
                    "metadata.csv id|text|normalized, corpus.json) from a deterministic "
                    "sentence generator: varied lengths (about 1-8 s), numbers, abbreviations, "
                    "questions, punctuation. --engine kokoro: a natural-sounding neural voice "
                    "(Kokoro-82M, offline, the 'natural' extra); in English it reads varied "
                    "sentences from a lexicon of several hundred words and prints what the "
                    "texts cover, in Russian the espeak-ng corpus's sentences with an accent "
                    "(not measured by a recogniser: none ships for Russian). --engine "
                    "espeak: espeak-ng's robotic voice (English or Russian), fast, for tests. "
                    "Same seed and engine, same corpus.",
    )
    mp.add_argument("--lang", choices=["en", "ru"], default="en", help="language (default en)")
    mp.add_argument("--engine", choices=["kokoro", "espeak"], default="espeak",
                    help="the voice: kokoro (natural) or espeak (default espeak)")
    mp.add_argument("--style", default="jm_kumo",
                    help="Kokoro voice style (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, "
                         "jm_kumo; default jm_kumo, the one the recogniser reads best)")
    mp.add_argument("--speed", type=float, default=1.0, help="Kokoro speaking rate (0.5-2)")
    mp.add_argument("--size", type=int, default=200, help="number of clips (default 200)")
    mp.add_argument("--seed", type=int, default=0, help="sentence generator seed (default 0)")
    mp.add_argument("--out", type=Path, required=True, help="output corpus directory")
    mp.add_argument("--workers", type=int, default=2,
                    help="parallel speakers: espeak-ng processes or one-thread Kokoro sessions")
    mp.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    mp.set_defaults(func=cmd_corpus_mini)


def cmd_corpus_mini(args: argparse.Namespace) -> int:
    from tacotrain.data.mini import corpus_info, make_mini_corpus

    meta = make_mini_corpus(args.out, args.lang, args.size, args.seed, workers=args.workers,
                            progress=not args.quiet, engine=args.engine, style=args.style,
                            speed=args.speed)
    print(f"mini corpus: {args.size} clips ({args.lang}, {args.engine}) in {meta.parent}")
    cover = corpus_info(meta.parent).get("coverage")
    if cover:
        print(f"covers {cover['words']} distinct words, {cover['phones_seen']} of "
              f"{cover['phones_total']} phones, {cover['phone_pairs']} phone pairs within words"
              + (f"; phones never heard: {' '.join(cover['phones_missing'])}"
                 if cover["phones_missing"] else ""))
    return EXIT_OK
