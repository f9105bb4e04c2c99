"""The import graph of the package: no cycle between its parts, and the layers hold.

A part is a subpackage (``tacotrain/train``) or a top-level module (``tacotrain/config.py``).
Every import counts, the ones inside functions too. Judging (``judge``: alignment metrics, the
verdict, free-running synthesis, the recogniser) and inference (``infer``: checkpoints, device,
synthesis, pretrained weights) never import training; ``evaluate`` and ``serve`` use inference
and judging, never training; training may import both.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tacotrain

ROOT = Path(tacotrain.__file__).parent
FACADE = {"tacotrain", "__main__", "cli"}  # the package's entry points import everything
ABOVE_TRAINING = {"train", "tune", "demo", "cli", "serve", "evaluate", "__main__"}
NEVER = {
    "judge": ABOVE_TRAINING | {"infer"},
    "infer": ABOVE_TRAINING,
    "model": ABOVE_TRAINING | {"judge", "infer"},
    "evaluate": {"train", "tune", "demo", "cli", "serve"},
    "serve": {"train", "tune", "demo", "cli", "evaluate"},
    "corpus_build": ABOVE_TRAINING | {"infer", "model"},  # makes corpora: no model needed
}


def part(module: str) -> str:
    """``tacotrain.train.trainer`` -> ``train``; ``tacotrain`` -> ``tacotrain``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else pieces[0]


def graph() -> dict[str, set[str]]:
    """Part -> the parts it imports (itself excluded)."""
    edges: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = name if rel.name == "__init__" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] \
                    if node.level else []
                targets.add(".".join([*base, *([node.module] if node.module else [])]))
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        src = part(name)
        edges.setdefault(src, set()).update(
            part(t) for t in targets if t.split(".")[0] == "tacotrain" and part(t) != src)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_cycle_between_parts():
    edges = {k: v - FACADE for k, v in graph().items() if k not in FACADE}
    assert cycles(edges) == []


def test_lower_layers_never_import_higher_ones():
    edges = graph()
    wrong = {src: sorted(edges.get(src, set()) & banned) for src, banned in NEVER.items()}
    assert {k: v for k, v in wrong.items() if v} == {}
    assert {"judge", "infer"} <= set(edges)  # the layers exist (an empty check proves nothing)


def test_the_checker_sees_a_cycle_and_a_wrong_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert part("tacotrain.train.trainer") == "train" and part("tacotrain") == "tacotrain"
