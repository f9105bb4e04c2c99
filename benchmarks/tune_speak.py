"""Does the tuner find a voice that speaks sooner? A time-to-speak study, then a side-by-side
check on a corpus seed the study never saw.

1. Corpus: the mini corpus (``--engine``, ``--size`` clips, seed ``--seed``), prepared as
   espeak-ng phonemes, as ``tacotrain demo`` does.
2. Study: ``tacotrain tune`` on the ``small`` preset with ``objective.kind`` time_to_speak (or
   ``both`` with ``--both``): training minutes until the verdict passes
   ``train.stop_when_aligned_rounds`` rounds in a row; the hand-set preset itself is enqueued as
   the first trial. Each trial has ``--trial-minutes``; trials slower than the fastest one that
   spoke are stopped.
3. Side by side: the preset and the fastest trial's settings, trained at the same time (one
   thread each, so both see the same machine) on a corpus of another seed
   (``--unseen-seed``), each until it speaks or ``--check-minutes`` run out.

Prints the study's leaderboard, then for both voices: minutes to speak, steps, the final
round's free-running MCD-DTW and, where a recogniser judges the voice (a natural English
corpus), its WER over the floor; and the ratio of the two times. Writes everything to
``OUT/result.json``. Not a test; prints figures.

    python benchmarks/tune_speak.py [--engine espeak] [--trials 6] [--workers 2]
        [--trial-minutes 10] [--check-minutes 15] [--seed 0] [--unseen-seed 17] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

import _common

TACOTRAIN = [sys.executable, "-m", "tacotrain.cli"]
# what the measurements of the natural and espeak-ng voices found to matter for how soon a
# voice reads (benchmarks/RESULTS.md): learning rate, guided attention, r, batch, dropout
SPACE = {
    "params": {
        "optim.lr": {"type": "float", "low": 5.0e-4, "high": 4.0e-3, "log": True},
        "loss.guided_attention.initial_weight": {"type": "float", "low": 5.0, "high": 50.0,
                                                 "log": True},
        "loss.guided_attention.sigma": {"type": "float", "low": 0.05, "high": 0.3, "log": True},
        "model.n_frames_per_step": {"type": "int", "low": 2, "high": 6},
        "train.batch_size": {"type": "categorical", "choices": [8, 12, 16, 24]},
        "model.prenet_dropout": {"type": "float", "low": 0.3, "high": 0.6},
    },
    "objective": {"kind": "time_to_speak", "metric": "free/mcd_dtw_db"},
    "pruner": {"type": "none"},
    "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 3},
}
PRESET = {"optim.lr": 0.002, "loss.guided_attention.initial_weight": 30.0,
          "loss.guided_attention.sigma": 0.08, "model.n_frames_per_step": 4,
          "train.batch_size": 16, "model.prenet_dropout": 0.5}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def corpus(out: Path, engine: str, size: int, seed: int) -> Path:
    data = out / f"data-{engine}-{size}-{seed}"
    if not (data / "manifest.json").exists():
        raw = out / f"corpus-{engine}-{size}-{seed}"
        shutil.rmtree(raw, ignore_errors=True)
        run([*TACOTRAIN, "corpus", "mini", "--engine", engine, "--size", str(size), "--seed",
             str(seed), "--out", str(raw), "--quiet"])
        run([*TACOTRAIN, "prepare", str(raw), "--out", str(data), "--set", "text.phonemes=true",
             "--quiet"])
    return data


def speaks(run_dir: Path, rounds: int) -> dict[str, object]:
    """Minutes and step at which the run's verdict passed ``rounds`` rounds in a row."""
    from tacotrain.tune.objective import time_to_speak

    result = json.loads((run_dir / "train_result.json").read_text())
    minutes, step = time_to_speak(result["history"], rounds)
    last = result["history"][-1] if result["history"] else {}
    return {"spoke": step is not None, "minutes": minutes, "step": step,
            "trained_minutes": round(result["wall_seconds"] / 60, 2), "steps": result["step"],
            "stop_reason": result["stop_reason"], "mcd_dtw_db": last.get("free/mcd_dtw_db"),
            "wer_ratio": last.get("free/wer_ratio"), "run_dir": str(run_dir)}


