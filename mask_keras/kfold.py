"""K-fold training: K models on person-level stratified folds, out-of-fold predictions.

``train_kfold(cfg)`` trains fold ``k`` into ``<out_dir>/fold_<k>`` (each a complete
artifact: its best epoch by validation macro F1), gathers every fold's validation
predictions into ``oof_predictions.csv`` (every training image predicted exactly once,
by the model that did not see its person; columns ``path, profile, y_true, y_pred,
p0.., fold``) and reports the out-of-fold macro F1 in ``kfold_summary.json``::

    runs/x/config.json            the K-fold config (data.folds = K)
    runs/x/fold_0 ... fold_<K-1>  one artifact per fold
    runs/x/oof_predictions.csv    out-of-fold predictions (validation targets use age 60)
    runs/x/kfold_summary.json     per-fold and OOF macro F1 / accuracy (+ per-task F1 for 18 classes)

The fold artifacts feed :mod:`mask_keras.inference` for hard or soft voting
(``mask-keras predict --kfold-dir runs/x`` or ``predict_submission(kfold_dirs=["runs/x"])``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, ConfigError
from .evaluate import task_scores
from .files import atomic_write_text
from .groups import bootstrap_ci, group_scores
from .inference.artifacts import write_manifest
from . import train as training  # called as training.train: tests replace it
from .jax_backend import distribute  # called as distribute.from_chief: tests replace it
from .resume import RUN_ONLY, finished_marker

log = logging.getLogger(__name__)


@dataclass
class KFoldResult:
    """What :func:`train_kfold` returns.

    Attributes:
        out_dir: the K-fold run's folder (``train.out_dir``).
        fold_dirs: the trained (or kept) folds' artifact folders, ``out_dir / "fold_<k>"``.
        oof: the out-of-fold predictions (the folds' ``val_predictions.csv`` with a ``fold``
            column), as written to ``oof_predictions.csv``.
        summary: the dict written to ``kfold_summary.json`` (see :func:`train_kfold`).
    """

    out_dir: Path
    fold_dirs: list
    oof: pd.DataFrame
    summary: dict


def _done(fold_dir: Path, fcfg: Config) -> bool:
    """A finished fold with exactly this config (``resume=True`` skips it)."""
    need = ("model.keras", "metrics.json", "val_predictions.csv", "split.csv", "config.json")
    if not all((fold_dir / n).is_file() for n in need):
        return False

    if (fold_dir / "backup").is_dir() and not finished_marker(fold_dir).is_file():
        return False  # interrupted after an earlier run had finished: train (or resume) it
    try:
        saved, now = Config.load(fold_dir), fcfg
    except ConfigError:
        return False
    # how the fold is run (and how a recipe combines it), not what it is
    now_run = {k: getattr(getattr(now, k.split(".")[0]), k.split(".")[1]) for k in RUN_ONLY}
    return saved.override(**now_run).to_dict() == now.to_dict()


def check_oof(oof: pd.DataFrame) -> None:
    """No image predicted twice; no person validated by two folds (the split did not leak).

    Args:
        oof: the folds' validation predictions with ``path``, ``profile`` and ``fold`` columns.

    Raises:
        RuntimeError: an image appears twice, or a person (``profile``) in two folds.

    Example:
        >>> oof = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "profile": ["p1", "p1", "p2"],
        ...                     "fold": [0, 1, 1]})
        >>> check_oof(oof)
        Traceback (most recent call last):
        ...
        RuntimeError: person p1 is in the validation folds [0, 1]: the split leaked (1 people in all)
    """
    dup = oof["path"][oof["path"].duplicated()]
    if len(dup):
        raise RuntimeError(f"{len(dup)} image(s) predicted by two folds, e.g. {dup.iloc[0]}: the split leaked")
    folds = oof.groupby(oof["profile"].astype(str))["fold"].unique()
    leaked = folds[folds.map(len) > 1]
    if len(leaked):
        raise RuntimeError(f"person {leaked.index[0]} is in the validation folds {sorted(int(f) for f in leaked.iloc[0])}: "
                           f"the split leaked ({len(leaked)} people in all)")


def oof_summary(oof: pd.DataFrame, task: str) -> dict:
    """OOF macro F1 / accuracy (sklearn on ``y_true``/``y_pred``), per-task F1 for 18 classes.

    Args:
        oof: out-of-fold predictions with integer class columns ``y_true`` and ``y_pred``.
        task: the task (``mask``, ``gender``, ``age``, ``multi`` or ``multihead``).

    Returns:
        A dict ``{"oof_macro_f1", "oof_accuracy", "oof_images"}`` (floats; the row count), plus
        ``oof_f1_mask``, ``oof_f1_gender``, ``oof_f1_age`` for ``multi`` / ``multihead``.

    Example:
        >>> oof = pd.DataFrame({"y_true": [0, 0, 1, 1], "y_pred": [0, 1, 1, 1]})
        >>> oof_summary(oof, "gender")  # doctest: +ELLIPSIS
        {'oof_macro_f1': 0.733..., 'oof_accuracy': 0.75, 'oof_images': 4}
    """

    yt, yp = oof["y_true"].to_numpy(np.int64), oof["y_pred"].to_numpy(np.int64)
    s = task_scores(yt, yp, task)
    s.pop("per_class_f1")
    out = {"oof_macro_f1": s.pop("macro_f1"), "oof_accuracy": s.pop("accuracy"), "oof_images": int(len(oof)),
           **{f"oof_{k}": v for k, v in s.items()}}
    if "profile" in oof.columns:  # people known: they are resampled, each with all their photos
        out["oof_ci"] = bootstrap_ci(yt, yp, task, units=oof["profile"])
    if task in ("multi", "multihead"):  # the labels say each image's gender and age group
        out.update({f"oof_{k}": v for k, v in group_scores(yt, yp, task).items()})
    return out


def train_kfold(cfg: Config, folds: list[int] | None = None, resume: bool = False) -> KFoldResult:
    """Train every fold (or the listed ones) of ``cfg.data.folds`` and report the OOF macro F1.

    ``resume=True`` keeps a fold already finished with the same config instead of
    training it again, and continues an interrupted fold from its newest backup
    (:mod:`mask_keras.resume`): an interrupted long run picks up where it stopped.

    Args:
        cfg: the run's config; ``data.folds`` (K >= 2) sets the folds, ``train.out_dir`` the
            run's folder (each fold trains with ``data.fold`` and ``train.out_dir`` set).
        folds: the fold ids (0..K-1) to train; None: all K.
        resume: keep finished folds with the same config, continue interrupted ones.

    Returns:
        A :class:`KFoldResult`. Its ``summary`` holds ``task``, ``folds``, ``k``, ``fold_dirs``,
        ``fold_macro_f1`` (per fold), ``mean_fold_macro_f1``, the :func:`oof_summary` keys and,
        when only some folds ran, a ``note``.

    Raises:
        ConfigError: ``data.folds`` < 2, a fold id outside 0..K-1, or an invalid config.
        RuntimeError: the folds' validation sets overlap (:func:`check_oof`).
    """

    k = cfg.data.folds
    if not k or k < 2:
        raise ConfigError(f"data.folds must be >= 2 for K-fold training, got {k}")
    cfg.validate()
    fold_ids = list(range(k)) if folds is None else sorted({int(f) for f in folds})
    bad = [f for f in fold_ids if not 0 <= f < k]
    if bad:
        raise ConfigError(f"folds {bad} not in 0..{k - 1}")

    distribute.join_job(cfg.train.devices)  # multi-host: know who is process 0 before writing anything
    out = Path(cfg.train.out_dir)
    chief = distribute.is_chief()
    if chief:  # multi-host: every process trains every fold, only process 0 writes
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
    dirs, per_fold, oofs = [], [], []
    for f in fold_ids:
        fdir = out / f"fold_{f}"
        # resume: a finished fold is kept; an interrupted one continues from its backup
        fcfg = cfg.override(**{"data.fold": f, "train.out_dir": str(fdir), "train.resume": bool(resume)})
        # multi-host: the chief decides, so that every process trains the same folds
        if resume and distribute.from_chief(float(_done(fdir, fcfg))) > 0.5:
            log.info("fold %d/%d: already trained with this config, kept (%s)", f + 1, k, fdir)
            if not (fdir / "val_predictions.csv").is_file():
                raise FileNotFoundError(f"{fdir}: process 0 kept this finished fold, but this process cannot see its "
                                        f"files; in a multi-host job resume needs train.out_dir on shared storage")
            metrics = json.loads((fdir / "metrics.json").read_text())
            preds = pd.read_csv(fdir / "val_predictions.csv", dtype={"profile": str})
        else:
            log.info("fold %d/%d", f + 1, k)
            r = training.train(fcfg)
            metrics, preds = r.metrics, r.predictions
        dirs.append(fdir)
        per_fold.append(float(metrics["macro_f1"]))
        oofs.append(preds.assign(fold=f))
    oof = pd.concat(oofs, ignore_index=True)
    check_oof(oof)
    if chief:
        atomic_write_text(out / "oof_predictions.csv", oof.to_csv(index=False))
    summary = {"task": cfg.train.task, "folds": fold_ids, "k": k, "fold_dirs": [str(d) for d in dirs],
               "fold_macro_f1": per_fold, "mean_fold_macro_f1": float(np.mean(per_fold)),
               **oof_summary(oof, cfg.train.task)}
    if len(fold_ids) < k:
        summary["note"] = f"only folds {fold_ids} of {k} trained: the OOF set covers their validation people only"
    if chief:
        atomic_write_text(out / "kfold_summary.json", json.dumps(summary, indent=2) + "\n")
        write_manifest(out, "kfold", task=cfg.train.task, members=dirs)
    log.info("K-fold OOF macro F1 %.4f (folds: %s)", summary["oof_macro_f1"], per_fold)
    return KFoldResult(out, dirs, oof, summary)
