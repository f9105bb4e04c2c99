"""MLflow sink: one MLflow run per run directory, addressed by its run id.

What it guarantees:

* Everything goes through an ``MlflowClient`` and an explicit run id, never the fluent
  ``mlflow.start_run`` global, so two trainings (or a trial loop) in one process cannot collide
  with "run already active", and nothing depends on which run happens to be current.
* Parameters are the plain flattened config names (``optim.lr``), logged once per run; a resumed
  run continues the same MLflow run (its id is kept in ``RUN/mlflow_run.json``) and does not log
  them again, because MLflow refuses a parameter whose value changes.
* The run always ends: FINISHED, KILLED (Ctrl-C) or FAILED (any other exception); see Tracker.
* A tracking server that cannot be reached costs one warning and one short, bounded timeout:
  training goes on, events stay in ``events.jsonl``, and ``RUN/mlflow_sync.json`` records how
  many of its lines the server has (``delivered``), so ``tacotrain track sync`` can push the rest.

With ``tracking_uri`` unset the store is local to the run: ``sqlite:///RUN/mlflow.db`` with
artifacts in ``RUN/mlartifacts``. (MLflow 3's file store, ``RUN/mlruns``, refuses to start unless
``MLFLOW_ALLOW_FILE_STORE`` is set: it is in maintenance mode in favour of SQLite.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from tacotrain.config import MlflowConfig
from tacotrain.fsutil import atomic_write_json
from tacotrain.track.jsonl_sink import JsonlSink, iter_events

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"  # which MLflow run this run directory is (id, experiment, store)
SYNC_FILE = "mlflow_sync.json"  # how much of events.jsonl that run has, and how training ended
LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
LOCAL = "local"  # how the state files (and `track sync --tracking-uri`) name the run's own store
STATUSES = ("FINISHED", "FAILED", "KILLED")
# set by `tacotrain tune` for each trial's training process: the MLflow run id of the study, so
# the trial's run is created as its nested child (MLflow's tag mlflow.parentRunId)
PARENT_RUN_ENV = "TACOTRAIN_MLFLOW_PARENT_RUN_ID"

# Client-side HTTP limits while this module talks to a server, unless the user set their own:
# MLflow's defaults (several retries with backoff, 120 s timeout) would stall training for
# minutes on every call to a dead server.
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
RETRY_SECONDS = 300.0  # an unreachable server is tried again at most this often
SAVE_SECONDS = 10.0  # RUN/mlflow_sync.json is rewritten at most this often (and at close)
PARAMS_PER_BATCH = 100  # MLflow's limits per log_batch call
METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000


class TrackError(RuntimeError):
    """An MLflow operation the user asked for explicitly (``track sync``) could not be done."""


@contextmanager
def http_limits() -> Iterator[None]:
    """Short, retry-free MLflow HTTP requests inside the block; a user's own setting wins.

    The variables are set only for the duration of the block and removed again, so code outside
    (and a user's later ``mlflow`` calls in the same process) sees MLflow's usual behaviour.
    """
    added = [name for name in HTTP_ENV if name not in os.environ]
    for name in added:
        os.environ[name] = HTTP_ENV[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def local_store_uri(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / LOCAL_DB}"


def redact_uri(uri: str) -> str:
    """``uri`` without a user name or password, for state files and log messages."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def param_value(value: Any) -> str:
    """A config value as an MLflow parameter string: ``0.001`` -> ``"0.001"``, lists as JSON."""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)
    return text[:MAX_PARAM_LENGTH]


def safe_key(tag: str) -> str:
    """``tag`` with only the characters MLflow accepts in image keys and artifact paths."""
    return re.sub(r"\.\.+", ".", re.sub(r"[^A-Za-z0-9_\-./ ]", "_", tag)).strip("/") or "_"


