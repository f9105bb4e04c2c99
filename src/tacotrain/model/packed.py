"""Conv + batch-norm stacks over packed sequences: the padded batch's result, without the padding.

The encoder and postnet convolve a padded batch ``[B, C, T]`` whose padded positions are zeroed
after every layer, and their batch norms take statistics over all ``B * T`` positions, padding
included (as NVIDIA's code does). On the batch NVIDIA's reference was timed on, 56% of the
postnet's positions are padding. ``PackedLayout`` lays the items end to end instead, each
followed by a gap of zeros as wide as the kernel's reach, so every real position sees exactly
what it sees in the padded batch. The batch norm still gets the padded batch's statistics:

* the first ``left`` gap positions after an item are its "tail": in the padded batch they are
  padding positions whose window reaches back into the item; they are computed and counted;
* every other padding position of the padded batch sees only zeros, so its conv output is
  exactly the conv's bias; those positions are counted analytically (``n_virtual`` of them);
* the remaining gap positions see the next item and exist only here; they are not counted.

After each layer every gap position is zeroed again, as the padded batch zeroes its padding.
Dropout masks are drawn for the padded shape and packed, so a seed draws the same masks as the
padded path and both give the same result, to rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNorm, keep_mask


class PackedLayout(NamedTuple):
    """Where each position of a padded batch ``[B, C, T]`` lives in the packed ``[C, P]``."""

    batch: int
    steps: int  # T
    gather: Tensor  # [P] long: padded flat index (b * T + t) of each packed position, B*T: zero
    scatter: Tensor  # [B * T] long: packed position of each padded position, P: zero
    real: Tensor  # [P] bool: a real position
    counted: Tensor  # [P] float: 1 where the position is part of the padded batch's statistics
    n_counted: int
    n_virtual: int  # padding positions whose conv output is exactly the bias


def packed_layout(lengths: Tensor, steps: int, left: int, right: int) -> PackedLayout:
    """Layout for items of ``lengths [B]`` (1..steps) and a kernel that reads ``left`` positions
    back and ``right`` ahead."""
    lens = lengths.clamp(1, steps).tolist()
    gap = left + right
    gather, real, counted = [], [], []
    for b, n in enumerate(lens):
        base = b * steps
        gather += range(base, base + n)
        real += [True] * n
        counted += [1.0] * n
        tail = min(left, steps - n)  # padding positions whose window reaches the item
        gather += [len(lens) * steps] * gap
        real += [False] * gap
        counted += [1.0] * tail + [0.0] * (gap - tail)
    dev = lengths.device
    gather_t = torch.tensor(gather, dtype=torch.long, device=dev)
    real_t = torch.tensor(real, dtype=torch.bool, device=dev)
    scatter = torch.full((len(lens) * steps,), len(gather), dtype=torch.long, device=dev)
    scatter[gather_t[real_t]] = torch.nonzero(real_t).squeeze(1)
    n_counted = int(sum(counted))
    return PackedLayout(len(lens), steps, gather_t, scatter, real_t,
                        torch.tensor(counted, device=dev), n_counted,
                        len(lens) * steps - n_counted)


def pack(x: Tensor, layout: PackedLayout) -> Tensor:
    """``[B, C, T]`` -> ``[C, P]`` (gap positions zero)."""
    flat = x.transpose(0, 1).reshape(x.size(1), -1)
    flat = torch.cat((flat, flat.new_zeros(flat.size(0), 1)), dim=1)
    return flat.index_select(1, layout.gather)


def unpack(x: Tensor, layout: PackedLayout) -> Tensor:
    """``[C, P]`` -> ``[B, C, T]`` (padding zero)."""
    x = torch.cat((x, x.new_zeros(x.size(0), 1)), dim=1).index_select(1, layout.scatter)
    return x.view(x.size(0), layout.batch, layout.steps).transpose(0, 1)


def packed_dropout(x: Tensor, p: float, training: bool, layout: PackedLayout) -> Tensor:
    """Dropout on packed ``x [C, P]`` with the mask the padded shape would draw (its packed
    positions are read straight from the flat ``[B, C, T]`` mask: one gather, no transpose)."""
    if not training or p == 0.0:
        return x
    c, t = x.size(0), layout.steps
    mask = keep_mask((layout.batch * c * t,), p, x)
    gather = layout.gather.clamp(max=layout.batch * t - 1)  # gaps: any position, zeroed later
    flat = (gather // t) * (c * t) + gather % t  # [P]: (b, t) -> b * C * T + t
    index = flat.unsqueeze(0) + torch.arange(c, device=x.device).unsqueeze(1) * t  # [C, P]
    return x * mask.take(index)


def conv_bn(conv: ConvNorm, bn: nn.BatchNorm1d, x: Tensor, layout: PackedLayout) -> Tensor:
    """``bn(conv(x))`` of the padded batch, on packed ``x [C_in, P]`` -> ``[C_out, P]``."""
    y = conv(x.unsqueeze(0)).squeeze(0)  # [C_out, P]
    if not bn.training and bn.running_mean is not None:
        return F.batch_norm(y.unsqueeze(0), bn.running_mean, bn.running_var, bn.weight,
                            bn.bias, False, 0.0, bn.eps).squeeze(0)
    bias = conv.conv.bias if conv.conv.bias is not None else y.new_zeros(y.size(0))
    n, nv = layout.n_counted + layout.n_virtual, layout.n_virtual
    counted = layout.counted.to(y.dtype)
    mean = (y @ counted + nv * bias) / n  # [C_out]
    dev = y - mean.unsqueeze(1)
    var = ((dev * dev) @ counted + nv * (bias - mean) ** 2) / n  # biased, as BN's
    if bn.training and bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():  # nn.BatchNorm1d's update, unbiased variance
            bn.num_batches_tracked.add_(1)
            f = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                 else bn.momentum)
            bn.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
            bn.running_var.mul_(1 - f).add_(var.detach() * (n / max(n - 1, 1)), alpha=f)
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    y = dev * scale.unsqueeze(1)
    return y + bn.bias.unsqueeze(1) if bn.bias is not None else y


def zero_gaps(x: Tensor, layout: PackedLayout) -> Tensor:
    """Zero every packed position that is not real (the padded batch's masking)."""
    return torch.where(layout.real, x, 0.0)
