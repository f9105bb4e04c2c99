"""The one object the trainer talks to: ``notifier.notify(Event(...))``, never blocking, never
raising.

Training must not slow down or break because a phone is offline, so the work is split:

* :meth:`Notifier.notify` runs in the caller's thread and only does cheap things: the policy
  decision (dedupe, rate limit, digest) and a non-blocking put into a bounded queue. A full queue
  drops the message and counts it.
* A daemon thread delivers queued messages to the sinks with capped exponential back-off for
  retryable failures. A sink whose credentials are rejected (HTTP 401/403/404) is switched off
  after ONE clear error line instead of failing (and logging) on every later message.
* :meth:`Notifier.close` sends a final digest, flushes within a deadline and returns on time even
  when the network is down; the thread is a daemon, so a stuck request cannot keep the process
  alive.

Secrets come only from the environment (``TACOTRAIN_TELEGRAM_TOKEN``,
``TACOTRAIN_TELEGRAM_CHAT_ID``, optionally ``TACOTRAIN_WEBHOOK_URL``) and appear in no repr, log
line or exception.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from tacotrain.config import NotifyConfig
from tacotrain.notify.events import DeliveryError, Event, Severity, format_message
from tacotrain.notify.policy import Policy
from tacotrain.notify.telegram import CAPTION_LIMIT, TelegramClient
from tacotrain.notify.webhook import WebhookClient

logger = logging.getLogger(__name__)

TOKEN_ENV = "TACOTRAIN_TELEGRAM_TOKEN"
CHAT_ID_ENV = "TACOTRAIN_TELEGRAM_CHAT_ID"
WEBHOOK_ENV = "TACOTRAIN_WEBHOOK_URL"
# No single back-off (ours or a server's retry_after) waits longer than this; a message that
# needs more is not worth holding the queue for.
MAX_RETRY_DELAY = 60.0


@dataclass(frozen=True)
class Outgoing:
    """A message that passed the policy: the rendered text plus the event for JSON/photo."""

    text: str
    event: Event


class Sink(Protocol):
    """A delivery channel; ``send`` raises :class:`DeliveryError` on failure."""

    name: str
    disabled: bool

    def send(self, message: Outgoing) -> None: ...

    def rejected_message(self, exc: DeliveryError) -> str: ...


class TelegramSink:
    """Text via sendMessage; events with an existing image via sendPhoto when enabled."""

    name = "telegram"

    def __init__(self, client: TelegramClient, send_photos: bool) -> None:
        self.client = client
        self.send_photos = send_photos
        self.disabled = False

    def __repr__(self) -> str:
        return f"TelegramSink({self.client!r})"

    def send(self, message: Outgoing) -> None:
        image = message.event.image
        if self.send_photos and image is not None and image.is_file():
            self.client.send_photo(image, caption=message.text[:CAPTION_LIMIT])
        else:
            self.client.send_message(message.text)

    def rejected_message(self, exc: DeliveryError) -> str:
        return (
            f"Telegram rejected the bot token or chat id (HTTP {exc.status}): notifications "
            f"disabled for this run. Check {TOKEN_ENV} and {CHAT_ID_ENV}."
        )


class WebhookSink:
    """The event as JSON (see :func:`tacotrain.notify.webhook.event_payload`)."""

    name = "webhook"

    def __init__(self, client: WebhookClient, run_name: str) -> None:
        self.client = client
        self.run_name = run_name
        self.disabled = False

    def __repr__(self) -> str:
        return f"WebhookSink({self.client!r})"

    def send(self, message: Outgoing) -> None:
        self.client.send(message.event, self.run_name)

    def rejected_message(self, exc: DeliveryError) -> str:
        return (
            f"Webhook {self.client.masked_url} rejected the request (HTTP {exc.status}): "
            "webhook notifications disabled for this run"
        )


_STOP = object()


class Notifier:
    """Policy + bounded queue + background sender. See the module docstring for the why.

    ``env`` and ``clock`` are injectable so tests control secrets and simulated time; ``clock``
    drives only the policy (dedupe, rate limit, digest), delivery and ``close`` use real time.
    """

    def __init__(
        self,
        cfg: NotifyConfig,
        run_name: str,
        env: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.run_name = run_name
        self._policy = Policy(cfg, clock=clock)
        self._lock = threading.Lock()
        self._stats = {
            "sent": 0,  # deliveries that reached a sink (per sink)
            "suppressed": 0,  # events held back by dedupe / rate limit (summed up in digests)
            "dropped_queue_full": 0,  # messages lost because the sender was behind
            "failed": 0,  # deliveries given up after retries or refused outright
            "dropped_disabled": 0,  # deliveries skipped because the sink was switched off
            "dropped_at_close": 0,  # still queued or retrying when close() ran out of time
        }
        self._sinks: list[Sink] = self._build_sinks(env)
        self._queue: queue.Queue[object] = queue.Queue(cfg.queue_size)
        self._abandon = threading.Event()  # wakes the sender's back-off waits at close
        self._abandoned = False  # guarded by _lock, like _pending
        self._pending = 0  # deliveries of the message being sent that are not yet counted
        self._closed = False
        self._thread: threading.Thread | None = None
        if self._sinks:
            self._thread = threading.Thread(
                target=self._run, name=f"tacotrain-notify-{run_name}", daemon=True
            )
            self._thread.start()

    def _build_sinks(self, env: Mapping[str, str]) -> list[Sink]:
        sinks: list[Sink] = []
        token = (env.get(TOKEN_ENV) or "").strip()
        chat_id = (env.get(CHAT_ID_ENV) or "").strip()
        if not self.cfg.telegram.enabled:
            logger.info("Telegram notifications off: notify.telegram.enabled is false")
        elif token and chat_id:
            client = TelegramClient(
                self.cfg.telegram.base_url, token, chat_id, timeout=self.cfg.timeout_seconds
            )
            sinks.append(TelegramSink(client, self.cfg.telegram.send_photos))
        else:
            logger.info(
                "Telegram notifications off: %s / %s not set", TOKEN_ENV, CHAT_ID_ENV
            )
        url = (env.get(WEBHOOK_ENV) or "").strip() or self.cfg.webhook.url
        if url:
            try:
                sinks.append(WebhookSink(WebhookClient(url, self.cfg.timeout_seconds),
                                         self.run_name))
            except ValueError as exc:
                logger.error("Webhook notifications off: %s", exc)
        return sinks

    def __repr__(self) -> str:
        names = [s.name + (" (disabled)" if s.disabled else "") for s in self._sinks]
        return f"Notifier(run={self.run_name!r}, sinks={names})"

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sinks(self) -> list[str]:
        """Names of the sinks still enabled (for a startup log line or a test)."""
        return [s.name for s in self._sinks if not s.disabled]

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start: sent, suppressed, dropped_queue_full, failed and the rest."""
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    # -- caller side -----------------------------------------------------------------------

    def notify(self, event: Event) -> None:
        """Decide and enqueue; O(1), never blocks on the network, never raises."""
        try:
            if self._closed or not self._sinks:
                return
            with self._lock:
                digest = self._policy.digest()
                decision = self._policy.decide(event)
                if decision == "suppress":
                    self._stats["suppressed"] += 1
            if digest is not None:
                self._enqueue(self._digest_message(digest))
            if decision == "send":
                self._enqueue(Outgoing(format_message(event, self.run_name), event))
        except Exception as exc:  # noqa: BLE001 - notifications must never break training
            logger.warning("notification of %r skipped: %s", getattr(event, "key", "?"), exc)

    def _digest_message(self, digest: str) -> Outgoing:
        event = Event("digest", Severity.INFO, "Suppressed notifications", digest)
        return Outgoing(f"[{self.run_name}] {digest}", event)

    def _enqueue(self, message: Outgoing) -> None:
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._count("dropped_queue_full")

    # -- sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, Outgoing)
            with self._lock:
                if self._abandoned:  # close() gave up while we were picking this one up
                    self._stats["dropped_at_close"] += len(self._sinks)
                    continue
                self._pending = len(self._sinks)
            for sink in self._sinks:
                if self._abandon.is_set():
                    break  # close() has counted the rest of this message as dropped
                self._account("dropped_disabled" if sink.disabled else self._deliver(sink, item))

    def _account(self, outcome: str | None) -> None:
        """Count one delivery outcome, unless close() already counted it as dropped."""
        with self._lock:
            if outcome is None or self._abandoned:
                return
            self._stats[outcome] += 1
            self._pending -= 1

    def _deliver(self, sink: Sink, message: Outgoing) -> str | None:
        """Send with retries; returns "sent", "failed", or None when close() gave up first."""
        attempts = 1 + self.cfg.max_retries
        for attempt in range(attempts):
            try:
                sink.send(message)
                return "sent"
            except DeliveryError as exc:
                if exc.disables_sink:
                    sink.disabled = True
                    logger.error(sink.rejected_message(exc))
                    return "failed"
                if not exc.retryable or attempt == attempts - 1:
                    tries = f"after {attempt + 1} attempts" if exc.retryable else "(not retryable)"
                    logger.warning("%s notification %r not delivered %s: %s",
                                   sink.name, message.event.key, tries, exc)
                    return "failed"
                delay = exc.retry_after
                if delay is None:
                    delay = self.cfg.retry_backoff_seconds * (2.0**attempt)
                delay = min(max(delay, 0.0), MAX_RETRY_DELAY)
                logger.debug("%s notification attempt %d failed (%s); retry in %.2fs",
                             sink.name, attempt + 1, exc, delay)
                if self._abandon.wait(delay):
                    return None
            except Exception as exc:  # noqa: BLE001 - keep the sender thread alive
                logger.warning("%s notification failed unexpectedly: %s", sink.name, exc)
                return "failed"
        return "failed"

    # -- shutdown --------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Send a final digest, deliver what fits in ``timeout`` seconds, stop the thread.

        Returns within ``timeout`` (plus scheduling noise) whatever the network does; anything
        still undelivered is counted in ``stats["dropped_at_close"]``. Safe to call twice.
        """
        if self._closed:
            return
        self._closed = True
        try:
            deadline = time.monotonic() + max(0.0, timeout)
            if self._thread is None:
                return
            if self.sinks:
                with self._lock:
                    digest = self._policy.digest(force=True)
                if digest is not None:
                    self._enqueue(self._digest_message(digest))
            try:
                self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                with self._lock:
                    # From here on close() does the counting of whatever is left.
                    self._abandoned = True
                    self._stats["dropped_at_close"] += self._pending
                    self._pending = 0
                self._abandon.set()  # wakes a back-off wait
                self._drain_abandoned()
                logger.warning(
                    "notifications: close() timed out after %.1fs; %d message(s) not delivered",
                    timeout, self.stats["dropped_at_close"],
                )
            logger.debug("notifications closed: %s", self.stats)
        except Exception as exc:  # noqa: BLE001 - shutting down must not raise either
            logger.warning("notifications: close failed: %s", exc)

    def _drain_abandoned(self) -> None:
        """Count what will never be sent, then re-queue the stop sentinel (the queue is empty
        now, so this cannot block) so the thread exits once its in-flight request returns."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._count("dropped_at_close", len(self._sinks))
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass
