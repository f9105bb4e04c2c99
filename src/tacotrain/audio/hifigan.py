"""HiFi-GAN generator (Kong et al. 2020): log-mel -> waveform with a trained neural vocoder.

Griffin-Lim needs no training but sounds metallic; a HiFi-GAN generator trained on the same
log-mel gives natural audio. This module reads generators in the format of the authors'
release (jik876/hifi-gan): a ``torch.save``d dict ``{"generator": state_dict}`` whose convs
carry weight norm (``weight_g``, ``weight_v``, ``bias``), and the ``config.json`` beside it
(V1, V2 and V3 all fit: ResBlock1 or ResBlock2, any upsampling stack).

Weight norm only matters for training, so it is folded at load (``w = g * v / ||v||``, the
norm over every dim but 0, as ``torch.nn.utils.weight_norm(dim=0)`` does for Conv1d and
ConvTranspose1d alike) and the module holds plain conv weights. The forward pass is the
published one: ``conv_pre``; per upsampling stage a leaky ReLU (slope 0.1), the transposed
conv, then the mean of that stage's residual blocks; a leaky ReLU with torch's default slope
(0.01), ``conv_post`` and ``tanh``. The output is not normalised or scaled: the authors'
inference writes ``audio * 32768`` as int16 as it comes.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

LRELU_SLOPE = 0.1  # inside the network; the last activation uses torch's default 0.01
_PRE_POST_KERNEL = 7  # conv_pre and conv_post: kernel 7, padding 3, in every released config
_BLOCK_CONVS = {"1": 3, "2": 2}  # dilated convs per residual block of each kind


class HifiGanError(ValueError):
    """A HiFi-GAN generator file or config.json that cannot be used; the message names it."""


@dataclass(frozen=True)
class HifiGanConfig:
    """The parts of a HiFi-GAN ``config.json`` that shape the generator and its features.

    ``n_fft``, ``win_size``, ``fmin`` and ``fmax`` describe the mel it was trained on (``None``
    where the file leaves them out or sets them to null); training-only keys are ignored.
    """

    resblock: str  # "1": ResBlock1 (V1, V2), "2": ResBlock2 (V3)
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    num_mels: int
    sampling_rate: int
    hop_size: int
    n_fft: int | None = None
    win_size: int | None = None
    fmin: float | None = None
    fmax: float | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str) -> HifiGanConfig:
        """Check and convert a parsed config; errors name ``source`` and the key."""
        if not isinstance(raw, Mapping):
            raise HifiGanError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        required = ("resblock", "upsample_rates", "upsample_kernel_sizes",
                    "upsample_initial_channel", "resblock_kernel_sizes",
                    "resblock_dilation_sizes", "num_mels", "sampling_rate", "hop_size")
        missing = [k for k in required if k not in raw]
        if missing:
            raise HifiGanError(f"{source}: missing key(s) {', '.join(missing)}; is this the "
                               "config.json of a HiFi-GAN generator?")

        def ints(key: str, value: Any) -> tuple[int, ...]:
            if (not isinstance(value, list | tuple) or not value
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                               for v in value)):
                raise HifiGanError(f"{source}: {key} must be a non-empty list of positive "
                                   f"integers, got {value!r}")
            return tuple(value)

        def pos_int(key: str) -> int:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise HifiGanError(f"{source}: {key} must be a positive integer, got {value!r}")
            return value

        def optional(key: str, kind: type) -> Any:
            value = raw.get(key)
            if value is None:
                return None
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise HifiGanError(f"{source}: {key} must be a number or null, got {value!r}")
            return kind(value)

        resblock = str(raw["resblock"])
        if resblock not in _BLOCK_CONVS:
            raise HifiGanError(f"{source}: resblock must be \"1\" or \"2\", got "
                               f"{raw['resblock']!r}")
        rates = ints("upsample_rates", raw["upsample_rates"])
        kernels = ints("upsample_kernel_sizes", raw["upsample_kernel_sizes"])
        if len(rates) != len(kernels):
            raise HifiGanError(f"{source}: upsample_rates has {len(rates)} entries but "
                               f"upsample_kernel_sizes has {len(kernels)}")
        for u, k in zip(rates, kernels, strict=True):
            if k < u:
                raise HifiGanError(f"{source}: upsample kernel {k} is smaller than its rate {u}")
        block_kernels = ints("resblock_kernel_sizes", raw["resblock_kernel_sizes"])
        dil_raw = raw["resblock_dilation_sizes"]
        if not isinstance(dil_raw, list | tuple) or len(dil_raw) != len(block_kernels):
            raise HifiGanError(f"{source}: resblock_dilation_sizes must be a list with one "
                               f"list per resblock_kernel_sizes entry ({len(block_kernels)}), "
                               f"got {dil_raw!r}")
        n_convs = _BLOCK_CONVS[resblock]
        dilations = tuple(ints(f"resblock_dilation_sizes[{j}]", d) for j, d in enumerate(dil_raw))
        for j, d in enumerate(dilations):
            if len(d) != n_convs:
                raise HifiGanError(f"{source}: resblock_dilation_sizes[{j}] has {len(d)} "
                                   f"entries; resblock \"{resblock}\" takes {n_convs}")
        channels = pos_int("upsample_initial_channel")
        if channels >> len(rates) < 1:
            raise HifiGanError(f"{source}: upsample_initial_channel {channels} cannot be halved "
                               f"{len(rates)} times")
        cfg = cls(resblock=resblock, upsample_rates=rates, upsample_kernel_sizes=kernels,
                  upsample_initial_channel=channels, resblock_kernel_sizes=block_kernels,
                  resblock_dilation_sizes=dilations, num_mels=pos_int("num_mels"),
                  sampling_rate=pos_int("sampling_rate"), hop_size=pos_int("hop_size"),
                  n_fft=optional("n_fft", int), win_size=optional("win_size", int),
                  fmin=optional("fmin", float), fmax=optional("fmax", float))
        if math.prod(rates) != cfg.hop_size:
            raise HifiGanError(f"{source}: upsample_rates {list(rates)} multiply to "
                               f"{math.prod(rates)} but hop_size is {cfg.hop_size}")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> HifiGanConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HifiGanError(f"{path}: no such HiFi-GAN config file; give the config.json the "
                               "generator was trained with (--vocoder-config)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HifiGanError(f"{path}: cannot read it as a JSON config ({exc})") from None
        return cls.from_dict(raw, str(path))


def _padding(kernel: int, dilation: int) -> int:
    """'Same' padding of a stride-1 dilated conv with an odd kernel."""
    return (kernel * dilation - dilation) // 2


def _conv(channels: int, kernel: int, dilation: int) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, kernel, dilation=dilation,
                     padding=_padding(kernel, dilation))


class ResBlock1(nn.Module):
    """Pairs (dilated conv, plain conv), each pair a residual step: ``[B, C, L] -> [B, C, L]``."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_conv(channels, kernel, d) for d in dilations)
        self.convs2 = nn.ModuleList(_conv(channels, kernel, 1) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for dilated, plain in zip(self.convs1, self.convs2, strict=True):
            h = dilated(F.leaky_relu(x, LRELU_SLOPE))
            x = x + plain(F.leaky_relu(h, LRELU_SLOPE))
        return x


class ResBlock2(nn.Module):
    """Dilated convs, each a residual step (the lighter V3 block): ``[B, C, L] -> [B, C, L]``."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(channels, kernel, d) for d in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class HifiGanGenerator(nn.Module):
    """Log-mel ``[B, num_mels, T]`` -> waveform ``[B, 1, T * hop_size]`` in [-1, 1].

    Parameter names are those of the released generators without the weight-norm split
    (``conv_pre.weight`` for ``conv_pre.weight_g`` / ``conv_pre.weight_v``), so a file maps
    onto the module name for name; :meth:`load_weight_normed` does the folding.
    """

    def __init__(self, cfg: HifiGanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0 = cfg.upsample_initial_channel
        pad = _PRE_POST_KERNEL // 2
        self.conv_pre = nn.Conv1d(cfg.num_mels, c0, _PRE_POST_KERNEL, padding=pad)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(c0 >> i, c0 >> (i + 1), k, stride=u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes,
                                           strict=True)))
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        # stage i's blocks are resblocks[i * n_kernels + j], one per kernel size j
        self.resblocks = nn.ModuleList(
            block(c0 >> (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True))
        self.conv_post = nn.Conv1d(c0 >> len(self.ups), 1, _PRE_POST_KERNEL, padding=pad)
        self.requires_grad_(False)

    def forward(self, mel: Tensor) -> Tensor:
        n_kernels = len(self.cfg.resblock_kernel_sizes)
        x = self.conv_pre(mel)  # [B, C0, T]
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # [B, C0 / 2^(i+1), T * u_0 * ... * u_i]
            blocks = self.resblocks[i * n_kernels:(i + 1) * n_kernels]
            x = sum((b(x) for b in blocks[1:]), blocks[0](x)) / n_kernels
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01, as released
        return torch.tanh(x)  # [B, 1, T * hop_size]

    def conv_names(self) -> list[str]:
        """Module names of every conv, in the order of the released state dicts."""
        return [name for name, m in self.named_modules()
                if isinstance(m, nn.Conv1d | nn.ConvTranspose1d)]

    def load_weight_normed(self, state: Mapping[str, Any], source: str) -> None:
        """Load a released state dict (``weight_g`` / ``weight_v`` / ``bias`` per conv), folding
        weight norm into plain weights. Missing, unexpected or misshapen tensors raise
        :class:`HifiGanError` naming them and ``source``."""
        if not isinstance(state, Mapping):
            raise HifiGanError(f"{source}: 'generator' is a {type(state).__name__}, not a "
                               "state dict")
        names = self.conv_names()
        expected = {f"{n}.{p}" for n in names for p in ("weight_g", "weight_v", "bias")}
        keys = set(map(str, state.keys()))
        missing = sorted(expected - keys, key=_natural)
        unexpected = sorted(keys - expected, key=_natural)
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {_few(missing)}")
            if unexpected:
                parts.append(f"unexpected {_few(unexpected)}")
            hint = ("weight-normed convs (weight_g, weight_v) are expected, as in the released "
                    "generators" if any(k.endswith(".weight") for k in unexpected)
                    else "the config.json does not describe this generator")
            raise HifiGanError(f"{source}: not a HiFi-GAN generator of this config: "
                               f"{'; '.join(parts)} ({hint})")
        modules = dict(self.named_modules())
        folded: dict[str, Tensor] = {}
        wrong: list[str] = []
        for name in names:
            weight, bias = modules[name].weight, modules[name].bias
            g, v, b = (state[f"{name}.{p}"] for p in ("weight_g", "weight_v", "bias"))
            g_shape = (weight.shape[0],) + (1,) * (weight.dim() - 1)
            for key, t, shape in ((f"{name}.weight_v", v, weight.shape),
                                  (f"{name}.weight_g", g, g_shape),
                                  (f"{name}.bias", b, bias.shape)):
                if not isinstance(t, Tensor) or tuple(t.shape) != tuple(shape):
                    got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
                    wrong.append(f"{key} {got} (config gives {list(shape)})")
            if not wrong:
                folded[f"{name}.weight"] = fold_weight_norm(g, v)
                folded[f"{name}.bias"] = b.float()
        if wrong:
            raise HifiGanError(f"{source}: tensor shapes do not fit the config: {_few(wrong)}; "
                               "use the config.json the generator was trained with")
        self.load_state_dict(folded, strict=True)


def fold_weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """``g * v / ||v||`` with the norm over every dim but 0: ``v [D0, ...]``, ``g [D0, 1, ...]``.

    Computed in float64 so that the folded float32 weight is the correctly rounded value.
    """
    v64 = v.double()
    norm = v64.flatten(1).norm(dim=1).clamp(min=torch.finfo(torch.float64).tiny)  # [D0]
    scale = g.double().reshape(-1) / norm  # [D0]
    return (v64 * scale.reshape((-1,) + (1,) * (v.dim() - 1))).float()


def _natural(key: str) -> list[tuple[int, Any]]:
    """Sort key that puts ``ups.2`` before ``ups.10`` (numbers before names at a level)."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in key.split(".")]


def _few(items: list[str], n: int = 6) -> str:
    """The first ``n`` items and how many more there are."""
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def read_generator_state(path: str | Path) -> Mapping[str, Any]:
    """The ``"generator"`` state dict of a released generator file (tensors only: loaded with
    ``weights_only=True``, so a file that needs arbitrary code to unpickle is refused)."""
    path = Path(path)
    if not path.is_file():
        raise HifiGanError(f"{path}: no such HiFi-GAN generator file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError,
            zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HifiGanError(f"{path}: cannot load it as a torch file of tensors ({first})") from None
    if not isinstance(raw, Mapping) or "generator" not in raw:
        keys = _few(sorted(map(str, raw.keys()))) if isinstance(raw, Mapping) else None
        found = f"its keys are {keys}" if keys else f"it holds a {type(raw).__name__}"
        raise HifiGanError(f"{path}: no 'generator' entry ({found}); give the generator file "
                           "(g_XXXXXXXX) of a HiFi-GAN release, not the discriminator/optimizer "
                           "file (do_XXXXXXXX)")
    return raw["generator"]


class HifiGan:
    """The :class:`~tacotrain.audio.vocoder.Vocoder` of a HiFi-GAN generator.

    With ``device`` given the generator stays there and mels are moved to it; without, it runs
    on the device of each mel it is given (moving itself there on the first call).
    """

    def __init__(self, generator: HifiGanGenerator, source: str,
                 device: torch.device | str | None = None) -> None:
        self.generator = generator.eval()
        self.cfg = generator.cfg
        self.source = source  # the generator file, for messages
        self.sample_rate = self.cfg.sampling_rate
        self.hop_length = self.cfg.hop_size
        self.n_mels = self.cfg.num_mels
        self.device = None if device is None else torch.device(device)
        if self.device is not None:
            self.generator.to(self.device)

    @classmethod
    def load(cls, path: str | Path, config_path: str | Path | None = None,
             device: torch.device | str | None = None) -> HifiGan:
        """A released generator file; its config is ``config.json`` beside it unless given."""
        path = Path(path)
        config_path = path.parent / "config.json" if config_path is None else Path(config_path)
        if not config_path.is_file():
            raise HifiGanError(f"{config_path}: not found; a HiFi-GAN generator needs the "
                               "config.json it was trained with (beside it, or given with "
                               "--vocoder-config)")
        cfg = HifiGanConfig.load(config_path)
        state = read_generator_state(path)
        generator = HifiGanGenerator(cfg)
        generator.load_weight_normed(state, f"{path} (with {config_path})")
        log.info("HiFi-GAN generator %s: %d parameters, resblock %s, upsampling %s", path,
                 sum(p.numel() for p in generator.parameters()), cfg.resblock,
                 "x".join(map(str, cfg.upsample_rates)))
        return cls(generator, str(path), device)

    @torch.no_grad()
    def __call__(self, log_mel: Tensor, cancel: Callable[[], bool] | None = None
                 ) -> np.ndarray:
        """``[n_mels, T]`` natural-log mel -> ``[T * hop_length]`` float32 waveform (numpy, CPU),
        as the generator gives it: not normalised, not scaled. ``cancel`` is not asked: one
        pass of the generator has no step to stop at."""
        if log_mel.dim() != 2 or log_mel.shape[0] != self.n_mels:
            raise ValueError(f"expected a log-mel of shape [{self.n_mels}, T], got "
                             f"{tuple(log_mel.shape)}")
        n_frames = int(log_mel.shape[1])
        if n_frames == 0:
            return np.zeros(0, dtype=np.float32)
        device = self.device or log_mel.device
        if self.generator.conv_pre.weight.device != device:
            self.generator.to(device)
        wav = self.generator(log_mel.to(device=device, dtype=torch.float32)[None])  # [1, 1, S]
        # kernel - rate odd in a stage adds a sample there: keep exactly T * hop samples
        wav = wav[0, 0, : n_frames * self.hop_length]
        return wav.cpu().numpy().astype(np.float32, copy=False)
