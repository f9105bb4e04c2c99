"""``tacotrain serve``: the API on a real (tiny) checkpoint, each limit, path traversal, the
model cache bound, a clean SIGTERM, and the page in a real headless Chromium.

Every test talks HTTP (httpx) to the app running on uvicorn on 127.0.0.1, in a thread, as the
command runs it. Slow syntheses are made with :class:`Gated`: the real synthesizer, held at a
``threading.Event`` until the test lets it go.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
import uvicorn

from tacotrain.cancel import Cancelled
from tacotrain.cli import main
from tacotrain.config import ServeConfig
from tacotrain.infer.checkpoint import (
    Checkpoint,
    prune,
    read_summary,
    remove_checkpoint,
    save_checkpoint,
    sidecar_path,
)
from tacotrain.infer.pretrained import export_model
from tacotrain.infer.synth import Synthesizer
from tacotrain.serve.app import create_app
from tacotrain.serve.models import (
    NO_METADATA,
    Catalog,
    CheckpointInfo,
    ModelWorker,
    checkpoint_loader,
)
from tacotrain.serve.server import bind
from tacotrain.train.trainer import Trainer

from conftest import import_playwright, launch_chromium, tiny_cfg

STEP4, STEP2 = "run-a/checkpoints/step-0000004.pt", "run-a/checkpoints/step-0000002.pt"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> Path:
    """RUNS/run-a/checkpoints/step-0000002.pt and step-0000004.pt of a 4-step tiny training.
    A gate threshold of 0.9 lets the untrained decoder run to its 60-step cap (120 frames)
    instead of stopping after one step, so that there is audio to hear and an image to see."""
    root = tmp_path_factory.mktemp("serve") / "runs"
    cfg = tiny_cfg("train.val_interval=2", "model.max_decoder_steps=60",
                   "model.gate_threshold=0.9")
    Trainer(cfg, tiny_data, root / "run-a", progress=False).fit(max_steps=4)
    return root


@pytest.fixture(scope="module")
def synth(runs) -> Synthesizer:
    return Synthesizer.from_checkpoint(runs / STEP4, device="cpu")


class Gated:
    """The real synthesizer, whose ``synthesize`` waits until ``release`` is set."""

    def __init__(self, synth: Synthesizer) -> None:
        self.synth = synth
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.synth, name)

    def synthesize(self, text: str, seed: int = 0, cancel=None) -> Any:
        self.calls += 1
        self.started.set()
        assert self.release.wait(30), "the test never released the synthesis"
        return self.synth.synthesize(text, seed, cancel)


class HeldAtStep:
    """The real synthesizer, held inside its decoder loop at step ``at`` until the request
    gives up (its ``cancel`` answers True); records the steps a cancelled synthesis ran."""

    def __init__(self, synth: Synthesizer, at: int) -> None:
        self.synth = synth
        self.at = at
        self.held = threading.Event()
        self.stopped_at: list[int] = []
        self.finished = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.synth, name)

    def synthesize(self, text: str, seed: int = 0, cancel=None) -> Any:
        asked = 0

        def hold() -> bool:
            nonlocal asked
            asked += 1
            if asked == self.at + 1 and not self.held.is_set():
                self.held.set()
                deadline = time.monotonic() + 30
                while not cancel():
                    assert time.monotonic() < deadline, "the request never gave up"
                    time.sleep(0.01)
            return cancel()

        try:
            out = self.synth.synthesize(text, seed, hold)
        except Cancelled as exc:
            self.stopped_at.append(exc.steps)
            raise
        self.finished += 1
        return out


class Loads:
    """A loader that records which entries it was asked for and returns ``make(entry)``."""

    def __init__(self, make) -> None:
        self.make = make
        self.ids: list[str] = []

    def __call__(self, entry: CheckpointInfo) -> Any:
        self.ids.append(entry.id)
        return self.make(entry)


@contextlib.contextmanager
def serving(app) -> Iterator[httpx.Client]:
    """``app`` on uvicorn on 127.0.0.1 (a free port) in a thread; an httpx client for it."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


def app_for(runs: Path, load, warm: bool = False, **limits: Any):
    return create_app(Catalog(runs=runs), ServeConfig(**limits), load, device="cpu", warm=warm)


