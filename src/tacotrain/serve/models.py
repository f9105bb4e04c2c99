"""What ``tacotrain serve`` can speak with: the checkpoint listing, and loaded models behind
bounded per-model worker queues kept in an LRU cache.

Security rule of the listing: a checkpoint id that arrives in a request is only ever *looked
up* among the ids of :meth:`Catalog.entries`, which come from scanning the directory the
server was started on; a request's string is never joined onto a path or opened. Files whose
real path (symlinks followed) lies outside that directory are not listed at all. Listing
never loads a checkpoint: it reads each one's JSON summary sidecar and 72-byte header
(:func:`tacotrain.infer.checkpoint.read_summary`), so nothing is unpickled until a
checkpoint is chosen for synthesis, even with ``--trust-checkpoint``. A checkpoint without a
valid sidecar (written before them) is listed by name, "no metadata", and still loads.

Synthesis runs in worker threads (``serve.concurrent_per_model`` per model), never on the web
server's event loop, so the API keeps answering while a long sentence is synthesised.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from tacotrain.cancel import Cancelled
from tacotrain.config import ServeConfig
from tacotrain.infer.checkpoint import MAGIC, read_summary, sidecar_path, step_checkpoints
from tacotrain.infer.pretrained import PretrainedError, load_pretrained
from tacotrain.infer.synth import Synthesizer

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServeError(ValueError):
    """A bad ``tacotrain serve`` argument (missing directory, busy port, unusable device)."""


class QueueFull(RuntimeError):
    """The model's queue holds ``serve.queue_size`` waiting requests already."""


class ModelLoadError(RuntimeError):
    """A listed checkpoint could not be turned into a :class:`Synthesizer`; names it."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One listed checkpoint (or exported model) and what the page shows about it."""

    id: str  # what requests name it by: its path relative to the served directory
    path: Path  # never sent to the page
    kind: Literal["checkpoint", "export"]
    run: str  # the run directory's name ("" for a single --checkpoint / --model)
    name: str  # file (or export directory) name
    version: tuple[int, int]  # (mtime_ns, size): a rewritten best.pt is another model
    written: float  # modification time, seconds since the epoch
    step: int | None = None
    elapsed_seconds: float | None = None  # training time when it was written
    language: str | None = None
    phonemes: bool | None = None
    aligned: bool | None = None  # the free-running validation verdict stored in it
    verdict: str = ""
    error: str | None = None  # why it cannot be read (then it cannot be chosen)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "run": self.run, "name": self.name,
                "step": self.step, "written": self.written,
                "elapsed_seconds": self.elapsed_seconds, "language": self.language,
                "phonemes": self.phonemes, "aligned": self.aligned, "verdict": self.verdict,
                "error": self.error}


NO_METADATA = "no metadata (no summary sidecar: written by an older tacotrain)"


