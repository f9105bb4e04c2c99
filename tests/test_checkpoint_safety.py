"""Checkpoint safety: weights-only loading (``--trust-checkpoint`` for anything else), the
``--resume`` fallback past checkpoints that do not load, and the guard stop that writes the last
good in-memory state as a checkpoint, from which resuming is exact."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tacotrain.cli import main
from tacotrain.config import Config, load_config
from tacotrain.infer.checkpoint import (
    FORMAT,
    MAGIC,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    numpy_rng_from_saved,
    save_checkpoint,
)
from tacotrain.model.reduction import r_at
from tacotrain.train.trainer import GuardStop, Trainer

from conftest import tiny_cfg

# tiny_cfg() as --set flags, for runs through the CLI that must match it
TINY_SETS = ["train.val_interval=3", "train.log_interval=1", "train.val_free_run_items=2",
             "train.threads=1"]
# the guard runs: checkpoints every 20 steps, snapshots every 5, one rollback allowed
GUARD_SETS = ["train.val_interval=20", "guard.snapshot_interval=5", "guard.max_rollbacks=1",
              "train.val_free_run_items=2", "train.threads=1"]


class Marker:
    """A class of this test module: unpickling it needs more than tensors and plain values."""

    def __init__(self, value: int) -> None:
        self.value = value


class RunsCode:
    """Unpickling it calls ``open(path, "w")``: the file appearing proves code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def write_raw(path: Path, payload: dict[str, Any]) -> None:
    """A file in the checkpoint format (magic, SHA-256, torch.save payload) holding anything:
    save_checkpoint itself refuses such payloads."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(data).hexdigest().encode() + data)


def flip_bytes(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0xFF
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def cli_sets(sets: list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_same_tensors(a: Any, b: Any, where: str = "") -> None:
    """Nested states equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    """A 4-step run of tiny_cfg(): checkpoints at steps 3 and 4. Read-only: copy it to change."""
    run = tmp_path_factory.mktemp("trained") / "run"
    Trainer(tiny_cfg(), tiny_data, run, progress=False).fit(max_steps=4)
    return run


@pytest.fixture(scope="module")
def clean_guard_run(tiny_data, tmp_path_factory) -> Path:
    """The guard runs' settings without any fault, 8 steps, checkpoints at 5 and 8 (validation
    never changes what training does, so the extra round at step 5 changes no weight)."""
    run = tmp_path_factory.mktemp("clean") / "run"
    cfg = load_config("tiny", [*GUARD_SETS, "train.val_interval=5"])
    Trainer(cfg, tiny_data, run, progress=False).fit(max_steps=8)
    return run


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:07d}.pt"


# ---------------------------------------------------------------------- weights-only loading
def test_pickled_object_is_refused_without_trust(trained, tiny_data, tmp_path, capsys):
    ck = load_checkpoint(ckpt(trained, 4))
    ck["extra"] = Marker(7)
    odd = tmp_path / "odd.pt"
    write_raw(odd, ck)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(odd)
    msg = str(err.value)
    assert msg.startswith(str(odd)) and "pickled Python objects" in msg
    assert "test_checkpoint_safety.Marker" in msg and "can run code" in msg
    assert "--trust-checkpoint" in msg
    trusted = load_checkpoint(odd, trust=True)
    assert isinstance(trusted["extra"], Marker) and trusted["extra"].value == 7
    assert torch.equal(trusted["model"]["embedding.weight"], ck["model"]["embedding.weight"])

    # a payload whose unpickling would run code is refused before any of it runs
    ran = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    write_raw(evil, {"w": torch.zeros(2), "x": RunsCode(ran)})
    with pytest.raises(CheckpointError, match=r"(builtins|io)\.open"):
        load_checkpoint(evil)
    assert not ran.exists()
    # numpy's numeric arrays are allowed (older checkpoints), object arrays are not
    write_raw(tmp_path / "objarr.pt", {"a": np.array([Marker(1)], dtype=object)})
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_checkpoint(tmp_path / "objarr.pt")

    wav = tmp_path / "x.wav"
    assert main(["synth", "--checkpoint", str(odd), "--text", "A red boat.", "--out",
                 str(wav), "--device", "cpu"]) == 1
    out = capsys.readouterr().err
    assert "pickled Python objects" in out and "--trust-checkpoint" in out
    assert not wav.exists()
    assert main(["eval", "--checkpoint", str(odd), "--data", str(tiny_data), "--out",
                 str(tmp_path / "eval"), "--device", "cpu", "--no-asr", "--quiet"]) == 1
    assert "--trust-checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "eval" / "report.json").exists()
    assert main(["synth", "--checkpoint", str(odd), "--text", "A red boat.", "--out",
                 str(wav), "--device", "cpu", "--trust-checkpoint"]) == 0
    assert json.loads(wav.with_suffix(".json").read_text())["frames"] > 0


