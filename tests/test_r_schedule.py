"""Gradual training: the reduction-factor schedule (model.r_schedule) in config, model, trainer,
checkpoints and synthesis."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from tacotrain.config import ConfigError, ModelConfig, load_config
from tacotrain.data.loader import Collate
from tacotrain.infer.checkpoint import load_checkpoint, save_checkpoint
from tacotrain.infer.synth import Synthesizer
from tacotrain.model import Tacotron2
from tacotrain.model.reduction import r_at
from tacotrain.train.trainer import Trainer

from conftest import checkpoint_weights, force_gate, tiny_cfg

N_SYMBOLS, N_MELS = 30, 16


def tiny_model(**over: object) -> Tacotron2:
    torch.manual_seed(0)
    cfg = ModelConfig.model_validate({**load_config("tiny").model.model_dump(), **over})
    return Tacotron2(cfg, N_SYMBOLS, N_MELS)


def inputs(text_lengths: list[int], mel_lengths: list[int], width: int):
    """A random padded batch: text [B, N], text lengths, mels [B, N_MELS, width], mel lengths."""
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1, N_SYMBOLS, (len(text_lengths), max(text_lengths)), generator=g)
    mels = torch.randn(len(text_lengths), N_MELS, width, generator=g)
    for i, (n, t) in enumerate(zip(text_lengths, mel_lengths, strict=True)):
        text[i, n:] = 0
        mels[i, :, t:] = 0.0
    return text, torch.tensor(text_lengths), mels, torch.tensor(mel_lengths)


SCHEDULE = ["model.n_frames_per_step=4", "model.r_schedule=[[0,4],[3,2]]"]
# quick runs: no free-running validation, no TensorBoard, a short synthesis
FAST = ["train.val_free_run_items=0", "track.tensorboard=false", "model.max_decoder_steps=30"]


def test_r_at_boundaries():
    cfg = ModelConfig(n_frames_per_step=5, r_schedule=[[0, 5], [10, 3], [25, 1]])
    assert [r_at(s, cfg) for s in (0, 1, 9)] == [5, 5, 5]
    assert [r_at(s, cfg) for s in (10, 11, 24)] == [3, 3, 3]
    assert [r_at(s, cfg) for s in (25, 26, 10**6)] == [1, 1, 1]
    # no schedule: n_frames_per_step at every step
    assert {r_at(s, ModelConfig(n_frames_per_step=3)) for s in (0, 7, 10**6)} == {3}


@pytest.mark.parametrize("overrides, message", [
    (["model.r_schedule=[[1,2]]"], "must start at step 0"),
    (["model.r_schedule=[[0,2],[5,1],[5,2]]"], "strictly increasing"),
    (["model.r_schedule=[[0,2],[7,1],[3,2]]"], "strictly increasing"),
    (["model.n_frames_per_step=8", "model.r_schedule=[[0,9],[4,8]]"], "r must be in 1..8"),
    (["model.r_schedule=[[0,2],[4,0]]"], "r must be in 1..8"),
    (["model.r_schedule=[[0,4],[3,2]]"], r"n_frames_per_step \(2\) must equal the largest r"),
    (["model.r_schedule=[[0,2,3]]"], "model.r_schedule"),
])
def test_schedule_validation(overrides, message):
    with pytest.raises(ConfigError, match=message) as exc:
        load_config("tiny", overrides)
    assert "model.r_schedule" in str(exc.value)


def test_empty_schedule_keeps_the_model_as_before():
    cfg = load_config("tiny")
    assert cfg.model.r_schedule == []
    m = Tacotron2(cfg.model, N_SYMBOLS, N_MELS)
    assert m.r == 2 and m.decoder.max_r == 2
    assert tuple(m.decoder.linear_projection.linear_layer.weight.shape)[0] == N_MELS * 2
    assert tuple(m.decoder.gate_layer.linear_layer.weight.shape)[0] == 2
    assert load_config("tiny", SCHEDULE).model.r_schedule == [(0, 4), (3, 2)]


def test_set_r_forward_uses_first_slots_and_ceil_steps():
    model = tiny_model(n_frames_per_step=4)
    model.eval()
    text, tl, mels, ml = inputs([7, 4], [11, 6], 12)
    with torch.no_grad():
        full = model(text, tl, mels, ml)
        model.set_r(2)
        assert model.r == 2 and model.decoder.r == 2
        half = model(text, tl, mels, ml)
    assert full.alignments.shape[1] == 3  # ceil(11 / 4)
    assert half.alignments.shape[1] == math.ceil(11 / 2) == 6
    assert half.mel.shape == (2, N_MELS, 12) and half.gate.shape == (2, 12)
    # the short item's valid decoder steps: ceil(6 / 2) = 3 rows sum to 1, the rest are 0
    a = half.alignments[1]
    torch.testing.assert_close(a[:3, :4].sum(-1), torch.ones(3), atol=1e-5, rtol=0)
    assert float(a[3:].abs().sum()) == 0.0
    # the active r uses the first r frame slots and gate slots of the projections
    hidden = torch.randn(3, model.decoder.linear_projection.linear_layer.in_features)
    frames, gate = model.decoder.project(hidden)
    model.set_r(4)
    frames4, gate4 = model.decoder.project(hidden)
    assert frames.shape == (3, 2 * N_MELS) and gate.shape == (3, 2)
    assert torch.equal(frames, frames4[:, : 2 * N_MELS]) and torch.equal(gate, gate4[:, :2])
    with pytest.raises(ValueError, match="1..4"):
        model.set_r(5)
    with pytest.raises(ValueError, match="1..4"):
        model.set_r(0)


def test_set_r_infer_stops_on_the_first_firing_slot():
    model = tiny_model(n_frames_per_step=4, prenet_dropout_at_inference=False)
    model.eval()
    model.set_r(2)
    text, tl, _, _ = inputs([5, 8], [4, 4], 4)
    # slot 1 fires at once; slots 2, 3 (unused at r = 2) and slot 0 never fire
    force_gate(model, [-100.0, 100.0, 100.0, 100.0])
    out = model.infer(text, tl)
    assert out.dec_lengths.tolist() == [1, 1]
    assert out.mel_lengths.tolist() == [2, 2]  # the second frame of the first step fired
    assert out.stopped_by_gate.tolist() == [True, True]
    assert out.mel_post.shape == (2, N_MELS, 2)
    # only slots beyond r fire: the gate never stops the item, the step limit does
    force_gate(model, [-100.0, -100.0, 100.0, 100.0])
    out = model.infer(text, tl, max_decoder_steps=5)
    assert out.dec_lengths.tolist() == [5, 5] and out.mel_lengths.tolist() == [10, 10]
    assert out.stopped_by_gate.tolist() == [False, False]
    assert out.alignments.shape[1] == 5


def _padded(batch, r: int) -> int:
    """The width Collate(r) gives this batch."""
    return math.ceil(int(batch.mel_lengths.max()) / r) * r


def _scalars(run: Path) -> list[dict]:
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["kind"] == "scalars"]


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _spy(trainer: Trainer) -> list[tuple[int, int, int, int, int]]:
    """Record (step, model r, padded T, padded T expected at that r, padded T at r = 4) of
    every training step (the step counted before its update)."""
    seen: list[tuple[int, int, int, int, int]] = []
    step = trainer.train_step

    def spy(batches):
        batch = batches if hasattr(batches, "mels") else batches[0]  # an update's micro-batches
        seen.append((trainer.step, trainer.model.r, batch.mels.size(2),
                     _padded(batch, trainer.model.r), _padded(batch, 4)))
        return step(batches)

    trainer.train_step = spy
    return seen


@pytest.fixture(scope="module")
def schedule_run(tiny_data, tmp_path_factory):
    """Six steps at r = 4 for steps 0-2 and r = 2 from step 3, validating (and checkpointing)
    at steps 3 and 6. Returns the config, the run dir, what ``_spy`` saw and the trainer's log
    messages."""
    cfg = tiny_cfg(*SCHEDULE, *FAST)
    run = tmp_path_factory.mktemp("schedule") / "whole"
    trainer = Trainer(cfg, tiny_data, run, progress=False)
    seen = _spy(trainer)
    handler = _Messages()
    logger = logging.getLogger("tacotrain.train.trainer")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        trainer.fit(max_steps=6)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return cfg, run, seen, handler.messages


def test_training_follows_the_schedule(schedule_run):
    _, run, seen, messages = schedule_run
    assert [s[0] for s in seen] == list(range(6))
    assert [s[1] for s in seen] == [4, 4, 4, 2, 2, 2]
    assert all(t == expected for _, _, t, expected, _ in seen)  # each batch padded for its r
    train_r = {e["step"]: e["values"]["train/r"] for e in _scalars(run)
               if "train/r" in e["values"]}
    assert train_r == {1: 4.0, 2: 4.0, 3: 4.0, 4: 2.0, 5: 2.0, 6: 2.0}  # step after update
    assert "step 3: reduction factor r 4 -> 2" in messages
    # validation at step 3 already uses r = 2 (the r of the steps that follow it), and the
    # checkpoint records the r it was validated with
    for step in (3, 6):
        ck = load_checkpoint(run / "checkpoints" / f"step-{step:07d}.pt")
        assert ck["r"] == 2 and ck["config"]["model"]["r_schedule"] == [[0, 4], [3, 2]]


def test_worker_processes_follow_the_change(tiny_data, tmp_path):
    """r changes in the middle of the first epoch while a worker process collates."""
    cfg = tiny_cfg("model.n_frames_per_step=4", "model.r_schedule=[[0,4],[1,2]]", *FAST,
                   "train.num_workers=1")
    trainer = Trainer(cfg, tiny_data, tmp_path / "r", progress=False)
    seen = _spy(trainer)
    trainer.fit(max_steps=3)
    assert [s[1] for s in seen] == [4, 2, 2]
    assert trainer.epoch == 0 and trainer.batch_in_epoch == 3  # the change was mid-epoch
    assert all(t == expected for _, _, t, expected, _ in seen)
    # the test data tells the two apart: a batch of r = 2 not padded to a multiple of 4
    assert any(t != t4 for _, r, t, _, t4 in seen if r == 2), "pick another schedule"


def test_validation_uses_the_current_r(tiny_data, tmp_path):
    trainer = Trainer(tiny_cfg(*SCHEDULE, *FAST), tiny_data, tmp_path / "r", progress=False)
    before = trainer.validate().losses
    trainer.step = 3  # as if three updates had been made: the schedule says r = 2
    after = trainer.validate().losses
    assert trainer.model.r == trainer.criterion.r == trainer.collate.r == 2
    assert before["val/mel_post"] != after["val/mel_post"]
    # and the weights are unchanged: the difference is r alone
    trainer.step = 0
    assert trainer.validate().losses == before
    assert trainer.model.r == 4


@pytest.mark.parametrize("stop_at", [2, 4])
def test_resume_mid_schedule_is_exact(schedule_run, tiny_data, tmp_path, stop_at):
    """Stopped before (2) or after (4) the change of r, resumed to step 6: the same losses and
    weights as the uninterrupted run (which also collated in a worker process)."""
    cfg, whole, _, _ = schedule_run
    Trainer(cfg, tiny_data, tmp_path / "half", progress=False).fit(max_steps=stop_at)
    ck = load_checkpoint(tmp_path / "half" / "checkpoints" / f"step-{stop_at:07d}.pt")
    assert ck["r"] == {2: 4, 4: 2}[stop_at]
    again = Trainer(cfg, tiny_data, tmp_path / "half", resume=True, progress=False)
    assert again.step == stop_at and again.model.r == ck["r"]
    assert again.criterion.r == again.collate.r == ck["r"]
    again.fit(max_steps=6)
    a, b = checkpoint_weights(whole, 6), checkpoint_weights(tmp_path / "half", 6)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = [{e["step"]: e["values"]["train/loss"] for e in _scalars(run)
               if "train/loss" in e["values"] and e["step"] > stop_at}
              for run in (whole, tmp_path / "half")]
    assert losses[0] == losses[1] and len(losses[0]) == 6 - stop_at


def test_synthesis_uses_the_checkpoint_r(schedule_run, tmp_path):
    _, run, _, _ = schedule_run
    ckpt = run / "checkpoints" / "step-0000003.pt"
    synth = Synthesizer.from_checkpoint(ckpt, device="cpu")
    assert synth.model.r == 2
    res = synth.synthesize("a red boat.")
    assert res.alignment.shape[0] == math.ceil(res.info.frames / 2)
    # an older checkpoint without "r": the schedule at its step decides
    old = load_checkpoint(ckpt)
    del old["r"]
    old["step"] = 1
    save_checkpoint(tmp_path / "old.pt", old)
    assert Synthesizer.from_checkpoint(tmp_path / "old.pt", device="cpu").model.r == 4


def test_collate_r_can_change():
    items = [(torch.tensor([1, 2]), torch.zeros(3, 5), "a")]
    c = Collate(4)
    assert c(items).mels.shape[2] == 8
    c.r = 2
    assert c(items).mels.shape[2] == 6
