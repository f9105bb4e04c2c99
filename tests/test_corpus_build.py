"""``tacotrain corpus build``: long recordings made here from mini-corpus clips joined by pauses of
known length, with noise, so every cut and every transcript can be checked against the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tacotrain.audio import load_audio
from tacotrain.config import CorpusBuildConfig
from tacotrain.corpus_build.align import AlignError, align
from tacotrain.corpus_build.segment import group_spans, segment, weakest_point
from tacotrain.data import kokoro
from tacotrain.data.joined import JoinedRecording, joined_recording
from tacotrain.data.mini import make_mini_corpus

SR = 22050
CFG = CorpusBuildConfig()
TOLERANCE = 0.05  # a cut within 50 ms of a true pause


def long_recording(corpus: Path, n: int, seed: int = 0, snr_db: float = 25.0,
                   lang: str = "en") -> JoinedRecording:
    """``n`` one-sentence clips of ``corpus`` joined by pauses of 0.3-1.5 s, white noise."""
    return joined_recording(corpus, n, lang=lang, seed=seed, snr_db=snr_db)


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


def test_levels_in_blocks_equal_the_whole_signal_rms():
    from tacotrain.audio import frame_rms
    from tacotrain.corpus_build.segment import levels

    x = np.random.default_rng(0).standard_normal(SR * 3 + 123).astype(np.float32)
    whole = 20 * np.log10(frame_rms(x, 551, 220))
    np.testing.assert_allclose(levels(x, SR, 0.01, block_seconds=0.7), whole, atol=1e-9)


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


def _check_alignment(rec: JoinedRecording, clips) -> tuple[float, float]:
    """Exact-transcript share and the largest cut error of ``clips`` against ``rec``."""
    exact = sum(c.text == rec.text_between(c.cut_before, c.cut_after) for c in clips)
    errors = [rec.cut_error(c.cut_before) for c in clips[1:]]
    return exact / len(clips), max(errors)


def test_dtw_follows_a_known_warp():
    from tacotrain.corpus_build.align import dtw

    rng = np.random.default_rng(0)
    b = rng.standard_normal((60, 4)).cumsum(axis=0)  # a random walk: every frame distinct
    warp = np.sort(np.concatenate([np.arange(60), np.arange(0, 60, 3)]))  # a slower reading
    a = b[warp] + 0.01 * rng.standard_normal((len(warp), 4))
    pi, pj = dtw(a, b, band=20)
    assert (pi[0], pj[0], pi[-1], pj[-1]) == (0, 0, len(a) - 1, 59)
    assert (np.diff(pi) >= 0).all() and (np.diff(pj) >= 0).all()
    assert (pj[np.searchsorted(pi, np.arange(len(a)))] == warp).mean() > 0.95


def test_a_sentence_cut_by_its_length_in_characters_is_joined_when_it_fits():
    from tacotrain.corpus_build.align import AlignedClip, pieces_of, whole_sentences

    def clip(start, end, text):
        return AlignedClip(start, end, start - 0.2, end + 0.2, text, [0], {"match": 0.9})

    parts = [clip(0.0, 4.0, "A long sentence, cut at its comma;"), clip(4.5, 9.0, "it ends."),
             clip(10.0, 14.0, "Another one, far too long;"), clip(14.5, 22.0, "so it stays cut.")]
    joined = whole_sentences(parts, max_clip=11.0)
    assert [c.text for c in joined] == ["A long sentence, cut at its comma; it ends.",
                                        "Another one, far too long;", "so it stays cut."]
    assert (joined[0].cut_before, joined[0].cut_after) == (-0.2, 9.2)
    # an abbreviation before a capital is a boundary, but not a sentence end
    pieces, ends, maybe = pieces_of("We met on Baker St. The teacher sang. Then we left.", "en",
                                    11.0)
    assert pieces == ["We met on Baker St.", "The teacher sang.", "Then we left."]
    assert ends == [False, True] and maybe == [True, False]


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
    make_mini_corpus(out, "en", 5, seed=0, progress=False, engine="kokoro")
    return out


@needs_kokoro
def test_given_text_on_a_natural_voice(natural_en: Path):
    rec = long_recording(natural_en, 4, seed=2)
    al = align(rec.samples, SR, " ".join(rec.texts), "en", CFG)
    exact, worst = _check_alignment(rec, al.clips)
    assert exact == 1.0 and worst <= TOLERANCE
    assert min(c.confidence for c in al.clips) > CFG.min_confidence


# --- the command ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chapter(espeak_en: Path, espeak_en_other: Path, tmp_path_factory: pytest.TempPathFactory):
    """A long recording (wav), its text, another chapter's text, and the truth."""
    import soundfile as sf

    d = tmp_path_factory.mktemp("chapter")
    rec = long_recording(espeak_en, 14, seed=5)
    sf.write(d / "chapter.wav", rec.samples, SR, subtype="PCM_16")
    (d / "chapter.txt").write_text(" ".join(rec.texts) + "\n", encoding="utf-8")
    other = long_recording(espeak_en_other, 14)
    (d / "other.txt").write_text(" ".join(other.texts) + "\n", encoding="utf-8")
    return d, rec


