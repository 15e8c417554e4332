"""Named augmentation presets, MixUp / CutMix, and a gallery of augmented samples.

Everything here runs inside ``tf.data`` on TensorFlow ops, whatever the Keras backend:
Keras 3 image preprocessing layers (``RandomFlip``, ``RandomRotation``, ``RandomTranslation``,
``RandomZoom``, ``RandomBrightness``, ``RandomContrast``, ``RandomGrayscale``,
``RandomGaussianBlur``, ``RandAugment``) switch themselves to TensorFlow when called in a
``tf.data`` graph, so they work with the JAX backend too. They are called one by one (never
wrapped in ``keras.Sequential``), created with ``dtype="float32"`` so that a mixed-precision
policy does not turn them into float16/bfloat16, and called with ``training=True``.

A few stages are plain TF ops instead: :class:`ColorJitter` (Keras' ``RandomColorJitter``
is ~15x slower), :class:`ShiftScaleRotate` (one warp instead of three Keras layers),
:class:`CoarseDropout` (several holes in one pass; ``RandomErasing`` makes one),
:class:`GaussianNoise` (``keras.layers.GaussianNoise`` is not tf.data-safe),
:class:`RandomApply` (stages applied with a probability) and :class:`ReflectPadded`
(Keras' Gaussian blur darkens the border through zero padding).

Augmentation runs on whole batches (every random parameter is still drawn per image).
Images enter an augmenter as float32 in ``[0, 255]`` (uint8 cast, before normalisation;
every layer gets ``value_range=(0, 255)``) and leave clipped to ``[0, 255]``. Evaluation
and inference never augment.

``PRESETS`` maps a name (``AugmentConfig.preset``) to a :class:`Preset`; build one with
:func:`build_augmenter`. MixUp / CutMix act on whole batches with one-hot (or dict of
one-hot) targets: :class:`BatchMixer`.

Reproducibility: every layer and custom op is seeded from the run's seed, so two
augmenters built with the same seed produce the same draws in the same call order.
In a parallel ``tf.data`` map the call order (and so which batch gets which draw) is up
to the scheduler; :func:`mask_keras.pipeline.make_dataset` therefore runs the augmentation
map sequentially when ``deterministic=True`` is asked for.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import labels as L
from ._tf import tf

log = logging.getLogger(__name__)

VALUE_RANGE = (0, 255)


# ---------------------------------------------------------------------------
# custom stages (plain TF ops; no Keras layer exists for them in tf.data)
# ---------------------------------------------------------------------------
def _generator(seed):
    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(int(seed))


class _Stage:
    """A random stage on float images in [0, 255]: takes one image or a batch, and is the
    identity when ``training`` is false. Subclasses implement ``_apply(batch)``."""

    def __call__(self, images, training=True):
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank == 3:
            return self(images[None], training)[0]
        return self._apply(images) if training else images

    def _apply(self, x):  # pragma: no cover - abstract
        raise NotImplementedError


class GaussianNoise(_Stage):
    """Additive Gaussian noise, sigma ~ U(0, ``max_sigma``) per image, applied with probability ``p``.

    ``keras.layers.GaussianNoise`` cannot be used: it is not a tf.data layer (it calls the
    JAX backend) and takes stddev <= 1 only.
    """

    def __init__(self, max_sigma: float = 10.0, p: float = 0.5, seed=None):
        self.max_sigma, self.p = float(max_sigma), float(p)
        self.rng = _generator(seed)

    def _apply(self, x):
        b = tf.shape(x)[0]
        sigma = self.rng.uniform((b, 1, 1, 1), 0.0, self.max_sigma)
        apply = tf.cast(self.rng.uniform((b, 1, 1, 1)) < self.p, tf.float32)
        return x + self.rng.normal(tf.shape(x)) * sigma * apply


class RandomApply(_Stage):
    """Apply ``stages`` (in order) to each image with probability ``p``, else leave it unchanged."""

    def __init__(self, stages, p: float = 0.5, seed=None):
        self.stages = list(stages) if isinstance(stages, (list, tuple)) else [stages]
        self.p = float(p)
        self.rng = _generator(seed)

    def _apply(self, x):
        y = x
        for s in self.stages:
            y = s(y, training=True)
        apply = self.rng.uniform((tf.shape(x)[0], 1, 1, 1)) < self.p
        return tf.where(apply, tf.cast(y, tf.float32), x)


class ReflectPadded(_Stage):
    """Run ``stage`` on the image reflect-padded by ``pad`` pixels, then crop back.

    ``keras.layers.RandomGaussianBlur`` convolves with zero padding, which darkens a
    ``kernel_size // 2`` border (a 200-grey image gets edges near 130); padding first avoids it.
    """

    def __init__(self, stage, pad: int):
        self.stage, self.pad = stage, int(pad)

    def _apply(self, x):
        p = self.pad
        y = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")
        y = tf.cast(self.stage(y, training=True), tf.float32)
        return y[:, p:-p, p:-p, :]


class ShiftScaleRotate(_Stage):
    """albumentations' ShiftScaleRotate as one affine warp per image (reflect border, bilinear).

    shift ~ U(-shift, shift) of the side, scale ~ U(1 - scale, 1 + scale), angle ~
    U(-rotate, rotate) degrees, each image transformed with probability ``p`` (the others get
    the identity in the same warp). One ``ImageProjectiveTransformV3`` instead of three Keras
    layers (RandomTranslation, RandomZoom, RandomRotation): ~3x faster, one interpolation.
    """

    def __init__(self, shift: float = 0.0625, scale: float = 0.1, rotate: float = 15.0, p: float = 0.5, seed=None):
        self.shift, self.scale, self.rotate, self.p = float(shift), float(scale), float(rotate), float(p)
        self.rng = _generator(seed)

    def _apply(self, x):
        shape = tf.shape(x)
        n, h, w = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        on = tf.cast(self.rng.uniform((n,)) < self.p, tf.float32)
        theta = self.rng.uniform((n,), -1.0, 1.0) * (self.rotate * np.pi / 180.0) * on
        s = 1.0 + self.rng.uniform((n,), -self.scale, self.scale) * on
        tx = self.rng.uniform((n,), -self.shift, self.shift) * w * on
        ty = self.rng.uniform((n,), -self.shift, self.shift) * h * on
        # output pixel -> input pixel: in = R(-theta) / s @ (out - c - t) + c
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        cos, sin = tf.cos(theta) / s, tf.sin(theta) / s
        a0, a1, b0, b1 = cos, sin, -sin, cos
        a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
        b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
        zero = tf.zeros_like(cos)
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT")


class CoarseDropout(_Stage):
    """albumentations' CoarseDropout: with probability ``p`` an image gets 1..``max_holes``
    rectangles (each side ``size`` = (min, max) fraction of the image side) set to ``fill``."""

    def __init__(self, max_holes: int = 6, size=(0.05, 0.12), fill: float = 0.0, p: float = 0.5, seed=None):
        self.max_holes, self.size, self.fill, self.p = int(max_holes), tuple(map(float, size)), float(fill), float(p)
        self.rng = _generator(seed)

    def _apply(self, x):
        shape = tf.shape(x)
        n, h, w = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        k = self.max_holes
        count = self.rng.uniform((n, 1), 1, k + 1, dtype=tf.int32)
        active = (tf.range(k)[None, :] < count) & (self.rng.uniform((n, 1)) < self.p)  # (n, k)
        hh = self.rng.uniform((n, k), *self.size) * h
        ww = self.rng.uniform((n, k), *self.size) * w
        y0 = self.rng.uniform((n, k)) * (h - hh)
        x0 = self.rng.uniform((n, k)) * (w - ww)
        rows = tf.range(h)[None, None, :]
        cols = tf.range(w)[None, None, :]
        in_y = (rows >= tf.floor(y0)[..., None]) & (rows < tf.floor(y0 + hh)[..., None])  # (n, k, H)
        in_x = (cols >= tf.floor(x0)[..., None]) & (cols < tf.floor(x0 + ww)[..., None])  # (n, k, W)
        holes = in_y[:, :, :, None] & in_x[:, :, None, :] & active[:, :, None, None]  # (n, k, H, W)
        hole = tf.reduce_any(holes, axis=1)[..., None]
        return tf.where(hole, tf.constant(self.fill, tf.float32), x)


_GRAY = (0.299, 0.587, 0.114)
#: RGB -> YIQ; a hue shift is a rotation of the (I, Q) plane
_YIQ = ((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135))


class ColorJitter(_Stage):
    """torchvision-style ColorJitter on float images in [0, 255], as one 3x3 colour matrix per image.

    brightness, contrast, saturation: factors drawn from ``[1 - f, 1 + f]`` (brightness
    multiplies, contrast blends with the mean grey level, saturation blends with the grey
    image); hue: shift drawn from ``[-hue, hue]`` turns, done as a rotation in YIQ space (the
    usual fast approximation of an HSV hue shift). Applied in that order, per image.

    ``keras.layers.RandomColorJitter`` does the same through two RGB<->HSV round trips and
    measured ~15x slower inside tf.data on CPU, enough to starve the accelerator.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.05, seed=None):
        for name, v, hi in (("brightness", brightness, 1), ("contrast", contrast, 1),
                            ("saturation", saturation, 1), ("hue", hue, 0.5)):
            if not 0 <= v <= hi:
                raise ValueError(f"ColorJitter: {name} must be in [0, {hi}], got {v}")
        self.brightness, self.contrast, self.saturation, self.hue = map(float, (brightness, contrast, saturation, hue))
        self.rng = _generator(seed)

    def _factor(self, n, f):
        return self.rng.uniform((n,), 1.0 - f, 1.0 + f)

    def _apply(self, x):
        n = tf.shape(x)[0]
        gray_w = tf.constant(_GRAY, tf.float32)
        b = self._factor(n, self.brightness)
        c = self._factor(n, self.contrast)
        s = self._factor(n, self.saturation)
        theta = self.rng.uniform((n,), -self.hue, self.hue) * (2.0 * np.pi)
        # brightness and contrast: y = c * b * x + (1 - c) * mean_grey(b * x)
        mean_gray = tf.reduce_mean(tf.tensordot(x, gray_w, 1), axis=[1, 2])  # (n,)
        scale = (c * b)[:, None, None]
        offset = ((1.0 - c) * b * mean_gray)[:, None]  # (n, 1), same for the 3 channels
        # saturation: M_s = s * I + (1 - s) * 1 w^T ; hue: M_h = T^-1 R(theta) T
        eye = tf.eye(3, batch_shape=[n])
        m_s = s[:, None, None] * eye + (1.0 - s)[:, None, None] * tf.ones((1, 3, 1)) * gray_w[None, None, :]
        t = tf.constant(_YIQ, tf.float32)
        cos, sin = tf.cos(theta), tf.sin(theta)
        zero, one = tf.zeros_like(cos), tf.ones_like(cos)
        rot = tf.stack([tf.stack([one, zero, zero], -1), tf.stack([zero, cos, -sin], -1),
                        tf.stack([zero, sin, cos], -1)], axis=1)
        m_h = tf.linalg.inv(t)[None] @ rot @ t[None]
        m = m_h @ m_s  # (n, 3, 3); rows of m sum to 1, so the grey offset passes through unchanged
        y = tf.einsum("nhwc,ndc->nhwd", x, m * scale) + offset[:, None, None, :]
        return tf.clip_by_value(y, *map(float, VALUE_RANGE))


