"""``tacotrain train``: train a Tacotron 2 on prepared data."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import traceback
from pathlib import Path

from tacotrain import metrics as M
from tacotrain.cli.common import (
    EXIT_GUARD,
    EXIT_OK,
    QUIET_HELP,
    RAW,
    TRUST_HELP,
    UsageError,
    signals_request_stop,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    tp = sub.add_parser(
        "train", formatter_class=RAW, help="train a Tacotron 2 on prepared data",
        description="Train a Tacotron 2 on DATA (from `tacotrain prepare`), writing checkpoints, "
                    "TensorBoard logs (RUN/tb), events.jsonl and plots to RUN.\n"
                    "Validation (every train.val_interval steps) reports teacher-forced losses "
                    "and the alignment of free-running synthesis of a few validation sentences.\n"
                    "Several processes (DistributedDataParallel): torchrun --standalone "
                    "--nproc-per-node N -m tacotrain train ...; the global batch is "
                    "train.batch_size x N x train.grad_accum_steps, rank 0 writes RUN (README: "
                    "'Several processes and machines').",
    )
    tp.add_argument("--config", default="small",
                    help="preset name (default, small, natural, tiny) or a YAML file "
                         "(default: small)")
    tp.add_argument("--data", type=Path, required=True, help="prepared data directory")
    tp.add_argument("--out", type=Path, required=True, help="run directory (RUN)")
    tp.add_argument("--resume", action="store_true",
                    help="continue the run in RUN exactly from its latest checkpoint; newer "
                         "ones that do not load are skipped (renamed NAME.skipped, recorded "
                         "in RUN/guard.jsonl); exit 1 when none loads")
    tp.add_argument("--trust-checkpoint", action="store_true",
                    help=TRUST_HELP + " (the checkpoints of --resume and --init-from)")
    tp.add_argument("--max-steps", type=int, default=None,
                    help="stop after this many steps in total (default: train.max_steps)")
    tp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any config key, e.g. --set optim.lr=5e-4 (repeatable)")
    tp.add_argument("--init-from", type=Path, default=None, metavar="CKPT",
                    help="warm start: the model's weights from CKPT, a tacotrain checkpoint or "
                         "an NVIDIA/tacotron2 one (tacotron2_statedict.pt); embedding rows are "
                         "copied for the symbols both tables hold, every other tensor whose "
                         "name and shape match; optimiser, step and schedules start fresh. "
                         "Sets train.init_from; RUN/init_from.json records what was copied. "
                         "Not with --resume")
    tp.add_argument("--ignore-layers", nargs="+", action="extend", default=[], metavar="NAME",
                    help="with --init-from: name prefixes (e.g. embedding, "
                         "decoder.linear_projection) whose tensors keep their fresh "
                         "initialisation; sets train.ignore_layers")
    tp.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    tp.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from tacotrain.config import load_config
    from tacotrain.infer.device import resolve_device
    from tacotrain.train.ddp import process_group
    from tacotrain.train.trainer import GuardStop, Trainer

    warm = []  # --init-from / --ignore-layers are config keys; JSON is YAML, so any path parses
    if args.init_from is not None:
        warm.append(f"train.init_from={json.dumps(str(args.init_from))}")
    if args.ignore_layers:
        warm.append(f"train.ignore_layers={json.dumps(args.ignore_layers)}")
    cfg = load_config(args.config, [*args.set, *warm])
    if args.resume and cfg.train.init_from:  # the trainer says so too, but as a failure (1)
        raise UsageError("--init-from (train.init_from) does not combine with --resume: a "
                         "resumed run continues from its own checkpoint. Drop --init-from "
                         "(or --set train.init_from=null) to resume, or start a new run "
                         "(a new --out) without --resume")
    # under torchrun: one process of several (DDP); otherwise the one process
    with process_group(resolve_device(cfg.train.device), cfg.train.ddp_timeout_minutes) as dist:
        if not dist.is_main():  # one voice on the console: the other ranks only warn
            logging.getLogger().setLevel(logging.WARNING)
        trainer = Trainer(cfg, args.data, args.out, resume=args.resume,
                          progress=not args.quiet, trust=args.trust_checkpoint, dist=dist)
        try:
            with signals_request_stop(trainer.request_stop, dist.is_main()):
                result = trainer.fit(max_steps=args.max_steps)
        except BaseException as exc:
            # the traceback's frames hold the trainer (fit's ``self``): cleared, so that the
            # ``finally`` below frees it on this way out too (a stop, a crash, the guard)
            traceback.clear_frames(exc.__traceback__)
            if not isinstance(exc, GuardStop):
                raise
            if dist.is_main():  # agreed by every rank: every process exits 3
                print(f"error: {exc}", file=sys.stderr)
                print(f"resume from the last good checkpoint with: tacotrain train --resume "
                      f"--out {args.out} ... (consider a lower optim.lr)", file=sys.stderr)
            return EXIT_GUARD
        finally:
            # the DDP wrapper holds gloo's work objects: freed while the group and the
            # interpreter are alive, not after the group or at interpreter exit (SIGABRT)
            del trainer
            gc.collect()
    if not dist.is_main():
        return EXIT_OK
    _print_result(result)
    return EXIT_OK


def _print_result(result) -> None:
    v = result.last_val
    print(f"stopped at step {result.step} ({result.stop_reason}) after "
          f"{result.wall_seconds / 60:.1f} min; aligned: {str(result.aligned).lower()}")
    if v:
        print(f"validation: mel {v.get(M.VAL_MEL_POST, float('nan')):.4f}; free-running: "
              f"{result.verdict}; MCD-DTW {v.get(M.FREE_MCD_DTW, float('nan')):.2f} dB, "
              f"focus {v.get(M.FREE_FOCUS, float('nan')):.2f}, "
              f"stopped by gate {100 * v.get(M.FREE_STOPPED_BY_GATE, 0):.0f}%")
    print(f"checkpoint: {result.last_checkpoint}")
