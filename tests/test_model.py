"""Tacotron 2 model: shapes, masking, gradients, padding independence, inference stopping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from tacotrain.config import ModelConfig
from tacotrain.model import Tacotron2, Tacotron2Output

from conftest import force_gate

N_SYMBOLS = 30
N_MELS = 16


def tiny_config(**over: object) -> ModelConfig:
    base: dict[str, object] = {
        "symbols_embedding_dim": 32,
        "encoder_embedding_dim": 32,
        "attention_rnn_dim": 64,
        "attention_dim": 32,
        "attention_location_n_filters": 8,
        "attention_location_kernel_size": 7,
        "prenet_dim": 32,
        "decoder_rnn_dim": 64,
        "postnet_embedding_dim": 32,
    }
    base.update(over)
    return ModelConfig.model_validate(base)


def make_model(seed: int = 0, **over: object) -> Tacotron2:
    torch.manual_seed(seed)
    return Tacotron2(tiny_config(**over), N_SYMBOLS, N_MELS)


def make_inputs(
    text_lengths: list[int], mel_lengths: list[int], r: int, seed: int = 0, pad_value: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random padded batch; mel T is rounded up to a multiple of r."""
    g = torch.Generator().manual_seed(seed)
    b = len(text_lengths)
    n = max(text_lengths)
    t = math.ceil(max(mel_lengths) / r) * r
    text = torch.randint(1, N_SYMBOLS, (b, n), generator=g)
    mels = torch.randn(b, N_MELS, t, generator=g)
    for i, (nl, ml) in enumerate(zip(text_lengths, mel_lengths, strict=True)):
        text[i, nl:] = 0
        mels[i, :, ml:] = pad_value
    return text, torch.tensor(text_lengths), mels, torch.tensor(mel_lengths)


def check_alignment_rows(out: Tacotron2Output, text_lengths: Tensor, dec_lengths: Tensor) -> None:
    for i in range(out.alignments.size(0)):
        n, t = int(text_lengths[i]), int(dec_lengths[i])
        a = out.alignments[i].detach()
        torch.testing.assert_close(a[:t, :n].sum(-1), torch.ones(t), atol=1e-5, rtol=0)
        assert float(a[:, n:].abs().sum()) == 0.0  # padded tokens: exactly zero
        assert float(a[t:].abs().sum()) == 0.0  # padded decoder steps: zeroed


