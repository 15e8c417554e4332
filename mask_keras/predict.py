"""From saved artifacts to probabilities, an ensemble answer and a submission.

An artifact is a run directory (``model.keras`` + ``config.json``): the config records
the task, image size and crop, so inference applies exactly the
deterministic preprocessing the model was validated with
(:func:`mask_keras.pipeline.make_predict_dataset`). A K-fold run directory
(``fold_0``, ``fold_1``, ... beside ``kfold_summary.json``) expands to its fold
artifacts (:func:`expand_models`).

Typical use::

    from mask_keras.predict import predict_submission
    res = predict_submission(["runs/mask", "runs/gender", "runs/age"], "data/default",
                             "submission.csv", tta=True, gt="data/default/eval/gt.csv")
    res.metrics["macro_f1"]; print(res.table.to_string())   # ensemble vs each model

Every model's output is held as a dict of probability arrays over the N images:
``{"mask": (N,3)}`` / ``{"gender": (N,2)}`` / ``{"age": (N,3)}`` for per-task models,
``{"multi": (N,18)}`` for 18-way models, ``{"mask", "gender", "age"}`` for multi-head
models (:class:`Prediction`).

Test-time augmentation (per model, before any voting): the mean of the predictions of
the original view, the horizontally flipped view (``tta=True``) and optional crop views
(``crops=(0.9, 1.1)``: the model's crop region scaled by that factor around its centre
-- zoomed in below 1, more context above 1 -- resized to the same input size).

Combining (:func:`combine_predictions`, voting primitives in :mod:`mask_keras.ensemble`):

* ``level="task"``: each model is reduced to per-task probabilities (an 18-way model by
  its marginals, a multi-head model by its heads); each task is voted over the models
  that cover it (soft: weighted mean; hard: weighted majority with the ``tie`` rule);
  the 18 classes are then ``mask*6 + gender*3 + age`` -- for soft voting by the product
  of the task probabilities (``combine="product"``) or the per-task argmaxes
  (``combine="argmax"``; the same labels, see :mod:`mask_keras.ensemble`).
* ``level="class"``: vote over 18-class probabilities: an 18-way model's own, a
  multi-head model's product of heads; per-task models are first joined into one
  member (per task the weighted mean of their models, then the product).
* ``level="auto"`` (default): ``class`` when every model is 18-way or multi-head,
  ``task`` otherwise.

``hard_vote`` tie rule (default ``"mean_prob"``): among the classes with the most
votes, the one with the highest (weighted) mean probability; then the lowest index.

Safety: every artifact is opened and checked (exists, has its config, is for the
expected task, has outputs of the right shape), info.csv is matched to the images and
every image file is checked *before* any prediction; the submission is written
atomically at the very end, so a failure never leaves a partial or stale-looking file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from . import evaluate as E
from . import labels as L
from . import pipeline
from .artifact import Artifact, ArtifactError, crop_view, expand_models, fold_dirs, load_artifact, predict_views  # noqa: F401,E501  (importable from here, as before)
from .config import LEVELS, TTA_CROP_RANGE, VOTES
from .data.layout import read_eval
from .ensemble import (
    combine_argmax,
    combine_tasks,
    hard_vote,
    soft_vote,
    split_multi,
)
from .evaluate import evaluate
from .files import atomic_write_text

log = logging.getLogger(__name__)
TASK_ORDER = L.HEADS
COMBINES = ("product", "argmax")


# --------------------------------------------------------------------------- one model
@dataclass
class Prediction:
    """One model's probabilities over the images: ``probs`` maps task -> (N, C).

    Attributes:
        artifact: the model's :class:`~mask_keras.artifact.Artifact` (``name``, ``task``).
        probs: ``{task: (N, C)}``: ``mask``/``gender``/``age`` or ``multi`` (N, 18).
    """

    artifact: Artifact
    probs: dict

    @property
    def name(self) -> str:
        """The artifact's short name (:attr:`mask_keras.artifact.Artifact.name`)."""
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
        """(N, 18) probabilities, or None for a single-task model.

        Returns:
            float64 (N, 18): an 18-way model's own, a multi-head model's product of heads.
        """

        if "multi" in self.probs:
            return np.asarray(self.probs["multi"], dtype=np.float64)
        if all(t in self.probs for t in TASK_ORDER):
            return combine_tasks(*(self.probs[t] for t in TASK_ORDER))
        return None


