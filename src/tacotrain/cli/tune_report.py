"""``tacotrain tune report`` (leaderboard, best config, plots) and ``tacotrain tune
dashboard`` (optuna-dashboard), the subcommands of ``tacotrain tune``; ``cmd_tune`` calls
their handlers once it has checked the 'tune' extra."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tacotrain.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    RAW,
    CommandFailed,
    UsageError,
    sigterm_as_interrupt,
)


def add_parsers(usub: argparse._SubParsersAction) -> None:
    ur = usub.add_parser(
        "report", formatter_class=RAW,
        help="leaderboard, best config YAML, plots and an HTML report",
        description="Print the leaderboard of a study (rank, trial, state, objective, aligned, "
                    "validation loss, minutes, parameters or the failure reason; with time to "
                    "speak, passed and quality for studies that record them), write "
                    "DIR/best_config.yaml (the base config with the best trial's parameters, "
                    "ready for `tacotrain train --config`; for a 2-objective study the fastest "
                    "trial on the Pareto front, and DIR/pareto/trial-NNNN.yaml for every front "
                    "trial), Optuna's optimisation history, parameter importance and "
                    "intermediate-value plots (2 objectives: the Pareto front and the "
                    "importances) to DIR/plots (PNG; HTML as well when plotly is installed), "
                    "and DIR/report.html: one page with the plots, the leaderboard, the "
                    "importances and, per trial, its alignment and mel images, its free-running "
                    "audio (copied to DIR/report-media) and the command that trains its "
                    "settings.",
    )
    ur.add_argument("--study", required=True, help="study name")
    ur.add_argument("--storage", default=None, metavar="URL",
                    help="Optuna storage (default: sqlite:///DIR/tune.db)")
    ur.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help="where to write the report (default: tune/STUDY)")
    ud = usub.add_parser(
        "dashboard", formatter_class=RAW, help="optuna-dashboard for a study's storage",
        description="Run optuna-dashboard on 127.0.0.1 for a study storage until Ctrl-C.",
    )
    ud.add_argument("--study", default=None, help="study name (for the default storage)")
    ud.add_argument("--storage", default=None, metavar="URL",
                    help="Optuna storage (default: sqlite:///tune/STUDY/tune.db)")
    ud.add_argument("--out", type=Path, default=None, help="the study's --out directory")
    ud.add_argument("--port", type=int, default=8080, help="port (default 8080; next free one)")
    ud.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for the dashboard to answer (default 60)")


def _tune_paths(args: argparse.Namespace) -> tuple[str, Path]:
    """(storage URL, output directory) of ``tune report``/``tune dashboard``: the defaults of
    ``tacotrain tune`` (OUT = tune/STUDY, storage sqlite:///OUT/tune.db)."""
    from tacotrain.tune.study import default_storage

    out = args.out or (Path("tune") / args.study if args.study else None)
    if args.storage:
        return args.storage, out or Path(".")
    if out is None:
        raise UsageError("give --storage URL (or --study / --out for the default "
                         "sqlite:///OUT/tune.db)")
    if not (out / "tune.db").exists():
        raise CommandFailed(f"no study database at {out / 'tune.db'}; give --storage URL")
    return default_storage(out), out


def cmd_tune_report(args: argparse.Namespace) -> int:
    from tacotrain.tune.report import format_leaderboard, speak_text
    from tacotrain.tune.report_page import write_report
    from tacotrain.tune.study import TuneError, load_tuned_study, redact

    if not args.study:
        raise UsageError("tacotrain tune report needs --study")
    storage, out = _tune_paths(args)
    try:
        study = load_tuned_study(args.study, storage)
    except TuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    rep = write_report(study, out, redact(storage))
    print(format_leaderboard(rep.rows))
    if rep.best_config:
        print(f"best config: {rep.best_config}")
    for path in rep.plots:
        print(f"plot: {path}")
    for note in rep.notes:
        print(f"note: {note}")
    if rep.directions > 1 and rep.front:
        print("Pareto front (trial: time to speak, quality):")
        for r in rep.front:
            quality = f"{r.quality:.4g}" if r.quality is not None else "-"
            metric = f" {r.quality_metric}" if r.quality_metric else ""
            speak = speak_text(r)
            print(f"  trial {r.number}: {speak}{' min' if r.time_to_speak is not None else ''}, "
                  f"{quality}{metric}")
        print(f"train the fastest (trial {rep.front[0].number}): "
              f"{rep.commands[rep.front[0].number]}")
    elif rep.best_number is not None:
        print(f"train the best (trial {rep.best_number}): {rep.commands[rep.best_number]}")
    print(f"report: {rep.html}")
    return EXIT_OK


def cmd_tune_dashboard(args: argparse.Namespace) -> int:
    import subprocess

    from tacotrain.extras import require

    require("tune", "tacotrain tune dashboard", "optuna_dashboard")

    from tacotrain.track.monitor import (
        HOST,
        MonitorError,
        Service,
        child_env,
        pick_port,
        stop_process,
        wait_http,
    )

    storage, out = _tune_paths(args)
    port = pick_port(args.port)
    log_path = Path(out) / "optuna-dashboard.log" if Path(out).is_dir() else Path(
        os.devnull)
    cmd = [sys.executable, "-m", "optuna_dashboard._cli", storage, "--host", HOST,
           "--port", str(port)]
    with sigterm_as_interrupt():
        with open(log_path, "ab") as fh:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=child_env())
        svc = Service("optuna-dashboard", f"http://{HOST}:{port}/", proc, log_path)
        try:
            wait_http(svc, args.timeout)
            print(f"optuna-dashboard: {svc.url}")
            print("Ctrl-C stops it.", flush=True)
            while svc.running():
                time.sleep(0.5)
            print(f"error: optuna-dashboard exited (code {proc.returncode}):\n{svc.log_tail()}",
                  file=sys.stderr)
            return EXIT_ERROR
        except MonitorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_OK
        finally:
            stop_process(proc)
            print("stopped.")
