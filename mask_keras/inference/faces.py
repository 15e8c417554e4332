"""Which faces of a photo are answered, and what happens to a photo without one.

Only models trained with ``crop="face"`` need the face detector
(:class:`mask_keras.detect.Detector`: one worker process, started on the first such image and
kept; one call at a time). For them, each photo's detections are turned into *face rows*:

* ``faces="largest"`` (default): one row, the face :func:`mask_keras.detect.pick_face` keeps
  (the largest sure face; the photos show one person close to the camera);
  ``faces="all"``: one row per face at or above the run's ``face_min_confidence``, largest
  first, each with its index (``face`` 0, 1, ...).
* A photo without a usable face (none found, too unsure, a box outside the photo):
  ``no_face="center"`` (default) answers the centre crop (``face_fallback``, as training did),
  flagged ``face_found=False``; ``"skip"`` gives the row no answer and says why in ``error``;
  ``"error"`` refuses the whole call with :class:`NoFaceError`.

Models with a centre crop never run the detector: their rows have ``face_found`` None (the
question was not asked) and their crop box.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..detect import PICK_CONFIDENCE, Detector, pick_face, widen_boxes
from .images import BadImage

NO_FACE = ("center", "skip", "error")
FACES = ("largest", "all")


class NoFaceError(BadImage):
    """A photo without a usable face, with ``no_face="error"`` (HTTP 422 in the service).

    Args:
        message: which photo, and what to do.
    """

    def __init__(self, message: str):
        super().__init__(message, 422)


@dataclass
class Face:
    """One face row of a photo.

    Attributes:
        index: the face's index among the photo's answered faces (0: the largest), or None
            when no face was found.
        found: whether a usable face was found.
        box: the detector's box ``[y0, x0, y1, x1]`` in the photo's pixels (None without one).
        confidence: the detector's confidence (None without a face).
        reason: ``face``, or why there is none (``no_face``, ``low_confidence``,
            ``invalid_box``, ``error``).
        xyxy: the detector's box as it gave it, ``(x0, y0, x1, y1)`` floats (for the crops).
    """

    index: int | None
    found: bool
    box: list | None
    confidence: float | None
    reason: str = "face"
    xyxy: tuple | None = None


def _yxyx(face) -> list:
    x0, y0, x1, y1 = (float(v) for v in face[:4])
    return [int(np.floor(y0)), int(np.floor(x0)), int(np.ceil(y1)), int(np.ceil(x1))]


def face_rows(result: dict, preprocess_cfg, faces: str = "largest") -> list[Face]:
    """The face rows of one photo from its detection (see the module docstring).

    Args:
        result: a :meth:`mask_keras.detect.Detector.detect` result (``width``, ``height``,
            ``faces`` ``(k, 15)``, ``error``).
        preprocess_cfg: the face model's ``PreprocessConfig`` (``face_min_confidence``,
            ``face_margins``).
        faces: ``"largest"`` or ``"all"``.

    Returns:
        One :class:`Face` per answered face, or one not-found :class:`Face`.

    Example:
        >>> import numpy as np
        >>> from mask_keras.config import PreprocessConfig
        >>> det = np.array([[10, 10, 50, 60, .99] + [0] * 10, [100, 100, 200, 220, .98] + [0] * 10], np.float32)
        >>> r = {"width": 384, "height": 512, "faces": det, "error": None}
        >>> [(f.index, f.box) for f in face_rows(r, PreprocessConfig(), "all")]
        [(0, [100, 100, 220, 200]), (1, [10, 10, 60, 50])]
        >>> face_rows({**r, "faces": np.zeros((0, 15))}, PreprocessConfig())[0].reason
        'no_face'
    """
    if result.get("error"):
        return [Face(None, False, None, None, "error")]
    det = np.asarray(result["faces"], np.float64).reshape(-1, 15)
    h, w = int(result["height"]), int(result["width"])
    min_conf = float(preprocess_cfg.face_min_confidence)
    if faces == "largest":
        k = pick_face(det, PICK_CONFIDENCE)
        picked = [] if k < 0 else [k]
    else:
        area = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
        picked = [int(i) for i in np.argsort(-area, kind="stable") if det[i, 4] >= min_conf]
    if not picked:
        return [Face(None, False, None, None, "no_face" if len(det) == 0 else "low_confidence")]
    out = []
    for k in picked:
        conf = float(det[k, 4])
        _, valid = widen_boxes(det[k, :4], preprocess_cfg.face_margins, h, w)
        if not conf >= min_conf:
            reason = "low_confidence"
        elif not bool(np.asarray(valid).ravel()[0]):
            reason = "invalid_box"
        else:
            reason = "face"
        out.append(Face(len([f for f in out if f.found]) if reason == "face" else None, reason == "face",
                        _yxyx(det[k]), round(conf, 6), reason, tuple(float(v) for v in det[k, :4])))
    found = [f for f in out if f.found]
    return found or [Face(None, False, out[0].box, out[0].confidence, out[0].reason, out[0].xyxy)]


class FaceFinder:
    """The face detector, started on first use and shared by every call (one at a time)."""

    def __init__(self):
        self.detector = None
        self.lock = threading.Lock()

    def detect(self, images) -> list[dict]:
        """:meth:`mask_keras.detect.Detector.detect` over encoded bytes or uint8 arrays.

        Args:
            images: the photos.

        Returns:
            One detection dict per photo.
        """
        with self.lock:
            if self.detector is None:
                self.detector = Detector()
            return self.detector.detect(images)

    def close(self) -> None:
        """Stop the detector's process, if it was started."""
        with self.lock:
            if self.detector is not None:
                self.detector.close()
                self.detector = None