def predict_probs(art: Artifact, paths, batch_size: int = 64, tta: bool = False, crops=(),
                  check: str = "fast", progress: bool = False):
    """Probabilities of one artifact over image files (or a table with ``path``).

    Args:
        art: the artifact (its model is loaded on first use).
        paths: image files, or a table with ``path`` (and ``crop_*`` for a face crop).
        batch_size: images per batch.
        tta: average with the horizontally flipped view(s).
        crops: add crop views at these scales (each also flipped when ``tta``).
        check: the file check before the first view: ``"fast"``, ``"full"`` or ``"none"``.
        progress: show a progress bar.

    Returns:
        float32 (N, C), or a dict ``{"mask", "gender", "age"}`` for a multi-head model.
    """
    return predict_views(lambda ds: art.model.predict(ds, verbose=0), paths, art.config.preprocess,
                         batch_size=batch_size, tta=tta, crops=crops, check=check, progress=progress)


def predict_artifact(art: Artifact, paths, **kw) -> Prediction:
    """:func:`predict_probs` wrapped as a :class:`Prediction` (task-keyed dict).

    Args:
        art: the artifact.
        paths: image files, or a table with ``path``.
        **kw: :func:`predict_probs`'s keyword arguments.

    Returns:
        A :class:`Prediction`; a single-output model's array is keyed by its task.
    """
    p = predict_probs(art, paths, **kw)
    return Prediction(art, p if isinstance(p, dict) else {art.task: p})


