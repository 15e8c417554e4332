"""Process environment variables set for a block and restored after it (imports nothing of the package)."""
from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def environ(values: dict):
    """Set ``values`` in ``os.environ`` inside the block, then restore each variable (unset where it was unset).

    What a child process started inside the block inherits (a worker pool, a tune trial's processes).

    Args:
        values: variable name -> string value.

    Yields:
        None; the variables are set until the block ends.

    Example:
        >>> with environ({"MASK_KERAS_EXAMPLE": "1"}):
        ...     os.environ["MASK_KERAS_EXAMPLE"]
        '1'
        >>> "MASK_KERAS_EXAMPLE" in os.environ
        False
    """
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
