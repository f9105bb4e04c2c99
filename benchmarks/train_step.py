"""Training step time and synthesis speed of the Tacotron 2 presets on this machine.

For each preset: seconds per optimiser step and mel frames per second at batch 16 (text of
80 symbols, 260 mel frames = 3.0 s per item, the middle of the mini corpus), then the real-time
factor of free-running synthesis (decoder + postnet + Griffin-Lim) of a 3 s utterance.
Random inputs: speed does not depend on the weights. Not a test; prints figures.

    python benchmarks/train_step.py [--presets small default] [--steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tacotrain.audio import GriffinLim
from tacotrain.config import AudioConfig, load_config
from tacotrain.data.loader import Collate
from tacotrain.model import Tacotron2, Tacotron2Loss

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)


def bench(preset: str, steps: int, batch: int, n_text: int, n_frames: int) -> dict:
    cfg = load_config(preset)
    audio = AudioConfig()
    model = Tacotron2(cfg.model, 39, audio.n_mels)
    crit = Tacotron2Loss(cfg.loss, cfg.model.n_frames_per_step)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(1, 39, (n_text,), generator=g),
              torch.randn(audio.n_mels, n_frames, generator=g) - 5, f"i{k}") for k in range(batch)]
    b = Collate(cfg.model.n_frames_per_step)(items)
    times = []
    for k in range(steps + 1):
        t0 = time.perf_counter()
        out = model(b.text, b.text_lengths, b.mels, b.mel_lengths)
        loss = crit(out, b, 10.0)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if k:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    step_s = sum(times) / len(times)
    model.eval()
    model.gate_threshold = 1.0 - 1e-12  # random weights: never stop early, time the full length
    r = cfg.model.n_frames_per_step
    dec_steps = -(-n_frames // r)
    vocoder = GriffinLim(audio)
    t0 = time.perf_counter()
    with torch.no_grad():
        inf = model.infer(b.text[:1], b.text_lengths[:1], max_decoder_steps=dec_steps)
        t_model = time.perf_counter() - t0
        wav = vocoder(inf.mel_post[0].float())
    t_all = time.perf_counter() - t0
    seconds = len(wav) / audio.sample_rate
    return {"preset": preset, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6,
                                                 2),
            "batch": batch, "frames_per_item": n_frames, "seconds_per_step": round(step_s, 3),
            "mel_frames_per_second": round(batch * n_frames / step_s, 1),
            "synth_audio_seconds": round(seconds, 2),
            "rtf_model": round(t_model / seconds, 3),
            "rtf_with_griffin_lim": round(t_all / seconds, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["small", "default"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for preset in args.presets:
        res = bench(preset, args.steps, args.batch, n_text=80, n_frames=260)
        res["threads"] = args.threads
        print(f"{preset}: {res['params_M']}M params, {res['seconds_per_step']:.2f} s/step at "
              f"batch {args.batch} ({res['mel_frames_per_second']:.0f} mel frames/s); synthesis "
              f"RTF {res['rtf_model']:.3f} (model) / {res['rtf_with_griffin_lim']:.3f} "
              f"(with Griffin-Lim), {args.threads} thread(s)")
        print(json.dumps(res))


if __name__ == "__main__":
    main()
