"""Schedules as pure functions of the step: nothing multiplies these values at run time."""

from __future__ import annotations

import math

from tacotrain.config import (
    AttentionEntropyConfig,
    Config,
    GuidedAttentionConfig,
    OptimConfig,
)


def lr_at(step: int, cfg: OptimConfig) -> float:
    """Linear warm-up to ``cfg.lr`` over ``warmup_steps``, then decay from ``decay_start``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    start = max(cfg.decay_start, cfg.warmup_steps)
    if cfg.decay == "none" or step < start:
        return cfg.lr
    t = step - start
    if cfg.decay == "exponential":
        lr = cfg.lr * cfg.decay_rate ** (t / cfg.decay_steps)
    else:  # cosine from lr to min_lr over decay_steps, then flat
        frac = min(t / cfg.decay_steps, 1.0)
        lr = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))
    return max(lr, cfg.min_lr)


def ga_weight_at(step: int, cfg: GuidedAttentionConfig) -> float:
    """Guided-attention weight: constant, then exponential decay to ``floor``; 0 if disabled."""
    if not cfg.enabled:
        return 0.0
    if step < cfg.decay_start:
        w = cfg.initial_weight
    else:
        w = cfg.initial_weight * cfg.decay_rate ** ((step - cfg.decay_start) / cfg.decay_steps)
    return min(max(w, cfg.floor), cfg.max_weight)


def entropy_weight_at(step: int, cfg: AttentionEntropyConfig) -> float:
    """Attention-entropy weight: 0 before ``start``, then a linear ramp to ``weight``."""
    if cfg.weight == 0 or step < cfg.start:
        return 0.0
    return cfg.weight * min(1.0, (step - cfg.start + 1) / cfg.ramp_steps)


def scheduled_value(name: str, step: int, cfg: Config, lr_scale: float = 1.0) -> float:
    """The scheduled value of a wired parameter (config.WIRED_PARAMETERS) at ``step``;
    ``lr_scale``: the guard's rollback factor on the learning rate."""
    if name == "optim.lr":
        return lr_at(step, cfg.optim) * lr_scale
    if name == "loss.guided_attention.weight":
        return ga_weight_at(step, cfg.loss.guided_attention)
    if name == "optim.grad_clip":
        return cfg.optim.grad_clip
    raise KeyError(name)
