"""train.batch_size auto (train/batch_size.py) and mixed precision (bf16 autocast) on the CPU."""

from __future__ import annotations

import json
import random
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import yaml

from tacotrain.data.loader import PreparedData, TextMelDataset
from tacotrain.infer.checkpoint import latest_checkpoint, load_checkpoint
from tacotrain.model import Tacotron2, Tacotron2Loss
from tacotrain.model import tacotron2 as t2
from tacotrain.train import batch_size as bs
from tacotrain.train.trainer import Trainer

from conftest import tiny_cfg


def _parts(tiny_data, *extra: str):
    cfg = tiny_cfg("train.batch_size=auto", *extra)
    data = PreparedData.load(tiny_data)
    ds = TextMelDataset(data, "train")
    torch.manual_seed(0)
    model = Tacotron2(cfg.model, len(data.symbols), data.settings.audio.n_mels)
    crit = Tacotron2Loss(cfg.loss, cfg.model.n_frames_per_step)
    return cfg, model, crit, ds


def test_tiny_budget_gives_batch_1_and_large_budget_hits_max(tiny_data):
    cfg, model, crit, ds = _parts(tiny_data, "train.memory_budget_gb=0.000001")
    small = bs.choose_batch_size(cfg, model, crit, ds, torch.device("cpu"), nullcontext)
    assert small.batch_size == 1
    assert small.method == "cpu_rss_extrapolation"
    assert small.measured["peak_at_2_bytes"] > 1024  # a step adds measurable memory
    cfg.train.memory_budget_gb = 100.0
    cfg.train.max_batch_size = 6
    large = bs.choose_batch_size(cfg, model, crit, ds, torch.device("cpu"), nullcontext)
    assert (large.batch_size, large.limit) == (6, 6)
    assert large.tried == ((6, True),)
    # the split (12 train items) caps it too: 12 // (2 batches per update) = 6
    cfg.train.max_batch_size = 64
    capped = bs.choose_batch_size(cfg, model, crit, ds, torch.device("cpu"), nullcontext,
                                  batches_per_update=2)
    assert (capped.batch_size, capped.limit) == (6, 6)


def test_cpu_extrapolation_and_verification():
    mib = 2.0**20
    trial, measure = _fake(10, 2)
    linear = bs.cpu_search(trial, 64, 30 * mib, measure=measure)
    # (30 - 10) / 2 = 10 items; verified at 10: 10 + 2 * 10 = 30 MiB, within the budget
    assert linear.batch_size == 10
    assert linear.tried == ((10, True),)
    assert linear.measured["per_item_bytes"] == pytest.approx(2 * mib)
    assert linear.measured["fixed_bytes"] == pytest.approx(10 * mib)
    # growing faster than linearly above 4 items: the trial at 10 exceeds, the size is lowered
    trial, measure = _fake(10, 2, extra_above_4=1.5)
    curved = bs.cpu_search(trial, 64, 30 * mib, measure=measure)
    assert curved.tried[0] == (10, False)
    assert curved.tried[-1][1] is True
    assert 1 <= curved.batch_size < 10


def _fake(fixed_mib: float, per_item_mib: float, extra_above_4: float = 0.0):
    """A trial and a ``measure`` for cpu_search: the trial records its size, the measure
    returns a made-up peak for it."""
    sizes: list[int] = []

    def trial(n: int) -> None:
        sizes.append(n)

    def measure(run) -> float:
        run()
        n = sizes[-1]
        return (fixed_mib + (per_item_mib + extra_above_4 * max(n - 4, 0)) * n) * 2**20

    return trial, measure


