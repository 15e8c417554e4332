"""Running the service: :func:`serve` (``mask-keras serve``) and :class:`BackgroundServer` (tests,
benchmarks).

``serve`` loads the artifacts before it listens (a model that cannot be loaded stops it with
the reason), compiles the models' batch sizes, then serves until SIGINT or SIGTERM: uvicorn
stops accepting, lets the requests in progress finish (up to ``graceful_s``), then the
lifespan stops the batcher and the face detector, and the process exits 0. Log lines carry
the request id (``[<id>]``); each request is logged once, with its status and time.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

from ..inference import Predictor
from .app import Limits, RequestIdFilter, create_app

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def log_config() -> dict:
    """uvicorn's logging config with the request id in every line (uvicorn's access log off: the
    service logs each request itself, with its id).

    Returns:
        A :func:`logging.config.dictConfig` dict.
    """
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"],
               "stream": "ext://sys.stderr"}
    return {"version": 1, "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}},
            "formatters": {"plain": {"format": LOG_FORMAT}},
            "handlers": {"default": handler},
            "loggers": {"uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
                        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
                        "mask_keras": {"handlers": ["default"], "level": "INFO", "propagate": False}}}


def serve(artifacts, host: str = "127.0.0.1", port: int = 8000, *, max_batch: int = 16, max_wait_ms: float = 0.0,
          limits: Limits | None = None, graceful_s: float = 30.0, **predictor_kw) -> None:
    """Load the artifacts (failing now if one cannot be), then serve until SIGINT / SIGTERM.

    Args:
        artifacts: run, K-fold, ensemble or export folders, as ``Predictor.load`` takes them.
        host: the interface to listen on.
        port: the TCP port.
        max_batch: rows per model batch.
        max_wait_ms: how long the first request of a batch waits for others.
        limits: :class:`~mask_keras.serving.app.Limits` (None: the defaults).
        graceful_s: on SIGTERM, how long requests in progress may take to finish.
        **predictor_kw: ``Predictor.load``'s settings (``vote``, ``tta``, ``no_face``, ...).
    """
    import uvicorn

    predictor = Predictor.load(*artifacts, batch_size=max(64, max_batch), **predictor_kw)
    app = create_app(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms, limits=limits)
    log.info("serving %d model(s) (%s) on http://%s:%d (docs: /docs, metrics: /metrics)", len(predictor.members),
             ", ".join(predictor.tasks), host, port)
    # an idle keep-alive connection is closed after 5 s (uvicorn's own timeout, set here so it is not
    # left to a default); a slow body is the app's 408 (Limits.body_timeout_s), in-flight the app's 503
    uvicorn.run(app, host=host, port=port, log_config=log_config(), timeout_graceful_shutdown=graceful_s,
                timeout_keep_alive=5)


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
        app: the ASGI app, e.g. from :func:`~mask_keras.serving.app.create_app`.
        host: the interface to listen on.
        port: the TCP port (None: :func:`free_port`).
        limit_s: seconds after which the server stops by itself. The constructor returns
            once the server listens (RuntimeError if it has not within 120 s).

    Example:
        >>> with BackgroundServer(create_app(predictor)) as srv:          # doctest: +SKIP
        ...     urllib.request.urlopen(srv.url("/health")).read()
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, limit_s: float = 900):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(limit_s, self.stop)
        self.timer.daemon = True
        self.timer.start()
        t0 = time.time()
        while not self.server.started:
            if time.time() - t0 > 120 or not self.thread.is_alive():
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