# --------------------------------------------------------------------------- combining
@dataclass
class Combined:
    """The ensemble's answer (:func:`combine_predictions`).

    Attributes:
        labels: int64 (N,) classes 0..17.
        p18: (N, 18) the soft combination (also reported for hard votes).
        level: the level actually used: ``task`` or ``class``.
        task_probs: ``{task: (N, C)}`` soft per-task probabilities.
    """

    labels: np.ndarray
    p18: np.ndarray
    level: str
    task_probs: dict


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _model_weights(preds, weights) -> np.ndarray:
    if weights is None:
        return np.ones(len(preds))
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) != len(preds):
        raise ValueError(f"weights: need one weight per model ({len(preds)}), got {list(np.ravel(w))}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w


def _per_task(preds, w):
    """task -> (list of (N, C) arrays, list of weights), over the models covering it."""
    groups = {t: ([], []) for t in TASK_ORDER}
    for p, wi in zip(preds, w):
        for t, arr in p.tasks().items():
            groups[t][0].append(arr)
            groups[t][1].append(wi)
    missing = [t for t in TASK_ORDER if not groups[t][0]]
    if missing:
        raise ArtifactError(f"no model covers task(s) {missing}: give a model for each of mask, gender, age, "
                            f"or a multi / multihead model (models: {[f'{p.name} ({p.task})' for p in preds]})")
    return groups


def combine_predictions(preds, vote: str = "soft", level: str = "auto", weights=None, tie: str = "mean_prob",
                        combine: str = "product") -> Combined:
    """The 18-class answer of a list of :class:`Prediction` (see the module docstring).

    Args:
        preds: the models' :class:`Prediction` s, together covering mask, gender and age.
        vote: ``"soft"`` or ``"hard"``.
        level: ``"auto"``, ``"task"`` or ``"class"``.
        weights: one non-negative weight per prediction; None: equal.
        tie: the hard-vote tie rule (:data:`mask_keras.ensemble.TIE_RULES`).
        combine: soft votes at the task level: ``"product"`` or ``"argmax"``.

    Returns:
        A :class:`Combined`.

    Raises:
        ValueError: an unknown choice or invalid weights.
        ArtifactError: no predictions, or a task no model covers.
    """

    _check_choice("vote", vote, VOTES)
    _check_choice("level", level, LEVELS)
    _check_choice("combine", combine, COMBINES)
    preds = list(preds)
    if not preds:
        raise ArtifactError("no models given")
    w = _model_weights(preds, weights)
    groups = _per_task(preds, w)
    task_probs = {t: soft_vote(a, ws) for t, (a, ws) in groups.items()}
    if level == "auto":
        level = "class" if all(p.task in ("multi", "multihead") for p in preds) else "task"

    if level == "task":
        p18 = combine_tasks(*(task_probs[t] for t in TASK_ORDER))
        if vote == "hard":
            m, g, a = (hard_vote(groups[t][0], groups[t][1], tie=tie) for t in TASK_ORDER)
            labels = L.encode(m, g, a)
        elif combine == "argmax":
            labels = combine_argmax(*(task_probs[t] for t in TASK_ORDER))
        else:
            labels = p18.argmax(axis=1)
        return Combined(np.asarray(labels, np.int64), p18, level, task_probs)

    # level == "class": 18-class members; per-task models joined into one member
    members, mw = [], []
    singles = [(p, wi) for p, wi in zip(preds, w) if p.p18() is None]
    for p, wi in zip(preds, w):
        if p.p18() is not None:
            members.append(p.p18())
            mw.append(wi)
    if singles:
        sg = _per_task([p for p, _ in singles], [wi for _, wi in singles])
        members.append(combine_tasks(*(soft_vote(a, ws) for a, ws in (sg[t] for t in TASK_ORDER))))
        mw.append(float(np.mean([wi for _, wi in singles])))
    p18 = soft_vote(members, mw)
    labels = hard_vote(members, mw, tie=tie) if vote == "hard" else p18.argmax(axis=1)
    return Combined(np.asarray(labels, np.int64), p18, level, task_probs)


# --------------------------------------------------------------------------- scoring
def _gt_labels(gt, image_ids) -> np.ndarray:
    """True classes of ``image_ids`` from a gt table (CSV path or DataFrame ``ImageID,ans``)."""

    s = E.read_answers(gt, "gt")
    ids = pd.Index([str(i) for i in image_ids])
    missing = ids.difference(s.index)
    if len(missing) or len(s) != len(ids):
        where = gt if isinstance(gt, (str, Path)) else "the gt table"
        raise E.EvaluationError(f"{where}: does not match the predicted images ({len(s)} gt rows, {len(ids)} "
                                f"predicted; {len(missing)} predicted ImageID(s) missing from gt, e.g. "
                                f"{list(missing[:3])})")
    return s.reindex(ids).to_numpy(np.int64)


def compare_table(preds, combined: Combined, y_true, name: str = "ensemble") -> pd.DataFrame:
    """Scores of each model alone and of the ensemble, one row each.

    ``macro_f1``/``accuracy`` over the 18 classes for models that cover all three tasks
    (NaN for a single-task model); ``f1_mask``/``f1_gender``/``f1_age`` the macro F1 of
    each task a model covers: for a single-task model from its argmax, otherwise from
    its 18-class answer decoded (as ``mask-keras evaluate`` scores a submission).

    Args:
        preds: the models' :class:`Prediction` s.
        combined: their :func:`combine_predictions` answer.
        y_true: (N,) true classes 0..17, aligned with the predictions.
        name: the ensemble row's ``model``.

    Returns:
        A DataFrame (``model``, ``task``, ``macro_f1``, ``accuracy``, ``f1_<task>``): the models, then the ensemble.
    """

    y_true = np.asarray(y_true, np.int64)
    truth = dict(zip(TASK_ORDER, L.decode(y_true)))
    rows = []

    def row(label, task, per_task: dict, y18):
        r = {"model": label, "task": task, "macro_f1": np.nan, "accuracy": np.nan}
        if y18 is not None:
            r["macro_f1"] = float(f1_score(y_true, y18, average="macro", zero_division=0))
            r["accuracy"] = float(accuracy_score(y_true, y18))
        for t in TASK_ORDER:
            r[f"f1_{t}"] = (float(f1_score(truth[t], per_task[t], average="macro", zero_division=0))
                            if t in per_task else np.nan)
        rows.append(r)

    for p in preds:
        p18 = p.p18()
        if p18 is None:  # a single-task model: its own argmax
            row(p.name, p.task, {t: a.argmax(axis=1) for t, a in p.tasks().items()}, None)
        else:  # scored like its submission would be: the 18-class answer, decoded per task
            y18 = p18.argmax(axis=1)
            row(p.name, p.task, dict(zip(TASK_ORDER, L.decode(y18))), y18)
    row(name, f"{len(preds)} models", dict(zip(TASK_ORDER, L.decode(combined.labels))), combined.labels)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- submission
@dataclass
class PredictResult:
    """What :func:`predict_submission` returns.

    Attributes:
        submission: ``ImageID, ans`` in info.csv order.
        combined: the :class:`Combined` answer.
        predictions: one :class:`Prediction` per model.
        out_csv: the submission file written.
        probs_csv: the ``ImageID,p0..p17`` file written, or None.
        metrics: :func:`mask_keras.evaluate.evaluate` of the submission, when gt was given.
        table: :func:`compare_table` (ensemble vs each model), when gt was given.
    """

    submission: pd.DataFrame
    combined: Combined
    predictions: list
    out_csv: Path
    probs_csv: Path | None = None
    metrics: dict | None = None
    table: pd.DataFrame | None = None


def open_models(models=(), kfold_dirs=(), roles: dict | None = None) -> list[Artifact]:
    """Open (not yet load) every artifact: plain ``models``, K-fold dirs, ``roles={task: [dirs]}``.

    Args:
        models: run directories (any task).
        kfold_dirs: K-fold run directories (all their folds).
        roles: ``{task: dir or [dirs]}`` (run or K-fold directories) whose task is checked.

    Returns:
        The :class:`~mask_keras.artifact.Artifact` s, in the order models, folds, roles.

    Raises:
        ArtifactError: none given, one given twice, an unknown role, a missing or wrong artifact.
    """
    arts = [load_artifact(m) for m in expand_models(models, kfold_dirs)]
    for task, dirs in (roles or {}).items():
        if task not in L.TASKS:
            raise ArtifactError(f"unknown role {task!r}; roles are tasks: {', '.join(L.TASKS)}")
        for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs):
            d = Path(d)
            is_kfold = not (d / "model.keras").exists() and any(d.glob("fold_*/model.keras"))
            for p in (fold_dirs(d) if is_kfold else [d]):
                arts.append(load_artifact(p, expect_task=task))
    if not arts:
        raise ArtifactError("no models given: pass run directories (--model DIR), K-fold directories "
                            "(--kfold-dir DIR) or per-task models (--mask/--gender/--age DIR)")
    seen = {}
    for a in arts:
        key = a.path.resolve()
        if key in seen:
            raise ArtifactError(f"{a.path}: given twice; each model votes once (use weights to count one more)")
        seen[key] = a
    return arts


