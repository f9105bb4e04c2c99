"""Synthesizer: checkpoint -> text -> mel -> wav, with alignment diagnostics for every output.

The mel the model predicts is the same log-mel that ``prepare`` computes (one function, in
``tacotrain.audio``), and the text goes through the same cleaner, so synthesis sees exactly
what training saw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tacotrain.alignment import METRICS, plot_alignment
from tacotrain.audio import load_vocoder, save_wav
from tacotrain.audio.vocoder import Vocoder
from tacotrain.config import AudioConfig, Config
from tacotrain.fsutil import atomic_write_json
from tacotrain.model import Tacotron2
from tacotrain.text import clean_text, symbols_for, text_to_sequence, unknown_characters
from tacotrain.train.checkpoint import load_checkpoint
from tacotrain.train.trainer import resolve_device
from tacotrain.verdict import judge_item


class SynthesisError(ValueError):
    pass


@dataclass
class Synthesis:
    text: str  # cleaned text the model read
    wav: np.ndarray  # float32 waveform
    mel: torch.Tensor  # [n_mels, T] log-mel
    alignment: torch.Tensor  # [T_dec, N]
    info: dict[str, Any]  # frames, seconds, stopped_by_gate, metrics, synthesis_seconds, rtf


class Synthesizer:
    def __init__(self, model: Tacotron2, cfg: Config, language: str, audio: AudioConfig,
                 device: torch.device, vocoder: Vocoder) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.language = language
        self.audio = audio
        self.device = device
        self.vocoder = vocoder
        self.symbols = symbols_for(language)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto",
                        vocoder: str | None = None) -> Synthesizer:
        dev = resolve_device(device)
        ck = load_checkpoint(path, map_location=dev)
        cfg = Config.from_saved(ck["config"])
        data = ck["data"]
        if data["symbols"] != symbols_for(data["language"]):
            raise SynthesisError(f"{path}: the checkpoint's symbol table differs from this "
                                 f"version's {data['language']} symbols; it cannot be used here")
        audio = AudioConfig.model_validate(data["audio"])
        model = Tacotron2(cfg.model, len(data["symbols"]), audio.n_mels).to(dev)
        model.load_state_dict(ck["model"])
        return cls(model, cfg, data["language"], audio, dev, load_vocoder(vocoder, audio))

    def sequence(self, text: str) -> tuple[str, list[int]]:
        """Text -> (the cleaned text the model reads, its symbol ids); unspeakable characters
        raise :class:`SynthesisError` naming them."""
        cleaned = clean_text(text, self.language)
        bad = unknown_characters(cleaned, self.language)
        if bad:
            raise SynthesisError(f"text contains characters outside the {self.language} symbol "
                                 f"set: {' '.join(repr(c) for c in bad)} in {text!r}")
        if not cleaned.strip():
            raise SynthesisError(f"nothing to say in {text!r}")
        return cleaned, text_to_sequence(cleaned, self.language)

    @torch.no_grad()
    def synthesize(self, text: str, seed: int = 0) -> Synthesis:
        cleaned, seq = self.sequence(text)
        t0 = time.perf_counter()
        torch.manual_seed(seed)  # prenet dropout stays on at inference: make it repeatable
        ids = torch.tensor([seq], dtype=torch.long, device=self.device)
        lengths = torch.tensor([len(seq)], device=self.device)
        out = self.model.infer(ids, lengths)
        frames = int(out.mel_lengths[0])
        mel = out.mel_post[0, :, :frames].float()
        wav = self.vocoder(mel)
        elapsed = time.perf_counter() - t0
        dec = int(out.dec_lengths[0])
        align = out.alignments[0, :dec, : len(seq)].float().cpu()
        v = judge_item(align, bool(out.stopped_by_gate[0]), frames, self.cfg.alignment)
        seconds = len(wav) / self.audio.sample_rate
        info = {
            "text": cleaned,
            "frames": frames,
            "seconds": round(seconds, 3),
            "stopped_by_gate": v.stopped_by_gate,
            # the verdict without ground truth: gate stop, skips, repeats, stalls, shape
            "aligned": v.aligned,
            "reasons": list(v.reasons),
            "skipped_tokens": v.skipped_tokens,
            "repeated_tokens": v.repeated_tokens,
            "stalled_tokens": v.stalled_tokens,
            **{k: round(getattr(v, k), 4) for k in METRICS},
            "synthesis_seconds": round(elapsed, 3),
            "rtf": round(elapsed / seconds, 4) if seconds > 0 else None,
        }
        return Synthesis(cleaned, wav, mel.cpu(), align, info)

    def save(self, result: Synthesis, wav_path: str | Path) -> dict[str, Any]:
        """Write ``x.wav``, ``x.json`` (the info) and ``x.png`` (the alignment)."""
        wav_path = Path(wav_path)
        wav_path.parent.mkdir(parents=True, exist_ok=True)
        save_wav(wav_path, result.wav, self.audio.sample_rate)
        info = result.info
        verdict = "aligned" if info["aligned"] else "NOT aligned: " + ", ".join(info["reasons"])
        plot_alignment(result.alignment, wav_path.with_suffix(".png"),
                       title=result.text[:60],
                       info=verdict + "; " + ", ".join(f"{k} {info[k]:.2f}" for k in METRICS))
        atomic_write_json(wav_path.with_suffix(".json"), info)
        return info
