"""The face-box cache (``DATA_DIR/face_boxes.parquet``) and :func:`detect_dir` that fills it.

One row per image, keyed by ``path`` (POSIX, relative to the data root, so the folder can
move). Columns (:data:`CACHE_COLUMNS`):

=================  ============================================================
path               ``train/images/<profile>/mask1.jpg``, ``eval/images/<id>.jpg``
sha1               SHA-1 of the file bytes the box was computed from
size, mtime_ns     the file's size and modification time when it was last checked
status             ``face`` | ``no_face`` | ``error``
found              ``status == "face"``
x0, y0, x1, y1     the chosen face box in pixels (NaN unless found)
confidence         its MTCNN confidence (MTCNN itself drops faces under 0.8)
left_eye_x ...     5 keypoints: left/right eye, nose, mouth left/right (x, y)
n_faces            how many faces MTCNN returned for the image
width, height      image size in pixels as decoded (-1 when it could not be decoded)
error              reason for ``status == "error"`` (else empty)
detector           e.g. ``mtcnn 1.0.0``
=================  ============================================================

Change detection: a file whose size and ``mtime_ns`` match its row is not read at all
(a re-run over 31,500 cached images costs only ``stat`` calls). Otherwise the file is read
and hashed with SHA-1 over all its bytes: the bytes are read anyway to be sent to the
detector, so the full hash costs no extra I/O and, unlike a partial hash, cannot miss an
edit in the middle of a JPEG. If the hash matches the row (the folder was copied and the
times changed) only size/mtime are refreshed; otherwise the image is detected again.
Rows of images that left the data set are kept (harmless, and reused if they come back).

Written atomically (temp file + rename) at the end, every ``flush_seconds`` during a run,
and when a run is interrupted, so a killed run keeps its progress. One writer at a time:
two concurrent ``detect`` runs on the same cache would each keep only their own rows.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data.layout import LayoutError, read_eval, read_train
from ..files import atomic_path
from .geometry import FACE_FIELDS, pick_face
from .process import Detector

log = logging.getLogger(__name__)

CACHE_NAME = "face_boxes.parquet"
#: when several faces are found, the largest with at least this confidence is kept
PICK_CONFIDENCE = 0.9
STATUSES = ("face", "no_face", "error")
CACHE_COLUMNS = (["path", "sha1", "size", "mtime_ns", "status", "found"] + list(FACE_FIELDS)
                 + ["n_faces", "width", "height", "error", "detector"])
_DTYPES = {"path": object, "sha1": object, "size": np.int64, "mtime_ns": np.int64, "status": object,
           "found": bool, **{f: np.float32 for f in FACE_FIELDS}, "n_faces": np.int32, "width": np.int32,
           "height": np.int32, "error": object, "detector": object}


def default_cache_path(root) -> Path:
    """Where the face-box cache of the data set at ``root`` lives: ``root/face_boxes.parquet``.

    Args:
        root: the data folder.

    Returns:
        ``Path(root) / CACHE_NAME``.

    Example:
        >>> default_cache_path("data/default").as_posix()
        'data/default/face_boxes.parquet'
    """
    return Path(root) / CACHE_NAME


def empty_cache() -> pd.DataFrame:
    """A cache without rows.

    Returns:
        An empty DataFrame with :data:`CACHE_COLUMNS`, each with its cache dtype.
    """
    return pd.DataFrame({c: pd.Series([], dtype=_DTYPES[c]) for c in CACHE_COLUMNS})


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    return df[CACHE_COLUMNS].astype(_DTYPES)


def read_cache(path) -> pd.DataFrame:
    """The cache as a DataFrame (empty if the file does not exist); raises naming the file if unusable.

    Args:
        path: the parquet file.

    Returns:
        :data:`CACHE_COLUMNS` with their dtypes, one row per ``path`` (the last of duplicates).

    Raises:
        ValueError: the file cannot be read or lacks a column (delete it and detect again).
    """
    path = Path(path)
    if not path.exists():
        return empty_cache()
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise ValueError(f"{path}: cannot read the face-box cache ({type(e).__name__}: {e}); "
                         f"delete it and run `mask-keras detect` again") from e
    missing = [c for c in CACHE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a face-box cache of this version (lacks {missing}); "
                         f"delete it and run `mask-keras detect` again")
    return _typed(df.drop_duplicates("path", keep="last"))


def write_cache(df: pd.DataFrame, path) -> Path:
    """Write the cache atomically (temp file in the same folder + rename).

    Args:
        df: cache rows with every :data:`CACHE_COLUMNS` column (other columns are dropped).
        path: the parquet file.

    Returns:
        ``Path(path)``; the rows are written sorted by ``path``.
    """
    df = _typed(df).sort_values("path", kind="stable").reset_index(drop=True)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def rel_key(path, root) -> str:
    """Cache key of an image: its path relative to the data root, POSIX separators.

    Args:
        path: the image file.
        root: the data folder (both are made absolute first).

    Returns:
        The key, e.g. ``train/images/<profile>/mask1.jpg``.

    Example:
        >>> rel_key("/data/x/train/images/000001_female_Asian_45/mask1.jpg", "/data/x")
        'train/images/000001_female_Asian_45/mask1.jpg'
    """
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def list_images(root, on_error: str = "raise") -> list[Path]:
    """Every image of ``root/train`` and ``root/eval`` (whichever exist), train first.

    Args:
        root: the data folder.
        on_error: passed to ``read_train``/``read_eval``.

    Returns:
        The image paths, without duplicates.

    Raises:
        LayoutError: neither ``train/`` nor ``eval/`` exists, or what the readers raise.
    """
    root = Path(root)
    has_train, has_eval = (root / "train").is_dir(), (root / "eval").is_dir()
    if not (has_train or has_eval):
        raise LayoutError(f"{root}: neither train/ nor eval/ found; DATA_DIR must hold the competition "
                          f"layout (train/train.csv + train/images/ and/or eval/info.csv + eval/images/)")
    paths: list[str] = []
    if has_train:
        paths += read_train(root, on_error=on_error)["path"].tolist()
    if has_eval:
        paths += read_eval(root, on_error=on_error)["path"].tolist()
    return [Path(p) for p in dict.fromkeys(paths)]


def _result_row(key: str, sha1: str, size: int, mtime_ns: int, result: dict, detector: str,
                pick_confidence: float) -> dict:
    faces = np.asarray(result.get("faces", np.zeros((0, 15))), dtype=np.float32).reshape(-1, 15)
    row = {"path": key, "sha1": sha1, "size": int(size), "mtime_ns": int(mtime_ns),
           "n_faces": int(faces.shape[0]), "width": int(result.get("width", -1)),
           "height": int(result.get("height", -1)), "error": result.get("error") or "", "detector": detector}
    row.update({f: np.nan for f in FACE_FIELDS})
    if row["error"]:
        row["status"] = "error"
    else:
        k = pick_face(faces, pick_confidence)
        row["status"] = "face" if k >= 0 else "no_face"
        if k >= 0:
            row.update(dict(zip(FACE_FIELDS, faces[k].tolist())))
    row["found"] = row["status"] == "face"
    return row


def detect_dir(root, cache_path=None, batch_size: int = 16, progress: bool = True, limit: int | None = None, *,
               detector=None, device: str = "cpu", on_error: str = "raise",
               pick_confidence: float = PICK_CONFIDENCE, flush_seconds: float = 60.0) -> dict:
    """Detect the face in every train and eval image of ``root``; cache the boxes; return a summary.

    Images that fail (corrupt, undecodable, unreadable) are recorded as ``status="error"``
    rows with the reason, counted in the summary and logged; they are retried only when the
    file changes.

    Args:
        root: the data folder (``train/`` and/or ``eval/`` in the competition layout).
        cache_path: default ``root/face_boxes.parquet`` (:func:`default_cache_path`).
        batch_size: images per request to the detector process (>= 1).
        progress: show a tqdm bar.
        limit: process at most this many images in this run (the rest stays for the next run);
            None: all.
        detector: a :class:`~mask_keras.detect.process.Detector` to reuse (left open); by default
            one is made (its process starts only if some image needs detecting) and closed at the end.
        device: "cpu" | "gpu" for the detector made here.
        on_error: passed to ``read_train``/``read_eval`` for layout problems.
        pick_confidence: several faces -> the largest with at least this confidence (else the
            most confident).
        flush_seconds: write the cache at least this often during a run.

    Returns:
        The summary: ``images, processed, skipped, rehashed, found, not_found, errors`` (of
        this run), ``remaining`` (left by ``limit``), ``totals`` (``found, not_found, errors``
        over the whole data set after this run), ``error_items`` ([(path, reason)] over the
        data set), ``seconds``, ``images_per_second`` (None when nothing was detected),
        ``cache``, ``root``, ``detector`` (the worker's versions).

    Raises:
        ValueError: ``batch_size < 1`` or ``limit < 0``.
        DetectorError: the detector process failed (the cache keeps what was done).
    """


    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    t0 = time.perf_counter()
    root = Path(root)
    cache_path = Path(cache_path) if cache_path is not None else default_cache_path(root)
    paths = list_images(root, on_error=on_error)
    rows: dict[str, dict] = {r["path"]: r for r in read_cache(cache_path).to_dict("records")}

    keys = [rel_key(p, root) for p in paths]
    todo: list[tuple[Path, str, int, int]] = []
    counts = dict(processed=0, skipped=0, rehashed=0, found=0, not_found=0, errors=0)
    changed = False
    for p, key in zip(paths, keys):
        try:
            st = os.stat(p)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        row = rows.get(key)
        if row is not None and size >= 0 and row["size"] == size and row["mtime_ns"] == mtime:
            counts["skipped"] += 1
        else:
            todo.append((p, key, size, mtime))

    owned = detector is None
    det = detector if detector is not None else Detector(device=device)
    tag = None
    last_flush = time.perf_counter()
    detect_seconds = 0.0
    budget = len(todo) if limit is None else min(limit, len(todo))
    bar = tqdm(total=budget, desc="detect faces", unit="img", disable=not progress, dynamic_ncols=True)

    def record(row: dict) -> None:
        nonlocal changed
        rows[row["path"]] = row
        changed = True
        counts["processed"] += 1
        counts[{"face": "found", "no_face": "not_found", "error": "errors"}[row["status"]]] += 1

    def read_error(key, size, mtime, reason):
        return _result_row(key, "", size, mtime, {"width": -1, "height": -1, "error": reason}, tag or "", 0.0)

    i = 0
    try:
        while i < len(todo) and counts["processed"] < budget:
            batch = []  # (key, sha1, size, mtime, bytes)
            while i < len(todo) and len(batch) < batch_size and counts["processed"] + len(batch) < budget:
                p, key, size, mtime = todo[i]
                i += 1
                try:
                    data = Path(p).read_bytes()
                    st = os.stat(p)
                    size, mtime = st.st_size, st.st_mtime_ns
                except OSError as e:
                    record(read_error(key, size, mtime, f"cannot read file: {type(e).__name__}: {e.strerror or e}"))
                    bar.update(1)
                    continue
                sha1 = hashlib.sha1(data).hexdigest()
                old = rows.get(key)
                if old is not None and old["sha1"] == sha1 and old["size"] == len(data):
                    rows[key] = dict(old, size=size, mtime_ns=mtime)  # same bytes: only the times moved
                    changed = True
                    counts["rehashed"] += 1
                    counts["skipped"] += 1
                    continue
                batch.append((key, sha1, size, mtime, data))
            if not batch:
                continue
            t = time.perf_counter()
            results = det.detect([b[4] for b in batch])
            detect_seconds += time.perf_counter() - t
            if tag is None:
                tag = f"mtcnn {det.versions.get('mtcnn', '?')}"
            for (key, sha1, size, mtime, _), res in zip(batch, results):
                record(_result_row(key, sha1, size, mtime, res, tag, pick_confidence))
            bar.update(len(batch))
            bar.set_postfix(found=counts["found"], no_face=counts["not_found"], errors=counts["errors"], refresh=False)
            if time.perf_counter() - last_flush >= flush_seconds:
                write_cache(pd.DataFrame(list(rows.values())), cache_path)
                changed = False
                last_flush = time.perf_counter()
    finally:
        bar.close()
        if changed or not cache_path.exists():
            write_cache(pd.DataFrame(list(rows.values()), columns=CACHE_COLUMNS), cache_path)
        if owned:
            det.close()

    # images neither processed nor skipped in this run were left by `limit`
    remaining = len(paths) - counts["processed"] - counts["skipped"]
    totals = {"found": 0, "not_found": 0, "errors": 0}
    error_items = []
    for key in keys:
        r = rows.get(key)
        if r is None:
            continue
        totals[{"face": "found", "no_face": "not_found", "error": "errors"}[r["status"]]] += 1
        if r["status"] == "error":
            error_items.append((key, r["error"]))
    seconds = time.perf_counter() - t0
    summary = {"root": str(root), "cache": str(cache_path), "images": len(paths), **counts, "remaining": remaining,
               "totals": totals, "error_items": error_items, "seconds": round(seconds, 3),
               "images_per_second": round(counts["processed"] / detect_seconds, 2) if detect_seconds > 0 else None,
               "detector": dict(det.versions)}
    if counts["errors"]:
        log.warning("face detection: %d image(s) failed (recorded in %s):\n  %s", counts["errors"], cache_path,
                    "\n  ".join(f"{k}: {r}" for k, r in error_items[:20]))
    log.info("%s", format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    """One human-readable paragraph for the CLI.

    Args:
        summary: the dict :func:`detect_dir` returns.

    Returns:
        Two lines (this run; the data set and the cache), then up to 10 ``error:`` lines.
    """
    s = summary
    lines = [f"face detection over {s['images']} images in {s['root']} ({s['seconds']:.1f} s): "
             f"processed {s['processed']} (face {s['found']}, no face {s['not_found']}, errors {s['errors']}), "
             f"skipped {s['skipped']} already cached"
             + (f" ({s['rehashed']} re-hashed, unchanged)" if s.get("rehashed") else "")
             + (f", {s['remaining']} left for the next run (limit)" if s.get("remaining") else "")
             + (f"; {s['images_per_second']} img/s" if s.get("images_per_second") else ""),
             f"data set: face {s['totals']['found']}, no face {s['totals']['not_found']}, "
             f"errors {s['totals']['errors']}; cache {s['cache']}"]
    for key, reason in s.get("error_items", [])[:10]:
        lines.append(f"  error: {key}: {reason}")
    if len(s.get("error_items", [])) > 10:
        lines.append(f"  ... and {len(s['error_items']) - 10} more (status == 'error' in the cache)")
    return "\n".join(lines)
