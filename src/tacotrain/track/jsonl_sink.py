"""``RUN/events.jsonl``: the durable record of a run, one JSON object per line.

It is always written, before any other sink sees an event, because everything else can be
rebuilt from it: plots and reports read it, and ``tacotrain track sync`` replays the lines an
unreachable MLflow server missed. A line's 0-based position (its *index*) identifies an event;
the MLflow sink records how many lines it has delivered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"


class JsonlSink:
    """Appends events to ``RUN/events.jsonl`` and hands out their line indices."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / EVENTS_FILE
        data = self.path.read_bytes() if self.path.exists() else b""
        self.lines = data.count(b"\n")
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if data and not data.endswith(b"\n"):
            # a process killed mid-write left half a line: end it, so that the next event starts
            # on a line of its own (readers skip the broken one)
            self._fh.write("\n")
            self._fh.flush()
            self.lines += 1

    def write(self, event: dict[str, Any]) -> int:
        """Append ``event`` (flushed at once, so a crash loses nothing) and return its index."""
        self._fh.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()
        self.lines += 1
        return self.lines - 1

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def iter_events(run_dir: str | Path, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index, event)`` for every readable line from ``start`` on; broken lines are skipped."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if index < start or not line.strip():
                continue
            try:
                yield index, json.loads(line)
            except json.JSONDecodeError:
                log.debug("%s: line %d is not JSON (a write cut short?); skipped", path, index + 1)


def read_events(run_dir: str | Path, kind: str | None = "scalars") -> list[dict[str, Any]]:
    """The events of one ``kind`` (scalars, image, audio, text, params; None: all)."""
    return [ev for _, ev in iter_events(run_dir) if kind is None or ev.get("kind") == kind]
