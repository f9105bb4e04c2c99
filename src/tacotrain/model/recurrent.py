"""A faster LSTM cell for the teacher-forced decoder loop: deferred weight gradients.

Training Tacotron 2 at full size spends most of its time in the two decoder LSTM cells, run
once per decoder step on a small batch. Plain autograd does three things badly there:

* every step's backward computes the weight gradient as its own outer product
  ``dgates^T @ x`` (``[4H, B] @ [B, K]``) and adds it into a ``[4H, K]`` accumulator, hundreds
  of times per batch, each a full pass over a matrix of several million floats;
* the small-batch matmuls ``x @ W^T`` go through a BLAS routine tuned for large shapes;
* the cell's pointwise gate arithmetic is a dozen separate autograd nodes per step.

``CellRunner`` runs one cell over a whole teacher-forced sequence instead. Each step's input
rows are written into one buffer; its backward computes only the gradient of the step's inputs
and writes the step's gate gradients into a second buffer; the weight gradient of all steps is
then one large matrix product ``G^T @ X`` over the rows that were actually computed (the
recurrence guarantees step 0's backward runs last, so it is the one that returns it). On a CPU
in float32 the per-step products use oneDNN with the weight packed once per batch. The maths is
exactly the LSTM cell's (PyTorch's gate order i, f, g, o); only the order of floating-point
sums differs, so results agree with ``nn.LSTMCell`` to rounding.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch
from torch import Tensor


class ShrinkingBatch(NamedTuple):
    """How a padded batch of sequences is run with only its active items at each step.

    Items are sorted longest first, so the items still running at step k are the first
    ``rows[k]`` of the sorted order. Their rows, all steps together, are "packed": step-major,
    then sorted position, R = sum(rows) rows in all.
    """

    order: Tensor  # [B] long: item at each sorted position
    rows: list[int]  # [steps] active items per step, non-increasing, >= 1
    packed_of: Tensor  # [B * steps] long: packed row of (item, step), R where it does not run
    source_of: Tensor  # [R] long: flat index item * steps + step of each packed row


def shrinking_batch(lengths: Tensor, steps: int) -> ShrinkingBatch:
    """``lengths [B]`` steps per item (clamped to 1..steps) -> the ``ShrinkingBatch`` plan."""
    lengths = lengths.clamp(min=1, max=steps)
    dev = lengths.device
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_lengths = lengths[order].tolist()
    rows, n = [], len(sorted_lengths)
    for k in range(steps):
        while n > 1 and sorted_lengths[n - 1] <= k:
            n -= 1
        rows.append(n)
    offsets = torch.tensor([0, *rows], device=dev).cumsum(0)
    place = torch.argsort(order)  # [B] sorted position of each item
    runs = place[:, None] < offsets.diff()[None, :]  # [B, steps]: the item runs step k
    packed = offsets[:-1][None, :] + place[:, None]  # [B, steps]
    flat = torch.arange(runs.numel(), device=dev).view_as(runs)
    source_of = torch.empty(offsets[-1].item(), dtype=torch.long, device=dev)
    source_of[packed[runs]] = flat[runs]
    packed_of = torch.where(runs, packed, offsets[-1]).flatten()
    return ShrinkingBatch(order, rows, packed_of, source_of)


def unpack_rows(x: Tensor, plan: ShrinkingBatch, steps: int) -> Tensor:
    """Packed rows ``[R, C]`` -> ``[B, steps, C]`` in item order, zeros where an item does not
    run (one gather; its backward is one index-add)."""
    x = torch.cat((x, x.new_zeros(1, x.size(1))))
    return x.index_select(0, plan.packed_of).view(-1, steps, x.size(1))


@functools.cache
def _onednn_works() -> bool:
    """Whether this torch build can pack a float32 linear weight for oneDNN and multiply by it
    correctly (checked once on a small case; private ops, so any failure means: don't)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        w = torch.arange(12.0).view(3, 4) / 7
        x = torch.arange(8.0).view(2, 4) / 5
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 2)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        return bool(torch.allclose(y, x @ w.t(), rtol=1e-5, atol=1e-6))
    except Exception:  # noqa: BLE001 - an op missing or refusing in this build
        return False


