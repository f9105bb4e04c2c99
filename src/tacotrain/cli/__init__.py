"""The one entry point: ``tacotrain COMMAND ...``. ``tacotrain COMMAND --help`` explains each.

One module per command, its parser (``add_parser``) beside its handler (``cmd_*``);
:mod:`tacotrain.cli.common` holds what they share, :mod:`tacotrain.cli.app` the top-level
parser and :func:`main`. ``tacotrain --version`` prints ``tacotrain VERSION``.

Exit codes (also at the end of ``tacotrain --help``):

* 0: done. ``eval`` exits 0 whatever its verdict (it is a report), ``prepare`` whatever it
  rejected unless ``--strict``.
* 1: a failure while running: a checkpoint, exported model, data, corpus or audio file that
  does not load or does not fit, or a verdict that failed where the command promises one
  (``prepare --strict``, ``demo``). The library's errors for these (CheckpointError,
  AudioReadError, DataError, ...) print ``error: MESSAGE``, no traceback; an unexpected
  exception keeps its traceback (Python exits 1 too).
* 2: a usage error: argparse's (an unknown command or flag, a missing argument, a bad
  choice), conflicting or missing arguments the command checks itself (UsageError), an
  unknown or invalid setting (ConfigError: ``--set``, ``--config``; a tune search space), and
  a missing optional extra (MissingExtra: its message names the ``pip install``).
* 3: ``train`` only: stopped by the guard (divergence); ``tacotrain tune`` tells these trials
  from crashes by it.
* 130: interrupted (Ctrl-C; SIGTERM too for ``train`` and ``tune``). ``serve``, ``monitor``
  and ``tune dashboard`` run until stopped and exit 0 then.
"""

from tacotrain.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
