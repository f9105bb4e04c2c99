"""Notifications against a real (fake) Telegram Bot API server on 127.0.0.1.

The predecessor messaged every few steps and committed its bot token, so these tests pin the
opposite: a storm stays within the rate limit and ends in one digest, secrets never reach a log
line or an exception, a rejected token switches the sink off after one error, and a dead network
never blocks or breaks the caller. Time-based rules run on a fake clock (no sleeping).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from tacotrain.notify import (
    CHAT_ID_ENV,
    TOKEN_ENV,
    WEBHOOK_ENV,
    Event,
    Notifier,
    NotifyConfig,
    Policy,
    Severity,
    TelegramClient,
    TelegramError,
    format_message,
)

from conftest import free_port

TOKEN = "123456789:AAE-very-secret-token-value"
CHAT_ID = "-100987654321"
ENV = {TOKEN_ENV: TOKEN, CHAT_ID_ENV: CHAT_ID}
OFF_LINE = (
    "Telegram notifications off: TACOTRAIN_TELEGRAM_TOKEN / TACOTRAIN_TELEGRAM_CHAT_ID not set"
)


class FakeClock:
    """Monotonic clock the test advances by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeBotAPI:
    """A ThreadingHTTPServer answering like the Bot API, recording every request.

    ``mode`` is the standing answer ("ok", "500", "401", "429"); ``script`` holds one-shot modes
    used first, in order, so "500 then ok" is ``script = ["500"]``.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.mode = "ok"
        self.script: list[str] = []
        self.retry_after = 0
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # the default writes the path (with the token) to stderr

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with api.lock:
                    mode = api.script.pop(0) if api.script else api.mode
                    status, payload = api.answer(mode)
                    api.requests.append({
                        "path": self.path,
                        "method": self.path.rsplit("/", 1)[-1],
                        "content_type": self.headers.get("Content-Type", ""),
                        "body": body,
                        "status": status,
                    })
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def answer(self, mode: str) -> tuple[int, dict[str, Any]]:
        if mode == "ok":
            return 200, {"ok": True, "result": {"message_id": len(self.requests) + 1}}
        if mode == "500":
            return 500, {"ok": False, "error_code": 500, "description": "Internal Server Error"}
        if mode == "401":
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if mode == "429":
            return 429, {"ok": False, "error_code": 429,
                         "description": f"Too Many Requests: retry after {self.retry_after}",
                         "parameters": {"retry_after": self.retry_after}}
        raise AssertionError(mode)

    def delivered(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        """Requests of ``method`` that were answered 200."""
        with self.lock:
            return [r for r in self.requests if r["method"] == method and r["status"] == 200]

    def texts(self) -> list[str]:
        return [json.loads(r["body"])["text"] for r in self.delivered("sendMessage")]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def api() -> Iterator[FakeBotAPI]:
    server = FakeBotAPI()
    yield server
    server.close()


@pytest.fixture()
def down_url() -> str:
    """A local port with nothing listening: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture()
def make_notifier() -> Iterator[Callable[..., Notifier]]:
    """Build notifiers that are always closed, even when a test fails half-way."""
    made: list[Notifier] = []

    def make(cfg: NotifyConfig, env: dict[str, str] | None = None, run: str = "run",
             clock: Callable[[], float] | None = None) -> Notifier:
        kwargs: dict[str, Any] = {"env": ENV if env is None else env}
        if clock is not None:
            kwargs["clock"] = clock
        n = Notifier(cfg, run, **kwargs)
        made.append(n)
        return n

    yield make
    for n in made:
        n.close(timeout=1.0)


def config(base_url: str, **kw: Any) -> NotifyConfig:
    kw.setdefault("retry_backoff_seconds", 0.01)
    return NotifyConfig(telegram={"base_url": base_url}, **kw)


def warn(key: str, step: int | None = None) -> Event:
    return Event(key, Severity.WARNING, f"{key} happened", "details", step=step)


def is_digest(text: str) -> bool:
    return "suppressed since" in text


# -- policy (pure, fake clock) ---------------------------------------------------------------


