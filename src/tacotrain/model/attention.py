"""Attention mechanisms for the Tacotron 2 decoder.

Three mechanisms: Tacotron 2's location-sensitive attention, the same with a static forward
prior, and dynamic convolution attention. All have the same small, stateless interface so the
decoder never needs to know which one it runs:

* ``preprocess_memory(memory) -> processed_memory``: per-utterance work done once, not per step;
* ``init_state(memory, mask) -> state``: the mechanism's own recurrent state (a NamedTuple of
  ``[B, ...]`` tensors, so the decoder can select and narrow it item-wise);
* ``select(processed_memory, index)`` / ``narrow(processed_memory, n)``: the processed memory
  of some items (the decoder's fast loop runs only the items still decoding);
* ``attend(query, processed_memory, mask, state) -> (weights, new_state)``: a mechanism's own
  work; ``step(query, memory, processed_memory, mask, state) -> (context, weights, new_state)``
  adds the context, ``read(weights, memory)``, the same for every mechanism (so the decoder's
  fast loop can read it its own way).

Nothing is stored on ``self`` between calls. ``mask`` is ``[B, N]`` bool, True at real tokens;
padded tokens get exactly zero weight. In free-running synthesis the decoder may pass a narrower
mask (its attention window), so a mechanism uses ``mask`` only to say where weight may go, never
to compute features. Energies are masked with ``finfo(float32).min`` and the
softmax runs in float32, so fp16/bf16 autocast cannot produce NaN from ``-inf`` arithmetic.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNorm, LinearNorm

_MASK_VALUE = torch.finfo(torch.float32).min


def masked_softmax(energies: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis in float32 with padded entries exactly 0.

    ``energies``: ``[B, N]`` (any float dtype); ``mask``: ``[B, N]`` bool -> ``[B, N]`` float32.
    """
    energies = torch.where(mask, energies.float(), _MASK_VALUE)
    return torch.softmax(energies, dim=-1)


class AttentionMechanism(nn.Module):
    """Interface shared by all decoder attention mechanisms (see the module docstring)."""

    def preprocess_memory(self, memory: Tensor) -> Any:
        """``memory [B, N, E]`` -> whatever ``step`` wants precomputed (opaque to the decoder).

        Called once per utterance batch, inside autograd, so parameter-derived tensors (e.g.
        fused weights) computed here still receive gradients.
        """
        return memory

    def select(self, processed_memory: Any, index: Tensor) -> Any:
        """``processed_memory`` for the items ``index [B']`` (long), in that order."""
        return processed_memory[index]

    def narrow(self, processed_memory: Any, n: int) -> Any:
        """``processed_memory`` for the first n items (a view)."""
        return processed_memory[:n]

    def init_state(self, memory: Tensor, mask: Tensor) -> Any:
        """Initial recurrent state for memory ``[B, N, E]`` and mask ``[B, N]``."""
        raise NotImplementedError

    def attend(self, query: Tensor, processed_memory: Any, mask: Tensor, state: Any
               ) -> tuple[Tensor, Any]:
        """query ``[B, Q]`` -> weights ``[B, N]`` float32, new state."""
        raise NotImplementedError

    def step(
        self,
        query: Tensor,
        memory: Tensor,
        processed_memory: Any,
        mask: Tensor,
        state: Any,
    ) -> tuple[Tensor, Tensor, Any]:
        """query ``[B, Q]``, memory ``[B, N, E]``, processed_memory from
        ``preprocess_memory``, mask ``[B, N]`` -> context ``[B, E]``, weights ``[B, N]``
        float32, new state."""
        weights, new_state = self.attend(query, processed_memory, mask, state)
        return read(weights, memory), weights, new_state


def read(weights: Tensor, memory: Tensor) -> Tensor:
    """The context: weights ``[B, N]`` over memory ``[B, N, E]`` -> ``[B, E]``."""
    return torch.bmm(weights.unsqueeze(1).to(memory.dtype), memory).squeeze(1)


class AttentionState(NamedTuple):
    """Recurrent state of location-sensitive attention (float32 for stable accumulation)."""

    weights: Tensor  # [B, N] attention weights of the previous decoder step
    cum_weights: Tensor  # [B, N] sum of all previous weights


