"""The metrics stream: events.jsonl, TensorBoard and MLflow see each value once, runs always end,
a dead tracking server costs one warning, and `track sync` / `monitor` work on real runs."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from tacotrain.cli import main
from tacotrain.config import TrackConfig, flatten
from tacotrain.track import Tracker, read_events
from tacotrain.track.mlflow_sink import (
    HTTP_ENV,
    RUN_FILE,
    SYNC_FILE,
    http_limits,
    local_store_uri,
    param_value,
)
from tacotrain.track.monitor import (
    _group_alive,
    child_env,
    pick_port,
    start_monitor,
    stop_process,
)
from tacotrain.train.inject import InjectedCrash
from tacotrain.train.trainer import Trainer

from conftest import skip_unless_required, tiny_cfg

if importlib.util.find_spec("mlflow") is None:
    skip_unless_required("extras", "mlflow is not installed (tacotrain[mlflow])")
from mlflow import MlflowClient  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

SECRET = "123456:SECRET-token-that-must-never-be-logged"


def train(data: Path, run: Path, *overrides: str, steps: int = 6, resume: bool = False):
    cfg = tiny_cfg("train.val_interval=3", "track.mlflow.enabled=true", *overrides)
    return Trainer(cfg, data, run, resume=resume, progress=False).fit(max_steps=steps)


def run_id_of(run: Path) -> str:
    return json.loads((run / RUN_FILE).read_text())["run_id"]


def scalar_series(run: Path) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} from events.jsonl; asserts no metric repeats within a step."""
    out: dict[str, dict[int, float]] = {}
    for ev in read_events(run, "scalars"):
        for key, value in ev["values"].items():
            assert ev["step"] not in out.setdefault(key, {}), (key, ev["step"])
            out[key][ev["step"]] = value
    return out


def assert_mlflow_has(client: MlflowClient, run_id: str, series: dict[str, dict[int, float]]):
    for key, by_step in series.items():
        hist = client.get_metric_history(run_id, key)
        steps = [m.step for m in hist]
        assert sorted(steps) == sorted(by_step), key  # each step exactly once
        for m in hist:
            assert m.value == pytest.approx(by_step[m.step], rel=1e-6, abs=1e-9), (key, m.step)


@pytest.fixture()
def tracking_server(tmp_path_factory):
    """A real MLflow tracking server (sqlite store) on a free port: ``(uri, process)``.

    It takes ~10 s to come up here, so it is started, not awaited: the test that uses it trains
    meanwhile and then waits for it."""
    tmp = tmp_path_factory.mktemp("server")
    port = pick_port(0)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
           "--artifacts-destination", (tmp / "artifacts").as_uri()]
    with open(tmp / "server.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=tmp, start_new_session=True,
                                env=child_env())
    yield f"http://127.0.0.1:{port}", proc
    stop_process(proc, timeout=10)
    assert not _group_alive(proc.pid)


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    """One 6-step training (validation at 3 and 6) with TensorBoard and a local MLflow store,
    run with a Telegram token in the environment (which must end up nowhere)."""
    run = tmp_path_factory.mktemp("track") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TACOTRAIN_TELEGRAM_TOKEN", SECRET)
        mp.delenv("TACOTRAIN_TELEGRAM_CHAT_ID", raising=False)
        mp.delenv("TACOTRAIN_INJECT", raising=False)
        train(tiny_data, run, steps=6)
    return run


