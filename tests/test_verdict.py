"""The verdict must fail every attention that does not read its text, and name why."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tacotrain.config import AlignmentConfig, AudioConfig
from tacotrain.judge.verdict import (
    MCD_CONST,
    dtw_mean_cost,
    identify,
    judge_item,
    judge_round,
    mcd_dtw,
    mel_cepstra,
    reading,
)

CFG = AlignmentConfig()
FRAME_MS = AudioConfig().frame_ms  # 11.6 ms: 22050 Hz, hop 256
PRIOR = np.array([0.5, 0.3, 0.15, 0.05])  # the small preset's forward prior: stay, +1, +2, +3


def sharp(path: list[int], n: int, peak: float = 0.9) -> np.ndarray:
    """Attention ``[T, n]`` with ``peak`` on path[t] and the rest on the next token."""
    a = np.zeros((len(path), n), dtype=np.float32)
    for t, k in enumerate(path):
        a[t, k] = peak
        a[t, min(k + 1, n - 1)] += 1.0 - peak
    return a


def diagonal(n: int, steps_per_token: float = 2.5) -> list[int]:
    t = round(n * steps_per_token)
    return [min(int(i * n / t), n - 1) for i in range(t)]


def forward_walk(n: int) -> np.ndarray:
    """Attention that ignores the text: the prior applied to itself, from the first token."""
    t = round(n / float((PRIOR * np.arange(4)).sum()))
    a = np.zeros((t, n))
    cur = np.zeros(n)
    cur[0] = 1.0
    for i in range(t):
        a[i] = cur
        nxt = np.zeros(n)
        for move, p in enumerate(PRIOR):
            nxt[move:] += p * cur[: n - move]
            nxt[-1] += p * cur[n - move:].sum() if move else 0.0
        cur = nxt
    return a.astype(np.float32)


def judge(attn: np.ndarray, gate: bool = True, **kw):
    return judge_item(attn, gate, frames=2 * attn.shape[0], cfg=CFG, frame_ms=FRAME_MS, **kw)


def test_clean_gate_stopped_diagonal_is_aligned():
    for n in (8, 20, 40, 60):
        v = judge(sharp(diagonal(n), n), gt_frames=2 * round(n * 2.5), identified=True,
                  mcd_dtw_db=5.0)
        assert v.aligned, (n, v.reasons)
        assert v.reasons == ()
        assert v.skipped_tokens == 0 and v.repeated_tokens == 0 and v.stalled_tokens == 0
        assert v.length_ratio == pytest.approx(1.0)


def test_clean_diagonal_that_hit_the_step_cap_fails():
    v = judge(sharp(diagonal(30), 30), gate=False)
    assert not v.aligned
    assert v.reasons == ("no_gate_stop",)


@pytest.mark.parametrize("n", [20, 40, 60])
def test_text_ignoring_forward_walk_fails(n):
    a = forward_walk(n)
    v = judge(a)
    assert v.diagonality > 0.8  # the shape metric it fools ...
    assert not v.aligned  # ... is not enough
    assert "focus" in v.reasons
    assert v.focus < 0.3


def test_every_other_token_skip_fails():
    n = 40
    path = [2 * t for t in range(n // 2)]
    a = np.zeros((len(path), n), dtype=np.float32)
    a[np.arange(len(path)), path] = 1.0
    v = judge(a)
    assert v.diagonality == pytest.approx(1.0) and v.focus == pytest.approx(1.0)
    assert v.coverage == pytest.approx(0.5)
    assert not v.aligned
    assert "skipped_tokens" in v.reasons
    # odd tokens 1..37 unread (the last token, 39, is where the gate fires: not counted)
    assert v.skipped_tokens == 19 and v.skipped_share == pytest.approx(19 / 39)


def test_jump_back_fails():
    n = 40
    d = diagonal(n)
    to30 = [k for k in d if k <= 30]
    path = to30 + [k for k in d if 15 <= k <= 30] + [k for k in d if k > 30]
    v = judge(sharp(path, n))
    assert not v.aligned
    assert "repeats" in v.reasons
    assert v.repeated_tokens == 13  # tokens 15-27: more than 2 behind the furthest (30)


def test_stall_on_one_token_fails():
    n = 30
    d = diagonal(n)
    i = d.index(12)
    path = d[:i] + [12] * 40 + d[i:]
    v = judge(sharp(path, n))
    assert not v.aligned
    assert v.reasons == ("stalls",)
    assert v.stalled_tokens == 1


def test_a_pause_is_not_a_stall_and_the_limit_is_in_milliseconds():
    # a quick reader (1.5 steps of 23 ms per sound) pausing 18 steps on one sound: 420 ms, more
    # than 8x its median (344 ms), but under the 500 ms a stall needs
    n = 30
    d = diagonal(n, steps_per_token=1.5)
    i = d.index(12)
    path = d[:i] + [12] * 18 + d[i:]
    assert judge(sharp(path, n)).stalled_tokens == 0
    # the same attention at r = 4 (twice the audio per step) holds that sound for 840 ms
    at_r4 = judge_item(sharp(path, n), True, 4 * len(path), CFG, FRAME_MS)
    assert at_r4.reasons == ("stalls",)


def test_boundary_jitter_is_not_a_repeat():
    n = 20
    path = diagonal(n)
    i = path.index(12)
    path[i:i] = [14, 14]  # a glance two tokens ahead, then back: seen in a reading voice
    assert reading(sharp(path, n), CFG, 2 * FRAME_MS).repeated_tokens == 0


def test_little_attention_on_the_final_token_is_not_a_skip():
    n = 20
    a = sharp(diagonal(n), n, peak=1.0)
    a[:, -2] += a[:, -1]
    a[:, -1] = 0.0  # the gate fired as attention reached the final punctuation
    assert reading(a, CFG, 2 * FRAME_MS).skipped_tokens == 0


def test_length_ratio_and_identification_reasons():
    a = sharp(diagonal(20), 20)
    v = judge(a, gt_frames=a.shape[0] * 4, identified=True)  # half the ground truth's length
    assert v.reasons == ("length_ratio",)
    v = judge(a, gt_frames=a.shape[0] * 2, identified=False)
    assert v.reasons == ("not_identified",)
    # ground truth, but too few candidates to test the content: never counts as reading
    v = judge(a, gt_frames=a.shape[0] * 2, identified=None)
    assert v.reasons == ("content_untested",) and not v.aligned
    v = judge(a)  # no ground truth: neither check applies
    assert v.aligned and v.length_ratio is None and v.identified is None


def test_round_needs_every_item_by_default():
    good = judge(sharp(diagonal(20), 20))
    bad = judge(sharp(diagonal(20), 20), gate=False)
    r = judge_round([good, good, good, bad], CFG)
    assert not r.aligned and r.aligned_share == pytest.approx(0.75)
    assert r.failures() == {"no_gate_stop": 1}
    assert "3/4 items aligned" in r.describe()
    lenient = AlignmentConfig(round_share=0.75)
    assert judge_round([good, good, good, bad], lenient).aligned
    assert not judge_round([], CFG).aligned


# ---------------------------------------------------------------------------- MCD-DTW


def test_dtw_mean_cost_by_hand():
    cost = np.array([[0.0, 5.0, 5.0], [5.0, 1.0, 5.0], [5.0, 5.0, 2.0]])
    assert dtw_mean_cost(cost) == pytest.approx(1.0)  # diagonal: (0 + 1 + 2) / 3
    cost = np.array([[1.0, 1.0, 1.0, 9.0]])  # one row: the path must cross every column
    assert dtw_mean_cost(cost) == pytest.approx(3.0)


def test_mcd_of_a_known_cepstral_offset():
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(80, 50))
    c = mel_cepstra(mel, 13)
    assert c.shape == (50, 13)
    # c_k = 1/M sum_m x_m cos(pi k (m + 1/2) / M): adding cos(pi (m + 1/2) / M) to every frame
    # shifts c1 by exactly 1/2 and nothing else, so MCD = MCD_CONST * 0.5 per frame
    m = np.arange(80)
    shifted = mel + np.cos(np.pi * (m + 0.5) / 80)[:, None]
    assert mcd_dtw(mel, shifted) == pytest.approx(MCD_CONST * 0.5, rel=1e-5)
    # c0 (overall level) is excluded
    assert mcd_dtw(mel, mel + 3.0) == pytest.approx(0.0, abs=1e-4)
    # a time-stretched copy aligns perfectly
    assert mcd_dtw(mel, np.repeat(mel, 2, axis=1)) == pytest.approx(0.0, abs=1e-4)


def test_identification_tells_reading_from_an_average():
    rng = np.random.default_rng(1)
    gts = [rng.normal(size=(80, int(rng.integers(40, 60)))) for _ in range(8)]
    ceps = [mel_cepstra(g, 13) for g in gts]
    noisy = [mel_cepstra(g + 0.3 * rng.normal(size=g.shape), 13) for g in gts]
    flags, margins, dist = identify(noisy, ceps, list(range(8)))
    assert all(flags) and dist.shape == (8, 8) and min(margins) > 0.1
    mean = np.mean([g.mean(axis=1) for g in gts], axis=0)
    average = mel_cepstra(np.repeat(mean[:, None], 50, axis=1), 13)
    flags, _, _ = identify([average] * 8, ceps, list(range(8)))
    assert sum(flags) == 0  # the same synthesis is never strictly nearest to its own sentence
    # a "hub" voice: every synthesis is a slightly perturbed copy of one sentence's ground
    # truth; one-way, the hub's own item would be identified by chance; both ways it is not
    hub = [mel_cepstra(gts[3] + 0.3 * rng.normal(size=gts[3].shape), 13) for _ in range(8)]
    one_way = [int(np.argmin(d)) == i for i, d in enumerate(identify(hub, ceps, range(8))[2])]
    assert one_way[3] and sum(one_way) == 1
    assert not any(identify(hub, ceps, list(range(8)))[0])
    assert math.isfinite(float(dist.min()))


def constant(distance: float) -> np.ndarray:
    """Cepstra at a chosen distance from ``np.ones((1, 13))``: MCD-DTW is proportional to it."""
    return np.full((1, 13), 1.0 + distance)


def test_identification_needs_a_margin_not_a_near_tie():
    synth = [np.ones((1, 13))]
    gts = [constant(0.100), constant(0.101), constant(0.102), constant(0.103)]
    flags, margins, _ = identify(synth, gts, [0], margin=0.0)
    # the median other is 0.102 away: 2% further than the own sentence
    assert flags == [True] and margins[0] == pytest.approx(0.02, abs=1e-3)
    assert identify(synth, gts, [0], margin=0.05)[0] == [False]  # 2% nearer is a tie
    gts[2:] = [constant(0.2), constant(0.3)]
    assert identify(synth, gts, [0], margin=0.05)[0] == [True]
    # nearest is necessary: a typical distance far away does not excuse a nearer sentence
    gts = [constant(0.1), constant(0.09), constant(1.0), constant(1.0), constant(1.0)]
    flags, margins, _ = identify(synth, gts, [0], margin=0.05)
    assert flags == [False] and margins[0] > 5


def test_the_margin_does_not_drift_with_the_number_of_candidates():
    # the same voice judged among 8 or among 30 sentences: the nearest other comes closer as
    # candidates are added, the median other does not; the test must mean the same in both
    synth = [np.ones((1, 13))]
    pool = np.linspace(1.3, 2.0, 29)  # other sentences 1.3x to 2x as far as the own one
    sample = pool[2::4]  # 7 of them, spread the same way
    few = identify(synth, [constant(1.0)] + [constant(d) for d in sample], [0], margin=0.3)
    many = identify(synth, [constant(1.0)] + [constant(d) for d in pool], [0], margin=0.3)
    assert few[0] == many[0] == [True]
    assert few[1][0] == pytest.approx(many[1][0]) == pytest.approx(0.65)
    assert sample.min() / pool.min() > 1.03  # while the nearest other did come closer


def test_the_same_sentence_twice_is_not_another_sentence():
    # two ground truths of one sentence (the mini corpus and real corpora repeat sentences; the
    # split keeps them on one side, so both can be validation items): a synthesis that reads
    # it is as near to either, which must not count as a failure to read ...
    rng = np.random.default_rng(2)
    gts = [rng.normal(size=(80, int(rng.integers(40, 60)))) for _ in range(8)]
    gts.append(gts[0] + 0.05 * rng.normal(size=gts[0].shape))  # sentence 0 spoken again
    ceps = [mel_cepstra(g, 13) for g in gts]
    synth = [mel_cepstra(gts[i] + 0.3 * rng.normal(size=gts[i].shape), 13) for i in (0, 1, 2)]
    keys = ["s0"] + [f"s{k}" for k in range(1, 8)] + ["s0"]
    # told nothing, the repeat is "another sentence" as near as its own: a coin flip
    dist = identify(synth, ceps, [0, 1, 2], margin=0.1)[2]
    assert dist[0, 8] == pytest.approx(dist[0, 0], rel=0.05)
    flags, margins, _ = identify(synth, ceps, [0, 1, 2], margin=0.1, keys=keys)
    assert flags == [True, True, True] and min(margins) > 0.1
    # ... while a voice that does not read still fails, keys or not
    mean = np.mean([g.mean(axis=1) for g in gts], axis=0)
    average = mel_cepstra(np.repeat(mean[:, None], 50, axis=1), 13)
    assert not any(identify([average] * 3, ceps, [0, 1, 2], margin=0.1, keys=keys)[0])


def test_a_round_with_a_repeated_sentence_is_judged_by_text():
    import torch

    from tacotrain.judge.freerun import judge

    rng = np.random.default_rng(3)
    gts = [torch.tensor(rng.normal(size=(80, 50)), dtype=torch.float32) for _ in range(9)]
    gts[8] = gts[0] + 0.05 * torch.randn(80, 50)  # a candidate that repeats item 0's sentence
    attn = torch.tensor(sharp(diagonal(20), 20), dtype=torch.float32)
    synth = [(gts[i] + 0.3 * torch.randn(80, 50), attn, True) for i in range(2)]
    texts = ["Sentence zero.", "sentence one"]
    others = [f"sentence {k}" for k in range(2, 8)] + ["sentence ZERO!"]
    cfg = AlignmentConfig(identify_margin=0.1)
    blind = judge(synth, gts[:2], cfg, FRAME_MS, gts[2:])
    # told nothing, item 0 stands beside a repeat of its own sentence: 9 candidates counted
    assert all(it.verdict.identified is not None for it in blind.items)
    by_text = judge(synth, gts[:2], cfg, FRAME_MS, gts[2:], texts, others)
    assert [it.verdict.identified for it in by_text.items] == [True, True]
    # the repeat does not count as a distinct candidate: 7 sentences, not 8, too few to test
    short = judge(synth, gts[:2], cfg, FRAME_MS, gts[2:7] + [gts[8]], texts,
                  others[:5] + others[-1:])
    assert [it.verdict.identified for it in short.items] == [None, None]
    # and an item whose content could not be tested never counts as reading
    assert all(it.verdict.reasons == ("content_untested",) for it in short.items)
    assert not short.verdict.aligned


def test_a_stress_mark_is_read_with_the_onset_before_it():
    """A comma list as a reading phoneme voice attends it: the pause on the space, then the
    stress mark right after each word's onset consonant (measured: onset 0.06-0.19 of a step,
    mark 1.4-5.6). Token by token the onsets look skipped; read as (onset, mark) units, not."""
    word = ["sp", "C", "M", "V", "C2"]  # space, onset, stress mark, vowel, coda
    dwell = [2.0, 0.1, 2.0, 3.0, 1.0]
    tokens, steps = [], []
    for _ in range(8):
        for sym, d in zip(word, dwell, strict=True):
            tokens.append(sym)
            steps.append(d)
    tokens.append("end")
    steps.append(1.0)
    n = len(tokens)
    rows = []
    for k, d in enumerate(steps):  # each token's dwell as whole steps plus a fraction
        whole, frac = int(d), d - int(d)
        rows += [np.eye(n, dtype=np.float32)[k]] * whole
        if frac:
            row = np.zeros(n, dtype=np.float32)
            row[k], row[min(k + 1, n - 1)] = frac, 1.0 - frac
            rows.append(row)
    a = np.stack(rows)
    attached = [t == "M" for t in tokens]
    plain = judge(a)
    assert "skipped_tokens" in plain.reasons and plain.skipped_tokens == 8
    units = judge(a, attached=attached)
    assert units.skipped_tokens == 0 and "skipped_tokens" not in units.reasons
    # the same attention that jumps over whole words (onset, mark and vowel) still fails
    skip_words = a.copy()
    for w in range(0, 8, 2):
        first = 5 * w + 1
        for k in range(first, first + 3):
            hit = skip_words[:, k] > 0
            skip_words[hit, k + 3 - (k - first)] += skip_words[hit, k]
            skip_words[:, k] = 0.0
    v = judge(skip_words, attached=attached)
    assert "skipped_tokens" in v.reasons and v.skipped_tokens == 4 * 2
    with pytest.raises(ValueError, match="attached"):
        reading(a, CFG, 2 * FRAME_MS, attached=attached[:-1])


def test_attached_marks_are_the_modifier_marks_of_the_phoneme_tables():
    from tacotrain.text import attached_marks, phonemes_to_sequence, symbols_for

    en = symbols_for("en", phonemes=True)
    ids = phonemes_to_sequence("ʃˈʊɡɚ, bɹˈɛd ɹˌaɪsiː.", "en")
    marks = [en[i] for i, m in zip(ids, attached_marks(ids, en), strict=True) if m]
    assert marks == ["ˈ", "ˈ", "ˌ", "ː"]
    ru = symbols_for("ru", phonemes=True)
    ids = phonemes_to_sequence("ˈmʲasə", "ru")
    assert attached_marks(ids, ru) == [False, False, True, False, False, False]  # first: never
