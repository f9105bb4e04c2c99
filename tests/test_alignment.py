"""Alignment metrics: values on known matrices, padding invariance, the predecessor's bug."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tacotrain.judge.alignment import alignment_metrics, plot_alignment, plot_mel


def diagonal(t: int, n: int) -> Tensor:
    """One-hot on the straight path from (0, 0) to (t-1, n-1): ``[t, n]``."""
    a = torch.zeros(t, n)
    idx = torch.round(torch.arange(t) * (n - 1) / max(t - 1, 1)).long()
    a[torch.arange(t), idx] = 1.0
    return a


def uniform(t: int, n: int) -> Tensor:
    return torch.full((t, n), 1.0 / n)


def metrics1(a: Tensor) -> dict[str, float]:
    """Metrics of one unpadded ``[T, N]`` matrix as floats."""
    t, n = a.shape
    m = alignment_metrics(a[None], torch.tensor([n]), torch.tensor([t]))
    return {k: float(v[0]) for k, v in m.items()}


def legacy_diagonality(a: Tensor) -> float:
    """The predecessor's metric: mean of attn[i, i] over i < min(T, N)."""
    k = min(a.shape)
    return float(a[torch.arange(k), torch.arange(k)].mean())


def test_perfect_diagonal_non_square_scores_one() -> None:
    m = metrics1(diagonal(120, 37))
    assert m == pytest.approx({"diagonality": 1, "focus": 1, "coverage": 1, "monotonicity": 1})


@pytest.mark.parametrize(("t", "n"), [(37, 120), (50, 50), (7, 3), (5, 1)])
def test_perfect_diagonal_other_shapes(t: int, n: int) -> None:
    m = metrics1(diagonal(t, n))
    assert m["diagonality"] == pytest.approx(1.0)
    assert m["focus"] == pytest.approx(1.0)
    assert m["monotonicity"] == pytest.approx(1.0)


def test_synthesis_that_stops_at_once_is_not_aligned() -> None:
    # one decoder step over 5 tokens cannot follow the text, whatever it attends to
    for k in range(5):
        a = torch.zeros(1, 5)
        a[0, k] = 1.0
        m = metrics1(a)
        assert m["diagonality"] == (1.0 if k in (1, 2, 3) else 0.0)  # centre 0.5 +- 0.2
        assert m["coverage"] == pytest.approx(0.2)


@pytest.mark.parametrize(("t", "n"), [(120, 37), (200, 60), (80, 80), (400, 150)])
def test_uniform_attention(t: int, n: int) -> None:
    m = metrics1(uniform(t, n))
    assert 0.36 <= m["diagonality"] <= 0.40
    assert m["focus"] == pytest.approx(1.0 / n)
    assert m["coverage"] == pytest.approx(1.0 / n)


def test_reversed_attention_is_bad() -> None:
    a = diagonal(120, 37).flip(1)  # anti-diagonal: reads the text backwards
    m = metrics1(a)
    assert m["diagonality"] < 0.25
    assert m["monotonicity"] == 0.0
    assert m["focus"] == pytest.approx(1.0)  # sharp, just in the wrong direction


def test_monotonicity_counts_backward_jumps() -> None:
    # argmax path 0,1,2,1,2,3: 5 changes, 4 forward
    path = [0, 1, 2, 1, 2, 3]
    a = torch.zeros(6, 4)
    a[torch.arange(6), torch.tensor(path)] = 1.0
    assert metrics1(a)["monotonicity"] == pytest.approx(4 / 5)
    # never changes -> 1.0
    b = torch.zeros(5, 4)
    b[:, 2] = 1.0
    assert metrics1(b)["monotonicity"] == 1.0


def test_coverage_detects_skipped_tokens() -> None:
    a = torch.zeros(10, 10)
    a[torch.arange(10), torch.tensor([0, 1, 2, 3, 4, 4, 4, 7, 8, 9])] = 1.0  # tokens 5, 6 skipped
    assert metrics1(a)["coverage"] == pytest.approx(0.8)


def test_padded_batch_equals_per_item_and_ignores_garbage() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(120, 37), (64, 20), (90, 45)]
    items = [torch.softmax(torch.randn(t, n, generator=g) * 3, dim=1) for t, n in shapes]
    items[0] = diagonal(120, 37)
    t_max = max(t for t, _ in shapes) + 7
    n_max = max(n for _, n in shapes) + 5
    batch = torch.full((len(items), t_max, n_max), 1e6)  # garbage padding
    for i, a in enumerate(items):
        batch[i, : a.shape[0], : a.shape[1]] = a
    text_lengths = torch.tensor([n for _, n in shapes])
    dec_lengths = torch.tensor([t for t, _ in shapes])
    got = alignment_metrics(batch, text_lengths, dec_lengths)
    for val in got.values():
        assert val.shape == (3,) and val.dtype == torch.float32
    for i, a in enumerate(items):
        ref = metrics1(a)
        for key in ref:
            assert float(got[key][i]) == pytest.approx(ref[key], abs=1e-6), key
    # different garbage, same answer
    batch2 = batch.clone()
    pad = batch2 == 1e6
    batch2[pad] = -3.0
    got2 = alignment_metrics(batch2, text_lengths, dec_lengths)
    for key in got:
        torch.testing.assert_close(got[key], got2[key])


def test_predecessor_metric_cannot_tell_perfect_from_uniform() -> None:
    t, n = 120, 37
    perfect, flat = diagonal(t, n), uniform(t, n)
    old_perfect, old_flat = legacy_diagonality(perfect), legacy_diagonality(flat)
    assert old_perfect == pytest.approx(1.0 / n, abs=0.01)
    assert old_flat == pytest.approx(1.0 / n, abs=0.01)
    new_perfect, new_flat = metrics1(perfect)["diagonality"], metrics1(flat)["diagonality"]
    assert new_perfect == pytest.approx(1.0)
    assert new_flat < 0.41
    assert new_perfect - new_flat > 0.5


def test_band_keyword() -> None:
    m_narrow = alignment_metrics(
        uniform(100, 40)[None], torch.tensor([40]), torch.tensor([100]), band=0.05
    )
    m_wide = alignment_metrics(
        uniform(100, 40)[None], torch.tensor([40]), torch.tensor([100]), band=0.5
    )
    assert float(m_narrow["diagonality"][0]) < 0.15 < 0.7 < float(m_wide["diagonality"][0])


def test_plots_write_png(tmp_path) -> None:
    p = tmp_path / "sub" / "align.png"
    plot_alignment(diagonal(30, 10), p, title="t", info="step 1")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    q = tmp_path / "mel.png"
    plot_mel(torch.randn(80, 50), q, title="mel")
    assert q.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [x.name for x in tmp_path.rglob("*.tmp")] == []
