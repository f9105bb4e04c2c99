"""``tacotrain serve``: a web page (and JSON API) to hear a voice."""

from __future__ import annotations

import argparse
from pathlib import Path

from tacotrain.cli.common import (
    EXIT_OK,
    RAW,
    add_voice_options,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    wp = sub.add_parser(
        "serve", formatter_class=RAW, help="a web page (and JSON API) to hear a voice",
        description="Serve a page where you type text, pick a checkpoint and hear the voice, "
                    "with the alignment and mel images and the figures of each synthesis; a "
                    "JSON API under /api (OpenAPI docs at /docs). With --runs, every run's "
                    "best.pt and step checkpoints under DIR are listed (and nothing outside "
                    "it). Limits (serve.max_text_chars, serve.queue_size, "
                    "serve.concurrent_per_model, serve.request_timeout_seconds, "
                    "serve.max_models, serve.max_results) are set with --set. Ctrl-C or "
                    "SIGTERM stops it.",
    )
    source = wp.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="one checkpoint (.pt)")
    source.add_argument("--model", type=Path, metavar="DIR",
                        help="a model written by `tacotrain export`")
    source.add_argument("--runs", type=Path, metavar="DIR",
                        help="a directory of runs (e.g. demo/runs): their checkpoints")
    add_voice_options(wp)
    wp.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    wp.add_argument("--port", type=int, default=5003, help="port (default 5003)")
    wp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a serve setting, e.g. --set serve.max_text_chars=300 "
                         "(repeatable)")
    wp.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from tacotrain import serve
    from tacotrain.extras import require

    require("serve", "tacotrain serve", "fastapi", "uvicorn")

    serve.run(checkpoint=args.checkpoint, model=args.model, runs=args.runs,
              vocoder=args.vocoder, vocoder_config=args.vocoder_config,
              trust=args.trust_checkpoint, host=args.host, port=args.port, device=args.device,
              overrides=args.set, announce=lambda line: print(line, flush=True))
    print("stopped.")
    return EXIT_OK
