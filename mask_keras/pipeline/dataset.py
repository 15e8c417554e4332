"""Datasets: from the image table to ``tf.data`` batches for ``model.fit`` / ``predict``.

The host does only the deterministic preprocessing (:mod:`mask_keras.pipeline.decode`);
everything per-pixel and random runs on the accelerator, inside the model's jitted step::

    rows --decode+crop+resize (uint8)--> image store  (cache: every image decoded once,
                                                        held in memory / a .npy file)
    row indices --training: [oversample >=60] shuffle (or class-balanced draw),
                            batch (drop remainder), gather the uint8 images,
                            [MixUp / CutMix on the host, float32]
                --evaluation: in order, pad to full batches (weight 0 for the pads)
    --> prefetch --> model: Augmentation (training only) -> InputAdapter (pixels -> the
                            backbone's convention) -> backbone

What moves through ``tf.data`` are integer row indices; images are gathered a whole
batch at a time from the store (:class:`~mask_keras.pipeline.store.ImageStore`), so the
shuffle never holds images (it shuffles indices, so the first epoch streams too).

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
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import labels as L
from .. import sampling
from .._tf import tf
from ..config import PreprocessConfig
from ..errors import unknown_choice
from ..data.layout import CROP_COLUMNS
from ..detect import face_crop_boxes
from ..mixup import BatchMixer
from .files import ImageError, check_images, checked_table, drop_bad_files
from .store import ImageStore, Rows, decode_all
from .tfdata import PREFETCH, finish, graph_fn, parallel_calls

log = logging.getLogger(__name__)

_HEADS = {t: L.TASK_CLASSES[t] for t in L.HEADS}


def skip_first_batches(ds, n: int):
    """``ds`` whose next iterator starts after its first ``n`` batches; later ones are whole.

    For a run resumed in the middle of an epoch (``train.backup_steps``): the skipped batches
    are still drawn (gathered from the cache, not trained on), so the shuffle, the sampler
    and the mixer give the rest of the epoch exactly as the interrupted run had it. Call the
    returned ``release()`` when that epoch is over: from then on nothing is skipped. The
    result's length is unknown to tf.data (its first epoch is shorter); the attributes
    ``make_dataset`` sets are copied.

    Args:
        ds: a dataset of batches (from :func:`make_dataset`).
        n: batches to skip in the next epoch.

    Returns:
        ``(dataset, release)``.
    """
    remaining = tf.Variable(int(n), dtype=tf.int64, trainable=False)
    out = ds.enumerate().filter(graph_fn(lambda i, *batch: i >= remaining)).map(graph_fn(lambda i, batch: batch))

    def release() -> None:
        remaining.assign(0)

    return out, release


def one_hot_targets(target, task: str):
    """Integer targets -> one-hot float32; a target of -1 (a pad row) -> all zeros.

    Args:
        target: integer targets ``(B,)``, or ``(B, 3)`` (mask, gender, age) for ``multihead``.
        task: the task.

    Returns:
        ``(B, C)`` float32, or for ``multihead`` a dict ``{"mask", "gender", "age"}`` of them.
    """
    if task == "multihead":
        return {name: tf.one_hot(target[..., i], k, dtype=tf.float32) for i, (name, k) in enumerate(_HEADS.items())}
    return tf.one_hot(target, L.TASK_CLASSES[task], dtype=tf.float32)


def ensure_crop_boxes(table: pd.DataFrame, preprocess_cfg) -> pd.DataFrame:
    """The table with face crop boxes: its own ``crop_*`` columns, else computed by
    :func:`mask_keras.detect.face_crop_boxes` (face detection, cached there).

    Args:
        table: the image table (``path``; ``crop_*`` when already known).
        preprocess_cfg: the run's ``PreprocessConfig`` (for the detector's crop settings).

    Returns:
        The table with every ``crop_*`` column set; raises ``ValueError`` when a row has no box.
    """
    if not all(c in table.columns for c in CROP_COLUMNS):
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


def _with_pads(n: int, batch_size: int):
    """Indices 0..n-1 then ``n`` (the pad row) up to a multiple of ``batch_size``."""
    pad = (-n) % int(batch_size)
    return np.concatenate([np.arange(n), np.full(pad, n)]).astype(np.int64), pad


def _epoch_plan(table: pd.DataFrame, batch_size: int, training: bool, old_factor: float = 1.0, seed: int = 0):
    """``(repeats per row or None, examples per epoch, steps per epoch)`` of :func:`create_dataset`:
    training repeats >=60 rows (``old_factor``) and drops the ragged remainder; evaluation
    reads every row once and pads the last batch."""
    b = int(batch_size)
    if not training:
        return None, len(table), -(-len(table) // b)
    counts = sampling.old_repeat_counts(table, old_factor, int(seed))
    n_epoch = int(counts.sum())
    return counts, n_epoch, n_epoch // b


def epoch_size(table: pd.DataFrame, cfg, training: bool) -> tuple[int, int]:
    """The size of one epoch of :func:`make_dataset` for this table (before any file check).

    Args:
        table: the image table.
        cfg: the run's :class:`mask_keras.config.Config` (train.batch_size/seed, sampling.old_factor).
        training: training (>=60 repeats, the remainder dropped) or evaluation (padded).

    Returns:
        ``(examples, steps)``.
    """
    _, n_epoch, steps = _epoch_plan(table, cfg.train.batch_size, training, cfg.sampling.old_factor, cfg.train.seed)
    return n_epoch, steps


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset from :func:`create_dataset` holds, for ``model.fit`` and the callbacks.

    Attributes:
        task: the targets' task (``mask`` | ``gender`` | ``age`` | ``multi`` | ``multihead``).
        training: training batches (shuffled, repeats, mixing) or evaluation ones (in order, padded).
        batch_size: rows per batch (every batch is full: static shapes).
        num_examples: real rows per epoch (training: with the >=60 repeats; evaluation: the images).
        num_steps: batches per epoch.
        cache_bytes: bytes of uint8 pixels held by the cache (0 when decoded on the fly).
        mixer: the :class:`~mask_keras.mixup.BatchMixer` of a training set (None without
            MixUp/CutMix); :class:`mask_keras.callbacks.MixOff` switches it off.
    """

    task: str
    training: bool
    batch_size: int
    num_examples: int
    num_steps: int
    cache_bytes: int = 0
    mixer: BatchMixer | None = None


