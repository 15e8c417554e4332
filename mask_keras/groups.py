"""Whom a model fails, and how sure a score is: results by group and bootstrap intervals.

* :func:`group_scores`: for each of the six gender x age groups of the *ground truth*
  (``male/<30`` ... ``female/>=60``), its image count, the accuracy of the model's answers and
  each task's macro F1 (scikit-learn's ``f1_score(average="macro")``) on that group's images;
  the worst group (lowest accuracy) and the largest gap between groups. Also
  :func:`slice_scores`: the age F1 in each mask x gender cell and the gender F1 in each mask x
  age cell (does a mask hide age for women, gender for the old?).
* :func:`bootstrap_ci`: 95% percentile bootstrap intervals (1,000 resamples, seeded) of the
  macro F1 and each task F1, resampling *people* where they are known (a person's photos move
  together: validation, K-fold out-of-fold) and images otherwise (``eval/``). Each resample's
  F1 comes from weighted confusion counts (one matrix product for all resamples), the same
  number scikit-learn gives on the resampled rows (tested).

Example:
    >>> import numpy as np
    >>> y = np.array([0, 4, 9, 17, 3, 3, 1, 2])          # classes 0..17: mask*6 + gender*3 + age
    >>> g = group_scores(y, np.array([0, 4, 9, 16, 3, 0, 1, 0]))
    >>> g["groups"]["female/<30"], g["worst_group"], g["group_gap"]
    ({'n': 3, 'accuracy': 0.6667, 'f1_mask': 1.0, 'f1_gender': 0.4, 'f1_age': 1.0}, 'male/>=60', 1.0)
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from . import labels as L

TASKS = L.HEADS
#: the bootstrap's settings: resamples, seed, interval level
RESAMPLES, SEED, LEVEL = 1000, 0, 0.95


def _codes(y, task: str) -> dict:
    """task -> (N,) codes of the tasks a label of ``task`` holds."""
    y = np.asarray(y, np.int64)
    if task in ("multi", "multihead"):
        return dict(zip(TASKS, (np.asarray(v, np.int64) for v in L.decode(y))))
    return {task: y}


def _round(v):
    return None if v is None else round(float(v), 4)


def group_scores(y_true, y_pred, task: str = "multi", gender=None, age=None) -> dict:
    """Scores on each gender x age group of the ground truth (see the module docstring).

    Args:
        y_true: (N,) true labels of ``task`` (classes 0..17 for ``multi``).
        y_pred: (N,) predicted labels, aligned.
        task: ``multi`` / ``multihead`` (18 classes) or ``mask`` / ``gender`` / ``age``.
        gender: (N,) true gender codes (0 male, 1 female); None: decoded from 18-class ``y_true``.
        age: (N,) true age-group codes (0 <30, 1 30-59, 2 >=60); likewise.

    Returns:
        ``{"groups": {"male/<30": {"n", "accuracy", "f1_<task>"...}, ...}, "worst_group",
        "group_gap"}``: accuracy of the answers of ``task``, macro F1 of each covered task; a
        group without images has ``n`` 0 and None scores; the worst group is the one of lowest
        accuracy, the gap the highest accuracy minus the lowest (among groups with images).

    Raises:
        ValueError: ``gender``/``age`` missing for a single-task model.
    """
    yt, yp = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    truth, pred = _codes(yt, task), _codes(yp, task)
    if gender is None or age is None:
        if task not in ("multi", "multihead"):
            raise ValueError(f"group_scores: a {task!r} model's labels do not say the gender and age; pass them")
        gender, age = truth["gender"], truth["age"]
    gender, age = np.asarray(gender, np.int64), np.asarray(age, np.int64)
    groups = {}
    for gi, gname in enumerate(L.CLASS_NAMES["gender"]):
        for ai, aname in enumerate(L.CLASS_NAMES["age"]):
            sel = (gender == gi) & (age == ai)
            n = int(sel.sum())
            row = {"n": n, "accuracy": _round(accuracy_score(yt[sel], yp[sel])) if n else None}
            for t in truth:
                row[f"f1_{t}"] = _round(f1_score(truth[t][sel], pred[t][sel], average="macro", zero_division=0)) \
                    if n else None
            groups[f"{gname}/{aname}"] = row
    present = {k: v["accuracy"] for k, v in groups.items() if v["n"]}
    worst = min(present, key=present.get) if present else None
    gap = _round(max(present.values()) - min(present.values())) if present else None
    return {"groups": groups, "worst_group": worst, "group_gap": gap}


def slice_scores(y_true, y_pred) -> dict:
    """The age F1 per mask x gender cell and the gender F1 per mask x age cell (18-class labels).

    Args:
        y_true: (N,) true classes 0..17.
        y_pred: (N,) predicted classes, aligned.

    Returns:
        ``{"f1_age_by_mask_gender": {"wear/male": ..., ...}, "f1_gender_by_mask_age":
        {"wear/<30": ..., ...}}`` (None for a cell without images).
    """
    t, p = _codes(y_true, "multi"), _codes(y_pred, "multi")
    out = {}
    for score, other in (("age", "gender"), ("gender", "age")):
        cells = {}
        for mi, mname in enumerate(L.CLASS_NAMES["mask"]):
            for oi, oname in enumerate(L.CLASS_NAMES[other]):
                sel = (t["mask"] == mi) & (t[other] == oi)
                cells[f"{mname}/{oname}"] = (_round(f1_score(t[score][sel], p[score][sel], average="macro",
                                                             zero_division=0)) if sel.any() else None)
        out[f"f1_{score}_by_mask_{other}"] = cells
    return out


def weighted_macro_f1(y_true, y_pred, weights, classes: int) -> np.ndarray:
    """Macro F1 of rows counted ``weights`` times, for many weightings at once.

    As scikit-learn's ``f1_score(average="macro", zero_division=0)`` on the repeated rows: the
    mean over the classes that occur in the truth or the prediction.

    Args:
        y_true: (N,) true codes.
        y_pred: (N,) predicted codes.
        weights: (R, N) non-negative counts (one weighting per row).
        classes: the number of classes.

    Returns:
        float64 (R,).

    Example:
        >>> w = np.array([[1, 1, 1, 1], [2, 0, 1, 1]])
        >>> weighted_macro_f1([0, 0, 1, 1], [0, 1, 1, 1], w, 2).round(4).tolist()
        [0.7333, 1.0]
    """
    pair = np.asarray(y_true, np.int64) * classes + np.asarray(y_pred, np.int64)
    onehot = np.zeros((len(pair), classes * classes))
    onehot[np.arange(len(pair)), pair] = 1.0
    cm = (np.asarray(weights, np.float64) @ onehot).reshape(-1, classes, classes)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    denom = cm.sum(axis=2) + cm.sum(axis=1)  # 2TP + FP + FN
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def bootstrap_ci(y_true, y_pred, task: str = "multi", units=None, n_resamples: int = RESAMPLES, seed: int = SEED,
                 level: float = LEVEL) -> dict:
    """Percentile bootstrap intervals of the macro F1 and each task F1 (see the module docstring).

    Args:
        y_true: (N,) true labels of ``task``.
        y_pred: (N,) predicted labels, aligned.
        task: ``multi`` / ``multihead`` (18 classes: also each task's F1) or one task.
        units: (N,) who each row is (a person id): people are resampled, each with all their
            rows; None: rows are resampled.
        n_resamples: bootstrap resamples.
        seed: the resampling seed.
        level: the interval's coverage.

    Returns:
        ``{"macro_f1": [lo, hi], "f1_<task>": [lo, hi], ..., "resampled": "people"|"images",
        "n_resamples": ...}``.
    """
    yt, yp = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    rng = np.random.default_rng(seed)
    if units is None:
        member = None
        counts = rng.multinomial(len(yt), np.full(len(yt), 1.0 / len(yt)), size=n_resamples)
    else:
        ids, member = np.unique(np.asarray(units), return_inverse=True)
        picked = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=n_resamples)  # (R, U)
        counts = picked[:, member]  # every row of a person counted as often as the person was drawn
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    multi = task in ("multi", "multihead")
    out = {"macro_f1": weighted_macro_f1(yt, yp, counts, L.NUM_CLASSES if multi else L.TASK_CLASSES[task])}
    if multi:
        for t, (a, b) in zip(TASKS, zip(L.decode(yt), L.decode(yp))):
            out[f"f1_{t}"] = weighted_macro_f1(a, b, counts, L.TASK_CLASSES[t])
    res = {k: [_round(np.percentile(v, lo)), _round(np.percentile(v, hi))] for k, v in out.items()}
    res.update(resampled="images" if member is None else "people", n_resamples=int(n_resamples))
    return res