def test_save_refuses_values_that_would_need_unpickling(tmp_path):
    with pytest.raises(TypeError, match=r"payload\.rng\.x is a numpy\.float64"):
        save_checkpoint(tmp_path / "c.pt", {"rng": {"x": np.float64(1.0)}})
    with pytest.raises(TypeError, match=r"payload\.m is a .*Marker"):
        save_checkpoint(tmp_path / "c.pt", {"m": Marker(1)})
    assert not (tmp_path / "c.pt").exists()


def test_trainer_checkpoint_loads_weights_only_and_older_numpy_state_resumes_exactly(
        trained, tiny_data, tmp_path):
    # what the trainer writes needs no allow-listing at all
    data = ckpt(trained, 4).read_bytes()[len(MAGIC) + 64:]
    raw = torch.load(io.BytesIO(data), weights_only=True)
    keys = raw["rng"]["numpy"]["keys"]
    assert keys.dtype == torch.int64 and keys.shape == (624,)

    # a checkpoint of the previous format held np.random.get_state() itself (an ndarray)
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ck = load_checkpoint(ckpt(run, 4))
    old_state = numpy_rng_from_saved(ck["rng"]["numpy"])
    assert isinstance(old_state[1], np.ndarray) and old_state[1].dtype == np.uint32
    ck["rng"]["numpy"] = old_state
    write_raw(ckpt(run, 4), ck)
    back = load_checkpoint(ckpt(run, 4))  # trust=False
    assert np.array_equal(back["rng"]["numpy"][1], old_state[1])

    np.random.seed(12345)  # something else, so that the resume must set it
    resumed = Trainer(tiny_cfg(), tiny_data, run, resume=True, progress=False)
    now = np.random.get_state()
    assert now[0] == old_state[0] and np.array_equal(now[1], old_state[1])
    assert now[2:] == tuple(old_state[2:])
    assert resumed.step == 4 and resumed.fit(max_steps=6).step == 6
    whole = Trainer(tiny_cfg(), tiny_data, tmp_path / "whole", progress=False)
    whole.fit(max_steps=6)
    assert_same_tensors(load_checkpoint(ckpt(tmp_path / "whole", 6))["model"],
                        load_checkpoint(ckpt(run, 6))["model"], "model")


