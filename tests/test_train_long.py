"""Options for long runs: EMA of the weights, gradient clipping by global norm, last.keras and
the top-k checkpoints (resume: tests/test_resume.py)."""
from __future__ import annotations

import numpy as np
import pytest

from mask_keras.config import Config, ConfigError

FAST = {"model.backbone": "tiny_cnn", "model.weights": None, "preprocess.image_size": (32, 24),
        "preprocess.crop": "none", "train.batch_size": 32, "train.lr": 3e-3, "train.verbose": 0,
        "augment.preset": "none", "train.precise_bn": 32, "train.task": "gender", "data.max_people": 24,
        "train.save_last": False}


def _cfg(root, out, **over):
    return Config().override(**{**FAST, "data.data_dir": str(root), "train.out_dir": str(out), **over})


def test_clipping_bounds_a_step_by_lr_times_the_clip_norm():
    """SGD without momentum: a step moves the weights by lr * gradient; with a huge gradient and
    clip_norm c the whole step (over every variable together) has norm lr * c exactly."""
    import keras

    from mask_keras.train import _build_optimizer

    for clip, expect in ((2.5, 0.1 * 2.5), (0.0, 0.1 * 1e6 * np.sqrt(7))):
        cfg = Config().override(**{"train.optimizer": "sgd", "train.momentum": 0.0, "train.lr": 0.1,
                                   "train.schedule": "constant", "train.clip_norm": clip, "train.epochs": 1})
        opt = _build_optimizer(cfg, steps_per_epoch=10)
        vs = [keras.Variable(np.zeros((3,), "float32")), keras.Variable(np.zeros((2, 2), "float32"))]
        opt.apply([np.full((3,), 1e6, "float32"), np.full((2, 2), 1e6, "float32")], vs)
        step = np.sqrt(sum(float(np.sum(keras.ops.convert_to_numpy(v) ** 2)) for v in vs))
        assert step == pytest.approx(expect, rel=1e-5)


def test_bad_values_are_rejected():
    for key, value in (("train.ema", 1.0), ("train.ema", -0.1), ("train.clip_norm", -1.0),
                       ("train.keep_top_k", -1)):
        with pytest.raises(ConfigError, match=key):
            Config().override(**{key: value}).validate()


@pytest.mark.slow
def test_ema_weights_are_validated_and_saved(synth_root, tmp_path):
    """The saved model.keras holds the exponential moving average of the weights after every
    step (Keras' rule: the first step's weights, then m * avg + (1 - m) * w), not the last ones."""
    import keras

    from mask_keras.train import train

    m = 0.8
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([np.array(w) for w in self.model.trainable_weights])

    cfg = _cfg(synth_root, tmp_path / "ema", **{"train.epochs": 1, "train.ema": m, "train.schedule": "constant"})
    res = train(cfg, callbacks=[Record()])
    avg = seen[0]
    for ws in seen[1:]:
        avg = [m * a + (1 - m) * w for a, w in zip(avg, ws)]
    saved = keras.saving.load_model(res.model_path)
    got = [np.array(w) for w in saved.trainable_weights]
    assert len(seen) >= 3 and len(got) == len(avg)
    for a, g in zip(avg, got):
        np.testing.assert_allclose(g, a, atol=1e-5)
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, seen[-1])) > 1e-3  # not the last weights


@pytest.mark.slow
def test_last_and_top_k_checkpoints(synth_root, tmp_path):
    import keras
    import pandas as pd

    from mask_keras.train import train

    out = tmp_path / "run"
    res = train(_cfg(synth_root, out, **{"train.epochs": 4, "train.keep_top_k": 2, "train.save_last": True}))
    hist = pd.read_csv(out / "history.csv")
    f1 = hist["val_macro_f1"].to_numpy()
    order = sorted(range(len(f1)), key=lambda e: (-f1[e], e))[:2]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == sorted(f"epoch_{e + 1:03d}.keras" for e in order)
    assert not list(out.rglob("*.tmp*"))  # every write was atomic
    best = keras.saving.load_model(out / "checkpoints" / f"epoch_{order[0] + 1:03d}.keras")
    for a, b in zip(best.get_weights(), keras.saving.load_model(res.model_path).get_weights()):
        np.testing.assert_array_equal(a, b)  # the top checkpoint is model.keras
    assert (out / "last.keras").is_file()
