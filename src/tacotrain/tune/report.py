"""``tacotrain tune report``: the leaderboard, the best config, Optuna's plots and an HTML page.

Studies have one objective (lower is better: the score of :mod:`tacotrain.tune.objective`) or
two, both minimised: ``values = [time_to_speak, quality]`` (training minutes until the voice
passed the verdict; a quality metric such as ``free/wer_ratio``). What a finished trial records
(user attributes; studies made before these existed lack them and report as before):
``objective_kind``, ``time_to_speak_minutes`` (None: it never passed, "censored"), ``passed``,
``quality``, ``quality_metric``, ``run_dir``, ``outcome``, ``wall_minutes``, ``best_step``,
``best_loss``, ``fail_reason``.

One objective: the leaderboard ranks finished trials by their score (aligned before unaligned
before diverged), then pruned trials by the last value they reported, then failed ones (with
their reason), then those still running or waiting. The best config is the study's base config
(recorded when the study was created) with the best trial's parameters applied, validated by
the same code as any config: ``tacotrain train --config best_config.yaml`` trains it with the
full step budget of the base config.

Two objectives: the Pareto front is Optuna's ``study.best_trials`` (no other complete trial is
both faster and better). The leaderboard lists the front by time to speak, then the other
complete trials by Pareto rank (the front of what remains, and so on) and time, then pruned,
failed and running ones. ``best_config.yaml`` is the fastest front trial;
``pareto/trial-NNNN.yaml`` holds every front trial's config.

``report.html`` (one page, relative links only) shows all of it, the parameter importances per
objective, and per trial its images and free-running audio, copied into ``report-media/NNNN/``
so that the page survives the deletion of the trials' run directories, and the exact
``tacotrain train`` command that trains the trial's settings from scratch.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tacotrain.config import Config, build, to_yaml
from tacotrain.fsutil import atomic_write_text
from tacotrain.train.validation import (
    PLOT_FREE_ALIGNMENT,
    PLOT_FREE_MEL,
    PLOT_TF_ALIGNMENT,
    PLOT_TF_MEL,
)
from tacotrain.tune.space import to_overrides
from tacotrain.tune.study import ATTR, TuneError

log = logging.getLogger(__name__)

_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "RUNNING": 3, "WAITING": 4}
TIME_ATTR = "time_to_speak_minutes"
NEW_ATTRS = ("objective_kind", TIME_ATTR, "passed", "quality", "quality_metric")
MEDIA_DIR = "report-media"  # not "trials": that is where the study's run directories live
PARETO_DIR = "pareto"
HTML_FILE = "report.html"
# (file in RUN/plots, what it shows): the newest validation's plots (each overwrites the last)
TRIAL_PLOTS = [(PLOT_FREE_ALIGNMENT, "free-running alignment"),
               (PLOT_FREE_MEL, "free-running mel vs ground truth"),
               (PLOT_TF_ALIGNMENT, "teacher-forced alignment"),
               (PLOT_TF_MEL, "teacher-forced mel")]
_WAV_NAME = re.compile(r"free-run-step-(\d+)\.wav$")


@dataclass
class Row:
    rank: int
    number: int
    state: str
    value: float | None  # 1 objective: the score (COMPLETE) or last reported value (PRUNED)
    outcome: str  # aligned, unaligned, diverged, pruned, failed, ...
    best_loss: float | None
    minutes: float | None
    params: dict[str, Any]
    note: str = ""
    values: list[float] | None = None  # every objective value (COMPLETE)
    time_to_speak: float | None = None  # minutes until the verdict passed
    censored: bool = False  # finished without passing the verdict (time_to_speak is None)
    passed: bool | None = None
    quality: float | None = None
    quality_metric: str | None = None
    pareto_rank: int | None = None  # 2 objectives, COMPLETE: 1 = on the Pareto front
    new_attrs: bool = False  # the trial records the attributes above


@dataclass
class Media:
    """A trial's files copied into the report directory (paths relative to it)."""

    images: list[tuple[str, str | None]] = field(default_factory=list)  # (label, path|None)
    audio: list[tuple[str, str]] = field(default_factory=list)  # (label, path)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    rows: list[Row]
    best_config: Path | None
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    directions: int = 1
    front: list[Row] = field(default_factory=list)  # 2 objectives: by time to speak
    pareto_configs: list[Path] = field(default_factory=list)
    best_number: int | None = None  # the trial of best_config.yaml
    commands: dict[int, str] = field(default_factory=dict)  # trial -> tacotrain train ...
    importances: dict[str, dict[str, float]] = field(default_factory=dict)  # objective -> ..
    html: Path | None = None


