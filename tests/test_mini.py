from __future__ import annotations

import hashlib
import shutil

import soundfile as sf

from tacotrain.data.mini import make_mini_corpus, sentence
from tacotrain.text import clean_text, unknown_characters

from conftest import skip_unless_required


def _digest(root):
    h = hashlib.sha256((root / "metadata.csv").read_bytes())
    for p in sorted((root / "wavs").glob("*.wav")):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_mini_corpus_format_and_determinism(tmp_path):
    assert shutil.which("espeak-ng"), "espeak-ng must be installed (make test installs it)"
    a = make_mini_corpus(tmp_path / "a", "en", size=6, seed=3, progress=False).parent
    rows = [line.split("|") for line in (a / "metadata.csv").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r) == 3 for r in rows)
    for item_id, raw, normalized in rows:
        info = sf.info(a / "wavs" / f"{item_id}.wav")
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
        assert 0.9 <= info.duration <= 8.0
        assert normalized == clean_text(raw, "en") and not unknown_characters(normalized, "en")
    b = make_mini_corpus(tmp_path / "b", "en", size=6, seed=3, progress=False).parent
    assert _digest(a) == _digest(b)
    c = make_mini_corpus(tmp_path / "c", "en", size=6, seed=4, progress=False).parent
    assert (c / "metadata.csv").read_text() != (a / "metadata.csv").read_text()


def test_generator_covers_numbers_abbreviations_punctuation():
    texts = [sentence("en", 0, i) for i in range(300)]
    assert any(any(ch.isdigit() for ch in t) for t in texts)
    assert any("Dr." in t or "Mr." in t or "St." in t for t in texts)
    assert any("?" in t for t in texts) and any("," in t for t in texts)
    assert not any(".." in t for t in texts)
    assert any(t.endswith("St.") for t in texts)
    assert all("saint" not in clean_text(t, "en") for t in texts)  # Baker St. is a street
    words = [len(clean_text(t, "en").split()) for t in texts]
    assert min(words) <= 4 and max(words) >= 18
    ru = [sentence("ru", 0, i) for i in range(100)]
    assert any("+" in t for t in ru) and any(any(ch.isdigit() for ch in t) for t in ru)


def test_russian_mini_corpus(tmp_path):
    root = make_mini_corpus(tmp_path / "ru", "ru", size=3, seed=1, progress=False).parent
    for line in (root / "metadata.csv").read_text(encoding="utf-8").splitlines():
        _, raw, normalized = line.split("|")
        assert not unknown_characters(normalized, "ru")
        assert not any(ch.isdigit() for ch in normalized)


def test_natural_mini_corpus_is_deterministic_and_records_what_it_covers(tmp_path):
    import json

    import numpy as np
    import pytest

    from tacotrain.data import kokoro
    from tacotrain.data.mini import MiniCorpusError

    if not kokoro.available():
        skip_unless_required("extras", "needs the natural extra")
    a = make_mini_corpus(tmp_path / "a", "en", size=3, seed=5, progress=False,
                         engine="kokoro").parent
    rows = [line.split("|") for line in (a / "metadata.csv").read_text().splitlines()]
    assert len(rows) == 3
    for item_id, raw, normalized in rows:
        assert item_id.startswith("enk05-")
        # the generator's sentence, or a re-drawn one when the first was too long or short
        assert raw in {sentence("en", 5, int(item_id[-4:]), k, "kokoro") for k in range(20)}
        wav, sr = sf.read(a / "wavs" / f"{item_id}.wav", dtype="float32")
        assert sr == 22050 and 0.9 <= len(wav) / sr <= 8.0
        assert np.abs(wav).max() <= 0.951  # scaled below full scale, never clipped
        assert normalized == clean_text(raw, "en")
    info = json.loads((a / "corpus.json").read_text())
    assert (info["engine"], info["style"], info["size"]) == ("kokoro", "jm_kumo", 3)
    assert info["coverage"]["words"] >= 5 and info["coverage"]["phones_seen"] >= 10
    assert "_" not in info["coverage"]["phones_missing"]
    b = make_mini_corpus(tmp_path / "b", "en", size=3, seed=5, progress=False,
                         engine="kokoro").parent
    assert (a / "metadata.csv").read_text() == (b / "metadata.csv").read_text()
    for item_id, *_ in rows:  # the same voice reads the same way (onnxruntime on the CPU)
        x, _ = sf.read(a / "wavs" / f"{item_id}.wav", dtype="float32")
        y, _ = sf.read(b / "wavs" / f"{item_id}.wav", dtype="float32")
        assert len(x) == len(y) and np.abs(x - y).max() < 1e-3
    # Russian: the espeak-ng corpus's sentences, read by Kokoro
    ru = make_mini_corpus(tmp_path / "ru", "ru", size=2, seed=5, progress=False,
                          engine="kokoro").parent
    for item_id, raw, _ in (line.split("|") for line in
                            (ru / "metadata.csv").read_text().splitlines()):
        assert item_id.startswith("ruk05-")
        assert raw in {sentence("ru", 5, int(item_id[-4:]), k) for k in range(20)}
        wav, sr = sf.read(ru / "wavs" / f"{item_id}.wav", dtype="float32")
        assert sr == 22050 and 0.9 <= len(wav) / sr <= 8.0
    with pytest.raises(MiniCorpusError, match="unknown engine"):
        make_mini_corpus(tmp_path / "x", "en", size=2, engine="festival", progress=False)
