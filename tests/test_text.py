"""Text front-end tests. The predecessor had none, and its cleaner deleted every Cyrillic
letter; the Russian tests below are the guard against that ever happening again."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tacotrain.text import (
    clean_text,
    detect_language,
    expand_numbers,
    sequence_to_text,
    symbols_for,
    text_to_sequence,
    unknown_characters,
)

CYRILLIC = re.compile(r"[а-яё]")


def cyrillic_letters(text: str) -> set[str]:
    return set(CYRILLIC.findall(text.lower()))


# --- symbol tables --------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "ru"])
def test_symbol_table_shape(language: str) -> None:
    symbols = symbols_for(language)
    assert symbols[0] == "_"
    assert len(symbols) == len(set(symbols))
    assert all(len(s) == 1 for s in symbols)
    for punct in " !'(),-.:;?\"":
        assert punct in symbols


def test_symbol_tables_are_fixed() -> None:
    """Embedding indices depend on this exact order; a change here invalidates checkpoints."""
    assert "".join(symbols_for("en")) == "_ !'(),-.:;?\"abcdefghijklmnopqrstuvwxyz"
    assert "".join(symbols_for("ru")) == "_ !'(),-.:;?\"+абвгдеёжзийклмнопрстуфхцчшщъыьэюя"


def test_russian_table_has_full_alphabet_yo_and_stress() -> None:
    ru = symbols_for("ru")
    assert "ё" in ru and "+" in ru
    assert set("абвгдеёжзийклмнопрстуфхцчшщъыьэюя") <= set(ru)
    assert sum(1 for s in ru if CYRILLIC.fullmatch(s)) == 33
    en = symbols_for("en")
    assert "+" not in en and not any(CYRILLIC.fullmatch(s) for s in en)


def test_symbols_for_returns_a_copy_and_rejects_unknown_language() -> None:
    symbols_for("en").append("X")
    assert "X" not in symbols_for("en")
    with pytest.raises(ValueError, match="unsupported language"):
        symbols_for("RU")


# --- Russian ----------------------------------------------------------------------------------


def test_russian_sentence_keeps_every_letter_stress_and_spells_digits() -> None:
    raw = "В 2024 год+у з+амок стоил 15 рублей, ёлка — 3."
    out = clean_text(raw, "ru")
    assert out == ("в две тысячи двадцать четвёртом год+у з+амок стоил пятнадцать рублей, "
                   "ёлка - три.")
    assert cyrillic_letters(raw) <= cyrillic_letters(out)
    assert "ё" in out
    assert "год+у" in out and "з+амок" in out
    assert "две тысячи двадцать четвёртом" in out  # a year takes the case of "году"
    assert "пятнадцать" in out and "три" in out
    assert not re.search(r"\d", out)
    assert unknown_characters(out, "ru") == []


def test_russian_uppercase_yo_is_lowered_to_yo_not_ye() -> None:
    assert clean_text("ЁЖ Ёлка", "ru") == "ёж ёлка"


def test_decomposed_yo_is_composed() -> None:
    assert clean_text("е\u0308лка", "ru") == "ёлка"


def test_combining_acute_becomes_plus_before_vowel() -> None:
    assert clean_text("за\u0301мок", "ru") == "з+амок"
    assert clean_text("Зо\u0301лото и ё\u0301лка", "ru") == "з+олото и +ёлка"
    # Existing "+" marks are kept where they are.
    assert clean_text("м+ука и мук+а", "ru") == "м+ука и мук+а"


def test_stray_acute_is_not_deleted() -> None:
    out = clean_text("т\u0301ок", "ru")
    assert unknown_characters(out, "ru") == ["\u0301"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("-5", "минус пять"),
        ("3,14", "три целых четырнадцать сотых"),
        ("1 000 000", "один миллион"),
        ("12\u00a0500", "двенадцать тысяч пятьсот"),
        ("1%", "один процент"),
        ("3%", "три процента"),
        ("11%", "одиннадцать процентов"),
        ("25 %", "двадцать пять процентов"),
        ("2,5%", "две целых пять десятых процента"),
        ("10-15", "десять-пятнадцать"),
        ("в 1991 году", "в тысяча девятьсот девяносто первом году"),
        ("В 2024 году", "В две тысячи двадцать четвёртом году"),
        ("к 2030 году", "к две тысячи тридцатому году"),
        ("с 1812 года", "с тысяча восемьсот двенадцатого года"),
        ("2000 год", "двухтысячный год"),
        ("перед 1945 годом", "перед тысяча девятьсот сорок пятым годом"),
        ("в 1 000 году", "в одна тысяча году"),  # a grouped number is not read as a year
        ("в 1991 году 5 раз", "в тысяча девятьсот девяносто первом году пять раз"),
        ("в 1991 г+оду", "в тысяча девятьсот девяносто первом г+оду"),
        ("5 годовых", "пять годовых"),
    ],
)
def test_russian_numbers(raw: str, expected: str) -> None:
    assert expand_numbers(raw, "ru") == expected


def test_russian_typographic_punctuation() -> None:
    assert clean_text("«Привет»,\u00a0— сказал он…", "ru") == '"привет", - сказал он...'


# --- English ----------------------------------------------------------------------------------


def test_english_sentence_exact() -> None:
    assert clean_text("Dr. Smith paid $5.50 on the 3rd of May, 1984.", "en") == (
        "doctor smith paid five dollars, fifty cents on the third of may, nineteen eighty-four."
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mr. and MRS. Jones", "mister and missus jones"),
        ("Ms. Lee, Drs. Who", "miss lee, doctors who"),
        ("St. Louis, Ft. Worth", "saint louis, fort worth"),
        ("Gen. Lee vs. Maj. Smith", "general lee versus major smith"),
        ("apples, e.g. red, i.e. ripe", "apples, for example red, that is ripe"),
        ("Smith Co. Ltd. and so on, etc.", "smith company limited and so on, et cetera."),
        (
            "Capt. Sgt. Lt. Col. Rev. Hon. Jr. Sr. Esq.",
            "captain sergeant lieutenant colonel reverend honorable junior senior esquire.",
        ),
        # Only with the dot, and only as whole words.
        ("Dr Who drove on St James", "dr who drove on st james"),
        ("Mister.", "mister."),
    ],
)
def test_english_abbreviations(raw: str, expected: str) -> None:
    assert clean_text(raw, "en") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1st 22nd 3rd 4th 101st", "first twenty-second third fourth one hundred first"),
        ("1984", "nineteen eighty-four"),
        ("1905", "nineteen oh-five"),
        ("the 1980s", "the nineteen eighties"),
        ("2024", "two thousand twenty-four"),
        ("1,000,000", "one million"),
        ("1,500 men", "one thousand five hundred men"),
        ("3.14", "three point one four"),
        ("0.50", "zero point five zero"),
        ("-5", "minus five"),
        ("(-3)", "(minus three)"),
        ("x-5", "x-five"),
        ("$5", "five dollars"),
        ("$1", "one dollar"),
        ("$0.01", "one cent"),
        ("$5.50", "five dollars, fifty cents"),
        ("$1,000", "one thousand dollars"),
        ("$2.5 million", "two point five million dollars"),
        ("£3", "three pounds"),
        ("£1.50", "one pound, fifty pence"),
        ("50%", "fifty percent"),
        ("12.5 %", "twelve point five percent"),
        ("1" * 20, " ".join(["one"] * 20)),
    ],
)
def test_english_numbers(raw: str, expected: str) -> None:
    assert expand_numbers(raw, "en") == expected


def test_english_lowercase_and_whitespace() -> None:
    assert clean_text("  Hello \t\n  WORLD \u00a0 again  ", "en") == "hello world again"


def test_english_typographic_punctuation() -> None:
    raw = "\u201cIt\u2019s\u201d \u2018fine\u2019\u2014really\u2026 well\u2011known \u201eok\u201d"
    assert clean_text(raw, "en") == '"it\'s" \'fine\' - really... well-known "ok"'


def test_english_latin_diacritics_are_stripped() -> None:
    assert clean_text("Café naïve Zoë Straße façade", "en") == "cafe naive zoe strasse facade"


def test_no_digits_left_and_no_pad_from_cleaning() -> None:
    out = clean_text("In 1999, 3 of 12.5% paid $7.25 (4th time).", "en")
    assert not re.search(r"\d", out)
    assert unknown_characters(out, "en") == []


# --- unknown characters are kept and reported, never deleted --------------------------------


def test_chinese_and_emoji_in_english_are_kept_and_reported() -> None:
    out = clean_text("Hello 你好 world \U0001f600", "en")
    assert "你好" in out and "\U0001f600" in out
    assert unknown_characters(out, "en") == sorted({"你", "好", "\U0001f600"})


def test_cyrillic_in_english_is_reported_not_deleted() -> None:
    out = clean_text("Hello мир", "en")
    assert out == "hello мир"
    assert unknown_characters(out, "en") == ["и", "м", "р"]
    with pytest.raises(ValueError, match="'м'"):
        text_to_sequence(out, "en")


def test_latin_in_russian_is_reported() -> None:
    out = clean_text("Привет, world", "ru")
    assert "привет" in out
    assert unknown_characters(out, "ru") == sorted(set("world"))


def test_pad_in_text_counts_as_unknown() -> None:
    assert unknown_characters("a_b", "en") == ["_"]
    with pytest.raises(ValueError, match="U\\+005F"):
        text_to_sequence("a_b", "en")


# --- language detection ---------------------------------------------------------------------


def test_detect_language() -> None:
    assert detect_language("The quick brown fox.") == "en"
    assert detect_language("Съешь же ещё этих мягких французских булок.") == "ru"
    assert detect_language(["Hello", "мир"]) == "en"  # 5 Latin vs 3 Cyrillic
    assert detect_language(["Привет от Microsoft", "ещё текст"]) == "ru"
    assert detect_language(iter(["ab", "вгд"])) == "ru"
    assert detect_language("") == "en"
    assert detect_language("123 !!!") == "en"


# --- sequences ------------------------------------------------------------------------------


def test_sequence_roundtrip_and_pad_dropping() -> None:
    seq = text_to_sequence("з+амок, ёлка!", "ru")
    assert 0 not in seq
    assert sequence_to_text(seq, "ru") == "з+амок, ёлка!"
    assert sequence_to_text([*seq, 0, 0], "ru") == "з+амок, ёлка!"
    with pytest.raises(ValueError, match="outside"):
        sequence_to_text([999], "en")


@pytest.mark.parametrize("language", ["en", "ru"])
def test_roundtrip_property(language: str) -> None:
    alphabet = "".join(symbols_for(language)[1:])

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=alphabet, max_size=80))
    def check(text: str) -> None:
        seq = text_to_sequence(text, language)
        assert len(seq) == len(text)
        assert all(0 < i < len(symbols_for(language)) for i in seq)
        assert sequence_to_text(seq, language) == text

    check()


@pytest.mark.parametrize("language", ["en", "ru"])
def test_cleaning_never_produces_pad(language: str) -> None:
    alphabet = "".join(symbols_for(language)[1:]) + "0123456789$%£ABCЁЯ\u2014\u00ab\u00bb\u2026"

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=alphabet, max_size=60))
    def check(raw: str) -> None:
        out = clean_text(raw, language)
        assert "_" not in out
        assert not re.search(r"\d", out)
        if not unknown_characters(out, language):
            assert sequence_to_text(text_to_sequence(out, language), language) == out

    check()


def test_st_is_street_after_a_name_and_saint_before_one() -> None:
    assert clean_text("He lives on Baker St. near St. Paul's.", "en") == \
        "he lives on baker street near saint paul's."
    assert clean_text("Turn into Main St.", "en") == "turn into main street."
