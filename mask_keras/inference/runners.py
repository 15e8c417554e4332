"""One compiled model call per model, reused: batches padded to a few static sizes.

JAX (like XLA everywhere) compiles a program per input shape, so a service that called the
model on batches of 1, 3, 7 ... images would compile again and again. A runner pads every
batch up to the next of :data:`BUCKETS` (1, 2, 4, ... up to ``max_batch``; larger inputs are
cut into ``max_batch`` pieces), so a model compiles at most ``len(BUCKETS)`` programs in its
life (each kept by Keras, and across processes by the persistent compilation cache), and a
one-image request costs one compiled call, not a ``predict`` loop.

The Keras runner calls ``model.predict_on_batch`` (Keras compiles and caches its predict
function once; backend-agnostic); an export runner calls the export's own runtime on the same
cropped pixels (:meth:`mask_keras.inference.exported.ExportedModel.predict`).

Example:
    >>> [bucket(n, 16) for n in (1, 3, 5, 16)]
    [1, 4, 8, 16]
"""
from __future__ import annotations

import threading

import numpy as np

from .artifacts import model_outputs

#: the batch sizes a model is called with (those up to the runner's ``max_batch``)
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bucket(n: int, max_batch: int) -> int:
    """The batch size ``n`` images are padded to: the smallest bucket >= n (at most ``max_batch``).

    Args:
        n: images, 1 <= n <= max_batch.
        max_batch: the largest batch.

    Returns:
        The padded size.
    """
    for b in BUCKETS:
        if b >= n:
            return min(b, max_batch)
    return max_batch


def concat_outputs(parts):
    """Outputs of consecutive batches joined: arrays, or dicts of heads joined per head.

    Args:
        parts: a non-empty list of (n, C) arrays or of dicts ``{head: (n, C)}``.

    Returns:
        The joined array, or dict of arrays.
    """
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


class Runner:
    """Calls a model on uint8 ``(N, h, w, 3)`` pixels in padded static batches.

    Args:
        call: ``call(x) -> outputs`` for one padded batch (an array, a list or dict of heads).
        max_batch: the largest batch one call gets.
        name: how messages name the model.
    """

    def __init__(self, call, max_batch: int = 64, name: str = "model"):
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.call, self.max_batch, self.name = call, int(max_batch), name
        self.lock = threading.Lock()  # one call at a time: a model's state is not re-entrant
        self.calls = 0
        self.shapes: set = set()

    def __call__(self, x):
        """Outputs for every image of ``x``.

        Args:
            x: uint8 ``(N, h, w, 3)``, N >= 1.

        Returns:
            float32 ``(N, C)``, or ``{head: (N, C)}`` for a multi-head model.
        """
        x = np.asarray(x)
        parts = []
        for s in range(0, len(x), self.max_batch):
            chunk = x[s:s + self.max_batch]
            n = len(chunk)
            size = bucket(n, self.max_batch)
            if size > n:
                chunk = np.concatenate([chunk, np.zeros((size - n, *chunk.shape[1:]), chunk.dtype)])
            with self.lock:
                out = model_outputs(self.call(chunk))
                self.calls += 1
                self.shapes.add(chunk.shape)
            parts.append({k: v[:n] for k, v in out.items()} if isinstance(out, dict) else out[:n])
        return concat_outputs(parts)

    def warm_up(self, image_size, up_to: int | None = None) -> list[int]:
        """Compile the calls for every bucket up to ``up_to`` now (a service does this before it
        listens, so the first requests do not wait for XLA).

        Args:
            image_size: ``(h, w)`` of the model's input.
            up_to: the largest batch to compile (None: ``max_batch``).

        Returns:
            The batch sizes compiled.
        """
        top = min(self.max_batch, up_to or self.max_batch)
        sizes = sorted({bucket(b, self.max_batch) for b in BUCKETS if b <= top} | {top})
        for b in sizes:
            self(np.zeros((b, *image_size, 3), np.uint8))
        return sizes


def keras_runner(model, max_batch: int = 64, name: str = "model") -> Runner:
    """A :class:`Runner` of a Keras model (``predict_on_batch``: compiled once, no predict loop).

    Args:
        model: the ``keras.Model``.
        max_batch: the largest batch.
        name: how messages name it.

    Returns:
        The :class:`Runner`.
    """
    return Runner(model.predict_on_batch, max_batch, name)


def export_runner(exported, max_batch: int = 64) -> Runner:
    """A :class:`Runner` of an export folder's runtime, on the same cropped pixels.

    Args:
        exported: an :class:`mask_keras.inference.exported.ExportedModel`.
        max_batch: the largest batch.

    Returns:
        The :class:`Runner`.
    """
    return Runner(lambda x: exported.predict(x, batch_size=max_batch), max_batch, str(exported.path))
