"""The only JAX-specific module: persistent compilation cache, compile counting, data parallelism.

Everything else in the package is backend-agnostic Keras. With another backend the cache
and the compile counter are no-ops and ``devices="all"`` raises a clear error.

One device, many devices, many hosts
------------------------------------
``train.devices="auto"`` (the default) trains on the first device. ``train.devices="all"``
(``mask-keras train --devices all``) trains with ``keras.distribution.DataParallel`` over
every device JAX sees: the model's variables are replicated, each batch of
``train.batch_size`` images is the *global* batch and is split along the batch axis, so
each of N devices computes ``batch_size / N`` rows and the gradients are reduced by XLA
(the result is the same computation as on one device, BatchNorm statistics included).
``batch_size`` must therefore be divisible by the number of devices (checked before any
work, :class:`~mask_keras.config.ConfigError` otherwise). Evaluation batches are padded to
full batches with weight-0 rows (:mod:`mask_keras.pipeline`), so nothing is dropped or
counted twice whatever the device count. The saved ``model.keras`` holds plain arrays and
loads in a single-device process.

Multi-host (several machines, or several processes on one machine, each with its own
GPUs): start the *same* command on every host with these environment variables set::

    KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1:1234   # coordinator host:port (process 0);
                                                     # a comma-separated list of every
                                                     # host:port is accepted too
    KERAS_DISTRIBUTION_NUM_PROCESSES=2               # number of processes in the job
    KERAS_DISTRIBUTION_PROCESS_ID=0                  # this process, 0..N-1 (0 = coordinator)

:func:`setup_distribution` then calls ``keras.distribution.initialize()`` (which calls
``jax.distributed.initialize``) before JAX touches a device, and the device list is the
global one (every device of every host). Each process builds the same tf.data pipeline
(same seed, same files: the data directory must be visible on every host); Keras shards
each global batch across processes (``DataParallel(auto_shard_dataset=True)``: rebatch to
``batch_size / processes`` and take every N-th piece), so ``batch_size`` must also be
divisible by the number of processes.

Only process 0 (the chief, :func:`is_chief`) writes: the artifact, config, split, history,
plots and checkpoints of ``train.out_dir`` (put it on shared storage to see them from every
host; the other processes create nothing there). Every process still computes the same
validation predictions and metrics, on a process-local copy of the model
(:class:`LocalPredictor`: Keras' ``predict`` cannot fetch outputs that span other hosts'
devices), so ``train`` returns the same result everywhere and callbacks such as early stopping
take the same decision on every host (values they depend on are taken from the chief,
:func:`from_chief`). Each process decodes the whole data set into its own cache
(``train.cache``): Keras shards batches, not files. K-fold ``resume`` in a multi-host job
needs ``train.out_dir`` on shared storage (process 0 decides which folds are done; a process
that cannot see their files stops with an error). Tested on CPU with two processes on one
machine (``tests/test_distribute.py``; JAX's CPU collectives use gloo).
On Cloud TPU pods and SLURM, ``jax.distributed.initialize()`` can discover the cluster by
itself: set ``MASK_KERAS_MULTIHOST=1`` instead of the three variables.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import Counter
from pathlib import Path

import keras
import numpy as np

from ..errors import ConfigError, unknown_choice

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("MASK_KERAS_JAX_CACHE", Path.home() / ".cache" / "mask_keras" / "jax"))
DEVICE_CHOICES = ("auto", "all")
MULTIHOST_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                 "KERAS_DISTRIBUTION_PROCESS_ID")
_cache_enabled: str | None = None
_multihost_done = False


def _is_jax() -> bool:
    return keras.backend.backend() == "jax"


# --------------------------------------------------------------------------- compilation cache
def enable_compilation_cache(cache_dir=None) -> str | None:
    """Turn on JAX's persistent compilation cache so repeated runs skip XLA compiles.

    Args:
        cache_dir: the cache folder (created); None: ``DEFAULT_CACHE_DIR``.

    Returns:
        The cache directory (str), or None when the backend is not JAX (nothing is changed).
    """
    global _cache_enabled
    if not _is_jax():
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


def compile_function(fn):
    """``fn`` as one compiled program: ``jax.jit`` on JAX, ``tf.function`` on TensorFlow, else as is.

    For package code that runs a model outside ``fit``/``predict`` (e.g. the forward passes of
    :mod:`mask_keras.bn_stats`): eager JAX would compile every primitive for every shape.

    Args:
        fn: a function of arrays (pure on JAX: no side effects on variables).

    Returns:
        The compiled callable, or ``fn`` itself on other backends.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        from .._tf import tf

        return tf.function(fn)
    return fn


