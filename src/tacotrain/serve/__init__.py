"""``tacotrain serve``: a web page (and JSON API) to hear a trained voice.

``app.py`` builds the FastAPI app, ``models.py`` lists checkpoints and keeps loaded models
behind bounded worker queues, ``results.py`` keeps recent results' files, ``auth.py`` checks
the access token, ``server.py`` runs it on uvicorn, ``static/`` is the page (plain HTML, JS and
CSS; nothing fetched from elsewhere).
"""

from __future__ import annotations

from typing import Any


def run(**options: Any) -> None:
    """Start the server: see :func:`tacotrain.serve.server.run`. Imported on first use, so that
    importing :mod:`tacotrain.serve.models` (for its error class) does not load the web stack."""
    from tacotrain.serve.server import run as run_server

    run_server(**options)
