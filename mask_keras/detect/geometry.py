"""Crop geometry, pure vectorised numpy (no I/O, no detector).

Conventions used everywhere in :mod:`mask_keras.detect`:

* A detector box is ``(x0, y0, x1, y1)`` in pixels of the original image, floats.
* A crop is ``(y0, x0, y1, x1)`` integers with the *end exclusive*, so the crop of a
  decoded ``HxWx3`` image is ``image[y0:y1, x0:x1]``; it always lies inside the image
  (``0 <= y0 < y1 <= H``, ``0 <= x0 < x1 <= W``) when it is valid.
* Margins are ``(left, top, right, bottom)`` in pixels (``PreprocessConfig.face_margins``);
  the fallback is a centre crop of ``(h, w)`` (``PreprocessConfig.face_fallback``),
  shrunk to the image where the image is smaller.
"""
from __future__ import annotations

import numpy as np

from .. import cropbox

#: order of the 15 numbers describing one detected face (worker output and cache columns)
FACE_FIELDS = ("x0", "y0", "x1", "y1", "confidence",
               "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y",
               "mouth_left_x", "mouth_left_y", "mouth_right_x", "mouth_right_y")


def _arr(x, dtype=np.float64) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


def center_crop_boxes(height, width, crop_size) -> np.ndarray:
    """Centre crops of ``crop_size = (h, w)`` clipped to each image: int array ``(n, 4)`` of (y0, x0, y1, x1).

    ``height``/``width`` are scalars or arrays (one per image). Where the image is smaller
    than the crop along an axis, the crop spans that whole axis.

    Args:
        height: image height(s) in pixels, a scalar or ``(n,)``; cast to int64 (floats truncate).
        width: image width(s) in pixels, likewise; broadcast against ``height``.
        crop_size: ``(h, w)`` of the crop in pixels, both positive (``PreprocessConfig.face_fallback``).

    Returns:
        int64 ``(n, 4)`` ``(y0, x0, y1, x1)``, end exclusive, offset floored (``n = 1`` for scalars).

    Raises:
        ValueError: a non-positive ``crop_size``.

    Example:
        >>> center_crop_boxes([512, 300], 384, (400, 200)).tolist()  # the second image is shorter
        [[56, 92, 456, 292], [0, 92, 300, 292]]
    """
    h = np.atleast_1d(_arr(height, np.int64))
    w = np.atleast_1d(_arr(width, np.int64))
    h, w = np.broadcast_arrays(h, w)
    if int(crop_size[0]) <= 0 or int(crop_size[1]) <= 0:
        raise ValueError(f"crop size must be positive (h, w), got {tuple(crop_size)}")
    return np.stack(cropbox.window(h, w, "center", crop_size, xp=np), axis=-1).astype(np.int64)


def widen_boxes(boxes, margins, height, width) -> tuple[np.ndarray, np.ndarray]:
    """Widen detector boxes by ``margins`` and clip them to the image.

    Args:
        boxes: ``(n, 4)`` floats ``(x0, y0, x1, y1)`` (anything reshapeable to ``(-1, 4)``;
            swapped corners are taken as the same box; NaN/inf rows allowed: they come back invalid).
        margins: ``(left, top, right, bottom)`` pixels added outside the box
            (``PreprocessConfig.face_margins``).
        height: image height(s), a scalar or ``(n,)``; a non-finite one makes its row invalid.
        width: image width(s), likewise.

    Returns:
        ``(crops, valid)``: int64 ``(n, 4)`` ``(y0, x0, y1, x1)`` (start floored, end ceiled,
        then clipped to ``[0, H]``/``[0, W]``) and a bool ``(n,)`` saying the crop has a
        positive area (a box wholly outside the image, or a zero-size box on integer
        coordinates with zero margins, is invalid; invalid rows are all zeros).

    Example:
        >>> crops, valid = widen_boxes([[100.4, 50.5, 200.2, 180.0], [500, 600, 520, 700]],
        ...                            (10, 20, 10, 5), 512, 384)
        >>> crops.tolist(), valid.tolist()  # the second box lies outside the 384 x 512 image
        ([[30, 90, 185, 211], [0, 0, 0, 0]], [True, False])
    """
    boxes = _arr(boxes).reshape(-1, 4)
    n = boxes.shape[0]
    left, top, right, bottom = (float(m) for m in margins)
    h = np.broadcast_to(_arr(height), (n,))
    w = np.broadcast_to(_arr(width), (n,))
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(h) & np.isfinite(w)
    b = np.where(finite[:, None], boxes, 0.0)
    # a box given with its corners swapped is still the same box
    bx0, bx1 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    by0, by1 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    hh = np.where(finite, h, 0.0)
    ww = np.where(finite, w, 0.0)
    x0 = np.clip(np.floor(bx0 - left), 0, ww)
    y0 = np.clip(np.floor(by0 - top), 0, hh)
    x1 = np.clip(np.ceil(bx1 + right), 0, ww)
    y1 = np.clip(np.ceil(by1 + bottom), 0, hh)
    valid = finite & (x1 > x0) & (y1 > y0)
    crops = np.stack([y0, x0, y1, x1], axis=-1).astype(np.int64)
    crops[~valid] = 0
    return crops, valid


