"""From the image table to ``tf.data`` batches for ``model.fit`` / ``predict``.

One deterministic preprocessing, shared by training, evaluation and inference
(:func:`load_and_preprocess`: read, decode jpg/png, crop, resize, uint8), so a model
always sees at test time exactly what it saw in validation::

    rows --decode+crop+resize (uint8)--> [cache] --+-- training:   [oversample >=60] shuffle
                                                   |                (or class-balanced draw)
                                                   |                batch (drop remainder)
                                                   |                augment, MixUp/CutMix
                                                   +-- evaluation: pad to full batches,
                                                                    weight 0 for the pads
                                       --> normalise (float32, mean/std) --> prefetch

Shapes are static (JAX compiles once): every batch has ``batch_size`` rows. Training drops
the last partial batch (the data is reshuffled every epoch, so every image is used);
evaluation pads it and yields ``(x, y, sample_weight)`` with weight 1 for real rows and 0 for
the pads, so no sample is dropped and none is counted twice.

Targets are one-hot float32: ``(B, C)`` for ``mask``/``gender``/``age``/``multi``, and a dict
``{"mask": (B, 3), "gender": (B, 2), "age": (B, 3)}`` for ``multihead``.

Images are cached after resizing as uint8 (the 18,900-image set at 128x96 is ~0.7 GB).
Undecodable files are found before any work starts (:func:`check_images`, a cheap header
and trailer check of every file) and reported by path; anything that still fails to
decode later stops the pipeline with an error naming the file, never a silent drop.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from . import labels as L
from . import sampling
from ._tf import tf

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
#: pixel box (in the original image) of the face crop, from :mod:`mask_keras.detect`
CROP_COLUMNS = ("crop_y0", "crop_x0", "crop_y1", "crop_x1")
CHECK_MODES = ("fast", "full", "none")
_HEADS = {"mask": 3, "gender": 2, "age": 3}


class ImageError(ValueError):
    """Image files that cannot be decoded; ``.bad`` lists ``(path, reason)``."""

    def __init__(self, bad, total: int | None = None):
        self.bad = list(bad)
        shown = "\n".join(f"  {p}: {r}" for p, r in self.bad[:20])
        more = f"\n  ... and {len(self.bad) - 20} more" if len(self.bad) > 20 else ""
        of = f" of {total}" if total is not None else ""
        super().__init__(
            f"{len(self.bad)}{of} image file(s) cannot be decoded:\n{shown}{more}\n"
            f"Fix: replace or delete these files, or drop their rows from the table "
            f"(table[~table.path.isin(bad_paths)]); data.on_error='skip' skips them with a report. "
            f"mask_keras.data.verify_images(paths) decodes every image to double-check.")


# ---------------------------------------------------------------------------
# the deterministic preprocessing (training, evaluation and inference)
# ---------------------------------------------------------------------------
def decode_image(data):
    """Encoded bytes (jpg, png, gif, bmp) -> uint8 (H, W, 3).

    JPEGs are decoded with the accurate integer DCT, which is bit-identical to PIL/libjpeg
    (TensorFlow's default fast DCT differs from PIL by up to ~50 levels on noisy images).
    """

    def jpeg():
        return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

    def other():
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)

    img = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    img.set_shape([None, None, 3])
    return img


def crop_image(img, box, preprocess_cfg):
    """Crop a decoded image: ``none``; ``center`` (``crop_size``, clipped to the image when it is
    smaller); ``face`` (``box`` = (y0, x0, y1, x1) in pixels, clipped to the image)."""
    mode = preprocess_cfg.crop
    if mode == "none":
        return img
    shape = tf.shape(img)
    h, w = shape[0], shape[1]
    if mode == "center":
        ch = tf.minimum(h, int(preprocess_cfg.crop_size[0]))
        cw = tf.minimum(w, int(preprocess_cfg.crop_size[1]))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        return img[y0:y0 + ch, x0:x0 + cw]
    if mode == "face":
        box = tf.cast(box, tf.int32)
        y0 = tf.clip_by_value(box[0], 0, h - 1)
        x0 = tf.clip_by_value(box[1], 0, w - 1)
        y1 = tf.clip_by_value(box[2], y0 + 1, h)
        x1 = tf.clip_by_value(box[3], x0 + 1, w)
        return img[y0:y1, x0:x1]
    raise ValueError(f"unknown crop {mode!r}; choose one of none, center, face")


def resize_image(img, image_size):
    """Bilinear resize with antialiasing (like PIL's), rounded back to uint8 (h, w, 3)."""
    h, w = int(image_size[0]), int(image_size[1])
    out = tf.image.resize(img, (h, w), method="bilinear", antialias=True)
    out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
    out.set_shape([h, w, 3])
    return out


def preprocess_image(img, box, preprocess_cfg):
    """Decoded uint8 image -> cropped and resized uint8 (h, w, 3)."""
    return resize_image(crop_image(img, box, preprocess_cfg), preprocess_cfg.image_size)


def load_and_preprocess(path, box, preprocess_cfg):
    """File path -> uint8 (h, w, 3): read, decode, crop, resize. Used by every dataset."""
    return preprocess_image(decode_image(tf.io.read_file(path)), box, preprocess_cfg)


def normalize(images, preprocess_cfg):
    """uint8 or float images in [0, 255] -> float32 ``(x / 255 - mean) / std``."""
    mean = tf.constant(preprocess_cfg.mean, tf.float32)
    std = tf.constant(preprocess_cfg.std, tf.float32)
    return (tf.cast(images, tf.float32) / 255.0 - mean) / std


def denormalize(x, preprocess_cfg) -> np.ndarray:
    """Inverse of :func:`normalize`, back to uint8 (for plots)."""
    x = np.asarray(x, np.float32) * np.asarray(preprocess_cfg.std, np.float32) + np.asarray(preprocess_cfg.mean,
                                                                                           np.float32)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# checks at the edge
# ---------------------------------------------------------------------------
def _sniff(head: bytes) -> str | None:
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    return None


def _tf_decodes(path: str) -> str | None:
    """None if TensorFlow decodes the file, else its error message."""
    try:
        decode_image(tf.io.read_file(path))
        return None
    except (tf.errors.OpError, ValueError) as e:
        return str(getattr(e, "message", e)).strip().splitlines()[0]


def _check_one(path: str) -> str | None:
    """Cheap check of one file (header + trailer); a suspicious file is decoded by TF to confirm."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 1024))
            tail = f.read()
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if size == 0:
        return "empty file"
    fmt = _sniff(head)
    if fmt is None:
        return f"not a JPEG/PNG image (file starts with {head[:8]!r})"
    try:
        with Image.open(path) as im:  # parses the header only
            im.size  # noqa: B018
    except Exception as e:  # PIL raises many types for broken headers
        return f"broken {fmt} header ({type(e).__name__}: {e})"
    suspicious = None
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        suspicious = "truncated JPEG (no end-of-image marker)"
    elif fmt == "PNG" and b"IEND" not in tail[-64:]:
        suspicious = "truncated PNG (no IEND chunk)"
    if suspicious:
        err = _tf_decodes(path)
        if err is not None:
            return f"{suspicious}; TensorFlow: {err}"
    return None


def check_images(paths, mode: str = "fast", progress: bool = True) -> list[tuple[str, str]]:
    """``(path, reason)`` for every file the pipeline could not decode.

    ``fast``: file signature, PIL header parse and JPEG/PNG end marker of every file (a
    few ms per hundred files), confirming suspicious files by decoding them with TF;
    ``full``: decode every file (:func:`mask_keras.data.verify_images`); ``none``: skip.
    """
    if mode not in CHECK_MODES:
        raise ValueError(f"check must be one of {CHECK_MODES}, got {mode!r}")
    paths = [str(p) for p in paths]
    if mode == "none" or not paths:
        return []
    if mode == "full":
        from .data.layout import verify_images

        return verify_images(paths, progress=progress)
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:
        results = list(tqdm(ex.map(_check_one, paths, chunksize=64), total=len(paths), desc="check images",
                            unit="img", disable=not progress or len(paths) < 2000))
    return [(p, r) for p, r in zip(paths, results) if r is not None]


def _checked(table: pd.DataFrame, check: str, on_error: str = "raise", progress: bool = True) -> pd.DataFrame:
    """Raise :class:`ImageError` on undecodable files, or drop them with a report (``on_error="skip"``)."""
    bad = check_images(table["path"].unique(), check, progress=progress)
    if not bad:
        return table
    if on_error != "skip":
        raise ImageError(bad, total=table["path"].nunique())
    bad_paths = {p for p, _ in bad}
    log.warning("skipped %d undecodable image(s) (data.on_error='skip'):\n  %s", len(bad),
                "\n  ".join(f"{p}: {r}" for p, r in bad))
    out = table[~table["path"].astype(str).isin(bad_paths)]
    out.attrs = dict(table.attrs)
    out.attrs["skipped_images"] = list(table.attrs.get("skipped_images", [])) + bad
    return out


def ensure_crop_boxes(table: pd.DataFrame, preprocess_cfg) -> pd.DataFrame:
    """The table with face crop boxes: its own ``crop_*`` columns, else computed by
    :func:`mask_keras.detect.face_crop_boxes` (face detection, cached there)."""
    if not all(c in table.columns for c in CROP_COLUMNS):
        from .detect import face_crop_boxes  # heavy (face detector): only when needed

        table = face_crop_boxes(table, preprocess_cfg)
        missing = [c for c in CROP_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"mask_keras.detect.face_crop_boxes returned no column(s) {missing}")
    boxes = table[list(CROP_COLUMNS)]
    bad = boxes.isna().any(axis=1)
    if bad.any():
        raise ValueError(f"crop='face': {int(bad.sum())} row(s) have no crop box, e.g. "
                         f"{table.loc[bad, 'path'].iloc[0]}; recompute the boxes with mask_keras.detect")
    return table


# ---------------------------------------------------------------------------
# table -> tensors
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


def _rows(table: pd.DataFrame, preprocess_cfg, task: str | None, counts=None) -> dict:
    n = len(table)
    age = table["age_group"].to_numpy().astype(np.int32) if "age_group" in table.columns else np.full(n, -1, np.int32)
    return {
        "index": np.arange(n, dtype=np.int64),
        "path": table["path"].astype(str).to_numpy(),
        "box": _boxes(table, preprocess_cfg),
        "target": _targets(table, task),
        "age": age,
        "repeat": np.ones(n, np.int64) if counts is None else np.asarray(counts, np.int64),
    }


def one_hot_targets(target, task: str):
    """Integer targets (B,) or (B, 3) -> one-hot float32 (B, C) or dict of them; -1 -> all zeros."""
    if task == "multihead":
        return {name: tf.one_hot(target[..., i], k, dtype=tf.float32) for i, (name, k) in enumerate(_HEADS.items())}
    return tf.one_hot(target, L.TASK_CLASSES[task], dtype=tf.float32)


def _cache_key(rows: dict, preprocess_cfg, tag: str) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([tag, list(preprocess_cfg.image_size), preprocess_cfg.crop,
                         list(preprocess_cfg.crop_size)]).encode())
    h.update("\0".join(rows["path"].tolist()).encode())
    h.update(np.ascontiguousarray(rows["box"]).tobytes())
    return h.hexdigest()[:16]


def _cache(ds, cache: str, key: str):
    """``memory`` | ``none`` | a file prefix (the cache file is named after the content, so a
    changed table or preprocessing never reads a stale cache)."""
    if cache in (None, "none"):
        return ds
    if cache == "memory":
        return ds.cache()
    prefix = Path(f"{cache}_{key}")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    return ds.cache(str(prefix))


def decoded_dataset(rows: dict, preprocess_cfg, cache: str = "none", tag: str = "data"):
    """Rows (see :func:`_rows`) -> elements with the preprocessed uint8 ``image``, in row order.

    A file that fails to decode stops iteration with an error naming it: decoding errors are
    caught (``ignore_errors``) and the resulting gap in the row sequence is detected at once
    (a sentinel row closes the sequence), raising an ``InvalidArgumentError`` whose message
    carries the path. Nothing is dropped silently.
    """
    n = len(rows["path"])
    h, w = (int(v) for v in preprocess_cfg.image_size)
    paths = tf.constant(rows["path"].tolist() if n else [""], tf.string)
    src = tf.data.Dataset.from_tensor_slices(rows)
    sentinel = {k: np.zeros_like(v[:1]) if len(v) else np.zeros((1,) + v.shape[1:], v.dtype) for k, v in rows.items()}
    sentinel["index"] = np.array([n], np.int64)
    sentinel["path"] = np.array([""])
    src = src.concatenate(tf.data.Dataset.from_tensor_slices(sentinel))

    def load(r):
        out = {k: v for k, v in r.items() if k != "path"}
        out["image"] = tf.cond(r["index"] < n, lambda: load_and_preprocess(r["path"], r["box"], preprocess_cfg),
                               lambda: tf.zeros((h, w, 3), tf.uint8))
        return out

    def check(k, r):
        ok = tf.equal(k, r["index"])
        assert_op = tf.debugging.Assert(ok, [
            tf.constant("mask_keras: cannot read or decode image file"), tf.gather(paths, tf.minimum(k, n - 1)),
            tf.constant("(corrupt, truncated or not an image; run mask_keras.pipeline.check_images on the "
                        "table's paths, replace the file or drop its row)")])
        with tf.control_dependencies([assert_op]):
            return {key: tf.identity(v) for key, v in r.items()}

    ds = src.map(load, num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
    ds = ds.enumerate().map(check).filter(lambda r: r["index"] < n)
    return _cache(ds, cache, _cache_key(rows, preprocess_cfg, tag))


def _repeat_rows(ds, counts):
    if np.all(np.asarray(counts) == 1):
        return ds
    return ds.flat_map(lambda r: tf.data.Dataset.from_tensors(r).repeat(r["repeat"]))


def _padded_batches(ds, n: int, batch_size: int, pad_element):
    """Pad a finite dataset of ``n`` elements to full batches with ``pad_element`` and batch it."""
    pad = (-n) % batch_size
    if pad:
        ds = ds.concatenate(tf.data.Dataset.from_tensors(pad_element).repeat(pad))
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.apply(tf.data.experimental.assert_cardinality((n + pad) // batch_size))


# ---------------------------------------------------------------------------
# public datasets
# ---------------------------------------------------------------------------
def epoch_size(table: pd.DataFrame, cfg, training: bool, task: str | None = None) -> tuple[int, int]:
    """(examples, steps) of one epoch of :func:`make_dataset` for this table (before any file check)."""
    task = task or cfg.train.task
    b = int(cfg.train.batch_size)
    if training:
        n = int(sampling.old_repeat_counts(table, cfg.sampling.old_factor, cfg.train.seed).sum())
        return n, n // b
    return len(table), -(-len(table) // b)


def make_dataset(table: pd.DataFrame, cfg, training: bool, task: str | None = None, *,
                 deterministic: bool = False, check: str = "fast", verbose: int | None = None):
    """Batches of ``(x, y)`` (training) or ``(x, y, sample_weight)`` (evaluation) for ``model.fit``.

    table: the image table (``path``, ``mask``, ``gender``, ``age_group``; ``crop_*`` for
    ``crop="face"``, computed with :mod:`mask_keras.detect` when absent).
    cfg: the run's :class:`mask_keras.config.Config` (preprocess, augment, sampling,
    train.batch_size/seed/cache). task: defaults to ``cfg.train.task``.
    deterministic: run the augmentation map sequentially so that a seed reproduces the exact
    augmented batches (slower); parallel otherwise.
    check: file check before building (``fast`` | ``full`` | ``none``, see :func:`check_images`);
    undecodable files raise :class:`ImageError` (or are skipped with a report when
    ``cfg.data.on_error == "skip"``).

    The returned dataset carries ``num_examples`` (real rows per epoch) and ``num_steps``
    (batches per epoch); evaluation batches are padded and weighted 0 for the pads.
    """
    from .augment import Augmenter, BatchMixer

    task = L.check_task(task or cfg.train.task)
    pcfg, b, seed = cfg.preprocess, int(cfg.train.batch_size), int(cfg.train.seed)
    verbose = cfg.train.verbose if verbose is None else verbose
    if len(table) == 0:
        raise ValueError("make_dataset: the table is empty")
    table = _checked(table, check, getattr(cfg.data, "on_error", "raise"), progress=bool(verbose))
    if pcfg.crop == "face":
        table = ensure_crop_boxes(table, pcfg)
    cache = cfg.train.cache
    split = "train" if training else "eval"

    if not training:
        rows = _rows(table, pcfg, task)
        n = len(table)
        ds = decoded_dataset(rows, pcfg, cache, tag=f"{split}-{task}")
        ds = ds.map(lambda r: (r["image"], r["target"], tf.constant(1.0, tf.float32)))
        h, w = (int(v) for v in pcfg.image_size)
        pad_target = np.full(rows["target"].shape[1:], -1, np.int32)
        ds = _padded_batches(ds, n, b, (tf.zeros((h, w, 3), tf.uint8), pad_target, tf.constant(0.0)))
        ds = ds.map(lambda x, t, wt: (normalize(x, pcfg), one_hot_targets(t, task), wt), num_parallel_calls=AUTOTUNE)
        ds = ds.prefetch(AUTOTUNE)
        steps = -(-n // b)
        _report(f"{split} dataset ({task}): {n} images, batch {b}, {steps} steps "
                f"(last batch padded with {(-n) % b} weight-0 rows)", verbose)
        ds.num_examples, ds.num_steps = n, steps
        return ds

    counts = sampling.old_repeat_counts(table, cfg.sampling.old_factor, seed)
    n_epoch = int(counts.sum())
    steps = n_epoch // b
    if steps == 0:
        raise ValueError(f"training set of {n_epoch} images is smaller than one batch ({b}); "
                         f"lower train.batch_size or add data")
    if cfg.sampling.balance == "class":
        cls = sampling.class_ids(table, task)
        streams, present = [], []
        for c in np.unique(cls):
            sel = cls == c
            sub_rows = _rows(table[sel], pcfg, task, counts[sel])
            s = decoded_dataset(sub_rows, pcfg, cache, tag=f"{split}-{task}-c{c}")
            s = _repeat_rows(s, counts[sel]).repeat()
            # buffer > one pass: filling it reads the whole class, which completes its cache
            streams.append(s.shuffle(int(counts[sel].sum()) + 1, seed=seed + 1 + int(c), reshuffle_each_iteration=True))
            present.append(int(c))
        k = sampling.num_sampling_classes(task)
        if len(present) < k:
            log.warning("balanced sampling: class(es) %s absent from the training table",
                        sorted(set(range(k)) - set(present)))
        ds = sampling.balanced_dataset(streams, seed=seed).take(n_epoch)
        how = f"class-balanced over {len(present)} classes"
    else:
        rows = _rows(table, pcfg, task, counts)
        ds = decoded_dataset(rows, pcfg, cache, tag=f"{split}-{task}")
        ds = _repeat_rows(ds, counts)
        ds = ds.shuffle(n_epoch, seed=seed, reshuffle_each_iteration=True)
        how = "shuffled"
    ds = ds.batch(b, drop_remainder=True).apply(tf.data.experimental.assert_cardinality(steps))

    augmenter = Augmenter(cfg.augment.preset, seed)
    mixer = BatchMixer.from_config(cfg.augment, seed=seed + 7)

    def train_batch(r):
        x = augmenter(r["image"]) if augmenter else tf.cast(r["image"], tf.float32)
        y = one_hot_targets(r["target"], task)
        if mixer is not None:
            x, y = mixer(x, y, r["age"])
        return normalize(x, pcfg), y

    ds = ds.map(train_batch) if deterministic else ds.map(train_batch, num_parallel_calls=AUTOTUNE,
                                                           deterministic=True)
    ds = ds.prefetch(AUTOTUNE)
    extra = n_epoch - len(table)
    _report(f"{split} dataset ({task}): {len(table)} images"
            + (f" + {extra} repeats of >=60 faces (old_factor {cfg.sampling.old_factor})" if extra else "")
            + f", {how}, batch {b}, {steps} steps per epoch"
            + (f" (last {n_epoch - steps * b} dropped, different ones each epoch)" if n_epoch % b else "")
            + f"; augmentation {cfg.augment.preset!r}"
            + (f", mixup {cfg.augment.mixup} / cutmix {cfg.augment.cutmix}"
               + (" (>=60 pairs only)" if cfg.augment.mix_old_only else "") if mixer is not None else ""),
            verbose)
    ds.num_examples, ds.num_steps = n_epoch, steps
    return ds


def make_predict_dataset(paths, preprocess_cfg, batch_size: int, flip: bool = False, check: str = "fast",
                         progress: bool = True):
    """``(dataset of x batches, n)`` for inference: the evaluation preprocessing, padded to full
    batches (drop the predictions past ``n``). ``flip=True`` gives the horizontally flipped view
    (test-time augmentation). ``paths``: a list of files or a table with ``path`` (and
    ``crop_*`` for ``crop="face"``)."""
    table = paths.copy() if isinstance(paths, pd.DataFrame) else pd.DataFrame({"path": [str(p) for p in paths]})
    n = len(table)
    if n == 0:
        raise ValueError("make_predict_dataset: no images")
    bad = check_images(table["path"].unique(), check, progress=progress)
    if bad:
        raise ImageError(bad, total=table["path"].nunique())
    if preprocess_cfg.crop == "face":
        table = ensure_crop_boxes(table, preprocess_cfg)
    rows = _rows(table, preprocess_cfg, None)
    ds = decoded_dataset(rows, preprocess_cfg, "none", tag="predict").map(lambda r: r["image"])
    h, w = (int(v) for v in preprocess_cfg.image_size)
    ds = _padded_batches(ds, n, int(batch_size), tf.zeros((h, w, 3), tf.uint8))

    def finish(x):
        x = normalize(x, preprocess_cfg)
        return tf.reverse(x, axis=[2]) if flip else x

    return ds.map(finish, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE), n


def load_images(paths, preprocess_cfg) -> np.ndarray:
    """The preprocessed uint8 images (n, h, w, 3) of a few files or table rows (plots, tests)."""
    table = paths if isinstance(paths, pd.DataFrame) else pd.DataFrame({"path": [str(p) for p in paths]})
    if preprocess_cfg.crop == "face":
        table = ensure_crop_boxes(table, preprocess_cfg)
    ds = decoded_dataset(_rows(table, preprocess_cfg, None), preprocess_cfg).map(lambda r: r["image"])
    return np.stack([x.numpy() for x in ds]) if len(table) else np.zeros((0, *preprocess_cfg.image_size, 3), np.uint8)


def dataset_mean_std(table, image_size=(128, 96), n: int = 2000, *, crop: str = "none", crop_size=(400, 200),
                     preprocess_cfg=None, seed: int = 0, batch_size: int = 64):
    """Per-channel mean and std (in [0, 1] units, for ``PreprocessConfig.mean/std``) of ``n``
    images drawn without replacement (all if fewer), after crop and resize.

    ``preprocess_cfg`` (optional) overrides ``image_size``/``crop``/``crop_size``.
    """
    from .config import PreprocessConfig

    pcfg = preprocess_cfg or PreprocessConfig(image_size=tuple(image_size), crop=crop, crop_size=tuple(crop_size))
    table = table if isinstance(table, pd.DataFrame) else pd.DataFrame({"path": [str(p) for p in table]})
    if len(table) == 0:
        raise ValueError("dataset_mean_std: no images")
    if len(table) > n:
        table = table.iloc[np.sort(np.random.default_rng(seed).choice(len(table), size=n, replace=False))]
    if pcfg.crop == "face":
        table = ensure_crop_boxes(table, pcfg)
    ds = decoded_dataset(_rows(table, pcfg, None), pcfg).map(lambda r: r["image"]).batch(batch_size)
    s = np.zeros(3, np.float64)
    s2 = np.zeros(3, np.float64)
    count = 0
    for x in ds:
        x = x.numpy().astype(np.float64) / 255.0
        s += x.sum(axis=(0, 1, 2))
        s2 += (x * x).sum(axis=(0, 1, 2))
        count += x.shape[0] * x.shape[1] * x.shape[2]
    mean = s / count
    std = np.sqrt(np.maximum(s2 / count - mean * mean, 0.0))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _report(msg: str, verbose) -> None:
    """Print (verbose) or log (quiet) -- one of the two, never both."""
    if verbose:
        print(msg, flush=True)
    else:
        log.info(msg)
