"""The built-in mini corpus: deterministic sentences spoken by a synthetic voice, in LJSpeech
format.

Two engines speak it. ``espeak`` (espeak-ng, English or Russian): a formant synthesiser, fast,
every phoneme always sounding the same; the tests use it. ``kokoro``: a neural voice
(data/kokoro.py) that sounds natural; in English it reads varied sentences (data/english.py)
and the demo uses it; in Russian it reads the espeak-ng corpus's sentences. Sentences mix
lengths (about 1-8 s of speech), numbers, abbreviations and punctuation. The engine speaks the
*normalised* text (what the model will read), so audio and transcript always match. Same seed,
same engine, same corpus. ``corpus.json`` beside ``metadata.csv`` records how
the corpus was made and what it covers.
"""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tacotrain.audio import load_audio, save_wav
from tacotrain.data import english, kokoro
from tacotrain.fsutil import atomic_write_json, atomic_write_text
from tacotrain.text import clean_text, phonemize_many, symbols_for

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050
MIN_SECONDS, MAX_SECONDS = 0.9, 8.0
VOICES = {"en": "en-us", "ru": "ru"}
ENGINES = ("espeak", "kokoro")
ENGINE_LANGUAGES = {"espeak": ("en", "ru"), "kokoro": ("en", "ru")}


class MiniCorpusError(RuntimeError):
    pass


# --- English -----------------------------------------------------------------------------------
_EN = {
    "name": ["Dr. Smith", "Mr. Brown", "Mrs. Green", "the old captain", "my neighbour", "Anna",
             "the young teacher", "Prof. Miller", "the pilot", "our guide", "Lt. Harris"],
    "verb": ["found", "painted", "carried", "opened", "repaired", "counted", "sold", "watched",
             "described", "borrowed", "cleaned", "remembered"],
    "thing": ["a red boat", "the wooden door", "two heavy boxes", "a small garden", "the map",
              "an empty bottle", "the silver key", "a long letter", "the kitchen table",
              "three green apples", "the broken clock"],
    "place": ["near the river", "on Baker St.", "in the morning", "after the storm",
              "behind the station", "at the market", "before dinner", "in a quiet village",
              "under the bridge"],
    "tail": ["and then went home", "without a single word", "while it was raining",
             "because nobody else could", "as the sun went down", "for the second time"],
    "q": ["Did you see", "Who moved", "Where is", "Why did they sell", "Have you ever seen"],
}


