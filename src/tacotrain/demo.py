"""``tacotrain demo``: the whole job end to end on the built-in espeak-ng mini corpus.

corpus mini -> prepare -> train the ``small`` preset until free-running validation synthesis is
aligned (thresholds in ``alignment``) or ``demo.time_budget_minutes`` runs out -> synthesise
two held-out sentences -> plots and ``DIR/summary.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tacotrain.config import Config
from tacotrain.data.mini import make_mini_corpus, sentence
from tacotrain.data.prepare import format_summary, prepare
from tacotrain.fsutil import atomic_write_json
from tacotrain.plots import plot_training_curves
from tacotrain.synth import Synthesizer
from tacotrain.train.trainer import Trainer

log = logging.getLogger(__name__)


def held_out_sentences(cfg: Config, corpus_texts: set[str], n: int = 2) -> list[str]:
    """Configured sentences, or ``n`` generator sentences that are not in the corpus."""
    if cfg.demo.sentences:
        return list(cfg.demo.sentences)
    out, i = [], 0
    while len(out) < n:
        s = sentence("en", cfg.demo.corpus_seed + 1000, i)
        if s not in corpus_texts:
            out.append(s)
        i += 1
    return out


def run_demo(out: str | Path, cfg: Config, progress: bool = True) -> dict[str, Any]:
    out = Path(out)
    t_start = time.monotonic()
    corpus = out / "corpus"
    if not (corpus / "metadata.csv").exists():
        make_mini_corpus(corpus, "en", cfg.demo.corpus_size, cfg.demo.corpus_seed,
                         progress=progress)
    prepared = prepare(corpus, out / "data", progress=progress)
    log.info("prepared data:\n%s", format_summary(prepared.report))

    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = runs / time.strftime("%Y%m%d-%H%M%S")
    cfg = cfg.model_copy(deep=True)
    cfg.train.stop_when_aligned = True
    cfg.train.time_budget_minutes = cfg.demo.time_budget_minutes
    trainer = Trainer(cfg, out / "data", run_dir, progress=progress)
    result = trainer.fit()

    ckpt = result.best_checkpoint or result.last_checkpoint
    synth = Synthesizer.from_checkpoint(ckpt)
    texts = {line.split("|")[1] for line in
             (corpus / "metadata.csv").read_text(encoding="utf-8").splitlines()}
    samples = []
    for k, text in enumerate(held_out_sentences(cfg, texts), start=1):
        info = synth.save(synth.synthesize(text), out / "samples" / f"sample-{k}.wav")
        samples.append({"input": text, "wav": str(out / "samples" / f"sample-{k}.wav"), **info})
    a = cfg.alignment
    plot_training_curves(run_dir, out / "training-curves.png",
                         {"diagonality": a.diagonality, "focus": a.focus, "coverage": a.coverage})

    v = result.last_val
    summary = {
        "aligned": result.aligned,
        "val_diagonality": v.get("free/diagonality"),
        "val_focus": v.get("free/focus"),
        "val_coverage": v.get("free/coverage"),
        "val_stopped_by_gate": v.get("free/stopped_by_gate"),
        "steps": result.step,
        "wall_seconds": round(result.wall_seconds, 1),
        "total_seconds": round(time.monotonic() - t_start, 1),
        "stop_reason": result.stop_reason,
        "stopped_by_gate": all(s["stopped_by_gate"] for s in samples),
        "checkpoint": str(ckpt),
        "run_dir": str(run_dir),
        "samples": samples,
        "plots": {
            "training_curves": str(out / "training-curves.png"),
            "free_run_alignment": str(run_dir / "plots" / "val-free-run-alignment.png"),
            "teacher_forced_alignment": str(run_dir / "plots" /
                                            "val-teacher-forced-alignment.png"),
            "mel": str(run_dir / "plots" / "val-mel.png"),
            "samples": [str(Path(s["wav"]).with_suffix(".png")) for s in samples],
        },
        "curve": [{"step": h["step"], "minutes": h["minutes"],
                   "diagonality": h.get("free/diagonality"), "focus": h.get("free/focus"),
                   "coverage": h.get("free/coverage"),
                   "stopped_by_gate": h.get("free/stopped_by_gate")}
                  for h in result.history],
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
