"""From the image table to ``tf.data`` batches for ``model.fit`` / ``predict``.

One deterministic preprocessing, shared by training, evaluation and inference (read,
decode, crop, resize, uint8), so a model always sees at test time exactly what it saw in
validation. The host does only that work; everything per-pixel and random runs on the
accelerator, inside the model's jitted step. One concern per file:

- ``files.py``: the file checks before any work starts (:func:`check_images`,
  :func:`sniff_format`, :class:`ImageError`) and JPEG sizes from their headers
  (:func:`jpeg_size`, :func:`jpeg_sizes`).
- ``decode.py``: the deterministic decode, crop and resize (:func:`load_and_preprocess`,
  :func:`decode_image`, :func:`crop_window`, :func:`preprocess_image`, the DCT-scaled JPEG
  decode) and its per-image loader traced once per process.
- ``store.py``: the uint8 pixel store (:class:`ImageStore`): every image decoded once into
  an array in memory or a ``.npy`` cache file (:func:`decode_all`), or decoded on the fly
  (:func:`decode_stream`); the table's per-row arrays (:class:`Rows`).
- ``dataset.py``: the datasets: :func:`create_dataset` (flat arguments; returns the dataset
  and a :class:`DatasetInfo`), :func:`make_dataset` (the same from a run's ``Config``),
  :func:`make_predict_dataset`, :func:`load_images`, :func:`epoch_size`,
  :func:`skip_first_batches`.
- ``tfdata.py``: the ``tf.data`` settings every dataset shares (:func:`graph_fn`,
  :func:`finish`, :func:`parallel_calls`, :data:`PREFETCH`).

Each file's docstring tells the details. The names below are the package's API:
``from mask_keras import pipeline; ds, info = pipeline.create_dataset(table, training=True)``.
"""
from __future__ import annotations

from ..data.layout import CROP_COLUMNS  # noqa: F401  (pipeline.CROP_COLUMNS; its home is data.layout)
from .dataset import (  # noqa: F401
    DatasetInfo,
    create_dataset,
    ensure_crop_boxes,
    epoch_size,
    load_images,
    make_dataset,
    make_predict_dataset,
    one_hot_targets,
    skip_first_batches,
)
from .decode import (  # noqa: F401
    JPEG_RATIOS,
    crop_image,
    crop_window,
    decode_and_preprocess,
    decode_image,
    load_and_preprocess,
    preprocess_image,
    resize_image,
)
from .files import CHECK_MODES, ImageError, check_images, jpeg_size, jpeg_sizes, sniff_format  # noqa: F401
from .store import ImageStore, Rows, decode_all, decode_stream  # noqa: F401
from .tfdata import PREFETCH, finish, graph_fn, parallel_calls  # noqa: F401
