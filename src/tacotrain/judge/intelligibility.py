"""Intelligibility: does a speech recogniser understand a synthesis as well as it understands
the same sentence's recording passed through our own mel and vocoder?

A voice can walk its attention along the text, stop at the right length and even be nearest to
its own recording among similar sentences (rhythm and spectral envelope are enough for that)
while a listener understands none of it. A recogniser is a judge of another kind than the
spectral distances the verdict uses elsewhere, so it is the judge of *content* wherever one
exists for the language (English: PocketSphinx, offline).

Absolute error rates depend on the recogniser and the vocoder, not only the voice, so each
synthesis is compared with its **resynthesis floor**: the item's ground-truth mel through the
same vocoder and recogniser. A round's WER (word errors over reference words, all items
together) must stay within ``alignment.max_wer_ratio`` x the floor's WER over the same items;
the floor is lifted to ``alignment.min_floor_wer`` first, so that a floor of zero on a few
words does not demand a flawless voice. Where the recogniser cannot read the ground truth
(floor WER above ``alignment.max_floor_wer``: e.g. espeak-ng's robot voice), the recogniser is
no judge and intelligibility is untested: with ``alignment.asr: pocketsphinx`` (required) such
a round never passes, with ``auto`` it is judged by the other checks alone. Whether it can read
the voice is a property of the corpus, so where the listener is given a sample of ground truths
(training: ``alignment.floor_items`` of them) their pooled floor decides it, once per run; a
round's own few items would decide it by chance (on 4 espeak-ng items the floor was 0.50 for
one corpus seed, 0.80 for another).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from tacotrain.config import AlignmentConfig, ConfigError
from tacotrain.judge import asr
from tacotrain.text import text_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Heard:
    """What the recogniser made of one piece of audio."""

    transcript: str
    words: int  # reference words
    word_errors: int
    wer: float
    cer: float


def hear(text: str, transcript: str) -> Heard:
    """Score ``transcript`` against the reference ``text``."""
    ref = asr.normalise(text).split()
    errors = asr.levenshtein(ref, asr.normalise(transcript).split())
    wer, cer = asr.error_rates(text, transcript)
    return Heard(transcript, len(ref), errors, wer, cer)


@dataclass(frozen=True)
class Intelligibility:
    """A round's intelligibility against its floor (see the module docstring)."""

    wer: float | None  # the syntheses' word errors / reference words (None: not heard)
    floor_wer: float  # the same for the ground truths through our mel and vocoder
    bound: float  # the WER the round may reach: max_wer_ratio x max(floor, min_floor_wer)
    items: int
    tested: bool  # False: the floor is above max_floor_wer, the recogniser is no judge
    judge_floor: float | None = None  # the corpus sample's floor that decided ``tested``

    @property
    def deciding_floor(self) -> float:
        """The floor that decided whether the recogniser judges: the corpus sample's where one
        was heard, else this round's."""
        return self.floor_wer if self.judge_floor is None else self.judge_floor

    @property
    def passed(self) -> bool:
        return self.tested and self.wer is not None and self.wer <= self.bound + 1e-12

    @property
    def ratio(self) -> float:
        if self.wer is None:
            return float("nan")
        return self.wer / self.floor_wer if self.floor_wer > 0 else float("inf") \
            if self.wer > 0 else 1.0

    def describe(self) -> str:
        if not self.tested:
            where = f"{self.items} items" if self.judge_floor is None else "a corpus sample"
            return (f"untested: the recogniser cannot read the ground truth (floor WER "
                    f"{self.deciding_floor:.2f} on {where}, above alignment.max_floor_wer)")
        return (f"WER {self.wer:.2f} against the resynthesis floor {self.floor_wer:.2f} "
                f"(bound {self.bound:.2f}, {self.items} items)")


def pooled_wer(heard: Sequence[Heard]) -> float | None:
    """Word errors over reference words of all of ``heard`` together (None: no words)."""
    words = sum(h.words for h in heard)
    return sum(h.word_errors for h in heard) / words if words else None


def round_intelligibility(synth: Sequence[Heard] | None, floor: Sequence[Heard],
                          cfg: AlignmentConfig, judge_floor: float | None = None
                          ) -> Intelligibility | None:
    """The round's figures (``synth`` None: the floor alone, to see whether the recogniser can
    judge), untested where the floor is above ``cfg.max_floor_wer`` (``judge_floor``, the
    floor of a larger sample of the corpus, decides that where given); None without items."""
    words = sum(h.words for h in floor)
    if not floor or words == 0 or (synth is not None and len(synth) != len(floor)):
        return None
    floor_wer = sum(h.word_errors for h in floor) / words
    bound = cfg.max_wer_ratio * max(floor_wer, cfg.min_floor_wer)
    if (floor_wer if judge_floor is None else judge_floor) > cfg.max_floor_wer:
        return Intelligibility(None, floor_wer, bound, len(floor), False, judge_floor)
    wer = None if synth is None else sum(h.word_errors for h in synth) / words
    return Intelligibility(wer, floor_wer, bound, len(floor), True, judge_floor)


