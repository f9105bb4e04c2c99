"""Intelligibility of synthesis: transcribe with an offline recogniser, score WER/CER.

A voice that produces clean spectrograms can still mumble; a speech recogniser reading the
audio back is a cheap, automatic check of that. PocketSphinx (the optional extra
``tacotrain[asr]``) is the default for English because its wheel ships a US English acoustic
model, language model and dictionary, so it runs offline with no download; :class:`Vosk` reads
any language from a model directory the user names. It is trained on real speech: its
absolute error rates on synthetic voices are high, so compare checkpoints with each other, not
with a fixed threshold. ``error_rates`` is pure Python and needs no extra package.
"""

from __future__ import annotations

import importlib.util
import json
import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from pathlib import Path
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


def _pcm16(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """16-bit mono PCM at :data:`ASR_SAMPLE_RATE` of float audio (mono or (frames, channels))."""
    import soxr

    audio = np.asarray(wav, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"expected mono or (frames, channels) audio, got shape {wav.shape}")
    if sample_rate != ASR_SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, ASR_SAMPLE_RATE)
    return (np.clip(audio, -1.0, 1.0) * _INT16_MAX).astype(np.int16)


def transcribe(wav: np.ndarray, sample_rate: int) -> str:
    """Lower-case English transcript of ``wav`` (float in [-1, 1], mono or (frames, channels)).

    Raises ``RuntimeError`` when pocketsphinx is not installed.
    """
    if not asr_available():
        raise RuntimeError("pocketsphinx is not installed: pip install 'tacotrain[asr]'")
    pcm = _pcm16(wav, sample_rate)
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr.lower().strip() if hypothesis is not None else ""


def transcribe_scored(wav: np.ndarray, sample_rate: int) -> tuple[str, float]:
    """:func:`transcribe` and its confidence: the mean posterior probability of the words heard
    (from the decoder's word lattice; silences and fillers left out), 0 when no word is heard."""
    text = transcribe(wav, sample_rate)
    decoder = _decoder()
    decoder.get_prob()  # computes the lattice posteriors that seg() then reports
    words = [w.prob for w in decoder.seg()
             if not w.word.startswith(("<", "[", "++")) and w.word != "<sil>"]
    return text, float(np.mean(words)) if words and text else 0.0


class Vosk:
    """A Vosk (Kaldi) recogniser from a local model directory that the user names
    (``alignment.asr: vosk``, ``alignment.asr_model``): any language Vosk has a model for.
    Needs the ``vosk`` extra (``pip install 'tacotrain[vosk]'``); the model is loaded once per
    directory and process."""

    def __init__(self, model_dir: str | Path) -> None:
        from tacotrain.config import ConfigError
        from tacotrain.extras import require

        path = Path(model_dir).expanduser()
        if not (path / "am").is_dir() and not (path / "conf" / "model.conf").is_file():
            raise ConfigError(f"alignment.asr_model: {path} is not a Vosk model directory (it "
                             "has neither am/ nor conf/model.conf); unpack a model from "
                             "alphacephei.com/vosk/models and name its folder")
        require("vosk", "alignment.asr: vosk", "vosk")
        self.path = path.resolve()

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        """Lower-case transcript of ``wav`` (float in [-1, 1], mono)."""
        return self.transcribe_scored(wav, sample_rate)[0]

    def transcribe_scored(self, wav: np.ndarray, sample_rate: int) -> tuple[str, float]:
        """Lower-case transcript and its confidence: the mean of Vosk's word confidences (0
        when no word is heard)."""
        from vosk import KaldiRecognizer

        recogniser = KaldiRecognizer(_vosk_model(str(self.path)), ASR_SAMPLE_RATE)
        recogniser.SetWords(True)
        recogniser.AcceptWaveform(_pcm16(wav, sample_rate).tobytes())
        result = json.loads(recogniser.FinalResult())
        text = str(result.get("text", "")).lower().strip()
        confs = [float(w.get("conf", 0.0)) for w in result.get("result", [])]
        return text, float(np.mean(confs)) if confs and text else 0.0


@cache
def _vosk_model(path: str) -> Any:
    from vosk import Model, SetLogLevel

    SetLogLevel(-1)
    return Model(path)


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
