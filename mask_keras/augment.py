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

``PRESETS`` maps a name (``AugmentConfig.preset``) to a :class:`Preset` (its stages);
:func:`build_augmentation` returns the preset's :class:`Augmentation`, or None for ``"none"``.

The stages (layers) live in :mod:`mask_keras.augment_stages` and are importable from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import ops

from . import labels as L
from . import plots, registry
from .augment_stages import (  # noqa: F401  (the stages, importable from here as before)
    VALUE_RANGE,
    CoarseDropout,
    ColorJitter,
    GaussianNoise,
    RandomApply,
    ReflectPadded,
    ShiftScaleRotate,
    affine_warp,
)
from .mixup import BatchMixer  # moved to mixup.py; also importable from here, as before

_register = keras.saving.register_keras_serializable(package="mask_keras")


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
    """A named augmentation recipe: ``build(seed)`` returns the stages (layers), applied in order.

    Attributes:
        name: the registry name (``AugmentConfig.preset``), e.g. ``"team000"``.
        description: a one-line summary of the stages.
        build: ``seed -> list of Keras layers``; ``seed`` (int or None) seeds every stage.
    """

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
        preset: the name of a preset in ``PRESETS`` (keyword only; not with ``stages``:
            ValueError).
        **kwargs: Keras layer arguments (``name``, ...); the dtype is always float32.

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
            **kwargs: Keras layer arguments (``name``, ...).

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

    Args:
        preset: a name in ``PRESETS``.
        seed: seeds every stage (``None``: fresh seeds).

    Returns:
        ``Augmentation.from_preset(preset, seed)``, or None for ``"none"``.

    Example:
        >>> build_augmentation("none") is None
        True
        >>> build_augmentation("team000", seed=1)
        Augmentation('team000', seed=1, stages=['RandomFlip', 'ColorJitter', 'ShiftScaleRotate'])
    """
    _check_preset(preset)
    return None if preset == "none" else Augmentation.from_preset(preset, seed)


# ---------------------------------------------------------------------------
# gallery
# ---------------------------------------------------------------------------
def augmentation_gallery(table, cfg, path, n: int = 16, seed: int | None = None):
    """PNG of ``n`` training samples after the preset's augmentation (and MixUp/CutMix, if on).

    As in training: the :class:`BatchMixer` first (the host's tf.data step), then the
    :class:`Augmentation` layer eagerly with ``training=True`` (the model's first layer). The first row shows the same images without
    augmentation for comparison. Imports TensorFlow (the pipeline decodes the images).

    Args:
        table: the image table (one row per image with ``path``, as the pipeline reads it;
            ``stem``, ``gender``, ``age_group`` and ``label`` feed the captions and MixUp).
        cfg: the run's :class:`~mask_keras.config.Config` (``preprocess``, ``augment``,
            ``train.seed``).
        path: where to write the PNG.
        n: number of samples (at most the table's rows).
        seed: picks the samples and seeds the augmentation (None: ``cfg.train.seed``).

    Returns:
        The :class:`~pathlib.Path` of the written PNG (:func:`mask_keras.plots.image_grid`).

    Raises:
        ValueError: an empty table.
    """
    from .pipeline import (
        load_images,  # TensorFlow: `import mask_keras` (which imports this module) stays without it
    )

    seed = cfg.train.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    n = int(min(n, len(table)))
    if n < 1:
        raise ValueError("augmentation_gallery: the table is empty (pass the images to show)")
    pick = table.iloc[np.sort(rng.choice(len(table), size=n, replace=False))]
    raw = np.asarray(load_images(pick, cfg.preprocess))  # uint8 (n, h, w, 3)
    captions = [f"{r.stem}/{L.CLASS_NAMES['gender'][r.gender]}/{L.CLASS_NAMES['age'][r.age_group]}"
                if {"stem", "gender", "age_group"} <= set(pick.columns) else str(i)
                for i, r in enumerate(pick.itertuples())]
    x = raw.astype(np.float32)
    mixer = BatchMixer.from_config(cfg.augment, seed)
    if mixer is not None:  # as in training: mixed on the host (tf.data) first, then augmented by the model
        labels = np.asarray(pick["label"]) if "label" in pick else np.zeros(n, int)
        y = np.eye(L.NUM_CLASSES, dtype=np.float32)[labels]
        ages = np.asarray(pick["age_group"]) if "age_group" in pick else np.zeros(n, int)
        x, y = mixer(x, y, ages)
        x, top2 = np.asarray(x), -np.sort(-y.numpy(), axis=1)[:, :2]
        captions = [f"{c}\nmix {v[0]:.2f}/{v[1]:.2f}" if v[1] > 0 else c for c, v in zip(captions, top2, strict=True)]
    layer = build_augmentation(cfg.augment.preset, seed)
    if layer is not None:
        x = np.asarray(ops.convert_to_numpy(layer(x, training=True)), np.float32)
    cols = min(8, n)
    images = list(raw[:cols]) + list(np.round(x).astype(np.uint8))
    captions = [f"original {i}" for i in range(cols)] + captions
    return plots.image_grid(images, captions, path, cols=cols,
                            title=f"augmentation preset {cfg.augment.preset!r} (first row: originals)")
