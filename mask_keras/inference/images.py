"""Images in memory -> the pixels a model sees: read the header, decode once, crop, resize.

Every caller of the engine (files, arrays, uploaded bytes) comes through here, and the pixels
are the validation pipeline's own: the crop window is computed on the host with the one
formula (:func:`mask_keras.cropbox.window`) and handed to the pipeline's decode
(:func:`mask_keras.pipeline.decode.decode_and_preprocess`, which decodes a JPEG's window only,
scaled in the DCT) as a box, through a ``tf.function`` traced once per preprocessing and kept
for the process's life. No temporary file, no ``tf.data`` pipeline per call, no second decode
to check an upload: the header says the size (and the pixel limit is applied before anything
is decoded), and a corrupt image fails in its one decode.

Test-time views: the flipped view is the decoded view mirrored on the host; a crop view
(``crops=(0.9, 1.1)``) is the model's crop window scaled around its centre, decoded at its own
DCT scale (the scale depends on the window, so each crop view decodes its window).

Example:
    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "PNG")
    >>> item = ImageInput.from_bytes("red.png", buf.getvalue())
    >>> (item.height, item.width)
    (30, 40)
"""
from __future__ import annotations

import dataclasses
import functools
import io
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from PIL import Image

from .. import cropbox
from .._tf import tf
from ..config import TTA_CROP_RANGE
from ..pipeline.decode import decode_and_preprocess, preprocess_image, preprocess_key
from ..pipeline.files import sniff_format

#: a view's smallest side, in pixels of the photo
MIN_VIEW = 8


