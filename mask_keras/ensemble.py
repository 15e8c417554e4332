"""Combine per-task predictions into the 18 classes, and vote across models.

Pure numpy. Every function works on any number of classes, so the same calls serve a
single task (mask: 3, gender: 2, age: 3) and the 18-way answer.

Combining tasks
---------------
Three per-task models give ``p_mask (N, 3)``, ``p_gender (N, 2)``, ``p_age (N, 3)``.
:func:`combine_tasks` lays out their product over the 18 classes in the order of
:func:`mask_keras.labels.encode` (``class = mask*6 + gender*3 + age``)::

    p18[n, m*6 + g*3 + a] = p_mask[n, m] * p_gender[n, g] * p_age[n, a]

:func:`combine_argmax` takes the per-task argmaxes and encodes them. The two agree:
the factors are non-negative and each depends on its own index only, so
``max_{m,g,a} pm*pg*pa = max pm * max pg * max pa``, and with ties numpy picks the
lowest flat index, i.e. the lowest ``m``, then ``g``, then ``a`` -- the same classes
``argmax`` picks per task. The one exception is a task row that is all zeros (the whole
product row is then zero and its argmax is class 0).

They stop agreeing once the 18 numbers are no longer an untouched product:

* an 18-way model (or its marginals via :func:`split_multi`): its ``p18`` need not
  factorise, so ``argmax p18`` may differ from ``combine_argmax(*split_multi(p18))``;
* ensembling: the mean of products (soft vote over 18-class outputs) is not the product
  of means (soft vote per task, then combine), and a hard vote over 18-class labels is
  not the per-task hard votes combined (three models voting 0, 4, 8 tie over 18 classes,
  while per task they may agree on a class none of them voted for);
* renormalising or re-weighting the 18 classes (class priors, thresholds, dropping
  classes): a per-class factor that does not factorise over the tasks moves the argmax.

Voting
------
:func:`soft_vote` is the weighted mean of probabilities (weights normalised);
:func:`hard_vote` is a weighted majority of labels with an explicit tie rule;
:func:`tta_mean` averages the predictions of augmented views of the same images (the
views are made by the predict module).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from . import labels as L

TIE_RULES = ("mean_prob", "lowest", "first_model")
#: task order of a multi-head model's outputs
HEAD_TASKS = L.HEADS


# ---- checks -----------------------------------------------------------------------
def _probs(x, name: str, classes: int | None = None) -> np.ndarray:
    """A (N, C) array of finite, non-negative scores, or a clear ValueError."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (N, C) probability array, got shape {a.shape}")
    if classes is not None and a.shape[1] != classes:
        raise ValueError(f"{name}: expected {classes} classes (shape (N, {classes})), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    if np.any(a < 0):
        raise ValueError(f"{name}: contains negative values; pass probabilities "
                         f"(apply softmax to logits first, or use from_logits=True where offered)")
    return a


def _labels(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D (N,) label array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ValueError(f"{name}: labels must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if np.any(a < 0):
        raise ValueError(f"{name}: labels must be >= 0, got {int(a.min())}")
    return a


def _weights(weights, m: int) -> np.ndarray:
    """Weights of ``m`` models, normalised to sum 1."""
    if weights is None:
        return np.full(m, 1.0 / m)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size != m:
        raise ValueError(f"weights: need one weight per model ({m}), got {w.size if w.ndim == 1 else w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError(f"weights must not all be zero, got {w.tolist()}")
    return w / w.sum()


def _same_shapes(arrays: list[np.ndarray], what: str) -> None:
    shapes = [a.shape for a in arrays]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"{what}: all arrays must have the same shape, got {shapes}")


def _softmax(x, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _as_list(preds, what: str, labels_ok: bool = False) -> list:
    if isinstance(preds, np.ndarray) and (preds.ndim == 3 or (labels_ok and preds.ndim == 2)):
        return list(preds)  # stacked (M, N, C), or (M, N) labels
    if isinstance(preds, np.ndarray):
        raise ValueError(f"{what}: expected a list of (N, C) arrays or a stacked (M, N, C) array, "
                         f"got one array of shape {preds.shape}")
    if isinstance(preds, (str, bytes)) or not isinstance(preds, Sequence | np.ndarray):
        raise ValueError(f"{what}: expected a list of arrays, got {type(preds).__name__}")
    preds = list(preds)
    if not preds:
        raise ValueError(f"{what}: got an empty list; need at least one model's predictions")
    return preds


# ---- tasks <-> 18 classes ---------------------------------------------------------
def combine_tasks(p_mask, p_gender, p_age) -> np.ndarray:
    """Per-task probabilities -> (N, 18): ``p18[:, m*6+g*3+a] = p_mask[:, m] * p_gender[:, g] * p_age[:, a]``.

    Inputs are (N, 3), (N, 2), (N, 3) non-negative arrays (rows summing to 1 give rows
    summing to 1; they are not renormalised). See the module docstring for when the
    argmax of this product equals :func:`combine_argmax`.

    Args:
        p_mask: (N, 3) mask probabilities.
        p_gender: (N, 2) gender probabilities.
        p_age: (N, 3) age-group probabilities.

    Returns:
        float64 (N, 18), columns in :func:`mask_keras.labels.encode` order.

    Raises:
        ValueError: a wrong shape, a NaN/infinite or negative value, or row counts that differ.

    Example:
        >>> pm, pg, pa = np.array([[0.8, 0.1, 0.1]]), np.array([[0.3, 0.7]]), np.array([[0.2, 0.5, 0.3]])
        >>> p18 = combine_tasks(pm, pg, pa)
        >>> p18.shape, p18.argmax(1), p18[:, 4].round(3)  # class 4: mask 0, gender 1, age 1
        ((1, 18), array([4]), array([0.28]))
    """
    pm = _probs(p_mask, "p_mask", L.TASK_CLASSES["mask"])
    pg = _probs(p_gender, "p_gender", L.TASK_CLASSES["gender"])
    pa = _probs(p_age, "p_age", L.TASK_CLASSES["age"])
    n = {pm.shape[0], pg.shape[0], pa.shape[0]}
    if len(n) != 1:
        raise ValueError(f"combine_tasks: row counts differ: p_mask {pm.shape[0]}, "
                         f"p_gender {pg.shape[0]}, p_age {pa.shape[0]}")
    # C-order reshape of (N, 3, 2, 3) gives flat index m*6 + g*3 + a == labels.encode
    return np.einsum("nm,ng,na->nmga", pm, pg, pa).reshape(pm.shape[0], L.NUM_CLASSES)


def _task_labels(x, name: str, classes: int) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 1:
        lab = _labels(a, name)
        if np.any(lab >= classes):
            raise ValueError(f"{name}: labels must be in 0..{classes - 1}, got {int(lab.max())}")
        return lab
    return np.argmax(_probs(a, name, classes), axis=1)


def combine_argmax(p_mask, p_gender, p_age) -> np.ndarray:
    """Per-task argmax -> (N,) class labels ``mask*6 + gender*3 + age``.

    Each input is an (N, C) probability array or an (N,) label array (e.g. a per-task
    :func:`hard_vote`). Equals ``combine_tasks(...).argmax(1)`` for probability inputs
    (see the module docstring for the reasoning and the all-zero-row exception).

    Args:
        p_mask: (N, 3) mask probabilities or (N,) labels 0..2.
        p_gender: (N, 2) gender probabilities or (N,) labels 0..1.
        p_age: (N, 3) age-group probabilities or (N,) labels 0..2.

    Returns:
        int64 (N,) class labels 0..17.

    Raises:
        ValueError: a wrong shape, an invalid value or label, or row counts that differ.

    Example:
        >>> combine_argmax(np.array([[0.8, 0.1, 0.1]]), np.array([[0.3, 0.7]]), np.array([[0.2, 0.5, 0.3]]))
        array([4])
        >>> combine_argmax([0, 2], [1, 0], [2, 1])  # labels: 0*6+1*3+2, 2*6+0*3+1
        array([ 5, 13])
    """
    m = _task_labels(p_mask, "p_mask", L.TASK_CLASSES["mask"])
    g = _task_labels(p_gender, "p_gender", L.TASK_CLASSES["gender"])
    a = _task_labels(p_age, "p_age", L.TASK_CLASSES["age"])
    if not (m.shape == g.shape == a.shape):
        raise ValueError(f"combine_argmax: row counts differ: p_mask {m.shape[0]}, "
                         f"p_gender {g.shape[0]}, p_age {a.shape[0]}")
    return L.encode(m, g, a)


def split_multi(p18) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 18) probabilities -> marginals ``(p_mask (N,3), p_gender (N,2), p_age (N,3))``.

    Each marginal sums the 18 probabilities over the other two tasks, so rows summing to 1
    give marginal rows summing to 1. For a product (``combine_tasks``) this recovers the
    factors exactly; for a general 18-way output it is the best per-task summary but the
    product of the marginals is not ``p18`` again.

    Args:
        p18: (N, 18) non-negative probabilities in :func:`mask_keras.labels.encode` order.

    Returns:
        float64 ``(p_mask (N, 3), p_gender (N, 2), p_age (N, 3))``.

    Example:
        >>> p18 = combine_tasks([[0.8, 0.1, 0.1]], [[0.3, 0.7]], [[0.2, 0.5, 0.3]])
        >>> [p.round(3).tolist() for p in split_multi(p18)]
        [[[0.8, 0.1, 0.1]], [[0.3, 0.7]], [[0.2, 0.5, 0.3]]]
    """
    p = _probs(p18, "p18", L.NUM_CLASSES).reshape(-1, 3, 2, 3)
    return p.sum(axis=(2, 3)), p.sum(axis=(1, 3)), p.sum(axis=(1, 2))


def _head_key(keys: list, task: str):
    if task in keys:
        return task
    hits = [k for k in keys if task in re.split(r"[^0-9a-zA-Z]+", str(k))]
    if len(hits) != 1:
        raise ValueError(f"from_multihead: cannot find the {task!r} output among keys {keys}; "
                         f"name the outputs 'mask', 'gender', 'age' (or e.g. 'mask_output')")
    return hits[0]


def from_multihead(outputs, from_logits: bool = False, combine: bool = False):
    """The outputs of a multi-head model -> ``(p_mask, p_gender, p_age)`` (or their (N, 18) product).

    Args:
        outputs: a dict keyed by task (``mask``, ``gender``, ``age``, or names holding
            those words as a ``_``-separated part such as ``mask_output``) or a list/tuple of
            three arrays in the order mask, gender, age, with shapes (N, 3), (N, 2), (N, 3).
        from_logits: apply a softmax per head first.
        combine: return the :func:`combine_tasks` product instead of the three heads.

    Returns:
        The checked float64 arrays ``(p_mask, p_gender, p_age)``; with ``combine=True`` their
        (N, 18) product instead.

    Raises:
        ValueError: not a dict or a 3-sequence, a head not found (or found twice) among the
            keys, or a head of the wrong shape or with invalid values.

    Example:
        >>> out = {"mask_output": np.zeros((2, 3)), "gender_output": np.zeros((2, 2)),
        ...        "age_output": np.zeros((2, 3))}
        >>> from_multihead(out, from_logits=True)[1]  # equal logits: uniform probabilities
        array([[0.5, 0.5],
               [0.5, 0.5]])
        >>> from_multihead(out, from_logits=True, combine=True).shape
        (2, 18)
    """
    if isinstance(outputs, Mapping):
        keys = list(outputs.keys())
        arrays = [outputs[_head_key(keys, t)] for t in HEAD_TASKS]
    elif isinstance(outputs, Sequence) and not isinstance(outputs, (str, bytes)) and len(outputs) == 3:
        arrays = list(outputs)
    else:
        raise ValueError("from_multihead: expected a dict {'mask', 'gender', 'age'} or a list of "
                         f"3 arrays (mask, gender, age), got {type(outputs).__name__}"
                         + (f" of length {len(outputs)}" if hasattr(outputs, "__len__") else ""))
    if from_logits:
        arrays = [_softmax(np.asarray(a, dtype=np.float64)) for a in arrays]
    tasks = tuple(_probs(a, f"{t} head", L.TASK_CLASSES[t]) for a, t in zip(arrays, HEAD_TASKS))
    return combine_tasks(*tasks) if combine else tasks


# ---- voting -----------------------------------------------------------------------
def soft_vote(probs, weights=None) -> np.ndarray:
    """Weighted mean of M (N, C) probability arrays -> (N, C); weights are normalised.

    ``weights=None`` is the plain mean. All arrays must have the same shape; weights one
    per model, finite, non-negative and not all zero.

    Args:
        probs: a list of M (N, C) non-negative arrays, or a stacked (M, N, C) array.
        weights: M weights (normalised to sum 1); None: equal weights.

    Returns:
        float64 (N, C), the weighted mean.

    Raises:
        ValueError: an empty list, arrays of different shapes or with invalid values, or
            invalid weights.

    Example:
        >>> soft_vote([np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]])], weights=[3, 1])
        array([[0.8, 0.2]])
    """
    arrays = [_probs(p, f"probs[{i}]") for i, p in enumerate(_as_list(probs, "soft_vote"))]
    _same_shapes(arrays, "soft_vote")
    w = _weights(weights, len(arrays))
    return np.tensordot(w, np.stack(arrays), axes=1)


def tta_mean(views) -> np.ndarray:
    """Mean of the (N, C) predictions of V augmented views of the same images -> (N, C).

    Args:
        views: a list of V (N, C) non-negative arrays or a stacked (V, N, C) array.

    Returns:
        float64 (N, C), the plain mean (:func:`soft_vote` without weights).

    Example:
        >>> tta_mean([np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])])
        array([[0.5, 0.5]])
    """
    return soft_vote(views)


def hard_vote(preds, weights=None, tie: str = "mean_prob", num_classes: int | None = None) -> np.ndarray:
    """Weighted majority vote of M models -> (N,) labels.

    ``preds`` is a list of (N, C) probability arrays (each votes for its argmax) or (N,)
    label arrays. Each model adds its weight (default 1) to the class it votes for; the
    class with the most weight wins. Ties (equal weight up to float rounding) are broken by
    ``tie``:

    * ``"mean_prob"`` (default): among the tied classes, the one with the highest mean
      probability across models (weighted by ``weights`` when given); remaining ties go to
      the lowest class index. Needs probability arrays: when any model gives labels only,
      it falls back to ``"lowest"``.
    * ``"lowest"``: the smallest class index among the tied.
    * ``"first_model"``: the vote of the first model (in list order, ignoring zero-weight
      models) whose vote is one of the tied classes.

    Args:
        preds: a list of M arrays, each (N, C) probabilities or (N,) integer labels, or a
            stacked (M, N, C) / (M, N) array.
        weights: M weights (normalised to sum 1); None: one vote each.
        tie: ``"mean_prob"``, ``"lowest"`` or ``"first_model"`` (above).
        num_classes: the number of classes C; needed only for label-only input if it should
            exceed ``max label + 1`` (must equal C when probabilities are given).

    Returns:
        int64 (N,) labels.

    Raises:
        ValueError: an unknown ``tie``, an empty list, row counts or probability shapes
            that differ, a label out of range, invalid values or weights.

    Example:
        >>> hard_vote([np.array([0, 1, 2]), np.array([0, 2, 2]), np.array([1, 1, 0])])
        array([0, 1, 2])
        >>> hard_vote([np.array([0, 1]), np.array([1, 0])], tie="first_model")  # 1-1 ties
        array([0, 1])
        >>> hard_vote([np.array([[0.6, 0.4]]), np.array([[0.1, 0.9]])])  # tie: mean (0.35, 0.65)
        array([1])
    """
    if tie not in TIE_RULES:
        raise ValueError(f"hard_vote: unknown tie rule {tie!r}; choose one of {', '.join(TIE_RULES)}")
    items = _as_list(preds, "hard_vote", labels_ok=True)
    votes, probs = [], []
    for i, p in enumerate(items):
        a = np.asarray(p)
        if a.ndim == 2:
            pa = _probs(a, f"preds[{i}]")
            probs.append(pa)
            votes.append(np.argmax(pa, axis=1))
        elif a.ndim == 1:
            votes.append(_labels(a, f"preds[{i}]"))
        else:
            raise ValueError(f"preds[{i}]: expected (N, C) probabilities or (N,) labels, got shape {a.shape}")
    ns = [len(v) for v in votes]
    if any(n != ns[0] for n in ns):
        raise ValueError(f"hard_vote: models predict different numbers of rows: {ns}")
    if probs:
        _same_shapes(probs, "hard_vote (probability arrays)")
        c = probs[0].shape[1]
        if num_classes is not None and num_classes != c:
            raise ValueError(f"hard_vote: num_classes={num_classes} but probability arrays have {c} columns")
    else:
        c = num_classes if num_classes is not None else int(max((v.max() for v in votes if v.size), default=-1)) + 1
    for i, v in enumerate(votes):
        if v.size and v.max() >= c:
            raise ValueError(f"preds[{i}]: label {int(v.max())} out of range for {c} classes")
    n = ns[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    w = _weights(weights, len(votes))
    rows = np.arange(n)
    counts = np.zeros((n, c))
    for wi, v in zip(w, votes):
        counts[rows, v] += wi
    best = counts.max(axis=1, keepdims=True)
    tied = counts >= best - 1e-9  # weights are normalised: rounding noise only
    if tie == "mean_prob" and len(probs) != len(votes):
        tie = "lowest"
    if tie == "lowest":
        return np.argmax(tied, axis=1).astype(np.int64)
    if tie == "mean_prob":
        mean = np.tensordot(w, np.stack(probs), axes=1)
        return np.argmax(np.where(tied, mean, -np.inf), axis=1).astype(np.int64)
    # first_model: walk the models in order; the first one voting for a tied class decides
    out = np.full(n, -1, dtype=np.int64)
    for wi, v in zip(w, votes):
        if wi <= 0:
            continue
        take = (out < 0) & tied[rows, v]
        out[take] = v[take]
    return out
