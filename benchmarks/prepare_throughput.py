"""Prepare throughput: clips per second of `tacotrain prepare` on the mini corpus.

Runs a cold prepare (every clip read, trimmed, turned into a mel) with 1 and with 2 worker
processes, then a warm re-run that reuses the cache. Prints one line per case and a JSON summary.

    python benchmarks/prepare_throughput.py [--size 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from tacotrain.data.prepare import prepare

import _common
from _common import mini_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=200)
    args = ap.parse_args()
    corpus = mini_corpus("en", args.size)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}"
            t0 = time.perf_counter()
            rep = prepare(corpus, out, workers=workers, progress=False).report
            dt = time.perf_counter() - t0
            n = rep["summary"]["kept"] + rep["summary"]["rejected"]
            audio_s = rep["summary"]["seconds_kept"]
            results[f"cold_workers_{workers}"] = {
                "clips": n, "seconds": round(dt, 2), "clips_per_second": round(n / dt, 1),
                "audio_seconds_per_second": round(audio_s / dt, 1)}
            print(f"cold, {workers} worker(s): {n} clips in {dt:.2f} s = {n / dt:.1f} clips/s "
                  f"({audio_s / dt:.0f} s of audio per second)")
        t0 = time.perf_counter()
        rep = prepare(corpus, Path(tmp) / "w2", workers=2, progress=False).report
        dt = time.perf_counter() - t0
        n = rep["summary"]["kept"]
        results["warm_cache"] = {"clips": n, "seconds": round(dt, 2),
                                 "clips_per_second": round(n / dt, 1)}
        print(f"warm (cache reused): {n} clips in {dt:.2f} s = {n / dt:.1f} clips/s")
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    with _common.machine_report():
        main()
