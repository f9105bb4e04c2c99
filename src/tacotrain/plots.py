"""Plots people would rather look at than read: training curves from ``events.jsonl``."""

from __future__ import annotations

from pathlib import Path

from tacotrain import metrics as M
from tacotrain.judge.alignment import save_figure
from tacotrain.track import read_events


def plot_training_curves(run_dir: str | Path, path: str | Path) -> None:
    """Losses, learning rate and the verdict on free-running validation against the step: the
    share of items aligned and identified (nearer to their own recording than to any other),
    skipped tokens, gate stops and focus, with the MCD-DTW to the ground truth on its own axis."""
    from matplotlib.figure import Figure

    events = read_events(run_dir)

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(e["step"], e["values"][key]) for e in events
               if e["values"].get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(11, 7), dpi=100)
    axes = fig.subplots(2, 2)
    for key, label in ((M.TRAIN_MEL_POST, "train mel (postnet)"), (M.VAL_MEL_POST, "val mel")):
        axes[0, 0].plot(*series(key), label=label)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_title("mel loss")
    for key, label in ((M.TRAIN_GATE, "train gate"), (M.TRAIN_GUIDED_ATTN, "guided attention")):
        axes[0, 1].plot(*series(key), label=label)
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_title("gate and guided-attention losses")
    for key in (M.FREE_ALIGNED_SHARE, M.FREE_IDENTIFIED_SHARE, M.FREE_SKIPPED_SHARE,
                M.FREE_STOPPED_BY_GATE, M.FREE_FOCUS):
        axes[1, 0].plot(*series(key), marker=".", label=key.split("/")[1])
    axes[1, 0].set_ylim(0, 1.05)
    mcd = axes[1, 0].twinx()
    mcd.plot(*series(M.FREE_MCD_DTW), color="black", linestyle=":", label="MCD-DTW (dB)")
    mcd.set_ylabel("MCD-DTW to ground truth (dB)")
    mcd.legend(fontsize=8, loc="lower right")
    axes[1, 0].set_title("free-running validation: the verdict")
    axes[1, 1].plot(*series(M.TRAIN_LR), label="learning rate")
    ax2 = axes[1, 1].twinx()
    ax2.plot(*series(M.TRAIN_GRAD_NORM), color="tab:red", alpha=0.5, label="grad norm")
    axes[1, 1].set_title("learning rate (left) and gradient norm (right)")
    for ax in axes.flat:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
