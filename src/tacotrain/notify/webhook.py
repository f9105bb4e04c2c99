"""Generic JSON webhook sink (Slack/Discord relays, ntfy, a home-made dashboard...).

Each message is one POST with a JSON object
``{"key", "severity", "title", "text", "step", "time", "run"}``. Webhook URLs often embed a
secret (Slack's do), so only the scheme and host ever appear in errors, logs and reprs.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request

from tacotrain.notify.events import DeliveryError, Event

logger = logging.getLogger(__name__)

# The endpoint is gone or refuses us: retrying every message would only repeat the failure.
_REJECTED = {401, 403, 404, 410}


class WebhookError(DeliveryError):
    """A webhook POST failed. ``status`` is None for connection errors (always retryable)."""


def mask_url(url: str) -> str:
    """``https://hooks.example.com/...``: enough to tell which endpoint, no path or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or 'http'}://{host}{port}/..."


def event_payload(event: Event, run_name: str) -> dict[str, object]:
    """The JSON object sent for ``event`` (also used for digests, key ``"digest"``)."""
    return {
        "key": event.key,
        "severity": event.severity.label,
        "title": event.title,
        "text": event.text,
        "step": event.step,
        "time": event.time,
        "run": run_name,
    }


class WebhookClient:
    """POSTs events as JSON to one URL. Knows nothing about policy, queues or retries."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http(s), got scheme {scheme!r}")
        self._url = url
        self.masked_url = mask_url(url)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"WebhookClient(url={self.masked_url!r})"

    def send(self, event: Event, run_name: str) -> None:
        """POST the event; raise :class:`WebhookError` on any non-2xx answer or network error."""
        body = json.dumps(event_payload(event, run_name), ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(
            self._url, data=body, method="POST",
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
            raise WebhookError(
                status, f"POST {self.masked_url}: {exc.reason}",
                retryable=status == 429 or status == 408 or status >= 500,
                retry_after=_retry_after(exc.headers.get("Retry-After") if exc.headers else None),
                disables_sink=status in _REJECTED,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WebhookError(
                None, f"POST {self.masked_url}: connection failed: {reason}", retryable=True
            ) from None
        logger.debug("POST %s: ok", self.masked_url)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; HTTP-date forms are ignored (back-off applies)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