# --------------------------------------------------------------------------- compile counting
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_counters: list["CompileCounter"] = []
_counters_lock = threading.Lock()
_listener_installed = False


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event != _BACKEND_COMPILE_EVENT or not _counters:
        return
    name = str(kwargs.get("fun_name", "?"))
    with _counters_lock:
        for c in _counters:
            c.counts[name] += 1
            c.seconds[name] += float(duration)


class CompileCounter:
    """Counts XLA executables built while active, by jitted function name.

    One count per program JAX had to build (compiled, or loaded from the persistent
    cache): a shape change, a ragged batch or a new dtype shows up as a second count of the
    same name. Keras' steps are named ``jit(train_step)``, ``jit(test_step)`` and
    ``jit(predict_step)``::

        with CompileCounter() as cc:
            model.fit(train_ds, validation_data=val_ds, epochs=2)
        assert cc.count("train_step") == 1 and cc.count("test_step") == 1
    """

    def __init__(self):
        self.counts: Counter = Counter()
        self.seconds: Counter = Counter()

    def count(self, name: str) -> int:
        """Compiles of the function ``name`` (``"train_step"`` matches ``jit(train_step)``).

        Args:
            name: the jitted function's name, with or without ``jit(...)``.

        Returns:
            The number of programs built for it while the counter was active (int).
        """
        return sum(v for k, v in self.counts.items() if k == name or k == f"jit({name})")

    def compile_seconds(self, name: str) -> float:
        """Seconds spent building the programs of ``name``.

        Args:
            name: as in :meth:`count`.

        Returns:
            The total in seconds (0 when none was built).
        """
        return sum(v for k, v in self.seconds.items() if k == name or k == f"jit({name})")

    def __enter__(self) -> "CompileCounter":
        global _listener_installed
        if _is_jax():
            import jax

            with _counters_lock:
                if not _listener_installed:
                    jax.monitoring.register_event_duration_secs_listener(_on_duration)
                    _listener_installed = True
                _counters.append(self)
        return self

    def __exit__(self, *exc) -> None:
        with _counters_lock:
            if self in _counters:
                _counters.remove(self)

    def __repr__(self) -> str:
        return f"CompileCounter({dict(self.counts)})"


# --------------------------------------------------------------------------- devices
def device_count() -> int:
    """Devices a ``devices="all"`` run would use (every host's, after multi-host initialise).

    Returns:
        ``jax.device_count()``; 1 when the backend is not JAX.
    """
    if not _is_jax():
        return 1
    import jax

    return jax.device_count()


def local_device_count() -> int:
    """Devices attached to this process.

    Returns:
        ``jax.local_device_count()``; 1 when the backend is not JAX.
    """
    if not _is_jax():
        return 1
    import jax

    return jax.local_device_count()


def process_count() -> int:
    """Processes in the job (1 unless a multi-host job was joined).

    Returns:
        ``jax.process_count()``; 1 when the backend is not JAX.
    """
    if not _is_jax():
        return 1
    import jax

    return jax.process_count()


def process_index() -> int:
    """This process's index in a multi-host job.

    Returns:
        ``jax.process_index()``, 0..N-1; 0 in a single-process run or without JAX.
    """
    if not _is_jax():
        return 0
    import jax

    return jax.process_index()


