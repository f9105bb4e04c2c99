"""Free-running synthesis of a set of items, each judged by the verdict (judge/verdict.py).

One place for what validation during training and ``tacotrain eval`` both do: synthesise texts
without teacher forcing, compare each synthesis with its ground truth where it has one (length
ratio, MCD-DTW, the content test against at least ``alignment.min_candidates`` ground truths)
and judge every item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tacotrain.config import AlignmentConfig
from tacotrain.judge.intelligibility import Heard, Listener, round_intelligibility
from tacotrain.judge.verdict import (
    ItemVerdict,
    RoundVerdict,
    identify,
    judge_item,
    judge_round,
    mel_cepstra,
)
from tacotrain.model import Tacotron2
from tacotrain.text import text_key


@dataclass(frozen=True)
class FreeRunItem:
    """One free-running synthesis and its verdict."""

    mel: Tensor  # [n_mels, frames] float32 on the CPU
    attention: Tensor  # [T_dec, N] float32 on the CPU
    verdict: ItemVerdict


@dataclass(frozen=True)
class FreeRunRound:
    items: tuple[FreeRunItem, ...]
    verdict: RoundVerdict


@torch.no_grad()
def synthesize(model: Tacotron2, texts: Sequence[Tensor], batch_size: int = 8,
               autocast: Callable[[], object] = nullcontext,
               max_frames: Sequence[int] | None = None,
               generator: torch.Generator | None = None,
               cancel: Callable[[], bool] | None = None
               ) -> list[tuple[Tensor, Tensor, bool]]:
    """Free-run each text ``[N]`` long -> ``(mel [n_mels, T], attention [T_dec, N],
    stopped_by_gate)`` on the CPU, in input order. The caller sets ``model.eval()`` and seeds
    (torch's global generator, or ``generator``: the prenet dropout's own stream); ``cancel``:
    see ``Decoder.infer``.

    Items are batched in order of length (the model's output does not depend on padding).
    ``max_frames`` (per text) lowers the model's own step cap of a batch to the largest of its
    items' bounds: validation passes the longest length the verdict accepts, since an item that
    runs past it fails anyway and the early rounds otherwise spend most of their time there."""
    dev = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: dict[int, tuple[Tensor, Tensor, bool]] = {}
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        lengths = torch.tensor([len(texts[i]) for i in idx], dtype=torch.long)
        ids = torch.zeros(len(idx), int(lengths.max()), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(texts[i])] = texts[i]
        cap = None
        if max_frames is not None:
            r = model.decoder.r
            cap = max(-(-int(max_frames[i]) // r) for i in idx)
            cap = min(cap, int(model.step_limits(lengths).max()))
        with autocast():
            res = model.infer(ids.to(dev), lengths.to(dev), max_decoder_steps=cap,
                              generator=generator, cancel=cancel)
        for row, i in enumerate(idx):
            frames, steps, n = int(res.mel_lengths[row]), int(res.dec_lengths[row]), int(
                lengths[row])
            out[i] = (res.mel_post[row, :, :frames].float().cpu(),
                      res.alignments[row, :steps, :n].float().cpu(),
                      bool(res.stopped_by_gate[row]))
    return [out[i] for i in range(len(texts))]


def judge(synth: Sequence[tuple[Tensor, Tensor, bool]], ground_truth: Sequence[Tensor | None],
          cfg: AlignmentConfig, frame_ms: float, extra_candidates: Sequence[Tensor] = (),
          texts: Sequence[str] | None = None, extra_texts: Sequence[str] | None = None,
          attached: Sequence[Sequence[bool]] | None = None,
          listener: Listener | None = None, listen_always: bool = True,
          wavs: Sequence[np.ndarray] | None = None) -> FreeRunRound:
    """Judge syntheses (from :func:`synthesize`) against their ground-truth mels (None where an
    item has none); ``frame_ms``: milliseconds per mel frame. The content test compares each
    synthesis with every ground truth here plus ``extra_candidates`` (mels of other sentences,
    e.g. training items), which should bring the number of distinct sentences to
    ``cfg.min_candidates``; with fewer, identification is not tested and the items'
    ``identified`` stays None. ``texts`` and ``extra_texts`` (the sentences of the items and of
    the extra candidates) let ground truths of the same sentence (equal :func:`text_key`) stand
    aside from each other's comparison; without them every
    ground truth counts as another sentence. ``attached`` (per item,
    :func:`tacotrain.text.attached_marks` of its tokens) lets the skip check read a phoneme
    mark together with the sound before it. ``listener`` (with ``texts``) has a recogniser
    transcribe each synthesis that has ground truth and that ground truth through the same
    vocoder (its resynthesis floor), and judges the round's intelligibility from them; with
    ``listen_always`` False only when the round passes every other check (the only case in
    which it changes the decision: training validation saves the vocoding and recognition of
    rounds that fail anyway). ``wavs`` (per item, the syntheses already vocoded) spares the
    listener vocoding them again."""
    with_gt = [i for i, g in enumerate(ground_truth) if g is not None]
    candidates = [ground_truth[i] for i in with_gt] + list(extra_candidates)
    if texts is not None and extra_texts is not None:
        keys = [text_key(texts[i]) for i in with_gt] + [text_key(t) for t in extra_texts]
    else:
        keys = [str(k) for k in range(len(candidates))]
    mcd: dict[int, float] = {}
    ident: dict[int, bool] = {}
    margin: dict[int, float] = {}
    if with_gt:
        n = cfg.n_cepstra
        cand_ceps = [mel_cepstra(c, n) for c in candidates]
        synth_ceps = [mel_cepstra(synth[i][0], n) for i in with_gt]
        flags, margins, dist = identify(synth_ceps, cand_ceps, list(range(len(with_gt))),
                                        cfg.identify_margin, keys)
        for row, i in enumerate(with_gt):
            mcd[i] = float(dist[row, row])
            if len(set(keys)) >= cfg.min_candidates:
                ident[i], margin[i] = flags[row], margins[row]
    def verdicts(heard: dict[int, Heard], floor: dict[int, Heard]) -> list[FreeRunItem]:
        items = []
        for i, (mel, attn, by_gate) in enumerate(synth):
            gt = ground_truth[i]
            v = judge_item(attn, by_gate, mel.shape[1], cfg, frame_ms,
                           gt_frames=int(gt.shape[1]) if gt is not None else None,
                           mcd_dtw_db=mcd.get(i), identified=ident.get(i),
                           content_margin=margin.get(i),
                           attached=None if attached is None else attached[i],
                           heard=heard.get(i), floor=floor.get(i))
            items.append(FreeRunItem(mel, attn, v))
        return items

    items = verdicts({}, {})
    listened = None
    rest_passes = judge_round([it.verdict for it in items], cfg).aligned
    if listener is not None and texts is not None and with_gt and (listen_always or rest_passes):
        floor = {i: listener.floor(text_key(texts[i]), ground_truth[i], texts[i])
                 for i in with_gt}
        floors = [floor[i] for i in with_gt]
        listened = round_intelligibility(None, floors, cfg, listener.judge_floor())
        # a recogniser that cannot read the ground truth is no judge: not worth hearing
        if listened is not None and listened.tested:
            heard = {i: listener.hear_mel(synth[i][0], texts[i]) if wavs is None
                     else listener.hear_wav(wavs[i], texts[i]) for i in with_gt}
            listened = round_intelligibility([heard[i] for i in with_gt], floors, cfg,
                                             listener.judge_floor())
            items = verdicts(heard, floor)
    return FreeRunRound(tuple(items),
                        judge_round([it.verdict for it in items], cfg, listened))


def nearest_in_length(lengths: Sequence[int], targets: Sequence[int], k: int,
                      exclude: set[int] | None = None) -> list[int]:
    """``k`` indices into ``lengths`` nearest to the ``targets`` lengths, taken round-robin so
    each target gets neighbours: candidates as long as the judged items, so that length alone
    cannot identify a synthesis."""
    taken = set(exclude or ())
    out: list[int] = []
    queues = [sorted(range(len(lengths)), key=lambda i, t=t: (abs(lengths[i] - t), i))
              for t in targets]
    while len(out) < k and any(queues):
        for q in queues:
            while q and q[0] in taken:
                q.pop(0)
            if q and len(out) < k:
                taken.add(q[0])
                out.append(q.pop(0))
    return out


__all__ = ["FreeRunItem", "FreeRunRound", "judge", "nearest_in_length", "synthesize"]
