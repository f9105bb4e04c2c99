"""``tacotrain demo``: the whole job end to end on the built-in mini corpus.

mini corpus in ``demo.language`` spoken by ``demo.engine`` (English: Kokoro's natural voice;
Russian, or ``engine: espeak``: espeak-ng) -> prepare (as espeak-ng phonemes with
``demo.phonemes``) -> train until ``train.stop_when_aligned_rounds`` validation rounds in a row
pass the verdict (attention, content and, where a recogniser exists, intelligibility against
the resynthesis floor) or ``demo.time_budget_minutes`` runs out -> speak held-out sentences that
are not in the corpus with the corpus's voice (their ground truth; for the natural voice
hand-written free-form sentences outside the corpus's frames) -> ``tacotrain eval`` of the
checkpoint on the validation items and those held-out sentences -> plots and
``DIR/summary.json``. The demo passes only when the checkpoint's validation round passes, at
least ``demo.heldout_share`` of the held-out sentences pass the item verdict and, where a
recogniser exists for the language, the held-out round is intelligible.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tacotrain import metrics as M
from tacotrain.audio import load_vocoder
from tacotrain.config import Config, Settings, TextConfig
from tacotrain.data.english import FREE_FORM
from tacotrain.data.loader import PreparedData
from tacotrain.data.mini import (
    MiniCorpusError,
    corpus_info,
    make_mini_corpus,
    sentence,
    speak_sentences,
)
from tacotrain.data.prepare import format_summary, prepare
from tacotrain.evaluate.run import EvalItem, prepared_items, run_eval
from tacotrain.fsutil import atomic_write_json
from tacotrain.infer.checkpoint import Checkpoint
from tacotrain.plots import plot_training_curves
from tacotrain.text import STRESS, detect_language
from tacotrain.train.result import RoundRecord
from tacotrain.train.trainer import Trainer, TrainResult
from tacotrain.train.validation import PLOT_FREE_ALIGNMENT, PLOT_FREE_MEL, PLOT_TF_ALIGNMENT

log = logging.getLogger(__name__)


# what generated held-out sentences must include (where there is room): numbers, and in
# Russian the stress mark "+" (text/symbols.STRESS), which the cleaner keeps for the model
HELDOUT_FEATURES: dict[str, tuple[Callable[[str], bool], ...]] = {
    "en": (lambda s: any(c.isdigit() for c in s),),
    "ru": (lambda s: STRESS in s, lambda s: any(c.isdigit() for c in s)),
}
_MAX_GENERATED = 10_000  # generator sentences tried for the held-out set


def held_out_sentences(cfg: Config, corpus_texts: set[str]) -> list[str]:
    """Configured sentences; for the natural English voice the first ``demo.heldout_count()``
    of :data:`tacotrain.data.english.FREE_FORM` not in the corpus; otherwise that many
    generator sentences in ``demo.language`` (same vocabulary, another seed) that are not in
    the corpus, in generator order: the first ones, where needed swapping the last in for the
    first sentence with each of ``HELDOUT_FEATURES`` (a number, a stress mark)."""
    if cfg.demo.sentences:
        return list(cfg.demo.sentences)
    lang, n = cfg.demo.language, cfg.demo.heldout_count()
    if cfg.demo.voice() == "kokoro" and lang == "en":
        free = [s for s in FREE_FORM if s not in corpus_texts][:n]
        if len(free) < n:
            raise MiniCorpusError(f"only {len(free)} built-in free-form sentences; lower "
                                  f"demo.heldout_sentences or give demo.sentences")
        return free
    features = HELDOUT_FEATURES[lang][:n]
    found: list[str] = []
    for i in range(_MAX_GENERATED):
        if len(found) >= n and all(any(f(s) for s in found) for f in features):
            break
        s = sentence(lang, cfg.demo.corpus_seed + 1000, i)
        if s not in corpus_texts and s not in found:
            found.append(s)
    if len(found) < n:
        raise MiniCorpusError(f"only {len(found)} generator sentences are not in the corpus; "
                              f"lower demo.heldout_sentences or give demo.sentences")
    firsts: list[int] = []  # the first sentence with each feature
    for f in features:
        k = next((k for k, s in enumerate(found) if f(s)), None)
        if k is not None and k not in firsts:
            firsts.append(k)
    rest = [k for k in range(len(found)) if k not in firsts]
    return [found[k] for k in sorted(firsts + rest[:n - len(firsts)])]


def demo_corpus(out: Path, cfg: Config, progress: bool = True) -> Path:
    """``OUT/corpus``: the mini corpus in ``demo.language`` by ``demo.engine``, made once and
    reused; a corpus there in another language or by another voice is an error (the demo would
    train on it silently)."""
    corpus = out / "corpus"
    lang, engine = cfg.demo.language, cfg.demo.voice()
    meta = corpus / "metadata.csv"
    if not meta.exists():
        make_mini_corpus(corpus, lang, cfg.demo.size(), cfg.demo.corpus_seed,
                         progress=progress, engine=engine, style=cfg.demo.style)
    found = detect_language(corpus_texts(corpus))
    if found != lang:
        raise MiniCorpusError(f"{meta} is a {found} corpus but demo.language is {lang}; "
                              f"choose another --out for the {lang} demo")
    made_by = corpus_info(corpus)["engine"]
    if made_by != engine:
        raise MiniCorpusError(f"{meta} was spoken by {made_by} but demo.engine is {engine}; "
                              f"choose another --out for the {engine} demo")
    return corpus


def corpus_texts(corpus: Path) -> set[str]:
    """The raw transcripts of a corpus in LJSpeech format."""
    return {line.split("|")[1] for line in
            (corpus / "metadata.csv").read_text(encoding="utf-8").splitlines()}


def heldout_corpus(out: Path, cfg: Config, corpus: Path) -> Path:
    """``OUT/heldout/corpus``: the held-out sentences, their ground truth spoken by the
    corpus's voice as in the mini corpus (the normalised text; a stress mark is kept in the
    transcript and not given to espeak-ng, see data/mini.speak)."""
    sentences = held_out_sentences(cfg, corpus_texts(corpus))
    root = out / "heldout" / "corpus"
    speak_sentences(root, cfg.demo.language, sentences, "heldout", engine=cfg.demo.voice(),
                    style=cfg.demo.style)
    return root


def _rel(path: Path | str | None, base: Path) -> str | None:
    """A path relative to the summary's directory (where the summary can be moved with it)."""
    return None if path is None else os.path.relpath(Path(path).resolve(), base.resolve())


