"""``tacotrain export``: a checkpoint -> model.safetensors + config.json, to share."""

from __future__ import annotations

import argparse
from pathlib import Path

from tacotrain.cli.common import EXIT_OK, RAW, TRUST_HELP


def add_parser(sub: argparse._SubParsersAction) -> None:
    xp = sub.add_parser(
        "export", formatter_class=RAW, help="checkpoint -> model.safetensors + config.json",
        description="Write a model to share: OUT/model.safetensors (every tensor of the model's "
                    "state dict, unchanged, under NVIDIA/tacotron2's names, which are ours) and "
                    "OUT/config.json (model sizes, reduction factor, audio settings, text "
                    "settings: language, phonemes, cleaner and the symbol table as a list). "
                    "`tacotrain synth --model OUT` and Synthesizer.from_pretrained(OUT) load it "
                    "with safetensors and json only, unpickling nothing.\n"
                    "CKPT is a tacotrain checkpoint or an NVIDIA/tacotron2 one "
                    "(tacotron2_statedict.pt or a checkpoint of its train.py): that one gets "
                    "our `default` preset's model sizes (its shapes are checked), the default "
                    "audio settings (NVIDIA's: 22050 Hz, n_fft 1024, hop 256, 80 mels, "
                    "0-8000 Hz), English letters and NVIDIA's 148-symbol table.",
    )
    xp.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT",
                    help="tacotrain or NVIDIA/tacotron2 checkpoint")
    xp.add_argument("--out", type=Path, required=True, metavar="OUT", help="output directory")
    xp.add_argument("--force", action="store_true",
                    help="replace OUT/model.safetensors and OUT/config.json if they exist")
    xp.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    xp.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from tacotrain.infer.pretrained import CONFIG_FILE, WEIGHTS_FILE, export_model

    src = export_model(args.checkpoint, args.out, trust=args.trust_checkpoint,
                       overwrite=args.force)
    values = sum(t.numel() for t in src.state.values())
    kind = "phonemes" if src.phonemes else "letters"
    print(f"{args.out / WEIGHTS_FILE}: {len(src.state)} tensors ({values / 1e6:.2f}M values) "
          f"from {src.describe()}")
    print(f"{args.out / CONFIG_FILE}: {src.language} {kind}, {len(src.symbols)} symbols, "
          f"r = {src.r}, {src.audio.sample_rate} Hz, {src.audio.n_mels} mels")
    print(f"synthesise with: tacotrain synth --model {args.out} --text ... --out x.wav")
    return EXIT_OK
