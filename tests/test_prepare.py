from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tacotrain.cli import main
from tacotrain.config import PrepareConfig, Settings
from tacotrain.data import prepare as prep
from tacotrain.data.corpus import REASONS, CorpusError, detect_format, read_corpus
from tacotrain.data.loader import DataError, PreparedData

from conftest import BAD_REASONS, GOOD, tone, write


def run(corpus: Path, out: Path, **kw):
    return prep.prepare(corpus, out, kw.pop("settings", Settings()), workers=1, progress=False,
                        **kw)


def test_every_bad_item_rejected_with_its_code(bad_corpus, tmp_path):
    corpus, expected = bad_corpus
    report = run(corpus, tmp_path / "data").report
    got = {r["id"] + ("#dup" if r["reason"] == "duplicate_id" else ""): r["reason"]
           for r in report["rejected"]}
    assert got == expected
    assert sorted(set(got.values())) == sorted(BAD_REASONS) == sorted(REASONS)
    kept = {k["id"]: k for k in report["kept"]}
    assert set(kept) == set(GOOD) | {"rate-16k", "stereo"}
    # the first occurrence of a duplicated id is the one kept, with its own text
    assert kept["good-01"]["text"].startswith("printing, in the only sense")
    # converted items carry notes; untouched ones do not
    assert any("resampled from 16000" in n for n in kept["rate-16k"]["notes"])
    assert any("downmixed from 2" in n for n in kept["stereo"]["notes"])
    assert kept["good-03"]["notes"] == []
    # normalised text: numbers and abbreviations expanded
    assert kept["good-02"]["text"] == "doctor smith paid five dollars."
    assert 1.1 < kept["good-01"]["seconds"] < 1.3
    rej = {r["id"]: r for r in report["rejected"] if r["reason"] != "duplicate_id"}
    assert "你" in rej["bad-chars"]["detail"] and "好" in rej["bad-chars"]["detail"]
    assert rej["just-one-field-and-no-separator"]["line"] == 15
    s = report["summary"]
    assert s["kept"] == 6 and s["rejected"] == 9
    assert all(s["rejected_by_reason"][r] == 1 for r in REASONS)
    assert s["language"] == "en"
    assert s["train_items"] + s["val_items"] == 6 and s["val_items"] == 2
    assert s["duplicate_texts_grouped"] == 0 and s["duplicate_text_items"] == 0


