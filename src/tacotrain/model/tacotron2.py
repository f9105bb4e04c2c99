"""Tacotron 2 (Shen et al. 2018), structured like NVIDIA/tacotron2 ``model.py``.

One class per block of the paper: ``Encoder``, ``Prenet``, ``Decoder`` (with the attention from
``attention.py``), ``Postnet``. Differences from the NVIDIA code, all deliberate:

* sizes come from ``ModelConfig``, not from a global hparams bag;
* the decoder state is a ``DecoderState`` NamedTuple passed in and out of ``Decoder.step`` and
  never stored on ``self``, so a step is a pure function of its inputs (given the dropout RNG);
* masking everywhere: padded text positions are zeroed after every encoder conv and excluded
  from the attention softmax; padded mel frames are zeroed before and inside the postnet, so an
  item's output never depends on how much padding the other items in its batch carry;
* any reduction factor r >= 1: each decoder step emits r frames and r stop logits (one per
  frame), and teacher forcing feeds the *last* frame of each r-group to the prenet; ``set_r``
  lowers r at run time below ``n_frames_per_step`` (gradual training, ``model.r_schedule``);
* batched free-running inference in which every item stops independently;
* the teacher-forced loop (``model.decoder_impl: fast``) runs only the items still decoding at
  each step, and its LSTM cells compute their weight gradients once per batch
  (``recurrent.py``); the plain loop (``reference``) is kept, and tests hold the two equal;
* tensors follow the inputs' device; no ``.cuda()``.

Submodule names match NVIDIA's (``embedding``, ``encoder.convolutions``, ``decoder.prenet``,
``decoder.attention_layer`` ...), so with r = 1 an NVIDIA checkpoint can warm-start this model.

Known simplification kept from the reference: the BatchNorm layers of the encoder and postnet
use batch statistics that include (zeroed) padded positions in training mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..cancel import Cancelled
from ..config import ModelConfig
from .attention import (
    AttentionMechanism,
    DynamicConvolutionAttention,
    LocationSensitiveAttention,
    PriorLocationSensitiveAttention,
)
from .layers import ConvNorm, LinearNorm, dropout, frame_mask, keep_mask
from .packed import PackedLayout, conv_bn, pack, packed_dropout, packed_layout, unpack, zero_gaps
from .recurrent import CellRunner, ContextReader, shrinking_batch, unpack_rows


class Tacotron2Output(NamedTuple):
    """Teacher-forced outputs. T = padded mel length (a multiple of r), N = padded text length."""

    mel: Tensor  # [B, n_mels, T] decoder output, 0 at frames t >= mel_length
    mel_post: Tensor  # [B, n_mels, T] decoder output + postnet residual, 0 at t >= mel_length
    gate: Tensor  # [B, T] raw stop logits, one per frame; meaningless at padded frames (the
    # gate loss masks them)
    alignments: Tensor  # [B, T/r, N] float32, 0 at padded decoder steps and padded tokens


class InferenceOutput(NamedTuple):
    """Free-running outputs. T = max(mel_lengths), T_dec = max(dec_lengths)."""

    mel_post: Tensor  # [B, n_mels, T], 0 at frames t >= mel_lengths
    mel_lengths: Tensor  # [B] long: frames up to and including the one whose gate fired
    alignments: Tensor  # [B, T_dec, N] float32, 0 at steps >= dec_lengths
    dec_lengths: Tensor  # [B] long: decoder steps used
    stopped_by_gate: Tensor  # [B] bool: False when the item hit its step limit instead
    # [B] long: why each item stopped, an index into STOP_REASONS (None from older callers)
    stop_reason: Tensor | None = None

    def stop_reasons(self) -> list[str]:
        """Why each item stopped, as names from ``STOP_REASONS``."""
        if self.stop_reason is None:
            return ["gate" if g else "step_limit" for g in self.stopped_by_gate.tolist()]
        return [STOP_REASONS[i] for i in self.stop_reason.tolist()]


# Why a free-running item stopped (InferenceOutput.stop_reason indexes this): its gate fired;
# it hit its step limit; it rested on its last token model.infer_stop_after_last_token steps;
# it dwelt on its last token more than model.infer_max_steps_per_token steps.
STOP_REASONS = ("gate", "step_limit", "last_token", "dwell")
STOP_GATE, STOP_LIMIT, STOP_LAST_TOKEN, STOP_DWELL = range(len(STOP_REASONS))


class DecoderState(NamedTuple):
    """Everything the decoder carries from one step to the next."""

    attention_hidden: Tensor  # [B, attention_rnn_dim]
    attention_cell: Tensor  # [B, attention_rnn_dim]
    decoder_hidden: Tensor  # [B, decoder_rnn_dim]
    decoder_cell: Tensor  # [B, decoder_rnn_dim]
    context: Tensor  # [B, E] attention context of the previous step
    attention: Any  # the mechanism's own state (AttentionState for location-sensitive)


class DecoderStep(NamedTuple):
    """What one call of ``Decoder.step`` returns."""

    frames: Tensor  # [B, r * n_mels]: r frames, frame-major (frame 0's n_mels values first)
    gate: Tensor  # [B, r] stop logits, one per frame
    weights: Tensor  # [B, N] float32 attention weights of this step
    state: DecoderState


class Encoder(nn.Module):
    """Conv stack (conv -> batch norm -> ReLU -> dropout) then a BiLSTM over the real tokens."""

    def __init__(
        self,
        in_dim: int,
        embedding_dim: int,
        n_convolutions: int,
        kernel_size: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.packed = False  # run the convs on packed sequences (``packed.py``); same result
        convs = []
        for i in range(n_convolutions):
            convs.append(
                nn.Sequential(
                    ConvNorm(
                        in_dim if i == 0 else embedding_dim,
                        embedding_dim,
                        kernel_size=kernel_size,
                        w_init_gain="relu",
                    ),
                    nn.BatchNorm1d(embedding_dim),
                )
            )
        self.convolutions = nn.ModuleList(convs)
        lstm_in = embedding_dim if n_convolutions > 0 else in_dim
        self.lstm = nn.LSTM(
            lstm_in, embedding_dim // 2, num_layers=1, batch_first=True, bidirectional=True
        )

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        """x ``[B, C, N]`` embedded text, lengths ``[B]``, mask ``[B, N]`` -> ``[B, N, E]``.

        Padded positions are zeroed after every conv so they act like the conv's own zero
        padding; the packed BiLSTM never reads them and returns zeros there.
        """
        m = mask.unsqueeze(1)  # [B, 1, N]
        x = torch.where(m, x, 0.0)
        if self.packed and len(self.convolutions) and not torch.is_autocast_enabled(
                x.device.type):
            layout = packed_layout(lengths, x.size(2), *self.convolutions[0][0].reach)
            y = pack(x, layout)
            for conv, bn in self.convolutions:
                y = packed_dropout(F.relu(conv_bn(conv, bn, y, layout)), self.dropout,
                                   self.training, layout)
                y = zero_gaps(y, layout)
            x = unpack(y, layout)
        else:
            for conv in self.convolutions:
                x = dropout(F.relu(conv(x)), self.dropout, self.training)
                x = torch.where(m, x, 0.0)  # [B, E, N]
        x = x.transpose(1, 2)  # [B, N, E]
        lengths_cpu = lengths.cpu()  # the one host sync of a forward pass (packing needs it)
        if int(lengths_cpu.min()) < 1 or int(lengths_cpu.max()) > x.size(1):
            raise ValueError(
                f"text lengths must be in [1, {x.size(1)}], got {lengths_cpu.tolist()}"
            )
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return out  # [B, N, E]


class Prenet(nn.Module):
    """Linear (no bias) -> ReLU -> dropout layers, the decoder's information bottleneck.

    Dropout is always on in training mode and, in eval mode, iff ``dropout_at_inference``
    (the paper keeps it on when synthesising, which adds useful variation and robustness).
    """

    def __init__(
        self, in_dim: int, sizes: list[int], dropout: float, dropout_at_inference: bool
    ) -> None:
        super().__init__()
        dims = [in_dim, *sizes]
        self.layers = nn.ModuleList(
            LinearNorm(i, o, bias=False) for i, o in zip(dims[:-1], dims[1:], strict=True)
        )
        self.dropout = dropout
        self.dropout_at_inference = dropout_at_inference

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[..., in_dim]`` -> ``[..., sizes[-1]]``; ``generator``: the dropout's random
        stream (None: torch's global one)."""
        active = self.training or self.dropout_at_inference
        for linear in self.layers:
            x = dropout(F.relu(linear(x)), self.dropout, active, generator)
        return x