# ---------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------
def _kw(seed, k):
    """Keyword arguments every Keras layer gets: float32 dtype and a distinct seed."""
    return {"dtype": "float32", "seed": None if seed is None else int(seed) + 1009 * k}


def _jitter(seed, k, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05):
    return ColorJitter(brightness, contrast, saturation, hue, seed=None if seed is None else int(seed) + 1009 * k)


def _deg(d):
    """RandomRotation takes fractions of a full turn."""
    return d / 360.0


def _none(seed):
    return []


def _base(seed):
    import keras

    return [keras.layers.RandomFlip("horizontal", **_kw(seed, 0)),
            keras.layers.RandomBrightness(0.1, value_range=VALUE_RANGE, **_kw(seed, 1)),
            keras.layers.RandomContrast(0.2, value_range=VALUE_RANGE, **_kw(seed, 2))]


def _team000(seed):
    import keras

    return [keras.layers.RandomFlip("horizontal", **_kw(seed, 0)),
            _jitter(seed, 1, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
            keras.layers.RandomRotation(_deg(10), fill_mode="reflect", **_kw(seed, 2))]


def _team000_mask(seed):
    """Stronger variant for the mask model (team 000 added augmentation for bandana-like masks):
    wide hue/saturation changes recolour the masks, occasional grayscale, more geometry."""
    import keras

    return [keras.layers.RandomFlip("horizontal", **_kw(seed, 0)),
            _jitter(seed, 1, brightness=0.3, contrast=0.3, saturation=0.5, hue=0.25),
            keras.layers.RandomGrayscale(factor=0.1, **_kw(seed, 2)),
            keras.layers.RandomRotation(_deg(15), fill_mode="reflect", **_kw(seed, 3)),
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", **_kw(seed, 4)),
            keras.layers.RandomZoom(0.1, fill_mode="reflect", **_kw(seed, 5))]


def _team001(seed):
    import keras

    return [keras.layers.RandomBrightness(0.15, value_range=VALUE_RANGE, **_kw(seed, 0)),
            keras.layers.RandomFlip("horizontal", **_kw(seed, 1))]


def _team002(seed):
    """imgaug-style: rotate +-5 deg, flip, Gaussian blur, Gaussian noise, then ColorJitter."""
    import keras

    s = None if seed is None else int(seed)
    return [keras.layers.RandomRotation(_deg(5), fill_mode="reflect", **_kw(seed, 0)),
            keras.layers.RandomFlip("horizontal", **_kw(seed, 1)),
            ReflectPadded(keras.layers.RandomGaussianBlur(factor=(0.3, 0.3), kernel_size=5, sigma=(0.1, 1.5),
                                                          value_range=VALUE_RANGE, **_kw(seed, 2)), pad=2),
            GaussianNoise(max_sigma=10.0, p=0.3, seed=None if s is None else s + 3),
            _jitter(seed, 4, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)]


def _team004(seed):
    """albumentations-like: flip, ShiftScaleRotate (p=0.5), ColorJitter (p=0.5), CoarseDropout (p=0.5)."""
    import keras

    s = None if seed is None else int(seed)
    return [keras.layers.RandomFlip("horizontal", **_kw(seed, 0)),
            ShiftScaleRotate(shift=0.0625, scale=0.1, rotate=15.0, p=0.5, seed=None if s is None else s + 1),
            RandomApply(_jitter(seed, 5, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
                        p=0.5, seed=None if s is None else s + 6),
            CoarseDropout(max_holes=6, size=(0.05, 0.12), fill=0.0, p=0.5, seed=None if s is None else s + 7)]


def _randaugment(seed):
    """keras.layers.RandAugment (2 ops, magnitude 0.1: its rotation/shear/translation only go one way,
    so the flip comes after it) + horizontal flip.

    RandAugment draws its two operations once per call, i.e. once per batch here (the
    magnitudes still vary per image), and evaluates all 11 candidate operations every time:
    it is by far the slowest preset. Its graph is large: building the dataset takes ~10 s and
    every new iterator (each epoch) ~5 s more on a CPU before the first batch."""
    import keras

    return [keras.layers.RandAugment(value_range=VALUE_RANGE, num_ops=2, factor=0.1, **_kw(seed, 0)),
            keras.layers.RandomFlip("horizontal", **_kw(seed, 1))]


@dataclass(frozen=True)
class Preset:
    """A named augmentation recipe: ``build(seed)`` returns the stages, applied in order."""

    name: str
    description: str
    build: Callable


PRESETS: dict[str, Preset] = {p.name: p for p in (
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
)}


class Augmenter:
    """Callable applying a preset's stages to float32 images in [0, 255] (one image or a batch)."""

    def __init__(self, preset: str = "base", seed: int | None = None):
        if preset not in PRESETS:
            from .config import _unknown

            raise _unknown("augmentation preset", preset, sorted(PRESETS))
        self.preset = PRESETS[preset]
        self.seed = seed
        self.stages = list(self.preset.build(seed))
        self._eager_fn = None

    def __bool__(self) -> bool:
        return bool(self.stages)

    def __call__(self, images, training: bool = True):
        x = tf.cast(images, tf.float32)
        if not training or not self.stages:
            return x
        if tf.executing_eagerly():
            # outside tf.data (gallery, tests): trace once so that the Keras layers run on their
            # TensorFlow path, exactly as in the pipeline (eagerly they would use the JAX backend)
            if self._eager_fn is None:
                self._eager_fn = tf.function(self._apply, autograph=False)
            return self._eager_fn(x)
        return self._apply(x)

    def _apply(self, x):
        for stage in self.stages:
            x = tf.cast(stage(x, training=True), tf.float32)
        return tf.clip_by_value(x, *map(float, VALUE_RANGE))

    def __repr__(self) -> str:
        return f"Augmenter({self.preset.name!r}, seed={self.seed}, stages={[type(s).__name__ for s in self.stages]})"


def build_augmenter(preset: str, seed: int | None = None) -> Augmenter:
    """The augmenter of a named preset (see ``PRESETS``)."""
    return Augmenter(preset, seed)


# ---------------------------------------------------------------------------
# MixUp / CutMix on batches
# ---------------------------------------------------------------------------
class BatchMixer:
    """MixUp / CutMix of a batch with a shuffled copy of itself, on one-hot targets.

    Per batch one uniform draw ``u`` picks MixUp (``u < mixup``), CutMix
    (``mixup <= u < mixup + cutmix``) or nothing. Each image ``i`` is paired with image
    ``perm[i]`` of the same batch and gets its own ratio ``lam ~ Beta(alpha, alpha)``;
    targets become ``lam * y_i + (1 - lam) * y_perm[i]`` (still summing to 1). For CutMix
    ``lam`` is the kept area of the pasted box. Dict targets (multihead) are mixed with the
    same pairs and ratios. ``old_only`` (team 004) mixes only pairs where at least one of
    the two faces is >=60 (age group 2); other images are left unchanged.
    """

    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0, alpha: float = 0.4,
                 old_only: bool = False, seed: int | None = None):
        if not 0 <= mixup <= 1 or not 0 <= cutmix <= 1:
            raise ValueError(f"mixup and cutmix are probabilities in [0, 1], got {mixup}, {cutmix}")
        if alpha <= 0:
            raise ValueError(f"mix_alpha must be > 0, got {alpha}")
        if mixup + cutmix > 1:
            log.warning("augment.mixup + augment.cutmix = %.2f > 1: CutMix runs in %.0f%% of the batches, not %.0f%%",
                        mixup + cutmix, 100 * (1 - mixup), 100 * cutmix)
        self.mixup, self.cutmix, self.alpha, self.old_only = float(mixup), float(cutmix), float(alpha), bool(old_only)
        self.rng = _generator(seed)

    @classmethod
    def from_config(cls, augment_cfg, seed=None) -> "BatchMixer | None":
        """A mixer for ``AugmentConfig``, or None when neither MixUp nor CutMix is on."""
        if augment_cfg.mixup <= 0 and augment_cfg.cutmix <= 0:
            return None
        return cls(augment_cfg.mixup, augment_cfg.cutmix, augment_cfg.mix_alpha, augment_cfg.mix_old_only, seed)

    def _beta(self, n):
        s1, s2 = tf.unstack(self.rng.make_seeds(2), axis=1)
        a = tf.random.stateless_gamma((n,), seed=s1, alpha=self.alpha)
        b = tf.random.stateless_gamma((n,), seed=s2, alpha=self.alpha)
        return a / tf.maximum(a + b, 1e-12)

    def __call__(self, images, targets, age_group=None):
        """images (B, H, W, C) float32, targets (B, K) or dict of them; age_group (B,) int (for old_only)."""
        x = tf.convert_to_tensor(images, tf.float32)
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1], shape[2]
        perm = self.rng.uniform_full_int((b,), dtype=tf.int64)
        perm = tf.argsort(perm, stable=True)
        u = self.rng.uniform(())
        do_mixup = u < self.mixup
        do_cutmix = tf.logical_and(u >= self.mixup, u < self.mixup + self.cutmix)
        active = tf.fill((b,), tf.logical_or(do_mixup, do_cutmix))
        if self.old_only:
            if age_group is None:
                raise ValueError("BatchMixer(old_only=True) needs the age group of every image")
            old = tf.equal(tf.cast(age_group, tf.int32), int(L.AgeGroup.OLD))
            active = tf.logical_and(active, tf.logical_or(old, tf.gather(old, perm)))
        lam = self._beta(b)

        # CutMix box: area (1 - lam) of the image, centred uniformly, clipped to the image
        hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
        cut = tf.sqrt(1.0 - lam)
        ch, cw = tf.round(hf * cut), tf.round(wf * cut)
        cy = self.rng.uniform((b,), 0.0, 1.0) * hf
        cx = self.rng.uniform((b,), 0.0, 1.0) * wf
        y0 = tf.clip_by_value(tf.round(cy - ch / 2), 0.0, hf)
        y1 = tf.clip_by_value(tf.round(cy + ch / 2), 0.0, hf)
        x0 = tf.clip_by_value(tf.round(cx - cw / 2), 0.0, wf)
        x1 = tf.clip_by_value(tf.round(cx + cw / 2), 0.0, wf)
        rows = tf.range(hf)[None, :, None]
        cols = tf.range(wf)[None, None, :]
        box = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
               & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
        box = tf.cast(box, tf.float32)[..., None]  # (B, H, W, 1), 1 = pasted from the partner
        lam_cut = 1.0 - (y1 - y0) * (x1 - x0) / (hf * wf)

        lam = tf.where(do_cutmix, lam_cut, lam)
        lam = tf.where(active, lam, tf.ones_like(lam))
        partner = tf.gather(x, perm)
        mixed_up = lam[:, None, None, None] * x + (1.0 - lam[:, None, None, None]) * partner
        cut_mixed = x * (1.0 - box) + partner * box
        mixed = tf.where(do_cutmix, cut_mixed, mixed_up)
        x_out = tf.where(active[:, None, None, None], mixed, x)

        def mix_y(y):
            y = tf.cast(y, tf.float32)
            return lam[:, None] * y + (1.0 - lam[:, None]) * tf.gather(y, perm)

        y_out = {k: mix_y(v) for k, v in targets.items()} if isinstance(targets, dict) else mix_y(targets)
        return x_out, y_out


