"""``tacotrain serve``: the app on uvicorn, bound to 127.0.0.1 unless ``--host`` says otherwise;
an address other machines can reach needs an access token (:mod:`tacotrain.serve.auth`).

uvicorn handles Ctrl-C and SIGTERM itself (stop accepting, finish open requests for up to
``serve.shutdown_grace_seconds``, stop); afterwards it restores the signal handlers it found
and raises the signal again, which would end the process by the signal. :func:`_quiet_signals`
puts no-op handlers there for that moment, so a stopped server returns normally (exit 0).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tacotrain.config import ServeSettings, build
from tacotrain.infer.device import DeviceError, resolve_device
from tacotrain.serve.auth import RedactToken, check_token, is_loopback
from tacotrain.serve.models import Catalog, ServeError, checkpoint_loader


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or a :class:`ServeError` that says what to do."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ServeError(f"--host {host}: {exc}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another "
                         "--port") from None
    sock.listen(128)
    return sock


@contextlib.contextmanager
def _quiet_signals() -> Iterator[None]:
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: None) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(*, checkpoint: Path | None = None, model: Path | None = None, runs: Path | None = None,
        vocoder: str | None = None, vocoder_config: Path | None = None, trust: bool = False,
        host: str = "127.0.0.1", port: int = 5003, device: str = "auto",
        overrides: Sequence[str] = (), announce: Callable[[str], None] | None = None,
        token: str | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM. ``overrides``: ``serve.KEY=VALUE`` (``--set``);
    ``announce`` receives the address line once the socket is bound (the CLI prints it);
    ``token``: the access token every request must carry (required off loopback)."""
    import uvicorn

    from tacotrain.serve.app import create_app

    refused = check_token(host, token)
    if refused is not None:
        raise ServeError(refused)

    cfg = build(ServeSettings, {}, list(overrides), "defaults").serve
    catalog = Catalog(runs=runs, checkpoint=checkpoint, model=model)
    try:
        dev = str(resolve_device(device))
    except (DeviceError, RuntimeError) as exc:
        raise ServeError(f"--device {device}: {exc}") from None
    app = create_app(catalog, cfg, checkpoint_loader(dev, vocoder, vocoder_config, trust),
                     device=dev, token=token)
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="info", timeout_graceful_shutdown=cfg.shutdown_grace_seconds))
    logging.getLogger("uvicorn.access").addFilter(RedactToken())
    shown = f"[{host}]" if ":" in host else host
    if announce is not None:
        announce(f"tacotrain serve: http://{shown}:{port}/ ({catalog.source} {catalog.root}, "
                 f"{dev}); Ctrl-C stops it")
        if token is not None:
            reach = "this machine only" if is_loopback(host) else "other machines too"
            announce(f"access token required on every request ({reach} can connect): open "
                     f"http://{shown}:{port}/?token=TOKEN once, or send 'Authorization: "
                     "Bearer TOKEN'")
    with _quiet_signals():
        server.run(sockets=[sock])
