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
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import keras

from . import train as training  # called as training.train: tests replace it
from .config import Config, ConfigError
from .errors import unknown_choice
from .files import atomic_write_text

if TYPE_CHECKING:  # optuna is imported lazily: `mask-keras --help` stays fast
    import optuna

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///runs/tune/study.db"
MONITOR = "val_macro_f1"
KINDS = ("uniform", "loguniform", "int", "categorical")
PRUNERS = ("median", "hyperband", "none")
_SPACE_ATTR = "mask_keras_space"


class TuneError(RuntimeError):
    """The search cannot go on (e.g. trial after trial fails in this worker)."""


class _SurplusTrial(Exception):
    """A trial started after N trials were already finished or running (a race between workers)."""


# --------------------------------------------------------------------------- search space
@dataclasses.dataclass(frozen=True)
class Param:
    """One dimension of the search space: a dotted config key and its distribution."""

    key: str
    kind: str
    args: tuple  # (low, high[, step]) or (choices,)
    encoded: bool = False  # categorical choices stored as JSON strings (lists, dicts)

    @property
    def choices(self) -> tuple:
        return tuple(self.args[0])

    def suggest(self, trial):
        """Sample a value with ``trial``, decoded to what the config expects."""
        if self.kind == "uniform":
            return trial.suggest_float(self.key, self.args[0], self.args[1])
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, self.args[0], self.args[1], log=True)
        if self.kind == "int":
            step = self.args[2] if len(self.args) > 2 else 1
            return trial.suggest_int(self.key, self.args[0], self.args[1], step=step)
        if self.encoded:
            return json.loads(trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices]))
        return trial.suggest_categorical(self.key, list(self.choices))

    def decode(self, raw):
        """A value as Optuna stores it -> the config value."""
        return json.loads(raw) if self.encoded and isinstance(raw, str) else raw

    def values(self) -> tuple:
        """The values to check against the config before the search starts."""
        return self.choices if self.kind == "categorical" else (self.args[0], self.args[1])


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_space(space: dict, base_cfg: Config | None = None, check_values: bool = False) -> list[Param]:
    """Check a search-space dict and return its :class:`Param` list.

    ``space`` maps dotted config keys to ``(kind, *args)``: ``("uniform", low, high)``,
    ``("loguniform", low, high)``, ``("int", low, high[, step])``,
    ``("categorical", [choice, ...])`` (lists instead of tuples are fine, as in JSON).
    Keys are checked against ``base_cfg`` (unknown keys raise with a suggestion), numeric
    distributions on integer or boolean options are refused, and with ``check_values``
    every bound and choice is applied to the base config and validated
    (``Config.validate``). Raises :class:`ConfigError` naming the key and the fix.
    """
    base_cfg = base_cfg or Config()
    if not isinstance(space, dict) or not space:
        raise ConfigError("search space must be a non-empty mapping of 'section.option' to "
                          "[kind, ...], e.g. {\"train.lr\": [\"loguniform\", 1e-5, 1e-2]}")
    current = base_cfg.to_dict()
    params = []
    for key, spec in space.items():
        if not isinstance(key, str):
            raise ConfigError(f"search space key {key!r} must be a 'section.option' string")
        if key == "train.out_dir":
            raise ConfigError("train.out_dir cannot be searched: tune gives every trial its own "
                              "<out_dir>/trial_<number>; pass --out-dir for the study's folder")
        if not isinstance(spec, (list, tuple)) or not spec or not isinstance(spec[0], str):
            raise ConfigError(f"search space {key}: expected [kind, ...] with kind one of "
                              f"{', '.join(KINDS)}, got {spec!r}")
        kind, args = spec[0], tuple(spec[1:])
        if kind not in KINDS:
            raise unknown_choice(f"distribution for {key}:", kind, KINDS)
        p = _make_param(key, kind, args)
        # the key must exist in the config (ConfigError with a suggestion otherwise)
        try:
            base_cfg.override(**{key: p.values()[0]})
        except ConfigError as e:
            raise ConfigError(f"search space key {key!r}: {e}") from None
        section, _, name = key.partition(".")
        default = current[section][name]
        if kind != "categorical" and isinstance(default, bool):
            raise ConfigError(f"search space {key}: a yes/no option; use [\"categorical\", [false, true]]")
        if kind in ("uniform", "loguniform") and isinstance(default, int):
            raise ConfigError(f"search space {key}: an integer option (now {default}); "
                              f"use [\"int\", low, high] or [\"categorical\", [...]]")
        params.append(p)
    if check_values:
        for p in params:
            for v in p.values():
                try:
                    base_cfg.override(**{p.key: v}).validate()
                except ConfigError as e:
                    raise ConfigError(f"search space {p.key}: value {v!r} is not valid on the base "
                                      f"config: {e}") from None
    return params