# ---------------------------------------------------------------------------- leaderboard
def _last_value(t: Any) -> float | None:
    if t.values is not None and len(t.values) == 1:
        return float(t.values[0])
    if t.values is None and t.intermediate_values:
        return float(t.intermediate_values[max(t.intermediate_values)])
    return None


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def is_multi(study: Any) -> bool:
    return len(study.directions) > 1


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and \
        any(x < y for x, y in zip(a, b, strict=True))


def pareto_ranks(study: Any) -> dict[int, int]:
    """Trial number -> Pareto rank of each complete trial of a 2-objective study: 1 for
    ``study.best_trials`` (the front), 2 for the front of the rest, and so on."""
    from optuna.trial import TrialState

    left = {t.number: tuple(float(v) for v in t.values)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None}
    ranks = {t.number: 1 for t in study.best_trials}
    for n in ranks:
        left.pop(n, None)
    rank = 2
    while left:
        front = [n for n, p in left.items()
                 if not any(_dominates(q, p) for m, q in left.items() if m != n)]
        for n in front:
            ranks[n] = rank
            del left[n]
        rank += 1
    return ranks


def _row(t: Any, multi: bool) -> Row:
    ua = t.user_attrs
    state = t.state.name
    value = _last_value(t) if state in ("COMPLETE", "PRUNED") and not multi else None
    if state == "COMPLETE":
        outcome, note = ua.get("outcome", "complete"), ua.get("diverged_reason", "")
    elif state == "PRUNED":
        step = max(t.intermediate_values) if t.intermediate_values else None
        outcome, note = "pruned", f"pruned at step {step}" if step is not None else ""
        if ua.get("pruned_reason"):  # e.g. it could no longer speak sooner than the best
            note += f": {ua['pruned_reason']}"
    elif state == "FAIL":
        retried = t.system_attrs.get("failed_trial") is not None
        outcome = "failed"
        note = ua.get("fail_reason") or "its worker stopped sending heartbeats (stale)"
        if retried:
            note += f" [retry of trial {t.system_attrs['failed_trial']}]"
    else:
        outcome, note = state.lower(), ""
    new = any(k in ua for k in NEW_ATTRS)
    passed = ua.get("passed")
    return Row(0, t.number, state, value, outcome, ua.get("best_loss"), ua.get("wall_minutes"),
               dict(t.params), note,
               values=[float(v) for v in t.values] if t.values is not None else None,
               time_to_speak=_float(ua.get(TIME_ATTR)),
               censored=TIME_ATTR in ua and ua[TIME_ATTR] is None and state == "COMPLETE",
               passed=bool(passed) if passed is not None else None,
               quality=_float(ua.get("quality")), quality_metric=ua.get("quality_metric"),
               new_attrs=new)


def _inf(v: float | None) -> float:
    return v if v is not None and not math.isnan(v) else math.inf


def leaderboard(study: Any) -> list[Row]:
    multi = is_multi(study)
    rows = [_row(t, multi) for t in study.get_trials(deepcopy=False)]
    if multi:
        ranks = pareto_ranks(study)
        for r in rows:
            r.pareto_rank = ranks.get(r.number) if r.state == "COMPLETE" else None
        rows.sort(key=lambda r: (_STATE_ORDER.get(r.state, 9), r.pareto_rank or 0,
                                 *(_inf(v) for v in (r.values or [math.inf, math.inf])),
                                 r.number))
    else:
        rows.sort(key=lambda r: (_STATE_ORDER.get(r.state, 9),
                                 r.value if r.value is not None and math.isfinite(r.value)
                                 else math.inf, r.number))
    for k, r in enumerate(rows, start=1):
        r.rank = k
    return rows


