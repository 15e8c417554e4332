"""Face-detection crop: MTCNN boxes, cached beside the data, turned into crop boxes for tf.data.

Three steps:

1. :func:`detect_dir` (``mask-keras detect DATA_DIR``) runs MTCNN over every train and
   eval image once and caches one box per image in ``DATA_DIR/face_boxes.parquet``
   (see :mod:`mask_keras.detect.cache` for the format); resumable, re-detects only new or
   changed files, records images without a face and images that fail.
2. :func:`face_crop_boxes` adds ``crop_y0, crop_x0, crop_y1, crop_x1, crop_fallback`` to the
   image table: the box widened by ``PreprocessConfig.face_margins``, or a centre crop of
   ``face_fallback`` where there is no usable face. The tf.data pipeline crops with them.
3. :func:`contact_sheet` draws boxes and crops of random images, to check them by eye.

Why a separate process and not a port
-------------------------------------
The ``mtcnn`` package (1.0.0, real weights shipped as ``mtcnn/assets/weights/*.lz4``) is
not just three networks: its stages lean on TensorFlow throughout (``tf.image.resize`` with
AREA for the image pyramid, ``tf.image.crop_and_resize`` for the R-Net/O-Net patches,
``tf.image.decode_image``) and call ``.numpy()`` on the outputs of its ``tf.keras`` models,
which are Keras 3 models that follow ``KERAS_BACKEND`` and so return JAX arrays in our
process. A port would mean rewriting the pyramid, patch extraction, NMS and box
regression on ``keras.ops`` and keeping it numerically faithful to the original; the
worker keeps the reference implementation unchanged. Detection is an offline step run
once per data set (its output is cached), so the cost of a second process, a few seconds
to import TensorFlow, is paid once per run and not per image.

So :class:`Detector` starts one long-lived worker, ``python -m mask_keras.detect.worker``,
with ``KERAS_BACKEND=tensorflow`` in its environment before anything imports Keras (and,
by default, ``CUDA_VISIBLE_DEVICES=-1``, so TensorFlow stays off the GPU JAX may own). It
is a plain ``subprocess`` with length-prefixed pickles over pipes, not ``multiprocessing``,
which would re-import the user's ``__main__`` and inherit the parent's backend choice.
The parent reads and hashes the files and sends their bytes in batches; the worker decodes
them with Pillow (no EXIF rotation, like ``tf.io.decode_image`` in the pipeline, so boxes
and crops share a coordinate frame), groups them by size and runs P-Net -> R-Net -> O-Net.

Two things in mtcnn 1.0.0 this works around: ``MTCNN.detect_faces`` turns every
``InvalidArgumentError`` into "no faces" for the whole batch (our worker drives the stages
itself and stops when a stage has no candidates, so a failure is reported as an error,
per image); and ``min_face_size`` above ~24 px breaks its image pyramid (it silently finds
nothing on a 512x512 photo at 40), so the package default (20) is used and not exposed.

Several faces in one image: the largest box among those with confidence >= 0.9
(``pick_confidence``) is kept, else the most confident one: the photos show one person
close to the camera, a smaller face is someone behind them or a false hit on a mask print.
"""
from __future__ import annotations

from .cache import (CACHE_COLUMNS, CACHE_NAME, PICK_CONFIDENCE, default_cache_path, detect_dir,  # noqa: F401
                    format_summary, list_images, read_cache, write_cache)
from .crop import (CROP_COLUMNS, FALLBACK_REASONS, contact_sheet, detected_crop_boxes,  # noqa: F401
                   face_crop_boxes, infer_root)
from .geometry import FACE_FIELDS, box_iou, center_crop_boxes, face_crops, pick_face, widen_boxes  # noqa: F401
from .process import Detector, DetectorError  # noqa: F401

__all__ = ["detect_dir", "face_crop_boxes", "detected_crop_boxes", "contact_sheet", "default_cache_path", "read_cache", "format_summary",
           "Detector", "DetectorError", "CACHE_NAME", "CACHE_COLUMNS", "CROP_COLUMNS", "FALLBACK_REASONS",
           "center_crop_boxes", "widen_boxes", "face_crops", "pick_face", "box_iou", "infer_root"]