def _make_param(key: str, kind: str, args: tuple) -> Param:
    where = f"search space {key} ({kind})"
    if kind == "categorical":
        if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0]:
            raise ConfigError(f"{where}: expected [\"categorical\", [choice, ...]] with at least one choice, "
                              f"got {[kind, *args]!r}")
        choices = tuple(args[0])
        try:
            keys = [json.dumps(c, sort_keys=True) for c in choices]
        except TypeError as e:
            raise ConfigError(f"{where}: choices must be JSON values ({e})") from None
        if len(set(keys)) != len(keys):
            raise ConfigError(f"{where}: duplicate choices in {list(choices)!r}")
        encoded = any(isinstance(c, (list, tuple, dict)) for c in choices)
        return Param(key, kind, (choices,), encoded)
    n = (2, 3) if kind == "int" else (2,)
    if len(args) not in n:
        form = "low, high[, step]" if kind == "int" else "low, high"
        raise ConfigError(f"{where}: expected [\"{kind}\", {form}], got {[kind, *args]!r}")
    if not all(_is_number(a) for a in args):
        raise ConfigError(f"{where}: bounds must be finite numbers, got {list(args)!r}")
    low, high = args[0], args[1]
    if kind == "int":
        if not all(float(a).is_integer() for a in args):
            raise ConfigError(f"{where}: bounds and step must be integers, got {list(args)!r}")
        args = tuple(int(a) for a in args)
        low, high = args[0], args[1]
        if len(args) == 3 and args[2] < 1:
            raise ConfigError(f"{where}: step must be >= 1, got {args[2]}")
    if not low < high:
        raise ConfigError(f"{where}: low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: low must be > 0 on a log scale, got {low}")
    return Param(key, kind, tuple(args))


def space_json(space: dict) -> str:
    """Canonical JSON of a space (tuples as lists, sorted keys): what the study records."""
    return json.dumps(space, sort_keys=True)


def load_space(path) -> dict:
    """Read a search space from a JSON file (lists where Python would use tuples)."""
    path = Path(path)
    try:
        space = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: search space file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); expected e.g. "
                          "{\"train.lr\": [\"loguniform\", 1e-5, 1e-2]}") from None
    if not isinstance(space, dict):
        raise ConfigError(f"{path}: expected a JSON object of 'section.option': [kind, ...]")
    return space


# --------------------------------------------------------------------------- pruning callback
def _pruning_callback_class():
    import optuna

    class OptunaPruningCallback(keras.callbacks.Callback):
        """Report ``monitor`` to an Optuna trial after every epoch; stop pruned trials.

        Raises :class:`optuna.TrialPruned` out of ``model.fit`` when the study's pruner
        says so (the best checkpoint saved so far stays in the trial's folder).
        """

        def __init__(self, trial, monitor: str = MONITOR):
            super().__init__()
            self.trial = trial
            self.monitor = monitor

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if self.monitor not in logs:
                raise KeyError(f"pruning monitor {self.monitor!r} not in the epoch logs {sorted(logs)}")
            value = float(logs[self.monitor])
            self.trial.report(value, step=epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {self.monitor} = {value:.4f}")

    OptunaPruningCallback.__module__ = __name__
    return OptunaPruningCallback


_lazy: dict[str, Any] = {}


def __getattr__(name):  # PEP 562: build the Keras callback class on first use (keras is slow to import)
    if name == "OptunaPruningCallback":
        if name not in _lazy:
            _lazy[name] = _pruning_callback_class()
        return _lazy[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- objectives
def train_objective(cfg: Config, trial) -> float:
    """The default objective: train ``cfg`` with pruning, return validation macro F1."""



    try:
        res = training.train(cfg, callbacks=[__getattr__("OptunaPruningCallback")(trial, monitor=MONITOR)])
    finally:
        keras.backend.clear_session()  # free the model before the next trial
        gc.collect()
    for k in ("accuracy", "f1_mask", "f1_gender", "f1_age", "epochs_run", "train_seconds"):
        if k in res.metrics:
            trial.set_user_attr(k, res.metrics[k])
    return res.metrics["macro_f1"]


@contextlib.contextmanager
def _environ(values: dict):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _is_surplus(study, number: int, n_trials: int) -> bool:
    """True when ``n_trials`` lower-numbered trials are already finished or running."""
    import optuna

    S = optuna.trial.TrialState
    live = study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED, S.RUNNING))
    return sum(1 for t in live if t.number < number) >= n_trials


