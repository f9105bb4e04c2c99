"""The top-level parser (one subcommand per module of this package) and ``main``, which turns
what a command raises into an exit code (see :mod:`tacotrain.cli`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import import_module

from tacotrain.cli.common import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    RAW,
    CommandFailed,
    UsageError,
)

# the modules of this package that each add one command, in the order --help lists them
COMMANDS = ("prepare", "corpus", "train", "synth", "eval", "demo", "vocode", "export", "track",
            "tune", "monitor", "serve")


def version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("tacotrain")
    except PackageNotFoundError:
        import tacotrain

        return str(getattr(tacotrain, "__version__", "unknown"))


class _VersionAction(argparse.Action):
    """``--version``: looks the version up only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"tacotrain {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tacotrain", formatter_class=RAW,
        description="Train Tacotron 2 voices and keep the training honest.\n\n"
                    "Typical flow: corpus mini (or your own corpus) -> prepare -> train -> eval "
                    "-> synth.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        import_module(f"tacotrain.cli.{name}").add_parser(sub)
    return p


def _usage_errors() -> tuple[type[Exception], ...]:
    """What means the command cannot run as asked: exit 2."""
    from tacotrain.config import ConfigError
    from tacotrain.extras import MissingExtra

    return (UsageError, ConfigError, MissingExtra)


def _run_errors() -> tuple[type[Exception], ...]:
    """The library's errors for a failure while running: a message (no traceback), exit 1."""
    from tacotrain.audio import AudioReadError, HifiGanError, VocoderError
    from tacotrain.data.corpus import CorpusError
    from tacotrain.data.kokoro import KokoroError
    from tacotrain.data.loader import DataError
    from tacotrain.data.mini import MiniCorpusError
    from tacotrain.data.prepare import PrepareError
    from tacotrain.evaluate.run import EvalError
    from tacotrain.infer.checkpoint import CheckpointError
    from tacotrain.infer.device import DeviceError
    from tacotrain.infer.pretrained import PretrainedError
    from tacotrain.infer.synth import SynthesisError
    from tacotrain.serve.models import ServeError
    from tacotrain.train.ddp import DistError
    from tacotrain.train.trainer import TrainError

    return (CommandFailed, CorpusError, PrepareError, MiniCorpusError, DataError, TrainError,
            DeviceError, CheckpointError, SynthesisError, EvalError, PretrainedError,
            AudioReadError, HifiGanError, VocoderError, ServeError, DistError, KokoroError)


def main(argv: list[str] | None = None) -> int:
    """Run ``tacotrain ARGV``; return the exit code. argparse's own errors (and ``--help``,
    ``--version``) raise SystemExit, as they always do."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    usage, failed = _usage_errors(), _run_errors()
    try:
        return args.func(args)
    except usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
