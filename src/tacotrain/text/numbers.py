"""Spell out numbers as words, because the model only ever sees letters.

Digits are not in any symbol table: a transcript that still holds "1984" after cleaning is
rejected by ``prepare``. Expanding them here keeps those clips in the corpus, and reading
them the way a speaker would (a year, money, an ordinal) keeps text and audio in agreement.

Each pattern has one small function and the passes run in a fixed order, most specific first
(money before percent before ordinals before decimals before grouped before plain integers).
Every pass replaces digits with words, so a later pass can never re-read an earlier result.

Scope and known limits:

* English: cardinals, negatives, decimals ("3.14" -> "three point one four"), thousands
  separators ("1,000,000"), ordinals ("1st", "22nd"), money ("$5.50", "£3", "$2 million"),
  percent, years 1100-1999 ("1984" -> "nineteen eighty-four") and their decades ("1980s").
  A bare 4-digit number in 1100-1999 is always read as a year ("1500 men" reads "fifteen
  hundred men", which is still correct speech); 2000 and later read as cardinals.
* Russian: cardinals, negatives, comma decimals ("3,14" -> "три целых четырнадцать сотых"),
  thousands groups separated by spaces ("1 000 000", also no-break and thin spaces), percent
  with number agreement of "процент", and years before a form of "год": an ordinal in the
  noun's case ("в 2024 году" -> "в две тысячи двадцать четвёртом году", "с 1991 года" -> "с
  тысяча девятьсот девяносто первого года"). Other numbers are in the nominative masculine
  form num2words gives: case and gender agreement with other nouns is out of scope. Russian
  ordinals ("2-й") are not expanded.
  A group like "в 5 100 случаях" is read as 5100: spaces are ambiguous in Russian.
* Very long digit strings (more than ``MAX_CARDINAL_DIGITS``) are read digit by digit: they
  are identifiers or phone numbers, not quantities.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from decimal import Decimal

from num2words import num2words

from .symbols import check_language

logger = logging.getLogger(__name__)

MAX_CARDINAL_DIGITS = 15
"""Longer integers are read digit by digit (num2words has no words past its largest scale)."""

_MAX_RU_FRACTION_DIGITS = 6
"""Russian fractions longer than millionths are read digit by digit after "запятая": num2words
mis-declines the larger fraction names ("одна миллион ... десятимиллионных")."""

# A minus sign only when "-" does not follow a word character or another hyphen: "-5" and
# "(-5)" are negative, "5-3" and "COVID-19" are a range and a name.
_SIGN = r"(?:(?<![\w-])(?P<sign>-))?"
# Digits never continue a longer run of digits to their left.
_START = r"(?<![0-9])"
_EN_INT = r"[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+"
_RU_GROUP_SPACES = " \u00a0\u202f\u2009"  # space, no-break, narrow no-break, thin
_RU_GROUP_SEP = f"[{_RU_GROUP_SPACES}]"
_RU_INT = rf"[0-9]{{1,3}}(?:{_RU_GROUP_SEP}[0-9]{{3}})+(?![0-9])|[0-9]+"

_MINUS = {"en": "minus", "ru": "минус"}
_DIGIT_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "ru": ("ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"),
}


def _digits(digits: str, language: str) -> str:
    """Read a digit string one digit at a time ("0042" -> "zero zero four two")."""
    return " ".join(_DIGIT_WORDS[language][int(d)] for d in digits)


def _plain_digits(number: str) -> str:
    """Drop thousands separators (commas in English, spaces in Russian)."""
    return re.sub(f"[,{_RU_GROUP_SPACES}]", "", number)


def _words(number: int | Decimal, language: str, to: str = "cardinal") -> str:
    """num2words, in American style for English: LJSpeech-style corpora are read by American
    speakers, who say "one hundred one" (num2words gives "one hundred and one") and make no
    pause inside a number (num2words gives "one thousand, nine hundred")."""
    words = num2words(number, lang=language, to=to)
    if language == "en":
        words = words.replace(",", "").replace(" and ", " ")
    return words


def _cardinal(digits: str, language: str) -> str:
    """Cardinal words for a non-negative digit string, or digit-by-digit when too long."""
    digits = _plain_digits(digits)
    if len(digits.lstrip("0")) > MAX_CARDINAL_DIGITS:
        return _digits(digits, language)
    try:
        return _words(int(digits), language)
    except Exception:  # num2words raises assorted types (OverflowError, KeyError) at its limits
        logger.debug("num2words failed on %r (%s); reading digit by digit", digits, language)
        return _digits(digits, language)


def _signed(sign: str | None, words: str, language: str) -> str:
    return f"{_MINUS[language]} {words}" if sign else words


def _decimal(integer: str, fraction: str, language: str) -> str:
    """Words for integer.fraction: "point" + digits in English, fraction names in Russian."""
    if language == "en":
        return f"{_cardinal(integer, 'en')} point {_digits(fraction, 'en')}"
    if len(fraction) <= _MAX_RU_FRACTION_DIGITS:
        try:
            return _words(Decimal(f"{_plain_digits(integer)}.{fraction}"), "ru")
        except Exception:  # fall through to the digit reading below
            logger.debug("num2words failed on %s,%s (ru)", integer, fraction)
    return f"{_cardinal(integer, 'ru')} запятая {_digits(fraction, 'ru')}"


def _plural(n: int, one: str, few: str, many: str) -> str:
    """English-style "one"/"other" is not enough for Russian: pick among the three forms."""
    if n % 100 in range(11, 15):
        return many
    if n % 10 == 1:
        return one
    if n % 10 in (2, 3, 4):
        return few
    return many


# --- English passes -------------------------------------------------------------------------

_EN_MONEY_RE = re.compile(
    rf"{_SIGN}(?P<cur>[$£])(?P<int>{_EN_INT})(?:\.(?P<frac>[0-9]+))?"
    r"(?:\s+(?P<scale>thousand|million|billion|trillion)\b)?",
    re.IGNORECASE,
)
_CURRENCIES = {  # symbol -> (unit, units, subunit, subunits)
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
}


def _en_money(match: re.Match[str]) -> str:
    unit, units, sub, subs = _CURRENCIES[match["cur"]]
    integer, fraction, scale = match["int"], match["frac"], match["scale"]
    if scale:  # "$2.5 million" -> "two point five million dollars"
        amount = _decimal(integer, fraction, "en") if fraction else _cardinal(integer, "en")
        return _signed(match["sign"], f"{amount} {scale.lower()} {units}", "en")
    if fraction is not None and len(fraction) > 2:  # not a price: "$1.005" -> "... point ..."
        return _signed(match["sign"], f"{_decimal(integer, fraction, 'en')} {units}", "en")
    whole = int(_plain_digits(integer))
    cents = int(fraction.ljust(2, "0")) if fraction else 0
    parts = []
    if whole or not cents:
        parts.append(f"{_cardinal(integer, 'en')} {unit if whole == 1 else units}")
    if cents:
        parts.append(f"{_words(cents, 'en')} {sub if cents == 1 else subs}")
    return _signed(match["sign"], ", ".join(parts), "en")


_EN_PERCENT_RE = re.compile(rf"{_SIGN}{_START}(?P<int>{_EN_INT})(?:\.(?P<frac>[0-9]+))?\s?%")


def _en_percent(match: re.Match[str]) -> str:
    integer, fraction = match["int"], match["frac"]
    amount = _decimal(integer, fraction, "en") if fraction else _cardinal(integer, "en")
    return _signed(match["sign"], f"{amount} percent", "en")


_EN_ORDINAL_RE = re.compile(rf"{_START}(?P<int>{_EN_INT})(?P<suffix>st|nd|rd|th)\b", re.IGNORECASE)


def _en_ordinal(match: re.Match[str]) -> str:
    return _words(int(_plain_digits(match["int"])), "en", to="ordinal")


_EN_DECADE_RE = re.compile(rf"{_START}(?P<year>1[1-9][0-9]0)s\b")


def _en_decade(match: re.Match[str]) -> str:
    """ "1980s" -> "nineteen eighties", "1900s" -> "nineteen hundreds"."""
    words = _words(int(match["year"]), "en", to="year")
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


_EN_DECIMAL_RE = re.compile(rf"{_SIGN}{_START}(?P<int>{_EN_INT})\.(?P<frac>[0-9]+)")


def _en_decimal(match: re.Match[str]) -> str:
    return _signed(match["sign"], _decimal(match["int"], match["frac"], "en"), "en")


_EN_INTEGER_RE = re.compile(rf"{_SIGN}{_START}(?P<int>{_EN_INT})")


def _en_integer(match: re.Match[str]) -> str:
    """Cardinal, except that an unsigned 4-digit 1100-1999 is a year."""
    integer = match["int"]
    if not match["sign"] and re.fullmatch(r"1[1-9][0-9]{2}", integer):
        return _words(int(integer), "en", to="year")
    return _signed(match["sign"], _cardinal(integer, "en"), "en")


# --- Russian passes -------------------------------------------------------------------------

_RU_PERCENT_RE = re.compile(rf"{_SIGN}{_START}(?P<int>{_RU_INT})(?:,(?P<frac>[0-9]+))?\s?%")


def _ru_percent(match: re.Match[str]) -> str:
    integer, fraction = match["int"], match["frac"]
    if fraction:  # "2,5 процента": a fraction always takes the genitive singular
        return _signed(match["sign"], f"{_decimal(integer, fraction, 'ru')} процента", "ru")
    noun = _plural(int(_plain_digits(integer)), "процент", "процента", "процентов")
    return _signed(match["sign"], f"{_cardinal(integer, 'ru')} {noun}", "ru")


# a year before a form of "год" is an ordinal in the noun's case: "году" is prepositional
# ("в 1991 году") except after "к" (dative: "к 2030 году")
# (not the last group of "1 000 году")
_RU_YEAR_RE = re.compile(rf"(?<![0-9])(?<![0-9]{_RU_GROUP_SEP})(?P<prep>\bк\s+)?"
                         r"(?P<year>[0-9]{1,4})(?P<gap>\s+)"
                         r"(?P<noun>г\+?о\+?д(?:\+?(?:у|а|ом|е))?\+?)(?![\w+])", re.IGNORECASE)
_RU_YEAR_CASE = {"году": "p", "года": "g", "годом": "i", "годе": "p", "год": "n"}


def _ru_year(match: re.Match[str]) -> str:
    noun = match["noun"]
    case = _RU_YEAR_CASE[noun.replace("+", "").lower()]  # a stress mark may sit in the noun
    if match["prep"] and case == "p":
        case = "d"
    words = num2words(int(match["year"]), lang="ru", to="ordinal", case=case)
    return f"{match['prep'] or ''}{words}{match['gap']}{noun}"


_RU_DECIMAL_RE = re.compile(rf"{_SIGN}{_START}(?P<int>{_RU_INT}),(?P<frac>[0-9]+)")


def _ru_decimal(match: re.Match[str]) -> str:
    return _signed(match["sign"], _decimal(match["int"], match["frac"], "ru"), "ru")


_RU_INTEGER_RE = re.compile(rf"{_SIGN}{_START}(?P<int>{_RU_INT})")


def _ru_integer(match: re.Match[str]) -> str:
    return _signed(match["sign"], _cardinal(match["int"], "ru"), "ru")


_Pass = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]

_PASSES: dict[str, tuple[_Pass, ...]] = {
    "en": (
        (_EN_MONEY_RE, _en_money),
        (_EN_PERCENT_RE, _en_percent),
        (_EN_ORDINAL_RE, _en_ordinal),
        (_EN_DECADE_RE, _en_decade),
        (_EN_DECIMAL_RE, _en_decimal),
        (_EN_INTEGER_RE, _en_integer),
    ),
    "ru": (
        (_RU_PERCENT_RE, _ru_percent),
        (_RU_YEAR_RE, _ru_year),
        (_RU_DECIMAL_RE, _ru_decimal),
        (_RU_INTEGER_RE, _ru_integer),
    ),
}


def expand_numbers(text: str, language: str) -> str:
    """Replace every ASCII-digit number in ``text`` with words in ``language``.

    Only ASCII digits are expanded; other scripts' digits stay and are reported as unknown
    characters later, rather than being read in the wrong language.
    """
    for pattern, replace in _PASSES[check_language(language)]:
        text = pattern.sub(replace, text)
    return text