def post_in_thread(client: httpx.Client, body: dict[str, Any], pool: ThreadPoolExecutor):
    return pool.submit(httpx.post, f"{client.base_url}/api/synthesize", json=body, timeout=60)


def wait_until(check, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG
    return struct.unpack(">II", data[16:24])


def test_health_list_and_synthesise(runs):
    load = Loads(checkpoint_loader("cpu", None, None, trust=False))
    with serving(app_for(runs, load)) as client:
        health = client.get("/api/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "device": "cpu", "model_loaded": False,
                                 "models": []}

        listing = client.get("/api/checkpoints").json()
        assert [c["id"] for c in listing["checkpoints"]] == [STEP4, STEP2]
        assert [c["step"] for c in listing["checkpoints"]] == [4, 2]
        assert {c["language"] for c in listing["checkpoints"]} == {"en"}
        assert all(c["aligned"] is False and c["verdict"] and c["error"] is None
                   and c["elapsed_seconds"] > 0 for c in listing["checkpoints"])
        assert listing["default"] == STEP4  # no best.pt: the newest file
        assert listing["limits"]["max_text_chars"] == 500

        res = client.post("/api/synthesize", json={"text": "The old map.", "seed": 3})
        assert res.status_code == 200, res.text
        out = res.json()
        fig = out["figures"]
        assert out["checkpoint"] == STEP4 and out["language"] == "en"
        assert out["text"] == "the old map."
        assert fig["frames"] == 120 and fig["stopped_by_gate"] is False
        assert fig["aligned"] is False and fig["reasons"][0] == "no_gate_stop"
        assert fig["synthesis_seconds"] > 0 and fig["rtf"] > 0

        wav = client.get(out["urls"]["speech"])
        assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
        assert wav.content[:4] == b"RIFF" and wav.content[8:12] == b"WAVE"
        samples, rate = sf.read(io.BytesIO(wav.content))
        assert rate == out["sample_rate"] == 22050
        assert len(samples) == out["samples"] > 100 * 256
        assert abs(len(samples) - fig["seconds"] * rate) <= 0.0005 * rate
        assert png_size(client.get(out["urls"]["alignment"]).content) == (600, 400)
        assert png_size(client.get(out["urls"]["mel"]).content) == (800, 300)

        # Accept: audio/wav answers the wav itself: the same seed gives the same bytes
        direct = client.post("/api/synthesize", json={"text": "The old map.", "seed": 3},
                             headers={"Accept": "audio/wav"})
        assert direct.status_code == 200 and direct.headers["content-type"] == "audio/wav"
        assert direct.content == wav.content

        health = client.get("/api/health").json()
        assert health["model_loaded"] is True
        assert health["models"] == [{"id": STEP4, "loaded": True, "running": 0, "waiting": 0,
                                     "cancelled": 0}]
        assert load.ids == [STEP4]  # loaded once, kept
        assert client.get("/openapi.json").json()["paths"]["/api/synthesize"]["post"]
        assert client.get("/").text.count('src="/static/app.js"') == 1


def test_text_length_and_characters_refused(runs, synth):
    load = Loads(lambda entry: synth)
    with serving(app_for(runs, load, max_text_chars=20)) as client:
        res = client.post("/api/synthesize", json={"text": "x" * 21})
        assert res.status_code == 422
        assert res.json() == {"error": "the text is 21 characters long; the limit is 20 "
                                       "(serve.max_text_chars)"}
        assert load.ids == []  # refused before any model was touched

        res = client.post("/api/synthesize", json={"text": "Hello 你好 world"})
        assert res.status_code == 422
        message = res.json()["error"]
        assert "'你' '好'" in message and "outside the en symbol set" in message

        assert client.post("/api/synthesize", json={"text": "x" * 20}).status_code == 200


def test_health_answers_while_synthesising_and_queue_full_is_503(runs, synth):
    gated = Gated(synth)
    with (serving(app_for(runs, Loads(lambda e: gated), queue_size=1,
                          retry_after_seconds=7)) as client,
          ThreadPoolExecutor(2) as pool):
        first = post_in_thread(client, {"text": "We waited."}, pool)
        assert gated.started.wait(20)
        t0 = time.monotonic()
        health = client.get("/api/health")
        assert health.status_code == 200 and time.monotonic() - t0 < 2.0
        assert health.json()["models"] == [{"id": STEP4, "loaded": True, "running": 1,
                                            "waiting": 0, "cancelled": 0}]
        second = post_in_thread(client, {"text": "Two boxes."}, pool)
        wait_until(lambda: client.get("/api/health").json()["models"][0]["waiting"] == 1)

        full = client.post("/api/synthesize", json={"text": "A red boat."})
        assert full.status_code == 503
        assert full.headers["retry-after"] == "7"
        assert "serve.queue_size" in full.json()["error"]

        gated.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert gated.calls == 2  # the refused one never reached the model
        assert client.post("/api/synthesize", json={"text": "Again."}).status_code == 200


def test_timeout_is_504_and_a_queued_request_is_dropped(runs, synth):
    gated = Gated(synth)
    with (serving(app_for(runs, Loads(lambda e: gated), request_timeout_seconds=0.5))
          as client, ThreadPoolExecutor(2) as pool):
        first = post_in_thread(client, {"text": "We waited."}, pool)
        assert gated.started.wait(20)
        second = post_in_thread(client, {"text": "Two boxes."}, pool)
        for res in (first.result(), second.result()):
            assert res.status_code == 504
            assert res.json() == {"error": "the synthesis did not finish within 0.5 s "
                                           "(serve.request_timeout_seconds); try a shorter text"}
        gated.release.set()
        # the first, released after its request gave up, stops before its first decoder step
        wait_until(lambda: client.get("/api/health").json()["models"] == [
            {"id": STEP4, "loaded": True, "running": 0, "waiting": 0, "cancelled": 1}])
        assert gated.calls == 1  # the second timed out while waiting: cancelled, never run


def test_a_timed_out_synthesis_stops_and_frees_its_worker(runs, synth):
    """A request that times out stops its synthesis at the next decoder step: the worker is
    free for the next request instead of decoding for a client that has gone."""
    held = HeldAtStep(synth, at=5)
    with serving(app_for(runs, Loads(lambda e: held), request_timeout_seconds=3)) as client:
        res = client.post("/api/synthesize", json={"text": "The old map, near the river."})
        assert res.status_code == 504
        assert held.held.is_set()
        wait_until(lambda: client.get("/api/health").json()["models"][0]["cancelled"] == 1)
        assert held.stopped_at == [5]  # of the 60 steps it would have run (test_health...)
        assert client.get("/api/health").json()["models"] == [
            {"id": STEP4, "loaded": True, "running": 0, "waiting": 0, "cancelled": 1}]
        # the worker is free: the next request (not held again) is served in full
        ok = client.post("/api/synthesize", json={"text": "The old map."})
        assert ok.status_code == 200 and ok.json()["figures"]["frames"] == 120
        assert held.finished == 1


def test_griffin_lim_stops_when_cancelled(synth):
    """The vocoder asks ``cancel`` before every iteration: a request that gives up while its
    audio is being made frees the worker within one iteration, not after all of them."""
    mel = synth.synthesize("The old map.").mel
    asked = []

    def cancel() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(Cancelled) as stopped:
        synth.vocoder(mel, cancel=cancel)
    assert (stopped.value.what, stopped.value.steps) == ("Griffin-Lim", 3)
    assert len(asked) == 4 < synth.vocoder.n_iters


def test_same_seed_same_audio_with_two_models_at_once(runs, synth):
    """Each synthesis draws its prenet dropout from a generator of its own: two models
    synthesising with the same seed at once, their decoder steps interleaved one by one, give
    what each gives alone."""
    other = Synthesizer.from_checkpoint(runs / STEP2, device="cpu")
    text = "The old map, near the river."
    alone = [s.synthesize(text, seed=7).wav for s in (synth, other)]
    lockstep = threading.Barrier(2, timeout=20)

    def step_together() -> bool:
        with contextlib.suppress(threading.BrokenBarrierError):
            lockstep.wait()
        return False

    def run(s: Synthesizer) -> np.ndarray:
        try:
            return s.synthesize(text, seed=7, cancel=step_together).wav
        finally:
            lockstep.abort()  # the other one goes on alone

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(run, (synth, other)))
    assert [len(w) for w in together] == [len(w) for w in alone]
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
    assert not np.array_equal(alone[0], synth.synthesize(text, seed=8).wav)  # seed matters


