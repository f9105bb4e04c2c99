"""``tacotrain demo --lang ru``: the pieces of the demo in Russian, without training (and
the demo's phoneme setting)."""

from __future__ import annotations

import subprocess

import pytest

from tacotrain.cli import main
from tacotrain.config import load_config
from tacotrain.data import mini
from tacotrain.data.mini import MiniCorpusError, sentence
from tacotrain.demo import corpus_texts, demo_corpus, held_out_sentences, heldout_corpus, run_demo
from tacotrain.text import clean_text, detect_language, unknown_characters


def has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


def generated_corpus(lang: str, seed: int, size: int) -> set[str]:
    return {sentence(lang, seed, i) for i in range(size)}


@pytest.mark.parametrize("seed", [0, 1])
def test_russian_heldout_sentences_have_stress_marks_and_numbers(seed):
    cfg = load_config("tiny", ["demo.language=ru", f"demo.corpus_seed={seed}",
                               "demo.heldout_sentences=3"])
    corpus = generated_corpus("ru", seed, 200)
    held = held_out_sentences(cfg, corpus)
    assert len(held) == 3 and len(set(held)) == 3
    assert not set(held) & corpus
    assert all(detect_language(s) == "ru" for s in held)
    assert any("+" in s for s in held) and any(has_digit(s) for s in held)
    for s in held:  # the model reads them: the stress mark stays, the numbers become words
        cleaned = clean_text(s, "ru")
        assert not unknown_characters(cleaned, "ru") and not has_digit(cleaned)
        assert ("+" in cleaned) == ("+" in s)
    # seed 1: none of the first three has a "+" or a number; the first ones that do come in
    first = [sentence("ru", seed + 1000, i) for i in range(3)]
    if seed == 1:
        assert not any("+" in s or has_digit(s) for s in first) and held != first
    else:
        assert held == first


def test_natural_english_heldout_sentences_are_the_free_form_ones():
    from tacotrain.data.english import FREE_FORM

    cfg = load_config("tiny")
    assert cfg.demo.voice() == "kokoro" and cfg.demo.heldout_count() == 30
    corpus = {FREE_FORM[2]}  # a sentence of the corpus is never held out
    assert held_out_sentences(cfg, corpus) == [s for s in FREE_FORM if s != FREE_FORM[2]][:30]
    assert load_config("tiny", ["demo.language=ru"]).demo.voice() == "espeak"


def test_a_corpus_by_another_voice_is_not_reused(tmp_path):
    cfg = load_config("tiny", ["demo.engine=espeak", "demo.corpus_size=10"])
    demo_corpus(tmp_path, cfg, progress=False)
    natural = load_config("tiny", ["demo.corpus_size=10"])
    with pytest.raises(MiniCorpusError, match="spoken by espeak but demo.engine is kokoro"):
        demo_corpus(tmp_path, natural, progress=False)


def test_english_heldout_sentences_are_unchanged():
    cfg = load_config("tiny", ["demo.heldout_sentences=8", "demo.engine=espeak"])
    corpus = generated_corpus("en", 0, 200)
    expected, i = [], 0
    while len(expected) < 8:  # the first generator sentences not in the corpus
        s = sentence("en", 1000, i)
        if s not in corpus and s not in expected:
            expected.append(s)
        i += 1
    assert held_out_sentences(cfg, corpus) == expected
    assert all(detect_language(s) == "en" for s in expected)


def test_russian_corpus_and_heldout_ground_truth(tmp_path, monkeypatch):
    spoken: list[str] = []
    run = subprocess.run

    def record(cmd, **kw):
        spoken.append(kw["input"].decode("utf-8"))
        return run(cmd, **kw)

    monkeypatch.setattr(mini.subprocess, "run", record)
    cfg = load_config("tiny", ["demo.language=ru", "demo.corpus_size=10", "demo.corpus_seed=3",
                               "demo.heldout_sentences=3"])
    corpus = demo_corpus(tmp_path, cfg, progress=False)
    texts = corpus_texts(corpus)
    assert len(texts) == 10 and detect_language(texts) == "ru"
    root = heldout_corpus(tmp_path, cfg, corpus)
    rows = [ln.split("|") for ln in (root / "metadata.csv").read_text("utf-8").splitlines()]
    assert [r[0] for r in rows] == ["heldout-0001", "heldout-0002", "heldout-0003"]
    assert not {r[1] for r in rows} & texts
    assert any("+" in r[1] and "+" in r[2] for r in rows)  # the transcript keeps the mark
    assert any(has_digit(r[1]) and not has_digit(r[2]) for r in rows)
    for r in rows:
        assert (root / "wavs" / f"{r[0]}.wav").stat().st_size > 10_000
    # espeak-ng reads the normalised text without the mark, as for the corpus itself
    assert spoken[-3:] == [r[2].replace("+", "") for r in rows]
    assert all("+" not in s for s in spoken)
    # the corpus is reused, but not in another language
    assert demo_corpus(tmp_path, cfg, progress=False) == corpus
    en = load_config("tiny", ["demo.corpus_size=10"])
    with pytest.raises(MiniCorpusError, match="is a ru corpus but demo.language is en"):
        demo_corpus(tmp_path, en, progress=False)


@pytest.mark.parametrize(("args", "lang"), [
    ([], "en"), (["--lang", "ru"], "ru"), (["--set", "demo.language=ru"], "ru"),
    (["--set", "demo.language=ru", "--lang", "en"], "en")])
def test_lang_option_reaches_the_config(tmp_path, monkeypatch, capsys, args, lang):
    seen = []

    def fake_run_demo(out, cfg, progress=True, **vocoder):
        seen.append(cfg.demo.language)
        raise MiniCorpusError("stopped before the corpus")

    monkeypatch.setattr("tacotrain.demo.run_demo", fake_run_demo)
    assert main(["demo", "--out", str(tmp_path), "--config", "tiny", *args]) == 1
    assert seen == [lang]
    assert "stopped before the corpus" in capsys.readouterr().err


def test_unknown_language_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--lang", "de"])
    assert "invalid choice: 'de'" in capsys.readouterr().err
    assert main(["demo", "--config", "tiny", "--set", "demo.language=de"]) == 2
    assert "demo.language" in capsys.readouterr().err


@pytest.mark.parametrize("phonemes", [True, False])
def test_demo_prepares_its_corpus_as_phonemes_when_configured(tmp_path, monkeypatch, phonemes):
    seen = []

    def fake_prepare(corpus, out, settings=None, progress=True):
        seen.append((corpus, settings.text.language, settings.text.phonemes))
        raise MiniCorpusError("stopped at prepare")

    monkeypatch.setattr("tacotrain.demo.demo_corpus",
                        lambda out, cfg, progress=True: tmp_path / "corpus")
    monkeypatch.setattr("tacotrain.demo.prepare", fake_prepare)
    cfg = load_config("tiny", ["demo.language=ru", f"demo.phonemes={str(phonemes).lower()}"])
    with pytest.raises(MiniCorpusError, match="stopped at prepare"):
        run_demo(tmp_path, cfg, progress=False)
    assert seen == [(tmp_path / "corpus", "ru", phonemes)]
