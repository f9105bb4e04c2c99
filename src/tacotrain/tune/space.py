"""The search space file: which config keys a study searches, how it scores and prunes trials.

A space file is YAML::

    params:                       # each name is a config key path, exactly as in --set
      optim.lr: {type: float, low: 1.0e-4, high: 2.0e-3, log: true}
      train.batch_size: {type: categorical, choices: [16, 32, 48]}
      model.n_frames_per_step: {type: int, low: 1, high: 3}
    objective: {metric: free/mcd_dtw_db, unaligned_penalty: 1000}
    pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 0}
    sampler: {type: tpe, seed: null}

It is validated before a study starts (:func:`validate_space`), so that no trial varies
something training never reads: a name must be a real config key, every value of its range must
pass the same config validation the trainer uses, and changing it must change what training
builds (model, loss, optimiser, batching or schedules; see :mod:`tacotrain.tune.wiring`). Values
reach a trial only as ``--set key=value`` overrides of that validated config.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tacotrain import metrics as M
from tacotrain.config import (
    Config,
    ConfigError,
    Strict,
    flatten,
    load_config,
    load_yaml,
    validate_as,
)

DEFAULT_SPACE = Path(__file__).resolve().parent / "default_space.yaml"


class SpaceError(ValueError):
    """The search space is invalid; the message names the parameter."""


class ParamSpec(Strict):
    """One searched config key. ``float``/``int`` use low..high (``log``, ``step``);
    ``categorical`` uses ``choices``."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False  # sample uniformly in log space (learning rates, weights)
    step: float | None = None  # discretisation step (not with log)
    choices: list[bool | int | float | str] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None:
                raise ValueError("categorical takes 'choices', not low/high")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("use either log or step, not both")
        if self.type == "int":
            for v in (self.low, self.high, self.step):
                if v is not None and float(v) != int(v):
                    raise ValueError(f"int parameter bounds and step must be integers, got {v}")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be > 0")
        return self

    def samples(self) -> list[Any]:
        """Values that must all be valid: the bounds (or every choice)."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            return [int(self.low), int(self.high)]  # type: ignore[arg-type]
        return [float(self.low), float(self.high)]  # type: ignore[arg-type]


class ObjectiveSpec(Strict):
    """What a trial is scored by (lower is better); see :mod:`tacotrain.tune.objective`."""

    # quality: the quality of the checkpoint the trial keeps (aligned first); time_to_speak:
    # training minutes until the verdict passes train.stop_when_aligned_rounds rounds in a row
    # (a trial that never does ranks behind every one that did); both: the pair, a
    # multi-objective study whose answer is a Pareto front
    kind: Literal["quality", "time_to_speak", "both"] = "quality"
    # the quality metric, a validation metric (lower is better): free/wer_ratio (the
    # recogniser's WER over its floor) where a recogniser judges the voice, else the
    # free-running MCD-DTW against ground truth. Trials keep best.pt by the same metric
    # (train.best_metric), so the value reported belongs to the checkpoint kept
    metric: str = M.FREE_MCD_DTW
    # added to the value of a trial that never aligned (quality) or never passed (time to
    # speak); larger than any plausible value, so that those trials rank behind the others
    unaligned_penalty: float = Field(1000.0, gt=0.0)

    @property
    def directions(self) -> list[str]:
        return ["minimize", "minimize"] if self.kind == "both" else ["minimize"]


# objective metrics with a figure per validation item (tune/pruning.py compares those)
ITEM_METRICS = (M.FREE_MCD_DTW, M.FREE_WER, M.FREE_WER_RATIO)


class PrunerSpec(Strict):
    """Pruning of hopeless trials from the values reported at each validation.

    median and wilcoxon compare trials at the same training time (tune/pruning.py): median on
    the objective so far, wilcoxon item by item on the objective's metric (one objective,
    quality, with a per-item metric). hyperband is Optuna's, on training steps."""

    type: Literal["median", "wilcoxon", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(2, ge=0)  # median, wilcoxon: finished trials before pruning
    n_warmup_steps: int = Field(0, ge=0)  # median, wilcoxon: training steps a trial always gets
    interval_steps: int = Field(1, ge=1)  # median, wilcoxon: prune checks every this many steps
    p_threshold: float = Field(0.1, gt=0.0, lt=1.0)  # wilcoxon: prune below this p-value
    min_resource: int | None = Field(None, ge=1)  # hyperband: steps (None: train.val_interval)
    reduction_factor: int = Field(3, ge=2)  # hyperband


class SamplerSpec(Strict):
    """How trials' parameters are chosen; every sampler is seeded with ``seed`` (recorded in the
    study; None: a different search each time)."""

    # tpe: multivariate TPE (the default; one or two objectives); nsga2: NSGA-II (two
    # objectives); cmaes: CMA-ES (one objective, float and int parameters only); random
    type: Literal["tpe", "nsga2", "cmaes", "random"] = "tpe"
    seed: int | None = None
    n_startup_trials: int = Field(5, ge=0)  # tpe and cmaes: random trials before modelling
    multivariate: bool = True  # tpe: model the parameters jointly, not one by one
    # tpe: trials still running count as bad ones, so that parallel workers spread out
    constant_liar: bool = True
    population_size: int = Field(8, ge=2)  # nsga2: trials per generation


class SearchSpace(Strict):
    params: dict[str, ParamSpec]
    objective: ObjectiveSpec = ObjectiveSpec()
    pruner: PrunerSpec = PrunerSpec()
    sampler: SamplerSpec = SamplerSpec()

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        if not self.params:
            raise ValueError("params: the search space is empty")
        if self.sampler.type == "cmaes":
            if self.objective.kind == "both":
                raise ValueError("sampler.type cmaes optimises one objective; objective.kind "
                                 "both needs tpe or nsga2")
            for name, p in self.params.items():
                if p.type == "categorical":
                    raise ValueError(f"sampler.type cmaes searches float and int parameters "
                                     f"only; params.{name} is categorical (use tpe, or fix it "
                                     "with --set)")
        if self.objective.kind == "both" and self.pruner.type != "none":
            raise ValueError(f"pruner.type {self.pruner.type}: Optuna prunes single-objective "
                             "studies only; objective.kind both needs pruner.type none")
        if self.pruner.type == "wilcoxon" and (self.objective.kind != "quality"
                                               or self.objective.metric not in ITEM_METRICS):
            raise ValueError(f"pruner.type wilcoxon compares validation items on the quality "
                             f"objective; it needs objective.kind quality and an "
                             f"objective.metric with per-item figures "
                             f"({', '.join(ITEM_METRICS)}), not {self.objective.kind} / "
                             f"{self.objective.metric}")
        if not self.objective.metric.startswith((f"{M.VAL}/", f"{M.FREE}/")):
            raise ValueError(f"objective.metric {self.objective.metric!r}: name a validation "
                             f"metric ({M.VAL}/... or {M.FREE}/...)")
        return self


def load_space(path: str | Path | None = None) -> SearchSpace:
    """The space in ``path`` (YAML), or the default shipped with tacotrain."""
    p = Path(path) if path else DEFAULT_SPACE
    return validate_as(SearchSpace, load_yaml(p), str(p))


def space_dict(space: SearchSpace) -> dict[str, Any]:
    return space.model_dump(mode="json", exclude_none=True)


def yaml_value(value: Any) -> str:
    """``value`` as the right-hand side of ``--set key=VALUE`` that parses back to itself.

    Needed because YAML 1.1 (PyYAML) reads ``1e-05`` as a string: floats always get a dot.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpaceError(f"non-finite value {value}")
        text = repr(value)
        mantissa, e, exp = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exp}"
        return text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise SpaceError(f"unsupported value {value!r}")


def to_overrides(params: dict[str, Any]) -> list[str]:
    """Trial parameters as ``key=value`` config overrides (plain config key names)."""
    return [f"{k}={yaml_value(v)}" for k, v in params.items()]


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Ask ``trial`` (an ``optuna.Trial``) for one value per parameter; names are config keys."""
    out: dict[str, Any] = {}
    for name, p in space.params.items():
        if p.type == "categorical":
            out[name] = trial.suggest_categorical(name, p.choices)
        elif p.type == "int":
            out[name] = trial.suggest_int(name, int(p.low), int(p.high),  # type: ignore[arg-type]
                                          step=int(p.step or 1), log=p.log)
        else:
            out[name] = trial.suggest_float(name, float(p.low), float(p.high),  # type: ignore[arg-type]
                                            step=p.step, log=p.log)
    return out


def _config_keys() -> dict[str, Any]:
    return flatten(Config().model_dump(mode="json"))


def _other_value(spec: ParamSpec, base: Any) -> Any:
    """A value of the range that differs from the base config's value (for the wiring check)."""
    for v in spec.samples():
        if v != base:
            return v
    return None


def validate_space(space: SearchSpace, base: str | Path,
                   overrides: list[str] | None = None) -> Config:
    """Check every parameter before a study starts; returns the base config.

    Raises :class:`SpaceError` naming the parameter when it is not a config key, a value of its
    range is rejected by the config validation, or changing it changes nothing training builds.
    """
    from tacotrain.tune.wiring import differences, fingerprint

    overrides = list(overrides or [])
    base_cfg = load_config(base, overrides)
    keys = _config_keys()
    base_flat = flatten(base_cfg.model_dump(mode="json"))
    base_print = fingerprint(base_cfg)
    for name, spec in space.params.items():
        if name not in keys:
            near = [k for k in keys if k.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise SpaceError(f"search space parameter {name!r} is not a config key{hint}")
        if isinstance(keys[name], list | dict):
            raise SpaceError(f"search space parameter {name!r} is a list or section, "
                             "not a single value")
        for value in spec.samples():
            try:
                load_config(base, [*overrides, f"{name}={yaml_value(value)}"])
            except ConfigError as exc:
                raise SpaceError(f"search space parameter {name!r}: value {value!r} is rejected "
                                 f"by the config validation:\n{exc}") from None
        other = _other_value(spec, base_flat[name])
        if other is None:
            raise SpaceError(f"search space parameter {name!r}: its only value equals the base "
                             f"config's ({base_flat[name]!r}); nothing to search")
        changed = load_config(base, [*overrides, f"{name}={yaml_value(other)}"])
        if not differences(base_print, fingerprint(changed)):
            raise SpaceError(f"search space parameter {name!r}: changing it (to {other!r}) "
                             "changes nothing training builds (model, loss, optimiser, batches, "
                             "schedules); it is not a training hyperparameter")
    return base_cfg


