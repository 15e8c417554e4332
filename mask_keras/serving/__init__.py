"""Serving: the HTTP service (:mod:`~mask_keras.serving.app`), its batching queue
(:mod:`~mask_keras.serving.batcher`), metrics (:mod:`~mask_keras.serving.metrics`), page
(:mod:`~mask_keras.serving.page`) and runner (:mod:`~mask_keras.serving.server`)."""
from .app import Limits, create_app  # noqa: F401
from .server import BackgroundServer, free_port, serve  # noqa: F401
