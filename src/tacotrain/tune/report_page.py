"""The study report's page: Optuna's plots, the Pareto plot, each trial's media and
``report.html`` (see :mod:`tacotrain.tune.report` for what the report holds)."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import shutil
import warnings
from html import escape
from pathlib import Path
from typing import Any

from tacotrain import metrics as M
from tacotrain.fsutil import atomic_write_text
from tacotrain.track.jsonl_sink import read_events
from tacotrain.tune.report import (
    _STATE_ORDER,
    _WAV_NAME,
    HTML_FILE,
    MEDIA_DIR,
    PARETO_DIR,
    TRIAL_PLOTS,
    Media,
    Report,
    Row,
    _float,
    _fmt,
    _num,
    _passed_text,
    front_trials,
    is_multi,
    leaderboard,
    objective_names,
    param_importances,
    quality_metric,
    short_names,
    speak_text,
    train_command,
    write_best_config,
    write_pareto_configs,
)
from tacotrain.tune.study import ATTR, TuneError

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------- plots
def save_plots(study: Any, out: Path) -> tuple[list[Path], list[str]]:
    """Optimisation history, parameter importances and intermediate values (1 objective) or
    parameter importances (2 objectives; the Pareto plot is :func:`plot_pareto`): PNG
    (matplotlib) and, when plotly is installed, interactive HTML. Returns (files, notes on
    what was not drawn and why)."""
    import optuna

    files: list[Path] = []
    notes: list[str] = []
    plots = {"optimization_history": "plot_optimization_history",
             "param_importances": "plot_param_importances",
             "intermediate_values": "plot_intermediate_values"}
    if is_multi(study):
        plots = {"param_importances": "plot_param_importances"}
    try:
        import plotly  # noqa: F401

        has_plotly = True
    except ImportError:
        has_plotly = False
        notes.append("HTML plots need plotly (pip install plotly); PNG only")
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
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


def _point(r: Row) -> tuple[float | None, float | None, bool]:
    """(time to speak, quality, censored) of a complete trial for the Pareto plot: the
    recorded attributes, else the objective values; x None when censored."""
    vals = r.values or []
    y = r.quality if r.quality is not None else (_float(vals[1]) if len(vals) > 1 else None)
    if r.time_to_speak is not None:
        return r.time_to_speak, y, False
    x = None if r.censored or not vals else _float(vals[0])
    return x, y, x is None


def plot_pareto(rows: list[Row], path: Path, metric: str | None) -> list[str]:
    """Time to speak (x) vs quality (y) of every complete trial, the front highlighted and
    joined, each point labelled with its trial number; censored trials at the right edge.
    Returns notes (trials that could not be placed)."""
    from matplotlib import style

    with style.context("default"):  # Optuna's plots switch matplotlib to ggplot
        return _plot_pareto(rows, path, metric)


def _plot_pareto(rows: list[Row], path: Path, metric: str | None) -> list[str]:
    from matplotlib.figure import Figure

    notes = []
    pts = []
    for r in rows:
        if r.state != "COMPLETE":
            continue
        x, y, censored = _point(r)
        if y is None:
            notes.append(f"Pareto plot: trial {r.number} has no finite quality; not drawn")
            continue
        pts.append((r, x, y, censored))
    xs = [x for _, x, _, _ in pts if x is not None]
    edge = max(xs) * 1.12 if xs and max(xs) > 0 else 1.0
    fig = Figure(figsize=(9, 5.5))
    ax = fig.add_subplot()
    groups = {
        "other trials": ([p for p in pts if p[0].pareto_rank != 1 and not p[3]],
                         dict(marker="o", color="tab:gray", s=36)),
        "censored: never passed (drawn at the right edge)": (
            [p for p in pts if p[0].pareto_rank != 1 and p[3]],
            dict(marker=">", color="tab:red", s=60)),
        "Pareto front": ([p for p in pts if p[0].pareto_rank == 1],
                         dict(marker="*", color="tab:blue", s=180, zorder=3)),
    }
    for label, (group, style) in groups.items():
        if group:
            ax.scatter([edge if c else x for _, x, _, c in group], [y for _, _, y, _ in group],
                       label=label, **style)
    front = sorted(((edge if c else x), y) for r, x, y, c in pts if r.pareto_rank == 1)
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:blue",
                alpha=0.6)
    for r, x, y, c in pts:
        ax.annotate(str(r.number), (edge if c else x, y), textcoords="offset points",
                    xytext=(5, 4), fontsize=9)
    if any(c for *_, c in pts):
        ax.axvline(edge, color="tab:red", linestyle=":", alpha=0.5)
    ax.set_xlabel("time to speak (training minutes until the voice passed the verdict)")
    ax.set_ylabel(f"quality: {metric or 'objective 2'} (lower is better)")
    ax.set_title("Pareto front: time to speak vs quality")
    ax.grid(alpha=0.3)
    if pts:
        ax.legend(loc="best", fontsize=9)
    else:
        notes.append("Pareto plot: no complete trial yet")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return notes


# ---------------------------------------------------------------------------- media
def _copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` unless ``dst`` is already a copy of it (size and time);
    through a temporary file, so a page never links a half-written file."""
    try:
        s, d = src.stat(), dst.stat()
        if s.st_size == d.st_size and d.st_mtime >= s.st_mtime:
            return
    except FileNotFoundError:
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _audio_files(run_dir: Path) -> dict[int, Path]:
    """Step -> free-running validation WAV of a run (from its events, else the folder)."""
    found: dict[int, Path] = {}
    for ev in read_events(run_dir, "audio"):
        if ev.get("tag") == M.TAG_FREE_AUDIO and ev.get("path") and ev.get("step") is not None:
            found[int(ev["step"])] = run_dir / ev["path"]
    if not found:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in M.TAG_FREE_AUDIO)
        for p in (run_dir / "audio" / safe).glob("step-*.wav"):
            m = re.fullmatch(r"step-(\d+)\.wav", p.name)
            if m:
                found[int(m.group(1))] = p
    return {k: v for k, v in found.items() if v.is_file()}


