"""Phoneme input (text.phonemes): espeak-ng IPA, punctuation, Russian stress, tables, and the
prepare -> dataset -> checkpoint -> Synthesizer path."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tacotrain.config import Settings
from tacotrain.data.loader import PreparedData, TextMelDataset
from tacotrain.data.mini import sentence
from tacotrain.data.prepare import PHONEME_REASON, prepare
from tacotrain.evaluate.robustness import robustness_set
from tacotrain.infer.checkpoint import load_checkpoint, save_checkpoint
from tacotrain.infer.synth import SynthesisError, Synthesizer
from tacotrain.text import (
    PhonemeError,
    clean_text,
    encode_text,
    phonemes_to_sequence,
    phonemize,
    phonemize_many,
    sequence_to_phonemes,
    symbols_for,
)
from tacotrain.text import phonemes as ph
from tacotrain.train.trainer import Trainer

from conftest import tiny_cfg, tone, write

needs_espeak = pytest.mark.needs("espeak", shutil.which("espeak-ng") is not None,
                                 "espeak-ng is not installed")
MARKS = set("!(),-.:;?\"'")
VOWELS = set("аеёиоуыэюя")


def espeak(text: str, voice: str) -> str:
    out = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", voice, text], capture_output=True,
                         check=True, text=True).stdout
    return " ".join(out.split())


def stressed_vowel(ipa_word: str) -> int:
    """Index, among the word's IPA vowels, of the vowel right after the primary stress mark."""
    at = ipa_word.index("ˈ")
    assert ipa_word[at + 1] in ph._IPA_VOWELS, ipa_word
    return sum(c in ph._IPA_VOWELS for c in ipa_word[:at])


def test_tables_are_fixed_and_distinct():
    for lang in ("en", "ru"):
        table = symbols_for(lang, phonemes=True)
        assert table[0] == "_" and len(table) == len(set(table))
        assert table[1:13] == symbols_for(lang)[1:13]  # the same punctuation, same places
        assert {"ˈ", "ˌ", "ː"} <= set(table) and "+" not in table
    en, ru = symbols_for("en", phonemes=True), symbols_for("ru", phonemes=True)
    assert len(en) == 59 and len(ru) == 52
    assert "ɹ" in en and "ʲ" in ru
    with pytest.raises(ValueError, match="unsupported language"):
        symbols_for("de", phonemes=True)


def test_missing_espeak_names_the_package(monkeypatch):
    monkeypatch.setattr(ph.shutil, "which", lambda name: None)
    with pytest.raises(PhonemeError, match="install the Debian package espeak-ng"):
        phonemize_many(["no espeak here"], "en")


@needs_espeak
@pytest.mark.parametrize("lang", ["en", "ru"])
def test_round_trip_every_symbol_in_table(lang):
    raw = [sentence(lang, 0, i) for i in range(40)]
    raw += [r.text for r in robustness_set(lang, raw[:5], seed=0)]
    texts = [clean_text(t, lang) for t in raw]
    out = phonemize_many(texts, lang, workers=2)
    table = set(symbols_for(lang, phonemes=True))
    for text, ipa in zip(texts, out, strict=True):
        assert ipa and set(ipa) <= table, (text, set(ipa) - table)
        ids = phonemes_to_sequence(ipa, lang)
        assert 0 not in ids and sequence_to_phonemes(ids, lang) == ipa
        assert ipa.count(" ") >= text.count(" ") - 2  # words stay words
    # batched (prepare) and one at a time (synthesis) agree
    for text, ipa in list(zip(texts, out, strict=True))[:6]:
        assert phonemize_many([text], lang) == [ipa]


@needs_espeak
def test_punctuation_kept_in_order():
    en = "well, i've got it! (really?) she said: \"no\" - and; then... 'quoted' it's fine."
    got = phonemize(en, "en")
    assert [c for c in got if c in MARKS] == ["," ,"!", "(", "?", ")", ":", '"', '"', "-", ";",
                                             ".", ".", ".", "'", "'", "."]
    assert got.startswith("wˈɛl, ") and got.endswith(" fˈaɪn.")
    assert "(" + phonemize("really", "en") + "?)" in got
    ru = "привет, как дела? хорошо - спасибо!"
    assert phonemize(ru, "ru") == "prʲivʲˈet, kˈɑk dʲˈeɭa? xʌrʌʃˈo - spasʲˈibʌ!"
    assert [c for c in phonemize(ru, "ru") if c in MARKS] == [",", "?", "-", "!"]


@needs_espeak
def test_words_without_marks_keep_espeak_stress():
    assert phonemize("замок", "ru") == espeak("замок", "ru") == "zamˈok"
    assert phonemize("the quick brown fox", "en") == espeak("the quick brown fox", "en-us")


@needs_espeak
def test_russian_stress_mark_moves_primary_stress():
    first, second = phonemize("з+амок", "ru"), phonemize("зам+ок", "ru")
    assert first != second
    assert (stressed_vowel(first), stressed_vowel(second)) == (0, 1)
    assert first.count("ˈ") == second.count("ˈ") == 1
    # in a sentence only the marked word changes, and the mark lands on the marked vowel
    plain = phonemize("я вижу замок на горе.", "ru").split()
    for k in range(3):
        word = "молоко"
        at = [i for i, c in enumerate(word) if c in VOWELS][k]
        marked = phonemize(f"я вижу {word[:at]}+{word[at:]} на горе.", "ru").split()
        assert stressed_vowel(marked[2]) == k
        assert marked[:2] == plain[:2] and marked[3:] == plain[3:]
    # ё and a soft ending: espeak-ng's odd names are mapped to IPA, vowels still counted right
    assert stressed_vowel(phonemize("дв+ерь", "ru")) == 0 and "^" not in phonemize("дверь", "ru")
    assert phonemize("ключ", "ru") == "kɭʲˈʉtʃʲ"
    with pytest.raises(PhonemeError, match="not before a vowel"):
        phonemize("з+мок", "ru")


