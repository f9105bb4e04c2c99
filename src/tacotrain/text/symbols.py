"""Symbol tables: the alphabet the model's embedding layer is indexed by.

Two tables per language: letters, and with ``text.phonemes`` espeak-ng's IPA (one symbol per
Unicode code point, see ``phonemes.py``). The position of a symbol in these tables IS its
embedding index. Changing the order, inserting or removing a symbol silently invalidates every
trained model and cached text sequence for that language, so append-only changes would still
need a new checkpoint. Treat these tables as part of the checkpoint format.

The phoneme tables hold every code point espeak-ng 1.51 (voices en-us and ru) writes for the
mini-corpus sentences, the robustness set, every letter and letter pair, the numbers 0-2100
spelled out, and ordinary prose (Debian licence texts, Russian message catalogues): 14,000
English and 24,000 Russian cleaned lines (``phonemes.observed_symbols`` lists them), after the
fixes in ``phonemes._ESPEAK_FIXES``. Their order: pad, punctuation (as in the letter tables),
stress and length marks, then the phones in code point order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from types import MappingProxyType

LANGUAGES: tuple[str, ...] = ("en", "ru")

PAD = "_"
"""Padding symbol, index 0. Never produced from text, so a 0 in a batch always means padding."""

STRESS = "+"
"""Russian stress mark, written before the stressed vowel (RUSLAN convention: "з+амок")."""

PUNCTUATION: tuple[str, ...] = (" ", "!", "'", "(", ")", ",", "-", ".", ":", ";", "?", '"')
"""Space and punctuation kept for prosody (pauses, questions); shared by all languages."""

_ENGLISH_LETTERS: tuple[str, ...] = tuple("abcdefghijklmnopqrstuvwxyz")

# Alphabetical order, with ё in its dictionary place after е. ё is its own letter: it is
# pronounced differently from е and must never be folded into it.
_RUSSIAN_LETTERS: tuple[str, ...] = tuple("абвгдеёжзийклмнопрстуфхцчшщъыьэюя")

_TABLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": (PAD, *PUNCTUATION, *_ENGLISH_LETTERS),
        "ru": (PAD, *PUNCTUATION, STRESS, *_RUSSIAN_LETTERS),
    }
)

PRIMARY, SECONDARY, LONG = "ˈ", "ˌ", "ː"
"""IPA primary and secondary stress marks and the length mark: symbols of the phoneme tables."""

_ENGLISH_PHONES = "abdefhijklmnoprstuvwzæðŋɐɑɔəɚɛɜɡɪɹɾʃʊʌʒʔ\u0329θᵻ"  # U+0329: syllabic, as in n̩
_RUSSIAN_PHONES = "abdefijkmnoprstuvxyzŋɑɔɕəɛɡɪɭɵʃʉʌʑʒʲ"  # code point order

_PHONEME_TABLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": (PAD, *PUNCTUATION, PRIMARY, SECONDARY, LONG, *_ENGLISH_PHONES),
        "ru": (PAD, *PUNCTUATION, PRIMARY, SECONDARY, LONG, *_RUSSIAN_PHONES),
    }
)


def check_language(language: str) -> str:
    """Return ``language`` if supported; fail early with the supported list otherwise.

    A typo such as "RU" or "russian" must not fall back to English silently: that would make
    every Cyrillic transcript "unknown" and reject the whole corpus with a confusing reason.
    """
    if language not in _TABLES:
        raise ValueError(f"unsupported language {language!r}; supported: {', '.join(LANGUAGES)}")
    return language


def _table(language: str, phonemes: bool) -> tuple[str, ...]:
    return (_PHONEME_TABLES if phonemes else _TABLES)[check_language(language)]


def symbols_for(language: str, phonemes: bool = False) -> list[str]:
    """Return the ordered symbol list a model of ``language`` ("en" or "ru") reads: letters, or
    with ``phonemes`` (``text.phonemes``) espeak-ng's IPA.

    Index 0 is the pad symbol "_". A fresh list is returned so callers cannot corrupt the
    shared table. The order is fixed: see the module docstring.
    """
    return list(_table(language, phonemes))


@cache
def symbol_ids(language: str, phonemes: bool = False) -> Mapping[str, int]:
    """Read-only symbol -> index map of :func:`symbols_for`, cached because it is used per
    utterance."""
    return MappingProxyType({s: i for i, s in enumerate(_table(language, phonemes))})


def unknown_characters(text: str, language: str) -> list[str]:
    """Sorted unique characters of cleaned ``text`` that ``language`` has no symbol for.

    The pad "_" counts as unknown: it means "no input here" to the model and must never come
    from a transcript.
    """
    ids = symbol_ids(language)
    return sorted({c for c in text if ids.get(c, 0) == 0})


def describe_characters(chars: Iterable[str]) -> str:
    """Readable list for error messages: look-alike and invisible characters need their code
    point (Latin "e" U+0065 vs Cyrillic "е" U+0435) or the report cannot be acted on."""
    return ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars)


def text_to_sequence(text: str, language: str) -> list[int]:
    """Symbol indices of already cleaned ``text``.

    Raises ``ValueError`` naming every unknown character instead of skipping it: a skipped
    character makes the transcript disagree with the audio, which is what breaks alignment.
    """
    ids = symbol_ids(language)
    unknown = unknown_characters(text, language)
    if unknown:
        raise ValueError(
            f"text has characters outside the {language!r} symbol set: "
            f"{describe_characters(unknown)}; text: {text!r}"
        )
    return [ids[c] for c in text]


def sequence_to_text(sequence: Sequence[int], language: str) -> str:
    """Inverse of ``text_to_sequence``. Pad indices (0) are dropped, so a padded batch row
    decodes to its transcript; an index outside the table raises ``ValueError``."""
    return decode(sequence, _table(language, False), f"{language!r} symbol")


def decode(sequence: Sequence[int], table: Sequence[str], what: str) -> str:
    """Symbols of ``sequence`` in ``table`` joined, pad indices (0) dropped; an index outside
    the table raises ``ValueError`` naming ``what`` table it was meant for."""
    out: list[str] = []
    for index in sequence:
        i = int(index)
        if not 0 <= i < len(table):
            raise ValueError(f"index {i} outside 0..{len(table) - 1} of the {what} table")
        if i:
            out.append(table[i])
    return "".join(out)
