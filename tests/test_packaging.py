"""Packaging: torch as a range (pinned only for CI), extras for what only some users need, no
base dependency that nothing imports, and a clear message when an extra is missing."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

from tacotrain import extras
from tacotrain.cli import main

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
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


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
