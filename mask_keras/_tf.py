"""Import TensorFlow for tf.data only, hidden from every GPU (JAX owns the accelerator)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # already initialised by the user; leave their choice alone
    pass

__all__ = ["tf"]