@pytest.mark.parametrize("r", [1, 2, 3])
def test_forward_shapes_masks_and_backward(r: int) -> None:
    model = make_model(n_frames_per_step=r)
    model.train()
    text, tl, mels, ml = make_inputs([11, 6, 8], [17, 12, 5], r)
    out = model(text, tl, mels, ml)
    b, t = 3, mels.size(2)
    assert out.mel.shape == (b, N_MELS, t)
    assert out.mel_post.shape == (b, N_MELS, t)
    assert out.gate.shape == (b, t)
    assert out.alignments.shape == (b, t // r, 11)
    for x in out:
        assert torch.isfinite(x).all()
    for i, n in enumerate(ml.tolist()):
        assert float(out.mel[i, :, n:].detach().abs().sum()) == 0.0
        assert float(out.mel_post[i, :, n:].detach().abs().sum()) == 0.0
    check_alignment_rows(out, tl, (ml + r - 1) // r)

    loss = out.mel.square().mean() + out.mel_post.square().mean() + out.gate.sigmoid().mean()
    loss = loss + (out.alignments * torch.rand_like(out.alignments)).sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0.0, name
    # the padding embedding row never learns
    assert float(model.embedding.weight.grad[0].abs().sum()) == 0.0


def test_forward_rejects_length_not_multiple_of_r() -> None:
    model = make_model(n_frames_per_step=2)
    text, tl, mels, ml = make_inputs([5], [9], 1)
    with pytest.raises(ValueError, match="multiple"):
        model(text, tl, mels[:, :, :9], ml)


def test_teacher_forcing_feeds_last_frame_of_each_group() -> None:
    r = 3
    model = make_model(n_frames_per_step=r)
    text, tl, mels, ml = make_inputs([7, 4], [12, 9], r)
    seen: list[Tensor] = []
    hook = model.decoder.prenet.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    model(text, tl, mels, ml)
    hook.remove()
    assert len(seen) == 1  # one call over all steps
    dec_in = seen[0]  # [B, steps, n_mels]
    assert dec_in.shape == (2, 4, N_MELS)
    assert float(dec_in[:, 0].abs().sum()) == 0.0  # go frame
    for k in range(1, 4):
        torch.testing.assert_close(dec_in[:, k], mels[:, :, k * r - 1])


@pytest.mark.parametrize("r", [1, 3])
def test_item_output_independent_of_batch_padding(r: int) -> None:
    model = make_model(n_frames_per_step=r, prenet_dropout_at_inference=False)
    model.eval()
    tls, mls = [13, 5, 9], [22, 7, 14]
    text, tl, mels, ml = make_inputs(tls, mls, r, pad_value=3.0)
    with torch.no_grad():
        batched = model(text, tl, mels, ml)
        for i, (n, m) in enumerate(zip(tls, mls, strict=True)):
            t = math.ceil(m / r) * r
            mel_i = mels[i : i + 1, :, :t].clone()
            mel_i[:, :, m:] = -5.0  # different padding values than in the batch
            single = model(text[i : i + 1, :n], tl[i : i + 1], mel_i, ml[i : i + 1])
            kw = {"atol": 1e-5, "rtol": 1e-4}
            torch.testing.assert_close(batched.mel[i, :, :t], single.mel[0], **kw)
            torch.testing.assert_close(batched.mel_post[i, :, :t], single.mel_post[0], **kw)
            torch.testing.assert_close(batched.gate[i, :t], single.gate[0], **kw)
            steps = t // r
            torch.testing.assert_close(
                batched.alignments[i, :steps, :n], single.alignments[0], **kw
            )


def test_decoder_step_is_pure() -> None:
    model = make_model(n_frames_per_step=2, prenet_dropout_at_inference=False)
    model.eval()
    text, tl, _, _ = make_inputs([9, 4], [10, 10], 2)
    with torch.no_grad():
        memory, mask = model.encode(text, tl)
        dec = model.decoder
        processed = dec.attention_layer.preprocess_memory(memory)
        state = dec.init_state(memory, mask)
        frame = torch.zeros(2, N_MELS)
        for _ in range(3):  # advance to a non-trivial state
            s = dec.step(frame, memory, processed, mask, state)
            state, frame = s.state, s.frames[:, -N_MELS:]
        first = dec.step(frame, memory, processed, mask, state)
        second = dec.step(frame, memory, processed, mask, state)
    assert first.frames.shape == (2, 2 * N_MELS) and first.gate.shape == (2, 2)
    torch.testing.assert_close(first.frames, second.frames, rtol=0, atol=0)
    torch.testing.assert_close(first.gate, second.gate, rtol=0, atol=0)
    torch.testing.assert_close(first.weights, second.weights, rtol=0, atol=0)
    for x, y in zip(first.state, second.state, strict=True):
        if isinstance(x, Tensor):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    # the input state is not modified in place, and the new one differs from it
    assert not torch.equal(first.state.attention_hidden, state.attention_hidden)


def test_infer_stops_by_gate() -> None:
    model = make_model(n_frames_per_step=2)
    model.eval()
    force_gate(model, [-100.0, 100.0])  # second frame of the first step fires
    text, tl, _, _ = make_inputs([8, 3, 5], [4, 4, 4], 2)
    out = model.infer(text, tl)
    assert out.stopped_by_gate.tolist() == [True, True, True]
    assert out.dec_lengths.tolist() == [1, 1, 1]
    assert out.mel_lengths.tolist() == [2, 2, 2]
    assert out.mel_post.shape == (3, N_MELS, 2)
    assert out.alignments.shape == (3, 1, 8)
    force_gate(model, [100.0, 100.0])
    out = model.infer(text, tl)
    assert out.mel_lengths.tolist() == [1, 1, 1]  # cut at the first frame that fired
    assert out.mel_post.shape == (3, N_MELS, 1)


def test_infer_hits_step_limit_scaled_by_text_length() -> None:
    r = 2
    model = make_model(n_frames_per_step=r, max_decoder_steps_per_token=2.5, max_decoder_steps=30)
    model.eval()
    force_gate(model, [-100.0, -100.0])
    text, tl, _, _ = make_inputs([5, 9, 20], [4, 4, 4], r)
    out = model.infer(text, tl)
    limits = [min(30, math.ceil(2.5 * n)) for n in (5, 9, 20)]  # 13, 23, 30
    assert out.dec_lengths.tolist() == limits
    assert out.mel_lengths.tolist() == [r * k for k in limits]
    assert out.stopped_by_gate.tolist() == [False, False, False]
    assert out.mel_post.shape == (3, N_MELS, r * 30)
    assert out.alignments.shape == (3, 30, 20)
    assert torch.isfinite(out.mel_post).all()
    for i, m in enumerate(out.mel_lengths.tolist()):
        assert float(out.mel_post[i, :, m:].abs().sum()) == 0.0
    # explicit limit wins for every item
    out = model.infer(text, tl, max_decoder_steps=4)
    assert out.dec_lengths.tolist() == [4, 4, 4]


def test_infer_batch_matches_single_items() -> None:
    model = make_model(n_frames_per_step=1, prenet_dropout_at_inference=False)
    model.eval()
    force_gate(model, [-100.0])
    tls = [6, 3, 10]
    text, tl, _, _ = make_inputs(tls, [4, 4, 4], 1)
    batched = model.infer(text, tl, max_decoder_steps=None)
    for i, n in enumerate(tls):
        single = model.infer(text[i : i + 1, :n], tl[i : i + 1])
        m = int(single.mel_lengths[0])
        assert int(batched.mel_lengths[i]) == m
        torch.testing.assert_close(
            batched.mel_post[i, :, :m], single.mel_post[0], atol=1e-4, rtol=1e-4
        )
        d = int(single.dec_lengths[0])
        torch.testing.assert_close(
            batched.alignments[i, :d, :n], single.alignments[0], atol=1e-5, rtol=1e-4
        )
        check_alignment_rows(single, tl[i : i + 1], single.dec_lengths)


def test_prenet_dropout_at_inference_flag() -> None:
    text, tl, mels, ml = make_inputs([6], [8], 1)
    for flag in (True, False):
        model = make_model(prenet_dropout_at_inference=flag)
        model.eval()
        with torch.no_grad():
            a, b = model(text, tl, mels, ml), model(text, tl, mels, ml)
        assert torch.equal(a.mel, b.mel) is (not flag)


def test_default_config_size() -> None:
    model = Tacotron2(ModelConfig(), n_symbols=60, n_mels=80)
    n = sum(p.numel() for p in model.parameters())
    assert 27_500_000 < n < 28_700_000  # NVIDIA reference: ~28.2M


def test_odd_encoder_dim_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        Tacotron2(tiny_config(encoder_embedding_dim=33), N_SYMBOLS, N_MELS)


@pytest.mark.parametrize("kernel", [1, 4, 7, 31])
def test_fused_location_layer_matches_conv_reference(kernel: int) -> None:
    from tacotrain.model import LocationLayer

    torch.manual_seed(0)
    layer = LocationLayer(n_filters=8, kernel_size=kernel, attention_dim=16)
    x = torch.rand(3, 2, 23, requires_grad=True)
    ref = layer(x)
    got = layer.apply_fused(x, layer.fused_weight())
    assert got.shape == ref.shape == (3, 23, 16)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *layer.parameters()])
    g_got = torch.autograd.grad(got.square().sum(), [x, *layer.parameters()])
    for a, b in zip(g_ref, g_got, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_even_kernels_keep_lengths() -> None:
    model = make_model(
        n_frames_per_step=2,
        encoder_kernel_size=4,
        postnet_kernel_size=4,
        attention_location_kernel_size=6,
    )
    text, tl, mels, ml = make_inputs([7, 4], [10, 6], 2)
    out = model(text, tl, mels, ml)
    assert out.mel_post.shape == (2, N_MELS, 10)
    check_alignment_rows(out, tl, (ml + 1) // 2)


def test_autocast_bf16_is_finite() -> None:
    model = make_model(n_frames_per_step=2)
    text, tl, mels, ml = make_inputs([9, 5], [14, 9], 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(text, tl, mels, ml)
        loss = out.mel_post.float().square().mean() + out.gate.float().sigmoid().mean()
    assert out.alignments.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    check_alignment_rows(out, tl, (ml + 1) // 2)
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inf = model.infer(text, tl, max_decoder_steps=5)
    assert torch.isfinite(inf.mel_post.float()).all()


def test_zero_text_length_rejected() -> None:
    model = make_model()
    text, _, mels, ml = make_inputs([4, 4], [6, 6], 1)
    with pytest.raises(ValueError, match="text lengths"):
        model(text, torch.tensor([4, 0]), mels, ml)


def test_nan_in_mel_padding_never_reaches_loss_or_gradients() -> None:
    from tacotrain.config import LossConfig
    from tacotrain.model import Batch, Tacotron2Loss, make_gate_targets

    r = 2
    model = make_model(n_frames_per_step=r)
    text, tl, mels, ml = make_inputs([9, 5], [14, 9], r, pad_value=float("nan"))
    batch = Batch(text, tl, mels, ml, make_gate_targets(ml, mels.size(2)))
    out = model(text, tl, mels, ml)
    losses = Tacotron2Loss(LossConfig(), r)(out, batch, ga_weight=2.0)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_prior_attention_only_stays_or_moves_forward() -> None:
    from tacotrain.model.attention import PriorLocationSensitiveAttention, beta_binomial_filter

    f = beta_binomial_filter(11, 0.1, 0.9)
    assert float(f.sum()) == pytest.approx(1.0, abs=1e-5) and f.argmax() == 0
    att = PriorLocationSensitiveAttention(16, 8, 8, 4, 5, filter_len=11)
    prev = torch.zeros(1, 30)
    prev[0, 5] = 1.0
    lp = att.log_prior(prev)[0]
    assert torch.allclose(lp[:5], torch.full((5,), math.log(1e-8)))  # no way back
    assert torch.allclose(lp[16:], torch.full((14,), math.log(1e-8)))  # no jump past 10
    assert torch.allclose(lp[5:16].exp(), f, atol=1e-6)
    state = att.init_state(torch.zeros(2, 7, 8), torch.ones(2, 7, dtype=torch.bool))
    assert state.weights[:, 0].eq(1).all() and state.weights[:, 1:].eq(0).all()


@pytest.mark.parametrize("attention", ["location", "location_prior"])
def test_attention_types_train_and_infer(attention: str) -> None:
    from tacotrain.config import load_config
    from tacotrain.model import Tacotron2

    cfg = load_config("tiny", [f"model.attention={attention}"])
    torch.manual_seed(0)
    m = Tacotron2(cfg.model, 39, 20)
    text = torch.randint(1, 39, (2, 9))
    out = m(text, torch.tensor([9, 6]), torch.randn(2, 20, 12), torch.tensor([12, 8]))
    assert out.alignments.shape == (2, 6, 9)
    assert torch.allclose(out.alignments[0].sum(-1), torch.ones(6), atol=1e-5)
    assert out.alignments[1, :, 6:].abs().max() == 0
    m.eval()
    inf = m.infer(text, torch.tensor([9, 6]), max_decoder_steps=5)
    assert inf.alignments.shape[1] <= 5 and torch.isfinite(inf.mel_post).all()
