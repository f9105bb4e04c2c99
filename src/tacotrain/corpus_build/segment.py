"""Where a long recording pauses: frame energy against an adaptive threshold.

A frame is speech when its level (RMS in dB, one frame per ``frame_seconds``) is well above the
recording's noise floor: above ``floor + speech_margin_db`` and above ``floor + speech_fraction
* (peak - floor)``, where the floor is a low percentile of all frame levels and the peak a high
one. The threshold follows the recording, so steady background noise raises the floor with it
instead of turning every pause into speech. Bursts above the threshold shorter than
``min_speech`` (clicks) count as pause; runs of non-speech at least ``min_pause`` long are the
pauses, and the middle of a pause is where a clip may be cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tacotrain.config import CorpusBuildConfig

_PEAK_PERCENTILE = 95.0
_FLOOR_DB = -100.0  # digital silence reads as this, not -inf


@dataclass(frozen=True)
class Pause:
    """A run of non-speech, in seconds; ``depth_db``: how far its mean level lies below the
    recording's speech peak (deeper pauses are surer cuts)."""

    start: float
    end: float
    depth_db: float

    @property
    def centre(self) -> float:
        return 0.5 * (self.start + self.end)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Segmentation:
    """Frame levels and what they say: ``speech`` per frame, the pauses between speech, and the
    first and last speech time (``speech_start`` > ``speech_end`` when nothing is speech)."""

    hop: float  # seconds per frame
    level_db: np.ndarray  # [F] float64
    speech: np.ndarray  # [F] bool
    floor_db: float
    threshold_db: float
    pauses: list[Pause]
    speech_start: float
    speech_end: float
    duration: float

    def frame(self, t: float) -> int:
        return int(np.clip(round(t / self.hop), 0, len(self.level_db) - 1))

    def regions(self) -> list[tuple[float, float]]:
        """Speech stretches between consecutive pauses, ``[(start, end)]`` in seconds."""
        if self.speech_start > self.speech_end:
            return []
        edges = [self.speech_start]
        for p in self.pauses:
            edges += [p.start, p.end]
        edges.append(self.speech_end)
        return list(zip(edges[::2], edges[1::2], strict=True))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, end)]`` frame ranges where ``mask`` is true."""
    padded = np.concatenate(([False], mask, [False]))
    change = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(change[::2].tolist(), change[1::2].tolist(), strict=True))


def levels(samples: np.ndarray, sample_rate: int, frame_seconds: float,
           block_seconds: float = 60.0) -> np.ndarray:
    """Level in dB of frames ``frame_seconds`` apart (25 ms windows centred on each hop, as
    ``audio.frame_rms``), a minute of frames at a time so an hour of audio needs no hour-long
    float64 copies."""
    x = np.asarray(samples).reshape(-1)
    hop = max(1, round(frame_seconds * sample_rate))
    length = max(hop, round(0.025 * sample_rate))
    half = length // 2
    n = 1 + len(x) // hop
    block = max(1, round(block_seconds * sample_rate / hop))
    rms = np.empty(n)
    for f0 in range(0, n, block):
        f1 = min(n, f0 + block)
        lo, hi = f0 * hop - half, (f1 - 1) * hop - half + length  # samples the frames touch
        piece = np.pad(x[max(lo, 0):min(hi, len(x))], (max(0, -lo), max(0, hi - len(x))))
        rms[f0:f1] = _rms(piece, length, hop, f1 - f0)
    return np.maximum(20.0 * np.log10(np.maximum(rms, 1e-12)), _FLOOR_DB)


def _rms(piece: np.ndarray, length: int, hop: int, frames: int) -> np.ndarray:
    """RMS of ``frames`` windows of ``length`` samples starting every ``hop`` in ``piece``."""
    csum = np.concatenate(([0.0], np.cumsum(np.square(piece, dtype=np.float64))))
    starts = np.arange(frames) * hop
    ends = np.minimum(starts + length, len(piece))
    return np.sqrt(np.maximum(csum[ends] - csum[starts], 0.0) / length)


def segment(samples: np.ndarray, sample_rate: int, cfg: CorpusBuildConfig) -> Segmentation:
    """Find speech and pauses in ``samples`` ([S] mono float)."""
    hop_samples = max(1, round(cfg.frame_seconds * sample_rate))
    hop = hop_samples / sample_rate
    level = levels(samples, sample_rate, cfg.frame_seconds)
    floor = float(np.percentile(level, cfg.noise_percentile))
    peak = float(np.percentile(level, _PEAK_PERCENTILE))
    threshold = max(floor + cfg.speech_margin_db, floor + cfg.speech_fraction * (peak - floor))
    speech = level > threshold
    for a, b in _runs(speech):
        if (b - a) * hop < cfg.min_speech:
            speech[a:b] = False
    duration = len(samples) / sample_rate
    voiced = np.flatnonzero(speech)
    if not len(voiced):
        return Segmentation(hop, level, speech, floor, threshold, [], duration, 0.0, duration)
    first, last = int(voiced[0]), int(voiced[-1]) + 1
    pauses = [Pause(a * hop, b * hop, peak - float(level[a:b].mean()))
              for a, b in _runs(~speech[first:last] if last > first else speech[:0])
              for a, b in [(a + first, b + first)] if (b - a) * hop >= cfg.min_pause]
    return Segmentation(hop, level, speech, floor, threshold, pauses, first * hop,
                        min(duration, last * hop), duration)


def weakest_point(seg: Segmentation, start: float, end: float, keep: float = 0.2) -> float:
    """The time to split the pause-free stretch ``[start, end]`` at: the middle of its longest
    run of non-speech (a pause shorter than ``min_pause``), else its quietest frame (levels
    smoothed over 50 ms), never within ``keep`` of the stretch's length from either end."""
    a, b = seg.frame(start + keep * (end - start)), seg.frame(end - keep * (end - start))
    if b - a < 2:
        return 0.5 * (start + end)
    quiet = _runs(~seg.speech[a:b])
    if quiet:
        qa, qb = max(quiet, key=lambda r: r[1] - r[0])
        return (a + 0.5 * (qa + qb)) * seg.hop
    width = max(1, round(0.05 / seg.hop))
    smooth = np.convolve(seg.level_db[a:b], np.ones(width) / width, mode="same")
    return (a + int(np.argmin(smooth))) * seg.hop


def group_spans(spans: list[tuple[float, float]], min_len: float, max_len: float
                ) -> list[list[int]]:
    """Consecutive ``spans`` (speech ``(start, end)``) grouped into clips: each span its own
    clip, except that a clip shorter than ``min_len`` joins its shorter neighbour as long as the
    joined clip (first start to last end) stays within ``max_len``. Returns index groups."""
    groups = [[i] for i in range(len(spans))]

    def length(g: list[int]) -> float:
        return spans[g[-1]][1] - spans[g[0]][0]

    changed = True
    while changed and len(groups) > 1:
        changed = False
        for k in sorted(range(len(groups)), key=lambda k: length(groups[k])):
            if length(groups[k]) >= min_len:
                break
            options = [j for j in (k - 1, k + 1) if 0 <= j < len(groups)
                       and length(sorted(groups[k] + groups[j])) <= max_len]
            if options:
                j = min(options, key=lambda j: length(groups[j]))
                lo, hi = min(j, k), max(j, k)
                groups[lo:hi + 1] = [groups[lo] + groups[hi]]
                changed = True
                break
    return groups