def test_the_seed_draws_what_torch_manual_seed_drew_on_a_cpu(synth):
    """``tacotrain synth --seed`` gives on a CPU what it gave when it seeded torch's global
    generator."""
    _, seq = synth.sequence("The old map.")
    torch.manual_seed(3)
    before = synth.model.infer(torch.tensor([seq]), torch.tensor([len(seq)]))
    frames = int(before.mel_lengths[0])
    now = synth.synthesize("The old map.", seed=3)
    assert torch.equal(now.mel, before.mel_post[0, :, :frames])


def test_a_request_leaves_torchs_global_generator_alone(runs, synth):
    with serving(app_for(runs, Loads(lambda e: synth))) as client:
        torch.manual_seed(12345)
        state = torch.get_rng_state()
        res = client.post("/api/synthesize", json={"text": "The old map.", "seed": 3})
        assert res.status_code == 200
        assert torch.equal(torch.get_rng_state(), state)


def test_listing_reads_sidecars_and_never_loads_a_checkpoint(runs, monkeypatch):
    """The listing's figures come from each checkpoint's JSON sidecar; torch.load (the only
    way to unpickle a checkpoint) is never called, whatever the files hold."""
    folder = runs / "run-a" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "step-0000002.pt", "step-0000002.pt.json", "step-0000004.pt", "step-0000004.pt.json"]
    stored = Checkpoint.read(runs / STEP4)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the listing loaded a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)
    entries = Catalog(runs=runs).entries()
    assert [(e.id, e.step, e.language, e.error) for e in entries] == [
        (STEP4, 4, "en", None), (STEP2, 2, "en", None)]
    assert entries[0].aligned is stored.verdict["aligned"] is False
    assert entries[0].verdict == stored.verdict["description"]
    assert entries[0].elapsed_seconds == round(stored.elapsed, 1) > 0
    assert read_summary(runs / STEP4) == stored.summary()


