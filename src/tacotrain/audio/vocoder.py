"""Turning a log-mel spectrogram back into a waveform, and choosing the vocoder by name.

Griffin-Lim needs no training, so a freshly trained Tacotron 2 can be listened to at once; a
trained HiFi-GAN generator (``hifigan:PATH``, audio/hifigan.py) sounds natural. Both sit behind
the same ``Vocoder`` protocol, and :func:`load_vocoder` refuses a HiFi-GAN whose mel settings
differ from the model's, since a mismatched vocoder gives noise without any error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from tacotrain.audio.hifigan import HifiGan
from tacotrain.audio.mel import mel_filterbank
from tacotrain.cancel import Cancelled
from tacotrain.config import AudioConfig

log = logging.getLogger(__name__)


@runtime_checkable
class Vocoder(Protocol):
    """Maps a log-mel ``[n_mels, T]`` to a float32 waveform ``[S]`` at ``sample_rate``.
    ``cancel``: see :mod:`tacotrain.cancel` (asked where the vocoder has steps to stop at)."""

    sample_rate: int

    def __call__(self, log_mel: Tensor,
                 cancel: Callable[[], bool] | None = None) -> np.ndarray: ...


class GriffinLim:
    """Log-mel -> waveform by mel pseudo-inversion and fast Griffin-Lim (Perraudin et al. 2013).

    Steps: ``exp`` undoes the log; the pseudo-inverse of the mel basis gives a first linear
    magnitude, clamped at 0 since the pseudo-inverse can go negative; ``refine_iters``
    multiplicative updates (non-negative, minimising the KL divergence between its mel and the
    target mel) then repair what the clamp broke. Without them the clamped pseudo-inverse alone
    is off by 0.36-0.5 nats mean absolute log-mel on harmonic test signals (quiet bins get filled
    in); 30 updates bring that to ~0.002 for ~10 ms per second of audio. Raising the result to
    ``griffin_lim_power`` sharpens harmonics that the mel smoothing blurred; then
    ``griffin_lim_iters`` Griffin-Lim iterations with momentum estimate a consistent phase.
    The initial phase comes from a seeded generator, so the same mel always gives the same
    audio. Runs on whatever device the mel is on.

    ``momentum`` (0.99, the "fast Griffin-Lim" value), ``refine_iters``, ``seed`` and
    ``max_peak`` (output is scaled down only if its peak exceeds this, to avoid clipping) are
    constructor arguments rather than config fields for now.
    """

    def __init__(
        self,
        cfg: AudioConfig,
        *,
        momentum: float = 0.99,
        refine_iters: int = 30,
        seed: int = 0,
        max_peak: float = 0.95,
    ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.sample_rate = cfg.sample_rate
        self.n_fft = cfg.n_fft
        self.hop_length = cfg.hop_length
        self.win_length = cfg.win_length
        self.n_mels = cfg.n_mels
        self.n_iters = cfg.griffin_lim_iters
        self.power = cfg.griffin_lim_power
        self.momentum = momentum
        self.refine_iters = refine_iters
        self.seed = seed
        self.max_peak = max_peak
        basis = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.basis = torch.from_numpy(basis.astype(np.float32))  # [n_mels, n_freq]
        # [n_freq, n_mels]; computed in float64 because the basis is badly conditioned.
        self.inv_basis = torch.from_numpy(np.linalg.pinv(basis).astype(np.float32))
        self.window = torch.hann_window(cfg.win_length, periodic=True)  # [win_length]

    def _stft(self, wav: Tensor, window: Tensor) -> Tensor:
        """``[S] -> [n_freq, T]`` complex; the same framing as MelSpectrogram."""
        return torch.stft(
            wav,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )

    def _istft(self, spec: Tensor, window: Tensor, length: int) -> Tensor:
        """``[n_freq, T]`` complex -> ``[length]``."""
        return torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window,
            center=True,
            length=length,
        )

    def linear_magnitude(self, log_mel: Tensor) -> Tensor:
        """``[n_mels, T]`` log-mel -> ``[n_fft // 2 + 1, T]`` estimated linear magnitude."""
        basis = self.basis.to(device=log_mel.device)
        target = torch.exp(log_mel.float())  # [n_mels, T]
        # Strictly positive start: a multiplicative update can never move a zero.
        mag = torch.clamp(self.inv_basis.to(device=log_mel.device) @ target, min=1e-8)
        if self.refine_iters > 0:
            tiny = torch.finfo(mag.dtype).tiny
            norm = basis.sum(dim=0).clamp(min=tiny)[:, None]  # [n_freq, 1]
            for _ in range(self.refine_iters):
                ratio = target / (basis @ mag).clamp(min=tiny)  # [n_mels, T]
                mag = mag * (basis.T @ ratio) / norm
        return mag.pow(self.power)

    @torch.no_grad()
    def __call__(self, log_mel: Tensor,
                 cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """``[n_mels, T]`` log-mel -> ``[hop_length * (T - 1)]`` float32 waveform (numpy, CPU).
        ``cancel``: asked before every iteration; True raises :class:`Cancelled`."""
        if log_mel.dim() != 2 or log_mel.shape[0] != self.n_mels:
            raise ValueError(
                f"expected a log-mel of shape [{self.n_mels}, T], got {tuple(log_mel.shape)}"
            )
        n_frames = log_mel.shape[1]
        length = self.hop_length * (n_frames - 1)
        if n_frames < 2:
            return np.zeros(length, dtype=np.float32)
        # stft's reflect padding needs more than n_fft // 2 samples: pad very short mels with
        # silence frames (the floor value) and cut the output back to ``length``.
        min_frames = self.n_fft // self.hop_length + 2
        if n_frames < min_frames:
            floor = log_mel.min().expand(self.n_mels, min_frames - n_frames)
            return self(torch.cat([log_mel, floor], dim=1), cancel)[:length]
        device = log_mel.device
        window = self.window.to(device)
        mag = self.linear_magnitude(log_mel)  # [n_freq, T]

        gen = torch.Generator().manual_seed(self.seed)  # CPU generator: same phase on any device
        phase = torch.rand(mag.shape, generator=gen).to(device) * (2.0 * math.pi)
        angles = torch.polar(torch.ones_like(mag), phase)  # [n_freq, T] unit complex
        prev = torch.zeros_like(angles)
        for i in range(self.n_iters):
            if cancel is not None and cancel():
                raise Cancelled("Griffin-Lim", i)
            wav = self._istft(mag * angles, window, length)
            rebuilt = self._stft(wav, window)
            angles = rebuilt - prev * (self.momentum / (1.0 + self.momentum))
            angles = angles / angles.abs().clamp(min=1e-16)
            prev = rebuilt
        wav = self._istft(mag * angles, window, length)

        peak = float(wav.abs().max())
        if not math.isfinite(peak):
            raise FloatingPointError("Griffin-Lim produced non-finite samples")
        if peak > self.max_peak:
            wav = wav * (self.max_peak / peak)
        return wav.cpu().numpy().astype(np.float32, copy=False)


_GRIFFIN_LIM_NAMES = {"griffin_lim", "griffin-lim", "griffinlim"}
_HIFIGAN_PREFIX = "hifigan:"


class VocoderError(ValueError):
    """A vocoder name, vocoder/model pairing or mel file that cannot be used; says what to do."""


def load_vocoder(name: str | None, cfg: AudioConfig | None,
                 config_path: str | Path | None = None,
                 device: torch.device | str | None = None) -> Vocoder:
    """The vocoder called ``name`` for mels of ``cfg`` (``None``: mels made elsewhere, e.g. a
    ``vocode --mel`` file: a HiFi-GAN is taken on its own config, Griffin-Lim on the default
    audio settings).

    ``None`` or ``"griffin_lim"``: :class:`GriffinLim` (runs on each mel's device).
    ``"hifigan:PATH"``: the HiFi-GAN generator file PATH with ``config.json`` beside it, or
    ``config_path``; on ``device`` if given, else on each mel's device. Its ``num_mels``,
    ``sampling_rate`` and ``hop_size`` must equal ``cfg``'s (``VocoderError`` naming both
    values otherwise); a different ``n_fft``, ``win_size``, ``fmin`` or ``fmax`` is logged as a
    warning, since the mel then differs in detail only.
    """
    key = "griffin_lim" if name is None else name.strip()
    if key.lower() in _GRIFFIN_LIM_NAMES:
        if config_path is not None:
            raise VocoderError(f"a vocoder config ({config_path}) was given but the vocoder is "
                               "Griffin-Lim; name a HiFi-GAN with --vocoder hifigan:PATH")
        return GriffinLim(cfg or AudioConfig())
    if key.lower().startswith(_HIFIGAN_PREFIX):
        path = key[len(_HIFIGAN_PREFIX):]
        if not path:
            raise VocoderError("--vocoder hifigan: needs the generator file, e.g. "
                               "hifigan:LJ_V1/generator_v1")
        vocoder = HifiGan.load(path, config_path, device)
        if cfg is not None:
            check_hifigan_fits(vocoder, cfg)
        return vocoder
    if Path(key).exists():
        raise VocoderError(f"vocoder {key!r}: name a HiFi-GAN generator file as "
                           f"'hifigan:{key}'")
    raise VocoderError(f"unknown vocoder {key!r}: expected 'griffin_lim' or 'hifigan:PATH' "
                       "(a HiFi-GAN generator file)")


def check_hifigan_fits(vocoder: HifiGan, cfg: AudioConfig) -> None:
    """Raise :class:`VocoderError` unless the generator was trained on ``cfg``'s mel shape and
    rate; warn where it was trained on a mel that differs in detail (window, band edges)."""
    h = vocoder.cfg
    hard = [("num_mels", h.num_mels, "n_mels", cfg.n_mels),
            ("sampling_rate", h.sampling_rate, "sample_rate", cfg.sample_rate),
            ("hop_size", h.hop_size, "hop_length", cfg.hop_length)]
    bad = [f"{k} {v} but the model's audio.{ak} is {av}" for k, v, ak, av in hard if v != av]
    if bad:
        raise VocoderError(f"HiFi-GAN {vocoder.source}: its config says {'; '.join(bad)}; use "
                           "a HiFi-GAN trained on the same mel settings as the model")
    soft = [("n_fft", h.n_fft, "n_fft", cfg.n_fft),
            ("win_size", h.win_size, "win_length", cfg.win_length),
            ("fmin", h.fmin, "fmin", cfg.fmin),
            ("fmax", h.fmax, "fmax", cfg.fmax)]
    for k, v, ak, av in soft:
        if v is not None and v != av:
            log.warning("HiFi-GAN %s: its config says %s %s but the model's audio.%s is %s; "
                        "expect lower quality", vocoder.source, k, v, ak, av)


def read_mel(path: str | Path, n_mels: int) -> Tensor:
    """A log-mel saved with ``np.save`` -> ``[n_mels, T]`` float32 tensor.

    ``[1, n_mels, T]`` (a batch of one, as some synthesis scripts save it) is accepted too.
    Anything else, a missing file or non-finite values raise :class:`VocoderError`.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise VocoderError(f"{path}: no such mel file") from None
    except (OSError, ValueError) as exc:
        raise VocoderError(f"{path}: cannot read it as a .npy array ({exc})") from None
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[0] != n_mels or arr.shape[1] == 0:
        raise VocoderError(f"{path}: expected a log-mel of shape [{n_mels}, T] (n_mels of the "
                           f"audio settings, T > 0), got {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise VocoderError(f"{path}: expected float log-mel values, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise VocoderError(f"{path}: the mel holds NaN or infinite values")
    return torch.from_numpy(arr.astype(np.float32))
