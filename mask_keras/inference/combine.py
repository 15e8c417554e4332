"""One rule for combining models' answers, for any subset of the three tasks.

Every model's output is held as a dict of probability arrays over the N images
(:class:`Prediction`): ``{"mask": (N,3)}`` / ``{"gender": (N,2)}`` / ``{"age": (N,3)}`` for
per-task models, ``{"multi": (N,18)}`` for 18-way models, ``{"mask", "gender", "age"}`` for
multi-head models. :func:`combine_predictions` votes them (primitives in
:mod:`mask_keras.ensemble`):

* ``level="task"``: each model is reduced to per-task probabilities (an 18-way model by its
  marginals, a multi-head model by its heads); each task is voted over the models that cover
  it (soft: the weighted mean; hard: the weighted majority with the ``tie`` rule). With all
  three tasks covered, the 18 classes are ``mask*6 + gender*3 + age``: for a soft vote by the
  product of the task probabilities (``combine="product"``) or the per-task argmaxes
  (``combine="argmax"``; the same labels, see :mod:`mask_keras.ensemble`).
* ``level="class"``: vote over 18-class probabilities (an 18-way model's own, a multi-head
  model's product of heads; per-task models first joined into one member); the 18-class
  answer is the joint's argmax and each task's answer the argmax of the joint's marginals,
  which can differ from the joint class decoded (:attr:`Combined.level` says the class is the
  joint's).
* ``level="auto"`` (default): ``class`` when every model is 18-way or multi-head, else ``task``.

Models covering fewer than three tasks (a gender model alone, mask + gender) are combined at
the task level, by the same rule, per covered task; there is no 18-class answer then, so
``level="class"`` and ``combine="argmax"`` are refused with a :class:`CombineError` saying so.

What the probabilities shown mean: a soft vote's are the (weighted) mean probabilities, a
hard vote's the (weighted) vote shares; either way each task's answer is the argmax of what is
shown (a hard vote's tie broken by ``tie``).

Example:
    >>> import numpy as np
    >>> from types import SimpleNamespace as M
    >>> g1 = Prediction(M(name="a", task="gender"), {"gender": np.array([[0.8, 0.2]])})
    >>> g2 = Prediction(M(name="b", task="gender"), {"gender": np.array([[0.4, 0.6]])})
    >>> c = combine_predictions([g1, g2])
    >>> c.tasks, c.task_labels["gender"].tolist(), c.task_probs["gender"].round(2).tolist(), c.labels
    (('gender',), [0], [[0.6, 0.4]], None)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import labels as L
from ..config import LEVELS, VOTES
from ..ensemble import TIE_RULES, combine_argmax, combine_tasks, hard_vote, soft_vote, split_multi

TASK_ORDER = L.HEADS
COMBINES = ("product", "argmax")


class CombineError(ValueError):
    """The models cannot be combined as asked (no models, a setting the covered tasks do not allow)."""


@dataclass
class Prediction:
    """One model's probabilities over the images: ``probs`` maps task -> (N, C).

    Attributes:
        artifact: what made them: anything with ``name`` and ``task`` (an
            :class:`~mask_keras.inference.artifacts.Artifact`, an engine member).
        probs: ``{task: (N, C)}``: ``mask``/``gender``/``age`` or ``multi`` (N, 18).
    """

    artifact: object
    probs: dict

    @property
    def name(self) -> str:
        """The model's short name."""
        return self.artifact.name

    @property
    def task(self) -> str:
        """The model's task (``mask``, ``gender``, ``age``, ``multi`` or ``multihead``)."""
        return self.artifact.task

    def tasks(self) -> dict:
        """Per-task probabilities ``{task: (N, C)}`` (18-way: marginals; multihead: heads).

        Returns:
            A new dict ``{task: (N, C) array}`` of the tasks the model covers.
        """
        if "multi" in self.probs:
            return dict(zip(TASK_ORDER, split_multi(self.probs["multi"])))
        return dict(self.probs)

    def p18(self):
        """(N, 18) probabilities, or None for a model that does not cover the three tasks.

        Returns:
            float64 (N, 18): an 18-way model's own, a multi-head model's product of heads.
        """
        if "multi" in self.probs:
            return np.asarray(self.probs["multi"], dtype=np.float64)
        if all(t in self.probs for t in TASK_ORDER):
            return combine_tasks(*(self.probs[t] for t in TASK_ORDER))
        return None


@dataclass
class Combined:
    """The combined answer (:func:`combine_predictions`).

    Attributes:
        tasks: the tasks covered, in :data:`mask_keras.labels.HEADS` order.
        task_labels: ``{task: int64 (N,)}``: each covered task's answer.
        task_probs: ``{task: (N, C)}``: what the answer is the argmax of (soft: mean
            probabilities; hard: vote shares); at ``level="class"`` the joint's marginals.
        level: the level used: ``task`` or ``class``.
        labels: int64 (N,) classes 0..17 when all three tasks are covered, else None.
        p18: (N, 18) when all three are covered (soft: the combination; hard: the vote shares
            at the class level, the product of task shares at the task level), else None.
    """

    tasks: tuple
    task_labels: dict
    task_probs: dict
    level: str
    labels: np.ndarray | None = None
    p18: np.ndarray | None = None


