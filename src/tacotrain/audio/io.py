"""Reading, trimming and writing audio files.

Everything here is numpy + soundfile + soxr: no librosa calls, because librosa's numba-compiled
paths cost tens of seconds on first use, and corpus preparation touches every file once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

log = logging.getLogger(__name__)


class AudioReadError(Exception):
    """A file could not be turned into usable audio; the message names the file and the reason."""


@dataclass
class LoadedAudio:
    """A clip as tacotrain uses it: mono float32 in [-1, 1] at the target rate.

    ``original_rate`` and ``original_channels`` describe the file on disk, and ``notes`` lists
    every conversion applied, so that the prepare report can say what was done to each clip.
    """

    samples: np.ndarray  # [S] float32, mono, in [-1, 1]
    sample_rate: int  # the target rate the samples are at
    original_rate: int
    original_channels: int
    notes: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Length in seconds at ``sample_rate``."""
        return len(self.samples) / self.sample_rate


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> LoadedAudio:
    """Read any format libsndfile knows (WAV, FLAC, OGG, ...) as mono float32 at ``sample_rate``.

    Channels are averaged (not the first channel taken) so that a stereo recording with the
    voice panned to one side is not lost. Resampling uses soxr's high-quality setting.
    Raises ``AudioReadError`` for missing, unreadable, corrupt, empty or non-finite files.
    """
    p = Path(path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)  # [S, C]
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        raise AudioReadError(f"{p}: cannot read audio ({exc})") from exc
    frames, channels = data.shape
    if frames == 0:
        raise AudioReadError(f"{p}: file contains no samples (zero length)")
    if channels == 0:
        raise AudioReadError(f"{p}: file has no channels")
    if not np.isfinite(data).all():
        raise AudioReadError(f"{p}: file contains NaN or infinite samples")

    notes: list[str] = []
    if channels > 1:
        samples = data.mean(axis=1, dtype=np.float32)
        notes.append(f"downmixed from {channels} channels")
    else:
        samples = data[:, 0]
    if rate != sample_rate:
        samples = soxr.resample(samples, rate, sample_rate, quality="HQ").astype(np.float32)
        notes.append(f"resampled from {rate} Hz to {sample_rate} Hz")
    # Float files may hold values beyond full scale, and resampling can overshoot slightly.
    n_clipped = int(np.count_nonzero(np.abs(samples) > 1.0))
    if n_clipped:
        samples = np.clip(samples, -1.0, 1.0)
        notes.append(f"clipped {n_clipped} samples outside [-1, 1]")
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if len(samples) == 0:
        raise AudioReadError(f"{p}: no samples left after resampling from {rate} Hz")
    return LoadedAudio(
        samples=samples,
        sample_rate=sample_rate,
        original_rate=int(rate),
        original_channels=int(channels),
        notes=notes,
    )


def frame_rms(samples: np.ndarray, frame_length: int = 1024, hop_length: int = 256) -> np.ndarray:
    """RMS of centred frames (zero padding of ``frame_length // 2`` each side).

    Frame ``i`` is centred on sample ``i * hop_length``, as in librosa.feature.rms(center=True),
    giving ``1 + S // hop_length`` frames. Computed from a cumulative sum of squares so memory
    stays O(S) even for long recordings. Returns ``[1 + S // hop_length]`` float64.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    pad = frame_length // 2
    padded = np.pad(x, (pad, pad))
    n_frames = 1 + len(x) // hop_length
    csum = np.concatenate(([0.0], np.cumsum(padded * padded)))
    starts = np.arange(n_frames) * hop_length
    ends = np.minimum(starts + frame_length, len(padded))
    energy = np.maximum(csum[ends] - csum[starts], 0.0)  # cumsum rounding can go slightly < 0
    return np.sqrt(energy / frame_length)


def trim_silence(
    samples: np.ndarray,
    sample_rate: int,
    top_db: float,
    frame_length: int = 1024,
    hop_length: int = 256,
) -> tuple[np.ndarray, int, int]:
    """Drop leading and trailing frames more than ``top_db`` below the loudest frame's RMS.

    Same rule as librosa.effects.trim (centred RMS frames, threshold relative to the max) in
    plain numpy, so preparing a corpus never waits on numba. ``sample_rate`` is accepted so the
    call reads naturally at call sites and for logging; the rule itself is rate-independent.
    Returns ``(samples[start:end], start, end)``; silent or empty input gives an empty array
    and ``start == end == 0``.
    """
    x = np.asarray(samples).reshape(-1)
    if len(x) == 0:
        return x[:0].copy(), 0, 0
    rms = frame_rms(x, frame_length, hop_length)
    peak = float(rms.max())
    if peak <= 0.0:
        return x[:0].copy(), 0, 0
    amin = 1e-10  # power floor of librosa.power_to_db, so near-zero frames compare finitely
    power_db = 10.0 * np.log10(np.maximum(rms * rms, amin))
    ref_db = 10.0 * math.log10(max(peak * peak, amin))
    loud = np.flatnonzero(power_db > ref_db - top_db)
    if len(loud) == 0:
        return x[:0].copy(), 0, 0
    start = int(loud[0] * hop_length)
    end = int(min(len(x), (loud[-1] + 1) * hop_length))
    log.debug("trim_silence at %d Hz: kept [%d, %d) of %d samples", sample_rate, start, end, len(x))
    return x[start:end].copy(), start, end


def peak_dbfs(samples: np.ndarray) -> float:
    """Peak level in dB relative to full scale; ``-inf`` for silent or empty input."""
    x = np.asarray(samples)
    if x.size == 0:
        return float("-inf")
    peak = float(np.max(np.abs(x)))
    if peak <= 0.0:
        return float("-inf")
    return 20.0 * math.log10(peak)


def save_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write mono ``samples`` ([S] float in [-1, 1]) as 16-bit PCM WAV, atomically.

    The data goes to a temporary file in the same directory and is moved into place with
    ``os.replace``, so a reader never sees a half-written file and a crash leaves the old file.
    Values outside [-1, 1] are clipped rather than left to wrap around in the integer format.
    Samples become ``clip(x * 32768, -32768, 32767)`` truncated toward zero, here rather than in
    libsndfile (whose float scale, 32767 or 32768, and rounding differ between versions), so a
    wav equals HiFi-GAN's reference ``(audio * 32768).astype(int16)`` wherever that does not wrap.
    """
    p = Path(path)
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"save_wav expects mono samples of shape [S], got {x.shape}")
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    pcm = np.clip(x * np.float32(32768.0), -32768.0, 32767.0).astype(np.int16)  # trunc toward 0
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, pcm, sample_rate, format="WAV", subtype="PCM_16")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a written wav is meant to be shared
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
