"""Where the workers meet: the study's database (SQLite on one machine, PostgreSQL across many),
its sampler and pruner."""
from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ConfigError
from ..errors import unknown_choice
from .space import SPACE_ATTR, space_json

if TYPE_CHECKING:  # optuna is imported lazily: `mask-keras --help` stays fast
    pass

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///runs/tune/study.db"
PRUNERS = ("median", "hyperband", "none")


def display_url(url: str) -> str:
    """A database URL fit for logs and messages: the password hidden.

    Args:
        url: a SQLAlchemy database URL.

    Returns:
        The URL with its password as ``***``; ``url`` unchanged if it does not parse.

    Example:
        >>> display_url("postgresql://user:secret@dbhost/mask_tune")
        'postgresql://user:***@dbhost/mask_tune'
    """
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
    or ``mysql+pymysql://...`` for several. SQLite files get a 60 s lock timeout and the WAL
    journal. Workers creating the tables together are retried (5 attempts).

    Args:
        url: the database URL.
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat after which a RUNNING trial is stale
            (failed, then retried).
        max_retry: how many times a stale trial is queued again (None: no limit).

    Returns:
        An ``optuna.storages.RDBStorage``.

    Raises:
        ConfigError: not a database URL, or its driver is not installed (names the
            package to install).
    """
    import optuna
    import sqlalchemy

    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"storage {url!r} is not a database URL; use sqlite:///runs/tune/study.db "
                          f"(one machine) or postgresql://user:pass@host/dbname (several machines)")
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception as e:
        raise ConfigError(f"storage {display_url(url)!r} is not a database URL ({e})") from None
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
                raise ConfigError(f"storage {display_url(url)}: no database driver ({e}); {fix}") from None
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


def sampler(seed: int | None):
    """The study's sampler: TPE with ``constant_liar`` (parallel workers spread out).

    Args:
        seed: the sampler's seed (None: random).

    Returns:
        An ``optuna.samplers.TPESampler``.
    """
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
    """Create the study or join it (``load_if_exists``); refuse a different direction or space.

    Args:
        storage: an Optuna storage, or a database URL (then :func:`make_storage` with its
            defaults).
        study_name: the study's name in the database.
        direction: ``"maximize"`` or ``"minimize"``.
        pruner: one of ``PRUNERS`` (``median``: from the second epoch, after 5 finished
            trials; ``hyperband``: up to ``epochs``; ``none``/None), or an Optuna pruner.
        seed: seeds this worker's :func:`sampler`.
        space: the search-space dict, recorded in the study (``SPACE_ATTR``) by its first
            worker and compared by the others (None: not checked).
        epochs: a trial's epochs (the hyperband pruner's maximum resource).

    Returns:
        The ``optuna.Study``.

    Raises:
        ConfigError: an unknown direction or pruner, or a study that exists with another
            direction or space.

    Example:
        >>> study = open_study(make_storage("sqlite:///:memory:"), "demo", seed=0,
        ...                    space={"train.lr": ["loguniform", 1e-5, 1e-2]})
        >>> study.user_attrs[SPACE_ATTR], type(study.pruner).__name__
        ('{"train.lr": ["loguniform", 1e-05, 0.01]}', 'MedianPruner')
        >>> sum(state_counts(study).values())
        0
    """
    import optuna
    import sqlalchemy

    if direction not in ("maximize", "minimize"):
        raise unknown_choice("direction", direction, ("maximize", "minimize"))
    if isinstance(storage, str):
        storage = make_storage(storage)
    for attempt in range(5):  # workers starting together may both try to create the study
        try:
            study = optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                                        sampler=sampler(seed), pruner=_pruner(pruner, epochs),
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
        theirs = study.user_attrs.get(SPACE_ATTR)
        if theirs is None:
            study.set_user_attr(SPACE_ATTR, mine)
        elif json.loads(theirs) != json.loads(mine):
            raise ConfigError(f"study {study_name!r} was started with another search space "
                              f"({theirs}); join it with the same space file, or use a new --study name")
    return study


def fail_stale(study) -> None:
    """Mark the study's stale RUNNING trials (heartbeat older than the grace period) FAIL.

    The storage's stale-trial callback then queues them again (see :func:`make_storage`).

    Args:
        study: an ``optuna.Study`` on a storage with heartbeats.
    """
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def state_counts(study) -> dict:
    """How many of the study's trials are in each state.

    Args:
        study: an ``optuna.Study``.

    Returns:
        ``{optuna.trial.TrialState: count}`` with every state (0 for none).
    """
    import optuna

    counts = {s: 0 for s in optuna.trial.TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