class LocationLayer(nn.Module):
    """Convolve [previous, cumulative] weights into location features (Chorowski et al. 2015).

    ``forward`` is the reference conv -> dense path. The decoder loop uses the equivalent
    ``fused_weight`` / ``apply_fused`` path instead: the conv (no bias) followed by the dense
    layer (no bias) is one linear map, so we compose the two weights once per batch and apply
    them as a single matmul over sliding windows. Same parameters, same gradients, but one
    matmul per decoder step instead of a small convolution plus a linear layer (small CPU
    convolutions cost ~0.1 ms each in overhead alone, forward and again backward).
    """

    def __init__(self, n_filters: int, kernel_size: int, attention_dim: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.location_conv = ConvNorm(2, n_filters, kernel_size=kernel_size, bias=False)
        self.location_dense = LinearNorm(n_filters, attention_dim, bias=False, w_init_gain="tanh")
        # "same" padding: (K - 1) // 2 zeros on the left, the rest on the right (PyTorch's rule)
        self.pad_left = (kernel_size - 1) // 2
        self.pad_right = kernel_size - 1 - self.pad_left

    def forward(self, weights_cat: Tensor) -> Tensor:
        """``[B, 2, N]`` -> ``[B, N, attention_dim]`` (reference path)."""
        x = self.location_conv(weights_cat)  # [B, n_filters, N]
        return self.location_dense(x.transpose(1, 2))  # [B, N, attention_dim]

    def fused_weight(self) -> Tensor:
        """dense @ conv as one ``[2 * K, attention_dim]`` matrix (rows ordered channel-major)."""
        conv_w = self.location_conv.conv.weight  # [F, 2, K]
        dense_w = self.location_dense.linear_layer.weight  # [A, F]
        return (dense_w @ conv_w.flatten(1)).t()  # [2K, A]

    def windows(self, weights_cat: Tensor) -> Tensor:
        """``[B, 2, N]`` -> the conv's input windows ``[B, N, 2K]`` (channel-major rows)."""
        b, c, n = weights_cat.shape
        x = F.pad(weights_cat, (self.pad_left, self.pad_right))  # [B, 2, N + K - 1]
        windows = x.unfold(2, self.kernel_size, 1)  # [B, 2, N, K]
        return windows.permute(0, 2, 1, 3).reshape(b, n, c * self.kernel_size)  # [B, N, 2K]

    def apply_fused(self, weights_cat: Tensor, fused: Tensor) -> Tensor:
        """``[B, 2, N]`` and ``fused_weight()`` -> ``[B, N, attention_dim]``, equal to forward."""
        return self.windows(weights_cat).to(fused.dtype) @ fused  # [B, N, A]


def location_energies(query: Tensor, windows: Tensor, keys: Tensor, fused: Tensor,
                      v: Tensor) -> Tensor:
    """``v . tanh(query + windows @ fused + keys)``: the location-sensitive energies ``[B, N]``.

    query ``[B, A]`` (the projected query), windows ``[B, N, 2K]`` (``LocationLayer.windows``),
    keys ``[B, N, A]``, fused ``[2K, A]`` (``LocationLayer.fused_weight``), v ``[A]``. Outside
    autocast, one autograd node with a hand-written backward (``_LocationEnergies``): the
    plain expression makes five nodes and three ``[B, N, A]`` temporaries per decoder step.
    """
    same = query.dtype == windows.dtype == keys.dtype == fused.dtype == v.dtype
    if same and not torch.is_autocast_enabled(query.device.type):
        return _LocationEnergies.apply(query, windows, keys, fused, v)
    z = torch.tanh(query.unsqueeze(1) + windows.to(fused.dtype) @ fused + keys)
    return (z @ v.to(z.dtype).unsqueeze(-1)).squeeze(-1)


class _LocationEnergies(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, query: Tensor, windows: Tensor, keys: Tensor, fused: Tensor,
                v: Tensor) -> Tensor:
        b, n, k2 = windows.shape
        z = (windows.reshape(b * n, k2) @ fused).view(b, n, -1)  # [B, N, A]
        z += keys
        z += query.unsqueeze(1)
        z.tanh_()
        ctx.save_for_backward(windows, z, fused, v)
        return z @ v  # [B, N]

    @staticmethod
    def backward(ctx: Any, de: Tensor) -> tuple[Tensor | None, ...]:
        windows, z, fused, v = ctx.saved_tensors
        b, n, k2 = windows.shape
        a = z.size(2)
        dz = (de.unsqueeze(-1) * v).mul_(1 - z * z)  # [B, N, A]
        flat = dz.view(b * n, a)
        d_windows = (flat @ fused.t()).view(b, n, k2) if ctx.needs_input_grad[1] else None
        d_fused = windows.reshape(b * n, k2).t() @ flat if ctx.needs_input_grad[3] else None
        d_v = de.reshape(1, b * n) @ z.reshape(b * n, a) if ctx.needs_input_grad[4] else None
        return (dz.sum(1), d_windows, dz, d_fused,
                None if d_v is None else d_v.squeeze(0))


class ProcessedMemory(NamedTuple):
    """What ``LocationSensitiveAttention.preprocess_memory`` computes once per batch."""

    keys: Tensor  # [B, N, attention_dim] = memory_layer(memory)
    location_weight: Tensor  # [2K, attention_dim] fused location conv + dense


class LocationSensitiveAttention(AttentionMechanism):
    """Tacotron 2's location-sensitive additive attention.

    e[t, n] = v^T tanh(W q_t + V h_n + U f[t, n]), f = location features of the previous and
    cumulative weights. Submodule names follow NVIDIA/tacotron2 (``query_layer`` ...).
    """

    def __init__(
        self,
        attention_rnn_dim: int,
        embedding_dim: int,
        attention_dim: int,
        location_n_filters: int,
        location_kernel_size: int,
    ) -> None:
        super().__init__()
        self.query_layer = LinearNorm(
            attention_rnn_dim, attention_dim, bias=False, w_init_gain="tanh"
        )
        self.memory_layer = LinearNorm(embedding_dim, attention_dim, bias=False, w_init_gain="tanh")
        self.v = LinearNorm(attention_dim, 1, bias=False)
        self.location_layer = LocationLayer(location_n_filters, location_kernel_size, attention_dim)

    def preprocess_memory(self, memory: Tensor) -> ProcessedMemory:
        """``memory [B, N, E]`` -> keys ``V h`` ``[B, N, A]`` and the fused location weight."""
        return ProcessedMemory(self.memory_layer(memory), self.location_layer.fused_weight())

    def select(self, processed_memory: ProcessedMemory, index: Tensor) -> ProcessedMemory:
        return ProcessedMemory(processed_memory.keys[index], processed_memory.location_weight)

    def narrow(self, processed_memory: ProcessedMemory, n: int) -> ProcessedMemory:
        return ProcessedMemory(processed_memory.keys[:n], processed_memory.location_weight)

    def init_state(self, memory: Tensor, mask: Tensor) -> AttentionState:
        """Zero previous and cumulative weights, ``[B, N]`` float32 on the memory's device."""
        zeros = torch.zeros(mask.shape, dtype=torch.float32, device=memory.device)
        return AttentionState(zeros, zeros)

    def attend(self, query: Tensor, processed_memory: ProcessedMemory, mask: Tensor,
               state: AttentionState) -> tuple[Tensor, AttentionState]:
        """query ``[B, attention_rnn_dim]`` -> weights ``[B, N]`` float32, new state."""
        keys, location_weight = processed_memory
        loc_in = torch.stack((state.weights, state.cum_weights), dim=1)  # [B, 2, N]
        windows = self.location_layer.windows(loc_in)  # [B, N, 2K]
        processed_query = self.query_layer(query)  # [B, A]
        energies = location_energies(processed_query, windows, keys, location_weight,
                                     self.v.linear_layer.weight[0])  # [B, N]
        energies = self.adjust(energies, state)  # [B, N]
        weights = masked_softmax(energies, mask)  # [B, N] float32
        return weights, AttentionState(weights, state.cum_weights + weights)

    def adjust(self, energies: Tensor, state: AttentionState) -> Tensor:
        """Hook for variants that bias the energies ``[B, N]``; plain LSA leaves them alone."""
        return energies


def beta_binomial_filter(length: int, alpha: float, beta: float) -> Tensor:
    """Beta-binomial pmf over forward moves 0..length-1 (the prior filter of Battenberg et al.
    2020, "Location-relative attention mechanisms for robust long-form speech synthesis")."""
    n = length - 1

    def log_beta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    pmf = [math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                    + log_beta(k + alpha, n - k + beta) - log_beta(alpha, beta))
           for k in range(length)]
    return torch.tensor(pmf, dtype=torch.float32)


