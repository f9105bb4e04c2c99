"""``tacotrain corpus build``: long recordings made here from mini-corpus clips joined by pauses of
known length, with noise, so every cut and every transcript can be checked against the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tacotrain.audio import load_audio, trim_silence
from tacotrain.config import CorpusBuildConfig
from tacotrain.corpus_build.align import AlignError, align
from tacotrain.corpus_build.segment import group_spans, segment, weakest_point
from tacotrain.data import kokoro
from tacotrain.data.mini import make_mini_corpus
from tacotrain.text.sentences import split_sentences

SR = 22050
CFG = CorpusBuildConfig()
TOLERANCE = 0.05  # a cut within 50 ms of a true pause


class Recording:
    """A long recording and its truth: each source clip's speech interval and text."""

    def __init__(self, samples: np.ndarray, texts: list[str], speech: list[tuple[float, float]],
                 clean: np.ndarray) -> None:
        self.samples, self.texts, self.speech, self.clean = samples, texts, speech, clean

    @property
    def pauses(self) -> list[tuple[float, float]]:
        return [(a[1], b[0]) for a, b in zip(self.speech[:-1], self.speech[1:], strict=True)]

    def cut_error(self, t: float) -> float:
        """Seconds from ``t`` to the nearest true pause (0 inside one)."""
        return min(max(a - t, t - b, 0.0) for a, b in self.pauses)

    def text_between(self, t0: float, t1: float) -> str:
        return " ".join(x for x, (a, b) in zip(self.texts, self.speech, strict=True)
                        if t0 <= 0.5 * (a + b) <= t1)


