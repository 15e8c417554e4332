"""An HTTP service for trained artifacts: ``mask-keras serve ARTIFACT [--host] [--port]``.

Starlette (the ASGI app) on uvicorn (the server), both well kept; what is written here is
only the routes, the input checks and the batching queue.

Routes:

* ``POST /predict``: one or several images, as ``multipart/form-data`` (any field names) or
  as the raw body (``Content-Type: image/jpeg``, ``image/png``, ``image/webp``,
  ``application/octet-stream``). Returns ``{"predictions": [...]}``: per image its
  ``class`` (0-17 when the models cover the three tasks), the ``mask``/``gender``/``age``
  names, the probabilities, and ``crop_box`` ``[y0, x0, y1, x1]`` (pixels of the sent image)
  of the first model's crop.
* ``GET /health``: ``{"status": "ok"}``; ``GET /metadata``: tasks, models (task, backbone,
  image size, crop, training metrics), the artifacts' SHA-256, the queue's settings and
  counters (requests, images, batches, the largest batch).
* ``GET /``: a page: drop or pick a photo, see the crop drawn on it and the answers.

Concurrent requests are batched: a queue collects images until ``max_batch`` of them are
waiting or the oldest has waited ``max_wait_ms``, and the models run once on them all (in a
worker thread, so the server keeps accepting), so throughput grows with load.

Bad input gets a 4xx JSON ``{"error": ...}`` saying what was wrong, and the service goes on:
a body over ``max_body_mb`` (413), more than ``max_images`` images (413), bytes that are not
an image or a truncated image (400), an image over ``max_pixels`` pixels, a decompression
bomb included (413: the size is read from the header before anything is decoded), an unknown
route (404), a wrong method (405). The artifacts are loaded before the server listens: a
model that cannot be loaded stops ``serve`` with the reason.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import socket
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from .pipeline import sniff_format
from .predictor import Predictor, answer_records

log = logging.getLogger(__name__)

RAW_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "application/octet-stream")


class BadImage(ValueError):
    """An uploaded image the service refuses; ``status`` is the HTTP code to answer with.

    Args:
        message: what is wrong, sent as the JSON ``error``.
        status: the HTTP status, 400 (bad data), 413 (too large) or 415 (content type).
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Limits:
    """What one request may hold.

    Args:
        max_body_mb: request body size.
        max_images: images in one request.
        max_pixels: width x height of one image (read from its header before decoding).
    """

    max_body_mb: float = 20.0
    max_images: int = 16
    max_pixels: int = 40_000_000


def check_image(name: str, data: bytes, limits: Limits) -> tuple[int, int]:
    """``(height, width)`` of an encoded image, or :class:`BadImage` saying why it is refused.

    Args:
        name: how messages name the image (e.g. its form field and file name).
        data: the encoded bytes (JPEG, PNG, WebP, GIF or BMP), fully decoded as a check.
        limits: the request :class:`Limits` (``max_pixels``, from the header: 413).

    Returns:
        ``(height, width)`` in pixels.

    Example:
        >>> buf = io.BytesIO(); Image.new("RGB", (4, 3)).save(buf, "PNG")
        >>> check_image("x.png", buf.getvalue(), Limits())
        (3, 4)
        >>> check_image("x.png", b"hello", Limits())
        Traceback (most recent call last):
        ...
        mask_keras.serve.BadImage: x.png: not a JPEG/PNG/WebP/GIF/BMP image (starts with b'hello')
    """
    if not data:
        raise BadImage(f"{name}: empty")
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise BadImage(f"{name}: not a JPEG/PNG/WebP/GIF/BMP image (starts with {data[:8]!r})")
    try:
        with Image.open(io.BytesIO(data)) as im:  # the header only
            w, h = im.size
            if w * h > limits.max_pixels:
                raise BadImage(f"{name}: {w}x{h} pixels is over the limit of {limits.max_pixels:,} "
                               f"(send a smaller photo)", 413)
            im.load()  # a full decode: truncated or corrupt data fails here
    except BadImage:
        raise
    except Image.DecompressionBombError as e:  # PIL refuses > 2x its own pixel limit at open
        raise BadImage(f"{name}: over the limit of {limits.max_pixels:,} pixels ({e})", 413) from None
    except Exception as e:  # PIL raises many types for broken data
        raise BadImage(f"{name}: cannot decode this {fmt} ({type(e).__name__}: {e})") from None
    return h, w


