"""Does a config key reach training? A fingerprint of everything the trainer builds from a config.

A study never searches a parameter that nothing reads. The check is generic rather than a
hand-kept list: build what ``Trainer.__init__`` builds from a config (the model, the loss,
the optimiser, the batch sampler and collate function) plus the schedules it reads every step
(every ``*_at(step, section)`` function of ``train/schedules.py``: learning rate,
guided-attention weight, attention-entropy weight), and describe each as plain data: classes,
their hyperparameter attributes (dropout ``p``, reduction factor ``r``, ...), parameter shapes,
optimiser defaults, schedule values on a grid of steps. Two configs whose fingerprints are
equal train identically as far as these objects go, so a parameter that does not change the
fingerprint is not worth searching. The model is built on PyTorch's ``meta`` device: shapes
without memory or initialisation, so even the full-size model costs milliseconds.

``tests/test_tune.py`` checks the same thing against real ``Trainer`` objects for the default
search space, so this mirror of the trainer's construction cannot silently drift.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from tacotrain.config import Config
from tacotrain.data.loader import BucketBatchSampler, Collate
from tacotrain.model import Tacotron2, Tacotron2Loss
from tacotrain.train import schedules as sched
from tacotrain.train.schedules import lr_at

N_SYMBOLS = 64  # fixed sizes for the fingerprint: only differences between configs matter
N_MELS = 80
_PRIMITIVE = (bool, int, float, str, type(None))


def _module_print(module: nn.Module) -> dict[str, Any]:
    """Class, hyperparameter attributes and parameter/buffer shapes of every submodule."""
    out: dict[str, Any] = {}
    for name, m in module.named_modules():
        attrs = {k: v for k, v in vars(m).items()
                 if not k.startswith("_") and k != "training"
                 and (isinstance(v, _PRIMITIVE) or (isinstance(v, tuple) and all(
                     isinstance(x, _PRIMITIVE) for x in v)))}
        shapes = {k: tuple(p.shape) for k, p in m.named_parameters(recurse=False)}
        shapes.update({k: tuple(b.shape) for k, b in m.named_buffers(recurse=False)})
        out[name or "."] = (type(m).__name__, attrs, shapes)
    return out


def _section_paths(model: type[BaseModel], prefix: str = "") -> dict[type, str]:
    """``{section class: dotted path}`` of every nested config section (first occurrence)."""
    out: dict[type, str] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.setdefault(ann, prefix + name)
            for cls, path in _section_paths(ann, prefix + name + ".").items():
                out.setdefault(cls, path)
    return out


def schedules() -> dict[str, tuple[Callable[[int, Any], float], str]]:
    """Every ``NAME_at(step, section)`` of ``train/schedules.py`` with its section's path.

    Found by introspection, so a schedule added there (say, the attention-entropy weight) is
    part of the fingerprint without anyone remembering to list it here.
    """
    paths = _section_paths(Config)
    out = {}
    for name, fn in vars(sched).items():
        if not (name.endswith("_at") and inspect.isfunction(fn)):
            continue
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters)
        section = hints.get(params[1]) if len(params) == 2 else None
        if section in paths:
            out[name] = (fn, paths[section])
    return out


def _section(cfg: Config, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def _steps(cfg: Config) -> list[int]:
    """A grid dense enough to see any change of warm-up, starts, ramps, decay steps or rates,
    plus the step-valued fields of the scheduled sections (and their neighbours)."""
    grid = set(range(0, 1001)) | set(range(1000, 200001, 50))
    for _, path in schedules().values():
        for key, value in _section(cfg, path).model_dump().items():
            if isinstance(value, int) and not isinstance(value, bool) and "step" in key \
                    or key in ("start", "decay_start"):
                grid.update((max(int(value) - 1, 0), int(value), int(value) + 1))
    return sorted(grid)


def fingerprint(cfg: Config, extra_steps: list[int] | None = None) -> dict[str, Any]:
    """Plain-data description of what training builds from ``cfg`` (see the module doc)."""
    with torch.device("meta"):
        model = Tacotron2(cfg.model, N_SYMBOLS, N_MELS)
    criterion = Tacotron2Loss(cfg.loss, cfg.model.n_frames_per_step)
    oc = cfg.optim
    opt_cls = torch.optim.AdamW if oc.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls([torch.zeros(1)], lr=lr_at(0, oc), betas=(oc.beta1, oc.beta2), eps=oc.eps,
                        weight_decay=oc.weight_decay)
    tc = cfg.train
    # "auto" is chosen when training starts; its upper bound stands for it here
    batch = tc.max_batch_size if tc.batch_size == "auto" else tc.batch_size
    sampler = BucketBatchSampler(list(range(100)), batch, seed=tc.seed,
                                 bucket_batches=tc.bucket_batches)
    steps = sorted(set(_steps(cfg)) | set(extra_steps or []))
    fp: dict[str, Any] = {
        "model": _module_print(model),
        "loss": _module_print(criterion),
        "optimizer": (type(optimizer).__name__,
                      {k: v for k, v in optimizer.defaults.items()
                       if isinstance(v, (*_PRIMITIVE, tuple))}),
        "batches": {k: v for k, v in vars(sampler).items() if isinstance(v, _PRIMITIVE)},
        "collate": vars(Collate(cfg.model.n_frames_per_step)),
    }
    for name, (fn, path) in schedules().items():
        section = _section(cfg, path)
        fp[f"schedule:{name}"] = {s: fn(s, section) for s in steps}
    return fp


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of the fingerprint parts that differ (empty: the two configs train alike).

    Schedules are compared on the steps both fingerprints have.
    """
    out = []
    for key in a:
        x, y = a[key], b.get(key)
        if key.startswith("schedule:"):
            common = x.keys() & y.keys()
            if any(x[s] != y[s] for s in common):
                out.append(key)
        elif x != y:
            out.append(key)
    return out
