"""Put a given text on a long recording, offline, in English or Russian.

The method of aeneas: espeak-ng reads the text piece by piece (sentences, long sentences cut at a
clause mark or between words: text/sentences.py), which gives a reference recording whose piece
boundaries are known. Both recordings lose their silences (speech frames only, so pauses of any
length do not bend the path), become cepstra (features.py), and dynamic time warping within a
band around the diagonal finds which recording frame answers which reference frame. Each piece
boundary, mapped through the path, lands near a pause of the recording; it moves to the pause
that suits it best within ``snap_seconds`` (a longer pause is a likelier sentence break). Pieces
between two such cuts are a clip with exactly their text.

How sure it is, per clip (each 0..1, the clip's confidence their minimum):
- ``match``: the path's mean distance over the clip against the distance of unrelated frames
  of the same two recordings (``1 - ratio`` rescaled); a text that is not this audio finds no
  close path;
- ``boundary``: how close the mapped boundaries fell to the pauses they were moved to
  (``1 - (miss / snap_seconds) ** 2``);
- ``duration``: the clip's speech seconds against the reference's, at the recording's overall
  speaking rate.
"""

from __future__ import annotations

import io
import logging
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr

from tacotrain.config import CorpusBuildConfig
from tacotrain.corpus_build import features
from tacotrain.corpus_build.segment import Segmentation, levels, segment
from tacotrain.text import clean_text
from tacotrain.text.sentences import abbreviation_splits, split_sentences

log = logging.getLogger(__name__)

CHARS_PER_SECOND = 14.0  # a piece of text longer than max_clip at this rate is cut further
DTW_CELLS = 200_000_000  # band cells at most (one byte each for the way back)
_MATCH_GOOD, _MATCH_BAD = 1.2, 1.8  # a clip's path distance / the recording's median: 1 .. 0
_REFERENCE_SPEECH_DB = 35.0  # espeak-ng's clean reading: speech within this of its peak
_DURATION_SCALE = 0.7  # duration score exp(-|ln(observed / expected)| / this): 0.5 at 1.6x
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u00bb\u201d)]*$")


class AlignError(RuntimeError):
    """The text cannot be put on the audio (empty, or of a very different length)."""


@dataclass(frozen=True)
class Piece:
    """A piece of the text as written, and where espeak-ng's reference speaks it."""

    text: str
    ref_start: int  # first reference speech frame
    ref_end: int


@dataclass
class AlignedClip:
    start: float  # speech start (s)
    end: float  # speech end (s)
    cut_before: float  # the cut points (pause centres; the recording's ends at the edges)
    cut_after: float
    text: str
    pieces: list[int]
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return min(self.scores.values()) if self.scores else 0.0


@dataclass
class Alignment:
    clips: list[AlignedClip]
    rate_ratio: float  # recording speech seconds / reference speech seconds
    unsnapped: list[str]  # text boundaries that found no pause (kept inside a clip)
    sentence_ends: int  # sentence ends between pieces
    ends_without_pause: int  # of which found no pause: many means the text is not this audio's


def pieces_of(text: str, lang: str, max_clip: float
              ) -> tuple[list[str], list[bool], list[bool]]:
    """The text's pieces (sentences, long ones cut at clause marks) and, for each boundary
    between two, whether it is a sentence end and whether it is an abbreviation that may end
    one ("Baker St. The"): such a boundary is not taken for a sentence end, only a pause right
    there makes it a cut, and none there is no fault."""
    pieces, weak = [], []
    for p in split_sentences(text, lang, max_chars=max(20, int(max_clip * CHARS_PER_SECOND))):
        parts = [q for q in abbreviation_splits(p, lang) if clean_text(q, lang)]
        pieces += parts
        weak += [True] * (len(parts) - 1) + [False]
    ends = [_SENTENCE_END.search(p) is not None and not w
            for p, w in zip(pieces[:-1], weak[:-1], strict=True)]
    return pieces, ends, weak[:-1]


def _espeak(text: str, lang: str, sample_rate: int) -> np.ndarray:
    from tacotrain.data.mini import speak

    data, _ = speak(clean_text(text, lang), lang)
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return soxr.resample(audio, rate, sample_rate).astype(np.float32) if rate != sample_rate \
        else audio