class Postnet(nn.Module):
    """Conv stack predicting a residual that sharpens the decoder's mel (tanh on all but last)."""

    def __init__(
        self,
        n_mels: int,
        embedding_dim: int,
        kernel_size: int,
        n_convolutions: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.packed = False  # run the convs on packed sequences (``packed.py``); same result
        convs = []
        for i in range(n_convolutions):
            last = i == n_convolutions - 1
            c_in = n_mels if i == 0 else embedding_dim
            c_out = n_mels if last else embedding_dim
            convs.append(
                nn.Sequential(
                    ConvNorm(
                        c_in,
                        c_out,
                        kernel_size=kernel_size,
                        w_init_gain="linear" if last else "tanh",
                    ),
                    nn.BatchNorm1d(c_out),
                )
            )
        self.convolutions = nn.ModuleList(convs)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x ``[B, n_mels, T]`` (0 at padding), mask ``[B, 1, T]`` -> residual ``[B, n_mels, T]``.

        Re-masking after every layer keeps padded frames at zero, so the receptive field of a
        real frame near the end sees exactly what it would see without batch padding.
        """
        if self.packed and not torch.is_autocast_enabled(x.device.type):
            lengths = mask.squeeze(1).sum(1)
            layout = packed_layout(lengths, x.size(2), *self.convolutions[0][0].reach)
            return unpack(self._forward_packed(pack(x, layout), layout), layout)
        last = len(self.convolutions) - 1
        for i, conv in enumerate(self.convolutions):
            x = conv(x)
            if i < last:
                x = torch.tanh(x)
            x = dropout(x, self.dropout, self.training)
            x = torch.where(mask, x, 0.0)
        return x

    def _forward_packed(self, x: Tensor, layout: PackedLayout) -> Tensor:
        last = len(self.convolutions) - 1
        for i, (conv, bn) in enumerate(self.convolutions):
            x = conv_bn(conv, bn, x, layout)
            if i < last:
                x = torch.tanh(x)
            x = zero_gaps(packed_dropout(x, self.dropout, self.training, layout), layout)
        return x


def lstm_cell(cell: nn.LSTMCell, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """``cell`` on input ``x [B, I]`` and state ``h, c [B, H]`` -> new ``h, c [B, H]``.

    Outside autocast: the cell itself. Under autocast the gate matmuls run in the lower
    precision but the state update in float32, and ``h, c`` stay float32: CUDA's autocast would
    otherwise run the whole cell in bf16/fp16, and the cell state, carried over hundreds of
    decoder steps, would lose its precision."""
    if not torch.is_autocast_enabled(x.device.type):
        return cell(x, (h, c))
    gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
    i, f, g, o = gates.float().chunk(4, dim=1)  # [B, H] each, PyTorch's gate order
    c = torch.sigmoid(f) * c.float() + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class Decoder(nn.Module):
    """Autoregressive decoder: prenet -> attention LSTM -> attention -> decoder LSTM -> frames.

    All recurrent state lives in ``DecoderState``; see ``step`` for one step and ``forward`` /
    ``infer`` for the teacher-forced and free-running loops.
    """

    def __init__(self, cfg: ModelConfig, n_mels: int, encoder_dim: int) -> None:
        super().__init__()
        self.n_mels = n_mels
        # the projections are sized for max_r frames; the active r (see set_r) uses the first r
        self.max_r = cfg.n_frames_per_step
        self.r = cfg.n_frames_per_step
        self.attention_rnn_dim = cfg.attention_rnn_dim
        self.decoder_rnn_dim = cfg.decoder_rnn_dim
        self.attention_dropout = cfg.attention_dropout
        self.decoder_dropout = cfg.decoder_dropout
        self.impl = cfg.decoder_impl
        self.prenet = Prenet(
            n_mels,
            [cfg.prenet_dim] * cfg.prenet_n_layers,
            cfg.prenet_dropout,
            cfg.prenet_dropout_at_inference,
        )
        self.attention_rnn = nn.LSTMCell(cfg.prenet_dim + encoder_dim, cfg.attention_rnn_dim)
        att_args = (cfg.attention_rnn_dim, encoder_dim, cfg.attention_dim,
                    cfg.attention_location_n_filters, cfg.attention_location_kernel_size)
        self.attention_layer: AttentionMechanism
        if cfg.attention == "location_prior":
            self.attention_layer = PriorLocationSensitiveAttention(
                *att_args, filter_len=cfg.attention_prior_filter_len,
                alpha=cfg.attention_prior_alpha, beta=cfg.attention_prior_beta)
        elif cfg.attention == "dca":
            self.attention_layer = DynamicConvolutionAttention(
                cfg.attention_rnn_dim, cfg.attention_dim,
                cfg.dca_static_filters, cfg.dca_static_filter_len,
                cfg.dca_dynamic_filters, cfg.dca_dynamic_filter_len,
                cfg.dca_prior_filter_len, cfg.dca_prior_alpha, cfg.dca_prior_beta)
        else:
            self.attention_layer = LocationSensitiveAttention(*att_args)
        # synthesis-only safeguards, used by infer alone (see ModelConfig)
        self.infer_attention_window = cfg.infer_attention_window
        self.infer_stop_after_last_token = cfg.infer_stop_after_last_token
        self.infer_max_steps_per_token = cfg.infer_max_steps_per_token
        self.infer_gate_last_tokens = cfg.infer_gate_last_tokens
        self.decoder_rnn = nn.LSTMCell(cfg.attention_rnn_dim + encoder_dim, cfg.decoder_rnn_dim)
        self.linear_projection = LinearNorm(cfg.decoder_rnn_dim + encoder_dim, n_mels * self.max_r)
        self.gate_layer = LinearNorm(
            cfg.decoder_rnn_dim + encoder_dim, self.max_r, bias=True, w_init_gain="sigmoid"
        )

    def set_r(self, r: int) -> None:
        """Switch the active reduction factor (gradual training): 1 <= r <= max_r."""
        if not 1 <= r <= self.max_r:
            raise ValueError(f"reduction factor r must be in 1..{self.max_r} (the projection "
                             f"size, model.n_frames_per_step), got {r}")
        self.r = r

    def init_state(self, memory: Tensor, mask: Tensor) -> DecoderState:
        """Zero LSTM states and context for memory ``[B, N, E]``, mask ``[B, N]``."""
        b = memory.size(0)
        dtype = self.attention_rnn.weight_hh.dtype
        att = torch.zeros(b, self.attention_rnn_dim, dtype=dtype, device=memory.device)
        dec = torch.zeros(b, self.decoder_rnn_dim, dtype=dtype, device=memory.device)
        ctx = torch.zeros(b, memory.size(2), dtype=memory.dtype, device=memory.device)
        return DecoderState(att, att, dec, dec, ctx, self.attention_layer.init_state(memory, mask))

    def _recur(
        self,
        prenet_out: Tensor,
        memory: Tensor,
        processed_memory: Any,
        mask: Tensor,
        state: DecoderState,
    ) -> tuple[Tensor, Tensor, DecoderState]:
        """The recurrent part of a step (everything except the frame/gate projections).

        prenet_out ``[B, P]`` -> (decoder output ``[B, D + E]`` = [decoder h, context],
        weights ``[B, N]``, new state). Split out so the teacher-forced loop can project all
        steps at once after the loop.
        """
        cell_in = torch.cat((prenet_out, state.context), dim=-1)  # [B, P + E]
        cell_in = cell_in.to(state.attention_hidden.dtype)
        att_h, att_c = lstm_cell(self.attention_rnn, cell_in, state.attention_hidden,
                                 state.attention_cell)
        att_h = dropout(att_h, self.attention_dropout, self.training)
        context, weights, att_state = self.attention_layer.step(
            att_h, memory, processed_memory, mask, state.attention
        )
        dec_in = torch.cat((att_h, context.to(att_h.dtype)), dim=-1)  # [B, A_rnn + E]
        dec_h, dec_c = lstm_cell(self.decoder_rnn, dec_in, state.decoder_hidden,
                                 state.decoder_cell)
        dec_h = dropout(dec_h, self.decoder_dropout, self.training)
        out = torch.cat((dec_h, context.to(dec_h.dtype)), dim=-1)  # [B, D + E]
        return out, weights, DecoderState(att_h, att_c, dec_h, dec_c, context, att_state)

    def project(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """``[..., D + E]`` -> frames ``[..., r * n_mels]``, gate logits ``[..., r]``.

        With r < max_r the first r frame slots and gate slots are used.
        """
        frames, gate = self.linear_projection(hidden), self.gate_layer(hidden)
        if self.r < self.max_r:
            frames, gate = frames[..., : self.r * self.n_mels], gate[..., : self.r]
        return frames, gate

    def step(
        self,
        prev_frame: Tensor,
        memory: Tensor,
        processed_memory: Any,
        mask: Tensor,
        state: DecoderState,
        generator: torch.Generator | None = None,
    ) -> DecoderStep:
        """One decoder step from the previous output frame ``[B, n_mels]``.

        memory ``[B, N, E]``; processed_memory from
        ``self.attention_layer.preprocess_memory(memory)``; mask ``[B, N]`` bool.
        A pure function of its inputs (plus the dropout RNG when dropout is active:
        ``generator``, else torch's global one; at inference only the prenet's is active).
        """
        hidden, weights, new_state = self._recur(
            self.prenet(prev_frame, generator), memory, processed_memory, mask, state
        )
        frames, gate = self.project(hidden)
        return DecoderStep(frames, gate, weights, new_state)

    def forward(self, memory: Tensor, mask: Tensor, mels: Tensor,
                dec_lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher-forced decoding.

        memory ``[B, N, E]``, mask ``[B, N]``, mels ``[B, n_mels, T]`` (T = r * steps),
        dec_lengths ``[B]`` decoder steps per item (None: all) -> mel ``[B, n_mels, T]``,
        gate ``[B, T]``, alignments ``[B, steps, N]``. Outputs at an item's steps beyond its
        dec_length carry no meaning (the model and the losses mask them).

        Two implementations with the same maths (see ``model.decoder_impl``): "fast" (the
        default, used whenever autocast is off) runs only the items still active at each step
        and the LSTM cells through ``recurrent.CellRunner``; "reference" is the plain loop.
        """
        b, n_mels, t = mels.shape
        steps = t // self.r
        # Step k is fed the last frame of group k-1 (a go frame of zeros for k = 0).
        prev = mels[:, :, self.r - 1 :: self.r].transpose(1, 2)  # [B, steps, n_mels]
        dec_in = torch.cat((prev.new_zeros(b, 1, n_mels), prev[:, :-1]), dim=1)
        prenet_out = self.prenet(dec_in)  # [B, steps, P], all steps at once
        processed_memory = self.attention_layer.preprocess_memory(memory)
        if self.impl == "fast" and not torch.is_autocast_enabled(memory.device.type):
            if dec_lengths is None:
                dec_lengths = torch.full((b,), steps, dtype=torch.long, device=memory.device)
            return self._forward_fast(memory, mask, prenet_out, processed_memory, dec_lengths)
        state = self.init_state(memory, mask)
        hiddens: list[Tensor] = []
        weights: list[Tensor] = []
        for p in prenet_out.unbind(1):
            h, w, state = self._recur(p, memory, processed_memory, mask, state)
            hiddens.append(h)
            weights.append(w)
        frames, gate = self.project(torch.stack(hiddens, dim=1))  # [B, steps, r*M], [B, steps, r]
        return self._frames(frames, gate, torch.stack(weights, dim=1))

    def _frames(self, frames: Tensor, gate: Tensor, alignments: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        """frames ``[B, steps, r * n_mels]``, gate ``[B, steps, r]`` -> mel ``[B, n_mels, T]``,
        gate ``[B, T]``, and the alignments ``[B, steps, N]`` passed through."""
        b, steps = frames.shape[:2]
        mel = frames.reshape(b, steps * self.r, self.n_mels).transpose(1, 2)  # [B, n_mels, T]
        return mel, gate.reshape(b, steps * self.r), alignments

    def _forward_fast(self, memory: Tensor, mask: Tensor, prenet_out: Tensor,
                      processed_memory: Any, dec_lengths: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor]:
        """The teacher-forced loop over the active items only (equal to the reference loop).

        Items are sorted longest first, so the n items still decoding at a step are the first
        n rows and every per-step tensor is a prefix view. With the frames teacher-forced, the
        decoder LSTM feeds nothing back into the attention, so the loop runs in two passes:
        the attention LSTM and the attention over all steps, then the decoder LSTM, whose
        input projection (attention hidden state and context) becomes one product over all
        steps, and per step each pass reads only its own cell's recurrent weights. Likewise the
        prenet's share of the attention LSTM's input projection is one product, and so is the
        memory's gradient (``recurrent.ContextReader``). The steps' rows are projected
        together, packed (no padded rows), and placed into the padded outputs by one gather;
        padded steps get zeros. The decoder LSTM's dropout masks are drawn during the first
        pass, where a one-pass loop draws them, so a seed gives the same masks either way.
        """
        b, steps, p = prenet_out.shape
        plan = shrinking_batch(dec_lengths, steps)
        rows = plan.rows
        memory, mask = memory[plan.order], mask[plan.order]
        processed_memory = self.attention_layer.select(processed_memory, plan.order)
        prenet_rows = prenet_out.reshape(b * steps, p).index_select(0, plan.source_of)  # [R, P]
        att, dec = self.attention_rnn, self.decoder_rnn
        # pass 1: the attention LSTM (prenet columns for all rows at once) and the attention
        att_run = CellRunner(torch.cat((att.weight_ih, att.weight_hh), dim=1),
                             att.bias_ih + att.bias_hh, rows, static=prenet_rows)
        att_h, att_c, dec_h, dec_c, context, att_state = self.init_state(memory, mask)
        reader = ContextReader(memory, plan, steps)
        drop_dec = self.training and self.decoder_dropout > 0.0
        att_hs: list[Tensor] = []
        contexts: list[Tensor] = []
        weights: list[Tensor] = []
        dec_keep: list[Tensor] = []
        for k in range(steps):
            n = rows[k]
            if n < att_h.size(0):  # items finished: keep the first n rows
                att_h, att_c, context = (x[:n] for x in (att_h, att_c, context))
                att_state = type(att_state)(*(x[:n] for x in att_state))
                mask = mask[:n]
                processed_memory = self.attention_layer.narrow(processed_memory, n)
            att_h, att_c = att_run.step(k, [context, att_h], att_c)
            att_h = dropout(att_h, self.attention_dropout, self.training)
            if drop_dec:  # the decoder LSTM's mask for this step, drawn where the loop drew it
                dec_keep.append(keep_mask((n, self.decoder_rnn_dim), self.decoder_dropout,
                                          dec_h))
            w, att_state = self.attention_layer.attend(att_h, processed_memory, mask, att_state)
            context = reader.read(k, w)
            att_hs.append(att_h)
            contexts.append(context)
            weights.append(w)
        context_rows = torch.cat(contexts)  # [R, E]
        # pass 2: the decoder LSTM; its [attention h, context] columns for all rows at once
        dec_run = CellRunner(torch.cat((dec.weight_ih, dec.weight_hh), dim=1),
                             dec.bias_ih + dec.bias_hh, rows,
                             static=torch.cat((torch.cat(att_hs), context_rows), dim=1))
        dec_hs: list[Tensor] = []
        for k in range(steps):
            n = rows[k]
            if n < dec_h.size(0):
                dec_h, dec_c = dec_h[:n], dec_c[:n]
            dec_h, dec_c = dec_run.step(k, [dec_h], dec_c)
            if drop_dec:
                dec_h = dec_h * dec_keep[k]
            dec_hs.append(dec_h)
        hidden = torch.cat((torch.cat(dec_hs), context_rows), dim=1)  # [R, D + E]
        frames, gate = self.project(hidden)  # [R, r * n_mels], [R, r]
        return self._frames(unpack_rows(frames, plan, steps), unpack_rows(gate, plan, steps),
                            unpack_rows(torch.cat(weights), plan, steps))

    def infer(
        self, memory: Tensor, mask: Tensor, step_limits: Tensor, gate_threshold: float,
        generator: torch.Generator | None = None, cancel: Callable[[], bool] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Free-running decoding; each item stops on its own.

        memory ``[B, N, E]``, mask ``[B, N]``, step_limits ``[B]`` long (>= 1) ->
        mel ``[B, n_mels, steps * r]`` (unmasked), alignments ``[B, steps, N]``,
        mel_lengths ``[B]``, dec_lengths ``[B]``, stopped_by_gate ``[B]``, stop_reason ``[B]``
        (an index into ``STOP_REASONS``).
        An item stops at the first step where sigmoid(any of its r gate logits) > threshold;
        its mel length counts frames up to and including the first frame that fired. Otherwise
        it stops at its step limit or by a safeguard, keeping all r frames of its last step.

        The safeguards (all off by default) follow p, the argmax of the previous step's
        weights (the first token before step 0): ``infer_attention_window`` lets attention
        reach only tokens p..p+window; ``infer_stop_after_last_token`` stops an item whose p
        has been its last real token for that many steps; ``infer_max_steps_per_token``: once
        p has stayed on one token for more steps than that, that token and all before it are
        closed to the attention for the rest of the item (forcing a stuck voice on to the next
        token, rather than cutting the sentence short), or the item stops if it is the last.
        They narrow the mask the attention sees; they never change the mechanism.
        ``infer_gate_last_tokens`` ignores a gate that fires before this step's argmax is among
        the item's last that-many tokens (a premature stop in mid-sentence); a later firing
        still counts as a gate stop.

        ``generator``: the prenet dropout's random stream (None: torch's global one).
        ``cancel``: asked before every step; once it answers True the loop stops and raises
        :class:`Cancelled` (the caller gave up: a server's request timed out).
        """
        b = memory.size(0)
        r, n_mels = self.r, self.n_mels
        dev = memory.device
        logit_threshold = math.log(gate_threshold / (1.0 - gate_threshold))
        processed_memory = self.attention_layer.preprocess_memory(memory)
        state = self.init_state(memory, mask)
        frame = torch.zeros(b, n_mels, dtype=memory.dtype, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        by_gate = torch.zeros(b, dtype=torch.bool, device=dev)
        mel_lengths = torch.zeros(b, dtype=torch.long, device=dev)
        dec_lengths = torch.zeros(b, dtype=torch.long, device=dev)
        reason = torch.full((b,), STOP_LIMIT, dtype=torch.long, device=dev)
        window, rest, max_dwell = (self.infer_attention_window, self.infer_stop_after_last_token,
                                   self.infer_max_steps_per_token)
        tokens = torch.arange(mask.size(1), device=dev)[None, :]  # [1, N]
        last = mask.sum(dim=1) - 1  # [B] each item's last real token
        pos = torch.zeros(b, dtype=torch.long, device=dev)  # p: previous step's argmax
        dwell = torch.zeros(b, dtype=torch.long, device=dev)  # steps p has stayed put
        floor = torch.zeros(b, dtype=torch.long, device=dev)  # tokens before it are closed
        no = torch.zeros(b, dtype=torch.bool, device=dev)
        frames_out: list[Tensor] = []
        weights_out: list[Tensor] = []
        for k in range(int(step_limits.max())):
            if cancel is not None and cancel():
                raise Cancelled("decoding", k)
            step_mask = mask
            if window or max_dwell:
                lo = torch.maximum(floor, pos) if window else floor
                step_mask = mask & (tokens >= lo[:, None])
                if window:
                    step_mask = step_mask & (tokens <= (pos + window)[:, None])
            out = self.step(frame, memory, processed_memory, step_mask, state, generator)
            state = out.state
            frames_out.append(out.frames)
            weights_out.append(out.weights)
            frame = out.frames[:, (r - 1) * n_mels :]  # last frame of the group
            fired = out.gate.float() > logit_threshold  # [B, r]
            if self.infer_gate_last_tokens:
                near_end = out.weights.argmax(dim=1) > last - self.infer_gate_last_tokens
                fired = fired & near_end[:, None]
            new_gate = fired.any(dim=1) & ~done
            first = fired.to(torch.uint8).argmax(dim=1)  # first frame that fired
            mel_lengths = torch.where(new_gate, k * r + first + 1, mel_lengths)
            rested = dwelt = no
            if window or rest or max_dwell:
                new_pos = out.weights.argmax(dim=1)
                dwell = torch.where(new_pos == pos, dwell + 1, 1)
                pos = new_pos
                at_last = pos == last
                if rest:
                    rested = ~done & ~new_gate & at_last & (dwell >= rest)
                if max_dwell:
                    over = dwell > max_dwell
                    floor = torch.where(over & ~at_last, pos + 1, floor)
                    dwelt = ~done & ~new_gate & ~rested & over & at_last
            hit_limit = ~done & ~new_gate & ~rested & ~dwelt & (step_limits == k + 1)
            cut = hit_limit | rested | dwelt
            mel_lengths = torch.where(cut, (k + 1) * r, mel_lengths)
            finished = new_gate | cut
            dec_lengths = torch.where(finished, k + 1, dec_lengths)
            reason = torch.where(new_gate, STOP_GATE, reason)
            reason = torch.where(rested, STOP_LAST_TOKEN, reason)
            reason = torch.where(dwelt, STOP_DWELL, reason)
            by_gate = by_gate | new_gate
            done = done | finished
            if bool(done.all()):
                break
        steps = len(frames_out)
        mel = torch.stack(frames_out, dim=1).reshape(b, steps * r, n_mels).transpose(1, 2)
        return mel, torch.stack(weights_out, dim=1), mel_lengths, dec_lengths, by_gate, reason


class Tacotron2(nn.Module):
    """Tacotron 2: text ``[B, N]`` -> mel ``[B, n_mels, T]`` with stop logits and alignments."""

    def __init__(self, cfg: ModelConfig, n_symbols: int, n_mels: int) -> None:
        super().__init__()
        if cfg.encoder_embedding_dim % 2:
            raise ValueError(
                f"model.encoder_embedding_dim ({cfg.encoder_embedding_dim}) must be even: "
                "the BiLSTM has encoder_embedding_dim/2 units per direction"
            )
        self.n_mels = n_mels
        self.gate_threshold = cfg.gate_threshold
        self.max_decoder_steps = cfg.max_decoder_steps
        self.max_decoder_steps_per_token = cfg.max_decoder_steps_per_token
        self.embedding = nn.Embedding(n_symbols, cfg.symbols_embedding_dim, padding_idx=0)
        # NVIDIA's init: uniform with Xavier's bound for a (n_symbols x dim) matrix.
        bound = math.sqrt(3.0) * math.sqrt(2.0 / (n_symbols + cfg.symbols_embedding_dim))
        with torch.no_grad():
            self.embedding.weight.uniform_(-bound, bound)
            self.embedding.weight[0].zero_()
        self.encoder = Encoder(
            cfg.symbols_embedding_dim,
            cfg.encoder_embedding_dim,
            cfg.encoder_n_convolutions,
            cfg.encoder_kernel_size,
            cfg.encoder_dropout,
        )
        self.decoder = Decoder(cfg, n_mels, cfg.encoder_embedding_dim)
        self.postnet = Postnet(
            n_mels,
            cfg.postnet_embedding_dim,
            cfg.postnet_kernel_size,
            cfg.postnet_n_convolutions,
            cfg.postnet_dropout,
        )
        self.set_impl(cfg.decoder_impl)

    def set_impl(self, impl: str) -> None:
        """``model.decoder_impl``: "fast" runs the teacher-forced decoder loop over the active
        items only and the encoder and postnet conv stacks without their padding; "reference"
        the plain padded code. Same function, equal to rounding."""
        if impl not in ("fast", "reference"):
            raise ValueError(f"decoder_impl must be 'fast' or 'reference', got {impl!r}")
        self.decoder.impl = impl
        self.encoder.packed = self.postnet.packed = impl == "fast"

    @property
    def r(self) -> int:
        """The active reduction factor (frames per decoder step)."""
        return self.decoder.r

    def set_r(self, r: int) -> None:
        """Switch the active reduction factor, 1 <= r <= model.n_frames_per_step."""
        self.decoder.set_r(r)

    def encode(self, text: Tensor, text_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """text ``[B, N]`` long, text_lengths ``[B]`` -> memory ``[B, N, E]``, mask ``[B, N]``."""
        mask = frame_mask(text_lengths, text.size(1))
        x = self.embedding(text).transpose(1, 2)  # [B, C, N]
        return self.encoder(x, text_lengths, mask), mask

    def _postnet(self, mel: Tensor, mel_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Mask mel ``[B, n_mels, T]`` beyond mel_lengths and add the postnet residual."""
        fmask = frame_mask(mel_lengths, mel.size(2)).unsqueeze(1)  # [B, 1, T]
        mel = torch.where(fmask, mel, 0.0)
        return mel, mel + self.postnet(mel, fmask)

    def forward(
        self, text: Tensor, text_lengths: Tensor, mels: Tensor, mel_lengths: Tensor
    ) -> Tacotron2Output:
        """Teacher-forced pass.

        text ``[B, N]`` long, text_lengths ``[B]``, mels ``[B, n_mels, T]`` with T a multiple of
        r (padding values are irrelevant), mel_lengths ``[B]`` -> ``Tacotron2Output``.
        """
        if mels.size(2) % self.r:
            raise ValueError(
                f"mel length {mels.size(2)} is not a multiple of the reduction factor r={self.r}"
            )
        memory, mask = self.encode(text, text_lengths)
        # zero the padding so even inf/NaN there cannot reach a gradient through padded steps
        mels = torch.where(frame_mask(mel_lengths, mels.size(2)).unsqueeze(1), mels, 0.0)
        dec_lengths = (mel_lengths + self.r - 1) // self.r
        mel, gate, alignments = self.decoder(memory, mask, mels, dec_lengths)
        mel, mel_post = self._postnet(mel, mel_lengths)
        step_mask = frame_mask(dec_lengths, alignments.size(1)).unsqueeze(2)  # [B, steps, 1]
        alignments = torch.where(step_mask, alignments, 0.0)
        return Tacotron2Output(mel, mel_post, gate, alignments)

    def step_limits(self, text_lengths: Tensor, max_decoder_steps: int | None = None) -> Tensor:
        """Per-item decoder step limits ``[B]`` long.

        ``min(max_decoder_steps, ceil(max_decoder_steps_per_token * text_length))`` from the
        config, so a long batch-mate never extends a short item's budget; an explicit
        ``max_decoder_steps`` replaces both for every item.
        """
        if max_decoder_steps is not None:
            if max_decoder_steps < 1:
                raise ValueError("max_decoder_steps must be >= 1")
            return torch.full_like(text_lengths, max_decoder_steps, dtype=torch.long)
        per_token = torch.ceil(text_lengths.double() * self.max_decoder_steps_per_token).long()
        return per_token.clamp(min=1, max=self.max_decoder_steps)

    @torch.no_grad()
    def infer(
        self, text: Tensor, text_lengths: Tensor, max_decoder_steps: int | None = None,
        generator: torch.Generator | None = None, cancel: Callable[[], bool] | None = None,
    ) -> InferenceOutput:
        """Free-running synthesis; call ``.eval()`` first (this method does not switch modes).

        text ``[B, N]`` long, text_lengths ``[B]`` -> ``InferenceOutput``. Prenet dropout stays
        on iff ``prenet_dropout_at_inference``. Each item stops when sigmoid of any of its r
        gate logits exceeds ``gate_threshold``, or at its step limit (see ``step_limits``), or
        by one of the synthesis safeguards (``Decoder.infer``); ``stop_reason`` says which.
        ``generator`` and ``cancel``: see ``Decoder.infer``.
        """
        memory, mask = self.encode(text, text_lengths)
        limits = self.step_limits(text_lengths, max_decoder_steps)
        mel, alignments, mel_lengths, dec_lengths, by_gate, reason = self.decoder.infer(
            memory, mask, limits, self.gate_threshold, generator, cancel
        )
        _, mel_post = self._postnet(mel, mel_lengths)
        mel_post = mel_post[:, :, : int(mel_lengths.max())]
        step_mask = frame_mask(dec_lengths, alignments.size(1)).unsqueeze(2)
        alignments = torch.where(step_mask, alignments, 0.0)
        return InferenceOutput(mel_post, mel_lengths, alignments, dec_lengths, by_gate, reason)
