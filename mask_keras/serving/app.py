"""The HTTP service for trained artifacts: ``mask-keras serve ARTIFACT [--host] [--port]``.

FastAPI (routes, the OpenAPI schema at ``/openapi.json``, docs at ``/docs``) on uvicorn;
prometheus-client for ``/metrics``. Written here: the routes, the input checks, the limits
and the batching queue (:mod:`mask_keras.serving.batcher`).

Routes:

* ``POST /predict``: one or several images, as ``multipart/form-data`` (any field names), as
  the raw body (``Content-Type: image/jpeg``, ``image/png``, ``image/webp``,
  ``application/octet-stream``) or as JSON (``{"images": [{"name": "a.jpg", "data": "<base64>"}]}``
  or ``{"image": "<base64>"}``). Returns ``{"request_id": ..., "predictions": [...]}``: one row
  per photo (per face with ``--faces all``), the fields of :mod:`mask_keras.inference.answers`
  (``image``, ``face_found``, ``face_box``, ``face_confidence``, ``crop_box``, each task's
  answer and probabilities, ``class`` with the three tasks).
* ``GET /health``: ``{"status": "ok"}``; ``GET /metadata``: tasks, models, settings, the
  artifacts' SHA-256, limits and counters; ``GET /metrics``: Prometheus
  (:mod:`mask_keras.serving.metrics`); ``GET /``: a page to try a photo.

Every answer carries ``X-Request-ID`` (the client's, or a new one), also in the JSON and in
every log line about the request. Bad input gets a JSON ``{"error": ..., "request_id": ...}``
and the service goes on: a body over ``max_body_mb`` (413), more than ``max_images`` images
(413), an image over ``max_pixels`` (413, from the header, before any decode), bytes that are
not an image or do not decode (400), bad JSON or base64 (400), an unknown type (415), no face
with ``--no-face error`` (422), a body not received within ``body_timeout_s`` (408: a slow
client holds only its own connection), more than ``max_in_flight`` requests at once (503 with
``Retry-After``). Every refusal is counted in ``/metrics``.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ..inference.images import BadImage, ImageInput
from .batcher import Batcher
from .metrics import Metrics
from .page import PAGE

log = logging.getLogger(__name__)

RAW_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "application/octet-stream")
ROUTES = ("/predict", "/health", "/metadata", "/metrics", "/", "/docs", "/openapi.json")
#: the request id of the request being handled (log lines read it)
REQUEST_ID: contextvars.ContextVar = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request), for ``%(request_id)s``."""

    def filter(self, record):
        """Set ``record.request_id``.

        Args:
            record: the ``logging.LogRecord``.

        Returns:
            True (every record is kept).
        """
        record.request_id = REQUEST_ID.get()
        return True


@dataclass
class Limits:
    """What one request may hold, and how long and how many may be in progress.

    Args:
        max_body_mb: request body size.
        max_images: images in one request.
        max_pixels: width x height of one image (read from its header before decoding).
        body_timeout_s: the whole body must arrive within this (else 408).
        max_in_flight: requests in progress at once; more get 503 with ``Retry-After``.
    """

    max_body_mb: float = 20.0
    max_images: int = 16
    max_pixels: int = 40_000_000
    body_timeout_s: float = 30.0
    max_in_flight: int = 64