def reference(pieces: list[str], lang: str, sample_rate: int, hop: int, workers: int = 2,
              progress: bool = False) -> tuple[np.ndarray, list[Piece]]:
    """espeak-ng's reading of the pieces: its speech-frame cepstra ``[R, C]`` and each piece's
    range of those frames."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max(1, workers)) as pool:
        audios = list(tqdm(pool.map(lambda p: _espeak(p, lang, sample_rate), pieces),
                           total=len(pieces), desc="reference (espeak-ng)", unit="piece",
                           disable=not progress))
    ceps, out, n = [], [], 0
    for text, audio in zip(pieces, audios, strict=True):
        c = features.mfcc(audio, sample_rate, hop)
        level = levels(audio, sample_rate, hop / sample_rate)[:len(c)]
        speech = level > level.max() - _REFERENCE_SPEECH_DB
        if not speech.any():
            speech[:] = True
        ceps.append(c[speech])
        out.append(Piece(text, n, n + int(speech.sum())))
        n += int(speech.sum())
    allc = np.concatenate(ceps)
    return features.normalise(allc, np.ones(len(allc), bool)), out


def _pool(x: np.ndarray, k: int) -> np.ndarray:
    """Average ``k`` consecutive rows (the last group may be shorter)."""
    if k == 1:
        return x
    n = -(-len(x) // k)
    pad = np.pad(x, ((0, n * k - len(x)), (0, 0)), mode="edge")
    return pad.reshape(n, k, -1).mean(axis=1)


def dtw(a: np.ndarray, b: np.ndarray, band: int,
        progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic time warping of ``a`` [N, C] against ``b`` [M, C] (Euclidean distance; steps
    right, down and diagonal) within ``band`` frames of the straight line from corner to corner.
    Returns the path from (0, 0) to (N - 1, M - 1) as two index arrays ``(i [P], j [P])``,
    both non-decreasing. One row at a time in O(band) memory for the costs and one byte per cell
    for the way back; a row's left-to-right dependency is solved with a running minimum."""
    n, m = len(a), len(b)
    centre = (np.arange(n) * (m - 1) / max(n - 1, 1)).round().astype(int)
    lo = np.clip(centre - band, 0, m - 1)
    hi = np.clip(centre + band + 1, 1, m)
    lo[0], hi[-1] = 0, m  # the path starts and ends in the corners
    lo = np.minimum.accumulate(lo[::-1])[::-1]  # rows' windows never move left
    hi = np.maximum.accumulate(hi)
    width = int((hi - lo).max())
    moves = np.zeros((n, width), np.int8)  # 0 diagonal, 1 from above, 2 from the left
    prev = np.full(1, np.inf)
    prev_lo = 0
    inf = np.inf
    from tqdm import tqdm

    for i in tqdm(range(n), desc="aligning (DTW)", unit="frame", unit_scale=True,
                  disable=not progress or n < 20_000, mininterval=1.0):
        cols = np.arange(lo[i], hi[i])
        cost = np.sqrt(((b[lo[i]:hi[i]] - a[i]) ** 2).sum(axis=1))
        if i == 0:
            up = np.full(len(cols), inf)
            diag = np.full(len(cols), inf)
            diag[0] = 0.0
        else:
            k = cols - prev_lo
            ok = (k >= 0) & (k < len(prev))
            up = np.where(ok, prev[np.clip(k, 0, len(prev) - 1)], inf)
            ok1 = (k - 1 >= 0) & (k - 1 < len(prev))
            diag = np.where(ok1, prev[np.clip(k - 1, 0, len(prev) - 1)], inf)
        best = np.minimum(diag, up)
        csum = np.cumsum(cost)
        shifted = np.concatenate(([0.0], csum[:-1]))
        row = csum + np.minimum.accumulate(best - shifted)
        left = np.concatenate(([inf], row[:-1]))
        moves[i, :len(cols)] = np.where(left < best, 2, np.where(up < diag, 1, 0))
        prev, prev_lo = row, lo[i]
    path_i, path_j = [n - 1], [m - 1]
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        move = moves[i, j - lo[i]]
        if move == 2 and j > 0:
            j -= 1
        elif move == 1 or j == 0:
            i -= 1
        else:
            i, j = i - 1, j - 1
        path_i.append(i)
        path_j.append(j)
    return np.array(path_i[::-1]), np.array(path_j[::-1])


