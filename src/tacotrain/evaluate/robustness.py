"""A built-in set of hard inputs for ``tacotrain eval --robustness``.

Tacotron 2 fails in known ways on input unlike its training data: attention gives up on text
longer than anything it saw, loops on repeated words, and loses its place in long numbers,
comma lists, questions and capitals. This set probes each failure in the corpus language,
reusing the mini-corpus vocabulary so the words themselves are familiar and only the shape is
hard. Every text passes ``clean_text`` with no unknown characters (checked on creation), and
the same seed gives the same set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tacotrain.data.mini import VOCABULARY as _VOCAB  # the mini-corpus word lists
from tacotrain.text import clean_text, unknown_characters
from tacotrain.text.symbols import check_language

CATEGORIES: tuple[str, ...] = (
    "long_2x", "long_3x", "repeated_words", "long_numbers", "comma_list", "question", "all_caps")
LONG_FACTORS: dict[str, float] = {"long_2x": 2.0, "long_3x": 3.0}
"""Target cleaned length as a multiple of the longest cleaned training text."""
LENGTH_TOLERANCE = 0.10
"""Allowed relative deviation of a long sentence from its target length."""
ITEMS_PER_CATEGORY = 2
FINAL_CLAUSES = 24
"""Random clauses tried as the last piece of a long sentence, besides the single phrases."""
REPEAT_COUNT = 6
"""Repetitions in ``repeated_words``: enough for attention to lose count."""
LIST_WORDS = (6, 10)
"""Fewest and most words in a ``comma_list``."""
BIG_NUMBER = (1_000_000, 9_999_999)
"""Range of the seven-digit numbers in ``long_numbers``."""
YEARS = (1100, 1999)
"""Years read as years in English (see ``tacotrain.text.numbers``)."""
DECIMAL_WHOLE = (1, 99)
DECIMAL_FRACTION = (10_000, 99_999)
"""Five decimal places: long, but within the Russian fraction names num2words declines."""

_JOINERS = {"en": (", ", ", and ", " and "), "ru": (", ", ", и ", " и ")}
_REPEATED = {"en": ("go", "no", "stop", "yes", "hello"), "ru": ("да", "нет", "стоп", "иди", "ну")}
_VERY = {"en": ("It was {} good.", "very"), "ru": ("Это было {} хорошо.", "очень")}
_NOUNS = {  # shopping lists: accusative = nominative for these Russian nouns
    "en": ("We bought", "apples bread milk cheese butter eggs tea sugar rice honey"),
    "ru": ("Мы купили", "яблоки хлеб молоко сыр масло яйца чай сахар рис мёд"),
}
_NUMBERS = {
    "en": ("The city has {big} people.", "They paid ${grouped} in {year}.",
           "The answer is {whole}.{fraction}."),
    "ru": ("В городе живёт {big} человек.", "Они заплатили {grouped} рублей в {year} году.",
           "Ответ равен {whole},{fraction}."),
}
_PROPER_NAMES = {"Anna", "Анна"}
_GROUP_SEPARATOR = {"en": ",", "ru": " "}  # "3,506,271" and "3 506 271"


@dataclass(frozen=True)
class RobustItem:
    """One hard input: its ``category`` (one of ``CATEGORIES``) and the raw ``text`` to speak."""

    category: str
    text: str


def _words(language: str, key: str) -> list[str]:
    """Vocabulary entries without a dot: "Prof. Miller" would end a long sentence early."""
    return [w for w in _VOCAB[language][key] if "." not in w]


def _clause(rng: random.Random, language: str, place: bool = True) -> str:
    parts = [rng.choice(_words(language, k)) for k in ("name", "verb", "thing")]
    if parts[0] not in _PROPER_NAMES:  # "Пилот" is capitalised only to start a sentence
        parts[0] = parts[0][0].lower() + parts[0][1:]
    if place:
        parts.append(rng.choice(_words(language, "place")))
    return " ".join(parts)


def _long_sentence(rng: random.Random, language: str, target: int) -> str:
    """One sentence of clauses joined by commas and "and", cleaned length closest to ``target``.

    Whole clauses are added while they fit; the last piece is the clause, place, tail or thing
    that lands nearest the target, so the sentence ends on a natural phrase; only when none is
    close enough (training texts of a few words) does it end on the first words of one.
    """

    def cleaned_length(body: str) -> int:
        return len(clean_text(body + ".", language))

    body = ""
    while True:
        joined = (body + rng.choice(_JOINERS[language]) if body else "") + _clause(rng, language)
        if cleaned_length(joined) > target:
            break
        body = joined
    pieces = [_clause(rng, language, place=i % 2 == 0) for i in range(FINAL_CLAUSES)]
    pieces += [w for k in ("place", "tail", "thing") for w in _words(language, k)]
    joiner = rng.choice(_JOINERS[language]) if body else ""
    candidates = ([body] if body else []) + [body + joiner + piece for piece in pieces]
    best = min(candidates, key=lambda text: abs(cleaned_length(text) - target))
    if abs(cleaned_length(best) - target) > LENGTH_TOLERANCE * target:  # a tiny corpus
        words = [piece.split() for piece in pieces]
        candidates = [body + joiner + " ".join(w[:k]) for w in words for k in range(1, len(w))]
        best = min([best, *candidates], key=lambda text: abs(cleaned_length(text) - target))
    return best[0].upper() + best[1:] + "."


def _numbers(rng: random.Random, language: str) -> list[str]:
    grouped = f"{rng.randint(*BIG_NUMBER):,}".replace(",", _GROUP_SEPARATOR[language])
    values = {"big": rng.randint(*BIG_NUMBER), "grouped": grouped, "year": rng.randint(*YEARS),
              "whole": rng.randint(*DECIMAL_WHOLE), "fraction": rng.randint(*DECIMAL_FRACTION)}
    return [template.format(**values) for template in _NUMBERS[language]]


def robustness_set(language: str, train_texts: list[str], seed: int = 0) -> list[RobustItem]:
    """Hard inputs in ``language``, sized against ``train_texts``; same seed, same set.

    ``long_2x``/``long_3x`` are about 2x/3x (within ``LENGTH_TOLERANCE``) the longest cleaned
    training text: the model has never attended that far (best effort when that text is only a
    few words long, under about 30 characters). Raises ``ValueError`` for an unsupported
    language or training texts that are all empty after cleaning.
    """
    check_language(language)
    longest = max((len(clean_text(t, language)) for t in train_texts), default=0)
    if longest == 0:
        raise ValueError("train_texts must hold at least one non-empty text")
    rng = random.Random(f"robustness:{language}:{seed}")
    n = ITEMS_PER_CATEGORY
    items: dict[str, list[str]] = {
        c: [_long_sentence(rng, language, round(f * longest)) for _ in range(n)]
        for c, f in LONG_FACTORS.items()}
    word = rng.choice(_REPEATED[language])
    template, very = _VERY[language]
    phrase = rng.choice(_words(language, "place"))
    items["repeated_words"] = [
        " ".join([word.capitalize()] + [word] * (REPEAT_COUNT - 1)) + "!",
        template.format(" ".join([very] * REPEAT_COUNT)).capitalize(),
        ", ".join([phrase] * (REPEAT_COUNT // 2)).capitalize() + "."]
    items["long_numbers"] = _numbers(rng, language)
    prefix, nouns = _NOUNS[language]
    items["comma_list"] = [
        f"{prefix} {', '.join(rng.sample(nouns.split(), rng.randint(*LIST_WORDS)))}."
        for _ in range(n)]
    asks = rng.sample(_words(language, "q"), n)  # the last one also says where
    wheres = [""] * (n - 1) + [" " + rng.choice(_words(language, "place"))]
    items["question"] = [f"{q} {rng.choice(_words(language, 'thing'))}{where}?"
                         for q, where in zip(asks, wheres, strict=True)]
    items["all_caps"] = [(_clause(rng, language) + ".").upper() for _ in range(n)]
    result = [RobustItem(c, text) for c in CATEGORIES for text in items[c]]
    for item in result:  # a bug here must not reach a model as silently mangled text
        unknown = unknown_characters(clean_text(item.text, language), language)
        if unknown:
            raise AssertionError(f"robustness item has unknown characters {unknown}: {item}")
    return result
