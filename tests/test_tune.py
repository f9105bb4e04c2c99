"""``tacotrain tune``: search space validation, the objective, isolated trials, failures,
heartbeats, PostgreSQL workers, MLflow runs, the report.

Trials are real ``tacotrain train`` processes on the tiny preset and the tiny test corpus, with
six steps and a validation every three, so each costs a few seconds.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from tacotrain.cli import main
from tacotrain.config import load_config
from tacotrain.train.trainer import Trainer
from tacotrain.tune import SpaceError, TuneOptions, Tuner, load_space, score, validate_space
from tacotrain.tune.objective import MetricMissing
from tacotrain.tune.report import leaderboard
from tacotrain.tune.space import ObjectiveSpec, SearchSpace, suggest, yaml_value
from tacotrain.tune.study import claimed_trials
from tacotrain.tune.trial import run_training

from conftest import free_port, skip_unless_required

# every trial: tiny, one thread, validation at steps 3 and 6, no warm-up (so a huge learning
# rate shows at once), no TensorBoard (start-up time)
BASE_SET = ["train.val_interval=3", "train.log_interval=1", "train.val_free_run_items=2",
            "train.threads=1", "optim.warmup_steps=0", "track.tensorboard=false"]
STEPS = 6
SPACE = {
    "params": {
        "optim.lr": {"type": "float", "low": 3.0e-4, "high": 3.0e-3, "log": True},
        "model.prenet_dropout": {"type": "float", "low": 0.3, "high": 0.6},
        "loss.gate_pos_weight": {"type": "float", "low": 1.0, "high": 10.0, "log": True},
    },
    "pruner": {"type": "median", "n_startup_trials": 2},
    "sampler": {"type": "random", "seed": 0},
}


def write_space(path: Path, **changes: object) -> Path:
    space = json.loads(json.dumps(SPACE))
    space.update(changes)
    path.write_text(yaml.safe_dump(space))
    return path


def options(tmp: Path, data: Path, trials: int, **kw: object) -> TuneOptions:
    defaults: dict[str, object] = dict(
        config="tiny", data=data, study="t", trials=trials, out=tmp / "study",
        space=write_space(tmp / "space.yaml"), overrides=list(BASE_SET), max_steps=STEPS)
    defaults.update(kw)
    return TuneOptions(**defaults)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- search space


def test_unknown_key_is_an_error_naming_it_before_any_trial(tiny_data, tmp_path, capsys):
    bad = {"optim.lrr": {"type": "float", "low": 1e-4, "high": 1e-3}}
    with pytest.raises(SpaceError, match=r"'optim\.lrr' is not a config key"):
        validate_space(SearchSpace(params=bad), "tiny")
    space = tmp_path / "bad.yaml"
    space.write_text(yaml.safe_dump({"params": bad}))
    code = main(["tune", "--config", "tiny", "--data", str(tiny_data), "--space", str(space),
                 "--trials", "1", "--study", "bad", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert not (tmp_path / "out" / "tune.db").exists()  # nothing started


def test_invalid_or_unwired_parameters_are_errors():
    too_big = {"loss.guided_attention.initial_weight": {"type": "float", "low": 1, "high": 60}}
    with pytest.raises(SpaceError, match=r"initial_weight.*60.*max_weight"):
        validate_space(SearchSpace(params=too_big), "tiny")
    # a real key that changes nothing training builds
    with pytest.raises(SpaceError, match=r"'train\.log_interval'.*changes nothing"):
        validate_space(SearchSpace(params={"train.log_interval": {
            "type": "int", "low": 1, "high": 50}}), "tiny")
    # a schedule read by the training step counts as wired (found in train/schedules.py)
    validate_space(SearchSpace(params={"loss.attention_entropy.weight": {
        "type": "float", "low": 0.0, "high": 1.0}}), "tiny")
    with pytest.raises(SpaceError, match="section"):
        validate_space(SearchSpace(params={"guard.interventions": {
            "type": "categorical", "choices": [1, 2]}}), "tiny")


def _effects(t: Trainer) -> dict[str, object]:
    """What the built trainer actually uses, read from its objects."""
    dec = t.model.decoder
    saved = t.step
    lr, ga = {}, {}
    for s in (0, 5, 50, 150, 500, 3000, 6000, 12000):
        t.step = s
        lr[s], ga[s] = t.param("optim.lr"), t.param("loss.guided_attention.weight")
    t.step = saved
    return {
        "lr": lr, "ga_weight": ga,
        "batch": max(len(b) for b in t.sampler.batches()),
        "weight_decay": t.optimizer.param_groups[0]["weight_decay"],
        "ga_sigma": t.criterion.ga_sigma,
        "gate_pos_weight": t.criterion.gate_pos_weight,
        "prenet_p": dec.prenet.dropout,
        "attention_p": dec.attention_dropout,
        "decoder_p": dec.decoder_dropout,
        # frames each decoder step outputs (the projection's size / n_mels) and collates by
        "frames_per_step": (dec.linear_projection.linear_layer.out_features // dec.n_mels,
                            t.collate.r, t.criterion.r),
        "attention": type(dec.attention_layer).__name__,
    }


EXPECTED_EFFECT = {
    "optim.lr": "lr", "train.batch_size": "batch", "optim.warmup_steps": "lr",
    "optim.weight_decay": "weight_decay", "loss.guided_attention.initial_weight": "ga_weight",
    "loss.guided_attention.sigma": "ga_sigma", "loss.guided_attention.decay_start": "ga_weight",
    "model.prenet_dropout": "prenet_p", "model.attention_dropout": "attention_p",
    "model.decoder_dropout": "decoder_p", "loss.gate_pos_weight": "gate_pos_weight",
    "model.n_frames_per_step": "frames_per_step", "model.attention": "attention",
}


def test_each_default_parameter_changes_the_built_trainer(tiny_data, tmp_path):
    space = load_space()
    assert set(space.params) == set(EXPECTED_EFFECT)
    overrides = ["train.threads=1"]
    validate_space(space, "tiny", overrides)
    base_cfg = load_config("tiny", overrides)
    base = _effects(Trainer(base_cfg, tiny_data, tmp_path / "base", progress=False))
    base_flat = base_cfg.model_dump(mode="json")
    for k, (name, spec) in enumerate(space.params.items()):
        section, _, key = name.rpartition(".")
        node = base_flat
        for part in section.split("."):
            node = node[part]
        value = next(v for v in spec.samples() if v != node[key])
        cfg = load_config("tiny", [*overrides, f"{name}={yaml_value(value)}"])
        changed_node = cfg.model_dump(mode="json")
        for part in section.split("."):
            changed_node = changed_node[part]
        assert changed_node[key] == value != node[key], name  # the config the trainer reads
        eff = _effects(Trainer(cfg, tiny_data, tmp_path / f"p{k}", progress=False))
        what = EXPECTED_EFFECT[name]
        assert eff[what] != base[what], f"{name}={value!r} did not change {what}"


def test_objective_ranks_aligned_then_unaligned_then_diverged():
    spec = ObjectiveSpec()

    def row(step, mcd, aligned=0.0):
        return {"step": step, "free/mcd_dtw_db": mcd, "val/aligned": aligned,
                "minutes": step / 10}

    aligned_bad = score([row(3, 9.0), row(6, 7.0, 1.0)], spec)
    aligned_huge = score([row(3, 5e6, 1.0)], spec)
    unaligned_good = score([row(3, 0.1), row(6, 0.05)], spec)
    diverged = score([row(3, 0.01, 1.0)], spec, diverged=True)
    no_value = score([row(3, float("nan"), 1.0), row(6, None)], spec)
    assert aligned_bad.value == 7.0 and aligned_bad.outcome == "aligned"
    assert aligned_bad.aligned_step == 6 and aligned_bad.aligned_minutes == 0.6
    assert unaligned_good.value == pytest.approx(1000.05)
    assert unaligned_good.outcome == "unaligned"
    assert aligned_huge.value == 1000.0  # clamped: still not below any aligned trial
    assert diverged.value == no_value.value == 3000.0
    assert aligned_bad.value < aligned_huge.value <= unaligned_good.value < diverged.value
    # the best value counts only aligned validations when the trial aligned
    assert score([row(3, 1.0), row(6, 2.0, 1.0)], spec).value == 2.0
    # the predecessor's bug (a key training never returns) is an error, not infinity
    with pytest.raises(MetricMissing, match="val_loss"):
        score([row(3, 1.0)], ObjectiveSpec(metric="val_loss"))


def test_trial_that_passes_the_old_rule_but_fails_the_verdict_is_penalised():
    """The step-425 demo voice: diagonality 1.00, focus 0.60, coverage 0.50, every item stopped
    by the gate (the old rule's 0.8 / 0.5 / 0.5 held) but its synthesis was not identified."""
    fooled = {"step": 425, "minutes": 22.8, "val/mel_post": 3.8, "free/mcd_dtw_db": 9.5,
              "free/diagonality": 1.0, "free/focus": 0.60, "free/coverage": 0.50,
              "free/stopped_by_gate": 1.0, "free/identified_share": 0.25, "val/aligned": 0.0}
    reading = {"step": 800, "minutes": 42.5, "val/mel_post": 1.3, "free/mcd_dtw_db": 12.0,
               "free/diagonality": 0.95, "free/focus": 0.79, "free/coverage": 0.7,
               "free/stopped_by_gate": 1.0, "free/identified_share": 1.0, "val/aligned": 1.0}
    spec = ObjectiveSpec()
    fooled_score = score([fooled], spec)
    assert fooled_score.outcome == "unaligned" and fooled_score.value >= spec.unaligned_penalty
    # a reading voice ranks first even with a worse MCD-DTW
    assert score([reading], spec).value < fooled_score.value


def test_trial_process_timeout_and_crash_are_reported(tmp_path):
    slow = run_training([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "a",
                        tmp_path / "a.log", "val/mel_post", lambda row: False, hard_timeout=1.0,
                        poll_seconds=0.1)
    assert slow.status == "timeout" and "time budget" in slow.reason
    crash = run_training([sys.executable, "-c", "raise SystemExit('error: boom')"],
                         tmp_path / "b", tmp_path / "b.log", "val/mel_post", lambda row: False,
                         poll_seconds=0.1)
    assert crash.status == "crashed" and crash.returncode == 1
    assert crash.reason == "exit code 1: error: boom"


# ---------------------------------------------------------------------------- studies


@pytest.mark.filterwarnings("ignore:Fixed parameter optim.lr with value 1.0 is out of range")
def test_study_prunes_and_ranks_broken_trial_last_best_config_trains(tiny_data, tmp_path,
                                                                      capsys):
    out = tmp_path / "study"
    # pruning from the second trial on: the median of the finished trials at the same step
    space = write_space(tmp_path / "space.yaml", pruner={"type": "median", "n_startup_trials": 1})
    args = ["tune", "--config", "tiny", "--data", str(tiny_data), "--space", str(space),
            "--trials", "4", "--study", "e2e", "--out", str(out), "--max-steps", str(STEPS),
            "--enqueue", "optim.lr=1e-3,model.prenet_dropout=0.5,loss.gate_pos_weight=5.0",
            # broken: a learning rate 1000x too high, without warm-up
            "--enqueue", "optim.lr=1.0,model.prenet_dropout=0.5,loss.gate_pos_weight=5.0"]
    for s in BASE_SET:
        args += ["--set", s]
    assert main(args) == 0
    capsys.readouterr()
    storage = f"sqlite:///{out / 'tune.db'}"
    study = optuna.load_study(study_name="e2e", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 4
    assert trials[1].params["optim.lr"] == 1.0  # enqueued trials run first, in order
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == out / "trials" / f"{t.number:04d}"
        assert (run_dir / "events.jsonl").exists()
        ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
        assert len(ckpts) == 1  # only the best (or last) checkpoint is kept
        assert list(t.intermediate_values) == ([3] if t.state.name == "PRUNED" else [3, 6])
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    for t in complete:  # nothing aligns in six steps: penalty + the best validation loss
        history = json.loads((Path(t.user_attrs["run_dir"]) / "train_result.json").read_text())
        best = min(h["free/mcd_dtw_db"] for h in history["history"])
        assert t.value == pytest.approx(1000.0 + best)
        assert t.user_attrs["outcome"] == "unaligned"
    # the broken trial reported a far worse value at step 3 than the two before it: pruned
    assert trials[1].state.name == "PRUNED"
    assert trials[1].intermediate_values[3] > max(t.intermediate_values[3] for t in trials
                                                  if t.number != 1)

    # re-running the same command resumes the study: it already holds 4 trials
    assert main(args) == 0
    assert "0 trial(s) run by this command" in capsys.readouterr().out
    assert len(optuna.load_study(study_name="e2e", storage=storage).trials) == 4

    report_dir = tmp_path / "report"
    assert main(["tune", "report", "--study", "e2e", "--storage", storage,
                 "--out", str(report_dir)]) == 0
    printed = capsys.readouterr().out
    rows = [ln.split() for ln in printed.splitlines() if ln.split() and ln.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    assert int(rows[-1][1]) == 1  # the broken trial ranks last
    assert rows[0][2] == "COMPLETE" and rows[-1][2] == "PRUNED"
    ranked = leaderboard(study)
    assert ranked[0].number == min(complete, key=lambda t: t.value).number
    for name in ("optimization_history", "param_importances", "intermediate_values"):
        assert (report_dir / "plots" / f"{name}.png").stat().st_size > 1000

    best = min(complete, key=lambda t: t.value)
    cfg = load_config(report_dir / "best_config.yaml")
    assert cfg.optim.lr == best.params["optim.lr"]
    assert cfg.model.prenet_dropout == best.params["model.prenet_dropout"]
    assert cfg.train.val_interval == 3 and cfg.optim.warmup_steps == 0  # the base's --set
    result = Trainer(cfg, tiny_data, tmp_path / "best-run", progress=False).fit(max_steps=3)
    assert result.step == 3 and result.history

    # optuna-dashboard on 127.0.0.1 for this storage, stopped by SIGTERM
    proc = subprocess.Popen([sys.executable, "-m", "tacotrain.cli", "tune", "dashboard",
                             "--storage", storage, "--port", "0", "--out", str(report_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("optuna-dashboard: "):
                break
        url = line.split(": ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/studies", timeout=10) as resp:
            assert "e2e" in resp.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _kill_when_running(storage: str, number: int, stop: threading.Event,
                       killed: list[int]) -> None:
    """SIGKILL trial ``number``'s training process once its MLflow run exists."""
    study = optuna.load_study(study_name="t", storage=storage)
    while not stop.is_set():
        for t in study.get_trials(deepcopy=False):
            pid = t.user_attrs.get("pid")
            if t.number == number and t.state.name == "RUNNING" and pid and \
                    (Path(t.user_attrs["run_dir"]) / "mlflow_run.json").exists():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.2)


def test_sigkilled_trial_fails_study_goes_on_mlflow_runs_all_closed(tiny_data, tmp_path):
    from mlflow import MlflowClient

    # 30 steps: trial 1 must still be running when the watcher sees it, even on a loaded machine
    opts = options(tmp_path, tiny_data, 3, mlflow=True, pruner="none", max_steps=30)
    storage = opts.storage_url
    tuner = Tuner(opts)
    tuner.open_study()
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_when_running, args=(storage, 1, stop, killed))
    watcher.start()
    try:
        summary = tuner.run()
    finally:
        stop.set()
        watcher.join()
    assert killed
    study = optuna.load_study(study_name="t", storage=storage)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE"}
    assert summary.states == {"COMPLETE": 2, "FAIL": 1}
    assert "SIGKILL" in study.trials[1].user_attrs["fail_reason"]

    client = MlflowClient(tracking_uri=f"sqlite:///{opts.out_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tacotrain")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("tacotrain.role") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 4 and len(children) == 3
    assert {r.info.status for r in runs} <= {"FINISHED", "FAILED"}  # none RUNNING
    by_trial = {int(r.data.tags["tacotrain.trial"]): r for r in children}
    assert by_trial[1].info.status == "FAILED"
    assert by_trial[0].info.status == by_trial[2].info.status == parent.info.status == "FINISHED"
    for number, run in by_trial.items():
        params = run.data.params
        assert float(params["optim.lr"]) == study.trials[number].params["optim.lr"]
        assert not any(k.startswith("trial") for k in params)  # plain names, no trial_N_
    assert by_trial[0].data.metrics["tune/objective"] == pytest.approx(study.trials[0].value)


def test_closing_a_trial_killed_before_its_params_were_logged_adds_them(tmp_path):
    """The training created its run (mlflow_run.json written) and was killed before logging."""
    from mlflow import MlflowClient

    from tacotrain.track.mlflow_sink import RUN_FILE
    from tacotrain.tune.tracking import StudyTracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("tacotrain")
    run_id = client.create_run(exp_id).info.run_id
    client.log_param(run_id, "model.prenet_dropout", "0.5")  # logged before the kill
    run_dir = tmp_path / "trial_0001"
    run_dir.mkdir()
    (run_dir / RUN_FILE).write_text(json.dumps({"run_id": run_id}))
    tracking = StudyTracking(uri, "tacotrain", "t")
    closed = tracking.close_trial(run_dir, 1, "FAIL", "FAILED",
                                  {"optim.lr": 0.00125, "model.prenet_dropout": 0.5}, None, {})
    assert closed == run_id
    run = client.get_run(run_id)
    assert run.data.params == {"optim.lr": "0.00125", "model.prenet_dropout": "0.5"}
    assert run.info.status == "FAILED"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_heartbeat_fails_and_requeues_a_dead_workers_trial(tiny_data, tmp_path):
    opts = options(tmp_path, tiny_data, 1, heartbeat_seconds=1, grace_seconds=2,
                   pruner="none")
    tuner = Tuner(opts)
    study = tuner.open_study()
    # a worker that started trial 0, sent a heartbeat, then died
    trial = study.ask()
    params = suggest(trial, tuner.space)
    tuner.storage.record_heartbeat(trial._trial_id)
    time.sleep(3.5)
    assert study.trials[0].state.name == "RUNNING"
    summary = Tuner(opts).run()  # the next worker
    trials = optuna.load_study(study_name="t", storage=opts.storage_url).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == params  # the same trial, run again
    assert summary.trials_run_here == 1 and claimed_trials(trials) == 1
    note = {r.number: r.note for r in leaderboard(optuna.load_study(
        study_name="t", storage=opts.storage_url))}
    assert "heartbeat" in note[0]


# ---------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).resolve().parent if which else None


@pytest.fixture()
def postgres_url():
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth), with a database ``tune``."""
    bindir = _pg_bin()
    if bindir is None:
        skip_unless_required("postgres", "PostgreSQL server binaries (initdb, pg_ctl) not found: "
                             "install the Debian package postgresql (`make postgres`)")
    root = Path(tempfile.mkdtemp(prefix="tacotrain-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            shutil.chown(root, "postgres")
        except LookupError:
            shutil.rmtree(root)
            skip_unless_required("postgres", "running as root and there is no 'postgres' user to "
                                 "run the server")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def pg(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    done = pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
              "-E", "UTF8", "--no-sync")
    if done.returncode:
        shutil.rmtree(root, ignore_errors=True)
        skip_unless_required("postgres", f"initdb failed: {done.stderr.strip()[-300:]}")
    opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
    done = pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
              "-w", "-t", "60", "start")
    if done.returncode:
        log = (root / "log").read_text(errors="replace")[-500:] if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        skip_unless_required("postgres", f"PostgreSQL did not start: {done.stderr.strip()[-300:]} "
                                         f"{log}")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE tune")
        conn.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/tune"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_study_through_postgresql(postgres_url, tiny_data, tmp_path):
    space = write_space(tmp_path / "space.yaml")
    procs = []
    for name in ("a", "b"):  # like two machines: separate processes and output directories
        cmd = [sys.executable, "-m", "tacotrain.cli", "tune", "--config", "tiny",
               "--data", str(tiny_data), "--space", str(space), "--trials", "4",
               "--study", "pg", "--storage", postgres_url, "--out", str(tmp_path / name),
               "--max-steps", str(STEPS), "--pruner", "none"]
        for s in BASE_SET:
            cmd += ["--set", s]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    assert len(study.trials) == 4
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    ran = {name: {int(p.name) for p in (tmp_path / name / "trials").iterdir() if p.is_dir()}
           for name in ("a", "b")}
    assert ran["a"] and ran["b"], ran  # both workers ran trials ...
    assert not ran["a"] & ran["b"]  # ... different ones ...
    assert ran["a"] | ran["b"] == {0, 1, 2, 3}  # ... together the requested count
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2
