"""The alignment verdict: does a free-running synthesis read its text?

One item is judged from its free-running synthesis (attention ``[T_dec, N]``, frames, whether
the gate stopped it) and, where the item has one, its ground-truth mel. It is *aligned* only
when every check below holds; each failed check adds a machine-readable reason:

* ``no_gate_stop``: the decoder hit its step cap instead of stopping by the gate;
* ``length_ratio``: free-running frames / ground-truth frames outside
  ``[length_ratio_min, length_ratio_max]`` (ground truth only);
* ``skipped_tokens``: a token is *read* when its attention summed over decoder steps, in
  milliseconds of audio (a step speaks ``r x hop_length / sample_rate``), reaches ``read_ms``;
  more than ``max_skipped_share`` unread tokens fails.
  The last token is not counted: the gate fires as attention reaches it (often the final
  punctuation), so a reading voice gives it little attention. Where the caller says which
  tokens are marks attached to the sound before them (phoneme stress, length and
  palatalisation marks: :func:`tacotrain.text.attached_marks`), a mark and that sound are one
  unit and their attention is summed: espeak-ng writes the stress mark between an onset
  consonant and its vowel, and a reading voice attends the mark while it says the consonant;
  counted per token, a word's onset consonant would look skipped, its attention going to the
  mark after it;
* ``repeats``: the attention argmax returns more than ``repeat_tolerance`` tokens behind the
  furthest token it had reached; the distinct tokens returned to are counted;
* ``stalls``: a token holds more than ``stall_factor`` x the item's median per-token attention
  (and at least ``stall_min_ms`` of audio);
* ``focus``, ``coverage``, ``diagonality``: the four classic metrics of
  :func:`tacotrain.judge.alignment.alignment_metrics` below their thresholds. They describe the
  shape of the attention only: a text-ignoring forward walk scores a diagonality of 0.84-0.97, so
  diagonality alone is never evidence of reading;
* ``not_identified``: the content test. Among the ground truths of a round (at least
  ``min_candidates``, padded with training items when the round has fewer), an item's synthesis
  must be nearer to its own ground truth than to any other (MCD-DTW, below), and its ground
  truth nearer to it than to the round's other syntheses, both by a margin against the median
  distance to another sentence (see :func:`identify`). A voice that
  only fills the right length with an average spectrum matches its own sentence by chance;
* ``mcd``: MCD-DTW above ``max_mcd_dtw_db`` (only when that bound is set);
* ``content_untested``: the item has ground truth but fewer than ``min_candidates`` distinct
  sentences could be compared, so the content test did not run; such an item never counts as
  reading.

A round is aligned when at least ``round_share`` of its items are *and*, where a recogniser
judged it (tacotrain/judge/intelligibility.py), the round's word error rate is within
``max_wer_ratio`` of the same items' resynthesis floor. Rhythm and spectral envelope can make a
synthesis nearest to its own recording while nobody understands it; the recogniser cannot be
fooled that way.

MCD-DTW, exactly: the cepstrum of a frame is the real cepstrum of its mel-warped natural-log
magnitude spectrum, ``c_k = 1/M * sum_m log_mel[m] * cos(pi * k * (m + 1/2) / M)`` over the
``M`` mel channels (a DCT-II scaled by 1/(2M), which equals the inverse DFT of the log spectrum
mirrored to 2M points), of which coefficients 1..``n_cepstra`` are kept (c0, the frame level,
is excluded). The frame distance is the mel-cepstral distortion
``10 / ln 10 * sqrt(2 * sum_k (c_k - c'_k)^2)`` in dB. Frames are paired along the dynamic time
warping path of least total distance with steps (1, 0), (0, 1), (1, 1) of equal weight and no
slope constraint; the result is the total distance along the path divided by the number of
frame pairs on it (dB per path step). The same distance drives the content test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.fft import dct

from tacotrain.config import AlignmentConfig
from tacotrain.judge.alignment import alignment_metrics
from tacotrain.judge.intelligibility import Heard, Intelligibility

MCD_CONST = 10.0 / math.log(10.0) * math.sqrt(2.0)

REASONS = ("no_gate_stop", "length_ratio", "skipped_tokens", "repeats", "stalls", "focus",
           "coverage", "diagonality", "not_identified", "content_untested", "mcd")


# ---------------------------------------------------------------------------- MCD-DTW


def mel_cepstra(log_mel: np.ndarray | torch.Tensor, n_cepstra: int) -> np.ndarray:
    """Natural-log mel ``[n_mels, T]`` -> cepstra ``[T, n_cepstra]`` (c1..c_n, c0 excluded)."""
    m = log_mel.detach().float().cpu().numpy() if isinstance(log_mel, torch.Tensor) \
        else np.asarray(log_mel, dtype=np.float32)
    if m.ndim != 2 or m.shape[1] == 0:
        raise ValueError(f"expected a log-mel of shape [n_mels, T>0], got {m.shape}")
    c = dct(m.astype(np.float64), type=2, axis=0) / (2 * m.shape[0])
    return np.ascontiguousarray(c[1 : n_cepstra + 1].T)


def dtw_mean_cost(cost: np.ndarray) -> float:
    """Mean frame cost along the least-total-cost warping path of ``cost [n, m]``.

    Steps (1, 0), (0, 1), (1, 1), each adding the cost of the cell it enters; the path runs from
    (0, 0) to (n-1, m-1). Computed one anti-diagonal at a time (vectorised), carrying the path
    length beside the total so the mean is exact for the chosen path.
    """
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    steps = np.zeros((n + 1, m + 1))
    total[0, 0] = 0.0
    for s in range(2, n + m + 1):
        i = np.arange(max(1, s - m), min(n, s - 1) + 1)
        j = s - i
        cand = np.stack([total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]])
        lens = np.stack([steps[i - 1, j - 1], steps[i - 1, j], steps[i, j - 1]])
        k = np.argmin(cand, axis=0)
        pick = np.arange(i.size)
        total[i, j] = cand[k, pick] + cost[i - 1, j - 1]
        steps[i, j] = lens[k, pick] + 1
    return float(total[n, m] / steps[n, m])


def cepstral_distance(a: np.ndarray, b: np.ndarray) -> float:
    """MCD-DTW in dB between cepstra ``a [Ta, K]`` and ``b [Tb, K]``."""
    diff = a[:, None, :] - b[None, :, :]
    cost = MCD_CONST * np.sqrt((diff * diff).sum(axis=2))
    return dtw_mean_cost(cost)


def mcd_dtw(mel_a: np.ndarray | torch.Tensor, mel_b: np.ndarray | torch.Tensor,
            n_cepstra: int = 13) -> float:
    """MCD-DTW in dB between two natural-log mels ``[n_mels, T]`` (see the module docstring)."""
    return cepstral_distance(mel_cepstra(mel_a, n_cepstra), mel_cepstra(mel_b, n_cepstra))


def identify(synth_ceps: Sequence[np.ndarray], gt_ceps: Sequence[np.ndarray],
             own: Sequence[int], margin: float = 0.0, keys: Sequence[str] | None = None
             ) -> tuple[list[bool], list[float], np.ndarray]:
    """The content test, both ways. ``synth_ceps[i]`` is identified when its own ground truth
    ``gt_ceps[own[i]]`` is the nearest of all ``gt_ceps`` to it, *and* it is the nearest of the
    syntheses to that ground truth (mutual nearest neighbours; the second half needs two or
    more syntheses), *and* in both directions its own distance is clearly below the typical
    distance to another sentence: ``d_own * (1 + margin) < median(d_other)``. The second half
    matters: a voice that does not read produces about the same spectrum for every sentence,
    which lies nearest to one "hub" ground truth, and the one synthesis whose own sentence is the
    hub would pass a one-way test by chance. The margin is taken against the median rather than
    the nearest other, so that it means the same with 8 candidates or 30: the nearest of more
    distances is nearer, the median is not (benchmarks/content_margin.py). ``keys``
    (one per ground truth, e.g. the normalised sentence) mark ground truths of the same sentence:
    those are not "another sentence" for each other, so they are left out of each other's
    comparisons (the same sentence spoken twice cannot be told apart, and is not a failure to
    read).

    Returns the flags, each item's content margin ``median(d_other) / d_own - 1`` (the smaller
    of the two directions; ``inf`` with nothing to compare; an item that is not a mutual nearest
    neighbour keeps its margin but is not identified) and the distance matrix ``[S, G]`` (dB)."""
    dist = np.array([[cepstral_distance(s, g) for g in gt_ceps] for s in synth_ceps])
    dist = dist.reshape(len(synth_ceps), len(gt_ceps))
    keys = list(keys) if keys is not None else list(range(len(gt_ceps)))
    flags, margins = [], []
    for i, o in enumerate(own):
        other_gts = dist[i, [g for g in range(len(gt_ceps)) if keys[g] != keys[o]]]
        other_synths = dist[[k for k in range(len(own)) if keys[own[k]] != keys[o]], o]
        d = float(dist[i, o])
        sides = [x for x in (other_gts, other_synths) if x.size]
        if not sides:
            flags.append(True)
            margins.append(math.inf)
            continue
        typical = min(float(np.median(x)) for x in sides)
        nearest = min(float(x.min()) for x in sides)
        m = typical / d - 1.0 if d > 0 else math.inf if typical > 0 else 0.0
        margins.append(m)
        flags.append(d < nearest and m > margin)
    return flags, margins, dist


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Reading:
    """How an attention matrix walks through its tokens."""

    skipped_tokens: int
    skipped_share: float
    repeated_tokens: int
    stalled_tokens: int


def reading(attn: np.ndarray, cfg: AlignmentConfig, step_ms: float,
            attached: Sequence[bool] | None = None) -> Reading:
    """Skips, repeats and stalls of one item's attention ``[T_dec, N]`` (valid region only);
    ``step_ms``: the milliseconds of audio one decoder step speaks.

    ``attached`` ``[N]``: True at a mark that is read together with the token before it (see
    the module docstring); skips are then counted over such units, ``skipped_tokens`` being the
    number of unread units."""
    a = np.asarray(attn, dtype=np.float64)
    t, n = a.shape
    if t == 0 or n == 0:
        return Reading(n, 1.0, 0, 0)
    dwell = a.sum(axis=0) * step_ms  # [N]: milliseconds of audio spoken on each token
    read = dwell >= cfg.read_ms
    if attached is not None:
        if len(attached) != n:
            raise ValueError(f"attached has {len(attached)} entries for {n} tokens")
        starts = ~np.asarray(attached, dtype=bool)
        starts[0] = True
        unit = np.cumsum(starts) - 1  # [N]: the unit each token belongs to
        unit_read = np.bincount(unit, weights=dwell) >= cfg.read_ms
    else:
        unit_read = read
    counted = max(len(unit_read) - 1, 1)  # the last unit is where the gate fires: not counted
    skipped = int(counted - unit_read[:counted].sum())
    path = a.argmax(axis=1)  # [T]
    furthest = np.maximum.accumulate(path)
    back = np.zeros(t, dtype=bool)
    back[1:] = path[1:] < furthest[:-1] - cfg.repeat_tolerance
    repeated = len(set(path[back].tolist()))
    median = float(np.median(dwell[read])) if read.any() else 0.0
    limit = max(cfg.stall_factor * median, cfg.stall_min_ms)
    stalled = int((dwell > limit).sum())
    return Reading(skipped, skipped / counted, repeated, stalled)


# ---------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class ItemVerdict:
    aligned: bool
    reasons: tuple[str, ...]
    stopped_by_gate: bool
    frames: int
    length_ratio: float | None
    skipped_tokens: int
    skipped_share: float
    repeated_tokens: int
    stalled_tokens: int
    diagonality: float
    focus: float
    coverage: float
    monotonicity: float
    mcd_dtw_db: float | None
    identified: bool | None
    content_margin: float | None  # how much nearer to its own ground truth (see identify)
    wer: float | None = None  # the recogniser on the synthesis (None: not listened to)
    floor_wer: float | None = None  # the recogniser on the ground truth through the vocoder
    transcript: str | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


def judge_item(attn: np.ndarray | torch.Tensor, stopped_by_gate: bool, frames: int,
               cfg: AlignmentConfig, frame_ms: float, gt_frames: int | None = None,
               mcd_dtw_db: float | None = None, identified: bool | None = None,
               content_margin: float | None = None,
               attached: Sequence[bool] | None = None, heard: Heard | None = None,
               floor: Heard | None = None) -> ItemVerdict:
    """The verdict on one free-running item. ``attn [T_dec, N]`` is its valid region, of
    ``frames`` mel frames of ``frame_ms`` milliseconds each (hop_length / sample_rate);
    ``gt_frames``, ``mcd_dtw_db``, ``identified`` and ``content_margin`` are None where it has
    no ground truth; ``attached`` (see :func:`reading`) where its tokens are known; ``heard``
    and ``floor`` what a recogniser made of the synthesis and of the ground truth (reported
    here, judged per round)."""
    a = attn.detach().float().cpu() if isinstance(attn, torch.Tensor) \
        else torch.as_tensor(np.asarray(attn, dtype=np.float32))
    t, n = a.shape
    m = {k: float(v[0]) for k, v in alignment_metrics(
        a[None], torch.tensor([n]), torch.tensor([t])).items()}
    rd = reading(a.numpy(), cfg, frame_ms * frames / max(t, 1), attached)
    ratio = frames / gt_frames if gt_frames else None
    checks = {
        "no_gate_stop": cfg.require_gate_stop and not stopped_by_gate,
        "length_ratio": ratio is not None
        and not cfg.length_ratio_min <= ratio <= cfg.length_ratio_max,
        "skipped_tokens": rd.skipped_share > cfg.max_skipped_share,
        "repeats": rd.repeated_tokens > cfg.max_repeated_tokens,
        "stalls": rd.stalled_tokens > cfg.max_stalled_tokens,
        "focus": m["focus"] < cfg.focus,
        "coverage": m["coverage"] < cfg.coverage,
        "diagonality": m["diagonality"] < cfg.diagonality,
        "not_identified": cfg.require_identified and identified is False,
        "content_untested": cfg.require_identified and gt_frames is not None
        and identified is None,
        "mcd": cfg.max_mcd_dtw_db is not None and mcd_dtw_db is not None
        and mcd_dtw_db > cfg.max_mcd_dtw_db,
    }
    reasons = tuple(k for k in REASONS if checks[k])
    return ItemVerdict(not reasons, reasons, bool(stopped_by_gate), int(frames), ratio,
                       rd.skipped_tokens, rd.skipped_share, rd.repeated_tokens,
                       rd.stalled_tokens, m["diagonality"], m["focus"], m["coverage"],
                       m["monotonicity"], mcd_dtw_db, identified, content_margin,
                       None if heard is None else heard.wer,
                       None if floor is None else floor.wer,
                       None if heard is None else heard.transcript)


@dataclass(frozen=True)
class RoundVerdict:
    """The verdicts of one round of free-running items, and whether the round is aligned."""

    items: tuple[ItemVerdict, ...]
    aligned: bool
    aligned_share: float
    intelligibility: Intelligibility | None = None  # None: no recogniser judged the round

    def summary(self) -> dict[str, float]:
        """Means and shares over the items (NaN where no item has the figure)."""
        def mean(vals: list[float | None]) -> float:
            v = [x for x in vals if x is not None and math.isfinite(x)]
            return float(np.mean(v)) if v else float("nan")

        it = self.items
        ident = [float(i.identified) for i in it if i.identified is not None]
        return {
            "aligned": float(self.aligned),
            "aligned_share": self.aligned_share,
            "stopped_by_gate": mean([float(i.stopped_by_gate) for i in it]),
            "length_ratio": mean([i.length_ratio for i in it]),
            "skipped_share": mean([i.skipped_share for i in it]),
            "skipped_tokens": mean([float(i.skipped_tokens) for i in it]),
            "repeated_tokens": mean([float(i.repeated_tokens) for i in it]),
            "stalled_tokens": mean([float(i.stalled_tokens) for i in it]),
            "identified_share": mean(ident),
            "mcd_dtw_db": mean([i.mcd_dtw_db for i in it]),
            "diagonality": mean([i.diagonality for i in it]),
            "focus": mean([i.focus for i in it]),
            "coverage": mean([i.coverage for i in it]),
            "monotonicity": mean([i.monotonicity for i in it]),
            **self.intelligibility_summary(),
        }

    def intelligibility_summary(self) -> dict[str, float]:
        """``wer``, ``floor_wer``, ``wer_ratio`` (wer / floor_wer), ``wer_bound``,
        ``intelligible``; empty where no recogniser
        judged the round (nothing to plot)."""
        i = self.intelligibility
        if i is None or not i.tested:
            return {}
        return {"wer": i.wer, "floor_wer": i.floor_wer, "wer_ratio": i.ratio,
                "wer_bound": i.bound, "intelligible": float(i.passed)}

    def item_figures(self) -> dict[str, list[float | None]]:
        """Per-item figures, in item order, under the summary's keys (None: the item has no
        such figure): what a tuner compares item by item between two trials."""
        def ratio(i: ItemVerdict) -> float | None:
            if i.wer is None or i.floor_wer is None:
                return None
            return i.wer / max(i.floor_wer, 1e-3)  # a floor of 0: every error counts fully

        it = self.items
        return {"aligned": [float(i.aligned) for i in it],
                "mcd_dtw_db": [i.mcd_dtw_db for i in it],
                "wer": [i.wer for i in it],
                "wer_ratio": [ratio(i) for i in it]}

    def failures(self) -> dict[str, int]:
        """How many items failed each reason (only reasons that occurred)."""
        out: dict[str, int] = {}
        for item in self.items:
            for r in item.reasons:
                out[r] = out.get(r, 0) + 1
        return out

    def describe(self) -> str:
        """One line in words: the share aligned and why the others failed."""
        n = len(self.items)
        ok = sum(i.aligned for i in self.items)
        text = f"{ok}/{n} items aligned"
        fails = self.failures()
        if fails:
            text += "; failed: " + ", ".join(f"{r} ({c})" for r, c in fails.items())
        i = self.intelligibility
        if i is not None:
            verdict = "intelligibility" if not i.tested else \
                "intelligible" if i.passed else "NOT intelligible"
            text += f"; {verdict}: {i.describe()}"
        return text


def judge_round(items: Sequence[ItemVerdict], cfg: AlignmentConfig,
                intelligibility: Intelligibility | None = None) -> RoundVerdict:
    """A round is aligned when at least ``round_share`` of its items are (default: all) and,
    where a recogniser judged it, it is intelligible; with a recogniser named in ``asr``
    (pocketsphinx, vosk: required) a round it could not judge never is."""
    n = len(items)
    share = sum(i.aligned for i in items) / n if n else 0.0
    ok = n > 0 and share >= cfg.round_share - 1e-9
    if intelligibility is not None and (intelligibility.tested or cfg.asr_required()):
        ok = ok and intelligibility.passed
    return RoundVerdict(tuple(items), ok, share, intelligibility)


__all__ = ["REASONS", "ItemVerdict", "Reading", "RoundVerdict", "cepstral_distance",
           "dtw_mean_cost", "identify", "judge_item", "judge_round", "mcd_dtw", "mel_cepstra",
           "reading"]