def _retried_from(trial) -> int | None:
    """The number of the failed trial that ``trial`` retries (Optuna's retry callbacks), or None."""
    # the "failed_trial" system attribute both of Optuna's retry callbacks set (what their
    # retried_trial_number reads; RetryFailedTrialCallback is deprecated since Optuna 4.9)
    frozen = next((t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number), None)
    return None if frozen is None else frozen.system_attrs.get("failed_trial")


def _make_objective(study_name: str, base_cfg: Config, params: list[Param], root: Path,
                    objective_fn: Callable, n_trials: int, wandb: bool):
    overrides_base = {"train.wandb": True} if wandb else {}

    def objective(trial) -> float:
        if _is_surplus(trial.study, trial.number, n_trials):
            trial.set_user_attr("surplus", True)
            raise _SurplusTrial(f"trial {trial.number} not run: the study already has {n_trials} "
                                f"trials finished or running")
        values = {p.key: p.suggest(trial) for p in params}
        out_dir = root / f"trial_{trial.number:04d}"
        resume = {}
        failed = _retried_from(trial)
        if failed is not None:
            # the retry of a trial whose worker died: same parameters, so it continues the dead
            # trial's run from its newest backup (train.resume) instead of starting again
            out_dir, resume = root / f"trial_{failed:04d}", {"train.resume": True}
            log.info("trial %d retries trial %d: resuming %s", trial.number, failed, out_dir)
            # the epochs the resumed run will not train again: reported from the dead trial, so
            # the pruner compares this trial's whole curve (each is reported after its backup
            # is written, so the resumed run reports only later epochs)
            dead = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == failed)
            for step, value in sorted(dead.intermediate_values.items()):
                trial.report(value, step)
        cfg = base_cfg.override(**values, **overrides_base, **resume, **{"train.out_dir": str(out_dir)})
        trial.set_user_attr("out_dir", str(out_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        cfg.save(out_dir / "config.json")
        env = {"WANDB_RUN_GROUP": study_name, "WANDB_JOB_TYPE": "tune-trial"} if cfg.train.wandb else {}
        with _environ(env):
            value = float(objective_fn(cfg, trial))
        if not math.isfinite(value):
            raise ValueError(f"trial {trial.number}: the objective returned {value}")
        return value

    return objective


# --------------------------------------------------------------------------- storage and study
def _display_url(url: str) -> str:
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def make_storage(url: str = DEFAULT_STORAGE, heartbeat_interval: int = 30, grace_period: int = 300,
                 max_retry: int | None = 2):
    """An Optuna RDB storage with heartbeats: stale RUNNING trials are failed and retried.

    ``sqlite:///relative/path.db`` (``sqlite:////abs/path.db``) for one machine, whose
    folder is created; ``postgresql://user:pass@host/db`` (``pip install psycopg2-binary``)
    or ``mysql+pymysql://...`` for several.
    """
    import optuna
    import sqlalchemy

    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"storage {url!r} is not a database URL; use sqlite:///runs/tune/study.db "
                          f"(one machine) or postgresql://user:pass@host/dbname (several machines)")
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception as e:
        raise ConfigError(f"storage {_display_url(url)!r} is not a database URL ({e})") from None
    engine_kwargs: dict = {}
    db = parsed.database or ""
    sqlite_file = parsed.get_backend_name() == "sqlite" and db not in ("", ":memory:") and not db.startswith("file:")
    if sqlite_file:
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}  # wait for other workers' writes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        stale_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        if stale_cls is not None:  # optuna >= 4.9
            retry = {"heartbeat_stale_trial_callback": stale_cls(max_retry=max_retry)}
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)}
        for attempt in range(5):
            try:
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                     heartbeat_interval=heartbeat_interval,
                                                     grace_period=grace_period, **retry)
                if sqlite_file:
                    _sqlite_wal(storage.engine)
                return storage
            except ImportError as e:
                driver = {"postgresql": "psycopg2-binary", "mysql": "pymysql"}.get(parsed.get_backend_name(), "")
                fix = f"pip install {driver}" if driver else "install its database driver"
                raise ConfigError(f"storage {_display_url(url)}: no database driver ({e}); {fix}") from None
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
                # workers starting together on a fresh database race to create its tables
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))


