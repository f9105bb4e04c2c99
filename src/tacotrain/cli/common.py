"""What the command modules share: exit codes, help strings, the settings of ``--config``/
``--lang``/``--set``, and the signal handling of long runs. The exit codes are explained in
:mod:`tacotrain.cli` and at the end of ``tacotrain --help`` (:data:`EXIT_CODES_HELP`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_GUARD = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
EXIT_CODES_HELP = """\
exit codes:
  0    done (eval: whatever the verdict; prepare: whatever it rejected, unless --strict)
  1    a failure while running: a checkpoint, model, data, corpus or audio file that does not
       load or does not fit, or a verdict that failed where the command promises one
       (prepare --strict, demo)
  2    a usage error: an unknown command or flag, a missing or conflicting argument, an
       unknown or invalid setting (--set, --config, a tune search space), a missing extra
       (the message names its pip install)
  3    train only: stopped by the guard (divergence); resume from the last good checkpoint
  130  interrupted (Ctrl-C; SIGTERM too for train and tune); serve, monitor and tune
       dashboard, which run until stopped, exit 0 then"""
RAW = argparse.RawDescriptionHelpFormatter  # descriptions keep their line breaks

VOCODER_HELP = ("griffin_lim (default), or hifigan:PATH: a HiFi-GAN generator file in the "
                "jik876/hifi-gan format, its config.json beside it")
VOCODER_CONFIG_HELP = "the HiFi-GAN config.json, where it is not beside the generator file"
TRUST_HELP = ("allow the checkpoint to unpickle arbitrary Python objects, which can run code: "
              "only for files you trust; by default only tensors and plain values load")
DEVICE_HELP = "auto, cpu, cuda, cuda:N"


def add_voice_options(p: argparse.ArgumentParser, trust: bool = True) -> None:
    """--device, --vocoder, --vocoder-config and (``trust``) --trust-checkpoint: the options of
    every command that loads a voice to speak with."""
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--vocoder", default=None, help=VOCODER_HELP)
    p.add_argument("--vocoder-config", type=Path, default=None, help=VOCODER_CONFIG_HELP)
    if trust:
        p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
QUIET_HELP = "no progress bar"


class UsageError(Exception):
    """The command line cannot run as given (``main`` prints it and exits 2)."""


class CommandFailed(Exception):
    """A failure the command found itself while running (``main`` prints it and exits 1)."""


def settings_from(args: argparse.Namespace):
    """The data settings (audio, text, prepare) of ``--config``, ``--lang`` and ``--set``."""
    from tacotrain.config import Settings, build, load_yaml

    base = load_yaml(args.config) if args.config else {}
    source = str(args.config) if args.config else "defaults"
    if args.lang:
        args.set = [f"text.language={args.lang}", *args.set]
    return build(Settings, base, args.set, source)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill PID``) like Ctrl-C, so runs close cleanly (checkpoint, MLflow
    status KILLED, child processes stopped)."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_request_stop(request: Callable[[], None], say: bool) -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM calls ``request`` (the run stops after its current update and
    writes a checkpoint to resume from); another one more than a second later raises
    KeyboardInterrupt at once. torchrun passes a Ctrl-C on to its processes as SIGTERM, so the
    two that arrive together are one request."""
    first: list[float] = []

    def on_signal(signum: int, frame: object) -> None:
        now = time.monotonic()
        if not first:
            first.append(now)
            request()
            if say:  # os.write: safe inside a signal handler, unlike print or logging
                os.write(2, b"\nstop requested: stopping after this update and writing a "
                            b"checkpoint (signal again to stop at once)\n")
        elif now - first[0] > 1.0:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
