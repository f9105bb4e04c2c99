"""The one entry point: ``tacotrain COMMAND ...``. ``tacotrain COMMAND --help`` explains each.

One module per command, its parser (``add_parser``) beside its handler (``cmd_*``);
:mod:`tacotrain.cli.common` holds what they share, :mod:`tacotrain.cli.app` the top-level
parser and :func:`main`.
"""

from tacotrain.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
