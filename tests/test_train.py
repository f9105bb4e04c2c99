from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tacotrain.cli import main
from tacotrain.config import ConfigError, GuidedAttentionConfig, OptimConfig, load_config
from tacotrain.infer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tacotrain.infer.synth import Synthesizer
from tacotrain.train.schedules import ga_weight_at, lr_at
from tacotrain.train.trainer import StopRequested, Trainer

from conftest import checkpoint_weights, tiny_cfg, wait_for_file


def test_lr_schedule_warmup_then_decay():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, decay="exponential", decay_start=100,
                      decay_steps=50, decay_rate=0.5, min_lr=1e-4)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(50, cfg) == pytest.approx(1e-3)
    assert lr_at(150, cfg) == pytest.approx(5e-4)
    assert lr_at(10_000, cfg) == pytest.approx(1e-4)
    cos = cfg.model_copy(update={"decay": "cosine"})
    assert lr_at(125, cos) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr_at(10_000, cos) == pytest.approx(1e-4)


def test_guided_attention_schedule_bounded():
    cfg = GuidedAttentionConfig(initial_weight=20, decay_start=100, decay_steps=100,
                                decay_rate=0.5, floor=2.0, max_weight=50)
    assert ga_weight_at(0, cfg) == ga_weight_at(99, cfg) == 20
    assert ga_weight_at(200, cfg) == pytest.approx(10)
    assert ga_weight_at(100_000, cfg) == 2.0
    assert ga_weight_at(5, cfg.model_copy(update={"enabled": False})) == 0.0
    with pytest.raises(ValueError, match="max_weight"):
        GuidedAttentionConfig(initial_weight=60, max_weight=50)
    with pytest.raises(ConfigError, match="max_weight"):
        load_config("tiny", ["loss.guided_attention.initial_weight=500"])


def test_entropy_weight_schedule():
    from tacotrain.config import AttentionEntropyConfig
    from tacotrain.train.schedules import entropy_weight_at

    cfg = AttentionEntropyConfig(weight=0.4, start=100, ramp_steps=50)
    assert entropy_weight_at(99, cfg) == 0.0
    assert entropy_weight_at(124, cfg) == pytest.approx(0.2)
    assert entropy_weight_at(10_000, cfg) == pytest.approx(0.4)
    assert entropy_weight_at(10_000, AttentionEntropyConfig()) == 0.0


def test_config_overrides_are_validated():
    cfg = load_config("small", ["optim.lr=5e-4", "model.n_frames_per_step=2"])
    assert cfg.optim.lr == 5e-4 and cfg.model.n_frames_per_step == 2
    assert cfg.model.decoder_rnn_dim == 256  # from the preset
    with pytest.raises(ConfigError, match=r"optim.lrr: unknown key .*did you mean optim.lr\?"):
        load_config("small", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"modle: unknown key .*did you mean model\?"):
        load_config("small", ["modle.x=1"])
    with pytest.raises(ConfigError) as err:  # nothing close: no guess
        load_config("small", ["train.zzzzqqq=1"])
    assert "did you mean" not in str(err.value) and "tacotrain/config.py" in str(err.value)
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config("small", ["train.batch_size=0"])
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("nonexistent")
    assert load_config("default").model.decoder_rnn_dim == 1024


def test_resume_is_exact(tiny_data, tmp_path):
    cfg = tiny_cfg()
    whole = Trainer(cfg, tiny_data, tmp_path / "whole", progress=False)
    res = whole.fit(max_steps=8)
    assert res.step == 8
    half = Trainer(cfg, tiny_data, tmp_path / "half", progress=False)
    half.fit(max_steps=4)  # stops mid-epoch (3 batches per epoch at batch 4 of 12 items)
    again = Trainer(cfg, tiny_data, tmp_path / "half", resume=True, progress=False)
    assert again.step == 4
    again.fit(max_steps=8)
    a, b = checkpoint_weights(tmp_path / "whole"), checkpoint_weights(tmp_path / "half")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the weights did change during training
    fresh = Trainer(cfg, tiny_data, tmp_path / "fresh", progress=False).model.state_dict()
    assert any(not torch.equal(fresh[k].cpu(), a[k]) for k in a if a[k].is_floating_point())