def _en_number(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"{rng.randint(2, 99)} people"
    if kind == 1:
        return f"${rng.randint(1, 500)}"
    if kind == 2:
        return f"in {rng.randint(1890, 1999)}"
    if kind == 3:
        return f"on the {rng.choice(['1st', '2nd', '3rd', '4th', '12th', '21st'])} of May"
    return f"{rng.randint(100, 9999)} meters"


def _en_sentence(rng: random.Random, words: int) -> str:
    if rng.random() < 0.15:
        return f"{rng.choice(_EN['q'])} {rng.choice(_EN['thing'])}?"
    parts = [rng.choice(_EN["name"]), rng.choice(_EN["verb"]), rng.choice(_EN["thing"])]
    extras = [lambda: rng.choice(_EN["place"]), lambda: _en_number(rng),
              lambda: rng.choice(_EN["tail"])]
    text = " ".join(parts)
    while len(text.split()) < words:
        sep = rng.choice([" ", ", ", " ", "; "])
        text += sep + rng.choice(extras)()
    end = rng.choice([".", ".", ".", "!"])
    if text.endswith(".") and end == ".":  # "on Baker St." already ends the sentence
        end = ""
    return text[0].upper() + text[1:] + end


# --- Russian -----------------------------------------------------------------------------------
_RU = {
    "name": ["Мой сосед", "Стар+ый капитан", "Анна", "Молодой учитель", "Наш гид", "Пилот",
             "Бабушка", "Инженер Петров", "Ёжик"],
    "verb": ["нашёл", "покрасил", "открыл", "починил", "посчитал", "продал", "увидел",
             "описал", "принёс", "запомнил"],
    "thing": ["красную лодку", "деревянную дверь", "две тяжёлые коробки", "маленький сад",
              "старую карту", "пустую бутылку", "серебряный ключ", "длинное письмо",
              "з+амок на горе", "сломанные часы"],
    "place": ["возле реки", "утром", "после грозы", "за вокзалом", "на рынке", "перед обедом",
              "в тихой деревне", "под мостом"],
    "tail": ["и пошёл домой", "не сказав ни слова", "пока шёл дождь", "когда село солнце",
             "во второй раз"],
    "q": ["Ты видел", "Кто передвинул", "Где", "Зачем они продали"],
}


def _ru_number(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f"в {rng.randint(1890, 2030)} году"
    if kind == 1:
        return f"за {rng.randint(2, 900)} рублей"
    return f"{rng.randint(5, 99)} раз"


def _ru_sentence(rng: random.Random, words: int) -> str:
    if rng.random() < 0.15:
        return f"{rng.choice(_RU['q'])} {rng.choice(_RU['thing'])}?"
    text = " ".join([rng.choice(_RU["name"]), rng.choice(_RU["verb"]), rng.choice(_RU["thing"])])
    extras = [lambda: rng.choice(_RU["place"]), lambda: _ru_number(rng),
              lambda: rng.choice(_RU["tail"])]
    while len(text.split()) < words:
        text += rng.choice([" ", ", ", " "]) + rng.choice(extras)()
    return text + rng.choice([".", ".", "!"])


# the word lists per language, also the material of the robustness set (evaluate/robustness.py)
VOCABULARY: dict[str, dict[str, list[str]]] = {"en": _EN, "ru": _RU}

GENERATORS: dict[str, Callable[[random.Random, int], str]] = {
    "en": _en_sentence, "ru": _ru_sentence}


def sentence(lang: str, seed: int, index: int, attempt: int = 0, engine: str = "espeak") -> str:
    """The deterministic sentence number ``index`` of a mini corpus: the espeak-ng corpus's
    frames, or the varied English of data/english.py for the natural (``kokoro``) English
    corpus (Russian keeps its frames)."""
    rng = random.Random(f"{seed}:{lang}:{index}:{attempt}")
    if engine == "kokoro" and lang == "en":
        return english.sentence(rng, rng.randint(3, 22))
    return GENERATORS[lang](rng, rng.randint(2, 18))


def check_engine(engine: str, lang: str) -> None:
    if engine not in ENGINES:
        raise MiniCorpusError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if lang not in ENGINE_LANGUAGES[engine]:
        raise MiniCorpusError(f"the {engine} engine speaks {', '.join(ENGINE_LANGUAGES[engine])} "
                              f"only, not {lang!r}; use --engine espeak for {lang!r}")


def speak(text: str, lang: str, speed: int = 165) -> tuple[bytes, float]:
    """Speak ``text`` with espeak-ng; returns WAV bytes at 22050 Hz and the duration."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MiniCorpusError("espeak-ng is not installed: `apt-get install espeak-ng` "
                              "(make demo / make test install it)")
    spoken = text.replace("+", "")  # espeak-ng does not read the stress mark
    proc = subprocess.run([exe, "-v", VOICES[lang], "-s", str(speed), "--stdin", "--stdout"],
                          input=spoken.encode("utf-8"), capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise MiniCorpusError(f"espeak-ng failed on {spoken!r}: {proc.stderr.decode()[-300:]}")
    info = sf.info(io.BytesIO(proc.stdout))
    return proc.stdout, info.frames / info.samplerate


def _make_item(lang: str, seed: int, index: int, wav_path: Path) -> tuple[str, str]:
    for attempt in range(20):
        raw = sentence(lang, seed, index, attempt)
        normalized = clean_text(raw, lang)
        data, seconds = speak(normalized, lang)
        if MIN_SECONDS <= seconds <= MAX_SECONDS:
            break
    _write_clip(data, wav_path)
    return raw, normalized


def _write_clip(data: bytes, wav_path: Path) -> None:
    """espeak-ng's WAV bytes -> a clip at the corpus sample rate, written atomically."""
    tmp = wav_path.with_suffix(".espeak.wav")
    tmp.write_bytes(data)
    try:
        audio = load_audio(tmp, SAMPLE_RATE)
    finally:
        tmp.unlink(missing_ok=True)
    save_wav(wav_path, audio.samples, SAMPLE_RATE)


def _natural_clip(voice: kokoro.Kokoro, ipa: str, lang: str, peak: float = 0.95) -> np.ndarray:
    """Kokoro's audio at the corpus rate; a clip louder than ``peak`` is scaled down to it (the
    model's output can exceed full scale, which 16-bit PCM would clip)."""
    audio = soxr.resample(voice.speak_ipa(ipa, lang), kokoro.SAMPLE_RATE, SAMPLE_RATE)
    top = float(np.abs(audio).max()) if audio.size else 0.0
    if top > peak:
        audio = audio * (peak / top)
    return audio.astype(np.float32)


def _make_natural_items(lang: str, seed: int, paths: list[Path], style: str, speed: float,
                        progress: bool, workers: int
                        ) -> tuple[list[tuple[str, str]], list[str]]:
    """Speak sentence ``i`` (re-drawn up to 20 times until its clip is MIN..MAX seconds long)
    into ``paths[i]`` with Kokoro, ``workers`` sessions of one thread each (onnxruntime runs
    outside the GIL); returns the (raw, normalised) rows and each row's IPA."""
    from tqdm import tqdm

    local = threading.local()

    def clip(ipa: str) -> np.ndarray:
        if not hasattr(local, "voice"):
            local.voice = kokoro.Kokoro(style, speed, threads=1)
        return _natural_clip(local.voice, ipa, lang)

    attempt = dict.fromkeys(range(len(paths)), 0)
    rows: dict[int, tuple[str, str, str]] = {}
    with tqdm(total=len(paths), desc="speaking (kokoro)", unit="clip",
              disable=not progress) as bar, ThreadPoolExecutor(max(1, workers)) as pool:
        while attempt:
            raw = {i: sentence(lang, seed, i, a, "kokoro") for i, a in attempt.items()}
            norm = {i: clean_text(t, lang) for i, t in raw.items()}
            ipas = phonemize_many([norm[i] for i in raw], lang, workers=2)
            for i, ipa, audio in zip(list(raw), ipas, pool.map(clip, ipas), strict=True):
                seconds = len(audio) / SAMPLE_RATE
                if MIN_SECONDS <= seconds <= MAX_SECONDS or attempt[i] >= 19:
                    save_wav(paths[i], audio, SAMPLE_RATE)
                    rows[i] = (raw[i], norm[i], ipa)
                    del attempt[i]
                    bar.update()
                else:
                    attempt[i] += 1
    ordered = [rows[i] for i in range(len(paths))]
    return [(r, n) for r, n, _ in ordered], [ipa for _, _, ipa in ordered]


def make_mini_corpus(out: str | Path, lang: str = "en", size: int = 200, seed: int = 0,
                     workers: int = 2, progress: bool = True, engine: str = "espeak",
                     style: str = kokoro.DEFAULT_STYLE, speed: float = 1.0) -> Path:
    """Write ``out/wavs/*.wav``, ``out/metadata.csv`` (``id|text|normalized``) and
    ``out/corpus.json`` (engine, style, seed; for the natural engine what the texts cover).

    ``metadata.csv`` is written last and atomically, so an interrupted run does not look like a
    corpus. Returns the metadata path.
    """
    from tqdm import tqdm

    if lang not in GENERATORS:
        raise MiniCorpusError(f"unknown language {lang!r}; use one of {sorted(GENERATORS)}")
    check_engine(engine, lang)
    if size < 1:
        raise MiniCorpusError("size must be >= 1")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "metadata.csv").exists() \
            and not (out / "wavs").exists():
        raise MiniCorpusError(f"{out} is not empty and is not a corpus; choose another --out")
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    (out / "metadata.csv").unlink(missing_ok=True)
    tag = "" if engine == "espeak" else "k"
    ids = [f"{lang}{tag}{seed:02d}-{i:04d}" for i in range(size)]
    info: dict = {"engine": engine, "language": lang, "seed": seed, "size": size}
    if engine == "kokoro":
        rows, ipas = _make_natural_items(lang, seed, [out / "wavs" / f"{i}.wav" for i in ids],
                                         style, speed, progress, workers)
        info.update(style=style, speed=speed, coverage=english.coverage(
            ipas, [r for r, _ in rows], symbols_for(lang, phonemes=True)))
    else:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            futures = [pool.submit(_make_item, lang, seed, i, out / "wavs" / f"{ids[i]}.wav")
                       for i in range(size)]
            rows = [f.result() for f in tqdm(futures, desc="speaking", unit="clip",
                                             disable=not progress)]
    text = "".join(f"{i}|{raw}|{norm}\n" for i, (raw, norm) in zip(ids, rows, strict=True))
    atomic_write_json(out / "corpus.json", info)
    meta = out / "metadata.csv"
    atomic_write_text(meta, text)
    log.info("mini corpus: %d clips (%s, %s) in %s", size, lang, engine, out)
    return meta


def corpus_info(corpus: str | Path) -> dict:
    """``corpus.json`` of a mini corpus (``{"engine": "espeak"}`` for one made before it)."""
    path = Path(corpus) / "corpus.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"engine": "espeak"}


def speak_sentences(out: str | Path, lang: str, sentences: list[str], prefix: str = "s",
                    engine: str = "espeak", style: str = kokoro.DEFAULT_STYLE,
                    speed: float = 1.0) -> Path:
    """Ground truth for given sentences: ``out/wavs/PREFIX-NNNN.wav`` spoken by ``engine`` (the
    normalised text, as in the mini corpus) and ``out/metadata.csv``, written last. Returns the
    metadata path."""
    check_engine(engine, lang)
    out = Path(out)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    (out / "metadata.csv").unlink(missing_ok=True)
    normalized = [clean_text(raw, lang) for raw in sentences]
    voice = kokoro.Kokoro(style, speed) if engine == "kokoro" else None
    ipas = phonemize_many(normalized, lang) if voice is not None else []
    rows = []
    for k, (raw, norm) in enumerate(zip(sentences, normalized, strict=True), start=1):
        item = f"{prefix}-{k:04d}"
        if voice is not None:
            save_wav(out / "wavs" / f"{item}.wav", _natural_clip(voice, ipas[k - 1], lang),
                     SAMPLE_RATE)
        else:
            _write_clip(speak(norm, lang)[0], out / "wavs" / f"{item}.wav")
        rows.append(f"{item}|{raw}|{norm}\n")
    meta = out / "metadata.csv"
    atomic_write_text(meta, "".join(rows))
    return meta
