"""The competition's eval/ set: every model over ``eval/images``, a submission, and the scores.

Typical use::

    from mask_keras.inference.submission import predict_submission
    res = predict_submission(["runs/mask", "runs/gender", "runs/age"], "data/default",
                             "submission.csv", tta=True, gt="data/default/eval/gt.csv")
    res.metrics["macro_f1"]; print(res.table.to_string())   # ensemble vs each model

The images go through the inference engine (:class:`mask_keras.inference.engine.Engine`), as
every other caller's do; face-crop models take the data set's cached detections
(``face_boxes.parquet``, :func:`mask_keras.detect.face_crop_boxes`), as in training. The
models are combined by :func:`mask_keras.inference.combine.combine_predictions` (vote, level,
weights, tie, combine), which must give the 18 classes here: mask, gender and age covered.

Safety: every artifact is opened and checked (exists, has its config, is for the expected
task, has outputs of the right shape), info.csv is matched to the images and every image file
is checked *before* any prediction; the submission is written atomically at the very end, so
a failure never leaves a partial or stale-looking file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from .. import evaluate as E
from .. import labels as L
from .. import pipeline
from ..data.layout import read_eval
from ..detect import face_crop_boxes
from ..evaluate import evaluate
from ..files import atomic_write_text
from .artifacts import Artifact, ArtifactError, expand_models, fold_dirs, kind_of_files, load_artifact
from .combine import Combined, CombineError, Prediction, combine_predictions
from .engine import Engine, Member
from .images import ImageInput

log = logging.getLogger(__name__)
TASK_ORDER = L.HEADS


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
        The :class:`~mask_keras.inference.artifacts.Artifact` s, in the order models, folds, roles.

    Raises:
        ArtifactError: none given, one given twice, an unknown role, a missing or wrong artifact.
    """
    arts = [load_artifact(m) for m in expand_models(models, kfold_dirs)]
    for task, dirs in (roles or {}).items():
        if task not in L.TASKS:
            raise ArtifactError(f"unknown role {task!r}; roles are tasks: {', '.join(L.TASKS)}")
        for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs):
            d = Path(d)
            for p in (fold_dirs(d) if kind_of_files(d) == "kfold" else [d]):
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

    arts = open_models(models, kfold_dirs, roles)
    table = read_eval(data_dir)  # missing image named in info.csv: LayoutError naming it
    if table.empty:
        raise ArtifactError(f"{Path(data_dir) / 'eval' / 'info.csv'}: lists no images")
    bad = pipeline.check_images(table["path"], "fast", progress=progress)
    if bad:
        raise pipeline.ImageError(bad, total=len(table))
    members = [Member.from_artifact(a, batch_size) for a in arts]  # every model loaded and checked before predicting anything
    engine = Engine(members, vote=vote, level=level, weights=weights, tie=tie, combine=combine, tta=tta,
                    crops=crops)  # the settings checked against the models' tasks here
    if len(engine.tasks) < 3:
        engine.close()
        raise CombineError(f"a submission needs the 18 classes: give models for mask, gender and age (or a multi "
                           f"/ multihead model); these cover only {', '.join(engine.tasks)} "
                           f"({', '.join(f'{a.name}: {a.task}' for a in arts)})")
    crop_boxes = [face_crop_boxes(table[["path"]], a.config.preprocess)[list(pipeline.CROP_COLUMNS)].to_numpy()
                  if a.config.preprocess.crop == "face" else None for a in arts]
    if all(b is None for b in crop_boxes):
        crop_boxes = None
    log.info("predicting %d image(s) with %d model(s)%s", len(table), len(arts), " with TTA" if tta or crops else "")
    chunks, step = [], max(1, int(batch_size))
    try:
        for s in tqdm(range(0, len(table), step), desc="predict eval/", unit="batch", disable=not progress):
            part = table["path"].iloc[s:s + step].tolist()
            boxes = None if crop_boxes is None else [None if b is None else b[s:s + step] for b in crop_boxes]
            prep = engine.prepare([ImageInput.from_bytes(f, Path(f).read_bytes()) for f in part], "raise", boxes)
            chunks.append(engine.predictions([prep]))
    finally:
        engine.close()
    preds = [Prediction(a, {t: np.concatenate([c[k].probs[t] for c in chunks]) for t in chunks[0][k].probs})
             for k, a in enumerate(arts)]
    comb = combine_predictions(preds, vote=vote, level=level, weights=weights, tie=tie, combine=combine)
    sub = pd.DataFrame({"ImageID": table["ImageID"].to_numpy(), "ans": comb.labels.astype(np.int64)})
    metrics = cmp = None
    if gt is not None:
        y_true = _gt_labels(gt, sub["ImageID"])
        metrics = evaluate(gt, sub)
        cmp = compare_table(preds, comb, y_true)
    if probs_csv:  # the soft combination, for a hard vote too (its p18 are vote shares)
        soft = comb if vote == "soft" else combine_predictions(preds, level=comb.level, weights=weights)
        cols = {f"p{c}": soft.p18[:, c] for c in range(L.NUM_CLASSES)}
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