def test_a_stale_or_missing_sidecar_means_no_metadata(runs, tmp_path):
    """A sidecar that does not describe the file beside it (size and digest) is ignored: the
    listing never claims a step the checkpoint does not hold. A checkpoint without one (as
    older versions wrote) is listed by name and still speaks."""
    served = tmp_path / "runs"
    shutil.copytree(runs / "run-a" / "checkpoints", served / "run-a" / "checkpoints")
    catalog = Catalog(runs=served)
    assert [e.step for e in catalog.entries()] == [4, 2]
    # step-4's file replaced by step-2's bytes, its sidecar left: stale
    shutil.copyfile(served / STEP2, served / STEP4)
    stale = catalog.find(STEP4)
    assert (stale.step, stale.aligned, stale.language, stale.verdict, stale.error) == (
        None, None, None, NO_METADATA, None)
    assert catalog.find(STEP2).step == 2  # untouched
    # an older checkpoint: written without a sidecar (save_checkpoint as before), loads
    old = Checkpoint.read(runs / STEP4)
    save_checkpoint(served / STEP4, old.to_payload())
    assert not sidecar_path(served / STEP4).exists()  # the stale one went with the rewrite
    assert catalog.find(STEP4).verdict == NO_METADATA
    load = Loads(checkpoint_loader("cpu", None, None, trust=False))
    with serving(create_app(catalog, ServeConfig(), load, warm=False)) as client:
        listed = client.get("/api/checkpoints").json()["checkpoints"][0]
        assert (listed["id"], listed["step"], listed["verdict"]) == (STEP4, None, NO_METADATA)
        res = client.post("/api/synthesize", json={"text": "The old map.", "seed": 3})
        assert res.status_code == 200 and load.ids == [STEP4]
        assert res.json()["figures"]["frames"] == 120
    # written again by this version: described again
    old.write(served / STEP4)
    assert catalog.find(STEP4).step == 4


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_no_answer_holds_an_absolute_path(runs, synth, tmp_path):
    """Every JSON answer (listing, health, results, each kind of error, a checkpoint that does
    not load) names files relative to the served directory; the machine's paths stay on it."""
    served = tmp_path / "runs"
    shutil.copytree(runs / "run-a" / "checkpoints", served / "run-a" / "checkpoints")
    (served / "run-b" / "checkpoints").mkdir(parents=True)
    broken = served / "run-b" / "checkpoints" / "best.pt"
    broken.write_bytes((runs / STEP4).read_bytes()[:-100])
    (served / "run-c" / "checkpoints").mkdir(parents=True)
    (served / "run-c" / "checkpoints" / "step-0000001.pt").write_bytes(b"junk")
    answers = []
    load = checkpoint_loader("cpu", None, None, trust=False)
    with serving(create_app(Catalog(runs=served), ServeConfig(max_text_chars=40), load,
                            warm=False)) as client:
        answers.append(client.get("/api/checkpoints"))
        for body in ({"text": "Hi."}, {"text": "Hi.", "checkpoint": STEP4},
                     {"text": "Hi.", "checkpoint": "nope"},
                     {"text": "Hi.", "checkpoint": "run-c/checkpoints/step-0000001.pt"},
                     {"text": "x" * 41}, {"text": "你好", "checkpoint": STEP4}, {"text": 5}):
            answers.append(client.post("/api/synthesize", json=body))
        answers.append(client.get("/api/health"))
        answers.append(client.get("/api/results/x/speech.wav"))
    assert [a.status_code for a in answers] == [200, 500, 200, 404, 500, 422, 422, 422, 200,
                                                404]
    assert answers[1].json()["error"] == (
        "run-b/checkpoints/best.pt cannot be loaded: run-b/checkpoints/best.pt: checksum "
        "mismatch (file truncated or corrupted)")
    assert answers[0].json()["root"] == "runs"
    for a in answers:
        assert str(tmp_path) not in a.text and str(tmp_path.resolve()) not in a.text, a.text
        for text in _strings(a.json()):
            assert not text.startswith("/") or text.startswith("/api/results/"), text


