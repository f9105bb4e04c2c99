"""``tacotrain demo``: the whole job on the built-in mini corpus, with a verdict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tacotrain.cli.common import EXIT_ERROR, EXIT_OK, RAW, VOCODER_CONFIG_HELP, VOCODER_HELP


def add_parser(sub: argparse._SubParsersAction) -> None:
    dp = sub.add_parser(
        "demo", formatter_class=RAW, help="the whole job on the built-in mini corpus",
        description="Build the mini corpus (English: a natural-sounding voice, Kokoro-82M "
                    "offline; Russian, or --set demo.engine=espeak: espeak-ng), prepare it, "
                    "train on this machine until train.stop_when_aligned_rounds (2) validation "
                    "rounds in a row pass the verdict (attention, content and, for natural "
                    "English, a speech recogniser's WER within alignment.max_wer_ratio (1.5) "
                    "of the WER it reaches on the same sentences' recordings through our mel "
                    "and vocoder) or demo.time_budget_minutes runs out, then evaluate that "
                    "checkpoint on its validation items and on held-out sentences that are not "
                    "in the corpus (natural English: 30 hand-written free-form sentences), and "
                    "write OUT/summary.json, OUT/eval/report.html and plots. Exit 0 only when "
                    "the checkpoint's validation round passes, demo.heldout_share (90%) of "
                    "the held-out sentences pass the verdict and, for natural English, the "
                    "held-out sentences are intelligible; otherwise exit 1 and say which "
                    "criterion failed.",
    )
    dp.add_argument("--out", type=Path, default=Path("demo"), help="output directory")
    dp.add_argument("--config", default=None,
                    help="preset or YAML (default: natural for the English Kokoro corpus, "
                         "small otherwise)")
    dp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set demo.time_budget_minutes=20")
    dp.add_argument("--lang", choices=["en", "ru"], default=None,
                    help="language of the mini corpus and held-out sentences (sets "
                         "demo.language; default en)")
    dp.add_argument("--engine", choices=["auto", "kokoro", "espeak"], default=None,
                    help="the corpus's voice (sets demo.engine; default auto: kokoro for "
                         "English, espeak for Russian)")
    dp.add_argument("--vocoder", default=None, help=VOCODER_HELP + " (for the evaluation)")
    dp.add_argument("--vocoder-config", type=Path, default=None, help=VOCODER_CONFIG_HELP)
    dp.add_argument("--quiet", action="store_true", help="no progress bars")
    dp.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from tacotrain.config import load_config
    from tacotrain.demo import describe_failure, run_demo

    lang = [f"demo.language={args.lang}"] if args.lang else []  # --lang wins over --set
    lang += [f"demo.engine={args.engine}"] if args.engine else []
    config = args.config
    if config is None:  # the natural preset for Kokoro's English, else the small one
        demo = load_config("small", args.set + lang).demo
        natural = demo.voice() == "kokoro" and demo.language == "en"
        config = "natural" if natural else "small"
    cfg = load_config(config, args.set + lang)
    s = run_demo(args.out, cfg, progress=not args.quiet, vocoder=args.vocoder,
                 vocoder_config=args.vocoder_config)
    _print_summary(s, args.out)
    if s["passed"]:
        print("passed: the voice reads its validation sentences and the held-out sentences")
        return EXIT_OK
    for line in describe_failure(s):
        print(f"not passed: {line}", file=sys.stderr)
    return EXIT_ERROR


def _print_summary(s: dict, out: Path) -> None:
    t, ck, held = s["training"], s["checkpoint"], s["heldout"]
    print(f"training: {t['steps']} steps, {t['wall_seconds'] / 60:.1f} min ({t['stop_reason']})")
    print(f"checkpoint {ck['path']} (step {ck['step']}): {ck['verdict']}")
    print(f"held-out sentences: {held['aligned_share']:.0%} of {held['sentences']} pass the "
          f"verdict ({held['sentences'] - held['items']} rejected by prepare) "
          f"(needed {held['required_share']:.0%}); identified {held['identified_share']:.0%}")
    heard = held.get("intelligibility")
    if heard and heard.get("tested"):
        print(f"held-out intelligibility: recogniser WER {heard['wer']:.3f}, resynthesis floor "
              f"{heard['floor_wer']:.3f} (x{heard['ratio']:.2f}, bound {heard['wer_bound']:.3f}): "
              f"{'intelligible' if heard['intelligible'] else 'NOT intelligible'}")
    elif heard:
        print(f"held-out intelligibility: untested ({heard['note']})")
    for smp in held["samples"]:
        status = "aligned" if smp["aligned"] else "not aligned: " + ", ".join(smp["reasons"])
        wer = f" WER {smp['wer']:.2f} (floor {smp['floor_wer']:.2f})" \
            if smp.get("wer") is not None and smp.get("floor_wer") is not None else ""
        print(f"  {smp['wav']}: {status}{wer} <- {smp['text']!r}")
    print(f"report: {out / s['report']['html']}; plots: "
          f"{out / s['plots']['training_curves']}, {out / s['plots']['free_run_mel']}")
    print(f"summary: {out / 'summary.json'}")