@dataclass
class _Item:
    data: bytes
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collects images from concurrent requests and runs the predictor once per batch.

    Args:
        predictor: a :class:`mask_keras.predictor.Predictor`.
        max_batch: run as soon as this many images wait.
        max_wait_ms: or when the oldest has waited this long.
    """

    def __init__(self, predictor, max_batch: int = 16, max_wait_ms: float = 10.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.predictor, self.max_batch, self.max_wait = predictor, int(max_batch), max_wait_ms / 1000.0
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.stats = {"requests": 0, "images": 0, "batches": 0, "largest_batch": 0}

    async def start(self) -> None:
        """Create the queue and start the batching task (in the running event loop)."""
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Cancel the batching task."""
        if self.task is not None:
            self.task.cancel()

    async def predict(self, images: list[bytes]) -> list[dict]:
        """Queue the images of one request and wait for their answers (after :meth:`start`).

        Args:
            images: encoded images.

        Returns:
            One answer dict per image, in order (``/predict``'s ``predictions``).
        """
        loop = asyncio.get_running_loop()
        items = [_Item(d, loop.create_future()) for d in images]
        for it in items:
            self.queue.put_nowait(it)
        self.stats["requests"] += 1
        return list(await asyncio.gather(*(it.future for it in items)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():  # what waited during the last batch
                batch.append(self.queue.get_nowait())
            deadline = batch[0].queued + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            self.stats["batches"] += 1
            self.stats["images"] += len(batch)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            try:
                rows = await loop.run_in_executor(None, self._predict, [it.data for it in batch])
                for it, row in zip(batch, rows):
                    if not it.future.done():
                        it.future.set_result(row)
            except Exception as e:  # noqa: BLE001 - reported to every waiting request, the loop goes on
                log.exception("prediction failed")
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(e)

    def _predict(self, images: list[bytes]) -> list[dict]:
        with tempfile.TemporaryDirectory(prefix="mask_keras_serve_") as tmp:
            files = []
            for i, data in enumerate(images):
                f = Path(tmp) / f"{i:05d}.img"
                f.write_bytes(data)
                files.append(str(f))
            table = self.predictor.predict_files(files, on_error="raise")
        return answer_records(table, drop=("path", "error"))


def artifact_digest(predictor) -> str:
    """SHA-256 over every model's ``model.keras`` and ``config.json``, in order.

    Args:
        predictor: a loaded :class:`mask_keras.predictor.Predictor`.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    for a in predictor.artifacts:
        for name in ("model.keras", "config.json"):
            h.update((a.path / name).read_bytes())
    return h.hexdigest()


def create_app(predictor, *, max_batch: int = 16, max_wait_ms: float = 10.0, limits: Limits | None = None):
    """The Starlette app serving ``predictor`` (see the module docstring).

    Args:
        predictor: a loaded :class:`mask_keras.predictor.Predictor`.
        max_batch: images per model call.
        max_wait_ms: how long the first image of a batch waits for others.
        limits: :class:`Limits` of one request.

    Returns:
        A ``starlette.applications.Starlette`` app (its batcher in ``app.state.batcher``).

    Example:
        >>> app = create_app(Predictor.load("runs/efficientnet_gender"))   # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)                    # doctest: +SKIP
    """
    limits = limits or Limits()
    batcher = Batcher(predictor, max_batch, max_wait_ms)
    max_bytes = int(limits.max_body_mb * 1024 * 1024)
    meta = predictor.metadata()
    for m, a in zip(meta["models"], predictor.artifacts):
        metrics = a.path / "metrics.json"
        m["metrics"] = ({k: v for k, v in json.loads(metrics.read_text()).items() if isinstance(v, (int, float, str))}
                        if metrics.is_file() else None)
    meta.update(artifact_sha256=artifact_digest(predictor),
                limits={"max_body_mb": limits.max_body_mb, "max_images": limits.max_images,
                        "max_pixels": limits.max_pixels},
                batching={"max_batch": max_batch, "max_wait_ms": max_wait_ms})

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    # an oversized body is still read (and dropped) up to this much before the 413 goes out:
    # a client that sends its whole body before reading the answer (urllib, requests) then
    # gets the 413 instead of a broken pipe; past it the connection is closed
    drain_cap = max(4 * max_bytes, 64 * 1024 * 1024)

    async def read_body(request) -> bytes:
        declared = request.headers.get("content-length")
        declared = int(declared) if declared is not None and declared.isdigit() else None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes or (declared or 0) > max_bytes:
                chunks = None
                if size > drain_cap:
                    break
                continue
            chunks.append(chunk)
        if chunks is None:
            what = f"of {declared:,} bytes " if declared else ""
            raise BadImage(f"request body {what}is over --max-body-mb {limits.max_body_mb:g}", 413)
        return b"".join(chunks)

    async def images_of(request) -> list[tuple[str, bytes]]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
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
        elif ctype in RAW_TYPES or ctype.startswith("image/"):
            files = [("body", body)]
        else:
            raise BadImage(f"Content-Type {ctype or '(none)'!r}: send multipart/form-data or the image bytes "
                           f"as image/jpeg, image/png, image/webp or application/octet-stream", 415)
        if len(files) > limits.max_images:
            raise BadImage(f"{len(files)} images in one request; at most {limits.max_images} (--max-images)", 413)
        return files

    async def predict(request):
        try:
            files = await images_of(request)
            for name, data in files:
                check_image(name, data, limits)
        except BadImage as e:
            return error(e.status, str(e))
        try:
            rows = await batcher.predict([d for _, d in files])
        except Exception as e:  # noqa: BLE001 - the request fails, the service goes on
            return error(500, f"prediction failed: {type(e).__name__}: {e}")
        return JSONResponse({"predictions": rows})

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def metadata(request):
        return JSONResponse({**meta, "stats": dict(batcher.stats)})

    async def page(request):
        return HTMLResponse(PAGE)

    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()
        predictor.close()  # the face detector's process, if one was started

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health),
                            Route("/metadata", metadata), Route("/", page)],
                    exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.batcher = batcher
    return app


def serve(artifacts, host: str = "127.0.0.1", port: int = 8000, *, max_batch: int = 16, max_wait_ms: float = 10.0,
          limits: Limits | None = None, **predictor_kw) -> None:
    """Load the artifacts (failing now if one cannot be), then serve until interrupted.

    Args:
        artifacts: run, K-fold or ensemble directories, as ``Predictor.load`` takes them.
        host: the interface to listen on.
        port: the TCP port.
        max_batch: images per model call.
        max_wait_ms: how long the first image of a batch waits for others.
        limits: :class:`Limits` of one request (None: the defaults).
        **predictor_kw: ``Predictor.load``'s settings (``vote``, ``tta``, ``batch_size``, ...).
    """
    import uvicorn

    predictor = Predictor.load(*artifacts, **predictor_kw)
    app = create_app(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms, limits=limits)
    log.info("serving %d model(s) (%s) on http://%s:%d", len(predictor.artifacts), ", ".join(predictor.tasks),
             host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (another process may take it before you do).

    Args:
        host: the interface to bind to.

    Returns:
        The port number.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn serving ``app`` in a daemon thread on ``host`` (127.0.0.1) and a free port, for tests
    and benchmarks; it stops on :meth:`stop`, on leaving a ``with`` block, or after ``limit_s``.
    Args:
        app: the ASGI app, e.g. from :func:`create_app`.
        host: the interface to listen on.
        port: the TCP port (None: :func:`free_port`).
        limit_s: seconds after which the server stops by itself. The constructor returns
            once the server listens (RuntimeError if it has not within 60 s).

    Example:
        >>> with BackgroundServer(create_app(predictor)) as srv:          # doctest: +SKIP
        ...     urllib.request.urlopen(srv.url("/health")).read()
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, limit_s: float = 900):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(limit_s, self.stop)
        self.timer.daemon = True
        self.timer.start()
        t0 = time.time()
        while not self.server.started:
            if time.time() - t0 > 60 or not self.thread.is_alive():
                self.stop()
                raise RuntimeError(f"the server did not start on {host}:{self.port}")
            time.sleep(0.05)

    def url(self, path: str = "/") -> str:
        """The URL of ``path`` on this server.

        Args:
            path: the route, starting with ``/``.

        Returns:
            ``http://<host>:<port><path>``.
        """
        return f"http://{self.host}:{self.port}{path}"

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread (up to 30 s)."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.timer.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mask_keras</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#222}
 #drop{border:2px dashed #888;border-radius:8px;padding:2em;text-align:center;cursor:pointer}
 #drop.over{background:#eef}
 canvas{max-width:100%;margin-top:1em}
 table{border-collapse:collapse;margin-top:1em} td,th{padding:.2em .8em;text-align:left}
 .bar{background:#4a7;height:.8em;display:inline-block}
 #error{color:#b00}
</style></head><body>
<h1>Mask, gender and age</h1>
<div id="drop">Drop a photo here, or <label><u>pick one</u>
 <input id="file" type="file" accept="image/*" hidden></label></div>
<p id="error"></p>
<canvas id="canvas" width="0" height="0"></canvas>
<div id="answers"></div>
<script>
const drop = document.getElementById("drop"), input = document.getElementById("file");
const canvas = document.getElementById("canvas"), answers = document.getElementById("answers");
const errorBox = document.getElementById("error");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]); });
input.addEventListener("change", () => { if (input.files.length) send(input.files[0]); });
async function send(file) {
  errorBox.textContent = ""; answers.innerHTML = "";
  const body = new FormData(); body.append("image", file);
  const res = await fetch("/predict", {method: "POST", body});
  const data = await res.json();
  if (!res.ok) { errorBox.textContent = data.error; return; }
  const p = data.predictions[0];
  const img = new Image();
  img.onload = () => {
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d"); ctx.drawImage(img, 0, 0);
    const [y0, x0, y1, x1] = p.crop_box;
    ctx.strokeStyle = "#0c0"; ctx.lineWidth = Math.max(2, img.naturalWidth / 150);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  };
  img.src = URL.createObjectURL(file);
  let html = "<table><tr><th>task</th><th>answer</th><th>probabilities</th></tr>";
  for (const task of ["mask", "gender", "age"]) {
    if (p[task] === null || p[task] === undefined) continue;
    const probs = Object.keys(p).filter(k => k.startsWith("p_" + task + "_"))
      .map(k => `${k.slice(task.length + 3)} <span class="bar" style="width:${Math.round(p[k] * 120)}px"></span>
                 ${(100 * p[k]).toFixed(1)}%`).join("<br>");
    html += `<tr><td>${task}</td><td class="answer" data-task="${task}"><b>${p[task]}</b></td><td>${probs}</td></tr>`;
  }
  answers.innerHTML = html + "</table>" + (p["class"] === null ? "" : `<p>class ${p["class"]}</p>`);
}
</script></body></html>
"""
