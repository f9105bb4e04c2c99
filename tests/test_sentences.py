"""Long text read piece by piece: the splitter keeps every word in order, and synthesis joins
the pieces' audio with pauses."""

from __future__ import annotations

import pytest

from tacotrain.data.mini import sentence
from tacotrain.infer.synth import Synthesizer
from tacotrain.text.sentences import split_sentences
from tacotrain.train.trainer import Trainer

from conftest import tiny_cfg


def words_kept(text: str, pieces: list[str]) -> bool:
    return " ".join(pieces).split() == text.split() and " ".join(pieces) == " ".join(text.split())


EN = ('Dr. Smith paid $3.5 on Baker St. today. Then he left!? "Really?" she asked. '
      "Mr. Brown and Prof. Lee waited\u2026 Lt. Harris came at 10.30, i.e. late. "
      "J. K. Rowling wrote it. We sold apples, pears, etc. The end")
RU = ("Т.е. в 1990 г. он пришёл в з+амок. «Стой!» \u2014 сказал он. Цена 3,5 рубля, "
      "а не 3.5 рубля?! Он ушёл\u2026 Потом пришли гости и т.д. Конец")


def test_english_sentences_and_abbreviations():
    pieces = split_sentences(EN, "en", 150)
    assert words_kept(EN, pieces)
    assert pieces == [
        "Dr. Smith paid $3.5 on Baker St. today.",
        "Then he left!?",
        '"Really?" she asked.',
        "Mr. Brown and Prof. Lee waited\u2026",
        "Lt. Harris came at 10.30, i.e. late.",
        "J. K. Rowling wrote it.",
        "We sold apples, pears, etc.",
        "The end",
    ]


def test_russian_sentences_abbreviations_stress_and_decimals():
    pieces = split_sentences(RU, "ru", 150)
    assert words_kept(RU, pieces)
    assert pieces == [
        "Т.е. в 1990 г. он пришёл в з+амок.",
        "«Стой!» \u2014 сказал он.",
        "Цена 3,5 рубля, а не 3.5 рубля?!",
        "Он ушёл\u2026",
        "Потом пришли гости и т.д.",
        "Конец",
    ]


def test_quotes_and_paragraphs():
    text = 'He said "Stop!" Then he ran.\n\nA heading without a stop\nand a line. «Да?» Нет.'
    pieces = split_sentences(text, "en", 150)
    assert words_kept(text, pieces)
    assert pieces == ['He said "Stop!"', "Then he ran.", "A heading without a stop and a line.",
                      "«Да?»", "Нет."]


def test_long_sentences_are_cut_at_clauses_then_spaces():
    text = ("The captain, who had sailed for forty years on every sea there is, counted the "
            "boxes twice; then he sat down by the window and waited for the rain to stop.")
    pieces = split_sentences(text, "en", 60)
    assert words_kept(text, pieces)
    assert all(len(p) <= 60 for p in pieces)
    assert pieces == ["The captain,", "who had sailed for forty years on every sea there is,",
                      "counted the boxes twice;", "then he sat down by the window",
                      "and waited for the rain to stop."]
    no_punct = " ".join(["word"] * 100)  # 499 characters, no punctuation at all
    pieces = split_sentences(no_punct, "en", 150)
    assert words_kept(no_punct, pieces)
    assert [len(p) for p in pieces] == [124, 124, 124, 124]  # halved, not 149+149+149+49
    giant = "a" * 200  # a single word longer than max_chars stays whole
    assert split_sentences(f"Hi. {giant} ok.", "en", 150) == ["Hi.", giant, "ok."]


