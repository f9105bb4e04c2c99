"""The conv stacks on packed sequences equal the padded batch, batch statistics included.

``packed.py`` drops the padding of the encoder and postnet conv stacks but must keep the
padded batch's BatchNorm statistics (padding positions count, their conv output is the bias)
and its dropout masks. Each test runs a module both ways from the same seed, in training mode
with dropout on, and compares outputs, gradients and running statistics.
"""

from __future__ import annotations

import pytest
import torch

from tacotrain.model.layers import frame_mask
from tacotrain.model.packed import pack, packed_layout, unpack
from tacotrain.model.tacotron2 import Encoder, Postnet


def _both(module, run, seed: int = 3):
    results = []
    for packed in (False, True):
        module.packed = packed
        module.zero_grad()
        torch.manual_seed(seed)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.reset_running_stats()
        out, x = run()
        (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters()}
        stats = [(m.running_mean.clone(), m.running_var.clone())
                 for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        results.append((out.detach(), x.grad.clone(), grads, stats))
        x.grad = None
    return results


def _assert_equal(padded, packed, tol: float) -> None:
    (out0, dx0, g0, s0), (out1, dx1, g1, s1) = padded, packed
    assert torch.allclose(out1, out0, atol=tol, rtol=0)
    assert torch.allclose(dx1, dx0, atol=tol, rtol=0)
    for name, g in g0.items():
        if name.endswith("conv.bias"):  # in theory zero before BatchNorm: rounding noise
            continue
        assert torch.allclose(g1[name], g, atol=tol * max(1.0, float(g.abs().max())),
                              rtol=0), name
    for (m0, v0), (m1, v1) in zip(s0, s1, strict=True):
        assert torch.allclose(m1, m0, atol=tol, rtol=0)
        assert torch.allclose(v1, v0, atol=tol, rtol=0)


@pytest.mark.parametrize("kernel", [5, 4, 1])
def test_packed_postnet_equals_padded_with_dropout(kernel: int) -> None:
    torch.manual_seed(0)
    post = Postnet(6, 16, kernel, 4, dropout=0.5).double().train()
    lengths = torch.tensor([13, 30, 1, 7, 30])  # one item without padding, one of 1 frame
    x = torch.randn(5, 6, 30, dtype=torch.double)
    mask = frame_mask(lengths, 30).unsqueeze(1)
    x = torch.where(mask, x, 0.0).requires_grad_()

    def run():  # the model masks the postnet's input: padding gets no gradient
        return post(torch.where(mask, x, 0.0), mask), x

    padded, packed = _both(post, run)
    _assert_equal(padded, packed, 1e-12)
    assert (packed[0].masked_select(~mask) == 0).all()  # padding stays exactly zero
    # the statistics count the padding: without it the running mean would differ
    assert not torch.allclose(padded[3][0][0], torch.zeros(16, dtype=torch.double))


def test_packed_encoder_equals_padded_with_dropout() -> None:
    torch.manual_seed(0)
    enc = Encoder(8, 12, 3, 5, dropout=0.5).double().train()
    lengths = torch.tensor([4, 11, 2, 11])
    x = torch.randn(4, 8, 11, dtype=torch.double, requires_grad=True)

    def run():
        return enc(x, lengths, frame_mask(lengths, 11)), x

    _assert_equal(*_both(enc, run), 1e-12)


def test_packed_postnet_in_eval_uses_running_statistics() -> None:
    torch.manual_seed(0)
    post = Postnet(6, 16, 5, 3, dropout=0.5)
    for m in post.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    post.eval()
    lengths = torch.tensor([9, 20, 3])
    mask = frame_mask(lengths, 20).unsqueeze(1)
    x = torch.where(mask, torch.randn(3, 6, 20), 0.0)
    outs = []
    for packed in (False, True):
        post.packed = packed
        with torch.no_grad():
            outs.append(post(x, mask))
    assert torch.allclose(outs[1], outs[0], atol=1e-5, rtol=0)


def test_layout_round_trips_and_counts_every_padded_position() -> None:
    lengths = torch.tensor([3, 8, 6])
    layout = packed_layout(lengths, 8, 2, 2)
    # each item, then a gap of 4; tails: 2, 0 (no padding), 2 positions
    assert layout.gather.numel() == 3 + 8 + 6 + 3 * 4
    assert layout.n_counted == 3 + 2 + 8 + 6 + 2
    assert layout.n_counted + layout.n_virtual == 3 * 8
    x = torch.where(frame_mask(lengths, 8).unsqueeze(1), torch.randn(3, 5, 8), 0.0)
    packed = pack(x, layout)
    assert packed.shape == (5, layout.gather.numel())
    assert (packed[:, ~layout.real] == 0).all()
    assert torch.equal(unpack(packed, layout), x)