def run_demo(out: str | Path, cfg: Config, progress: bool = True, vocoder: str | None = None,
             vocoder_config: str | Path | None = None) -> dict[str, Any]:
    """The demo; ``vocoder``/``vocoder_config`` choose the evaluation's vocoder (see
    :func:`tacotrain.audio.load_vocoder`), checked against the audio settings before training."""
    out = Path(out)
    t_start = time.monotonic()
    settings = Settings(text=TextConfig(language=cfg.demo.language, phonemes=cfg.demo.phonemes))
    load_vocoder(vocoder, settings.audio, vocoder_config)  # fail now, not after training
    corpus = demo_corpus(out, cfg, progress)
    prepared = prepare(corpus, out / "data", settings, progress=progress)
    log.info("prepared data:\n%s", format_summary(prepared.report))
    cfg, run_dir, result = _train(out, cfg, progress)

    # the checkpoint the samples come from: best.pt exists only for an aligned round
    ckpt = result.best_checkpoint or result.last_checkpoint
    verdict = Checkpoint.read(ckpt).verdict
    heldout, rejected = _prepare_heldout(out, cfg, corpus)
    report = run_eval(ckpt, out / "data", out / "eval", heldout=heldout, progress=progress,
                      vocoder=vocoder, vocoder_config=vocoder_config)
    held = _heldout_summary(out, cfg, report, rejected)
    plot_training_curves(run_dir, out / "training-curves.png")

    summary = {
        "passed": bool(verdict.get("aligned")) and held["aligned"],
        "language": cfg.demo.language,
        "engine": cfg.demo.voice(),
        "checkpoint": {
            "path": _rel(ckpt, out),
            "step": verdict.get("step"),
            "aligned": bool(verdict.get("aligned")),
            "verdict": verdict.get("description", "no free-running validation"),
            "figures": verdict.get("summary", {}),
        },
        "heldout": held,
        "eval_summary": report["summary"],
        "training": {
            "steps": result.step,
            "stop_reason": result.stop_reason,
            "wall_seconds": round(result.wall_seconds, 1),
            "last_validation_aligned": result.aligned,
            "last_validation_verdict": result.verdict,
        },
        "total_seconds": round(time.monotonic() - t_start, 1),
        "run_dir": _rel(run_dir, out),
        "report": {"json": _rel(out / "eval" / "report.json", out),
                   "html": _rel(out / "eval" / "report.html", out)},
        "plots": _plot_paths(out, run_dir),
        "curve": _curve(result.history),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def _train(out: Path, cfg: Config, progress: bool) -> tuple[Config, Path, TrainResult]:
    """Train on ``OUT/data`` into a new ``OUT/runs/<time>`` until aligned or out of
    ``demo.time_budget_minutes``. -> (the config trained with, the run directory, the result)."""
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = runs / time.strftime("%Y%m%d-%H%M%S")
    cfg = cfg.model_copy(deep=True)
    cfg.train.stop_when_aligned = True
    cfg.train.time_budget_minutes = cfg.demo.time_budget_minutes
    result = Trainer(cfg, out / "data", run_dir, progress=progress).fit()
    return cfg, run_dir, result


def _prepare_heldout(out: Path, cfg: Config,
                     corpus: Path) -> tuple[list[EvalItem], dict[str, int]]:
    """Speak and prepare the held-out sentences with the training data's settings.
    -> (their items for :func:`run_eval`, {reason: count} of the sentences prepare rejected)."""
    data = PreparedData.load(out / "data")
    heldout_dir = heldout_corpus(out, cfg, corpus).parent
    settings = Settings(audio=data.settings.audio, text=data.settings.text)
    prep = prepare(heldout_dir / "corpus", heldout_dir / "data", settings, progress=False)
    rejected = {k: v for k, v in prep.report["summary"]["rejected_by_reason"].items() if v}
    if rejected:  # a sentence that could not be judged counts against the share, never silently
        log.warning("held-out: %d of %d sentences rejected by prepare (%s); they count as not "
                    "passed", sum(rejected.values()), prep.report["summary"]["lines"],
                    ", ".join(f"{k} {v}" for k, v in rejected.items()))
    return prepared_items(PreparedData.load(heldout_dir / "data"), "heldout"), rejected


def _heldout_summary(out: Path, cfg: Config, report: dict[str, Any],
                     rejected: dict[str, int]) -> dict[str, Any]:
    """The summary's ``heldout`` part; its ``aligned`` is whether the held-out criterion passed:
    at least ``demo.heldout_share`` of the sentences (rejected ones count as failed) pass the
    item verdict and the round is intelligible where it must be listened to."""
    held_rows = [r for r in report["items"] if r["source"] == "heldout"]
    requested = len(held_rows) + sum(rejected.values())
    held_share = sum(r["aligned"] for r in held_rows) / max(requested, 1)
    heard = report["summary"]["by_source"].get("heldout", {}).get("intelligibility")
    # natural English, and any voice with a named recogniser (alignment.asr: pocketsphinx or
    # vosk), must be understood by it (an untested round never counts as speaking); espeak-ng's
    # voice is not readable by PocketSphinx, and no Russian recogniser ships: those are judged
    # by the rest (identification) alone
    must_listen = cfg.alignment.asr_required() or (
        cfg.alignment.asr == "auto" and cfg.demo.voice() == "kokoro" and cfg.demo.language == "en")
    heard_ok = bool(heard and heard["tested"] and heard["intelligible"]) if must_listen \
        else not (heard and heard["tested"] and not heard["intelligible"])
    held_ok = bool(held_rows) and held_share >= cfg.demo.heldout_share - 1e-9 and heard_ok
    failed: dict[str, int] = {}
    for r in held_rows:
        for reason in r["reasons"]:
            failed[reason] = failed.get(reason, 0) + 1
    return {
        "items": len(held_rows),
        "sentences": requested,
        "rejected": rejected,
        "aligned_share": round(held_share, 4),
        "identified_share": round(sum(bool(r["identified"]) for r in held_rows)
                                  / max(requested, 1), 4),
        "required_share": cfg.demo.heldout_share,
        "intelligibility": heard,
        "intelligible": heard_ok,
        "aligned": held_ok,
        "failed": failed,
        "eval_summary": report["summary"]["by_source"].get("heldout"),
        "samples": [{"text": r["text"], "wav": _rel(out / "eval" / r["wav"], out),
                     "aligned": r["aligned"], "reasons": r["reasons"],
                     "mcd_dtw_db": r["mcd_dtw_db"], "length_ratio": r["length_ratio"],
                     "wer": r["wer"], "floor_wer": r["floor_wer"],
                     "transcript": r["transcript"]}
                    for r in held_rows],
    }


def _plot_paths(out: Path, run_dir: Path) -> dict[str, str | None]:
    """The summary's ``plots``: the training curves and the run's last validation plots."""
    return {
        "training_curves": _rel(out / "training-curves.png", out),
        "free_run_alignment": _rel(run_dir / "plots" / PLOT_FREE_ALIGNMENT, out),
        "free_run_mel": _rel(run_dir / "plots" / PLOT_FREE_MEL, out),
        "teacher_forced_alignment": _rel(run_dir / "plots" / PLOT_TF_ALIGNMENT, out),
    }


def _curve(history: list[RoundRecord]) -> list[dict[str, Any]]:
    """The free-running figures of every validation round, for the summary."""
    return [{"step": h.step, "minutes": round(h.minutes, 2),
             **{k: _rounded(h.get(M.name(M.FREE, k))) for k in
                ("aligned_share", "identified_share", "skipped_share", "length_ratio",
                 "mcd_dtw_db", "focus", "stopped_by_gate", "wer", "floor_wer")}}
            for h in history]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def describe_failure(summary: dict[str, Any]) -> list[str]:
    """Which criterion failed, in words (empty when the demo passed)."""
    lines = []
    ck, held = summary["checkpoint"], summary["heldout"]
    if not ck["aligned"]:
        lines.append(f"the checkpoint's validation round failed the verdict: {ck['verdict']}")
    if held["aligned_share"] < held["required_share"] - 1e-9 or not held["items"]:
        why = ", ".join(f"{k} ({v} item(s))" for k, v in held["failed"].items())
        lines.append(f"held-out sentences: {held['aligned_share']:.0%} of {held['items']} passed "
                     f"the verdict (needed {held['required_share']:.0%}); failed: "
                     f"{why or 'no items'}")
    heard = held.get("intelligibility")
    if not held["intelligible"]:
        if heard and heard.get("tested"):
            lines.append(f"held-out sentences are not intelligible: recogniser WER "
                         f"{heard['wer']:.3f} against the resynthesis floor "
                         f"{heard['floor_wer']:.3f} (bound {heard['wer_bound']:.3f})")
        else:
            note = heard["note"] if heard else "no held-out round"
            lines.append(f"held-out intelligibility untested ({note}): never counts as "
                         f"speaking")
    return lines