def test_wordless_pieces_join_a_neighbour_and_empty_text_gives_nothing():
    assert split_sentences("... Then. \u2014 And now!", "en", 150) == ["... Then.",
                                                                     "\u2014 And now!"]
    assert split_sentences("Well. ...", "en", 150) == ["Well. ..."]
    assert split_sentences("  \n ", "ru", 150) == []
    with pytest.raises(ValueError, match="unsupported language"):
        split_sentences("Hi.", "de", 150)


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_three_thousand_words_keep_every_word_in_order(lang):
    parts, n, i = [], 0, 0
    while n < 3000:
        s = sentence(lang, 7, i)
        parts.append(s)
        n += len(s.split())
        i += 1
    text = " ".join(parts)
    pieces = split_sentences(text, lang, 150)
    assert words_kept(text, pieces)
    assert all(len(p) <= 150 for p in pieces)
    assert len(pieces) >= len(parts) * 0.8  # mostly one piece per sentence


@pytest.fixture(scope="module")
def synth(tiny_data, tmp_path_factory) -> Synthesizer:
    root = tmp_path_factory.mktemp("synth")
    cfg = tiny_cfg("train.val_interval=2", "model.max_decoder_steps=30")
    res = Trainer(cfg, tiny_data, root / "run", progress=False).fit(max_steps=2)
    return Synthesizer.from_checkpoint(res.last_checkpoint, device="cpu")


def test_three_sentences_give_pieces_joined_with_pauses(synth, tmp_path):
    text = "The old map. We waited quietly! Who moved the silver key?"
    sr = synth.audio.sample_rate
    for pause in (0.3, 0.5):
        synth.cfg.synth.sentence_pause_seconds = pause
        res = synth.synthesize(text, seed=1)
        assert [p.text for p in res.pieces] == ["the old map.", "we waited quietly!",
                                                "who moved the silver key?"]
        gap = round(pause * sr)
        assert len(res.wav) == sum(len(p.wav) for p in res.pieces) + 2 * gap
        assert not res.wav[len(res.pieces[0].wav):len(res.pieces[0].wav) + gap].any()
        info = res.info
        assert info.seconds == round(len(res.wav) / sr, 3)
        assert [p.text for p in info.pieces] == [p.text for p in res.pieces]
        assert info.frames == sum(p.mel.shape[1] for p in res.pieces)
        assert info.aligned == all(p.info.aligned for p in res.pieces)
        assert {info.content, *(p.info.content for p in res.pieces)} == {"untested"}
        assert info.metrics["focus"] == min(p.info.metrics["focus"] for p in res.pieces)
        assert info.as_dict()["focus"] == info.metrics["focus"]  # the JSON keeps them flat
        assert res.alignment.shape == (sum(p.alignment.shape[0] for p in res.pieces),
                                       max(p.alignment.shape[1] for p in res.pieces))
    saved = synth.save(res, tmp_path / "x.wav")
    assert saved["pieces"][2]["text"] == "who moved the silver key?"
    assert (tmp_path / "x.png").stat().st_size > 1000


def test_one_sentence_is_read_in_one_piece(synth):
    synth.cfg.synth.max_sentence_chars = 150
    res = synth.synthesize("We waited quietly, after dinner.", seed=1)
    assert res.pieces == [] == res.info.pieces and "pieces" not in res.info.as_dict()
    again = synth._synthesize_one("We waited quietly, after dinner.", synth.generator(1), None)
    assert (res.wav == again.wav).all()
    synth.cfg.synth.max_sentence_chars = 20  # the key cuts the same sentence at its comma
    res = synth.synthesize("We waited quietly, after dinner.", seed=1)
    assert [p.text for p in res.pieces] == ["we waited quietly,", "after dinner."]
    synth.cfg.synth.max_sentence_chars = 150


def test_abbreviation_splits_leave_the_choice_to_whoever_hears_the_audio():
    from tacotrain.text.sentences import abbreviation_splits

    assert abbreviation_splits("We met on Baker St. The teacher came with Dr. Smith.", "en") == [
        "We met on Baker St.", "The teacher came with Dr. Smith."]
    # titles before a name, and no capital after the dot: no choice to make
    assert abbreviation_splits("Mr. and Mrs. Brown saw Ann Lee Jr. and her.", "en") == [
        "Mr. and Mrs. Brown saw Ann Lee Jr. and her."]
    assert abbreviation_splits("Мы жили на Тверской ул. Потом уехали.", "ru") == [
        "Мы жили на Тверской ул.", "Потом уехали."]