class Listener:
    """Vocode a log-mel and have the recogniser transcribe it. Floors (ground truth through the
    vocoder) are kept per item key, since the ground truth does not change during a run.
    ``transcribe(wav, sample_rate) -> str``: the recogniser (default PocketSphinx)."""

    def __init__(self, vocoder: Callable[[Tensor], np.ndarray], sample_rate: int,
                 transcribe: Callable[[np.ndarray, int], str] = asr.transcribe) -> None:
        self.vocoder = vocoder
        self.sample_rate = sample_rate
        self.transcribe = transcribe
        self._floors: dict[str, Heard] = {}
        self._sample: Callable[[], Sequence[tuple[str, Tensor, str]]] | None = None
        self._judge_floor: float | None = None

    def hear_mel(self, mel: Tensor, text: str) -> Heard:
        if mel.shape[-1] == 0 or not bool(mel.isfinite().all()):
            return hear(text, "")
        return hear(text, self.transcribe(self.vocoder(mel), self.sample_rate))

    def hear_wav(self, wav: np.ndarray, text: str) -> Heard:
        return hear(text, self.transcribe(wav, self.sample_rate))

    def floor(self, key: str, gt_mel: Tensor, text: str) -> Heard:
        if key not in self._floors:
            self._floors[key] = self.hear_mel(gt_mel, text)
        return self._floors[key]

    def set_sample(self, sample: Callable[[], Sequence[tuple[str, Tensor, str]]]) -> None:
        """Ground truths ``(key, mel, text)`` whose pooled floor decides, once, whether the
        recogniser can read this voice (see the module doc); called when first needed."""
        self._sample = sample
        self._judge_floor = None

    def judge_floor(self) -> float | None:
        """The pooled floor of the sample (None without one)."""
        if self._sample is None:
            return None
        if self._judge_floor is None:
            heard = [self.floor(key, mel, text) for key, mel, text in self._sample()]
            self._judge_floor = pooled_wer(heard)
            if self._judge_floor is not None:
                log.info("the recogniser's resynthesis floor on %d ground truths of the corpus: "
                         "WER %.2f (alignment.max_floor_wer: whether it judges the voice)",
                         len(heard), self._judge_floor)
        return self._judge_floor


def floor_sample(val_set: Any, train_set: Any, k: int) -> list[tuple[str, Tensor, str]]:
    """``(key, ground-truth mel, text)`` of ``k`` items of a corpus, the validation items first,
    then training items spread over the training set (data sets as
    :class:`tacotrain.data.loader.TextMelDataset`: ``items[i]["text"]``, ``[i][1]`` the mel):
    the sample whose pooled floor decides whether the recogniser can read the voice."""
    picked = [(val_set, i) for i in range(min(k, len(val_set)))]
    rest, n = k - len(picked), len(train_set)
    if rest > 0 and n:
        picked += [(train_set, i) for i in range(0, n, max(n // rest, 1))][:rest]
    out = []
    for ds, i in picked:
        text = ds.items[i]["text"]
        out.append((text_key(text), ds[i][1], text))
    return out


def listener_for(cfg: AlignmentConfig, language: str,
                 vocoder: Callable[[Tensor], np.ndarray], sample_rate: int) -> Listener | None:
    """A listener where ``alignment.asr`` asks for one and a recogniser exists for
    ``language``; ``alignment.asr: pocketsphinx`` without one is an error, ``auto`` falls back
    to no listener (content then rests on identification alone), ``off`` never listens;
    ``vosk`` listens through the model in ``alignment.asr_model`` (the user's choice of model
    says the language)."""
    if cfg.asr == "off":
        return None
    if cfg.asr == "vosk":
        assert cfg.asr_model is not None  # the config's validator requires it
        return Listener(vocoder, sample_rate, asr.Vosk(cfg.asr_model).transcribe)
    if language != "en":
        if cfg.asr == "pocketsphinx":
            raise ConfigError(f"alignment.asr: pocketsphinx recognises English only, the data is "
                             f"{language!r}; set alignment.asr to auto or off")
        return None
    if not asr.asr_available():
        if cfg.asr == "pocketsphinx":
            raise ConfigError("alignment.asr: pocketsphinx is not installed: "
                             "pip install 'tacotrain[asr]'")
        log.warning("no speech recogniser installed (pip install 'tacotrain[asr]'): "
                    "intelligibility is not tested")
        return None
    return Listener(vocoder, sample_rate)


__all__ = ["Heard", "Intelligibility", "Listener", "floor_sample", "hear", "listener_for",
           "pooled_wer", "round_intelligibility"]
