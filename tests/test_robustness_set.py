"""The built-in hard-input set: lengths, categories, determinism, speakable characters."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tacotrain.data.mini import sentence
from tacotrain.evaluate.robustness import (
    CATEGORIES,
    ITEMS_PER_CATEGORY,
    LENGTH_TOLERANCE,
    LIST_WORDS,
    LONG_FACTORS,
    REPEAT_COUNT,
    RobustItem,
    robustness_set,
)
from tacotrain.text import clean_text, unknown_characters

LANGS = ("en", "ru")


def _train(lang: str, seed: int = 0, size: int = 40) -> list[str]:
    return [sentence(lang, seed, i) for i in range(size)]


def _by_category(items: list[RobustItem]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        out.setdefault(item.category, []).append(item.text)
    return out


@pytest.mark.parametrize("lang", LANGS)
def test_every_category_present(lang: str) -> None:
    groups = _by_category(robustness_set(lang, _train(lang)))
    assert tuple(groups) == CATEGORIES
    assert all(len(texts) >= ITEMS_PER_CATEGORY for texts in groups.values())


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("corpus_seed", [0, 1, 2])
def test_long_sentences_are_2x_and_3x_the_longest_training_text(lang: str,
                                                                corpus_seed: int) -> None:
    train = _train(lang, corpus_seed)
    longest = max(len(clean_text(t, lang)) for t in train)
    for seed in range(4):
        groups = _by_category(robustness_set(lang, train, seed))
        for category, factor in LONG_FACTORS.items():
            for text in groups[category]:
                ratio = len(clean_text(text, lang)) / (factor * longest)
                assert abs(ratio - 1) <= LENGTH_TOLERANCE, (category, ratio, text)


@pytest.mark.parametrize("lang", LANGS)
def test_long_sentences_follow_a_short_handwritten_corpus(lang: str) -> None:
    train = {"en": ["The cat sat on the mat by the door.", "Go home."],
             "ru": ["Кошка сидела на ковре у двери.", "Иди домой."]}[lang]
    longest = max(len(clean_text(t, lang)) for t in train)
    groups = _by_category(robustness_set(lang, train))
    for category, factor in LONG_FACTORS.items():
        for text in groups[category]:
            assert abs(len(clean_text(text, lang)) / (factor * longest) - 1) <= LENGTH_TOLERANCE


@pytest.mark.parametrize("lang", LANGS)
def test_long_sentences_are_one_sentence(lang: str) -> None:
    groups = _by_category(robustness_set(lang, _train(lang)))
    for category in LONG_FACTORS:
        for text in groups[category]:
            cleaned = clean_text(text, lang)
            assert cleaned.endswith(".")
            assert not re.search(r"[.!?;]", cleaned[:-1]), cleaned
            assert "," in cleaned


@pytest.mark.parametrize("lang", LANGS)
def test_same_seed_same_set_other_seed_other_set(lang: str) -> None:
    train = _train(lang)
    assert robustness_set(lang, train, 5) == robustness_set(lang, train, 5)
    assert robustness_set(lang, train, 5) != robustness_set(lang, train, 6)


@pytest.mark.parametrize("lang", LANGS)
def test_no_unknown_characters_for_many_seeds(lang: str) -> None:
    train = _train(lang, size=10)
    for seed in range(30):
        for item in robustness_set(lang, train, seed):
            cleaned = clean_text(item.text, lang)
            assert cleaned and unknown_characters(cleaned, lang) == [], item


@pytest.mark.parametrize("lang", LANGS)
def test_category_shapes(lang: str) -> None:
    for seed in range(5):
        groups = _by_category(robustness_set(lang, _train(lang, size=10), seed))
        words = re.findall(r"\w+", groups["repeated_words"][0].lower())
        assert len(words) == REPEAT_COUNT and len(set(words)) == 1
        for text in groups["repeated_words"]:  # every item repeats a word or phrase
            assert Counter(re.findall(r"\w+", text.lower())).most_common(1)[0][1] >= 3, text
        for text in groups["long_numbers"]:
            assert re.search(r"[0-9]{4}", text) and not re.search(r"[0-9]", clean_text(text, lang))
        assert any(re.search(r"[0-9][.,][0-9]", t) for t in groups["long_numbers"])  # decimal
        for text in groups["comma_list"]:
            assert LIST_WORDS[0] <= text.count(",") + 1 <= LIST_WORDS[1]
        assert all(t.endswith("?") for t in groups["question"])
        for text in groups["all_caps"]:
            assert text == text.upper() and text != text.lower()
            if lang == "ru":
                assert re.search("[А-ЯЁ]", text)


@pytest.mark.parametrize("lang", LANGS)
def test_russian_stress_marks_survive(lang: str) -> None:
    texts = [i.text for s in range(10) for i in robustness_set(lang, _train(lang, size=10), s)]
    assert any("+" in t for t in texts) == (lang == "ru")


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        robustness_set("en", ["", "   "])
    with pytest.raises(ValueError, match="unsupported language"):
        robustness_set("de", ["Hallo."])
