"""``tacotrain track sync``: push to MLflow what the tracking server missed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tacotrain.cli.common import EXIT_ERROR, EXIT_OK, RAW


def add_parser(sub: argparse._SubParsersAction) -> None:
    kp = sub.add_parser("track", help="experiment tracking (MLflow) maintenance",
                        description="Experiment tracking maintenance.")
    ksub = kp.add_subparsers(dest="track_command", metavar="ACTION", required=True)
    ks = ksub.add_parser(
        "sync", formatter_class=RAW, help="push to MLflow what the tracking server missed",
        description="Push the events of RUN (RUN/events.jsonl) that its MLflow run does not have "
                    "yet: parameters (plain config names), metrics with their steps, text, audio "
                    "and the newest image of each tag. RUN/mlflow_sync.json records what was "
                    "delivered, so running it twice sends nothing twice. The run is created if "
                    "it never existed there, and ended with the status the training recorded "
                    "(else from RUN/train_result.json: FINISHED unless stopped by the guard "
                    "(FAILED) or interrupted (KILLED)).\n"
                    "Use it after a training whose tracking server was unreachable.",
    )
    ks.add_argument("run", type=Path, help="run directory (RUN)")
    ks.add_argument("--tracking-uri", default=None, metavar="URI",
                    help="MLflow tracking URI, e.g. http://127.0.0.1:5000 or sqlite:///x.db, or "
                         "'local' for RUN/mlflow.db (default: track.mlflow.tracking_uri of the "
                         "run's config.yaml)")
    ks.set_defaults(func=cmd_track_sync)


def cmd_track_sync(args: argparse.Namespace) -> int:
    from tacotrain.extras import require

    require("mlflow", "tacotrain track sync", "mlflow")
    from tacotrain.track.mlflow_sync import TrackError, sync

    try:
        rep = sync(args.run, tracking_uri=args.tracking_uri)
    except TrackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    made = "created" if rep.created else "continued"
    print(f"MLflow run {rep.run_id} ({made}) at {rep.tracking_uri}: sent {rep.events} events "
          f"({rep.metrics} metric values, {rep.params} params, {rep.files} files); "
          f"status {rep.status}")
    if rep.status_source == "none":
        print("note: the training recorded no end (killed, or still running): status KILLED",
              file=sys.stderr)
    return EXIT_OK
