"""Losses against their formulas written out in numpy, on tiny hand-made batches."""
from __future__ import annotations

import mask_keras  # noqa: F401  (selects the JAX backend)

import keras
import numpy as np
import pytest

from mask_keras import losses as L
from mask_keras.config import LossConfig

EPS = 1e-7

# 3 samples, 3 classes: hard labels, and soft labels as MixUp makes them
Y_HARD = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="float32")
Y_SOFT = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0], [0.2, 0.0, 0.8]], dtype="float32")
P = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.25, 0.25, 0.5]], dtype="float32")
W = np.array([0.5, 1.0, 2.0])


def _np(x):
    return float(keras.ops.convert_to_numpy(x))


def _smooth(y, ls):
    return y * (1 - ls) + ls / y.shape[-1]


def ce_ref(y, p, w=None, ls=0.0, sw=None):
    per = -(_smooth(y, ls) * np.log(np.clip(p, EPS, 1 - EPS))).sum(-1)
    if w is not None:
        per = per * (y * w).sum(-1)
    if sw is not None:  # reduction "mean_with_sample_weight": divide by the weight sum
        return (per * sw).sum() / np.sum(sw)
    return per.sum() / len(per)


def focal_ref(y, p, gamma, alpha=None, ls=0.0, sw=None):
    p = np.clip(p, EPS, 1 - EPS)
    a = np.ones(y.shape[-1]) if alpha is None else np.asarray(alpha)
    per = -(_smooth(y, ls) * a * (1 - p) ** gamma * np.log(p)).sum(-1)
    if sw is not None:  # reduction "mean_with_sample_weight": divide by the weight sum
        return (per * sw).sum() / np.sum(sw)
    return per.sum() / len(per)


def f1_ref(y, p, sw=None, eps=1e-7):
    s = np.ones(len(y)) if sw is None else np.asarray(sw, dtype=np.float64)
    s = s[:, None]
    tp = (s * y * p).sum(0)
    fp = (s * (1 - y) * p).sum(0)
    fn = (s * y * (1 - p)).sum(0)
    return 1 - np.mean(2 * tp / (2 * tp + fp + fn + eps))


def cb_weights_ref(n, beta):
    w = [(1 - beta) / (1 - beta ** k) for k in n]
    w = np.array(w)
    return w / w.sum() * len(n)


def random_batch(rng, n, c, soft=False):
    p = rng.dirichlet(np.ones(c), size=n).astype("float32")
    if soft:
        y = rng.dirichlet(np.ones(c) * 0.3, size=n).astype("float32")
    else:
        y = np.eye(c, dtype="float32")[rng.integers(0, c, n)]
    return y, p


# --------------------------------------------------------------------------- cross entropy
def test_ce_matches_formula_and_keras():
    assert _np(L.CrossEntropy()(Y_HARD, P)) == pytest.approx(ce_ref(Y_HARD, P), rel=1e-5)
    for ls in (0.0, 0.1):
        ref = _np(keras.losses.CategoricalCrossentropy(label_smoothing=ls)(Y_HARD, P))
        assert _np(L.CrossEntropy(label_smoothing=ls)(Y_HARD, P)) == pytest.approx(ref, rel=1e-5)
        assert _np(L.CrossEntropy(label_smoothing=ls)(Y_HARD, P)) == pytest.approx(ce_ref(Y_HARD, P, ls=ls), rel=1e-5)


def test_ce_class_weights_soft_labels_smoothing_sample_weight():
    sw = np.array([1.0, 0.0, 2.0])
    loss = L.CrossEntropy(class_weights=W, label_smoothing=0.1)
    # weight of a sample = sum_c y_c w_c of the (unsmoothed) soft target
    assert _np(loss(Y_SOFT, P)) == pytest.approx(ce_ref(Y_SOFT, P, W, 0.1), rel=1e-5)
    assert _np(loss(Y_SOFT, P, sample_weight=sw)) == pytest.approx(ce_ref(Y_SOFT, P, W, 0.1, sw), rel=1e-5)
    # by hand, sample 0: weight 0.7*0.5 + 0.3*1.0 = 0.65
    y0 = _smooth(Y_SOFT[:1], 0.1)
    by_hand = -0.65 * (y0 * np.log(P[:1])).sum()
    per_sample = L.CrossEntropy(class_weights=W, label_smoothing=0.1, reduction="none")(Y_SOFT, P)
    assert float(keras.ops.convert_to_numpy(per_sample)[0]) == pytest.approx(by_hand, rel=1e-5)


