"""Named augmentation presets as a Keras layer run on the accelerator, and a gallery (with MixUp / CutMix).

Where augmentation runs
-----------------------
Per-image augmentation is a layer of the model: :class:`Augmentation` (``preset``, ``seed``)
sits right after the model's input and runs inside the jitted train step, on the
accelerator, with everything else. The input pipeline only decodes, crops and resizes,
and ships uint8 batches. The layer augments only when called with ``training=True``
(``model.fit``); in ``evaluate``/``predict``/inference, or called with ``training`` left
out, it only casts to float32, so a saved model never augments at inference.

MixUp / CutMix (:class:`~mask_keras.mixup.BatchMixer`, in :mod:`mask_keras.mixup`) need the
labels, so they stay on the host in ``tf.data`` (TensorFlow ops, applied to the batch after
the cast to float32). They
therefore come *before* the per-image augmentation (timm and the teams mixed after it):
a mixed image is flipped, warped and recoloured as one image.

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

``PRESETS`` maps a name (``AugmentConfig.preset``) to a :class:`Preset` (its stages);
:func:`build_augmentation` returns the preset's :class:`Augmentation`, or None for ``"none"``.

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
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import ops

from . import labels as L
from . import plots, registry
from .mixup import BatchMixer  # moved to mixup.py; also importable from here, as before

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

    images (n, h, w, c) float; transforms (n, 6) ``[a0, a1, a2, b0, b1, b2]``: output pixel
    (x, y) samples the input at (a0 x + a1 y + a2, b0 x + b1 y + b2), the convention of
    ``keras.ops.image.affine_transform`` (and TF's ``ImageProjectiveTransform``), whose
    ``interpolation="bilinear", fill_mode="reflect"`` result it matches. It interpolates in
    (y, x) only (4 gathers per pixel, all channels at once) where the JAX
    ``affine_transform`` goes through ``map_coordinates`` in (y, x, channel): ~4x faster
    on CPU.
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
    """

    def __init__(self, shift: float = 0.0625, scale: float = 0.1, rotate: float = 15.0, p: float = 0.5,
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.shift, self.scale, self.rotate, self.p = float(shift), float(scale), float(rotate), float(p)

    def transforms(self, n, h, w):
        """(n, 6) random transforms for :func:`affine_warp` of n images of h x w pixels
        (h and w floats; draws from the generator)."""
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
    rectangles (each side ``size`` = (min, max) fraction of the image side) set to ``fill``."""

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


# ---------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------
def _sub(seed, k):
    """The seed of a preset's k-th stage: a distinct offset of the run's seed (None stays None)."""
    return None if seed is None else int(seed) + 1009 * k


def _kw(seed, k):
    """Keyword arguments every Keras layer gets: float32 dtype and a distinct seed."""
    return {"dtype": "float32", "seed": _sub(seed, k)}


def _jitter(seed, k, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05):
    return ColorJitter(brightness, contrast, saturation, hue, seed=_sub(seed, k))


def _none(seed):
    return []


def _base(seed):
    return [keras.layers.RandomFlip("horizontal", **_kw(seed, 0)),
            keras.layers.RandomBrightness(0.1, value_range=VALUE_RANGE, **_kw(seed, 1)),
            keras.layers.RandomContrast(0.2, value_range=VALUE_RANGE, **_kw(seed, 2))]


def _rotate(seed, k, degrees):
    """Rotation by U(-degrees, degrees), bilinear, reflect border: :class:`ShiftScaleRotate` with
    only a rotation (the same draw as ``keras.layers.RandomRotation``, one warp, ~4x faster on CPU)."""
    return ShiftScaleRotate(shift=0.0, scale=0.0, rotate=degrees, p=1.0, seed=_sub(seed, k))


def _team000(seed):
    return [keras.layers.RandomFlip("horizontal", **_kw(seed, 0)),
            _jitter(seed, 1, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
            _rotate(seed, 2, 10.0)]


def _team000_mask(seed):
    """Stronger variant for the mask model (team 000 added augmentation for bandana-like masks):
    wide hue/saturation changes recolour the masks, occasional grayscale, more geometry
    (rotation +-15 deg, shift +-5 %, zoom +-10 %, as one warp per image)."""
    return [keras.layers.RandomFlip("horizontal", **_kw(seed, 0)),
            _jitter(seed, 1, brightness=0.3, contrast=0.3, saturation=0.5, hue=0.25),
            keras.layers.RandomGrayscale(factor=0.1, **_kw(seed, 2)),
            ShiftScaleRotate(shift=0.05, scale=0.1, rotate=15.0, p=1.0, seed=_sub(seed, 3))]


def _team001(seed):
    return [keras.layers.RandomBrightness(0.15, value_range=VALUE_RANGE, **_kw(seed, 0)),
            keras.layers.RandomFlip("horizontal", **_kw(seed, 1))]


def _team002(seed):
    """imgaug-style: rotate +-5 deg, flip, Gaussian blur, Gaussian noise, then ColorJitter."""
    s = None if seed is None else int(seed)
    return [_rotate(seed, 0, 5.0),
            keras.layers.RandomFlip("horizontal", **_kw(seed, 1)),
            ReflectPadded(keras.layers.RandomGaussianBlur(factor=(0.3, 0.3), kernel_size=5, sigma=(0.1, 1.5),
                                                          value_range=VALUE_RANGE, **_kw(seed, 2)), pad=2),
            GaussianNoise(max_sigma=10.0, p=0.3, seed=None if s is None else s + 3),
            _jitter(seed, 4, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)]


def _team004(seed):
    """albumentations-like: flip, ShiftScaleRotate (p=0.5), ColorJitter (p=0.5), CoarseDropout (p=0.5)."""
    s = None if seed is None else int(seed)
    return [keras.layers.RandomFlip("horizontal", **_kw(seed, 0)),
            ShiftScaleRotate(shift=0.0625, scale=0.1, rotate=15.0, p=0.5, seed=None if s is None else s + 1),
            RandomApply(_jitter(seed, 5, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
                        p=0.5, seed=None if s is None else s + 6),
            CoarseDropout(max_holes=6, size=(0.05, 0.12), fill=0.0, p=0.5, seed=None if s is None else s + 7)]


def _randaugment(seed):
    """keras.layers.RandAugment (2 ops, magnitude 0.1: its rotation/shear/translation only go one way,
    so the flip comes after it) + horizontal flip.

    RandAugment draws its two operations once per call, i.e. once per batch (the magnitudes
    still vary per image), and evaluates all 11 candidate operations every time: it is by
    far the slowest preset. On JAX its equalization unrolls a 256-bin histogram loop
    (per channel, over the whole batch): the jitted train step takes ~30-40 s more to
    compile on a CPU."""
    return [keras.layers.RandAugment(value_range=VALUE_RANGE, num_ops=2, factor=0.1, **_kw(seed, 0)),
            keras.layers.RandomFlip("horizontal", **_kw(seed, 1))]


@dataclass(frozen=True)
class Preset:
    """A named augmentation recipe: ``build(seed)`` returns the stages (layers), applied in order."""

    name: str
    description: str
    build: Callable


#: name -> Preset (the package's registry of presets, ``mask_keras.registry.AUGMENT_PRESETS``, filled here)
PRESETS = registry.AUGMENT_PRESETS
for _preset in (
    Preset("none", "no augmentation", _none),
    Preset("base", "horizontal flip, brightness, contrast", _base),
    Preset("team000", "flip, colour jitter, rotation +-10 deg (team 000)", _team000),
    Preset("team000_mask", "team000, stronger: hue/saturation recolouring, grayscale, rotation +-15, "
                           "shift, zoom (team 000's extra augmentation for the mask model)", _team000_mask),
    Preset("team001", "brightness, flip (team 001)", _team001),
    Preset("team002", "imgaug-style rotate +-5, flip, Gaussian blur, Gaussian noise, colour jitter (team 002)",
           _team002),
    Preset("team004", "albumentations-like flip, shift-scale-rotate, colour jitter, coarse dropout (team 004)",
           _team004),
    Preset("randaugment", "keras.layers.RandAugment (2 ops, magnitude 0.1) + flip", _randaugment),
):
    PRESETS.register(_preset.name, _preset)


def _check_preset(preset: str) -> Preset:
    return PRESETS.get(preset)


@_register
class Augmentation(keras.layers.Layer):
    """Per-image augmentation as a layer: put it right after the model's input.

    ``training=True`` (``model.fit``): casts to float32, applies the stages in order (on the
    accelerator inside the jitted train step; random parameters drawn per image, except a
    few Keras layers' per-batch ones) and clips to ``[0, 255]``. ``training`` false or left
    out (evaluation, prediction, inference): only the cast to float32. float32 whatever the
    dtype policy.

    Args:
        stages: Keras layers applied in order (any image layers taking 0..255 pixels, e.g.
            ``keras.layers.RandomFlip``, :class:`ColorJitter`); or the name of a preset
            (same as :meth:`from_preset`).
        seed: seeds a preset's stages (``None``: fresh seeds); stages passed as layers keep
            their own seeds.

    Call arguments:
        images: ``(B, H, W, 3)`` (or one ``(H, W, 3)``) pixels in ``[0, 255]``, uint8 or float.
        training: augment only when true.

    Returns:
        float32 images of the same shape.

    Example:
        >>> import numpy as np
        >>> aug = Augmentation([keras.layers.RandomFlip("horizontal", seed=1), GaussianNoise(5.0, p=1.0, seed=2)])
        >>> aug(np.zeros((2, 8, 6, 3), "uint8"), training=True).shape
        (2, 8, 6, 3)
        >>> Augmentation.from_preset("base", seed=0).preset
        'base'
    """

    def __init__(self, stages=None, seed: int | None = None, *, preset: str | None = None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if isinstance(stages, str):  # Augmentation("base", seed): a preset by name
            stages, preset = None, stages
        if preset is not None and stages is not None:
            raise ValueError("pass either stages or a preset name, not both")
        self.seed = None if seed is None else int(seed)
        self.preset = None if preset is None else _check_preset(preset).name
        if self.preset is not None:
            self.stages = list(PRESETS[self.preset].build(self.seed))
        else:
            self.stages = [keras.saving.deserialize_keras_object(st) if isinstance(st, dict) else st
                           for st in (stages or [])]
            bad = [st for st in self.stages if not isinstance(st, keras.layers.Layer)]
            if bad:
                raise TypeError(f"Augmentation stages must be Keras layers, got {bad[0]!r}")
        #: False: the identity (cast only) even in training; read when the call is traced
        #: (mask_keras.bn_stats measures BatchNorm statistics of un-augmented images this way)
        self.enabled = True

    @classmethod
    def from_preset(cls, preset: str, seed: int | None = None, **kwargs) -> "Augmentation":
        """The augmentation of a named preset (``PRESETS``: ``base``, ``team000``, ...).

        Args:
            preset: a registered preset name; an unknown one raises
                :class:`mask_keras.errors.ConfigError` naming the choices.
            seed: seeds every stage (``None``: fresh seeds).

        Returns:
            An :class:`Augmentation` whose config is just the name and seed.
        """
        return cls(preset=preset, seed=seed, **kwargs)

    def build(self, input_shape):
        # build the stages now, outside any jitted step, so that nothing is created while tracing
        shape = tuple(input_shape)
        for s in self.stages:
            if not s.built:
                s.build(shape)

    def call(self, images, training=None):
        x = ops.cast(images, "float32")
        if not training or not self.enabled or not self.stages:
            return x
        for s in self.stages:
            x = ops.cast(s(x, training=True), "float32")
        return ops.clip(x, *map(float, VALUE_RANGE))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        if self.preset is not None:  # a preset is saved by name (model.keras files before stages kept this form)
            return {**super().get_config(), "preset": self.preset, "seed": self.seed}
        return {**super().get_config(), "stages": [keras.saving.serialize_keras_object(st) for st in self.stages],
                "seed": self.seed}

    def __repr__(self) -> str:
        what = repr(self.preset) if self.preset is not None else "stages"
        return f"Augmentation({what}, seed={self.seed}, stages={[type(s).__name__ for s in self.stages]})"


def build_augmentation(preset: str, seed: int | None = None) -> Augmentation | None:
    """The :class:`Augmentation` layer of a named preset (see ``PRESETS``); None for ``"none"``.

    Raises :class:`mask_keras.config.ConfigError` for an unknown preset.
    """
    _check_preset(preset)
    return None if preset == "none" else Augmentation.from_preset(preset, seed)


# ---------------------------------------------------------------------------
# gallery
# ---------------------------------------------------------------------------
def augmentation_gallery(table, cfg, path, n: int = 16, seed: int | None = None):
    """PNG of ``n`` training samples after the preset's augmentation (and MixUp/CutMix, if on).

    The :class:`Augmentation` layer runs eagerly with ``training=True``, then the
    :class:`BatchMixer`, as in training. The first row shows the same images without
    augmentation for comparison.
    """

    from .pipeline import (
        load_images,  # TensorFlow: `import mask_keras` (which imports this module) stays without it
    )

    seed = cfg.train.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    n = int(min(n, len(table)))
    pick = table.iloc[np.sort(rng.choice(len(table), size=n, replace=False))]
    raw = np.asarray(load_images(pick, cfg.preprocess))  # uint8 (n, h, w, 3)
    layer = build_augmentation(cfg.augment.preset, seed)
    x = np.asarray(ops.convert_to_numpy(layer(raw, training=True)) if layer is not None else raw, np.float32)
    captions = [f"{r.stem}/{L.CLASS_NAMES['gender'][r.gender]}/{L.CLASS_NAMES['age'][r.age_group]}"
                if {"stem", "gender", "age_group"} <= set(pick.columns) else str(i)
                for i, r in enumerate(pick.itertuples())]
    mixer = BatchMixer.from_config(cfg.augment, seed)
    if mixer is not None:
        labels = np.asarray(pick["label"]) if "label" in pick else np.zeros(n, int)
        y = np.eye(L.NUM_CLASSES, dtype=np.float32)[labels]
        ages = np.asarray(pick["age_group"]) if "age_group" in pick else np.zeros(n, int)
        x, y = mixer(x, y, ages)
        x, top2 = x.numpy(), -np.sort(-y.numpy(), axis=1)[:, :2]
        captions = [f"{c}\nmix {v[0]:.2f}/{v[1]:.2f}" if v[1] > 0 else c for c, v in zip(captions, top2, strict=True)]
    cols = min(8, n)
    images = list(raw[:cols]) + list(np.round(x).astype(np.uint8))
    captions = [f"original {i}" for i in range(cols)] + captions
    return plots.image_grid(images, captions, path, cols=cols,
                            title=f"augmentation preset {cfg.augment.preset!r} (first row: originals)")
