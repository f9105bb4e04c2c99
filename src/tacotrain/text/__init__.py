"""Text front-end: symbol tables, cleaners and number expansion for English and Russian.

Typical use: ``seq = text_to_sequence(clean_text(raw, lang), lang)``, after checking
``unknown_characters(clean_text(raw, lang), lang) == []`` to reject, not mangle, bad items.
"""

from .cleaners import clean_text, detect_language
from .numbers import expand_numbers
from .symbols import (
    LANGUAGES,
    PAD,
    STRESS,
    sequence_to_text,
    symbols_for,
    text_to_sequence,
    unknown_characters,
)

__all__ = [
    "LANGUAGES",
    "PAD",
    "STRESS",
    "clean_text",
    "detect_language",
    "expand_numbers",
    "sequence_to_text",
    "symbols_for",
    "text_to_sequence",
    "unknown_characters",
]
