"""Training step time, throughput and peak memory of the Tacotron 2 presets on this machine.

Shapes (batch 16, random inputs: speed does not depend on the weights):

* ``mid``: every item 80 symbols and 260 mel frames (3.0 s, the middle of the mini corpus);
  also times free-running synthesis (decoder + postnet + Griffin-Lim) of one 3 s utterance.
* ``peer``: the batch NVIDIA's reference was timed on: mel lengths from 918 frames (the
  longest) down to 204, 6,394 real frames in all, and about 5 mel frames per text symbol (the
  ratio of LJSpeech at 22,050 Hz, hop 256), so the longest text has 184 symbols.

Reported per preset: seconds per optimiser step (mean over ``--steps`` after one warm-up
step), real mel frames per second (frames that are not padding), and the step's peak memory
(the process's resident-set high-water mark, each preset measured in a fresh process; on CUDA
also ``torch.cuda.max_memory_allocated``). Not a test; prints figures and one JSON line each.

    python benchmarks/train_step.py [--shape mid|peer] [--presets small default] [--steps 2]
        [--threads 2] [--impl fast|reference]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

PEER_MEL = [918, 612, 540, 497, 455, 421, 392, 366, 340, 318, 297, 276, 272, 255, 231, 204]
FRAMES_PER_SYMBOL = 5.0


def shape(name: str, batch: int) -> tuple[list[int], list[int]]:
    """(text lengths, mel lengths) of the batch."""
    if name == "peer":
        mel = PEER_MEL[:batch]
        return [round(t / FRAMES_PER_SYMBOL) for t in mel], mel
    return [80] * batch, [260] * batch


def bench(preset: str, shape_name: str, steps: int, batch: int, impl: str | None,
          synth: bool) -> dict:
    import torch

    from tacotrain.config import AudioConfig, load_config
    from tacotrain.data.loader import Collate
    from tacotrain.model import Tacotron2, Tacotron2Loss

    cfg = load_config(preset, [f"model.decoder_impl={impl}"] if impl else None)
    audio = AudioConfig()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = Tacotron2(cfg.model, 60, audio.n_mels).to(dev)
    crit = Tacotron2Loss(cfg.loss, cfg.model.n_frames_per_step)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    texts, mels = shape(shape_name, batch)
    items = [(torch.randint(1, 60, (n,), generator=g),
              torch.randn(audio.n_mels, t, generator=g) - 5, f"i{k}")
             for k, (n, t) in enumerate(zip(texts, mels, strict=True))]
    b = Collate(cfg.model.n_frames_per_step)(items)
    b = type(b)(*(x.to(dev) if isinstance(x, torch.Tensor) else x for x in b))
    times = []
    for k in range(steps + 1):
        t0 = time.perf_counter()
        out = model(b.text, b.text_lengths, b.mels, b.mel_lengths)
        loss = crit(out, b, 10.0)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if k:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    step_s = sum(times) / len(times)
    res = {"preset": preset, "shape": shape_name, "impl": cfg.model.decoder_impl
           if hasattr(cfg.model, "decoder_impl") else "reference", "device": dev.type,
           "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
           "batch": batch, "max_frames": max(mels), "real_frames": sum(mels),
           "max_text": max(texts), "step_times_s": [round(t, 2) for t in times],
           "seconds_per_step": round(step_s, 3),
           "real_mel_frames_per_second": round(sum(mels) / step_s, 1),
           "peak_rss_GiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if dev.type == "cuda":
        res["cuda_peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if synth:
        res.update(synthesis(model, b, cfg, audio, mels[0]))
    return res


def synthesis(model, b, cfg, audio, n_frames: int) -> dict:
    import torch

    from tacotrain.audio import GriffinLim

    model.eval()
    model.gate_threshold = 1.0 - 1e-12  # random weights: never stop early, time the full length
    dec_steps = -(-n_frames // cfg.model.n_frames_per_step)
    t0 = time.perf_counter()
    with torch.no_grad():
        inf = model.infer(b.text[:1], b.text_lengths[:1], max_decoder_steps=dec_steps)
        t_model = time.perf_counter() - t0
        wav = GriffinLim(audio)(inf.mel_post[0].float().cpu())
    t_all = time.perf_counter() - t0
    seconds = len(wav) / audio.sample_rate
    return {"synth_audio_seconds": round(seconds, 2), "rtf_model": round(t_model / seconds, 3),
            "rtf_with_griffin_lim": round(t_all / seconds, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=["mid", "peer"], default="mid",
                    help="mid: 16 x 260 frames; peer: NVIDIA's timing batch (see the docstring)")
    ap.add_argument("--presets", nargs="+", default=["small", "default"])
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--impl", choices=["fast", "reference"], default=None,
                    help="model.decoder_impl (default: the config's, fast)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one preset, print JSON
    args = ap.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        res = bench(args.one, args.shape, args.steps, args.batch, args.impl,
                    synth=args.shape == "mid")
        res["threads"] = args.threads
        print(json.dumps(res))
        return
    for preset in args.presets:  # each preset in a fresh process: its own peak memory
        cmd = [sys.executable, __file__, "--one", preset, "--shape", args.shape,
               "--steps", str(args.steps), "--batch", str(args.batch),
               "--threads", str(args.threads)] + (["--impl", args.impl] if args.impl else [])
        lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        res = json.loads(next(x for x in lines.splitlines() if x.startswith("{")))
        preset_machine = next(x for x in lines.splitlines() if x.startswith("machine:"))
        print(f"{preset} ({args.shape}, {res['impl']}): {res['params_M']}M params, "
              f"{res['seconds_per_step']:.2f} s/step at batch {args.batch} "
              f"({res['real_mel_frames_per_second']:.0f} real mel frames/s), "
              f"peak RSS {res['peak_rss_GiB']:.2f} GiB, {args.threads} thread(s)")
        if "rtf_model" in res:
            print(f"  synthesis RTF {res['rtf_model']:.3f} (model) / "
                  f"{res['rtf_with_griffin_lim']:.3f} (with Griffin-Lim)")
        print(json.dumps(res))
        print(f"  {preset} process's {preset_machine}", flush=True)


if __name__ == "__main__":
    with _common.machine_report():
        main()
