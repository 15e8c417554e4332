"""The crop window of an image: one formula for the pipeline, the reports and exported graphs.

``preprocess.crop`` picks the region a model sees: ``none`` (the whole image), ``center``
(``crop_size``, clipped to the image) or ``face`` (a detected box, clipped to the image).
Three places compute it, on three kinds of arrays: the ``tf.data`` pipeline
(:func:`mask_keras.pipeline.crop_window`, TensorFlow), the reported crop boxes and checks
(:func:`mask_keras.detect.center_crop_boxes`, numpy) and exported serving graphs
(:class:`mask_keras.models.serving.CropResize`, ``keras.ops``). They all call :func:`window`
with their array module, so the arithmetic (and its rounding) is written once.
"""
from __future__ import annotations

import numpy as np

#: the values of ``PreprocessConfig.crop``
CROPS = ("none", "center", "face")


def window(h, w, crop: str, crop_size=None, box=None, xp=np):
    """The crop window ``(y0, x0, y1, x1)`` in an ``h`` x ``w`` image, end exclusive.

    ``none``: the whole image. ``center``: ``crop_size`` centred (the offset floored),
    clipped to the image along an axis where the image is smaller. ``face``: ``box`` clipped
    to the image and at least 1 pixel tall and wide. Elementwise: ``h``/``w`` may be vectors
    (one per image) with ``box`` ``(n, 4)``.

    Args:
        h: image height(s), integers (int32 for TensorFlow and ``keras.ops``).
        w: image width(s), the same kind as ``h``.
        crop: ``none`` | ``center`` | ``face``.
        crop_size: ``(height, width)`` of the centre crop (``center`` only), positive.
        box: ``(..., 4)`` integer ``(y0, x0, y1, x1)`` face boxes (``face`` only).
        xp: the array module: ``numpy``, ``tensorflow`` or ``keras.ops`` (each has
            ``minimum``, ``maximum`` and ``zeros_like``; ``//`` and ``+`` work on all).

    Returns:
        ``(y0, x0, y1, x1)`` arrays of ``xp``, shaped like ``h`` (``center``, ``none``) or like
        ``box[..., 0]`` (``face``).

    Raises:
        ValueError: an unknown ``crop``, a missing or non-positive ``crop_size``, or no ``box``
            for ``face``.

    Example:

    >>> [int(v) for v in window(512, 384, "center", (400, 200))]
    [56, 92, 456, 292]
    >>> [int(v) for v in window(300, 384, "center", (400, 200))]  # shorter: the crop spans its height
    [0, 92, 300, 292]
    >>> [int(v) for v in window(512, 384, "face", box=np.array([-5, 10, 600, 10]))]
    [0, 10, 512, 11]
    """
    if crop == "none":
        return xp.zeros_like(h), xp.zeros_like(w), h, w
    if crop == "center":
        if crop_size is None or int(crop_size[0]) <= 0 or int(crop_size[1]) <= 0:
            raise ValueError(f"crop='center' needs a positive crop_size (height, width), got {crop_size}")
        ch, cw = xp.minimum(h, int(crop_size[0])), xp.minimum(w, int(crop_size[1]))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        return y0, x0, y0 + ch, x0 + cw
    if crop == "face":
        if box is None:
            raise ValueError("crop='face' needs the face boxes (..., 4) as (y0, x0, y1, x1)")
        y0 = xp.minimum(xp.maximum(box[..., 0], 0), h - 1)
        x0 = xp.minimum(xp.maximum(box[..., 1], 0), w - 1)
        y1 = xp.minimum(xp.maximum(box[..., 2], y0 + 1), h)
        x1 = xp.minimum(xp.maximum(box[..., 3], x0 + 1), w)
        return y0, x0, y1, x1
    raise ValueError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)}")
