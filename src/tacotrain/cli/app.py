"""The top-level parser (one subcommand per module of this package) and ``main``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import import_module

from tacotrain.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, RAW

# the modules of this package that each add one command, in the order --help lists them
COMMANDS = ("prepare", "corpus", "train", "synth", "eval", "demo", "vocode", "export", "track",
            "tune", "monitor", "serve")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tacotrain", formatter_class=RAW,
        description="Train Tacotron 2 voices and keep the training honest.\n\n"
                    "Typical flow: corpus mini (or your own corpus) -> prepare -> train -> eval "
                    "-> synth.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        import_module(f"tacotrain.cli.{name}").add_parser(sub)
    return p


def _known_errors() -> tuple[type[Exception], ...]:
    """The library's errors that mean a clear message, not a traceback."""
    from tacotrain.audio import AudioReadError, HifiGanError, VocoderError
    from tacotrain.config import ConfigError
    from tacotrain.data.corpus import CorpusError
    from tacotrain.data.kokoro import KokoroError
    from tacotrain.data.loader import DataError
    from tacotrain.data.mini import MiniCorpusError
    from tacotrain.data.prepare import PrepareError
    from tacotrain.evaluate.run import EvalError
    from tacotrain.extras import MissingExtra
    from tacotrain.infer.checkpoint import CheckpointError
    from tacotrain.infer.device import DeviceError
    from tacotrain.infer.pretrained import PretrainedError
    from tacotrain.infer.synth import SynthesisError
    from tacotrain.serve.models import ServeError
    from tacotrain.train.ddp import DistError
    from tacotrain.train.trainer import TrainError

    return (ConfigError, CorpusError, PrepareError, MiniCorpusError, DataError, TrainError,
            DeviceError, CheckpointError, SynthesisError, EvalError, PretrainedError,
            AudioReadError, HifiGanError, VocoderError, ServeError, DistError, MissingExtra,
            KokoroError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    known = _known_errors()
    try:
        return args.func(args)
    except known as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
