"""K-fold training: K models on person-level stratified folds, out-of-fold predictions.

``train_kfold(cfg)`` trains fold ``k`` into ``<out_dir>/fold_<k>`` (each a complete
artifact), gathers every fold's validation predictions into ``oof_predictions.csv``
(every training image predicted exactly once, by the model that did not see its
person) and reports the out-of-fold macro F1 in ``kfold_summary.json``. The fold
artifacts feed :mod:`mask_keras.predict` for hard or soft voting.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, ConfigError, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class KFoldResult:
    out_dir: Path
    fold_dirs: list
    oof: pd.DataFrame
    summary: dict


def train_kfold(cfg: Config, folds: list[int] | None = None) -> KFoldResult:
    """Train every fold (or the listed ones) of ``cfg.data.folds`` and report the OOF macro F1."""
    from sklearn.metrics import accuracy_score, f1_score

    from .train import train

    k = cfg.data.folds
    if not k or k < 2:
        raise ConfigError(f"data.folds must be >= 2 for K-fold training, got {k}")
    cfg.validate()
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    fold_ids = list(range(k)) if folds is None else list(folds)
    dirs, per_fold, oofs = [], [], []
    for f in fold_ids:
        log.info("fold %d/%d", f + 1, k)
        fcfg = cfg.override(**{"data.fold": f, "train.out_dir": str(out / f"fold_{f}")})
        res = train(fcfg)
        dirs.append(res.out_dir)
        per_fold.append(res.metrics["macro_f1"])
        oofs.append(pd.read_csv(res.out_dir / "val_predictions.csv").assign(fold=f))
    oof = pd.concat(oofs, ignore_index=True)
    if oof["path"].duplicated().any():
        raise RuntimeError("an image was predicted by two folds: the split leaked")
    atomic_write_text(out / "oof_predictions.csv", oof.to_csv(index=False))
    summary = {"task": cfg.train.task, "folds": fold_ids, "fold_dirs": [str(d) for d in dirs],
               "fold_macro_f1": per_fold, "mean_fold_macro_f1": float(np.mean(per_fold)),
               "oof_macro_f1": float(f1_score(oof["y_true"], oof["y_pred"], average="macro")),
               "oof_accuracy": float(accuracy_score(oof["y_true"], oof["y_pred"])), "oof_images": len(oof)}
    atomic_write_text(out / "kfold_summary.json", json.dumps(summary, indent=2) + "\n")
    log.info("K-fold OOF macro F1 %.4f (folds: %s)", summary["oof_macro_f1"], per_fold)
    return KFoldResult(out, dirs, oof, summary)
