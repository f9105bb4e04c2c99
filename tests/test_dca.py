"""Dynamic convolution attention (model.attention=dca): shapes, masking, the forward prior, the
batched filter paths against plain convolutions, and a tiny Tacotron 2 that trains and infers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tacotrain.config import LossConfig, ModelConfig, load_config
from tacotrain.model import Batch, Tacotron2, Tacotron2Loss, make_gate_targets
from tacotrain.model.attention import DynamicConvolutionAttention, beta_binomial_filter
from tacotrain.model.layers import frame_mask

Q, A, E = 16, 12, 6  # query, attention and memory widths of the standalone mechanism


def make_dca(seed: int = 0, **kw: object) -> DynamicConvolutionAttention:
    torch.manual_seed(seed)
    args: dict[str, object] = {"static_filters": 3, "static_filter_len": 5,
                               "dynamic_filters": 2, "dynamic_filter_len": 7}
    args.update(kw)
    return DynamicConvolutionAttention(Q, A, **args)  # type: ignore[arg-type]


def run(att: DynamicConvolutionAttention, memory: torch.Tensor, mask: torch.Tensor,
        queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps over queries ``[B, T, Q]`` -> weights ``[B, T, N]``, contexts ``[B, T, E]``."""
    processed = att.preprocess_memory(memory)
    state = att.init_state(memory, mask)
    ws, cs = [], []
    for q in queries.unbind(1):
        c, w, state = att.step(q, memory, processed, mask, state)
        assert torch.equal(state.weights, w)
        ws.append(w)
        cs.append(c)
    return torch.stack(ws, 1), torch.stack(cs, 1)


def inputs(lengths: list[int], steps: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(len(lengths), max(lengths), E, generator=g)
    mask = frame_mask(torch.tensor(lengths), max(lengths))
    return memory, mask, torch.randn(len(lengths), steps, Q, generator=g)


def test_shapes_sum_to_one_and_zero_on_padding() -> None:
    att = make_dca()
    lengths = [12, 7, 4]
    memory, mask, queries = inputs(lengths, 6)
    state = att.init_state(memory, mask)
    assert state.weights.dtype == torch.float32 and state.weights.shape == (3, 12)
    assert state.weights[:, 0].eq(1).all() and state.weights[:, 1:].eq(0).all()
    with torch.no_grad():
        weights, contexts = run(att, memory, mask, queries)
    assert weights.shape == (3, 6, 12) and weights.dtype == torch.float32
    assert contexts.shape == (3, 6, E)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6), atol=1e-6, rtol=0)
    for i, n in enumerate(lengths):
        assert float(weights[i, :, n:].abs().sum()) == 0.0  # exactly zero, not just small
    # the context is the weighted sum of the memory
    torch.testing.assert_close(contexts, weights @ memory, atol=1e-6, rtol=1e-5)


