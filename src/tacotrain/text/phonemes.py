"""Phoneme input: cleaned text -> IPA from espeak-ng -> indices in the phoneme symbol tables.

With ``text.phonemes: true`` the model reads espeak-ng's IPA instead of letters. The rules:

- Punctuation survives. The text is cut at the punctuation symbols, the pieces between them are
  phonemised, and the punctuation is put back in place, so pauses and questions reach the model.
  An apostrophe between two letters ("don't", "knife's") is spelling, not punctuation: it stays
  in the word espeak-ng reads and does not appear in the output.
- Russian stress marks are obeyed. Where the text writes "+" before a vowel ("з+амок"), that
  word's primary stress mark "ˈ" is moved to that vowel (espeak-ng writes "ˈ" right before the
  stressed vowel, so the mark goes right before the marked vowel's nucleus, counting vowels in
  order). Vowel qualities stay espeak-ng's. Words without "+" keep espeak-ng's own stress.
- One symbol per Unicode code point. espeak-ng is run without tie bars, so an affricate is two
  symbols ("tʃ" = "t", "ʃ"); a combining mark (syllabic U+0329 in "n̩") is its own symbol; so are
  the stress marks "ˈ" "ˌ" and the length mark "ː".

The phoneme tables (``symbols_for(language, phonemes=True)``, in ``symbols.py``) hold every code
point espeak-ng 1.51 writes for a broad sample of text (:func:`observed_symbols`), after two
Russian phonemes espeak-ng writes by their internal names are mapped to IPA
(``_ESPEAK_FIXES``). An espeak-ng that writes anything else is refused with a ``PhonemeError``
(a ``ValueError``) naming the symbol and the text, so a changed espeak-ng is detected, never
mangled.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from types import MappingProxyType

from tqdm import tqdm

from .symbols import (
    PRIMARY,
    PUNCTUATION,
    SECONDARY,
    STRESS,
    check_language,
    decode,
    describe_characters,
    symbol_ids,
    symbols_for,
    text_to_sequence,
)

VOICES: Mapping[str, str] = MappingProxyType({"en": "en-us", "ru": "ru"})
"""espeak-ng voice per language (the same voices speak the mini corpus)."""

_PUNCTUATION = frozenset(PUNCTUATION) - {" "}

# A piece boundary: a punctuation symbol, or an apostrophe that is not between two letters.
_SPLIT_RE = re.compile(r"""([!(),\-.:;?"]|'(?![^\W\d_])|(?<![^\W\d_])')""")
_RU_VOWEL_LETTERS = frozenset("аеёиоуыэюя")
_IPA_VOWELS = frozenset("aeiouyæɐɑɒɔəɘɚɛɜɞɤɨɪɵɶʉʊʌʏᵻøœ")  # nuclei, for place_stress
# espeak-ng 1.51 writes two Russian phonemes by their internal names instead of IPA: the
# fronted u after a soft consonant ("ключ" -> kɭʲu"tʃʲ) and the soft r ("дверь" -> dvʲˈerɪ^).
# Left alone, '"' would read as a quotation mark and "ɪ^" as an extra vowel.
_ESPEAK_FIXES: Mapping[str, tuple[tuple[str, str], ...]] = MappingProxyType(
    {"en": (), "ru": (('u"', "ʉ"), ("rɪ^", "rʲ"))})
BATCH_CHUNKS = 64
"""Pieces of text per espeak-ng process in :func:`phonemize_many`."""


class PhonemeError(ValueError):
    """espeak-ng is missing, failed, or wrote something the phoneme table does not hold."""


def phonemes_to_sequence(phonemes: str, language: str) -> list[int]:
    """Symbol indices of a phoneme string; a symbol outside the table raises ``PhonemeError``."""
    ids = symbol_ids(language, phonemes=True)
    unknown = sorted({c for c in phonemes if ids.get(c, 0) == 0})
    if unknown:
        raise PhonemeError(
            f"phonemes outside the {language!r} phoneme table: {describe_characters(unknown)} "
            f"in {phonemes!r} (made by another espeak-ng or tacotrain version? re-run prepare)")
    return [ids[c] for c in phonemes]


def sequence_to_phonemes(sequence: Sequence[int], language: str) -> str:
    """Inverse of :func:`phonemes_to_sequence`; pad indices (0) are dropped."""
    return decode(sequence, symbols_for(language, phonemes=True), f"{language!r} phoneme")


def attached_marks(ids: Sequence[int], symbols: Sequence[str]) -> list[bool]:
    """For each token of ``ids`` (indices into ``symbols``), whether it is a mark that belongs
    to the sound before it rather than a sound of its own: a modifier letter (Unicode category
    Lm: the stress marks "ˈ" "ˌ", the length mark "ː", palatalisation "ʲ") or a combining mark
    (Mn). espeak-ng writes "ˈ" between an onset consonant and its vowel ("ʃˈʊɡɚ"), and a
    reading voice attends that mark while it says the consonant: the verdict counts such a
    mark and the token before it as one unit to be read. Never true for the first token."""
    out = []
    for k, i in enumerate(ids):
        sym = symbols[int(i)]
        out.append(k > 0 and len(sym) == 1 and unicodedata.category(sym) in ("Lm", "Mn"))
    return out


def encode_text(cleaned_text: str, language: str, phonemes: bool) -> list[int]:
    """Cleaned text -> the symbol ids a model reads: THE way text becomes model input outside
    prepared data (whose items carry their cached phonemes), so a phoneme model is fed
    phonemes everywhere. Raises ``ValueError`` (``PhonemeError`` for phonemes)."""
    if phonemes:
        return phonemes_to_sequence(phonemize(cleaned_text, language), language)
    return text_to_sequence(cleaned_text, language)


# ---------------------------------------------------------------------------------------------
# espeak-ng


def espeak_executable() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise PhonemeError("espeak-ng is not installed, but text.phonemes needs it: "
                           "install the Debian package espeak-ng (apt-get install espeak-ng)")
    return exe


def _run_espeak(chunks: Sequence[str], language: str) -> list[str]:
    """IPA of each chunk (punctuation-free text), from one espeak-ng process.

    Each chunk is written as its own sentence ("chunk." on its own line), and espeak-ng writes
    one line per sentence. Should it split or join lines anyway (it breaks clauses longer than
    a few hundred characters), the chunks are run one process each.
    """
    exe = espeak_executable()
    voice = VOICES[language]

    def run(text: str) -> list[str]:
        proc = subprocess.run([exe, "-q", "--ipa", "-b", "1", "-v", voice],
                              input=text.encode("utf-8"), capture_output=True, check=False)
        if proc.returncode != 0:
            raise PhonemeError(f"espeak-ng failed (exit {proc.returncode}) on {text[:200]!r}: "
                               f"{proc.stderr.decode('utf-8', 'replace')[-300:]}")
        lines = proc.stdout.decode("utf-8").splitlines()
        return [" ".join(line.split()) for line in lines if line.strip()]

    lines = run("".join(f"{c}.\n" for c in chunks))
    if len(lines) != len(chunks):
        lines = [" ".join(run(f"{c}.\n")) for c in chunks]
    for old, new in _ESPEAK_FIXES[language]:
        lines = [line.replace(old, new) for line in lines]
    return lines


def _stressed_vowels(word: str) -> tuple[str, list[int]]:
    """``word`` without "+" and the indices (among its vowel letters) of the marked vowels."""
    plain, marks, vowel = [], [], 0
    for i, c in enumerate(word):
        if c == STRESS:
            if i + 1 >= len(word) or word[i + 1] not in _RU_VOWEL_LETTERS:
                raise PhonemeError(f"stress mark '+' is not before a vowel in {word!r}")
            marks.append(vowel)
            continue
        plain.append(c)
        vowel += c in _RU_VOWEL_LETTERS
    return "".join(plain), marks


def place_stress(word: str, ipa: str) -> str:
    """Move the primary stress of ``ipa`` (espeak-ng's reading of ``word`` without "+") to the
    vowels ``word`` marks with "+". Each vowel letter must be one IPA vowel, else we cannot tell
    where the mark goes and raise ``PhonemeError`` rather than guess."""
    plain, marks = _stressed_vowels(word)
    if not marks:
        return ipa
    bare = ipa.replace(PRIMARY, "")
    nuclei = [i for i, c in enumerate(bare) if c in _IPA_VOWELS]
    letters = sum(c in _RU_VOWEL_LETTERS for c in plain)
    if len(nuclei) != letters:
        raise PhonemeError(f"cannot place the stress of {word!r}: espeak-ng reads it as {ipa!r} "
                           f"with {len(nuclei)} vowel(s) for {letters} vowel letter(s)")
    out = list(bare)
    for k in sorted(marks, reverse=True):
        at = nuclei[k]
        if at > 0 and out[at - 1] == SECONDARY:
            at -= 1
            del out[at]
        out.insert(at, PRIMARY)
    return "".join(out)


def _pieces(text: str) -> list[str]:
    """Text cut into alternating [words, punctuation, words, ...]; words may be empty."""
    return _SPLIT_RE.split(text)


def _chunk_text(piece: str) -> str:
    return " ".join(piece.replace(STRESS, "").split())


def _check_chunk(chunk: str, ipa: str, language: str) -> str:
    """espeak-ng's output for one chunk may hold phone symbols and spaces only: a stray '"' or
    "(en)" would otherwise pass as punctuation."""
    table = symbol_ids(language, phonemes=True)
    bad = sorted({c for c in ipa if c != " " and (c in _PUNCTUATION or table.get(c, 0) == 0)})
    if not ipa:
        raise PhonemeError(f"espeak-ng wrote no phonemes for {chunk!r}")
    if bad:
        raise PhonemeError(
            f"espeak-ng wrote symbols outside the {language!r} phoneme table: "
            f"{describe_characters(bad)} in {ipa!r} for {chunk!r} (a different espeak-ng "
            "version? the table in tacotrain/text/symbols.py must then be extended, and "
            "models retrained)")
    return ipa


def _assemble(text: str, ipa_of: Mapping[str, str], language: str) -> str:
    """Put the phonemised pieces of ``text`` and its punctuation back together."""
    out = []
    for k, piece in enumerate(_pieces(text)):
        if k % 2:  # punctuation
            out.append(piece)
            continue
        words = piece.split()
        if not words:
            out.append(" " if piece else "")
            continue
        if STRESS in piece:
            for word in words:
                _stressed_vowels(word)  # a misplaced "+" fails here, naming the word
        chunk = _chunk_text(piece)
        ipa = _check_chunk(chunk, ipa_of[chunk], language)
        if STRESS in piece:
            ipa_words = ipa.split()
            if len(ipa_words) != len(words):
                raise PhonemeError(
                    f"cannot place the stress marks of {piece.strip()!r}: espeak-ng reads its "
                    f"{len(words)} word(s) as {len(ipa_words)}: {ipa!r}")
            ipa = " ".join(place_stress(w, p) for w, p in zip(words, ipa_words, strict=True))
        lead = " " if piece[:1].isspace() else ""
        tail = " " if piece[-1:].isspace() else ""
        out.append(lead + ipa + tail)
    return "".join(out)


def _chunks(texts: Iterable[str]) -> list[str]:
    return sorted({_chunk_text(p) for t in texts for p in _pieces(t)[::2]} - {""})


def _espeak_all(chunks: list[str], language: str, workers: int,
                progress: bool) -> dict[str, str]:
    batches = [chunks[i:i + BATCH_CHUNKS] for i in range(0, len(chunks), BATCH_CHUNKS)]
    ipa_of: dict[str, str] = {}
    bar = tqdm(total=len(chunks), desc="phonemising", unit="piece",
               disable=not progress or len(batches) < 2)
    try:
        with ThreadPoolExecutor(max(1, min(workers, len(batches)))) as pool:
            for batch, lines in zip(batches, pool.map(lambda b: _run_espeak(b, language),
                                                      batches), strict=True):
                ipa_of.update(zip(batch, lines, strict=True))
                bar.update(len(batch))
    finally:
        bar.close()
    return ipa_of


def phonemize_each(texts: Iterable[str], language: str, workers: int = 4,
                   progress: bool = False) -> list[str | PhonemeError]:
    """IPA phoneme string of each cleaned text, or the :class:`PhonemeError` that text gives.

    For callers that must keep going past a bad item (``prepare`` rejects it with the reason).
    The distinct word pieces of all texts are phonemised ``BATCH_CHUNKS`` per espeak-ng
    process, ``workers`` processes at a time. espeak-ng missing or failing still raises.
    """
    check_language(language)
    texts = list(texts)
    ipa_of = _espeak_all(_chunks(texts), language, workers, progress)
    results: list[str | PhonemeError] = []
    for text in texts:
        try:
            results.append(_assemble(text, ipa_of, language))
        except PhonemeError as exc:
            results.append(exc)
    return results


def phonemize_many(texts: Iterable[str], language: str, workers: int = 4,
                   progress: bool = False) -> list[str]:
    """IPA phoneme strings of cleaned ``texts``, in order; the first bad text raises."""
    results = phonemize_each(texts, language, workers, progress)
    for r in results:
        if isinstance(r, PhonemeError):
            raise r
    return results  # type: ignore[return-value]


@lru_cache(maxsize=4096)
def phonemize(cleaned_text: str, language: str) -> str:
    """IPA phonemes of one cleaned text, as ``prepare`` makes them for a whole corpus (cached
    per process: synthesis and evaluation repeat sentences). Raises :class:`PhonemeError`."""
    return phonemize_many([cleaned_text], language)[0]


def observed_symbols(texts: Iterable[str], language: str, workers: int = 4) -> set[str]:
    """Every code point espeak-ng writes for ``texts``, in the table or not: how the tables were
    built, and how a new espeak-ng version can be checked against them."""
    check_language(language)
    ipa_of = _espeak_all(_chunks(texts), language, workers, progress=False)
    return {c for ipa in ipa_of.values() for c in ipa}
