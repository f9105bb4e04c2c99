"""``tacotrain prepare``: validate a corpus, normalise text, cache mels, split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tacotrain.cli.common import EXIT_ERROR, EXIT_OK, QUIET_HELP, RAW, settings_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser(
        "prepare", formatter_class=RAW,
        help="validate a corpus, normalise text, cache mels, split, write report.json",
        description="Validate every clip and transcript of CORPUS, normalise the text, extract "
                    "and cache log-mels, write a deterministic train/validation split and "
                    "DATA/report.json (kept items, rejected items with reason codes, summary).\n"
                    "Bad items never stop the run (exit 0) unless --strict is given.\n"
                    "Re-running with the same settings reuses the cached mels.",
    )
    sp.add_argument("corpus", type=Path,
                    help="corpus directory or metadata file (LJSpeech metadata.csv, "
                         "RUSLAN metadata_RUSLAN_22200.csv, or a path|text filelist)")
    sp.add_argument("--out", type=Path, required=True, help="output data directory (DATA)")
    sp.add_argument("--format", default="auto", choices=["auto", "ljspeech", "ruslan", "filelist"],
                    help="corpus format (default: detected)")
    sp.add_argument("--lang", choices=["auto", "en", "ru"], default=None,
                    help="text language (default: text.language from config, auto = detected "
                         "from the script of the transcripts)")
    sp.add_argument("--config", type=Path, default=None,
                    help="YAML with audio/text/prepare sections (default: built-in defaults)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set prepare.max_seconds=10 (repeatable)")
    sp.add_argument("--workers", type=int, default=None,
                    help="parallel mel extraction processes (default: CPU count)")
    sp.add_argument("--strict", action="store_true", help="exit 1 if any item is rejected")
    sp.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    sp.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from tacotrain.data.prepare import format_summary, prepare

    settings = settings_from(args)
    result = prepare(args.corpus, args.out, settings, fmt=args.format, workers=args.workers,
                     progress=not args.quiet)
    print(format_summary(result.report))
    print(f"report: {Path(args.out) / 'report.json'}")
    if args.strict and result.rejected:
        print(f"--strict: {result.rejected} item(s) rejected", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
