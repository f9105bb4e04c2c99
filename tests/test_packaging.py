"""Packaging: torch as a range (pinned, with every other version, by requirements.lock for
`make` and CI), extras for what only some users need, no base dependency that nothing imports,
and a clear message when an extra is missing."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

from tacotrain import extras
from tacotrain.cli import main

from conftest import required

ROOT = Path(__file__).resolve().parents[1]
# distribution name -> the module the code imports
MODULES = {"pyyaml": "yaml", "psycopg2-binary": "psycopg2", "optuna-dashboard": "optuna_dashboard",
           "tensorboard": "torch.utils.tensorboard"}  # torch's writer needs the package


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


def test_torch_is_a_range_in_the_package_and_pinned_for_ci():
    torch_req = next(r for r in _project()["dependencies"] if _name(r) == "torch")
    assert "==" not in torch_req and ">=" in torch_req
    pins = (ROOT / "constraints.txt").read_text().split()
    assert "torch==2.13.0" in pins
    assert _lock()["torch"] == "2.13.0"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    """requirements.lock as {canonical name: version}; every line ``name==version``."""
    lines = [x for x in (ROOT / "requirements.lock").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    pairs = [x.split("==") for x in lines]
    assert all(len(p) == 2 and p[0] and p[1] for p in pairs), lines
    return {_canonical(n): v for n, v in pairs}


def _installed() -> dict[str, str]:
    """Every distribution in this environment but tacotrain itself, {canonical name: version},
    without a local version label (torch's ``+cpu``: the lock's ==2.13.0 takes that wheel)."""
    found = {_canonical(d.metadata["Name"]): d.version.split("+")[0]
             for d in importlib.metadata.distributions()}
    found.pop("tacotrain", None)
    return found


def test_the_install_uses_the_lock():
    make = (ROOT / "Makefile").read_text()
    stamp = next(x for x in make.splitlines() if x.startswith("$(STAMP):"))
    assert "requirements.lock" in stamp.split(":", 1)[1]  # a new lock reinstalls
    installs = [x for x in make.splitlines() if "pip install" in x and "LOCK_ENV" not in x]
    assert len(installs) == 2 and all("-c requirements.lock" in x for x in installs), installs


def test_the_lock_holds_every_dependency_of_the_dev_set():
    lock = _lock()
    project = _project()
    reqs = [*project["dependencies"], *(r for name, group in
                                        project["optional-dependencies"].items()
                                        for r in group if not r.startswith("tacotrain["))]
    assert [r for r in reqs if _canonical(_name(r)) not in lock] == []
    assert {"pip", "setuptools", "wheel"} <= lock.keys()  # make installs those too


def test_installed_versions_are_the_locked_ones():
    """Under `make test` (TACOTRAIN_REQUIRE names ``lock``) the environment is exactly the lock:
    the same distributions at the same versions. Elsewhere the environment is the user's."""
    if not required("lock"):
        pytest.skip("not under `make test`: the environment is not the one the lock describes")
    lock, installed = _lock(), _installed()
    assert {k: (installed.get(k), v) for k, v in lock.items() if installed.get(k) != v} == {}
    assert sorted(installed.keys() - lock.keys()) == []


def test_every_base_dependency_is_imported_by_the_package():
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "tacotrain").rglob("*.py"))
    for req in _project()["dependencies"]:
        module = MODULES.get(_name(req), _name(req))
        assert re.search(rf"^\s*(import|from) {re.escape(module)}\b", source, re.M), req


def test_optional_packages_are_extras_not_base_dependencies():
    project = _project()
    base = {_name(r) for r in project["dependencies"]}
    extra = project["optional-dependencies"]
    for name, pkgs in {"tune": {"optuna", "optuna-dashboard", "cmaes"}, "mlflow": {"mlflow"},
                       "serve": {"fastapi", "uvicorn"}, "postgres": {"psycopg2-binary"},
                       "asr": {"pocketsphinx"}}.items():
        assert {_name(r) for r in extra[name]} == pkgs
        assert not pkgs & base


@pytest.fixture
def without(monkeypatch):
    """Make modules look uninstalled to :func:`tacotrain.extras.require`."""
    real = importlib.util.find_spec
    hidden: set[str] = set()

    def find_spec(name, *args, **kwargs):
        return None if name in hidden else real(name, *args, **kwargs)

    monkeypatch.setattr(extras.importlib.util, "find_spec", find_spec)
    return hidden


def test_a_missing_extra_is_named_with_its_install_command(without, tmp_path, capsys):
    without.update({"fastapi", "optuna"})
    assert main(["serve", "--runs", str(tmp_path)]) == 2
    assert "pip install 'tacotrain[serve]'" in capsys.readouterr().err
    assert main(["tune", "--data", str(tmp_path), "--study", "s", "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "tacotrain tune needs optuna" in err and "tacotrain[tune]" in err
    with pytest.raises(extras.MissingExtra, match=r"track.mlflow.enabled needs mlflow"):
        without.add("mlflow")
        extras.require("mlflow", "track.mlflow.enabled", "mlflow")
    extras.require("serve", "x", "json")  # present: no error