def test_stop_request_stops_between_updates_and_resume_is_exact(tiny_data, tmp_path):
    """request_stop (what Ctrl-C / SIGTERM call) in the middle of update 5: the update
    completes, step 5 is checkpointed (not a validation step), and resuming from it gives the
    uninterrupted run's weights bit for bit."""
    cfg = tiny_cfg()
    Trainer(cfg, tiny_data, tmp_path / "whole", progress=False).fit(max_steps=8)
    half = Trainer(cfg, tiny_data, tmp_path / "half", progress=False)
    real_step = half.train_step

    def step_and_ask(batches):
        out = real_step(batches)
        if half.iteration == 5:
            half.request_stop()
        return out

    half.train_step = step_and_ask
    with pytest.raises(StopRequested) as stopped:
        half.fit(max_steps=8)
    assert stopped.value.checkpoint == tmp_path / "half" / "checkpoints" / "step-0000005.pt"
    result = json.loads((tmp_path / "half" / "train_result.json").read_text())
    assert (result["stop_reason"], result["step"]) == ("interrupted", 5)
    again = Trainer(cfg, tiny_data, tmp_path / "half", resume=True, progress=False)
    assert again.step == 5
    again.fit(max_steps=8)
    a, b = checkpoint_weights(tmp_path / "whole"), checkpoint_weights(tmp_path / "half")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ctrl_c_on_the_command_line_checkpoints_and_exits_130(tiny_data, tmp_path):
    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "tacotrain", "train", "--config", "tiny",
                             "--data", str(tiny_data), "--out", str(run), "--max-steps", "500",
                             "--quiet", "--set", "train.val_interval=3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_file(run / "checkpoints" / "step-0000003.pt", proc)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    result = json.loads((run / "train_result.json").read_text())
    newest = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    assert result["stop_reason"] == "interrupted"
    assert newest.name == f"step-{result['step']:07d}.pt"
    assert load_checkpoint(newest)["step"] == result["step"] >= 3
    assert "stop requested" in out and f"resume from {newest}" in out


def test_interrupt_inside_an_update_writes_no_checkpoint_of_it(tiny_data, tmp_path):
    """A KeyboardInterrupt while the optimiser is applying update 5 (a half-updated model):
    no checkpoint of that state; the newest stays the validation checkpoint of step 3."""
    run = tmp_path / "r"
    tr = Trainer(tiny_cfg(), tiny_data, run, progress=False)
    real_opt_step = tr.scaler.step

    def opt_step(optimizer):
        if tr.iteration == 5:
            raise KeyboardInterrupt
        return real_opt_step(optimizer)

    tr.scaler.step = opt_step
    with pytest.raises(KeyboardInterrupt):
        tr.fit(max_steps=8)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.pt")) == ["step-0000003.pt"]
    result = json.loads((run / "train_result.json").read_text())
    assert result["stop_reason"] == "interrupted"
    assert load_checkpoint(run / "checkpoints" / "step-0000003.pt")["step"] == 3


def test_run_dir_never_silently_overwritten(tiny_data, tmp_path):
    cfg = tiny_cfg()
    Trainer(cfg, tiny_data, tmp_path / "r", progress=False).fit(max_steps=1)
    assert main(["train", "--config", "tiny", "--data", str(tiny_data), "--out",
                 str(tmp_path / "r"), "--max-steps", "2", "--quiet"]) == 1
    assert main(["train", "--config", "tiny", "--data", str(tmp_path / "nodata"), "--out",
                 str(tmp_path / "r2"), "--quiet"]) == 1


