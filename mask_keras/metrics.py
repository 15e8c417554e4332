"""Macro F1, the competition's score: a streaming Keras metric and numpy helpers.

Definition used everywhere in the package (metric and helpers agree):

    macro F1 = sklearn.metrics.f1_score(y_true, y_pred, average="macro")

i.e. the mean of the per-class F1 over the classes *present* in ``y_true`` or
``y_pred`` (scikit-learn's default when ``labels`` is not given; with
``zero_division=0``, which never triggers for a present class). A class that is neither
in the targets nor predicted is left out of the mean rather than counted as 0.

Sample weights (weighted counts, as sklearn's ``sample_weight``) are supported; a
weight-0 row (the padding the evaluation pipeline adds to the last batch) counts
nowhere, not even to decide which classes are present. So the result equals sklearn on
the rows with positive weight.

Keras 3 hands ``sample_weight`` only to the metrics given to ``compile`` as
``weighted_metrics``; those in ``metrics`` see every row, padding included. Pass
``MacroF1`` (and accuracy) as ``weighted_metrics`` when batches are padded.

Accuracy needs nothing here: ``keras.metrics.CategoricalAccuracy`` honours
``sample_weight``.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

_PKG = "mask_keras"


# --------------------------------------------------------------------------- numpy helpers
def _to_labels(y, num_classes=None) -> np.ndarray:
    """Integer labels from ints, one-hot / soft targets or probabilities (argmax)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"got {y.shape[1]} columns for {num_classes} classes")
        return np.argmax(y, axis=1).astype(np.int64)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D integers or 2-D (batch, classes), got shape {y.shape}")
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError("1-D labels must be integers")
    return y.astype(np.int64)


def _infer_num_classes(y_true, y_pred, num_classes):
    if num_classes is not None:
        return int(num_classes)
    for y in (y_true, y_pred):
        a = np.asarray(y)
        if a.ndim == 2 and a.shape[1] > 1:
            return int(a.shape[1])
    t, p = _to_labels(y_true), _to_labels(y_pred)
    return int(max(t.max(initial=-1), p.max(initial=-1)) + 1)


def confusion_matrix(y_true, y_pred, num_classes=None, sample_weight=None) -> np.ndarray:
    """``cm[t, p]`` = (weighted) count of rows with target ``t`` predicted as ``p``.

    Args:
        y_true: targets: ``(N,)`` or ``(N, 1)`` integer labels, or ``(N, C)`` one-hot / soft
            targets (argmax taken).
        y_pred: predictions, same forms (``(N, C)`` probabilities: argmax taken).
        num_classes: ``C``; None: the width of a 2-D input, else the largest label + 1.
        sample_weight: ``(N,)`` row weights (None: each row counts 1).

    Returns:
        A ``(C, C)`` array: int64 counts without weights, float64 sums of weights with them.

    Raises:
        ValueError: row counts differ, labels outside ``0..C-1``, non-integer 1-D labels, a
            2-D input whose width is not ``C``, or ``sample_weight`` not of length ``N``.

    Example:
        >>> confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2])
        array([[1, 0, 0],
               [0, 0, 1],
               [0, 0, 2]])
    """
    c = _infer_num_classes(y_true, y_pred, num_classes)
    t, p = _to_labels(y_true, c), _to_labels(y_pred, c)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} rows, y_pred {p.shape[0]}")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.size and (v.min() < 0 or v.max() >= c):
            raise ValueError(f"{name} labels must be in 0..{c - 1}")
    if sample_weight is None:
        cm = np.zeros((c, c), dtype=np.int64)
        np.add.at(cm, (t, p), 1)
        return cm
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.shape != t.shape:
        raise ValueError(f"sample_weight has {w.shape[0]} values for {t.shape[0]} rows")
    cm = np.zeros((c, c), dtype=np.float64)
    np.add.at(cm, (t, p), w)
    return cm


def f1_from_confusion(cm) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 (0 where undefined) and the mask of present classes from a confusion matrix.

    Args:
        cm: a ``(C, C)`` confusion matrix, rows targets, columns predictions (counts or
            weights).

    Returns:
        ``(f1, present)``: float64 ``(C,)`` F1 ``2tp / (support + predicted)``, and the bool
        ``(C,)`` mask of classes targeted or predicted at least once.

    Example:
        >>> f1, present = f1_from_confusion([[1, 0, 0], [0, 0, 0], [0, 0, 3]])
        >>> f1.tolist(), present.tolist()
        ([1.0, 0.0, 1.0], [True, False, True])
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(axis=1) + cm.sum(axis=0)  # support + predicted = 2tp + fp + fn
    present = denom > 0
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=present)
    return f1, present


def per_class_f1(y_true, y_pred, num_classes=None, sample_weight=None) -> np.ndarray:
    """F1 of every class 0..C-1, 0 for a class never targeted nor predicted.

    Equals ``sklearn.metrics.f1_score(..., average=None, labels=range(C), zero_division=0)``.

    Args:
        y_true: targets, as :func:`confusion_matrix`.
        y_pred: predictions, as :func:`confusion_matrix`.
        num_classes: ``C`` (None: inferred, as :func:`confusion_matrix`).
        sample_weight: ``(N,)`` row weights, or None.

    Returns:
        A float64 ``(C,)`` array of per-class F1.

    Example:
        >>> per_class_f1([0, 1, 2, 2], [0, 2, 2, 2]).round(3).tolist()
        [1.0, 0.0, 0.8]
    """
    f1, _ = f1_from_confusion(confusion_matrix(y_true, y_pred, num_classes, sample_weight))
    return f1


