"""``tacotrain vocode``: a mel (.npy) or a wav through a vocoder, to hear the vocoder alone."""

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
    vp = sub.add_parser(
        "vocode", formatter_class=RAW, help="mel (.npy) or wav -> wav through a vocoder",
        description="Turn a log-mel into audio with a vocoder, to hear the vocoder alone. "
                    "--mel: a [n_mels, T] float32 natural-log magnitude mel saved with np.save "
                    "(the format of `synth --save-mel` and of prepared data); --wav: audio that "
                    "goes through our front-end first (resampled, then the same log-mel as "
                    "prepare computes). Audio settings: the defaults, or those of --data; a "
                    "HiFi-GAN must fit them, except that a --mel file without --data is "
                    "taken as the generator's own mel (its config.json). "
                    "Writes 16-bit PCM; prints frames, samples and seconds. Exit 1 when an "
                    "input does not load or does not fit the vocoder, 2 on a usage error.",
    )
    vp.add_argument("--mel", type=Path, default=None, help="log-mel .npy, [n_mels, T]")
    vp.add_argument("--wav", type=Path, default=None, help="audio file (any format soundfile "
                                                            "reads)")
    vp.add_argument("--out", type=Path, required=True, help="output wav")
    add_voice_options(vp, trust=False)
    vp.add_argument("--data", type=Path, default=None,
                    help="prepared data whose audio settings to use (default: the defaults)")
    vp.set_defaults(func=cmd_vocode)


def cmd_vocode(args: argparse.Namespace) -> int:
    from tacotrain.audio import (
        VocoderError,
        load_audio,
        load_vocoder,
        mel_spectrogram,
        read_mel,
        save_wav,
    )
    from tacotrain.config import AudioConfig
    from tacotrain.data.loader import PreparedData
    from tacotrain.infer.device import resolve_device

    if (args.mel is None) == (args.wav is None):
        raise UsageError("give exactly one of --mel or --wav")
    audio = PreparedData.load(args.data).settings.audio if args.data else AudioConfig()
    device = resolve_device(args.device)
    # a --mel file without --data is taken as the vocoder's own mel (its config says which)
    fit = audio if args.data or args.wav is not None else None
    vocoder = load_vocoder(args.vocoder, fit, args.vocoder_config, device=device)
    if args.mel is not None:
        mel = read_mel(args.mel, getattr(vocoder, "n_mels", audio.n_mels))  # [n_mels, T]
    else:
        samples = load_audio(args.wav, audio.sample_rate).samples
        if len(samples) <= audio.n_fft // 2:
            raise VocoderError(f"{args.wav}: {len(samples)} samples at {audio.sample_rate} Hz "
                               f"are too short for one mel frame (need more than "
                               f"{audio.n_fft // 2})")
        mel = mel_spectrogram(samples, audio)  # [n_mels, T]
    wav = vocoder(mel.to(device))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_wav(args.out, wav, vocoder.sample_rate)
    print(f"{args.out}: {mel.shape[1]} frames, {len(wav)} samples, "
          f"{len(wav) / vocoder.sample_rate:.2f} s at {vocoder.sample_rate} Hz")
    return EXIT_OK
