"""The tuner's objectives: time to speak, quality of the kept checkpoint, and the pair (a
Pareto front); its samplers; the space rules they bring. Trials are real ``tacotrain train``
processes on the tiny preset (see test_tune.py), with a verdict opened wide so that every
round aligns: these tests are about the tuner's bookkeeping, not about the verdict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tacotrain.cli import main
from tacotrain.infer.checkpoint import Checkpoint
from tacotrain.tune import TuneOptions, Tuner, load_space
from tacotrain.tune.objective import time_to_speak, trial_values
from tacotrain.tune.report import leaderboard
from tacotrain.tune.space import ObjectiveSpec, SearchSpace
from tacotrain.tune.study import _reporter, make_sampler

BASE_SET = ["train.val_interval=2", "train.log_interval=1", "train.val_free_run_items=2",
            "train.threads=1", "optim.warmup_steps=0", "track.tensorboard=false"]
# every free-running round passes: no gate stop needed, any length, any shape, no content test
OPEN_VERDICT = ["alignment.require_gate_stop=false", "alignment.length_ratio_min=0.001",
                "alignment.length_ratio_max=1000.0", "alignment.max_skipped_share=1.0",
                "alignment.max_repeated_tokens=100000", "alignment.max_stalled_tokens=100000",
                "alignment.diagonality=0.0", "alignment.focus=0.0", "alignment.coverage=0.0",
                "alignment.require_identified=false", 'alignment.asr="off"']
PARAMS = {"optim.lr": {"type": "float", "low": 3.0e-4, "high": 3.0e-3, "log": True},
          "model.prenet_dropout": {"type": "float", "low": 0.3, "high": 0.6}}


def row(step: int, minutes: float, aligned: bool, mcd: float) -> dict[str, float]:
    return {"step": step, "minutes": minutes, "val/aligned": float(aligned),
            "free/mcd_dtw_db": mcd}


# ---------------------------------------------------------------------------- the values
def test_time_to_speak_is_the_round_that_completes_the_aligned_streak():
    history = [row(2, 1.0, True, 9.0), row(4, 2.0, False, 8.0), row(6, 3.0, True, 7.0),
               row(8, 4.0, True, 6.5), row(10, 5.0, True, 6.0)]
    assert time_to_speak(history, rounds=2) == (4.0, 8)
    assert time_to_speak(history, rounds=1) == (1.0, 2)
    assert time_to_speak(history, rounds=4) == (None, None)


def test_a_trial_that_never_speaks_ranks_behind_every_one_that_did():
    spec = ObjectiveSpec(kind="time_to_speak")
    slow = trial_values([row(2, 50.0, False, 9.0), row(4, 400.0, True, 5.0),
                         row(6, 900.0, True, 4.0)], spec, rounds=2)
    never = trial_values([row(2, 1.0, False, 3.0), row(4, 2.0, True, 2.0)], spec, rounds=2)
    diverged = trial_values([row(2, 1.0, True, 3.0)], spec, rounds=1, diverged=True)
    assert slow.values == [900.0] and slow.speak_step == 6
    assert never.speak_minutes is None and never.values == [1000.0 + 2.0]  # censored
    assert slow.values < never.values < diverged.values == [3000.0]


def test_both_objectives_are_time_then_quality():
    spec = ObjectiveSpec(kind="both")
    tv = trial_values([row(2, 1.5, True, 9.0), row(4, 3.0, True, 7.0)], spec, rounds=2)
    assert tv.values == [3.0, 7.0] and spec.directions == ["minimize", "minimize"]


# ---------------------------------------------------------------------------- the space
@pytest.mark.parametrize("space, names", [
    ({"sampler": {"type": "cmaes"}, "params": {**PARAMS, "model.attention": {
        "type": "categorical", "choices": ["location", "dca"]}}}, "params.model.attention"),
    ({"sampler": {"type": "cmaes"}, "objective": {"kind": "both"},
      "pruner": {"type": "none"}}, "objective.kind both"),
    ({"objective": {"kind": "both"}}, "pruner.type median"),
    ({"objective": {"metric": "mcd"}}, "objective.metric 'mcd'"),
])
def test_space_rules_exit_2_naming_the_key(tiny_data, tmp_path, capsys, space, names):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": PARAMS, **space}))
    code = main(["tune", "--config", "tiny", "--data", str(tiny_data), "--study", "s",
                 "--trials", "1", "--out", str(tmp_path / "o"), "--space", str(path)])
    assert code == 2
    assert names in capsys.readouterr().err
    assert not (tmp_path / "o" / "trials").exists()  # no trial started


def test_each_sampler_is_built_as_asked_and_seeded():
    def sampler(**kw):
        return make_sampler(SearchSpace.model_validate({"params": PARAMS, **kw}), seed=7)

    tpe = sampler()
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._multivariate and tpe._constant_liar  # the defaults: parallel-safe TPE
    plain = sampler(sampler={"type": "tpe", "multivariate": False, "constant_liar": False})
    assert not plain._multivariate and not plain._constant_liar
    assert isinstance(sampler(sampler={"type": "nsga2", "population_size": 4}),
                      optuna.samplers.NSGAIISampler)
    assert isinstance(sampler(sampler={"type": "cmaes"}), optuna.samplers.CmaEsSampler)
    assert isinstance(sampler(sampler={"type": "random"}), optuna.samplers.RandomSampler)
    # seeded: the same seed draws the same parameters
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=sampler(sampler={"type": "random"}))
        draws.append(study.ask().suggest_float("x", 0.0, 1.0))
    assert draws[0] == draws[1]


# ---------------------------------------------------------------------------- real studies
def run_study(tiny_data: Path, tmp: Path, trials: int, **space: object) -> Tuner:
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump({"params": PARAMS, **space}))
    opts = TuneOptions(config="tiny", data=tiny_data, study="s", trials=trials,
                       out=tmp / "study", space=path, overrides=[*BASE_SET, *OPEN_VERDICT],
                       max_steps=6)
    tuner = Tuner(opts)
    tuner.run()
    return tuner


def test_a_quality_trial_reports_the_figure_of_the_checkpoint_it_keeps(tiny_data, tmp_path):
    tuner = run_study(tiny_data, tmp_path, 2, objective={"kind": "quality"},
                      pruner={"type": "none"}, sampler={"type": "random", "seed": 3})
    done = [t for t in tuner.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2
    for t in done:
        ckpts = Path(t.user_attrs["run_dir"]) / "checkpoints"
        assert [p.name for p in ckpts.glob("*.pt")] == ["best.pt"]  # the only one kept
        assert sorted(p.name for p in ckpts.iterdir()) == ["best.pt", "best.pt.json"]
        kept = Checkpoint.read(ckpts / "best.pt")
        assert t.user_attrs["outcome"] == "aligned" and kept.verdict["aligned"]
        assert t.value == kept.val["free/mcd_dtw_db"] == t.user_attrs["quality"]
        assert kept.step == t.user_attrs["best_step"]
        # best.pt followed the objective's metric (train.best_metric), not the mel loss
        saved = yaml.safe_load((ckpts.parent / "config.yaml").read_text())
        assert saved["train"]["best_metric"] == "free/mcd_dtw_db"


def test_a_two_objective_study_gives_a_pareto_front(tiny_data, tmp_path):
    tuner = run_study(tiny_data, tmp_path, 3, objective={"kind": "both"},
                      pruner={"type": "none"},
                      sampler={"type": "nsga2", "seed": 5, "population_size": 2})
    study = tuner.study
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3
    for t in done:
        result = json.loads((Path(t.user_attrs["run_dir"]) / "train_result.json").read_text())
        # every round aligns, so each trial speaks at its second round and stops there
        assert result["stop_reason"] == "aligned" and result["step"] == 4
        assert t.user_attrs["passed"] and t.user_attrs["speak_step"] == 4
        assert t.values[0] == result["history"][1]["minutes"]
        assert t.values[1] == t.user_attrs["quality"]
    front = {t.number for t in study.best_trials}
    assert front, "a non-empty front"

    def dominates(a, b):
        return all(x <= y for x, y in zip(a.values, b.values, strict=True)) and a.values != b.values

    for t in done:  # the front is exactly the trials no other trial dominates
        assert (t.number in front) == (not any(dominates(o, t) for o in done))
    record = study.user_attrs["tacotrain"]
    assert record["data"] == str(tiny_data.resolve()) and record["sampler_seed"] == 5
    assert load_space(tmp_path / "space.yaml").objective.kind == "both"


# ---------------------------------------------------------------------------- kill -9, --resume
def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="k", storage=storage).get_trials(deepcopy=False)
    except (KeyError, Exception):  # not created yet, or the file is being written
        return []


def test_a_killed_study_resumes_without_losing_a_finished_trial(tiny_data, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": PARAMS, "pruner": {"type": "none"},
                                    "sampler": {"type": "random", "seed": 1}}))
    out = tmp_path / "study"
    storage = f"sqlite:///{out / 'tune.db'}"
    cmd = [sys.executable, "-m", "tacotrain.cli", "tune", "--config", "tiny", "--data",
           str(tiny_data), "--study", "k", "--trials", "3", "--out", str(out), "--space",
           str(path), "--max-steps", "6", "--heartbeat", "1", "--grace", "3"]
    for s in BASE_SET:
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while True:  # kill it (and its trial's training) while trial 1 runs, trial 0 finished
        states = {t.number: t.state.name for t in _trials(storage)}
        if states.get(0) == "COMPLETE" and states.get(1) == "RUNNING":
            break
        assert proc.poll() is None and time.monotonic() < deadline, states
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {t.number: t.value for t in _trials(storage) if t.state.name == "COMPLETE"}
    time.sleep(4)  # past --grace: the killed trial's heartbeat is stale
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    trials = _trials(storage)
    for number, value in finished.items():  # nothing finished was lost or rerun
        assert trials[number].state.name == "COMPLETE" and trials[number].value == value
    assert trials[1].state.name == "FAIL"  # cut off by the kill, failed by its stale heartbeat
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"  # re-queued and run
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3
    # --resume of a study that does not exist is refused, naming it
    other = subprocess.run([*cmd[:9], "nope", *cmd[10:], "--resume"], capture_output=True,
                           text=True)
    assert other.returncode == 1 and "no study 'nope'" in other.stderr


def test_a_trial_that_can_no_longer_speak_sooner_than_the_best_is_stopped():
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.add_trial(optuna.trial.create_trial(value=3.0, user_attrs={
        "time_to_speak_minutes": 3.0}))
    trial = study.ask()
    on_validation = _reporter(trial, ObjectiveSpec(kind="time_to_speak"), rounds=2,
                              last_step=100)
    assert on_validation(row(10, 2.0, False, 9.0)) is False  # still has a chance
    assert on_validation(row(20, 3.5, True, 8.0)) is True  # slower than 3.0 and not speaking
    assert "cannot speak sooner" in trial.study.trials[-1].user_attrs["pruned_reason"]
    # one that speaks is never stopped by this rule, however slow
    late = study.ask()
    speak = _reporter(late, ObjectiveSpec(kind="time_to_speak"), rounds=1, last_step=100)
    assert speak(row(10, 9.0, True, 5.0)) is False
    # the intermediate values are on the final scale: censored so far = penalty + minutes
    assert trial.study.trials[1].intermediate_values == {10: 1002.0, 20: 1003.5}
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # the report says why
    note = next(r.note for r in leaderboard(study) if r.number == trial.number)
    assert note == "pruned at step 20: cannot speak sooner than the best trial any more"
