"""The one deterministic preprocessing: encoded bytes or a file -> decode, crop, resize, uint8.

Shared by training, evaluation and inference (:func:`load_and_preprocess`), so a model
always sees at test time exactly what it saw in validation.

JPEG decoding (``preprocess.jpeg_scaled_decode``, on by default) decodes only the crop
window and lets libjpeg downscale it in the DCT by the largest factor 1/2, 1/4 or 1/8 that
keeps it at least ``image_size`` (a 400x200 crop for 128x96 decodes at 200x100): less
work for the decoder, and what is left to resize is then usually less than 2x, which plain
bilinear interpolation does without aliasing (antialiased only when 2x or more is left).
Pixels differ slightly (a few levels) from decoding at full size and resizing with
antialiasing, which ``False`` does (like PIL; PNGs always take that path). The cache's
grouped decode (:mod:`mask_keras.pipeline.store`) uses the same pieces (:func:`dct_windows`,
:func:`needs_antialias`, :func:`traced_loader` with a ratio) and gives the same pixels.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

from .. import cropbox
from .._tf import tf

#: libjpeg's DCT scaling factors (``ratio`` of ``tf.io.decode_and_crop_jpeg``)
JPEG_RATIOS = (1, 2, 4, 8)


def decode_image(data):
    """Encoded bytes (jpg, png, webp, gif, bmp) -> uint8 (H, W, 3).

    JPEGs are decoded with the accurate integer DCT, which is bit-identical to PIL/libjpeg
    (TensorFlow's default fast DCT differs from PIL by up to ~50 levels on noisy images).

    Args:
        data: a scalar string tensor, the file's bytes.

    Returns:
        The decoded uint8 image ``(H, W, 3)`` (RGB; an animation's first frame).
    """

    def jpeg():
        return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

    def other():
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)

    def webp():  # decode_image does not know WebP; decode_webp gives (frames, H, W, 3 or 4)
        return tf.io.decode_webp(data, channels=0)[0][..., :3]

    is_webp = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 4), b"RIFF"),
                             tf.equal(tf.strings.substr(data, 8, 4), b"WEBP"))
    img = tf.cond(tf.io.is_jpeg(data), jpeg, lambda: tf.cond(is_webp, webp, other))
    img.set_shape([None, None, 3])
    return img


def crop_window(h, w, box, preprocess_cfg):
    """The crop window in an ``h`` x ``w`` image, by ``preprocess_cfg.crop`` (:func:`mask_keras.cropbox.window`).

    ``none``: the whole image; ``center``: ``crop_size``, clipped to the image when it is
    smaller; ``face``: ``box``, clipped to the image, at least 1 pixel. Elementwise: ``h``,
    ``w`` may be vectors of rows, with ``box`` of shape (rows, 4).

    Args:
        h: image height (scalar or vector).
        w: image width (scalar or vector).
        box: ``(y0, x0, y1, x1)`` in pixels (read for ``crop="face"`` only).
        preprocess_cfg: the run's ``PreprocessConfig`` (``crop``, ``crop_size``).

    Returns:
        ``(y0, x0, y1, x1)`` int32, end exclusive.
    """
    h, w = tf.cast(h, tf.int32), tf.cast(w, tf.int32)
    box = tf.cast(box, tf.int32) if preprocess_cfg.crop == "face" else None
    return cropbox.window(h, w, preprocess_cfg.crop, preprocess_cfg.crop_size, box, xp=tf)


def crop_image(img, box, preprocess_cfg):
    """Crop a decoded image (see :func:`crop_window`).

    Args:
        img: a decoded image ``(H, W, 3)``.
        box: ``(y0, x0, y1, x1)`` face box (read for ``crop="face"`` only).
        preprocess_cfg: the run's ``PreprocessConfig``.

    Returns:
        The crop window of ``img``.
    """
    shape = tf.shape(img)
    y0, x0, y1, x1 = crop_window(shape[0], shape[1], box, preprocess_cfg)
    return img[y0:y1, x0:x1]


def resize_image(img, image_size, antialias: bool = True):
    """Bilinear resize, with antialiasing by default (like PIL's), rounded back to uint8.

    Args:
        img: an image ``(H, W, 3)``.
        image_size: ``(h, w)`` to resize to.
        antialias: low-pass filter when shrinking (off: plain bilinear interpolation).

    Returns:
        The uint8 image ``(h, w, 3)``.
    """
    h, w = int(image_size[0]), int(image_size[1])
    out = tf.image.resize(img, (h, w), method="bilinear", antialias=antialias)
    out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
    out.set_shape([h, w, 3])
    return out


def preprocess_image(img, box, preprocess_cfg):
    """Decoded uint8 image -> cropped and resized uint8 (h, w, 3).

    Args:
        img: a decoded uint8 image ``(H, W, 3)``.
        box: ``(y0, x0, y1, x1)`` face box (read for ``crop="face"`` only).
        preprocess_cfg: the run's ``PreprocessConfig``.

    Returns:
        The uint8 image ``(h, w, 3)`` of ``preprocess_cfg.image_size``.
    """
    return resize_image(crop_image(img, box, preprocess_cfg), preprocess_cfg.image_size)


def needs_antialias(h, w, image_size):
    """Whether resizing ``h`` x ``w`` to ``image_size`` shrinks a side by 2x or more (elementwise).

    Args:
        h: height(s) before the resize.
        w: width(s) before the resize.
        image_size: ``(h, w)`` after the resize.

    Returns:
        A bool tensor shaped like ``h``.
    """
    return tf.logical_or(h >= 2 * int(image_size[0]), w >= 2 * int(image_size[1]))


def _resize_after_dct_scaling(img, image_size):
    """The resize that follows a DCT-scaled decode: the scaling already low-passed the image,
    and what is left is usually a factor below 2 on both sides, where plain bilinear
    interpolation samples every input pixel and antialiasing (which costs as much as the
    decode itself in TF) changes nothing visible; a factor of 2 or more still gets it."""
    shape = tf.shape(img)
    return tf.cond(needs_antialias(shape[0], shape[1], image_size), lambda: resize_image(img, image_size),
                   lambda: resize_image(img, image_size, antialias=False))


def dct_windows(h, w, box, preprocess_cfg):
    """How to decode the crop window of an ``h`` x ``w`` JPEG at the largest DCT downscale.

    Elementwise over vectors of rows, like :func:`crop_window`.

    Args:
        h: JPEG height (scalar or vector).
        w: JPEG width (scalar or vector).
        box: ``(y0, x0, y1, x1)`` face box(es) (read for ``crop="face"`` only).
        preprocess_cfg: the run's ``PreprocessConfig``.

    Returns:
        ``(k, window)``: ``k``, the index in :data:`JPEG_RATIOS` of the largest DCT downscale
        1/r that keeps the window at least ``image_size``, and the window ``(y, x, height,
        width)`` in the image scaled by 1/r.
    """
    y0, x0, y1, x1 = crop_window(h, w, box, preprocess_cfg)
    ch, cw = y1 - y0, x1 - x0
    oh, ow = (int(v) for v in preprocess_cfg.image_size)
    k = tf.zeros_like(ch)
    for r in JPEG_RATIOS[1:]:  # the ratios are nested: count those that fit
        k += tf.cast(tf.logical_and(ch // r >= oh, cw // r >= ow), tf.int32)
    r = tf.bitwise.left_shift(tf.ones_like(k), k)
    window = tf.stack([y0 // r, x0 // r, tf.maximum(ch // r, 1), tf.maximum(cw // r, 1)], axis=-1)
    return k, window


def _decode_scaled(data, window, ratio: int):
    """The crop ``window`` (in the image scaled by 1/``ratio``) of a JPEG, decoded at that scale."""
    img = tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")
    img.set_shape([None, None, 3])
    return img


def _decode_jpeg_window(data, box, preprocess_cfg):
    """A JPEG -> its crop window only, decoded at the largest DCT downscale 1/r that keeps
    the window at least ``image_size`` (uint8, (~h/r, ~w/r, 3))."""
    shape = tf.io.extract_jpeg_shape(data)
    k, window = dct_windows(shape[0], shape[1], box, preprocess_cfg)
    return tf.switch_case(k, [lambda r=r: _decode_scaled(data, window, r) for r in JPEG_RATIOS])


def decode_and_preprocess(data, box, preprocess_cfg):
    """Encoded bytes -> uint8 (h, w, 3): decode, crop, resize (see the module docstring).

    Args:
        data: a scalar string tensor, the file's bytes.
        box: ``(y0, x0, y1, x1)`` face box (read for ``crop="face"`` only).
        preprocess_cfg: the run's ``PreprocessConfig`` (``jpeg_scaled_decode`` picks the JPEG path).

    Returns:
        The uint8 image ``(h, w, 3)`` of ``preprocess_cfg.image_size``.
    """
    if not getattr(preprocess_cfg, "jpeg_scaled_decode", False):
        return preprocess_image(decode_image(data), box, preprocess_cfg)

    def jpeg():
        return _resize_after_dct_scaling(_decode_jpeg_window(data, box, preprocess_cfg), preprocess_cfg.image_size)

    def other():
        return preprocess_image(decode_image(data), box, preprocess_cfg)

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def load_and_preprocess(path, box, preprocess_cfg):
    """File path -> uint8 (h, w, 3): read, decode, crop, resize. Used by every dataset.

    Args:
        path: a scalar string tensor, the image file.
        box: ``(y0, x0, y1, x1)`` face box (read for ``crop="face"`` only).
        preprocess_cfg: the run's ``PreprocessConfig``.

    Returns:
        The uint8 image ``(h, w, 3)`` of ``preprocess_cfg.image_size``.
    """
    return decode_and_preprocess(tf.io.read_file(path), box, preprocess_cfg)


def _load_fixed(path, window, ratio: int, antialias: bool, preprocess_cfg):
    """One JPEG group's per-image function (see :func:`traced_loader`): no control flow."""
    img = _decode_scaled(tf.io.read_file(path), window, ratio)
    return resize_image(img, preprocess_cfg.image_size, antialias=antialias)


def preprocess_key(preprocess_cfg) -> tuple:
    """The preprocessing settings as a hashable key (lists made tuples), for :func:`traced_loader`.

    Args:
        preprocess_cfg: a ``PreprocessConfig`` (or any object whose ``vars`` are its settings).

    Returns:
        A sorted tuple of ``(name, value)`` pairs.
    """
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in vars(preprocess_cfg).items()))


@functools.lru_cache(maxsize=64)
def traced_loader(key: tuple, ratio: int | None = None, antialias: bool = True):
    """A per-image loader traced once per process, for every dataset map to call.

    Every dataset map calls these instead of tracing the decode again: the trace costs
    ~0.15 s a map (~0.5 s a dataset, ~1.5 s a ``predict`` call, most of a small request's
    time in the service); a call to a traced function is one graph node.

    Args:
        key: the preprocessing, as :func:`preprocess_key` gives it.
        ratio: None: the general path, :func:`load_and_preprocess`; else one JPEG group's
            DCT ratio (in :data:`JPEG_RATIOS`), for a group of JPEGs whose crop windows
            decode at that ratio (no control flow inside).
        antialias: with a ``ratio``: whether the group's resize antialiases.

    Returns:
        A ``tf.function`` of ``(path, box)`` (``ratio`` None) or ``(path, window)`` (the
        window ``(y, x, h, w)`` in the scaled image) -> uint8 ``(h, w, 3)``.
    """
    pcfg = SimpleNamespace(**dict(key))
    sig = [tf.TensorSpec([], tf.string), tf.TensorSpec([4], tf.int32)]
    if ratio is None:
        return tf.function(lambda path, box: load_and_preprocess(path, box, pcfg), input_signature=sig,
                           autograph=False)
    return tf.function(lambda path, window: _load_fixed(path, window, ratio, antialias, pcfg), input_signature=sig,
                       autograph=False)
