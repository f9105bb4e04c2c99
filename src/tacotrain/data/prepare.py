"""``tacotrain prepare``: validate a corpus, normalise text, cache mels, split, report.

Bad items never stop the run; each becomes a rejection with a reason code. Outputs in DATA:

- ``mels/<id>.<key>.npy`` + ``.json`` sidecar: log-mel ``[n_mels, T]`` float32, cached by a key
  over the audio settings and the source file (path, size, mtime), so a re-run with the same
  settings reuses them and changed audio settings recompute them;
- ``report.json``: kept and rejected items with reasons, and a summary;
- ``train.txt`` / ``val.txt``: ``id|text`` of the deterministic split (``id|text|phonemes``
  with ``text.phonemes``: the espeak-ng IPA the model reads, also in each manifest item);
- ``settings.yaml``: audio, text and prepare settings used (language resolved);
- ``manifest.json``: everything the training loader needs. Written last: a directory without it
  is incomplete, and a new run removes it (and the report and split) before doing anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tacotrain.audio import AudioReadError, load_audio, mel_spectrogram, peak_dbfs, trim_silence
from tacotrain.config import AudioConfig, PrepareConfig, Settings, to_yaml
from tacotrain.data.corpus import REASONS, Entry, Listing, Rejection, read_corpus
from tacotrain.fsutil import atomic_write, atomic_write_json, atomic_write_text
from tacotrain.text import (
    PhonemeError,
    clean_text,
    detect_language,
    phonemize_each,
    symbols_for,
    text_key,
    unknown_characters,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MARKER = ".tacotrain-data"
COMPLETE_FILES = (MANIFEST, "report.json", "train.txt", "val.txt", "settings.yaml")
MANIFEST_VERSION = 1
# Below this many clips the audio work runs in this process: starting worker processes costs
# more than it saves (benchmarks/RESULTS.md, "Corpus preparation").
PARALLEL_MIN_JOBS = 400
PHONEME_REASON = "phonemes_failed"
"""Rejection reason, with ``text.phonemes``, for text espeak-ng cannot turn into table symbols."""
_LETTER = re.compile(r"[^\W\d_]")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class PrepareError(RuntimeError):
    """The run cannot start (output directory unsafe, corpus unreadable)."""


@dataclass(frozen=True)
class AudioJob:
    id: str
    audio: str
    mel_file: str  # absolute path of the cached .npy
    audio_cfg: AudioConfig
    min_seconds: float
    max_seconds: float
    silent_peak_dbfs: float


@dataclass
class PrepareResult:
    out: Path
    report: dict[str, Any]

    @property
    def rejected(self) -> int:
        return len(self.report["rejected"])


# ---------------------------------------------------------------------------------------------
# audio work (runs in worker processes)


def _audio_checks(
    job: AudioJob, seconds: float, peak: float
) -> tuple[str, str] | None:
    if peak < job.silent_peak_dbfs:
        shown = "-inf" if peak <= -1e9 else f"{peak:.1f}"
        return "silent_audio", f"peak {shown} dBFS is below {job.silent_peak_dbfs} dBFS"
    if seconds <= 0.0:
        return "silent_audio", "nothing left after trimming silence"
    if seconds < job.min_seconds:
        return "too_short", f"{seconds:.2f} s < min_seconds {job.min_seconds}"
    if seconds > job.max_seconds:
        return "too_long", f"{seconds:.2f} s > max_seconds {job.max_seconds}"
    return None


def process_audio(job: AudioJob) -> dict[str, Any]:
    """Load, check, trim and turn one clip into a cached log-mel. Never raises for bad audio.

    The outcome is cached in a JSON sidecar even for rejected clips (with the measured
    duration and peak), so a re-run with the same audio settings reads no audio at all.
    """
    cfg = job.audio_cfg
    meta = _measure(job)
    if "unreadable" not in meta:
        problem = _audio_checks(job, meta["seconds"], meta["peak_dbfs"])
        if problem is None:
            samples = meta.pop("_samples")
            mel = mel_spectrogram(samples, cfg).numpy().astype(np.float32)
            meta["frames"] = int(mel.shape[1])
            atomic_write(job.mel_file, lambda fh: np.save(fh, mel, allow_pickle=False))
        meta.pop("_samples", None)
    atomic_write_json(_sidecar(job.mel_file), meta)
    result = _decide(job, meta, mel_ready=True)
    assert result is not None
    return result


def _measure(job: AudioJob) -> dict[str, Any]:
    cfg = job.audio_cfg
    try:
        loaded = load_audio(job.audio, cfg.sample_rate)
    except AudioReadError as exc:
        return {"unreadable": str(exc)}
    samples = loaded.samples
    if samples.size == 0:
        return {"unreadable": "no samples"}
    if not np.isfinite(samples).all():
        return {"unreadable": "non-finite samples"}
    peak = peak_dbfs(samples)
    notes = list(loaded.notes)
    if peak >= -0.1:
        notes.append("peak at full scale (possible clipping)")
    if cfg.trim_silence and peak > float("-inf"):
        samples, _, _ = trim_silence(samples, cfg.sample_rate, cfg.trim_top_db)
    return {"seconds": round(samples.size / cfg.sample_rate, 4),
            "peak_dbfs": round(peak, 2) if np.isfinite(peak) else -1e9,
            "notes": notes, "_samples": samples}


def _decide(job: AudioJob, meta: dict[str, Any], mel_ready: bool) -> dict[str, Any] | None:
    """Turn (cached) measurements into a result under the *current* thresholds; None when the
    clip passes but its mel has not been extracted yet."""
    if "unreadable" in meta:
        return {"id": job.id, "reason": "unreadable_audio", "detail": meta["unreadable"]}
    problem = _audio_checks(job, meta["seconds"], meta["peak_dbfs"])
    if problem is not None:
        return {"id": job.id, "reason": problem[0], "detail": problem[1]}
    if "frames" not in meta or not mel_ready:
        return None
    return {"id": job.id, "seconds": meta["seconds"], "frames": meta["frames"],
            "notes": meta["notes"]}


def _sidecar(mel_file: str | Path) -> Path:
    return Path(str(mel_file)[: -len(".npy")] + ".json")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# orchestration


def _cache_key(audio_cfg: AudioConfig, audio: Path) -> str:
    st = audio.stat()
    blob = json.dumps(
        [audio_cfg.model_dump(mode="json"), str(audio.resolve()), st.st_size, st.st_mtime_ns],
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _prepare_out_dir(out: Path) -> None:
    """Refuse to write into a directory we did not create; mark the run as incomplete."""
    if out.exists():
        if not out.is_dir():
            raise PrepareError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise PrepareError(
                f"{out} is not empty and was not created by tacotrain prepare; "
                "choose an empty or new --out directory"
            )
    (out / "mels").mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    for name in COMPLETE_FILES:
        (out / name).unlink(missing_ok=True)


def split_ids(ids: list[str], cfg: PrepareConfig,
              texts: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split by sentence: items whose normalised texts are equal
    (:func:`text_key`) go to the same side, so validation never holds a sentence the model was
    trained on. A group's place depends only on (seed, its text; its id when no texts are given).
    Groups are taken into validation in that order until the target count is reached."""
    n = len(ids)
    n_val = round(cfg.val_fraction * n)
    n_val = max(n_val, cfg.val_min_items)
    n_val = min(n_val, cfg.val_max_items, n - 1)
    n_val = max(n_val, 0)
    keys = [text_key(t) for t in texts] if texts is not None else list(ids)
    groups: dict[str, list[str]] = {}
    for i, k in zip(ids, keys, strict=True):
        groups.setdefault(k, []).append(i)

    def rank(key: str) -> str:
        return hashlib.sha1(f"{cfg.seed}:{key}".encode()).hexdigest()

    order = sorted(groups, key=rank)
    val: set[str] = set()
    for key in order:
        if len(val) + len(groups[key]) <= n_val:
            val.update(groups[key])
    if not val and n_val > 0:  # every group is larger than the target: take the smallest
        smallest = min(order, key=lambda k: len(groups[k]))
        if len(groups[smallest]) < n:
            val.update(groups[smallest])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def duplicate_texts(texts: list[str]) -> tuple[int, int]:
    """-> (sentences that occur more than once, items holding them) after :func:`text_key`."""
    counts = Counter(text_key(t) for t in texts)
    dup = [c for c in counts.values() if c > 1]
    return len(dup), sum(dup)