def collect_media(t: Any, out: Path) -> Media:
    """Copy ``t``'s plots and free-running audio (its best validation's and its last one's)
    from its run directory into ``out/report-media/NNNN``; copies made by an earlier report
    stay in use when the run directory is gone. Missing files are noted, not errors."""
    media = Media()
    rel = Path(MEDIA_DIR) / f"{t.number:04d}"
    dst = out / rel
    run = t.user_attrs.get("run_dir")
    run_dir = Path(run) if run else None
    if run_dir is None:
        media.notes.append("no run directory recorded")
    elif not run_dir.is_dir():
        media.notes.append(f"run directory {run_dir} no longer exists"
                           + ("; showing earlier copies" if dst.is_dir() else ""))
    live = run_dir is not None and run_dir.is_dir()
    # each validation overwrites the plots: the step of the newest is in the events
    steps = {ev.get("path"): ev.get("step") for ev in read_events(run_dir, "image")} \
        if live else {}
    for name, label in TRIAL_PLOTS:
        src = run_dir / "plots" / name if live else None
        if src is not None and src.is_file():
            _copy(src, dst / name)
            step = steps.get(f"plots/{name}")
            label += f" (step {step})" if step is not None else ""
        media.images.append((label, str(rel / name) if (dst / name).is_file() else None))
    wanted: dict[int, str] = {}
    if live:
        audio = _audio_files(run_dir)  # type: ignore[arg-type]
        best = t.user_attrs.get("best_step")
        if isinstance(best, int) and best in audio:
            wanted[best] = f"best validation (step {best})"
        if audio:
            last = max(audio)
            wanted.setdefault(last, f"last validation (step {last})")
        for step in wanted:
            _copy(audio[step], dst / f"free-run-step-{step:07d}.wav")
        for old in dst.glob("free-run-step-*.wav") if dst.is_dir() else []:
            m = _WAV_NAME.fullmatch(old.name)
            if m and int(m.group(1)) not in wanted:
                old.unlink()
    elif dst.is_dir():
        for p in sorted(dst.glob("free-run-step-*.wav")):
            m = _WAV_NAME.fullmatch(p.name)
            if m:
                wanted[int(m.group(1))] = f"validation at step {int(m.group(1))}"
    for step, label in sorted(wanted.items()):
        media.audio.append((label, str(rel / f"free-run-step-{step:07d}.wav")))
    if not media.audio:
        media.notes.append("no free-running audio")
    return media


