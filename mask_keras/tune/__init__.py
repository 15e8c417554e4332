"""Distributed hyper-parameter search: an Optuna study kept in a database.

Every worker runs the same command; they meet in the study stored at ``storage`` and
share its trials, so a search scales from one process to many machines without a
job queue of its own::

    # one machine (SQLite file; start the same command in as many terminals as you like)
    mask-keras tune --space space.json --trials 40 --study lr_loss \\
        --storage sqlite:///runs/tune/study.db --data-dir data/default --epochs 8

    # many machines (one PostgreSQL database reachable from all of them;
    # needs ``pip install psycopg2-binary`` on every worker)
    mask-keras tune --space space.json --trials 40 --study lr_loss \\
        --storage postgresql://user:pass@dbhost/mask_tune --data-dir /data/masks --epochs 8

``space.json`` maps dotted config keys (see :mod:`mask_keras.config`) to distributions::

    {"train.lr": ["loguniform", 1e-5, 1e-2],
     "train.batch_size": ["categorical", [32, 64]],
     "augment.mixup": ["uniform", 0.0, 0.5],
     "model.head_units": ["int", 64, 512, 64],
     "loss.name": ["categorical", ["ce", "focal", "f1_focal"]],
     "preprocess.image_size": ["categorical", [[128, 96], [224, 224]]]}

Kinds: ``uniform``/``loguniform`` (low, high), ``int`` (low, high[, step]),
``categorical`` (list of choices; lists such as image sizes are allowed). The space is
checked (kinds, bounds, keys, value types) before any trial starts.

What a run leaves behind:

- each trial trains with ``train.out_dir = <out_dir>/trial_<number>`` (its artifact and
  ``config.json``); the trial records ``out_dir``, ``host`` and ``pid`` as user
  attributes, so the best model can be found even when another machine trained it;
- ``<out_dir>/best_config.json``: the base config with the best trial's parameters,
  ready for ``mask-keras train --config``; ``<out_dir>/trials.csv``: every trial;
- the default ``out_dir`` is ``runs/tune/<study>``.

How the workers cooperate:

- ``--trials N`` is the size of the *study*: workers stop once N trials are finished
  (complete or pruned), however many workers there are. A worker that finds the
  remaining trials running elsewhere waits for them rather than starting extra ones.
  Rerunning a finished study with a larger N continues it.
- Finished trials are committed when they end, so a crash loses only the running
  trial. A worker that dies leaves its trial RUNNING; workers record a heartbeat, and
  a trial whose heartbeat is older than the grace period is marked FAIL by the next
  worker that looks and queued again with the same parameters (up to ``max_retry``
  times); the retry trains in the failed trial's folder with ``train.resume``, so it
  continues from that run's newest epoch backup (on storage the workers share) instead of
  starting again. Restarting the command is always safe.
- Trials report the validation macro F1 after every epoch; the pruner (median by
  default) stops trials that are clearly behind.
- ``--wandb`` logs each trial as a wandb run (offline unless
  ``--set train.wandb_mode=online``) grouped by the study name.

SQLite serves the workers of one machine (a local disk, not NFS); for several machines
use PostgreSQL (or MySQL).

The package: ``space.py`` (the search space), ``storage.py`` (the database, sampler and
pruner), ``search.py`` (the loop every worker runs, the objective, the pruning callback),
``results.py`` (best parameters, summary, ``best_config.json``).
"""
from __future__ import annotations

from .results import best_params, finish, summarize, write_best_config  # noqa: F401
from .space import KINDS, MONITOR, Param, load_space, parse_space, space_json  # noqa: F401
from .storage import DEFAULT_STORAGE, PRUNERS, make_storage, open_study  # noqa: F401

#: names of search.py, imported on first use: it imports the training code (TensorFlow, JAX),
#: which ``mask-keras --help`` and a mistyped option should not wait for
_SEARCH = ("OptunaPruningCallback", "TuneError", "make_objective", "train_objective", "tune")
__all__ = ["best_params", "finish", "summarize", "write_best_config", "KINDS", "MONITOR", "Param", "load_space",
           "parse_space", "space_json", "DEFAULT_STORAGE", "PRUNERS", "make_storage", "open_study", *_SEARCH]


def __getattr__(name: str):
    """The search loop's module and names (PEP 562), imported when first asked for.

    Args:
        name: an attribute of this package.

    Returns:
        The module ``search``, or the object ``search.<name>``.

    Raises:
        AttributeError: ``name`` is not one of them.
    """
    if name in _SEARCH or name == "search":
        import importlib

        search = importlib.import_module(f"{__name__}.search")  # `from . import search` would recurse here
        return search if name == "search" else getattr(search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
