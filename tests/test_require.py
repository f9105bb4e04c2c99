"""`make test` sets TACOTRAIN_REQUIRE: there, a missing PostgreSQL, Chromium, espeak-ng or extra
fails the run instead of skipping; a bare `pytest` still skips (conftest.skip_unless_required)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

MISSING = '''
import shutil

import pytest

from conftest import skip_unless_required


def test_server():
    if shutil.which("no-such-initdb-binary") is None:
        skip_unless_required("postgres", "no-such-initdb-binary not found")


@pytest.mark.needs("browser", False, "no browser here")
def test_page():
    pass


@pytest.mark.needs("espeak", True, "espeak-ng is there")
def test_present():
    pass
'''


def _outcome(tmp_path: Path, require: str | None) -> tuple[dict[str, int], str]:
    (tmp_path / "test_missing.py").write_text(MISSING)
    env = {k: v for k, v in os.environ.items() if k != "TACOTRAIN_REQUIRE"}
    if require is not None:
        env["TACOTRAIN_REQUIRE"] = require
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "conftest", "-W", "ignore::pytest.PytestUnknownMarkWarning",
                           "-rfEs", "test_missing.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", out)}
    counts["rc"] = proc.returncode
    return counts, out


def test_missing_dependencies_skip_outside_make(tmp_path):
    counts, out = _outcome(tmp_path, None)
    assert counts == {"passed": 1, "skipped": 2, "rc": 0}, out


def test_missing_dependencies_fail_when_required(tmp_path):
    counts, out = _outcome(tmp_path, "postgres, browser")
    assert counts["rc"] == 1 and counts.get("passed") == 1, out
    assert counts.get("failed", 0) + counts.get("error", 0) == 2, out
    assert "TACOTRAIN_REQUIRE names 'postgres'" in out
    assert "TACOTRAIN_REQUIRE names 'browser'" in out


def test_only_the_named_dependencies_are_required(tmp_path):
    counts, out = _outcome(tmp_path, "browser")
    assert counts["rc"] == 1 and counts.get("skipped") == 1, out
    assert "no-such-initdb-binary not found" in out


@pytest.mark.parametrize("what", ["postgres", "browser", "espeak", "extras", "lock"])
def test_make_test_requires(what):
    """The Makefile's test target names every dependency that `make test` installs."""
    make = (TESTS.parent / "Makefile").read_text()
    names = re.search(r"^REQUIRE\s*:=\s*(\S+)$", make, re.M)
    assert names and what in names.group(1).split(",")
    test_target = make.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "TACOTRAIN_REQUIRE=$(REQUIRE) " in test_target