# ---------------------------------------------------------------------- --resume fallback
def test_resume_skips_a_corrupt_newest_checkpoint(trained, tiny_data, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    original_4 = load_checkpoint(ckpt(run, 4))
    flip_bytes(ckpt(run, 4))
    with caplog.at_level(logging.WARNING, logger="tacotrain.train.trainer"):
        tr = Trainer(tiny_cfg(), tiny_data, run, resume=True, progress=False)
    assert tr.step == 3
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "step-0000004.pt" in warned and "checksum mismatch" in warned
    skipped = run / "checkpoints" / "step-0000004.pt.skipped"
    assert skipped.exists() and not ckpt(run, 4).exists()

    rec = [r for r in read_jsonl(run / "guard.jsonl") if r["action"] == "resume_skip"]
    assert len(rec) == 1
    assert rec[0]["checkpoint"] == str(ckpt(run, 4)) and "checksum mismatch" in rec[0]["cause"]
    assert rec[0]["resumed_from"] == str(ckpt(run, 3)) and rec[0]["moved_to"] == str(skipped)
    assert rec[0]["step"] == 3

    res = tr.fit(max_steps=4)
    assert res.step == 4 and res.stop_reason == "max_steps"
    texts = [json.loads(e["text"]) for e in read_jsonl(run / "events.jsonl")
             if e["kind"] == "text" and e["tag"] == "guard"]
    assert [t["action"] for t in texts] == ["resume_skip"]
    assert texts[0]["checkpoint"] == str(ckpt(run, 4))
    # step 4 again, from step 3: the same weights as the original (now corrupted) step 4
    assert_same_tensors(original_4["model"], load_checkpoint(ckpt(run, 4))["model"], "model")


def test_resume_refuses_when_no_checkpoint_loads(trained, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    good_3 = load_checkpoint(ckpt(run, 3))
    flip_bytes(ckpt(run, 4))  # checksum
    write_raw(ckpt(run, 3), {**good_3, "extra": Marker(3)})  # refused unpickling
    ckpt(run, 2).write_bytes(b"not a checkpoint at all")  # bad header
    ckpt(run, 1).write_bytes(ckpt(run, 4).read_bytes()[:100])  # truncated
    args = ["train", "--config", "tiny", "--data", str(tiny_data), "--out", str(run),
            "--resume", "--max-steps", "4", "--quiet", *cli_sets(TINY_SETS)]
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = {n: next((ln for ln in err.splitlines() if f"step-000000{n}.pt" in ln), "")
             for n in (1, 2, 3, 4)}
    assert "none of the 4 checkpoint(s)" in err
    assert "checksum mismatch" in lines[4] and "checksum mismatch" in lines[1]
    assert "bad header" in lines[2]
    assert "pickled Python objects" in lines[3] and "--trust-checkpoint" in lines[3]
    assert all(ckpt(run, n).exists() for n in (1, 2, 3, 4))  # nothing renamed on a refusal

    # the user trusts the file: --trust-checkpoint reaches the trainer's resume
    assert main([*args, "--trust-checkpoint"]) == 0
    rec = [r for r in read_jsonl(run / "guard.jsonl") if r["action"] == "resume_skip"]
    assert [Path(r["checkpoint"]).name for r in rec] == ["step-0000004.pt"]
    assert rec[0]["resumed_from"] == str(ckpt(run, 3))
    assert load_checkpoint(ckpt(run, 4))["step"] == 4


# ---------------------------------------------------------------------- guard stop
def test_guard_stop_writes_the_last_good_snapshot_and_resume_continues(
        tiny_data, tmp_path, monkeypatch, capsys, clean_guard_run):
    monkeypatch.setenv("TACOTRAIN_INJECT", "nan@8+")
    run = tmp_path / "run"
    base = ["train", "--config", "tiny", "--data", str(tiny_data), "--out", str(run),
            "--quiet", *cli_sets(GUARD_SETS)]
    assert main([*base, "--max-steps", "30"]) == 3
    err = capsys.readouterr().err
    # steps 1-7 good (snapshot at 5), 8-10 non-finite: rollback to 5; 11-13: stop
    assert "stopped by the guard at step 5" in err
    assert f"Last good checkpoint: {ckpt(run, 5)} (written now" in err
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.pt")) == [
        "step-0000005.pt"]
    stop = read_jsonl(run / "guard.jsonl")[-1]
    assert stop["action"] == "stop" and stop["checkpoint"] == str(ckpt(run, 5))
    assert stop["checkpoint_written"] is True and stop["iteration"] == 13
    result = json.loads((run / "train_result.json").read_text())
    assert result["stop_reason"] == "guard" and result["last_checkpoint"] == str(ckpt(run, 5))

    snap = load_checkpoint(ckpt(run, 5))  # weights-only, like every checkpoint
    periodic = load_checkpoint(ckpt(clean_guard_run, 5))
    assert set(snap) == set(periodic)  # a complete checkpoint, no validation result
    assert snap["step"] == 5 and snap["iteration"] == 5 and snap["val"] == {}
    assert snap["guard"]["rollbacks"] == 0 and snap["lr_scale"] == 1.0

    monkeypatch.delenv("TACOTRAIN_INJECT")
    assert main([*base, "--resume", "--max-steps", "8"]) == 0
    # from the snapshot on, exactly the run that never saw a fault
    a, b = load_checkpoint(ckpt(run, 8)), load_checkpoint(ckpt(clean_guard_run, 8))
    assert a["iteration"] == 8
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")


def test_snapshot_stays_good_after_a_rollback(tiny_data, tmp_path, monkeypatch,
                                              clean_guard_run):
    """A rollback restores the snapshot and trains on; those steps must not write into the
    snapshot (the optimiser would otherwise share its tensors), so what the guard stop writes
    later is exactly the state of step 5."""
    monkeypatch.setenv("TACOTRAIN_INJECT", "nan@8-10,14+")
    run = tmp_path / "run"
    cfg = load_config("tiny", GUARD_SETS)
    tr = Trainer(cfg, tiny_data, run, progress=False)
    with pytest.raises(GuardStop, match="stopped by the guard at step 8"):
        tr.fit(max_steps=30)
    actions = [r["action"] for r in read_jsonl(run / "guard.jsonl")]
    assert actions == ["skip", "skip", "rollback", "skip", "skip", "stop"]
    snap = load_checkpoint(ckpt(run, 5))
    good = load_checkpoint(ckpt(clean_guard_run, 5))
    for key in ("model", "optimizer", "scaler", "rng", "step", "iteration", "epoch",
                "batch_in_epoch", "lr_scale", "overrides", "guard", "schedule", "r"):
        assert_same_tensors(snap[key], good[key], key)


# ---------------------------------------------------------------------- the typed schema
def test_the_schema_round_trips_every_field_of_a_training_checkpoint(trained):
    raw = load_checkpoint(ckpt(trained, 4))
    typed = Checkpoint.read(ckpt(trained, 4))
    assert typed.format == FORMAT == raw["format"]
    assert (typed.step, typed.r, typed.world_size) == (4, raw["r"], 1)
    assert typed.data.symbols == raw["data"]["symbols"] and typed.data.language == "en"
    again = typed.to_payload()
    assert list(again) == list(raw)  # same fields, same order
    for key in raw:
        assert_same_tensors(again[key], raw[key], key)


def test_an_older_checkpoint_lacking_newer_fields_still_loads(trained, tmp_path):
    """Files written before world_size, r, rng_ranks and data.phonemes/root existed read with
    the defaults those fields had: one process, r from the schedule, letters."""
    old = load_checkpoint(ckpt(trained, 4))
    for key in ("world_size", "r"):
        del old[key]
    for key in ("phonemes", "root"):
        old["data"].pop(key)
    write_raw(tmp_path / "old.pt", old)
    ck = Checkpoint.read(tmp_path / "old.pt")
    cfg = Config.from_saved(ck.config)
    assert (ck.world_size, ck.r, ck.data.phonemes, ck.rng_ranks) == (1, None, False, None)
    assert ck.reduction(cfg.model) == r_at(4, cfg.model) == cfg.model.n_frames_per_step


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(format=FORMAT + 1), "newer than this version"),
    (lambda p: p.pop("model"), "missing model"),
    (lambda p: p["data"].pop("symbols"), "missing data.symbols"),
])
def test_a_checkpoint_this_version_cannot_read_is_refused_with_the_reason(
        trained, tmp_path, change, message):
    payload = load_checkpoint(ckpt(trained, 4))
    change(payload)
    write_raw(tmp_path / "odd.pt", payload)
    with pytest.raises(CheckpointError, match=message) as err:
        Checkpoint.read(tmp_path / "odd.pt")
    assert str(tmp_path / "odd.pt") in str(err.value)
