"""The ``tf.data`` settings every dataset of the package shares: functions kept out of
autograph (:func:`graph_fn`), the autotuner off (:func:`finish`), one map call per CPU
(:func:`parallel_calls`) and :data:`PREFETCH` batches ahead."""
from __future__ import annotations

import os

from .._tf import tf

#: batches prefetched ahead of the consumer (the model's step, or the cache build)
PREFETCH = 4


def parallel_calls() -> int:
    """Parallel map calls: one per CPU this process may run on.

    Returns:
        The number of CPUs in this process's affinity mask (at least 1).
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def graph_fn(fn):
    """``fn`` for a ``tf.data`` map, scan or filter, kept out of autograph.

    The package's dataset functions branch with ``tf.cond`` / ``tf.where``, never with Python
    control flow on tensors, so autograph's source rewrite only costs time: ~2 s the first
    time in a process (it parses and converts every function reached), ~0.1 s a map after.

    Args:
        fn: the function.

    Returns:
        ``fn``, marked not to be converted.
    """
    return tf.autograph.experimental.do_not_convert(fn)


def finish(ds):
    """The options of every dataset built here: tf.data's autotuner off.

    The autotuner's optimisation thread wakes at doubling intervals (10 ms, 20 ms, 40 ms,
    ...), and destroying an iterator waits for its next wake-up. Keras makes a new iterator
    every epoch, so every epoch (and the cache build) could stall for as long as it had run
    (measured with TF 2.21 on 2 CPUs: decoding 18,000 JPEGs took 6.3 s and its iterator's
    end another 3.9 s; cached 0.65 s epochs of ``fit`` took 1.25 s). With it off, maps run
    :func:`parallel_calls` calls and prefetch :data:`PREFETCH` batches; the decode's
    throughput was the same or better than with the autotuner in every round measured.

    Args:
        ds: a ``tf.data.Dataset``.

    Returns:
        ``ds`` with the autotuner disabled.
    """
    opts = tf.data.Options()
    opts.autotune.enabled = False
    return ds.with_options(opts)
