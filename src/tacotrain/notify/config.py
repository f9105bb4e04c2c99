"""Configuration of training notifications (Telegram and a generic JSON webhook).

The predecessor sent a Telegram message every few steps and kept its bot token in a config
file. Here every knob that keeps alerts rare lives in this model with a default, and secrets are
deliberately *not* fields: the bot token and chat id are read only from the environment variables
``TACOTRAIN_TELEGRAM_TOKEN`` and ``TACOTRAIN_TELEGRAM_CHAT_ID`` (``extra="forbid"`` rejects a
``token:`` key in a YAML file instead of silently accepting it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tacotrain.config import Strict


class TelegramConfig(Strict):
    """Telegram Bot API sink; active only when the token and chat id env vars are both set."""

    enabled: bool = True  # false: never send to Telegram even when the env vars are set
    # Bot API root; only changed for a self-hosted Bot API server or tests
    base_url: str = "https://api.telegram.org"
    send_photos: bool = True  # events with an image (alignment plot) go out as sendPhoto


class WebhookConfig(Strict):
    """Generic webhook sink: each message is POSTed as one JSON object."""

    # http(s) URL receiving the JSON; None: no webhook. A URL that embeds a secret belongs in the
    # TACOTRAIN_WEBHOOK_URL environment variable instead (it takes precedence over this field)
    url: str | None = None


class NotifyConfig(Strict):
    """How rare, deduplicated and severity-ranked the alerts are, and how they are delivered."""

    # events below this severity are dropped silently (not even counted in the digest)
    min_severity: Literal["info", "warning", "critical"] = "info"
    # a non-critical event whose key was *sent* less than this many seconds ago is suppressed
    dedupe_seconds: float = Field(600.0, ge=0.0)
    # global token bucket: long-run ceiling of messages per minute, all keys together ...
    rate_limit_per_minute: float = Field(6.0, gt=0.0)
    # ... and how many may go out back to back when the bucket is full
    burst: int = Field(3, ge=1)
    # at most one "N events suppressed" summary per this many seconds (plus one at close)
    digest_interval_seconds: float = Field(300.0, ge=0.0)
    # messages waiting for the sender thread; when full, new messages are dropped (and counted)
    queue_size: int = Field(100, ge=1)
    # extra attempts after the first for retryable failures (HTTP 429, 5xx, connection errors)
    max_retries: int = Field(4, ge=0)
    # first retry waits this long, each further retry twice as long (HTTP 429 uses retry_after)
    retry_backoff_seconds: float = Field(1.0, ge=0.0)
    timeout_seconds: float = Field(10.0, gt=0.0)  # per HTTP request
    telegram: TelegramConfig = TelegramConfig()
    webhook: WebhookConfig = WebhookConfig()