def test_ce_from_logits_equals_probabilities():
    logits = np.log(P) + 3.0  # softmax(logits) == P
    a = _np(L.CrossEntropy(class_weights=W, from_logits=True)(Y_SOFT, logits))
    b = _np(L.CrossEntropy(class_weights=W)(Y_SOFT, P))
    assert a == pytest.approx(b, rel=1e-5)


# --------------------------------------------------------------------------- focal
def test_focal_matches_formula():
    for gamma, alpha, ls, y in ((2.0, None, 0.0, Y_HARD), (2.0, W, 0.1, Y_SOFT), (0.5, W, 0.0, Y_SOFT)):
        loss = L.FocalLoss(gamma=gamma, alpha=alpha, label_smoothing=ls)
        assert _np(loss(y, P)) == pytest.approx(focal_ref(y, P, gamma, alpha, ls), rel=1e-5)
    sw = np.array([0.0, 1.0, 1.0])
    assert _np(L.FocalLoss(alpha=W)(Y_SOFT, P, sample_weight=sw)) == pytest.approx(
        focal_ref(Y_SOFT, P, 2.0, W, sw=sw), rel=1e-5)
    ref = _np(keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=2.0)(Y_HARD, P))
    assert _np(L.FocalLoss()(Y_HARD, P)) == pytest.approx(ref, rel=1e-5)


def test_focal_gamma0_is_ce():
    for y in (Y_HARD, Y_SOFT):
        assert _np(L.FocalLoss(gamma=0.0, label_smoothing=0.1)(y, P)) == pytest.approx(
            _np(L.CrossEntropy(label_smoothing=0.1)(y, P)), rel=1e-6)
    # with hard labels, alpha acts exactly as class weights
    assert _np(L.FocalLoss(gamma=0.0, alpha=W)(Y_HARD, P)) == pytest.approx(
        _np(L.CrossEntropy(class_weights=W)(Y_HARD, P)), rel=1e-6)


def test_focal_from_logits():
    logits = np.log(P) - 1.0
    assert _np(L.FocalLoss(alpha=W, from_logits=True)(Y_SOFT, logits)) == pytest.approx(
        _np(L.FocalLoss(alpha=W)(Y_SOFT, P)), rel=1e-5)


# --------------------------------------------------------------------------- F1
@pytest.mark.parametrize("c", [2, 3, 18])
@pytest.mark.parametrize("soft", [False, True])
def test_f1_loss_formula_any_number_of_classes(c, soft):
    rng = np.random.default_rng(c + soft)
    y, p = random_batch(rng, 40, c, soft)
    loss = L.F1Loss()
    # the batch scalar is the value, whatever the Keras reduction would have done
    assert _np(loss(y, p)) == pytest.approx(f1_ref(y, p), rel=1e-5, abs=1e-6)


def test_f1_loss_hand_example_and_sample_weight():
    # by hand, class 0: tp=.7, fp=.3+.25, fn=.3 -> F1 = 1.4/(1.4+.55+.3)
    f1 = [1.4 / (1.4 + 0.55 + 0.3), 1.0 / (1.0 + 0.45 + 0.5), 1.0 / (1.0 + 0.3 + 0.5)]
    assert _np(L.F1Loss()(Y_HARD, P)) == pytest.approx(1 - np.mean(f1), rel=1e-5)
    # weight-0 rows (padding) are dropped, fractional weights scale the counts
    rng = np.random.default_rng(7)
    y, p = random_batch(rng, 20, 18)
    sw = np.ones(20)
    sw[-5:] = 0
    assert _np(L.F1Loss()(y, p, sample_weight=sw)) == pytest.approx(_np(L.F1Loss()(y[:-5], p[:-5])), rel=1e-5)
    sw = rng.uniform(0, 2, 20)
    assert _np(L.F1Loss()(y, p, sample_weight=sw)) == pytest.approx(f1_ref(y, p, sw), rel=1e-5)


