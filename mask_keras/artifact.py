"""A trained artifact: a run directory opened and checked, and the TTA views it is predicted on.

An artifact is a run directory (``model.keras`` + ``config.json``): the config records the
task, image size and crop, so inference re-applies the preprocessing the model was validated
with. :func:`load_artifact` checks it before any work (exists, has its config, is for the
expected task; the model's outputs are checked when it is loaded); :func:`predict_views`
runs any model callable (the Keras model, an exported SavedModel) over the original, flipped
and crop views of a table of images and averages them. :mod:`mask_keras.predict` and
:mod:`mask_keras.exported` both use it.

Example:
    >>> art = load_artifact("runs/mask", expect_task="mask")            # doctest: +SKIP
    >>> probs = predict_views(lambda ds: art.model.predict(ds, verbose=0),
    ...                       ["a.jpg"], art.config.preprocess, tta=True)  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from PIL import Image

from . import labels as L
from . import pipeline
from .config import TTA_CROP_RANGE, Config, ConfigError
from .ensemble import tta_mean

TASK_ORDER = L.HEADS


class ArtifactError(ValueError):
    """An artifact is missing, broken, or not for the task it is used for."""


@dataclass
class Artifact:
    """An opened run directory (from :func:`load_artifact`); the model loads on first use
    (properties ``task``, ``name``, ``model``).

    Attributes:
        path: the run directory.
        config: its :class:`mask_keras.config.Config` (from ``config.json``).
    """

    path: Path
    config: Config
    _model: object = field(default=None, repr=False)

    @property
    def task(self) -> str:
        """The task the model was trained for (``config.train.task``)."""
        return self.config.train.task

    @property
    def name(self) -> str:
        """A short readable name: ``parent/dir`` for fold artifacts, else ``dir``."""
        if re.fullmatch(r"fold_\d+", self.path.name):
            return f"{self.path.parent.name}/{self.path.name}"
        return self.path.name

    @property
    def model(self):
        """The ``keras.Model`` of ``model.keras``: loaded on first use, checked against the task,
        then kept. Raises :class:`ArtifactError` when it cannot be loaded or does not match."""
        if self._model is None:
            try:
                model = keras.saving.load_model(self.path / "model.keras")
            except Exception as e:
                raise ArtifactError(f"{self.path / 'model.keras'}: cannot load ({type(e).__name__}: {e})") from e
            _check_outputs(model, self.task, self.path)
            self._model = model
        return self._model


def _check_outputs(model, task: str, path: Path) -> None:
    """The loaded model's outputs must match the task its config.json records."""
    shape = model.output_shape
    if task == "multihead":
        names = set(getattr(model, "output_names", None) or [])
        ok = isinstance(shape, (list, tuple)) and len(shape) == 3 and names == set(TASK_ORDER)
        want = "three heads mask(3), gender(2), age(3)"
    else:
        k = L.TASK_CLASSES[task]
        ok = isinstance(shape, tuple) and len(shape) == 2 and shape[-1] == k
        want = f"one output of {k} classes"
    if not ok:
        raise ArtifactError(f"{path}: config.json says task {task!r} ({want}) but model.keras outputs "
                            f"{shape}; the two files do not belong together")


