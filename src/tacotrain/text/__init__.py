"""Text front-end: symbol tables, cleaners and number expansion for English and Russian.

Typical use: ``seq = text_to_sequence(clean_text(raw, lang), lang)``, after checking
``unknown_characters(clean_text(raw, lang), lang) == []`` to reject, not mangle, bad items.
With ``text.phonemes`` the model reads espeak-ng IPA instead (``phonemes.py``); either way
``encode_text(cleaned, lang, phonemes)`` is how text becomes model input.
"""

from .cleaners import clean_text, detect_language, text_key
from .numbers import expand_numbers
from .phonemes import (
    PhonemeError,
    attached_marks,
    encode_text,
    phonemes_to_sequence,
    phonemize,
    phonemize_each,
    phonemize_many,
    sequence_to_phonemes,
)
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
    "PhonemeError",
    "attached_marks",
    "clean_text",
    "detect_language",
    "encode_text",
    "expand_numbers",
    "phonemes_to_sequence",
    "phonemize",
    "phonemize_each",
    "phonemize_many",
    "sequence_to_phonemes",
    "sequence_to_text",
    "symbols_for",
    "text_key",
    "text_to_sequence",
    "unknown_characters",
]