def test_manifest_and_mels_match_the_report(bad_corpus, tmp_path):
    corpus, _ = bad_corpus
    out = tmp_path / "data"
    report = run(corpus, out).report
    data = PreparedData.load(out)
    assert {i["id"] for i in data.items} == {k["id"] for k in report["kept"]}
    for item in data.items:
        mel = np.load(out / item["mel"])
        assert mel.shape == (80, item["frames"]) and mel.dtype == np.float32
        assert mel.min() >= np.log(1e-5) - 1e-4
        assert abs(item["frames"] - (1 + int(round(item["seconds"] * 22050)) // 256)) <= 1
    assert data.language == "en" and "a" in data.symbols and data.symbols[0] == "_"
    train = (out / "train.txt").read_text().splitlines()
    val = (out / "val.txt").read_text().splitlines()
    assert len(train) == 4 and len(val) == 2


def test_cli_exit_codes_and_summary(bad_corpus, tmp_path, capsys):
    corpus, _ = bad_corpus
    assert main(["prepare", str(corpus), "--out", str(tmp_path / "a"), "--workers", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "kept 6 of 15 items" in out and "too_long" in out and "missing_audio" in out
    assert main(["prepare", str(corpus), "--out", str(tmp_path / "b"), "--workers", "1",
                 "--quiet", "--strict"]) == 1
    assert main(["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 1
    assert main(["prepare", str(corpus), "--out", str(tmp_path / "d"),
                 "--set", "prepare.max_secnds=3"]) == 2
    assert "prepare.max_secnds" in capsys.readouterr().err


def test_cache_reused_then_invalidated_by_audio_settings(bad_corpus, tmp_path):
    corpus, _ = bad_corpus
    out = tmp_path / "data"
    first = run(corpus, out).report["summary"]
    assert first["clips_read"] == 10 and first["reused_from_cache"] == 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "mels").glob("*.npy")}
    again = run(corpus, out).report["summary"]
    assert again["clips_read"] == 0 and again["reused_from_cache"] == 10
    assert {p.name: p.stat().st_mtime_ns for p in (out / "mels").glob("*.npy")} == mtimes
    # thresholds of prepare (not audio) apply to cached items without re-extraction
    tight = Settings(prepare=PrepareConfig(max_seconds=1.45))
    s = run(corpus, out, settings=tight).report["summary"]
    assert s["clips_read"] == 0 and s["rejected_by_reason"]["too_long"] >= 2
    changed = Settings.model_validate({"audio": {"n_mels": 40}})
    s = run(corpus, out, settings=changed).report["summary"]
    assert s["clips_read"] == 10 and s["reused_from_cache"] == 0
    data = PreparedData.load(out)
    assert all(np.load(out / i["mel"]).shape[0] == 40 for i in data.items)
    assert len(list((out / "mels").glob("*.npy"))) == 6  # stale mels of old settings removed


def test_interrupted_run_leaves_nothing_that_looks_complete(bad_corpus, tmp_path, monkeypatch):
    corpus, _ = bad_corpus
    out = tmp_path / "data"
    run(corpus, out)
    assert (out / "manifest.json").exists()
    calls = {"n": 0}
    real = prep.process_audio

    def dying(job):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(prep, "process_audio", dying)
    with pytest.raises(KeyboardInterrupt):
        run(corpus, out, settings=Settings.model_validate({"audio": {"fmax": 7000}}))
    for name in ("manifest.json", "report.json", "train.txt", "val.txt", "settings.yaml"):
        assert not (out / name).exists(), name
    with pytest.raises(DataError, match="prepare"):
        PreparedData.load(out)
    assert not list((out / "mels").glob("*.tmp"))


def test_refuses_foreign_non_empty_output(bad_corpus, tmp_path):
    corpus, _ = bad_corpus
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(prep.PrepareError, match="not empty"):
        run(corpus, out)
    assert (out / "thesis.tex").read_text() == "precious"


def test_split_is_deterministic_and_stable():
    cfg = PrepareConfig(val_fraction=0.1, val_min_items=1, val_max_items=50, seed=3)
    ids = [f"x{i:03d}" for i in range(200)]
    train, val = prep.split_ids(ids, cfg)
    assert len(val) == 20 and len(train) == 180 and not set(train) & set(val)
    assert prep.split_ids(list(reversed(ids)), cfg)[1] == sorted(val, key=ids[::-1].index)
    _, other = prep.split_ids(ids, cfg.model_copy(update={"seed": 4}))
    assert set(other) != set(val)
    assert prep.split_ids(["only"], cfg) == (["only"], [])


def test_split_keeps_each_sentence_on_one_side():
    cfg = PrepareConfig(val_fraction=0.1, val_min_items=1, val_max_items=50, seed=3)
    ids = [f"x{i:03d}" for i in range(120)]
    base = [f"Sentence number {i % 40}." for i in range(120)]  # every sentence three times
    texts = [t.upper() if k % 3 == 1 else t.replace(".", "!") if k % 3 == 2 else t
             for k, t in enumerate(base)]
    for seed in range(5):
        train, val = prep.split_ids(ids, cfg.model_copy(update={"seed": seed}), texts)
        assert len(val) == 12 and len(train) == 108
        key = dict(zip(ids, (prep.text_key(t) for t in texts), strict=True))
        assert not {key[i] for i in train} & {key[i] for i in val}
    assert prep.duplicate_texts(texts) == (40, 120)
    assert prep.duplicate_texts(["a b.", "A, b!", "c"]) == (1, 2)
    # one sentence larger than the validation target still leaves a usable split
    train, val = prep.split_ids(ids[:10], cfg, ["same"] * 8 + ["x", "y"])
    assert len(val) == 1 and len(train) == 9


def test_ruslan_and_filelist_formats(tmp_path):
    ru = tmp_path / "ruslan"
    write(ru / "RUSLAN" / "000001_RUSLAN.wav", tone(1.3, seed=1))
    write(ru / "RUSLAN" / "000002_RUSLAN.wav", tone(1.6, seed=2))
    (ru / "metadata_RUSLAN_22200.csv").write_text(
        "000001_RUSLAN|В 2024 год+у ёлка стоила 15 рублей.\n"
        "000002_RUSLAN|Съешь же ещё этих мягких французских булок.\n", encoding="utf-8")
    assert detect_format(ru)[0] == "ruslan"
    report = run(ru, tmp_path / "ru-data").report
    assert report["summary"]["language"] == "ru" and report["summary"]["kept"] == 2
    text = {k["id"]: k["text"] for k in report["kept"]}
    assert text["000001_RUSLAN"].startswith("в две тысячи двадцать четвёртом год+у ёлка")
    assert "пятнадцать" in text["000001_RUSLAN"]
    data = PreparedData.load(tmp_path / "ru-data")
    assert "ё" in data.symbols and "+" in data.symbols

    fl = tmp_path / "fl"
    write(fl / "audio" / "a.wav", tone(1.1, seed=3))
    write(fl / "audio" / "b.flac", tone(1.2, seed=4))
    (fl / "list.txt").write_text("audio/a.wav|First line.\naudio/b.flac|Second line.\n"
                                 "notes about the corpus|\n", encoding="utf-8")
    listing = read_corpus(fl)
    assert listing.format == "filelist" and [e.id for e in listing.entries] == ["a", "b"]
    assert [r.reason for r in listing.rejected] == ["malformed_line"]
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(tmp_path / "missing")


def test_russian_corpus_keeps_cyrillic(tmp_path):
    root = tmp_path / "c"
    write(root / "wavs" / "r1.wav", tone(1.5, seed=5))
    (root / "metadata.csv").write_text("r1|Привет, мир! Ёж съел 3 яблока.|\n", encoding="utf-8")
    report = run(root, tmp_path / "d").report
    assert report["kept"][0]["text"] == "привет, мир! ёж съел три яблока."


def test_mel_is_written_at_22050_for_other_rates(tmp_path):
    root = tmp_path / "c"
    write(root / "wavs" / "r44.wav", tone(1.0, sr=44100, seed=5), sr=44100)
    (root / "metadata.csv").write_text("r44|Some words.|\n", encoding="utf-8")
    report = run(root, tmp_path / "d").report
    assert report["kept"][0]["notes"] == ["resampled from 44100 Hz to 22050 Hz"]
    item = PreparedData.load(tmp_path / "d").items[0]
    assert abs(item["frames"] - (1 + 22050 // 256)) <= 2
    assert sf.info(root / "wavs" / "r44.wav").samplerate == 44100  # source untouched
    assert json.loads((tmp_path / "d" / "report.json").read_text())["summary"]["kept"] == 1
