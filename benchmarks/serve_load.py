"""A bounded load check of ``tacotrain serve`` on loopback: does a burst of requests against one
worker end in answers (200 or 503 with Retry-After), never in errors or a dead server? And do
clients that give up (504) leave the workers free for the others?

Scenario ``burst``: starts ``tacotrain serve`` as its own process on 127.0.0.1 (a free port) on
CKPT, or on a tiny checkpoint trained here first (a 20-clip espeak-ng mini corpus, the ``tiny``
preset, 4 steps), sends N requests at once with texts of mixed length (1 to 4 sentences), then
reports every status, latency figures, whether ``/api/health`` still answers 200, the server's
peak memory (VmHWM, its resident set size high-water mark) and how it stopped on SIGTERM.

Scenario ``give-up``: the app in this process (uvicorn in a thread), two workers, a request
timeout of ``--timeout`` seconds. The voice is made to read to its step cap (gate threshold
0.999, ``max_decoder_steps`` 2000: the untrained tiny voice never stops by itself), so that an
8-sentence text takes about twice the timeout and one short sentence well under it. First
two long requests at once (both answer 504): how long after the last 504 both workers are
free. Then for ``--seconds``, one impatient client keeps sending the long text (each request
times out, and it sends the next at once) while two patient clients send the short one: how
many the patient ones got (throughput). One impatient client is enough to take both workers
when a request it gave up on keeps running. Both are run twice: as served (a timed-out
request's synthesis is cancelled) and with the synthesizer ignoring the cancel (how the server
behaved before it cancelled). Not a test.

    python benchmarks/serve_load.py [--scenario burst|give-up|all] [--checkpoint CKPT]
        [--requests 20] [--seconds 20] [--timeout 8] [--set serve.KEY=V ...]

Exit status 1 when a status other than 200/503 came back (burst; give-up: other than
200/503/504), a 503 lacked Retry-After, the health check failed afterwards or the server did
not stop with exit status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

import _common

SENTENCES = ["The old map.", "We waited quietly, after dinner.",
             "She said the silver key was near the river in the morning.",
             "Two boxes and a red boat."]
LONG = " ".join(SENTENCES * 2)  # give-up: 8 sentences, 261 characters


def machine() -> str:
    """One line naming the machine the figures come from."""
    import torch

    return (f"machine: {platform.machine()} {platform.processor() or '-'}, "
            f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, torch threads "
            f"{torch.get_num_threads()}")


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
    ap.add_argument("--scenario", choices=("burst", "give-up", "all"), default="all")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="checkpoint to serve (default: train a tiny one here)")
    ap.add_argument("--requests", type=int, default=20, help="burst: requests sent at once")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="give-up: how long the mixed load runs, per mode")
    ap.add_argument("--timeout", type=float, default=8.0,
                    help="give-up: serve.request_timeout_seconds")
    ap.add_argument("--set", action="append", default=[], metavar="serve.KEY=VALUE",
                    help="burst: passed on to `tacotrain serve --set`")
    args = ap.parse_args()
    print(machine())
    ok = True
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        ckpt = args.checkpoint or tiny_checkpoint(Path(tmp))
        print(f"checkpoint: {ckpt}")
        if args.scenario in ("burst", "all"):
            ok = burst(ckpt, args.requests, args.set) and ok
        if args.scenario in ("give-up", "all"):
            ok = give_up(ckpt, args.seconds, args.timeout) and ok
    return 0 if ok else 1


def burst(ckpt: Path, requests: int, settings: list[str]) -> bool:
    """The burst scenario (see the module docstring); True when every check held."""
    print("\n== burst: requests at once against one worker ==")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tacotrain.cli", "serve", "--checkpoint", str(ckpt),
           "--port", str(port), "--device", "cpu"]
    for s in settings:
        cmd += ["--set", s]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    try:
        deadline = time.monotonic() + 120
        while True:  # up, and the model loaded (the server warms it at start-up)
            if server.poll() is not None:
                print(server.communicate()[1].decode(), file=sys.stderr)
                return False
            try:
                if httpx.get(f"{base}/api/health").json().get("model_loaded"):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                print("the server did not come up in 120 s", file=sys.stderr)
                return False
            time.sleep(0.2)
        limits = httpx.get(f"{base}/api/checkpoints").json()["limits"]
        texts = [" ".join(SENTENCES[: 1 + k % 4]) for k in range(requests)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(requests) as pool:
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
    print(f"limits: concurrent_per_model {limits['concurrent_per_model']}, queue_size "
          f"{limits['queue_size']}, request_timeout_seconds {limits['request_timeout_seconds']}")
    print(f"{requests} requests at once (1-4 sentences each), all answered in {wall:.2f} s")
    print(f"statuses in sending order: {' '.join(str(s) for s in statuses)}")
    print(f"counts: {json.dumps(counts)}; other than 200/503: {len(bad)}; "
          f"503 without Retry-After: {no_retry}")
    print(f"latency 200: {describe([t for s, t, _ in answers if s == 200])}")
    print(f"latency 503: {describe([t for s, t, _ in answers if s == 503])}")
    print(f"health afterwards: {health.status_code} {health.json()}")
    print(f"server peak RSS (VmHWM): {rss:.0f} MiB")
    print(f"server after SIGTERM: exit {server.returncode}; traceback in its log: "
          f"{'yes' if 'Traceback' in err.decode() else 'no'}")
    return not bad and not no_retry and health.status_code == 200 and server.returncode == 0


class IgnoresCancel:
    """The synthesizer as the server used it before it cancelled: ``cancel`` is dropped."""

    def __init__(self, synth: Any) -> None:
        self.synth = synth

    def __getattr__(self, name: str) -> Any:
        return getattr(self.synth, name)

    def synthesize(self, text: str, seed: int = 0, cancel: Any = None) -> Any:
        return self.synth.synthesize(text, seed)


def give_up(ckpt: Path, seconds: float, timeout: float) -> bool:
    """The give-up scenario (see the module docstring); True when every check held."""
    import torch
    import uvicorn

    from tacotrain.config import ServeConfig
    from tacotrain.infer.synth import Synthesizer
    from tacotrain.serve.app import create_app
    from tacotrain.serve.models import Catalog
    from tacotrain.serve.server import bind

    torch.set_num_threads(1)
    synth = Synthesizer.from_checkpoint(ckpt, device="cpu")
    synth.model.gate_threshold, synth.model.max_decoder_steps = 0.999, 2000  # read to the cap
    took = {}
    for text in (SENTENCES[0], LONG):
        t0 = time.perf_counter()
        synth.synthesize(text)
        took[text] = time.perf_counter() - t0
    cfg = ServeConfig(concurrent_per_model=2, queue_size=8, request_timeout_seconds=timeout)
    print("\n== give-up: clients whose requests time out (504) ==")
    print(f"synthesis alone (no images): {2 * len(SENTENCES)} sentences {took[LONG]:.2f} s, one "
          f"short sentence {took[SENTENCES[0]]:.2f} s; request timeout {timeout:g} s; "
          f"2 workers, queue 8; mixed load (1 impatient client, 2 patient) for {seconds:g} s "
          "per mode")
    ok = True
    for mode, model in (("cancelled (as served)", synth),
                        ("not cancelled (before)", IgnoresCancel(synth))):
        app = create_app(Catalog(checkpoint=ckpt), cfg, lambda entry, m=model: m, warm=False)
        sock = bind("127.0.0.1", 0)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        try:
            figures = _give_up_round(base, seconds)
        finally:
            server.should_exit = True
            thread.join(60)
            sock.close()
        bad = [s for s in figures["statuses"] if s not in (200, 503, 504)]
        ok = ok and not bad
        print(f"[{mode}] two long requests at once: {figures['first']}; workers free "
              f"{figures['free_after']:.2f} s after the last 504")
        print(f"[{mode}] in {seconds:g} s: patient requests served (200) "
              f"{figures['patient'].get(200, 0)}, patient 504 {figures['patient'].get(504, 0)}"
              f", patient 503 {figures['patient'].get(503, 0)}; impatient 504 "
              f"{figures['impatient'].get(504, 0)}, impatient 200 "
              f"{figures['impatient'].get(200, 0)}; throughput "
              f"{figures['patient'].get(200, 0) / seconds:.2f} served/s; syntheses stopped for "
              f"a request that gave up {figures['cancelled']}; other statuses: {len(bad)}")
    return ok


def _give_up_round(base: str, seconds: float) -> dict[str, Any]:
    def health() -> dict[str, Any]:
        models = httpx.get(f"{base}/api/health", timeout=30).json()["models"]
        return models[0] if models else {"running": 0, "waiting": 0, "cancelled": 0}

    url = f"{base}/api/synthesize"
    with ThreadPoolExecutor(2) as pool:
        first = list(pool.map(lambda _: httpx.post(url, json={"text": LONG}, timeout=300)
                              .status_code, range(2)))
    last = time.perf_counter()
    while (h := health())["running"] or h["waiting"]:
        time.sleep(0.01)
    free_after = time.perf_counter() - last
    cancelled_before = h["cancelled"]

    statuses: list[int] = []
    counts: dict[str, dict[int, int]] = {"patient": {}, "impatient": {}}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(kind: str, text: str) -> None:
        while time.monotonic() < end:
            status = httpx.post(url, json={"text": text}, timeout=300).status_code
            with lock:
                statuses.append(status)
                counts[kind][status] = counts[kind].get(status, 0) + 1
            if status == 503:
                time.sleep(0.1)

    with ThreadPoolExecutor(3) as pool:
        for kind, text in (("impatient", LONG), ("patient", SENTENCES[0]),
                           ("patient", SENTENCES[0])):
            pool.submit(client, kind, text)
    while (h := health())["running"] or h["waiting"]:
        time.sleep(0.05)
    return {"first": " ".join(map(str, first)), "free_after": free_after,
            "statuses": statuses + first, "patient": counts["patient"],
            "impatient": counts["impatient"], "cancelled": h["cancelled"] - cancelled_before}


if __name__ == "__main__":
    with _common.machine_report():
        sys.exit(main())
