"""Read and validate the competition layout into the image table.

``root`` is the directory that holds ``train/`` and ``eval/``::

    root/train/train.csv                 id,gender,race,age,path  (one row per person)
    root/train/images/<id>_<gender>_<race>_<age>/{mask1..5,incorrect_mask,normal}.{jpg,jpeg,png}
    root/eval/info.csv                   ImageID,ans
    root/eval/images/<ImageID>

Every stage of the package speaks the table these functions return: one row per
image with ``profile, id, gender, race, age, stem, path, mask, age_group, label``
(``gender``, ``mask``, ``age_group``, ``label`` are integer codes, see
:mod:`mask_keras.labels`).

Validation is strict by default: anything that does not fit the layout raises a
:class:`LayoutError` that names the path and the fix. With ``on_error="skip"`` the
offending person (or eval image) is left out instead, and every skip is counted in
``table.attrs["skipped"]`` and reported through :mod:`logging` -- nothing is dropped
silently.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .. import labels as L
from .relabel import apply_relabel

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
TRAIN_CSV_COLUMNS = ("id", "gender", "race", "age", "path")
EVAL_CSV_COLUMNS = ("ImageID", "ans")
#: folder name: six-digit id (optionally -N suffix), gender, race, age
PROFILE_RE = re.compile(r"^(?P<id>\d{6}(?:-\d+)?)_(?P<gender>male|female)_(?P<race>[A-Za-z]+)_(?P<age>\d{1,3})$")
#: pixel box (in the original image) of the crop, added to the table by :mod:`mask_keras.detect`
CROP_COLUMNS = ("crop_y0", "crop_x0", "crop_y1", "crop_x1")
TRAIN_COLUMNS = ["profile", "id", "gender", "race", "age", "stem", "path", "mask", "age_group", "label"]


class LayoutError(ValueError):
    """The data on disk does not follow the competition layout."""


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _read_csv(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    if not path.is_file():
        raise LayoutError(f"{path}: {what} not found; expected the competition layout "
                          f"(see data/README.md), or generate one with `mask-keras synth DIR`")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except Exception as e:  # pandas raises several types for broken CSVs
        raise LayoutError(f"{path}: cannot parse {what} as CSV ({e})") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LayoutError(f"{path}: {what} lacks column(s) {missing}; it has {list(df.columns)}, "
                          f"expected {list(columns)}")
    return df


class _Skips:
    """Collect errors: raise at once, or record them as counted skips."""

    def __init__(self, on_error: str):
        _check_on_error(on_error)
        self.on_error = on_error
        self.items: list[tuple[str, str]] = []

    def __call__(self, path, reason: str) -> None:
        if self.on_error == "raise":
            raise LayoutError(f"{path}: {reason}")
        self.items.append((str(path), reason))

    def exc(self, path, err: LayoutError) -> None:
        """Re-raise ``err`` (it already names the path) or record it as a skip of ``path``."""
        if self.on_error == "raise":
            raise err
        self.items.append((str(path), str(err)))

    def report(self, what: str) -> None:
        if self.items:
            log.warning("skipped %d %s (on_error='skip'):\n  %s", len(self.items), what,
                        "\n  ".join(f"{p}: {r}" for p, r in self.items))


def parse_profile(name: str) -> dict:
    """Parse a person folder name like ``001498-1_male_Asian_45``.

    Args:
        name: the folder name (not a path): ``<id>_<gender>_<race>_<age>``, ``id`` six digits with
            an optional ``-N`` suffix, ``gender`` male|female.

    Returns:
        ``{"id": str, "gender": "male"|"female", "race": str, "age": int}``.

    Raises:
        LayoutError: the name does not parse.

    Example:
        >>> parse_profile("001498-1_male_Asian_45")
        {'id': '001498-1', 'gender': 'male', 'race': 'Asian', 'age': 45}
    """
    m = PROFILE_RE.match(name)
    if not m:
        raise LayoutError(f"folder name {name!r} does not parse as <id>_<gender>_<race>_<age> "
                          f"(e.g. 000001_female_Asian_45, id six digits with an optional -N suffix, "
                          f"gender male|female); rename or remove it")
    d = m.groupdict()
    d["age"] = int(d["age"])
    return d


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # '._mask1.jpg' resource forks, .DS_Store, ...


def list_person_images(folder: Path) -> dict[str, Path]:
    """The 7 images of one person folder, keyed by stem; raises LayoutError on any problem.

    Hidden entries (``.DS_Store``, ``._mask1.jpg``) are ignored; anything else that is not one of
    the 7 stems with a .jpg/.jpeg/.png extension, a duplicate stem, an empty file or a missing
    stem is a problem.

    Args:
        folder: a person folder (``Path``).

    Returns:
        ``{stem: path}`` for the stems of :data:`mask_keras.labels.MASK_STEMS`.
    """
    found: dict[str, Path] = {}
    for entry in sorted(os.listdir(folder)):
        if _is_hidden(entry):
            continue
        p = folder / entry
        stem, ext = os.path.splitext(entry)
        if ext.lower() not in IMAGE_EXTENSIONS or stem not in L.MASK_STEMS:
            raise LayoutError(f"{p}: unexpected file; a person folder holds exactly "
                              f"{', '.join(L.MASK_STEMS)} with extension .jpg/.jpeg/.png")
        if stem in found:
            raise LayoutError(f"{folder}: duplicate image stem {stem!r} ({found[stem].name} and {entry}); "
                              f"keep one of them")
        if p.stat().st_size == 0:
            raise LayoutError(f"{p}: empty file; replace it with the real image")
        found[stem] = p
    missing = [s for s in L.MASK_STEMS if s not in found]
    if missing:
        raise LayoutError(f"{folder}: missing image(s) {missing}; every person folder needs all 7 "
                          f"({', '.join(L.MASK_STEMS)})")
    return found


def read_train(root, relabel=False, age_upper: int = L.EVAL_AGE_UPPER, on_error: str = "raise") -> pd.DataFrame:
    """Read ``root/train`` into the image table (7 rows per person).

    Args:
        root: the dataset folder holding ``train/`` (``train.csv`` and ``images/``).
        relabel: False, ``True``/"certain" (the certain fixes of ``data/relabel.csv``) or "all".
        age_upper: the age-group threshold (60 for evaluation; teams trained with 58/59).
        on_error: "raise" (default) or "skip" (leave the person out, count and report it).

    Returns:
        The image table (columns ``TRAIN_COLUMNS``), sorted by ``profile, stem``;
        ``attrs["skipped"]`` lists ``(path, reason)`` and ``attrs["age_upper"]`` the threshold
        (``attrs["relabeled"]`` too with ``relabel``).

    Raises:
        LayoutError: a missing or broken ``train.csv`` or ``images/``, a stray file or a listed-twice
            folder (even with ``on_error="skip"``), a bad person (with ``"raise"``), no usable people.
    """
    skips = _Skips(on_error)
    train = Path(root) / "train"
    csv = _read_csv(train / "train.csv", TRAIN_CSV_COLUMNS, "train.csv")
    images = train / "images"
    if not images.is_dir():
        raise LayoutError(f"{images}: image folder not found (expected train/images/<id>_<gender>_<race>_<age>/)")
    folders = {e for e in os.listdir(images) if not _is_hidden(e) and (images / e).is_dir()}
    stray = sorted(e for e in os.listdir(images) if not _is_hidden(e) and not (images / e).is_dir())
    if stray:
        raise LayoutError(f"{images}: unexpected file(s) {stray[:5]} beside the person folders; remove them")

    dup = csv["path"][csv["path"].duplicated()].tolist()
    if dup:
        raise LayoutError(f"{train / 'train.csv'}: folder(s) listed twice: {dup[:10]}")
    rows = []
    listed = set()
    for i, r in csv.sort_values("path", kind="stable").iterrows():
        folder = r["path"]
        listed.add(folder)
        where = f"{train / 'train.csv'} row {i + 2} ({folder})"
        try:
            prof = parse_profile(folder)
        except LayoutError as e:
            skips.exc(where, LayoutError(f"{where}: {e}"))
            continue
        if folder not in folders:
            skips(where, f"no folder {images / folder}; add it or remove the row")
            continue
        try:
            age = int(r["age"])
        except ValueError:
            skips(where, f"age {r['age']!r} is not an integer")
            continue
        if (r["id"], r["gender"], age) != (prof["id"], prof["gender"], prof["age"]):
            skips(where, f"row says id={r['id']}, gender={r['gender']}, age={age} but the folder name "
                         f"says id={prof['id']}, gender={prof['gender']}, age={prof['age']}; make them agree")
            continue
        try:
            imgs = list_person_images(images / folder)
        except LayoutError as e:
            skips.exc(images / folder, e)
            continue
        for stem in L.MASK_STEMS:
            rows.append((folder, prof["id"], int(L.GENDER_NAMES[prof["gender"]]), prof["race"], prof["age"],
                         stem, str(imgs[stem]), int(L.MASK_STEMS[stem])))
    for folder in sorted(folders - listed):
        skips(images / folder, "folder has no row in train.csv; add a row (id,gender,race,age,path) or remove it")
    skips.report("train people")

    df = pd.DataFrame(rows, columns=["profile", "id", "gender", "race", "age", "stem", "path", "mask"])
    if df.empty:
        raise LayoutError(f"{train}: no usable people found")
    if relabel:
        df = apply_relabel(df, "certain" if relabel is True else relabel)
    df = with_labels(df, age_upper)
    df = df.sort_values(["profile", "stem"], kind="stable").reset_index(drop=True)
    df.attrs["skipped"] = skips.items
    df.attrs["age_upper"] = age_upper
    return df


def with_labels(df: pd.DataFrame, age_upper: int = L.EVAL_AGE_UPPER) -> pd.DataFrame:
    """(Re)compute ``age_group`` and ``label`` from ``mask``, ``gender``, ``age``.

    Args:
        df: image rows with integer ``mask``, ``gender``, ``age`` (the other
            ``TRAIN_COLUMNS`` are expected too: the result is ordered by them).
        age_upper: ages from this one on are group 2 (>=60 by the competition's rule).

    Returns:
        A copy, ``age`` as int64, ``TRAIN_COLUMNS`` first then any other column.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"profile": "p", "id": "000001", "gender": 1, "race": "Asian",
        ...                    "age": [59, 60], "stem": ["mask1", "normal"], "path": ["a", "b"], "mask": [0, 2]})
        >>> with_labels(df)[["age_group", "label"]].values.tolist()
        [[1, 4], [2, 17]]
        >>> with_labels(df, age_upper=58)["age_group"].tolist()
        [2, 2]
    """
    df = df.copy()
    df["age"] = df["age"].astype(np.int64)
    df["age_group"] = L.age_group(df["age"].to_numpy(), upper=age_upper)
    df["label"] = L.encode(df["mask"].to_numpy(), df["gender"].to_numpy(), df["age_group"].to_numpy())
    return df[TRAIN_COLUMNS + [c for c in df.columns if c not in TRAIN_COLUMNS]]


def read_eval(root, on_error: str = "raise") -> pd.DataFrame:
    """Read ``root/eval`` into a table (``ImageID``, ``path``) in info.csv order.

    Args:
        root: the dataset folder holding ``eval/`` (``info.csv`` and ``images/``).
        on_error: "raise" (default) or "skip" (leave out a missing or non-image file, count and report it).

    Returns:
        One row per kept image (``ans`` is not read); ``attrs["skipped"]`` lists ``(path, reason)``.

    Raises:
        LayoutError: a missing or broken ``info.csv`` or ``images/``, an ImageID listed twice, or a
            bad image with ``on_error="raise"``.
    """
    skips = _Skips(on_error)
    ev = Path(root) / "eval"
    info_path = ev / "info.csv"
    info = _read_csv(info_path, EVAL_CSV_COLUMNS, "info.csv")
    dup = info["ImageID"][info["ImageID"].duplicated()].tolist()
    if dup:
        raise LayoutError(f"{info_path}: ImageID(s) listed twice: {dup[:10]}")
    images = ev / "images"
    if not images.is_dir():
        raise LayoutError(f"{images}: image folder not found (expected eval/images/<ImageID>)")
    present = set(os.listdir(images))
    keep, paths = [], []
    for i, image_id in enumerate(info["ImageID"]):
        p = images / image_id
        if image_id not in present or not p.is_file():
            skips(p, f"listed in {info_path} (row {i + 2}) but missing; restore it or remove the row")
            continue
        if os.path.splitext(image_id)[1].lower() not in IMAGE_EXTENSIONS:
            skips(p, "not a .jpg/.jpeg/.png image")
            continue
        keep.append(i)
        paths.append(str(p))
    skips.report("eval images")
    df = pd.DataFrame({"ImageID": info["ImageID"].to_numpy()[keep], "path": paths})
    df.attrs["skipped"] = skips.items
    return df


def verify_images(paths, progress: bool = True) -> list[tuple[str, str]]:
    """Decode every image; return ``(path, error)`` for those that fail (corrupt or not RGB-able).

    Args:
        paths: image paths.
        progress: show a tqdm bar.

    Returns:
        ``[(path, "ExceptionType: message"), ...]``, empty when every image decodes.
    """
    bad = []
    for p in tqdm(list(paths), desc="verify images", disable=not progress, unit="img"):
        try:
            with Image.open(p) as im:
                im.convert("RGB").load()
        except Exception as e:  # PIL raises many types for broken files
            bad.append((str(p), f"{type(e).__name__}: {e}"))
    return bad
