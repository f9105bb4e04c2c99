"""Text normalisation: raw transcript -> the form the model is trained on.

The rule that matters most: a character this module cannot map into the symbol table is LEFT
IN the text. ``unknown_characters`` then reports it and ``prepare`` rejects the clip with the
reason. Deleting is never a fallback: a cleaner that deletes what it does not know deletes a
whole alphabet without a word (every Cyrillic letter, under an ASCII whitelist).

The only characters removed are invisible formatting marks (zero-width space, byte-order mark,
soft hyphen) that carry no sound and no punctuation.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable

from .numbers import expand_numbers
from .symbols import check_language

logger = logging.getLogger(__name__)

# Typographic punctuation -> its plain member of the symbol table. Applied to all languages.
_PUNCTUATION_MAP: dict[str, str] = {
    # Hyphens and the minus sign join: "well-known", "−5". Dashes are pauses between words,
    # so they get spaces: "people—roughly" must not become the word "people-roughly".
    **dict.fromkeys("\u2010\u2011\u2212", "-"),
    **dict.fromkeys("\u2012\u2013\u2014\u2015", " - "),
    **dict.fromkeys("\u00ab\u00bb\u201c\u201d\u201e\u201f\u2033", '"'),  # « » “ ” „ ‟ ″
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u02bc\u2032`\u00b4", "'"),  # ‘ ’ ‚ ‛ ʼ ′ ` ´
    "\u2026": "...",  # ellipsis
    # Odd spaces: no-break, en/em/thin/hair spaces, narrow no-break, ideographic, tab, newline.
    **dict.fromkeys(
        "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
        "\u2009\u200a\u202f\u205f\u3000\t\n\r\v\f",
        " ",
    ),
    # Invisible formatting marks: nothing to say and nothing to keep.
    **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff\u00ad", ""),
}
_PUNCTUATION_TABLE = str.maketrans(_PUNCTUATION_MAP)

_RU_VOWELS = "аеёиоуыэюяАЕЁИОУЫЭЮЯ"
_COMBINING_ACUTE = "\u0301"
_RU_ACUTE_RE = re.compile(f"([{_RU_VOWELS}]){_COMBINING_ACUTE}")

# Abbreviation (without its dot) -> expansion. Only matched with the trailing dot, as a whole
# word, case-insensitively: "Dr." is "doctor", but "dr" inside "drive" or a bare "St" is left.
_EN_ABBREVIATIONS: dict[str, str] = {
    "mrs": "missus",
    "mr": "mister",
    "ms": "miss",
    "drs": "doctors",
    "dr": "doctor",
    "st": "saint",
    "co": "company",
    "jr": "junior",
    "sr": "senior",
    "maj": "major",
    "gen": "general",
    "rev": "reverend",
    "lt": "lieutenant",
    "hon": "honorable",
    "sgt": "sergeant",
    "capt": "captain",
    "esq": "esquire",
    "ltd": "limited",
    "col": "colonel",
    "ft": "fort",
    "vs": "versus",
    "etc": "et cetera",
    "e.g": "for example",
    "i.e": "that is",
}
_EN_ABBREVIATION_RE = re.compile(
    r"\b("
    + "|".join(re.escape(a) for a in sorted(_EN_ABBREVIATIONS, key=len, reverse=True))
    + r")\.",
    re.IGNORECASE,
)

# Latin letters NFKD cannot reduce to ASCII but that have an obvious spelling.
_LATIN_LIGATURES: dict[str, str] = {
    "ß": "ss",
    "æ": "ae",
    "Æ": "AE",
    "œ": "oe",
    "Œ": "OE",
    "ø": "o",
    "Ø": "O",
    "đ": "d",
    "Đ": "D",
    "ł": "l",
    "Ł": "L",
    "ı": "i",
}

_WHITESPACE_RE = re.compile(r"\s+")


def map_punctuation(text: str) -> str:
    """Map typographic dashes, quotes, ellipses and spaces to the symbol-table forms."""
    return text.translate(_PUNCTUATION_TABLE)


def convert_combining_stress(text: str) -> str:
    """Turn "а́" (vowel + U+0301) into "+а": RUSLAN writes "+" before the stressed vowel.

    An acute accent after anything other than a Russian vowel is left alone, so it surfaces as
    an unknown character instead of becoming a stress mark in the wrong place.
    """
    return _RU_ACUTE_RE.sub(r"+\1", text)


def _follows_name(match: re.Match[str]) -> bool:
    """True when the abbreviation comes right after a capitalised word ("Baker St.")."""
    before = match.string[: match.start()].rstrip()
    word = before.split()[-1] if before.split() else ""
    return word[:1].isupper() and word.isalpha()


def expand_abbreviations(text: str) -> str:
    """Expand English titles and Latin abbreviations ("Dr." -> "doctor", "e.g." -> "for example").

    The dot is part of the abbreviation and is consumed; but when the abbreviation ends the
    text ("... and so on, etc."), the dot was also the full stop, so it is kept.
    """

    def replace(match: re.Match[str]) -> str:
        key = match.group(1).lower()
        expansion = _EN_ABBREVIATIONS[key]
        if key == "st" and _follows_name(match):
            expansion = "street"  # "Baker St." is a street; "St. Paul" stays a saint
        at_end = not match.string[match.end() :].strip()
        return expansion + "." if at_end else expansion

    return _EN_ABBREVIATION_RE.sub(replace, text)


def strip_latin_diacritics(text: str) -> str:
    """ "café" -> "cafe": English corpora borrow accented words the model should still read.

    Only Latin letters are touched; a letter that does not reduce to ASCII is kept as it is, so
    a Cyrillic letter in an English transcript stays visible to ``unknown_characters``.
    """
    out: list[str] = []
    for char in text:
        if char.isascii() or not char.isalpha():
            out.append(char)
        elif char in _LATIN_LIGATURES:
            out.append(_LATIN_LIGATURES[char])
        elif unicodedata.name(char, "").startswith("LATIN "):
            base = "".join(
                c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
            )
            out.append(base if base.isascii() and base.isalpha() else char)
        else:
            out.append(char)
    return "".join(out)


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE_RE.sub(" ", text).strip()


def clean_text(text: str, language: str) -> str:
    """Normalise a raw transcript for ``language`` ("en" or "ru").

    Order matters: NFC first, so "е" + U+0308 becomes "ё" and an accent sits on one letter;
    punctuation mapping before numbers, so "−5" (U+2212) reads as negative and a no-break
    space groups Russian thousands; lowercase last, which is safe because "Ё".lower() is "ё"
    (never "е"). Unknown characters are kept (see the module docstring); check the result
    with ``unknown_characters``.
    """
    check_language(language)
    text = unicodedata.normalize("NFC", text)
    text = map_punctuation(text)
    if language == "ru":
        text = convert_combining_stress(text)
    else:
        text = expand_abbreviations(text)
        text = strip_latin_diacritics(text)
    text = expand_numbers(text, language)
    text = text.lower()
    return collapse_whitespace(text)


def detect_language(texts: str | Iterable[str]) -> str:
    """Guess "ru" or "en" for one transcript or a whole corpus by counting letters.

    "ru" when Cyrillic letters outnumber Latin ones, otherwise "en" (also for a tie or no
    letters at all). Counting letters rather than checking "any Cyrillic" keeps a Russian
    corpus with a few Latin brand names Russian, and vice versa.
    """
    if isinstance(texts, str):
        texts = (texts,)
    cyrillic = latin = 0
    for text in texts:
        for char in text:
            if not char.isalpha():
                continue
            name = unicodedata.name(char, "")
            if name.startswith("CYRILLIC "):
                cyrillic += 1
            elif name.startswith("LATIN "):
                latin += 1
    language = "ru" if cyrillic > latin else "en"
    logger.debug("detected %s: %d Cyrillic vs %d Latin letters", language, cyrillic, latin)
    return language


def text_key(text: str) -> str:
    """A sentence's identity: lower case, letters and digits only, so that the same sentence
    with other punctuation, case or spacing is one sentence (the train/validation
    split groups by it; the content test does not count one as another sentence)."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())