ON_ERROR = ("raise", "skip")


def create_dataset(table: pd.DataFrame, *, training: bool = False, task: str = "multi", batch_size: int = 64,
                   preprocess: PreprocessConfig | None = None, seed: int = 0, cache: str = "memory",
                   old_factor: float = 1.0, balance: str = "none", mixer: BatchMixer | None = None,
                   on_error: str = "raise", check: str = "fast", deterministic: bool = False, verbose: int = 0):
    """Batches of ``(x, y)`` (training) or ``(x, y, sample_weight)`` (evaluation) for ``model.fit``.

    ``x`` is uint8 pixels ``(batch_size, h, w, 3)`` (float32 0..255 when ``mixer`` mixes);
    per-image augmentation is the model's job (:class:`mask_keras.augment.Augmentation`).
    ``y`` is one-hot float32 ``(B, C)``, or for ``multihead`` a dict of the three heads'.
    Evaluation batches are padded to full batches and weighted 0 for the pads.

    Args:
        table: the image table (``path``, ``mask``, ``gender``, ``age_group``; ``crop_*`` for
            ``crop="face"``, computed with :mod:`mask_keras.detect` when absent), e.g. from
            :func:`mask_keras.data.read_train`.
        training: training batches (shuffled every epoch, >=60 repeats, class-balanced draw,
            mixing; the ragged remainder dropped) or evaluation ones (every row once, in order).
        task: the targets: ``mask`` | ``gender`` | ``age`` | ``multi`` (18 classes) | ``multihead``.
        batch_size: rows per batch.
        preprocess: the crop and size (:class:`mask_keras.config.PreprocessConfig`; default:
            its defaults, a 400x200 centre crop resized to 128x96).
        seed: seeds the shuffle, the repeats and the class-balanced draw.
        cache: ``memory`` (every image decoded once, held as uint8), ``none`` (decoded every
            epoch) or a path prefix (held in ``<prefix>_<key>.npy``, reused by later runs).
        old_factor: training: repeat the >=60 faces this many times per epoch (team 000); 1 = off.
        balance: training: ``none`` (shuffled) or ``class`` (every class of ``task`` drawn equally).
        mixer: training: a :class:`~mask_keras.mixup.BatchMixer` (MixUp/CutMix on the host), or None.
        on_error: an undecodable file: ``raise`` (:class:`~mask_keras.pipeline.files.ImageError`
            naming every file) or ``skip`` (dropped, counted and reported).
        check: file check before building (``fast`` | ``full`` | ``none``, see
            :func:`~mask_keras.pipeline.files.check_images`). With a cache every image is decoded
            while the dataset is built, which is the full check: ``fast`` is then skipped.
        deterministic: run the host's random map (MixUp/CutMix) sequentially so that a seed
            reproduces the exact batches (the shuffle is seeded either way).
        verbose: print the dataset's summary line; else it is logged.

    Returns:
        ``(dataset, info)``: the ``tf.data.Dataset`` and its :class:`DatasetInfo`.

    Raises:
        ValueError: an unknown ``task``/``balance``/``on_error`` (a ``ConfigError``), a bad
            ``batch_size`` or ``old_factor``, an empty table, or a training set smaller than one batch.

    Example:

    >>> from mask_keras.data.synth import generate
    >>> from mask_keras.data import read_train
    >>> summary = generate(tmp / "data", people=4, eval_people=0, image_size=(64, 48), workers=1,
    ...                    progress=False)
    >>> ds, info = create_dataset(read_train(tmp / "data"), training=True, batch_size=8, task="age",
    ...                           preprocess=PreprocessConfig(image_size=(32, 24), crop_size=(48, 32)))
    >>> info.num_examples, info.num_steps
    (28, 3)
    >>> x, y = next(iter(ds))
    >>> x.shape, x.dtype.name, y.shape
    (TensorShape([8, 32, 24, 3]), 'uint8', TensorShape([8, 3]))
    """
    task = L.check_task(task)
    pcfg = PreprocessConfig() if preprocess is None else preprocess
    b, seed = int(batch_size), int(seed)
    if b < 1:
        raise ValueError(f"create_dataset: batch_size {batch_size} must be >= 1")
    if balance not in sampling.BALANCES:
        raise unknown_choice("balance", balance, sampling.BALANCES)
    if on_error not in ON_ERROR:
        raise unknown_choice("on_error", on_error, ON_ERROR)
    if float(old_factor) < 1.0:
        raise ValueError(f"create_dataset: old_factor {old_factor} must be >= 1 (1 = no repeats)")
    if len(table) == 0:
        raise ValueError("create_dataset: the table is empty")
    cached = cache not in (None, "none")
    # a cache decodes every image now, which checks every file fully: the header check would only repeat it
    table = checked_table(table, "none" if cached and check == "fast" else check, on_error, progress=bool(verbose))
    if pcfg.crop == "face":
        table = ensure_crop_boxes(table, pcfg)
    split = "train" if training else "eval"

    def plan(table):  # before decoding anything, and again if undecodable rows were skipped
        counts, n_epoch, steps = _epoch_plan(table, b, training, old_factor, seed)
        if training and steps == 0:
            raise ValueError(f"training set of {n_epoch} images is smaller than one batch ({b}); "
                             f"lower the batch size or add data")
        return counts, n_epoch, steps

    counts, n_epoch, steps = plan(table)
    rows = Rows(table, pcfg, task)
    try:
        store = ImageStore(rows, pcfg, cache, progress=bool(verbose))
    except ImageError as e:
        if on_error != "skip":
            raise
        table = drop_bad_files(table, e.bad)
        if len(table) == 0:
            raise ValueError("create_dataset: no decodable image left in the table") from e
        counts, n_epoch, steps = plan(table)
        rows = Rows(table, pcfg, task)
        store = ImageStore(rows, pcfg, cache, progress=bool(verbose))
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
        return ds, DatasetInfo(task, False, b, n, steps, store.nbytes)

    indices, how = sampling.index_stream(table, task, counts, balance, seed)
    ds = store.batches(indices, b, deterministic=True)
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
            + (f" + {extra} repeats of >=60 faces (old_factor {old_factor})" if extra else "")
            + f", {how}, batch {b}, {steps} steps per epoch"
            + (f" (last {n_epoch - steps * b} dropped, different ones each epoch)" if n_epoch % b else "")
            + cache_note
            + (f"; mixup {mixer.mixup} / cutmix {mixer.cutmix}"
               + (" (>=60 pairs only)" if mixer.old_only else "") if mixer is not None else ""),
            verbose)
    return ds, DatasetInfo(task, True, b, n_epoch, steps, store.nbytes, mixer)


def make_dataset(table: pd.DataFrame, cfg, training: bool, task: str | None = None, *,
                 deterministic: bool = False, check: str = "fast", verbose: int | None = None):
    """:func:`create_dataset` with its arguments taken from a run's :class:`~mask_keras.config.Config`.

    Args:
        table: the image table (see :func:`create_dataset`).
        cfg: the run's config: ``preprocess``, ``train.batch_size``/``seed``/``cache``/``verbose``,
            ``sampling.old_factor``/``balance``, ``augment`` (MixUp/CutMix, training only) and
            ``data.on_error``.
        training: training or evaluation batches.
        task: defaults to ``cfg.train.task``.
        deterministic: see :func:`create_dataset`.
        check: see :func:`create_dataset`.
        verbose: print the dataset's summary (default ``cfg.train.verbose``).

    Returns:
        ``(dataset, info)`` as :func:`create_dataset`.
    """
    seed = int(cfg.train.seed)
    return create_dataset(
        table, training=training, task=task or cfg.train.task, batch_size=cfg.train.batch_size,
        preprocess=cfg.preprocess, seed=seed, cache=cfg.train.cache, old_factor=cfg.sampling.old_factor,
        balance=cfg.sampling.balance,
        mixer=BatchMixer.from_config(cfg.augment, seed=seed + 7) if training else None,
        on_error=getattr(cfg.data, "on_error", "raise"), check=check, deterministic=deterministic,
        verbose=cfg.train.verbose if verbose is None else verbose)


