"""From the image table to ``tf.data`` batches for ``model.fit`` / ``predict``.

One deterministic preprocessing, shared by training, evaluation and inference
(:func:`load_and_preprocess`: read, decode, crop, resize, uint8), so a model always sees
at test time exactly what it saw in validation. The host does only that work; everything
per-pixel and random runs on the accelerator, inside the model's jitted step::

    rows --decode+crop+resize (uint8)--> image store  (cache: every image decoded once,
                                                        held in memory / a .npy file)
    row indices --training: [oversample >=60] shuffle (or class-balanced draw),
                            batch (drop remainder), gather the uint8 images,
                            [MixUp / CutMix on the host, float32]
                --evaluation: in order, pad to full batches (weight 0 for the pads)
    --> prefetch --> model: Augmentation (training only) -> InputAdapter (pixels -> the
                            backbone's convention) -> backbone

What moves through ``tf.data`` are integer row indices; images are gathered a whole
batch at a time from the store, so a cached epoch costs one gather per batch and the
shuffle never holds images (it shuffles indices, so the first epoch streams too).
Without a cache (``train.cache="none"``) the shuffled indices are decoded on the fly by
parallel map calls.

Batches carry **pixels**: uint8 ``(B, H, W, 3)`` RGB in 0..255 (float32 0..255 when
MixUp/CutMix mixes images on the host). Models from :func:`mask_keras.models.build_model`
take pixels, so the host never normalises and a batch is 4x smaller on the way to the
device than a float32 one.

Shapes are static (JAX compiles once): every batch has ``batch_size`` rows. Training drops
the last partial batch (the data is reshuffled every epoch, so every image is used);
evaluation pads it and yields ``(x, y, sample_weight)`` with weight 1 for real rows and 0 for
the pads, so no sample is dropped and none is counted twice.

Targets are one-hot float32: ``(B, C)`` for ``mask``/``gender``/``age``/``multi``, and a dict
``{"mask": (B, 3), "gender": (B, 2), "age": (B, 3)}`` for ``multihead``.

JPEG decoding (``preprocess.jpeg_scaled_decode``, on by default) decodes only the crop
window and lets libjpeg downscale it in the DCT by the largest factor 1/2, 1/4 or 1/8 that
keeps it at least ``image_size`` (a 400x200 crop for 128x96 decodes at 200x100): less
work for the decoder, and what is left to resize is then usually less than 2x, which plain
bilinear interpolation does without aliasing (antialiased only when 2x or more is left).
Pixels differ slightly (a few levels) from decoding at full size and resizing with
antialiasing, which ``False`` does (like PIL; PNGs always take that path). Filling the
cache reads every JPEG's size from its header first and decodes the rows in groups of one
DCT ratio, so the per-image function has no control flow (:func:`_jpeg_groups`); the pixels are
exactly those of the per-image path that streaming and inference use.

Undecodable files are found before any work starts (:func:`check_images`, a cheap header
and trailer check of every file) and reported by path; anything that still fails to
decode later stops the pipeline with an error naming the file, never a silent drop.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from . import labels as L
from . import sampling
from .data.layout import CROP_COLUMNS
from ._tf import tf

log = logging.getLogger(__name__)

#: batches prefetched ahead of the consumer (the model's step, or the cache build)
PREFETCH = 4


def parallel_calls() -> int:
    """Parallel map calls: one per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def graph_fn(fn):
    """``fn`` for a ``tf.data`` map, scan or filter, kept out of autograph.

    The package's dataset functions branch with ``tf.cond`` / ``tf.where``, never with Python
    control flow on tensors, so autograph's source rewrite only costs time: ~2 s the first
    time in a process (it parses and converts every function reached), ~0.1 s a map after.
    """
    return tf.autograph.experimental.do_not_convert(fn)


def finish(ds):
    """The options of every dataset built here: tf.data's autotuner off.

    The autotuner's optimisation thread wakes at doubling intervals (10 ms, 20 ms, 40 ms,
    ...), and destroying an iterator waits for its next wake-up. Keras makes a new iterator
    every epoch, so every epoch (and the cache build) could stall for as long as it had run
    (measured with TF 2.21 on 2 CPUs: decoding 18,000 JPEGs took 6.3 s and its iterator's
    end another 3.9 s; cached 0.65 s epochs of ``fit`` took 1.25 s). With it off, maps run
    :func:`parallel_calls` calls and prefetch :data:`PREFETCH` batches; the decode's
    throughput was the same or better than with the autotuner in every round measured.
    """
    opts = tf.data.Options()
    opts.autotune.enabled = False
    return ds.with_options(opts)


