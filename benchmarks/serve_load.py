"""A bounded load check of ``tacotrain serve`` on loopback: does a burst of requests against one
worker end in answers (200 or 503 with Retry-After), never in errors or a dead server?

Starts ``tacotrain serve`` as its own process on 127.0.0.1 (a free port) on CKPT, or on a tiny
checkpoint trained here first (a 20-clip espeak-ng mini corpus, the ``tiny`` preset, 4 steps),
sends N requests at once with texts of mixed length (1 to 4 sentences), then reports every
status, latency figures, whether ``/api/health`` still answers 200, the server's peak memory
(VmHWM, its resident set size high-water mark) and how it stopped on SIGTERM. Not a test.

    python benchmarks/serve_load.py [--checkpoint CKPT] [--requests 20] [--set serve.KEY=V ...]

Exit status 1 when a status other than 200/503 came back, a 503 lacked Retry-After, the health
check failed afterwards or the server did not stop with exit status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

import _common

SENTENCES = ["The old map.", "We waited quietly, after dinner.",
             "She said the silver key was near the river in the morning.",
             "Two boxes and a red boat."]


def tiny_checkpoint(work: Path) -> Path:
    from tacotrain.config import load_config
    from tacotrain.train.trainer import Trainer

    cfg = load_config("tiny", ["train.val_interval=4", "train.threads=1",
                               "model.max_decoder_steps=200"])
    data = _common.prepared("en", size=20)
    return Trainer(cfg, data, work / "run", progress=False).fit(max_steps=4).last_checkpoint


def free_port() -> int:
    from tacotrain.serve.server import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    return port


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(url: str, text: str) -> tuple[int, float, str | None]:
    t0 = time.perf_counter()
    res = httpx.post(url, json={"text": text}, timeout=300)
    return res.status_code, time.perf_counter() - t0, res.headers.get("retry-after")


def describe(latencies: list[float]) -> str:
    if not latencies:
        return "-"
    q = sorted(latencies)
    return (f"min {q[0]:.2f} s, median {statistics.median(q):.2f} s, "
            f"p95 {q[min(len(q) - 1, round(0.95 * (len(q) - 1)))]:.2f} s, max {q[-1]:.2f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="checkpoint to serve (default: train a tiny one here)")
    ap.add_argument("--requests", type=int, default=20, help="requests sent at once")
    ap.add_argument("--set", action="append", default=[], metavar="serve.KEY=VALUE",
                    help="passed on to `tacotrain serve --set`")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        ckpt = args.checkpoint or tiny_checkpoint(Path(tmp))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "tacotrain.cli", "serve", "--checkpoint", str(ckpt),
               "--port", str(port), "--device", "cpu"]
        for s in args.set:
            cmd += ["--set", s]
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        try:
            deadline = time.monotonic() + 120
            while True:  # up, and the model loaded (the server warms it at start-up)
                if server.poll() is not None:
                    print(server.communicate()[1].decode(), file=sys.stderr)
                    return 1
                try:
                    if httpx.get(f"{base}/api/health").json().get("model_loaded"):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    print("the server did not come up in 120 s", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            limits = httpx.get(f"{base}/api/checkpoints").json()["limits"]
            texts = [" ".join(SENTENCES[: 1 + k % 4]) for k in range(args.requests)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.requests) as pool:
                answers = list(pool.map(lambda t: post(f"{base}/api/synthesize", t), texts))
            wall = time.perf_counter() - t0
            health = httpx.get(f"{base}/api/health", timeout=10)
            rss = peak_rss_mib(server.pid)
            server.send_signal(signal.SIGTERM)
            out, err = server.communicate(timeout=60)
        finally:
            if server.poll() is None:
                server.kill()

    statuses = [s for s, _, _ in answers]
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    bad = [s for s in statuses if s not in (200, 503)]
    no_retry = sum(1 for s, _, r in answers if s == 503 and not r)
    print(f"checkpoint: {ckpt}")
    print(f"limits: concurrent_per_model {limits['concurrent_per_model']}, queue_size "
          f"{limits['queue_size']}, request_timeout_seconds {limits['request_timeout_seconds']}")
    print(f"{args.requests} requests at once (1-4 sentences each), all answered in {wall:.2f} s")
    print(f"statuses in sending order: {' '.join(str(s) for s in statuses)}")
    print(f"counts: {json.dumps(counts)}; other than 200/503: {len(bad)}; "
          f"503 without Retry-After: {no_retry}")
    print(f"latency 200: {describe([t for s, t, _ in answers if s == 200])}")
    print(f"latency 503: {describe([t for s, t, _ in answers if s == 503])}")
    print(f"health afterwards: {health.status_code} {health.json()}")
    print(f"server peak RSS (VmHWM): {rss:.0f} MiB")
    print(f"server after SIGTERM: exit {server.returncode}; traceback in its log: "
          f"{'yes' if 'Traceback' in err.decode() else 'no'}")
    ok = not bad and not no_retry and health.status_code == 200 and server.returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    with _common.machine_report():
        sys.exit(main())
