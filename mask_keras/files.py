"""Atomic file writes: every artifact appears whole or not at all.

Writers (text, Keras models, PNGs, parquet, numpy arrays) write to a temporary file in the
destination's folder, which is renamed over the destination only once the write finished;
an exception, a kill or a full disk leaves the previous file (or none), never a partial one.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, fsync: bool = True):
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name is unique (``mkstemp``: safe when several processes or hosts write
    into one shared folder) and keeps ``path``'s suffix (Keras and numpy choose the format
    from it). ``fsync``: flush the file to disk before the rename, so that a crash right
    after cannot leave an empty file under the final name. On error the temporary file is
    removed and the exception propagates. (``.weights.h5`` is kept whole: Keras' ``save_weights``
    asks for it.)

    Args:
        path: the destination file (str or ``Path``); its folder is created when missing.
        fsync: flush the temporary file to disk before the rename.

    Yields:
        The temporary ``Path`` to write to (it exists, empty); renamed over ``path`` when the
        ``with`` block exits without an exception.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix  # Keras wants it whole
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the destination file (str or ``Path``); its folder is created when missing.
        text: the whole content, written with the platform's default encoding.

    Returns:
        ``Path(path)``.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
