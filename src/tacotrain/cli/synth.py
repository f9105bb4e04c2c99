"""``tacotrain synth``: speech from a checkpoint or an exported model."""

from __future__ import annotations

import argparse
from pathlib import Path

from tacotrain.cli.common import (
    EXIT_OK,
    RAW,
    UsageError,
    add_voice_options,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    yp = sub.add_parser(
        "synth", formatter_class=RAW, help="synthesise speech from a checkpoint",
        description="Synthesise TEXT with a trained checkpoint (Griffin-Lim, or a HiFi-GAN "
                    "generator with --vocoder hifigan:PATH). "
                    "Next to each wav: x.json (frames, seconds, stopped_by_gate, the alignment "
                    "verdict without ground truth: aligned, reasons, skipped/repeated/stalled "
                    "tokens, diagonality, focus, coverage, monotonicity; synthesis_seconds, "
                    "rtf) and x.png (the alignment). The decoder step limit scales with the "
                    "text length. Whether the voice says the sentence needs ground truth: "
                    "see `tacotrain eval`.",
    )
    source = yp.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint (.pt)")
    source.add_argument("--model", type=Path, metavar="DIR",
                        help="a model written by `tacotrain export` (model.safetensors and "
                             "config.json; loaded without unpickling)")
    yp.add_argument("--text", default=None, help="the sentence to speak")
    yp.add_argument("--text-file", type=Path, default=None,
                    help="one sentence per line; --out is then a directory (0001.wav, ...)")
    yp.add_argument("--out", type=Path, required=True, help="output wav (or directory)")
    add_voice_options(yp)
    yp.add_argument("--save-mel", type=Path, default=None, metavar="PATH.npy",
                    help="also save the [n_mels, T] float32 log-mel the vocoder was given (text "
                         "read in pieces: the pieces' mels joined with floor-level pause frames); "
                         "with --text-file a directory (0001.npy, ...)")
    yp.add_argument("--seed", type=int, default=0, help="seed for the prenet's dropout")
    yp.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    from tacotrain.infer.synth import Synthesizer

    if (args.text is None) == (args.text_file is None):
        raise UsageError("give exactly one of --text or --text-file")
    if args.model is not None:  # an export: safetensors + json, nothing unpickled
        synth = Synthesizer.from_pretrained(args.model, device=args.device, vocoder=args.vocoder,
                                            vocoder_config=args.vocoder_config)
    else:
        synth = Synthesizer.from_checkpoint(args.checkpoint, device=args.device,
                                            vocoder=args.vocoder,
                                            vocoder_config=args.vocoder_config,
                                            trust=args.trust_checkpoint)
    for text, path, mel_path in _jobs(args):
        result = synth.synthesize(text, seed=args.seed)
        info = synth.save(result, path)
        if mel_path is not None:
            synth.save_mel(result, mel_path)
        verdict = "aligned" if info["aligned"] else "not aligned: " + ", ".join(info["reasons"])
        print(f"{path}: {info['seconds']:.2f} s, {verdict} (attention only, content untested: "
              f"tacotrain eval --heldout judges recorded sentences); stopped by gate: "
              f"{str(info['stopped_by_gate']).lower()}, skipped tokens {info['skipped_tokens']}, "
              f"focus {info['focus']:.2f}, rtf {info['rtf']}")
    return EXIT_OK


def _jobs(args: argparse.Namespace) -> list[tuple[str, Path, Path | None]]:
    """(text, wav path, mel path or None) for --text, or for each line of --text-file."""
    if args.text is not None:
        return [(args.text, args.out, args.save_mel)]
    lines = [ln.strip() for ln in args.text_file.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    mels = args.save_mel  # a directory here, as --out is
    return [(ln, args.out / f"{k:04d}.wav", None if mels is None else mels / f"{k:04d}.npy")
            for k, ln in enumerate(lines, start=1)]