def _sqlite_wal(engine) -> None:
    """WAL journal: readers do not block the writer, and commits are ~3x cheaper
    (``synchronous=NORMAL`` is safe against a crashed worker; an OS crash may lose the
    last commits). Needs a local disk, as SQLite does anyway."""
    import sqlalchemy

    def pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        except Exception as e:  # e.g. a file system without shared memory: keep the default journal
            log.debug("sqlite WAL not enabled: %r", e)
        finally:
            cur.close()

    sqlalchemy.event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened while creating the tables get the pragmas too


def _sampler(seed: int | None):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: running trials count as bad guesses, so parallel workers spread out
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(pruner, epochs: int):
    import optuna

    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner in (None, "none"):
        return optuna.pruners.NopPruner()
    if pruner == "median":
        # judge a trial only from its second epoch on, against at least 5 finished trials
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs))
    raise unknown_choice("pruner", pruner, PRUNERS)


def open_study(storage, study_name: str, direction: str = "maximize", pruner="median",
               seed: int | None = None, space: dict | None = None, epochs: int = 10):
    """Create the study or join it (``load_if_exists``); refuse a different direction or space."""
    import optuna
    import sqlalchemy

    if direction not in ("maximize", "minimize"):
        raise unknown_choice("direction", direction, ("maximize", "minimize"))
    if isinstance(storage, str):
        storage = make_storage(storage)
    for attempt in range(5):  # workers starting together may both try to create the study
        try:
            study = optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                                        sampler=_sampler(seed), pruner=_pruner(pruner, epochs),
                                        load_if_exists=True)
            break
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    if study.direction.name.lower() != direction:
        raise ConfigError(f"study {study_name!r} exists and was created to "
                          f"{study.direction.name.lower()}, not {direction}; use another study name")
    if space is not None:
        mine = space_json(space)
        theirs = study.user_attrs.get(_SPACE_ATTR)
        if theirs is None:
            study.set_user_attr(_SPACE_ATTR, mine)
        elif json.loads(theirs) != json.loads(mine):
            raise ConfigError(f"study {study_name!r} was started with another search space "
                              f"({theirs}); join it with the same space file, or use a new --study name")
    return study