def short_names(names: list[str]) -> dict[str, str]:
    """The shortest unique dotted suffix of each name: ``optim.lr`` -> ``lr``."""
    out = {}
    for n in names:
        parts = n.split(".")
        for k in range(1, len(parts) + 1):
            cand = ".".join(parts[-k:])
            if sum(1 for m in names if m == cand or m.endswith("." + cand)) == 1:
                out[n] = cand
                break
        else:
            out[n] = n
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _num(v: float | None, spec: str = ".4f") -> str:
    return format(v, spec) if v is not None else "-"


def speak_text(r: Row) -> str:
    """Time to speak as shown: minutes, ``censored`` (never passed) or ``-`` (not recorded)."""
    if r.time_to_speak is not None:
        return f"{r.time_to_speak:.1f}"
    return "censored" if r.censored else "-"


def _passed_text(r: Row) -> str:
    return "-" if r.passed is None else ("yes" if r.passed else "no")


def quality_metric(rows: list[Row]) -> str | None:
    """The quality metric's name when all trials that record one agree, else None."""
    names = {r.quality_metric for r in rows if r.quality_metric}
    return names.pop() if len(names) == 1 else None


def format_leaderboard(rows: list[Row]) -> str:
    """The leaderboard as a text table. Studies without the time-to-speak/quality attributes
    keep the columns they always had; others show time to speak, passed and quality, and
    2-objective studies the Pareto rank (1 = on the front) instead of a single objective."""
    names = sorted({k for r in rows for k in r.params})
    short = short_names(names)
    multi = any(r.values is not None and len(r.values) > 1 for r in rows)
    new = multi or any(r.new_attrs for r in rows)
    if new:
        head = ["rank", "trial", "state", "front" if multi else "objective", "speak min",
                "passed", quality_metric(rows) or "quality", "metric", "min", "params / note"]
    else:
        head = ["rank", "trial", "state", "objective", "aligned", "metric", "min",
                "params / note"]
    right = {"rank", "trial", "front", "objective", "speak min", "metric", "min", head[6]}
    table = []
    for r in rows:
        params = " ".join(f"{short[k]}={_fmt(r.params[k])}" for k in names if k in r.params)
        tail = f"{params}  {r.note}".strip() if r.note else params
        first = [str(r.rank), str(r.number), r.state]
        if new:
            obj = str(r.pareto_rank or "-") if multi else _num(r.value)
            middle = [obj, speak_text(r), _passed_text(r), _num(r.quality)]
        else:
            aligned = {"aligned": "yes", "unaligned": "no", "diverged": "diverged"}.get(
                r.outcome, "-")
            middle = [_num(r.value), aligned]
        table.append([*first, *middle, _num(r.best_loss), _num(r.minutes, ".1f"), tail])
    widths = [max(len(x[i]) for x in [head, *table]) for i in range(len(head) - 1)]
    lines = []
    for x in [head, *table]:
        lines.append("  ".join(c.rjust(w) if head[i] in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(x, widths, strict=False)))
                     + "  " + x[-1])
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------------- configs
def _record(study: Any) -> dict[str, Any]:
    record = study.user_attrs.get(ATTR)
    if not record:
        raise TuneError(f"study {study.study_name!r} was not created by tacotrain tune "
                        "(no base config recorded)")
    return record


def trial_config(study: Any, trial: Any) -> Config:
    """The study's base config with ``trial``'s parameters applied (validated)."""
    return build(Config, _record(study)["base"], to_overrides(dict(trial.params)),
                 f"study {study.study_name} trial {trial.number}")


def front_trials(study: Any) -> list[Any]:
    """2 objectives: the Pareto front (``study.best_trials``), fastest first."""
    return sorted(study.best_trials, key=lambda t: (*t.values, t.number))


def best_trial(study: Any) -> Any:
    """The trial of ``best_config.yaml``: the lowest score (1 objective) or the fastest trial
    on the Pareto front (2 objectives); TuneError when no trial completed."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None]
    if not done:
        raise TuneError(f"study {study.study_name!r} has no complete trial yet")
    if is_multi(study):
        return front_trials(study)[0]
    return min(done, key=lambda t: (t.values[0], t.number))


def best_config(study: Any) -> tuple[Config, Any]:
    """The base config with the best trial's parameters, and that trial."""
    best = best_trial(study)
    return trial_config(study, best), best