def _version(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _sidecar_version(path: Path) -> tuple[int, int] | None:
    try:
        return _version(sidecar_path(path))
    except OSError:
        return None


def read_info(cid: str, path: Path, run: str, kind: Literal["checkpoint", "export"],
              hide: Callable[[str], str] = str) -> CheckpointInfo:
    """The step, verdict, language... of a checkpoint (from its sidecar: see the module
    docstring) or of an export (its config.json); a file that cannot be used is listed with
    its error instead, in which ``hide`` replaces the served directory's path."""
    version = _version(path if kind == "checkpoint" else path / "config.json")
    base = {"id": cid, "path": path, "kind": kind, "run": run, "name": path.name,
            "version": version, "written": version[0] / 1e9}
    if kind == "export":
        try:
            pre = load_pretrained(path)
        except PretrainedError as exc:
            return CheckpointInfo(**base, error=hide(str(exc)))
        return CheckpointInfo(**base, language=pre.language, phonemes=pre.phonemes,
                              verdict="exported model")
    summary = read_summary(path)
    if summary is None:
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                return CheckpointInfo(**base, error="not a tacotrain checkpoint (bad header)")
        return CheckpointInfo(**base, verdict=NO_METADATA)
    return CheckpointInfo(
        **base, step=summary.step, elapsed_seconds=summary.elapsed, language=summary.language,
        phonemes=summary.phonemes, aligned=summary.aligned, verdict=summary.verdict)


class Catalog:
    """The checkpoints the server may use: every run's ``best.pt`` and ``step-N.pt`` under
    ``runs`` (``RUNS/*/checkpoints/`` and ``RUNS/checkpoints/``), re-scanned on every call so
    that checkpoints written by a training still running appear; or one ``checkpoint`` file;
    or one exported ``model`` directory. Each file is described once per version of it and of
    its sidecar (cached)."""

    def __init__(self, *, runs: Path | None = None, checkpoint: Path | None = None,
                 model: Path | None = None) -> None:
        given = [(k, Path(v)) for k, v in (("runs", runs), ("checkpoint", checkpoint),
                                           ("model", model)) if v is not None]
        if len(given) != 1:
            raise ServeError("give exactly one of --checkpoint, --model or --runs")
        self.source, self.root = given[0]
        expected = {"runs": Path.is_dir, "checkpoint": Path.is_file, "model": Path.is_dir}
        if not expected[self.source](self.root):
            kind = "a file" if self.source == "checkpoint" else "a directory"
            raise ServeError(f"--{self.source} {self.root}: not found or not {kind}")
        self._cache: dict[tuple[str, tuple[int, int], tuple[int, int] | None],
                          CheckpointInfo] = {}
        self._lock = threading.Lock()

    def _files(self) -> list[tuple[str, str, Path]]:
        """(id, run name, path) of every listed file, newest run first, best.pt first."""
        if self.source != "runs":
            return [(self.root.name, "", self.root)]
        real_root = self.root.resolve()
        runs = sorted((p for p in self.root.iterdir() if p.is_dir()), reverse=True)
        out = []
        for run in [self.root, *runs]:
            folder = run / "checkpoints"
            if not folder.is_dir():
                continue
            files = [folder / "best.pt"] if (folder / "best.pt").is_file() else []
            files += [p for _, p in reversed(step_checkpoints(folder))]
            for f in files:
                # a symlink (of the file or of a folder above it) leading outside: not listed
                if f.is_file() and f.resolve().is_relative_to(real_root):
                    rel = f.relative_to(self.root).as_posix()
                    out.append((rel, run.name if run != self.root else self.root.name, f))
        return out

    def entries(self) -> list[CheckpointInfo]:
        kind: Literal["checkpoint", "export"] = "export" if self.source == "model" else (
            "checkpoint")
        out = []
        seen = set()
        for cid, run, path in self._files():
            try:
                key = (cid, _version(path if kind == "checkpoint" else path / "config.json"),
                       _sidecar_version(path) if kind == "checkpoint" else None)
                with self._lock:
                    info = self._cache.get(key)
                if info is None:
                    info = read_info(cid, path, run, kind, self.hide)
                    with self._lock:
                        self._cache[key] = info
            except OSError:  # removed since the scan (pruned by a training) or unreadable
                continue
            out.append(info)
            seen.add(key)
        with self._lock:  # forget versions no longer on disk
            self._cache = {k: v for k, v in self._cache.items() if k in seen}
        return out

    def hide(self, text: str) -> str:
        """``text`` with the served directory's path taken out, so that no answer reveals where
        on the machine it is: a file under it becomes its id, the directory its name."""
        for root in dict.fromkeys((str(self.root.resolve()), str(self.root.absolute()),
                                   str(self.root))):
            if self.source == "runs":
                text = text.replace(root + "/", "")
            text = text.replace(root, self.root.name)
        return text

    def find(self, cid: str, entries: list[CheckpointInfo] | None = None
             ) -> CheckpointInfo | None:
        """The listed entry whose id is ``cid``, else None. ``cid`` is compared, never opened."""
        for e in entries if entries is not None else self.entries():
            if e.id == cid:
                return e
        return None

    @staticmethod
    def default(entries: list[CheckpointInfo]) -> CheckpointInfo | None:
        """The newest readable ``best.pt`` (the best aligned round), else the newest file."""
        usable = [e for e in entries if e.error is None]
        best = [e for e in usable if e.name == "best.pt"]
        pool = best or usable
        return max(pool, key=lambda e: e.written) if pool else None


def checkpoint_loader(device: str, vocoder: str | None, vocoder_config: Path | None,
                      trust: bool) -> Callable[[CheckpointInfo], Synthesizer]:
    """How the cache builds a :class:`Synthesizer` for an entry (the CLI's options bound)."""

    def load(entry: CheckpointInfo) -> Synthesizer:
        if entry.kind == "export":
            return Synthesizer.from_pretrained(entry.path, device=device, vocoder=vocoder,
                                               vocoder_config=vocoder_config)
        return Synthesizer.from_checkpoint(entry.path, device=device, vocoder=vocoder,
                                           vocoder_config=vocoder_config, trust=trust)

    return load


class ModelWorker:
    """One model, loaded on first use in its own thread, and ``threads`` threads running its
    jobs. At most ``threads + queue_size`` jobs are accepted at a time (running + waiting);
    one more raises :class:`QueueFull`. A job whose future was cancelled while waiting (the
    request timed out) is dropped unrun; a running job the request gave up on stops itself
    (:class:`~tacotrain.cancel.Cancelled`, counted in ``status()["cancelled"]``)."""

    def __init__(self, entry: CheckpointInfo, load: Callable[[CheckpointInfo], Synthesizer],
                 threads: int, queue_size: int) -> None:
        self.entry = entry
        self._load = load
        self._limit = threads + queue_size
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[Synthesizer], Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._pending = 0  # accepted and not finished: waiting + running
        self._running = 0
        self._cancelled = 0  # jobs that stopped half-way because their request gave up
        self._synth: Synthesizer | None = None
        self._threads = [threading.Thread(target=self._serve, daemon=True,
                                          name=f"serve:{entry.id}:{k}") for k in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, job: Callable[[Synthesizer], T]) -> Future[T]:
        with self._lock:
            if self._pending >= self._limit:
                raise QueueFull(self.entry.id)
            self._pending += 1
        fut: Future[T] = Future()
        self._jobs.put((fut, job))
        return fut

    def _synthesizer(self) -> Synthesizer:
        with self._load_lock:
            if self._synth is None:
                log.info("loading %s", self.entry.id)
                try:
                    self._synth = self._load(self.entry)
                except Exception as exc:  # tried again by the next job
                    raise ModelLoadError(f"{self.entry.id} cannot be loaded: {exc}") from exc
            return self._synth

    def _serve(self) -> None:
        while (item := self._jobs.get()) is not None:
            fut, job = item
            try:
                if not fut.set_running_or_notify_cancel():
                    continue
                with self._lock:
                    self._running += 1
                try:
                    fut.set_result(job(self._synthesizer()))
                except Cancelled as exc:
                    log.info("%s: %s (the request gave up)", self.entry.id, exc)
                    with self._lock:
                        self._cancelled += 1
                    fut.set_exception(exc)
                except Exception as exc:
                    fut.set_exception(exc)
                finally:
                    with self._lock:
                        self._running -= 1
            finally:
                with self._lock:
                    self._pending -= 1

    def close(self, wait_seconds: float = 0.0) -> None:
        """Let the threads finish what was accepted, then end; the model goes with them.
        ``wait_seconds``: wait that long at most for them to end (at shutdown: a thread still
        inside torch when the interpreter exits aborts the process)."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + wait_seconds
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0.0) if wait_seconds else 0.0)

    def status(self) -> dict[str, Any]:
        with self._lock:
            running, waiting = self._running, self._pending - self._running
            cancelled = self._cancelled
        return {"id": self.entry.id, "loaded": self._synth is not None, "running": running,
                "waiting": waiting, "cancelled": cancelled}


class ModelCache:
    """At most ``serve.max_models`` workers (each holding one loaded model); using one more
    closes the least recently used. An evicted worker still finishes the jobs it accepted, so
    for that moment one model more than the bound can be in memory."""

    def __init__(self, cfg: ServeConfig, load: Callable[[CheckpointInfo], Synthesizer]) -> None:
        self.cfg = cfg
        self._load = load
        self._workers: OrderedDict[str, ModelWorker] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, entry: CheckpointInfo, job: Callable[[Synthesizer], T]) -> Future[T]:
        """Run ``job(synthesizer)`` on ``entry``'s worker; :class:`QueueFull` when it is busy."""
        with self._lock:  # get-or-create and submit together: no job lands on a closed worker
            worker = self._workers.get(entry.id)
            if worker is not None and worker.entry.version != entry.version:
                self._workers.pop(entry.id).close()  # the file was rewritten: load it anew
                worker = None
            if worker is None:
                worker = ModelWorker(entry, self._load, self.cfg.concurrent_per_model,
                                     self.cfg.queue_size)
                self._workers[entry.id] = worker
                while len(self._workers) > self.cfg.max_models:
                    old_id, old = self._workers.popitem(last=False)
                    log.info("unloading %s (serve.max_models = %d)", old_id,
                             self.cfg.max_models)
                    old.close()
            self._workers.move_to_end(entry.id)
            return worker.submit(job)

    def status(self) -> list[dict[str, Any]]:
        """Each cached worker, least recently used first."""
        with self._lock:
            workers = list(self._workers.values())
        return [w.status() for w in workers]

    def close(self, wait_seconds: float = 0.0) -> None:
        """Close every worker; ``wait_seconds``: see :meth:`ModelWorker.close` (each)."""
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for w in workers:
            w.close(wait_seconds)
