"""Synthesizer: checkpoint -> text -> mel -> wav, with alignment diagnostics for every output.

The mel the model predicts is the same log-mel that ``prepare`` computes (one function, in
``tacotrain.audio``), and the text goes through the same cleaner, so synthesis sees exactly
what training saw.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tacotrain.audio import load_vocoder, save_wav
from tacotrain.audio.vocoder import Vocoder
from tacotrain.cancel import Cancelled
from tacotrain.config import AudioConfig, Config
from tacotrain.fsutil import atomic_write, atomic_write_json
from tacotrain.infer.checkpoint import Checkpoint
from tacotrain.infer.device import resolve_device
from tacotrain.infer.pretrained import build_model, load_pretrained
from tacotrain.judge.alignment import METRICS, plot_alignment
from tacotrain.judge.freerun import synthesize as free_run
from tacotrain.judge.verdict import judge_item
from tacotrain.model import Tacotron2
from tacotrain.text import (
    PhonemeError,
    attached_marks,
    clean_text,
    phonemize,
    symbols_for,
    unknown_characters,
)
from tacotrain.text.sentences import split_sentences


class SynthesisError(ValueError):
    pass


def _check(cancel: Callable[[], bool] | None, steps: int) -> None:
    """Raise :class:`Cancelled` (after ``steps`` decoder steps) when ``cancel`` says so."""
    if cancel is not None and cancel():
        raise Cancelled("synthesis", steps)


@dataclass(frozen=True)
class SynthesisInfo:
    """The verdict and figures of a synthesis, judged without ground truth: gate stop, skips,
    repeats, stalls, attention shape. What is said is not tested (no recording to compare with,
    no recogniser heard it): ``content`` is ``"untested"``. For text read in pieces: the
    pieces' verdicts joined, token counts summed, the worst piece's metrics, and ``pieces``."""

    text: str
    frames: int
    seconds: float
    stopped_by_gate: bool
    aligned: bool
    reasons: list[str]
    skipped_tokens: int
    repeated_tokens: int
    stalled_tokens: int
    metrics: dict[str, float]  # judge.alignment.METRICS -> value
    synthesis_seconds: float | None  # None: synthesised in a batch (its own time unknown)
    rtf: float | None
    pause_seconds: float | None = None  # between pieces (None: one piece)
    pieces: list[SynthesisInfo] = field(default_factory=list)
    content: str = "untested"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``x.json``, the server's ``figures``): metrics as top-level keys."""
        out: dict[str, Any] = {
            "text": self.text, "frames": self.frames, "seconds": self.seconds,
            "stopped_by_gate": self.stopped_by_gate, "aligned": self.aligned,
            "content": self.content, "reasons": list(self.reasons),
            "skipped_tokens": self.skipped_tokens, "repeated_tokens": self.repeated_tokens,
            "stalled_tokens": self.stalled_tokens, **self.metrics,
            "synthesis_seconds": self.synthesis_seconds, "rtf": self.rtf}
        if self.pieces:
            out["pause_seconds"] = self.pause_seconds
            out["pieces"] = [p.as_dict() for p in self.pieces]
        return out


@dataclass
class Synthesis:
    """One synthesis. For text read in several pieces, ``wav`` and ``mel`` are the pieces joined
    with pauses, ``alignment`` stacks the pieces' alignments along the decoder axis (each from
    token 0, zero-padded to the longest piece), ``info`` sums up the pieces and ``pieces`` holds
    each one."""

    text: str  # cleaned text the model read
    wav: np.ndarray  # float32 waveform
    mel: torch.Tensor  # [n_mels, T] log-mel
    alignment: torch.Tensor  # [T_dec, N]
    info: SynthesisInfo
    pieces: list[Synthesis] = field(default_factory=list)  # empty: read in one piece