def test_probe_leaves_weights_grads_and_rng_unchanged(tiny_data):
    cfg, model, crit, ds = _parts(tiny_data, "train.max_batch_size=4",
                                  "train.memory_budget_gb=100")
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    rng = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    choice = bs.choose_batch_size(cfg, model, crit, ds, torch.device("cpu"), nullcontext)
    assert choice.batch_size == 4
    after = model.state_dict()
    for k, v in before.items():  # batch-norm running statistics included
        assert torch.equal(v, after[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert not model.training  # the mode it was in
    assert (model.r, crit.r) == (2, 2)
    assert random.getstate() == rng[0]
    assert np.array_equal(np.random.get_state()[1], rng[1])
    assert torch.equal(torch.get_rng_state(), rng[2])


def test_simulated_cuda_oom_backs_off_to_largest_that_fits(tiny_data, monkeypatch):
    _, model, crit, ds = _parts(tiny_data)
    sizes = []

    def probe(model, criterion, batch, autocast):
        sizes.append(batch.text.shape[0])
        if batch.text.shape[0] > 10:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(bs, "probe_step", probe)

    def trial(n: int) -> None:
        bs.probe_step(model, crit, bs.longest_batch(ds, n, 2), nullcontext)

    choice = bs.cuda_search(trial, 64)
    assert choice.batch_size == 10
    assert sizes == [64, 32, 16, 8, 12, 10, 11]
    assert choice.tried == ((64, False), (32, False), (16, False), (8, True), (12, False),
                            (10, True), (11, False))
    monkeypatch.setattr(bs, "probe_step", lambda *a: (_ for _ in ()).throw(
        torch.cuda.OutOfMemoryError("simulated")))
    with pytest.raises(bs.BatchSizeError, match="even a batch of 1"):
        bs.cuda_search(trial, 4)


def test_longest_batch_pads_like_collate(tiny_data):
    _, _, _, ds = _parts(tiny_data)
    batch = bs.longest_batch(ds, 3, 2)
    top = sorted(ds.lengths, reverse=True)[:3]
    assert batch.mel_lengths.tolist() == top
    assert batch.mels.shape[2] == top[0] + top[0] % 2  # rounded up to a multiple of r = 2


def test_trainer_auto_writes_int_equals_explicit_and_resume_keeps_it(tiny_data, tmp_path):
    auto_cfg = tiny_cfg("train.batch_size=auto", "train.max_batch_size=5",
                        "train.memory_budget_gb=100")
    auto = Trainer(auto_cfg, tiny_data, tmp_path / "auto", progress=False)
    assert auto.cfg.train.batch_size == 5
    assert auto_cfg.train.batch_size == "auto"  # the caller's config is not changed
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    assert saved["train"]["batch_size"] == 5
    record = json.loads((tmp_path / "auto" / "batch_size.json").read_text())
    assert record["batch_size"] == 5 and record["method"] == "cpu_rss_extrapolation"
    assert auto.sampler.batch_size == 5
    rng_after_auto = torch.get_rng_state()
    # the same run with the integer from the start: same initial weights, same RNG position
    fixed = Trainer(tiny_cfg("train.batch_size=5"), tiny_data, tmp_path / "fixed",
                    progress=False)
    assert torch.equal(torch.get_rng_state(), rng_after_auto)
    a, b = auto.model.state_dict(), fixed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    auto.fit(max_steps=1)
    ck = load_checkpoint(latest_checkpoint(tmp_path / "auto" / "checkpoints"))
    assert ck["config"]["train"]["batch_size"] == 5
    # resumed with auto and a lower cap: the saved size stays, nothing is probed
    again = Trainer(tiny_cfg("train.batch_size=auto", "train.max_batch_size=3"), tiny_data,
                    tmp_path / "auto", resume=True, progress=False)
    assert again.cfg.train.batch_size == 5
    assert again.sampler.batch_size == 5


def test_resume_auto_without_saved_config_names_the_file(tiny_data, tmp_path):
    run = tmp_path / "r"
    Trainer(tiny_cfg(), tiny_data, run, progress=False).fit(max_steps=1)
    (run / "config.yaml").unlink()
    with pytest.raises(bs.BatchSizeError, match="config.yaml is missing"):
        Trainer(tiny_cfg("train.batch_size=auto"), tiny_data, run, resume=True, progress=False)


def test_bf16_training_on_cpu_is_finite_and_cell_state_float32(tiny_data, tmp_path,
                                                               monkeypatch):
    trainer = Trainer(tiny_cfg("train.precision=bf16"), tiny_data, tmp_path / "r",
                      progress=False)
    assert trainer.amp_dtype == torch.bfloat16
    seen: list[tuple[bool, torch.dtype, torch.dtype, torch.dtype]] = []
    recur = t2.Decoder._recur

    def spy(self, *args):
        out, weights, state = recur(self, *args)
        seen.append((torch.is_autocast_enabled("cpu"), state.attention_cell.dtype,
                     state.decoder_cell.dtype, self.linear_projection(out).dtype))
        return out, weights, state

    monkeypatch.setattr(t2.Decoder, "_recur", spy)
    losses = []
    for batch in list(trainer.feed.loader(trainer.epoch, trainer.batch_in_epoch))[:3]:
        decision, m = trainer.train_step(batch)
        assert decision.action == "ok"
        losses.append(m["train/loss"])
    assert all(np.isfinite(losses)) and len(losses) == 3
    assert trainer.step == 3
    assert seen and all(on for on, *_ in seen)  # autocast really was on
    assert {(a, d) for _, a, d, _ in seen} == {(torch.float32, torch.float32)}
    assert {p for *_, p in seen} == {torch.bfloat16}  # while the projections ran in bf16


def test_lstm_cell_keeps_float32_state_under_autocast():
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(6, 5)
    x, h, c = torch.randn(3, 6), torch.randn(3, 5), torch.randn(3, 5)
    ref_h, ref_c = cell(x, (h, c))
    out_h, out_c = t2.lstm_cell(cell, x, h, c)  # no autocast: the cell itself
    assert torch.equal(out_h, ref_h) and torch.equal(out_c, ref_c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp_h, amp_c = t2.lstm_cell(cell, x, h.bfloat16(), c)
    assert (amp_h.dtype, amp_c.dtype) == (torch.float32, torch.float32)
    assert torch.allclose(amp_c, ref_c, atol=2e-2) and torch.allclose(amp_h, ref_h, atol=2e-2)
    assert not torch.equal(amp_c, ref_c)  # the gate matmuls did run in bf16
