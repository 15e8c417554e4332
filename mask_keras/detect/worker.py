"""The detector process: MTCNN on the TensorFlow backend, driven over pipes.

Started by :class:`mask_keras.detect.process.Detector` as
``python -m mask_keras.detect.worker --device cpu`` with ``KERAS_BACKEND=tensorflow`` in its
environment (set before anything imports Keras). Never import this module from the
training process: it imports TensorFlow and ``mtcnn``.

Protocol (both directions): frames of an 8-byte big-endian length + a pickle.

* worker -> parent, once at start: ``{"ok": True, "versions": {...}}`` or ``{"fatal": traceback}``
* parent -> worker: ``("detect", [image_bytes, ...])`` -> worker replies a list, one per
  image, of ``{"width", "height", "faces": float32 (k, 15), "error": None | str}``
  (columns of ``faces``: :data:`mask_keras.detect.geometry.FACE_FIELDS`)
* parent -> worker: ``("stop",)`` or end of input -> the worker exits 0.

The protocol uses a private copy of the original stdout; file descriptor 1 is pointed at
stderr so that anything a library prints cannot corrupt a frame.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import struct
import sys
import traceback
from importlib import metadata

import keras
import numpy as np
from PIL import Image, UnidentifiedImageError

#: images whose shorter side is below this cannot hold a face MTCNN finds (its smallest
#: face is 20 px) and break its image pyramid; they are reported as "no face"
MIN_SIDE = 24
#: worker output column order -> from mtcnn's (x0, y0, x1, y1, conf, 5 landmark x, 5 landmark y)
_REORDER = [1, 2, 3, 4, 5, 6, 11, 7, 12, 8, 13, 9, 14, 10, 15]
_HEADER = struct.Struct(">Q")


def send(stream, obj) -> None:
    """Write one frame: the 8-byte big-endian length of ``obj``'s pickle, then the pickle; flush.

    Args:
        stream: a binary file object open for writing (a pipe).
        obj: any picklable object.

    Example:
        >>> import io
        >>> buf = io.BytesIO()
        >>> send(buf, ("detect", [b"..."]))
        >>> _ = buf.seek(0)
        >>> recv(buf), recv(buf)
        (('detect', [b'...']), None)
    """
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_exact(stream, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def recv(stream):
    """One frame, or None at end of stream.

    Args:
        stream: a binary file object open for reading (a pipe).

    Returns:
        The unpickled object of the next frame; None when the stream ends, also in the
        middle of a frame (the writer died).
    """
    head = _read_exact(stream, _HEADER.size)
    if head is None:
        return None
    data = _read_exact(stream, _HEADER.unpack(head)[0])
    if data is None:
        return None
    return pickle.loads(data)


def decode(data: bytes) -> np.ndarray:
    """Decode image bytes to float32 RGB ``(H, W, 3)`` in 0..255 (EXIF orientation ignored, as tf.io does).

    Args:
        data: an encoded image (any format Pillow reads).

    Returns:
        float32 ``(H, W, 3)``.

    Raises:
        Exception: what Pillow raises for a broken file (see :func:`decode_error`).

    Example:
        >>> import io
        >>> from PIL import Image
        >>> png = io.BytesIO()
        >>> Image.new("RGB", (4, 3), (255, 0, 0)).save(png, format="PNG")
        >>> x = decode(png.getvalue())
        >>> x.shape, x.dtype, x[0, 0].tolist()
        ((3, 4, 3), dtype('float32'), [255.0, 0.0, 0.0])
    """
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im.load()
        return np.asarray(im, dtype=np.float32)


def decode_error(e: Exception) -> str:
    """The ``error`` text of an image that :func:`decode` could not decode.

    Args:
        e: the exception :func:`decode` raised.

    Returns:
        ``"cannot decode image: ..."``.

    Example:
        >>> decode_error(ValueError("truncated"))
        'cannot decode image: ValueError: truncated'
    """
    if isinstance(e, UnidentifiedImageError):
        return "cannot decode image: not a recognised image format (corrupt, empty or not an image)"
    return f"cannot decode image: {type(e).__name__}: {e}"


class MtcnnRunner:
    """MTCNN (P-Net -> R-Net -> O-Net) over same-size batches, errors kept per image.

    Runs inside the worker only (imports TensorFlow and ``mtcnn``).

    Args:
        device: "cpu" (every GPU hidden from TensorFlow) or "gpu" (GPU:0 with memory growth;
            CPU:0 when there is none).

    Raises:
        RuntimeError: ``KERAS_BACKEND`` is not ``tensorflow`` in this process.
    """

    def __init__(self, device: str = "cpu"):
        if os.environ.get("KERAS_BACKEND") != "tensorflow":
            raise RuntimeError("the detector worker needs KERAS_BACKEND=tensorflow set before start "
                               f"(got {os.environ.get('KERAS_BACKEND')!r}); start it via mask_keras.detect.Detector")
        import tensorflow as tf

        if device == "cpu":
            tf.config.set_visible_devices([], "GPU")
            tf_device = "CPU:0"
        else:
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
            tf_device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"

        from mtcnn import MTCNN

        self.tf = tf
        self.tf_device = tf_device
        self.mtcnn = MTCNN(device=tf_device)
        self.versions = {"mtcnn": metadata.version("mtcnn"), "tensorflow": tf.__version__,
                         "keras": keras.__version__, "keras_backend": keras.backend.backend(),
                         "device": tf_device}

    def run(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Faces (float32 ``(k, 15)``) of each image of a same-shape batch.

        Args:
            images: float32 RGB ``(H, W, 3)`` arrays in 0..255, all the same shape.

        Returns:
            One float32 ``(k, 15)`` array per image (columns:
            :data:`mask_keras.detect.geometry.FACE_FIELDS`); ``k = 0`` without a face.

        Raises:
            Exception: a failure of a stage (not turned into "no face").
        """
        from mtcnn.utils.bboxes import fix_bboxes_offsets, limit_bboxes
        from mtcnn.utils.images import standarize_batch

        n = len(images)
        empty = [np.zeros((0, 15), np.float32) for _ in range(n)]
        with self.tf.device(self.tf_device):
            x, oshapes, pad = standarize_batch(images, normalize=True)
            b = None
            # mtcnn's own detect_faces() turns *any* InvalidArgumentError into "no faces"
            # (for the whole batch); stopping as soon as a stage has no candidates keeps
            # "no face" apart from a real failure, which then raises.
            for stage in self.mtcnn.stages:
                b = stage(bboxes_batch=b, images_normalized=x, images_oshapes=oshapes)
                if len(b) == 0:
                    return empty
        if b.shape[1] < 16:
            raise RuntimeError(f"O-Net returned {b.shape[1]} columns, expected 16 (box, confidence, landmarks)")
        b = fix_bboxes_offsets(b, pad)
        b = limit_bboxes(b, images_shapes=oshapes, limit_landmarks=False)
        out = []
        for i in range(n):
            rows = b[b[:, 0].astype(int) == i]
            out.append(rows[:, _REORDER].astype(np.float32))
        return out

    def detect_many(self, blobs: list) -> list[dict]:
        """Decode and detect a batch of encoded images, grouped by size, each failure kept to its image.

        Args:
            blobs: encoded images (bytes), or decoded uint8 RGB arrays ``(H, W, 3)`` (used as they are).

        Returns:
            One ``{"width", "height", "faces": float32 (k, 15), "error": None | str}`` per blob,
            in order: width/height -1 when undecodable; no faces when the shorter side is below
            :data:`MIN_SIDE`; ``error`` set when decoding or the detector failed.
        """
        out: list[dict | None] = [None] * len(blobs)
        groups: dict[tuple, list[int]] = {}
        arrays: dict[int, np.ndarray] = {}
        for i, data in enumerate(blobs):
            try:
                arrays[i] = (np.asarray(data, dtype=np.float32) if isinstance(data, np.ndarray)
                             else decode(data))
            except Exception as e:  # PIL raises many types for broken files
                out[i] = {"width": -1, "height": -1, "faces": np.zeros((0, 15), np.float32),
                          "error": decode_error(e)}
                continue
            groups.setdefault(arrays[i].shape, []).append(i)
        for shape, idx in groups.items():
            h, w = int(shape[0]), int(shape[1])
            base = {"width": w, "height": h, "error": None}
            if min(h, w) < MIN_SIDE:
                for i in idx:
                    out[i] = dict(base, faces=np.zeros((0, 15), np.float32))
                continue
            try:
                faces = self.run([arrays[i] for i in idx])
                for i, f in zip(idx, faces):
                    out[i] = dict(base, faces=f)
            except Exception:
                for i in idx:  # isolate the failing image(s)
                    try:
                        out[i] = dict(base, faces=self.run([arrays[i]])[0])
                    except Exception as e:
                        out[i] = {"width": w, "height": h, "faces": np.zeros((0, 15), np.float32),
                                  "error": f"detector failed: {type(e).__name__}: {str(e).strip()[:500]}"}
        return out


def main(argv=None) -> int:
    """The worker's loop: build MTCNN, announce the versions, answer requests until stop.

    Args:
        argv: command-line arguments (``--device cpu|gpu``); None: ``sys.argv[1:]``.

    Returns:
        The exit code: 0 after ``("stop",)`` or end of input, 1 after a fatal error (sent
        to the parent as ``{"fatal": traceback}`` first).
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = ap.parse_args(argv)

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    try:
        runner = MtcnnRunner(args.device)
    except BaseException:
        send(out, {"fatal": traceback.format_exc()})
        return 1
    send(out, {"ok": True, "versions": runner.versions, "pid": os.getpid()})
    while True:
        msg = recv(inp)
        if msg is None or msg[0] == "stop":
            return 0
        try:
            if msg[0] != "detect":
                raise ValueError(f"unknown request {msg[0]!r}")
            send(out, runner.detect_many(list(msg[1])))
        except BaseException:
            send(out, {"fatal": traceback.format_exc()})
            return 1


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # skip TensorFlow's slow interpreter teardown; the worker holds no state