def test_storm_of_1000_events_is_rate_limited_and_ends_in_one_digest(
    api: FakeBotAPI, make_notifier: Callable[..., Notifier]
) -> None:
    cfg = config(api.url)
    clock = FakeClock()
    n = make_notifier(cfg, run="storm", clock=clock)
    keys = []
    for i in range(1000):
        if i % 100 == 0:
            keys.append(f"odd_{i}")  # ten distinct keys
        elif i % 7 == 0:
            keys.append("val_loss_rising")
        else:
            keys.append("rollback")
    for i, key in enumerate(keys):
        clock.t += 0.06  # 1000 events in 60 simulated seconds
        n.notify(warn(key, step=i))
    n.close(timeout=5)

    texts = api.texts()
    digests = [t for t in texts if is_digest(t)]
    regular = [t for t in texts if not is_digest(t)]
    assert len(digests) == 1 and texts[-1] == digests[0]
    # token bucket: at most burst + rate * 1 minute; and it did not starve either
    assert cfg.rate_limit_per_minute <= len(regular) <= cfg.burst + cfg.rate_limit_per_minute
    sent_keys = Counter(t.split(": ", 1)[1].split(" happened")[0] for t in regular)
    expected = Counter(keys) - sent_keys
    assert sum(expected.values()) == 1000 - len(regular)
    assert digests[0].startswith(f"[storm] {1000 - len(regular)} events suppressed since ")
    assert f"{expected['rollback']} x rollback" in digests[0]
    assert f"{expected['val_loss_rising']} x val_loss_rising" in digests[0]
    stats = n.stats
    assert stats["sent"] == len(texts)
    assert stats["suppressed"] == 1000 - len(regular)
    assert stats["failed"] == stats["dropped_queue_full"] == 0


def test_dedupe_window_via_server(api: FakeBotAPI, make_notifier: Callable[..., Notifier]) -> None:
    cfg = config(api.url, dedupe_seconds=600)
    clock = FakeClock()
    inside = make_notifier(cfg, clock=clock)
    inside.notify(warn("rollback"))
    clock.t += 599
    inside.notify(warn("rollback"))
    inside.close(timeout=5)
    texts = api.texts()
    assert [t for t in texts if not is_digest(t)] == ["[run] WARNING: rollback happened\ndetails"]
    assert len(texts) == 2 and texts[1].endswith(": 1 x rollback")

    api.requests.clear()
    after = make_notifier(cfg, clock=clock)
    after.notify(warn("rollback"))
    clock.t += 601
    after.notify(warn("rollback"))
    after.close(timeout=5)
    assert len(api.texts()) == 2 and not any(is_digest(t) for t in api.texts())


def test_min_severity_drops_info_uncounted(
    api: FakeBotAPI, make_notifier: Callable[..., Notifier]
) -> None:
    n = make_notifier(config(api.url, min_severity="warning"))
    n.notify(Event("started", Severity.INFO, "training started"))
    n.notify(Event("aligned", "info", "attention aligned", step=3000))
    n.notify(warn("no_alignment", step=5000))
    n.close(timeout=5)
    assert api.texts() == ["[run] WARNING at step 5000: no_alignment happened\ndetails"]
    assert n.stats["suppressed"] == 0


def test_critical_bypasses_dedupe_and_has_a_reserved_token() -> None:
    clock = FakeClock()
    policy = Policy(NotifyConfig(burst=3, rate_limit_per_minute=6), clock=clock)
    # a warning storm can spend only burst - 1 tokens ...
    decisions = [policy.decide(warn(f"w{i}")) for i in range(5)]
    assert decisions == ["send", "send", "suppress", "suppress", "suppress"]
    # ... so a crash in the middle of it still goes out; a crash loop is rate limited
    crash = Event("crash", Severity.CRITICAL, "trainer crashed")
    assert policy.decide(crash) == "send"
    assert policy.decide(crash) == "suppress"
    clock.t += 10  # one token back (6 per minute)
    assert policy.decide(crash) == "send"  # same key inside the dedupe window: still sent
    clock.t += 10
    assert policy.decide(warn("w0")) == "suppress"  # a warning may not take the reserved token
    assert policy.decide(Event("debug", Severity.INFO, "x")) == "suppress"


