"""Losses for the mask / gender / age classifiers (Keras 3, ``keras.ops`` only).

Conventions shared by every loss here:

* ``y_true`` is one-hot, shape ``(batch, C)``, float, and may be *soft*: MixUp / CutMix
  and label smoothing produce targets that are not 0/1. Every formula below is written
  as a sum over classes weighted by ``y_true`` so soft targets are handled exactly.
* ``y_pred`` are probabilities after softmax (``from_logits=False``, the default: the
  models end in softmax) or logits (``from_logits=True``).
* Computation happens in float32 whatever the input dtype (``mixed_float16`` /
  ``mixed_bfloat16`` models hand over half-precision probabilities). Probabilities are
  renormalised to sum to 1 and clipped to ``[EPSILON, 1 - EPSILON]`` before the log,
  as ``keras.losses.CategoricalCrossentropy`` does.

Per-sample losses (:class:`CrossEntropy`, :class:`FocalLoss`,
:class:`ClassBalancedLoss`) follow the usual Keras reduction, by default ``"mean_with_sample_weight"``:
``sum(sample_weight * loss) / sum(sample_weight)``, so the zero-weight rows that pad
the last evaluation batch do not pull ``val_loss`` down. :class:`F1Loss` is a
*batch-level* loss: it folds ``sample_weight`` into its soft tp/fp/fn counts and returns
the scalar ``1 - mean_c F1_c`` for the batch (a weight-0 padding row changes nothing).
:class:`WeightedSum` adds its terms after each has reduced itself with the same
``sample_weight``.

``LOSSES`` maps the names accepted by :class:`mask_keras.config.LossConfig` to builders,
and :func:`build_loss` turns a ``LossConfig`` into a ready Keras loss.
"""
from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

from . import registry
from .config import LossConfig

#: clip value for probabilities before the log (Keras' default ``backend.epsilon()``)
EPSILON = 1e-7
_PKG = "mask_keras"


