"""Word/character error rates, and (with pocketsphinx and espeak-ng) a transcription."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from tacotrain.judge.asr import asr_available, error_rates, transcribe


@pytest.mark.parametrize(
    ("reference", "hypothesis", "wer", "cer"),
    [
        ("hello world", "hello world", 0.0, 0.0),
        ("Hello, World!", "hello world", 0.0, 0.0),  # case and punctuation do not count
        ("don't stop", "dont stop", 0.0, 0.0),  # apostrophes are deleted
        ("twenty-one", "twenty one", 0.0, 0.0),  # other punctuation separates words
        ("the cat sat", "the cat sat down", 1 / 3, 5 / 11),  # one inserted word, " down"
        ("the cat sat", "a cat sat", 1 / 3, 3 / 11),  # "the" -> "a": 1 sub + 2 deletions
        ("the cat sat", "the sat", 1 / 3, 4 / 11),  # deleted word
        ("abc", "", 1.0, 1.0),  # nothing recognised
        ("one two", "three four five six", 2.0, 16 / 7),  # rates can exceed 1
        ("kitten", "sitting", 1.0, 3 / 6),  # the classic edit distance of 3
    ],
)
def test_error_rates(reference: str, hypothesis: str, wer: float, cer: float) -> None:
    got_wer, got_cer = error_rates(reference, hypothesis)
    assert got_wer == pytest.approx(wer)
    assert got_cer == pytest.approx(cer)


@pytest.mark.parametrize("reference", ["", "   ", "?!, ..."])
def test_error_rates_needs_a_reference(reference: str) -> None:
    with pytest.raises(ValueError, match="no words"):
        error_rates(reference, "anything")


def test_asr_available_is_a_bool() -> None:
    assert isinstance(asr_available(), bool)


@pytest.mark.needs("extras", asr_available(), "pocketsphinx not installed (tacotrain[asr])")
@pytest.mark.needs("espeak", shutil.which("espeak-ng") is not None, "espeak-ng not installed")
def test_transcribes_espeak_speech(tmp_path: Path) -> None:
    # espeak-ng at 22050 Hz exercises the resampling. Its voice is far from the real speech the
    # acoustic model was trained on: observed "will you see the ads" (WER 1.0, CER 0.69), so
    # only check the pipeline produces a sane number, not that recognition is good.
    text = "hello world this is a test"
    wav_path = tmp_path / "out.wav"
    subprocess.run(["espeak-ng", "-w", str(wav_path), text], check=True, capture_output=True)
    audio, sample_rate = sf.read(wav_path, dtype="float32")
    hypothesis = transcribe(audio, sample_rate)
    assert hypothesis == hypothesis.lower()
    wer, cer = error_rates(text, hypothesis)
    assert math.isfinite(wer) and 0.0 <= wer <= 1.5, (hypothesis, wer)
    assert math.isfinite(cer) and cer >= 0.0
