"""The only JAX-specific module: persistent compilation cache and data-parallel distribution.

Everything else in the package is backend-agnostic Keras. With another backend these
functions are no-ops (the cache) or raise a clear error (distribution).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import keras

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("MASK_KERAS_JAX_CACHE", Path.home() / ".cache" / "mask_keras" / "jax"))
_cache_enabled: str | None = None


def enable_compilation_cache(cache_dir=None) -> str | None:
    """Turn on JAX's persistent compilation cache so repeated runs skip XLA compiles.

    Returns the cache directory, or None when the backend is not JAX.
    """
    global _cache_enabled
    if keras.backend.backend() != "jax":
        return None
    cache_dir = str(cache_dir or DEFAULT_CACHE_DIR)
    if _cache_enabled == cache_dir:
        return cache_dir
    import jax

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    # cache every program, even fast-compiling small ones (our test and demo models)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _cache_enabled = cache_dir
    log.info("JAX persistent compilation cache: %s", cache_dir)
    return cache_dir


def local_device_count() -> int:
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.local_device_count()


def setup_distribution(devices: str = "auto"):
    """``devices="all"``: data-parallel over every local device (keras.distribution).

    Multi-host: call :func:`initialize_multihost` first on every host. Returns the
    DataParallel distribution or None (single device).
    """
    if devices in ("auto", "1", "one", None):
        return None
    if devices != "all":
        raise ValueError(f"devices must be 'auto' or 'all', got {devices!r}")
    if keras.backend.backend() != "jax":
        raise RuntimeError("devices='all' needs the JAX backend (keras.distribution)")
    devs = keras.distribution.list_devices()
    dist = keras.distribution.DataParallel(devices=devs)
    keras.distribution.set_distribution(dist)
    log.info("DataParallel over %d devices: %s", len(devs), devs)
    return dist


def initialize_multihost() -> None:
    """Join a multi-host JAX cluster from the environment.

    Set on every host: ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (comma-separated
    host:port list, first is the coordinator), ``KERAS_DISTRIBUTION_NUM_PROCESSES``
    and ``KERAS_DISTRIBUTION_PROCESS_ID``; then every host runs the same command.
    """
    keras.distribution.initialize()