def make_predict_dataset(paths, preprocess_cfg, batch_size: int, flip: bool = False, check: str = "fast",
                         progress: bool = True):
    """Batches for inference: uint8 pixels with the evaluation preprocessing, padded to full
    batches (drop the predictions past ``n``). For your own ``model.predict`` over many files
    in ``tf.data`` (and the multi-host ``LocalPredictor``); the package's own inference
    (``Predictor``, ``predict``, the service) decodes in memory through
    :mod:`mask_keras.inference.images`, to the same pixels.

    Args:
        paths: a list of files, or a table with ``path`` (and ``crop_*`` for ``crop="face"``).
        preprocess_cfg: the run's ``PreprocessConfig``.
        batch_size: rows per batch.
        flip: the horizontally flipped view (test-time augmentation).
        check: file check before building (see :func:`~mask_keras.pipeline.files.check_images`);
            undecodable files raise :class:`~mask_keras.pipeline.files.ImageError`.
        progress: show the check's progress bar.

    Returns:
        ``(dataset of x batches, n)``.
    """
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
    """The preprocessed uint8 images of a few files or table rows (plots, tests).

    Args:
        paths: a list of files, or a table with ``path`` (and ``crop_*`` for ``crop="face"``).
        preprocess_cfg: the run's ``PreprocessConfig``.

    Returns:
        uint8 ``(n, h, w, 3)``, in order.
    """
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