def skip_first_batches(ds, n: int):
    """``ds`` whose next iterator starts after its first ``n`` batches; later ones are whole.

    For a run resumed in the middle of an epoch (``train.backup_steps``): the skipped batches
    are still drawn (gathered from the cache, not trained on), so the shuffle, the sampler
    and the mixer give the rest of the epoch exactly as the interrupted run had it. Call the
    returned ``release()`` when that epoch is over: from then on nothing is skipped. The
    result's length is unknown to tf.data (its first epoch is shorter); the attributes
    ``make_dataset`` sets are copied.

    Returns:
        ``(dataset, release)``.
    """
    remaining = tf.Variable(int(n), dtype=tf.int64, trainable=False)
    out = ds.enumerate().filter(graph_fn(lambda i, *batch: i >= remaining)).map(graph_fn(lambda i, batch: batch))
    for name in ("num_examples", "num_steps", "cache_bytes", "mixer"):
        if hasattr(ds, name):
            setattr(out, name, getattr(ds, name))

    def release() -> None:
        remaining.assign(0)

    return out, release


CHECK_MODES = ("fast", "full", "none")
_HEADS = {t: L.TASK_CLASSES[t] for t in L.HEADS}


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
    """Encoded bytes (jpg, png, webp, gif, bmp) -> uint8 (H, W, 3).

    JPEGs are decoded with the accurate integer DCT, which is bit-identical to PIL/libjpeg
    (TensorFlow's default fast DCT differs from PIL by up to ~50 levels on noisy images).
    """

    def jpeg():
        return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

    def other():
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)

    def webp():  # decode_image does not know WebP; decode_webp gives (frames, H, W, 3 or 4)
        return tf.io.decode_webp(data, channels=0)[0][..., :3]

    is_webp = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 4), b"RIFF"),
                             tf.equal(tf.strings.substr(data, 8, 4), b"WEBP"))
    img = tf.cond(tf.io.is_jpeg(data), jpeg, lambda: tf.cond(is_webp, webp, other))
    img.set_shape([None, None, 3])
    return img


def crop_window(h, w, box, preprocess_cfg):
    """``(y0, x0, y1, x1)`` int32 of the crop in an ``h`` x ``w`` image: ``none`` (the whole
    image); ``center`` (``crop_size``, clipped to the image when it is smaller); ``face``
    (``box`` = (y0, x0, y1, x1) in pixels, clipped to the image, at least 1 pixel).

    Elementwise: ``h``, ``w`` may be vectors of rows, with ``box`` of shape (rows, 4)."""
    mode = preprocess_cfg.crop
    h, w = tf.cast(h, tf.int32), tf.cast(w, tf.int32)
    if mode == "none":
        return tf.zeros_like(h), tf.zeros_like(w), h, w
    if mode == "center":
        ch = tf.minimum(h, int(preprocess_cfg.crop_size[0]))
        cw = tf.minimum(w, int(preprocess_cfg.crop_size[1]))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        return y0, x0, y0 + ch, x0 + cw
    if mode == "face":
        box = tf.cast(box, tf.int32)
        y0 = tf.clip_by_value(box[..., 0], 0, h - 1)
        x0 = tf.clip_by_value(box[..., 1], 0, w - 1)
        y1 = tf.clip_by_value(box[..., 2], y0 + 1, h)
        x1 = tf.clip_by_value(box[..., 3], x0 + 1, w)
        return y0, x0, y1, x1
    raise ValueError(f"unknown crop {mode!r}; choose one of none, center, face")


def crop_image(img, box, preprocess_cfg):
    """Crop a decoded image (see :func:`crop_window`)."""
    shape = tf.shape(img)
    y0, x0, y1, x1 = crop_window(shape[0], shape[1], box, preprocess_cfg)
    return img[y0:y1, x0:x1]


def resize_image(img, image_size, antialias: bool = True):
    """Bilinear resize, with antialiasing by default (like PIL's), rounded back to uint8 (h, w, 3)."""
    h, w = int(image_size[0]), int(image_size[1])
    out = tf.image.resize(img, (h, w), method="bilinear", antialias=antialias)
    out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
    out.set_shape([h, w, 3])
    return out