def _check_text(entry: Entry, language: str) -> tuple[str | None, Rejection | None]:
    if not entry.text.strip():
        return None, Rejection(entry.id, entry.line, "empty_text", "transcript is empty")
    cleaned = clean_text(entry.text, language)
    if not _LETTER.search(cleaned):
        return None, Rejection(entry.id, entry.line, "empty_text", "no letters after normalisation")
    bad = unknown_characters(cleaned, language)
    if bad:
        shown = " ".join(f"{c!r}(U+{ord(c):04X})" for c in bad)
        return None, Rejection(
            entry.id, entry.line, "unknown_characters",
            f"not in the {language} symbol set: {shown}",
        )
    return cleaned, None


def _phonemize_candidates(candidates: list[tuple[Entry, str]], language: str,
                          phonemes: dict[str, str], rejected: list[Rejection], workers: int,
                          progress: bool) -> list[tuple[Entry, str]]:
    """Fill ``phonemes`` (id -> IPA) for the candidates espeak-ng can read; reject the rest.
    espeak-ng missing or crashing stops the run (every item would fail the same way)."""
    try:
        results = phonemize_each([cleaned for _, cleaned in candidates], language,
                                 workers=workers, progress=progress)
    except PhonemeError as exc:
        raise PrepareError(f"text.phonemes: {exc}") from None
    kept = []
    for (entry, cleaned), ipa in zip(candidates, results, strict=True):
        if isinstance(ipa, PhonemeError):
            rejected.append(Rejection(entry.id, entry.line, PHONEME_REASON, str(ipa)))
        else:
            phonemes[entry.id] = ipa
            kept.append((entry, cleaned))
    return kept


