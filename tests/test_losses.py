"""Masked losses: padding never matters, per-item lengths are respected, values are right."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tacotrain.config import LossConfig
from tacotrain.model import (
    Batch,
    Tacotron2Loss,
    Tacotron2Output,
    gate_loss,
    guided_attention_loss,
    guided_attention_weights,
    make_gate_targets,
    masked_mel_loss,
)


def diagonal(t: int, n: int) -> Tensor:
    a = torch.zeros(t, n)
    a[torch.arange(t), torch.round(torch.arange(t) * (n - 1) / max(t - 1, 1)).long()] = 1.0
    return a


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_masked_mel_loss_ignores_padding(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 8, 20, generator=g)
    target = torch.randn(3, 8, 20, generator=g)
    lengths = torch.tensor([20, 11, 5])
    loss = masked_mel_loss(pred, target, lengths, kind)
    # reference: mean over the valid cells only
    cells = [
        (pred[i, :, :n] - target[i, :, :n]).reshape(-1) for i, n in enumerate(lengths.tolist())
    ]
    d = torch.cat(cells)
    ref = d.square().mean() if kind == "mse" else d.abs().mean()
    assert float(loss) == pytest.approx(float(ref), rel=1e-6)
    # garbage (even inf/nan) in the padding changes nothing
    pred2, target2 = pred.clone(), target.clone()
    pred2[1, :, 11:] = float("inf")
    target2[2, :, 5:] = float("nan")
    pred2[2, :, 5:] = 1e9
    loss2 = masked_mel_loss(pred2, target2, lengths, kind)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
    # gradients never reach padded positions
    p = pred2.clone().requires_grad_(True)
    masked_mel_loss(p, target2, lengths, kind).backward()
    assert torch.isfinite(p.grad).all()
    assert float(p.grad[1, :, 11:].abs().sum()) == 0.0


def test_masked_mel_loss_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        masked_mel_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.tensor([3]), "huber")  # type: ignore[arg-type]


def test_make_gate_targets() -> None:
    got = make_gate_targets(torch.tensor([3, 5]), 6)
    assert got.tolist() == [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]]


@pytest.mark.parametrize("r", [1, 2, 3])
def test_gate_loss_pos_weight_and_valid_frames(r: int) -> None:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([12, 7, 4])
    t = 12
    logits = torch.randn(3, t, generator=g)
    targets = make_gate_targets(lengths, t)
    pw = 5.0
    got = gate_loss(logits, targets, lengths, pw, n_frames_per_step=r)
    terms = []
    for i, n in enumerate(lengths.tolist()):
        v = math.ceil(n / r) * r
        x, y = logits[i, :v], targets[i, :v]
        terms.append(-(pw * y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x)))
    ref = torch.cat(terms).mean()
    assert float(got) == pytest.approx(float(ref), rel=1e-6)
    # pos_weight matters: all-positive targets scale exactly with it
    ones = torch.ones(3, t)
    a = gate_loss(logits, ones, lengths, 1.0, r)
    b = gate_loss(logits, ones, lengths, 3.0, r)
    assert float(b) == pytest.approx(3.0 * float(a), rel=1e-6)
    # frames past the last valid decoder step are ignored, even if garbage
    logits2 = logits.clone()
    for i, n in enumerate(lengths.tolist()):
        logits2[i, math.ceil(n / r) * r :] = float("nan")
    assert float(gate_loss(logits2, targets, lengths, pw, r)) == pytest.approx(float(got))


def test_guided_attention_weights_per_item_lengths() -> None:
    text_lengths = torch.tensor([37, 10, 25])
    dec_lengths = torch.tensor([120, 30, 60])
    t_max, n_max = 130, 40
    w = guided_attention_weights(text_lengths, dec_lengths, t_max, n_max, 0.2)
    assert w.shape == (3, t_max, n_max)
    for i in range(3):
        n, t = int(text_lengths[i]), int(dec_lengths[i])
        single = guided_attention_weights(
            text_lengths[i : i + 1], dec_lengths[i : i + 1], t, n, 0.2
        )
        torch.testing.assert_close(w[i, :t, :n], single[0])
        # the formula itself, from this item's own lengths
        tt = torch.arange(t, dtype=torch.float32)[:, None]
        nn_ = torch.arange(n, dtype=torch.float32)[None, :]
        ref = 1 - torch.exp(-((nn_ / n - tt / t) ** 2) / (2 * 0.2**2))
        torch.testing.assert_close(single[0], ref)
        # zero outside the valid region
        assert float(w[i, t:].abs().sum()) == 0.0
        assert float(w[i, :, n:].abs().sum()) == 0.0
        # near 0 on the diagonal, near 1 far from it
        assert float(w[i, 0, 0]) == 0.0
        assert float(w[i, t // 2, n // 2]) < 0.02
        assert float(w[i, 0, n - 1]) > 0.99
        assert float(w[i, t - 1, 0]) > 0.99


def test_guided_attention_loss_mixed_lengths_matches_per_item() -> None:
    g = torch.Generator().manual_seed(2)
    shapes = [(120, 37), (30, 10), (60, 25)]
    items = [torch.softmax(torch.randn(t, n, generator=g), dim=1) for t, n in shapes]
    t_max, n_max = 125, 40
    batch = torch.full((3, t_max, n_max), 7.0)  # garbage padding
    for i, a in enumerate(items):
        batch[i, : a.shape[0], : a.shape[1]] = a
    text_lengths = torch.tensor([n for _, n in shapes])
    dec_lengths = torch.tensor([t for t, _ in shapes])
    got = guided_attention_loss(batch, text_lengths, dec_lengths, 0.2)
    # sum of W*A over each item's valid region / total number of valid cells
    num = 0.0
    for (t, n), a in zip(shapes, items, strict=True):
        w = guided_attention_weights(torch.tensor([n]), torch.tensor([t]), t, n, 0.2)[0]
        num += float((w * a).sum())
    ref = num / sum(t * n for t, n in shapes)
    assert float(got) == pytest.approx(ref, rel=1e-5)
    # single-item call equals the same formula
    one = guided_attention_loss(items[1][None], text_lengths[1:2], dec_lengths[1:2], 0.2)
    w1 = guided_attention_weights(text_lengths[1:2], dec_lengths[1:2], 30, 10, 0.2)[0]
    assert float(one) == pytest.approx(float((w1 * items[1]).sum()) / 300, rel=1e-5)


def test_guided_attention_prefers_diagonal() -> None:
    t, n = 120, 37
    lens = (torch.tensor([n]), torch.tensor([t]))
    diag = guided_attention_loss(diagonal(t, n)[None], *lens, sigma=0.2)
    flat = guided_attention_loss(torch.full((1, t, n), 1.0 / n), *lens, sigma=0.2)
    assert float(diag) < 0.1 * float(flat)


def _fake_output(b: int, n_mels: int, t: int, n: int, r: int, seed: int = 0) -> Tacotron2Output:
    g = torch.Generator().manual_seed(seed)
    return Tacotron2Output(
        mel=torch.randn(b, n_mels, t, generator=g, requires_grad=False),
        mel_post=torch.randn(b, n_mels, t, generator=g),
        gate=torch.randn(b, t, generator=g),
        alignments=torch.softmax(torch.randn(b, t // r, n, generator=g), dim=-1),
    )


def test_tacotron2_loss_keys_and_weighting() -> None:
    r, t, n, n_mels = 2, 20, 9, 8
    mel_lengths = torch.tensor([20, 13])
    text_lengths = torch.tensor([9, 6])
    batch = Batch(
        text=torch.ones(2, n, dtype=torch.long),
        text_lengths=text_lengths,
        mels=torch.randn(2, n_mels, t),
        mel_lengths=mel_lengths,
        gate_targets=make_gate_targets(mel_lengths, t),
    )
    out = _fake_output(2, n_mels, t, n, r)
    crit = Tacotron2Loss(LossConfig(), n_frames_per_step=r)
    l0 = crit(out, batch, ga_weight=0.0)
    assert set(l0) == {"loss", "mel", "mel_post", "gate", "guided_attn"}
    assert float(l0["guided_attn"]) == 0.0
    assert float(l0["loss"]) == pytest.approx(float(l0["mel"] + l0["mel_post"] + l0["gate"]))
    l5 = crit(out, batch, ga_weight=5.0)
    ga = guided_attention_loss(out.alignments, text_lengths, (mel_lengths + r - 1) // r, 0.2)
    assert float(l5["guided_attn"]) == pytest.approx(float(ga))
    assert float(l5["loss"]) == pytest.approx(float(l0["loss"]) + 5.0 * float(ga), rel=1e-6)
    assert float(l5["gate"]) == pytest.approx(
        float(gate_loss(out.gate, batch.gate_targets, mel_lengths, 5.0, r))
    )
    # l1 variant and disabled guided attention
    cfg = LossConfig.model_validate({"mel_loss": "l1", "guided_attention": {"enabled": False}})
    l_off = Tacotron2Loss(cfg, r)(out, batch, ga_weight=5.0)
    assert float(l_off["guided_attn"]) == 0.0
    assert float(l_off["mel"]) == pytest.approx(
        float(masked_mel_loss(out.mel, batch.mels, mel_lengths, "l1"))
    )
    with pytest.raises(ValueError):
        crit(out, batch, ga_weight=-1.0)


def test_batch_to_device() -> None:
    b = Batch(
        torch.ones(1, 3, dtype=torch.long),
        torch.tensor([3]),
        torch.zeros(1, 4, 6),
        torch.tensor([6]),
        torch.zeros(1, 6),
    )
    moved = b.to("cpu")
    assert isinstance(moved, Batch)
    assert moved.text.dtype == torch.long and moved.mels.shape == (1, 4, 6)


def test_attention_entropy_sharp_vs_uniform_and_masked() -> None:
    from tacotrain.model import attention_entropy

    sharp = torch.zeros(2, 6, 8)
    sharp[:, torch.arange(6), torch.arange(6)] = 1.0
    uniform = torch.zeros(2, 6, 8)
    uniform[0] = 1 / 8
    uniform[1, :, :4] = 1 / 4
    uniform[1, 4:] = 123.0  # padded decoder steps: ignored
    tl, dl = torch.tensor([8, 4]), torch.tensor([6, 4])
    assert float(attention_entropy(sharp, tl, dl)) == pytest.approx(0.0, abs=1e-6)
    expected = (6 * math.log(8) + 4 * math.log(4)) / 10
    assert float(attention_entropy(uniform, tl, dl)) == pytest.approx(expected, rel=1e-5)
