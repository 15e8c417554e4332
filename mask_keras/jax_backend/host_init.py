"""Initial weights drawn on the host: building a model compiles nothing.

Why
---
Keras' JAX backend draws every initial weight with ``jax.random`` eagerly, and JAX compiles
one program per distinct shape (threefry, then the scale and the shift: three compiles of
0.1-0.7 s each on a 2-core CPU). Building EfficientNet-B0 made 162 compiles and took 35 s,
most of the start-up of a test, a demo or a ``predict`` that rebuilds a model; a program
per weight shape is also what a cold persistent compilation cache has to fill.

How
---
:func:`install` (called by ``import mask_keras``) wraps ``normal``, ``uniform`` and
``truncated_normal`` of ``keras.src.backend.jax.random``: when the seed Keras draws is a
concrete array (building a model, outside any traced function) the numbers come from
numpy's PCG64 seeded with that JAX key, and are put on the device once. Inside a traced
step (dropout, augmentation in ``fit``) the seed is a tracer and ``jax.random`` runs as
before. Seeding behaves as Keras documents it: ``keras.utils.set_random_seed(s)`` or an
initializer's ``seed`` gives the same weights every run (they differ from those Keras would
draw with ``jax.random`` for the same seed). Keras has no public hook for its random
backend, hence the patch. ``MASK_KERAS_HOST_INIT=0`` switches it off.
"""
from __future__ import annotations

import os

import jax
import numpy as np

ENV = "MASK_KERAS_HOST_INIT"
_original: dict = {}


def _keras_random():
    from keras.src.backend.jax import random  # no public hook for the random backend (module docstring)

    return random


def _draw(seed, *params):
    """``(key, rng)``: the JAX key Keras would use, and a numpy Generator seeded with it (None when
    the key or a parameter is traced: then ``jax.random`` must run inside the trace)."""
    from keras.src.random.seed_generator import draw_seed

    key = seed if isinstance(seed, jax.Array) else draw_seed(seed)  # advances a SeedGenerator once
    if any(isinstance(v, jax.core.Tracer) for v in (key, *params)):
        return key, None
    bits = np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return key, np.random.Generator(np.random.PCG64(bits.astype(np.uint64).ravel().tolist()))


def _finish(values: np.ndarray, dtype):
    import keras

    return jax.numpy.asarray(values, dtype=dtype or keras.config.floatx())


def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    key, rng = _draw(seed, mean, stddev)
    if rng is None:
        return _original["normal"](shape, mean=mean, stddev=stddev, dtype=dtype, seed=key)
    return _finish(rng.standard_normal(tuple(shape), dtype=np.float32) * float(stddev) + float(mean), dtype)


def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    key, rng = _draw(seed, minval, maxval)
    if rng is None or (dtype is not None and not np.issubdtype(np.dtype(dtype), np.floating)):
        return _original["uniform"](shape, minval=minval, maxval=maxval, dtype=dtype, seed=key)
    lo, hi = float(minval), float(maxval)
    return _finish(rng.random(tuple(shape), dtype=np.float32) * (hi - lo) + lo, dtype)


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Standard normal truncated to [-2, 2] (Keras' bounds), then ``* stddev + mean``."""
    key, rng = _draw(seed, mean, stddev)
    if rng is None:
        return _original["truncated_normal"](shape, mean=mean, stddev=stddev, dtype=dtype, seed=key)
    z = rng.standard_normal(tuple(shape), dtype=np.float32)
    bad = np.abs(z) > 2.0
    while bad.any():  # rejection: 4.6% redrawn per round
        z[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
        bad = np.abs(z) > 2.0
    return _finish(z * float(stddev) + float(mean), dtype)


_WRAPPERS = {"normal": normal, "uniform": uniform, "truncated_normal": truncated_normal}


def install() -> bool:
    """Draw concrete-seed initial weights on the host (idempotent; see the module docstring)."""
    import keras

    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off") or keras.backend.backend() != "jax":
        return False
    if not _original:
        mod = _keras_random()
        for name, fn in _WRAPPERS.items():
            _original[name] = getattr(mod, name)
            setattr(mod, name, fn)
    return True


def uninstall() -> None:
    mod = _keras_random()
    for name in list(_original):
        setattr(mod, name, _original.pop(name))


def installed() -> bool:
    return bool(_original)