def face_crops(boxes, use_face, margins, fallback, height, width) -> tuple[np.ndarray, np.ndarray]:
    """The crop of every image: widened face box where ``use_face`` and valid, else the centre fallback.

    Args:
        boxes: ``(n, 4)`` detector boxes ``(x0, y0, x1, y1)``, NaN rows where there is no face
            (as for :func:`widen_boxes`).
        use_face: bool, a scalar or ``(n,)``: whether the image may use its face box.
        margins: ``(left, top, right, bottom)`` pixels around the face box (as for :func:`widen_boxes`).
        fallback: ``(h, w)`` of the centre crop for the other images, positive
            (as for :func:`center_crop_boxes`).
        height: image height(s) in pixels, a scalar or ``(n,)``; finite.
        width: image width(s) in pixels, likewise.

    Returns:
        ``(crops, fallback)``: int64 ``(n, 4)`` ``(y0, x0, y1, x1)`` and a bool ``(n,)``, True
        where the centre crop was used (``use_face`` false or the widened box invalid).

    Raises:
        ValueError: a non-positive ``fallback`` size.

    Example:
        >>> crops, fell_back = face_crops([[100, 50, 200, 180], [np.nan] * 4], True,
        ...                               (10, 20, 10, 5), (400, 200), 512, 384)
        >>> crops.tolist(), fell_back.tolist()
        ([[30, 90, 185, 210], [56, 92, 456, 292]], [False, True])
    """
    widened, valid = widen_boxes(boxes, margins, height, width)
    n = widened.shape[0]
    use = np.broadcast_to(np.asarray(use_face, dtype=bool), (n,)) & valid
    center = center_crop_boxes(np.broadcast_to(_arr(height, np.int64), (n,)),
                               np.broadcast_to(_arr(width, np.int64), (n,)), fallback)
    crops = np.where(use[:, None], widened, center)
    return crops.astype(np.int64), ~use


def pick_face(faces, min_confidence: float = 0.9) -> int:
    """Index of the face to keep among ``faces`` (``(k, >=5)``: x0, y0, x1, y1, confidence, ...), or -1.

    The largest box (by area) among those with ``confidence >= min_confidence``; if none is
    that confident, the most confident one. The photos show one person close to the camera,
    so a second, smaller face is someone in the background (or a false hit on a mask print).
    Ties go to the first row.

    Args:
        faces: one row per detected face in :data:`FACE_FIELDS` order (only the first 5 columns
            are read); a single 1-D row is one face; empty when nothing was detected.
        min_confidence: the detector confidence at or above which a face counts as sure.

    Returns:
        The row index (int) into ``faces``, or -1 when ``faces`` is empty.

    Example:
        >>> faces = [[0, 0, 10, 10, 0.99], [0, 0, 50, 50, 0.95], [0, 0, 100, 100, 0.5]]
        >>> pick_face(faces), pick_face(faces, min_confidence=0.999), pick_face([])
        (1, 0, -1)
    """
    faces = np.asarray(faces, dtype=np.float64)
    if faces.size == 0:
        return -1
    faces = faces.reshape(-1, faces.shape[-1])
    area = np.clip(faces[:, 2] - faces[:, 0], 0, None) * np.clip(faces[:, 3] - faces[:, 1], 0, None)
    conf = faces[:, 4]
    sure = conf >= min_confidence
    if sure.any():
        return int(np.argmax(np.where(sure, area, -1.0)))
    return int(np.argmax(conf))


def box_iou(a, b) -> np.ndarray:
    """IoU of boxes ``(x0, y0, x1, y1)``, broadcast over leading dimensions.

    Args:
        a: boxes ``(..., 4)``; an inverted box (``x1 < x0`` or ``y1 < y0``) has zero area.
        b: boxes ``(..., 4)``, broadcast against ``a`` (``a[:, None]`` against ``b`` gives
            every pair).

    Returns:
        float64 IoU in ``[0, 1]``, shaped like the broadcast ``a[..., 0]`` and ``b[..., 0]``
        (0-d for two single boxes); 0 where the union has no area.

    Example:
        >>> float(box_iou([0, 0, 10, 10], [5, 0, 15, 10]))
        0.3333333333333333
        >>> a, b = np.array([[0, 0, 10, 10], [0, 0, 2, 2]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10]])
        >>> box_iou(a[:, None], b).round(2).tolist()
        [[1.0, 0.33], [0.04, 0.0]]
    """
    a, b = _arr(a), _arr(b)
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    area = lambda z: np.clip(z[..., 2] - z[..., 0], 0, None) * np.clip(z[..., 3] - z[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