def test_pruning_removes_sidecars_with_their_checkpoints(runs, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(runs / "run-a" / "checkpoints", folder)
    prune(folder, keep_last=1)
    assert sorted(p.name for p in folder.iterdir()) == [
        "step-0000004.pt", "step-0000004.pt.json"]
    remove_checkpoint(folder / "step-0000004.pt")
    assert list(folder.iterdir()) == []


def test_paths_outside_the_runs_are_refused(runs, synth, tmp_path):
    served = tmp_path / "runs"
    shutil.copytree(runs / "run-a" / "checkpoints", served / "run-a" / "checkpoints")
    outside = tmp_path / "outside"
    shutil.copytree(runs / "run-a" / "checkpoints", outside / "checkpoints")
    (served / "evil").symlink_to(outside, target_is_directory=True)  # a run folder leading out
    (served / "run-b" / "checkpoints").mkdir(parents=True)
    (served / "run-b" / "checkpoints" / "best.pt").symlink_to(
        outside / "checkpoints" / "step-0000004.pt")  # a file leading out
    load = Loads(lambda entry: synth)
    with serving(app_for(served, load)) as client:
        ids = [c["id"] for c in client.get("/api/checkpoints").json()["checkpoints"]]
        assert ids == [STEP4, STEP2]
        for cid in ("../../etc/passwd", "/etc/passwd", str(served / STEP4),
                    str(outside / "checkpoints" / "step-0000004.pt"),
                    "..%2F..%2Fetc%2Fpasswd", "run-a/checkpoints/../../../outside/x.pt",
                    "evil/checkpoints/step-0000004.pt", "run-b/checkpoints/best.pt"):
            res = client.post("/api/synthesize", json={"text": "Hello.", "checkpoint": cid})
            assert res.status_code == 404, cid
            assert res.json()["error"].startswith(f"no checkpoint {cid!r} in the listing")
        for url in ("/api/results/..%2F..%2Fetc%2Fpasswd/speech.wav",
                    "/api/results/x/..%2F..%2F..%2Fetc%2Fpasswd",
                    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/static/../../etc/passwd"):
            res = client.get(url)
            assert res.status_code == 404 and b"root:" not in res.content, url
        assert load.ids == []  # nothing was loaded, let alone from outside


def test_malformed_json_and_wrong_types_are_422(runs, synth):
    with serving(app_for(runs, Loads(lambda e: synth))) as client:
        res = client.post("/api/synthesize", content=b'{"text": "Hi.",',
                          headers={"Content-Type": "application/json"})
        assert res.status_code == 422
        assert res.json()["error"].startswith("invalid request: the request body is not "
                                              "valid JSON (")
        res = client.post("/api/synthesize", json={"text": 5, "seed": "1"})
        assert res.status_code == 422
        assert res.json() == {"error": "invalid request: text: Input should be a valid string; "
                                       "seed: Input should be a valid integer"}
        res = client.post("/api/synthesize", json={"text": "Hi.", "voice": "x"})
        assert res.status_code == 422 and "voice: Extra inputs are not permitted" in res.text
        res = client.post("/api/synthesize", json=["Hi."])
        assert res.status_code == 422 and "must be a JSON object" in res.json()["error"]


def test_model_cache_keeps_at_most_max_models(runs):
    load = Loads(checkpoint_loader("cpu", None, None, trust=False))
    with serving(app_for(runs, load, max_models=1)) as client:
        for cid in (STEP4, STEP2, STEP2, STEP4):
            res = client.post("/api/synthesize", json={"text": "Hi.", "checkpoint": cid})
            assert res.status_code == 200 and res.json()["checkpoint"] == cid
        assert load.ids == [STEP4, STEP2, STEP4]  # each switch unloaded the other
        models = client.get("/api/health").json()["models"]
        assert [m["id"] for m in models] == [STEP4]
    load = Loads(checkpoint_loader("cpu", None, None, trust=False))
    with serving(app_for(runs, load, max_models=2)) as client:
        for cid in (STEP4, STEP2, STEP4):
            assert client.post("/api/synthesize",
                               json={"text": "Hi.", "checkpoint": cid}).status_code == 200
        assert load.ids == [STEP4, STEP2]
        # least recently used first
        assert [m["id"] for m in client.get("/api/health").json()["models"]] == [STEP2, STEP4]


def test_a_rewritten_checkpoint_is_loaded_anew(runs, synth, tmp_path):
    served = tmp_path / "runs"
    shutil.copytree(runs / "run-a" / "checkpoints", served / "run-a" / "checkpoints")
    load = Loads(lambda entry: synth)
    with serving(app_for(served, load)) as client:
        assert client.post("/api/synthesize", json={"text": "Hi."}).status_code == 200
        assert client.post("/api/synthesize", json={"text": "Hi."}).status_code == 200
        later = (served / STEP4).stat().st_mtime + 10
        os.utime(served / STEP4, (later, later))  # as a training writing best.pt again
        assert client.post("/api/synthesize", json={"text": "Hi."}).status_code == 200
        assert load.ids == [STEP4, STEP4]
        assert len(client.get("/api/health").json()["models"]) == 1


def test_single_checkpoint_and_export(runs, tmp_path):
    export_model(runs / STEP4, tmp_path / "voice")
    for catalog, cid, kind in ((Catalog(checkpoint=runs / STEP4), "step-0000004.pt",
                                "checkpoint"),
                               (Catalog(model=tmp_path / "voice"), "voice", "export")):
        [entry] = catalog.entries()
        assert (entry.id, entry.kind, entry.language, entry.error) == (cid, kind, "en", None)
        assert catalog.find("../" + cid) is None and catalog.find(cid) == entry
    app = create_app(Catalog(model=tmp_path / "voice"), ServeConfig(),
                     checkpoint_loader("cpu", None, None, trust=False), warm=False)
    with serving(app) as client:
        out = client.post("/api/synthesize", json={"text": "The old map.", "seed": 3}).json()
    assert out["checkpoint"] == "voice" and out["figures"]["frames"] == 120

    # a file cut short: listed by name (the listing does not read it), refused when loaded
    broken = tmp_path / "broken.pt"
    broken.write_bytes((runs / STEP4).read_bytes()[:-100])
    app = create_app(Catalog(checkpoint=broken), ServeConfig(),
                     checkpoint_loader("cpu", None, None, trust=False))
    with serving(app) as client:
        res = client.post("/api/synthesize", json={"text": "The old map."})
        assert client.get("/api/health").json()["models"][0]["loaded"] is False
    assert res.status_code == 500
    assert res.json() == {"error": "broken.pt cannot be loaded: broken.pt: checksum mismatch "
                                   "(file truncated or corrupted)"}
    # not a checkpoint at all (its header says so): listed with the error, never chosen
    other = tmp_path / "other.pt"
    other.write_bytes(b"not a checkpoint")
    app = create_app(Catalog(checkpoint=other), ServeConfig(),
                     checkpoint_loader("cpu", None, None, trust=False))
    with serving(app) as client:
        res = client.post("/api/synthesize", json={"text": "The old map."})
        assert client.get("/api/health").json()["models"] == []  # nothing to warm up
    assert res.status_code == 404
    assert res.json() == {"error": "no usable checkpoint in other.pt: not a tacotrain "
                                   "checkpoint (bad header)"}


def test_results_beyond_max_results_are_deleted(runs, synth):
    with serving(app_for(runs, Loads(lambda e: synth), max_results=2)) as client:
        urls = [client.post("/api/synthesize", json={"text": t}).json()["urls"]["speech"]
                for t in ("One.", "Two.", "Three.")]
        assert [client.get(u).status_code for u in urls] == [404, 200, 200]


def test_cli_settings_are_checked(runs, capsys):
    assert main(["serve", "--runs", str(runs), "--set", "serve.max_txt_chars=5"]) == 2
    assert "serve.max_txt_chars: unknown key" in capsys.readouterr().err
    assert main(["serve", "--runs", str(runs / "none")]) == 1
    assert f"--runs {runs / 'none'}: not found or not a directory" in capsys.readouterr().err


TOKEN = "k3y-for-the-tests-only-0123456789"


def test_a_token_is_required_on_every_request(runs, synth):
    """With a token, every path answers 401 without it, or with a wrong one; the header or
    the cookie that ``/?token=`` sets lets a request through."""
    app = create_app(Catalog(runs=runs), ServeConfig(), Loads(lambda e: synth), warm=False,
                     token=TOKEN)
    with serving(app) as client:
        for method, url in (("GET", "/"), ("GET", "/static/app.js"), ("GET", "/api/health"),
                            ("GET", "/api/checkpoints"), ("POST", "/api/synthesize"),
                            ("GET", "/openapi.json"), ("GET", "/api/results/x/speech.wav")):
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "Bearer " + TOKEN[:-1]},
                            {"Cookie": "tacotrain_serve=" + TOKEN}):
                res = client.request(method, url, json={"text": "Hi."}, headers=headers)
                assert res.status_code == 401, (url, headers)
                assert "access token" in res.json()["error"]
        assert client.get("/api/health").headers["www-authenticate"] == "Bearer"
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/health", headers=bearer).status_code == 200
        res = client.post("/api/synthesize", json={"text": "Hi."}, headers=bearer)
        assert res.status_code == 200
        assert client.get(res.json()["urls"]["speech"], headers=bearer).status_code == 200

        wrong = client.get("/?token=wrong", follow_redirects=False)
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        opened = client.get(f"/?token={TOKEN}", follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        cookie = opened.cookies["tacotrain_serve"]
        assert TOKEN not in cookie and "httponly" in opened.headers["set-cookie"].lower()
        with_cookie = {"Cookie": f"tacotrain_serve={cookie}"}
        assert client.get("/", headers=with_cookie).status_code == 200
        assert client.get("/api/checkpoints", headers=with_cookie).status_code == 200


def test_a_host_beyond_loopback_needs_a_token(runs, monkeypatch, capsys):
    monkeypatch.delenv("TACOTRAIN_SERVE_TOKEN", raising=False)
    for host in ("0.0.0.0", "192.0.2.1", "::"):
        assert main(["serve", "--runs", str(runs), "--host", host]) == 2
        err = capsys.readouterr().err
        assert f"--host {host} lets other machines connect, so it needs an access token" in err
        assert "TACOTRAIN_SERVE_TOKEN" in err
    monkeypatch.setenv("TACOTRAIN_SERVE_TOKEN", "short")
    assert main(["serve", "--runs", str(runs), "--host", "0.0.0.0"]) == 2
    assert "the access token is 5 characters long" in capsys.readouterr().err
    assert main(["serve", "--runs", str(runs), "--host", "127.0.0.1", "--token", "x"]) == 2


def test_served_on_all_interfaces_with_a_token_from_the_environment(runs):
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TACOTRAIN_SERVE_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "tacotrain.cli", "serve", "--runs",
                             str(runs), "--port", str(port), "--device", "cpu", "--host",
                             "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    url = f"http://127.0.0.1:{port}/api/health"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url).status_code == 401:
                    break
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)
        answered = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code
        opened = httpx.get(f"http://127.0.0.1:{port}/?token={TOKEN}").status_code
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (answered, opened, proc.returncode) == (200, 303, 0), err
    assert "GET /?token=REDACTED" in out.decode()  # the access log keeps the line, not the token
    assert ("access token required on every request (other machines too can connect)"
            in out.decode())
    assert TOKEN not in out.decode() + err.decode()


