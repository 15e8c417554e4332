"""Checks of image files before any work starts, and JPEG sizes read from their headers.

Undecodable files are found before any work starts (:func:`check_images`, a cheap header
and trailer check of every file) and reported by path (:class:`ImageError`); anything that
still fails to decode later stops the pipeline with an error naming the file, never a
silent drop. :func:`jpeg_size` reads a JPEG's size from its frame header, which the
cache's grouped decode needs before decoding anything.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .._tf import tf
from ..data.layout import verify_images
from .decode import decode_image

log = logging.getLogger(__name__)

CHECK_MODES = ("fast", "full", "none")

#: JPEG frame-header (SOF) markers: baseline, extended, progressive, lossless, arithmetic
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class ImageError(ValueError):
    """Image files that cannot be decoded; ``.bad`` lists ``(path, reason)``.

    Args:
        bad: ``(path, reason)`` of each file.
        total: how many files were looked at (for the message), or None.
    """

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


def sniff_format(head: bytes) -> str | None:
    """The image format of a file's first 16 bytes.

    Args:
        head: the file's first bytes (16 are enough).

    Returns:
        ``"JPEG"``, ``"PNG"``, ``"GIF"``, ``"BMP"``, ``"WEBP"``, or None.
    """
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


def jpeg_size(path: str, limit: int = 1 << 20) -> tuple[int, int] | None:
    """The size of a JPEG from its frame header, reading only the header.

    The first SOF marker, as libjpeg reads it; EXIF thumbnails sit inside APP segments and
    are skipped.

    Args:
        path: the file.
        limit: give up when no frame header is found in the first ``limit`` bytes.

    Returns:
        ``(height, width)``; ``None`` when the file is not a JPEG (TensorFlow's ``is_jpeg``
        test), cannot be read, or has no frame header in its first ``limit`` bytes.
    """
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
    """:func:`jpeg_size` of every path (each file read once).

    Args:
        paths: file paths (repeats allowed).

    Returns:
        ``(n, 2)`` int32 ``(height, width)``, ``-1`` where unknown.
    """
    paths = np.asarray(paths, dtype=object)
    if len(paths) == 0:
        return np.zeros((0, 2), np.int32)
    uniq, inv = np.unique(paths.astype(str), return_inverse=True)
    sizes = [jpeg_size(p) for p in uniq.tolist()]  # one thread: ~15 us per file, 4-6x less than a thread pool (the GIL)
    return np.array([s or (-1, -1) for s in sizes], np.int32).reshape(-1, 2)[inv.reshape(-1)]


def _tf_decodes(path: str) -> str | None:
    """None if TensorFlow decodes the file, else its error message."""
    try:
        decode_image(tf.io.read_file(path))
        return None
    except (tf.errors.OpError, ValueError) as e:
        return str(getattr(e, "message", e)).strip().splitlines()[0]


def check_file(path: str) -> str | None:
    """Cheap check of one file (header + trailer); a suspicious file is decoded by TF to confirm.

    Args:
        path: the file.

    Returns:
        None when the file looks decodable, else the reason it is not.
    """

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
    """The files the pipeline could not decode.

    Args:
        paths: the files.
        mode: ``fast``: file signature, PIL header parse and JPEG/PNG end marker of every
            file (~50 us per file, :func:`check_file`), confirming suspicious files by
            decoding them with TF; ``full``: decode every file
            (:func:`mask_keras.data.verify_images`); ``none``: skip.
        progress: show a progress bar (for 2,000 files or more).

    Returns:
        ``(path, reason)`` for every bad file.
    """
    if mode not in CHECK_MODES:
        raise ValueError(f"check must be one of {CHECK_MODES}, got {mode!r}")
    paths = [str(p) for p in paths]
    if mode == "none" or not paths:
        return []
    if mode == "full":
        return verify_images(paths, progress=progress)

    # one thread: the check is mostly Python (the GIL), and a thread pool made it 3-4x slower
    results = [check_file(p) for p in tqdm(paths, desc="check images", unit="img",
                                           disable=not progress or len(paths) < 2000)]
    return [(p, r) for p, r in zip(paths, results) if r is not None]


def checked_table(table: pd.DataFrame, check: str, on_error: str = "raise", progress: bool = True) -> pd.DataFrame:
    """The table after :func:`check_images` of its files: unchanged, or without the bad files.

    Args:
        table: the image table (``path``).
        check: the :func:`check_images` mode.
        on_error: ``"raise"``: raise :class:`ImageError` on undecodable files; ``"skip"``:
            drop their rows with a report (:func:`drop_bad_files`).
        progress: show the check's progress bar.

    Returns:
        The table, without the rows of undecodable files when ``on_error="skip"``.
    """
    bad = check_images(table["path"].unique(), check, progress=progress)
    if not bad:
        return table
    if on_error != "skip":
        raise ImageError(bad, total=table["path"].nunique())
    return drop_bad_files(table, bad)


def drop_bad_files(table: pd.DataFrame, bad) -> pd.DataFrame:
    """The table without the rows of ``bad`` files, reported (``data.on_error='skip'``).

    Args:
        table: the image table (``path``).
        bad: ``(path, reason)`` of each undecodable file.

    Returns:
        The remaining rows; ``attrs["skipped_images"]`` records ``bad`` (added to what it held).
    """
    bad_paths = {p for p, _ in bad}
    log.warning("skipped %d undecodable image(s) (data.on_error='skip'):\n  %s", len(bad),
                "\n  ".join(f"{p}: {r}" for p, r in bad))
    out = table[~table["path"].astype(str).isin(bad_paths)]
    out.attrs = dict(table.attrs)
    out.attrs["skipped_images"] = list(table.attrs.get("skipped_images", [])) + list(bad)
    return out
