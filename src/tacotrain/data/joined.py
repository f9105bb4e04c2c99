"""A long recording whose truth is known: one-sentence clips of a corpus joined by pauses of
drawn length, with background noise. ``tacotrain corpus build`` is tested and measured on
these (tests/test_corpus_build.py, benchmarks/corpus_build.py): every true pause and every
clip's text are known, so cut points and transcripts can be checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tacotrain.audio import load_audio, trim_silence
from tacotrain.text.sentences import split_sentences


@dataclass
class JoinedRecording:
    samples: np.ndarray  # [S] float32, noise included
    clean: np.ndarray  # [S] the same without the noise
    sample_rate: int
    texts: list[str]  # each source clip's text, as written
    speech: list[tuple[float, float]]  # each source clip's speech (s)

    @property
    def pauses(self) -> list[tuple[float, float]]:
        """The true pauses between clips, ``[(start, end)]`` in seconds."""
        return [(a[1], b[0]) for a, b in zip(self.speech[:-1], self.speech[1:], strict=True)]

    def cut_error(self, t: float) -> float:
        """Seconds from ``t`` to the nearest true pause (0 inside one)."""
        return min(max(a - t, t - b, 0.0) for a, b in self.pauses)

    def text_between(self, t0: float, t1: float) -> str:
        """The texts of the source clips whose speech is centred within ``[t0, t1]``."""
        return " ".join(x for x, (a, b) in zip(self.texts, self.speech, strict=True)
                        if t0 <= 0.5 * (a + b) <= t1)


def _noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white":
        return white
    spectrum = np.fft.rfft(white)  # pink: power falls as 1/f
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    pink = np.fft.irfft(spectrum / np.sqrt(f), n)
    return pink / pink.std()


def joined_recording(corpus: str | Path, n: int, lang: str = "en", seed: int = 0,
                     snr_db: float = 25.0, pauses: tuple[float, float] = (0.3, 1.5),
                     noise: str = "white", sample_rate: int = 22050) -> JoinedRecording:
    """The first ``n`` one-sentence clips of the LJSpeech-layout ``corpus`` joined by pauses
    drawn uniformly from ``pauses`` (s), 0.5 s of silence at each end, ``noise`` (white or
    pink) ``snr_db`` below the speech's RMS. A clip's speech is where its clean audio is within
    40 dB of its peak."""
    corpus = Path(corpus)
    rows = [line.split("|") for line in (corpus / "metadata.csv").read_text(
        encoding="utf-8").splitlines()]
    rows = [r for r in rows if len(split_sentences(r[1], lang, 10_000)) == 1][:n]
    rng = np.random.default_rng(seed)
    sr = sample_rate
    parts, speech, texts, t = [np.zeros(sr // 2, np.float32)], [], [], 0.5
    for k, (cid, raw, *_) in enumerate(rows):
        x = load_audio(corpus / "wavs" / f"{cid}.wav", sr).samples
        _, a, b = trim_silence(x, sr, 40.0, 512, 64)
        speech.append((t + a / sr, t + b / sr))
        texts.append(raw)
        gap = int((rng.uniform(*pauses) if k < len(rows) - 1 else 0.5) * sr)
        parts += [x, np.zeros(gap, np.float32)]
        t += (len(x) + gap) / sr
    clean = np.concatenate(parts)
    level = np.sqrt(np.mean(np.concatenate(parts[1::2]) ** 2))
    hiss = _noise(len(clean), noise, rng) * level * 10 ** (-snr_db / 20)
    return JoinedRecording((clean + hiss).astype(np.float32), clean, sr, texts, speech)


def score_clips(rec: JoinedRecording, clips: list[dict], tolerance: float = 0.05) -> dict:
    """How ``clips`` (in time order, each with ``cut_before``, ``cut_after``, ``text``) match the
    truth. A cut within ``tolerance`` of a true pause ends a group; consecutive clips between
    such cuts form one group, whose joined text must equal the texts of the source clips it
    spans (``exact_share``, over groups). Cuts that are not at a true pause are ``inside``
    cuts: inside one source clip, at its own pause (a comma, a second sentence); each is
    ``sound`` when the clean audio is silent there (30 dB below the peak) and the text before
    it ends in a punctuation mark. ``cut_errors_ms``: each group border's distance to the
    nearest true pause."""
    peak = float(np.abs(rec.clean).max())
    sr = rec.sample_rate
    groups: list[list[dict]] = [[]]
    inside = sound = 0
    for k, c in enumerate(clips):
        groups[-1].append(c)
        last = k == len(clips) - 1
        if not last and rec.cut_error(c["cut_after"]) > tolerance:
            inside += 1
            i = int(c["cut_after"] * sr)
            quiet = np.abs(rec.clean[max(0, i - sr // 100):i + sr // 100]).max() < peak * 0.03
            sound += bool(quiet and c["text"].rstrip()[-1:] in ",;:.!?")
        elif not last:
            groups.append([])
    exact = [" ".join(c["text"] for c in g) == rec.text_between(g[0]["cut_before"],
                                                               g[-1]["cut_after"])
             for g in groups if g]
    errors = [rec.cut_error(g[0]["cut_before"]) * 1000 for g in groups[1:] if g]
    return {"groups": len(exact), "exact_share": float(np.mean(exact)), "inside_cuts": inside,
            "inside_cuts_sound": sound, "cut_errors_ms": errors}