def macro_f1(y_true, y_pred, num_classes=None, sample_weight=None, labels=None) -> float:
    """Macro F1 as sklearn's ``f1_score(y_true, y_pred, average="macro")``.

    Averages over the classes present in ``y_true`` or ``y_pred`` (rows of positive
    weight), or over ``labels`` when given (then absent classes count as 0, like sklearn
    with ``labels=...`` and ``zero_division=0``). Inputs as :func:`confusion_matrix`.

    Args:
        y_true: targets, as :func:`confusion_matrix`.
        y_pred: predictions, as :func:`confusion_matrix`.
        num_classes: ``C`` (None: inferred, as :func:`confusion_matrix`).
        sample_weight: ``(N,)`` row weights; weight-0 rows count nowhere.
        labels: class ids in ``0..C-1`` to average over (None: the present classes);
            ``C`` is not widened to fit them: pass ``num_classes``.

    Returns:
        The macro F1 as a float in ``[0, 1]``; 0.0 when no class is present or
        ``labels`` is empty.

    Example:
        >>> round(macro_f1([0, 1, 2, 2], [0, 2, 2, 2]), 4)
        0.6
        >>> round(macro_f1([0, 1, 2, 2], [0, 2, 2, 2], sample_weight=[1, 0, 1, 1]), 4)
        1.0
        >>> round(macro_f1([0, 0], [0, 0], num_classes=2, labels=[0, 1]), 4)
        0.5
    """
    f1, present = f1_from_confusion(confusion_matrix(y_true, y_pred, num_classes, sample_weight))
    if labels is not None:
        idx = np.asarray(list(labels), dtype=np.int64)
        bad = sorted(set(idx[(idx < 0) | (idx >= len(f1))].tolist()))
        if bad:  # a negative id would silently count from the end
            raise ValueError(f"labels {bad} are outside the {len(f1)} classes 0..{len(f1) - 1}; "
                             f"pass num_classes to score classes absent from y_true and y_pred")
        return float(f1[idx].mean()) if idx.size else 0.0
    return float(f1[present].mean()) if present.any() else 0.0


# --------------------------------------------------------------------------- Keras metric
@keras.saving.register_keras_serializable(package=_PKG)
class MacroF1(keras.metrics.Metric):
    """Streaming macro F1 over batches (the competition score), ``keras.ops`` only.

    Accumulates a (weighted) ``num_classes x num_classes`` confusion matrix from
    ``argmax(y_true)`` (one-hot or soft targets; integer labels of shape ``(batch,)`` or
    ``(batch, 1)`` work too) and ``argmax(y_pred)``. ``result()`` is the mean F1 over the
    classes present in targets or predictions, i.e. sklearn's
    ``f1_score(average="macro")`` on the rows seen (weight-0 rows excluded).

    Args:
        num_classes: width of the confusion matrix, the model's number of classes (>= 2;
            ValueError otherwise).
        name: the metric's name (its key in the training logs).
        dtype: the metric's dtype (None: Keras' default); the matrix is float32.

    Example:
        >>> m = MacroF1(3)
        >>> m.update_state(np.eye(3)[[0, 1, 2, 2]], np.eye(3)[[0, 2, 2, 2]])
        >>> round(float(m.result()), 4)
        0.6
    """

    def __init__(self, num_classes, name="macro_f1", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.confusion = self.add_variable(shape=(self.num_classes, self.num_classes),
                                           initializer="zeros", dtype="float32",
                                           name="confusion_matrix")

    def _labels(self, y):
        y = ops.convert_to_tensor(y)
        if len(y.shape) >= 2 and y.shape[-1] == self.num_classes:
            return ops.argmax(y, axis=-1)
        return ops.cast(ops.reshape(y, (-1,)), "int32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.reshape(self._labels(y_true), (-1,))
        p = ops.reshape(ops.argmax(ops.convert_to_tensor(y_pred), axis=-1), (-1,))
        oh_t = ops.one_hot(t, self.num_classes, dtype="float32")
        oh_p = ops.one_hot(p, self.num_classes, dtype="float32")
        if sample_weight is not None:
            w = ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
            oh_t = oh_t * w
        self.confusion.assign_add(ops.matmul(ops.transpose(oh_t), oh_p))

    def result(self):
        cm = ops.convert_to_tensor(self.confusion)
        tp = ops.diagonal(cm)
        denom = ops.sum(cm, axis=0) + ops.sum(cm, axis=1)
        present = ops.cast(denom > 0, "float32")
        f1 = 2.0 * tp / ops.maximum(denom, 1e-12) * present
        n_present = ops.sum(present)
        return ops.where(n_present > 0, ops.sum(f1) / ops.maximum(n_present, 1.0), 0.0)

    def reset_state(self):
        self.confusion.assign(ops.zeros((self.num_classes, self.num_classes), dtype="float32"))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


__all__ = ["MacroF1", "confusion_matrix", "f1_from_confusion", "per_class_f1", "macro_f1"]
