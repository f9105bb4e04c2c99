"""``tacotrain corpus build``: the steps, their cache, and the corpus they write.

For each input: read the audio, find its pauses, then either put its text on it (align.py) or
read its clips with a recogniser (transcribe.py). What one input gives (its clips, times,
texts, confidences) is cached in ``OUT/.cache/`` under a key of the audio's and text's
contents and every setting, so a re-run, or a run after an interruption, does again only what
it had not finished. Then the corpus: ``wavs/`` (kept clips, 22050 Hz mono 16-bit),
``review/`` (clips set aside or rejected, to listen to), ``index.html``, ``metadata.csv``
(``id|text|normalized``) and last ``build-report.json``. The files that make a build look
complete (``metadata.csv``, ``build-report.json``) are removed first and written last, so an
interrupted run never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tacotrain.audio import AudioReadError, load_audio, save_wav
from tacotrain.config import CorpusBuildConfig
from tacotrain.corpus_build import report as rep
from tacotrain.corpus_build.align import AlignError, align
from tacotrain.corpus_build.page import write_page
from tacotrain.corpus_build.segment import group_spans, segment
from tacotrain.corpus_build.transcribe import Hear, spans
from tacotrain.fsutil import atomic_write_json, atomic_write_text, file_sha256
from tacotrain.text import clean_text

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050  # what prepare reads by default
MARKER = ".tacotrain-corpus-build"
COMPLETE_FILES = ("build-report.json", "metadata.csv", "index.html")
CACHE_VERSION = 3  # raised whenever what a cached step computes changes
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class BuildError(RuntimeError):
    """The build cannot go on: unreadable audio, empty or mismatched text, an unsafe --out."""


@dataclass(frozen=True)
class Source:
    audio: Path
    text: Path | None = None



def _cache_key(src: Source, lang: str, cfg: CorpusBuildConfig, reader: str) -> str:
    parts = [str(CACHE_VERSION), file_sha256(src.audio),
             file_sha256(src.text) if src.text else "-", lang,
             reader, json.dumps(cfg.model_dump(mode="json"), sort_keys=True)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path}: cannot read the text ({exc})") from exc
    if not text.strip():
        raise BuildError(f"{path}: the text is empty")
    return text


def _given_text(samples: np.ndarray, src: Source, lang: str, cfg: CorpusBuildConfig,
                progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    assert src.text is not None
    text = _read_text(src.text)
    seg = segment(samples, SAMPLE_RATE, cfg)
    try:
        al = align(samples, SAMPLE_RATE, text, lang, cfg, seg, progress=progress,
                   names=f"{src.audio} with {src.text}")
    except AlignError as exc:
        raise BuildError(str(exc)) from exc
    clips = []
    for group in group_spans([(c.start, c.end) for c in al.clips], cfg.min_clip, cfg.max_clip):
        parts = [al.clips[i] for i in group]
        scores = {k: round(min(p.scores[k] for p in parts), 3) for k in parts[0].scores}
        clip = {"start": parts[0].start, "end": parts[-1].end,
                "cut_before": parts[0].cut_before, "cut_after": parts[-1].cut_after,
                "text": " ".join(p.text for p in parts), "scores": scores,
                "confidence": min(scores.values())}
        if clip["end"] - clip["start"] > cfg.max_clip:
            clip.update(status="rejected", reason="too_long")
        elif clip["confidence"] < cfg.min_confidence:
            clip.update(status="rejected", reason=min(scores, key=scores.__getitem__))
        else:
            clip.update(status="kept", reason=None)
        clips.append(clip)
    info = {"pauses": len(seg.pauses), "rate_ratio": round(al.rate_ratio, 3),
            "sentence_ends": al.sentence_ends, "sentence_ends_without_pause": al.ends_without_pause,
            "boundaries_without_pause": al.unsnapped}
    return clips, info


def _no_text(samples: np.ndarray, hear: Hear, cfg: CorpusBuildConfig,
             progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    seg = segment(samples, SAMPLE_RATE, cfg)
    clips = []
    for span in tqdm(spans(seg, cfg), desc="recognising", unit="clip", disable=not progress):
        a, b = int(span.start * SAMPLE_RATE), int(span.end * SAMPLE_RATE)
        text, confidence = hear(samples[a:b], SAMPLE_RATE)
        clip = {"start": span.start, "end": span.end, "cut_before": span.cut_before,
                "cut_after": span.cut_after, "text": text,
                "scores": {"recogniser": round(confidence, 3)},
                "confidence": round(confidence, 3)}
        if not text:
            clip.update(status="rejected", reason="no_words")
        elif span.end - span.start > cfg.max_clip:
            clip.update(status="rejected", reason="too_long")
        elif confidence < cfg.min_confidence:
            clip.update(status="review", reason="low_confidence")
        else:
            clip.update(status="kept", reason=None)
        clips.append(clip)
    return clips, {"pauses": len(seg.pauses)}


def _mismatch(src: Source, clips: list[dict[str, Any]], info: dict[str, Any],
              cfg: CorpusBuildConfig) -> list[str]:
    """Why the text of ``src`` is not its audio's, if it is not: most clips rejected, or many
    sentence ends where the audio does not pause."""
    rejected = sum(c["status"] == "rejected" for c in clips)
    ends, lost = info["sentence_ends"], info["sentence_ends_without_pause"]
    why = []
    if rejected > cfg.max_rejected_share * max(len(clips), 1):
        why.append(f"{rejected} of {len(clips)} clips disagree with their text")
    if ends and lost > cfg.max_unpaused_share * ends:
        why.append(f"{lost} of {ends} sentence ends fall where the audio does not pause")
    if not why:
        return []
    return [f"{src.text} does not match {src.audio}: " + " and ".join(why)
            + " (a wrong text, or another chapter?)"]


def _extents(clips: list[dict[str, Any]], duration: float, pad: float) -> None:
    """Each clip's audio: its speech with up to ``pad`` of silence either side, never past its
    cut points; the pause centres stay recorded as the cut points."""
    for c in clips:
        c["speech"] = [round(c["start"], 4), round(c["end"], 4)]
        c["start"] = round(max(c["cut_before"], c["start"] - pad, 0.0), 4)
        c["end"] = round(min(c["cut_after"], c["end"] + pad, duration), 4)
        c["cut_before"], c["cut_after"] = round(c["cut_before"], 4), round(c["cut_after"], 4)


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise BuildError(f"{out} is not empty and is not a corpus build; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    for name in COMPLETE_FILES:
        (out / name).unlink(missing_ok=True)
    for sub in ("wavs", "review", ".cache"):
        (out / sub).mkdir(exist_ok=True)


def build(sources: list[Source], out: str | Path, lang: str, cfg: CorpusBuildConfig,
          hear: Hear | None = None, reader: str = "pocketsphinx",
          progress: bool = True) -> dict[str, Any]:
    """Build the corpus in ``out``; returns the report. Given-text sources need ``lang`` (en
    or ru); sources without text need ``hear`` (``reader`` names it, for the cache key).
    Raises :class:`BuildError` for an input that cannot be used or a text that does not match
    its audio (the report is then written with ``complete: false`` and no metadata.csv)."""
    out = Path(out)
    if not sources:
        raise BuildError("no audio files given")
    _prepare_out(out)
    inputs, clips, failures = [], [], []
    stems: dict[str, int] = {}
    for src in tqdm(sources, desc="recordings", unit="file", disable=not progress or
                    len(sources) < 2):
        if not src.audio.is_file():
            raise BuildError(f"{src.audio}: no such audio file")
        try:
            audio = load_audio(src.audio, SAMPLE_RATE)
        except AudioReadError as exc:
            raise BuildError(f"cannot use {exc}") from exc
        key = _cache_key(src, lang, cfg, "text" if src.text else reader)
        cache = out / ".cache" / f"{key}.json"
        reused = cache.exists()
        if reused:
            found = json.loads(cache.read_text(encoding="utf-8"))
            these, info = found["clips"], found["info"]
        else:
            if src.text is not None:
                these, info = _given_text(audio.samples, src, lang, cfg, progress)
            else:
                if hear is None:
                    raise BuildError(f"{src.audio}: no text and no recogniser")
                these, info = _no_text(audio.samples, hear, cfg, progress)
            _extents(these, audio.duration, cfg.pad)
            atomic_write_json(cache, {"clips": these, "info": info})
        stem = _SAFE.sub("_", src.audio.stem).strip("_") or "clip"
        stems[stem] = stems.get(stem, 0) + 1
        stem = stem if stems[stem] == 1 else f"{stem}_{stems[stem]}"
        for n, c in enumerate(these):
            c.update(id=f"{stem}-{n:04d}", source=str(src.audio))
            c["wav"] = f"{'wavs' if c['status'] == 'kept' else 'review'}/{c['id']}.wav"
        if src.text is not None:
            failures += _mismatch(src, these, info, cfg)
        inputs.append({"audio": str(src.audio), "text": str(src.text) if src.text else None,
                       "duration": round(audio.duration, 4), "reused": reused, **info,
                       "accounting": rep.account(audio.duration, these)})
        for c in tqdm(these, desc="writing clips", unit="clip", disable=not progress,
                      leave=False):
            a, b = int(round(c["start"] * SAMPLE_RATE)), int(round(c["end"] * SAMPLE_RATE))
            save_wav(out / c["wav"], audio.samples[a:b], SAMPLE_RATE)
        clips += these
    written = {c["wav"] for c in clips}
    for sub in ("wavs", "review"):  # clips of an earlier build with other settings
        for f in (out / sub).glob("*.wav"):
            if f"{sub}/{f.name}" not in written:
                f.unlink()
    report = {"complete": False, "language": lang, "config": cfg.model_dump(mode="json"),
              "inputs": inputs, "summary": rep.summary(inputs, clips), "clips": clips}
    if failures:
        report["error"] = "text does not match audio: " + "; ".join(failures)
        atomic_write_json(out / "build-report.json", report)
        raise BuildError(report["error"])
    write_page(out / "index.html", report)
    kept = [c for c in clips if c["status"] == "kept"]
    atomic_write_text(out / "metadata.csv", "".join(
        f"{c['id']}|{_one_line(c['text'])}|{_one_line(clean_text(c['text'], lang))}\n"
        for c in kept))
    report["complete"] = True
    atomic_write_json(out / "build-report.json", report)
    return report


def _one_line(text: str) -> str:
    return " ".join(text.replace("|", " ").split())
