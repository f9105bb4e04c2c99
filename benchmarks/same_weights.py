"""Does a change keep training bit-for-bit the same? Trains the tiny preset for a few steps with
a fixed seed on the working tree and on a git revision, and compares the weights.

    python benchmarks/same_weights.py --data PREPARED_DATA [--against HEAD~1] [--steps 12]

The revision is checked out into a temporary git worktree and run with its own source on
``PYTHONPATH`` (same Python, same packages, same machine, one thread), so any difference comes
from the code. Prints both SHA-256 digests of the weights (every tensor of the state dict, in
name order) and exits 1 when they differ. For restructurings that must not change behaviour.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import hashlib, sys, tempfile
import torch
torch.set_num_threads(1)
from tacotrain.config import load_config
from tacotrain.train.trainer import Trainer
with tempfile.TemporaryDirectory() as out:
    cfg = load_config("tiny", ["train.device=cpu", "train.threads=1",
                               f"train.max_steps={sys.argv[2]}", "train.val_interval=100000",
                               "train.batch_size=4", "train.seed=1234"])
    trainer = Trainer(cfg, sys.argv[1], out, progress=False)
    trainer.fit()
    digest = hashlib.sha256()
    for name, tensor in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    print(digest.hexdigest())
"""


def weights_digest(src: Path, data: Path, steps: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(data), str(steps)], env=env,
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="prepared data (tacotrain prepare)")
    ap.add_argument("--against", default="HEAD", help="git revision to compare with")
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    here = weights_digest(REPO / "src", args.data.resolve(), args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree),
                        args.against], check=True)
        try:
            there = weights_digest(tree / "src", args.data.resolve(), args.steps)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           check=False)
    print(f"working tree: {here}\n{args.against}: {there}")
    print("bit-equal" if here == there else "DIFFERENT")
    return 0 if here == there else 1


if __name__ == "__main__":
    with _common.machine_report():
        sys.exit(main())