def _build(*args: str) -> int:
    from tacotrain.cli import main

    return main(["corpus", "build", *args, "--quiet"])


def test_build_writes_a_corpus_that_prepare_reads_and_accounts_for_every_second(chapter,
                                                                                tmp_path):
    import json

    from tacotrain.config import Settings
    from tacotrain.data.prepare import prepare

    d, rec = chapter
    out = tmp_path / "corpus"
    assert _build(str(d / "chapter.wav"), "--text", str(d / "chapter.txt"), "--out",
                  str(out)) == 0
    report = json.loads((out / "build-report.json").read_text())
    assert report["complete"] and report["summary"]["clips"] == \
        {"kept": 14, "review": 0, "rejected": 0}
    rows = [line.split("|") for line in (out / "metadata.csv").read_text().splitlines()]
    by_id = {c["id"]: c for c in report["clips"]}
    assert [r[1] for r in rows] == rec.texts
    for cid, text, normalized in rows:
        c = by_id[cid]
        assert text == rec.text_between(c["cut_before"], c["cut_after"])
        assert normalized == text.lower().replace("mr.", "mister").replace("dr.", "doctor") \
            or normalized.islower()
        seconds = load_audio(out / c["wav"], SR).duration
        assert abs(seconds - (c["end"] - c["start"])) < 1e-3
        assert c["cut_before"] <= c["start"] < c["end"] <= c["cut_after"]
    assert max(rec.cut_error(c["cut_before"]) for c in report["clips"][1:]) <= TOLERANCE
    s = report["summary"]["seconds"]
    assert abs(s["kept"] + s["review"] + s["rejected"] + s["silence"] - s["total"]) < 0.01
    assert abs(s["total"] - len(rec.samples) / SR) < 1e-3
    page = (out / "index.html").read_text()
    assert all(t.replace("'", "&#x27;") in page for t in rec.texts)
    assert page.index("Set aside for review") < page.index("Rejected") < page.index("Kept")
    result = prepare(out, tmp_path / "data", Settings(), progress=False)
    assert result.report["summary"]["kept"] == 14


def test_a_wrong_chapter_stops_the_build_without_a_corpus(chapter, tmp_path, capsys):
    import json

    d, _ = chapter
    out = tmp_path / "corpus"
    assert _build(str(d / "chapter.wav"), "--text", str(d / "other.txt"), "--out",
                  str(out)) == 1
    err = capsys.readouterr().err
    assert "text does not match audio" in err and "other.txt" in err and "chapter.wav" in err
    assert not (out / "metadata.csv").exists()
    report = json.loads((out / "build-report.json").read_text())
    assert report["complete"] is False
    assert report["summary"]["clips"]["rejected"] > report["summary"]["clips"]["kept"]
    item = report["inputs"][0]
    assert item["sentence_ends_without_pause"] > CFG.max_unpaused_share * item["sentence_ends"]


def test_clear_errors_name_the_file(chapter, tmp_path, capsys):
    d, _ = chapter
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    assert _build(str(bad), "--text", str(d / "chapter.txt"), "--out", str(tmp_path / "a")) == 1
    assert "broken.wav" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n", encoding="utf-8")
    assert _build(str(d / "chapter.wav"), "--text", str(empty), "--out", str(tmp_path / "b")) == 1
    assert "empty.txt: the text is empty" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("Only one short sentence here.", encoding="utf-8")
    assert _build(str(d / "chapter.wav"), "--text", str(short), "--out", str(tmp_path / "c")) == 1
    err = capsys.readouterr().err
    assert "differ too much in length" in err and "short.txt" in err
    assert _build(str(d / "chapter.wav"), str(d / "chapter.wav"), "--text",
                  str(d / "chapter.txt"), "--out", str(tmp_path / "d")) == 2
    assert "one --text per AUDIO" in capsys.readouterr().err
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "mine.txt").write_text("x")
    assert _build(str(d / "chapter.wav"), "--text", str(d / "chapter.txt"), "--out",
                  str(tmp_path / "e")) == 1
    assert "not a corpus build" in capsys.readouterr().err


