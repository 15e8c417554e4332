"""Answer rows: one dict per image (or face), the table of them, and writing them out.

Every answer, from Python, ``mask-keras predict --images`` (CSV, JSON lines, JSON) and the
service (JSON), has the same fields (:func:`answer_row`):

* ``image`` (the input's index; ``path`` for files), ``face`` (the face's index among the
  photo's answered faces, 0 the largest; None without one), ``face_found`` (True / False for
  face-crop models, None when no model looks for a face), ``face_box`` ``[y0, x0, y1, x1]`` and
  ``face_confidence`` (the detector's), ``crop_box`` (the first model's crop window in the
  photo's pixels);
* ``mask`` / ``gender`` / ``age``: each covered task's answer (None for a task no model
  covers), ``<task>_prob`` its probability, ``p_<task>_<name>`` every class's (vote shares for
  a hard vote); the answer is the argmax of what is shown;
* ``class`` (0-17), ``class_prob`` and ``p0`` ... ``p17`` when all three tasks are covered;
  ``level``: ``task`` (the class is made of the task answers) or ``class`` (the class is the
  joint 18-class answer; the task answers are the argmax of its marginals, the ``p_`` columns,
  and may differ from the class decoded);
* ``error``: why a row has no answer (an undecodable image, a skipped face), else empty.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .. import labels as L
from ..files import atomic_write_text

log = logging.getLogger(__name__)

TASK_ORDER = L.HEADS
#: the leading columns of every answer table, in order
ROW_FIELDS = ("image", "face", "face_found", "face_box", "face_confidence", "crop_box")


#: the suffixes a folder is searched for (case-insensitive); files given by name may be any image
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


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


def answer_row(image: int, face, crop_box, error: str, comb, j, tasks) -> dict:
    """One answer dict (see the module docstring).

    Args:
        image: the input's index.
        face: its :class:`~mask_keras.inference.faces.Face`, or None (no face model).
        crop_box: the first model's crop window, or None (not decoded).
        error: why there is no answer, or ``""``.
        comb: the :class:`~mask_keras.inference.combine.Combined` answer of the batch (None
            when no row of it was answered).
        j: the row's index in ``comb``, or None (no answer).
        tasks: the tasks the models cover.

    Returns:
        The dict, JSON-ready (Python numbers, None for what is not there).
    """
    out = {"image": int(image),
           "face": None if face is None else face.index,
           "face_found": None if face is None else bool(face.found),
           "face_box": None if face is None else face.box,
           "face_confidence": None if face is None else face.confidence,
           "crop_box": crop_box}
    full = len(tasks) == 3
    answered = j is not None and comb is not None
    out["class"] = int(comb.labels[j]) if answered and full else None
    out["class_prob"] = round(float(comb.p18[j, comb.labels[j]]), 6) if answered and full else None
    for t in TASK_ORDER:
        out[t] = L.CLASS_NAMES[t][int(comb.task_labels[t][j])] if answered and t in tasks else None
    for t in tasks:
        probs = comb.task_probs[t][j] if answered else None
        out[f"{t}_prob"] = round(float(probs[comb.task_labels[t][j]]), 6) if answered else None
        for c, name in enumerate(L.CLASS_NAMES[t]):
            out[f"p_{t}_{name}"] = round(float(probs[c]), 6) if answered else None
    if full:
        for c in range(L.NUM_CLASSES):
            out[f"p{c}"] = round(float(comb.p18[j, c]), 6) if answered else None
    out["level"] = comb.level if answered else None
    out["error"] = error
    return out


def answer_table(rows: list[dict], names=None, key: str = "path") -> pd.DataFrame:
    """Answer dicts as a DataFrame; ``names`` (one per input) replace the ``image`` index as ``key``.

    Args:
        rows: :func:`answer_row` dicts.
        names: the inputs' names (file paths), or None to keep ``image``.
        key: the name column's name.

    Returns:
        One row per answer dict; ``class`` as nullable ``Int64``.
    """
    table = pd.DataFrame(rows)
    if names is not None and len(table):
        table.insert(0, key, [names[i] for i in table["image"]])
        table = table.drop(columns=["image"])
    if "class" in table.columns:
        table["class"] = pd.array(table["class"].tolist(), dtype="Int64")
    return table


def answer_summary(table: pd.DataFrame) -> dict:
    """Counts of an answer table: rows, images, rows without an answer, faces found or not.

    Args:
        table: an answer table with ``path`` (:meth:`~mask_keras.inference.Predictor.predict_files`).

    Returns:
        ``{"rows", "images", "skipped"}``, and ``face_found`` / ``no_face`` (rows) when a
        face-crop model looked for faces.

    Example:
        >>> t = pd.DataFrame({"path": ["a", "a", "b"], "face_found": [True, True, False], "error": ["", "", ""]})
        >>> answer_summary(t)
        {'rows': 3, 'images': 2, 'skipped': 0, 'face_found': 2, 'no_face': 1}
    """
    out = {"rows": len(table), "images": int(table["path"].nunique()), "skipped": int((table["error"] != "").sum())}
    found = table["face_found"].dropna().astype(bool)
    if len(found):
        out.update(face_found=int(found.sum()), no_face=int((~found).sum()))
    return out


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
