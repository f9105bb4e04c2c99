"""Every benchmark prints the machine it ran on beside its figures (benchmarks/_common.py)."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _common():
    spec = importlib.util.spec_from_file_location("_common", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _calls_machine_report(path: Path) -> bool:
    """True when the script's ``if __name__ == "__main__":`` block runs inside
    ``with _common.machine_report():``."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return any(isinstance(s, ast.With) and any(
                ast.unparse(i.context_expr) == "_common.machine_report()" for i in s.items)
                for s in node.body)
    return False


def test_every_benchmark_reports_its_machine():
    scripts = sorted(p for p in BENCH.glob("*.py") if p.name != "_common.py")
    assert len(scripts) >= 12
    assert [p.name for p in scripts if not _calls_machine_report(p)] == []


def test_a_script_without_the_report_is_found(tmp_path):
    bare = tmp_path / "bare.py"
    bare.write_text('def main():\n    pass\n\n\nif __name__ == "__main__":\n    main()\n')
    assert not _calls_machine_report(bare)


def test_machine_line_holds_the_values(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    common = _common()
    line = common.machine_line((7.25, 0.0, 0.0))
    model = common.cpu_model()
    info = Path("/proc/cpuinfo")
    if info.exists():
        assert f"model name\t: {model}" in info.read_text()
    assert model and line.startswith(f"machine: cpu {model}, ")
    assert f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable)" in line
    assert f"isa {torch.backends.cpu.get_cpu_capability()}," in line
    assert f"torch {torch.__version__} threads {torch.get_num_threads()}," in line
    assert "OMP_NUM_THREADS=3, OMP_WAIT_POLICY=PASSIVE" in line
    assert "load average (1 min) 7.25 before" in line
    after = float(line.rsplit(",", 1)[1].split()[0])
    assert 0 <= after < 10_000
    assert "gpu none" in line or "gpu " + torch.cuda.get_device_name(0) in line


def test_machine_report_prints_after_a_failure(capsys):
    common = _common()
    with pytest.raises(SystemExit) as exc, common.machine_report():
        sys.exit(2)
    assert exc.value.code == 2
    out = capsys.readouterr().out
    assert out.startswith("machine: cpu ") and out.count("\n") == 1
