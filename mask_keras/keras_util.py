"""The Keras internals the package relies on, each in one place with the reason.

Keras 3 has public APIs for almost everything the package does; where it has none, the
internal is wrapped here (and only here), so that a Keras upgrade that moves it breaks one
function. ``tests/test_import_graph.py`` keeps every other module of the package and bench
off ``keras.src`` and Keras' private attributes (``jax_backend/`` patches Keras' JAX backend
by design and is allowed).
"""
from __future__ import annotations

import os
from typing import Iterator

import keras


def all_layers(model: keras.Layer) -> Iterator[keras.Layer]:
    """Every layer nested in ``model`` (not ``model`` itself), depth first.

    ``Model.layers`` lists only the direct children of a functional model; layers nested in
    custom layers (keras-hub blocks, our ``Augmentation`` stages) are reachable only through
    ``Layer._flatten_layers``, which has no public counterpart in Keras 3.

    Args:
        model: any Keras layer or model.

    Yields:
        Each nested ``keras.Layer`` once, depth first, ``model`` excluded.

    Example:
        >>> import keras
        >>> x = keras.Input((3,))
        >>> outer = keras.Model(x, keras.Sequential([keras.layers.Dense(2, name="d")])(x))
        >>> [layer.name for layer in outer.layers if isinstance(layer, keras.layers.Dense)]
        []
        >>> [layer.name for layer in all_layers(outer) if isinstance(layer, keras.layers.Dense)]
        ['d']
    """
    yield from model._flatten_layers(include_self=False, recursive=True)


def keras_home() -> str:
    """Keras' home folder (``KERAS_HOME`` or ``~/.keras``), where ``keras.utils.get_file``
    caches downloads: ``keras.src.backend.config.keras_home`` has no public alias in Keras 3;
    if it moves, the documented default is used.

    Returns:
        The folder's path as a string (it may not exist yet).
    """
    try:
        from keras.src.backend.config import keras_home as home  # no public API (docstring)

        return home()
    except Exception:  # pragma: no cover - the internal moved
        return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))


def sync_training_state(model: keras.Model) -> None:
    """Put the state ``fit`` is carrying between steps back into ``model``'s variables.

    Inside an epoch, Keras' JAX trainer keeps weights, optimizer and metric values as arrays
    passed from step to step and writes them back into the variables only at the epoch's end
    (or when asked, with ``jax_state_sync``, a JAX-trainer method with no backend-neutral
    counterpart); other backends update the variables in place, so there is nothing to do.

    Args:
        model: the model being fitted (a no-op when it has no ``jax_state_sync``).
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
