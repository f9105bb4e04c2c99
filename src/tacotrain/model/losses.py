"""Masked Tacotron 2 losses and the guided attention loss (Tachibana et al. 2017).

Every loss is a mean over *valid* elements only: padded frames, padded decoder steps and padded
tokens are excluded with ``torch.where`` (not multiplication), so even inf/NaN garbage in the
padding cannot leak into a loss or its gradient. All reductions run in float32, so the losses are
safe under fp16/bf16 autocast.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tacotrain.batch import Batch

from ..config import LossConfig
from .layers import frame_mask
from .tacotron2 import Tacotron2Output


def masked_mel_loss(
    pred: Tensor, target: Tensor, mel_lengths: Tensor, kind: Literal["mse", "l1"] = "mse"
) -> Tensor:
    """Mean squared (or absolute) error over valid frames and all channels.

    pred, target ``[B, M, T]``, mel_lengths ``[B]`` -> scalar float32. The mean is over the
    ``M * sum(mel_lengths)`` valid cells, so every real frame weighs the same whatever the batch
    padding.
    """
    if kind not in ("mse", "l1"):
        raise ValueError(f"unknown mel loss {kind!r} (expected 'mse' or 'l1')")
    mask = frame_mask(mel_lengths, pred.size(2)).unsqueeze(1)  # [B, 1, T]
    diff = torch.where(mask, pred.float() - target.float(), 0.0)  # [B, M, T]
    err = diff.square() if kind == "mse" else diff.abs()
    n_valid = mel_lengths.sum().clamp(min=1) * pred.size(1)
    return err.sum() / n_valid


def gate_loss(
    logits: Tensor,
    targets: Tensor,
    mel_lengths: Tensor,
    pos_weight: float,
    n_frames_per_step: int = 1,
) -> Tensor:
    """Binary cross-entropy of the stop logits over the frames of valid decoder steps.

    logits, targets ``[B, T]``, mel_lengths ``[B]`` -> scalar float32. Sample b contributes the
    frames ``t < ceil(mel_len_b / r) * r``: every frame its real decoder steps emit, including the
    frames of the last step that lie past the end of the audio (target 1: "stop here"), because
    at inference a stop on any of a step's r frames ends the utterance. ``pos_weight`` scales
    the rare positive (stop) terms. Mean over those valid frames.
    """
    r = n_frames_per_step
    valid_len = ((mel_lengths + r - 1) // r) * r
    mask = frame_mask(valid_len, logits.size(1))  # [B, T]
    x = torch.where(mask, logits.float(), 0.0)
    y = torch.where(mask, targets.float(), 0.0)
    pw = torch.tensor(pos_weight, dtype=torch.float32, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none")
    return torch.where(mask, bce, 0.0).sum() / mask.sum().clamp(min=1)


def guided_attention_weights(
    text_lengths: Tensor,
    dec_lengths: Tensor,
    max_dec: int,
    max_text: int,
    sigma: float,
) -> Tensor:
    """Penalty map W ``[B, max_dec, max_text]`` float32, zero outside each item's valid region.

    W[b, t, n] = 1 - exp(-(n / N_b - t / T_b)^2 / (2 sigma^2)) with N_b = text_lengths[b] and
    T_b = dec_lengths[b] (each item's OWN lengths, never batch maxima) and 0-based t, n, so
    W is 0 on that item's diagonal and approaches 1 far from it.
    """
    dev = text_lengths.device
    n = torch.arange(max_text, device=dev, dtype=torch.float32)[None, None, :]  # [1, 1, N]
    t = torch.arange(max_dec, device=dev, dtype=torch.float32)[None, :, None]  # [1, T, 1]
    nn_ = text_lengths.float().clamp(min=1)[:, None, None]  # [B, 1, 1]
    tt = dec_lengths.float().clamp(min=1)[:, None, None]
    w = 1.0 - torch.exp(-((n / nn_ - t / tt) ** 2) / (2.0 * sigma * sigma))  # [B, T, N]
    valid = (n < text_lengths[:, None, None]) & (t < dec_lengths[:, None, None])
    return torch.where(valid, w, 0.0)


def guided_attention_loss(
    alignments: Tensor, text_lengths: Tensor, dec_lengths: Tensor, sigma: float
) -> Tensor:
    """Guided attention loss: sum(W * A) over valid cells / number of valid cells.

    alignments ``[B, T_dec, N]``, text_lengths ``[B]``, dec_lengths ``[B]`` -> scalar float32.
    The normalisation is the batch total of valid cells, sum_b T_b * N_b (ESPnet's choice):
    a longer item weighs proportionally more. Since each attention row sums to 1, the value is
    about (off-diagonal mass per step) / N, i.e. small; pick the weight accordingly.
    """
    b, t_max, n_max = alignments.shape
    w = guided_attention_weights(text_lengths, dec_lengths, t_max, n_max, sigma)
    valid = frame_mask(dec_lengths, t_max)[:, :, None] & frame_mask(text_lengths, n_max)[:, None]
    wa = w * torch.where(valid, alignments.float(), 0.0)  # w is already 0 outside `valid`
    n_cells = (text_lengths * dec_lengths).sum().clamp(min=1)
    return wa.sum() / n_cells


def attention_entropy(alignments: Tensor, text_lengths: Tensor, dec_lengths: Tensor) -> Tensor:
    """Mean entropy (nats) of the attention rows ``[B, T_dec, N]`` over valid decoder steps.

    A sharp alignment (each step on one token) has entropy 0; uniform attention over N tokens
    has log N. Used as an optional regulariser that rewards sharp attention.
    """
    t_max, n_max = alignments.shape[1:]
    steps = frame_mask(dec_lengths, t_max)  # [B, T]
    tokens = frame_mask(text_lengths, n_max)[:, None, :]  # [B, 1, N]
    a = torch.where(tokens, alignments.float(), 0.0)
    h = -(a * torch.log(a.clamp(min=1e-8))).sum(dim=2)  # [B, T]
    return torch.where(steps, h, 0.0).sum() / steps.sum().clamp(min=1)


class Tacotron2Loss(nn.Module):
    """Total loss = mel + mel_post + gate + ga_weight * guided_attn
    (+ entropy_weight * attention entropy, when the caller's scheduled weight is > 0).

    ``ga_weight`` is given by the caller on every call (a bounded, scheduled value); the loss
    never changes it. Guided attention is skipped (reported as 0) when ``ga_weight == 0`` or
    ``cfg.guided_attention.enabled`` is False.
    """

    def __init__(self, cfg: LossConfig, n_frames_per_step: int) -> None:
        super().__init__()
        self.mel_kind = cfg.mel_loss
        self.gate_pos_weight = cfg.gate_pos_weight
        self.ga_enabled = cfg.guided_attention.enabled
        self.ga_sigma = cfg.guided_attention.sigma
        self.r = n_frames_per_step

    def forward(self, out: Tacotron2Output, batch: Batch, ga_weight: float,
                entropy_weight: float = 0.0) -> dict[str, Tensor]:
        """-> ``{"loss", "mel", "mel_post", "gate", "guided_attn"}`` scalar float32 tensors,
        plus ``"attn_entropy"`` (unweighted) when ``entropy_weight`` > 0.

        ``guided_attn`` is unweighted; ``loss`` includes ``ga_weight * guided_attn``.
        """
        if ga_weight < 0:
            raise ValueError(f"ga_weight must be >= 0, got {ga_weight}")
        mel = masked_mel_loss(out.mel, batch.mels, batch.mel_lengths, self.mel_kind)
        mel_post = masked_mel_loss(out.mel_post, batch.mels, batch.mel_lengths, self.mel_kind)
        gate = gate_loss(
            out.gate, batch.gate_targets, batch.mel_lengths, self.gate_pos_weight, self.r
        )
        total = mel + mel_post + gate
        if ga_weight > 0 and self.ga_enabled:
            dec_lengths = (batch.mel_lengths + self.r - 1) // self.r
            ga = guided_attention_loss(
                out.alignments, batch.text_lengths, dec_lengths, self.ga_sigma
            )
            total = total + ga_weight * ga
        else:
            ga = torch.zeros((), dtype=torch.float32, device=mel.device)
        out_losses = {"mel": mel, "mel_post": mel_post, "gate": gate, "guided_attn": ga}
        if entropy_weight > 0:
            dec_lengths = (batch.mel_lengths + self.r - 1) // self.r
            ent = attention_entropy(out.alignments, batch.text_lengths, dec_lengths)
            total = total + entropy_weight * ent
            out_losses["attn_entropy"] = ent
        return {"loss": total, **out_losses}