def test_unknown_espeak_output_is_refused(monkeypatch):
    monkeypatch.setattr(ph, "_run_espeak", lambda chunks, lang: ["hˈɛlçoʊ"] * len(chunks))
    with pytest.raises(PhonemeError, match=r"'ç' \(U\+00E7\).*'hello'"):
        phonemize_many(["hello, world"], "en")
    # a quotation mark from espeak-ng itself is not punctuation
    monkeypatch.setattr(ph, "_run_espeak", lambda chunks, lang: ['kɭʲu"tʃʲ'] * len(chunks))
    with pytest.raises(PhonemeError, match="outside the 'ru' phoneme table"):
        phonemize_many(["ключ"], "ru")


# ---------------------------------------------------------------------------------------------
# prepare -> dataset -> checkpoint -> Synthesizer


def _corpus(root: Path, lines: dict[str, str]) -> Path:
    for k, i in enumerate(lines):
        write(root / "wavs" / f"{i}.wav", tone(0.7 + 0.1 * (k % 4), seed=k))
    (root / "metadata.csv").write_text(
        "".join(f"{i}|{t}|{t}\n" for i, t in lines.items()), encoding="utf-8")
    return root


@needs_espeak
def test_prepare_dataset_and_synthesizer_agree(tmp_path):
    texts = {f"p{i:02d}": t for i, t in enumerate([
        "A red boat, near the river.", "Who moved the silver key?", "Dr. Smith paid 5 dollars.",
        "She said: \"we waited\".", "The old map (in the morning).", "Two boxes; quietly."])}
    corpus = _corpus(tmp_path / "corpus", texts)
    settings = Settings(text={"language": "en", "phonemes": True})
    result = prepare(corpus, tmp_path / "data", settings, workers=1, progress=False)
    assert result.report["summary"]["kept"] == 6 and result.report["summary"]["phonemes"]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["phonemes"] is True and manifest["symbols"] == symbols_for("en", phonemes=True)
    assert manifest["settings"]["text"]["phonemes"] is True
    item = next(i for i in manifest["items"] if i["id"] == "p02")
    assert item["text"] == "doctor smith paid five dollars."
    assert item["phonemes"] == phonemize(item["text"], "en")
    split = (tmp_path / "data" / "train.txt").read_text().splitlines()
    split += (tmp_path / "data" / "val.txt").read_text().splitlines()
    assert f"p02|{item['text']}|{item['phonemes']}" in split

    data = PreparedData.load(tmp_path / "data")
    assert data.phonemes
    rows = {}
    for name in ("train", "val"):
        ds = TextMelDataset(data, name)
        rows.update({i["id"]: ds[k][0].tolist() for k, i in enumerate(ds.items)})
    assert rows["p02"] == phonemes_to_sequence(item["phonemes"], "en")
    assert rows["p02"] != encode_text(item["text"], "en", phonemes=False)

    trainer = Trainer(tiny_cfg(), tmp_path / "data", tmp_path / "run", progress=False)
    assert trainer.model.embedding.num_embeddings == len(symbols_for("en", phonemes=True))
    payload = trainer.state().to_payload()
    assert payload["data"]["phonemes"] is True
    ckpt = tmp_path / "ck.pt"
    save_checkpoint(ckpt, payload)
    synth = Synthesizer.from_checkpoint(ckpt, device="cpu")
    assert synth.phonemes and synth.symbols == data.symbols
    for key, raw in texts.items():
        cleaned, ids = synth.sequence(raw)
        assert ids == rows[key] and cleaned == clean_text(raw, "en")

    # a checkpoint whose table is not this version's phoneme table is refused
    ck = load_checkpoint(ckpt)
    ck["data"]["symbols"] = ck["data"]["symbols"][:-1]
    save_checkpoint(tmp_path / "odd.pt", ck)
    with pytest.raises(SynthesisError, match="en phoneme table"):
        Synthesizer.from_checkpoint(tmp_path / "odd.pt", device="cpu")


@needs_espeak
def test_prepare_rejects_what_espeak_cannot_read(tmp_path):
    texts = {"r0": "Я вижу з+амок.", "r1": "Он купил зам+ок!", "r2": "Стресс в+ не там.",
             "r3": "Мы купили хлеб, молоко и сыр.", "r4": "Кто передвинул ключ?"}
    corpus = _corpus(tmp_path / "corpus", texts)
    settings = Settings(text={"language": "ru", "phonemes": True})
    report = prepare(corpus, tmp_path / "data", settings, workers=1, progress=False).report
    rejected = {r["id"]: r for r in report["rejected"]}
    assert set(rejected) == {"r2"} and rejected["r2"]["reason"] == PHONEME_REASON
    assert "'в+'" in rejected["r2"]["detail"]
    assert report["summary"]["rejected_by_reason"][PHONEME_REASON] == 1
    kept = {k["id"]: k["phonemes"] for k in report["kept"]}
    assert stressed_vowel(kept["r0"].split()[2]) == 0
    assert stressed_vowel(kept["r1"].split()[2].rstrip("!")) == 1