def _onednn_ok(w: Tensor) -> bool:
    return w.device.type == "cpu" and w.dtype == torch.float32 and _onednn_works()


class _Matmul:
    """``x @ w^T`` for a fixed ``w [N, K]`` (detached), applied to many small ``x [M, K]``."""

    def __init__(self, w: Tensor, rows_hint: int) -> None:
        self.packed = None
        self.w = w
        if _onednn_ok(w):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), rows_hint)

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return x @ self.w.t()


class CellRunner:
    """One LSTM cell over one teacher-forced sequence whose batch shrinks as items finish.

    ``weight [4H, S + K]`` and ``bias [4H]`` are the cell's input and hidden weights side by
    side, ``[W_ih | W_hh]``, and its two biases summed. The first S input columns are
    ``static [R, S]``: inputs known before the loop (the prenet output), one row per computed
    (step, item), step-major, so their share of the gates is one product up front and their
    gradient one product at the end. ``rows [steps]`` is the number of active items at each
    step (non-increasing: items sorted longest first; R = sum(rows)). Call ``step`` once per
    step, in order, with the remaining K columns of input; ``h, c`` are ``[rows[t], H]``.
    """

    def __init__(self, weight: Tensor, bias: Tensor, rows: list[int],
                 static: Tensor | None = None) -> None:
        self.weight, self.bias = weight, bias  # autograd links; the maths uses detached copies
        self.static = static
        self.rows = rows
        self.offsets = [0]
        for n in rows:
            self.offsets.append(self.offsets[-1] + n)
        total = self.offsets[-1]
        self.train = torch.is_grad_enabled() and (
            weight.requires_grad or bias.requires_grad
            or (static is not None and static.requires_grad))
        s = 0 if static is None else static.size(1)
        w = weight.detach()
        self.w_static, w_dyn = w[:, :s], w[:, s:]
        hint = max(rows) if rows else 1
        self.fwd = _Matmul(w_dyn, hint)
        self.bwd = _Matmul(w_dyn.t(), hint) if self.train else None
        # the static inputs' gate share and the biases, for every row at once: [R, 4H]
        self.pre = bias.detach().expand(total, w.size(0))
        if static is not None:
            self.pre = torch.addmm(bias.detach(), static.detach(), self.w_static.t())
        # X: every step's dynamic input rows; G: their gate gradients, filled by backward
        self.x = w.new_empty(total if self.train else hint, w_dyn.size(1))
        self.g = w.new_zeros(total, w.size(0)) if self.train else None

    def step(self, t: int, parts: list[Tensor], c: Tensor) -> tuple[Tensor, Tensor]:
        """Step t: ``parts`` the per-step inputs ``[n, K_i]`` whose widths add up to K (the
        previous hidden state last), ``c [n, H]`` the previous cell state -> new ``h, c``."""
        static = self.static if self.static is not None else self.bias
        return _CellStep.apply(self, t, c, self.weight, self.bias, static, *parts)

    def rows_of(self, t: int) -> slice:
        if self.train:
            return slice(self.offsets[t], self.offsets[t + 1])
        return slice(0, self.rows[t])

    def final_grads(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """After every step's backward: gradients of weight, bias and static inputs."""
        g = self.g
        d_dyn = g.t() @ self.x  # [4H, K], all steps in one product
        d_static = None
        if self.static is not None:
            d_weight = torch.cat((g.t() @ self.static.detach(), d_dyn), dim=1)
            d_static = g @ self.w_static  # [R, S]
        else:
            d_weight = d_dyn
        return d_weight, g.sum(0), d_static


class _CellStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, run: CellRunner, t: int, c: Tensor, weight: Tensor, bias: Tensor,
                static: Tensor, *parts: Tensor) -> tuple[Tensor, Tensor]:
        x = run.x[run.rows_of(t)]  # [n, K], a view into the shared buffer
        col = 0
        for p in parts:
            x[:, col:col + p.size(1)] = p
            col += p.size(1)
        gates = run.fwd(x) + run.pre[run.offsets[t]:run.offsets[t + 1]]  # [n, 4H]
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
        c_new = f * c + i * g
        tc = torch.tanh(c_new)
        h_new = o * tc
        ctx.run, ctx.t, ctx.widths = run, t, [p.size(1) for p in parts]
        ctx.save_for_backward(i, f, g, o, c, tc)
        return h_new, c_new

    @staticmethod
    def backward(ctx: Any, dh: Tensor | None, dc: Tensor | None) -> tuple[Any, ...]:
        i, f, g, o, c, tc = ctx.saved_tensors
        run: CellRunner = ctx.run
        dh = torch.zeros_like(tc) if dh is None else dh
        dc_tot = dh * o * (1 - tc * tc)
        if dc is not None:
            dc_tot = dc_tot + dc
        dgates = run.g[run.rows_of(ctx.t)]  # [n, 4H] view: written here, read at step 0
        di, df, dgg, do = dgates.chunk(4, dim=1)
        torch.mul(dc_tot * g, i * (1 - i), out=di)
        torch.mul(dc_tot * c, f * (1 - f), out=df)
        torch.mul(dc_tot * i, 1 - g * g, out=dgg)
        torch.mul(dh * tc, o * (1 - o), out=do)
        d_parts = list(torch.split(run.bwd(dgates), ctx.widths, dim=1))
        d_weight = d_bias = d_static = None
        if ctx.t == 0:
            # every later step's backward has run: the recurrence makes step 0 the last
            d_weight, d_bias, d_static = run.final_grads()
        return (None, None, dc_tot * f, d_weight, d_bias, d_static, *d_parts)


