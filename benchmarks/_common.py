"""Shared set-up for benchmarks: a prepared mini corpus in a cache directory, and the machine
line every benchmark prints beside its figures."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
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


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``/proc/cpuinfo``), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(load_before: tuple[float, float, float] | None = None) -> dict[str, object]:
    """What a figure depends on besides the code: CPU, cores, the ISA torch dispatches to,
    thread settings, GPU, and the 1-minute load average before the run and now (a load near or
    above the core count means other processes shared the machine)."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "load_before": None if load_before is None else round(load_before[0], 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def machine_line(load_before: tuple[float, float, float] | None = None) -> str:
    """:func:`machine` as one line, to be kept beside the figures in RESULTS.md."""
    m = machine(load_before)
    return (f"machine: cpu {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
            f"isa {m['isa']}, torch {m['torch']} threads {m['torch_threads']}, "
            f"OMP_NUM_THREADS={m['OMP_NUM_THREADS']}, OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}, "
            f"gpu {m['gpu']}, load average (1 min) {m['load_before']} before, "
            f"{m['load_after']} after")


@contextmanager
def machine_report() -> Iterator[None]:
    """Wrap a benchmark's run: prints :func:`machine_line` when it ends (also on failure or
    ``sys.exit``), with the load average taken when it started."""
    before = os.getloadavg()
    try:
        yield
    finally:
        print(machine_line(before), flush=True)