# ---------------------------------------------------------------------------
# gallery
# ---------------------------------------------------------------------------
def augmentation_gallery(table, cfg, path, n: int = 16, seed: int | None = None):
    """PNG of ``n`` training samples after the preset's augmentation (and MixUp/CutMix, if on).

    The first row shows the same images without augmentation for comparison.
    """
    from . import plots
    from .pipeline import load_images

    seed = cfg.train.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    n = int(min(n, len(table)))
    pick = table.iloc[np.sort(rng.choice(len(table), size=n, replace=False))]
    raw = tf.constant(load_images(pick, cfg.preprocess))  # uint8 (n, h, w, 3)
    aug = Augmenter(cfg.augment.preset, seed)
    x = aug(raw)
    captions = [f"{r.stem}/{L.CLASS_NAMES['gender'][r.gender]}/{L.CLASS_NAMES['age'][r.age_group]}"
                if {"stem", "gender", "age_group"} <= set(pick.columns) else str(i)
                for i, r in enumerate(pick.itertuples())]
    mixer = BatchMixer.from_config(cfg.augment, seed)
    if mixer is not None:
        y = tf.one_hot(np.asarray(pick["label"]) if "label" in pick else np.zeros(n, int), L.NUM_CLASSES)
        ages = np.asarray(pick["age_group"]) if "age_group" in pick else np.zeros(n, int)
        x, y = mixer(x, y, ages)
        top = tf.math.top_k(y, 2)
        captions = [f"{c}\nmix {v[0]:.2f}/{v[1]:.2f}" if v[1] > 0 else c
                    for c, v in zip(captions, top.values.numpy())]
    cols = min(8, n)
    images = [im for im in raw.numpy()[:cols]] + [im for im in np.round(x.numpy()).astype(np.uint8)]
    captions = [f"original {i}" for i in range(cols)] + captions
    return plots.image_grid(images, captions, path, cols=cols,
                            title=f"augmentation preset {cfg.augment.preset!r} (first row: originals)")
