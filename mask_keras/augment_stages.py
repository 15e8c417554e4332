"""The augmentation stages: Keras layers on ``keras.ops`` / ``keras.random`` that run on the
accelerator inside the model (:class:`mask_keras.augment.Augmentation` applies them in order).

Dtype and range contract
------------------------
:class:`Augmentation` takes images in ``[0, 255]``, uint8 or float, channels last
(``(B, H, W, 3)``; a fixed input shape inside a model), and returns float32 in ``[0, 255]``
(clipped after the last stage); normalisation comes after it. Every stage, and the Keras
layers it uses, is created with ``dtype="float32"``: 0..255 values lose too much in
bfloat16/float16, so a mixed-precision policy must not reach them.

Stages
------
Keras' own image preprocessing layers (``RandomFlip``, ``RandomBrightness``,
``RandomContrast``, ``RandomGrayscale``, ``RandomGaussianBlur``, ``RandAugment``) are used
as they are; rotations, shifts and zooms go through one :class:`ShiftScaleRotate` warp
instead of ``RandomRotation``/``RandomTranslation``/``RandomZoom`` (each a full
``map_coordinates`` pass, ~70 ms per 32 images at 128x96 on this CPU). Keras layers run
on the Keras backend (JAX) when called inside a model. The other stages are Keras layers
written with ``keras.ops`` / ``keras.random`` only (backend-agnostic), each the identity
unless ``training`` is true, drawing every random parameter per image (Keras'
``RandomGaussianBlur`` draws one sigma per batch, ``RandAugment`` its operations):
:class:`ColorJitter` (one 3x3 colour matrix per image: brightness, contrast, saturation,
YIQ hue rotation; Keras' ``RandomColorJitter`` goes through two RGB<->HSV round trips),
:class:`ShiftScaleRotate` (one affine warp per image, reflect border: one interpolation
instead of three Keras layers; :func:`affine_warp` interpolates in (y, x) only, ~4x faster
on CPU than ``keras.ops.image.affine_transform`` on JAX), :class:`CoarseDropout` (several holes at once;
``RandomErasing`` makes one), :class:`GaussianNoise` (sigma drawn per image, in 0..255
units), :class:`RandomApply` (stages applied with a probability per image) and
:class:`ReflectPadded` (Keras' Gaussian blur pads with zeros, which darkens the border).

Reproducibility
---------------
Each random stage owns a ``keras.random.SeedGenerator`` seeded from the layer's seed (a
distinct offset per stage), so two layers built with the same seed make the same draws
for the same sequence of calls (same shapes, same ``training``); ``seed=None`` draws a
fresh seed. The generators' states are model state (``non_trainable_variables``): they
advance with every train step, in the jitted step as well as eagerly. They are not saved
by ``model.save``: a loaded model's layer starts again from its seed.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

#: the pixel range every stage takes and returns
VALUE_RANGE = (0, 255)
_PACKAGE = "mask_keras"
_register = keras.saving.register_keras_serializable(package=_PACKAGE)


# ---------------------------------------------------------------------------
# custom stages (Keras layers on keras.ops / keras.random)
# ---------------------------------------------------------------------------
class _Stage(keras.layers.Layer):
    """A stage on float images in [0, 255] (one image or a batch, channels last).

    float32 whatever the dtype policy; the identity (a cast to float32) unless ``training``
    is true (default true when called directly, like Keras' preprocessing layers; inside a
    model Keras passes the model's ``training``). Subclasses implement ``_apply(batch)``.
    """

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, images, training=True):
        x = ops.cast(images, "float32")
        if not training:
            return x
        if len(x.shape) == 3:
            return self._apply(x[None])[0]
        return self._apply(x)

    def _apply(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape


class _RandomStage(_Stage):
    """A :class:`_Stage` drawing its randomness from ``self.generator`` (a ``SeedGenerator(seed)``)."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = None if seed is None else int(seed)
        self.generator = keras.random.SeedGenerator(self.seed)

    def _uniform(self, shape, lo=0.0, hi=1.0):
        return keras.random.uniform(shape, float(lo), float(hi), dtype="float32", seed=self.generator)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _batch_hw(x):
    """(n, h, w) of a batch: n as given by ``ops.shape``, h and w as float32 tensors."""
    n, h, w = ops.shape(x)[:3]
    return n, ops.cast(h, "float32"), ops.cast(w, "float32")


@_register
class GaussianNoise(_RandomStage):
    """Additive Gaussian noise, sigma ~ U(0, ``max_sigma``) per image (in 0..255 units), applied
    with probability ``p`` per image.

    ``keras.layers.GaussianNoise`` is not the same: one fixed stddev for the whole batch.
    The result is not clipped (:class:`~mask_keras.augment.Augmentation` clips at the end).

    Args:
        max_sigma: largest noise stddev, in 0..255 pixel units.
        p: probability that an image gets noise.
        seed: seeds the layer's ``SeedGenerator`` (None: a fresh seed).
        **kwargs: Keras layer arguments (``name``, ...); the dtype is always float32.
    """

    def __init__(self, max_sigma: float = 10.0, p: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.max_sigma, self.p = float(max_sigma), float(p)

    def _apply(self, x):
        n = ops.shape(x)[0]
        sigma = self._uniform((n, 1, 1, 1), 0.0, self.max_sigma)
        on = ops.cast(self._uniform((n, 1, 1, 1)) < self.p, "float32")
        noise = keras.random.normal(ops.shape(x), dtype="float32", seed=self.generator)
        return x + noise * sigma * on

    def get_config(self):
        return {**super().get_config(), "max_sigma": self.max_sigma, "p": self.p}


def _as_layers(stages):
    return list(stages) if isinstance(stages, (list, tuple)) else [stages]


@_register
class RandomApply(_RandomStage):
    """Apply ``stages`` (layers, in order) to each image with probability ``p``, else leave it unchanged.

    The stages run on the whole batch; a per-image draw picks the result or the input.

    Args:
        stages: a Keras layer or a list of them, called with ``training=True``.
        p: probability that an image gets the stages' result.
        seed: seeds the per-image draw (the stages keep their own seeds).
        **kwargs: Keras layer arguments (``name``, ...); the dtype is always float32.
    """

    def __init__(self, stages, p: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.stages = _as_layers(stages)
        self.p = float(p)

    def build(self, input_shape):
        for s in self.stages:
            if not s.built:
                s.build(input_shape)

    def _apply(self, x):
        y = x
        for s in self.stages:
            y = ops.cast(s(y, training=True), "float32")
        on = self._uniform((ops.shape(x)[0], 1, 1, 1)) < self.p
        return ops.where(on, y, x)

    def get_config(self):
        return {**super().get_config(), "p": self.p,
                "stages": [keras.saving.serialize_keras_object(s) for s in self.stages]}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["stages"] = [keras.saving.deserialize_keras_object(s) for s in config["stages"]]
        return cls(**config)


@_register
class ReflectPadded(_Stage):
    """Run ``stage`` (a layer) on the batch reflect-padded by ``pad`` pixels, then crop back.

    ``keras.layers.RandomGaussianBlur`` convolves with zero padding, which darkens a
    ``kernel_size // 2`` border (a 200-grey image gets edges near 130); padding first avoids
    it. Has no randomness of its own.

    Args:
        stage: the Keras layer to run, called with ``training=True``.
        pad: border in pixels, >= 1 (ValueError otherwise) and less than the image sides.
        **kwargs: Keras layer arguments (``name``, ...); the dtype is always float32.
    """

    def __init__(self, stage, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.stage, self.pad = stage, int(pad)
        if self.pad < 1:
            raise ValueError(f"ReflectPadded: pad must be >= 1, got {pad}")

    def build(self, input_shape):
        if not self.stage.built:
            shape = list(input_shape)
            for axis in (-3, -2):
                shape[axis] = None if shape[axis] is None else shape[axis] + 2 * self.pad
            self.stage.build(tuple(shape))

    def _apply(self, x):
        p = self.pad
        y = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
        y = ops.cast(self.stage(y, training=True), "float32")
        return y[:, p:-p, p:-p, :]

    def get_config(self):
        return {**super().get_config(), "pad": self.pad, "stage": keras.saving.serialize_keras_object(self.stage)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["stage"] = keras.saving.deserialize_keras_object(config["stage"])
        return cls(**config)


def _reflect_index(i, size):
    """Integer pixel indices reflected into ``[0, size)`` about the image edges (``d c b a | a b c d``)."""
    i = ops.mod(i, 2 * size)
    return ops.where(i >= size, 2 * size - 1 - i, i)


def affine_warp(images, transforms):
    """Bilinear affine warp of a batch with a reflect border, one transform per image.

    Output pixel (x, y) samples the input at (a0 x + a1 y + a2, b0 x + b1 y + b2), the
    convention of ``keras.ops.image.affine_transform`` (and TF's ``ImageProjectiveTransform``),
    whose ``interpolation="bilinear", fill_mode="reflect"`` result it matches. It interpolates in
    (y, x) only (4 gathers per pixel, all channels at once) where the JAX
    ``affine_transform`` goes through ``map_coordinates`` in (y, x, channel): ~4x faster
    on CPU.

    Args:
        images: ``(n, h, w, c)`` float images.
        transforms: ``(n, 6)`` float ``[a0, a1, a2, b0, b1, b2]``, one row per image.

    Returns:
        The warped ``(n, h, w, c)`` images (a backend tensor).

    Example:
        >>> img = np.arange(12, dtype="float32").reshape(1, 3, 4, 1)
        >>> shift = np.array([[1, 0, 1, 0, 1, 0]], "float32")  # samples at x + 1
        >>> ops.convert_to_numpy(affine_warp(img, shift))[0, 0, :, 0]
        array([1., 2., 3., 3.], dtype=float32)
    """
    n, h, w, c = ops.shape(images)
    yy, xx = ops.meshgrid(ops.arange(h, dtype="float32"), ops.arange(w, dtype="float32"), indexing="ij")
    a0, a1, a2, b0, b1, b2 = (transforms[:, i][:, None, None] for i in range(6))
    sx, sy = a0 * xx + a1 * yy + a2, b0 * xx + b1 * yy + b2  # (n, h, w) source coordinates
    x0, y0 = ops.floor(sx), ops.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    cols = (_reflect_index(x0, w), _reflect_index(x0 + 1, w))
    rows = (_reflect_index(y0, h) * w, _reflect_index(y0 + 1, h) * w)
    flat = ops.reshape(images, (n, h * w, c))

    def pixels(row, col):
        index = ops.reshape(row + col, (n, h * w, 1))
        return ops.reshape(ops.take_along_axis(flat, index, axis=1), (n, h, w, c))

    top = pixels(rows[0], cols[0]) * (1.0 - fx) + pixels(rows[0], cols[1]) * fx
    bottom = pixels(rows[1], cols[0]) * (1.0 - fx) + pixels(rows[1], cols[1]) * fx
    return top * (1.0 - fy) + bottom * fy


@_register
class ShiftScaleRotate(_RandomStage):
    """albumentations' ShiftScaleRotate as one affine warp per image (reflect border, bilinear).

    shift ~ U(-shift, shift) of the side, scale ~ U(1 - scale, 1 + scale), angle ~
    U(-rotate, rotate) degrees (about the image centre), each image transformed with
    probability ``p`` (the others get the identity in the same warp). One warp
    (:func:`affine_warp`) instead of three Keras layers (RandomTranslation, RandomZoom,
    RandomRotation): one interpolation, a fraction of the work.

    Args:
        shift: largest shift, a fraction of the image side.
        scale: largest relative zoom in or out.
        rotate: largest rotation in degrees.
        p: probability that an image is transformed.
        seed: seeds the layer's ``SeedGenerator`` (None: a fresh seed).
        **kwargs: Keras layer arguments (``name``, ...); the dtype is always float32.
    """

    def __init__(self, shift: float = 0.0625, scale: float = 0.1, rotate: float = 15.0, p: float = 0.5,
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.shift, self.scale, self.rotate, self.p = float(shift), float(scale), float(rotate), float(p)

    def transforms(self, n, h, w):
        """(n, 6) random transforms for :func:`affine_warp` of n images of h x w pixels.

        Args:
            n: number of images.
            h: image height in pixels, a float (tensor).
            w: image width in pixels, a float (tensor).

        Returns:
            A float32 ``(n, 6)`` tensor drawn from the layer's generator; the identity
            ``[1, 0, 0, 0, 1, 0]`` for images not transformed (probability ``1 - p``).
        """
        on = ops.cast(self._uniform((n,)) < self.p, "float32")
        theta = self._uniform((n,), -1.0, 1.0) * (self.rotate * math.pi / 180.0) * on
        s = 1.0 + self._uniform((n,), -self.scale, self.scale) * on
        tx = self._uniform((n,), -self.shift, self.shift) * w * on
        ty = self._uniform((n,), -self.shift, self.shift) * h * on
        # output pixel -> input point: in = R(-theta) / s @ (out - c - t) + c, i.e. the image is
        # scaled by s and rotated by theta about its centre c, then shifted by t
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        cos, sin = ops.cos(theta) / s, ops.sin(theta) / s
        a0, a1, b0, b1 = cos, sin, -sin, cos
        a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
        b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
        return ops.stack([a0, a1, a2, b0, b1, b2], axis=1)

    def _apply(self, x):
        return affine_warp(x, self.transforms(*_batch_hw(x)))

    def get_config(self):
        return {**super().get_config(), "shift": self.shift, "scale": self.scale, "rotate": self.rotate,
                "p": self.p}


@_register
class CoarseDropout(_RandomStage):
    """albumentations' CoarseDropout: with probability ``p`` an image gets 1..``max_holes``
    rectangles (each side ``size`` = (min, max) fraction of the image side) set to ``fill``.

    Args:
        max_holes: most rectangles per image, >= 1 (their number is drawn from 1..max_holes).
        size: ``(min, max)`` side of a rectangle, a fraction of the image side.
        fill: the value holes are set to (0..255 units).
        p: probability that an image gets holes.
        seed: seeds the layer's ``SeedGenerator`` (None: a fresh seed).
        **kwargs: Keras layer arguments (``name``, ...); the dtype is always float32.
    """

    def __init__(self, max_holes: int = 6, size=(0.05, 0.12), fill: float = 0.0, p: float = 0.5,
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.max_holes, self.size, self.fill, self.p = int(max_holes), tuple(map(float, size)), float(fill), float(p)

    def _apply(self, x):
        n, h, w = _batch_hw(x)
        k = self.max_holes
        count = keras.random.randint((n, 1), 1, k + 1, dtype="int32", seed=self.generator)
        active = (ops.arange(k, dtype="int32")[None, :] < count) & (self._uniform((n, 1)) < self.p)  # (n, k)
        hh = self._uniform((n, k), *self.size) * h
        ww = self._uniform((n, k), *self.size) * w
        y0 = self._uniform((n, k)) * (h - hh)
        x0 = self._uniform((n, k)) * (w - ww)
        rows = ops.arange(ops.shape(x)[1], dtype="float32")[None, None, :]
        cols = ops.arange(ops.shape(x)[2], dtype="float32")[None, None, :]
        in_y = (rows >= ops.floor(y0)[..., None]) & (rows < ops.floor(y0 + hh)[..., None])  # (n, k, H)
        in_x = (cols >= ops.floor(x0)[..., None]) & (cols < ops.floor(x0 + ww)[..., None])  # (n, k, W)
        in_y = ops.cast(in_y & active[..., None], "float32")
        # a pixel is in a hole when some active hole covers both its row and its column
        covered = ops.einsum("nkh,nkw->nhw", in_y, ops.cast(in_x, "float32"))
        return ops.where(covered[..., None] > 0.5, ops.cast(self.fill, "float32"), x)

    def get_config(self):
        return {**super().get_config(), "max_holes": self.max_holes, "size": self.size, "fill": self.fill,
                "p": self.p}


_GRAY = np.array((0.299, 0.587, 0.114), np.float32)
#: RGB -> YIQ; a hue shift is a rotation of the (I, Q) plane
_YIQ = np.array(((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135)))
_YIQ_INV = np.linalg.inv(_YIQ)
# hue matrix YIQ^-1 @ R(theta) @ YIQ = _HUE0 + cos(theta) _HUE_COS + sin(theta) _HUE_SIN, with R the
# rotation of the (I, Q) plane: R = e0 e0^T + cos (e1 e1^T + e2 e2^T) + sin (e2 e1^T - e1 e2^T)
_HUE0 = np.outer(_YIQ_INV[:, 0], _YIQ[0]).astype(np.float32)
_HUE_COS = (np.outer(_YIQ_INV[:, 1], _YIQ[1]) + np.outer(_YIQ_INV[:, 2], _YIQ[2])).astype(np.float32)
_HUE_SIN = (np.outer(_YIQ_INV[:, 2], _YIQ[1]) - np.outer(_YIQ_INV[:, 1], _YIQ[2])).astype(np.float32)


@_register
class ColorJitter(_RandomStage):
    """torchvision-style ColorJitter on float images in [0, 255], as one 3x3 colour matrix per image.

    brightness, contrast, saturation: factors drawn from ``[1 - f, 1 + f]`` (brightness
    multiplies, contrast blends with the mean grey level, saturation blends with the grey
    image); hue: shift drawn from ``[-hue, hue]`` turns, done as a rotation in YIQ space (the
    usual fast approximation of an HSV hue shift). Applied in that order, per image; the
    result is clipped to [0, 255].

    ``keras.layers.RandomColorJitter`` does the same through two RGB<->HSV round trips
    (~15x slower).

    Args:
        brightness: in ``[0, 1]``.
        contrast: in ``[0, 1]``.
        saturation: in ``[0, 1]``.
        hue: in ``[0, 0.5]`` turns (a value out of range raises ValueError).
        seed: seeds the layer's ``SeedGenerator`` (None: a fresh seed).
        **kwargs: Keras layer arguments (``name``, ...); the dtype is always float32.

    Example:
        >>> out = ops.convert_to_numpy(ColorJitter(0.5, 0.5, 0.5, 0.25, seed=0)(np.full((2, 4, 4, 3), 100.0)))
        >>> out.shape, bool(np.allclose(out, out[..., :1], atol=1e-3))  # grey stays grey
        ((2, 4, 4, 3), True)
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.05, seed: int | None = None, **kwargs):
        for name, v, hi in (("brightness", brightness, 1), ("contrast", contrast, 1),
                            ("saturation", saturation, 1), ("hue", hue, 0.5)):
            if not 0 <= v <= hi:
                raise ValueError(f"ColorJitter: {name} must be in [0, {hi}], got {v}")
        super().__init__(seed=seed, **kwargs)
        self.brightness, self.contrast, self.saturation, self.hue = map(float, (brightness, contrast, saturation, hue))

    def _factor(self, n, f):
        return self._uniform((n,), 1.0 - f, 1.0 + f)

    def _apply(self, x):
        n = ops.shape(x)[0]
        gray_w = ops.convert_to_tensor(_GRAY)
        b = self._factor(n, self.brightness)
        c = self._factor(n, self.contrast)
        s = self._factor(n, self.saturation)
        theta = self._uniform((n,), -self.hue, self.hue) * (2.0 * math.pi)
        # brightness and contrast: y = c * b * x + (1 - c) * mean_grey(b * x)
        mean_gray = ops.mean(ops.einsum("nhwc,c->nhw", x, gray_w), axis=(1, 2))  # (n,)
        scale = (c * b)[:, None, None]
        offset = ((1.0 - c) * b * mean_gray)[:, None, None, None]  # same for the 3 channels
        # saturation: M_s = s * I + (1 - s) * 1 w^T ; hue: M_h = YIQ^-1 R(theta) YIQ
        s3 = s[:, None, None]
        m_s = s3 * ops.eye(3, dtype="float32")[None] + (1.0 - s3) * ops.ones((1, 3, 1)) * gray_w[None, None, :]
        m_h = (ops.convert_to_tensor(_HUE0)[None] + ops.cos(theta)[:, None, None] * ops.convert_to_tensor(_HUE_COS)
               + ops.sin(theta)[:, None, None] * ops.convert_to_tensor(_HUE_SIN))
        m = ops.matmul(m_h, m_s) * scale  # (n, 3, 3); rows of m_h @ m_s sum to 1: the grey offset passes unchanged
        y = ops.einsum("nhwc,ndc->nhwd", x, m) + offset
        return ops.clip(y, *map(float, VALUE_RANGE))

    def get_config(self):
        return {**super().get_config(), "brightness": self.brightness, "contrast": self.contrast,
                "saturation": self.saturation, "hue": self.hue}