def test_an_interrupted_build_never_looks_complete_and_a_rerun_reuses_its_work(
        chapter, tmp_path, monkeypatch):
    import json

    from tacotrain.corpus_build import build as build_mod

    d, rec = chapter
    out = tmp_path / "corpus"
    args = [str(d / "chapter.wav"), "--text", str(d / "chapter.txt"), "--out", str(out)]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_mod, "write_page", interrupted)
    assert _build(*args) == 130  # interrupted
    assert not (out / "metadata.csv").exists() and not (out / "build-report.json").exists()
    monkeypatch.undo()

    def no_alignment(*a, **k):
        raise AssertionError("the alignment should come from the cache")

    monkeypatch.setattr(build_mod, "align", no_alignment)
    assert _build(*args) == 0
    report = json.loads((out / "build-report.json").read_text())
    assert report["complete"] and report["inputs"][0]["reused"] is True
    assert [r.split("|")[1] for r in (out / "metadata.csv").read_text().splitlines()] \
        == rec.texts


def test_without_text_clips_get_a_confidence_and_doubtful_ones_are_set_aside(chapter, tmp_path):
    from tacotrain.corpus_build.build import Source, build

    d, rec = chapter
    heard = {}

    def fake(samples: np.ndarray, rate: int) -> tuple[str, float]:
        """A recogniser that is sure of long clips only."""
        seconds = len(samples) / rate
        heard[round(seconds, 2)] = True
        return ("words", 0.9) if seconds > 2.5 else ("words", 0.2)

    report = build([Source(d / "chapter.wav")], tmp_path / "out", "en", CFG, hear=fake,
                   progress=False)
    clips = report["clips"]
    assert len(heard) == len(clips) and len(clips) >= 5
    for c in clips:
        speech = c["speech"][1] - c["speech"][0]
        assert c["status"] == ("kept" if speech > 2.5 else "review")
        assert c["wav"].startswith("wavs/" if c["status"] == "kept" else "review/")
        assert c["cut_before"] == 0.0 or rec.cut_error(c["cut_before"]) <= TOLERANCE
    kept = (tmp_path / "out" / "metadata.csv").read_text().splitlines()
    assert len(kept) == report["summary"]["clips"]["kept"] < len(clips)
    s = report["summary"]["seconds"]
    assert abs(s["kept"] + s["review"] + s["rejected"] + s["silence"] - s["total"]) < 0.01


@needs_kokoro
@pytest.mark.skipif(not __import__("tacotrain.judge.asr", fromlist=["x"]).asr_available(),
                    reason="needs pocketsphinx (tacotrain[asr])")
def test_pocketsphinx_reads_a_natural_voice_and_hears_nothing_in_noise(natural_en, tmp_path):
    import soundfile as sf

    from tacotrain.corpus_build.build import Source, build
    from tacotrain.judge.asr import error_rates, transcribe_scored

    rec = long_recording(natural_en, 4, seed=2)
    noise = np.random.default_rng(1).standard_normal(2 * SR).astype(np.float32) * 0.1
    gap = np.zeros(SR, np.float32)
    sf.write(tmp_path / "talk.wav", np.concatenate([rec.samples, gap, noise, gap]), SR)
    report = build([Source(tmp_path / "talk.wav")], tmp_path / "out", "en", CFG,
                   hear=transcribe_scored, progress=False)
    clips = report["clips"]
    assert clips[-1]["status"] == "rejected" and clips[-1]["reason"] == "no_words"
    assert clips[-1]["start"] >= rec.speech[-1][1]
    speech = clips[:-1]
    assert all(0.0 < c["confidence"] <= 1.0 for c in speech)
    assert {c["status"] for c in speech} <= {"kept", "review"}
    for c in speech:
        assert (c["status"] == "kept") == (c["confidence"] >= CFG.min_confidence)
    words = " ".join(c["text"] for c in speech)
    assert error_rates(" ".join(rec.texts), words)[0] < 0.9  # it hears words, not noise


@pytest.mark.slow
def test_build_then_prepare_then_train_end_to_end(chapter, tmp_path):
    """``corpus build`` -> ``prepare`` -> ``train`` (tiny preset, a few steps) on a recording."""
    import json

    from tacotrain.cli import main

    d, _ = chapter
    corpus, data, run = tmp_path / "corpus", tmp_path / "data", tmp_path / "run"
    assert _build(str(d / "chapter.wav"), "--text", str(d / "chapter.txt"), "--out",
                  str(corpus)) == 0
    assert main(["prepare", str(corpus), "--out", str(data), "--quiet"]) == 0
    prepared = json.loads((data / "report.json").read_text())
    assert prepared["summary"]["kept"] == 14
    assert main(["train", "--config", "tiny", "--data", str(data), "--out", str(run),
                 "--max-steps", "3", "--set", "train.threads=1", "--set",
                 "train.val_free_run_items=1", "--quiet"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.pt")) == \
        ["step-0000003.pt"]