def test_sigterm_stops_the_server_cleanly(runs):
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tacotrain.cli", "serve", "--runs",
                             str(runs), "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err.decode()
    assert f"http://127.0.0.1:{port}/" in out.decode() and "stopped." in out.decode()


def test_page_in_a_browser(runs, tmp_path):
    sync_playwright = import_playwright()

    app = create_app(Catalog(runs=runs), ServeConfig(),
                     checkpoint_loader("cpu", None, None, trust=False), device="cpu")
    with serving(app) as client, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.set_default_timeout(60_000)
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(str(client.base_url) + "/")

            page.wait_for_function("() => document.querySelectorAll('#checkpoint option')"
                                   ".length === 2")
            assert page.locator("#checkpoint").input_value() == STEP4
            assert page.locator("#language").inner_text() == "en"
            assert "step 4" in page.locator("#checkpoint-info").inner_text()

            page.locator("#text").fill("The old map, near the river.")
            page.locator("#synthesise").click()
            page.wait_for_function(
                "() => { const a = document.getElementById('audio');"
                " return a.readyState >= 1 && a.duration > 0; }")
            page.wait_for_function(
                "() => ['alignment', 'mel'].every(id => {"
                " const i = document.getElementById(id); return i.complete && i.naturalWidth > 0;"
                " })")
            assert page.locator("#alignment").is_visible() and page.locator("#mel").is_visible()
            figures = dict(zip(page.locator("#figures th").all_inner_texts(),
                               page.locator("#figures td").all_inner_texts(), strict=True))
            assert figures["frames"] == "120"
            duration = page.eval_on_selector("#audio", "a => a.duration")
            assert float(figures["seconds of audio"]) == pytest.approx(duration, abs=0.002)
            assert figures["stopped by the gate"] == "no"
            assert figures["alignment verdict"].startswith("not aligned: no_gate_stop")
            assert figures["alignment verdict"].endswith("(attention only; content untested)")
            assert float(figures["synthesis time"].removesuffix(" s")) > 0
            assert float(figures["real-time factor"]) > 0
            assert not page.locator("#error").is_visible()
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 30_000

            page.locator("#text").fill("Hello 你好")
            page.locator("#synthesise").click()
            page.locator("#error").wait_for(state="visible")
            error = page.locator("#error").inner_text()
            assert "characters outside the en symbol set: '你' '好'" in error
            assert "Traceback" not in error
            base = str(client.base_url)
            assert all(u.startswith(base) for u in requests), requests  # nothing from elsewhere
        finally:
            browser.close()


