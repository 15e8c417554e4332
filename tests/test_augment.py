"""Augmentation presets (inside tf.data), MixUp / CutMix, gallery."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mask_keras import augment as A
from mask_keras import labels as L
from mask_keras import pipeline as P
from mask_keras._tf import tf
from mask_keras.config import Config, PreprocessConfig


def _images(n=4, h=32, w=24, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 3))
    grad = np.linspace(0, 1, w)[None, None, :, None]
    return np.clip(base * grad + rng.integers(0, 40, (n, h, w, 3)), 0, 255).astype(np.uint8)


def _table(tmp_path, n=12):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 30, 3)).astype(np.uint8)).save(p)
        m, g, a = i % 3, i % 2, i % 3
        rows.append(dict(path=str(p), stem="mask1", mask=m, gender=g, age_group=a, label=L.encode(m, g, a)))
    return pd.DataFrame(rows)


def _cfg(preset="none", batch=4, **augment):
    cfg = Config()
    cfg.preprocess = PreprocessConfig(image_size=(32, 24), crop="none")
    cfg.augment = dataclasses.replace(cfg.augment, preset=preset, **augment)
    cfg.train = dataclasses.replace(cfg.train, batch_size=batch, verbose=0, seed=5)
    return cfg


def test_presets_registered():
    assert {"none", "base", "team000", "team001", "team002", "team004", "randaugment"} <= set(A.PRESETS)
    assert A.Augmenter("none").stages == []
    with pytest.raises(ValueError, match="did you mean 'team002'"):
        A.Augmenter("team02")


@pytest.mark.parametrize("preset", sorted(A.PRESETS))
def test_each_preset_runs_in_tf_data_finite_and_in_range(preset):
    x = _images()
    aug = A.Augmenter(preset, seed=1)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(4).map(lambda b: aug(b), num_parallel_calls=2)
    out = np.concatenate([b.numpy() for b in ds.repeat(2)])
    assert out.dtype == np.float32 and out.shape == (8, 32, 24, 3)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 255
    if preset != "none":
        assert not np.allclose(out, np.concatenate([x, x]))  # something happened
    if preset != "randaugment":  # its graph takes ~10 s to trace on a busy CPU; once is enough
        single = aug(tf.constant(x[0]))  # one image, eagerly, after use in tf.data, also works
        assert single.shape == (32, 24, 3) and np.isfinite(single.numpy()).all()


def test_same_seed_same_augmentation_and_eager_matches():
    x = tf.constant(_images(8))
    a = A.Augmenter("team002", seed=11)(x).numpy()
    b = A.Augmenter("team002", seed=11)(x).numpy()
    c = A.Augmenter("team002", seed=12)(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pipeline_deterministic_augmentation_reproducible(tmp_path):
    t = _table(tmp_path, 8)
    cfg = _cfg("team000", batch=4)
    runs = [np.concatenate([b[0].numpy() for b in P.make_dataset(t, cfg, True, "mask", deterministic=True)])
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_eval_path_applies_no_augmentation(tmp_path):
    t = _table(tmp_path, 6)
    strong = _cfg("team004", batch=4, mixup=1.0)
    plain = _cfg("none", batch=4)
    a = [b[0].numpy() for b in P.make_dataset(t, strong, False, "multi")]
    b = [b[0].numpy() for b in P.make_dataset(t, strong, False, "multi")]
    c = [b[0].numpy() for b in P.make_dataset(t, plain, False, "multi")]
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


def test_color_jitter_identity_and_grey_preserved():
    x = tf.constant(_images(4), tf.float32)
    ident = A.ColorJitter(0, 0, 0, 0, seed=0)(x)
    np.testing.assert_allclose(ident, x, atol=1e-3)
    grey = tf.fill((2, 8, 8, 3), 100.0)
    out = A.ColorJitter(0, 0.5, 0.5, 0.5, seed=0)(grey).numpy()  # grey has no saturation/hue; contrast keeps mean
    np.testing.assert_allclose(out, 100.0, atol=1e-2)
    # brightness only multiplies
    out = A.ColorJitter(0.5, 0, 0, 0, seed=0)(grey).numpy()
    assert np.allclose(out[0], out[0, 0, 0, 0]) and 50 <= out.min() and out.max() <= 150


def test_blur_keeps_a_flat_image_flat():
    import keras

    blur = A.ReflectPadded(keras.layers.RandomGaussianBlur(factor=(1.0, 1.0), kernel_size=5, sigma=(1.0, 1.5),
                                                           value_range=(0, 255), seed=0, dtype="float32"), pad=2)
    out = tf.function(lambda b: blur(b))(tf.fill((2, 16, 12, 3), 200.0)).numpy()
    assert out.shape == (2, 16, 12, 3)
    np.testing.assert_allclose(out, 200.0, atol=1e-2)


def test_shift_scale_rotate_identity_and_geometry():
    x = tf.constant(_images(4), tf.float32)
    np.testing.assert_allclose(A.ShiftScaleRotate(p=0.0, seed=0)(x), x, atol=1e-3)
    np.testing.assert_allclose(A.ShiftScaleRotate(0, 0, 0, p=1.0, seed=0)(x), x, atol=1e-3)
    flat = A.ShiftScaleRotate(p=1.0, seed=0)(tf.fill((3, 16, 12, 3), 90.0)).numpy()
    np.testing.assert_allclose(flat, 90.0, atol=1e-3)  # reflect border: no black corners
    moved = A.ShiftScaleRotate(p=1.0, seed=0)(x).numpy()
    assert all(not np.allclose(moved[i], x.numpy()[i]) for i in range(4))


def test_coarse_dropout_holes():
    x = tf.fill((8, 32, 24, 3), 100.0)
    np.testing.assert_array_equal(A.CoarseDropout(p=0.0, seed=0)(x), x)
    out = A.CoarseDropout(max_holes=4, size=(0.1, 0.2), p=1.0, seed=0)(x).numpy()
    assert set(np.unique(out)) <= {0.0, 100.0}
    frac = (out == 0).all(-1).mean(axis=(1, 2))
    assert (frac > 0).all() and (frac <= 4 * 0.2 * 0.2 + 1e-6).all()


# ----------------------------------------------------------------- MixUp / CutMix
def _mix_inputs(b=16, seed=0):
    x = tf.constant(_images(b, seed=seed), tf.float32)
    y = tf.one_hot(tf.range(b), b)  # one class per row: the mixed label names the partner
    return x, y


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mix_labels_sum_to_one_and_change_when_on(kind):
    x, y = _mix_inputs()
    mixer = A.BatchMixer(mixup=1.0 if kind == "mixup" else 0.0, cutmix=1.0 if kind == "cutmix" else 0.0,
                         alpha=1.0, seed=0)
    changed = 0
    for _ in range(3):
        xm, ym = mixer(x, y)
        ym = ym.numpy()
        np.testing.assert_allclose(ym.sum(1), 1.0, atol=1e-6)
        assert (ym >= 0).all()
        changed += int((ym.max(1) < 1).sum())
        assert not np.allclose(xm.numpy(), x.numpy())
        if kind == "cutmix":  # pixels come from the row itself or its partner, area matches the label
            own = ym[np.arange(16), np.arange(16)]
            same = np.all(xm.numpy() == x.numpy(), axis=-1).mean(axis=(1, 2))
            assert np.all(same >= own - 1e-6)
    assert changed > 16


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mix_never_changes_when_probability_zero(kind):
    x, y = _mix_inputs()
    mixer = A.BatchMixer(mixup=0.0, cutmix=0.0, seed=0)
    for _ in range(3):
        xm, ym = mixer(x, y)
        np.testing.assert_array_equal(xm.numpy(), x.numpy())
        np.testing.assert_array_equal(ym.numpy(), y.numpy())
    assert A.BatchMixer.from_config(_cfg().augment) is None


def test_mix_dict_targets_mixed_consistently():
    x, y = _mix_inputs()
    mixer = A.BatchMixer(mixup=0.5, cutmix=0.5, alpha=0.4, seed=3)
    for _ in range(4):
        _, ym = mixer(x, {"a": y, "b": y, "c": tf.one_hot(tf.range(16) % 3, 3)})
        np.testing.assert_array_equal(ym["a"].numpy(), ym["b"].numpy())
        np.testing.assert_allclose(ym["c"].numpy().sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mix_old_only_mixes_only_pairs_with_an_old_face(kind):
    x, y = _mix_inputs()
    age = np.array([2, 0, 1, 0, 0, 1, 0, 0, 1, 2, 0, 0, 1, 0, 0, 1])
    mixer = A.BatchMixer(mixup=float(kind == "mixup"), cutmix=float(kind == "cutmix"), alpha=1.0,
                         old_only=True, seed=4)
    n_mixed = 0
    for _ in range(5):
        xm, ym = mixer(x, y, age)
        ym = ym.numpy()
        np.testing.assert_allclose(ym.sum(1), 1.0, atol=1e-6)
        for i in range(16):
            partners = [j for j in np.flatnonzero(ym[i] > 0) if j != i]
            if partners:
                n_mixed += 1
                assert age[i] == 2 or age[partners[0]] == 2
            else:
                np.testing.assert_array_equal(xm.numpy()[i], x.numpy()[i])
    assert n_mixed > 0
    # no old face in the batch: nothing is mixed
    xm, ym = mixer(x, y, np.zeros(16, int))
    np.testing.assert_array_equal(ym.numpy(), y.numpy())


def test_pipeline_mixing_multihead_labels_sum_to_one(tmp_path):
    t = _table(tmp_path, 8)
    cfg = _cfg("base", batch=4, mixup=0.5, cutmix=0.5, mix_old_only=True)
    for x, y in P.make_dataset(t, cfg, True, "multihead"):
        assert x.shape == (4, 32, 24, 3)
        for v in y.values():
            np.testing.assert_allclose(v.numpy().sum(1), 1.0, atol=1e-6)


def test_augmentation_gallery_writes_png(tmp_path):
    t = _table(tmp_path, 6)
    out = A.augmentation_gallery(t, _cfg("team004", mixup=0.5), tmp_path / "gallery.png", n=4)
    assert out.is_file() and out.stat().st_size > 1000
