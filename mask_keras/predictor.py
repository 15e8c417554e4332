"""Predict any images with trained artifacts: files, folders or pixel arrays.

An artifact is what training and the recipes write: a run directory (``model.keras`` +
``config.json``), a K-fold directory (``fold_0``, ``fold_1``, ... all of which vote) or an
ensemble directory (a recipe's ``ensemble.json``: its models, vote, level and TTA). Each
model re-applies its own run's crop and resize (``config.json``), exactly as in validation
(:func:`mask_keras.pipeline.make_predict_dataset`); the answers are combined as
``mask-keras predict`` combines them (:func:`mask_keras.predict.combine_predictions`).

The answer covers the tasks the models cover: one gender model answers gender only; the
18-class ``class`` is filled in when mask, gender and age are all covered (per-task models,
18-way or multi-head ones).

A model trained with ``crop="face"`` gets its face crop from the face detector
(:class:`mask_keras.detect.Detector`, started on the first such image and kept for the
Predictor's life: :meth:`Predictor.close`), with the run's margins and centre fallback
(:func:`mask_keras.detect.detected_crop_boxes`).

Example:
    >>> p = Predictor.load("runs/efficientnet_gender")            # doctest: +SKIP
    >>> p.predict_files(["photos/"]).head()                       # doctest: +SKIP
                     path  class  mask  gender  age  gender_prob  p_gender_male  p_gender_female  error
    0  photos/a.jpg   <NA>  None  female  None        0.93            0.07             0.93
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import labels as L
from . import pipeline
from .data.layout import CROP_COLUMNS
from .detect import Detector, detected_crop_boxes
from .detect.geometry import center_crop_boxes
from .files import atomic_write_text
from .predict import (
    ArtifactError,
    combine_predictions,
    fold_dirs,
    load_artifact,
    predict_artifact,
)

log = logging.getLogger(__name__)

#: the suffixes a folder is searched for (case-insensitive); files given by name may be any image
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
TASK_ORDER = L.HEADS


def find_images(paths, recursive: bool = True) -> list[str]:
    """Files given by name, and the image files (:data:`IMAGE_SUFFIXES`) under folders, sorted.

    Args:
        paths: files (any image, kept as given) and folders (searched for
            :data:`IMAGE_SUFFIXES`, case-insensitive; AppleDouble ``._*`` files skipped).
        recursive: search folders' subfolders too.

    Returns:
        The files as strings, in the order of ``paths``, each folder's images sorted by path;
        a file reached twice (named and inside a named folder, or named twice) once, where it
        came first, with a logged warning counting them.

    Raises:
        FileNotFoundError: a path that does not exist, or a folder without any image.
    """
    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(str(f) for f in (p.rglob("*") if recursive else p.iterdir())
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("._"))
            if not found:
                raise FileNotFoundError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder"
                                        + ("" if recursive else " (not searched recursively)"))
            out.extend(found)
        elif p.is_file():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    unique, seen = [], set()
    for f in out:  # the same file by another spelling (dir/../a.jpg) counts as the same
        key = Path(f).resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if len(unique) < len(out):
        log.warning("%d file(s) given more than once (a file and its folder, or twice): each answered once",
                    len(out) - len(unique))
    return unique


def _is_kfold(d: Path) -> bool:
    return not (d / "model.keras").exists() and any(d.glob("fold_*/model.keras"))


@dataclass
class Predictor:
    """Trained artifacts and how their answers are combined.

    Args:
        artifacts: opened :class:`mask_keras.predict.Artifact` s (see :meth:`load`).
        vote: ``"soft"`` or ``"hard"`` (see :mod:`mask_keras.predict`).
        level: ``"auto"``, ``"task"`` or ``"class"``.
        tta: also predict the horizontally flipped view and average.
        crops: extra TTA crop views (crop region scale factors, e.g. ``(0.9, 1.1)``).
        batch_size: images per model call.
        sources: the paths :meth:`load` was given (reported by :meth:`metadata`).
        detector: the face detector, once a face-crop model needs it (None until then;
            :meth:`close` stops it).
    """

    artifacts: list
    vote: str = "soft"
    level: str = "auto"
    tta: bool = False
    crops: tuple = ()
    batch_size: int = 64
    sources: list = field(default_factory=list)
    detector: object = field(default=None, repr=False)

    @classmethod
    def load(cls, *paths, vote: str | None = None, level: str | None = None, tta: bool | None = None,
             crops=None, batch_size: int = 64) -> "Predictor":
        """Open run, K-fold and ensemble directories; load and check every model now.

        Settings left at None come from an ensemble directory's ``ensemble.json`` when one is
        given, else the defaults (soft vote, auto level, no TTA).

        Args:
            *paths: run directories (or their ``model.keras``), K-fold directories (every
                ``fold_*`` votes) and ensemble directories (their ``ensemble.json`` models).
            vote: ``"soft"`` or ``"hard"``.
            level: ``"auto"``, ``"task"`` or ``"class"``.
            tta: also predict the horizontally flipped view.
            crops: extra TTA crop view scales.
            batch_size: images per model call.

        Returns:
            The :class:`Predictor`, every model loaded.

        Raises:
            mask_keras.predict.ArtifactError: no path, a path that is none of the three, a
                model given twice, or a model that cannot be loaded or does not match its config.
        """

        if not paths:
            raise ArtifactError("no artifacts given: pass run, K-fold or ensemble directories")
        arts, saved = [], {}
        for p in map(Path, paths):
            if p.is_dir() and (p / "ensemble.json").is_file() and not (p / "model.keras").exists():
                try:
                    summary = json.loads((p / "ensemble.json").read_text())
                    models = [Path(m) for m in summary["models"]]
                except (ValueError, KeyError, TypeError) as e:
                    raise ArtifactError(f"{p / 'ensemble.json'}: unreadable ({type(e).__name__}: {e}); "
                                        f"pass the member run directories instead") from e
                arts.extend(load_artifact(m if m.is_absolute() or m.exists() else p / m) for m in models)
                for k in ("vote", "level", "tta", "crops"):
                    if k in summary:
                        saved.setdefault(k, summary[k])
            elif p.is_dir() and _is_kfold(p):
                arts.extend(load_artifact(f) for f in fold_dirs(p))
            else:
                arts.append(load_artifact(p))
        seen = set()
        for a in arts:
            if a.path.resolve() in seen:
                raise ArtifactError(f"{a.path}: given twice; each model votes once")
            seen.add(a.path.resolve())
        for a in arts:
            a.model  # noqa: B018  (load and check every model before the first image)
        pick = (lambda given, key, default: given if given is not None else saved.get(key, default))
        return cls(arts, vote=pick(vote, "vote", "soft"), level=pick(level, "level", "auto"),
                   tta=bool(pick(tta, "tta", False)), crops=tuple(pick(crops, "crops", ()) or ()),
                   batch_size=int(batch_size), sources=[str(p) for p in paths])

    @property
    def tasks(self) -> tuple:
        """The tasks (of mask, gender, age) the models answer together."""
        covered = set()
        for a in self.artifacts:
            covered |= set(TASK_ORDER) if a.task in ("multi", "multihead") else {a.task}
        return tuple(t for t in TASK_ORDER if t in covered)

    def predict_files(self, paths, recursive: bool = True, on_error: str = "report") -> pd.DataFrame:
        """Answers for image files and folders (searched recursively), one row per file.

        Args:
            paths: files and folders.
            recursive: search folders recursively.
            on_error: ``"report"``: an unreadable or corrupt file gets a row with its
                ``error`` and no answer (every input has a row; the count is logged);
                ``"raise"``: :class:`mask_keras.pipeline.ImageError` naming every bad file.

        Returns:
            A DataFrame: ``path``, ``class`` (0-17, when all three tasks are covered),
            ``mask``/``gender``/``age`` (names; None for a task no model covers), each
            covered task's ``<task>_prob`` (the probability of its answer) and
            ``p_<task>_<name>`` probabilities, ``p0..p17`` (when ``class`` is), ``crop_box``
            (``[y0, x0, y1, x1]`` of the first model's crop, in the file's pixels), ``error``.
        """

        if on_error not in ("report", "raise"):
            raise ValueError(f"on_error must be 'report' or 'raise', got {on_error!r}")
        files = find_images(paths, recursive=recursive)
        bad = dict(pipeline.check_images(files, "fast", progress=False))
        if bad and on_error == "raise":
            raise pipeline.ImageError(list(bad.items()), total=len(files))
        good = [f for f in files if f not in bad]
        if bad:
            log.warning("%d of %d file(s) skipped (not readable images): %s", len(bad), len(files),
                        "; ".join(f"{k}: {v}" for k, v in list(bad.items())[:5]) + (" ..." if len(bad) > 5 else ""))
        answers = self._answer(good) if good else None
        rows = pd.DataFrame({"path": files})
        if answers is not None:
            answers.index = [i for i, f in enumerate(files) if f not in bad]
            rows = rows.join(answers)
        else:
            rows = rows.assign(**{"class": pd.array([pd.NA] * len(rows), dtype="Int64")},
                               **{t: None for t in TASK_ORDER})
        rows["error"] = [bad.get(f, "") for f in files]
        return rows

    def predict_images(self, images) -> pd.DataFrame:
        """Answers for full-size uint8 RGB images ``(H, W, 3)`` of any size (a list or a batch).

        Each image goes through the same path as a file (written losslessly as PNG first),
        so the crop (including ``crop="face"`` detection) and resize are the run's own.

        Args:
            images: a list of uint8 (H, W, 3) RGB arrays, or a uint8 (N, H, W, 3) batch.

        Returns:
            The columns of :meth:`predict_files`, with ``index`` (position in ``images``)
            instead of ``path``.
        """

        imgs = list(images)
        for i, im in enumerate(imgs):
            a = np.asarray(im)
            if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8 or min(a.shape[:2]) < 1:
                raise ValueError(f"images[{i}]: expected a uint8 RGB array (H, W, 3), got {a.dtype} {a.shape}")
        with tempfile.TemporaryDirectory(prefix="mask_keras_images_") as tmp:
            files = []
            for i, im in enumerate(imgs):
                f = Path(tmp) / f"{i:06d}.png"
                Image.fromarray(np.asarray(im)).save(f)
                files.append(str(f))
            out = self.predict_files(files, on_error="raise")
        return out.drop(columns=["path"]).rename_axis(None).assign(index=range(len(imgs)))[
            ["index"] + [c for c in out.columns if c != "path"]]

    # ----------------------------------------------------------------------- internals
    def close(self) -> None:
        """Stop the face detector, if one was started."""
        if self.detector is not None:
            self.detector.close()
            self.detector = None

    def _inputs(self, files: list[str]) -> list[pd.DataFrame]:
        """Per model, the table it predicts: ``path`` and, for a face-crop model, its crop boxes
        (one detection per file, shared by every face-crop model)."""

        detections = None
        out = []
        for a in self.artifacts:
            table = pd.DataFrame({"path": files})
            pcfg = a.config.preprocess
            if pcfg.crop == "face":
                if detections is None:
                    if self.detector is None:
                        self.detector = Detector()
                    detections = self.detector.detect(files)
                table = pd.concat([table, detected_crop_boxes(detections, pcfg)], axis=1)
            out.append(table)
        return out

    def _answer(self, files: list[str]) -> pd.DataFrame:
        tables = self._inputs(files)
        preds = [predict_artifact(a, t, batch_size=self.batch_size, tta=self.tta, crops=self.crops,
                                  check="none") for a, t in zip(self.artifacts, tables)]
        tasks = self.tasks
        n = len(files)
        out = {}
        if len(tasks) == 3:
            comb = combine_predictions(preds, vote=self.vote, level=self.level)
            labels, task_probs = comb.labels, comb.task_probs
            m, g, a = L.decode(labels)
            chosen = dict(zip(TASK_ORDER, (m, g, a)))
            out["class"] = pd.array(labels, dtype="Int64")
        else:
            task_probs = {}
            for t in tasks:
                arrs = [p.tasks()[t] for p in preds if t in p.tasks()]
                task_probs[t] = np.mean(arrs, axis=0)
            chosen = {t: task_probs[t].argmax(axis=1) for t in tasks}
            out["class"] = pd.array([pd.NA] * n, dtype="Int64")
        for t in TASK_ORDER:
            out[t] = [L.CLASS_NAMES[t][int(c)] for c in chosen[t]] if t in chosen else [None] * n
        for t in tasks:
            probs = np.asarray(task_probs[t], dtype=np.float64)
            out[f"{t}_prob"] = probs[np.arange(n), chosen[t]].round(6)
            for j, name in enumerate(L.CLASS_NAMES[t]):
                out[f"p_{t}_{name}"] = probs[:, j].round(6)
        if len(tasks) == 3:
            for c in range(L.NUM_CLASSES):
                out[f"p{c}"] = comb.p18[:, c].round(6)
        first, pcfg = tables[0], self.artifacts[0].config.preprocess
        if pcfg.crop == "face":
            boxes = first[list(CROP_COLUMNS)].to_numpy(np.int64)
        else:
            hw = np.array([_size(f) for f in files], dtype=np.int64)
            size = pcfg.crop_size if pcfg.crop == "center" else (1 << 30, 1 << 30)
            boxes = center_crop_boxes(hw[:, 0], hw[:, 1], size)
        out["crop_box"] = [[int(v) for v in b] for b in boxes]
        return pd.DataFrame(out)

    def metadata(self) -> dict:
        """What a caller needs to know: tasks, models (task, backbone, image size, crop), settings.

        Returns:
            A JSON-ready dict: ``tasks``, ``vote``, ``level``, ``tta``, ``crops``, ``sources``
            and ``models`` (one dict per model: ``path``, ``task``, ``backbone``,
            ``image_size``, ``crop``).
        """
        return {"tasks": list(self.tasks), "vote": self.vote, "level": self.level, "tta": self.tta,
                "crops": list(self.crops), "sources": self.sources,
                "models": [{"path": str(a.path), "task": a.task, "backbone": a.config.model.backbone,
                            "image_size": list(a.config.preprocess.image_size), "crop": a.config.preprocess.crop}
                           for a in self.artifacts]}


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:  # the header only
        return im.size[1], im.size[0]


def answer_records(table: pd.DataFrame, drop=()) -> list[dict]:
    """The rows of an answer table as JSON-ready dicts (numpy scalars as Python numbers, NA as None).

    Args:
        table: an answer table (:meth:`Predictor.predict_files`).
        drop: column names to leave out.

    Returns:
        One dict per row, column name -> value (NaN and ``pd.NA`` as None).

    Example:
        >>> t = pd.DataFrame({"path": ["a.jpg", "b.jpg"], "class": pd.array([4, pd.NA], dtype="Int64"),
        ...                   "gender_prob": [0.93, np.nan], "error": ["", "truncated"]})
        >>> answer_records(t, drop=("error",))
        [{'path': 'a.jpg', 'class': 4, 'gender_prob': 0.93}, {'path': 'b.jpg', 'class': None, 'gender_prob': None}]
    """

    def plain(v):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            return float(v)
        return v

    return [{k: plain(v) for k, v in r.items() if k not in drop} for r in table.to_dict(orient="records")]


def write_answers(table: pd.DataFrame, out) -> Path:
    """Write :meth:`Predictor.predict_files` answers as CSV, JSON lines (``.jsonl``) or one JSON
    array (``.json``), atomically: a temporary file, then a rename.

    Args:
        table: the answer table.
        out: the destination file; ``.jsonl`` (any case): one JSON object per line
            (:func:`answer_records`); ``.json``: the same objects as one JSON array, so that
            ``json.load`` reads the file; anything else: CSV without the index.

    Returns:
        ``Path(out)``.
    """

    out = Path(out)
    if out.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in answer_records(table))
    elif out.suffix.lower() == ".json":
        text = json.dumps(answer_records(table), indent=1) + "\n"
    else:
        text = table.to_csv(index=False)
    atomic_write_text(out, text)
    return out
