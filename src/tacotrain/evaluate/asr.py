"""Intelligibility of English synthesis: transcribe with an offline recogniser, score WER/CER.

A voice that produces clean spectrograms can still mumble; a speech recogniser reading the
audio back is a cheap, automatic check of that. PocketSphinx (the optional extra
``tacotrain[asr]``) is used because its wheel ships a US English acoustic model, language
model and dictionary, so it runs offline with no download. It is trained on real speech: its
absolute error rates on synthetic voices are high, so compare checkpoints with each other, not
with a fixed threshold. ``error_rates`` is pure Python and needs no extra package.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

ASR_SAMPLE_RATE = 16_000
"""PocketSphinx's default acoustic model is trained on 16 kHz audio."""
_INT16_MAX = np.iinfo(np.int16).max
_APOSTROPHES = "'\u2019"
_SPACES_RE = re.compile(r"\s+")


def asr_available() -> bool:
    """True when pocketsphinx can be imported (install it with ``pip install tacotrain[asr]``)."""
    try:
        return importlib.util.find_spec("pocketsphinx") is not None
    except (ImportError, ValueError):
        return False


@cache
def _decoder() -> Any:
    """One decoder per process: loading the language model takes about a second.

    Not thread-safe: decode from one thread at a time.
    """
    from pocketsphinx import Decoder

    return Decoder(loglevel="FATAL")  # the default en-us model, quietly


def transcribe(wav: np.ndarray, sample_rate: int) -> str:
    """Lower-case English transcript of ``wav`` (float in [-1, 1], mono or (frames, channels)).

    Raises ``RuntimeError`` when pocketsphinx is not installed.
    """
    if not asr_available():
        raise RuntimeError("pocketsphinx is not installed: pip install 'tacotrain[asr]'")
    import soxr

    audio = np.asarray(wav, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"expected mono or (frames, channels) audio, got shape {wav.shape}")
    if sample_rate != ASR_SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, ASR_SAMPLE_RATE)
    pcm = (np.clip(audio, -1.0, 1.0) * _INT16_MAX).astype(np.int16)
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr.lower().strip() if hypothesis is not None else ""


def normalise(text: str) -> str:
    """Lower-case; apostrophes deleted ("don't" = "dont"), other punctuation becomes a space
    ("twenty-one" = "twenty one"), so neither side is penalised for spelling style."""
    text = "".join(c for c in text.lower() if c not in _APOSTROPHES)
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return _SPACES_RE.sub(" ", text).strip()


def levenshtein(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Fewest substitutions, insertions and deletions turning ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def error_rates(reference: str, hypothesis: str) -> tuple[float, float]:
    """(word error rate, character error rate) of ``hypothesis`` against ``reference``.

    Both are edit distances divided by the reference length, after lower-casing and removing
    punctuation; they can exceed 1 when the hypothesis has extra words. Raises ``ValueError``
    when the reference has no words, since a rate against nothing is undefined.
    """
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        raise ValueError(f"reference {reference!r} has no words to score against")
    wer = levenshtein(ref.split(), hyp.split()) / len(ref.split())
    cer = levenshtein(ref, hyp) / len(ref)
    return wer, cer
