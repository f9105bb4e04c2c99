"""Fault injection for tests: ``TACOTRAIN_INJECT`` makes the real training loop misbehave.

Syntax (clauses joined by ``;``, steps by ``,``)::

    nan@12          loss non-finite at step 12
    nan@12,15       at steps 12 and 15
    spike@20-24     loss multiplied by 1e4 at steps 20..24
    nan@30+         non-finite from step 30 on, forever
    crash@40        an exception (InjectedCrash) at step 40
    nan@3:rank1     only in the process of rank 1 under torchrun (others train normally)

A "step" here is the trainer's *iteration*: the number of optimiser-step attempts of the run,
which never goes back (a guard rollback rewinds the training step, not the iteration). Before
any rollback the two are equal. A clause without ``:rankN`` acts in every process. Unset or
empty means no effect and no cost.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

ENV = "TACOTRAIN_INJECT"
KINDS = ("nan", "spike", "crash")
SPIKE_FACTOR = 1e4
_ITEM = re.compile(r"^(\d+)(?:-(\d+)|(\+))?$")
_RANK = re.compile(r"^rank(\d+)$")


class InjectError(ValueError):
    pass


class InjectedCrash(RuntimeError):
    """Raised by ``crash@N`` to simulate a crash inside the training loop."""


@dataclass(frozen=True)
class Span:
    start: int
    end: int | None  # inclusive; None = forever
    rank: int | None = None  # the only process it acts in (None: every process)

    def covers(self, step: int, rank: int) -> bool:
        return (step >= self.start and (self.end is None or step <= self.end)
                and self.rank in (None, rank))


@dataclass(frozen=True)
class Injector:
    spans: dict[str, tuple[Span, ...]]

    def active(self, kind: str, step: int, rank: int = 0) -> bool:
        """Whether ``kind`` acts at iteration ``step`` in the process of ``rank``."""
        return any(s.covers(step, rank) for s in self.spans.get(kind, ()))

    def __bool__(self) -> bool:
        return any(self.spans.values())


def parse(text: str) -> Injector:
    spans: dict[str, list[Span]] = {}
    for clause in filter(None, (c.strip() for c in text.split(";"))):
        kind, sep, rest = clause.partition("@")
        kind = kind.strip()
        if not sep or kind not in KINDS:
            raise InjectError(f"{ENV}: clause {clause!r} must look like KIND@STEPS with KIND one "
                              f"of {', '.join(KINDS)} (e.g. nan@12, spike@20-24, nan@30+)")
        rest, colon, selector = rest.partition(":")
        rank = None
        if colon:
            m = _RANK.match(selector.strip())
            if not m:
                raise InjectError(f"{ENV}: {selector!r} in {clause!r} must look like rankN "
                                  "(e.g. nan@3:rank1)")
            rank = int(m.group(1))
        for item in rest.split(","):
            m = _ITEM.match(item.strip())
            if not m:
                raise InjectError(f"{ENV}: {item!r} in {clause!r} is not N, N-M or N+")
            start = int(m.group(1))
            end = None if m.group(3) else int(m.group(2) or start)
            if end is not None and end < start:
                raise InjectError(f"{ENV}: empty range {item!r} in {clause!r}")
            spans.setdefault(kind, []).append(Span(start, end, rank))
    return Injector({k: tuple(v) for k, v in spans.items()})


def from_env(environ: dict[str, str] | None = None) -> Injector | None:
    """The injector described by ``TACOTRAIN_INJECT``, or None when unset (no cost)."""
    text = (environ if environ is not None else os.environ).get(ENV, "").strip()
    return parse(text) if text else None
