"""Shared set-up for benchmarks: a prepared mini corpus in a cache directory."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CACHE = Path(os.environ.get("TACOTRAIN_BENCH_DIR", Path(__file__).resolve().parent / ".cache"))


def mini_corpus(lang: str = "en", size: int = 200, seed: int = 0) -> Path:
    """The espeak-ng mini corpus, generated once and reused by later benchmark runs."""
    from tacotrain.data.mini import make_mini_corpus

    root = CACHE / f"mini-{lang}-{size}-{seed}"
    if not (root / "metadata.csv").exists():
        make_mini_corpus(root, lang, size, seed)
    return root


def prepared(lang: str = "en", size: int = 200, seed: int = 0) -> Path:
    from tacotrain.data.prepare import prepare

    out = CACHE / f"data-{lang}-{size}-{seed}"
    if not (out / "manifest.json").exists():
        prepare(mini_corpus(lang, size, seed), out)
    return out
