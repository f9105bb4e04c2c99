"""Clips of a recording without its text: cut at pauses, read by a recogniser.

The clips are the speech stretches between pauses, a short one joined to its shorter
neighbour, a stretch longer than ``max_clip`` split at its weakest point. Each clip is read by
PocketSphinx (offline, English, in the ``asr`` extra), or by Vosk or faster-whisper from a model
directory the user names; each reading comes with a confidence in 0..1, and the caller sets the
doubtful ones aside for review.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tacotrain.config import CorpusBuildConfig
from tacotrain.corpus_build.segment import Segmentation, group_spans, weakest_point

RECOGNISERS = ("pocketsphinx", "vosk", "whisper")


class RecogniserError(RuntimeError):
    """The named recogniser cannot run (package or model missing)."""


@dataclass
class Span:
    """A clip to be: its speech start and end and the cut points around it (s)."""

    start: float
    end: float
    cut_before: float
    cut_after: float


Hear = Callable[[np.ndarray, int], tuple[str, float]]


def spans(seg: Segmentation, cfg: CorpusBuildConfig) -> list[Span]:
    """Speech between pauses grouped into clips of ``min_clip``..``max_clip`` seconds: speech
    across a pause shorter than ``join_pause`` stays together, then short clips join a
    neighbour (:func:`group_spans`), then a clip still too long is split."""
    regions = seg.regions()
    phrases: list[list[int]] = []  # regions joined across pauses shorter than join_pause
    for i, (_, end) in enumerate(regions):
        if phrases and seg.pauses[i - 1].duration < cfg.join_pause \
                and end - regions[phrases[-1][0]][0] <= cfg.max_clip:
            phrases[-1].append(i)
        else:
            phrases.append([i])
    joined = [(regions[p[0]][0], regions[p[-1]][1]) for p in phrases]
    out: list[Span] = []
    for group in group_spans(joined, cfg.min_clip, cfg.max_clip):
        first, last = phrases[group[0]][0], phrases[group[-1]][-1]
        before = seg.pauses[first - 1].centre if first > 0 else 0.0
        after = seg.pauses[last].centre if last < len(seg.pauses) else seg.duration
        out += _split(seg, Span(regions[first][0], regions[last][1], before, after),
                      cfg.max_clip)
    return out


def _split(seg: Segmentation, span: Span, max_clip: float) -> list[Span]:
    """A span longer than ``max_clip`` cut at its weakest point, recursively."""
    if span.end - span.start <= max_clip:
        return [span]
    t = weakest_point(seg, span.start, span.end)
    return (_split(seg, Span(span.start, t, span.cut_before, t), max_clip)
            + _split(seg, Span(t, span.end, t, span.cut_after), max_clip))


def recogniser(name: str, model: str | Path | None = None) -> Hear:
    """The function that reads a clip: ``(samples, rate) -> (text, confidence)``."""
    if name == "pocketsphinx":
        from tacotrain.judge import asr

        if not asr.asr_available():
            raise RecogniserError("pocketsphinx is not installed: pip install 'tacotrain[asr]'")
        return asr.transcribe_scored
    if model is None:
        raise RecogniserError(f"--recogniser {name} needs --model DIR (a local model directory)")
    if name == "vosk":
        from tacotrain.judge.asr import Vosk

        return Vosk(model).transcribe_scored
    if name == "whisper":
        return _whisper(Path(model))
    raise RecogniserError(f"unknown recogniser {name!r}; use one of {', '.join(RECOGNISERS)}")


def _whisper(model: Path) -> Hear:
    import importlib.util

    if importlib.util.find_spec("faster_whisper") is None:
        raise RecogniserError("--recogniser whisper needs faster-whisper, which is not "
                              "installed: pip install faster-whisper")
    if not (model / "model.bin").is_file():
        raise RecogniserError(f"{model} is not a faster-whisper model directory (no model.bin)")
    from faster_whisper import WhisperModel

    whisper = WhisperModel(str(model), device="cpu", compute_type="int8")

    def hear(samples: np.ndarray, sample_rate: int) -> tuple[str, float]:
        import soxr

        audio = soxr.resample(samples, sample_rate, 16_000).astype(np.float32)
        parts, _ = whisper.transcribe(audio, language="en", beam_size=5)
        parts = list(parts)
        text = " ".join(p.text.strip() for p in parts).strip()
        if not text:
            return "", 0.0
        return text, float(np.mean([math.exp(p.avg_logprob) for p in parts]))

    return hear
