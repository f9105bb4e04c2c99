"""``tacotrain tune``: a hyperparameter search (Optuna) whose trials are trainings.

``tune report`` and ``tune dashboard`` live in :mod:`tacotrain.cli.tune_report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tacotrain.cli import tune_report
from tacotrain.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    RAW,
    UsageError,
    sigterm_as_interrupt,
)

DESCRIPTION = (
    "Search hyperparameters with an Optuna study whose trials are `tacotrain "
    "train` processes (one fresh process per trial, run directory "
    "OUT/trials/NNNN). objective.kind in the space file chooses what a trial is "
    "worth: quality (default): the quality metric (objective.metric, default "
    "free/mcd_dtw_db; free/wer_ratio for a voice a recogniser judges) of the "
    "checkpoint the trial keeps, best.pt, chosen by the same metric, with a "
    "penalty of objective.unaligned_penalty (default 1000) when no validation "
    "passed the alignment verdict, and 3x the penalty when the guard stopped it; "
    "time_to_speak: training minutes until the verdict passes "
    "train.stop_when_aligned_rounds rounds in a row (the trial stops there; one "
    "that never does ranks behind every one that did); both: the pair, a "
    "two-objective study whose answer is a Pareto front. Samplers: tpe "
    "(multivariate, constant liar), nsga2, cmaes, random. Crashed, killed or "
    "over-budget trials are recorded FAIL with the reason; the study goes on.\n"
    "The study lives in --storage (default sqlite:///OUT/tune.db; any SQLAlchemy "
    "URL, e.g. postgresql://user@host/db for workers on several machines): "
    "running the same command again (--resume: and insist that it exists) "
    "continues it, until it holds --trials trials; finished trials are kept, a "
    "trial cut off by a kill is failed and re-queued.\n\n"
    "  tacotrain tune report --study NAME [--storage URL] [--out DIR]\n"
    "  tacotrain tune dashboard --study NAME [--storage URL] [--port 8080]"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("tune", formatter_class=RAW,
                        help="hyperparameter search (Optuna) over trainings",
                        description=DESCRIPTION)
    _add_study_options(up)
    _add_trial_options(up)
    up.set_defaults(func=cmd_tune, tune_command=None)
    usub = up.add_subparsers(dest="tune_command", metavar="[report|dashboard]")
    tune_report.add_parsers(usub)


def _add_study_options(up: argparse.ArgumentParser) -> None:
    up.add_argument("--config", default="small",
                    help="base config: preset or YAML (default: small)")
    up.add_argument("--data", type=Path, default=None, help="prepared data directory")
    up.add_argument("--space", type=Path, default=None,
                    help="search space YAML (default: the one shipped with tacotrain, "
                         "src/tacotrain/tune/default_space.yaml)")
    up.add_argument("--trials", type=int, default=None,
                    help="trials the study should hold (all workers and re-runs together)")
    up.add_argument("--study", default=None, help="study name")
    up.add_argument("--storage", default=None, metavar="URL",
                    help="Optuna storage (default: sqlite:///OUT/tune.db)")
    up.add_argument("--out", type=Path, default=None,
                    help="output directory (default: tune/STUDY)")
    up.add_argument("--resume", action="store_true",
                    help="continue the study --study in --storage; an error if there is none "
                         "(without --resume an existing study is continued too, a missing one "
                         "created)")
    up.add_argument("--timeout", type=float, default=None, metavar="HOURS",
                    help="start no new trial after this many hours")


def _add_trial_options(up: argparse.ArgumentParser) -> None:
    up.add_argument("--trial-minutes", type=float, default=None, metavar="MIN",
                    help="per-trial training time budget (train.time_budget_minutes); a trial "
                         "still running at 1.25x this + 2 min is stopped and recorded FAIL")
    up.add_argument("--workers", type=int, default=1,
                    help="worker processes on this machine sharing the study (default 1)")
    up.add_argument("--max-steps", type=int, default=None,
                    help="training steps per trial (default: train.max_steps of the config)")
    up.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the base config (repeatable)")
    up.add_argument("--mlflow", action="store_true",
                    help="track in MLflow: one parent run for the study, one nested run per "
                         "trial (same as --set track.mlflow.enabled=true)")
    up.add_argument("--pruner", choices=["median", "wilcoxon", "hyperband", "none"],
                    default=None,
                    help="override the space file's pruner (median, wilcoxon: against the "
                         "finished trials at the same training time)")
    up.add_argument("--seed", type=int, default=None,
                    help="sampler seed (default: sampler.seed of the space file); the workers "
                         "of --workers get distinct seeds from it, but separate tune commands "
                         "sharing a study (other machines) need different seeds or none")
    up.add_argument("--enqueue", action="append", default=[], metavar="K=V[,K=V]",
                    help="run a trial with these parameters first, e.g. your current settings "
                         "(repeatable; skipped if the study already has it)")
    up.add_argument("--heartbeat", type=int, default=30, metavar="SEC",
                    help="heartbeat interval of running trials (default 30 s)")
    up.add_argument("--grace", type=int, default=None, metavar="SEC",
                    help="a running trial without heartbeat for this long is failed (and "
                         "re-queued) by the next worker (default 4x --heartbeat)")
    up.add_argument("--retries", type=int, default=1,
                    help="re-queue a trial of a dead worker this many times (default 1)")
    up.add_argument("--keep-checkpoints", choices=["best", "all"], default="best",
                    help="best: keep only best.pt (or the last checkpoint) of each trial")
    up.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    up.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)


def cmd_tune(args: argparse.Namespace) -> int:
    from tacotrain.extras import require

    require("tune", "tacotrain tune", "optuna")
    if str(getattr(args, "storage", None) or "").startswith("postgresql"):
        require("postgres", "a PostgreSQL --storage", "psycopg2")
    if args.tune_command == "report":
        return tune_report.cmd_tune_report(args)
    if args.tune_command == "dashboard":
        return tune_report.cmd_tune_dashboard(args)
    from tacotrain.tune import SpaceError, TuneError, TuneOptions, Tuner

    missing = [f for f, v in (("--data", args.data), ("--study", args.study),
                              ("--trials", args.trials)) if v is None]
    if missing:
        raise UsageError(f"tacotrain tune needs {', '.join(missing)}")
    for flag, value in (("--trials", args.trials), ("--workers", args.workers)):
        if value < 1:  # the tuner says so too, but as a failure (1)
            raise UsageError(f"{flag} must be >= 1")
    opts = TuneOptions(
        config=args.config, data=args.data, study=args.study, trials=args.trials, out=args.out,
        storage=args.storage, space=args.space, overrides=args.set, max_steps=args.max_steps,
        timeout_hours=args.timeout, trial_minutes=args.trial_minutes, workers=args.workers,
        mlflow=args.mlflow, heartbeat_seconds=args.heartbeat, grace_seconds=args.grace,
        max_retries=args.retries, pruner=args.pruner, seed=args.seed,
        enqueue=_parse_enqueue(args.enqueue), keep_checkpoints=args.keep_checkpoints,
        is_worker=args.worker, worker_index=args.worker_index, resume=args.resume)
    try:
        with sigterm_as_interrupt():
            tuner = Tuner(opts)
            s = tuner.run()
    except SpaceError as exc:  # a search space is settings: a usage error, as --set's
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TuneError as exc:  # e.g. a study created with other settings
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.worker:
        return EXIT_OK
    _print_summary(s)
    return EXIT_OK


def _print_summary(s) -> None:
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(s.states.items()))
    print(f"study {s.study} ({s.storage}): {counts}; {s.trials_run_here} trial(s) run by this "
          f"command in {s.wall_seconds / 60:.1f} min")
    if s.best_number is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in s.best_params.items())
        values = ", ".join(f"{v:.4f}" for v in s.best_values)
        if s.pareto_front:
            print(f"Pareto front (time to speak vs quality): trials "
                  f"{', '.join(map(str, s.pareto_front))}")
            print(f"soonest to speak on it: trial {s.best_number}, objectives {values} "
                  f"({params})")
        else:
            print(f"best: trial {s.best_number}, objective {values} ({params})")
    print(f"trial runs: {s.out / 'trials'}")
    print(f"report: tacotrain tune report --study {s.study} --storage {s.storage} --out {s.out}")


def _parse_enqueue(items: list[str]) -> list[dict[str, object]]:
    """``--enqueue 'optim.lr=1e-3,train.batch_size=16'`` -> ``[{"optim.lr": 0.001, ...}]``."""
    from tacotrain.config import parse_override

    out = []
    for item in items:
        params: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, value = parse_override(part)
            params[key] = float(value) if isinstance(value, str) and _is_number(value) else value
        out.append(params)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