def side_by_side(out: Path, data: Path, settings: dict[str, dict[str, object]],
                 minutes: float, extra: list[str]) -> dict[str, dict[str, object]]:
    """Train every settings at once, one thread each, until it speaks or time runs out."""
    from tacotrain.tune.space import to_overrides

    procs = {}
    for name, params in settings.items():
        run_dir = out / "check" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = [*TACOTRAIN, "train", "--config", "small", "--data", str(data), "--out",
               str(run_dir), "--quiet", "--set", "train.stop_when_aligned=true", "--set",
               f"train.time_budget_minutes={minutes}", "--set", "train.threads=1"]
        for s in [*extra, *to_overrides(params)]:
            cmd += ["--set", s]
        log = open(out / f"check-{name}.log", "w")  # noqa: SIM115 - closed below
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, run_dir)
    results = {}
    for name, (proc, log, run_dir) in procs.items():
        proc.wait()
        log.close()
        results[name] = speaks(run_dir, 2)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="espeak", choices=["espeak", "kokoro"])
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unseen-seed", type=int, default=17)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trial-minutes", type=float, default=10.0)
    ap.add_argument("--check-minutes", type=float, default=15.0)
    ap.add_argument("--both", action="store_true", help="objective.kind both (Pareto front)")
    ap.add_argument("--out", type=Path, default=_common.CACHE / "tune-speak")
    ap.add_argument("--check-only", action="store_true",
                    help="skip the study: check the fastest trial of the study already in OUT")
    args = ap.parse_args()
    out = args.out.resolve()
    study_dir = out / "study"
    if not args.check_only:
        shutil.rmtree(study_dir, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    space = json.loads(json.dumps(SPACE))
    if args.engine == "kokoro":  # a recogniser judges a natural English voice
        space["objective"]["metric"] = "free/wer_ratio"
    if args.both:
        space["objective"]["kind"] = "both"
    (out / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    # espeak-ng's robot voice: PocketSphinx is no judge of it (its WER on the ground truth of
    # 4 validation items is 0.5-0.8 by seed, around alignment.max_floor_wer), so the verdict is
    # the same on every seed only without it
    extra = ['alignment.asr="off"'] if args.engine == "espeak" else []
    sets = [a for s in extra for a in ("--set", s)]
    data = corpus(out, args.engine, args.size, args.seed)
    t0 = time.perf_counter()
    enqueue = ",".join(f"{k}={v}" for k, v in PRESET.items())
    if not args.check_only:
        study = run([*TACOTRAIN, "tune", "--config", "small", "--data", str(data), "--study",
                     "speak", "--out", str(study_dir), "--space", str(out / "space.yaml"),
                     "--trials", str(args.trials), "--workers", str(args.workers),
                     "--trial-minutes", str(args.trial_minutes), "--enqueue", enqueue, *sets])
        print(study.stdout.strip())
    study_minutes = (time.perf_counter() - t0) / 60
    report = run([*TACOTRAIN, "tune", "report", "--study", "speak", "--out", str(study_dir)])
    print(report.stdout.strip())

    import optuna

    from tacotrain.tune.study import default_storage, load_tuned_study

    st = load_tuned_study("speak", default_storage(study_dir))
    spoke = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE
             and t.user_attrs.get("time_to_speak_minutes") is not None]
    if not spoke:
        print("no trial spoke within its budget: nothing to check")
        return 1
    best = min(spoke, key=lambda t: t.user_attrs["time_to_speak_minutes"])
    unseen = corpus(out, args.engine, args.size, args.unseen_seed)
    check = side_by_side(out, unseen, {"preset": {}, "tuned": dict(best.params)},
                         args.check_minutes, extra)
    ratio, bound = None, None
    if check["preset"]["spoke"] and check["tuned"]["spoke"]:
        ratio = check["preset"]["minutes"] / check["tuned"]["minutes"]
    elif check["tuned"]["spoke"]:  # the preset is censored at its budget: a lower bound
        bound = check["preset"]["trained_minutes"] / check["tuned"]["minutes"]
    result = {"engine": args.engine, "study_minutes": round(study_minutes, 1),
              "trials": len(st.trials), "chosen_trial": best.number,
              "chosen_params": dict(best.params),
              "chosen_minutes_in_study": best.user_attrs["time_to_speak_minutes"],
              "unseen_seed": args.unseen_seed, "check": check,
              "speed_up": None if ratio is None else round(ratio, 2),
              "speed_up_at_least": None if bound is None else round(bound, 2)}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"\nstudy: {len(st.trials)} trials in {study_minutes:.1f} min; chosen trial "
          f"{best.number} spoke in {best.user_attrs['time_to_speak_minutes']:.1f} min")
    for name, c in check.items():
        print(f"{name} on unseen seed {args.unseen_seed}: spoke {c['spoke']} at "
              f"{c['minutes']} min (step {c['step']}); MCD-DTW {c['mcd_dtw_db']}; "
              f"WER/floor {c['wer_ratio']}")
    if bound is not None:
        print(f"speed-up: at least {bound:.2f} (the preset did not speak in its "
              f"{check['preset']['trained_minutes']} min)")
    else:
        print(f"speed-up (preset minutes / tuned minutes): {result['speed_up']}")
    print(f"written: {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    with _common.machine_report():
        sys.exit(main())
