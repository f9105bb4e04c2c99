"""``tacotrain monitor``: TensorBoard (and the MLflow UI for runs with a local MLflow store).

The servers run as child processes, each in a session (process group) of its own, so that a
Ctrl-C in the terminal reaches only ``tacotrain``, which then stops them in order: SIGTERM to the
whole group (the MLflow UI forks uvicorn workers and a job runner), SIGKILL after a timeout.
Nothing is left listening when the command returns. Everything binds to 127.0.0.1 only: these
UIs have no authentication.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tacotrain.track.jsonl_sink import EVENTS_FILE
from tacotrain.track.mlflow_sink import LOCAL, LOCAL_ARTIFACTS, LOCAL_DB, RUN_FILE, load_json
from tacotrain.track.mlflow_sink import local_store_uri as run_store_uri
from tacotrain.track.tensorboard_sink import TB_DIR

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PORT_TRIES = 20  # a busy port is replaced by the next free one, up to this many above it


class MonitorError(RuntimeError):
    pass


@dataclass
class Service:
    name: str  # "tensorboard" or "mlflow"
    url: str
    process: subprocess.Popen
    log_path: Path  # the child's stdout and stderr

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Monitor:
    services: list[Service] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not started, and why

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every service (idempotent): SIGTERM to its group, SIGKILL after ``timeout``.

        All are signalled first and then waited for, so their shutdowns overlap."""
        for svc in self.services:
            if svc.running() or _group_alive(svc.process.pid):
                _signal_group(svc.process.pid, signal.SIGTERM)
        for svc in self.services:
            stop_process(svc.process, timeout, signalled=True)

    def failed(self) -> list[Service]:
        return [s for s in self.services if not s.running()]

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user took the id: not ours any more
        return False
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(proc: subprocess.Popen, timeout: float = 10.0, signalled: bool = False) -> None:
    """Terminate ``proc`` and its process group (started with ``start_new_session=True``).

    ``signalled``: SIGTERM was already sent (by :meth:`Monitor.stop`), only wait and escalate.
    """
    pgid = proc.pid
    if proc.poll() is None or _group_alive(pgid):
        if not signalled:
            _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("process %d did not stop within %.0f s; killing it", proc.pid, timeout)
            _signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while _group_alive(pgid) and time.monotonic() < deadline:  # workers of the leader
            time.sleep(0.1)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout)


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, taken: set[int] | None = None) -> int:
    """``preferred`` if free, else the next free port above it; 0 means any free port."""
    taken = taken or set()
    if preferred == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            return s.getsockname()[1]
    for port in range(preferred, preferred + PORT_TRIES):
        if port not in taken and port_free(port):
            return port
    raise MonitorError(f"ports {preferred}-{preferred + PORT_TRIES - 1} are all in use; "
                       "choose another with --port / --mlflow-port")


def find_runs(path: Path) -> list[Path]:
    """``path`` itself if it is a run directory, else the run directories below it."""
    if (path / EVENTS_FILE).exists() or (path / TB_DIR).is_dir():
        return [path]
    return sorted({p.parent for p in path.rglob(EVENTS_FILE)})


def mlflow_stores(runs: list[Path]) -> tuple[list[str], list[str]]:
    """``(local store URIs a UI can be started for, remote tracking URIs)`` of ``runs``."""
    local: list[str] = []
    remote: list[str] = []
    for run in runs:
        label = load_json(run / RUN_FILE).get("tracking_uri")
        if label == LOCAL or (label is None and (run / LOCAL_DB).exists()):
            uri = run_store_uri(run)
        elif label is None:
            continue
        else:
            uri = str(label)
        bucket = local if uri.startswith(("sqlite:", "file:")) else remote
        if uri not in bucket:
            bucket.append(uri)
    return local, remote


def wait_http(svc: Service, timeout: float) -> None:
    """Return once ``svc.url`` answers HTTP; MonitorError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if not svc.running():
            raise MonitorError(f"{svc.name} exited with code {svc.process.returncode} before "
                               f"answering:\n{svc.log_tail()}")
        try:
            with urllib.request.urlopen(svc.url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise MonitorError(f"{svc.name} did not answer at {svc.url} within {timeout:.0f} s:"
                               f"\n{svc.log_tail()}")
        time.sleep(0.3)


def child_env() -> dict[str, str]:
    """The environment of the UIs: MLflow's job runner (a pool of worker processes for its
    GenAI features, which a training run never uses) is off unless the user turned it on; it
    doubles the UI's start-up time and CPU use."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def _spawn(name: str, cmd: list[str], url: str, log_dir: Path) -> Service:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=log_dir, env=child_env())
    log.debug("started %s (pid %d): %s", name, proc.pid, " ".join(cmd))
    return Service(name, url, proc, log_path)


def tensorboard_command(logdir: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", HOST,
            "--port", str(port)]


def mlflow_ui_command(store_uri: str, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri,
           "--host", HOST, "--port", str(port), "--workers", "1"]
    if store_uri.startswith("sqlite:///"):
        # experiments this UI might create get their artifacts next to the store, not in cwd
        artifacts = Path(store_uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS
        cmd += ["--artifacts-destination", artifacts.resolve().as_uri()]
    return cmd


def start_monitor(path: str | Path, port: int = 6006, mlflow_port: int = 5000,
                  tensorboard: bool = True, mlflow: bool = True,
                  timeout: float = 120.0) -> Monitor:
    """Start the UIs for the run (or the runs under) ``path`` and wait until they answer.

    Returns a :class:`Monitor` whose ``stop()`` ends them; on any failure everything already
    started is stopped before MonitorError is raised.
    """
    path = Path(path)
    if not path.is_dir():
        raise MonitorError(f"{path}: not a directory")
    runs = find_runs(path)
    if not runs:
        raise MonitorError(f"{path}: no run directories (with {EVENTS_FILE}) in it")
    mon = Monitor()
    log_dir = Path(tempfile.mkdtemp(prefix="tacotrain-monitor-"))
    taken: set[int] = set()
    try:
        if tensorboard:
            p = pick_port(port)
            taken.add(p)
            mon.services.append(_spawn("tensorboard", tensorboard_command(path, p),
                                       f"http://{HOST}:{p}/", log_dir))
        if mlflow:
            local, remote = mlflow_stores(runs)
            for k, uri in enumerate(local):
                p = pick_port(mlflow_port + k if mlflow_port else 0, taken)
                taken.add(p)
                name = "mlflow" if len(local) == 1 else f"mlflow-{k + 1}"
                mon.services.append(_spawn(name, mlflow_ui_command(uri, p),
                                           f"http://{HOST}:{p}/", log_dir))
            for uri in remote:
                mon.notes.append(f"MLflow runs on the tracking server {uri} (not started here)")
            if not local and not remote:
                mon.notes.append("no MLflow store in these runs (track.mlflow.enabled was false)")
        for svc in mon.services:
            health = svc.url + "health" if svc.name.startswith("mlflow") else svc.url
            wait_http(Service(svc.name, health, svc.process, svc.log_path), timeout)
    except BaseException:
        mon.stop()
        raise
    return mon
