"""From saved artifacts to probabilities and a submission.

An artifact is a run directory (``model.keras`` + ``config.json``): the config
records the task, image size, crop and normalisation, so inference applies exactly
the deterministic preprocessing the model was validated with.

Combination rules (see :mod:`mask_keras.ensemble`):
- only 18-way models: vote on the 18 classes directly;
- otherwise every model is reduced to per-task probabilities (an 18-way model by
  its marginals, a multi-head model by its heads), each task is voted over the
  models that cover it, and the 18 classes are the product of the task
  probabilities (``mask*6 + gender*3 + age``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import labels as L
from .config import Config, ConfigError, atomic_write_text

log = logging.getLogger(__name__)
TASK_ORDER = ("mask", "gender", "age")


class ArtifactError(ValueError):
    """An artifact is missing, broken, or not for the task it is used for."""


@dataclass
class Artifact:
    path: Path
    config: Config
    _model: object = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.config.train.task

    @property
    def model(self):
        if self._model is None:
            import keras

            import mask_keras.losses  # noqa: F401  (registers custom objects)
            import mask_keras.metrics  # noqa: F401
            import mask_keras.models  # noqa: F401

            try:
                self._model = keras.saving.load_model(self.path / "model.keras")
            except Exception as e:
                raise ArtifactError(f"{self.path / 'model.keras'}: cannot load ({type(e).__name__}: {e})") from e
        return self._model


def load_artifact(path, expect_task: str | None = None) -> Artifact:
    """Open a run directory (or its ``model.keras``); check it exists and has the expected task."""
    p = Path(path)
    if p.suffix == ".keras":
        p = p.parent
    if not (p / "model.keras").is_file():
        raise ArtifactError(f"{p}: no model.keras here; pass a run directory written by `mask-keras train`")
    if not (p / "config.json").is_file():
        raise ArtifactError(f"{p}: no config.json beside model.keras; the artifact cannot be used without "
                            f"its preprocessing config")
    art = Artifact(p, Config.load(p / "config.json"))
    if expect_task is not None and art.task != expect_task:
        raise ArtifactError(f"{p}: is a {art.task!r} model, but was given as the {expect_task!r} model")
    return art


def predict_probs(art: Artifact, paths, batch_size: int = 64, tta: bool = False):
    """Probabilities of one artifact over image files: (N, C), or a dict of heads (multihead)."""
    from . import pipeline

    def run(flip: bool):
        ds, n = pipeline.make_predict_dataset(list(paths), art.config.preprocess, batch_size, flip=flip)
        out = art.model.predict(ds, verbose=0)
        if isinstance(out, dict):
            return {k: np.asarray(v, dtype=np.float32)[:n] for k, v in out.items()}
        if isinstance(out, (list, tuple)):
            return dict(zip(TASK_ORDER, (np.asarray(v, dtype=np.float32)[:n] for v in out)))
        return np.asarray(out, dtype=np.float32)[:n]

    views = [run(False)] + ([run(True)] if tta else [])
    from .ensemble import tta_mean

    if isinstance(views[0], dict):
        return {k: tta_mean([v[k] for v in views]) for k in views[0]}
    return tta_mean(views)


def per_task_probs(arts, probs) -> dict[str, list]:
    """Group each artifact's output into ``{"mask": [...], "gender": [...], "age": [...], "multi": [...]}``."""
    out: dict[str, list] = {"mask": [], "gender": [], "age": [], "multi": []}
    for art, p in zip(arts, probs):
        if art.task == "multihead":
            for k in TASK_ORDER:
                out[k].append(p[k])
        else:
            out[art.task].append(p)
    return out


def combine(groups: dict[str, list], vote: str = "soft", weights: dict | None = None) -> np.ndarray:
    """18-class answer from grouped probabilities; returns (N,) labels. See module docstring."""
    from .ensemble import combine_tasks, hard_vote, soft_vote, split_multi

    if vote not in ("soft", "hard"):
        raise ValueError(f"vote must be 'soft' or 'hard', got {vote!r}")
    weights = weights or {}
    if groups["multi"] and not any(groups[t] for t in TASK_ORDER):
        g = groups["multi"]
        return (soft_vote(g, weights.get("multi")).argmax(1) if vote == "soft"
                else hard_vote(g, weights.get("multi")))
    task_lists = {t: list(groups[t]) for t in TASK_ORDER}
    for p18 in groups["multi"]:
        for t, m in zip(TASK_ORDER, split_multi(p18)):
            task_lists[t].append(m)
    missing = [t for t in TASK_ORDER if not task_lists[t]]
    if missing:
        raise ArtifactError(f"no model covers task(s) {missing}: give a model for each of mask, gender, age, "
                            f"or a multi / multihead model")
    if vote == "soft":
        parts = [soft_vote(task_lists[t], weights.get(t)) for t in TASK_ORDER]
        return combine_tasks(*parts).argmax(1)
    m, g, a = (hard_vote(task_lists[t], weights.get(t)) for t in TASK_ORDER)
    return L.encode(m, g, a)


def predict_submission(models, data_dir, out_csv, *, tta: bool = False, vote: str = "soft",
                       batch_size: int = 64, probs_csv=None, roles: dict | None = None) -> pd.DataFrame:
    """Run ``models`` over ``data_dir/eval`` and write ``ImageID,ans`` in info.csv order.

    ``models``: run directories (any task). ``roles``: optional ``{task: [dirs]}`` whose
    tasks are checked. Nothing is written unless every model ran on every image.
    """
    from .data.layout import read_eval

    arts = [load_artifact(m) for m in models]
    for task, dirs in (roles or {}).items():
        arts += [load_artifact(d, expect_task=task) for d in dirs]
    if not arts:
        raise ArtifactError("no models given")
    table = read_eval(data_dir)  # raises on a missing image named in info.csv
    from .pipeline import check_images

    check_images(table["path"])  # a file that fails to decode: clear error, nothing written
    probs = [predict_probs(a, table["path"], batch_size=batch_size, tta=tta) for a in arts]
    ans = combine(per_task_probs(arts, probs), vote=vote)
    sub = pd.DataFrame({"ImageID": table["ImageID"], "ans": np.asarray(ans, dtype=np.int64)})
    if probs_csv:
        cols = {}
        for a, p in zip(arts, probs):
            parts = p.items() if isinstance(p, dict) else [(a.task, p)]
            for name, arr in parts:
                for c in range(arr.shape[1]):
                    cols[f"{a.path.name}:{name}:{c}"] = arr[:, c]
        atomic_write_text(probs_csv, pd.DataFrame({"ImageID": table["ImageID"], **cols}).to_csv(index=False))
    atomic_write_text(out_csv, sub.to_csv(index=False))
    log.info("wrote %s (%d rows) from %d model(s)", out_csv, len(sub), len(arts))
    return sub