def test_training_logs_metrics_and_checkpoint_is_self_describing(tiny_data, tmp_path):
    cfg = tiny_cfg("train.keep_last=2")
    res = Trainer(cfg, tiny_data, tmp_path / "r", progress=False).fit(max_steps=9)
    run = tmp_path / "r"
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step-*.pt"))
    assert ckpts == ["step-0000006.pt", "step-0000009.pt"]  # keep_last=2
    # each with its summary sidecar; the pruned ones' went with them
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-0000006.pt", "step-0000006.pt.json", "step-0000009.pt", "step-0000009.pt.json"]
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    scal = [e for e in events if e["kind"] == "scalars"]
    train_steps = [e["step"] for e in scal if "train/loss" in e["values"]]
    assert train_steps == list(range(1, 10))
    val = [e["values"] for e in scal if "val/mel_post" in e["values"]]
    assert len(val) == 3
    for key in ("free/diagonality", "free/focus", "free/coverage", "free/monotonicity",
                "free/stopped_by_gate", "free/aligned_share", "free/skipped_share",
                "free/identified_share", "val/diagonality", "val/gate"):
        assert all(0.0 <= v[key] <= 1.0 or key == "val/gate" for v in val), key
    # an untrained model does not read: the verdict says so, with reasons, in every round
    assert all(v["free/aligned"] == 0.0 and v["free/mcd_dtw_db"] > 0 for v in val)
    first = scal[0]["values"]
    assert first["train/lr"] == pytest.approx(lr_at(0, cfg.optim))
    assert first["train/ga_weight"] == 10.0 and first["train/grad_norm"] > 0
    assert {e["tag"] for e in events if e["kind"] == "image"} >= {
        "val/alignment_free_run", "val/alignment_teacher_forced", "val/mel"}
    assert list((run / "tb").glob("events.out.tfevents.*"))
    ck = load_checkpoint(run / "checkpoints" / "step-0000009.pt")
    assert ck["step"] == 9 and ck["config"]["model"]["n_frames_per_step"] == 2
    assert ck["data"]["language"] == "en" and ck["data"]["audio"]["n_mels"] == 80
    assert set(ck) >= {"model", "optimizer", "scaler", "rng", "schedule"}
    assert ck["verdict"]["step"] == 9 and ck["verdict"]["aligned"] is False
    assert len(ck["verdict"]["items"]) == 2 and all(i["reasons"] for i in ck["verdict"]["items"])
    assert res.last_val["val/mel_post"] > 0


def test_checkpoint_checksum_and_killed_write_leaves_previous(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.arange(5.0)})
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(bad)
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)

    started = tmp_path / "started"
    child = f"""
import os, sys, time, torch
from pathlib import Path
import tacotrain.fsutil as fs
def slow_fsync(fd):
    Path({str(started)!r}).touch()
    time.sleep(60)
fs.os.fsync = slow_fsync
from tacotrain.infer.checkpoint import save_checkpoint
save_checkpoint({str(path)!r}, {{"w": torch.zeros(2_000_000)}})
"""
    proc = subprocess.Popen([sys.executable, "-c", child], env={**os.environ})
    try:
        deadline = time.time() + 60
        while not started.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert started.exists(), "child never reached the write"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(5.0))


def test_synth_writes_wav_json_png(tiny_data, tmp_path, capsys):
    Trainer(tiny_cfg(), tiny_data, tmp_path / "r", progress=False).fit(max_steps=3)
    ckpt = sorted((tmp_path / "r" / "checkpoints").glob("step-*.pt"))[-1]
    out = tmp_path / "x.wav"
    assert main(["synth", "--checkpoint", str(ckpt), "--text", "A red boat, 2 keys.",
                 "--out", str(out)]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert set(info) >= {"frames", "seconds", "stopped_by_gate", "diagonality", "focus",
                         "coverage", "monotonicity", "synthesis_seconds", "rtf"}
    assert info["text"] == "a red boat, two keys."
    import soundfile as sf

    wav, sr = sf.read(out)
    assert sr == 22050 and abs(len(wav) / sr - info["seconds"]) < 0.05
    # an untrained model rarely stops: the step limit scales with the text length
    limit = Synthesizer.from_checkpoint(ckpt).model.step_limits(torch.tensor([21]))
    assert info["frames"] <= int(limit[0]) * 2
    assert out.with_suffix(".png").stat().st_size > 1000
    lines = tmp_path / "lines.txt"
    lines.write_text("First one.\n\nSecond one.\n")
    assert main(["synth", "--checkpoint", str(ckpt), "--text-file", str(lines),
                 "--out", str(tmp_path / "many")]) == 0
    assert sorted(p.name for p in (tmp_path / "many").glob("*.wav")) == ["0001.wav", "0002.wav"]
    assert main(["synth", "--checkpoint", str(ckpt), "--text", "Привет", "--out",
                 str(tmp_path / "y.wav")]) == 1
    assert "symbol set" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [[], ["prepare"], ["corpus", "mini"], ["train"], ["synth"],
                                 ["demo"]])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: tacotrain" in capsys.readouterr().out
