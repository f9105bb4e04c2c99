"""The FastAPI app of ``tacotrain serve``: the page (static files), the JSON API under
``/api`` and the error answers.

Every error answers ``{"error": "<what went wrong, in words>"}`` with a fitting status (404
unknown checkpoint or file, 422 bad request or text, 503 queue full with ``Retry-After``, 504
timeout, 500 a checkpoint that does not load); the page shows that sentence, and no traceback
ever leaves the server (it goes to the log).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from tacotrain.cancel import Cancelled
from tacotrain.config import ServeConfig
from tacotrain.infer.synth import SynthesisError, Synthesizer
from tacotrain.serve.auth import add_token_check
from tacotrain.serve.models import (
    Catalog,
    CheckpointInfo,
    ModelCache,
    ModelLoadError,
    QueueFull,
)
from tacotrain.serve.results import ResultStore

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


class SynthesizeRequest(BaseModel):
    """``POST /api/synthesize``. Strict: a number where text belongs is refused, not converted."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(description="what to say (at most serve.max_text_chars characters)")
    checkpoint: str | None = Field(None, description="an id from GET /api/checkpoints; "
                                                     "default: the listing's default")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the prenet's dropout")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def describe_validation(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors as one sentence a person can act on."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())][1:]  # drop "body"
        if err.get("type") == "json_invalid":
            where = f" at character {loc[0]}" if loc else ""
            reason = (err.get("ctx") or {}).get("error", "decode error")
            parts.append(f"the request body is not valid JSON ({reason}{where})")
        elif not loc:
            parts.append('the request body must be a JSON object such as {"text": "Hello."} '
                         f"({err.get('msg')})")
        else:
            parts.append(f"{'.'.join(loc)}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)


def _finite(value: Any) -> Any:
    """NaN and infinities (a metric of an empty alignment) become null: JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# how long a stopping server waits for a model load or synthesis still running
SHUTDOWN_WAIT_SECONDS = 60.0


def create_app(catalog: Catalog, cfg: ServeConfig,
               load: Callable[[CheckpointInfo], Synthesizer], device: str = "cpu",
               warm: bool = True, token: str | None = None) -> FastAPI:
    """The app. ``load`` builds a model for a listed entry (:func:`models.checkpoint_loader`);
    ``device`` is only reported; ``warm``: load the default checkpoint at start-up, in its
    worker thread, so that the first request does not wait for it; ``token``: every request
    must carry it (:mod:`tacotrain.serve.auth`)."""
    cache = ModelCache(cfg, load)
    store = ResultStore(cfg.max_results)
    app = FastAPI(title="tacotrain serve", lifespan=_lifespan(catalog, cache, store, warm),
                  description="Synthesise speech with a trained Tacotron 2 checkpoint.")
    _add_error_handlers(app)
    if token is not None:
        add_token_check(app, token)
    _add_page(app)
    _add_listing_routes(app, catalog, cfg, cache, device)
    _add_synthesize_route(app, catalog, cfg, cache, store)
    _add_result_route(app, cfg, store)
    return app


def _lifespan(catalog: Catalog, cache: ModelCache, store: ResultStore,
              warm: bool) -> Callable[[FastAPI], Any]:
    """Start-up: with ``warm``, submit the default checkpoint's loading (not awaited; a failure
    goes to the log). Shut-down: close the model cache and the result store."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            entry = Catalog.default(await run_in_threadpool(catalog.entries))
            if entry is not None:
                future = cache.submit(entry, lambda synth: None)
                # nobody awaits the warm-up: say in the log why the model did not load
                future.add_done_callback(
                    lambda f: f.exception() and log.error("%s", f.exception()))
        yield
        # a load or synthesis still running must end before the interpreter does
        await run_in_threadpool(cache.close, SHUTDOWN_WAIT_SECONDS)
        store.close()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """HTTP and validation errors answer ``{"error": ...}`` (see the module docstring)."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, describe_validation(list(exc.errors())))


def _add_page(app: FastAPI) -> None:
    """``/``: the page; ``/static``: its files."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _add_listing_routes(app: FastAPI, catalog: Catalog, cfg: ServeConfig, cache: ModelCache,
                        device: str) -> None:
    """``GET /api/health`` and ``GET /api/checkpoints``."""

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """Answers while syntheses run (they run in worker threads)."""
        models = cache.status()
        return {"status": "ok", "device": device,
                "model_loaded": any(m["loaded"] for m in models), "models": models}

    @app.get("/api/checkpoints")
    def checkpoints() -> dict[str, Any]:
        """The checkpoints that may be named in ``POST /api/synthesize``, and the limits."""
        entries = catalog.entries()
        default = Catalog.default(entries)
        return _finite({"source": catalog.source, "root": catalog.root.name,
                        "default": default.id if default else None,
                        "checkpoints": [e.public() for e in entries],
                        "limits": cfg.model_dump()})


