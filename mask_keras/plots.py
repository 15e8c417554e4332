"""Every PNG the package draws. Matplotlib with the Agg backend; files written atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import labels as L
from .files import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Save ``fig`` as PNG via a temp file + rename; closes the figure.

    Args:
        fig: a matplotlib figure (laid out already: saved at 110 dpi, no ``bbox_inches``).
        path: the PNG to write.

    Returns:
        ``Path(path)``.
    """
    plt = _plt()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            # laid out by the figure (tight_layout), so drawn once: bbox_inches="tight" would draw it again
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def class_balance(counts: dict[str, dict[str, int]], path, title: str = "class balance") -> Path:
    """Bar charts side by side, one per entry: ``{"label": {"0": n, ...}, "gender": {...}}``.

    Args:
        counts: panel title -> ``{bar name: count}`` (bar names shown as strings, in order).
        path: the PNG to write.
        title: the figure's title.

    Returns:
        ``Path(path)``.
    """
    plt = _plt()
    n = len(counts)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, (name, c) in zip(axes[0], counts.items()):
        keys, vals = list(map(str, c.keys())), list(c.values())
        bars = ax.bar(range(len(keys)), vals, color="#4C72B0")
        ax.set_xticks(range(len(keys)), keys, rotation=60 if len(keys) > 6 else 0, fontsize=8)
        ax.set_title(name)
        for b, v in zip(bars, vals):
            ax.annotate(str(v), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_matrix(cm, class_names, path, title: str = "confusion matrix", normalize: bool = True) -> Path:
    """Confusion matrix (rows = truth, columns = prediction); counts annotated, colour row-normalised.

    Args:
        cm: ``(k, k)`` counts.
        class_names: ``k`` tick labels.
        path: the PNG to write.
        title: the axes' title.
        normalize: colour by each row's share (0..1); False: by the raw counts.

    Returns:
        ``Path(path)``.
    """
    plt = _plt()
    cm = np.asarray(cm)
    k = cm.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / cm.sum(axis=1, keepdims=True) if normalize else cm
    norm = np.nan_to_num(norm)
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(k), class_names, rotation=90 if k > 4 else 0, fontsize=7 if k > 6 else 9)
    ax.set_yticks(range(k), class_names, fontsize=7 if k > 6 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=6 if k > 6 else 9,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def image_grid(images, captions, path, cols: int = 8, title: str | None = None) -> Path:
    """A contact sheet: uint8/float HxWx3 images (any sizes) with a caption each.

    Args:
        images: ``(H, W, 3)`` arrays; non-uint8 ones are min-max scaled to 0..255 each.
        captions: one per image (``str()`` of it is shown).
        path: the PNG to write.
        cols: images per row (at most the number of images).
        title: the figure's title, or None.

    Returns:
        ``Path(path)``.
    """
    plt = _plt()
    images = list(images)
    n = max(1, len(images))
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, cap in zip(axes.ravel(), images, captions):
        img = np.asarray(img)
        if img.dtype != np.uint8:
            lo, hi = float(img.min()), float(img.max())
            img = ((img - lo) / (hi - lo + 1e-8) * 255).astype(np.uint8)
        ax.imshow(img)
        ax.set_title(str(cap), fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _metric_kind(key: str) -> tuple[str, str]:
    """``("loss", "mask")`` for ``mask_loss``, ``("macro_f1", "")`` for ``macro_f1``: what is
    measured, and of which head (multi-head models log one of each per head)."""
    for head in L.HEADS:
        if key.startswith(head + "_"):
            return key[len(head) + 1:], head
    return key, ""


def history(hist: dict[str, list[float]], path, title: str = "training history") -> Path:
    """Loss and metric curves from a Keras history dict: one panel per measure (loss,
    accuracy, macro F1, ...), training solid and validation dashed, one colour per head.

    Multi-head runs log each measure per head (``mask_loss``, ``gender_macro_f1``, ...):
    they share their measure's panel, so the heads can be compared at a glance.

    Args:
        hist: ``keras.callbacks.History.history``: name -> one value per epoch (``val_*`` for
            validation; ``learning_rate`` is not drawn).
        path: the PNG to write.
        title: the figure's title.

    Returns:
        ``Path(path)``.
    """
    plt = _plt()
    panels: dict[str, list[tuple[str, str]]] = {}
    for k in hist:
        if k.startswith("val_") or k == "learning_rate":
            continue
        kind, head = _metric_kind(k)
        panels.setdefault(kind, []).append((k, head))
    for k in hist:  # validation-only measures (the 18-class macro F1 of a multi-head run)
        if k.startswith("val_") and k[4:] not in hist:
            kind, head = _metric_kind(k[4:])
            panels.setdefault(kind, []).append((k[4:], head))
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    colours = {"": "#333333", "mask": "#4C72B0", "gender": "#DD8452", "age": "#55A868"}
    for ax, (kind, keys) in zip(axes[0], panels.items()):
        for k, head in keys:
            c = colours[head]
            name = head or ("" if len(keys) == 1 else "18 classes" if kind == "macro_f1" else "total")
            if k in hist:
                ax.plot(hist[k], color=c, label=f"{name} train".strip())
            if f"val_{k}" in hist:
                ax.plot(hist[f"val_{k}"], color=c, linestyle="--", label=f"{name} val".strip())
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(kind.replace("_", " "))
        ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
