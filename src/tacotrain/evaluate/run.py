"""``tacotrain eval``: free-run a checkpoint on validation items, sentences and hard inputs, judge
every item with the verdict, and write ``DIR/report.json`` and ``DIR/report.html``.

Sources: ``validation`` (the prepared data's validation split, with ground truth: length ratio,
MCD-DTW and the content test apply), ``heldout`` (other items with ground truth, e.g. the demo's
held-out sentences spoken by espeak-ng), ``sentences`` (lines of a file, no ground truth) and
``robustness`` (the built-in hard set, no ground truth). The content test of an item with ground
truth compares it with every ground truth of its source, padded with training items of similar
length up to ``alignment.min_candidates``.

``gt_resynthesis_mcd_dtw_db`` is the floor a model is measured against: the ground-truth mels
through the same vocoder and back through our front-end, against the ground truth. An item's
``mcd_dtw_db`` is measured the same way, on its audio (synthesis -> vocoder -> our mel), so the
two compare; ``mel_mcd_dtw_db`` is the predicted mel's own distance, as training validation
reports it (the content test uses the predicted mel).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tacotrain.audio import mel_spectrogram, save_wav
from tacotrain.data.loader import PreparedData, TextMelDataset
from tacotrain.evaluate.html import write_report_html
from tacotrain.evaluate.robustness import robustness_set
from tacotrain.fsutil import atomic_write_json
from tacotrain.infer.synth import SynthesisError, Synthesizer
from tacotrain.judge.alignment import plot_alignment, plot_mel_pair
from tacotrain.judge.freerun import judge, nearest_in_length, synthesize
from tacotrain.judge.intelligibility import floor_sample, listener_for
from tacotrain.judge.verdict import mcd_dtw
from tacotrain.text import attached_marks, text_key

log = logging.getLogger(__name__)


class EvalError(ValueError):
    """Bad input to ``tacotrain eval``; the message names the file, line or key."""


@dataclass(frozen=True)
class EvalItem:
    id: str
    source: str  # validation, heldout, sentences, robustness
    category: str | None
    text: str  # the cleaned text the model reads
    ids: torch.Tensor  # [N] long
    gt_mel: torch.Tensor | None  # [n_mels, T] natural-log mel, where there is ground truth


def _median(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return round(float(statistics.median(v)), 4) if v else None


def _round(x: Any) -> Any:
    """Floats to 4 decimals; a non-finite float (nothing to compare with) to null."""
    if isinstance(x, float):
        return round(x, 4) if np.isfinite(x) else None
    return x


def sentence_items(synth: Synthesizer, path: Path) -> list[EvalItem]:
    """One item per non-empty line of ``path``; a line the model cannot speak is an error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"--sentences {path}: cannot read it ({exc})") from None
    items = []
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            cleaned, seq = synth.sequence(line)
        except SynthesisError as exc:
            raise EvalError(f"{path}, line {no}: {exc}") from None
        items.append(EvalItem(f"sentence-{no:04d}", "sentences", None, cleaned,
                              torch.tensor(seq), None))
    if not items:
        raise EvalError(f"--sentences {path}: the file has no sentences")
    return items


def robustness_items(synth: Synthesizer, train_texts: list[str], seed: int) -> list[EvalItem]:
    items = []
    for k, r in enumerate(robustness_set(synth.language, train_texts, seed), start=1):
        cleaned, seq = synth.sequence(r.text)
        items.append(EvalItem(f"robust-{k:03d}-{r.category}", "robustness", r.category, cleaned,
                              torch.tensor(seq), None))
    return items


def prepared_items(data: PreparedData, source: str, split: str | None = None) -> list[EvalItem]:
    """Items of prepared data (one split, or all) with their ground-truth mels."""
    rows = data.items if split is None else data.split(split)
    return [EvalItem(r["id"], source, None, r["text"],
                     torch.tensor(data.sequence(r)),
                     torch.from_numpy(np.load(data.root / r["mel"], allow_pickle=False)))
            for r in rows]


