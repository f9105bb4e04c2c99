from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tacotrain.cli import main
from tacotrain.config import EarlyStopConfig, GuardConfig, InterventionConfig, PhaseConfig
from tacotrain.infer.checkpoint import load_checkpoint, state_hash
from tacotrain.train.early_stop import EarlyStopper
from tacotrain.train.guard import Guard
from tacotrain.train.inject import InjectError, parse
from tacotrain.train.trainer import GuardStop, Trainer

from conftest import guard_log, tiny_cfg


def test_inject_syntax():
    inj = parse("nan@12,15; spike@20-24;nan@30+")
    assert [s for s in range(40) if inj.active("nan", s)] == [12, 15, *range(30, 40)]
    assert [s for s in range(40) if inj.active("spike", s)] == [20, 21, 22, 23, 24]
    assert inj.active("nan", 10**6) and not inj.active("crash", 12)
    for bad in ("nan12", "boom@3", "nan@5-2", "nan@x"):
        with pytest.raises(InjectError):
            parse(bad)


def test_single_nan_skips_the_update_and_changes_no_weight(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TACOTRAIN_INJECT", "nan@5")
    tr = Trainer(tiny_cfg(), tiny_data, tmp_path / "r", progress=False)
    tr.fit(max_steps=4)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    opt_before = {k: v.clone() for k, v in tr.optimizer.state_dict()["state"][0].items()}
    batch = tr.collate([tr.train_set[i] for i in range(4)])
    decision, m = tr.train_step(batch)  # iteration 5: injected NaN
    assert decision.action == "skip" and math.isnan(m["train/loss"])
    assert tr.step == 4 and tr.iteration == 5
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in tr.optimizer.state_dict()["state"][0].items():
        assert torch.equal(v, opt_before[k]), k


def test_single_nan_in_a_full_run_is_logged(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TACOTRAIN_INJECT", "nan@5")
    res = Trainer(tiny_cfg(), tiny_data, tmp_path / "r", progress=False).fit(max_steps=8)
    assert res.step == 8 and res.stop_reason == "max_steps"
    log = guard_log(tmp_path / "r")
    assert [(r["action"], r["iteration"], r["step"]) for r in log] == [("skip", 5, 4)]
    assert "non-finite" in log[0]["cause"]
    assert all(torch.isfinite(v).all() for v in load_checkpoint(
        tmp_path / "r" / "checkpoints" / "step-0000008.pt")["model"].values()
        if v.is_floating_point())


def test_loss_blowup_one_rollback_lr_lowered_once(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TACOTRAIN_INJECT", "spike@13-17")
    cfg = tiny_cfg("train.val_interval=5", "train.keep_last=10", "guard.snapshot_interval=5",
                   "guard.spike_window=10", "guard.spike_patience=3")
    res = Trainer(cfg, tiny_data, tmp_path / "r", progress=False).fit(max_steps=20)
    log = guard_log(tmp_path / "r")
    assert [r["action"] for r in log] == ["skip", "skip", "rollback", "skip", "skip"]
    rb = log[2]
    assert rb["iteration"] == 15 and rb["from_step"] == 12 and rb["to_step"] == 10
    assert (rb["before"], rb["after"]) == (1.0, 0.5) and "spike" in rb["cause"]
    # the restored state is exactly the good state of step 10 (also checkpointed then)
    ck10 = load_checkpoint(tmp_path / "r" / "checkpoints" / "step-0000010.pt")
    assert rb["restored_model_sha256"] == state_hash(ck10["model"])
    assert res.step == 20 and res.stop_reason == "max_steps"
    final = load_checkpoint(tmp_path / "r" / "checkpoints" / "step-0000020.pt")
    # 20 good steps + 5 skipped + the 2 steps (11, 12) redone after the rollback
    assert final["iteration"] == 27 and final["lr_scale"] == 0.5
    assert final["schedule"]["lr"] == pytest.approx(0.5 * 1e-3)
    assert all(torch.isfinite(v).all() for v in final["model"].values()
               if v.is_floating_point())


def test_permanent_nan_stops_after_rollback_cap_and_last_checkpoint_resumes(
        tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TACOTRAIN_INJECT", "nan@7+")
    run = tmp_path / "r"
    code = main(["train", "--config", "tiny", "--data", str(tiny_data), "--out", str(run),
                 "--max-steps", "12", "--quiet", "--set", "train.val_interval=3",
                 "--set", "guard.max_rollbacks=2", "--set", "train.threads=1"])
    assert code == 3
    err = capsys.readouterr().err
    assert "stopped by the guard at step 6" in err and "non-finite" in err
    log = guard_log(run)
    assert [r["action"] for r in log].count("rollback") == 2 and log[-1]["action"] == "stop"
    result = json.loads((run / "train_result.json").read_text())
    assert result["stop_reason"] == "guard" and result["step"] == 6
    ck = load_checkpoint(run / "checkpoints" / "step-0000006.pt")
    assert ck["step"] == 6
    monkeypatch.delenv("TACOTRAIN_INJECT")
    resumed = Trainer(tiny_cfg(), tiny_data, run, resume=True, progress=False)
    assert resumed.step == 6
    assert resumed.fit(max_steps=9).step == 9


def test_guard_rejects_unwired_parameter():
    with pytest.raises(ValueError, match="not wired"):
        InterventionConfig(name="x", metric="free/diagonality", compare="<", threshold=0.5,
                           parameter="model.attention_dim", value=1, min=0, max=2)
    with pytest.raises(ValueError, match="outside"):
        InterventionConfig(name="x", metric="free/diagonality", compare="<", threshold=0.5,
                           parameter="optim.lr", value=1, min=0, max=0.5)


def _intervention(**kw) -> InterventionConfig:
    base = dict(name="ga", metric="free/diagonality", compare="<", threshold=0.6,
                not_before_step=0, parameter="loss.guided_attention.weight", value=20.0,
                min=0.0, max=30.0, cooldown_steps=100, probation_steps=50,
                min_improvement=0.05, max_count=3)
    base.update(kw)
    return InterventionConfig(**base)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=80),
       gaps=st.lists(st.integers(1, 80), min_size=80, max_size=80),
       cooldown=st.integers(1, 200), probation=st.integers(1, 150), max_count=st.integers(1, 4),
       compare=st.sampled_from(["<", ">"]), min_imp=st.floats(0.0, 0.3))
def test_interventions_property(values, gaps, cooldown, probation, max_count, compare, min_imp):
    iv = _intervention(cooldown_steps=cooldown, probation_steps=probation, max_count=max_count,
                       compare=compare, min_improvement=min_imp, threshold=0.5)
    g = Guard(GuardConfig(interventions=[iv]))
    current: dict[str, float | None] = {"loss.guided_attention.weight": None}
    step, triggers, active = 0, [], None
    for value, gap in zip(values, gaps, strict=False):
        step += gap
        for ch in g.observe(step, {"free/diagonality": value}, dict(current)):
            if ch.kind == "apply":
                assert active is None
                triggers.append(step)
                active = ch
            else:
                assert active is not None and step - active.step >= probation
                gain = value - active.metric_value if compare == "<" else \
                    active.metric_value - value
                helpful = gain >= min_imp and gain > 0
                assert ch.kind == ("keep" if helpful else "revert")
                if ch.kind == "revert":
                    assert ch.after == active.before  # back to what it was
                active = None
            current[ch.parameter] = ch.after if ch.kind != "keep" else current[ch.parameter]
            v = current[ch.parameter]
            assert v is None or iv.min <= v <= iv.max
    assert len(triggers) <= max_count
    assert all(b - a >= cooldown for a, b in zip(triggers, triggers[1:], strict=False))


def test_intervention_applied_and_reverted_in_a_real_run(tiny_data, tmp_path):
    cfg = tiny_cfg("train.val_interval=3")
    cfg.guard.interventions = [_intervention(threshold=2.0, probation_steps=3,
                                             cooldown_steps=100, min_improvement=5.0,
                                             max_count=1)]
    Trainer(cfg, tiny_data, tmp_path / "r", progress=False).fit(max_steps=9)
    log = [r for r in guard_log(tmp_path / "r") if r["action"].startswith("intervention")]
    assert [r["action"] for r in log] == ["intervention_apply", "intervention_revert"]
    assert log[0]["step"] == 3 and log[0]["after"] == 20.0 and log[1]["after"] is None
    events = [json.loads(x) for x in (tmp_path / "r" / "events.jsonl").read_text().splitlines()]
    ga = {e["step"]: e["values"]["train/ga_weight"] for e in events
          if e["kind"] == "scalars" and "train/ga_weight" in e["values"]}
    assert ga[3] == 10.0 and ga[4] == ga[6] == 20.0 and ga[7] == 10.0


def _stopper(**kw) -> EarlyStopper:
    cfg = EarlyStopConfig(
        enabled=True,
        alignment=PhaseConfig(metric="free/mcd_dtw_db", mode="min", patience=3, min_delta=0.1),
        learning=PhaseConfig(metric="val/mel_post", mode="min", patience=2, min_delta=0.01),
        fine_tuning=PhaseConfig(metric="val/mel_post", mode="min", patience=2, min_delta=0.0),
        **kw)
    return EarlyStopper(cfg, max_steps=10_000)


def test_early_stop_phases_on_a_scripted_stream():
    s = _stopper()
    # (verdict aligned, free MCD-DTW, val loss): the verdict alone moves alignment -> learning
    stream = [(False, 12.0, 3.0), (False, 11.0, 2.5), (False, 10.5, 2.0), (True, 9.0, 1.9),
              (True, 8.0, 1.5), (True, 8.1, 1.6), (True, 7.9, 1.55), (False, 9.9, 1.2),
              (True, 7.5, 1.45), (True, 7.4, 1.46), (True, 7.3, 1.45)]
    phases, best = [], []
    for k, (aligned, mcd, loss) in enumerate(stream, start=1):
        m = {"free/mcd_dtw_db": mcd, "val/mel_post": loss}
        d = s.update(100 * k, m, aligned)
        phases.append(d.phase)
        if s.is_best(m, aligned):
            s.mark_best(m)
            best.append(100 * k)
        if d.stop:
            break
    # learning plateaus at step 700 (patience 2) and hands over to fine-tuning
    assert phases == ["alignment"] * 3 + ["learning"] * 3 + ["fine_tuning"] * 4
    assert d.stop and d.phase == "fine_tuning" and "fine_tuning phase" in d.reason
    # 1.2 at step 800 is the lowest loss but that round failed the verdict: not best
    assert best == [400, 500, 900] and s.best_loss == 1.45


def test_early_stop_never_aligning_stops_in_alignment_phase():
    s = _stopper()
    decisions = [s.update(k, {"free/mcd_dtw_db": 12.0, "val/mel_post": 3 - k / 10}, False)
                 for k in range(1, 6)]
    stop = next(d for d in decisions if d.stop)
    assert stop.phase == "alignment" and "not aligning" in stop.reason
    assert decisions.index(stop) == 3  # first round sets the best, then 3 without improvement


def test_learning_moves_to_fine_tuning_by_budget_share():
    s = _stopper(fine_tuning_share=0.5)
    s.update(100, {"free/mcd_dtw_db": 8.0, "val/mel_post": 2.0}, True)
    assert s.phase == "learning"
    d = s.update(5000, {"free/mcd_dtw_db": 8.0, "val/mel_post": 1.0}, True)
    assert d.phase == "fine_tuning" and d.phase_changed_from == "learning"


def test_aligned_streak_counts_consecutive_rounds_and_survives_a_resume():
    s = _stopper()
    streaks = []
    for aligned in (True, False, True, True, True):
        s.update(100, {"free/mcd_dtw_db": 8.0, "val/mel_post": 1.0}, aligned)
        streaks.append(s.aligned_streak)
    assert streaks == [1, 0, 1, 2, 3]
    restored = _stopper()
    restored.load_state_dict(s.state_dict())
    assert restored.aligned_streak == 3
    old = {k: v for k, v in s.state_dict().items() if k != "aligned_streak"}
    restored.load_state_dict(old)  # a checkpoint from before the streak was recorded
    assert restored.aligned_streak == 0


@pytest.mark.parametrize("rounds, stop_step", [(1, 6), (2, 15), (3, 18)])
def test_stop_when_aligned_waits_for_consecutive_aligned_rounds(tiny_data, tmp_path,
                                                                 monkeypatch, rounds, stop_step):
    from tacotrain.train.validation import ValidationResult

    # the verdict scripted per validation step (every 3 steps): aligned at 6, 12, 15, 18
    monkeypatch.setattr(ValidationResult, "aligned",
                        property(lambda self: self.step in {6, 12, 15, 18}))
    cfg = tiny_cfg("train.stop_when_aligned=true", f"train.stop_when_aligned_rounds={rounds}")
    res = Trainer(cfg, tiny_data, tmp_path / "r", progress=False).fit(max_steps=30)
    assert res.stop_reason == "aligned" and res.step == stop_step


def test_early_stop_in_a_short_real_run(tiny_data, tmp_path):
    cfg = tiny_cfg("early_stop.enabled=true", "early_stop.alignment.patience=2",
                   "early_stop.alignment.min_delta=100")
    res = Trainer(cfg, tiny_data, tmp_path / "r", progress=False).fit(max_steps=30)
    assert res.step == 9 and res.stop_reason.startswith("early_stop: alignment phase")
    saved = json.loads((tmp_path / "r" / "train_result.json").read_text())
    assert saved["phase"] == "alignment" and [h["phase"] for h in saved["history"]] == \
        ["alignment"] * 3
    assert not (tmp_path / "r" / "checkpoints" / "best.pt").exists()  # never aligned


def test_guard_stop_exception_message(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TACOTRAIN_INJECT", "nan@1+")
    tr = Trainer(tiny_cfg("guard.max_rollbacks=0"), tiny_data, tmp_path / "r", progress=False)
    with pytest.raises(GuardStop, match="step 0"):
        tr.fit(max_steps=5)
