"""Assemble a classifier: input adapter -> backbone -> global average pooling -> head(s).

``create_model(backbone, task, image_size, ...)`` (flat arguments; ``build_model(model_cfg,
task, image_size)`` is its adapter for a config) returns a functional ``keras.Model`` named
``f"{task}_{backbone}"`` taking ``(H, W, 3)`` RGB pixels in 0..255 (uint8 or float32; see
:mod:`mask_keras.models.backbones` for how each backbone's own convention is met).
Layers, in order: ``image`` (Input), ``augmentation``
(:class:`~mask_keras.augment.Augmentation`, when a preset is given: active in training
only, so augmentation runs on the accelerator inside the jitted train step), ``input_adapter``
(:class:`~mask_keras.models.backbones.InputAdapter`), ``resize`` (ViT/Swin only),
``backbone`` (a nested model), ``pool``, then the head (``probs``; or ``mask``,
``gender``, ``age`` for task ``multihead``, whose model returns a dict).

Melting (freeze, then unfreeze) on Keras 3 + JAX
------------------------------------------------
Checked on Keras 3.15 / JAX: the JAX trainer snapshots the trainable variables when the
train step is built, and the optimizer is built for exactly those variables. Flipping
``trainable`` after ``compile`` without recompiling makes the next ``fit`` fail
("optimizer_variables must be a list of tensors corresponding 1:1 to the trainable
variables ..."), and recompiling with the *same* optimizer object fails too. So a
callback cannot unfreeze in the middle of ``fit``; melting is two ``fit`` calls::

    for phase in melting_phases(epochs, freeze_epochs):
        set_backbone_trainable(model, phase.backbone_trainable)
        model.compile(optimizer=fresh_optimizer(opt_or_factory, model), loss=..., metrics=...)
        model.fit(ds, initial_epoch=phase.initial_epoch, epochs=phase.epochs, ...)

(:func:`fit_melting` does exactly this). A frozen backbone changes no weight at all:
``trainable=False`` also runs its BatchNormalization layers in inference mode, so the
moving statistics stay as loaded; after unfreezing and recompiling, everything trains.
Callbacks are re-entered per ``fit`` call (``EarlyStopping`` and ``ModelCheckpoint`` reset
their state in ``on_train_begin``): pass the phase-2 callbacks separately or give them
the best value so far.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import keras

from .. import labels as L
from ..augment import Augmentation
from ..config import SCRATCH_INITS, ConfigError, ModelConfig
from ..errors import unknown_choice
from ..keras_util import all_layers
from . import backbones as B
from . import heads as H


def create_model(backbone: str = "efficientnet_b0", task: str = "multi", image_size=(128, 96), *,
                 weights=None, head: str = "linear", head_units: int = 128, dropout: float = 0.2,
                 bn_momentum: float | None = None, bn_epsilon: float | None = None,
                 scratch_init: str = "pytorch", num_classes: int | None = None, augmentation=None,
                 seed: int | None = None) -> keras.Model:
    """A classifier for ``task`` on a registered backbone, from flat arguments.

    Args:
        backbone: a name in ``mask_keras.models.backbones.BACKBONES`` (``efficientnet_b0``,
            ``resnet50``, ``swin``, ``tiny_cnn``, ...).
        task: ``mask``, ``gender``, ``age``, ``multi`` (18 classes) or ``multihead`` (three
            heads; the model returns a dict).
        image_size: ``(height, width)`` of the pixels the model takes (the pipeline's).
        weights: ``"imagenet"``, a keras-hub preset name, a local path, or None (random init).
        head: ``"linear"`` or ``"shallow"`` (``head_units`` wide, then ``dropout``).
        head_units: hidden width of the shallow head.
        dropout: dropout before the output layer.
        bn_momentum: override the backbone's BatchNorm momentum (None: keep it).
        bn_epsilon: override the backbone's BatchNorm epsilon (None: keep it, or what
            ``scratch_init`` sets).
        scratch_init: with ``weights=None`` only: ``"pytorch"`` (depthwise kernels and
            BatchNorm epsilon as PyTorch initialises them) or ``"keras"`` (the backbone's
            own); see :func:`apply_scratch_init`.
        num_classes: outputs of a single-head model (default: the task's 3/2/3/18); None
            for ``multihead``.
        augmentation: per-image augmentation run in training only as the model's first
            layer: None, a preset name (``"base"``, ``"team000"``, ...), an
            :class:`mask_keras.augment.Augmentation` or a list of Keras layers.
        seed: seeds a preset's augmentation.

    Returns:
        A functional ``keras.Model`` named ``f"{task}_{backbone}"`` taking ``(H, W, 3)``
        RGB pixels in 0..255.

    Example:
        >>> m = create_model("tiny_cnn", "gender", image_size=(32, 24))
        >>> m.name, tuple(m.output.shape)
        ('gender_tiny_cnn', (None, 2))
    """
    L.check_task(task)
    H.check_head(head)
    if len(tuple(image_size)) != 2:
        raise ConfigError(f"image_size must be (height, width), got {image_size!r}")
    if task == "multihead":
        if num_classes is not None:
            raise ConfigError("task 'multihead' has fixed outputs mask(3)/gender(2)/age(3); "
                              "leave num_classes=None")
    else:
        num_classes = int(num_classes or L.TASK_CLASSES[task])

    spec = B.get_spec(backbone)
    h, w = (int(v) for v in image_size)
    net, converter = B.build_backbone(spec.name, (h, w), weights)
    check_scratch_init(scratch_init)
    if weights is None:
        apply_scratch_init(net, scratch_init, seed=seed)
    if bn_momentum is not None:
        set_bn_momentum(net, bn_momentum)
    if bn_epsilon is not None:
        set_bn_epsilon(net, bn_epsilon)

    inputs = keras.Input(shape=(h, w, 3), dtype="float32", name="image")
    x = inputs
    aug = _augmentation_layer(augmentation, seed)
    if aug is not None:
        x = aug(x)
    x = B.make_input_adapter(spec, converter=converter)(x)
    bh, bw = net.input.shape[1:3]
    if bh is not None and bw is not None and (int(bh), int(bw)) != (h, w):
        x = keras.layers.Resizing(int(bh), int(bw), interpolation="bilinear", name="resize")(x)
    x = net(x)
    rank = len(net.output.shape)
    pool = keras.layers.GlobalAveragePooling2D if rank == 4 else keras.layers.GlobalAveragePooling1D
    x = pool(name="pool")(x)
    if task == "multihead":
        outputs = H.apply_multihead(x, head, units=head_units, dropout=dropout)
    else:
        outputs = H.apply_head(x, num_classes, head, units=head_units, dropout=dropout)
    return keras.Model(inputs, outputs, name=f"{task}_{spec.name}")


def _augmentation_layer(augmentation, seed):
    """None, a preset name, an Augmentation or a list of layers -> the model's first layer (or None)."""
    if augmentation is None or (isinstance(augmentation, str) and augmentation == "none"):
        return None
    if isinstance(augmentation, str):
        return Augmentation.from_preset(augmentation, seed=seed, name="augmentation")
    if isinstance(augmentation, Augmentation):
        return augmentation
    if isinstance(augmentation, (list, tuple)):
        return Augmentation(list(augmentation), name="augmentation")
    raise TypeError(f"augmentation must be None, a preset name, an Augmentation or a list of layers, "
                    f"got {type(augmentation).__name__}")


def build_model(model_cfg: ModelConfig, task: str, image_size, num_classes: int | None = None,
                *, augment: str | None = None, seed: int | None = None) -> keras.Model:
    """:func:`create_model` from a :class:`mask_keras.config.ModelConfig` (what training uses).

    Args:
        model_cfg: the run's model section (backbone, weights, head, head_units, dropout,
            bn_momentum).
        task: see :func:`create_model`.
        image_size: ``(height, width)`` of the pipeline's images.
        num_classes: see :func:`create_model`.
        augment: an augmentation preset name (``AugmentConfig.preset``); None or ``"none"``:
            no augmentation layer.
        seed: seeds the augmentation.

    Returns:
        The model :func:`create_model` builds.
    """
    return create_model(model_cfg.backbone, task, image_size, weights=model_cfg.weights, head=model_cfg.head,
                        head_units=model_cfg.head_units, dropout=model_cfg.dropout,
                        bn_momentum=getattr(model_cfg, "bn_momentum", None),
                        bn_epsilon=getattr(model_cfg, "bn_epsilon", None),
                        scratch_init=getattr(model_cfg, "scratch_init", "pytorch"), num_classes=num_classes,
                        augmentation=augment, seed=seed)


#: the depthwise fans of :func:`init_depthwise`
DEPTHWISE_FANS = ("fan_out", "channels")
#: PyTorch's BatchNorm epsilon (``torch.nn.BatchNorm2d``; Keras' is 1e-3)
TORCH_BN_EPSILON = 1e-5


def check_scratch_init(name: str) -> str:
    """Validate a ``scratch_init`` name.

    Args:
        name: one of ``SCRATCH_INITS`` (``pytorch``, ``keras``).

    Returns:
        ``name`` unchanged.

    Raises:
        ConfigError: an unknown name, naming the choices.
    """
    if name not in SCRATCH_INITS:
        raise unknown_choice("model.scratch_init", name, SCRATCH_INITS)
    return name


def apply_scratch_init(model: keras.Model, mode: str = "pytorch", seed: int | None = None) -> int:
    """Initialise a randomly initialised depthwise-separable backbone as PyTorch would, or keep Keras'.

    ``"pytorch"``, on a model with depthwise convolutions and BatchNorm (EfficientNet,
    MobileNet; not ConvNeXt, whose LayerNorm has no such epsilon): every depthwise kernel
    re-drawn at PyTorch's scale (:func:`init_depthwise` ``"channels"``) and every BatchNorm
    epsilon set to 1e-5 (:func:`set_bn_epsilon`), the pair torchvision trains its
    EfficientNets and MobileNets from scratch with. Keras' pair (fan
    ``k*k``, epsilon 1e-3; TF's and timm's) starts the depthwise kernels 6-40x larger, so under
    Adam (a step of about the learning rate per weight) they turn that much slower; the
    smaller kernels alone are no cure, their outputs (variance ~1e-3 in the deep blocks)
    then meet epsilon 1e-3. EfficientNet-B0 from scratch, 8 epochs at 128x96, two data seeds
    (bench/README.md, "headline scale"): evaluation macro F1 1.06x and 1.08x Keras' init's
    (validation 0.37 and 0.42 against 0.35 and 0.37).
    A model without both (ResNets, ``tiny_cnn``, Swin, ConvNeXt) is left as it is: there the
    two inits agree but for the epsilon, and that change was not measured. EfficientNetV2
    gets the same pair (measured on B0 only; the small kernels need the small epsilon in
    Keras, as above, though torchvision's V2 keeps 1e-3). Only for
    ``weights=None``: pretrained statistics were learned with the backbone's own epsilon.

    Args:
        model: any Keras model (nested models are searched).
        mode: ``"pytorch"`` or ``"keras"`` (changes nothing).
        seed: seeds the depthwise draw (None: Keras' global seed).

    Returns:
        How many layers were changed.

    Raises:
        ConfigError: an unknown ``mode``.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.DepthwiseConv2D(3),
        ...                       keras.layers.BatchNormalization()])
        >>> apply_scratch_init(m, "pytorch", seed=0), float(m.layers[1].epsilon)
        (2, 1e-05)
    """
    check_scratch_init(mode)
    if mode == "keras":
        return 0
    layers = list(all_layers(model))
    if not (any(isinstance(x, keras.layers.DepthwiseConv2D) for x in layers)
            and any(isinstance(x, keras.layers.BatchNormalization) for x in layers)):
        return 0
    return init_depthwise(model, "channels", seed=seed) + set_bn_epsilon(model, TORCH_BN_EPSILON)


def init_depthwise(model: keras.Model, mode: str = "channels", seed: int | None = None) -> int:
    """Re-initialise every depthwise kernel of ``model`` (He normal, truncated) over a chosen fan.

    A ``(k, k, C, 1)`` depthwise kernel has a fan of ``k*k`` per output channel, which is
    what Keras applications (and TF's and timm's EfficientNets) scale by: std ``sqrt(2/(k*k))``,
    ~0.47 for 3x3. PyTorch's ``kaiming_normal_(mode="fan_out")`` (torchvision's EfficientNet,
    MobileNet) counts ``k*k*C`` and starts 6-40x smaller. A BatchNorm follows every depthwise
    convolution, so the scale changes the forward pass only through its epsilon; it sets how
    fast Adam turns the kernel (each step moves a weight by about the learning rate, whatever
    its size). :func:`apply_scratch_init` pairs the small scale with PyTorch's epsilon.

    Args:
        model: any Keras model; nested models are searched.
        mode: ``"fan_out"``: std ``sqrt(2/(k*k))`` (Keras'); ``"channels"``: std
            ``sqrt(2/(k*k*C))`` (PyTorch's).
        seed: seeds the draw (None: Keras' global seed).

    Returns:
        How many kernels were re-initialised.

    Raises:
        ConfigError: an unknown ``mode``.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.DepthwiseConv2D(3)])
        >>> init_depthwise(m, "channels", seed=0)
        1
    """
    if mode not in DEPTHWISE_FANS:
        raise unknown_choice("depthwise fan", mode, DEPTHWISE_FANS)
    n = 0
    for i, layer in enumerate(l for l in all_layers(model) if isinstance(l, keras.layers.DepthwiseConv2D)):
        kernel = layer.kernel
        kh, kw, c, m = kernel.shape
        fan = kh * kw * m * (c if mode == "channels" else 1)
        std = (2.0 / fan) ** 0.5 / 0.87962566103423978  # truncated at 2 std, as VarianceScaling
        init = keras.initializers.TruncatedNormal(stddev=std, seed=None if seed is None else seed + i)
        kernel.assign(init(kernel.shape, kernel.dtype))
        n += 1
    return n


def set_bn_epsilon(model: keras.Model, epsilon: float) -> int:
    """Set the variance epsilon of every BatchNormalization layer (nested ones too).

    Keras' default is 1e-3, PyTorch's 1e-5. It matters where a layer's activations have a
    variance near epsilon: then BatchNorm no longer scales them to unit variance.

    Args:
        model: any Keras model.
        epsilon: the new epsilon, > 0.

    Returns:
        How many BatchNormalization layers were set.

    Raises:
        ConfigError: ``epsilon`` not > 0.
    """
    if not epsilon > 0:
        raise ConfigError(f"model.bn_epsilon must be > 0, got {epsilon}")
    return _set_on_batchnorms(model, "epsilon", float(epsilon))


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer (nested ones too).

    Keras backbones use 0.99: from scratch on a few hundred steps the moving statistics
    are still mostly their initial values, so validation (which uses them) sees a
    different network than training. 0.9 settles within a few dozen steps.

    Args:
        model: any Keras model.
        momentum: the new momentum, in (0, 1) (Keras' convention: PyTorch's 0.1 is 0.9 here).

    Returns:
        How many BatchNormalization layers were set.

    Raises:
        ConfigError: ``momentum`` outside (0, 1).
    """
    if not 0.0 < momentum < 1.0:
        raise ConfigError(f"model.bn_momentum must be in (0, 1), got {momentum}")
    return _set_on_batchnorms(model, "momentum", float(momentum))


def _set_on_batchnorms(model: keras.Model, attr: str, value: float) -> int:
    """Set ``attr`` on every BatchNormalization layer nested in ``model``; how many were set."""
    n = 0
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            setattr(layer, attr, value)
            n += 1
    return n


# --------------------------------------------------------------------------- melting
def backbone_of(model: keras.Model) -> keras.Layer:
    """The nested backbone of a model from :func:`create_model` (also after reloading).

    Args:
        model: a model from :func:`create_model` / :func:`build_model`.

    Returns:
        Its layer named ``"backbone"``.

    Raises:
        ValueError: the model has no such layer.
    """
    try:
        return model.get_layer("backbone")
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named 'backbone'; "
                         f"was it built by mask_keras.models.build_model?") from None


def set_backbone_trainable(model: keras.Model, trainable: bool) -> keras.Model:
    """Freeze (``False``) or unfreeze the backbone; the head stays trainable.

    Takes effect at the next ``model.compile`` - compile again, with a new optimizer
    (:func:`fresh_optimizer`), before the next ``fit``.

    Args:
        model: a model from :func:`create_model`.
        trainable: the backbone's new ``trainable`` flag.

    Returns:
        ``model`` (changed in place).
    """
    backbone_of(model).trainable = bool(trainable)
    return model


class MeltingPhase(NamedTuple):
    """One ``fit`` call of :func:`fit_melting`.

    Attributes:
        backbone_trainable: the backbone trains in this phase (False: frozen, the head only).
        initial_epoch: the epoch the phase starts at (``fit(initial_epoch=...)``).
        epochs: the epoch the phase stops at (``fit(epochs=...)``, exclusive).
    """

    backbone_trainable: bool
    initial_epoch: int
    epochs: int  # the epoch to stop at (keras ``fit(epochs=...)`` semantics)


def melting_phases(epochs: int, freeze_epochs: int = 0) -> list[MeltingPhase]:
    """The phases of a melting run: frozen for ``freeze_epochs``, then trainable.

    Args:
        epochs: the run's epochs, >= 1.
        freeze_epochs: epochs with the backbone frozen, >= 0 (0: one trainable phase;
            >= ``epochs``: one frozen phase).

    Returns:
        A list of one or two :class:`MeltingPhase`.

    Raises:
        ConfigError: ``epochs < 1`` or ``freeze_epochs < 0``.

    Example:

    >>> melting_phases(10, 3)
    [MeltingPhase(backbone_trainable=False, initial_epoch=0, epochs=3), MeltingPhase(backbone_trainable=True, initial_epoch=3, epochs=10)]
    >>> melting_phases(10)
    [MeltingPhase(backbone_trainable=True, initial_epoch=0, epochs=10)]
    """
    epochs, freeze_epochs = int(epochs), int(freeze_epochs)
    if epochs < 1 or freeze_epochs < 0:
        raise ConfigError(f"melting: need epochs >= 1 and freeze_epochs >= 0, got {epochs}, {freeze_epochs}")
    if freeze_epochs == 0:
        return [MeltingPhase(True, 0, epochs)]
    if freeze_epochs >= epochs:
        return [MeltingPhase(False, 0, epochs)]
    return [MeltingPhase(False, 0, freeze_epochs), MeltingPhase(True, freeze_epochs, epochs)]


def fresh_optimizer(optimizer, model: keras.Model | None = None, keep_iterations: bool = True):
    """A new, unbuilt optimizer for a recompile.

    ``optimizer`` is a factory (``lambda: keras.optimizers.Adam(1e-4)``), an optimizer
    instance (cloned from its config: same class, learning rate or schedule) or a name.
    With ``keep_iterations`` and a compiled ``model``, the clone continues the step
    count of the model's current optimizer, so a learning-rate schedule carries on
    across the melting phases instead of restarting.

    Args:
        optimizer: a factory, an optimizer instance or a Keras optimizer name.
        model: the compiled model whose step count to continue (None: start at 0).
        keep_iterations: continue the step count of ``model.optimizer``.

    Returns:
        A new ``keras.optimizers.Optimizer``.
    """
    if callable(optimizer) and not isinstance(optimizer, keras.optimizers.Optimizer):
        new = optimizer()
    elif isinstance(optimizer, keras.optimizers.Optimizer):
        new = optimizer.__class__.from_config(optimizer.get_config())
    else:
        new = keras.optimizers.get(optimizer)
    old = getattr(model, "optimizer", None) if model is not None else None
    if keep_iterations and old is not None and old is not new:
        new.iterations.assign(old.iterations)
    return new


def fit_melting(model: keras.Model, compile_fn: Callable[[keras.Model], None], *fit_args,
                epochs: int, freeze_epochs: int = 0, phase_callbacks: Callable | None = None,
                **fit_kwargs) -> list:
    """Fit with the backbone frozen for ``freeze_epochs``, then unfrozen (team 003's melting).

    ``compile_fn(model)`` must call ``model.compile`` with a *new* optimizer each time
    (e.g. ``optimizer=fresh_optimizer(factory, model)``); it is called once per phase,
    after the backbone's ``trainable`` flag is set. ``mask_keras.train.train`` runs the
    same :func:`melting_phases` (written out there, as a resumed run may start inside a phase).

    Args:
        model: a model from :func:`create_model`.
        compile_fn: ``compile_fn(model)`` compiles it with a new optimizer.
        *fit_args: passed to every ``model.fit`` (e.g. the dataset).
        epochs: total epochs.
        freeze_epochs: epochs with the backbone frozen first (0: plain ``fit``).
        phase_callbacks: ``phase_callbacks(phase)`` returns that phase's callbacks (optional).
        **fit_kwargs: passed to every ``model.fit``.

    Returns:
        The ``History`` of each phase, in order.

    Example:

    >>> import numpy as np
    >>> model = create_model("tiny_cnn", "gender", (16, 16))
    >>> def compile_fn(m):
    ...     m.compile(optimizer=fresh_optimizer(lambda: keras.optimizers.Adam(1e-3), m),
    ...               loss="categorical_crossentropy")
    >>> x = np.zeros((8, 16, 16, 3), "uint8"); y = np.eye(2)[np.arange(8) % 2]
    >>> histories = fit_melting(model, compile_fn, x, y, epochs=2, freeze_epochs=1, batch_size=4, verbose=0)
    >>> [h.epoch for h in histories], backbone_of(model).trainable
    ([[0], [1]], True)
    """
    histories = []
    for phase in melting_phases(epochs, freeze_epochs):
        set_backbone_trainable(model, phase.backbone_trainable)
        compile_fn(model)
        kw = dict(fit_kwargs)
        if phase_callbacks is not None:
            kw["callbacks"] = phase_callbacks(phase)
        histories.append(model.fit(*fit_args, initial_epoch=phase.initial_epoch, epochs=phase.epochs, **kw))
    return histories