def _result_words(t: Any) -> str:
    ua = t.user_attrs
    if len(t.values) > 1:
        tts = ua.get(TIME_ATTR)
        speak = f"{tts:.1f} min" if isinstance(tts, int | float) else \
            "never passed" if TIME_ATTR in ua else f"{t.values[0]:.4g}"
        metric = ua.get("quality_metric") or "quality"
        return f"time to speak {speak}, {metric} {t.values[1]:.4g}"
    return (f"objective {t.values[0]:.4f} ({ua.get('outcome', '?')}, best "
            f"{ua.get('best_loss')} at step {ua.get('best_step')})")


def _write_trial_config(study: Any, trial: Any, path: Path, what: str) -> None:
    cfg = trial_config(study, trial)
    head = (f"# {what} of study {study.study_name!r}: trial {trial.number}, "
            f"{_result_words(trial)}.\n# Its parameters: "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
            + f"\n# Train it: tacotrain train --config {path.name} --data DATA --out RUN\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, head + to_yaml(cfg))


def write_best_config(study: Any, path: Path) -> tuple[Path, Any]:
    best = best_trial(study)
    what = "Fastest trial on the Pareto front" if is_multi(study) else "Best trial"
    _write_trial_config(study, best, path, what)
    return path, best


def write_pareto_configs(study: Any, out: Path) -> list[Path]:
    """``out/trial-NNNN.yaml`` for every front trial; files of trials no longer on the front
    are removed."""
    paths = []
    for t in front_trials(study):
        path = out / f"trial-{t.number:04d}.yaml"
        _write_trial_config(study, t, path, "A trial on the Pareto front")
        paths.append(path)
    if out.is_dir():
        for old in out.glob("trial-*.yaml"):
            if re.fullmatch(r"trial-\d+\.yaml", old.name) and old not in paths:
                old.unlink()
    return paths


def train_command(study: Any, trial: Any) -> str:
    """The shell command that trains ``trial``'s settings from scratch: the study's config,
    data (``DATA`` when the study did not record it) and ``--set`` overrides, then the trial's
    parameters (so they win)."""
    record = study.user_attrs.get(ATTR) or {}
    args = ["tacotrain", "train", "--config", str(record.get("config") or "CONFIG"),
            "--data", str(record.get("data") or "DATA"),
            "--out", f"runs/trial-{trial.number:04d}"]
    for s in [*record.get("overrides", []), *to_overrides(dict(trial.params))]:
        args += ["--set", s]
    return " ".join(shlex.quote(a) for a in args)


# ---------------------------------------------------------------------------- importances
def objective_names(study: Any, rows: list[Row] | None = None) -> list[str]:
    if not is_multi(study):
        return ["objective"]
    metric = quality_metric(rows or []) or "quality"
    return ["time to speak", f"quality ({metric})"]


def param_importances(study: Any, names: list[str] | None = None
                      ) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Optuna's parameter importances, per objective (``names[i]`` -> {param: importance}),
    and notes on what was skipped: fewer than 2 complete trials, no varying parameter, or
    Optuna's own refusal."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return {}, [f"parameter importances: need 2 complete trials, the study has {len(done)}"]
    seen: dict[str, set[str]] = {}
    for t in done:
        for k, v in t.params.items():
            seen.setdefault(k, set()).add(repr(v))
    if not any(len(v) > 1 for v in seen.values()):
        return {}, ["parameter importances: no parameter varies among the complete trials"]
    out: dict[str, dict[str, float]] = {}
    notes = []
    names = names or objective_names(study)
    for i, name in enumerate(names):
        target = (lambda t, i=i: t.values[i]) if is_multi(study) else None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(study, target=target)
            out[name] = {k: float(v) for k, v in imp.items()}
        except Exception as exc:  # too few trials with a finite value, one distribution...
            notes.append(f"parameter importances of {name}: not computed "
                         f"({type(exc).__name__}: {exc})")
    return out, notes