class Synthesizer:
    def __init__(self, model: Tacotron2, cfg: Config, language: str, audio: AudioConfig,
                 device: torch.device, vocoder: Vocoder, phonemes: bool = False,
                 symbols: list[str] | None = None) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.language = language
        self.audio = audio
        self.device = device
        self.vocoder = vocoder
        self.phonemes = phonemes  # the model reads espeak-ng IPA (text.phonemes)
        # the table the model's embedding is indexed by: this version's for our checkpoints,
        # the stored one for an exported model (NVIDIA's, for one made from NVIDIA's weights)
        self.symbols = list(symbols) if symbols is not None else symbols_for(language, phonemes)
        self._ids = {sym: i for i, sym in enumerate(self.symbols)}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto",
                        vocoder: str | None = None,
                        vocoder_config: str | Path | None = None,
                        trust: bool = False) -> Synthesizer:
        """``vocoder``/``vocoder_config``: see :func:`tacotrain.audio.load_vocoder`; a HiFi-GAN
        whose mel settings differ from the checkpoint's is refused. ``trust``
        (``--trust-checkpoint``): let the checkpoint unpickle arbitrary objects."""
        dev = resolve_device(device)
        ck = Checkpoint.read(path, map_location=dev, trust=trust)
        cfg = Config.from_saved(ck.config)
        data = ck.data
        if data.symbols != symbols_for(data.language, data.phonemes):
            kind = "phoneme" if data.phonemes else "letter"
            raise SynthesisError(f"{path}: the checkpoint's symbol table differs from this "
                                 f"version's {data.language} {kind} table; it cannot be "
                                 "used here")
        audio = AudioConfig.model_validate(data.audio)
        model = Tacotron2(cfg.model, len(data.symbols), audio.n_mels).to(dev)
        model.load_state_dict(ck.model)
        model.set_r(ck.reduction(cfg.model))  # the r the checkpoint was validated with
        voc = load_vocoder(vocoder, audio, vocoder_config, device=dev)
        return cls(model, cfg, data.language, audio, dev, voc, data.phonemes)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "auto",
                        vocoder: str | None = None,
                        vocoder_config: str | Path | None = None) -> Synthesizer:
        """A model written by ``tacotrain export`` (``DIR/model.safetensors`` and
        ``DIR/config.json``), read with safetensors and json only: nothing is unpickled. Text
        is mapped onto the stored symbol table."""
        dev = resolve_device(device)
        pre = load_pretrained(directory)
        cfg = Config(model=pre.model, synth=pre.synth, alignment=pre.alignment)
        voc = load_vocoder(vocoder, pre.audio, vocoder_config, device=dev)
        return cls(build_model(pre, dev), cfg, pre.language, pre.audio, dev, voc, pre.phonemes,
                   symbols=pre.symbols)

    def sequence(self, text: str) -> tuple[str, list[int]]:
        """Text -> (the cleaned text the model reads, its ids in the model's symbol table: of
        its letters, or of its espeak-ng phonemes for a phoneme model); unspeakable characters
        raise :class:`SynthesisError` naming them."""
        cleaned = clean_text(text, self.language)
        # a letter model reads the characters themselves; a phoneme model's input to espeak-ng
        # must be the language's letters (the pad "_" is never text)
        bad = (unknown_characters(cleaned, self.language) if self.phonemes
               else sorted({c for c in cleaned if self._ids.get(c, 0) == 0}))
        if bad:
            raise SynthesisError(f"text contains characters outside the {self.language} symbol "
                                 f"set: {' '.join(repr(c) for c in bad)} in {text!r}")
        if not cleaned.strip():
            raise SynthesisError(f"nothing to say in {text!r}")
        units = cleaned
        if self.phonemes:
            try:
                units = phonemize(cleaned, self.language)
            except PhonemeError as exc:
                raise SynthesisError(f"cannot phonemise {text!r}: {exc}") from None
            missing = sorted({c for c in units if self._ids.get(c, 0) == 0})
            if missing:
                raise SynthesisError(f"cannot phonemise {text!r}: espeak-ng wrote "
                                     f"{' '.join(repr(c) for c in missing)}, which the model's "
                                     f"{self.language} phoneme table does not hold")
        return cleaned, [self._ids[c] for c in units]

    @torch.no_grad()
    def synthesize(self, text: str, seed: int = 0,
                   cancel: Callable[[], bool] | None = None) -> Synthesis:
        """Text -> speech. Text longer than a sentence or ``synth.max_sentence_chars`` is read
        piece by piece (text/sentences.py; the model learnt clip-length sentences and loses its
        place on a page), the pieces batched, their audio joined with
        ``synth.sentence_pause_seconds`` of silence. Text that is one piece is read as a whole.

        ``seed`` seeds a generator of this call's own (the prenet's dropout stays on at
        inference), never torch's global one: two syntheses running at once each repeat their
        seed. ``cancel``: asked before every decoder step and Griffin-Lim iteration; once it
        answers True, :class:`~tacotrain.cancel.Cancelled` is raised (the caller gave up)."""
        pieces = split_sentences(text, self.language, self.cfg.synth.max_sentence_chars)
        gen = self.generator(seed)
        if len(pieces) <= 1:
            return self._synthesize_one(text, gen, cancel)
        parsed = [self.sequence(p) for p in pieces]
        t0 = time.perf_counter()
        runs = free_run(self.model, [torch.tensor(seq, dtype=torch.long) for _, seq in parsed],
                        generator=gen, cancel=cancel)
        parts = []
        for (cleaned, seq), (mel, align, by_gate) in zip(parsed, runs, strict=True):
            _check(cancel, len(align))
            wav = self.vocoder(mel.to(self.device), cancel=cancel)
            info = self._info(cleaned, seq, wav, mel.shape[1], align, by_gate, None)
            parts.append(Synthesis(cleaned, wav, mel, align, info))
        return self._join(parts, time.perf_counter() - t0)

    def generator(self, seed: int) -> torch.Generator:
        """A random generator on the model's device seeded with ``seed``. On a CPU its stream
        is the one ``torch.manual_seed(seed)`` gives, so results match earlier versions."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def _synthesize_one(self, text: str, gen: torch.Generator,
                        cancel: Callable[[], bool] | None) -> Synthesis:
        cleaned, seq = self.sequence(text)
        t0 = time.perf_counter()
        ids = torch.tensor([seq], dtype=torch.long, device=self.device)
        lengths = torch.tensor([len(seq)], device=self.device)
        out = self.model.infer(ids, lengths, generator=gen, cancel=cancel)
        frames = int(out.mel_lengths[0])
        mel = out.mel_post[0, :, :frames].float()
        _check(cancel, int(out.dec_lengths[0]))
        wav = self.vocoder(mel, cancel=cancel)
        elapsed = time.perf_counter() - t0
        dec = int(out.dec_lengths[0])
        align = out.alignments[0, :dec, : len(seq)].float().cpu()
        info = self._info(cleaned, seq, wav, frames, align, bool(out.stopped_by_gate[0]),
                          elapsed)
        return Synthesis(cleaned, wav, mel.cpu(), align, info)

    def _info(self, cleaned: str, seq: list[int], wav: np.ndarray, frames: int,
              align: torch.Tensor, stopped_by_gate: bool, elapsed: float | None
              ) -> SynthesisInfo:
        """The verdict and figures of one piece (``seq``: its symbol ids); ``elapsed`` None
        where it was synthesised in a batch (its own time is not known)."""
        v = judge_item(align, stopped_by_gate, frames, self.cfg.alignment, self.audio.frame_ms,
                       attached=attached_marks(seq, self.symbols))
        seconds = len(wav) / self.audio.sample_rate
        return SynthesisInfo(
            text=cleaned, frames=frames, seconds=round(seconds, 3),
            stopped_by_gate=v.stopped_by_gate, aligned=v.aligned, reasons=list(v.reasons),
            skipped_tokens=v.skipped_tokens, repeated_tokens=v.repeated_tokens,
            stalled_tokens=v.stalled_tokens,
            metrics={k: round(getattr(v, k), 4) for k in METRICS},
            synthesis_seconds=None if elapsed is None else round(elapsed, 3),
            rtf=round(elapsed / seconds, 4) if elapsed is not None and seconds > 0 else None)

    def _join(self, parts: list[Synthesis], elapsed: float) -> Synthesis:
        """Pieces -> one synthesis: audio and mel joined with pauses, the verdicts summed up."""
        pause_s = self.cfg.synth.sentence_pause_seconds
        silence = np.zeros(round(pause_s * self.audio.sample_rate), dtype=np.float32)
        pause_frames = round(len(silence) / self.audio.hop_length)
        floor = torch.full((self.audio.n_mels, pause_frames), math.log(self.audio.log_clamp))
        wavs: list[np.ndarray] = []
        mels: list[torch.Tensor] = []
        for k, p in enumerate(parts):
            wavs += [silence, p.wav] if k else [p.wav]
            mels += [floor, p.mel] if k else [p.mel]
        wav = np.concatenate(wavs).astype(np.float32)
        n_max = max(p.alignment.shape[1] for p in parts)
        align = torch.cat([torch.nn.functional.pad(p.alignment, (0, n_max - p.alignment.shape[1]))
                           for p in parts])
        infos = [p.info for p in parts]
        seconds = len(wav) / self.audio.sample_rate
        text = " ".join(p.text for p in parts)
        info = SynthesisInfo(
            text=text, frames=sum(i.frames for i in infos), seconds=round(seconds, 3),
            stopped_by_gate=all(i.stopped_by_gate for i in infos),
            aligned=all(i.aligned for i in infos),
            # each failing piece says which in "pieces"
            reasons=list(dict.fromkeys(r for i in infos for r in i.reasons)),
            skipped_tokens=sum(i.skipped_tokens for i in infos),
            repeated_tokens=sum(i.repeated_tokens for i in infos),
            stalled_tokens=sum(i.stalled_tokens for i in infos),
            metrics={k: min(i.metrics[k] for i in infos) for k in METRICS},  # the worst piece
            synthesis_seconds=round(elapsed, 3),
            rtf=round(elapsed / seconds, 4) if seconds > 0 else None,
            pause_seconds=pause_s, pieces=infos)
        return Synthesis(text, wav, torch.cat(mels, dim=1), align, info, parts)

    def save(self, result: Synthesis, wav_path: str | Path) -> dict[str, Any]:
        """Write ``x.wav``, ``x.json`` (the info, with each piece's) and ``x.png`` (the alignment;
        for several pieces, theirs one after another). Returns what x.json holds."""
        wav_path = Path(wav_path)
        wav_path.parent.mkdir(parents=True, exist_ok=True)
        save_wav(wav_path, result.wav, self.audio.sample_rate)
        info = result.info
        verdict = "aligned" if info.aligned else "NOT aligned: " + ", ".join(info.reasons)
        title = result.text[:60] + (f" ({len(result.pieces)} pieces)" if result.pieces else "")
        plot_alignment(result.alignment, wav_path.with_suffix(".png"), title=title,
                       info=verdict + "; " + ", ".join(f"{k} {v:.2f}"
                                                       for k, v in info.metrics.items()))
        record = info.as_dict()
        atomic_write_json(wav_path.with_suffix(".json"), record)
        return record

    def save_mel(self, result: Synthesis, path: str | Path) -> None:
        """Write ``result.mel`` (``[n_mels, T]`` float32 natural-log mel, the vocoder's input;
        for text read in pieces, the pieces' mels joined with floor-level pause frames) as a
        ``.npy`` file, atomically, e.g. to vocode it elsewhere."""
        mel = result.mel.detach().float().cpu().numpy()
        atomic_write(path, lambda fh: np.save(fh, mel, allow_pickle=False))
