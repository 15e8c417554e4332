"""Sampling: oversampling of the rare >=60 faces, class-balanced sampling, class weights.

Used by :func:`mask_keras.pipeline.make_dataset` for training only (``cfg.sampling``):

- ``old_factor``: every >=60 person is seen ``old_factor`` times per epoch (team 000).
  The pipeline repeats decoded images *after* the cache (see :func:`old_repeat_counts`), so
  memory holds each image once; :func:`oversample_old` gives the same rows as a table.
- ``balance="class"``: one stream per class of the task, drawn with equal probability
  (:func:`balanced_dataset`, ``tf.data.Dataset.sample_from_datasets``); a fresh draw every
  epoch.
- :func:`class_weights`: inverse-frequency weights, the loss-side alternative.

The age group is the table's ``age_group`` column as it is (the caller chose ``age_upper``
when reading the data).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from . import labels as L
from .errors import unknown_choice

#: ``balance`` values: no balancing, or one stream per class of the task
BALANCES = ("none", "class")

log = logging.getLogger(__name__)


def _person_keys(table: pd.DataFrame) -> np.ndarray:
    """One key per row naming its person (``profile``, else ``id``, else the row itself)."""
    for col in ("profile", "id"):
        if col in table.columns:
            return table[col].astype(str).to_numpy()
    return np.arange(len(table)).astype(str)


def old_repeat_counts(table: pd.DataFrame, factor: float, seed: int = 0) -> np.ndarray:
    """How many times each row is used per epoch so that >=60 people count ``factor`` times.

    Every >=60 person (``age_group == 2``) gets ``floor(factor)`` copies; the fractional part
    is realised by giving one more copy to ``round(frac * n_old_people)`` of them, chosen
    deterministically from ``seed``. Everybody else gets 1. A person's images all share the
    same count, so the realised ratio of old images is exactly ``factor`` whenever
    ``frac * n_old_people`` is an integer (the nearest possible ratio otherwise).

    Args:
        table: one row per image with an ``age_group`` column; a person is its ``profile``
            column, else ``id``, else each row.
        factor: >= 1 (1: no oversampling); e.g. 2.5 gives half the >=60 people 3 copies
            and the other half 2.
        seed: picks the people who get the extra copy.

    Returns:
        An int64 array, one count (>= 1) per row of ``table``.

    Raises:
        ValueError: ``factor < 1`` or no ``age_group`` column.

    Example:
        >>> t = pd.DataFrame({"id": ["a", "b", "c", "c"], "age_group": [0, 2, 2, 2]})
        >>> old_repeat_counts(t, 2.0)
        array([1, 2, 2, 2])
    """
    if factor < 1:
        raise ValueError(f"old_factor must be >= 1 (1 = no oversampling), got {factor}")
    if "age_group" not in table.columns:
        raise ValueError("oversampling of >=60 faces needs the table's age_group column")
    counts = np.ones(len(table), dtype=np.int64)
    if factor == 1 or len(table) == 0:
        return counts
    old = table["age_group"].to_numpy() == int(L.AgeGroup.OLD)
    keys = _person_keys(table)
    people = np.unique(keys[old])  # sorted: independent of the table's row order
    if len(people) == 0:
        log.warning("sampling.old_factor=%s but the table has no >=60 faces; nothing to oversample", factor)
        return counts
    whole = int(np.floor(factor))
    n_extra = int(round((factor - whole) * len(people)))
    extra = np.random.default_rng(seed).choice(people, size=n_extra, replace=False) if n_extra else []
    counts[old] = whole
    counts[old & np.isin(keys, extra)] += 1
    return counts


def oversample_old(table: pd.DataFrame, factor: float, seed: int = 0) -> pd.DataFrame:
    """The table with the >=60 people's rows repeated (see :func:`old_repeat_counts`).

    Args:
        table: one row per image with an ``age_group`` column.
        factor: >= 1, how many times each >=60 person counts.
        seed: picks the people who get the fractional extra copy.

    Returns:
        A new table (index reset, ``attrs`` kept) with each row repeated in place.

    Example:
        >>> t = pd.DataFrame({"id": ["a", "b"], "age_group": [0, 2]})
        >>> oversample_old(t, 3)["id"].tolist()
        ['a', 'b', 'b', 'b']
    """
    counts = old_repeat_counts(table, factor, seed)
    out = table.iloc[np.repeat(np.arange(len(table)), counts)].reset_index(drop=True)
    out.attrs = dict(table.attrs)
    return out


def class_ids(table: pd.DataFrame, task: str) -> np.ndarray:
    """The class of every row for sampling/weighting: the task's target; the 18 classes for
    ``multi`` and ``multihead``.

    Args:
        table: one row per image with ``mask``, ``gender`` and ``age_group`` columns.
        task: a name in ``mask_keras.labels.TASKS`` (ValueError otherwise).

    Returns:
        An int64 array, one class id per row.

    Example:
        >>> t = pd.DataFrame({"mask": [0, 2], "gender": [1, 0], "age_group": [2, 1]})
        >>> class_ids(t, "multihead").tolist(), class_ids(t, "mask").tolist()
        ([5, 13], [0, 2])
    """
    L.check_task(task)
    if task in ("multi", "multihead"):
        return L.encode(table["mask"].to_numpy(), table["gender"].to_numpy(), table["age_group"].to_numpy())
    return np.asarray(L.task_target(task, table["mask"].to_numpy(), table["gender"].to_numpy(),
                                    table["age_group"].to_numpy()), dtype=np.int64)


def num_sampling_classes(task: str) -> int:
    """Number of classes :func:`class_ids` can return for ``task``.

    Args:
        task: ``mask``, ``gender``, ``age``, ``multi`` or ``multihead``.

    Returns:
        3, 2, 3, or 18 for ``multi`` and ``multihead``.

    Raises:
        ValueError: an unknown task (named, with the choices).
    """
    L.check_task(task)
    return L.NUM_CLASSES if task in ("multi", "multihead") else L.TASK_CLASSES[task]


def class_counts(table: pd.DataFrame, task: str) -> np.ndarray:
    """Rows per class of ``task`` (see :func:`class_ids`).

    Args:
        table: one row per image with ``mask``, ``gender`` and ``age_group`` columns.
        task: a name in ``mask_keras.labels.TASKS``.

    Returns:
        An int64 array of length :func:`num_sampling_classes` (absent classes: 0).

    Example:
        >>> t = pd.DataFrame({"mask": [0, 0, 2], "gender": [1, 0, 0], "age_group": [2, 1, 1]})
        >>> class_counts(t, "mask").tolist()
        [2, 0, 1]
    """
    return np.bincount(class_ids(table, task), minlength=num_sampling_classes(task))


def class_weights(table: pd.DataFrame, task: str):
    """Inverse-frequency class weights ``n / (K * n_c)``, K = number of classes present
    (as sklearn's ``compute_class_weight("balanced")``; the weighted mean over rows is 1).

    A class absent from the table gets weight 0 (it has no samples to weight) and a
    warning is logged. ``dict(enumerate(w))`` turns an array into Keras' ``class_weight``
    argument.

    Args:
        table: one row per image with ``mask``, ``gender`` and ``age_group`` columns.
        task: a name in ``mask_keras.labels.TASKS`` (ValueError otherwise).

    Returns:
        A float32 array with one weight per class of the task (3, 2, 3 or 18, absent
        classes included) for ``mask``/``gender``/``age``/``multi``, and a dict
        ``{"mask": (3,), "gender": (2,), "age": (3,)}`` of such arrays for ``multihead``.

    Example:
        >>> t = pd.DataFrame({"mask": [0, 0, 0, 1], "gender": [0, 0, 1, 1], "age_group": [0, 0, 0, 0]})
        >>> class_weights(t, "gender").tolist()
        [1.0, 1.0]
        >>> [round(float(w), 3) for w in class_weights(t, "mask")]
        [0.667, 2.0, 0.0]
    """
    L.check_task(task)
    if task == "multihead":
        return {t: class_weights(table, t) for t in L.HEADS}
    counts = class_counts(table, task).astype(np.float64)
    k = int((counts > 0).sum())  # like sklearn's compute_class_weight("balanced")
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, counts.sum() / (k * counts), 0.0)
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        log.warning("class_weights(%s): class(es) %s have no samples; weight 0", task, missing.tolist())
    return w.astype(np.float32)


def balanced_dataset(per_class, seed: int | None = None, weights=None):
    """Draw from the per-class datasets with equal probability (or ``weights``).

    The draw is re-randomised every epoch. The result is infinite: ``.take(n)`` it.
    Imports TensorFlow.

    Args:
        per_class: an iterable of (infinite, ``.repeat()``-ed) ``tf.data.Dataset`` with the
            same element structure, one per class present.
        seed: seed of the draw (None: unseeded).
        weights: probability of each dataset, in order (None: equal).

    Returns:
        The ``tf.data.Dataset`` of ``sample_from_datasets``.

    Raises:
        ValueError: ``per_class`` is empty.
    """
    from ._tf import tf

    per_class = list(per_class)
    if not per_class:
        raise ValueError("balanced_dataset: no per-class datasets (empty table?)")
    if weights is None:
        weights = [1.0 / len(per_class)] * len(per_class)
    return tf.data.Dataset.sample_from_datasets(per_class, weights=[float(w) for w in weights], seed=seed,
                                                rerandomize_each_iteration=True)


def index_stream(table: pd.DataFrame, task: str, counts: np.ndarray, balance: str = "none", seed: int = 0):
    """One training epoch of row indices, as a ``tf.data`` stream (re-drawn every epoch).

    ``none``: every row ``counts[i]`` times (the >=60 repeats of :func:`old_repeat_counts`),
    shuffled. ``class``: the same number of rows, drawn with equal probability from each
    class of ``task`` present (:func:`balanced_dataset`; within a class, its rows with their
    repeats, reshuffled every pass). Imports TensorFlow.

    Args:
        table: the training image table.
        task: the task whose classes ``class`` balances (``multi``/``multihead``: the 18).
        counts: ``(len(table),)`` repeats of each row per epoch (>= 1).
        balance: one of ``BALANCES``: ``none`` | ``class``.
        seed: seeds the shuffles and the draw.

    Returns:
        ``(dataset of int64 row indices, sum(counts) long; a description for the log)``.

    Raises:
        ConfigError: an unknown ``balance``, naming the choices.

    Example:

    >>> table = pd.DataFrame({"mask": [0, 0, 0, 1], "gender": [0, 0, 0, 0], "age_group": [0, 0, 0, 0]})
    >>> ds, how = index_stream(table, "mask", np.array([1, 1, 1, 1]), "class", seed=0)
    >>> how, len(list(ds))
    ('class-balanced over 2 classes', 4)
    """
    if balance not in BALANCES:
        raise unknown_choice("balance", balance, BALANCES)
    from ._tf import tf

    n_epoch = int(np.sum(counts))
    if balance == "class":
        cls = class_ids(table, task)
        streams, present = [], []
        for c in np.unique(cls):
            sel = np.flatnonzero(cls == c)
            ids = np.repeat(sel, counts[sel]).astype(np.int64)
            streams.append(tf.data.Dataset.from_tensor_slices(ids).repeat()
                           .shuffle(len(ids), seed=seed + 1 + int(c), reshuffle_each_iteration=True))
            present.append(int(c))
        k = num_sampling_classes(task)
        if len(present) < k:
            log.warning("balanced sampling: class(es) %s absent from the training table",
                        sorted(set(range(k)) - set(present)))
        return balanced_dataset(streams, seed=seed).take(n_epoch), f"class-balanced over {len(present)} classes"
    ids = np.repeat(np.arange(len(table)), counts).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices(ids).shuffle(len(ids), seed=seed, reshuffle_each_iteration=True), \
        "shuffled"
