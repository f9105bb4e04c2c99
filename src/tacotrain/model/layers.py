"""Linear and 1-D convolution layers with NVIDIA/tacotron2's Xavier initialisation.

Tacotron 2 is sensitive to initialisation early in training (the attention has to find the
diagonal before the decoder learns to ignore it), so we keep the reference init: Xavier-uniform
with the gain of the non-linearity that follows the layer. Attribute names (``linear_layer``,
``conv``) match NVIDIA's so their checkpoints can warm-start ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def frame_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``[B]`` lengths -> ``[B, max_len]`` bool mask, True at valid positions (< length)."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def dropout(x: Tensor, p: float, training: bool,
            generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout, as ``F.dropout``. On a CPU the mask is drawn with ``torch.rand``:
    ``F.dropout``'s Bernoulli sampler there costs ~40 ns per element (0.1 s for one prenet
    batch, 0.5 ms for each decoder step's ``[16, 1024]``), seconds per full-size step.

    ``generator`` (on ``x``'s device): draw the mask from it instead of torch's global
    generator, on any device, so that concurrent syntheses each repeat their own seed. On a
    CPU a generator seeded with s draws what ``torch.manual_seed(s)`` would."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" and generator is None:
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p, x, generator)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, like: Tensor,
              generator: torch.Generator | None = None) -> Tensor:
    """The scaled keep mask ``dropout`` multiplies by on a CPU (1 / (1 - p) where kept, 0
    elsewhere), drawn from the same random stream (``generator``, else torch's global one), in
    ``like``'s dtype and device."""
    keep = torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator) >= p
    return keep.to(like.dtype).mul_(1.0 / (1.0 - p))


class LinearNorm(nn.Module):
    """``nn.Linear`` with Xavier-uniform weights scaled for the following non-linearity."""

    def __init__(
        self, in_dim: int, out_dim: int, bias: bool = True, w_init_gain: str = "linear"
    ) -> None:
        super().__init__()
        self.linear_layer = nn.Linear(in_dim, out_dim, bias=bias)
        nn.init.xavier_uniform_(self.linear_layer.weight, gain=nn.init.calculate_gain(w_init_gain))

    def forward(self, x: Tensor) -> Tensor:
        """``[..., in_dim]`` -> ``[..., out_dim]``."""
        return self.linear_layer(x)


class ConvNorm(nn.Module):
    """``nn.Conv1d`` ("same" length output by default) with Xavier-uniform weights.

    Odd kernels are padded symmetrically as in NVIDIA's code; even kernels get (K - 1) // 2
    zeros on the left and the rest on the right (PyTorch's ``padding="same"`` rule, done with an
    explicit ``F.pad`` to avoid its extra copy and warning), so any kernel size keeps the length.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        bias: bool = True,
        w_init_gain: str = "linear",
    ) -> None:
        super().__init__()
        self.extra_pad: tuple[int, int] | None = None
        if padding is None:
            total = dilation * (kernel_size - 1)
            if total % 2 == 0:
                padding = total // 2
            else:
                if stride != 1:
                    raise ValueError("even kernel sizes need stride 1 for 'same' padding")
                self.extra_pad = (total // 2, total - total // 2)
                padding = 0
        # how far an output position reads back and ahead (the zeros each side)
        self.reach: tuple[int, int] = self.extra_pad or (padding, padding)
        self.conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
        )
        nn.init.xavier_uniform_(self.conv.weight, gain=nn.init.calculate_gain(w_init_gain))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_channels, T]`` -> ``[B, out_channels, T]``."""
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return self.conv(x)
