"""Minimal Telegram Bot API client on the standard library (no new dependency for two calls).

The token is part of every Bot API URL (``/bot<TOKEN>/sendMessage``), which is how tokens leak
into logs and tracebacks. This client therefore never lets a URL escape: errors are raised
``from None`` (the chained ``HTTPError`` would carry the full URL), messages name the endpoint as
``/bot***/sendMessage``, and any server text is scrubbed of the token before it is used.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tacotrain.notify.events import DeliveryError

logger = logging.getLogger(__name__)

# 401: token revoked or wrong; 403: bot blocked / kicked from the chat; 404: token malformed.
# None of these heal by retrying, and neither does 400 "chat not found" (wrong chat id).
_REJECTED = {401, 403, 404}
CAPTION_LIMIT = 1024  # Telegram's photo caption limit
TEXT_LIMIT = 4096  # Telegram's message text limit


class TelegramError(DeliveryError):
    """A Bot API call failed. ``status`` is None for connection errors (always retryable)."""


class TelegramClient:
    """Sends text and photos to one chat. Knows nothing about policy, queues or retries."""

    def __init__(self, base_url: str, token: str, chat_id: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._chat_id = chat_id
        self.timeout = timeout

    def __repr__(self) -> str:
        # Deliberately without token and chat id: reprs end up in logs and error reports.
        return f"TelegramClient(base_url={self.base_url!r}, token=***, chat_id=***)"

    def _masked(self, method: str) -> str:
        return f"{self.base_url}/bot***/{method}"

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def send_message(self, text: str) -> dict[str, Any]:
        """POST ``sendMessage`` (plain text, no parse mode: a stray ``_`` cannot break it)."""
        body = json.dumps(
            {"chat_id": self._chat_id, "text": text[:TEXT_LIMIT]}, ensure_ascii=False
        ).encode("utf-8")
        return self._post("sendMessage", body, "application/json; charset=utf-8")

    def send_photo(self, path: str | Path, caption: str = "") -> dict[str, Any]:
        """POST ``sendPhoto`` as multipart/form-data, built by hand from the stdlib."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            # Not the server's fault and retrying will not help; the sink stays on.
            raise TelegramError(None, f"cannot read image {path.name}: {exc.strerror}",
                                retryable=False) from None
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        boundary = f"tacotrain-{uuid.uuid4().hex}"
        fields = {"chat_id": self._chat_id, "caption": caption[:CAPTION_LIMIT]}
        parts: list[bytes] = []
        for name, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        filename = path.name.replace('"', "_")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        return self._post("sendPhoto", b"".join(parts), f"multipart/form-data; boundary={boundary}")

    def _post(self, method: str, body: bytes, content_type: str) -> dict[str, Any]:
        url = f"{self.base_url}/bot{self._token}/{method}"
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": content_type}
        )
        where = self._masked(method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
                raw = response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                raw = exc.read()
            except OSError:
                raw = b""
            finally:
                exc.close()
            raise self._http_error(where, status, raw) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TelegramError(
                None, self._scrub(f"POST {where}: connection failed: {reason}"), retryable=True
            ) from None
        payload = _parse(raw)
        if not payload.get("ok", False):
            raise self._http_error(where, status, raw)
        logger.debug("POST %s: ok", where)
        result = payload.get("result")
        return result if isinstance(result, dict) else {}

    def _http_error(self, where: str, status: int, raw: bytes) -> TelegramError:
        payload = _parse(raw)
        description = str(payload.get("description") or raw[:200].decode("utf-8", "replace"))
        description = self._scrub(f"POST {where}: {description}".strip())
        params = payload.get("parameters")
        retry_after = None
        if isinstance(params, dict) and isinstance(params.get("retry_after"), int | float):
            retry_after = float(params["retry_after"])
        rejected = status in _REJECTED or (status == 400 and "chat not found" in description)
        retryable = status == 429 or status >= 500
        return TelegramError(status, description, retryable=retryable, retry_after=retry_after,
                             disables_sink=rejected)


def _parse(raw: bytes) -> dict[str, Any]:
    """Bot API JSON, or {} for anything else (a proxy's HTML error page, an empty body)."""
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}
