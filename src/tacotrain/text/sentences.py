"""Split long text into pieces the model can read: sentences, then clauses, then word runs.

A model trained on clips of a few seconds does not read a page in one go: attention drifts and
the decoder runs into its step cap. ``split_sentences`` cuts raw text (before cleaning) at
sentence ends, and a sentence still longer than ``max_chars`` at ``; : ,`` or, failing that,
between words (nearest the middle, so the pieces come out of similar length). It only ever
cuts between whitespace-separated words: no word is dropped, changed or moved, so
``" ".join(pieces) == " ".join(text.split())``.

A sentence ends after a word ending in ``. ! ? …`` (also runs such as "?!" or "...", and with
closing quotes or brackets after the mark), or at a blank line. It does not end:

* after an abbreviation that is not a sentence end ("Dr.", "Mrs.", "St.", "т.е.", "г.") or a
  single initial ("J.", "А."); "etc." and "т.д." end one only when a capital follows;
* when the next word starts with a lower-case letter ("Really?" she asked / «Стой!» — сказал
  он): the sentence goes on;
* inside a number ("3.5"), since the mark is not at the end of the word.
"""

from __future__ import annotations

import re

from .symbols import check_language

_ENDS = ".!?\u2026"
_CLAUSE_ENDS = ";:,"
_CLOSERS = "\"'\u00bb\u201d\u2019)]"
_OPENERS = "\"'\u00ab\u201c\u201e\u2018([-\u2013\u2014"

# Abbreviations (lower case, with their dots) after which a sentence never ends: titles before
# a name, and Latin/Russian phrases that sit inside a sentence.
_NEVER_ENDS: dict[str, frozenset[str]] = {
    "en": frozenset("mr. mrs. ms. dr. drs. prof. st. lt. capt. col. gen. maj. sgt. rev. hon. "
                    "jr. sr. mt. ft. vs. e.g. i.e. cf. approx. fig.".split()),
    "ru": frozenset("т.е. г. гг. ул. д. им. проф. акад. см. стр. рис. т.к. "
                    "тыс. млн. млрд. руб. коп. н.э.".split()),
}
# Abbreviations that often end a sentence too: they end one when a capital letter follows.
_MAY_END: dict[str, frozenset[str]] = {
    "en": frozenset("etc. ltd. co. inc.".split()),
    "ru": frozenset("т.д. т.п. др. пр.".split()),
}
_INITIAL_RE = re.compile(r"^[^\W\d_]\.$")  # one letter and a dot: an initial
_WORD_RE = re.compile(r"\S+")


def _core(word: str) -> str:
    """The word without leading opening and trailing closing quotes/brackets."""
    return word.lstrip(_OPENERS).rstrip(_CLOSERS)


def _first_letter(words: list[str]) -> str:
    """The first letter or digit of the first word that has one ("" when none does)."""
    for w in words:
        for ch in w:
            if ch.isalnum():
                return ch
    return ""


def _ends_sentence(word: str, following: list[str], language: str) -> bool:
    core = _core(word)
    if not core or core[-1] not in _ENDS:
        return False
    nxt = _first_letter(following)
    if nxt.islower():
        return False  # the sentence goes on, or the dot belonged to an abbreviation
    key = core.lower()
    if core[-1] == "." and not core.endswith(".."):
        if key in _NEVER_ENDS[language] or _INITIAL_RE.match(core):
            return False
        if key in _MAY_END[language]:
            return nxt.isupper()
    return True


def abbreviation_splits(piece: str, language: str) -> list[str]:
    """``piece`` cut after each abbreviation that ends a name and that a capitalised word
    follows ("on Baker St. The teacher", "John Smith Jr. Then": it may end the sentence or
    not; a title before a name, "with Dr. Smith", does not). The text alone cannot tell; a
    caller that hears the audio can (a pause there or not)."""
    words = piece.split()
    out: list[list[str]] = [[]]
    for i, word in enumerate(words):
        out[-1].append(word)
        core, before = _core(word), _core(words[i - 1]) if i else ""
        if 0 < i < len(words) - 1 and core.lower() in _NEVER_ENDS[language] \
                and before[:1].isupper() and before.isalpha() \
                and _first_letter(words[i + 1:]).isupper():
            out.append([])
    return [" ".join(w) for w in out if w]


def _sentences(text: str, language: str) -> list[list[str]]:
    """Words grouped into sentences."""
    matches = list(_WORD_RE.finditer(text))
    words = [m.group() for m in matches]
    out: list[list[str]] = []
    current: list[str] = []
    for i, word in enumerate(words):
        current.append(word)
        last = i + 1 == len(words)
        blank_line = not last and text.count("\n", matches[i].end(), matches[i + 1].start()) > 1
        if last or blank_line or _ends_sentence(word, words[i + 1:i + 4], language):
            out.append(current)
            current = []
    return out


def _length(words: list[str]) -> int:
    return sum(len(w) for w in words) + max(len(words) - 1, 0)


def _fit(words: list[str], max_chars: int) -> list[list[str]]:
    """Cut a sentence into runs of at most ``max_chars`` characters, halving it until every run
    fits: at the clause mark nearest its middle, else at the space nearest its middle, so the
    runs come out of similar length (no one-word leftovers). A single longer word stays whole."""
    if len(words) == 1 or _length(words) <= max_chars:
        return [words]
    ends, n = [], -1  # ends[k - 1]: length of the first k words joined
    for w in words[:-1]:
        n += len(w) + 1
        ends.append(n)
    clause = [k for k in range(1, len(words)) if _core(words[k - 1])[-1:] in tuple(_CLAUSE_ENDS)]
    half = _length(words) / 2
    k = min(clause or range(1, len(words)), key=lambda k: abs(ends[k - 1] - half))
    return _fit(words[:k], max_chars) + _fit(words[k:], max_chars)


def split_sentences(text: str, language: str, max_chars: int) -> list[str]:
    """Raw ``text`` -> pieces of at most ``max_chars`` characters (a single longer word is
    kept whole), in order, each ending at a sentence end, a clause mark or a word boundary.

    A piece without a letter or digit ("...", "—") is joined to the piece before it (or after
    it, at the start), so every piece has something to say. Empty text gives ``[]``.
    """
    check_language(language)
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    pieces: list[list[str]] = []
    for sentence in _sentences(text, language):
        for run in _fit(sentence, max_chars):
            if pieces and not _first_letter(pieces[-1]):
                pieces[-1].extend(run)  # a wordless piece at the start joins the next one
            elif pieces and not _first_letter(run):
                pieces[-1].extend(run)
            else:
                pieces.append(run)
    return [" ".join(p) for p in pieces]