def test_f1_loss_through_compiled_model():
    """Keras' compile path (CompileLoss) must not rescale the batch-level value."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 4)).astype("float32")
    y = np.eye(18, dtype="float32")[rng.integers(0, 18, 12)]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(18, activation="softmax")])
    model.compile(loss=L.F1Loss(), jit_compile=False)
    p = keras.ops.convert_to_numpy(model(x))
    sw = np.r_[np.ones(9), np.zeros(3)]
    got = model.evaluate(x, y, sample_weight=sw, batch_size=12, verbose=0)
    assert got == pytest.approx(f1_ref(y[:9], p[:9]), rel=1e-4)


# --------------------------------------------------------------------------- class balanced
def test_class_balanced_weights_and_loss():
    n, beta = [100, 10, 1], 0.99
    w = cb_weights_ref(n, beta)
    np.testing.assert_allclose(L.effective_number_weights(n, beta), w, rtol=1e-12)
    assert w.sum() == pytest.approx(3)
    cb = L.ClassBalancedLoss(n, beta=beta, base="focal", gamma=2.0, label_smoothing=0.1)
    assert _np(cb(Y_SOFT, P)) == pytest.approx(focal_ref(Y_SOFT, P, 2.0, w, 0.1), rel=1e-5)
    cb_ce = L.ClassBalancedLoss(n, beta=beta, base="ce")
    assert _np(cb_ce(Y_SOFT, P)) == pytest.approx(ce_ref(Y_SOFT, P, w), rel=1e-5)
    # beta = 0: all weights 1 -> plain focal
    np.testing.assert_allclose(L.effective_number_weights(n, 0.0), np.ones(3))
    # a class with no samples gets weight 0; the rest still sum to C
    w0 = L.effective_number_weights([5, 0, 1], 0.9)
    assert w0[1] == 0 and w0.sum() == pytest.approx(3)
    with pytest.raises(ValueError, match="base"):
        L.ClassBalancedLoss(n, base="dice")


def test_class_weights_from_counts():
    w = L.class_weights_from_counts([10, 20, 40])
    np.testing.assert_allclose(w, np.array([1 / 10, 1 / 20, 1 / 40]) / np.mean([1 / 10, 1 / 20, 1 / 40]))
    assert w.mean() == pytest.approx(1.0)
    w0 = L.class_weights_from_counts([10, 0, 10])
    np.testing.assert_allclose(w0, [1.5, 0.0, 1.5])
    with pytest.raises(ValueError):
        L.class_weights_from_counts([-1, 2])


# --------------------------------------------------------------------------- weighted sum
def test_weighted_sum_is_sum_of_parts():
    sw = np.array([1.0, 0.0, 1.0])
    f1, focal = L.F1Loss(), L.FocalLoss(alpha=W)
    ws = L.WeightedSum([(f1, 0.4), (focal, 0.6)])
    for kw in ({}, {"sample_weight": sw}):
        expect = 0.4 * _np(f1(Y_SOFT, P, **kw)) + 0.6 * _np(focal(Y_SOFT, P, **kw))
        assert _np(ws(Y_SOFT, P, **kw)) == pytest.approx(expect, rel=1e-6)
    assert _np(ws(Y_SOFT, P, sample_weight=sw)) == pytest.approx(
        0.4 * f1_ref(Y_SOFT[sw > 0], P[sw > 0]) + 0.6 * focal_ref(Y_SOFT, P, 2.0, W, sw=sw), rel=1e-5)


# --------------------------------------------------------------------------- mixed precision
def _all_losses():
    return [L.CrossEntropy(class_weights=W, label_smoothing=0.1), L.FocalLoss(alpha=W), L.F1Loss(),
            L.ClassBalancedLoss([30, 5, 1]), L.build_loss(LossConfig(name="f1_focal"), 3)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_predictions(dtype):
    # includes probabilities that underflow to 0 and round to 1 in half precision
    p = np.array([[1 - 2e-9, 1e-9, 1e-9], [0.3, 0.5, 0.2], [1e-10, 0.5, 0.5]], dtype="float32")
    for loss in _all_losses():
        for probs in (P, p):
            half = keras.ops.cast(probs, dtype)
            ref = _np(loss(Y_SOFT, keras.ops.cast(half, "float32")))
            got = loss(Y_SOFT, half)
            assert keras.ops.convert_to_numpy(got).dtype == np.float32
            got = _np(got)
            assert np.isfinite(got), (loss.name, dtype)
            assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)  # computed in float32
            assert got == pytest.approx(_np(loss(Y_SOFT, probs)), rel=2e-2, abs=1e-3)


def test_gradients_finite_at_saturated_probabilities():
    if keras.backend.backend() != "jax":
        pytest.skip("gradient check written for JAX")
    import jax

    logits = np.array([[30.0, -30.0, 0.0], [0.0, 0.0, 0.0], [-40.0, 40.0, 40.0]], dtype="float32")
    for loss in _all_losses():
        def f(z, loss=loss):
            return loss(Y_SOFT, keras.ops.softmax(keras.ops.cast(z, "bfloat16")))
        g = np.asarray(jax.grad(f)(logits))
        assert np.all(np.isfinite(g)), loss.name


# --------------------------------------------------------------------------- serialization
@pytest.mark.parametrize("make", [
    lambda: L.CrossEntropy(class_weights=W, label_smoothing=0.1),
    lambda: L.FocalLoss(gamma=1.5, alpha=W, label_smoothing=0.05, from_logits=False),
    lambda: L.F1Loss(epsilon=1e-6),
    lambda: L.ClassBalancedLoss([30, 5, 1], beta=0.9, base="ce", label_smoothing=0.1),
    lambda: L.build_loss(LossConfig(terms=(("f1", 0.4), ("focal", 0.6)), gamma=1.0), 3,
                         class_weights=W),
], ids=["ce", "focal", "f1", "class_balanced", "weighted_sum"])
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_serialization_round_trip(make, tmp_path):
    loss = make()
    value = _np(loss(Y_SOFT, P))
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss)
    assert again.get_config() == loss.get_config()
    assert _np(again(Y_SOFT, P)) == pytest.approx(value, rel=1e-6)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss=loss)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()
    assert _np(loaded.loss(Y_SOFT, P)) == pytest.approx(value, rel=1e-6)


# --------------------------------------------------------------------------- registry
def test_build_loss_every_registry_name():
    counts = [50, 20, 5]
    cfg = LossConfig(gamma=1.5, label_smoothing=0.1, cb_beta=0.99)
    import dataclasses

    for name in L.LOSSES:
        loss = L.build_loss(dataclasses.replace(cfg, name=name), 3, class_counts=counts)
        assert isinstance(loss, keras.losses.Loss), name
        assert np.isfinite(_np(loss(Y_SOFT, P))), name
    rep = dataclasses.replace
    ce = L.build_loss(rep(cfg, name="ce"), 3, class_weights=W)
    assert isinstance(ce, L.CrossEntropy) and ce.label_smoothing == 0.1 and ce.class_weights == list(W)
    focal = L.build_loss(rep(cfg, name="focal"), 3)
    assert isinstance(focal, L.FocalLoss) and focal.gamma == 1.5 and focal.alpha is None
    cb = L.build_loss(rep(cfg, name="class_balanced"), 3, class_counts=counts)
    assert isinstance(cb, L.ClassBalancedLoss) and cb.beta == 0.99 and cb.gamma == 1.5
    np.testing.assert_allclose(cb.class_weights, cb_weights_ref(counts, 0.99))
    assert isinstance(L.build_loss(rep(cfg, name="f1"), 18), L.F1Loss)
    f1f = L.build_loss(rep(cfg, name="f1_focal"), 3)
    assert isinstance(f1f, L.WeightedSum)
    assert [(type(t).__name__, w) for t, w in f1f.terms] == [("F1Loss", 0.4), ("FocalLoss", 0.6)]
    assert _np(f1f(Y_SOFT, P)) == pytest.approx(
        0.4 * f1_ref(Y_SOFT, P) + 0.6 * focal_ref(Y_SOFT, P, 1.5, ls=0.1), rel=1e-5)
    terms = L.build_loss(rep(cfg, name="ignored", terms=(("ce", 0.3), ("f1", 0.7))), 3)
    assert _np(terms(Y_SOFT, P)) == pytest.approx(0.3 * ce_ref(Y_SOFT, P, ls=0.1) + 0.7 * f1_ref(Y_SOFT, P), rel=1e-5)
    assert isinstance(L.build_loss("focal", 3), L.FocalLoss)


def test_build_loss_errors():
    with pytest.raises(ValueError, match="choose one of: ce, class_balanced, f1, f1_focal, focal"):
        L.build_loss(LossConfig(name="dice"), 3)
    with pytest.raises(ValueError, match="focl"):
        L.build_loss(LossConfig(terms=(("f1", 0.5), ("focl", 0.5))), 3)
    with pytest.raises(ValueError, match="class_counts"):
        L.build_loss(LossConfig(name="class_balanced"), 3)
    with pytest.raises(ValueError, match="class_weights"):
        L.build_loss(LossConfig(name="ce"), 18, class_weights=W)
    with pytest.raises(ValueError, match="label_smoothing"):
        L.CrossEntropy(label_smoothing=1.0)
