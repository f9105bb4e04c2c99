"""One trial = one ``tacotrain train`` process, followed through its ``events.jsonl``.

A process per trial: a fresh process gets fresh memory (CPU and CUDA), its own RNG and threads,
and can be killed without harming the study; its crash is its own. The parent only reads what
every training writes anyway: ``RUN/events.jsonl`` (validation scalars, as they happen, for
pruning) and ``RUN/train_result.json`` (the validation history, at the end).

The process gets a session of its own (``start_new_session``), so stopping it (SIGTERM, then
SIGKILL) reaches its DataLoader workers too, and a Ctrl-C in the terminal reaches only the tuner,
which then stops the trial cleanly: the trainer treats SIGTERM like Ctrl-C (checkpoint, MLflow
run closed, exit 130).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tacotrain import metrics as M
from tacotrain.infer.checkpoint import remove_checkpoint, step_checkpoints
from tacotrain.track.jsonl_sink import EVENTS_FILE
from tacotrain.track.monitor import stop_process

log = logging.getLogger(__name__)

EXIT_GUARD = 3  # tacotrain train: stopped by the guard (cli.common.EXIT_GUARD; not imported)
RESULT_FILE = "train_result.json"
STOP_SECONDS = 30.0  # SIGTERM -> SIGKILL when a trial does not stop


@dataclass
class TrialRun:
    """What happened to one training process."""

    status: str  # finished | guard | pruned | crashed | killed | timeout
    returncode: int | None
    reason: str = ""  # why, for anything but finished (ends up in the trial's user attrs)
    validations: list[dict[str, Any]] = field(default_factory=list)  # from events.jsonl
    result: dict[str, Any] | None = None  # train_result.json, when written
    seconds: float = 0.0


class EventFollower:
    """Reads the complete lines appended to ``RUN/events.jsonl`` since the last call."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / EVENTS_FILE
        self.offset = 0
        self.start_time: float | None = None

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in data[: end + 1].splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: skipped, as iter_events
                continue
            if self.start_time is None and "time" in ev:
                self.start_time = float(ev["time"])
            events.append(ev)
        return events


def validation_rows(events: list[dict[str, Any]], metric: str, start_time: float | None,
                    items: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Validation scalars as history rows (``step``, ``minutes``, values, ``items``).

    A validation is the scalars event that carries ``metric`` (training logs carry ``train/*``).
    ``minutes``: the training minutes the trainer recorded with the round (``train/minutes``),
    else the time since the first event. ``items`` collects the per-item figures (an ``items``
    event, written just before its round's scalars, perhaps in an earlier poll): a row takes
    those of its step.
    """
    items = {} if items is None else items
    rows = []
    for ev in events:
        values = ev.get("values") or {}
        if ev.get("kind") == "items":
            items[int(ev.get("step", 0))] = values
            continue
        if ev.get("kind") != "scalars" or metric not in values:
            continue
        step = int(ev.get("step", 0))
        row: dict[str, Any] = {"step": step, **values}
        minutes = values.get(M.TRAIN_MINUTES)
        if minutes is not None:
            row["minutes"] = round(float(minutes), 3)
        elif start_time is not None and "time" in ev:
            row["minutes"] = round((float(ev["time"]) - start_time) / 60, 2)
        if step in items:
            row["items"] = items.pop(step)
        rows.append(row)
    return rows


def describe_exit(code: int, log_path: Path) -> str:
    """A one-line reason for a non-zero exit: the signal, or the log's last meaningful line."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (exit {code})"
    tail = ""
    try:
        lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8",
                                                         errors="replace").splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("^")]
        errors = [ln for ln in lines if ln.startswith("error:")]
        tail = (errors or lines or [""])[-1]
    except OSError:
        pass
    return f"exit code {code}: {tail[:500]}" if tail else f"exit code {code}"


def run_training(cmd: list[str], run_dir: Path, log_path: Path, metric: str,
                 on_validation: Callable[[dict[str, Any]], bool],
                 env: dict[str, str] | None = None, hard_timeout: float | None = None,
                 poll_seconds: float = 0.5,
                 on_start: Callable[[int], None] | None = None) -> TrialRun:
    """Run ``cmd`` (a ``tacotrain train`` command writing to ``run_dir``) to its end.

    ``on_validation(row)`` is called for each validation as it appears in events.jsonl; when it
    returns True the process is stopped (SIGTERM) and the run is ``pruned``. ``hard_timeout``
    (seconds of wall time) stops it as ``timeout``. ``on_start(pid)`` is told the process id.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    follower = EventFollower(run_dir)
    validations: list[dict[str, Any]] = []
    items: dict[int, dict[str, Any]] = {}  # per-item figures waiting for their round's scalars
    t0 = time.monotonic()
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.info("trial process %d started: %s", proc.pid, run_dir)
    status: str | None = None
    reason = ""
    try:
        if on_start is not None:
            on_start(proc.pid)
        while True:
            code = proc.poll()
            rows = validation_rows(follower.poll(), metric, follower.start_time, items)
            for row in rows:
                validations.append(row)
                prune = on_validation(row)
                if prune and code is None:
                    status, reason = "pruned", f"pruned at step {row['step']}"
                    break
            if status is not None or code is not None:
                break
            if hard_timeout is not None and time.monotonic() - t0 > hard_timeout:
                status = "timeout"
                reason = f"exceeded its time budget of {hard_timeout / 60:.1f} min; stopped"
                break
            time.sleep(poll_seconds)
        if proc.poll() is None:
            stop_process(proc, STOP_SECONDS)
    except BaseException:  # Ctrl-C or an error in the tuner: never leave the trial running
        stop_process(proc, STOP_SECONDS)
        raise
    code = proc.returncode
    result = _read_json(run_dir / RESULT_FILE)
    if status is None:
        if code == 0:
            status = "finished" if result is not None else "crashed"
            reason = "" if result is not None else f"exit code 0 but no {RESULT_FILE}"
        elif code == EXIT_GUARD:
            status, reason = "guard", describe_exit(code, log_path)
        elif code < 0:
            status, reason = "killed", describe_exit(code, log_path)
        else:
            status, reason = "crashed", describe_exit(code, log_path)
    seconds = time.monotonic() - t0
    log.info("trial process %d: %s (exit %s) after %.1f s%s", proc.pid, status, code, seconds,
             f": {reason}" if reason else "")
    return TrialRun(status, code, reason, validations, result, seconds)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def keep_best_checkpoint(run_dir: Path) -> list[Path]:
    """Delete every checkpoint of a finished trial but ``best.pt`` (or, without one, the newest).

    A study runs many trials; full-size checkpoints with optimiser state are hundreds of MB each.
    Returns the deleted files.
    """
    ckpts = run_dir / "checkpoints"
    if not ckpts.is_dir():
        return []
    steps = [p for _, p in step_checkpoints(ckpts)]
    keep = ckpts / "best.pt" if (ckpts / "best.pt").exists() else (steps[-1] if steps else None)
    removed = []
    for p in steps:
        if p != keep:
            remove_checkpoint(p)
            removed.append(p)
    return removed


