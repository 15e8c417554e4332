"""Precise BatchNorm statistics (mask_keras.bn_stats) and the callback that runs them in fit."""
from __future__ import annotations

import mask_keras  # noqa: F401  (JAX backend)

import keras
import numpy as np

from mask_keras import bn_stats
from mask_keras.augment import Augmentation
from mask_keras.callbacks import PreciseBatchNorm


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    h = Augmentation("base", seed=0, name="augmentation")(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(h)
    h = keras.layers.Dropout(0.5, name="dropout")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Conv2D(4, 1, name="conv2")(h)
    h = keras.layers.BatchNormalization(name="frozen_bn")(h)
    return keras.Model(inp, h)


def _batches(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (16, 8, 8, 3)).astype("float32") for _ in range(n)]


def test_moving_statistics_become_the_mean_of_the_batch_statistics():
    m = _model()
    m.get_layer("frozen_bn").trainable = False
    frozen_before = [np.asarray(v) for v in m.get_layer("frozen_bn").non_trainable_weights]
    batches = _batches()
    # what the layer sees at inference: no augmentation, no dropout (numpy reference)
    feats = [np.asarray(keras.Model(m.input, m.get_layer("conv").output).predict(b, verbose=0)) for b in batches]
    assert bn_stats.recompute(m, batches) == 3
    bn = m.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean, np.mean([f.mean(axis=(0, 1, 2)) for f in feats], axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance, np.mean([f.var(axis=(0, 1, 2)) for f in feats], axis=0),
                               rtol=1e-5)
    for before, after in zip(frozen_before, m.get_layer("frozen_bn").non_trainable_weights):
        np.testing.assert_array_equal(before, after)  # frozen layers keep their statistics
    # the attributes changed for the pass are restored
    assert bn.momentum == 0.99 and m.get_layer("dropout").rate == 0.5 and m.get_layer("augmentation").enabled


def test_the_callback_runs_before_every_validation_of_fit():
    m = _model()
    m.compile(keras.optimizers.SGD(0.0), "mse")  # lr 0: weights fixed, only statistics move
    x = np.concatenate(_batches(2))
    y = np.zeros((len(x), 8, 8, 4), "float32")
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_test_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen.append(np.asarray(self.model.get_layer("bn").moving_mean).copy())

    cb = PreciseBatchNorm(_batches(2, seed=1))
    m.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), callbacks=[cb, Spy()], verbose=0)
    assert cb.runs == 2
    expect = keras.Model(m.input, m.get_layer("conv").output).predict(np.concatenate(_batches(2, seed=1)),
                                                                     batch_size=16, verbose=0)
    for mean in seen:  # validation saw the recomputed statistics, not the moving averages of training
        np.testing.assert_allclose(mean, np.asarray(expect).reshape(2, -1, 4).mean(axis=1).mean(axis=0), rtol=1e-4)


def _one_short_epoch(synth_root, out, precise_bn):
    """tiny_cnn from scratch, one epoch (21 steps of 16) of the mask task with class-balanced
    sampling, at Keras' default BN momentum 0.99; (labels, inference answers, training-mode
    answers) on the validation images."""
    import pandas as pd

    from mask_keras import pipeline
    from mask_keras.config import Config
    from mask_keras.train import train

    cfg = Config().override(**{
        "model.backbone": "tiny_cnn", "model.weights": None, "model.bn_momentum": 0.99,
        "preprocess.image_size": (64, 48), "preprocess.crop": "none", "augment.preset": "none",
        "train.task": "mask", "train.epochs": 1, "train.batch_size": 16, "train.lr": 3e-3, "train.verbose": 0,
        "sampling.balance": "class", "train.precise_bn": precise_bn,
        "data.data_dir": str(synth_root), "train.out_dir": str(out)})
    res = train(cfg)
    model = keras.saving.load_model(res.model_path)
    val = pd.read_csv(out / "val_predictions.csv")
    ds, n = pipeline.make_predict_dataset(val["path"].tolist(), cfg.preprocess, 32, progress=False)
    x = np.concatenate(list(ds.as_numpy_iterator()))[:n]
    y = val["y_true"].to_numpy()
    infer = model.predict(x, batch_size=32, verbose=0).argmax(1)
    with bn_stats.statistics_mode(model):  # training mode: batch statistics, nothing random
        train_mode = np.concatenate([np.asarray(model(x[i:i + 32], training=True)) for i in range(0, len(x), 32)])
    return y, infer, train_mode.argmax(1)


def test_a_model_trained_one_short_epoch_validates_as_it_trains(synth_root, tmp_path):
    """Issue 16: with precise BN, validation sees the trained network - not one class for every
    image, accuracy within a few points of the same images in training mode (batch statistics),
    and mostly the same answers. Without it (moving averages at momentum 0.99 after 21 steps)
    validation answers as a different network."""
    y, infer, train_mode = _one_short_epoch(synth_root, tmp_path / "precise", 1024)
    assert len(np.unique(infer)) > 1
    acc_infer, acc_train = (infer == y).mean(), (train_mode == y).mean()
    assert acc_train > 0.45, acc_train  # it learned in 21 steps (3 balanced classes: chance 1/3)
    assert abs(acc_infer - acc_train) <= 0.07, (acc_infer, acc_train)
    agree = (infer == train_mode).mean()
    assert agree >= 0.8, agree

    _, infer_ema, train_mode_ema = _one_short_epoch(synth_root, tmp_path / "ema", 0)
    assert (infer_ema == train_mode_ema).mean() < agree - 0.1