def preprocess_image(img, box, preprocess_cfg):
    """Decoded uint8 image -> cropped and resized uint8 (h, w, 3)."""
    return resize_image(crop_image(img, box, preprocess_cfg), preprocess_cfg.image_size)


#: libjpeg's DCT scaling factors (``ratio`` of ``tf.io.decode_and_crop_jpeg``)
JPEG_RATIOS = (1, 2, 4, 8)


def _needs_antialias(h, w, image_size):
    """Whether resizing ``h`` x ``w`` to ``image_size`` shrinks a side by 2x or more (elementwise)."""
    return tf.logical_or(h >= 2 * int(image_size[0]), w >= 2 * int(image_size[1]))


def _resize_after_dct_scaling(img, image_size):
    """The resize that follows a DCT-scaled decode: the scaling already low-passed the image,
    and what is left is usually a factor below 2 on both sides, where plain bilinear
    interpolation samples every input pixel and antialiasing (which costs as much as the
    decode itself in TF) changes nothing visible; a factor of 2 or more still gets it."""
    shape = tf.shape(img)
    return tf.cond(_needs_antialias(shape[0], shape[1], image_size), lambda: resize_image(img, image_size),
                   lambda: resize_image(img, image_size, antialias=False))


def _dct_windows(h, w, box, preprocess_cfg):
    """How to decode the crop window of an ``h`` x ``w`` JPEG: ``k``, the index in
    :data:`JPEG_RATIOS` of the largest DCT downscale 1/r that keeps the window at least
    ``image_size``, and the window ``(y, x, height, width)`` in the image scaled by 1/r.
    Elementwise over vectors of rows, like :func:`crop_window`."""
    y0, x0, y1, x1 = crop_window(h, w, box, preprocess_cfg)
    ch, cw = y1 - y0, x1 - x0
    oh, ow = (int(v) for v in preprocess_cfg.image_size)
    k = tf.zeros_like(ch)
    for r in JPEG_RATIOS[1:]:  # the ratios are nested: count those that fit
        k += tf.cast(tf.logical_and(ch // r >= oh, cw // r >= ow), tf.int32)
    r = tf.bitwise.left_shift(tf.ones_like(k), k)
    window = tf.stack([y0 // r, x0 // r, tf.maximum(ch // r, 1), tf.maximum(cw // r, 1)], axis=-1)
    return k, window


def _decode_scaled(data, window, ratio: int):
    """The crop ``window`` (in the image scaled by 1/``ratio``) of a JPEG, decoded at that scale."""
    img = tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")
    img.set_shape([None, None, 3])
    return img


def _decode_jpeg_window(data, box, preprocess_cfg):
    """A JPEG -> its crop window only, decoded at the largest DCT downscale 1/r that keeps
    the window at least ``image_size`` (uint8, (~h/r, ~w/r, 3))."""
    shape = tf.io.extract_jpeg_shape(data)
    k, window = _dct_windows(shape[0], shape[1], box, preprocess_cfg)
    return tf.switch_case(k, [lambda r=r: _decode_scaled(data, window, r) for r in JPEG_RATIOS])


def decode_and_preprocess(data, box, preprocess_cfg):
    """Encoded bytes -> uint8 (h, w, 3): decode, crop, resize (see the module docstring)."""
    if not getattr(preprocess_cfg, "jpeg_scaled_decode", False):
        return preprocess_image(decode_image(data), box, preprocess_cfg)

    def jpeg():
        return _resize_after_dct_scaling(_decode_jpeg_window(data, box, preprocess_cfg), preprocess_cfg.image_size)

    def other():
        return preprocess_image(decode_image(data), box, preprocess_cfg)

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def load_and_preprocess(path, box, preprocess_cfg):
    """File path -> uint8 (h, w, 3): read, decode, crop, resize. Used by every dataset."""
    return decode_and_preprocess(tf.io.read_file(path), box, preprocess_cfg)


#: JPEG frame-header (SOF) markers: baseline, extended, progressive, lossless, arithmetic
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_size(path: str, limit: int = 1 << 20) -> tuple[int, int] | None:
    """``(height, width)`` of a JPEG from its frame header (the first SOF marker, as libjpeg
    reads it; EXIF thumbnails sit inside APP segments and are skipped), reading only the
    header; ``None`` when the file is not a JPEG (TensorFlow's ``is_jpeg`` test), cannot be
    read, or has no frame header in its first ``limit`` bytes."""
    try:
        with open(path, "rb") as f:
            b = f.read(4096)
            if sniff_format(b) != "JPEG":
                return None
            i = 2
            while True:
                if i + 9 > len(b):  # the next segment header is past what was read
                    if len(b) >= limit:
                        return None
                    more = f.read(max(65536, i + 9 - len(b)))
                    if not more:
                        return None
                    b += more
                    continue
                if b[i] != 0xFF:
                    return None
                m = b[i + 1]
                if m == 0xFF:  # fill byte
                    i += 1
                elif m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a length
                    i += 2
                elif m in (0xD9, 0xDA):  # end of image / start of scan before any frame header
                    return None
                elif m in _SOF_MARKERS:
                    h, w = int.from_bytes(b[i + 5:i + 7], "big"), int.from_bytes(b[i + 7:i + 9], "big")
                    return (h, w) if h > 0 and w > 0 else None
                else:
                    i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
    except OSError:
        return None


def jpeg_sizes(paths) -> np.ndarray:
    """:func:`jpeg_size` of every path, ``(n, 2)`` int32, ``-1`` where unknown (each file read once)."""
    paths = np.asarray(paths, dtype=object)
    if len(paths) == 0:
        return np.zeros((0, 2), np.int32)
    uniq, inv = np.unique(paths.astype(str), return_inverse=True)
    sizes = [jpeg_size(p) for p in uniq.tolist()]  # one thread: ~15 us per file, 4-6x less than a thread pool (the GIL)
    return np.array([s or (-1, -1) for s in sizes], np.int32).reshape(-1, 2)[inv.reshape(-1)]


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
    k, window = (t.numpy() for t in _dct_windows(tf.constant(hw[jpeg, 0]), tf.constant(hw[jpeg, 1]),
                                                 tf.constant(np.asarray(boxes)[jpeg]), preprocess_cfg))
    aa = _needs_antialias(window[:, 2], window[:, 3], preprocess_cfg.image_size).numpy()
    pos = np.flatnonzero(jpeg)
    groups = []
    for kk, a in sorted({(int(x), bool(y)) for x, y in zip(k, aa)}):
        g = (k == kk) & (aa == a)
        groups.append((pos[g], JPEG_RATIOS[kk], a, window[g]))
    return ~jpeg, groups


def _load_fixed(path, window, ratio: int, antialias: bool, preprocess_cfg):
    """One group's per-image function (see :func:`_jpeg_groups`): no control flow."""
    img = _decode_scaled(tf.io.read_file(path), window, ratio)
    return resize_image(img, preprocess_cfg.image_size, antialias=antialias)


def _preprocess_key(preprocess_cfg) -> tuple:
    """The preprocessing settings as a hashable key (lists made tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in vars(preprocess_cfg).items()))


@functools.lru_cache(maxsize=64)
def _traced_loader(key: tuple, ratio: int | None = None, antialias: bool = True):
    """:func:`load_and_preprocess` (``ratio`` None; ``(path, box)``) or one JPEG group's
    :func:`_load_fixed` (``(path, window)``) for the preprocessing ``key``, traced once per
    process. Every dataset map calls these instead of tracing the decode again: the trace
    costs ~0.15 s a map (~0.5 s a dataset, ~1.5 s a ``predict`` call, most of a small
    request's time in the service); a call to a traced function is one graph node."""
    pcfg = SimpleNamespace(**dict(key))
    sig = [tf.TensorSpec([], tf.string), tf.TensorSpec([4], tf.int32)]
    if ratio is None:
        return tf.function(lambda path, box: load_and_preprocess(path, box, pcfg), input_signature=sig,
                           autograph=False)
    return tf.function(lambda path, window: _load_fixed(path, window, ratio, antialias, pcfg), input_signature=sig,
                       autograph=False)


def _decoders(rows: Rows, preprocess_cfg, select=None, grouped: bool = True) -> list:
    """Datasets of ``(row index, uint8 image)`` covering the rows ``select`` (default all) once,
    in any order; together they compute exactly :func:`load_and_preprocess` of each row:
    one per JPEG group of :func:`_jpeg_groups` (when ``grouped``), one for the rest."""
    sel = np.arange(rows.n) if select is None else np.asarray(select, np.int64)
    paths, boxes = rows.path[sel], rows.box[sel]
    general, groups = _jpeg_groups(paths, boxes, preprocess_cfg) if grouped else (np.ones(len(sel), bool), [])
    out, key = [], _preprocess_key(preprocess_cfg)
    for pos, r, a, win in groups:
        out.append(tf.data.Dataset.from_tensor_slices((sel[pos], paths[pos].tolist(), win)).map(
            graph_fn(lambda i, p, w, f=_traced_loader(key, r, bool(a)): (i, f(p, w))),
            num_parallel_calls=parallel_calls(), deterministic=False))
    if general.any():
        out.append(tf.data.Dataset.from_tensor_slices((sel[general], paths[general].tolist(), boxes[general])).map(
            graph_fn(lambda i, p, b, f=_traced_loader(key): (i, f(p, b))),
            num_parallel_calls=parallel_calls(), deterministic=False))
    return out


# ---------------------------------------------------------------------------
# checks at the edge
# ---------------------------------------------------------------------------
def sniff_format(head: bytes) -> str | None:
    """The image format of a file's first 16 bytes: JPEG, PNG, GIF, BMP, WEBP, or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
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
    fmt = sniff_format(head)
    if fmt is None:
        return f"not a JPEG/PNG/WebP/GIF/BMP image (file starts with {head[:8]!r})"
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

    ``fast``: file signature, PIL header parse and JPEG/PNG end marker of every file (~50 us
    per file), confirming suspicious files by decoding them with TF;
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

    # one thread: the check is mostly Python (the GIL), and a thread pool made it 3-4x slower
    results = [_check_one(p) for p in tqdm(paths, desc="check images", unit="img",
                                           disable=not progress or len(paths) < 2000)]
    return [(p, r) for p, r in zip(paths, results) if r is not None]


def _checked(table: pd.DataFrame, check: str, on_error: str = "raise", progress: bool = True) -> pd.DataFrame:
    """Raise :class:`ImageError` on undecodable files, or drop them with a report (``on_error="skip"``)."""
    bad = check_images(table["path"].unique(), check, progress=progress)
    if not bad:
        return table
    if on_error != "skip":
        raise ImageError(bad, total=table["path"].nunique())
    return _drop_bad(table, bad)


def _drop_bad(table: pd.DataFrame, bad) -> pd.DataFrame:
    """The table without the rows of ``bad`` files, reported (``data.on_error='skip'``) and
    recorded in ``table.attrs["skipped_images"]``."""
    bad_paths = {p for p, _ in bad}
    log.warning("skipped %d undecodable image(s) (data.on_error='skip'):\n  %s", len(bad),
                "\n  ".join(f"{p}: {r}" for p, r in bad))
    out = table[~table["path"].astype(str).isin(bad_paths)]
    out.attrs = dict(table.attrs)
    out.attrs["skipped_images"] = list(table.attrs.get("skipped_images", [])) + list(bad)
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


class Rows:
    """The per-row arrays of a table: file ``path``, crop ``box``, integer ``target`` (-1:
    none), ``age`` group (for MixUp's old-only pairs, -1 when unknown)."""

    def __init__(self, table: pd.DataFrame, preprocess_cfg, task: str | None):
        n = len(table)
        self.n = n
        self.path = table["path"].astype(str).to_numpy()
        self.box = _boxes(table, preprocess_cfg)
        self.target = _targets(table, task)
        self.age = (table["age_group"].to_numpy().astype(np.int32) if "age_group" in table.columns
                    else np.full(n, -1, np.int32))

    def file_tensors(self):
        """``(paths, boxes)`` as tensors for tf.data functions (one dummy row when empty)."""
        paths = tf.constant(self.path.tolist() if self.n else [""], tf.string)
        boxes = tf.constant(self.box if self.n else np.zeros((1, 4), np.int32), tf.int32)
        return paths, boxes


def one_hot_targets(target, task: str):
    """Integer targets (B,) or (B, 3) -> one-hot float32 (B, C) or dict of them; -1 -> all zeros."""
    if task == "multihead":
        return {name: tf.one_hot(target[..., i], k, dtype=tf.float32) for i, (name, k) in enumerate(_HEADS.items())}
    return tf.one_hot(target, L.TASK_CLASSES[task], dtype=tf.float32)


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


def decode_stream(indices, rows: Rows, preprocess_cfg, deterministic: bool = True):
    """A dataset of row indices -> ``(index, image)`` with the decoded uint8 image of each row.

    Decoding runs in parallel map calls, in stream order. A file that fails to decode stops
    iteration with an error naming it, never a silent drop: decode errors are caught
    (``ignore_errors``) and every element carries the index that preceded it in the stream,
    so the gap a dropped element leaves is detected at the next element (a sentinel closes
    the stream) and raised as an ``InvalidArgumentError`` whose message names the file.
    Index ``n`` (one past the last row) is a pad: a zero image, never read from disk.
    """
    n = rows.n
    h, w = (int(v) for v in preprocess_cfg.image_size)
    paths, boxes = rows.file_tensors()
    loader = _traced_loader(_preprocess_key(preprocess_cfg))
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
    """Every row's preprocessed uint8 image, ``(n, h, w, 3)``, in row order.

    Decodes in parallel; files that fail to decode raise :class:`ImageError` naming all of them.

    ``cache`` a file prefix: the array is saved to ``<prefix>_<key>.npy`` (``key`` hashes the
    files, crop boxes and preprocessing, so a changed table never reads a stale cache;
    written to a temporary file, then renamed) and returned memory-mapped; later runs map
    it instead of decoding.
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
    from tqdm.auto import tqdm

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
            parts = _decoders(rows, preprocess_cfg, missing, grouped=attempt == 0)
            ds = parts[0]
            for part in parts[1:]:
                ds = ds.concatenate(part)
            for idx, img in finish(ds.ignore_errors().batch(256).prefetch(2)).as_numpy_iterator():
                out[idx] = img
                seen[idx] = True
                bar.update(len(idx))
    if not seen.all():
        bad = sorted(set(rows.path[~seen]))  # the header check says why, when it can
        raise ImageError([(p, _check_one(p) or "TensorFlow cannot decode it (corrupt image data)") for p in bad],
                         total=len(set(rows.path)))
    if file is not None:
        from .files import atomic_path

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
        """Row indices -> batches ``{"index", "image", "target", "age"}``; index ``n`` (one past
        the last row) is a pad row: zero image, target -1."""
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


def _with_pads(n: int, batch_size: int):
    """Indices 0..n-1 then ``n`` (the pad row) up to a multiple of ``batch_size``."""
    pad = (-n) % int(batch_size)
    return np.concatenate([np.arange(n), np.full(pad, n)]).astype(np.int64), pad


# ---------------------------------------------------------------------------
# public datasets
# ---------------------------------------------------------------------------
def _epoch_plan(table: pd.DataFrame, cfg, training: bool):
    """``(repeats per row or None, examples per epoch, steps per epoch)`` of :func:`make_dataset`:
    training repeats >=60 rows (``sampling.old_factor``) and drops the ragged remainder;
    evaluation reads every row once and pads the last batch."""
    b = int(cfg.train.batch_size)
    if not training:
        return None, len(table), -(-len(table) // b)
    counts = sampling.old_repeat_counts(table, cfg.sampling.old_factor, int(cfg.train.seed))
    n_epoch = int(counts.sum())
    return counts, n_epoch, n_epoch // b


def epoch_size(table: pd.DataFrame, cfg, training: bool) -> tuple[int, int]:
    """(examples, steps) of one epoch of :func:`make_dataset` for this table (before any file check)."""
    _, n_epoch, steps = _epoch_plan(table, cfg, training)
    return n_epoch, steps


def make_dataset(table: pd.DataFrame, cfg, training: bool, task: str | None = None, *,
                 deterministic: bool = False, check: str = "fast", verbose: int | None = None):
    """Batches of ``(x, y)`` (training) or ``(x, y, sample_weight)`` (evaluation) for ``model.fit``.

    table: the image table (``path``, ``mask``, ``gender``, ``age_group``; ``crop_*`` for
    ``crop="face"``, computed with :mod:`mask_keras.detect` when absent).
    cfg: the run's :class:`mask_keras.config.Config` (preprocess, augment (MixUp/CutMix),
    sampling, train.batch_size/seed/cache). task: defaults to ``cfg.train.task``.
    deterministic: run the host's random map (MixUp/CutMix) sequentially so that a seed
    reproduces the exact batches (the shuffle is seeded either way).
    check: file check before building (``fast`` | ``full`` | ``none``, see :func:`check_images`);
    undecodable files raise :class:`ImageError` (or are skipped with a report when
    ``cfg.data.on_error == "skip"``). With a cache (``train.cache`` memory or a file) every
    image is decoded while the dataset is built, which is the full check: ``fast`` is then
    skipped, and decode failures raise (or skip) the same way, naming every file.

    ``x`` is uint8 pixels (float32 0..255 when MixUp/CutMix is on); per-image augmentation
    (``augment.preset``) is the model's job (:class:`mask_keras.augment.Augmentation`).
    The returned dataset carries ``num_examples`` (real rows per epoch), ``num_steps``
    (batches per epoch), ``cache_bytes`` (pixels held by the cache, 0 without one) and, for
    training, ``mixer`` (the :class:`~mask_keras.mixup.BatchMixer`, or None);
    evaluation batches are padded and weighted 0 for the pads.
    """
    from .mixup import BatchMixer

    task = L.check_task(task or cfg.train.task)
    pcfg, b, seed = cfg.preprocess, int(cfg.train.batch_size), int(cfg.train.seed)
    verbose = cfg.train.verbose if verbose is None else verbose
    if len(table) == 0:
        raise ValueError("make_dataset: the table is empty")
    on_error = getattr(cfg.data, "on_error", "raise")
    cached = cfg.train.cache not in (None, "none")
    # a cache decodes every image now, which checks every file fully: the header check would only repeat it
    table = _checked(table, "none" if cached and check == "fast" else check, on_error, progress=bool(verbose))
    if pcfg.crop == "face":
        table = ensure_crop_boxes(table, pcfg)
    split = "train" if training else "eval"

    def plan(table):  # before decoding anything, and again if undecodable rows were skipped
        counts, n_epoch, steps = _epoch_plan(table, cfg, training)
        if training and steps == 0:
            raise ValueError(f"training set of {n_epoch} images is smaller than one batch ({b}); "
                             f"lower train.batch_size or add data")
        return counts, n_epoch, steps

    counts, n_epoch, steps = plan(table)
    rows = Rows(table, pcfg, task)
    try:
        store = ImageStore(rows, pcfg, cfg.train.cache, progress=bool(verbose))
    except ImageError as e:
        if on_error != "skip":
            raise
        table = _drop_bad(table, e.bad)
        if len(table) == 0:
            raise ValueError("make_dataset: no decodable image left in the table") from e
        counts, n_epoch, steps = plan(table)
        rows = Rows(table, pcfg, task)
        store = ImageStore(rows, pcfg, cfg.train.cache, progress=bool(verbose))
    n = rows.n
    cache_note = (f", {store.nbytes / 2**20:.0f} MiB uint8 cache" if store.cached else ", decoded on the fly")

    if not training:
        idx, pad = _with_pads(n, b)
        ds = store.batches(tf.data.Dataset.from_tensor_slices(idx), b, deterministic=True)
        ds = ds.map(graph_fn(lambda r: (r["image"], one_hot_targets(r["target"], task),
                                        tf.cast(r["index"] < n, tf.float32))), num_parallel_calls=parallel_calls())
        ds = finish(ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(PREFETCH))
        _report(f"{split} dataset ({task}): {n} images, batch {b}, {steps} steps "
                f"(last batch padded with {pad} weight-0 rows){cache_note}", verbose)
        ds.num_examples, ds.num_steps, ds.cache_bytes = n, steps, store.nbytes
        return ds

    if cfg.sampling.balance == "class":
        cls = sampling.class_ids(table, task)
        streams, present = [], []
        for c in np.unique(cls):
            sel = np.flatnonzero(cls == c)
            ids = np.repeat(sel, counts[sel]).astype(np.int64)
            streams.append(tf.data.Dataset.from_tensor_slices(ids).repeat()
                           .shuffle(len(ids), seed=seed + 1 + int(c), reshuffle_each_iteration=True))
            present.append(int(c))
        k = sampling.num_sampling_classes(task)
        if len(present) < k:
            log.warning("balanced sampling: class(es) %s absent from the training table",
                        sorted(set(range(k)) - set(present)))
        indices = sampling.balanced_dataset(streams, seed=seed).take(n_epoch)
        how = f"class-balanced over {len(present)} classes"
    else:
        ids = np.repeat(np.arange(n), counts).astype(np.int64)
        indices = tf.data.Dataset.from_tensor_slices(ids).shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
        how = "shuffled"
    ds = store.batches(indices, b, deterministic=True)
    mixer = BatchMixer.from_config(cfg.augment, seed=seed + 7)

    def train_batch(r):
        y = one_hot_targets(r["target"], task)
        if mixer is None:
            return r["image"], y
        # keyed by the batch's rows: the mixing depends on the batch, not on the map's call order
        return mixer(tf.cast(r["image"], tf.float32), y, r["age"], key=r["index"])

    train_batch = graph_fn(train_batch)
    ds = ds.map(train_batch) if deterministic or mixer is None else ds.map(
        train_batch, num_parallel_calls=parallel_calls(), deterministic=True)
    ds = finish(ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(PREFETCH))
    extra = n_epoch - n
    _report(f"{split} dataset ({task}): {n} images"
            + (f" + {extra} repeats of >=60 faces (old_factor {cfg.sampling.old_factor})" if extra else "")
            + f", {how}, batch {b}, {steps} steps per epoch"
            + (f" (last {n_epoch - steps * b} dropped, different ones each epoch)" if n_epoch % b else "")
            + cache_note
            + (f"; mixup {cfg.augment.mixup} / cutmix {cfg.augment.cutmix}"
               + (" (>=60 pairs only)" if cfg.augment.mix_old_only else "") if mixer is not None else ""),
            verbose)
    ds.num_examples, ds.num_steps, ds.cache_bytes = n_epoch, steps, store.nbytes
    ds.mixer = mixer  # MixUp/CutMix: switched off from augment.mix_off_epoch on (callbacks.MixOff)
    return ds


def make_predict_dataset(paths, preprocess_cfg, batch_size: int, flip: bool = False, check: str = "fast",
                         progress: bool = True):
    """``(dataset of x batches, n)`` for inference: uint8 pixels with the evaluation
    preprocessing, padded to full batches (drop the predictions past ``n``). ``flip=True``
    gives the horizontally flipped view (test-time augmentation). ``paths``: a list of files
    or a table with ``path`` (and ``crop_*`` for ``crop="face"``)."""
    table = paths.copy() if isinstance(paths, pd.DataFrame) else pd.DataFrame({"path": [str(p) for p in paths]})
    n = len(table)
    if n == 0:
        raise ValueError("make_predict_dataset: no images")
    bad = check_images(table["path"].unique(), check, progress=progress)
    if bad:
        raise ImageError(bad, total=table["path"].nunique())
    if preprocess_cfg.crop == "face":
        table = ensure_crop_boxes(table, preprocess_cfg)
    store = ImageStore(Rows(table, preprocess_cfg, None), preprocess_cfg, "none")
    idx, _ = _with_pads(n, batch_size)
    ds = store.batches(tf.data.Dataset.from_tensor_slices(idx), batch_size)
    ds = ds.map(graph_fn(lambda r: tf.reverse(r["image"], axis=[2]) if flip else r["image"]))
    # the streamed decode hides the length from tf.data; Keras needs it for a progress bar
    # and warns that the input "ran out of data" without it
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(idx) // int(batch_size)))
    return finish(ds.prefetch(PREFETCH)), n


def load_images(paths, preprocess_cfg) -> np.ndarray:
    """The preprocessed uint8 images (n, h, w, 3) of a few files or table rows (plots, tests)."""
    table = paths if isinstance(paths, pd.DataFrame) else pd.DataFrame({"path": [str(p) for p in paths]})
    if len(table) == 0:
        return np.zeros((0, *preprocess_cfg.image_size, 3), np.uint8)
    if preprocess_cfg.crop == "face":
        table = ensure_crop_boxes(table, preprocess_cfg)
    return decode_all(Rows(table, preprocess_cfg, None), preprocess_cfg, "memory", progress=False)


def _report(msg: str, verbose) -> None:
    """Print (verbose) or log (quiet) -- one of the two, never both."""
    if verbose:
        print(msg, flush=True)
    else:
        log.info(msg)