def causal_log_prior(prev: Tensor, flipped_filter: Tensor, floor: float) -> Tensor:
    """log of the forward prior: ``prev [B, N]`` convolved causally with a filter of forward
    moves (``flipped_filter [1, 1, L]``, reversed for conv1d), clamped at ``floor`` so the log
    stays finite -> ``[B, N]``. prior[n] = sum_k f[k] * prev[n - k]."""
    k = flipped_filter.shape[-1]
    prior = F.conv1d(F.pad(prev.unsqueeze(1), (k - 1, 0)), flipped_filter.to(prev.dtype))
    return torch.log(prior.squeeze(1).clamp(min=floor))


class PriorLocationSensitiveAttention(LocationSensitiveAttention):
    """Location-sensitive attention with a static forward prior (alignment-robust option).

    The previous step's weights are convolved with a causal beta-binomial filter (the chance of
    moving 0..L-1 tokens forward) and the log of that prior is added to the energies, so
    attention can only stay or move a few tokens forward: it cannot jump back or skip ahead,
    which makes alignment appear sooner and free-running synthesis robust. Attention starts on
    the first token. Everything else is Tacotron 2's location-sensitive attention.
    """

    def __init__(self, *args: Any, filter_len: int = 11, alpha: float = 0.1, beta: float = 0.9,
                 floor: float = 1e-8) -> None:
        super().__init__(*args)
        # flipped for conv1d (cross-correlation): prior[n] = sum_k f[k] * prev[n - k]
        self.register_buffer("prior_filter", beta_binomial_filter(filter_len, alpha, beta)
                             .flip(0).view(1, 1, -1), persistent=False)
        self.log_floor = math.log(floor)

    def init_state(self, memory: Tensor, mask: Tensor) -> AttentionState:
        """Previous weights one-hot on the first token, cumulative weights zero."""
        weights = torch.zeros(mask.shape, dtype=torch.float32, device=memory.device)
        weights[:, 0] = 1.0
        return AttentionState(weights, torch.zeros_like(weights))

    def log_prior(self, prev: Tensor) -> Tensor:
        """``[B, N]`` previous weights -> ``[B, N]`` log prior of the next weights."""
        return causal_log_prior(prev, self.prior_filter, math.exp(self.log_floor))

    def adjust(self, energies: Tensor, state: AttentionState) -> Tensor:
        """Add the log prior of the previous step's weights to the energies ``[B, N]``."""
        return energies.float() + self.log_prior(state.weights)