def run_eval(checkpoint: str | Path, data_dir: str | Path, out: str | Path,
             sentences: Path | None = None, robustness: bool = False, vocoder: str | None = None,
             device: str = "auto", seed: int = 0, asr: bool = True, progress: bool = True,
             heldout: list[EvalItem] | None = None, include_validation: bool = True,
             vocoder_config: str | Path | None = None, trust: bool = False,
             asr_model: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint``; returns the report (also written to ``out``). ``vocoder`` and
    ``vocoder_config`` choose the vocoder (see :func:`tacotrain.audio.load_vocoder`);
    ``trust`` (``--trust-checkpoint``) lets the checkpoint unpickle arbitrary objects;
    ``asr_model`` (a Vosk model directory) listens through Vosk instead of the checkpoint's
    ``alignment.asr`` (see :func:`tacotrain.judge.intelligibility.listener_for`)."""
    out = Path(out)
    synth = Synthesizer.from_checkpoint(checkpoint, device=device, vocoder=vocoder,
                                        vocoder_config=vocoder_config, trust=trust)
    data = PreparedData.load(data_dir)
    if data.language != synth.language or data.symbols != synth.symbols:
        raise EvalError(f"{data_dir} is {data.language} data with another symbol table than the "
                        f"checkpoint's ({synth.language}): evaluate on the data it was trained on")
    train = TextMelDataset(data, "train")
    groups: list[list[EvalItem]] = []
    if include_validation:
        groups.append(prepared_items(data, "validation", "val"))
    if heldout:
        groups.append(heldout)
    if sentences is not None:
        groups.append(sentence_items(synth, Path(sentences)))
    if robustness:
        groups.append(robustness_items(synth, [i["text"] for i in train.items], seed))
    if not groups:
        raise EvalError("nothing to evaluate: no validation items, sentences or robustness set")
    cfg = synth.cfg.alignment
    if asr_model is not None:
        cfg = cfg.model_copy(update={"asr": "vosk", "asr_model": str(asr_model)})
    # a recogniser setting that cannot work fails here, before anything is written
    listener = listener_for(cfg, synth.language, synth.vocoder, synth.audio.sample_rate) \
        if asr else None
    if listener is not None:  # as in training: the corpus decides whether it can judge
        listener.set_sample(lambda: floor_sample(TextMelDataset(data, "val"), train,
                                                 cfg.floor_items))
    (out / "report.json").unlink(missing_ok=True)  # a crash must not leave an old report
    (out / "wav").mkdir(parents=True, exist_ok=True)
    (out / "img").mkdir(exist_ok=True)

    total = sum(len(g) for g in groups)
    bar = tqdm(total=total, unit="item", disable=not progress, desc="eval")
    records: list[dict[str, Any]] = []
    heard: dict[str, dict[str, Any]] = {}
    for group in groups:
        results, seconds = [], []
        for item in group:
            torch.manual_seed(seed)  # prenet dropout stays on at inference: repeatable
            t0 = time.perf_counter()
            res = synthesize(synth.model, [item.ids.to(synth.device)])[0]
            wav = synth.vocoder(res[0])
            seconds.append(time.perf_counter() - t0)
            results.append((res, wav))
            bar.update()
        gts = [i.gt_mel for i in group]
        extra, extra_texts = [], []
        n_gt = len({text_key(i.text) for i in group if i.gt_mel is not None})
        if 0 < n_gt < cfg.min_candidates:
            idx = nearest_in_length(train.lengths, [int(g.shape[1]) for g in gts if g is not None],
                                    cfg.min_candidates - n_gt)
            extra = [train[i][1] for i in idx]
            extra_texts = [train.items[i]["text"] for i in idx]
        rnd = judge([r for r, _ in results], gts, cfg, synth.audio.frame_ms, extra,
                    [i.text for i in group],
                    extra_texts, [attached_marks(i.ids.tolist(), synth.symbols) for i in group],
                    listener, wavs=[wav for _, wav in results])
        if group[0].source not in heard:
            heard[group[0].source] = _intelligibility(rnd.verdict, listener is not None)
        for item, (_, wav), fr, sec in zip(group, results, rnd.items, seconds, strict=True):
            records.append(_record(item, fr, wav, sec, synth, out))
    bar.close()

    floor = _resynthesis_floor(synth, [i for g in groups for i in g if i.gt_mel is not None])
    report = {"checkpoint": str(Path(checkpoint).resolve()),
              "summary": summarize(records, floor), "items": records}
    for src, figures in heard.items():
        report["summary"]["by_source"][src]["intelligibility"] = figures
    write_report_html(report, out)
    atomic_write_json(out / "report.json", report)  # last: marks the report complete
    return report


def _record(item: EvalItem, fr, wav: np.ndarray, seconds: float, synth: Synthesizer,
            out: Path) -> dict[str, Any]:
    v = fr.verdict
    name = item.id if item.source in item.id else f"{item.source}-{item.id}"
    wav_rel, png_rel = f"wav/{name}.wav", f"img/{name}.png"
    save_wav(out / wav_rel, wav, synth.audio.sample_rate)
    status = "aligned" if v.aligned else "NOT aligned: " + ", ".join(v.reasons)
    title = item.text if len(item.text) <= 60 else item.text[:57] + "..."
    plot_alignment(fr.attention, out / png_rel, title=title,
                   info=f"{status}; focus {v.focus:.2f}, skipped {v.skipped_tokens}")
    audio_seconds = len(wav) / synth.audio.sample_rate
    rec = {"id": item.id, "source": item.source, "category": item.category, "text": item.text,
           **{k: _round(x) for k, x in v.as_dict().items()},
           "rtf": _round(seconds / audio_seconds) if audio_seconds > 0 else None,
           "wav": wav_rel, "alignment_png": png_rel, "mel_png": None}
    if item.gt_mel is not None:
        # as heard: the audio back through our front-end, comparable with the floor; the
        # predicted mel's own distance (what training validation reports) stays beside it
        rec["mel_mcd_dtw_db"] = rec["mcd_dtw_db"]
        heard = _heard_mel(wav, synth)
        rec["mcd_dtw_db"] = _round(mcd_dtw(heard, item.gt_mel, synth.cfg.alignment.n_cepstra))
        rec["mel_png"] = f"img/{name}-mel.png"
        plot_mel_pair(item.gt_mel, fr.mel, out / rec["mel_png"], title)
    return rec


def _intelligibility(verdict, listened: bool) -> dict[str, Any]:
    """A source's intelligibility figures for the report (tacotrain/judge/intelligibility.py)."""
    i = verdict.intelligibility
    if i is None or not i.tested:
        why = ("not listened (--no-asr or alignment.asr: off)" if not listened
               else "no recogniser for this language, or no item has ground truth" if i is None
               else f"the recogniser cannot read the ground truth: floor WER "
                    f"{i.deciding_floor:.3f}"
                    + (" on a corpus sample" if i.judge_floor is not None else "")
                    + " above alignment.max_floor_wer")
        return {"tested": False, "note": why,
                "floor_wer": None if i is None else round(i.floor_wer, 4)}
    return {"tested": True, "intelligible": i.passed, "wer": round(i.wer, 4),
            "floor_wer": round(i.floor_wer, 4), "wer_bound": round(i.bound, 4),
            "ratio": round(i.ratio, 3), "items": i.items}


def _heard_mel(wav: np.ndarray, synth: Synthesizer) -> torch.Tensor:
    """Audio back through our front-end; a clip shorter than one FFT window (a synthesis that
    stopped at once) is zero-padded to it."""
    n_fft = synth.audio.n_fft
    if len(wav) <= n_fft // 2:
        wav = np.pad(wav, (0, n_fft - len(wav)))
    return mel_spectrogram(wav, synth.audio)


def _resynthesis_floor(synth: Synthesizer, items: list[EvalItem]) -> float | None:
    """Median MCD-DTW of ground truth -> vocoder -> our mel, against the ground truth."""
    values = []
    for item in items:
        back = _heard_mel(synth.vocoder(item.gt_mel.to(synth.device)), synth)
        values.append(mcd_dtw(back, item.gt_mel, synth.cfg.alignment.n_cepstra))
    return _median(values)


def summarize(records: list[dict[str, Any]], floor: float | None) -> dict[str, Any]:
    """The report's summary: shares, medians, per source and robustness failures per category."""
    def share(rows: list[dict[str, Any]], key: str) -> float | None:
        return round(sum(bool(r[key]) for r in rows) / len(rows), 4) if rows else None

    by_source: dict[str, dict[str, Any]] = {}
    for src in dict.fromkeys(r["source"] for r in records):
        rows = [r for r in records if r["source"] == src]
        by_source[src] = {"items": len(rows), "aligned_share": share(rows, "aligned")}
    robust = [r for r in records if r["source"] == "robustness"]
    rates = {}
    for cat in dict.fromkeys(r["category"] for r in robust):
        rows = [r for r in robust if r["category"] == cat]
        rates[cat] = round(1.0 - share(rows, "aligned"), 4)
    if robust:
        rates["all"] = round(1.0 - share(robust, "aligned"), 4)
    return {"items": len(records),
            # only items with a recording get the content test; the others are judged on their
            # attention and the gate alone, which a voice that does not read can pass
            "content_tested_items": sum(r["identified"] is not None for r in records),
            "aligned_share": share(records, "aligned"),
            "gate_stop_share": share(records, "stopped_by_gate"),
            "median_length_ratio": _median([r["length_ratio"] for r in records]),
            "median_mcd_dtw_db": _median([r["mcd_dtw_db"] for r in records]),
            "gt_resynthesis_mcd_dtw_db": floor,
            "rtf": _median([r["rtf"] for r in records]),
            "by_source": by_source, "robustness_failure_rate": rates}


def format_summary(report: dict[str, Any]) -> str:
    """A few lines in words for the terminal."""
    s = report["summary"]
    lines = [f"{s['items']} items ({s['content_tested_items']} tested for content: identified "
             f"as their own sentence among recorded ones), aligned share {s['aligned_share']}, "
             f"stopped by gate {s['gate_stop_share']}; median length ratio "
             f"{s['median_length_ratio']}, median MCD-DTW {s['median_mcd_dtw_db']} dB "
             f"(ground-truth resynthesis floor {s['gt_resynthesis_mcd_dtw_db']} dB); median RTF "
             f"{s['rtf']}"]
    for src, b in s["by_source"].items():
        fails: dict[str, int] = {}
        for r in report["items"]:
            if r["source"] == src:
                for reason in r["reasons"]:
                    fails[reason] = fails.get(reason, 0) + 1
        why = ("; failed: " + ", ".join(f"{k} ({v})" for k, v in fails.items())) if fails else ""
        lines.append(f"  {src}: {b['items']} items, aligned share {b['aligned_share']}{why}")
        heard = b.get("intelligibility")
        if heard and heard["tested"]:
            lines.append(f"    recogniser: WER {heard['wer']:.3f} against the resynthesis floor "
                         f"{heard['floor_wer']:.3f} (x{heard['ratio']:.2f}; bound "
                         f"{heard['wer_bound']:.3f}): "
                         f"{'intelligible' if heard['intelligible'] else 'NOT intelligible'}")
        elif heard:
            lines.append(f"    recogniser: untested ({heard['note']})")
    if s["content_tested_items"] < s["items"]:
        lines.append("  note: items not tested for content (sentences, robustness, too few "
                     "recorded sentences) are judged on attention and the gate alone; whether "
                     "they are really said needs recordings to tell sentences apart")
    if s["robustness_failure_rate"]:
        lines.append("  robustness failure rate: " + ", ".join(
            f"{k} {v:.2f}" for k, v in s["robustness_failure_rate"].items()))
    return "\n".join(lines)