def load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def short_error(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def experiment_id(client: Any, name: str, artifact_dir: Path | None = None) -> str:
    """The id of MLflow experiment ``name`` on ``client``'s store: created when missing (its
    artifacts in ``artifact_dir`` when given, else where the store puts them), restored when
    deleted. Another process creating it at the same moment is not an error."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = artifact_dir.resolve().as_uri() if artifact_dir else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:  # created meanwhile by another training or trial
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


class MlflowTarget:
    """One MLflow run on one tracking store and the delivery state of ``events.jsonl`` into it.

    Used live by :class:`MlflowSink` and offline by ``track sync``; every method may raise what
    MLflow raises (the caller decides whether that is a warning or an error).
    """

    def __init__(self, run_dir: str | Path, tracking_uri: str | None, experiment: str,
                 run_name: str | None) -> None:
        self.run_dir = Path(run_dir)
        self.local = tracking_uri in (None, "", LOCAL)
        self.uri = local_store_uri(self.run_dir) if self.local else str(tracking_uri)
        self.label = LOCAL if self.local else redact_uri(self.uri)
        self.experiment = experiment
        self.run_name = run_name or self.run_dir.resolve().name
        state = load_json(self.run_dir / SYNC_FILE)
        # how the training ended is a fact about the run directory; what a server has is not
        self.end_status: str | None = state.get("end_status")
        if state.get("tracking_uri") != self.label:
            state = {}
        self.run_id: str | None = state.get("run_id")
        self.experiment_id: str | None = state.get("experiment_id")
        self.delivered = int(state.get("delivered", 0))
        self.params_logged = bool(state.get("params_logged", False))
        self.created = False

    @cached_property
    def client(self) -> Any:
        """Created on first use: importing MLflow is slow and only needed when it is on."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    # ------------------------------------------------------------------ the run
    def connect(self) -> None:
        """Continue the recorded run (status back to RUNNING) or create a new one."""
        from mlflow.exceptions import MlflowException

        client = self.client
        if self.run_id:
            try:
                run = client.get_run(self.run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                run = None
            if run is None or run.info.lifecycle_stage == "deleted":
                log.warning("MLflow run %s is gone from %s; starting a new run", self.run_id,
                            self.label)
                self.run_id, self.delivered, self.params_logged = None, 0, False
            else:
                client.update_run(self.run_id, status="RUNNING")
        if not self.run_id:
            self.experiment_id = experiment_id(
                client, self.experiment, self.run_dir / LOCAL_ARTIFACTS if self.local else None)
            tags = {"tacotrain.run_dir": str(self.run_dir.resolve())}
            parent = os.environ.get(PARENT_RUN_ENV, "").strip()
            if parent:  # a tuning trial: nest it under the study's run (see tacotrain.tune)
                tags["mlflow.parentRunId"] = parent
            run = client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
            self.run_id, self.delivered, self.params_logged = run.info.run_id, 0, False
            self.created = True
        atomic_write_json(self.run_dir / RUN_FILE, {
            "run_id": self.run_id, "experiment_id": self.experiment_id,
            "experiment": self.experiment, "run_name": self.run_name,
            "tracking_uri": self.label})
        self.save_state()

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)
        self.end_status = status
        self.save_state()

    def save_state(self) -> None:
        atomic_write_json(self.run_dir / SYNC_FILE, {
            "tracking_uri": self.label, "run_id": self.run_id,
            "experiment_id": self.experiment_id, "delivered": self.delivered,
            "params_logged": self.params_logged, "end_status": self.end_status,
            "updated": round(time.time(), 3)})

    # ------------------------------------------------------------------ events
    def push(self, index: int, event: dict[str, Any]) -> int:
        """Deliver one ``events.jsonl`` event; returns how many values or files it carried."""
        from mlflow.entities import Metric

        client, run_id = self.client, self.run_id
        kind, step = event.get("kind"), int(event.get("step", 0))
        stamp = int(float(event.get("time", time.time())) * 1000)
        count = 0
        if kind == "scalars":
            metrics = [Metric(k, math.nan if v is None else float(v), stamp, step)
                       for k, v in event["values"].items()]
            for i in range(0, len(metrics), METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=metrics[i:i + METRICS_PER_BATCH])
            count = len(metrics)
        elif kind == "params":
            count = self._log_params(event["values"])
        elif kind in ("image", "audio"):
            path = self.run_dir / event["path"]
            if path.exists():
                if kind == "image":
                    from PIL import Image

                    with Image.open(path) as img:
                        rgb = np.asarray(img.convert("RGB"))
                    client.log_image(run_id, rgb, key=safe_key(event["tag"]), step=step,
                                     timestamp=stamp)
                else:
                    client.log_artifact(run_id, str(path), f"audio/{safe_key(event['tag'])}")
                count = 1
            else:
                log.debug("%s event %d: %s no longer exists; not sent", kind, index, path)
        elif kind == "text":
            name = f"text/{safe_key(event['tag'])}/step-{step:07d}-line-{index:07d}.txt"
            client.log_text(run_id, event["text"], name)
            count = 1
        self.delivered = max(self.delivered, index + 1)
        return count

    def _log_params(self, values: dict[str, Any]) -> int:
        params = {k: param_value(v) for k, v in values.items()}
        existing = {} if self.created else self.client.get_run(self.run_id).data.params
        changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if changed:
            log.warning("MLflow run %s keeps the parameters it started with; changed since: %s",
                        self.run_id, ", ".join(changed[:20]))
        if self.params_logged:
            return 0
        from mlflow.entities import Param

        new = [Param(k, v) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[i:i + PARAMS_PER_BATCH])
        self.params_logged = True
        return len(new)


class MlflowSink:
    """The live side: pushes each event as it happens, goes quiet (once warned) when it can't."""

    def __init__(self, run_dir: str | Path, cfg: MlflowConfig, events: JsonlSink) -> None:
        self.target = MlflowTarget(run_dir, cfg.tracking_uri, cfg.experiment, cfg.run_name)
        self.target.end_status = None  # a new session of training: its outcome is not known yet
        self._events = events
        self.online = False
        self._warned = False
        self._last_attempt = -math.inf
        self._last_save = time.monotonic()
        self._connect()
        if not self.online:
            self.target.save_state()  # forget an earlier session's outcome even if never online

    @property
    def run_id(self) -> str | None:
        return self.target.run_id

    def _connect(self) -> None:
        """Open the run and push what an earlier session could not; warn once on failure."""
        self._last_attempt = time.monotonic()
        try:
            with http_limits():
                self.target.connect()
                self._catch_up()
        except Exception as exc:  # any tracking failure must not stop training
            self._fail(exc)
            return
        if self._warned:
            log.info("MLflow at %s is reachable again; run %s is up to date", self.target.label,
                     self.target.run_id)
        self.online, self._warned = True, False

    def _catch_up(self) -> None:
        upto = self._events.lines
        for index, event in iter_events(self.target.run_dir, self.target.delivered):
            if index >= upto:
                break
            self.target.push(index, event)
        self.target.delivered = max(self.target.delivered, upto)

    def _fail(self, exc: BaseException) -> None:
        self.online = False
        if self._warned:
            log.debug("MLflow at %s still failing: %s", self.target.label, short_error(exc))
            return
        self._warned = True
        run_dir = self.target.run_dir
        log.warning("MLflow tracking at %s failed (%s); training goes on without it (retried "
                    "every %.0f s). Nothing is lost: every event is in %s; push what the server "
                    "missed later with: tacotrain track sync %s --tracking-uri %s",
                    self.target.label, short_error(exc), RETRY_SECONDS,
                    self._events.path, run_dir, self.target.label)

    def emit(self, index: int, event: dict[str, Any], wav: np.ndarray | None = None) -> None:
        if not self.online:
            if time.monotonic() - self._last_attempt >= RETRY_SECONDS:
                self._connect()  # catches up through this event as well
            return
        if index < self.target.delivered:
            return
        try:
            with http_limits():
                if index > self.target.delivered:
                    self._catch_up()
                else:
                    self.target.push(index, event)
        except Exception as exc:  # any tracking failure must not stop training
            self._fail(exc)
            return
        now = time.monotonic()
        if now - self._last_save >= SAVE_SECONDS:
            self.target.save_state()
            self._last_save = now

    def close(self, status: str) -> None:
        """End the MLflow run with ``status``; record it either way, for ``track sync``."""
        self.target.end_status = status
        if self.online:
            try:
                with http_limits():
                    if self._events.lines > self.target.delivered:
                        self._catch_up()
                    self.target.end(status)
            except Exception as exc:  # ditto
                self._fail(exc)
            self.online = False
        self.target.save_state()
