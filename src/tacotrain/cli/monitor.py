"""``tacotrain monitor``: TensorBoard and the MLflow UI for runs, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tacotrain.cli.common import EXIT_ERROR, EXIT_OK, RAW, sigterm_as_interrupt


def add_parser(sub: argparse._SubParsersAction) -> None:
    mo = sub.add_parser(
        "monitor", formatter_class=RAW, help="TensorBoard and the MLflow UI for runs",
        description="Start TensorBoard on RUN_OR_DIR (one run, or a directory of runs) and, for "
                    "runs that used MLflow with a local store (RUN/mlflow.db or a sqlite:/// "
                    "tracking URI), the MLflow UI; wait until they answer, print their URLs "
                    "(bound to 127.0.0.1 only) and keep them running until Ctrl-C or SIGTERM, "
                    "which stops them (SIGTERM, then SIGKILL after 10 s). A busy port is "
                    "replaced by the next free one.",
    )
    mo.add_argument("run", type=Path, metavar="RUN_OR_DIR",
                    help="a run directory, or a directory containing runs")
    mo.add_argument("--port", type=int, default=6006, help="TensorBoard port (default 6006)")
    mo.add_argument("--mlflow-port", type=int, default=5000,
                    help="MLflow UI port (default 5000; further local stores get the next ones)")
    mo.add_argument("--no-mlflow", action="store_true", help="TensorBoard only")
    mo.add_argument("--no-browser", action="store_true",
                    help="do not open the TensorBoard page in a browser (never opened without "
                         "a graphical display)")
    mo.add_argument("--timeout", type=float, default=120.0,
                    help="seconds to wait for each UI to answer (default 120)")
    mo.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    import webbrowser

    from tacotrain.track.monitor import MonitorError, start_monitor

    with sigterm_as_interrupt():
        try:
            mon = start_monitor(args.run, port=args.port, mlflow_port=args.mlflow_port,
                                mlflow=not args.no_mlflow, timeout=args.timeout)
        except MonitorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        try:
            for svc in mon.services:
                print(f"{svc.name}: {svc.url}")
            for note in mon.notes:
                print(f"note: {note}")
            graphical = sys.platform in ("darwin", "win32") or bool(
                os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
            if not args.no_browser and graphical and mon.services:
                webbrowser.open(mon.services[0].url)
            print("Ctrl-C stops them.", flush=True)
            while not mon.failed():
                time.sleep(0.5)
            for svc in mon.failed():
                print(f"error: {svc.name} exited (code {svc.process.returncode}):\n"
                      f"{svc.log_tail()}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_OK
        finally:
            mon.stop()
            print("stopped.")
