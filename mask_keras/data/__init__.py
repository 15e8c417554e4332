"""Data layer: reading the layout, relabeling, synthetic data, splits, TFDS builder."""
from .layout import LayoutError, read_eval, read_train, verify_images, with_labels  # noqa: F401
