"""The one log-mel spectrogram, used both to build training targets and at synthesis time.

It matches NVIDIA Tacotron 2's features: Hann-windowed STFT (centred, reflect padding), magnitude
(not power), Slaney-style mel filterbank (librosa's default: ``htk=False, norm="slaney"``) and
``log(clamp(x, min=log_clamp))``. Keeping a single implementation means a model is always
trained and vocoded on exactly the same features.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from torch import Tensor

from tacotrain.config import AudioConfig

log = logging.getLogger(__name__)

# Slaney's Auditory Toolbox mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa ``hz_to_mel(htk=False)``)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    mel[log_part] = _MIN_LOG_MEL + np.log(hz[log_part] / _MIN_LOG_HZ) / _LOGSTEP
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = mel >= _MIN_LOG_MEL
    hz[log_part] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel[log_part] - _MIN_LOG_MEL))
    return hz


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """Slaney-normalised triangular mel filters, ``[n_mels, n_fft // 2 + 1]`` float64.

    Equal to ``librosa.filters.mel(sr=..., n_fft=..., n_mels=..., fmin=..., fmax=...)`` (checked
    in the tests) but written out here because importing librosa.filters pulls in scipy.signal
    and numba, about a second at every process start for a 25-line function.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # [n_freq]
    mel_points = np.linspace(
        hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([fmax]))[0], n_mels + 2
    )
    mel_f = mel_to_hz(mel_points)  # [n_mels + 2] filter edges in Hz
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]  # [n_mels + 2, n_freq]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # [n_mels, n_freq]
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]  # Slaney: constant energy per filter
    empty = int(np.count_nonzero(weights.max(axis=1) == 0))
    if empty:
        log.warning(
            "%d of %d mel filters are empty (n_mels=%d is too many for n_fft=%d)",
            empty,
            n_mels,
            n_mels,
            n_fft,
        )
    return weights


class MelSpectrogram(torch.nn.Module):
    """Waveform -> log-mel spectrogram, differentiable and device-agnostic.

    The filterbank and window are non-persistent buffers: they are derived from the config, so
    they never need to be in a checkpoint, and they follow ``.to(device)``. ``forward`` also
    moves them to the input's device if the module was left elsewhere.
    """

    mel_basis: Tensor  # [n_mels, n_fft // 2 + 1]
    window: Tensor  # [win_length]

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.n_fft = cfg.n_fft
        self.hop_length = cfg.hop_length
        self.win_length = cfg.win_length
        self.n_mels = cfg.n_mels
        self.log_clamp = cfg.log_clamp
        basis = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.register_buffer(
            "mel_basis", torch.from_numpy(basis.astype(np.float32)), persistent=False
        )
        self.register_buffer(
            "window", torch.hann_window(cfg.win_length, periodic=True), persistent=False
        )

    def magnitude(self, wav: Tensor) -> Tensor:
        """STFT magnitude: ``[..., S] -> [..., n_fft // 2 + 1, 1 + S // hop_length]``."""
        spec = torch.stft(
            wav,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(device=wav.device, dtype=wav.dtype),
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return spec.abs()

    def forward(self, wav: Tensor) -> Tensor:
        """``[S] -> [n_mels, T]`` or ``[B, S] -> [B, n_mels, T]``, ``T = 1 + S // hop_length``.

        Half-precision input is computed in float32 (the STFT needs it) and returned as such.
        """
        if wav.dim() not in (1, 2):
            raise ValueError(f"expected a waveform of shape [S] or [B, S], got {tuple(wav.shape)}")
        if wav.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"waveform of {wav.shape[-1]} samples is too short for reflect padding: "
                f"need more than n_fft // 2 = {self.n_fft // 2}"
            )
        if wav.dtype not in (torch.float32, torch.float64):
            wav = wav.float()
        mag = self.magnitude(wav)  # [..., n_freq, T]
        mel = torch.matmul(self.mel_basis.to(device=wav.device, dtype=wav.dtype), mag)
        return torch.log(torch.clamp(mel, min=self.log_clamp))  # [..., n_mels, T]


def _mel_key(cfg: AudioConfig) -> tuple[int, int, int, int, int, float, float, float]:
    """The config fields that determine the mel; hashable, for the module cache."""
    return (
        cfg.sample_rate,
        cfg.n_fft,
        cfg.hop_length,
        cfg.win_length,
        cfg.n_mels,
        cfg.fmin,
        cfg.fmax,
        cfg.log_clamp,
    )


@functools.lru_cache(maxsize=8)
def _cached_module(key: tuple[int, int, int, int, int, float, float, float]) -> MelSpectrogram:
    sample_rate, n_fft, hop, win, n_mels, fmin, fmax, log_clamp = key
    cfg = AudioConfig(
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        log_clamp=log_clamp,
    )
    return MelSpectrogram(cfg).eval()


def mel_spectrogram(wav: np.ndarray | Tensor, cfg: AudioConfig) -> Tensor:
    """Log-mel of one clip on the CPU: ``[S] -> [n_mels, T]`` float32 (``[B, S]`` also works).

    Convenience for data preparation and evaluation; the module is built once per distinct
    audio config and reused.
    """
    x = torch.as_tensor(wav).detach().to(device="cpu", dtype=torch.float32)
    with torch.no_grad():
        return _cached_module(_mel_key(cfg))(x)
