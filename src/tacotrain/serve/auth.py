"""Access control of ``tacotrain serve``: one shared token, required on every request when given.

A server bound beyond the loopback interface (``--host 0.0.0.0``) is reachable by the network,
so it needs a token (``TACOTRAIN_SERVE_TOKEN``, or ``--token``; never a file); on loopback one
is optional. A request carries it as ``Authorization: Bearer TOKEN``; a browser opens
``/?token=TOKEN`` once, which sets a cookie holding an HMAC of the token (not the token itself)
and redirects to ``/``, so the page and its API calls carry it from then on. Anything else
answers 401 ``{"error": ...}``. Tokens are compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

TOKEN_ENV = "TACOTRAIN_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16  # shorter tokens can be guessed; secrets.token_urlsafe(24) gives 32
COOKIE = "tacotrain_serve"


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def check_token(host: str, token: str | None) -> str | None:
    """Why ``host`` and ``token`` cannot be served together, in words (None: they can)."""
    if token is None and not is_loopback(host):
        return (f"--host {host} lets other machines connect, so it needs an access token: set "
                f"{TOKEN_ENV} (e.g. {TOKEN_ENV}=$(python -c 'import secrets; "
                "print(secrets.token_urlsafe(24))')) or pass --token; or serve on 127.0.0.1")
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        return (f"the access token is {len(token)} characters long; use at least "
                f"{MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(24))')")
    return None


class RedactToken(logging.Filter):
    """Takes the token out of uvicorn's access log lines (``GET /?token=...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(re.sub(r"([?&]token=)[^&\s]*", r"\1REDACTED", a)
                                if isinstance(a, str) else a for a in record.args)
        return True


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"tacotrain serve cookie", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def add_token_check(app: FastAPI, token: str) -> None:
    """Refuse (401) every request of ``app`` that does not carry ``token`` (see the module
    docstring); ``GET /?token=TOKEN`` sets the page's cookie."""
    cookie = _cookie_value(token)
    refusal = ("this server needs its access token: send the header 'Authorization: Bearer "
               "TOKEN', or open /?token=TOKEN once in the browser")

    @app.middleware("http")
    async def require_token(request: Request,
                            call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = request.query_params.get("token")
        if request.url.path == "/" and given is not None:
            if not _same(given, token):
                return JSONResponse({"error": "wrong access token"}, status_code=401)
            answer = RedirectResponse("/", status_code=303)  # the token leaves the address bar
            answer.set_cookie(COOKIE, cookie, httponly=True, samesite="strict")
            return answer
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if (scheme.lower() == "bearer" and _same(bearer.strip(), token)) or _same(
                request.cookies.get(COOKIE, ""), cookie):
            return await call_next(request)
        return JSONResponse({"error": refusal}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
