"""Macro F1 (streaming Keras metric and numpy helpers) against scikit-learn."""
from __future__ import annotations

import mask_keras  # noqa: F401  (selects the JAX backend)

import keras
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_cm
from sklearn.metrics import f1_score

from mask_keras import metrics as M


def sk_macro(t, p, sw=None):
    """sklearn's default macro F1 (classes present in t or p)."""
    return f1_score(t, p, average="macro", sample_weight=sw, zero_division=0)


def stream(metric, y_true, y_pred, sw=None, batch=16):
    metric.reset_state()
    for i in range(0, len(y_true), batch):
        s = slice(i, i + batch)
        metric.update_state(y_true[s], y_pred[s], None if sw is None else sw[s])
    return float(keras.ops.convert_to_numpy(metric.result()))


def probs_for(rng, labels, c):
    """Random probabilities whose argmax is ``labels``."""
    p = rng.uniform(0, 1, (len(labels), c)).astype("float32")
    p[np.arange(len(labels)), labels] += 1.0
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("c", [2, 3, 18])
def test_streaming_macro_f1_matches_sklearn_uneven_batches(c):
    rng = np.random.default_rng(c)
    n = 103  # 6 batches of 16 + one of 7
    t = rng.integers(0, c, n)
    p = np.where(rng.uniform(size=n) < 0.6, t, rng.integers(0, c, n))
    if c > 2:
        p[p == c - 1] = 0  # the last class is never predicted
    y_true = np.eye(c, dtype="float32")[t]
    m = M.MacroF1(c)
    got = stream(m, y_true, probs_for(rng, p, c))
    assert got == pytest.approx(sk_macro(t, p), abs=1e-6)
    # soft targets (MixUp) count as their argmax
    soft = 0.6 * y_true + 0.4 * np.eye(c, dtype="float32")[rng.integers(0, c, n)]
    soft_t = soft.argmax(1)
    assert stream(m, soft, probs_for(rng, p, c)) == pytest.approx(sk_macro(soft_t, p), abs=1e-6)


def test_hand_made_absent_and_never_predicted_classes():
    # 4 classes: class 3 never appears at all, class 2 is targeted but never predicted
    t = np.array([0, 0, 1, 1, 2, 2, 0])
    p = np.array([0, 1, 1, 1, 0, 1, 0])
    # F1_0 = 2*2/(3+3) = 2/3, F1_1 = 2*2/(2+4) = 2/3, F1_2 = 0; class 3 left out
    expect = (2 / 3 + 2 / 3 + 0) / 3
    assert sk_macro(t, p) == pytest.approx(expect)
    m = M.MacroF1(4)
    assert stream(m, np.eye(4, dtype="float32")[t], np.eye(4, dtype="float32")[p], batch=3) == pytest.approx(expect)
    assert M.macro_f1(t, p, num_classes=4) == pytest.approx(expect)
    # sklearn over all 4 labels counts class 3 as 0
    assert M.macro_f1(t, p, num_classes=4, labels=range(4)) == pytest.approx(
        f1_score(t, p, average="macro", labels=range(4), zero_division=0))
    for bad in ([0, 4], [-1]):  # outside the 4 classes: named, not an IndexError or a wrapped index
        with pytest.raises(ValueError, match=r"labels \[-?\d\] are outside the 4 classes 0..3; pass num_classes"):
            M.macro_f1(t, p, num_classes=4, labels=bad)


def test_sample_weight_zero_rows_are_ignored():
    rng = np.random.default_rng(0)
    c, n = 18, 45
    t = rng.integers(0, 12, n)  # classes 12..17 appear only in the padding
    p = np.where(rng.uniform(size=n) < 0.5, t, rng.integers(0, 12, n))
    pad = 19
    t_pad = np.r_[t, rng.integers(12, 18, pad)]
    p_pad = np.r_[p, rng.integers(12, 18, pad)]
    sw = np.r_[np.ones(n), np.zeros(pad)].astype("float32")
    m = M.MacroF1(c)
    got = stream(m, np.eye(c, dtype="float32")[t_pad], probs_for(rng, p_pad, c), sw, batch=16)
    assert got == pytest.approx(sk_macro(t, p), abs=1e-6)
    assert M.macro_f1(t_pad, p_pad, c, sample_weight=sw) == pytest.approx(sk_macro(t, p))
    # fractional weights: sklearn's weighted counts
    w = rng.uniform(0.1, 3, n).astype("float32")
    got = stream(m, np.eye(c, dtype="float32")[t], probs_for(rng, p, c), w, batch=16)
    assert got == pytest.approx(sk_macro(t, p, w), abs=1e-5)


