"""The fast teacher-forced decoder loop equals the reference loop, values and gradients.

``model.decoder_impl: fast`` (active items only, LSTM cells through ``recurrent.CellRunner``
with one weight-gradient product per batch) must be the same function as the plain per-step
autograd loop (``reference``). Dropout is set to 0 so both draw nothing random; BatchNorm runs
in training mode.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tacotrain.config import load_config
from tacotrain.data.loader import Collate
from tacotrain.model import Tacotron2, Tacotron2Loss
from tacotrain.model.layers import dropout
from tacotrain.model.recurrent import CellRunner, shrinking_batch, unpack_rows

NO_DROPOUT = [f"model.{k}_dropout=0" for k in ("prenet", "attention", "decoder", "encoder",
                                               "postnet")]


def _batch(r: int, dtype: torch.dtype, lengths=(37, 20, 33, 9, 37, 1)):
    g = torch.Generator().manual_seed(1)
    items = [(torch.randint(1, 20, (max(2, t // 3),), generator=g),
              torch.randn(80, t, generator=g, dtype=dtype) - 4, f"i{k}")
             for k, t in enumerate(lengths)]
    batch = Collate(r)(items)
    return batch._replace(mels=batch.mels.to(dtype))


def _run(model: Tacotron2, batch, impl: str, r: int):
    model.set_impl(impl)
    model.zero_grad()
    out = model(batch.text, batch.text_lengths, batch.mels, batch.mel_lengths)
    loss = Tacotron2Loss(load_config("tiny").loss, r)(out, batch, 10.0)["loss"]
    loss.backward()
    return out, loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


@pytest.mark.parametrize("attention", ["location", "location_prior", "dca"])
@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_equals_reference(attention: str, r: int, dtype: torch.dtype) -> None:
    cfg = load_config("tiny", [*NO_DROPOUT, f"model.attention={attention}",
                               f"model.n_frames_per_step={r}"])
    torch.manual_seed(0)
    model = Tacotron2(cfg.model, 20, 80).to(dtype).train()
    batch = _batch(r, dtype)
    ref, ref_loss, ref_grads = _run(model, batch, "reference", r)
    fast, fast_loss, fast_grads = _run(model, batch, "fast", r)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    # outputs agree at every real frame and token (padded frames are masked by the model)
    assert torch.allclose(fast.mel, ref.mel, atol=tol, rtol=0)
    assert torch.allclose(fast.mel_post, ref.mel_post, atol=20 * tol, rtol=0)
    assert torch.allclose(fast.alignments, ref.alignments, atol=tol, rtol=0)
    real = torch.arange(ref.gate.size(1))[None, :] < batch.mel_lengths[:, None]
    assert torch.allclose(fast.gate[real], ref.gate[real], atol=tol, rtol=0)
    assert fast_loss == pytest.approx(ref_loss, rel=10 * tol)
    # gradients: every parameter whose gradient is not zero in theory (a conv bias right
    # before BatchNorm has a zero gradient, its computed value is rounding noise)
    gtol = 1e-4 if dtype == torch.float32 else (1e-9 if attention == "location" else 1e-5)
    for name, g in ref_grads.items():
        if name.endswith("conv.bias"):
            continue
        assert _rel(fast_grads[name], g) < gtol, name


def test_fast_equals_reference_in_eval_without_grad() -> None:
    cfg = load_config("tiny", ["model.n_frames_per_step=1"])
    torch.manual_seed(0)
    model = Tacotron2(cfg.model, 20, 80).eval()
    model.decoder.prenet.dropout_at_inference = False
    batch = _batch(1, torch.float32)
    outs = []
    with torch.no_grad():
        for impl in ("reference", "fast"):
            model.set_impl(impl)
            outs.append(model(batch.text, batch.text_lengths, batch.mels, batch.mel_lengths))
    assert torch.allclose(outs[0].mel_post, outs[1].mel_post, atol=1e-4, rtol=0)
    assert torch.allclose(outs[0].alignments, outs[1].alignments, atol=1e-5, rtol=0)


def test_cell_runner_gradcheck_against_lstm_cell() -> None:
    """A shrinking batch through CellRunner: values equal nn.LSTMCell's, gradients pass
    torch's numerical gradcheck (float64) for weights, biases, static and per-step inputs."""
    torch.manual_seed(0)
    s_dim, k_dim, h = 3, 2, 4
    rows = [3, 3, 2, 1]
    cell = nn.LSTMCell(s_dim + k_dim, h).double()
    static = torch.randn(sum(rows), s_dim, dtype=torch.float64, requires_grad=True)
    inputs = [torch.randn(n, k_dim, dtype=torch.float64, requires_grad=True) for n in rows]
    w_ih = cell.weight_ih.detach().clone().requires_grad_()
    w_hh = cell.weight_hh.detach().clone().requires_grad_()
    bias = (cell.bias_ih + cell.bias_hh).detach().clone().requires_grad_()

    def run(w_ih, w_hh, bias, static, *inputs):
        runner = CellRunner(torch.cat((w_ih, w_hh), dim=1), bias, rows, static=static)
        hs = torch.zeros(rows[0], h, dtype=torch.float64)
        cs = torch.zeros_like(hs)
        out = []
        for t, x in enumerate(inputs):
            n = rows[t]
            hs, cs = runner.step(t, [x, hs[:n]], cs[:n])
            out.append(hs * (t + 1))
        return torch.cat(out).sum() + cs.square().sum()

    # values: the same sequence through nn.LSTMCell
    hs = torch.zeros(rows[0], h, dtype=torch.float64)
    cs = torch.zeros_like(hs)
    off = 0
    expected = 0.0
    for t, x in enumerate(inputs):
        n = rows[t]
        hs, cs = cell(torch.cat((static[off:off + n], x), dim=1), (hs[:n], cs[:n]))
        expected = expected + (hs * (t + 1)).sum()
        off += n
    expected = expected + cs.square().sum()
    got = run(w_ih, w_hh, bias, static, *inputs)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.autograd.gradcheck(run, (w_ih, w_hh, bias, static, *inputs))


