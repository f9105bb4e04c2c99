"""Corpus formats: LJSpeech ``metadata.csv``, RUSLAN ``metadata_RUSLAN_22200.csv``, filelists.

Reading a corpus never stops at a bad line: each line becomes either an :class:`Entry` or a
:class:`Rejection` with the line number, so ``prepare`` can report every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("ljspeech", "ruslan", "filelist")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")

# Reason codes of report.json, exactly as documented.
REASONS = (
    "missing_audio",
    "unreadable_audio",
    "empty_text",
    "unknown_characters",
    "too_long",
    "too_short",
    "silent_audio",
    "duplicate_id",
    "malformed_line",
)


class CorpusError(ValueError):
    """The corpus as a whole cannot be read (not found, format not recognised)."""


@dataclass(frozen=True)
class Entry:
    id: str
    line: int  # 1-based line number in the metadata file
    text: str  # raw transcript (LJSpeech: the normalized column when present)
    audio: Path


@dataclass(frozen=True)
class Rejection:
    id: str
    line: int
    reason: str
    detail: str

    def as_dict(self) -> dict:
        return {"id": self.id, "line": self.line, "reason": self.reason, "detail": self.detail}


@dataclass
class Listing:
    format: str
    metadata: Path
    entries: list[Entry] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def _ruslan_metadata(directory: Path) -> Path | None:
    found = sorted(directory.glob("metadata_RUSLAN*.csv"))
    return found[0] if found else None


def detect_format(path: Path) -> tuple[str, Path]:
    """Return ``(format, metadata_file)`` for a corpus directory or metadata file."""
    if not path.exists():
        raise CorpusError(f"corpus not found: {path}")
    if path.is_file():
        if path.name == "metadata.csv":
            return "ljspeech", path
        if path.name.startswith("metadata_RUSLAN"):
            return "ruslan", path
        return "filelist", path
    if (path / "metadata.csv").is_file():
        return "ljspeech", path / "metadata.csv"
    ruslan = _ruslan_metadata(path)
    if ruslan is not None:
        return "ruslan", ruslan
    lists = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix in (".txt", ".csv", ".list"))
    if len(lists) == 1:
        return "filelist", lists[0]
    named = [p for p in lists if p.stem in ("filelist", "files", "list")]
    if len(named) == 1:
        return "filelist", named[0]
    raise CorpusError(
        f"{path}: cannot tell the corpus format. Expected metadata.csv (LJSpeech), "
        "metadata_RUSLAN_*.csv (RUSLAN) or a single path|text filelist (.txt/.csv); "
        "pass the metadata file itself or --format."
    )


def _resolve_metadata(path: Path, fmt: str) -> Path:
    if path.is_file():
        return path
    if fmt == "ljspeech":
        return path / "metadata.csv"
    if fmt == "ruslan":
        found = _ruslan_metadata(path)
        if found is None:
            raise CorpusError(f"{path}: no metadata_RUSLAN*.csv found")
        return found
    return detect_format(path)[1]


def _ruslan_audio_dir(metadata: Path, first_id: str | None) -> Path:
    """RUSLAN keeps wavs in a folder beside the metadata file (``RUSLAN/`` in the release)."""
    parent = metadata.parent
    candidates = [parent / "RUSLAN", parent / "wavs"]
    candidates += sorted(p for p in parent.iterdir() if p.is_dir() and p not in candidates)
    if first_id is not None:
        for cand in candidates:
            if (cand / f"{first_id}.wav").exists():
                return cand
    return parent / "RUSLAN"


def _split_lines(metadata: Path) -> list[tuple[int, str | None]]:
    """Lines as ``(line_no, text)``; text is None for a line that is not valid UTF-8."""
    out: list[tuple[int, str | None]] = []
    raw = metadata.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for no, chunk in enumerate(raw.splitlines(), start=1):
        try:
            out.append((no, chunk.decode("utf-8")))
        except UnicodeDecodeError:
            out.append((no, None))
    return out


def read_corpus(path: str | Path, fmt: str = "auto") -> Listing:
    """Parse a corpus into entries and line-level rejections (``malformed_line``)."""
    path = Path(path)
    if fmt == "auto":
        fmt, metadata = detect_format(path)
    elif fmt in FORMATS:
        if not path.exists():
            raise CorpusError(f"corpus not found: {path}")
        metadata = _resolve_metadata(path, fmt)
    else:
        raise CorpusError(f"unknown corpus format {fmt!r}; use one of auto, {', '.join(FORMATS)}")
    if not metadata.is_file():
        raise CorpusError(f"metadata file not found: {metadata}")

    listing = Listing(format=fmt, metadata=metadata)
    lines = _split_lines(metadata)
    audio_dir = metadata.parent / "wavs"
    if fmt == "ruslan":
        first = next((t.split("|", 1)[0].strip() for _, t in lines if t and "|" in t), None)
        audio_dir = _ruslan_audio_dir(metadata, first)

    for no, text in lines:
        if text is None:
            listing.rejected.append(Rejection("", no, "malformed_line", "line is not valid UTF-8"))
            continue
        if not text.strip():
            continue  # blank lines are not items
        fields = text.split("|")
        item = _parse_fields(fields, fmt, metadata, audio_dir, no)
        if isinstance(item, str):
            guess = fields[0].strip() if fields else ""
            listing.rejected.append(Rejection(guess, no, "malformed_line", item))
        else:
            listing.entries.append(item)
    return listing


def _parse_fields(
    fields: list[str], fmt: str, metadata: Path, audio_dir: Path, no: int
) -> Entry | str:
    """An Entry, or a string saying why the line is malformed."""
    expected = {"ljspeech": "id|text|normalized", "ruslan": "id|text", "filelist": "path|text"}[fmt]
    max_fields = 3 if fmt == "ljspeech" else 2
    if len(fields) < 2 or len(fields) > max_fields:
        return f"expected {expected}, found {len(fields)} field(s)"
    key = fields[0].strip()
    if not key:
        return f"empty first field; expected {expected}"
    if fmt == "ljspeech":
        text = fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]
        return Entry(key, no, text, audio_dir / f"{key}.wav")
    if fmt == "ruslan":
        return Entry(key, no, fields[1], audio_dir / f"{key}.wav")
    rel = Path(key)
    if rel.suffix.lower() not in AUDIO_SUFFIXES:
        return f"first field {key!r} is not an audio file path; expected {expected}"
    audio = rel if rel.is_absolute() else metadata.parent / rel
    return Entry(rel.stem, no, fields[1], audio)
