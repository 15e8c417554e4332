"""Face crops for the image table (from the cached boxes) and a contact sheet to check them by eye."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..config import PreprocessConfig
from ..data.layout import CROP_COLUMNS  # one definition, beside the table columns
from ..plots import image_grid
from .cache import PICK_CONFIDENCE, default_cache_path, read_cache, rel_key
from .geometry import face_crops, pick_face, widen_boxes

log = logging.getLogger(__name__)

#: why an image got the centre fallback instead of its face box
FALLBACK_REASONS = ("no_entry", "missing", "stale", "error", "no_face", "low_confidence", "invalid_box", "unreadable")


def infer_root(paths) -> Path:
    """The data root of paths laid out as ``ROOT/train/images/<profile>/<file>`` or ``ROOT/eval/images/<file>``.

    Args:
        paths: image paths (made absolute first).

    Returns:
        ``ROOT``, the one root all the paths share.

    Raises:
        ValueError: a path outside that layout, or paths from more than one root.

    Example:
        >>> infer_root(["/d/x/train/images/000001_female_Asian_45/mask1.jpg", "/d/x/eval/images/a.jpg"]).as_posix()
        '/d/x'
    """
    roots = set()
    for d in {os.path.dirname(os.path.abspath(str(p))) for p in paths}:
        parts = Path(d).parts
        if len(parts) >= 3 and parts[-3:-1] == ("train", "images"):
            roots.add(Path(*parts[:-3]))
        elif len(parts) >= 2 and parts[-2:] == ("eval", "images"):
            roots.add(Path(*parts[:-2]))
        else:
            raise ValueError(f"cannot infer the data root from image path {d!r} (expected .../train/images/<person>/ "
                             f"or .../eval/images/); pass root= or cache_path=")
    if len(roots) != 1:
        raise ValueError(f"the table's images come from {len(roots)} data roots {sorted(map(str, roots))[:3]}; "
                         f"pass root= and cache_path= explicitly")
    return roots.pop()


def _resolve(table: pd.DataFrame, cache_path, root) -> tuple[Path, Path]:
    if root is None:
        try:
            root = infer_root(table["path"]) if len(table) else None
        except ValueError:
            if cache_path is None:
                raise
            root = None
        if root is None:
            if cache_path is None:
                raise ValueError("empty table: pass root= or cache_path=")
            root = Path(cache_path).parent
    root = Path(root)
    cache_path = Path(cache_path) if cache_path is not None else default_cache_path(root)
    return root, cache_path


def _preprocess(cfg):
    """A PreprocessConfig from None (defaults), a PreprocessConfig or a whole Config."""

    if cfg is None:
        return PreprocessConfig()
    return getattr(cfg, "preprocess", cfg)


def _image_size(path) -> tuple[int, int] | None:
    """(height, width) from the file header, or None if it cannot be read."""

    try:
        with Image.open(path) as im:
            w, h = im.size
        return int(h), int(w)
    except Exception:
        return None


def _lookup(table: pd.DataFrame, cfg, cache_path, root, check_files: bool = True) -> pd.DataFrame:
    """Per table row: cache fields + ``reason`` (``face`` or a fallback reason) + crop geometry."""
    root, cache_path = _resolve(table, cache_path, root)
    if not cache_path.exists():
        raise FileNotFoundError(f"{cache_path}: no face-box cache; run `mask-keras detect {root}` first "
                                f"(or mask_keras.detect.detect_dir), or use crop='center'")
    cache = read_cache(cache_path).set_index("path")
    keys = [rel_key(p, root) for p in table["path"]]
    info = cache.reindex(keys)
    info.index = table.index
    n = len(table)
    reason = np.full(n, "face", dtype=object)
    has = info["status"].notna().to_numpy()
    reason[~has] = "no_entry"
    if check_files:
        # cheap staleness check: the size (a copy keeps it, an edit almost always changes it;
        # mtime is not used here because copying a data set resets it; detect_dir re-hashes)
        sizes = np.full(n, -1, dtype=np.int64)
        for j, p in enumerate(table["path"]):
            if has[j]:
                try:
                    sizes[j] = os.stat(p).st_size
                except OSError:
                    sizes[j] = -2
        reason[has & (sizes == -2)] = "missing"
        reason[has & (sizes >= 0) & (sizes != info["size"].fillna(-1).to_numpy(np.int64))] = "stale"
    ok = reason == "face"
    status = info["status"].to_numpy(dtype=object)
    conf = info["confidence"].to_numpy(np.float64)
    reason[ok & (status == "error")] = "error"
    reason[ok & (status == "no_face")] = "no_face"
    ok = reason == "face"
    low = ok & ~(conf >= float(cfg.face_min_confidence))
    reason[low] = "low_confidence"

    height = info["height"].to_numpy(np.float64, copy=True)
    width = info["width"].to_numpy(np.float64, copy=True)
    trusted = np.isin(reason, ["face", "no_face", "low_confidence"]) & (height > 0) & (width > 0)
    for j in np.flatnonzero(~trusted & (reason != "missing")):  # size not in the cache: read the header only
        hw = _image_size(table["path"].iloc[j])
        if hw is None:
            height[j] = width[j] = np.nan
            reason[j] = "unreadable"
        else:
            height[j], width[j] = hw
    boxes = info[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    readable = ~np.isin(reason, ["unreadable", "missing"])
    use_face = reason == "face"
    _, valid = widen_boxes(boxes, cfg.face_margins, np.nan_to_num(height), np.nan_to_num(width))
    reason[use_face & ~valid] = "invalid_box"
    crops, fallback = face_crops(boxes, reason == "face", cfg.face_margins, cfg.face_fallback,
                                 np.where(readable, np.nan_to_num(height), 1).astype(np.int64),
                                 np.where(readable, np.nan_to_num(width), 1).astype(np.int64))
    crops[~readable] = -1
    out = pd.DataFrame(crops, columns=list(CROP_COLUMNS), index=table.index)
    out["crop_fallback"] = fallback
    out["reason"] = reason
    out["confidence"] = conf
    for c in ("x0", "y0", "x1", "y1", "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y",
              "mouth_left_x", "mouth_left_y", "mouth_right_x", "mouth_right_y"):
        out[f"box_{c}"] = info[c].to_numpy(np.float64)
    out.attrs["root"], out.attrs["cache_path"] = str(root), str(cache_path)
    return out


def detected_crop_boxes(results, preprocess_cfg=None) -> pd.DataFrame:
    """Crop boxes of images just detected (:meth:`Detector.detect` results, one per image), by
    the rules of the cached path (:func:`face_crop_boxes`): the face kept as
    :func:`mask_keras.detect.detect_dir` keeps it, widened by ``face_margins``; the centre
    ``face_fallback`` without a confident, valid face (``reason`` says why). For images that
    have no cache entry: what a service or ``Predictor`` meets.

    Args:
        results: :meth:`Detector.detect` dicts (``width``, ``height``, ``faces`` ``(k, 15)``, ``error``).
        preprocess_cfg: a :class:`~mask_keras.config.PreprocessConfig` or a whole ``Config``;
            None: defaults.

    Returns:
        A DataFrame, one row per result: :data:`CROP_COLUMNS` (int, ``(y0, x0, y1, x1)`` end
        exclusive), ``crop_fallback``, ``reason`` (``face``, ``error``, ``no_face``,
        ``low_confidence``, ``invalid_box``), ``confidence`` (NaN without a face).

    Example:
        >>> import numpy as np
        >>> face = np.array([[100, 120, 200, 250, 0.99] + [0] * 10], np.float32)
        >>> none = np.zeros((0, 15), np.float32)
        >>> detected_crop_boxes([{"width": 384, "height": 512, "faces": face, "error": None},
        ...                      {"width": 384, "height": 512, "faces": none, "error": None}])
           crop_y0  crop_x0  crop_y1  crop_x1  crop_fallback   reason  confidence
        0       60       70      280      230          False     face        0.99
        1       86       64      426      320           True  no_face         NaN
    """
    cfg = _preprocess(preprocess_cfg)
    n = len(results)
    boxes = np.full((n, 4), np.nan)
    conf = np.full(n, np.nan)
    reason = np.full(n, "face", dtype=object)
    height = np.array([int(r.get("height") or 1) for r in results], dtype=np.int64)
    width = np.array([int(r.get("width") or 1) for r in results], dtype=np.int64)
    for j, r in enumerate(results):
        if r.get("error"):
            reason[j] = "error"
            continue
        k = pick_face(r["faces"], PICK_CONFIDENCE)
        if k < 0:
            reason[j] = "no_face"
            continue
        boxes[j], conf[j] = r["faces"][k, :4], r["faces"][k, 4]
        if not conf[j] >= float(cfg.face_min_confidence):
            reason[j] = "low_confidence"
    _, valid = widen_boxes(boxes, cfg.face_margins, height, width)
    reason[(reason == "face") & ~valid] = "invalid_box"
    crops, fallback = face_crops(boxes, reason == "face", cfg.face_margins, cfg.face_fallback, height, width)
    out = pd.DataFrame(crops, columns=list(CROP_COLUMNS))
    out["crop_fallback"], out["reason"], out["confidence"] = fallback, reason, conf
    return out


def face_crop_boxes(table: pd.DataFrame, preprocess_cfg=None, cache_path=None, root=None, *,
                    check_files: bool = True) -> pd.DataFrame:
    """Copy of ``table`` with the face crop of every image, from the cached detector boxes.

    Adds integer ``crop_y0, crop_x0, crop_y1, crop_x1`` (end exclusive: the pipeline crops the
    decoded image to ``[crop_y0:crop_y1, crop_x0:crop_x1]``), boolean ``crop_fallback`` and
    float ``face_confidence`` (NaN without a face). The crop is the cached box widened by
    ``preprocess_cfg.face_margins`` (left, top, right, bottom) and clipped to the image. The
    centre crop ``preprocess_cfg.face_fallback`` (h, w), clipped to the image, is used where:
    the image has no cache entry (``no_entry``), its file changed size since detection
    (``stale``), detection failed (``error``), no face was found
    (``no_face``), the confidence is below ``face_min_confidence`` (``low_confidence``) or
    the widened box is empty (``invalid_box``). An image whose file is gone (``missing``) or
    whose header cannot be read (``unreadable``) gets ``-1`` crop columns (the pipeline
    cannot decode it either).

    Counts per reason (plus ``total`` and ``of``) go to ``table.attrs["face_fallbacks"]`` and
    the log. Cache location: ``cache_path``, default ``root/face_boxes.parquet`` where
    ``root`` is given or inferred from the table's paths (``ROOT/train/images/...``,
    ``ROOT/eval/images/...``); cache keys are paths relative to ``root``.

    Args:
        table: the image table (``path``).
        preprocess_cfg: a :class:`~mask_keras.config.PreprocessConfig` (or a whole ``Config``;
            None = defaults) giving ``face_margins``, ``face_fallback``, ``face_min_confidence``.
        cache_path: the face-box cache; None: ``root/face_boxes.parquet``.
        root: the data folder the cache keys are relative to; None: inferred (:func:`infer_root`),
            or the cache's folder when that fails and ``cache_path`` is given.
        check_files: compare each file's size with the cache (one ``stat`` per image).

    Returns:
        The copy, with the columns and ``attrs["face_fallbacks"]`` described above.

    Raises:
        FileNotFoundError: there is no cache (run ``mask-keras detect`` first).
        ValueError: the root cannot be inferred and no ``cache_path`` is given.
    """
    cfg = _preprocess(preprocess_cfg)
    info = _lookup(table, cfg, cache_path, root, check_files=check_files)
    out = table.copy()
    for c in CROP_COLUMNS:
        out[c] = info[c].astype(np.int64)
    out["crop_fallback"] = info["crop_fallback"].astype(bool)
    out["face_confidence"] = info["confidence"].astype(np.float64)
    reasons = info["reason"].to_numpy()
    counts = {r: int(np.sum(reasons == r)) for r in FALLBACK_REASONS}
    counts["total"] = int(out["crop_fallback"].sum())
    counts["of"] = len(out)
    out.attrs["face_fallbacks"] = counts
    if counts["total"]:
        detail = ", ".join(f"{r} {counts[r]}" for r in FALLBACK_REASONS if counts[r])
        msg = (f"face crop: {counts['total']} of {counts['of']} images use the centre fallback "
               f"{tuple(cfg.face_fallback)} ({detail})")
        hints = []
        if counts["no_entry"] + counts["stale"]:
            hints.append(f"run `mask-keras detect {info.attrs['root']}` to detect the new or changed images")
        bad = [p for p, r in zip(table["path"], reasons) if r in ("missing", "unreadable")]
        if bad:
            hints.append(f"{len(bad)} image(s) cannot be read (crop columns -1): fix or remove "
                         + ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else ""))
        if hints:
            log.warning("%s; %s", msg, "; ".join(hints))
        else:
            log.info("%s", msg)
    return out


def _draw(path, row, max_side: int = 256) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except Exception:
        im = Image.new("RGB", (96, 128), (60, 60, 60))
        return np.asarray(im)
    scale = min(1.0, max_side / max(im.size))
    lw = max(2, int(round(3 / max(scale, 1e-3) * 0.5)))
    d = ImageDraw.Draw(im)
    y0, x0, y1, x1 = (int(row[c]) for c in CROP_COLUMNS)
    if y1 > y0 and x1 > x0:
        d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 60, 60) if row["crop_fallback"] else (255, 220, 0),
                    width=lw)
    if np.isfinite(row["box_x0"]):
        d.rectangle([row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"]], outline=(0, 255, 0), width=lw)
        r = lw + 1
        for k in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"):
            x, y = row[f"box_{k}_x"], row[f"box_{k}_y"]
            if np.isfinite(x) and np.isfinite(y):
                d.ellipse([x - r, y - r, x + r, y + r], fill=(0, 200, 255))
    if scale < 1:
        im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))), Image.BILINEAR)
    return np.asarray(im)


def _short_name(path) -> str:
    p = Path(path)
    parent = p.parent.name
    name = f"{parent.split('_')[0]}/{p.stem}" if parent and parent != "images" else p.stem
    return name if len(name) <= 22 else name[:10] + ".." + name[-10:]


def contact_sheet(table: pd.DataFrame, preprocess_cfg=None, path="face_crops.png", n: int = 24, seed: int = 0,
                  cache_path=None, root=None, cols: int = 8) -> Path:
    """PNG of ``n`` random images (fixed by ``seed``) with their boxes drawn, to check them by eye.

    Green: the detector box, cyan dots: its 5 keypoints; yellow: the widened face crop;
    red: the centre fallback crop. Captions: image, ``face <confidence>`` or
    ``fallback: <reason>``.

    Args:
        table: the image table (``path``).
        preprocess_cfg: as in :func:`face_crop_boxes`.
        path: the PNG to write.
        n: images to draw (at most the table's).
        seed: picks the images.
        cache_path: as in :func:`face_crop_boxes`.
        root: as in :func:`face_crop_boxes`.
        cols: images per row.

    Returns:
        The PNG's path (from :func:`mask_keras.plots.image_grid`).

    Raises:
        ValueError: the table is empty.
    """
    cfg = _preprocess(preprocess_cfg)
    if len(table) == 0:
        raise ValueError("contact_sheet: the table is empty")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(table), size=min(int(n), len(table)), replace=False))
    sub = table.iloc[pick]
    info = _lookup(sub, cfg, cache_path, root)
    images, captions = [], []
    for (_, row), p in zip(info.iterrows(), sub["path"]):
        images.append(_draw(p, row))
        head = _short_name(p)
        if row["crop_fallback"]:
            extra = f" {row['confidence']:.2f}" if row["reason"] == "low_confidence" else ""
            captions.append(f"{head}\nfallback: {row['reason']}{extra}")
        else:
            captions.append(f"{head}\nface {row['confidence']:.3f}")
    n_fb = int(info["crop_fallback"].sum())
    title = (f"face crops, {len(info)} random images (seed {seed}): {len(info) - n_fb} face, {n_fb} fallback\n"
             f"green = detector box, yellow = widened crop {tuple(cfg.face_margins)} (l, t, r, b), "
             f"red = centre fallback {tuple(cfg.face_fallback)}")
    return image_grid(images, captions, path, cols=min(cols, len(images)), title=title)
