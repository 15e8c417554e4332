"""The serving model: a full-size photo in, the run's crop and resize inside, probabilities out.

A trained model takes the pixels its run's input pipeline made (``image_size``, already
cropped). A camera, a kiosk or a web form has a full photo. :func:`build_serving_model`
wraps the trained model with :class:`CropResize`, which does the pipeline's crop and its
antialiased bilinear resize (:func:`mask_keras.pipeline.preprocess_image`) inside the
graph, so an exported file (TF SavedModel, ONNX, LiteRT) is used without this package: a
client sends a uint8 RGB photo of any size and gets the probabilities and the crop box.

The resize is written as two matrix products (rows, then columns) whose weights are the
triangle filter TensorFlow's ``scale_and_translate`` uses (widened by the downscale factor
when shrinking: the antialiasing), computed in the graph from the image and crop sizes.
Matrix products, ``abs``, ``maximum`` and ``round`` exist in every runtime (ONNX Runtime,
LiteRT, TF, XLA); TensorFlow's antialiased resize kernel does not (tf2onnx and the LiteRT
converter cannot express it), hence the hand-written form. The pixels equal the pipeline's
to within float rounding before the final rounding to uint8: a pixel whose value falls
within ~1e-4 of a half level may round the other way (measured in the tests).

A model trained with ``crop="face"`` needs the detector's box, which no exported graph can
hold: its serving model takes a second input, ``box`` (N, 4) int32 ``[y0, x0, y1, x1]`` in
the photo's pixels (the detector's box widened by the run's margins, or the centre
fallback: :func:`mask_keras.detect.detected_crop_boxes`); :class:`mask_keras.inference.
Predictor` computes it for every model, exports included.
"""
from __future__ import annotations

import keras
from keras import ops

from .. import cropbox
from .. import labels as L


@keras.saving.register_keras_serializable(package="mask_keras")
class CropResize(keras.layers.Layer):
    """Crop full-size uint8 photos as the run did and resize them to ``image_size``.

    Args:
        image_size: ``(height, width)`` of the model's input.
        crop: ``"none"`` (the whole photo), ``"center"`` (``crop_size``, clipped to the
            photo) or ``"face"`` (a box per photo, the call's second argument).
        crop_size: ``(height, width)`` of the centre crop.
        **kwargs: Keras layer arguments (``name``, ``dtype``).

    Call arguments:
        images: uint8 (or float 0..255) ``(N, H, W, 3)``; every photo of one call has the
            same size, any size.
        boxes: ``(N, 4)`` int ``[y0, x0, y1, x1]`` for ``crop="face"`` (clipped to the
            photo, at least one pixel); ignored otherwise.

    Returns:
        ``(pixels, windows)``: float32 ``(N, h, w, 3)`` pixels rounded to whole levels
        (what the pipeline's uint8 cache holds) and the int32 ``(N, 4)`` crop windows
        ``[y0, x0, y1, x1]`` used.

    Example:
        >>> import numpy as np
        >>> layer = CropResize((32, 24), crop="center", crop_size=(40, 30))
        >>> pixels, windows = layer(np.zeros((2, 60, 50, 3), "uint8"))
        >>> tuple(pixels.shape), [int(v) for v in windows[0]]
        ((2, 32, 24, 3), [10, 10, 50, 40])
    """

    def __init__(self, image_size, crop: str = "center", crop_size=(400, 200), **kwargs):
        super().__init__(**kwargs)
        if crop not in cropbox.CROPS:
            raise ValueError(f"crop={crop!r}: choose one of {', '.join(cropbox.CROPS)}")
        self.image_size = tuple(int(v) for v in image_size)
        self.crop = crop
        self.crop_size = tuple(int(v) for v in crop_size)

    def windows(self, images, boxes=None):
        """The crop windows of a batch (:func:`mask_keras.cropbox.window`, as the pipeline).

        Args:
            images: ``(N, H, W, 3)`` photos (only their shape is read).
            boxes: ``(N, 4)`` ``[y0, x0, y1, x1]`` face boxes (``crop="face"`` only).

        Returns:
            int32 ``(N, 4)`` ``[y0, x0, y1, x1]``, end exclusive.
        """
        shape = ops.shape(images)
        n, h, w = shape[0], ops.cast(shape[1], "int32"), ops.cast(shape[2], "int32")
        if self.crop == "face" and boxes is None:
            raise ValueError("crop='face' needs the face boxes (N, 4) [y0, x0, y1, x1]")
        b = ops.cast(boxes, "int32") if self.crop == "face" else None
        win = cropbox.window(h, w, self.crop, self.crop_size, b, xp=ops)
        ones = ops.ones((n,), "int32")
        return ops.stack([v * ones for v in win], axis=-1)  # scalars (none, center) -> one row per image

    def call(self, images, boxes=None):
        win = self.windows(images, boxes)
        shape = ops.shape(images)
        n, h, w = shape[0], shape[1], shape[2]
        oh, ow = self.image_size
        ry = resize_weights(win[:, 0], win[:, 2], h, oh)  # (N, oh, H)
        rx = resize_weights(win[:, 1], win[:, 3], w, ow)  # (N, ow, W)
        x = ops.cast(images, "float32")
        rows = ops.matmul(ry, ops.reshape(x, (n, h, w * 3)))                   # (N, oh, W*3)
        rows = ops.transpose(ops.reshape(rows, (n, oh, w, 3)), (0, 2, 1, 3))  # (N, W, oh, 3)
        out = ops.matmul(rx, ops.reshape(rows, (n, w, oh * 3)))               # (N, ow, oh*3)
        out = ops.transpose(ops.reshape(out, (n, ow, oh, 3)), (0, 2, 1, 3))   # (N, oh, ow, 3)
        return ops.clip(ops.round(out), 0.0, 255.0), win

    def compute_output_spec(self, images, boxes=None):
        n = images.shape[0]
        return (keras.KerasTensor((n, *self.image_size, 3), "float32"), keras.KerasTensor((n, 4), "int32"))

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "crop": self.crop,
                "crop_size": self.crop_size}


