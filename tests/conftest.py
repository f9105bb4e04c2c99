"""Shared fixtures: tiny corpora generated on the fly (no downloads, no network)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pytest
import soundfile as sf
import torch

from tacotrain.config import load_config
from tacotrain.data.prepare import prepare
from tacotrain.infer.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from tacotrain.model import Tacotron2

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def tone(seconds: float, sr: int = 22050, freq: float = 220.0, seed: int = 0,
         channels: int = 1) -> np.ndarray:
    """A voiced-sounding test signal: harmonics with vibrato, some noise, 20 ms fades."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f = freq * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.3 + 0.01 * rng.standard_normal(t.size)
    fade = min(int(0.02 * sr), t.size // 2)
    if fade:
        ramp = np.linspace(0, 1, fade)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (0.8 + 0.1 * c) for c in range(channels)], axis=1)
    return x


def write(path: Path, x: np.ndarray, sr: int = 22050) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, subtype="PCM_16")
    return path


GOOD = {
    "good-01": "Printing, in the only sense with which we are at present concerned.",
    "good-02": "Dr. Smith paid 5 dollars.",
    "good-03": "It was a quiet morning near the river.",
    "good-04": "Who moved the silver key?",
}
BAD_REASONS = ("missing_audio", "unreadable_audio", "empty_text", "unknown_characters",
               "too_long", "too_short", "silent_audio", "duplicate_id", "malformed_line")


@pytest.fixture()
def bad_corpus(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """LJSpeech corpus: 4 good clips, a 16 kHz clip, a stereo clip, one bad item per reason.

    Returns the corpus dir and {id: expected reason} for the bad items.
    """
    root = tmp_path / "corpus"
    wavs = root / "wavs"
    lines = []
    for k, (i, text) in enumerate(GOOD.items()):
        write(wavs / f"{i}.wav", tone(1.2 + 0.3 * k, seed=k))
        lines.append(f"{i}|{text}|{text}")
    write(wavs / "rate-16k.wav", tone(1.5, sr=16000, seed=7), sr=16000)
    lines.append("rate-16k|A clip recorded at sixteen kilohertz.|")
    write(wavs / "stereo.wav", tone(1.4, seed=8, channels=2))
    lines.append("stereo|A clip in two channels.|A clip in two channels.")

    expected = {}
    lines.append("bad-missing|This clip does not exist.|This clip does not exist.")
    expected["bad-missing"] = "missing_audio"
    (wavs / "bad-unreadable.wav").write_bytes(b"RIFF\x00\x00not really a wave file at all")
    lines.append("bad-unreadable|Garbage bytes.|Garbage bytes.")
    expected["bad-unreadable"] = "unreadable_audio"
    write(wavs / "bad-empty.wav", tone(1.0, seed=9))
    lines.append("bad-empty| | ")
    expected["bad-empty"] = "empty_text"
    write(wavs / "bad-chars.wav", tone(1.0, seed=10))
    lines.append("bad-chars|Hello 你好 world|Hello 你好 world")
    expected["bad-chars"] = "unknown_characters"
    write(wavs / "bad-long.wav", tone(13.0, seed=11))
    lines.append("bad-long|Far too long for training.|Far too long for training.")
    expected["bad-long"] = "too_long"
    write(wavs / "bad-short.wav", tone(0.2, seed=12))
    lines.append("bad-short|Short.|Short.")
    expected["bad-short"] = "too_short"
    write(wavs / "bad-silent.wav", np.zeros(22050, dtype=np.float32))
    lines.append("bad-silent|Nothing to hear.|Nothing to hear.")
    expected["bad-silent"] = "silent_audio"
    lines.append("good-01|The same id a second time.|The same id a second time.")
    expected["good-01#dup"] = "duplicate_id"
    lines.append("just-one-field-and-no-separator")
    expected["just-one-field-and-no-separator"] = "malformed_line"
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, expected


WORDS = ["a red boat", "the silver key", "two boxes", "near the river", "in the morning",
         "she said", "the old map", "quietly", "after dinner", "we waited"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared 14-clip corpus of test tones (the model does not care that it is not speech)."""
    root = tmp_path_factory.mktemp("tiny")
    lines = []
    for i in range(14):
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 3))
        write(root / "corpus" / "wavs" / f"t{i:02d}.wav", tone(0.6 + 0.1 * (i % 5), seed=i))
        lines.append(f"t{i:02d}|{text}.|")
    (root / "corpus" / "metadata.csv").write_text("\n".join(lines) + "\n")
    prepare(root / "corpus", root / "data", workers=1, progress=False)
    return root / "data"


def tiny_cfg(*extra: str):
    return load_config("tiny", ["train.val_interval=3", "train.log_interval=1",
                                "train.val_free_run_items=2", "train.threads=1", *extra])


CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def required(what: str) -> bool:
    """Whether ``TACOTRAIN_REQUIRE`` (comma-separated; `make test` sets it) names ``what``:
    ``postgres``, ``browser``, ``espeak``, ``extras`` (the packages of ``.[dev]``) or ``lock``."""
    return what in {w.strip() for w in os.environ.get("TACOTRAIN_REQUIRE", "").split(",")}


def skip_unless_required(what: str, reason: str) -> NoReturn:
    """Skip the test, or fail it when ``what`` is required: under `make test`, which installs
    every one of them, a missing dependency is a broken install, never a silent skip."""
    if required(what):
        pytest.fail(f"{reason} (TACOTRAIN_REQUIRE names {what!r}: `make test` installs it)",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.needs(what, available, reason)``: a skipif that fails when required."""
    for mark in item.iter_markers("needs"):
        what, available, reason = mark.args
        if not available:
            skip_unless_required(what, reason)


def launch_chromium(pw: Any) -> Any:
    """Debian's Chromium driven by Playwright, never Playwright's own download (there is no
    network to fetch it). A Chromium that is there but does not start always fails."""
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        skip_unless_required("browser", f"Chromium not found ({exe}); `make browser` installs it")
    try:
        return pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, timeout=60_000)
    except Exception as exc:
        pytest.fail(f"Chromium at {exe} did not start: {exc}", pytrace=False)


def import_playwright() -> Any:
    """``playwright.sync_api.sync_playwright`` (a dev extra)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        skip_unless_required("extras", f"playwright is not installed ({exc})")
    return sync_playwright


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until ``path`` exists while ``proc`` keeps running (its output on failure)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path} not written within {timeout:.0f} s"
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guard_log(run: Path) -> list[dict]:
    """The records of ``RUN/guard.jsonl``; empty when the guard wrote none."""
    path = run / "guard.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def checkpoint_weights(run: Path, step: int | None = None) -> dict[str, torch.Tensor]:
    """The model weights of ``run``'s checkpoint of ``step``, or of its newest step checkpoint."""
    if step is None:
        ckpt = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    else:
        ckpt = run / "checkpoints" / f"step-{step:07d}.pt"
    return load_checkpoint(ckpt)["model"]


def force_gate(model: Tacotron2, bias: list[float]) -> None:
    """Gate logits equal to ``bias`` at every step, whatever the input."""
    with torch.no_grad():
        model.decoder.gate_layer.linear_layer.weight.zero_()
        model.decoder.gate_layer.linear_layer.bias.copy_(torch.tensor(bias))