def is_chief() -> bool:
    """Whether this process writes the artifacts.

    Returns:
        True on process 0 (always in a single-process run).
    """
    return process_index() == 0


def from_chief(value: float) -> float:
    """``value`` as process 0 computed it, on every process (itself in a single-process run).

    For numbers that steer training (a callback's ``val_macro_f1``): every host must take
    the same early-stopping and checkpoint decisions, or the collectives deadlock.

    Args:
        value: a number this process computed; every process must call this (a collective).

    Returns:
        Process 0's ``value`` as a float (``value`` unchanged in a single-process run).
    """
    if process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return float(multihost_utils.broadcast_one_to_all(np.asarray(value, np.float64)))


@contextlib.contextmanager
def no_distribution():
    """Run the body with no Keras distribution set (single-device placement); restore after.

    Yields:
        None; the previous ``keras.distribution.distribution()`` is set again on exit.
    """
    prev = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(prev)


class LocalPredictor:
    """``model.predict`` that works in every process of a multi-host job.

    Keras' JAX ``predict`` gathers its outputs with ``np.asarray``, which fails when a
    batch is split over other processes' devices. In a multi-process run this keeps a
    replica of ``model`` on this process's first device, outside the distribution, copies
    the current weights into it on each call (the replica's compiled predict function is
    reused: same shapes) and predicts the *whole* dataset locally. In a single-process run
    (one or many local devices) it is ``model.predict``.

    Args:
        model: the (distributed) model; call with ``(ds, **predict_kwargs)`` (``verbose=0``).
    """

    def __init__(self, model):
        self.model = model
        self._replica = None

    def __call__(self, ds, **kwargs):
        kwargs.setdefault("verbose", 0)
        if process_count() == 1:
            return self.model.predict(ds, **kwargs)
        import jax

        weights = self.model.get_weights()  # replicated variables: readable on every process
        with no_distribution(), jax.default_device(jax.local_devices()[0]):
            if self._replica is None:
                self._replica = keras.models.clone_model(self.model)
            self._replica.set_weights(weights)
            return self._replica.predict(ds, **kwargs)


def multihost_requested() -> bool:
    """Whether the environment asks for a multi-process job (see the module docstring).

    Returns:
        True when ``MASK_KERAS_MULTIHOST`` is set and not 0, or ``KERAS_DISTRIBUTION_NUM_PROCESSES`` not 1.
    """
    if os.environ.get("MASK_KERAS_MULTIHOST", "").strip() not in ("", "0"):
        return True
    n = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "").strip()
    return bool(n) and n != "1"


