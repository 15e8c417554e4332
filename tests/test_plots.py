"""The PNGs: written whole (atomically), one panel per measure in the training history."""
from __future__ import annotations

import numpy as np


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()  # the whole file decodes
        return im.size


def test_history_has_one_panel_per_measure_with_every_head(tmp_path, monkeypatch):
    from mask_keras import plots

    drawn = {}
    real = plots.save_figure

    def spy(fig, path):
        drawn[path.name] = {ax.get_title(): sorted(line.get_label() for line in ax.get_lines()) for ax in fig.axes}
        return real(fig, path)

    monkeypatch.setattr(plots, "save_figure", spy)
    e = [1.0, 0.5]
    multi = {f"{h}_{m}": e for h in ("mask", "gender", "age") for m in ("loss", "macro_f1")}
    multi.update({f"val_{k}": e for k in list(multi)}, loss=e, val_loss=e, val_macro_f1=e, learning_rate=e)
    plots.history(multi, tmp_path / "multi.png")
    assert drawn["multi.png"] == {
        "loss": ["age train", "age val", "gender train", "gender val", "mask train", "mask val", "total train",
                 "total val"],
        "macro f1": ["18 classes val", "age train", "age val", "gender train", "gender val", "mask train", "mask val"]}
    plots.history({"loss": e, "val_loss": e, "macro_f1": e, "val_macro_f1": e}, tmp_path / "one.png")
    assert drawn["one.png"] == {"loss": ["train", "val"], "macro f1": ["train", "val"]}
    w2, h2 = _png_size(tmp_path / "multi.png")
    assert h2 > 200 and w2 > 2 * h2  # panels side by side
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.png", "one.png"]  # no temp file left


def test_confusion_matrix_png(tmp_path):
    from mask_keras import plots

    cm = np.arange(9).reshape(3, 3)
    path = plots.confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cm.png")
    assert path == tmp_path / "cm.png" and min(_png_size(path)) > 200