def long_recording(corpus: Path, n: int, seed: int = 0, snr_db: float = 25.0,
                   pauses: tuple[float, float] = (0.3, 1.5), lang: str = "en") -> Recording:
    """The first ``n`` one-sentence clips of ``corpus`` joined by pauses drawn from ``pauses``,
    0.5 s of silence at each end, white noise ``snr_db`` below the speech."""
    rows = [line.split("|") for line in (corpus / "metadata.csv").read_text().splitlines()]
    rows = [r for r in rows if len(split_sentences(r[1], lang, 10_000)) == 1][:n]
    rng = np.random.default_rng(seed)
    parts, speech, texts, t = [np.zeros(SR // 2, np.float32)], [], [], 0.5
    for k, (cid, raw, _) in enumerate(rows):
        x = load_audio(corpus / "wavs" / f"{cid}.wav", SR).samples
        _, a, b = trim_silence(x, SR, 40.0, 512, 64)
        speech.append((t + a / SR, t + b / SR))
        texts.append(raw)
        gap = int((rng.uniform(*pauses) if k < len(rows) - 1 else 0.5) * SR)
        parts += [x, np.zeros(gap, np.float32)]
        t += (len(x) + gap) / SR
    clean = np.concatenate(parts)
    level = np.sqrt(np.mean(np.concatenate(parts[1::2]) ** 2))
    noise = rng.standard_normal(len(clean)).astype(np.float32) * level * 10 ** (-snr_db / 20)
    return Recording((clean + noise).astype(np.float32), texts, speech, clean)


@pytest.fixture(scope="module")
def espeak_en(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mini-en")
    make_mini_corpus(out, "en", 24, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def espeak_en_other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mini-en-1")
    make_mini_corpus(out, "en", 24, seed=1, progress=False)
    return out


@pytest.fixture(scope="module")
def espeak_ru(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mini-ru")
    make_mini_corpus(out, "ru", 14, seed=0, progress=False)
    return out


# --- segmentation --------------------------------------------------------------------------


def _bursts(spans: list[tuple[float, float]], seconds: float, snr_db: float = 25.0):
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for a, b in spans:
        on = (t >= a) & (t < b)
        x[on] = 0.3 * np.sin(2 * np.pi * 180 * t[on]) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t[on]))
    x += rng.standard_normal(len(t)) * 0.3 * 10 ** (-snr_db / 20)
    return x.astype(np.float32)


def test_pauses_of_a_synthetic_signal_are_found_where_they_are():
    spans = [(0.5, 2.0), (2.4, 4.0), (5.5, 6.0), (6.2, 8.0)]  # pauses 0.4, 1.5, 0.2 s
    seg = segment(_bursts(spans, 9.0), SR, CFG)
    assert len(seg.pauses) == 2  # the 0.2 s gap is shorter than min_pause (0.25 s)
    for p, (a, b) in zip(seg.pauses, [(2.0, 2.4), (4.0, 5.5)], strict=True):
        assert abs(p.start - a) < 0.03 and abs(p.end - b) < 0.03
        assert p.depth_db > 15
    assert abs(seg.speech_start - 0.5) < 0.02 and abs(seg.speech_end - 8.0) < 0.02
    assert [(round(a, 1), round(b, 1)) for a, b in seg.regions()] == \
        [(0.5, 2.0), (2.4, 4.0), (5.5, 8.0)]
    # the 0.2 s gap is the weakest point of the last region
    assert abs(weakest_point(seg, 5.5, 8.0) - 6.1) < 0.05


def test_noise_does_not_hide_pauses_and_silence_has_no_speech():
    spans = [(0.5, 2.0), (2.4, 4.0)]
    for snr in (15.0, 30.0):
        assert len(segment(_bursts(spans, 5.0, snr), SR, CFG).pauses) == 1
    quiet = segment(np.zeros(SR * 2, np.float32), SR, CFG)
    assert not quiet.speech.any() and quiet.pauses == [] and quiet.regions() == []


def test_short_spans_are_merged_within_the_longest_clip():
    spans = [(0.0, 3.0), (3.5, 3.9), (4.5, 9.0), (9.5, 10.0), (10.4, 21.0)]
    groups = group_spans(spans, min_len=1.0, max_len=11.0)
    assert groups == [[0, 1], [2, 3], [4]]
    assert group_spans(spans, min_len=1.0, max_len=3.5) == [[0], [1], [2], [3], [4]]


def test_every_true_pause_is_found_in_noisy_joined_clips(espeak_en: Path):
    rec = long_recording(espeak_en, 16, snr_db=20.0)
    seg = segment(rec.samples, SR, CFG)
    for a, b in rec.pauses:
        found = [p for p in seg.pauses if p.start - TOLERANCE <= p.centre <= p.end + TOLERANCE
                 and a - TOLERANCE <= p.centre <= b + TOLERANCE]
        assert len(found) == 1, (a, b)
    clean_db = 20 * np.log10(np.abs(rec.clean) + 1e-9)
    for p in seg.pauses:  # no pause inside speech: the clean signal is quiet at every cut
        i = int(p.centre * SR)
        assert clean_db[i - 110:i + 110].max() < -30, p


# --- given text ----------------------------------------------------------------------------


def _check_alignment(rec: Recording, clips) -> tuple[float, float]:
    """Exact-transcript share and the largest cut error of ``clips`` against ``rec``."""
    exact = sum(c.text == rec.text_between(c.cut_before, c.cut_after) for c in clips)
    errors = [rec.cut_error(c.cut_before) for c in clips[1:]]
    return exact / len(clips), max(errors)


def test_given_english_text_is_cut_at_the_true_pauses(espeak_en: Path):
    rec = long_recording(espeak_en, 20)
    al = align(rec.samples, SR, " ".join(rec.texts), "en", CFG)
    exact, worst = _check_alignment(rec, al.clips)
    assert exact == 1.0 and worst <= TOLERANCE
    assert len(al.clips) == 20 and not al.unsnapped
    assert min(c.confidence for c in al.clips) > CFG.min_confidence
    assert 0.7 < al.rate_ratio < 1.3  # espeak-ng read both


def test_given_russian_text_is_cut_at_the_true_pauses(espeak_ru: Path):
    rec = long_recording(espeak_ru, 12, lang="ru", seed=3)
    al = align(rec.samples, SR, "\n".join(rec.texts), "ru", CFG)
    exact, worst = _check_alignment(rec, al.clips)
    assert exact == 1.0 and worst <= TOLERANCE
    assert min(c.confidence for c in al.clips) > CFG.min_confidence


def test_a_wrong_text_is_not_forced_onto_the_audio(espeak_en: Path, espeak_en_other: Path):
    rec = long_recording(espeak_en, 20)
    other = long_recording(espeak_en_other, 20)  # another chapter of similar length
    al = align(rec.samples, SR, " ".join(other.texts), "en", CFG)
    low = [c for c in al.clips if c.confidence < CFG.min_confidence]
    assert len(low) > CFG.max_rejected_share * len(al.clips)
    with pytest.raises(AlignError, match="differ too much in length"):
        align(rec.samples, SR, " ".join(other.texts[:3]), "en", CFG, names="x.wav")
    with pytest.raises(AlignError, match="empty"):
        align(rec.samples, SR, " \n ", "en", CFG)


needs_kokoro = pytest.mark.skipif(not kokoro.available(),
                                  reason="the natural voice needs tacotrain[natural]")


@pytest.fixture(scope="module")
def natural_en(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mini-natural")
    make_mini_corpus(out, "en", 7, seed=0, progress=False, engine="kokoro")
    return out


@needs_kokoro
def test_given_text_on_a_natural_voice(natural_en: Path):
    rec = long_recording(natural_en, 6, seed=2)
    al = align(rec.samples, SR, " ".join(rec.texts), "en", CFG)
    exact, worst = _check_alignment(rec, al.clips)
    assert exact == 1.0 and worst <= TOLERANCE
    assert min(c.confidence for c in al.clips) > CFG.min_confidence