def test_dropout_keeps_the_expected_share_and_scale() -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, 0.25, True)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.005)
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert torch.equal(dropout(x, 0.25, False), x)
    assert torch.equal(dropout(x, 0.0, True), x)


def test_autocast_uses_the_reference_loop_and_runs() -> None:
    cfg = load_config("tiny", ["model.n_frames_per_step=1"])
    torch.manual_seed(0)
    model = Tacotron2(cfg.model, 20, 80).train()
    batch = _batch(1, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch.text, batch.text_lengths, batch.mels, batch.mel_lengths)
    assert out.alignments.dtype == torch.float32
    sums = out.alignments.sum(-1)  # each real step's weights sum to 1
    steps = torch.arange(sums.size(1))[None, :] < batch.mel_lengths[:, None]
    assert torch.allclose(sums[steps], torch.ones_like(sums[steps]), atol=1e-3)


def test_shrinking_batch_plan_round_trips() -> None:
    lengths = torch.tensor([3, 1, 4, 2, 4])
    plan = shrinking_batch(lengths, 4)
    assert plan.order.tolist() == [2, 4, 0, 3, 1]  # longest first, ties in input order
    assert plan.rows == [5, 4, 3, 2]
    x = torch.arange(5 * 4, dtype=torch.float32).view(5 * 4, 1)  # value = item * 4 + step
    back = unpack_rows(x.index_select(0, plan.source_of), plan, 4)[..., 0]  # [B, steps]
    runs = torch.arange(4)[None, :] < lengths[:, None]
    assert torch.equal(back, torch.where(runs, x.view(5, 4), 0.0))
    # packed rows are step-major: step 0's five rows first, in sorted order
    assert (plan.source_of[:5] % 4).tolist() == [0] * 5
    assert (plan.source_of[:5] // 4).tolist() == plan.order.tolist()


def test_fast_without_onednn_equals_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds without oneDNN (or where its probe fails) multiply by the plain weights."""
    from tacotrain.model import recurrent

    monkeypatch.setattr(recurrent, "_onednn_ok", lambda w: False)
    cfg = load_config("tiny", [*NO_DROPOUT, "model.n_frames_per_step=1"])
    torch.manual_seed(0)
    model = Tacotron2(cfg.model, 20, 80).train()
    batch = _batch(1, torch.float32)
    ref, ref_loss, ref_grads = _run(model, batch, "reference", 1)
    fast, fast_loss, fast_grads = _run(model, batch, "fast", 1)
    assert torch.allclose(fast.mel_post, ref.mel_post, atol=2e-4, rtol=0)
    assert fast_loss == pytest.approx(ref_loss, rel=1e-4)
    for name in ("decoder.attention_rnn.weight_hh", "decoder.decoder_rnn.weight_ih",
                 "decoder.prenet.layers.0.linear_layer.weight"):
        assert _rel(fast_grads[name], ref_grads[name]) < 1e-4, name


def test_onednn_probe_is_consistent() -> None:
    from tacotrain.model import recurrent

    if not recurrent._onednn_works():
        pytest.skip("no usable oneDNN linear in this torch build")
    w = torch.randn(64, 48)
    x = torch.randn(5, 48)
    assert torch.allclose(recurrent._Matmul(w, 16)(x), x @ w.t(), rtol=1e-5, atol=1e-5)


def test_location_energies_equal_the_plain_expression_and_gradcheck() -> None:
    from tacotrain.model.attention import location_energies

    torch.manual_seed(0)
    d = torch.float64
    q = torch.randn(3, 5, dtype=d, requires_grad=True)
    windows = torch.rand(3, 7, 4, dtype=d, requires_grad=True)
    keys = torch.randn(3, 7, 5, dtype=d, requires_grad=True)
    fused = torch.randn(4, 5, dtype=d, requires_grad=True)
    v = torch.randn(5, dtype=d, requires_grad=True)
    plain = (torch.tanh(q[:, None] + windows @ fused + keys) * v).sum(-1)
    assert torch.allclose(location_energies(q, windows, keys, fused, v), plain, atol=1e-12)
    assert torch.autograd.gradcheck(location_energies, (q, windows, keys, fused, v))


def test_context_reader_defers_the_memory_gradient_exactly() -> None:
    """A recurrent chain (each step's weights depend on the previous context) read through
    ``ContextReader``: values and the memory's gradient equal the plain per-step reads."""
    from tacotrain.model.recurrent import ContextReader

    torch.manual_seed(0)
    lengths = torch.tensor([2, 5, 3, 5])
    plan = shrinking_batch(lengths, 5)
    mem0 = torch.randn(4, 6, 3, dtype=torch.float64)
    scores = torch.randn(5, 4, 6, dtype=torch.float64)
    proj = torch.randn(3, 6, dtype=torch.float64)

    def run(deferred: bool, memory: torch.Tensor) -> torch.Tensor:
        memory = memory[plan.order]
        reader = ContextReader(memory, plan, 5)
        ctx = memory.new_zeros(4, 3)
        total = memory.new_zeros(())
        for t, n in enumerate(plan.rows):
            ctx = ctx[:n]
            w = torch.softmax(scores[t, :n] + ctx @ proj, dim=1)
            ctx = (reader.read(t, w) if deferred
                   else torch.bmm(w.unsqueeze(1), memory[:n]).squeeze(1))
            total = total + (ctx * (t + 1)).sum() + ctx.square().sum()
        return total

    grads = []
    for deferred in (False, True):
        mem = mem0.clone().requires_grad_()
        value = run(deferred, mem)
        value.backward()
        grads.append((value.detach(), mem.grad))
    assert torch.allclose(grads[1][0], grads[0][0], atol=1e-12, rtol=0)
    assert torch.allclose(grads[1][1], grads[0][1], atol=1e-12, rtol=0)
    assert grads[0][1].abs().sum() > 0
    assert torch.autograd.gradcheck(lambda m: run(True, m), (mem0.clone().requires_grad_(),))