# --------------------------------------------------------------------------- helpers
def _as_float_list(values, what: str):
    """Per-class weights -> list of python floats (JSON-serialisable), validated."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what} must be finite, non-negative per-class values, got {values!r}")
    return [float(v) for v in arr]


def _check_label_smoothing(ls) -> float:
    ls = float(ls)
    if not 0.0 <= ls < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {ls}")
    return ls


def _check_num_classes(weights, y_pred, what: str):
    c = y_pred.shape[-1]
    if weights is not None and c is not None and len(weights) != c:
        raise ValueError(f"{what} has {len(weights)} values but the model predicts {c} classes")


def _log_probs(y_pred, from_logits: bool):
    """float32 (log p, p) with p clipped away from 0 and 1."""
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        log_p = ops.log_softmax(y_pred, axis=-1)
        p = ops.clip(ops.exp(log_p), EPSILON, 1.0 - EPSILON)
        return log_p, p
    p = y_pred / ops.maximum(ops.sum(y_pred, axis=-1, keepdims=True), EPSILON)
    p = ops.clip(p, EPSILON, 1.0 - EPSILON)
    return ops.log(p), p


def _smooth(y_true, label_smoothing: float):
    y_true = ops.cast(y_true, "float32")
    if label_smoothing:
        c = ops.cast(ops.shape(y_true)[-1], "float32")
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / c
    return y_true


def effective_number_weights(samples_per_class, beta: float = 0.999) -> np.ndarray:
    """Class-balanced weights of Cui et al. 2019: ``(1 - beta) / (1 - beta**n_c)``.

    ``beta = 0`` gives equal weights, ``beta -> 1`` approaches inverse frequency.

    Args:
        samples_per_class: ``n_c``, non-negative counts, not all 0 (else ``ValueError``).
        beta: in ``[0, 1)``.

    Returns:
        A float64 ``(C,)`` array summing to C; 0 for a class with no samples (its effective
        number is 0: the formula would divide by zero).
    """
    n = np.asarray(samples_per_class, dtype=np.float64).reshape(-1)
    if n.size == 0 or np.any(n < 0) or not np.all(np.isfinite(n)):
        raise ValueError(f"samples_per_class must be non-negative counts, got {samples_per_class!r}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if not np.any(n > 0):
        raise ValueError("samples_per_class: every class has 0 samples")
    w = np.zeros_like(n)
    present = n > 0
    w[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    return w / w.sum() * n.size


def class_weights_from_counts(counts) -> np.ndarray:
    """Inverse-frequency class weights ``1 / n_c``, normalised to mean 1 over the classes.

    For the "class weights in the loss" option (``SamplingConfig.class_weights``). A class
    with no samples gets weight 0 (it has no sample to weight); the others are scaled so
    the mean over all C classes is still 1.

    Args:
        counts: non-negative training counts, one per class, not all 0 (else ``ValueError``).

    Returns:
        A float64 ``(C,)`` array, e.g. ``[10, 0, 30] -> [2.25, 0, 0.75]``.
    """
    n = np.asarray(counts, dtype=np.float64).reshape(-1)
    if n.size == 0 or np.any(n < 0) or not np.all(np.isfinite(n)):
        raise ValueError(f"counts must be non-negative class counts, got {counts!r}")
    if not np.any(n > 0):
        raise ValueError("counts: every class has 0 samples")
    w = np.zeros_like(n)
    w[n > 0] = 1.0 / n[n > 0]
    return w / w.mean()


# --------------------------------------------------------------------------- losses
@keras.saving.register_keras_serializable(package=_PKG)
class CrossEntropy(keras.losses.Loss):
    """Categorical cross entropy with optional per-class weights and label smoothing.

    ``loss_i = w(y_i) * -sum_c y~_ic log p_ic`` where ``y~ = (1 - ls) y + ls / C`` and the
    sample weight ``w(y_i) = sum_c y_ic w_c`` uses the (unsmoothed, possibly soft) target,
    so a MixUp target mixes the weights of its two classes.

    Args:
        class_weights: ``w_c``, C non-negative values (None: no weighting).
        label_smoothing: ``ls`` in ``[0, 1)``.
        from_logits: ``y_pred`` are logits rather than probabilities.
        name: the loss's name.
        reduction: Keras reduction of the per-sample losses.
        dtype: the loss's dtype policy (None: Keras' default).
    """

    def __init__(self, class_weights=None, label_smoothing=0.0, from_logits=False,
                 name="cross_entropy", reduction="mean_with_sample_weight", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.class_weights = _as_float_list(class_weights, "class_weights")
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        _check_num_classes(self.class_weights, y_pred, "class_weights")
        y_true = ops.cast(y_true, "float32")
        log_p, _ = _log_probs(y_pred, self.from_logits)
        loss = -ops.sum(_smooth(y_true, self.label_smoothing) * log_p, axis=-1)
        if self.class_weights is not None:
            w = ops.convert_to_tensor(self.class_weights, dtype="float32")
            loss = loss * ops.sum(y_true * w, axis=-1)
        return loss

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights,
                "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package=_PKG)
class FocalLoss(keras.losses.Loss):
    """Categorical focal loss (Lin et al. 2017): ``-sum_c y_c a_c (1 - p_c)^gamma log p_c``.

    ``gamma = 0`` with no alpha is exactly :class:`CrossEntropy`.

    Args:
        gamma: focusing exponent, >= 0.
        alpha: ``a_c``: None (all 1), a scalar, or per-class weights.
        label_smoothing: in ``[0, 1)``, applied to ``y`` first.
        from_logits: ``y_pred`` are logits rather than probabilities.
        name: the loss's name.
        reduction: Keras reduction of the per-sample losses.
        dtype: the loss's dtype policy (None: Keras' default).
    """

    def __init__(self, gamma=2.0, alpha=None, label_smoothing=0.0, from_logits=False,
                 name="focal_loss", reduction="mean_with_sample_weight", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = float(gamma)
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and np.ndim(alpha) == 0:
            self.alpha = float(_as_float_list([alpha], "alpha")[0])
        else:
            self.alpha = _as_float_list(alpha, "alpha")
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        if isinstance(self.alpha, list):
            _check_num_classes(self.alpha, y_pred, "alpha")
        log_p, p = _log_probs(y_pred, self.from_logits)
        y = _smooth(y_true, self.label_smoothing)
        per_class = -y * log_p
        if self.gamma:
            per_class = per_class * ops.power(1.0 - p, self.gamma)
        if self.alpha is not None:
            per_class = per_class * ops.convert_to_tensor(self.alpha, dtype="float32")
        return ops.sum(per_class, axis=-1)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha,
                "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package=_PKG)
class F1Loss(keras.losses.Loss):
    """Soft macro F1 over the batch, for any number of classes: ``1 - mean_c F1_c``.

    ``tp_c = sum_i s_i y_ic p_ic``, ``fp_c = sum_i s_i (1 - y_ic) p_ic``,
    ``fn_c = sum_i s_i y_ic (1 - p_ic)`` with ``s_i`` the sample weight (1 by default), and
    ``F1_c = 2 tp_c / (2 tp_c + fp_c + fn_c + epsilon)``. The mean runs over all C classes
    (a class absent from the batch scores ~0 and pushes its probabilities down).

    A batch-level loss: ``sample_weight`` enters the counts (weight-0 padding rows are
    ignored) and the result is the batch scalar itself; ``reduction`` has no effect.

    Args:
        epsilon: ``> 0``, keeps ``F1_c`` defined.
        from_logits: ``y_pred`` are logits rather than probabilities.
        name: the loss's name.
        reduction: accepted for Keras' API; no effect.
        dtype: accepted for Keras' API; the loss computes in float32.
    """

    def __init__(self, epsilon=1e-7, from_logits=False, name="f1_loss",
                 reduction="mean_with_sample_weight", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.epsilon = float(epsilon)
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.from_logits = bool(from_logits)

    def _probs(self, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        if self.from_logits:
            return ops.softmax(y_pred, axis=-1)
        return y_pred / ops.maximum(ops.sum(y_pred, axis=-1, keepdims=True), EPSILON)

    def _f1_loss(self, y_true, y_pred, sample_weight=None):
        y = ops.cast(y_true, "float32")
        p = self._probs(y_pred)
        if sample_weight is not None:
            s = ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
            y_w, p_w = y * s, p * s
        else:
            y_w, p_w = y, p
        tp = ops.sum(y_w * p, axis=0)
        fp = ops.sum(p_w, axis=0) - tp  # sum s (1 - y) p
        fn = ops.sum(y_w, axis=0) - tp  # sum s y (1 - p)
        f1 = 2.0 * tp / (2.0 * tp + fp + fn + self.epsilon)
        return 1.0 - ops.mean(f1)

    def call(self, y_true, y_pred):
        return self._f1_loss(y_true, y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            return self._f1_loss(y_true, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package=_PKG)
class ClassBalancedLoss(keras.losses.Loss):
    """Class-balanced loss (Cui et al. 2019): focal or CE weighted by effective numbers.

    Class weights ``(1 - beta) / (1 - beta**n_c)`` normalised to sum to C
    (:func:`effective_number_weights`); ``base="focal"`` uses them as the focal ``alpha``,
    ``base="ce"`` as :class:`CrossEntropy` class weights.

    Args:
        samples_per_class: training counts per class (see :func:`effective_number_weights`).
        beta: in ``[0, 1)``.
        base: ``"focal"`` or ``"ce"``.
        gamma: the focal exponent (``base="focal"`` only).
        label_smoothing: in ``[0, 1)``.
        from_logits: ``y_pred`` are logits rather than probabilities.
        name: the loss's name.
        reduction: Keras reduction of the per-sample losses.
        dtype: the loss's dtype policy (None: Keras' default).
    """

    BASES = ("focal", "ce")

    def __init__(self, samples_per_class, beta=0.999, base="focal", gamma=2.0,
                 label_smoothing=0.0, from_logits=False, name="class_balanced_loss",
                 reduction="mean_with_sample_weight", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if base not in self.BASES:
            raise ValueError(f"unknown base {base!r}; choose one of: {', '.join(self.BASES)}")
        self.samples_per_class = [float(v) for v in np.asarray(samples_per_class, dtype=np.float64).reshape(-1)]
        self.beta = float(beta)
        self.base = base
        self.gamma = float(gamma)
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.from_logits = bool(from_logits)
        self.class_weights = [float(v) for v in effective_number_weights(self.samples_per_class, self.beta)]
        if base == "focal":
            self._inner = FocalLoss(gamma=self.gamma, alpha=self.class_weights,
                                    label_smoothing=self.label_smoothing, from_logits=self.from_logits)
        else:
            self._inner = CrossEntropy(class_weights=self.class_weights,
                                       label_smoothing=self.label_smoothing, from_logits=self.from_logits)

    def call(self, y_true, y_pred):
        return self._inner.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "samples_per_class": self.samples_per_class,
                "beta": self.beta, "base": self.base, "gamma": self.gamma,
                "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package=_PKG)
class WeightedSum(keras.losses.Loss):
    """``sum_k weight_k * loss_k(y_true, y_pred, sample_weight)``, e.g. 0.4 F1 + 0.6 focal.

    Args:
        terms: ``[(loss, weight), ...]``, at least one: Keras ``Loss`` instances (or their
            ``keras.losses.serialize`` dicts), each applying its own reduction (so a
            batch-level :class:`F1Loss` mixes correctly with per-sample losses).
        name: the loss's name.
        reduction: of the sum itself: no effect.
        dtype: accepted for Keras' API; the sum is float32.
    """

    def __init__(self, terms, name="weighted_sum", reduction="mean_with_sample_weight", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        parsed = []
        for item in terms:
            try:
                loss, weight = item
            except (TypeError, ValueError):
                raise ValueError(f"WeightedSum terms must be (loss, weight) pairs, got {item!r}") from None
            if isinstance(loss, dict):
                loss = keras.losses.deserialize(loss)
            if not isinstance(loss, keras.losses.Loss):
                raise ValueError(f"WeightedSum: {loss!r} is not a keras Loss instance")
            parsed.append((loss, float(weight)))
        if not parsed:
            raise ValueError("WeightedSum needs at least one (loss, weight) term")
        self.terms = parsed

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            total = None
            for loss, weight in self.terms:
                value = ops.cast(loss(y_true, y_pred, sample_weight=sample_weight), "float32") * weight
                total = value if total is None else total + value
            return total

    def get_config(self):
        return {**super().get_config(),
                "terms": [[keras.losses.serialize(loss), weight] for loss, weight in self.terms]}


# --------------------------------------------------------------------------- registry
def _weights_for(num_classes, class_weights):
    if class_weights is None:
        return None
    w = _as_float_list(class_weights, "class_weights")
    if len(w) != num_classes:
        raise ValueError(f"class_weights has {len(w)} values for {num_classes} classes")
    return w


#: loss name (``LossConfig.name`` / names in ``LossConfig.terms``) ->
#: builder ``(loss_cfg, num_classes, class_counts=None, class_weights=None) -> keras Loss``
#: (the package's loss registry, ``mask_keras.registry.LOSSES``, filled here)
LOSSES = registry.LOSSES


@LOSSES.register("ce")
def _build_ce(cfg, num_classes, class_counts=None, class_weights=None):
    return CrossEntropy(class_weights=_weights_for(num_classes, class_weights),
                        label_smoothing=cfg.label_smoothing)


@LOSSES.register("focal")
def _build_focal(cfg, num_classes, class_counts=None, class_weights=None):
    return FocalLoss(gamma=cfg.gamma, alpha=_weights_for(num_classes, class_weights),
                     label_smoothing=cfg.label_smoothing)


@LOSSES.register("f1")
def _build_f1(cfg, num_classes, class_counts=None, class_weights=None):
    return F1Loss()


@LOSSES.register("class_balanced")
def _build_class_balanced(cfg, num_classes, class_counts=None, class_weights=None):
    if class_counts is None:
        raise ValueError("loss 'class_balanced' needs class_counts (training samples per class)")
    if len(np.asarray(class_counts).reshape(-1)) != num_classes:
        raise ValueError(f"class_counts has {len(np.asarray(class_counts).reshape(-1))} values "
                         f"for {num_classes} classes")
    if class_weights is not None:
        warnings.warn("loss 'class_balanced' already weights the classes; class_weights ignored",
                      stacklevel=3)
    return ClassBalancedLoss(class_counts, beta=cfg.cb_beta, base="focal", gamma=cfg.gamma,
                             label_smoothing=cfg.label_smoothing)


@LOSSES.register("f1_focal")
def _build_f1_focal(cfg, num_classes, class_counts=None, class_weights=None):
    """Team 001: 0.4 * F1 + 0.6 * focal."""
    return WeightedSum([(_build_f1(cfg, num_classes, class_counts, class_weights), 0.4),
                        (_build_focal(cfg, num_classes, class_counts, class_weights), 0.6)],
                       name="f1_focal")


def build_loss(loss_cfg, num_classes: int, class_counts=None, class_weights=None) -> keras.losses.Loss:
    """A ready Keras loss from a :class:`~mask_keras.config.LossConfig` (or a loss name).

    ``terms`` (e.g. ``(("f1", 0.4), ("focal", 0.6))``) builds a :class:`WeightedSum`;
    otherwise ``name`` is looked up in :data:`LOSSES`. An unknown name raises
    ``ConfigError`` (a ``ValueError``) naming the choices.

    Args:
        loss_cfg: a ``LossConfig`` (``gamma``, ``label_smoothing`` and ``cb_beta`` go to the
            losses that use them) or a loss name.
        num_classes: the model's outputs, >= 2.
        class_counts: training samples per class, required by ``class_balanced``.
        class_weights: per class (e.g. :func:`class_weights_from_counts`): weight CE and
            focal (as alpha).

    Returns:
        A ``keras.losses.Loss``, e.g. ``build_loss("focal", 3)`` a :class:`FocalLoss`.
    """

    if isinstance(loss_cfg, str):
        loss_cfg = LossConfig(name=loss_cfg)
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    terms = loss_cfg.terms
    for name, _w in (terms or ((loss_cfg.name, 1.0),)):
        LOSSES.get(name)  # ConfigError naming the choices
    if not terms:
        return LOSSES[loss_cfg.name](loss_cfg, num_classes, class_counts, class_weights)
    built = [(LOSSES[name](loss_cfg, num_classes, class_counts, class_weights), float(w))
             for name, w in terms]
    return WeightedSum(built, name="_".join(str(n) for n, _ in terms))


__all__ = ["CrossEntropy", "FocalLoss", "F1Loss", "ClassBalancedLoss", "WeightedSum", "LOSSES",
           "build_loss", "class_weights_from_counts", "effective_number_weights", "EPSILON"]