def test_each_metric_once_in_tensorboard_and_mlflow(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = finished_run
    series = scalar_series(run)
    assert sorted(series["train/loss"]) == [1, 2, 3, 4, 5, 6]
    assert sorted(series["val/mel_post"]) == [3, 6]
    assert len(series) > 20

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == set(series)
    for key, by_step in series.items():
        events = acc.Scalars(key)
        assert sorted(e.step for e in events) == sorted(by_step), key
        for e in events:
            assert e.value == pytest.approx(by_step[e.step], rel=1e-5), (key, e.step)
    image_tags = {ev["tag"] for ev in read_events(run, "image")}
    assert image_tags == {"val/alignment_free_run", "val/alignment_teacher_forced", "val/mel",
                          "val/mel_free_run"}
    assert set(acc.Tags()["images"]) == image_tags
    assert all(len(acc.Images(t)) == 2 for t in image_tags)  # steps 3 and 6, once each

    client = MlflowClient(local_store_uri(run))
    rid = run_id_of(run)
    mrun = client.get_run(rid)
    assert mrun.info.status == "FINISHED"
    assert mrun.info.run_name == "run"
    assert set(mrun.data.metrics) == set(series)
    assert_mlflow_has(client, rid, series)
    images = [a.path for a in client.list_artifacts(rid, "images")]
    for tag in image_tags:  # one picture per validation step (+ MLflow's thumbnail)
        mine = [p for p in images if p.startswith("images/" + tag.replace("/", "~") + "+")]
        assert sorted({p.split("+step+")[1].split("+")[0] for p in mine}) == ["3", "6"]
        assert len([p for p in mine if p.endswith(".png")]) == 2
    sync = json.loads((run / SYNC_FILE).read_text())
    assert sync["delivered"] == len((run / "events.jsonl").read_text().splitlines())
    assert sync["end_status"] == "FINISHED" and sync["run_id"] == rid


def test_params_are_plain_config_names_logged_once(finished_run):
    run = finished_run
    client = MlflowClient(local_store_uri(run))
    params = client.get_run(run_id_of(run)).data.params
    cfg = tiny_cfg("train.val_interval=3", "track.mlflow.enabled=true")
    flat = flatten(cfg.model_dump(mode="json"))
    assert params == {k: param_value(v) for k, v in flat.items()}
    assert params["optim.lr"] == "0.001"
    assert params["train.val_interval"] == "3" and params["track.mlflow.enabled"] == "True"
    assert not any(k.startswith("trial") for k in params)
    assert len(read_events(run, "params")) == 1


def test_no_secret_in_params_tags_config_or_any_file(finished_run):
    run = finished_run
    client = MlflowClient(local_store_uri(run))
    data = client.get_run(run_id_of(run)).data
    assert not any(SECRET in k or SECRET in v for k, v in data.params.items())
    assert not any(SECRET in k or SECRET in v for k, v in data.tags.items())
    assert SECRET not in (run / "config.yaml").read_text()
    needle, token_part = SECRET.encode(), SECRET.split(":")[1].encode()
    files = [p for p in run.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.name == "mlflow.db" for p in files)
    for p in files:
        blob = p.read_bytes()
        assert needle not in blob and token_part not in blob, p


def test_crash_ends_mlflow_run_failed(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TACOTRAIN_INJECT", "crash@4")
    run = tmp_path / "r"
    with pytest.raises(InjectedCrash):
        train(tiny_data, run, steps=6)
    client = MlflowClient(local_store_uri(run))
    rid = run_id_of(run)
    assert client.get_run(rid).info.status == "FAILED"
    assert json.loads((run / SYNC_FILE).read_text())["end_status"] == "FAILED"
    assert [m.step for m in client.get_metric_history(rid, "train/loss")] == [1, 2, 3]


def test_ctrl_c_ends_killed_and_resume_continues_the_same_run(tiny_data, tmp_path,
                                                             monkeypatch):
    run = tmp_path / "r"
    real_step = Trainer.train_step
    calls = {"n": 0}

    def interrupted_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, run, steps=6)
    client = MlflowClient(local_store_uri(run))
    rid = run_id_of(run)
    assert client.get_run(rid).info.status == "KILLED"
    n_params = len(client.get_run(rid).data.params)

    monkeypatch.setattr(Trainer, "train_step", real_step)
    train(tiny_data, run, steps=4, resume=True)  # checkpoint of step 2 -> steps 3, 4
    assert run_id_of(run) == rid
    mrun = client.get_run(rid)
    assert mrun.info.status == "FINISHED"
    assert len(mrun.data.params) == n_params
    assert len(client.search_runs([mrun.info.experiment_id])) == 1
    assert [m.step for m in client.get_metric_history(rid, "train/loss")] == [1, 2, 3, 4]
    assert_mlflow_has(client, rid, scalar_series(run))
    assert len(read_events(run, "params")) == 2  # one per session; MLflow keeps the first


def test_unreachable_server_warns_once_then_sync_pushes_everything(tiny_data, tmp_path,
                                                                  tracking_server, caplog,
                                                                  capsys):
    dead = f"http://127.0.0.1:{pick_port(0)}"  # nothing listens there
    run = tmp_path / "r"
    caplog.set_level(logging.INFO)
    env_before = {name: os.environ.get(name) for name in HTTP_ENV}
    t0 = time.monotonic()
    res = train(tiny_data, run, f"track.mlflow.tracking_uri={dead}", steps=3)
    assert time.monotonic() - t0 < 60
    assert res.step == 3 and res.stop_reason == "max_steps"
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and dead in
              r.getMessage()]
    assert len(warned) == 1 and "track sync" in warned[0].getMessage()
    assert {name: os.environ.get(name) for name in HTTP_ENV} == env_before
    series = scalar_series(run)
    assert sorted(series["train/loss"]) == [1, 2, 3] and sorted(series["val/loss"]) == [3]
    state = json.loads((run / SYNC_FILE).read_text())
    assert state["delivered"] == 0 and state["run_id"] is None
    assert state["end_status"] == "FINISHED" and state["tracking_uri"] == dead
    assert not (run / RUN_FILE).exists()

    uri, server = tracking_server
    if not _wait_http(f"{uri}/health", server, 90):
        warnings.warn("the MLflow server did not start within 90 s: syncing into a local "
                      "sqlite store instead", stacklevel=1)
        uri = f"sqlite:///{tmp_path / 'fallback.db'}"
    capsys.readouterr()
    assert main(["track", "sync", str(run), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "(created)" in out and "status FINISHED" in out
    client = MlflowClient(uri)
    rid = run_id_of(run)
    mrun = client.get_run(rid)
    assert mrun.info.status == "FINISHED"
    assert set(mrun.data.metrics) == set(series)
    assert_mlflow_has(client, rid, series)
    assert mrun.data.params["optim.lr"] == "0.001"
    arts = [a.path for a in client.list_artifacts(rid, "images")]
    assert len([a for a in arts if a.endswith(".png")]) == 4  # newest picture of each tag
    assert [a.path for a in client.list_artifacts(rid, "text")] == ["text/config"]
    # a second sync has nothing left to send
    assert main(["track", "sync", str(run), "--tracking-uri", uri]) == 0
    assert "sent 0 events" in capsys.readouterr().out
    assert len(client.get_metric_history(rid, "train/loss")) == 3


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def test_end_status_mapping(tmp_path):
    from tacotrain.track import exit_status
    from tacotrain.track.mlflow_sync import final_status
    from tacotrain.train.trainer import GuardStop

    assert exit_status(None) == "FINISHED"
    assert exit_status(KeyboardInterrupt) == "KILLED"
    assert exit_status(GuardStop) == exit_status(InjectedCrash) == "FAILED"
    assert final_status(tmp_path, "FAILED") == ("FAILED", "tracker")
    assert final_status(tmp_path, None) == ("KILLED", "none")
    for reason, status in [("max_steps", "FINISHED"), ("early_stop: patience", "FINISHED"),
                           ("interrupted", "KILLED"), ("guard", "FAILED"),
                           ("crash: InjectedCrash", "FAILED")]:
        (tmp_path / "train_result.json").write_text(json.dumps({"stop_reason": reason}))
        assert final_status(tmp_path, None) == (status, "train_result.json")


def test_http_limits_are_scoped_and_respect_user_settings(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    with http_limits():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"


def test_tracker_audio_text_and_status_without_trainer(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrackConfig.model_validate({"mlflow": {"enabled": True, "run_name": "direct"}})
    wav = 0.3 * np.sin(np.linspace(0, 200 * math.pi, 8000)).astype(np.float32)
    with pytest.raises(ValueError), Tracker(tmp_path, cfg, params={"a.b": 1}) as tr:
        tr.scalars(1, {"x": 1.5, "bad": float("nan")})
        tr.audio(1, "val/sample", wav, 16000)
        tr.text(1, "note", "hello")
        raise ValueError("boom")
    tr.close()  # idempotent
    assert tr.status == "FAILED"
    (ev,) = read_events(tmp_path, "audio")
    assert ev["path"] == "audio/val_sample/step-0000001.wav" and ev["seconds"] == 0.5
    assert (tmp_path / ev["path"]).stat().st_size > 16000
    assert read_events(tmp_path, "scalars")[0]["values"] == {"x": 1.5, "bad": None}
    client = MlflowClient(local_store_uri(tmp_path))
    mrun = client.get_run(run_id_of(tmp_path))
    assert mrun.info.status == "FAILED" and mrun.info.run_name == "direct"
    assert mrun.data.params == {"a.b": "1"} and mrun.data.metrics["x"] == 1.5
    assert math.isnan(mrun.data.metrics["bad"])
    assert [a.path for a in client.list_artifacts(mrun.info.run_id, "audio/val/sample")] == [
        "audio/val/sample/step-0000001.wav"]
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"audio": 0, "scalars": 0})
    acc.Reload()
    assert len(acc.Audio("val/sample")) == 1 and len(acc.Scalars("x")) == 1


def test_monitor_starts_answers_and_stops(finished_run):
    from tacotrain.track.monitor import MonitorError

    ports = {"port": pick_port(0), "mlflow_port": pick_port(0)}
    try:
        mon = start_monitor(finished_run, timeout=30, **ports)
    except MonitorError as exc:
        if not str(exc).startswith("mlflow"):
            raise
        warnings.warn(f"MLflow UI not up within 30 s; checking TensorBoard only: {exc}",
                      stacklevel=1)
        mon = start_monitor(finished_run, mlflow=False, timeout=60, **ports)
    try:
        names = [s.name for s in mon.services]
        assert names[0] == "tensorboard"
        with urllib.request.urlopen(mon.services[0].url, timeout=10) as resp:
            assert resp.status == 200
        if "mlflow" in names:
            rid = run_id_of(finished_run)
            url = f"{mon.services[1].url}ajax-api/2.0/mlflow/runs/get?run_id={rid}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert json.load(resp)["run"]["info"]["status"] == "FINISHED"
    finally:
        mon.stop()
    for svc in mon.services:
        assert svc.process.poll() is not None
        assert not _group_alive(svc.process.pid)  # the MLflow UI's workers as well


def test_monitor_cli_prints_urls_and_stops_on_sigterm(finished_run, monkeypatch, capsys):
    import signal

    from tacotrain.track.monitor import Monitor

    seen: list[Monitor] = []
    real_failed = Monitor.failed

    def failed_then_sigterm(self: Monitor):
        # runs inside the command's wait loop, so its SIGTERM handler is in place
        if not seen:
            seen.append(self)
            with urllib.request.urlopen(self.services[0].url, timeout=10) as resp:
                assert resp.status == 200
            os.kill(os.getpid(), signal.SIGTERM)
        return real_failed(self)

    monkeypatch.setattr(Monitor, "failed", failed_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    rc = main(["monitor", str(finished_run), "--port", str(pick_port(0)), "--no-mlflow",
               "--no-browser"])
    assert rc == 0 and seen
    out = capsys.readouterr().out
    assert f"tensorboard: {seen[0].services[0].url}" in out and "stopped." in out
    assert [s.name for s in seen[0].services] == ["tensorboard"]
    assert not _group_alive(seen[0].services[0].process.pid)
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("argv", [["track", "sync", "--help"], ["monitor", "--help"]])
def test_track_commands_explain_themselves(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--tracking-uri" in out if argv[0] == "track" else "--mlflow-port" in out