def check_choice(name: str, value, choices) -> None:
    """A :class:`CombineError` unless ``value`` is one of ``choices``.

    Args:
        name: the setting's name.
        value: what was given.
        choices: the allowed values.
    """
    if value not in choices:
        raise CombineError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def model_weights(n: int, weights) -> np.ndarray:
    """One finite, non-negative weight per model, not all zero (None: equal).

    Args:
        n: the number of models.
        weights: the weights, or None.

    Returns:
        float64 (n,).
    """
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) != n:
        raise CombineError(f"weights: need one weight per model ({n}), got {list(np.ravel(w))}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise CombineError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w


def vote_shares(arrays, weights, classes: int) -> np.ndarray:
    """The weighted share of the models' votes (argmaxes) each class gets: (N, classes), rows sum to 1.

    Args:
        arrays: M (N, C) probability arrays.
        weights: M weights.
        classes: C.

    Returns:
        float64 (N, C).

    Example:
        >>> vote_shares([np.array([[0.9, 0.1]]), np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])], [1, 1, 2], 2)
        array([[0.75, 0.25]])
    """
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    out = np.zeros((len(arrays[0]), classes))
    for a, wi in zip(arrays, w):
        out[np.arange(len(a)), np.asarray(a).argmax(axis=1)] += wi
    return out


def _groups(preds, w) -> dict:
    """task -> (list of (N, C) arrays, list of weights), over the models covering it."""
    groups = {}
    for p, wi in zip(preds, w):
        for t, arr in p.tasks().items():
            groups.setdefault(t, ([], []))
            groups[t][0].append(arr)
            groups[t][1].append(wi)
    return {t: groups[t] for t in TASK_ORDER if t in groups}


def combine_predictions(preds, vote: str = "soft", level: str = "auto", weights=None, tie: str = "mean_prob",
                        combine: str = "product") -> Combined:
    """The combined answer of a list of :class:`Prediction` (see the module docstring).

    Args:
        preds: the models' :class:`Prediction` s (any tasks).
        vote: ``"soft"`` or ``"hard"``.
        level: ``"auto"``, ``"task"`` or ``"class"``.
        weights: one non-negative weight per prediction; None: equal.
        tie: the hard-vote tie rule (:data:`mask_keras.ensemble.TIE_RULES`).
        combine: soft votes at the task level: ``"product"`` or ``"argmax"``.

    Returns:
        A :class:`Combined`.

    Raises:
        CombineError: no predictions, an unknown choice, invalid weights, or ``level="class"``
            / ``combine="argmax"`` when the models do not cover all three tasks.
    """
    check_choice("vote", vote, VOTES)
    check_choice("level", level, LEVELS)
    check_choice("combine", combine, COMBINES)
    check_choice("tie", tie, TIE_RULES)
    preds = list(preds)
    if not preds:
        raise CombineError("no models given")
    w = model_weights(len(preds), weights)
    groups = _groups(preds, w)
    tasks = tuple(groups)
    if len(tasks) < 3:
        covers = f"these models cover only {', '.join(tasks)} ({', '.join(f'{p.name}: {p.task}' for p in preds)})"
        if level == "class":
            raise CombineError(f"level='class' votes over the 18 classes, which needs mask, gender and age; "
                               f"{covers}: use level='task' or 'auto'")
        if combine != "product":
            raise CombineError(f"combine={combine!r} makes the 18-class answer, which needs mask, gender and "
                               f"age; {covers}")
    if level == "auto":
        level = "class" if len(tasks) == 3 and all(p.p18() is not None for p in preds) else "task"

    if level == "task":
        if vote == "hard":
            probs = {t: vote_shares(a, ws, L.TASK_CLASSES[t]) for t, (a, ws) in groups.items()}
            labels = {t: np.asarray(hard_vote(a, ws, tie=tie), np.int64) for t, (a, ws) in groups.items()}
        else:
            probs = {t: soft_vote(a, ws) for t, (a, ws) in groups.items()}
            labels = {t: probs[t].argmax(axis=1).astype(np.int64) for t in tasks}
        if len(tasks) < 3:
            return Combined(tasks, labels, probs, "task")
        p18 = combine_tasks(*(probs[t] for t in TASK_ORDER))
        if vote == "soft" and combine == "argmax":
            y18 = np.asarray(combine_argmax(*(probs[t] for t in TASK_ORDER)), np.int64)
        else:
            y18 = L.encode(*(labels[t] for t in TASK_ORDER)).astype(np.int64)
        return Combined(tasks, labels, probs, "task", y18, p18)

    # level == "class": 18-class members; per-task models joined into one member
    members, mw = [], []
    singles = [(p, wi) for p, wi in zip(preds, w) if p.p18() is None]
    for p, wi in zip(preds, w):
        if p.p18() is not None:
            members.append(p.p18())
            mw.append(wi)
    if singles:
        sg = _groups([p for p, _ in singles], [wi for _, wi in singles])
        missing = [t for t in TASK_ORDER if t not in sg]
        if missing:
            raise CombineError(f"level='class': the per-task models ({', '.join(p.name for p, _ in singles)}) "
                               f"do not cover {', '.join(missing)}, so they cannot be joined into one 18-class "
                               f"member; add a model for it or use level='task'")
        members.append(combine_tasks(*(soft_vote(a, ws) for a, ws in (sg[t] for t in TASK_ORDER))))
        mw.append(float(np.mean([wi for _, wi in singles])))
    if vote == "hard":
        p18 = vote_shares(members, mw, L.NUM_CLASSES)
        y18 = np.asarray(hard_vote(members, mw, tie=tie), np.int64)
    else:
        p18 = soft_vote(members, mw)
        y18 = p18.argmax(axis=1).astype(np.int64)
    probs = dict(zip(TASK_ORDER, split_multi(p18)))
    labels = {t: probs[t].argmax(axis=1).astype(np.int64) for t in TASK_ORDER}  # the argmax of what is shown
    return Combined(tasks, labels, probs, "class", y18, p18)
