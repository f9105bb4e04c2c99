"""``tacotrain tune report``: the leaderboard, the best config, and Optuna's plots.

The leaderboard ranks finished trials by their score (see :mod:`tacotrain.tune.objective`:
aligned before unaligned before diverged), then pruned trials by the last value they reported,
then failed ones (with their reason), then those still running or waiting. The best config is
the study's base config (recorded when the study was created) with the best trial's parameters
applied, validated by the same code as any config: ``tacotrain train --config best_config.yaml``
trains it with the full step budget of the base config.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tacotrain.config import Config, build, to_yaml
from tacotrain.fsutil import atomic_write_text
from tacotrain.tune.space import to_overrides
from tacotrain.tune.study import ATTR, TuneError

log = logging.getLogger(__name__)

_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "RUNNING": 3, "WAITING": 4}


@dataclass
class Row:
    rank: int
    number: int
    state: str
    value: float | None  # the score (COMPLETE) or the last reported value (PRUNED)
    outcome: str  # aligned, unaligned, diverged, pruned, failed, ...
    best_loss: float | None
    minutes: float | None
    params: dict[str, Any]
    note: str = ""


@dataclass
class Report:
    rows: list[Row]
    best_config: Path | None
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _last_value(t: Any) -> float | None:
    if t.value is not None:
        return float(t.value)
    if t.intermediate_values:
        return float(t.intermediate_values[max(t.intermediate_values)])
    return None


def leaderboard(study: Any) -> list[Row]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        state = t.state.name
        value = _last_value(t) if state in ("COMPLETE", "PRUNED") else None
        if state == "COMPLETE":
            outcome, note = ua.get("outcome", "complete"), ua.get("diverged_reason", "")
        elif state == "PRUNED":
            step = max(t.intermediate_values) if t.intermediate_values else None
            outcome, note = "pruned", f"pruned at step {step}" if step is not None else ""
        elif state == "FAIL":
            retried = t.system_attrs.get("failed_trial") is not None
            outcome = "failed"
            note = ua.get("fail_reason") or "its worker stopped sending heartbeats (stale)"
            if retried:
                note += f" [retry of trial {t.system_attrs['failed_trial']}]"
        else:
            outcome, note = state.lower(), ""
        rows.append(Row(0, t.number, state, value, outcome, ua.get("best_loss"),
                        ua.get("wall_minutes"), dict(t.params), note))
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


def format_leaderboard(rows: list[Row]) -> str:
    names = sorted({k for r in rows for k in r.params})
    short = short_names(names)
    head = ["rank", "trial", "state", "objective", "aligned", "metric", "min", "params / note"]
    table = []
    for r in rows:
        params = " ".join(f"{short[k]}={_fmt(r.params[k])}" for k in names if k in r.params)
        tail = f"{params}  {r.note}".strip() if r.note else params
        aligned = {"aligned": "yes", "unaligned": "no", "diverged": "diverged"}.get(r.outcome, "-")
        table.append([str(r.rank), str(r.number), r.state,
                      f"{r.value:.4f}" if r.value is not None else "-", aligned,
                      f"{r.best_loss:.4f}" if r.best_loss is not None else "-",
                      f"{r.minutes:.1f}" if r.minutes is not None else "-", tail])
    widths = [max(len(x[i]) for x in [head, *table]) for i in range(len(head) - 1)]
    lines = []
    for x in [head, *table]:
        lines.append("  ".join(c.rjust(w) if i in (0, 1, 3, 5, 6) else c.ljust(w)
                               for i, (c, w) in enumerate(zip(x, widths, strict=False)))
                     + "  " + x[-1])
    return "\n".join(line.rstrip() for line in lines)


def best_config(study: Any) -> tuple[Config, Any]:
    """The base config with the best trial's parameters, and that trial."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE and t.value is not None]
    if not done:
        raise TuneError(f"study {study.study_name!r} has no complete trial yet")
    best = min(done, key=lambda t: (t.value, t.number))
    record = study.user_attrs.get(ATTR)
    if not record:
        raise TuneError(f"study {study.study_name!r} was not created by tacotrain tune "
                        "(no base config recorded)")
    cfg = build(Config, record["base"], to_overrides(dict(best.params)),
                f"study {study.study_name} trial {best.number}")
    return cfg, best


def write_best_config(study: Any, path: Path) -> tuple[Path, Any]:
    cfg, best = best_config(study)
    ua = best.user_attrs
    head = (f"# Best trial of study {study.study_name!r}: trial {best.number}, objective "
            f"{best.value:.4f} ({ua.get('outcome', '?')}, best {ua.get('best_loss')} at step "
            f"{ua.get('best_step')}).\n# Its parameters: "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
            + f"\n# Train it: tacotrain train --config {path.name} --data DATA --out RUN\n")
    atomic_write_text(path, head + to_yaml(cfg))
    return path, best


def save_plots(study: Any, out: Path) -> tuple[list[Path], list[str]]:
    """Optimisation history, parameter importances and intermediate values: PNG (matplotlib)
    and, when plotly is installed, interactive HTML. Returns (files, notes on what was not
    drawn and why)."""
    import optuna

    files: list[Path] = []
    notes: list[str] = []
    plots = {"optimization_history": "plot_optimization_history",
             "param_importances": "plot_param_importances",
             "intermediate_values": "plot_intermediate_values"}
    try:
        import plotly  # noqa: F401

        has_plotly = True
    except ImportError:
        has_plotly = False
        notes.append("HTML plots need plotly (pip install plotly); PNG only")
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm

        for name, func in plots.items():
            try:
                ax = getattr(ovm, func)(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(9, 5.5)
                fig.tight_layout()
                fig.savefig(out / f"{name}.png", dpi=100)
                plt.close(fig)
                files.append(out / f"{name}.png")
            except Exception as exc:  # a plot that cannot be drawn yet (too few trials)
                notes.append(f"{name}: not drawn ({type(exc).__name__}: {exc})")
                plt.close("all")
                continue
            if has_plotly:
                try:
                    getattr(optuna.visualization, func)(study).write_html(out / f"{name}.html")
                    files.append(out / f"{name}.html")
                except Exception as exc:  # same reasons as above
                    notes.append(f"{name}.html: not written ({type(exc).__name__}: {exc})")
    return files, notes


def write_report(study: Any, out: Path) -> Report:
    """Leaderboard rows, ``out/best_config.yaml`` (when a trial completed) and the plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = leaderboard(study)
    notes: list[str] = []
    best_path: Path | None = None
    try:
        best_path, _ = write_best_config(study, out / "best_config.yaml")
    except TuneError as exc:
        notes.append(str(exc))
    files, plot_notes = save_plots(study, out / "plots")
    return Report(rows, best_path, files, notes + plot_notes)