def _fail_stale(study) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _state_counts(study) -> dict:
    import optuna

    counts = {s: 0 for s in optuna.trial.TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


# --------------------------------------------------------------------------- the search
def tune(base_cfg: Config, space: dict, n_trials: int, storage: str = DEFAULT_STORAGE,
         study_name: str = "mask_keras", direction: str = "maximize", pruner="median",
         seed: int | None = None, timeout: float | None = None, wandb: bool = False,
         objective_fn: Callable[[Config, Any], float] | None = None, *, out_dir=None,
         heartbeat_interval: int = 30, grace_period: int = 300, max_retry: int | None = 2,
         max_failures: int = 3, poll_interval: float = 10.0) -> "optuna.Study":
    """Join (or create) the study and run trials until it has ``n_trials`` finished ones.

    Start the same call in any number of processes or machines that reach ``storage``.
    ``objective_fn(cfg, trial) -> float`` (default :func:`train_objective`: train with
    pruning, return validation macro F1) receives the base config with the trial's
    parameters and ``train.out_dir = <out_dir>/trial_<number>``. ``seed`` makes the
    sampler reproducible for one worker (trial k samples with ``seed + k``). ``timeout``:
    seconds after which this worker starts no new trial. ``max_failures``: trials failing
    in a row in this worker before it gives up (:class:`TuneError`). A worker whose trial
    stops sending heartbeats for ``grace_period`` seconds is presumed dead; its trial is
    retried up to ``max_retry`` times. Returns the :class:`optuna.Study`; writes
    ``<out_dir>/best_config.json`` and ``trials.csv``.
    """
    import optuna

    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"n_trials must be a positive integer, got {n_trials!r}")
    real = objective_fn is None
    if real:
        base_cfg.validate()
    params = parse_space(space, base_cfg, check_values=real)
    objective_fn = objective_fn or train_objective
    root = Path(out_dir) if out_dir else Path("runs/tune") / study_name
    rdb = make_storage(storage, heartbeat_interval, grace_period, max_retry) if isinstance(storage, str) else storage
    study = open_study(rdb, study_name, direction, pruner, seed, space, base_cfg.train.epochs)
    log.info("study %r in %s: %d trials wanted, search space %s", study_name,
             _display_url(storage) if isinstance(storage, str) else type(storage).__name__,
             n_trials, space_json(space))
    objective = _make_objective(study_name, base_cfg, params, root, objective_fn, n_trials, wandb)
    S = optuna.trial.TrialState
    started = time.monotonic()
    failures = 0
    waiting = False
    while True:
        _fail_stale(study)
        counts = _state_counts(study)
        done = counts[S.COMPLETE] + counts[S.PRUNED]
        if done >= n_trials:
            break
        if timeout is not None and time.monotonic() - started >= timeout:
            log.info("timeout of %ss reached: this worker starts no more trials (%d of %d finished)",
                     timeout, done, n_trials)
            break
        if done + counts[S.RUNNING] >= n_trials:
            if not waiting:
                log.info("the remaining %d trials run in other workers; waiting for them (a dead "
                         "worker's trial is retried after %ss without heartbeat)",
                         n_trials - done, grace_period)
            waiting = True
            time.sleep(poll_interval)
            continue
        waiting = False
        if seed is not None:
            study.sampler = _sampler(seed + sum(counts.values()))
        try:
            study.optimize(objective, n_trials=1)
        except _SurplusTrial as e:
            log.info("%s", e)
            continue
        except Exception as e:
            failures += 1
            if failures >= max_failures:
                raise TuneError(f"{failures} trials failed in a row in this worker; last error: {e!r}") from e
            log.warning("trial failed (%d in a row; this worker gives up at %d): %r", failures, max_failures, e)
            continue
        failures = 0
    finish(study, base_cfg, root)
    return study


# --------------------------------------------------------------------------- results
def _study_params(study) -> dict[str, Param]:
    try:  # the space this study was started with (no config check: only decoding is needed)
        return {k: _make_param(k, v[0], tuple(v[1:])) for k, v in json.loads(study.user_attrs[_SPACE_ATTR]).items()}
    except (KeyError, ValueError, TypeError, IndexError):
        return {}


def best_params(study) -> dict:
    """The best trial's parameters as config values (JSON-encoded choices decoded)."""
    params = _study_params(study)
    return {k: (params[k].decode(v) if k in params else v) for k, v in study.best_trial.params.items()}


def summarize(study) -> dict:
    """Best value and parameters, where the best artifact is, and trial counts by state."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    d: dict[str, Any] = {"study": study.study_name, "trials": len(trials), "states": states,
                         "retried": sum(1 for t in trials if "failed_trial" in t.system_attrs),
                         "surplus": sum(1 for t in trials if t.user_attrs.get("surplus"))}
    if states.get("COMPLETE"):
        best = study.best_trial
        d.update(best_trial=best.number, best_value=best.value, best_params=best_params(study),
                 best_out_dir=best.user_attrs.get("out_dir"), best_host=best.user_attrs.get("host"))
    return d


def write_best_config(study, base_cfg: Config, path) -> Path | None:
    """Write the base config with the best parameters (``train.out_dir`` = ``<folder>/best``)."""
    import optuna

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        log.warning("study %r has no complete trial yet: no best_config.json", study.study_name)
        return None
    path = Path(path)
    cfg = base_cfg.override(**best_params(study), **{"train.out_dir": str(path.parent / "best")})
    return cfg.save(path)


def finish(study, base_cfg: Config, root) -> dict:
    """Write ``best_config.json`` and ``trials.csv`` into ``root``; log and return the summary."""
    root = Path(root)
    write_best_config(study, base_cfg, root / "best_config.json")
    try:
        df = study.trials_dataframe()
        atomic_write_text(root / "trials.csv", df.to_csv(index=False))
    except Exception as e:  # a report only; never lose the search over it
        log.warning("could not write trials.csv: %r", e)
    s = summarize(study)
    log.info("study %r: %s; best %s = %s with %s", s["study"], s["states"], MONITOR,
             s.get("best_value"), s.get("best_params"))
    return s
