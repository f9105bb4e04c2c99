"""``tacotrain corpus mini``: write the built-in mini corpus; ``tacotrain corpus build``: cut long
recordings into a corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from tacotrain.cli.common import EXIT_OK, QUIET_HELP, RAW, CommandFailed, UsageError

BUILD_HELP = """\
Turn long recordings (an audiobook chapter, a podcast, an hour read into a microphone) into an
LJSpeech corpus that `tacotrain prepare` reads, and say how sure it is of every clip.

Two modes:
  with text (--text FILE, one per AUDIO, in order; English or Russian): espeak-ng reads the
    text sentence by sentence, dynamic time warping maps its sentence ends onto the recording,
    and each moves to the nearest fitting pause; each clip's transcript is the exact passage of
    the given text it speaks. Clips whose audio and text disagree are rejected with a reason;
    when most of a recording's clips disagree (a wrong text, another chapter) the build stops:
    "text does not match audio", and no corpus is written. A text far too long or short for
    the audio stops it at once.
  without text (English): clips cut at pauses are read by a recogniser, each with its
    confidence: PocketSphinx (offline, the asr extra) by default, or --recogniser vosk|whisper
    --model DIR (a local Vosk or faster-whisper model directory). Clips below --min-confidence
    are set aside in review/ for a person to check, never silently kept.

Clips are cut in the middle of pauses (at least --min-pause s of non-speech; the threshold
follows the recording's noise floor), kept between --min-clip and --max-clip s; a longer
pause-free stretch is split at its weakest pause.

OUT gets wavs/ (kept clips, 22050 Hz mono 16-bit), metadata.csv (id|text|normalized),
review/ (clips set aside or rejected), index.html (listen to every clip beside its
transcript, doubtful ones first) and build-report.json (every clip's times, cut points,
confidence and fate; every second of the input accounted for: kept, review, rejected with a
reason, or silence dropped). metadata.csv and build-report.json are written last: an
interrupted run never looks complete, and a re-run reuses the work cached in OUT/.cache.

Then: tacotrain prepare OUT --out DATA"""


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

    bp = csub.add_parser("build", formatter_class=RAW, description=BUILD_HELP,
                         help="long recordings (with or without their text) -> a corpus")
    bp.add_argument("audio", type=Path, nargs="+", metavar="AUDIO",
                    help="long recordings (any format libsndfile reads: wav, flac, ogg)")
    bp.add_argument("--text", type=Path, action="append", default=[], metavar="FILE",
                    help="the text each AUDIO reads (UTF-8), one --text per AUDIO in order; "
                         "leave out to transcribe with a recogniser")
    bp.add_argument("--lang", choices=["en", "ru"], default="en",
                    help="language of the text (default en; without text: en only)")
    bp.add_argument("--out", type=Path, required=True, help="output corpus directory")
    bp.add_argument("--min-clip", type=float, default=None, help="shortest clip, s (default 1)")
    bp.add_argument("--max-clip", type=float, default=None,
                    help="longest clip, s (default 11; prepare rejects clips over 12 s)")
    bp.add_argument("--min-pause", type=float, default=None,
                    help="shortest non-speech run that counts as a pause, s (default 0.25)")
    bp.add_argument("--min-confidence", type=float, default=None,
                    help="clips below are rejected (text) or set aside (no text); default 0.5")
    bp.add_argument("--recogniser", choices=["pocketsphinx", "vosk", "whisper"],
                    default="pocketsphinx", help="without text: who reads the clips")
    bp.add_argument("--model", type=Path, default=None,
                    help="the local model directory of --recogniser vosk or whisper")
    bp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any corpus-build setting, e.g. --set speech_margin_db=10 (repeatable)")
    bp.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    bp.set_defaults(func=cmd_corpus_build)


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


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from tacotrain.config import CorpusBuildConfig, build
    from tacotrain.corpus_build.build import BuildError, Source
    from tacotrain.corpus_build.build import build as build_corpus
    from tacotrain.corpus_build.report import format_summary
    from tacotrain.corpus_build.transcribe import RecogniserError, recogniser

    flags = {"min_clip": args.min_clip, "max_clip": args.max_clip, "min_pause": args.min_pause,
             "min_confidence": args.min_confidence}
    sets = [f"{k}={v}" for k, v in flags.items() if v is not None] + args.set
    cfg = build(CorpusBuildConfig, {}, sets, "corpus build")
    if args.text and len(args.text) != len(args.audio):
        raise UsageError(f"{len(args.text)} --text for {len(args.audio)} AUDIO: give one "
                         "--text per AUDIO, in the same order, or none")
    hear = None
    if not args.text:
        if args.lang != "en":
            raise UsageError("without --text only English can be transcribed; give the text")
        try:
            hear = recogniser(args.recogniser, args.model)
        except RecogniserError as exc:
            raise UsageError(str(exc)) from exc
    texts = args.text or [None] * len(args.audio)
    sources = [Source(a, t) for a, t in zip(args.audio, texts, strict=True)]
    reader = args.recogniser + (f":{args.model.resolve()}" if args.model else "")
    try:
        report = build_corpus(sources, args.out, args.lang, cfg, hear=hear, reader=reader,
                              progress=not args.quiet)
    except BuildError as exc:
        raise CommandFailed(str(exc)) from exc
    print(format_summary(report))
    print(f"corpus: {args.out / 'metadata.csv'}; listen: {args.out / 'index.html'}; "
          f"report: {args.out / 'build-report.json'}")
    return EXIT_OK
