"""Classifier heads on pooled backbone features.

* ``linear``  - Dropout -> Dense(C) -> softmax (the usual fine-tuning head).
* ``shallow`` - Dense(units, relu) -> Dropout -> Dense(C) -> softmax: the "2 FC layer"
  classifier of team 003 (swin_b_shallow, convnext_small_shallow) and team 001's
  ResNeXt50 + Linear(128) + classifier.
* task ``multihead`` - three such heads on the same features, outputs named ``"mask"``
  (3 classes), ``"gender"`` (2) and ``"age"`` (3) (team 001's 3+2+3 model).

Every head ends in ``Activation("softmax", dtype="float32")``: probabilities stay float32
under a ``mixed_bfloat16`` / ``mixed_float16`` policy (losses and metrics read float32).
Only built-in Keras layers are used, so heads need no registration to reload.
"""
from __future__ import annotations

import keras

from .. import labels as L
from ..errors import ConfigError

HEADS = ("linear", "shallow")
#: multihead outputs, in order: name -> number of classes
MULTIHEAD_OUTPUTS = {t: L.TASK_CLASSES[t] for t in L.HEADS}


def check_head(head: str) -> str:
    """Validate a head name.

    Args:
        head: one of ``HEADS`` (``linear``, ``shallow``).

    Returns:
        ``head`` unchanged.

    Raises:
        ConfigError: an unknown head, naming the choices.
    """
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")
    return head


def apply_head(x, num_classes: int, head: str = "linear", *, units: int = 128,
               dropout: float = 0.2, name: str = "probs"):
    """Classifier on pooled features ``x`` -> float32 softmax tensor named ``name``.

    Layers are named ``{prefix}dropout``, ``{prefix}hidden``, ``{prefix}logits`` with
    ``prefix = "" if name == "probs" else f"{name}_"``.

    Args:
        x: pooled features, a ``(B, D)`` Keras tensor.
        num_classes: outputs (>= 2).
        head: ``"linear"`` (Dropout -> Dense) or ``"shallow"`` (Dense(units, relu) ->
            Dropout -> Dense).
        units: hidden width of the ``shallow`` head (>= 1); unused by ``linear``.
        dropout: dropout rate in ``[0, 1)``; 0 adds no Dropout layer.
        name: name of the output (softmax) layer.

    Returns:
        The ``(B, num_classes)`` float32 softmax tensor.

    Raises:
        ConfigError: an unknown head.
        ValueError: ``num_classes < 2``, ``dropout`` outside ``[0, 1)`` or ``units < 1``
            (shallow).

    Example:
        >>> probs = apply_head(keras.Input((16,)), 3, "shallow", units=8, name="mask")
        >>> probs.shape, probs.dtype
        ((None, 3), 'float32')
    """
    check_head(head)
    if int(num_classes) < 2:
        raise ValueError(f"apply_head: num_classes must be >= 2, got {num_classes}")
    if not 0 <= dropout < 1:
        raise ValueError(f"apply_head: dropout must be in [0, 1), got {dropout}")
    pre = "" if name == "probs" else f"{name}_"
    Lk = keras.layers
    if head == "shallow":
        if int(units) < 1:
            raise ValueError(f"apply_head: head_units must be >= 1, got {units}")
        x = Lk.Dense(int(units), activation="relu", name=f"{pre}hidden")(x)
    if dropout > 0:
        x = Lk.Dropout(dropout, name=f"{pre}dropout")(x)
    x = Lk.Dense(int(num_classes), name=f"{pre}logits")(x)
    return Lk.Activation("softmax", dtype="float32", name=name)(x)


def apply_multihead(x, head: str = "linear", *, units: int = 128, dropout: float = 0.2) -> dict:
    """Three heads on the same features: ``{"mask": (B,3), "gender": (B,2), "age": (B,3)}``.

    Args:
        x: pooled features, a ``(B, D)`` Keras tensor.
        head: ``"linear"`` or ``"shallow"`` (see :func:`apply_head`).
        units: hidden width of a ``shallow`` head.
        dropout: dropout rate in ``[0, 1)``.

    Returns:
        A dict task -> float32 softmax tensor, in ``MULTIHEAD_OUTPUTS`` order; each head's
        layers are prefixed with its task (``mask_logits``, ...).

    Example:
        >>> out = apply_multihead(keras.Input((16,)))
        >>> {k: v.shape for k, v in out.items()}
        {'mask': (None, 3), 'gender': (None, 2), 'age': (None, 3)}
    """
    return {task: apply_head(x, n, head, units=units, dropout=dropout, name=task)
            for task, n in MULTIHEAD_OUTPUTS.items()}


def num_classes_for(task: str) -> int | None:
    """Classes of a single-output task (None for ``multihead``).

    Args:
        task: a name in ``mask_keras.labels.TASKS`` (ValueError otherwise).

    Returns:
        3 (``mask``), 2 (``gender``), 3 (``age``), 18 (``multi``) or None (``multihead``).

    Example:
        >>> num_classes_for("multi"), num_classes_for("multihead")
        (18, None)
    """
    L.check_task(task)
    return L.TASK_CLASSES.get(task)
