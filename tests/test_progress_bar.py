"""The training progress bar counts towards the limit that will actually stop the run."""

from __future__ import annotations

from tacotrain.train.progress import BarLimit, bar_limit
from tacotrain.train.trainer import Trainer

from conftest import tiny_cfg


def test_without_a_time_budget_the_bar_counts_max_steps():
    assert bar_limit(100_000, None, 600.0, 300, 0.5) == BarLimit(100_000, "max_steps 100000")


def test_a_near_time_budget_sets_the_total_to_the_steps_it_allows():
    # the 28-minute demo at 1 step/s, 10 minutes in at step 600: 18 minutes (1080 steps) left
    lim = bar_limit(100_000, 28 * 60, 600.0, 600, 1.0)
    assert lim == BarLimit(1680, "time budget 10.0/28 min")
    # measured faster later: the total follows the speed
    assert bar_limit(100_000, 28 * 60, 1200.0, 1400, 2.0).total == 1400 + 480 * 2
    # a part of a step left: that step still runs (the budget is checked after a step)
    assert bar_limit(100_000, 28 * 60, 1679.5, 1690, 1.0).total == 1691
    # out of time: the total is where the run is
    assert bar_limit(100_000, 28 * 60, 1700.0, 1690, 1.0).total == 1690


def test_before_the_speed_is_measured_the_total_is_unknown():
    assert bar_limit(100_000, 28 * 60, 0.0, 0, None) == BarLimit(None, "time budget 0.0/28 min")


def test_max_steps_nearer_than_the_budget():
    lim = bar_limit(500, 120 * 60, 60.0, 100, 2.0)
    assert lim == BarLimit(500, "max_steps 500 (before the time budget, 1.0/120 min)")


def test_fit_shows_the_time_budget_on_the_bar(tiny_data, tmp_path, capsys):
    cfg = tiny_cfg("train.time_budget_minutes=30", "train.val_interval=100")
    Trainer(cfg, tiny_data, tmp_path / "run", progress=True).fit(max_steps=2)
    err = capsys.readouterr().err
    assert "alignment | max_steps 2 (before the time budget, 0.0/30 min)" in err
    assert "max_steps 100000" not in err