class ContextReader:
    """The attention context ``weights_t @ memory`` at every step of a shrinking batch.

    ``memory [B, N, E]`` is in the loop's sorted order (items longest first), so step t reads
    its first ``rows[t]`` items. Plain autograd adds a ``[n, N, E]`` memory gradient into an
    accumulator at every step; here each step's backward computes only the gradient of its
    weights and records its context gradient, and the memory's gradient, the sum over steps of
    ``weights_t^T dcontext_t``, is one batched product when step 0's backward runs (the last:
    step t's context feeds step t + 1's attention).
    """

    def __init__(self, memory: Tensor, plan: ShrinkingBatch, steps: int) -> None:
        self.memory = memory
        self.offsets = [0]
        for n in plan.rows:
            self.offsets.append(self.offsets[-1] + n)
        self.train = torch.is_grad_enabled() and memory.requires_grad
        if self.train:
            b, n_tokens, e = memory.shape
            total = self.offsets[-1]
            self.w = memory.new_zeros(total + 1, n_tokens)  # each step's weights; a zero row
            self.dc = memory.new_zeros(total + 1, e)  # each step's context gradient
            # [B, steps] packed row of each (sorted item, step); the zero row where none
            self.index = plan.packed_of.view(b, steps)[plan.order].flatten()
            self.steps = steps

    def read(self, t: int, weights: Tensor) -> Tensor:
        """Step t's ``weights [n, N]`` -> context ``[n, E]``."""
        weights = weights.to(self.memory.dtype)
        if not self.train:
            return torch.bmm(weights.unsqueeze(1), self.memory[:weights.size(0)]).squeeze(1)
        return _Read.apply(self, t, weights, self.memory)

    def memory_grad(self) -> Tensor:
        b, n_tokens, e = self.memory.shape
        w = self.w.index_select(0, self.index).view(b, self.steps, n_tokens)
        dc = self.dc.index_select(0, self.index).view(b, self.steps, e)
        return torch.bmm(w.transpose(1, 2), dc)  # [B, N, E]


class _Read(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, run: ContextReader, t: int, weights: Tensor, memory: Tensor
                ) -> Tensor:
        n = weights.size(0)
        run.w[run.offsets[t]:run.offsets[t + 1]] = weights
        ctx.run, ctx.t, ctx.n = run, t, n
        return torch.bmm(weights.unsqueeze(1), memory[:n]).squeeze(1)

    @staticmethod
    def backward(ctx: Any, dc: Tensor) -> tuple[Any, ...]:
        run: ContextReader = ctx.run
        run.dc[run.offsets[ctx.t]:run.offsets[ctx.t + 1]] = dc
        d_weights = torch.bmm(run.memory.detach()[:ctx.n], dc.unsqueeze(2)).squeeze(2)
        d_memory = run.memory_grad() if ctx.t == 0 else None
        return None, None, d_weights, d_memory