def test_page_with_a_token_in_a_browser(runs, synth):
    """``/?token=`` once: the page loads, lists and synthesises; its address bar keeps no
    token."""
    sync_playwright = import_playwright()
    app = create_app(Catalog(runs=runs), ServeConfig(), Loads(lambda e: synth), warm=False,
                     token=TOKEN)
    with serving(app) as client, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{client.base_url}/?token={TOKEN}")
            assert page.url == f"{client.base_url}/"
            page.wait_for_function("() => document.querySelectorAll('#checkpoint option')"
                                   ".length === 2")
            page.locator("#text").fill("The old map.")
            page.locator("#synthesise").click()
            page.locator("#figures td").first.wait_for()
            assert not page.locator("#error").is_visible()
            assert page.locator("#source").inner_text() == "Serving --runs runs"
        finally:
            browser.close()


def test_closing_waits_for_a_model_load_still_running():
    """At shutdown the worker threads end before the interpreter does: one still inside
    torch when it exits aborts the process ("terminate called without an active exception")."""
    loaded = threading.Event()

    def slow_load(entry):
        time.sleep(0.5)
        loaded.set()
        return "synth"

    entry = SimpleNamespace(id="m", version=1)
    worker = ModelWorker(entry, slow_load, threads=2, queue_size=1)
    fut = worker.submit(lambda synth: synth)
    time.sleep(0.05)  # the load has started
    worker.close(wait_seconds=30)
    assert loaded.is_set() and fut.result(timeout=0) == "synth"
    assert not any(t.is_alive() for t in worker._threads)