class InFlightLimit:
    """ASGI middleware: a request id for every request, and a 503 (``Retry-After: 1``) past
    ``limit`` requests in progress, before the body is read; every answer counted.

    Args:
        app: the ASGI app.
        limit: the most requests in progress.
        metrics: the :class:`~mask_keras.serving.metrics.Metrics`.
    """

    def __init__(self, app, limit: int, metrics: Metrics):
        self.app, self.limit, self.metrics, self.active = app, int(limit), metrics, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:100] or uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        t0, status = time.perf_counter(), [500]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = dict(message, headers=list(message.get("headers", [])) + [(b"x-request-id", rid.encode())])
            await send(message)

        try:
            if self.active >= self.limit:
                body = json.dumps({"error": f"busy: {self.active} requests in progress (the limit is "
                                            f"{self.limit}, --max-in-flight); retry in a second",
                                   "request_id": rid}).encode()
                await send_with_id({"type": "http.response.start", "status": 503,
                                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                                (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            self.active += 1
            self.metrics.in_flight.inc()
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.active -= 1
                self.metrics.in_flight.dec()
        finally:
            seconds = time.perf_counter() - t0
            self.metrics.observe(route, status[0], seconds)
            log.info("%s %s %d %.1f ms", scope.get("method", "-"), scope["path"], status[0], seconds * 1e3)
            REQUEST_ID.reset(token)


def create_app(predictor, *, max_batch: int = 16, max_wait_ms: float = 0.0, limits: Limits | None = None,
               warm_up: bool = True):
    """The FastAPI app serving ``predictor`` (see the module docstring).

    Args:
        predictor: a loaded :class:`mask_keras.inference.Predictor`.
        max_batch: rows per model batch.
        max_wait_ms: how long the first request of a batch waits for others (0: none).
        limits: :class:`Limits`.
        warm_up: compile the models' batch sizes up to ``max_batch`` before serving.

    Returns:
        The ASGI app (FastAPI inside the request-id / in-flight middleware); the FastAPI app is
        its ``.app``, the batcher ``.app.state.batcher``, the metrics ``.metrics``.

    Example:
        >>> app = create_app(Predictor.load("runs/efficientnet_gender"))   # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)                    # doctest: +SKIP
    """
    limits = limits or Limits()
    metrics = Metrics()
    batcher = Batcher(predictor, max_batch, max_wait_ms, on_batch=metrics.batch.observe)
    max_bytes = int(limits.max_body_mb * 1024 * 1024)
    meta = predictor.metadata()
    for m in meta["models"]:
        f = Path(m["path"]) / "metrics.json"
        m["metrics"] = ({k: v for k, v in json.loads(f.read_text()).items() if isinstance(v, (int, float, str))}
                        if f.is_file() else None)
    meta.update(artifact_sha256=predictor.digest(), limits=asdict(limits),
                batching={"max_batch": max_batch, "max_wait_ms": max_wait_ms})

    @asynccontextmanager
    async def lifespan(app):
        if warm_up:
            await asyncio.get_running_loop().run_in_executor(None, predictor.warm_up, max_batch)
        await batcher.start()
        yield
        await batcher.stop()
        predictor.close()  # the face detector's process, the decode threads

    app = FastAPI(title="mask_keras", version="1", lifespan=lifespan,
                  description="Mask, gender and age of the faces in a photo (see /docs).")
    app.state.batcher = batcher

    def error(status: int, message: str, headers=None) -> JSONResponse:
        if status >= 500:
            log.error("%d: %s", status, message)
        else:
            log.info("%d: %s", status, message)
        return JSONResponse({"error": message, "request_id": REQUEST_ID.get()}, status_code=status, headers=headers)

    async def read_body(request) -> bytes:
        declared = request.headers.get("content-length")
        declared = int(declared) if declared is not None and declared.isdigit() else None
        if declared is not None and declared > max_bytes:
            raise BadImage(f"request body of {declared:,} bytes is over --max-body-mb {limits.max_body_mb:g}", 413)
        chunks, size = [], 0

        async def collect():
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise BadImage(f"request body is over --max-body-mb {limits.max_body_mb:g}", 413)
                chunks.append(chunk)

        try:
            await asyncio.wait_for(collect(), limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise BadImage(f"the request body did not arrive within {limits.body_timeout_s:g} s "
                           f"({size:,} bytes came); send it at once", 408) from None
        return b"".join(chunks)

    def from_json(body: bytes) -> list[tuple[str, bytes]]:
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise BadImage(f"JSON body: {e}") from None
        items = doc.get("images") if isinstance(doc, dict) else None
        if isinstance(doc, dict) and "image" in doc:
            items = [{"name": "image", "data": doc["image"]}]
        if not isinstance(items, list) or not items:
            raise BadImage('JSON body: send {"images": [{"name": "a.jpg", "data": "<base64>"}]} or '
                           '{"image": "<base64>"}')
        out = []
        for i, it in enumerate(items):
            data = it.get("data") if isinstance(it, dict) else it
            name = str(it.get("name", f"images[{i}]")) if isinstance(it, dict) else f"images[{i}]"
            if not isinstance(data, str):
                raise BadImage(f"JSON body: images[{i}].data must be a base64 string")
            try:
                out.append((name, base64.b64decode(data.split(",", 1)[-1] if data.startswith("data:") else data,
                                                   validate=True)))
            except (binascii.Error, ValueError) as e:
                raise BadImage(f"JSON body: images[{i}] ({name}): not base64 ({e})") from None
        return out

    async def images_of(request) -> list[tuple[str, bytes]]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (ctype in ("multipart/form-data", "application/json") or ctype in RAW_TYPES
                or ctype.startswith("image/")):
            raise BadImage(f"Content-Type {ctype or '(none)'!r}: send multipart/form-data, application/json "
                           f"(base64) or the image bytes as image/jpeg, image/png, image/webp or "
                           f"application/octet-stream", 415)
        body = await read_body(request)
        if ctype == "multipart/form-data":
            async def stream():
                yield body

            try:
                form = await MultiPartParser(request.headers, stream(), max_files=limits.max_images + 1,
                                             max_fields=100, max_part_size=max_bytes).parse()
            except MultiPartException as e:
                raise BadImage(f"multipart body: {e.message}") from None
            files = [(f"{k} ({v.filename})", await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
            if not files:
                raise BadImage("multipart body holds no file; send the image(s) as file fields")
        elif ctype == "application/json":
            files = from_json(body)
        else:
            files = [("body", body)]
        if len(files) > limits.max_images:
            raise BadImage(f"{len(files)} images in one request; at most {limits.max_images} (--max-images)", 413)
        return files

    predict_doc = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "additionalProperties": {"type": "string",
                                                                                      "format": "binary"}}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object", "properties": {"images": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"},
                                             "data": {"type": "string", "format": "byte"}}}}}}}}},
        "responses": {str(s): {"description": d} for s, d in (
            (400, "not an image, undecodable, bad JSON or base64"), (408, "the body came too slowly"),
            (413, "too large: body, images or pixels"), (415, "unknown Content-Type"),
            (422, "no face (--no-face error)"), (503, "busy: retry after Retry-After seconds"))}}

    @app.post("/predict", openapi_extra=predict_doc, summary="Answer the faces in one or several photos")
    async def predict(request: Request):
        loop = asyncio.get_running_loop()
        try:
            files = await images_of(request)
            inputs = [ImageInput.from_bytes(n, d, limits.max_pixels) for n, d in files]
            prepared = await loop.run_in_executor(None, predictor.prepare, inputs, "raise")
        except BadImage as e:
            return error(e.status, str(e))
        try:
            rows = await batcher.answer(prepared)
        except Exception as e:  # noqa: BLE001 - the request fails, the service goes on
            return error(500, f"prediction failed: {type(e).__name__}: {e}")
        metrics.images.inc(len(files))
        log.info("answered %d image(s), %d row(s)", len(files), len(rows))
        return {"request_id": REQUEST_ID.get(), "predictions": rows}

    @app.get("/health", summary="Liveness")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata", summary="Models, settings, limits and counters")
    async def metadata():
        return {**meta, "stats": dict(batcher.stats)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error(400, f"{request.method} {request.url.path}: {exc.errors()}")

    return ServedApp(InFlightLimit(app, limits.max_in_flight, metrics), app, metrics)


class ServedApp:
    """The ASGI callable uvicorn runs: the middleware, with the FastAPI app and metrics at hand.

    Args:
        asgi: the middleware-wrapped app.
        app: the FastAPI app.
        metrics: its :class:`~mask_keras.serving.metrics.Metrics`.
    """

    def __init__(self, asgi, app, metrics):
        self.asgi, self.app, self.metrics = asgi, app, metrics

    async def __call__(self, scope, receive, send):
        await self.asgi(scope, receive, send)
