"""Pruning at the same training time (tune/pruning.py): median on the objective so far,
Wilcoxon item by item; the per-item figures and training minutes a trial's validations carry
from the trainer (events.jsonl) to the tuner."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from tacotrain import metrics as M
from tacotrain.train.trainer import Trainer
from tacotrain.tune.objective import CURVE, item_values
from tacotrain.tune.pruning import SameTimePruner
from tacotrain.tune.space import ObjectiveSpec, SearchSpace
from tacotrain.tune.study import _reporter
from tacotrain.tune.trial import validation_rows

PARAMS = {"optim.lr": {"type": "float", "low": 3.0e-4, "high": 3.0e-3, "log": True}}


def point(minutes: float, step: int, value: float, items: list[float] | None = None) -> dict:
    return {"minutes": minutes, "step": step, "value": value, "items": items}


def finished(study: optuna.Study, curve: list[dict]) -> None:
    study.add_trial(optuna.trial.create_trial(
        value=min(p["value"] for p in curve), user_attrs={CURVE: curve},
        intermediate_values={p["step"]: p["value"] for p in curve}))


def running(curve: list[dict]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=TrialState.RUNNING, user_attrs={CURVE: curve},
        intermediate_values={p["step"]: p["value"] for p in curve})


def test_median_compares_at_the_same_training_time_not_the_same_step():
    study = optuna.create_study()
    # two slow finished trials: 5 and 6 at step 100, but only after 10 minutes
    finished(study, [point(2.0, 20, 50.0), point(10.0, 100, 5.0)])
    finished(study, [point(2.0, 20, 60.0), point(10.0, 100, 6.0)])
    pruner = SameTimePruner("median", n_startup_trials=2)
    # a fast trial at step 100 after 2 minutes with 20: worse than them at step 100, better than
    # the median (55) of what they had by 2 minutes: kept
    assert not pruner.prune(study, running([point(2.0, 100, 20.0)]))
    # the same figure after 10 minutes is worse than their median by then (5.5): pruned
    assert pruner.prune(study, running([point(10.0, 100, 20.0)]))
    assert "median 5.5 of 2 finished trials" in pruner.reason
    # before their first validation the same step stands in (here: none reached step 10)
    assert not pruner.prune(study, running([point(0.5, 10, 99.0)]))
    # fewer finished trials than n_startup_trials: never
    assert not SameTimePruner("median", n_startup_trials=3).prune(
        study, running([point(10.0, 100, 20.0)]))
    # warm-up steps and the check interval are honoured
    assert not SameTimePruner("median", n_warmup_steps=200).prune(
        study, running([point(10.0, 100, 20.0)]))
    assert not SameTimePruner("median", interval_steps=3).prune(
        study, running([point(10.0, 100, 20.0)]))


def test_wilcoxon_prunes_a_trial_worse_item_by_item_than_the_best_at_that_time():
    study = optuna.create_study()
    best_items = [5.0, 6.0, 7.0, 5.5, 6.5, 7.5, 5.2, 6.2]
    finished(study, [point(1.0, 10, 9.0, [9.0] * 8), point(3.0, 30, 6.0, best_items)])
    finished(study, [point(3.0, 30, 8.0, [8.0] * 8)])
    pruner = SameTimePruner("wilcoxon", n_startup_trials=2, p_threshold=0.05)
    worse = [v + 0.5 + 0.1 * i for i, v in enumerate(best_items)]
    assert pruner.prune(study, running([point(3.5, 40, 7.0, worse)]))
    assert "worse than the best trial (0)" in pruner.reason and "8 of 8 items" in pruner.reason
    # mixed: better on half of the items: kept
    mixed = [v + (0.5 if i % 2 else -0.5) for i, v in enumerate(best_items)]
    assert not pruner.prune(study, running([point(3.5, 40, 6.0, mixed)]))
    # compared with what the best had by 1.5 minutes (9 dB everywhere), the worse one is better
    assert not pruner.prune(study, running([point(1.5, 40, 7.0, worse)]))
    # a metric without per-item figures, or items that do not pair: no decision
    assert not pruner.prune(study, running([point(3.5, 40, 7.0, None)]))
    assert not pruner.prune(study, running([point(3.5, 40, 7.0, worse[:4])]))


def test_item_values_put_unaligned_and_missing_items_behind_aligned_ones():
    items = {"aligned": [1.0, 0.0, 1.0], "mcd_dtw_db": [6.0, 5.0, None]}
    assert item_values(items, "mcd_dtw_db", 1000.0) == [6.0, 1005.0, 2000.0]
    assert item_values(items, "wer_ratio", 1000.0) is None  # no such per-item figure
    assert item_values(None, "mcd_dtw_db", 1000.0) is None


def test_the_reporter_records_the_curve_and_why_a_trial_was_pruned():
    study = optuna.create_study(pruner=SameTimePruner("wilcoxon", n_startup_trials=1,
                                                      p_threshold=0.2))
    finished(study, [point(2.0, 20, 5.0, [5.0, 5.0, 5.0, 5.0])])
    trial = study.ask()
    on_validation = _reporter(trial, ObjectiveSpec(kind="quality"), rounds=1, last_step=100)
    row = {"step": 20, "minutes": 2.0, M.VAL_ALIGNED: 1.0, M.FREE_MCD_DTW: 8.0,
           "items": {"aligned": [1.0] * 4, "mcd_dtw_db": [7.0, 8.0, 9.0, 8.0]}}
    assert on_validation(row) is True
    attrs = study.trials[-1].user_attrs
    assert attrs[CURVE] == [point(2.0, 20, 8.0, [7.0, 8.0, 9.0, 8.0])]
    assert "4 of 4 items" in attrs["pruned_reason"]


@pytest.mark.parametrize("space, message", [
    ({"objective": {"kind": "time_to_speak"}}, "objective.kind quality"),
    ({"objective": {"metric": "val/mel_post"}}, "val/mel_post"),
])
def test_wilcoxon_needs_a_quality_objective_with_per_item_figures(space, message):
    with pytest.raises(ValueError, match="pruner.type wilcoxon") as err:
        SearchSpace.model_validate({"params": PARAMS, "pruner": {"type": "wilcoxon"}, **space})
    assert message in str(err.value)


def test_rows_take_training_minutes_and_items_written_in_an_earlier_poll():
    pending: dict = {}
    first = [{"time": 100.0, "step": 4, "kind": "items", "tag": "free",
              "values": {"mcd_dtw_db": [6.0, 7.0]}}]
    assert validation_rows(first, M.VAL_MEL_POST, 40.0, pending) == []
    second = [{"time": 130.0, "step": 4, "kind": "scalars",
               "values": {M.VAL_MEL_POST: 1.5, M.TRAIN_MINUTES: 0.25}}]
    (row,) = validation_rows(second, M.VAL_MEL_POST, 40.0, pending)
    assert row["minutes"] == 0.25  # the trainer's minutes, not the 1.5 since the first event
    assert row["items"] == {"mcd_dtw_db": [6.0, 7.0]} and pending == {}


def test_training_writes_each_rounds_items_and_minutes(tiny_data, tmp_path):
    from tacotrain.config import load_config

    cfg = load_config("tiny", ["train.val_interval=2", "train.val_free_run_items=2",
                               "track.tensorboard=false", "train.threads=1"])
    result = Trainer(cfg, tiny_data, tmp_path / "run", progress=False).fit(max_steps=4)
    events = [json.loads(ln) for ln in (tmp_path / "run" / "events.jsonl").read_text()
              .splitlines()]
    items = {e["step"]: e["values"] for e in events if e["kind"] == "items"}
    rows = validation_rows(events, M.VAL_MEL_POST, None)
    assert sorted(items) == [2, 4] == [r["step"] for r in rows]
    for r, h in zip(rows, result.history, strict=True):
        assert len(r["items"]["mcd_dtw_db"]) == 2 == len(r["items"]["aligned"])
        assert r["minutes"] == pytest.approx(h.minutes, abs=1e-3)  # the history's own minutes
        assert sum(r["items"]["mcd_dtw_db"]) / 2 == pytest.approx(r[M.FREE_MCD_DTW], rel=1e-5)


def test_a_pruner_named_on_the_command_line_obeys_the_same_rules(tiny_data, tmp_path, capsys):
    import yaml

    from tacotrain.cli import main

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": PARAMS, "objective": {"kind": "time_to_speak"}}))
    code = main(["tune", "--config", "tiny", "--data", str(tiny_data), "--study", "s",
                 "--trials", "1", "--out", str(tmp_path / "o"), "--space", str(space),
                 "--pruner", "wilcoxon"])
    assert code == 2
    assert "pruner.type wilcoxon" in capsys.readouterr().err
    assert not (tmp_path / "o" / "trials").exists()