def initialize_multihost() -> None:
    """Join a multi-host JAX cluster from the environment (idempotent).

    Set on every host ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (coordinator ``host:port``, or
    the comma-separated list of every host's, coordinator first),
    ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``; or
    ``MASK_KERAS_MULTIHOST=1`` where ``jax.distributed.initialize()`` discovers the cluster
    itself (Cloud TPU, SLURM). Must run before JAX uses any device.
    """
    global _multihost_done
    if _multihost_done:
        return
    if not _is_jax():
        raise RuntimeError("multi-host training needs the JAX backend (keras.distribution)")
    if not any(os.environ.get(k) for k in MULTIHOST_ENV):
        import jax

        jax.distributed.initialize()  # auto-detected cluster (TPU pod, SLURM, ...)
    else:
        missing = [k for k in MULTIHOST_ENV[1:] if not os.environ.get(k)]
        if missing:
            raise RuntimeError(f"multi-host training: set {', '.join(missing)} beside "
                               f"KERAS_DISTRIBUTION_JOB_ADDRESSES on every host (see mask_keras.jax_backend.distribute)")
        keras.distribution.initialize()
    _multihost_done = True
    import jax

    log.info("multi-host: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def join_job(devices: str = "auto") -> None:
    """Join the multi-host job the environment describes, when ``devices="all"`` (idempotent).

    Call before anything asks :func:`is_chief` / :func:`process_index` or touches a JAX
    device: JAX can only join a cluster before its backend starts. :func:`setup_distribution`
    does it; drivers that decide per process before training (K-fold) call this first.

    Args:
        devices: ``train.devices``; only ``"all"`` joins a job.
    """
    if devices == "all" and multihost_requested():
        initialize_multihost()


def check_batch_size(batch_size: int, n_devices: int | None = None, n_processes: int | None = None) -> None:
    """ConfigError unless the global batch splits evenly over the devices and processes.

    Args:
        batch_size: the global batch (``train.batch_size``).
        n_devices: devices to split over; None: :func:`device_count`.
        n_processes: processes to split over; None: :func:`process_count`.
    """
    n_devices = device_count() if n_devices is None else int(n_devices)
    n_processes = process_count() if n_processes is None else int(n_processes)
    for n, what in ((n_devices, "devices"), (n_processes, "processes")):
        if n > 1 and int(batch_size) % n:
            lo = (int(batch_size) // n) * n
            hint = f"{lo} or {lo + n}" if lo else f"{n}"
            raise ConfigError(f"train.batch_size {batch_size} is the global batch of a data-parallel run over {n} "
                              f"{what} and must be divisible by {n}; use e.g. {hint}")


class DataParallel(keras.distribution.DataParallel):
    """``keras.distribution.DataParallel`` whose per-process datasets keep their length.

    In a multi-process job Keras shards each global batch over the processes (rebatch to
    ``batch / processes``, then take every N-th piece), which leaves the dataset's
    cardinality unknown: ``fit`` then shows no epoch length and warns that the input "ran out
    of data" at the end of every first epoch. With the global batch divisible by the number
    of processes (checked) each process gets exactly as many batches as there were global
    ones, so that count is asserted on the sharded dataset.
    """

    def distribute_dataset(self, dataset):
        """Keras' per-process sharding of ``dataset``, asserted to keep its batch count when known.

        Args:
            dataset: a ``tf.data.Dataset`` of global batches.

        Returns:
            The dataset this process iterates (``dataset`` itself when Keras does not shard).
        """
        out = super().distribute_dataset(dataset)
        if out is dataset:
            return out
        from .._tf import tf

        n = int(dataset.cardinality())
        return out.apply(tf.data.experimental.assert_cardinality(n)) if n >= 0 else out


def setup_distribution(devices: str = "auto", batch_size: int | None = None):
    """``devices="all"``: data-parallel over every device (keras.distribution.DataParallel).

    Joins a multi-host job first when the environment asks for one (module docstring).
    Undo with ``keras.distribution.set_distribution(None)``.

    Args:
        devices: ``"auto"``/None (one device, nothing changed) or ``"all"``; else ConfigError.
        batch_size: the global batch, checked to split evenly over the devices (and hosts).

    Returns:
        The :class:`DataParallel` distribution (now the global one), or None for ``"auto"``.
    """
    if devices in ("auto", None):
        if multihost_requested():
            log.warning("the environment describes a multi-host job (KERAS_DISTRIBUTION_* / MASK_KERAS_MULTIHOST) "
                        "but train.devices is 'auto': this process trains alone on one device; "
                        "use --devices all (train.devices='all') on every host to train together")
        return None
    if devices != "all":
        raise unknown_choice("train.devices", devices, DEVICE_CHOICES)
    if not _is_jax():
        raise ConfigError("train.devices='all' needs the JAX backend (keras.distribution); "
                          f"KERAS_BACKEND is {keras.backend.backend()!r}")
    join_job(devices)
    devs = keras.distribution.list_devices()
    if batch_size is not None:
        check_batch_size(batch_size, len(devs))
    dist = DataParallel(devices=devs)
    keras.distribution.set_distribution(dist)
    log.info("DataParallel over %d device(s) in %d process(es): %s; global batch %s, %s per device",
             len(devs), process_count(), devs, batch_size,
             None if batch_size is None else batch_size // len(devs))
    return dist
