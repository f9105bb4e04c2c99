"""``tacotrain serve``: a web page (and JSON API) to hear a voice."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tacotrain.cli.common import (
    EXIT_OK,
    RAW,
    UsageError,
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
                    help="address to listen on (default 127.0.0.1: this machine only); any "
                         "other (e.g. 0.0.0.0) needs an access token")
    wp.add_argument("--token", default=None,
                    help="the access token every request must carry (at least 16 "
                         "characters); better set TACOTRAIN_SERVE_TOKEN, since a command "
                         "line is visible to other users of the machine. Required with a "
                         "--host other than loopback; optional on it")
    wp.add_argument("--port", type=int, default=5003, help="port (default 5003)")
    wp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a serve setting, e.g. --set serve.max_text_chars=300 "
                         "(repeatable)")
    wp.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from tacotrain import serve
    from tacotrain.extras import require

    require("serve", "tacotrain serve", "fastapi", "uvicorn")
    from tacotrain.serve.auth import TOKEN_ENV, check_token

    token = args.token or os.environ.get(TOKEN_ENV) or None
    refused = check_token(args.host, token)
    if refused is not None:
        raise UsageError(refused)
    serve.run(token=token, checkpoint=args.checkpoint, model=args.model, runs=args.runs,
              vocoder=args.vocoder, vocoder_config=args.vocoder_config,
              trust=args.trust_checkpoint, host=args.host, port=args.port, device=args.device,
              overrides=args.set, announce=lambda line: print(line, flush=True))
    print("stopped.")
    return EXIT_OK