def test_min_severity_drop_and_digest_interval() -> None:
    clock = FakeClock()
    cfg = NotifyConfig(min_severity="warning", digest_interval_seconds=300, dedupe_seconds=600)
    policy = Policy(cfg, clock=clock)
    assert policy.decide(Event("started", Severity.INFO, "x")) == "drop"
    assert policy.digest(force=True) is None  # dropped events are not counted
    first_time = 1_700_000_000.0
    assert policy.decide(warn("rollback")) == "send"
    assert policy.decide(Event("rollback", Severity.WARNING, "x", time=first_time)) == "suppress"
    assert policy.decide(warn("rollback")) == "suppress"
    assert policy.pending_suppressed == 2
    clock.t += 299
    assert policy.digest() is None  # interval not over yet
    clock.t += 1
    hhmm = time.strftime("%H:%M", time.localtime(first_time))
    assert policy.digest() == f"2 events suppressed since {hhmm}: 2 x rollback"
    assert policy.digest(force=True) is None  # counts were reset
    assert policy.pending_suppressed == 0


def test_format_message_is_short_plain_and_has_the_step() -> None:
    event = Event("nan_stop", Severity.CRITICAL, "loss became NaN", "x" * 5000, step=1234)
    text = format_message(event, "lj-base")
    assert text.startswith("[lj-base] CRITICAL at step 1234: loss became NaN\n")
    assert len(text) < 1000 and text.isascii()
    assert format_message(Event("started", "info", "started"), "r") == "[r] INFO: started"


def test_config_has_no_secret_fields() -> None:
    with pytest.raises(ValidationError):
        NotifyConfig.model_validate({"telegram": {"token": TOKEN}})
    with pytest.raises(ValidationError):
        NotifyConfig.model_validate({"chat_id": CHAT_ID})
    assert "token" not in NotifyConfig().model_dump_json()


# -- delivery --------------------------------------------------------------------------------


def test_500_then_ok_is_retried_and_arrives_once(
    api: FakeBotAPI, make_notifier: Callable[..., Notifier]
) -> None:
    api.script = ["500"]
    n = make_notifier(config(api.url))
    n.notify(warn("rollback", step=10))
    n.close(timeout=5)
    assert [r["status"] for r in api.requests] == [500, 200]
    assert api.texts() == ["[run] WARNING at step 10: rollback happened\ndetails"]
    assert n.stats["sent"] == 1 and n.stats["failed"] == 0


def test_429_uses_retry_after(api: FakeBotAPI, make_notifier: Callable[..., Notifier]) -> None:
    api.retry_after = 7
    api.mode = "429"
    client = TelegramClient(api.url, TOKEN, CHAT_ID, timeout=5)
    with pytest.raises(TelegramError) as info:
        client.send_message("hello")
    assert (info.value.status, info.value.retry_after) == (429, 7.0)
    assert info.value.retryable and not info.value.disables_sink

    api.mode, api.retry_after, api.script = "ok", 0, ["429"]
    n = make_notifier(config(api.url))
    n.notify(warn("rollback"))
    n.close(timeout=5)
    assert [r["status"] for r in api.requests[1:]] == [429, 200]
    assert n.stats["sent"] == 1


def test_notify_never_blocks_and_close_is_bounded_when_server_down(
    down_url: str, make_notifier: Callable[..., Notifier]
) -> None:
    cfg = config(down_url, burst=1000, rate_limit_per_minute=60_000, queue_size=10,
                 retry_backoff_seconds=1.0)
    n = make_notifier(cfg)
    start = time.perf_counter()
    for i in range(100):
        n.notify(warn(f"k{i}", step=i))
    assert time.perf_counter() - start < 0.5
    start = time.perf_counter()
    n.close(timeout=2)
    assert time.perf_counter() - start < 2.5
    stats = n.stats
    assert stats["sent"] == 0 and stats["dropped_queue_full"] >= 80
    assert stats["dropped_queue_full"] + stats["failed"] + stats["dropped_at_close"] == 100
    n.notify(warn("after_close"))  # ignored, does not raise