def _snap(estimates: list[float], seg: Segmentation, snaps: list[float]) -> list[int | None]:
    """For each boundary estimate (s, increasing), the index of the pause it moves to, or None:
    the pause with the lowest cost (distance from the pause / its ``snaps`` tolerance, plus a
    penalty for a short pause) within that tolerance, each pause used once, in order."""
    chosen: list[int | None] = []
    last = -1
    for t, snap in zip(estimates, snaps, strict=True):
        best, best_cost = None, math.inf
        for k, p in enumerate(seg.pauses):
            if k <= last:
                continue
            dist = max(p.start - t, t - p.end, 0.0)
            if dist > snap:
                if p.start > t + snap:
                    break
                continue
            cost = dist / snap + 0.5 * (1.0 - min(p.duration / 0.8, 1.0))
            if cost < best_cost:
                best, best_cost = k, cost
        chosen.append(best)
        if best is not None:
            last = best
    return chosen


def align(samples: np.ndarray, sample_rate: int, text: str, lang: str, cfg: CorpusBuildConfig,
          seg: Segmentation | None = None, progress: bool = False, names: str = "") -> Alignment:
    """Clips of ``samples`` with their exact passages of ``text``. Raises :class:`AlignError`
    for an empty text, a recording without speech, or a text far too long or short for the
    audio (``names`` says which files, in the message)."""
    seg = seg or segment(samples, sample_rate, cfg)
    pieces, ends, maybe = pieces_of(text, lang, cfg.max_clip)
    if not pieces:
        raise AlignError(f"{names}: the text is empty (nothing to read)")
    if not seg.speech.any():
        raise AlignError(f"{names}: the audio has no speech above its noise floor")
    hop = max(1, round(cfg.frame_seconds * sample_rate))
    ref, ref_pieces = reference(pieces, lang, sample_rate, hop, progress=progress)
    speech_idx = np.flatnonzero(seg.speech)
    rate_ratio = len(speech_idx) / max(len(ref), 1)
    if not cfg.rate_ratio_min <= rate_ratio <= cfg.rate_ratio_max:
        raise AlignError(
            f"{names}: text and audio differ too much in length: {len(speech_idx) * seg.hop:.0f} "
            f"s of speech against {len(ref) * seg.hop:.0f} s for the text read at espeak-ng's "
            f"rate (ratio {rate_ratio:.2f}, allowed {cfg.rate_ratio_min}..{cfg.rate_ratio_max}); "
            "is this the text of this recording?")
    rec = features.normalise(features.mfcc(samples, sample_rate, hop), seg.speech)[speech_idx]
    # coarser frames for long inputs, so the band fits in DTW_CELLS
    band_s = max(20.0, 0.1 * len(rec) * seg.hop)
    k = 2
    while (len(rec) / k) * (2 * band_s / (seg.hop * k)) > DTW_CELLS:
        k *= 2
    a, b = _pool(rec, k), _pool(ref, k)
    pi, pj = dtw(a, b, band=int(band_s / (seg.hop * k)), progress=progress)
    dist = np.sqrt(((a[pi] - b[pj]) ** 2).sum(axis=1))
    rng = np.random.default_rng(0)
    # distance of frames that do not belong together
    pairs = a[rng.integers(0, len(a), 4000)] - b[rng.integers(0, len(b), 4000)]
    unrelated = float(np.sqrt((pairs ** 2).sum(axis=1)).mean())
    # piece boundary (reference frame) -> first recording frame the path pairs with it
    first_i = np.full(len(b) + 1, len(a), dtype=int)
    np.minimum.at(first_i, pj, pi)
    first_i = np.minimum.accumulate(first_i[::-1])[::-1]

    def rec_time(ref_frame: int) -> float:
        """Time between the recording's speech frames on either side of the mapped boundary."""
        s = min(int(first_i[min(ref_frame // k, len(b))]) * k, len(speech_idx) - 1)
        before = speech_idx[max(s - 1, 0)]
        return 0.5 * (before + speech_idx[s]) * seg.hop

    estimates = [rec_time(p.ref_start) for p in ref_pieces[1:]]
    # a sentence end moves to a pause up to snap_seconds away; a cut the splitter made inside a
    # long sentence only to a pause right where the path puts it
    snapped = _snap(estimates, seg, [cfg.snap_seconds if e else cfg.snap_inside_sentence
                                     for e in ends])
    cuts = [0] + [n + 1 for n, s in enumerate(snapped) if s is not None] + [len(pieces)]
    unsnapped = [pieces[n] for n, s in enumerate(snapped) if s is None and not maybe[n]]
    spans = []
    for c0, c1 in zip(cuts[:-1], cuts[1:], strict=True):
        p0 = snapped[c0 - 1] if c0 > 0 else None
        p1 = snapped[c1 - 1] if c1 < len(pieces) else None
        spans.append((c0, c1, seg.pauses[p0] if p0 is not None else None,
                      seg.pauses[p1] if p1 is not None else None))
    path_ratio = [float(dist[(pj >= p.ref_start // k) & (pj < max(p.ref_end // k,
                                                                  p.ref_start // k + 1))].mean()
                        / unrelated) for p in ref_pieces]
    typical = float(np.median(path_ratio))
    clips = []
    for c0, c1, left, right in spans:
        start = left.end if left else seg.speech_start
        end = right.start if right else seg.speech_end
        clip = AlignedClip(start, end, left.centre if left else 0.0,
                           right.centre if right else seg.duration,
                           " ".join(pieces[c0:c1]), list(range(c0, c1)))
        ratio = max(path_ratio[c0:c1]) / typical
        clip.scores["match"] = float(np.clip((_MATCH_BAD - ratio) / (_MATCH_BAD - _MATCH_GOOD),
                                             0.0, 1.0))
        misses = [max(p.start - t, t - p.end, 0.0) for t, p in
                  ((estimates[c - 1], seg.pauses[snapped[c - 1]]) for c in (c0, c1)
                   if 0 < c < len(pieces) and snapped[c - 1] is not None)]
        clip.scores["boundary"] = 1.0 - (max(misses, default=0.0) / cfg.snap_seconds) ** 2
        lost = sum(ends[n] for n in range(c0, c1 - 1))
        clip.scores["pauses"] = max(0.0, 1.0 - 0.4 * lost) if lost < 3 else 0.0
        r0, r1 = ref_pieces[c0].ref_start, ref_pieces[c1 - 1].ref_end
        spoken = float(seg.speech[seg.frame(start):seg.frame(end)].sum())
        expected = (r1 - r0) * rate_ratio
        clip.scores["duration"] = float(math.exp(-abs(math.log(max(spoken, 1) / max(expected, 1)))
                                                 / _DURATION_SCALE))
        clips.append(clip)
    clips = whole_sentences(clips, cfg.max_clip)
    log.debug("aligned %d pieces into %d spans, %d boundaries without a pause", len(pieces),
              len(clips), len(unsnapped))
    lost = sum(e and s is None for e, s in zip(ends, snapped, strict=True))
    return Alignment(clips, rate_ratio, unsnapped, sum(ends), lost)


def whole_sentences(clips: list[AlignedClip], max_clip: float) -> list[AlignedClip]:
    """Clips cut inside a sentence joined again wherever the whole stays within ``max_clip``
    seconds: the text was split by its length in characters (a guess at its duration), the
    recording says how long the sentence really is, and a clip should end where its sentence
    does wherever it can."""
    out: list[AlignedClip] = []
    for clip in clips:
        prev = out[-1] if out else None
        if prev is not None and not _SENTENCE_END.search(prev.text) \
                and clip.end - prev.start <= max_clip:
            out[-1] = AlignedClip(prev.start, clip.end, prev.cut_before, clip.cut_after,
                                  f"{prev.text} {clip.text}", prev.pieces + clip.pieces,
                                  {k: min(v, clip.scores.get(k, v))
                                   for k, v in prev.scores.items()})
        else:
            out.append(clip)
    return out