class BadImage(ValueError):
    """An image the engine refuses; ``status`` is the HTTP code a service answers with.

    Args:
        message: what is wrong (it names the image).
        status: 400 (bad data), 413 (too large) or 415 (not an image type).
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ImageInput:
    """One image to answer: encoded bytes or a decoded uint8 RGB array, its name and size.

    Attributes:
        name: how answers and messages name it (a path, a form field, ``images[3]``).
        data: the encoded bytes (JPEG, PNG, WebP, GIF, BMP), or None for an array.
        array: the decoded uint8 ``(H, W, 3)`` pixels, or None for bytes.
        height: pixels, from the header (bytes) or the shape (array).
        width: pixels.
    """

    name: str
    data: bytes | None
    array: np.ndarray | None
    height: int
    width: int

    @classmethod
    def from_bytes(cls, name: str, data: bytes, max_pixels: int | None = None) -> "ImageInput":
        """Check an encoded image's header (nothing is decoded) and keep its bytes.

        Args:
            name: how messages name the image.
            data: the encoded bytes.
            max_pixels: refuse (413) an image of more pixels; None: PIL's own bomb limit only.

        Returns:
            The :class:`ImageInput`.

        Raises:
            BadImage: empty, not an image format, an unreadable header, or too many pixels.

        Example:
            >>> ImageInput.from_bytes("x.png", b"hello")
            Traceback (most recent call last):
            ...
            mask_keras.inference.images.BadImage: x.png: not a JPEG/PNG/WebP/GIF/BMP image (starts with b'hello')
        """
        if not data:
            raise BadImage(f"{name}: empty")
        fmt = sniff_format(bytes(data[:16]))
        if fmt is None:
            raise BadImage(f"{name}: not a JPEG/PNG/WebP/GIF/BMP image (starts with {bytes(data[:8])!r})")
        try:
            with Image.open(io.BytesIO(data)) as im:  # the header only
                w, h = im.size
        except Image.DecompressionBombError as e:  # PIL refuses > 2x its own pixel limit at open
            limit = f"{max_pixels:,}" if max_pixels is not None else "PIL's own"
            raise BadImage(f"{name}: too many pixels, over the limit of {limit} ({e})", 413) from None
        except Exception as e:  # PIL raises many types for a broken header
            raise BadImage(f"{name}: cannot read this {fmt}'s header ({type(e).__name__}: {e})") from None
        if max_pixels is not None and w * h > max_pixels:
            raise BadImage(f"{name}: {w}x{h} pixels is over the limit of {max_pixels:,} (send a smaller photo)", 413)
        if min(w, h) < 1:
            raise BadImage(f"{name}: {w}x{h} pixels: empty image")
        return cls(name, bytes(data), None, int(h), int(w))

    @classmethod
    def from_array(cls, name: str, array) -> "ImageInput":
        """Keep a decoded uint8 RGB image ``(H, W, 3)``.

        Args:
            name: how messages name the image.
            array: the pixels.

        Returns:
            The :class:`ImageInput`.

        Raises:
            ValueError: not a uint8 ``(H, W, 3)`` array.
        """
        a = np.asarray(array)
        if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8 or min(a.shape[:2]) < 1:
            raise ValueError(f"{name}: expected a uint8 RGB array (H, W, 3), got {a.dtype} {a.shape}")
        return cls(name, None, a, int(a.shape[0]), int(a.shape[1]))

    def detector_input(self):
        """What the face detector takes.

        Returns:
            The encoded bytes, or the uint8 array.
        """
        return self.data if self.data is not None else self.array


def check_crops(crops) -> tuple:
    """TTA crop scales as floats, each within :data:`mask_keras.config.TTA_CROP_RANGE`.

    Args:
        crops: scales (e.g. ``(0.9, 1.1)``), or None.

    Returns:
        A tuple of floats.

    Raises:
        ValueError: a scale out of range.
    """
    out = tuple(float(c) for c in crops or ())
    lo, hi = TTA_CROP_RANGE
    for c in out:
        if not lo <= c <= hi:
            raise ValueError(f"TTA crop scale {c} out of range [{lo}, {hi}]")
    return out


def crop_windows(height: int, width: int, preprocess_cfg, face_box=None, crops=()) -> np.ndarray:
    """The windows ``(y0, x0, y1, x1)`` a model sees of one image: its crop, then each crop view.

    The model's crop (``none``, ``center``, or the face crop ``face_box``) by
    :func:`mask_keras.cropbox.window`; a crop view ``s`` scales it around its centre by ``s``:
    a face crop's box as it is (the decode clips it), a centre crop (or the whole image)
    centred again at ``s`` times its size, at least :data:`MIN_VIEW` pixels a side.

    Args:
        height: the image's height.
        width: its width.
        preprocess_cfg: the run's ``PreprocessConfig``.
        face_box: ``(y0, x0, y1, x1)`` for ``crop="face"``.
        crops: the TTA crop scales.

    Returns:
        int32 ``(1 + len(crops), 4)``.

    Example:
        >>> from mask_keras.config import PreprocessConfig
        >>> crop_windows(512, 384, PreprocessConfig(crop="center", crop_size=(400, 200)), crops=(0.5,)).tolist()
        [[56, 92, 456, 292], [156, 142, 356, 242]]
    """
    p = preprocess_cfg
    box = None if face_box is None else np.asarray(face_box, np.int64)
    y0, x0, y1, x1 = (int(v) for v in cropbox.window(height, width, p.crop, p.crop_size, box))
    out = [(y0, x0, y1, x1)]
    for s in crops:
        if p.crop == "face":
            cy, cx, hh, hw = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) * s / 2, (x1 - x0) * s / 2
            out.append(tuple(int(round(v)) for v in (cy - hh, cx - hw, cy + hh, cx + hw)))
        else:
            size = (max(MIN_VIEW, int(round((y1 - y0) * s))), max(MIN_VIEW, int(round((x1 - x0) * s))))
            out.append(tuple(int(v) for v in cropbox.window(height, width, "center", size)))
    return np.asarray(out, np.int32)


@functools.lru_cache(maxsize=64)
def _traced(key: tuple, kind: str):
    """The decode-crop-resize of one preprocessing, traced once: ``(bytes, box)`` or ``(array, box)``."""
    pcfg = SimpleNamespace(**dict(key))
    box_spec = tf.TensorSpec([4], tf.int32)
    if kind == "bytes":
        return tf.function(lambda data, box: decode_and_preprocess(data, box, pcfg),
                           input_signature=[tf.TensorSpec([], tf.string), box_spec], autograph=False)
    return tf.function(lambda img, box: preprocess_image(img, box, pcfg),
                       input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), box_spec], autograph=False)


def face_config(preprocess_cfg):
    """``preprocess_cfg`` cropping at a given box (``crop="face"``): how every window is decoded.

    Args:
        preprocess_cfg: the run's ``PreprocessConfig``.

    Returns:
        A copy with ``crop="face"``.
    """
    return dataclasses.replace(preprocess_cfg, crop="face")


def model_pixels(item: ImageInput, preprocess_cfg, windows, flip: bool = False) -> np.ndarray:
    """The pixels of each window of one image, as the model takes them.

    Args:
        item: the image.
        preprocess_cfg: the run's ``PreprocessConfig`` (its image size, JPEG decode setting).
        windows: ``(V, 4)`` windows (:func:`crop_windows`).
        flip: also each window mirrored (after all the windows).

    Returns:
        uint8 ``(V, h, w, 3)``, or ``(2V, h, w, 3)`` with ``flip``.

    Raises:
        BadImage: the image cannot be decoded (corrupt or truncated data).
    """
    key = preprocess_key(face_config(preprocess_cfg))
    if item.data is not None:
        fn, src = _traced(key, "bytes"), tf.constant(item.data)
    else:
        fn, src = _traced(key, "array"), tf.constant(item.array)
    try:
        views = [fn(src, tf.constant(w, tf.int32)).numpy() for w in np.asarray(windows, np.int32)]
    except tf.errors.OpError as e:
        msg = (e.message or str(e)).strip().splitlines()[0][:300]
        raise BadImage(f"{item.name}: cannot decode ({msg})") from None
    out = np.stack(views)
    return np.concatenate([out, out[:, :, ::-1]]) if flip else out