def load_artifact(path, expect_task: str | None = None) -> Artifact:
    """Open a run directory (or its ``model.keras``); check it exists and has the expected task.

    The model itself is loaded lazily (``artifact.model``), so opening every artifact first
    is cheap and catches a missing or wrong one before any work.

    Args:
        path: a run directory written by ``mask-keras train``, or its ``model.keras``.
        expect_task: the task the artifact must be for; None: any task.

    Returns:
        The :class:`Artifact` (model not loaded yet).

    Raises:
        ArtifactError: the directory, ``model.keras`` or ``config.json`` is missing, the config
            is broken or has an unknown task, or the task is not ``expect_task``.
    """
    p = Path(path)
    if p.suffix == ".keras":
        p = p.parent
    if not p.exists():
        raise ArtifactError(f"{p}: artifact not found; pass a run directory written by `mask-keras train`")
    if not (p / "model.keras").is_file():
        hint = ""
        if any(p.glob("fold_*/model.keras")):
            hint = " (it holds K-fold models: pass it as --kfold-dir / kfold_dirs=)"
        raise ArtifactError(f"{p}: no model.keras here{hint}; pass a run directory written by `mask-keras train`")
    if not (p / "config.json").is_file():
        raise ArtifactError(f"{p}: no config.json beside model.keras; the artifact cannot be used without "
                            f"its preprocessing config")
    try:
        cfg = Config.load(p / "config.json")
    except ConfigError as e:
        raise ArtifactError(f"{p}: broken config.json ({e})") from e
    art = Artifact(p, cfg)
    if art.task not in L.TASKS:
        raise ArtifactError(f"{p}: config.json has unknown task {art.task!r}")
    if expect_task is not None and art.task != expect_task:
        raise ArtifactError(f"{p}: is a {art.task!r} model, but was given as the {expect_task!r} model")
    return art


def fold_dirs(kfold_dir) -> list[Path]:
    """The fold artifacts ``fold_0, fold_1, ...`` of a K-fold run directory, in fold order.

    Args:
        kfold_dir: the ``train.out_dir`` of a ``mask-keras train --folds K`` run.

    Returns:
        The ``fold_<k>`` folders (``Path``), sorted by ``k`` (numerically: fold_10 after fold_9).

    Raises:
        ArtifactError: ``kfold_dir`` is not a folder or holds no ``fold_*`` folder.
    """
    d = Path(kfold_dir)
    if not d.is_dir():
        raise ArtifactError(f"{d}: K-fold directory not found")
    dirs = [p for p in d.iterdir() if p.is_dir() and re.fullmatch(r"fold_\d+", p.name)]
    if not dirs:
        raise ArtifactError(f"{d}: no fold_* directories; pass the out_dir of `mask-keras train --folds K`")
    return sorted(dirs, key=lambda p: int(p.name.split("_")[1]))


def expand_models(models=(), kfold_dirs=()) -> list[Path]:
    """Run directories from explicit ``models`` and every fold of each of ``kfold_dirs``.

    Args:
        models: run directories (str or ``Path``), kept in order and not checked here.
        kfold_dirs: K-fold run directories, each expanded with :func:`fold_dirs`.

    Returns:
        A list of ``Path``: ``models`` first, then the folds of each K-fold directory.

    Example:
        >>> [p.as_posix() for p in expand_models(["runs/mask", "runs/age"])]
        ['runs/mask', 'runs/age']
    """
    out = [Path(m) for m in models]
    for k in kfold_dirs:
        out.extend(fold_dirs(k))
    return out


def _image_sizes(paths) -> set:
    sizes = set()
    for p in paths:
        with Image.open(p) as im:
            sizes.add((im.size[1], im.size[0]))  # (h, w)
    return sizes


def crop_view(table: pd.DataFrame, preprocess_cfg, scale: float):
    """``(table, preprocess config)`` of the crop view ``scale`` (see the module docstring).

    The view is the model's crop region scaled around its centre: with ``crop="face"`` each
    row's face box (its ``crop_*`` columns, computed when missing); otherwise a centre crop of
    ``scale`` times the image (``crop="none"``) or the centre crop (``crop="center"``), at
    least 8 pixels a side, which needs every image to have one size.

    Args:
        table: the images, with ``path`` (and ``crop_*`` for a face crop).
        preprocess_cfg: the run's ``PreprocessConfig``.
        scale: the region's scale, within :data:`mask_keras.config.TTA_CROP_RANGE`.

    Returns:
        ``(table, preprocess_cfg)`` to predict the view with: for a face crop a copy of the
        table with the scaled boxes and ``preprocess_cfg`` unchanged, else ``table`` and a copy
        of ``preprocess_cfg`` with ``crop="center"`` and the scaled ``crop_size``.

    Raises:
        ValueError: ``scale`` out of range, or images of several sizes without a face crop.
    """

    scale = float(scale)
    lo, hi = TTA_CROP_RANGE
    if not lo <= scale <= hi:
        raise ValueError(f"TTA crop scale {scale} out of range [{lo}, {hi}]")
    p = preprocess_cfg
    if p.crop == "face":
        t = pipeline.ensure_crop_boxes(table.copy(), p)
        y0, x0, y1, x1 = (t[c].to_numpy(np.float64) for c in pipeline.CROP_COLUMNS)
        cy, cx, hh, hw = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) * scale / 2, (x1 - x0) * scale / 2
        for c, v in zip(pipeline.CROP_COLUMNS, (cy - hh, cx - hw, cy + hh, cx + hw)):
            t[c] = np.round(v).astype(np.int64)  # the pipeline clips boxes to the image
        return t, p
    sizes = _image_sizes(table["path"])
    if len(sizes) != 1:
        raise ValueError(f"TTA crop views need images of one size (crop={p.crop!r}); found sizes {sorted(sizes)}")
    (h, w), = sizes
    if p.crop == "center":
        h, w = min(h, int(p.crop_size[0])), min(w, int(p.crop_size[1]))
    size = (max(8, int(round(h * scale))), max(8, int(round(w * scale))))
    return table, dataclasses.replace(p, crop="center", crop_size=size)