def _run_jobs(jobs: list[AudioJob], workers: int, progress: bool) -> list[dict[str, Any]]:
    bar = tqdm(total=len(jobs), desc="extracting mels", unit="clip", disable=not progress)
    results: list[dict[str, Any]] = []
    try:
        if workers <= 1 or len(jobs) < PARALLEL_MIN_JOBS:
            for job in jobs:
                results.append(process_audio(job))
                bar.update()
        else:
            ctx = get_context("spawn")  # never fork a process that has torch threads running
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
                for res in pool.map(process_audio, jobs, chunksize=4):
                    results.append(res)
                    bar.update()
    finally:
        bar.close()
    return results


def prepare(
    corpus: str | Path,
    out: str | Path,
    settings: Settings | None = None,
    fmt: str = "auto",
    workers: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Validate ``corpus`` and write the dataset cache to ``out``; see the module docstring."""
    settings = settings or Settings()
    out = Path(out)
    listing = read_corpus(corpus, fmt)
    _prepare_out_dir(out)
    pcfg, acfg = settings.prepare, settings.audio
    language = settings.text.language
    if language == "auto":
        language = detect_language(e.text for e in listing.entries)
    log.info("corpus %s: format %s, %d lines, language %s",
             listing.metadata, listing.format, len(listing.entries), language)

    rejected: list[Rejection] = list(listing.rejected)
    candidates = _screen_entries(listing.entries, language, rejected)
    phonemes: dict[str, str] = {}
    if settings.text.phonemes:
        candidates = _phonemize_candidates(candidates, language, phonemes, rejected,
                                           workers or os.cpu_count() or 1, progress)

    jobs, results, mel_files = _plan_audio(candidates, out, acfg, pcfg)
    cached = len(results)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    log.info("%d clips to process, %d reused from the cache, %d worker(s)",
             len(jobs), cached, workers)
    for res in _run_jobs(jobs, workers, progress):
        results[res["id"]] = res

    kept, items = _collect_kept(candidates, results, mel_files, phonemes, rejected)
    train_ids, val_ids = split_ids([k["id"] for k in kept], pcfg, [k["text"] for k in kept])
    val_set = set(val_ids)
    for item in items:
        item["split"] = "val" if item["id"] in val_set else "train"
    rejected.sort(key=lambda r: (r.line, r.id))
    summary = _summary(listing, language, settings.text.phonemes, kept, rejected,
                       train_ids, val_ids, cached=cached, clips_read=len(jobs))
    report = {"kept": kept, "rejected": [r.as_dict() for r in rejected], "summary": summary}

    used = Settings(audio=acfg, text={"language": language,
                                      "phonemes": settings.text.phonemes}, prepare=pcfg)
    _write_outputs(out, report, train_ids, val_ids, used, set(mel_files.values()), items)
    return PrepareResult(out=out, report=report)


def _screen_entries(entries: list[Entry], language: str,
                    rejected: list[Rejection]) -> list[tuple[Entry, str]]:
    """The entries with a new id, usable text and an audio file, each with its cleaned text;
    every other entry is appended to ``rejected`` with its reason."""
    seen: dict[str, int] = {}
    candidates: list[tuple[Entry, str]] = []
    for entry in entries:
        if entry.id in seen:
            rejected.append(Rejection(entry.id, entry.line, "duplicate_id",
                                      f"id already used on line {seen[entry.id]}"))
            continue
        seen[entry.id] = entry.line
        cleaned, rej = _check_text(entry, language)
        if rej is None and not entry.audio.is_file():
            rej = Rejection(entry.id, entry.line, "missing_audio", f"not found: {entry.audio}")
        if rej is not None:
            rejected.append(rej)
        else:
            candidates.append((entry, cleaned))
    return candidates


def _plan_audio(candidates: list[tuple[Entry, str]], out: Path, acfg: AudioConfig,
                pcfg: PrepareConfig
                ) -> tuple[list[AudioJob], dict[str, dict[str, Any]], dict[str, str]]:
    """-> (jobs for the clips to read, results decided from cached sidecars by id, mel file
    name under ``OUT/mels`` by id). A cached clip is decided from its sidecar under the current
    thresholds; the others become jobs."""
    jobs: list[AudioJob] = []
    results: dict[str, dict[str, Any]] = {}
    mel_files: dict[str, str] = {}
    for entry, _ in candidates:
        name = f"{_SAFE.sub('_', entry.id)}.{_cache_key(acfg, entry.audio)}.npy"
        mel_file = str((out / "mels" / name).resolve())
        mel_files[entry.id] = name
        job = AudioJob(entry.id, str(entry.audio), mel_file, acfg,
                       pcfg.min_seconds, pcfg.max_seconds, pcfg.silent_peak_dbfs)
        side = _sidecar(mel_file)
        res = None
        if side.is_file():
            meta = json.loads(side.read_text(encoding="utf-8"))
            res = _decide(job, meta, mel_ready=Path(mel_file).is_file())
        if res is None:
            jobs.append(job)
        else:
            results[entry.id] = res
    return jobs, results, mel_files


def _collect_kept(candidates: list[tuple[Entry, str]], results: dict[str, dict[str, Any]],
                  mel_files: dict[str, str], phonemes: dict[str, str],
                  rejected: list[Rejection]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """-> (the report's kept items, the manifest's items), in corpus order; a candidate whose
    audio was refused is appended to ``rejected``."""
    kept: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for entry, cleaned in candidates:
        res = results[entry.id]
        if "reason" in res:
            rejected.append(Rejection(entry.id, entry.line, res["reason"], res["detail"]))
            continue
        notes = list(res["notes"])
        rate = len(cleaned) / max(res["seconds"], 1e-6)
        if not 4.0 <= rate <= 35.0:
            notes.append(f"unusual speaking rate {rate:.1f} characters/s: check the transcript")
        ipa = {"phonemes": phonemes[entry.id]} if phonemes else {}
        kept.append({"id": entry.id, "text": cleaned, **ipa, "seconds": res["seconds"],
                     "notes": notes})
        items.append({"id": entry.id, "text": cleaned, **ipa,
                      "mel": f"mels/{mel_files[entry.id]}", "frames": res["frames"],
                      "seconds": res["seconds"]})
    return kept, items


def _summary(listing: Listing, language: str, phonemes: bool, kept: list[dict[str, Any]],
             rejected: list[Rejection], train_ids: list[str], val_ids: list[str], *,
             cached: int, clips_read: int) -> dict[str, Any]:
    """The report's summary: the corpus, what was kept and rejected (by reason), the split."""
    dup_texts, dup_items = duplicate_texts([k["text"] for k in kept])
    counts = Counter(r.reason for r in rejected)
    reasons = (*REASONS, PHONEME_REASON) if phonemes else REASONS
    seconds = sum(k["seconds"] for k in kept)
    return {
        "corpus": str(listing.metadata),
        "format": listing.format,
        "language": language,
        "phonemes": phonemes,
        "lines": len(listing.entries) + len(listing.rejected),
        "kept": len(kept),
        "rejected": len(rejected),
        "rejected_by_reason": {r: counts.get(r, 0) for r in reasons},
        "hours_kept": round(seconds / 3600.0, 4),
        "seconds_kept": round(seconds, 2),
        "train_items": len(train_ids),
        "val_items": len(val_ids),
        # sentences (normalised text) spoken by several items: each kept on one side of the split
        "duplicate_texts_grouped": dup_texts,
        "duplicate_text_items": dup_items,
        "converted": sum(1 for k in kept if k["notes"]),
        "reused_from_cache": cached,
        "clips_read": clips_read,
    }


def _write_outputs(out: Path, report: dict[str, Any], train_ids: list[str],
                   val_ids: list[str], used: Settings, mel_names: set[str],
                   items: list[dict[str, Any]]) -> None:
    """Write the report, the split, the settings used, drop stale mels, and write the manifest
    last: it marks the directory complete."""
    atomic_write_json(out / "report.json", report)
    kept = report["kept"]
    text_of = {k["id"]: "|".join(filter(None, (k["text"], k.get("phonemes")))) for k in kept}
    atomic_write_text(out / "train.txt", "".join(f"{i}|{text_of[i]}\n" for i in train_ids))
    atomic_write_text(out / "val.txt", "".join(f"{i}|{text_of[i]}\n" for i in val_ids))
    atomic_write_text(out / "settings.yaml", to_yaml(used))
    _remove_stale(out, mel_names)
    language, phonemes = used.text.language, used.text.phonemes
    manifest = {
        "version": MANIFEST_VERSION,
        "language": language,
        "symbols": symbols_for(language, phonemes),
        "phonemes": phonemes,
        "settings": used.model_dump(mode="json"),
        "items": items,
    }
    atomic_write_json(out / MANIFEST, manifest)  # last: marks the directory complete


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Delete cached mels and sidecars of earlier settings or removed items (our files only)."""
    stems = {k[: -len(".npy")] for k in keep}
    for p in [*(out / "mels").glob("*.npy"), *(out / "mels").glob("*.json")]:
        if p.stem not in stems:
            p.unlink(missing_ok=True)


def format_summary(report: dict[str, Any]) -> str:
    """The human summary printed after a run."""
    s = report["summary"]
    lines = [
        f"corpus: {s['corpus']} ({s['format']}, language {s['language']}"
        f"{', phonemes' if s.get('phonemes') else ''})",
        f"kept {s['kept']} of {s['lines']} items, {s['hours_kept']:.3f} h "
        f"({s['seconds_kept']:.1f} s); train {s['train_items']}, validation {s['val_items']}",
        f"audio: {s['clips_read']} clip(s) read, {s['reused_from_cache']} reused from the cache; "
        f"{s['converted']} kept item(s) carry notes",
    ]
    if s.get("duplicate_texts_grouped"):
        lines.append(f"{s['duplicate_texts_grouped']} sentence(s) spoken by several items "
                     f"({s['duplicate_text_items']} items): each kept on one side of the split")
    if s["rejected"]:
        lines.append(f"rejected {s['rejected']}:")
        for reason, n in s["rejected_by_reason"].items():
            if n:
                lines.append(f"  {reason:<20} {n}")
    else:
        lines.append("rejected 0")
    return "\n".join(lines)