def resize_weights(start, stop, full, out: int):
    """Row weights ``(N, out, full)`` of an antialiased bilinear resize of ``[start, stop)``.

    TensorFlow's ``scale_and_translate`` with the triangle kernel (what
    ``tf.image.resize(..., "bilinear", antialias=True)`` runs): output pixel ``x`` samples
    the crop at ``(x + 0.5) * scale`` (``scale`` = crop size / ``out``), input pixel ``i``
    weighs ``max(0, 1 - |i + 0.5 - sample| / max(scale, 1))``, pixels outside the crop
    weigh 0, and each row is normalised to sum to 1.

    Args:
        start: ``(N,)`` first row (or column) of each crop.
        stop: ``(N,)`` end of each crop (exclusive).
        full: the photo's height (or width): the weights' last axis.
        out: the output height (or width).

    Returns:
        float32 ``(N, out, full)``: output pixel ``j`` of image ``n`` is
        ``weights[n, j] @ photo_rows[n]``.
    """
    start = ops.cast(start, "float32")[:, None, None]
    size = ops.cast(stop, "float32")[:, None, None] - start
    scale = size / float(out)
    sample = (ops.cast(ops.arange(out), "float32")[None, :, None] + 0.5) * scale
    i = ops.cast(ops.arange(full), "float32")[None, None, :] - start
    wt = ops.maximum(0.0, 1.0 - ops.abs(i + 0.5 - sample) / ops.maximum(scale, 1.0))
    wt = ops.where(ops.logical_and(i >= 0.0, i < size), wt, 0.0)
    return wt / ops.maximum(ops.sum(wt, axis=-1, keepdims=True), 1e-12)


def build_serving_model(model, preprocess_cfg, task: str):
    """The trained ``model`` behind its run's crop and resize: full-size photos in.

    Args:
        model: the trained Keras model (input: ``image_size`` pixels in 0..255).
        preprocess_cfg: the run's :class:`mask_keras.config.PreprocessConfig` (crop mode,
            crop size, image size).
        task: the run's task (``"multihead"`` gives one output per head).

    Returns:
        A functional Keras model. Inputs: ``image`` uint8 ``(N, H, W, 3)`` (any H, W; one
        size per call), and ``box`` int32 ``(N, 4)`` for a ``crop="face"`` run. Outputs (a
        dict): ``probs`` ``(N, C)`` (or ``mask``, ``gender``, ``age`` for a multi-head
        model) and ``crop_box`` int32 ``(N, 4)`` ``[y0, x0, y1, x1]`` in the photo's pixels.

    Example:
        >>> from mask_keras.config import ModelConfig, PreprocessConfig
        >>> from mask_keras.models.build import build_model
        >>> m = build_model(ModelConfig(backbone="tiny_cnn", weights=None), "gender", (32, 24))
        >>> s = build_serving_model(m, PreprocessConfig(image_size=(32, 24), crop_size=(40, 30)), "gender")
        >>> sorted(s.output)
        ['crop_box', 'probs']
    """
    p = preprocess_cfg
    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    inputs = {"image": image}
    box = None
    if p.crop == "face":
        box = inputs["box"] = keras.Input((4,), dtype="int32", name="box")
    pixels, windows = CropResize(p.image_size, p.crop, p.crop_size, name="crop_resize")(image, box)
    out = model(pixels)
    if task == "multihead":
        if isinstance(out, dict):
            outputs = {k: out[k] for k in L.HEADS}
        else:
            outputs = dict(zip(L.HEADS, out))
    else:
        outputs = {"probs": out}
    outputs["crop_box"] = keras.layers.Identity(name="crop_box")(windows)
    return keras.Model(inputs, outputs, name=f"serving_{model.name}")