def model_outputs(out):
    """A model's outputs as float32 numpy: an array (N, C), or a dict of heads (a list of heads
    is taken in :data:`mask_keras.labels.HEADS` order, as Keras returns a multi-head model's).

    Args:
        out: an array-like (N, C), a dict of heads, or a list/tuple of heads (mask, gender, age).

    Returns:
        A float32 ``np.ndarray``, or a dict ``{head: float32 np.ndarray}``.

    Example:
        >>> out = model_outputs([np.zeros((1, 3)), np.zeros((1, 2)), np.zeros((1, 3))])
        >>> {k: (v.dtype.name, v.shape) for k, v in out.items()}
        {'mask': ('float32', (1, 3)), 'gender': ('float32', (1, 2)), 'age': ('float32', (1, 3))}
    """
    if isinstance(out, (list, tuple)):
        out = dict(zip(TASK_ORDER, out))
    if isinstance(out, dict):
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
    return np.asarray(out, dtype=np.float32)


def predict_views(run, paths, preprocess_cfg, batch_size: int = 64, tta: bool = False, crops=(),
                  check: str = "fast", progress: bool = False):
    """Average a model's outputs over the views of the images: original, flipped, crops.

    Args:
        run: ``run(dataset) -> outputs`` for a :func:`mask_keras.pipeline.make_predict_dataset`
            dataset: an array (N, C), a dict of heads, or a list of heads in
            :data:`mask_keras.labels.HEADS` order (e.g. ``model.predict``).
        paths: image files, or a table with ``path`` (and crop boxes for a face crop).
        preprocess_cfg: the run's preprocessing.
        batch_size: images per batch.
        tta: also the horizontally flipped view of each view.
        crops: crop views at these scales (:func:`crop_view`).
        check: how the files are checked before the first view: ``"fast"``, ``"full"`` or
            ``"none"`` (:func:`mask_keras.pipeline.files.check_images`).
        progress: show a progress bar.

    Returns:
        float32 (N, C), or a dict of heads.
    """
    table = paths.copy() if isinstance(paths, pd.DataFrame) else pd.DataFrame({"path": [str(p) for p in paths]})
    views = [(table, preprocess_cfg)] + [crop_view(table, preprocess_cfg, s) for s in crops]
    outs = []
    for i, (vt, vcfg) in enumerate(views):
        for flip in ((False, True) if tta else (False,)):
            ds, n = pipeline.make_predict_dataset(vt, vcfg, batch_size, flip=flip,
                                                  check=check if i == 0 and not flip else "none",
                                                  progress=progress)
            out = model_outputs(run(ds))
            outs.append({k: v[:n] for k, v in out.items()} if isinstance(out, dict) else out[:n])
    if isinstance(outs[0], dict):
        return {k: tta_mean([o[k] for o in outs]).astype(np.float32) for k in TASK_ORDER if k in outs[0]}
    return tta_mean(outs).astype(np.float32)
