"""The error a long computation raises when its caller has given up on it.

Decoding (``model``) and Griffin-Lim (``audio``) take a ``cancel`` callable and ask it at
every step; once it answers True they stop and raise :class:`Cancelled`. ``tacotrain serve``
passes one that a timed-out request sets, so the worker is free for the next request.
"""

from __future__ import annotations


class Cancelled(RuntimeError):
    def __init__(self, what: str, steps: int) -> None:
        super().__init__(f"{what} cancelled after {steps} steps")
        self.what = what  # what was stopped: "decoding", "Griffin-Lim", "synthesis"
        self.steps = steps  # its steps run before it stopped