def predict_submission(models=(), data_dir="data/default", out_csv="submission.csv", *, kfold_dirs=(),
                       roles: dict | None = None, tta: bool = False, crops=(), vote: str = "soft",
                       level: str = "auto", weights=None, tie: str = "mean_prob", combine: str = "product",
                       batch_size: int = 64, probs_csv=None, gt=None, progress: bool = True) -> PredictResult:
    """Run the models over ``data_dir/eval`` and write ``ImageID,ans`` in info.csv order.

    Nothing is written unless every model ran on every image; errors name the artifact,
    image or info.csv row (see the module docstring).

    Args:
        models: run directories (any task).
        data_dir: the data root; its ``eval/info.csv`` and ``eval/images`` are predicted.
        out_csv: the submission file (``ImageID,ans``).
        kfold_dirs: K-fold run directories (all their folds).
        roles: ``{task: dir or [dirs]}`` whose tasks are checked (e.g. ``{"mask": "runs/mask"}``).
        tta: also the horizontally flipped view.
        crops: extra TTA crop view scales.
        vote: ``"soft"`` or ``"hard"``.
        level: ``"auto"``, ``"task"`` or ``"class"``.
        weights: one per model, in the order models, folds of kfold_dirs, roles.
        tie: the hard-vote tie rule.
        combine: ``"product"`` or ``"argmax"`` (soft votes at the task level).
        batch_size: images per batch.
        probs_csv: also write ``ImageID,p0..p17`` (the soft 18-class combination) here.
        gt: a truth CSV/DataFrame; then ``metrics`` and ``table`` are filled in.
        progress: show the file check's progress bar.

    Returns:
        A :class:`PredictResult`.
    """

    _check_choice("vote", vote, VOTES)
    _check_choice("level", level, LEVELS)
    _check_choice("combine", combine, COMBINES)
    arts = open_models(models, kfold_dirs, roles)
    if weights is not None:
        _model_weights(arts, weights)
    crops = tuple(float(c) for c in crops or ())
    for c in crops:
        if not TTA_CROP_RANGE[0] <= c <= TTA_CROP_RANGE[1]:
            raise ValueError(f"TTA crop scale {c} out of range [{TTA_CROP_RANGE[0]}, {TTA_CROP_RANGE[1]}]")
    table = read_eval(data_dir)  # missing image named in info.csv: LayoutError naming it
    if table.empty:
        raise ArtifactError(f"{Path(data_dir) / 'eval' / 'info.csv'}: lists no images")
    bad = pipeline.check_images(table["path"], "fast", progress=progress)
    if bad:
        raise pipeline.ImageError(bad, total=len(table))
    for a in arts:
        a.model  # noqa: B018  (load and check every model before predicting anything)
    preds = []
    for i, a in enumerate(arts):
        log.info("predicting with %s (%s, %d/%d)%s", a.path, a.task, i + 1, len(arts),
                 " with TTA" if tta or crops else "")
        preds.append(predict_artifact(a, table[["path"]], batch_size=batch_size, tta=tta, crops=crops,
                                      check="none"))
    comb = combine_predictions(preds, vote=vote, level=level, weights=weights, tie=tie, combine=combine)
    sub = pd.DataFrame({"ImageID": table["ImageID"].to_numpy(), "ans": comb.labels.astype(np.int64)})
    metrics = cmp = None
    if gt is not None:
        y_true = _gt_labels(gt, sub["ImageID"])
        metrics = evaluate(gt, sub)
        cmp = compare_table(preds, comb, y_true)
    if probs_csv:
        cols = {f"p{c}": comb.p18[:, c] for c in range(L.NUM_CLASSES)}
        atomic_write_text(probs_csv, pd.DataFrame({"ImageID": sub["ImageID"], **cols}).to_csv(index=False))
    atomic_write_text(out_csv, sub.to_csv(index=False))
    log.info("wrote %s (%d rows) from %d model(s), %s vote at the %s level", out_csv, len(sub), len(arts),
             vote, comb.level)
    return PredictResult(sub, comb, preds, Path(out_csv), Path(probs_csv) if probs_csv else None, metrics, cmp)


def format_table(table: pd.DataFrame) -> str:
    """The comparison table as aligned text (NaN shown as ``-``).

    Args:
        table: a :func:`compare_table` DataFrame.

    Returns:
        The text, floats with 4 decimals, without the index.
    """
    return table.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")
