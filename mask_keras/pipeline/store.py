"""The uint8 pixel store: every image of a table decoded once (the cache), or on the fly.

A table's rows (:class:`Rows`: path, crop box, target, age group) are decoded, cropped and
resized (:mod:`mask_keras.pipeline.decode`) into one uint8 array ``(n, h, w, 3)``
(:func:`decode_all`), held in memory or in a memory-mapped ``.npy`` file named after
everything that determines its pixels (files, crop boxes, preprocessing). What moves
through ``tf.data`` are integer row indices; :class:`ImageStore` gathers images a whole
batch at a time, so a cached epoch costs one gather per batch and the shuffle never holds
images. Without a cache (``train.cache="none"``) the indices are decoded on the fly by
parallel map calls (:func:`decode_stream`).

Filling the cache reads every JPEG's size from its header first
(:func:`mask_keras.pipeline.files.jpeg_sizes`) and decodes the rows in groups of one DCT
ratio, so the per-image function has no control flow (:func:`_jpeg_groups`); the pixels
are exactly those of the per-image path that streaming and inference use. A file that
fails to decode raises :class:`~mask_keras.pipeline.files.ImageError` (the cache) or stops
the stream with an error naming it, never a silent drop.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import labels as L
from .._tf import tf
from ..data.layout import CROP_COLUMNS
from ..files import (
    atomic_path,  # the package's atomic writes (mask_keras/files.py), not .files here
)
from .decode import (
    JPEG_RATIOS,
    dct_windows,
    needs_antialias,
    preprocess_key,
    traced_loader,
)
from .files import ImageError, check_file, jpeg_sizes
from .tfdata import finish, graph_fn, parallel_calls

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# table -> arrays
# ---------------------------------------------------------------------------
def _boxes(table: pd.DataFrame, preprocess_cfg) -> np.ndarray:
    if preprocess_cfg.crop == "face":
        return table[list(CROP_COLUMNS)].to_numpy().astype(np.int32)
    return np.zeros((len(table), 4), np.int32)


def _targets(table: pd.DataFrame, task: str | None) -> np.ndarray:
    """Integer targets: (n,) for single tasks, (n, 3) (mask, gender, age) for multihead, -1 without task."""
    if task is None:
        return np.full(len(table), -1, np.int32)
    missing = [c for c in ("mask", "gender", "age_group") if c not in table.columns]
    if missing:
        raise ValueError(f"task {task!r} needs the label column(s) {missing}; the table has {list(table.columns)}")
    m, g, a = (table[c].to_numpy().astype(np.int64) for c in ("mask", "gender", "age_group"))
    if task == "multihead":
        L.encode(m, g, a)  # validates the ranges
        return np.stack([m, g, a], axis=1).astype(np.int32)
    return np.asarray(L.task_target(task, m, g, a), dtype=np.int32).reshape(-1)


class Rows:
    """The per-row arrays of a table: file ``path``, crop ``box``, integer ``target`` (-1:
    none), ``age`` group (for MixUp's old-only pairs, -1 when unknown).

    Args:
        table: the image table (``path``; ``crop_*`` for ``crop="face"``; the label columns
            when ``task`` is set; ``age_group`` when present).
        preprocess_cfg: the run's ``PreprocessConfig``.
        task: the task whose targets to hold, or None (no targets).
    """

    def __init__(self, table: pd.DataFrame, preprocess_cfg, task: str | None):
        n = len(table)
        self.n = n
        self.path = table["path"].astype(str).to_numpy()
        self.box = _boxes(table, preprocess_cfg)
        self.target = _targets(table, task)
        self.age = (table["age_group"].to_numpy().astype(np.int32) if "age_group" in table.columns
                    else np.full(n, -1, np.int32))

    def file_tensors(self):
        """``(paths, boxes)`` as tensors for tf.data functions (one dummy row when empty).

        Returns:
            ``(tf.string (n,), tf.int32 (n, 4))``; ``([""], zeros (1, 4))`` when there are no rows.
        """
        paths = tf.constant(self.path.tolist() if self.n else [""], tf.string)
        boxes = tf.constant(self.box if self.n else np.zeros((1, 4), np.int32), tf.int32)
        return paths, boxes


# ---------------------------------------------------------------------------
# the cache's name
# ---------------------------------------------------------------------------
def _file_stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _cache_key(rows: Rows, preprocess_cfg) -> str:
    """Names a cache after everything that determines its pixels: the files (path, size,
    modification time: a replaced image is decoded again), crop boxes, preprocessing."""
    h = hashlib.sha1()
    h.update(json.dumps([list(preprocess_cfg.image_size), preprocess_cfg.crop, list(preprocess_cfg.crop_size),
                         bool(getattr(preprocess_cfg, "jpeg_scaled_decode", False))]).encode())
    h.update("\0".join(f"{p}\1{_file_stamp(p)}" for p in rows.path.tolist()).encode())
    h.update(np.ascontiguousarray(rows.box).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------
def _jpeg_groups(paths, boxes, preprocess_cfg) -> tuple[np.ndarray, list]:
    """The grouping of the scaled JPEG decode: ``(general, groups)``, where ``general`` marks
    the rows that need the per-image path (not JPEG, header unreadable, or
    ``jpeg_scaled_decode`` off) and each group is ``(rows, ratio, antialias, windows)``: row
    positions whose crop window decodes at one DCT ratio and resizes with one antialiasing
    setting, and their windows ``(y, x, h, w)`` in the scaled image.

    The JPEGs' sizes come from their headers (:func:`jpeg_sizes`, ~15 us per file). Inside a
    group the per-image function has no control flow; the general one picks the format,
    ratio and antialiasing per image with ``tf.cond`` / ``tf.switch_case``, which costs ~15%
    more CPU per image and spreads worse over cores. Same pixels either way.
    """
    general = np.ones(len(paths), bool)
    if not getattr(preprocess_cfg, "jpeg_scaled_decode", False) or not len(paths):
        return general, []
    hw = jpeg_sizes(paths)
    jpeg = hw[:, 0] > 0
    if not jpeg.any():
        return general, []
    k, window = (t.numpy() for t in dct_windows(tf.constant(hw[jpeg, 0]), tf.constant(hw[jpeg, 1]),
                                                tf.constant(np.asarray(boxes)[jpeg]), preprocess_cfg))
    aa = needs_antialias(window[:, 2], window[:, 3], preprocess_cfg.image_size).numpy()
    pos = np.flatnonzero(jpeg)
    groups = []
    for kk, a in sorted({(int(x), bool(y)) for x, y in zip(k, aa)}):
        g = (k == kk) & (aa == a)
        groups.append((pos[g], JPEG_RATIOS[kk], a, window[g]))
    return ~jpeg, groups


def decoder_datasets(rows: Rows, preprocess_cfg, select=None, grouped: bool = True) -> list:
    """The datasets that decode the rows ``select`` once each, in any order (the cache's fill).

    Together they compute exactly :func:`~mask_keras.pipeline.decode.load_and_preprocess`
    of each row: one per JPEG group of :func:`_jpeg_groups` (when ``grouped``), one for the rest.

    Args:
        rows: the table's :class:`Rows`.
        preprocess_cfg: the run's ``PreprocessConfig``.
        select: row indices to decode (default: all).
        grouped: decode JPEGs in groups of one DCT ratio (False: every row the general way).

    Returns:
        A list of datasets of ``(row index, uint8 image)``.
    """
    sel = np.arange(rows.n) if select is None else np.asarray(select, np.int64)
    paths, boxes = rows.path[sel], rows.box[sel]
    general, groups = _jpeg_groups(paths, boxes, preprocess_cfg) if grouped else (np.ones(len(sel), bool), [])
    out, key = [], preprocess_key(preprocess_cfg)
    for pos, r, a, win in groups:
        out.append(tf.data.Dataset.from_tensor_slices((sel[pos], paths[pos].tolist(), win)).map(
            graph_fn(lambda i, p, w, f=traced_loader(key, r, bool(a)): (i, f(p, w))),
            num_parallel_calls=parallel_calls(), deterministic=False))
    if general.any():
        out.append(tf.data.Dataset.from_tensor_slices((sel[general], paths[general].tolist(), boxes[general])).map(
            graph_fn(lambda i, p, b, f=traced_loader(key): (i, f(p, b))),
            num_parallel_calls=parallel_calls(), deterministic=False))
    return out


def decode_stream(indices, rows: Rows, preprocess_cfg, deterministic: bool = True):
    """A dataset of row indices -> ``(index, image)`` with the decoded uint8 image of each row.

    Decoding runs in parallel map calls, in stream order. A file that fails to decode stops
    iteration with an error naming it, never a silent drop: decode errors are caught
    (``ignore_errors``) and every element carries the index that preceded it in the stream,
    so the gap a dropped element leaves is detected at the next element (a sentinel closes
    the stream) and raised as an ``InvalidArgumentError`` whose message names the file.
    Index ``n`` (one past the last row) is a pad: a zero image, never read from disk.

    Args:
        indices: a dataset of row indices (``0..n``).
        rows: the table's :class:`Rows`.
        preprocess_cfg: the run's ``PreprocessConfig``.
        deterministic: keep the stream's order through the parallel decode.

    Returns:
        A dataset of ``(index int64, uint8 image (h, w, 3))``.
    """
    n = rows.n
    h, w = (int(v) for v in preprocess_cfg.image_size)
    paths, boxes = rows.file_tensors()
    loader = traced_loader(preprocess_key(preprocess_cfg))
    ds = indices.map(graph_fn(lambda i: tf.cast(i, tf.int64))).concatenate(
        tf.data.Dataset.from_tensors(tf.constant(-1, tf.int64)))
    ds = ds.scan(tf.constant(-2, tf.int64), graph_fn(lambda prev, i: (i, (i, prev))))

    def load(i, prev):
        j = tf.clip_by_value(i, 0, max(n - 1, 0))
        img = tf.cond(tf.logical_and(i >= 0, i < n), lambda: loader(paths[j], boxes[j]),
                      lambda: tf.zeros((h, w, 3), tf.uint8))
        return i, prev, img

    def check(last, elem):
        i, prev, img = elem
        assert_op = tf.debugging.Assert(tf.equal(prev, last), [
            tf.constant("mask_keras: cannot read or decode image file"), tf.gather(paths, tf.clip_by_value(prev, 0, max(n - 1, 0))),
            tf.constant("(corrupt, truncated or not an image; run mask_keras.pipeline.check_images(paths, "
                        "'full') on the table's paths, replace the file or drop its row)")])
        with tf.control_dependencies([assert_op]):
            return tf.identity(i), (tf.identity(i), img)

    ds = ds.map(graph_fn(load), num_parallel_calls=parallel_calls(), deterministic=deterministic).ignore_errors()
    return ds.scan(tf.constant(-2, tf.int64), graph_fn(check)).filter(graph_fn(lambda i, img: i >= 0))


def decode_all(rows: Rows, preprocess_cfg, cache: str = "memory", progress: bool = True) -> np.ndarray:
    """Every row's preprocessed uint8 image, in row order.

    Decodes in parallel; files that fail to decode raise
    :class:`~mask_keras.pipeline.files.ImageError` naming all of them.

    Args:
        rows: the table's :class:`Rows`.
        preprocess_cfg: the run's ``PreprocessConfig``.
        cache: ``"memory"`` (or None / ``"none"``): decode into memory; else a file prefix:
            the array is saved to ``<prefix>_<key>.npy`` (``key`` hashes the files, crop
            boxes and preprocessing, so a changed table never reads a stale cache; written
            to a temporary file, then renamed) and returned memory-mapped; later runs map
            it instead of decoding.
        progress: show a progress bar (for 500 rows or more).

    Returns:
        The uint8 array ``(n, h, w, 3)`` (memory-mapped when ``cache`` is a file prefix).
    """
    h, w = (int(v) for v in preprocess_cfg.image_size)
    file = None
    if cache not in (None, "none", "memory"):
        file = Path(f"{cache}_{_cache_key(rows, preprocess_cfg)}.npy")
        if file.exists():
            try:
                arr = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as e:
                log.warning("%s: unreadable cache (%s); decoding again", file, e)
            else:
                if arr.shape == (rows.n, h, w, 3) and arr.dtype == np.uint8:
                    return arr
                log.warning("%s: unexpected array %s %s; decoding again", file, arr.shape, arr.dtype)

    out = np.empty((rows.n, h, w, 3), np.uint8)
    seen = np.zeros(rows.n, bool)
    # every row once, in whatever order the parallel decoders finish (each carries its index);
    # a file that fails to decode is skipped by ignore_errors and found missing afterwards
    with tqdm(total=rows.n, desc="decode images", unit="img", disable=not progress or rows.n < 500) as bar:
        for attempt in range(2):
            missing = np.flatnonzero(~seen)
            if not len(missing):
                break
            # the second attempt: rows the header-grouped decode failed, through the general
            # path (a header that misled the grouping; otherwise a broken file, failing again)
            parts = decoder_datasets(rows, preprocess_cfg, missing, grouped=attempt == 0)
            ds = parts[0]
            for part in parts[1:]:
                ds = ds.concatenate(part)
            for idx, img in finish(ds.ignore_errors().batch(256).prefetch(2)).as_numpy_iterator():
                out[idx] = img
                seen[idx] = True
                bar.update(len(idx))
    if not seen.all():
        bad = sorted(set(rows.path[~seen]))  # the header check says why, when it can
        raise ImageError([(p, check_file(p) or "TensorFlow cannot decode it (corrupt image data)") for p in bad],
                         total=len(set(rows.path)))
    if file is not None:
        # a unique temporary name: several hosts of a multi-host job may share the folder; no
        # fsync: a cache cut short by a crash fails to load and is decoded again
        with atomic_path(file, fsync=False) as tmp, open(tmp, "wb") as f:
            np.save(f, out)
        del out
        return np.load(file, mmap_mode="r")  # memory-mapped: the OS page cache holds it
    return out


class ImageStore:
    """Where a dataset's pixels come from: every image decoded once into one uint8 array
    (``cache`` memory, or a memory-mapped ``.npy`` file), or decoded on demand (``"none"``).

    Batches are gathered from the array by a ``numpy_function`` (``np.take`` releases the
    GIL): capturing a large tensor in a ``tf.data`` function instead costs seconds per GiB
    when the first iterator serialises the dataset graph. The array holds ``n * h * w * 3``
    bytes (0.65 GiB for 18,900 images at 128x96).

    Args:
        rows: the table's :class:`Rows`.
        preprocess_cfg: the run's ``PreprocessConfig``.
        cache: ``"memory"``, a file prefix (see :func:`decode_all`), or ``"none"``/None
            (decode on demand).
        progress: show the decode's progress bar.
    """

    def __init__(self, rows: Rows, preprocess_cfg, cache: str = "memory", progress: bool = True):
        self.rows, self.pcfg = rows, preprocess_cfg
        self.cached = cache not in (None, "none")
        self.array, self.nbytes = None, 0
        if self.cached:
            self.array = decode_all(rows, preprocess_cfg, cache, progress)
            self.nbytes = int(self.array.nbytes)
        # a pad row (index n): zero image, target -1 (one-hot zeros), unknown age
        t = rows.target
        self.targets = tf.constant(np.concatenate([t, np.full((1,) + t.shape[1:], -1, t.dtype)]))
        self.ages = tf.constant(np.concatenate([rows.age, [-1]]).astype(np.int32))

    def _take(self, i: np.ndarray) -> np.ndarray:
        n = self.rows.n
        x = np.take(self.array, np.minimum(i, n - 1), axis=0)
        x[i >= n] = 0  # pads
        return x

    def batches(self, indices, batch_size: int, deterministic: bool = True):
        """Row indices -> batches of rows; index ``n`` (one past the last row) is a pad row.

        Args:
            indices: a dataset of row indices (``0..n``).
            batch_size: rows per batch (the last partial batch is dropped).
            deterministic: keep the order through the parallel gather / decode.

        Returns:
            A dataset of dicts ``{"index", "image", "target", "age"}``; a pad row has a zero
            image and target -1.
        """
        b = int(batch_size)
        if self.cached:
            shape = [b, *(int(v) for v in self.pcfg.image_size), 3]

            def gather(i):
                x = tf.numpy_function(self._take, [i], tf.uint8, stateful=False)
                x.set_shape(shape)
                return {"index": i, "image": x, "target": tf.gather(self.targets, i), "age": tf.gather(self.ages, i)}

            return indices.batch(b, drop_remainder=True).map(graph_fn(gather), num_parallel_calls=parallel_calls(),
                                                             deterministic=deterministic)
        ds = decode_stream(indices, self.rows, self.pcfg, deterministic)
        ds = ds.batch(b, drop_remainder=True)
        return ds.map(graph_fn(lambda i, img: {"index": i, "image": img, "target": tf.gather(self.targets, i),
                                               "age": tf.gather(self.ages, i)}))