class DCAState(NamedTuple):
    """Recurrent state of dynamic convolution attention."""

    weights: Tensor  # [B, N] float32 attention weights of the previous decoder step


def sliding_windows(x: Tensor, k: int) -> Tensor:
    """``[B, N]`` -> ``[B, N, k]`` windows with "same" padding ((k - 1) // 2 zeros on the left,
    the rest on the right), so ``windows @ w`` equals a cross-correlation with ``w [k]``."""
    left = (k - 1) // 2
    return F.pad(x, (left, k - 1 - left)).unfold(1, k, 1)


class DynamicConvolutionAttention(AttentionMechanism):
    """Dynamic convolution attention (DCA, Battenberg et al. 2020).

    e[t, n] = v^T tanh(W f[t, n] + U g[t, n] + b) + log p[t, n], where f are static filters
    and g dynamic filters over the previous weights (the dynamic taps come from the attention
    RNN query through an MLP: tanh hidden layer, then linear), and p is the causal
    beta-binomial prior over the previous weights. There is no content (memory) term: the
    attention is purely location-relative, so it cannot jump to a look-alike token elsewhere in
    the text, and the prior lets it only stay or move forward. Starts on the first token.

    The MLP hidden layer and the energy layer are ``attention_dim`` wide (the paper uses 128).
    Filters are applied as matmuls over sliding windows of the previous weights (see
    ``features``): the static conv composed with W once per batch (as
    ``LocationLayer.apply_fused`` does), each item's dynamic conv composed with U once per step,
    all items in one batched matmul.
    """

    def __init__(
        self,
        attention_rnn_dim: int,
        attention_dim: int,
        static_filters: int = 8,
        static_filter_len: int = 21,
        dynamic_filters: int = 8,
        dynamic_filter_len: int = 21,
        prior_filter_len: int = 11,
        prior_alpha: float = 0.1,
        prior_beta: float = 0.9,
        floor: float = 1e-8,
    ) -> None:
        super().__init__()
        self.static_filter_len = static_filter_len
        self.dynamic_filters = dynamic_filters
        self.dynamic_filter_len = dynamic_filter_len
        self.static_conv = ConvNorm(1, static_filters, static_filter_len, bias=False)
        self.static_dense = LinearNorm(static_filters, attention_dim, bias=False,
                                       w_init_gain="tanh")  # W
        self.dynamic_hidden = LinearNorm(attention_rnn_dim, attention_dim, w_init_gain="tanh")
        self.dynamic_taps = LinearNorm(attention_dim, dynamic_filters * dynamic_filter_len,
                                       bias=False)
        self.dynamic_dense = LinearNorm(dynamic_filters, attention_dim, w_init_gain="tanh")  # U, b
        self.v = LinearNorm(attention_dim, 1, bias=False)
        self.register_buffer("prior_filter", beta_binomial_filter(
            prior_filter_len, prior_alpha, prior_beta).flip(0).view(1, 1, -1), persistent=False)
        self.floor = floor

    def preprocess_memory(self, memory: Tensor) -> Tensor:
        """The static conv composed with W: ``[static_filter_len, attention_dim]`` (the memory
        itself is not needed: DCA has no content term)."""
        conv_w = self.static_conv.conv.weight  # [F_s, 1, K_s]
        return (self.static_dense.linear_layer.weight @ conv_w.flatten(1)).t()  # [K_s, A]

    def select(self, processed_memory: Tensor, index: Tensor) -> Tensor:
        return processed_memory  # a weight, the same for every item

    def narrow(self, processed_memory: Tensor, n: int) -> Tensor:
        return processed_memory

    def init_state(self, memory: Tensor, mask: Tensor) -> DCAState:
        """Previous weights one-hot on the first token, ``[B, N]`` float32."""
        weights = torch.zeros(mask.shape, dtype=torch.float32, device=memory.device)
        weights[:, 0] = 1.0
        return DCAState(weights)

    def features(self, query: Tensor, prev: Tensor, static_weight: Tensor) -> Tensor:
        """``W f + U g + b`` ``[B, N, A]`` for query ``[B, Q]``, previous weights ``[B, N]``
        and ``static_weight`` from ``preprocess_memory``.

        The dynamic conv (no bias) followed by U is also one linear map per item,
        ``taps^T U^T`` ``[B, K_d, A]``; with equal static and dynamic lengths (the default) the
        static map is added to it and both filters cost a single batched matmul.
        """
        b = query.size(0)
        taps = self.dynamic_taps(torch.tanh(self.dynamic_hidden(query)))
        taps = taps.view(b, self.dynamic_filters, self.dynamic_filter_len)  # [B, F_d, K_d]
        dense = self.dynamic_dense.linear_layer
        dynamic_weight = taps.transpose(1, 2) @ dense.weight.t()  # [B, K_d, A]
        windows = sliding_windows(prev, self.dynamic_filter_len).to(dynamic_weight.dtype)
        if self.static_filter_len == self.dynamic_filter_len:
            x = torch.bmm(windows, dynamic_weight + static_weight.to(dynamic_weight.dtype))
        else:
            static = sliding_windows(prev, self.static_filter_len).to(static_weight.dtype)
            x = torch.bmm(windows, dynamic_weight) + (static @ static_weight).to(windows.dtype)
        return x + dense.bias.to(x.dtype)  # [B, N, A]

    def attend(self, query: Tensor, processed_memory: Tensor, mask: Tensor, state: DCAState
               ) -> tuple[Tensor, DCAState]:
        """query ``[B, attention_rnn_dim]`` -> weights ``[B, N]`` float32, new state."""
        prev = state.weights
        x = self.features(query, prev, processed_memory)  # [B, N, A]
        energies = self.v(torch.tanh(x)).squeeze(-1)  # [B, N]
        energies = energies.float() + causal_log_prior(prev, self.prior_filter, self.floor)
        weights = masked_softmax(energies, mask)  # [B, N] float32
        return weights, DCAState(weights)
