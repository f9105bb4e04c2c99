"""``tacotrain track sync RUN``: push to MLflow what a run's server missed, then end the run.

A training whose tracking server was down (or that ran without network) keeps every event in
``RUN/events.jsonl``; ``RUN/mlflow_sync.json`` says how many of its lines the server already has.
Sync replays the rest through the same code the live sink uses (so the result is the same as if
the server had been up): parameters, metrics with their steps and times, text, audio, and
images. The plots in ``RUN/plots`` are overwritten at every validation, so for each image tag
only the newest file exists; it is sent once, at the step of its last event, rather than sending
that one picture under every older step.

Pushing into another server (``--tracking-uri``) than the recorded one creates a run there and
sends everything. The run ends with the status the training recorded when it stopped (from the
exception it saw), else from ``RUN/train_result.json`` (FINISHED unless its stop_reason is
``interrupted`` -> KILLED, or ``guard`` / ``crash: ...`` -> FAILED), else KILLED (the process
vanished without closing its tracker: killed, or still running).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from tacotrain.config import MlflowConfig
from tacotrain.track.jsonl_sink import EVENTS_FILE, iter_events
from tacotrain.track.mlflow_sink import (
    STATUSES,
    MlflowTarget,
    TrackError,
    http_limits,
    load_json,
    short_error,
)

log = logging.getLogger(__name__)

STATUS_FOR_STOP_REASON = {"interrupted": "KILLED", "guard": "FAILED"}


@dataclass
class SyncReport:
    tracking_uri: str  # redacted; "local" for RUN/mlflow.db
    run_id: str
    created: bool  # the run did not exist on that server before
    events: int  # events.jsonl lines sent
    metrics: int  # metric values sent
    params: int
    files: int  # images, audio and text artifacts
    status: str
    status_source: str  # "tracker", "train_result.json" or "none"


def run_mlflow_config(run_dir: Path) -> MlflowConfig:
    """The run's own ``track.mlflow`` section (from RUN/config.yaml), else the defaults."""
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        return MlflowConfig.model_validate(data.get("track", {}).get("mlflow", {}))
    except (OSError, yaml.YAMLError, ValueError, AttributeError):
        return MlflowConfig()


def final_status(run_dir: Path, recorded: str | None) -> tuple[str, str]:
    """``(status, where it came from)`` for ending the run; see the module docstring."""
    if recorded in STATUSES:
        return recorded, "tracker"
    result = load_json(run_dir / "train_result.json")
    if result:
        reason = str(result.get("stop_reason", ""))
        if reason.startswith("crash"):
            return "FAILED", "train_result.json"
        return STATUS_FOR_STOP_REASON.get(reason, "FINISHED"), "train_result.json"
    return "KILLED", "none"


def sync(run_dir: str | Path, tracking_uri: str | None = None) -> SyncReport:
    """Push the events of ``run_dir`` the MLflow server has not got; raises TrackError."""
    run_dir = Path(run_dir)
    if not (run_dir / EVENTS_FILE).exists():
        raise TrackError(f"{run_dir}: no {EVENTS_FILE}; not a tacotrain run directory")
    cfg = run_mlflow_config(run_dir)
    uri = tracking_uri if tracking_uri is not None else cfg.tracking_uri
    target = MlflowTarget(run_dir, uri, cfg.experiment, cfg.run_name)
    status, source = final_status(run_dir, target.end_status)
    sent = metrics = params = files = 0
    try:
        with http_limits():
            target.connect()
            pending = list(iter_events(run_dir, target.delivered))
            newest_image = {ev.get("tag"): i for i, ev in pending if ev.get("kind") == "image"}
            for index, event in pending:
                kind = event.get("kind")
                if kind == "image" and newest_image[event.get("tag")] != index:
                    target.delivered = index + 1
                    continue
                count = target.push(index, event)
                sent += 1
                if kind == "scalars":
                    metrics += count
                elif kind == "params":
                    params += count
                else:
                    files += count
            target.end(status)
    except Exception as exc:
        if target.run_id:
            target.save_state()  # keep what did arrive, so the next sync starts after it
        raise TrackError(f"MLflow at {target.label}: {short_error(exc)}") from exc
    log.info("synced %d events of %s into MLflow run %s at %s", sent, run_dir, target.run_id,
             target.label)
    assert target.run_id is not None
    return SyncReport(target.label, target.run_id, target.created, sent, metrics, params, files,
                      status, source)
