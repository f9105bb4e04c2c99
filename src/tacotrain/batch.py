"""The padded training batch: built by ``data.loader.Collate``, consumed by the model and loss."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Batch(NamedTuple):
    """One padded batch; items need not be sorted by length.

    ``mels`` is padded to a multiple of the model's reduction factor r; padded values are
    arbitrary (every loss masks them). ``gate_targets`` is 1 from the last real frame on.
    """

    text: Tensor  # [B, N] long, 0 = padding
    text_lengths: Tensor  # [B] long
    mels: Tensor  # [B, n_mels, T] float
    mel_lengths: Tensor  # [B] long
    gate_targets: Tensor  # [B, T] float
    ids: tuple[str, ...] = ()  # item ids, for logs

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor to ``device`` (``non_blocking`` helps with pinned memory)."""
        tensors = (t.to(device, non_blocking=non_blocking) for t in self[:5])
        return Batch(*tensors, self.ids)


def make_gate_targets(mel_lengths: Tensor, max_len: int) -> Tensor:
    """``[B]`` lengths -> ``[B, max_len]`` float stop targets: 1 at frames t >= length - 1."""
    t = torch.arange(max_len, device=mel_lengths.device)[None, :]
    return (t >= (mel_lengths[:, None] - 1)).float()