# ---------------------------------------------------------------------------- HTML
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1500px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; text-align: left; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.front { background: #e4efff; }
tr.FAIL { background: #fde2e2; }
img.plot { max-width: 900px; width: 100%; display: block; }
.media { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; }
figure img { width: 340px; display: block; border: 1px solid #ddd; }
figcaption { font-size: 12px; color: #555; }
pre.cmd { background: #f5f5f5; padding: 6px; white-space: pre-wrap; word-break: break-all; }
section.trial { border-top: 1px solid #ccc; margin-top: 1em; }
.missing { color: #a00; font-style: italic; }
.note { color: #555; }
"""


def _td(text: Any, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<td{c}>{escape(str(text))}</td>"


def _img(src: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" src="{escape(src)}" alt="{escape(alt)}">'


def render_html(study: Any, rep: Report, rows: list[Row], media: dict[int, Media],
                storage: str | None, out: Path) -> str:
    """The page: study facts, the Pareto front (or the optimisation history), the leaderboard,
    the importances, then every trial with its media and its training command."""
    record = study.user_attrs.get(ATTR) or {}
    multi = rep.directions > 1
    metric = quality_metric(rows)
    h = _facts_html(study, rep, rows, storage, record, multi, metric)
    h += _main_plot_html(rep, out, multi, metric)
    h += _leaderboard_html(rows, multi, metric)
    h += _importances_html(rep, out)
    h += _trials_html(rows, rep, media, record)
    h.append("</body></html>")
    return "\n".join(h) + "\n"

def _facts_html(study: Any, rep: Report, rows: list[Row], storage: str | None,
                record: dict[str, Any], multi: bool, metric: str | None) -> list[str]:
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    kinds = sorted({str(t.user_attrs["objective_kind"]) for t in study.get_trials(deepcopy=False)
                    if "objective_kind" in t.user_attrs})
    title = f"Study {study.study_name}"
    h: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
                    f"<h1>{escape(title)}</h1>", '<table id="study">']
    facts = [("storage", storage or "(not given)"),
             ("objectives", "2, both minimised: time to speak, quality" if multi
              else "1, minimised"),
             ("objective kind", ", ".join(kinds) or "-"),
             ("quality metric", metric or "-"),
             ("base config", record.get("config", "-")),
             ("study overrides", " ".join(record.get("overrides", [])) or "-"),
             ("data", record.get("data") or "DATA (not recorded by this study)"),
             ("steps per trial", record.get("max_steps") or "the config's train.max_steps"),
             ("trials", ", ".join(f"{k} {v}" for k, v in sorted(
                 states.items(), key=lambda kv: _STATE_ORDER.get(kv[0], 9))) or "none"),
             ("written", _dt.datetime.now().isoformat(timespec="seconds"))]
    for k, v in facts:
        h.append(f'<tr><th>{escape(k)}</th><td data-fact="{escape(k)}">{escape(str(v))}</td></tr>')
    h.append("</table>")
    if rep.best_config is not None:
        what = "the fastest trial on the Pareto front" if multi else "the best trial"
        h.append(f'<p>Best config ({what}, trial {rep.best_number}): '
                 f'<a href="{escape(rep.best_config.name)}">{escape(rep.best_config.name)}</a>'
                 "</p>")
    return h


def _main_plot_html(rep: Report, out: Path, multi: bool, metric: str | None) -> list[str]:
    h: list[str] = []
    main = "pareto_front.png" if multi else "optimization_history.png"
    h.append(f"<h2>{'Pareto front' if multi else 'Optimisation history'}</h2>")
    if (out / "plots" / main).is_file():
        h.append(_img(f"plots/{main}", "Pareto front" if multi else "optimisation history")
                 .replace('class="plot"', f'class="plot" id="{main.split(".")[0]}"'))
    else:
        h.append('<p class="missing">not drawn (see the notes)</p>')
    if multi:
        h.append('<table id="front"><thead><tr><th>trial</th><th>time to speak (min)</th>'
                 f"<th>{escape(metric or 'quality')}</th><th>config</th></tr></thead><tbody>")
        for r in rep.front:
            cfg = f"{PARETO_DIR}/trial-{r.number:04d}.yaml"
            h.append(f'<tr data-trial="{r.number}">'
                     f'<td><a href="#trial-{r.number:04d}">{r.number}</a></td>'
                     + _td(speak_text(r), "num") + _td(_num(r.quality), "num")
                     + f'<td><a href="{cfg}">{cfg}</a></td></tr>')
        h.append("</tbody></table>")
    return h


def _leaderboard_html(rows: list[Row], multi: bool, metric: str | None) -> list[str]:
    h: list[str] = []
    names = sorted({k for r in rows for k in r.params})
    short = short_names(names)
    head = ["rank", "trial", "state", "front" if multi else "objective", "time to speak (min)",
            "passed", f"quality ({metric})" if metric else "quality", "outcome", "minutes",
            "parameters", "note"]
    h.append('<h2>Leaderboard</h2><table id="leaderboard"><thead><tr>'
             + "".join(f"<th>{escape(c)}</th>" for c in head) + "</tr></thead><tbody>")
    for r in rows:
        cls = " ".join(c for c in ("front" if r.pareto_rank == 1 else "", r.state) if c)
        quality = _num(r.quality)
        if r.quality is not None and r.quality_metric and not metric:
            quality += f" ({r.quality_metric})"
        params = " ".join(f"{short[k]}={_fmt(r.params[k])}" for k in names if k in r.params)
        h.append(f'<tr class="{cls}" data-trial="{r.number}">' + _td(r.rank, "num")
                 + f'<td class="num"><a href="#trial-{r.number:04d}">{r.number}</a></td>'
                 + _td(r.state) + _td(str(r.pareto_rank or "-") if multi else _num(r.value),
                                       "num")
                 + _td(speak_text(r), "num") + _td(_passed_text(r)) + _td(quality, "num")
                 + _td(r.outcome) + _td(_num(r.minutes, ".1f"), "num") + _td(params)
                 + _td(r.note) + "</tr>")
    h.append("</tbody></table>")
    return h


def _importances_html(rep: Report, out: Path) -> list[str]:
    h: list[str] = []
    h.append("<h2>Parameter importances</h2>")
    if rep.importances:
        objs = list(rep.importances)
        params_ = sorted({p for d in rep.importances.values() for p in d},
                         key=lambda p: -max(d.get(p, 0.0) for d in rep.importances.values()))
        h.append('<table id="importances"><thead><tr><th>parameter</th>'
                 + "".join(f"<th>{escape(o)}</th>" for o in objs) + "</tr></thead><tbody>")
        for p in params_:
            h.append(f"<tr>{_td(p)}" + "".join(
                _td(_num(rep.importances[o].get(p), ".3f"), "num") for o in objs) + "</tr>")
        h.append("</tbody></table>")
    else:
        h.append('<p class="note">not computed (see the notes)</p>')
    if (out / "plots" / "param_importances.png").is_file():
        h.append(_img("plots/param_importances.png", "parameter importances"))
    if rep.notes:
        h.append('<h2>Notes</h2><ul id="notes">'
                 + "".join(f"<li>{escape(n)}</li>" for n in rep.notes) + "</ul>")
    return h


def _trials_html(rows: list[Row], rep: Report, media: dict[int, Media],
                 record: dict[str, Any]) -> list[str]:
    h: list[str] = []
    steps = record.get("max_steps")
    h.append("<h2>Trials</h2>")
    if steps:
        h.append(f'<p class="note">Each trial ran with --max-steps {int(steps)}; the commands '
                 "below train with the config's own step budget (add --max-steps to repeat a "
                 "trial exactly).</p>")
    for r in rows:
        m = media.get(r.number, Media())
        h.append(f'<section class="trial" id="trial-{r.number:04d}" data-trial="{r.number}">'
                 f"<h3>Trial {r.number}: {escape(r.state)}"
                 + (" (on the Pareto front)" if r.pareto_rank == 1 else "") + "</h3>")
        facts_ = [f"time to speak {speak_text(r)} min" if r.new_attrs else "",
                  f"quality {_num(r.quality)}" if r.quality is not None else "",
                  f"outcome {r.outcome}", f"{_num(r.minutes, '.1f')} min of training",
                  r.note]
        h.append(f"<p>{escape('; '.join(f for f in facts_ if f))}</p>")
        if r.params:
            h.append("<p>parameters: " + escape(", ".join(
                f"{k}={_fmt(v)}" for k, v in r.params.items())) + "</p>")
        h.append('<div class="media">')
        for label, src in m.images if any(src for _, src in m.images) else []:
            body = _img(src, label, "media") if src else '<span class="missing">missing</span>'
            h.append(f"<figure>{body}<figcaption>{escape(label)}</figcaption></figure>")
        for label, src in m.audio:
            h.append(f'<figure><audio class="free-run" controls preload="metadata" '
                     f'src="{escape(src)}"></audio><figcaption>free-running audio, '
                     f"{escape(label)}</figcaption></figure>")
        h.append("</div>")
        if not any(src for _, src in m.images):
            h.append('<p class="missing">no images</p>')
        for n in m.notes:
            h.append(f'<p class="missing">{escape(n)}</p>')
        if r.number in rep.commands:
            h.append("<p>Train these settings from scratch:</p>"
                     f'<pre class="cmd">{escape(rep.commands[r.number])}</pre>')
        h.append("</section>")
    return h


# ---------------------------------------------------------------------------- all of it
def write_report(study: Any, out: Path, storage: str | None = None) -> Report:
    """Leaderboard rows, ``out/best_config.yaml`` (when a trial completed), the plots, the
    Pareto configs (2 objectives) and ``out/report.html``. ``storage``: the (redacted) storage
    URL shown on the page."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = leaderboard(study)
    multi = is_multi(study)
    rep = Report(rows, None, directions=len(study.directions))
    notes: list[str] = []
    try:
        rep.best_config, best = write_best_config(study, out / "best_config.yaml")
        rep.best_number = best.number
    except TuneError as exc:
        notes.append(str(exc))
    if multi:
        by_number = {r.number: r for r in rows}
        rep.front = [by_number[t.number] for t in front_trials(study)]
        if ATTR in study.user_attrs:
            rep.pareto_configs = write_pareto_configs(study, out / PARETO_DIR)
    files, plot_notes = save_plots(study, out / "plots")
    if multi:
        pareto_png = out / "plots" / "pareto_front.png"
        plot_notes = plot_pareto(rows, pareto_png, quality_metric(rows)) + plot_notes
        files.insert(0, pareto_png)
    rep.plots = files
    rep.importances, imp_notes = param_importances(study, objective_names(study, rows))
    rep.notes = notes + plot_notes + imp_notes
    media = {}
    for t in study.get_trials(deepcopy=False):
        rep.commands[t.number] = train_command(study, t)
        media[t.number] = collect_media(t, out)
    html = render_html(study, rep, rows, media, storage, out)
    atomic_write_text(out / HTML_FILE, html)
    rep.html = out / HTML_FILE
    return rep
