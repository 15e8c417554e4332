"""JAX compiles each step once: a ragged data set (37 train / 13 validation images, batch 8)
costs exactly one train-step and one eval-step compile over two epochs of ``train()``."""
from __future__ import annotations

import pytest

from mask_keras.config import Config

FAST = {"model.backbone": "tiny_cnn", "model.weights": None, "preprocess.image_size": (32, 24),
        "preprocess.crop": "none", "train.batch_size": 8, "train.lr": 3e-3, "train.verbose": 0,
        "augment.preset": "none", "train.task": "mask", "train.epochs": 2, "train.save_last": False}


def test_compile_counter_sees_a_ragged_recompile():
    """The counter itself: numpy arrays with a ragged last batch do recompile (2 + 2)."""
    import keras
    import numpy as np

    from mask_keras.jax_backend.distribute import CompileCounter

    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 37), 3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    with CompileCounter() as cc:
        model.fit(x, y, batch_size=8, epochs=2, validation_data=(x[:13], y[:13]), verbose=0)
    assert cc.count("train_step") == 2, cc  # 8-row batches + the 5-row last batch
    assert cc.count("test_step") == 2, cc


@pytest.mark.slow
def test_one_train_and_one_eval_compile_with_ragged_data(synth_root, tmp_path, monkeypatch):
    from mask_keras import train as train_mod
    from mask_keras.data import layout
    from mask_keras.jax_backend.distribute import CompileCounter

    table = layout.read_train(synth_root)
    train_t = table.iloc[:37].reset_index(drop=True)
    val_t = table.iloc[37:50].reset_index(drop=True)
    monkeypatch.setattr(train_mod, "prepare_tables", lambda cfg: (train_t, val_t))
    cfg = Config().override(**{**FAST, "data.data_dir": str(synth_root), "train.out_dir": str(tmp_path / "run")})
    with CompileCounter() as cc:
        res = train_mod.train(cfg)
    assert res.metrics["train_images"] == 37 and res.metrics["val_images"] == 13
    assert res.metrics["epochs_run"] == 2
    assert cc.count("train_step") == 1, cc
    assert cc.count("test_step") == 1, cc
