"""The crop window: one formula (mask_keras.cropbox.window) on numpy, TensorFlow and keras.ops alike."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mask_keras import cropbox
from mask_keras._tf import tf

SIZES = [(512, 384), (300, 200), (401, 199), (7, 5), (1, 1)]


def _reference(h, w, crop, crop_size, box):
    """The rule written out per image in plain Python (the spec the three array kinds must meet)."""
    if crop == "none":
        return 0, 0, h, w
    if crop == "center":
        ch, cw = min(h, crop_size[0]), min(w, crop_size[1])
        return (h - ch) // 2, (w - cw) // 2, (h - ch) // 2 + ch, (w - cw) // 2 + cw
    y0, x0 = min(max(box[0], 0), h - 1), min(max(box[1], 0), w - 1)
    return y0, x0, min(max(box[2], y0 + 1), h), min(max(box[3], x0 + 1), w)


@pytest.mark.parametrize("crop", cropbox.CROPS)
def test_numpy_tensorflow_and_keras_ops_agree_with_the_rule(crop):
    rng = np.random.default_rng(0)
    h = np.array([s[0] for s in SIZES] * 4, np.int32)
    w = np.array([s[1] for s in SIZES] * 4, np.int32)
    box = rng.integers(-50, 600, (len(h), 4)).astype(np.int32)  # outside, inverted, empty boxes too
    want = np.array([_reference(int(a), int(b), crop, (400, 200), bx.tolist()) for a, b, bx in zip(h, w, box)])
    for xp, conv in ((np, np.asarray), (tf, tf.constant), (keras.ops, keras.ops.convert_to_tensor)):
        got = cropbox.window(conv(h), conv(w), crop, (400, 200), conv(box), xp=xp)
        got = np.stack([np.broadcast_to(keras.ops.convert_to_numpy(v), h.shape) for v in got], axis=-1)
        np.testing.assert_array_equal(got, want, err_msg=f"{xp.__name__}")
    y0, x0, y1, x1 = want.T
    assert (y1 > y0).all() and (x1 > x0).all() and (y1 <= h).all() and (x1 <= w).all() and (want >= 0).all()


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="unknown crop 'centre'; choose one of none, center, face"):
        cropbox.window(10, 10, "centre", (4, 4))
    with pytest.raises(ValueError, match="positive crop_size"):
        cropbox.window(10, 10, "center", (0, 4))
    with pytest.raises(ValueError, match="needs the face boxes"):
        cropbox.window(10, 10, "face")
