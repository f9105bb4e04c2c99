"""Cepstra to compare two voices saying the same thing: MFCC from the project's log-mel.

The log-mel (audio/mel.py) with a DCT over the mel bands, the first coefficient (loudness)
dropped and the mean of the recording's speech frames subtracted (cepstral mean
normalisation), so that a microphone's colour and a synthetic voice's timbre weigh less than
what is said. Long recordings are processed in chunks so memory stays small.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.fft import dct

from tacotrain.audio import mel_spectrogram
from tacotrain.config import AudioConfig

N_MELS, N_CEPS = 40, 13
_CHUNK_SECONDS = 60.0


def mfcc(samples: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    """``[S]`` -> ``[1 + S // hop, N_CEPS - 1]`` float32 cepstra, one row per hop."""
    win = max(hop, round(0.025 * sample_rate))
    n_fft = 1 << (win - 1).bit_length()
    cfg = AudioConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, win_length=win,
                      n_mels=N_MELS, fmin=60.0, fmax=min(8000.0, sample_rate / 2))
    x = np.asarray(samples, dtype=np.float32)
    n_frames = 1 + len(x) // hop
    chunk = max(1, round(_CHUNK_SECONDS * sample_rate / hop)) * hop
    pad = -(-n_fft // hop) * hop  # context either side, whole frames, so chunks join seamlessly
    out = []
    for start in range(0, len(x), chunk):
        lo, hi = max(0, start - pad), min(len(x), start + chunk + pad)
        piece = x[lo:hi]
        if len(piece) <= n_fft // 2:
            piece = np.pad(piece, (0, n_fft))
        with torch.no_grad():
            mel = mel_spectrogram(piece, cfg).numpy().T  # [T, n_mels]
        first = (start - lo) // hop
        out.append(mel[first:first + chunk // hop])
    logmel = np.concatenate(out)[:n_frames]
    if len(logmel) < n_frames:
        logmel = np.pad(logmel, ((0, n_frames - len(logmel)), (0, 0)), mode="edge")
    return dct(logmel, type=2, norm="ortho", axis=1)[:, 1:N_CEPS].astype(np.float32)


def normalise(ceps: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """Cepstral mean and variance normalisation over the ``speech`` frames ([F] bool)."""
    ref = ceps[speech] if speech.any() else ceps
    return ((ceps - ref.mean(axis=0)) / (ref.std(axis=0) + 1e-5)).astype(np.float32)
