"""MLflow for a study: one parent run, one nested child run per trial, every run closed.

Each trial's training process creates its own MLflow run (the trainer's sink; its
parameters are the plain flattened config names, ``optim.lr``), nested under the study's run
through MLflow's ``mlflow.parentRunId`` tag, which the sink sets from
``TACOTRAIN_MLFLOW_PARENT_RUN_ID``. The tuner then closes that child run itself with the trial's
verdict, because the training process cannot always do it: a SIGKILLed process ends nothing,
and a pruned one (stopped with SIGTERM) would end KILLED although pruning is a normal outcome.
COMPLETE and PRUNED trials end FINISHED, failed ones FAILED. A trial that never got as far as
creating its run (say, killed during start-up) gets one created here, so every trial has one.

Tracking trouble never stops a study: each failure costs one warning.
"""

from __future__ import annotations

import logging
import os
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from tacotrain.track.mlflow_sink import (
    LOCAL_ARTIFACTS,
    PARENT_RUN_ENV,
    RUN_FILE,
    experiment_id,
    http_limits,
    load_json,
    param_value,
    redact_uri,
    short_error,
)

log = logging.getLogger(__name__)

ROLE_TAG, STUDY_TAG, TRIAL_TAG, STATE_TAG = ("tacotrain.role", "tacotrain.study",
                                             "tacotrain.trial", "tacotrain.trial_state")
PARENT_TAG = "mlflow.parentRunId"
__all__ = ["PARENT_RUN_ENV", "StudyTracking", "study_store_uri"]


def _now_ms() -> int:
    return int(time.time() * 1000)


def study_store_uri(out: Path) -> str:
    """The study's own MLflow store when the config names none: all trials must share one."""
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


class StudyTracking:
    """The study's MLflow runs on one tracking store (``tracking_uri``), in ``experiment``."""

    def __init__(self, tracking_uri: str, experiment: str, study: str,
                 artifact_dir: Path | None = None) -> None:
        self.uri = tracking_uri
        self.experiment = experiment
        self.study = study
        self.artifact_dir = artifact_dir
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None

    @cached_property
    def client(self) -> Any:
        """Created on first use: importing MLflow is slow and only needed when it is on."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def _warn(self, what: str, exc: BaseException) -> None:
        log.warning("MLflow at %s: %s failed (%s); the study goes on", redact_uri(self.uri), what,
                    short_error(exc))

    def open_parent(self, known_run_id: str | None, params: dict[str, Any]) -> str | None:
        """Continue the study's run (``known_run_id``, or found by its tags) or create it.

        Returns its id (None when MLflow cannot be reached). The run is set RUNNING.
        """
        try:
            with http_limits():
                self.experiment_id = experiment_id(self.client, self.experiment,
                                                       self.artifact_dir)
                run_id = known_run_id or self._find_parent()
                if run_id:
                    self.client.update_run(run_id, status="RUNNING")
                else:
                    run = self.client.create_run(
                        self.experiment_id, run_name=f"study {self.study}",
                        tags={ROLE_TAG: "study", STUDY_TAG: self.study})
                    run_id = run.info.run_id
                    self._log_params(run_id, params)
        except Exception as exc:  # tracking must not stop the study
            self._warn("opening the study's run", exc)
            return None
        self.parent_run_id = run_id
        return run_id

    def _find_parent(self) -> str | None:
        name = self.study.replace("'", "\\'")
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{name}'",
            max_results=1)
        return runs[0].info.run_id if runs else None

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def close_trial(self, run_dir: Path, number: int, state: str, status: str,
                    params: dict[str, Any], value: float | None,
                    attrs: dict[str, Any]) -> str | None:
        """End trial ``number``'s run (created by its training, or here) with ``status``."""
        from mlflow.entities import Metric, RunTag

        run_id = load_json(run_dir / RUN_FILE).get("run_id")
        try:
            with http_limits():
                if not run_id:
                    if self.experiment_id is None:
                        self.experiment_id = experiment_id(self.client, self.experiment,
                                                           self.artifact_dir)
                    tags = {STUDY_TAG: self.study, TRIAL_TAG: str(number)}
                    if self.parent_run_id:
                        tags[PARENT_TAG] = self.parent_run_id
                    run = self.client.create_run(self.experiment_id, tags=tags,
                                                 run_name=f"{self.study}-{number:04d}")
                    run_id = run.info.run_id
                    self._log_params(run_id, params)
                else:  # a training killed before it logged its parameters leaves them missing
                    logged = self.client.get_run(run_id).data.params
                    self._log_params(run_id, {k: v for k, v in params.items() if k not in logged})
                tags = [RunTag(STUDY_TAG, self.study), RunTag(TRIAL_TAG, str(number)),
                        RunTag(STATE_TAG, state)]
                tags += [RunTag(f"tacotrain.{k}", param_value(v)[:5000])
                         for k, v in attrs.items() if v is not None]
                metrics = []
                if value is not None:
                    metrics.append(Metric("tune/objective", float(value), _now_ms(), 0))
                self.client.log_batch(run_id, metrics=metrics, tags=tags)
                self.client.set_terminated(run_id, status=status)
        except Exception as exc:  # tracking must not stop the study
            self._warn(f"closing the run of trial {number}", exc)
            return None
        return run_id

    def close_parent(self, status: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
        if not self.parent_run_id:
            return
        from mlflow.entities import Metric, RunTag

        try:
            with http_limits():
                self.client.log_batch(
                    self.parent_run_id,
                    metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()],
                    tags=[RunTag(k, v) for k, v in tags.items()])
                self.client.set_terminated(self.parent_run_id, status=status)
        except Exception as exc:  # tracking must not stop the study
            self._warn("closing the study's run", exc)


def child_env(parent_run_id: str | None) -> dict[str, str]:
    """The environment of a trial's training process (nested under the study's run)."""
    env = dict(os.environ)
    env.pop(PARENT_RUN_ENV, None)
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    return env


def artifacts_dir(out: Path) -> Path:
    return out / LOCAL_ARTIFACTS