def test_connection_error_is_retryable_and_gives_up(down_url: str) -> None:
    client = TelegramClient(down_url, TOKEN, CHAT_ID, timeout=2)
    with pytest.raises(TelegramError) as info:
        client.send_message("hello")
    assert info.value.status is None and info.value.retryable
    assert "/bot***/sendMessage" in str(info.value) and TOKEN not in str(info.value)


def test_401_logs_one_error_without_the_token_and_disables_the_sink(
    api: FakeBotAPI, make_notifier: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.mode = "401"
    n = make_notifier(config(api.url, burst=10))
    for key in ("crash", "nan_stop", "guard_gave_up"):
        n.notify(Event(key, Severity.CRITICAL, f"{key}!"))
    n.close(timeout=5)

    assert len(api.requests) == 1  # the sink was switched off after the first answer
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "token" in errors[0].getMessage() and "HTTP 401" in errors[0].getMessage()
    assert "disabled" in errors[0].getMessage()
    assert TOKEN not in caplog.text and CHAT_ID not in caplog.text
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert n.stats["failed"] == 1 and n.stats["dropped_disabled"] == 2
    assert n.sinks == [] and "disabled" in repr(n)

    client = TelegramClient(api.url, TOKEN, CHAT_ID, timeout=5)
    with pytest.raises(TelegramError) as info:
        client.send_message("hello")
    assert info.value.disables_sink and not info.value.retryable
    rendered = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert TOKEN not in rendered and "/bot***/sendMessage" in rendered


def test_send_photo_multipart_carries_bytes_and_caption(
    api: FakeBotAPI, make_notifier: Callable[..., Notifier], tmp_path: Path
) -> None:
    # binary content with CR/LF and dashes, the bytes most likely to break a hand-made body
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--not-a-boundary\r\n" * 3
    png = tmp_path / "alignment.png"
    png.write_bytes(image)
    n = make_notifier(config(api.url))
    n.notify(Event("aligned", Severity.INFO, "attention aligned", "diag 0.91", step=3000,
                   image=png))
    n.close(timeout=5)

    [request] = api.delivered("sendPhoto")
    assert request["content_type"].startswith("multipart/form-data; boundary=")
    head = f"Content-Type: {request['content_type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request["body"])
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert set(parts) == {"chat_id", "caption", "photo"}
    assert parts["photo"].get_filename() == "alignment.png"
    assert parts["photo"].get_content_type() == "image/png"
    assert parts["photo"].get_payload(decode=True) == image
    assert parts["caption"].get_payload(decode=True).decode() == (
        "[run] INFO at step 3000: attention aligned\ndiag 0.91"
    )
    assert parts["chat_id"].get_payload(decode=True).decode() == CHAT_ID
    assert api.texts() == []


def test_env_unset_logs_one_info_line_and_sends_nothing(
    api: FakeBotAPI, make_notifier: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tacotrain.notify")
    for env in ({}, {TOKEN_ENV: TOKEN}, {CHAT_ID_ENV: CHAT_ID, TOKEN_ENV: "  "}):
        caplog.clear()
        n = make_notifier(config(api.url), env=env)
        n.notify(Event("crash", Severity.CRITICAL, "crashed"))
        n.close(timeout=1)
        assert [r.getMessage() for r in caplog.records] == [OFF_LINE]
        assert n.sinks == [] and n.stats["sent"] == 0
    assert api.requests == []
    assert TOKEN not in caplog.text


def test_secrets_never_in_repr_or_logs(
    api: FakeBotAPI, make_notifier: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.script = ["500"]
    n = make_notifier(config(api.url))
    n.notify(warn("rollback"))
    n.close(timeout=5)
    assert n.stats["sent"] == 1
    client = TelegramClient(api.url, TOKEN, CHAT_ID)
    for text in (repr(n), repr(client), caplog.text):
        assert TOKEN not in text and CHAT_ID not in text
    assert "/bot***/sendMessage" in caplog.text  # the retry was logged, masked


def test_webhook_receives_json(
    api: FakeBotAPI, make_notifier: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = NotifyConfig(telegram={"enabled": False},
                       webhook={"url": f"{api.url}/hook/s3cr3t-path"})
    n = make_notifier(cfg, env={}, run="lj-base")
    event = Event("val_loss_rising", Severity.WARNING, "validation loss rising", "3 evals",
                  step=4200, time=1_700_000_000.5)
    n.notify(event)
    n.close(timeout=5)
    [request] = api.requests
    assert request["path"] == "/hook/s3cr3t-path"
    assert request["content_type"].startswith("application/json")
    assert json.loads(request["body"]) == {
        "key": "val_loss_rising", "severity": "warning", "title": "validation loss rising",
        "text": "3 evals", "step": 4200, "time": 1_700_000_000.5, "run": "lj-base",
    }
    assert n.sinks == ["webhook"] and "s3cr3t" not in repr(n) and "s3cr3t" not in caplog.text

    # the env var (for URLs that embed a secret) takes precedence over the config field
    api.requests.clear()
    n2 = make_notifier(cfg, env={WEBHOOK_ENV: f"{api.url}/from-env"})
    n2.notify(event)
    n2.close(timeout=5)
    assert [r["path"] for r in api.requests] == ["/from-env"]


def test_notify_never_raises_on_garbage(make_notifier: Callable[..., Notifier],
                                        down_url: str) -> None:
    n = make_notifier(config(down_url, max_retries=0))
    n.notify(None)  # type: ignore[arg-type]
    n.notify("not an event")  # type: ignore[arg-type]
    with n:
        pass  # context manager closes; closing twice is fine
    n.close()


# --- the trainer's events, end to end --------------------------------------------------------


def _train(tiny_data: Path, run: Path, base_url: str, monkeypatch, *extra: str):
    from tacotrain.train.trainer import Trainer

    from conftest import tiny_cfg

    monkeypatch.setenv("TACOTRAIN_TELEGRAM_TOKEN", "123456:TEST-TOKEN-abcdefghijklmnopqrstuvwxyz")
    monkeypatch.setenv("TACOTRAIN_TELEGRAM_CHAT_ID", "42")
    cfg = tiny_cfg(f"notify.telegram.base_url={base_url}", "notify.retry_backoff_seconds=0.05",
                   "notify.max_retries=1", *extra)
    t0 = time.monotonic()
    tr = Trainer(cfg, tiny_data, run, progress=False)
    res = tr.fit(max_steps=9)
    return res, time.monotonic() - t0, tr.model.state_dict()


def test_training_events_reach_telegram(api: FakeBotAPI, tiny_data: Path, tmp_path: Path,
                                        monkeypatch) -> None:
    monkeypatch.setenv("TACOTRAIN_INJECT", "spike@7-9")
    res, _, _ = _train(tiny_data, tmp_path / "r", api.url, monkeypatch,
                       "guard.spike_window=5", "guard.spike_patience=2", "notify.burst=10",
                       "notify.rate_limit_per_minute=600")
    texts = api.texts()
    assert res.step == 9
    assert any("training started" in t for t in texts)
    assert any("WARNING" in t and "rolled back to step" in t for t in texts)
    assert any("training finished" in t and "1 rollback(s)" in t for t in texts)
    assert all("TEST-TOKEN" not in t for t in texts)


def test_dead_or_failing_server_does_not_change_training(api: FakeBotAPI, down_url: str,
                                                         tiny_data: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    _, t_ok, ok = _train(tiny_data, tmp_path / "ok", api.url, monkeypatch)
    api.mode = "500"
    _, t_500, failing = _train(tiny_data, tmp_path / "500", api.url, monkeypatch)
    _, t_down, down = _train(tiny_data, tmp_path / "down", down_url, monkeypatch)
    for k in ok:
        assert torch.equal(ok[k], failing[k]) and torch.equal(ok[k], down[k]), k
    # sending happens off the training thread; closing waits at most notify's close timeout
    assert t_500 < t_ok + 6.0 and t_down < t_ok + 6.0