def test_integer_targets_reset_and_config():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 3, 30)
    p = rng.integers(0, 3, 30)
    m = M.MacroF1(3)
    pp = probs_for(rng, p, 3)
    assert stream(m, t, pp, batch=7) == pytest.approx(sk_macro(t, p), abs=1e-6)
    assert stream(m, t[:, None], pp, batch=7) == pytest.approx(sk_macro(t, p), abs=1e-6)
    m.reset_state()
    assert float(keras.ops.convert_to_numpy(m.result())) == 0.0
    assert m.get_config()["num_classes"] == 3
    again = keras.metrics.deserialize(keras.metrics.serialize(m))
    assert isinstance(again, M.MacroF1) and again.num_classes == 3 and again.name == "macro_f1"


def test_numpy_helpers_match_sklearn():
    rng = np.random.default_rng(2)
    for c in (2, 3, 18):
        t = rng.integers(0, c, 200)
        p = np.where(rng.uniform(size=200) < 0.5, t, rng.integers(0, c, 200))
        w = rng.uniform(0, 2, 200)
        np.testing.assert_array_equal(M.confusion_matrix(t, p, c), sk_cm(t, p, labels=range(c)))
        np.testing.assert_allclose(M.confusion_matrix(t, p, c, w), sk_cm(t, p, labels=range(c), sample_weight=w))
        np.testing.assert_allclose(M.per_class_f1(t, p, c),
                                   f1_score(t, p, average=None, labels=range(c), zero_division=0))
        assert M.macro_f1(t, p) == pytest.approx(sk_macro(t, p))
        assert M.macro_f1(t, p, c, sample_weight=w) == pytest.approx(sk_macro(t, p, w))
        # 2-D inputs (one-hot targets, probabilities) are argmaxed
        assert M.macro_f1(np.eye(c)[t], probs_for(rng, p, c)) == pytest.approx(sk_macro(t, p))
    with pytest.raises(ValueError):
        M.confusion_matrix([0, 1, 5], [0, 1, 2], num_classes=3)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_metric_in_compiled_model_with_padding_and_reload(tmp_path):
    rng = np.random.default_rng(5)
    c = 18
    t = rng.integers(0, c, 40)
    y = np.eye(c, dtype="float32")[t]
    x = (y + rng.normal(scale=0.6, size=y.shape)).astype("float32")  # informative features
    sw = np.r_[np.ones(33), np.zeros(7)].astype("float32")
    model = keras.Sequential([keras.Input((c,)), keras.layers.Dense(c, activation="softmax")])
    model.layers[0].set_weights([np.eye(c, dtype="float32") * 4, np.zeros(c, dtype="float32")])
    # sample_weight reaches only `weighted_metrics` in Keras 3 (plain `metrics` ignore it)
    model.compile(loss="categorical_crossentropy",
                  weighted_metrics=[M.MacroF1(c), keras.metrics.CategoricalAccuracy(name="acc")])
    res = model.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0, return_dict=True)
    p = keras.ops.convert_to_numpy(model.predict(x, batch_size=40, verbose=0)).argmax(1)
    assert 0.2 < np.mean(t == p) < 1 and sk_macro(t, p) != pytest.approx(sk_macro(t[:33], p[:33]), abs=1e-3)
    assert res["macro_f1"] == pytest.approx(sk_macro(t[:33], p[:33]), abs=1e-6)
    assert res["acc"] == pytest.approx(np.mean(t[:33] == p[:33]), abs=1e-6)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    res2 = loaded.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0, return_dict=True)
    assert res2["macro_f1"] == pytest.approx(res["macro_f1"], abs=1e-6)
