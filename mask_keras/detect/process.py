"""Parent side of the detector: one long-lived MTCNN worker process (TensorFlow backend)."""
from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .worker import recv, send

log = logging.getLogger(__name__)

DEVICES = ("cpu", "gpu")


class DetectorError(RuntimeError):
    """The detector process could not start or died; the message carries its stderr tail."""


def worker_env(device: str = "cpu") -> dict:
    """Environment of the worker: the TensorFlow backend chosen before anything imports Keras.

    Args:
        device: "cpu" hides every GPU from the worker (``CUDA_VISIBLE_DEVICES=-1``); "gpu" leaves
            the devices as they are.

    Returns:
        A copy of ``os.environ`` with ``KERAS_BACKEND=tensorflow``, ``TF_CPP_MIN_LOG_LEVEL``
        (default 2) and this package's parent folder first on ``PYTHONPATH``.
    """
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "tensorflow"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"  # TF never touches the GPU that JAX may own
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


class Detector:
    """MTCNN in a separate process with ``KERAS_BACKEND=tensorflow``; batched, reusable.

    Usage::

        with Detector() as det:
            results = det.detect([path_or_bytes, ...])

    Each result is ``{"width", "height", "faces": float32 (k, 15), "error": None | str}``
    (``faces`` columns: :data:`mask_keras.detect.geometry.FACE_FIELDS`, every face MTCNN
    kept, confidence >= 0.8). The process starts on first use (several seconds: it imports
    TensorFlow and builds the three networks) and stays up until :meth:`close`.

    Args:
        device: "cpu" (default; the worker hides every GPU from TensorFlow so a JAX
            training process keeps its accelerator) or "gpu" (TensorFlow on GPU:0 with memory
            growth; only when nothing else holds the GPU).
        start_timeout: seconds :meth:`start` waits for the worker's first reply (it imports
            TensorFlow and builds MTCNN); past it the worker is killed and
            :class:`DetectorError` raised.

    Raises:
        ValueError: an unknown ``device``.
    """

    def __init__(self, device: str = "cpu", start_timeout: float = 600.0):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        self.device = device
        self.start_timeout = start_timeout
        self.versions: dict = {}
        self._proc: subprocess.Popen | None = None
        self._log = None
        self.images_done = 0
        self.start_seconds = 0.0

    # ---- lifecycle -----------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the worker process is started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The worker's process id (None before :meth:`start` and after :meth:`close`)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> "Detector":
        """Start the worker unless it runs; sets :attr:`versions` from its first reply.

        Returns:
            ``self``.

        Raises:
            DetectorError: the worker could not import ``mtcnn``/TensorFlow, died, or did not
                answer within ``start_timeout`` (with its stderr tail).
        """
        if self.running:
            return self
        t = time.perf_counter()
        self._log = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "mask_keras.detect.worker", "--device", self.device]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                      env=worker_env(self.device))
        # a worker hung in its imports (or a starved machine) must not block the caller forever
        ready, _, _ = select.select([self._proc.stdout], [], [], float(self.start_timeout))
        if not ready:
            self._proc.kill()
            self._proc.wait()
            self._fail("start", {"fatal": f"no answer within start_timeout={self.start_timeout} s; raise it "
                                          f"(Detector(start_timeout=...)) on a slow or busy machine"})
        hello = self._reply("start")
        if not isinstance(hello, dict) or not hello.get("ok"):
            self._fail("start", hello)
        self.versions = hello["versions"]
        self.start_seconds = time.perf_counter() - t
        log.info("face detector up in %.1f s (pid %d): %s", self.start_seconds, self._proc.pid, self.versions)
        return self

    def close(self) -> None:
        """Ask the worker to stop (killed after 30 s) and release its pipes; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                try:
                    send(proc.stdin, ("stop",))
                    proc.stdin.close()
                except (BrokenPipeError, OSError, ValueError):
                    pass
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            for s in (proc.stdin, proc.stdout):
                try:
                    s.close()
                except Exception:
                    pass
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> "Detector":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- work ----------------------------------------------------------------
    def detect(self, images) -> list[dict]:
        """Detect faces in a batch: paths (str/Path), encoded image bytes or decoded uint8 RGB arrays.

        Starts the worker on first use. An image that cannot be decoded gets an ``error``,
        not an exception.

        Args:
            images: a list of paths (read here), encoded image bytes (JPEG, PNG, ...) or uint8
                ``(H, W, 3)`` RGB arrays (sent as they are: no encode and decode in between).

        Returns:
            One dict per image, in order: ``{"width", "height", "faces": float32 (k, 15),
            "error": None | str}`` (see the class docstring; width/height -1 when undecodable).

        Raises:
            OSError: a path cannot be read.
            DetectorError: the worker died or answered out of protocol.
        """
        blobs = [Path(x).read_bytes() if isinstance(x, (str, os.PathLike))
                 else np.ascontiguousarray(x, dtype=np.uint8) if isinstance(x, np.ndarray) else bytes(x)
                 for x in images]
        if not blobs:
            return []
        self.start()
        try:
            send(self._proc.stdin, ("detect", blobs))
        except (BrokenPipeError, OSError) as e:
            self._fail("detect", None, e)
        out = self._reply("detect")
        if not isinstance(out, list) or len(out) != len(blobs):
            self._fail("detect", out)
        for r in out:
            r["faces"] = np.asarray(r["faces"], dtype=np.float32).reshape(-1, 15)
        self.images_done += len(blobs)
        return out

    def _reply(self, what: str):
        try:
            msg = recv(self._proc.stdout)
        except Exception as e:  # a torn frame: the worker died mid-write
            self._fail(what, None, e)
        if msg is None or (isinstance(msg, dict) and "fatal" in msg):
            self._fail(what, msg)
        return msg

    def stderr_tail(self, n: int = 3000) -> str:
        """The end of the worker's stderr (kept in a temporary file), for error messages.

        Args:
            n: at most this many bytes from the end.

        Returns:
            The text (decoded as UTF-8, errors replaced); ``""`` when there is none.
        """
        if self._log is None:
            return ""
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - n))
            return self._log.read().decode("utf-8", "replace")
        except Exception:
            return ""

    def _fail(self, what: str, msg, exc: Exception | None = None):
        detail = msg["fatal"] if isinstance(msg, dict) and "fatal" in msg else ""
        tail = self.stderr_tail()
        code = self._proc.poll() if self._proc is not None else None
        self.close()
        raise DetectorError(
            f"face detector process failed during {what} (exit code {code}"
            f"{'; ' + type(exc).__name__ + ': ' + str(exc) if exc else ''}).\n"
            f"{detail}\n--- worker stderr (tail) ---\n{tail}\n"
            "Check that `mtcnn` and `tensorflow` import in this environment "
            "(KERAS_BACKEND=tensorflow python -c 'import mtcnn; mtcnn.MTCNN()').")