def _add_synthesize_route(app: FastAPI, catalog: Catalog, cfg: ServeConfig, cache: ModelCache,
                          store: ResultStore) -> None:
    """``POST /api/synthesize``: check the text, pick the checkpoint, queue the synthesis on its
    model, wait for it within the timeout, answer the figures (JSON) or the wav."""

    @app.post("/api/synthesize", responses={
        200: {"content": {"audio/wav": {}},
              "description": "the figures and URLs (JSON), or with Accept: audio/wav the wav"},
        404: {"description": "unknown checkpoint"}, 422: {"description": "bad request or text"},
        503: {"description": "queue full"}, 504: {"description": "timed out"}})
    async def synthesize(body: SynthesizeRequest, request: Request) -> Response:
        if len(body.text) > cfg.max_text_chars:
            return _error(422, f"the text is {len(body.text)} characters long; the limit is "
                               f"{cfg.max_text_chars} (serve.max_text_chars)")
        entries = await run_in_threadpool(catalog.entries)
        entry = _pick_checkpoint(catalog, entries, body.checkpoint)
        if isinstance(entry, JSONResponse):
            return entry
        cancel = threading.Event()  # set when this request stops waiting for the job
        job = _synthesis_job(store, entry, body.text, body.seed, cancel)
        try:
            future = cache.submit(entry, job)
        except QueueFull:
            return _error(503, f"the synthesis queue of {entry.id} is full "
                               f"({cfg.concurrent_per_model} running, {cfg.queue_size} "
                               "waiting: serve.queue_size); try again shortly",
                          {"Retry-After": str(cfg.retry_after_seconds)})
        try:
            out = await _wait_for_synthesis(future, cfg, catalog.hide)
        finally:  # timed out or the handler was cancelled: the job stops and frees its worker
            if not future.done():
                cancel.set()
        if isinstance(out, JSONResponse):
            return out
        if "audio/wav" in request.headers.get("accept", ""):
            wav = store.read(out["id"], "speech.wav")
            if wav is None:  # evicted already: serve.max_results is below the traffic
                return _error(503, "the result was evicted before it was sent; raise "
                                   "serve.max_results", {"Retry-After": "1"})
            return Response(wav[0], media_type="audio/wav", headers={"X-Result-Id": out["id"]})
        return JSONResponse(_finite(out))


def _pick_checkpoint(catalog: Catalog, entries: list[CheckpointInfo],
                     name: str | None) -> CheckpointInfo | JSONResponse:
    """The listed entry ``name`` (the listing's default when None) or the error answer: 404
    when there is none, 500 when it is listed but cannot be used."""
    if name is None:
        entry = Catalog.default(entries)
        if entry is None:
            errors = "; ".join(e.error for e in entries if e.error)
            return _error(404, f"no usable checkpoint in {catalog.root.name}"
                               + (f": {errors}" if errors else " yet"))
    else:
        entry = catalog.find(name, entries)
        if entry is None:
            return _error(404, f"no checkpoint {name!r} in the listing; "
                               "GET /api/checkpoints lists the ids")
    if entry.error is not None:
        return _error(500, f"{entry.id} cannot be used: {entry.error}")
    return entry


def _synthesis_job(store: ResultStore, entry: CheckpointInfo, text: str, seed: int,
                   cancel: threading.Event) -> Callable[[Synthesizer], dict[str, Any]]:
    """The work queued on ``entry``'s model: synthesise, keep the result in ``store``, and
    return the JSON answer (figures and the URLs of the result's files). Once ``cancel`` is
    set the synthesis stops at its next decoder step or Griffin-Lim iteration
    (:class:`Cancelled`), and one that finished is not stored."""

    def job(synth: Synthesizer) -> dict[str, Any]:
        result = synth.synthesize(text, seed=seed, cancel=cancel.is_set)
        if cancel.is_set():
            raise Cancelled("synthesis", len(result.alignment))  # finished too late: not kept
        rid = store.add(synth, result)
        return {"id": rid, "checkpoint": entry.id, "language": synth.language,
                "text": result.text, "sample_rate": synth.audio.sample_rate,
                "samples": len(result.wav), "figures": result.info.as_dict(),
                "urls": {k.split(".")[0]: f"/api/results/{rid}/{k}" for k in
                         ("speech.wav", "alignment.png", "mel.png")}}

    return job


async def _wait_for_synthesis(future: Future, cfg: ServeConfig, hide: Callable[[str], str]
                              ) -> dict[str, Any] | JSONResponse:
    """The job's answer, or the error answer: 504 past ``serve.request_timeout_seconds``, 422 for
    text that cannot be said, 500 for a checkpoint that does not load or any other failure.
    ``hide`` takes the served directory's path out of an error's words."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), cfg.request_timeout_seconds)
    except TimeoutError:  # a job still waiting is cancelled with the wrapper
        return _error(504, f"the synthesis did not finish within "
                           f"{cfg.request_timeout_seconds:g} s "
                           "(serve.request_timeout_seconds); try a shorter text")
    except SynthesisError as exc:
        return _error(422, str(exc))
    except ModelLoadError as exc:
        log.error("%s", exc)
        return _error(500, hide(str(exc)))
    except Exception as exc:
        log.exception("synthesis failed")
        return _error(500, hide(f"the synthesis failed: {type(exc).__name__}: {exc}"))


def _add_result_route(app: FastAPI, cfg: ServeConfig, store: ResultStore) -> None:
    """``GET /api/results/{rid}/{name}``."""

    @app.get("/api/results/{rid}/{name}")
    async def result_file(rid: str, name: str) -> Response:
        """A file of a recent synthesis: ``speech.wav``, ``alignment.png`` or ``mel.png``."""
        found = await run_in_threadpool(store.read, rid, name)
        if found is None:
            return _error(404, "no such result file (results are kept for the last "
                               f"{cfg.max_results} syntheses: serve.max_results)")
        return Response(found[0], media_type=found[1])
