"""Wall time of a small tuning study with pruning on the mini corpus, and its leaderboard.

Runs ``tacotrain tune`` (tiny preset, 6 trials of 60 steps, a validation every 20 steps,
median pruning from the third trial on) with one deliberately broken trial enqueued (learning
rate 1.0, about 1000x too high, without warm-up), then ``tacotrain tune report``, and prints the
wall time of the study and the leaderboard, in which the broken trial must rank last. Not a
test; prints figures.

    python benchmarks/tune_study.py [--trials 6] [--max-steps 60] [--workers 1]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

import yaml

import _common

SPACE = {  # a narrow space for 60-step trials of the tiny preset
    "params": {
        "optim.lr": {"type": "float", "low": 3.0e-4, "high": 3.0e-3, "log": True},
        "optim.warmup_steps": {"type": "int", "low": 0, "high": 20, "step": 5},
        "loss.guided_attention.initial_weight": {"type": "float", "low": 1.0, "high": 30.0,
                                                 "log": True},
        "loss.guided_attention.sigma": {"type": "float", "low": 0.1, "high": 0.4},
        "model.prenet_dropout": {"type": "float", "low": 0.3, "high": 0.6},
        "loss.gate_pos_weight": {"type": "float", "low": 1.0, "high": 20.0, "log": True},
    },
    "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
    "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 5},
}
BROKEN = ("optim.lr=1.0,optim.warmup_steps=0,loss.guided_attention.initial_weight=10.0,"
          "loss.guided_attention.sigma=0.2,model.prenet_dropout=0.5,loss.gate_pos_weight=5.0")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    data = _common.prepared("en", 200, 0)
    out = _common.CACHE / "tune-study"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    tacotrain = [sys.executable, "-m", "tacotrain.cli"]
    cmd = [*tacotrain, "tune", "--config", "tiny", "--data", str(data), "--study", "bench",
           "--out", str(out), "--space", str(out / "space.yaml"), "--trials", str(args.trials),
           "--max-steps", str(args.max_steps), "--workers", str(args.workers),
           "--set", "train.val_interval=20", "--set", "track.tensorboard=false",
           # trial 2 (after two normal ones, so the pruner has a median to compare with)
           "--enqueue", "optim.lr=1.0e-3", "--enqueue", "optim.lr=5.0e-4", "--enqueue", BROKEN]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        print(done.stdout + done.stderr, file=sys.stderr)
        return done.returncode
    print(done.stdout.strip())
    print(f"\nwall time of the {args.trials}-trial study: {wall:.1f} s ({wall / 60:.2f} min), "
          f"{args.workers} worker(s), {args.max_steps} steps per trial\n")
    report = subprocess.run([*tacotrain, "tune", "report", "--study", "bench", "--out", str(out)],
                            capture_output=True, text=True)
    print(report.stdout.strip())
    return report.returncode


if __name__ == "__main__":
    with _common.machine_report():
        sys.exit(main())
