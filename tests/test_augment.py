"""Augmentation layer and presets (in the model, JAX backend), MixUp / CutMix (tf.data), gallery."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest
from keras import ops
from PIL import Image

from mask_keras import augment as A
from mask_keras import labels as L
from mask_keras import pipeline as P
from mask_keras._tf import tf
from mask_keras.config import Config, ConfigError, PreprocessConfig

SHAPE = (32, 24, 3)


def _images(n=4, h=32, w=24, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 3))
    grad = np.linspace(0, 1, w)[None, None, :, None]
    return np.clip(base * grad + rng.integers(0, 40, (n, h, w, 3)), 0, 255).astype(np.uint8)


def _np(x):
    return keras.ops.convert_to_numpy(x)


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


class _Probe(keras.layers.Layer):
    """Identity on the augmented images; in training records (min, max, all finite, mean |change|)
    into a variable, so that the values seen inside the jitted train step can be checked after fit."""

    def __init__(self, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.stats = self.add_weight(shape=(4,), initializer="zeros", trainable=False, name="stats")

    def call(self, inputs, training=None):
        raw, aug = inputs
        if training:
            finite = ops.cast(ops.all(ops.isfinite(aug)), "float32")
            change = ops.mean(ops.abs(aug - ops.cast(raw, "float32")))
            self.stats.assign(ops.stack([ops.min(aug), ops.max(aug), finite, change]))
        return aug


def _model(layer, probe=True):
    """Input -> layer (-> probe) -> a tiny classifier; outputs (logits, augmented images)."""
    inp = keras.Input(SHAPE)
    x = layer(inp)
    if probe:
        x = _Probe()([inp, x])
    logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(x)))
    return keras.Model(inp, [logits, x])


# ----------------------------------------------------------------- presets and the Augmentation layer
def test_presets_registered_and_unknown_preset():
    assert {"none", "base", "team000", "team000_mask", "team001", "team002", "team004",
            "randaugment"} <= set(A.PRESETS)
    assert A.build_augmentation("none") is None
    assert A.Augmentation("none").stages == []
    assert isinstance(A.build_augmentation("team004", 1), A.Augmentation)
    for make in (A.Augmentation, A.build_augmentation):
        with pytest.raises(ConfigError, match="unknown augmentation preset 'team02' .*did you mean 'team002'"):
            make("team02")


@pytest.mark.parametrize("preset", sorted(A.PRESETS))
def test_each_preset_trains_in_a_model_finite_and_in_range(preset):
    x = _images()
    aug = A.Augmentation(preset, seed=1)
    model = _model(aug)
    assert model.outputs[1].dtype == "float32"
    seeds = [np.array(v) for v in aug.non_trainable_variables]
    # RandAugment's jitted graph takes ~40 s to compile on CPU (Keras' JAX Equalization unrolls a
    # 256-bin histogram loop); its train step runs eagerly here, the other presets go through jit
    model.compile(optimizer="sgd", loss=["mse", None], run_eagerly=preset == "randaugment")
    hist = model.fit(x, np.zeros((4, 3), np.float32), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    probe = next(m for m in model.layers if isinstance(m, _Probe))
    lo, hi, finite, change = np.array(probe.stats)  # what the train step saw
    assert finite == 1 and 0 <= lo <= hi <= 255
    if preset != "none":
        assert change > 0.5  # something happened
        assert any(not np.array_equal(a, np.array(b)) for a, b in zip(seeds, aug.non_trainable_variables, strict=True))
    # evaluation / prediction: the cast only
    _, pred = model.predict(x, batch_size=4, verbose=0)
    assert pred.dtype == np.float32
    np.testing.assert_array_equal(pred, x.astype(np.float32))


def test_training_false_is_identity_and_accepts_one_image():
    layer = A.Augmentation("team004", seed=0)
    x = _images()
    for out in (layer(x), layer(x, training=False), layer(x.astype(np.float32), training=None)):
        assert str(out.dtype) == "float32"
        np.testing.assert_array_equal(_np(out), x.astype(np.float32))
    single = _np(A.Augmentation("base", seed=0)(x[0], training=True))
    assert single.shape == SHAPE and np.isfinite(single).all()


def test_same_seed_same_augmentation():
    x = _images()
    a, b, c = (A.Augmentation("team002", seed=s) for s in (11, 11, 12))
    first_a, first_b, first_c = (_np(m(x, training=True)) for m in (a, b, c))
    np.testing.assert_array_equal(first_a, first_b)
    assert not np.array_equal(first_a, first_c)
    # the same sequence of calls gives the same draws; the next call draws anew
    second_a, second_b = _np(a(x, training=True)), _np(b(x, training=True))
    np.testing.assert_array_equal(second_a, second_b)
    assert not np.array_equal(first_a, second_a)


def test_float32_under_mixed_precision():
    prev = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = A.Augmentation("team002", seed=0)
        out = layer(_images(), training=True)
    finally:
        keras.config.set_dtype_policy(prev)
    assert str(out.dtype) == "float32"
    assert all(s.compute_dtype == "float32" for s in layer.stages)


# ----------------------------------------------------------------- stages
def test_color_jitter_identity_and_grey_preserved():
    x = _images(4).astype(np.float32)
    np.testing.assert_allclose(_np(A.ColorJitter(0, 0, 0, 0, seed=0)(x)), x, atol=1e-3)
    grey = np.full((4, *SHAPE), 100.0, np.float32)
    out = _np(A.ColorJitter(0, 0.5, 0.5, 0.5, seed=0)(grey))  # grey has no saturation/hue; contrast keeps mean
    np.testing.assert_allclose(out, 100.0, atol=1e-2)
    out = _np(A.ColorJitter(0.5, 0, 0, 0, seed=0)(grey))  # brightness only multiplies
    assert np.allclose(out[0], out[0, 0, 0, 0]) and 50 <= out.min() and out.max() <= 150
    # a pure hue shift keeps the luma (Y of YIQ) of a colourful image, up to the clip
    mid = np.random.default_rng(0).uniform(90, 160, (4, *SHAPE)).astype(np.float32)
    out = _np(A.ColorJitter(0, 0, 0, 0.1, seed=0)(mid))
    luma = np.array((0.299, 0.587, 0.114), np.float32)  # ITU-R BT.601, the Y of YIQ
    np.testing.assert_allclose(out @ luma, mid @ luma, atol=0.05)
    assert not np.allclose(out, mid, atol=1)
    with pytest.raises(ValueError, match="hue must be in"):
        A.ColorJitter(hue=0.7)


def test_blur_keeps_a_flat_image_flat():
    blur = A.ReflectPadded(keras.layers.RandomGaussianBlur(factor=(1.0, 1.0), kernel_size=5, sigma=(1.0, 1.5),
                                                           value_range=(0, 255), seed=0, dtype="float32"), pad=2)
    out = _np(blur(np.full((4, *SHAPE), 200.0, np.float32)))
    assert out.shape == (4, *SHAPE)
    np.testing.assert_allclose(out, 200.0, atol=1e-2)  # the border too
    noisy = _images().astype(np.float32)
    assert _np(blur(noisy)).std() < noisy.std()  # it does blur


def _coords(n, h, w, centred=False):
    """(n, h, w, 3) float32 images whose channels are the x and y pixel coordinates (and 0)."""
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    if centred:
        xx, yy = xx - (w - 1) / 2, yy - (h - 1) / 2
    return np.broadcast_to(np.stack([xx, yy, np.zeros_like(xx)], -1), (n, h, w, 3)).copy()


def test_affine_warp_matches_keras_affine_transform():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, *SHAPE)).astype(np.float32)
    t = _np(A.ShiftScaleRotate(shift=0.2, scale=0.2, rotate=40.0, p=1.0, seed=0).transforms(4, 32.0, 24.0))
    t[0] = [1, 0, 0, 0, 1, 0]  # identity
    t[1] = [1, 0, 30.5, 0, 1, -40.25]  # far outside the image: reflected more than once
    ref = ops.image.affine_transform(x, np.pad(t, ((0, 0), (0, 2))), interpolation="bilinear",
                                     fill_mode="reflect", data_format="channels_last")
    out = _np(A.affine_warp(x, t))
    np.testing.assert_allclose(out, _np(ref), atol=0.02)
    np.testing.assert_allclose(out[0], x[0], atol=1e-4)


def test_shift_scale_rotate_identity_and_geometry():
    x = _images(4).astype(np.float32)
    np.testing.assert_allclose(_np(A.ShiftScaleRotate(p=0.0, seed=0)(x)), x, atol=1e-3)
    np.testing.assert_allclose(_np(A.ShiftScaleRotate(0, 0, 0, p=1.0, seed=0)(x)), x, atol=1e-3)
    flat = _np(A.ShiftScaleRotate(p=1.0, seed=0)(np.full((4, *SHAPE), 90.0, np.float32)))
    np.testing.assert_allclose(flat, 90.0, atol=1e-3)  # reflect border: no black corners
    moved = _np(A.ShiftScaleRotate(p=1.0, seed=0)(x))
    assert all(not np.allclose(moved[i], x[i]) for i in range(4))

    # pure shift: out(p) = in(p - t) with |t| <= shift * side (coordinate images, interior only)
    n, h, w = 4, 33, 25
    out = _np(A.ShiftScaleRotate(shift=0.1, scale=0, rotate=0, p=1.0, seed=1)(_coords(n, h, w)))
    d = (out - _coords(n, h, w))[:, 5:-5, 5:-5, :2]  # = -t, the same at every pixel
    np.testing.assert_allclose(d, np.broadcast_to(d[:, :1, :1], d.shape), atol=1e-3)
    t = -d[:, 0, 0]
    assert (np.abs(t[:, 0]) <= 0.1 * w + 1e-4).all() and (np.abs(t[:, 1]) <= 0.1 * h + 1e-4).all()
    assert (np.abs(t) > 1e-3).any()

    # rotation + scale about the centre: out(p) = A (p - c) with A = R(-theta) / s, a similarity
    rot = A.ShiftScaleRotate(shift=0, scale=0.1, rotate=15.0, p=1.0, seed=2)
    out = _np(rot(_coords(n, h, w, centred=True)))
    cy, cx = (h - 1) // 2, (w - 1) // 2
    np.testing.assert_allclose(out[:, cy, cx, :2], 0.0, atol=1e-3)  # the centre stays put
    col_x = (out[:, cy, cx + 3, :2] - out[:, cy, cx - 3, :2]) / 6  # A's first column
    col_y = (out[:, cy + 3, cx, :2] - out[:, cy - 3, cx, :2]) / 6  # A's second column
    for ax, ay in zip(col_x, col_y, strict=True):
        inv_s = np.hypot(*ax)
        np.testing.assert_allclose([ay[0], ay[1]], [-ax[1], ax[0]], atol=1e-3)  # rotation, no flip
        assert 1 / 1.1 - 1e-3 <= inv_s <= 1 / 0.9 + 1e-3
        assert abs(np.degrees(np.arctan2(ax[1], ax[0]))) <= 15.0 + 1e-2


def test_coarse_dropout_holes():
    x = np.full((16, *SHAPE), 100.0, np.float32)
    np.testing.assert_array_equal(_np(A.CoarseDropout(p=0.0, seed=0)(x)), x)
    out = _np(A.CoarseDropout(max_holes=4, size=(0.1, 0.2), p=1.0, seed=0)(x))
    assert set(np.unique(out)) <= {0.0, 100.0}
    hole = (out == 0).all(-1)
    assert ((out == 0).any(-1) == hole).all()  # whole pixels
    frac = hole.mean(axis=(1, 2))
    assert (frac > 0).all() and (frac <= 4 * 0.2 * 0.2 + 1e-6).all()
    half = _np(A.CoarseDropout(p=0.5, seed=0)(x))
    assert 0 < (half == 0).any(axis=(1, 2, 3)).sum() < 16


def test_gaussian_noise_stats():
    x = np.full((16, 32, 24, 3), 100.0, np.float32)
    np.testing.assert_array_equal(_np(A.GaussianNoise(10.0, p=0.0, seed=0)(x)), x)
    noise = _np(A.GaussianNoise(10.0, p=1.0, seed=0)(x)) - 100.0
    std = noise.std(axis=(1, 2, 3))
    assert (std > 0).all() and (std < 10.5).all() and std.max() - std.min() > 1  # sigma drawn per image
    assert abs(noise.mean()) < 0.5
    some = _np(A.GaussianNoise(10.0, p=0.5, seed=0)(x))
    untouched = (some == 100.0).all(axis=(1, 2, 3))
    assert 0 < untouched.sum() < 16


def test_random_apply_probability():
    x = _images(16).astype(np.float32)
    stage = A.CoarseDropout(max_holes=6, size=(0.2, 0.3), p=1.0, seed=0)
    np.testing.assert_array_equal(_np(A.RandomApply(stage, p=0.0, seed=0)(x)), x)
    out = _np(A.RandomApply([stage], p=1.0, seed=0)(x))
    assert all(not np.array_equal(out[i], x[i]) for i in range(16))
    out = _np(A.RandomApply(stage, p=0.5, seed=0)(x))
    assert 0 < sum(np.array_equal(out[i], x[i]) for i in range(16)) < 16


# ----------------------------------------------------------------- serialisation
@pytest.mark.parametrize("layer", [
    A.GaussianNoise(5.0, p=0.2, seed=3),
    A.ShiftScaleRotate(0.1, 0.2, 30.0, p=0.7, seed=4),
    A.CoarseDropout(3, (0.1, 0.3), fill=7.0, p=0.6, seed=5),
    A.ColorJitter(0.1, 0.2, 0.3, 0.4, seed=6),
    A.RandomApply([A.ColorJitter(seed=1), A.GaussianNoise(seed=2)], p=0.3, seed=7),
    A.ReflectPadded(keras.layers.RandomGaussianBlur(kernel_size=5, seed=8, dtype="float32"), pad=2),
    A.Augmentation("team004", seed=9),
], ids=lambda layer: type(layer).__name__)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is type(layer) and again.get_config() == config
    assert again.dtype_policy.name == "float32"
    x = _images()
    np.testing.assert_array_equal(_np(again(x, training=True)), _np(layer(x, training=True)))


def test_augmentation_config_and_model_save_load(tmp_path):
    layer = A.Augmentation("team004", seed=3)
    assert {"preset": "team004", "seed": 3}.items() <= layer.get_config().items()
    model = _model(layer, probe=False)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    aug = [m for m in loaded.layers if isinstance(m, A.Augmentation)]
    assert len(aug) == 1 and aug[0].preset == "team004" and aug[0].seed == 3
    assert [type(s) for s in aug[0].stages] == [type(s) for s in layer.stages]
    x = _images()
    for a, b in zip(loaded.predict(x, verbose=0), model.predict(x, verbose=0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_array_equal(_np(aug[0](x, training=True)),
                                  _np(A.Augmentation("team004", seed=3)(x, training=True)))


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
    for x, y in P.make_dataset(t, cfg, True, "multihead")[0]:
        assert x.shape == (4, 32, 24, 3)
        for v in y.values():
            np.testing.assert_allclose(v.numpy().sum(1), 1.0, atol=1e-6)


def test_pipeline_deterministic_mixing_reproducible_and_eval_never_mixes(tmp_path):
    t = _table(tmp_path, 8)
    cfg = _cfg("team004", batch=4, mixup=0.5, cutmix=0.5)
    runs = [np.concatenate([b[0].numpy() for b in P.make_dataset(t, cfg, True, "mask", deterministic=True)[0]])
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    strong = [b[0].numpy() for b in P.make_dataset(t, _cfg("team004", batch=4, mixup=1.0), False, "multi")[0]]
    plain = [b[0].numpy() for b in P.make_dataset(t, _cfg("none", batch=4), False, "multi")[0]]
    assert len(strong) == len(plain) > 0
    for a, b in zip(strong, plain, strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- gallery
def test_augmentation_gallery_writes_png(tmp_path):
    t = _table(tmp_path, 6)
    out = A.augmentation_gallery(t, _cfg("team004", mixup=0.5), tmp_path / "gallery.png", n=4)
    assert out.is_file() and out.stat().st_size > 1000
    with pytest.raises(ValueError, match="the table is empty"):
        A.augmentation_gallery(t.iloc[:0], _cfg("team004"), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_mixer_works_in_a_users_own_tf_data_map():
    """tf.data traces the map with autograph: the mixer must survive it (no in-method imports)."""
    from mask_keras._tf import tf

    mixer = A.BatchMixer(mixup=0.5, cutmix=0.5, seed=0)
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 6, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(3).map(lambda a, b: mixer(a, b))
    for xm, ym in ds:
        assert xm.shape == (4, 8, 6, 3)
        np.testing.assert_allclose(ym.numpy().sum(1), 1.0, rtol=1e-5)


def test_augmentation_from_layers_saves_and_reloads(tmp_path):
    """Augmentation(stages) takes any Keras layers; the model file keeps them (a preset keeps only its name)."""
    import keras

    from mask_keras.models.build import create_model

    stages = [keras.layers.RandomFlip("horizontal", seed=1), A.GaussianNoise(5.0, p=1.0, seed=2)]
    m = create_model("tiny_cnn", "gender", (32, 24), augmentation=stages)
    aug = m.get_layer("augmentation")
    assert aug.preset is None and [type(s).__name__ for s in aug.stages] == ["RandomFlip", "GaussianNoise"]
    m.save(tmp_path / "m.keras")
    back = keras.saving.load_model(tmp_path / "m.keras").get_layer("augmentation")
    assert [type(s).__name__ for s in back.stages] == ["RandomFlip", "GaussianNoise"]
    assert back.stages[1].max_sigma == 5.0
    assert A.Augmentation.from_preset("team004", seed=3).get_config()["preset"] == "team004"
    x = np.full((2, 32, 24, 3), 100, np.uint8)
    np.testing.assert_array_equal(_np(back(x)), x.astype(np.float32))  # inference: the cast only
    with pytest.raises(TypeError, match="must be Keras layers"):
        A.Augmentation(["flip"])
    with pytest.raises(ValueError, match="either stages or a preset"):
        A.Augmentation([keras.layers.RandomFlip()], preset="base")
    with pytest.raises(ConfigError, match="unknown"):
        A.Augmentation.from_preset("bogus")