def test_padded_item_matches_item_alone() -> None:
    att = make_dca()
    memory, mask, queries = inputs([12, 7], 8)
    w_batch, c_batch = run(att, memory, mask, queries)
    w_alone, c_alone = run(att, memory[1:, :7], mask[1:, :7], queries[1:])
    torch.testing.assert_close(w_batch[1, :, :7], w_alone[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(c_batch[1], c_alone[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("static_len", [7, 6])  # shared windows; an even length apart
def test_filters_equal_plain_convolutions(static_len: int) -> None:
    """The fused batched filter path equals conv1d references run one item at a time."""
    att = make_dca(static_filter_len=static_len)
    memory, mask, queries = inputs([10, 8], 1)
    prev = torch.softmax(torch.randn(2, 10), -1) * mask
    q = queries[:, 0]
    static = att.static_dense(att.static_conv(prev.unsqueeze(1)).transpose(1, 2))  # W f
    taps = att.dynamic_taps(torch.tanh(att.dynamic_hidden(q))).view(2, 2, 7)
    dynamic = torch.stack([  # U g + b, each item's own taps as a conv1d
        att.dynamic_dense(F.conv1d(prev[i].view(1, 1, -1), taps[i].unsqueeze(1), padding=3)[0].t())
        for i in range(2)])
    got = att.features(q, prev, att.preprocess_memory(memory))
    torch.testing.assert_close(got, static + dynamic, atol=1e-6, rtol=1e-5)


def test_prior_moves_attention_forward_only() -> None:
    att = make_dca(prior_filter_len=11)
    with torch.no_grad():
        att.v.linear_layer.weight.zero_()  # energies = log prior alone
    memory, mask, queries = inputs([30, 19], 25)
    with torch.no_grad():
        weights, _ = run(att, memory, mask, queries)
    # step 1 from the one-hot start is the beta-binomial filter itself
    f = beta_binomial_filter(11, 0.1, 0.9)
    torch.testing.assert_close(weights[0, 0, :11], f, atol=1e-6, rtol=0)
    expected = (weights * torch.arange(30.0)).sum(-1)  # [B, T] expected position
    # never backwards (the 1e-8 prior floor behind the attention costs < 1e-6 token)
    assert (expected.diff(dim=1) >= -1e-6).all()
    # and it does move: the filter's mean, one token per step, while far from the end
    torch.testing.assert_close(expected[0, :4], torch.tensor([1.0, 2.0, 3.0, 4.0]), atol=2e-3,
                               rtol=0)
    assert float(expected[1, -1]) < 18.0  # bounded by the last real token


def test_config_keys_size_the_mechanism() -> None:
    cfg = load_config("tiny", ["model.attention=dca", "model.dca_dynamic_filters=3",
                               "model.dca_dynamic_filter_len=9", "model.dca_static_filters=5",
                               "model.dca_static_filter_len=7", "model.dca_prior_filter_len=4"])
    att = Tacotron2(cfg.model, 20, 10).decoder.attention_layer
    assert isinstance(att, DynamicConvolutionAttention)
    assert att.dynamic_taps.linear_layer.out_features == 3 * 9
    assert tuple(att.static_conv.conv.weight.shape) == (5, 1, 7)
    assert att.prior_filter.shape[-1] == 4
    assert att.v.linear_layer.in_features == cfg.model.attention_dim
    alpha = load_config("tiny", ["model.attention=dca", "model.dca_prior_alpha=0.5",
                                 "model.dca_prior_beta=2.0"])
    att2 = Tacotron2(alpha.model, 20, 10).decoder.attention_layer
    torch.testing.assert_close(att2.prior_filter.flatten().flip(0),
                               beta_binomial_filter(11, 0.5, 2.0))
    assert ModelConfig().dca_static_filter_len == 21  # the paper's sizes by default


def tiny_dca(r: int = 2) -> Tacotron2:
    cfg = load_config("tiny", ["model.attention=dca", f"model.n_frames_per_step={r}"])
    torch.manual_seed(0)
    return Tacotron2(cfg.model, 39, 20)


def test_tiny_tacotron2_trains_with_guided_attention_and_infers() -> None:
    m = tiny_dca(r=2)
    text = torch.randint(1, 39, (2, 9))
    tl, ml = torch.tensor([9, 6]), torch.tensor([12, 8])
    mels = torch.randn(2, 20, 12)
    out = m(text, tl, mels, ml)
    assert out.alignments.shape == (2, 6, 9)
    torch.testing.assert_close(out.alignments[0].sum(-1), torch.ones(6), atol=1e-5, rtol=0)
    assert out.alignments[1, :, 6:].abs().max() == 0
    batch = Batch(text, tl, mels, ml, make_gate_targets(ml, mels.size(2)))
    losses = Tacotron2Loss(LossConfig(), 2)(out, batch, ga_weight=5.0)
    assert float(losses["guided_attn"].detach()) > 0
    losses["loss"].backward()
    att = m.decoder.attention_layer
    for p in (att.dynamic_hidden.linear_layer.weight, att.dynamic_taps.linear_layer.weight,
              att.static_conv.conv.weight, att.v.linear_layer.weight):
        assert torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0
    m.eval()
    inf = m.infer(text, tl, max_decoder_steps=5)
    assert inf.alignments.shape[1] <= 5 and torch.isfinite(inf.mel_post).all()
    assert inf.alignments[1, :, 6:].abs().max() == 0


def _autocast_round(device: str) -> None:
    m = tiny_dca(r=2).to(device)
    text = torch.randint(1, 39, (2, 9), device=device)
    tl, ml = torch.tensor([9, 6], device=device), torch.tensor([12, 8], device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = m(text, tl, torch.randn(2, 20, 12, device=device), ml)
        loss = out.mel_post.float().square().mean()
    assert out.alignments.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert float(m.decoder.attention_layer.dynamic_taps.linear_layer.weight.grad.abs().sum()) > 0
    m.eval()
    with torch.autocast(device, dtype=torch.bfloat16):
        inf = m.infer(text, tl, max_decoder_steps=5)
    assert torch.isfinite(inf.mel_post.float()).all()
    torch.testing.assert_close(inf.alignments[0, : int(inf.dec_lengths[0])].sum(-1).cpu(),
                               torch.ones(int(inf.dec_lengths[0])), atol=1e-5, rtol=0)


def test_autocast_bf16_cpu() -> None:
    _autocast_round("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_bf16_cuda() -> None:
    _autocast_round("cuda")
