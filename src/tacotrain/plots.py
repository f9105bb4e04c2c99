"""Plots people would rather look at than read: training curves from ``events.jsonl``."""

from __future__ import annotations

from pathlib import Path

from tacotrain.alignment import save_figure
from tacotrain.track import read_events


def plot_training_curves(run_dir: str | Path, path: str | Path,
                         thresholds: dict[str, float] | None = None) -> None:
    """Losses, learning rate and the free-running alignment metrics against the step;
    ``thresholds`` (e.g. ``{"diagonality": 0.8, "focus": 0.5}``) are drawn as dashed lines."""
    from matplotlib.figure import Figure

    events = read_events(run_dir)

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(e["step"], e["values"][key]) for e in events
               if e["values"].get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(11, 7), dpi=100)
    axes = fig.subplots(2, 2)
    for key, label in (("train/mel_post", "train mel (postnet)"), ("val/mel_post", "val mel")):
        axes[0, 0].plot(*series(key), label=label)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_title("mel loss")
    for key, label in (("train/gate", "train gate"), ("train/guided_attn", "guided attention")):
        axes[0, 1].plot(*series(key), label=label)
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_title("gate and guided-attention losses")
    for key in ("free/diagonality", "free/focus", "free/coverage", "free/stopped_by_gate"):
        axes[1, 0].plot(*series(key), marker=".", label=key.split("/")[1])
    by_value: dict[float, list[str]] = {}
    for name, value in (thresholds or {}).items():
        by_value.setdefault(value, []).append(name)
    for value, names in by_value.items():
        axes[1, 0].axhline(value, linestyle="--", linewidth=0.8, color="grey")
        axes[1, 0].annotate(f"{', '.join(names)} >= {value:g}", (0.01, value), fontsize=7,
                            color="grey", xycoords=("axes fraction", "data"), va="bottom")
    axes[1, 0].set_ylim(0, 1.05)
    axes[1, 0].set_title("free-running validation alignment")
    axes[1, 1].plot(*series("train/lr"), label="learning rate")
    ax2 = axes[1, 1].twinx()
    ax2.plot(*series("train/grad_norm"), color="tab:red", alpha=0.5, label="grad norm")
    axes[1, 1].set_title("learning rate (left) and gradient norm (right)")
    for ax in axes.flat:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
