"""The search loop every worker runs: trials train the run's config with sampled parameters."""
from __future__ import annotations

import gc
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import keras

from ..config import Config, ConfigError
from ..environ import environ
from .results import finish
from .space import MONITOR, Param, parse_space, space_json
from .storage import (
    DEFAULT_STORAGE,
    display_url,
    fail_stale,
    make_storage,
    open_study,
    sampler,
    state_counts,
)

if TYPE_CHECKING:  # optuna is imported lazily: `mask-keras --help` stays fast
    import optuna

log = logging.getLogger(__name__)


class TuneError(RuntimeError):
    """The search cannot go on (e.g. trial after trial fails in this worker)."""


class _SurplusTrial(Exception):
    """A trial started after N trials were already finished or running (a race between workers)."""


class OptunaPruningCallback(keras.callbacks.Callback):
    """Report ``monitor`` to an Optuna trial after every epoch; stop pruned trials.

    Raises :class:`optuna.TrialPruned` out of ``model.fit`` when the study's pruner says so
    (the best checkpoint saved so far stays in the trial's folder).

    Args:
        trial: the running :class:`optuna.trial.Trial`.
        monitor: the epoch log reported (default: validation macro F1).
    """

    def __init__(self, trial, monitor: str = MONITOR):
        super().__init__()
        self.trial = trial
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        import optuna  # only `mask-keras tune` needs it

        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"pruning monitor {self.monitor!r} not in the epoch logs {sorted(logs)}")
        value = float(logs[self.monitor])
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {self.monitor} = {value:.4f}")


def train_objective(cfg: Config, trial) -> float:
    """The default objective: train ``cfg`` with pruning, return validation macro F1.

    Records ``accuracy``, ``f1_mask``, ``f1_gender``, ``f1_age``, ``epochs_run`` and
    ``train_seconds`` (those the run reports) as the trial's user attributes, and clears
    the Keras session afterwards.

    Args:
        cfg: the trial's config (base config with the sampled parameters and its out_dir).
        trial: the running ``optuna.Trial``, reported to after every epoch.

    Returns:
        The final validation macro F1 of :func:`mask_keras.train.train`.

    Raises:
        optuna.TrialPruned: the pruner stopped the trial.
    """
    from .. import train as training  # the training code (TensorFlow) only here: a worker with its own objective
    #                                    does not import it; called as training.train, which tests replace
    try:
        res = training.train(cfg, callbacks=[OptunaPruningCallback(trial, monitor=MONITOR)])
    finally:
        keras.backend.clear_session()  # free the model before the next trial
        gc.collect()
    for k in ("accuracy", "f1_mask", "f1_gender", "f1_age", "epochs_run", "train_seconds"):
        if k in res.metrics:
            trial.set_user_attr(k, res.metrics[k])
    return res.metrics["macro_f1"]


def is_surplus(study, number: int, n_trials: int) -> bool:
    """True when ``n_trials`` lower-numbered trials are already finished or running.

    Args:
        study: the ``optuna.Study``.
        number: the trial's number.
        n_trials: the study's size.

    Returns:
        Whether trial ``number`` is beyond the study's size (it is then not run).
    """
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


def make_objective(study_name: str, base_cfg: Config, params: list[Param], root: Path,
                    objective_fn: Callable, n_trials: int, wandb: bool):
    """The function each worker hands to ``study.optimize``: one trial, start to end.

    A surplus trial (see :func:`is_surplus`) is marked ``surplus`` and not run; the retry of
    a dead worker's trial resumes that trial's folder (``train.resume``) and first reports
    its epochs. Every other trial samples ``params``, writes ``config.json`` into
    ``<root>/trial_<number:04d>``, records ``out_dir``, ``host`` and ``pid`` as user
    attributes and calls ``objective_fn``.

    Args:
        study_name: the study's name (the wandb run group).
        base_cfg: the config every trial starts from.
        params: the search space, from :func:`~mask_keras.tune.space.parse_space`.
        root: the study's folder; trial folders go under it.
        objective_fn: ``(cfg, trial) -> float``, e.g. :func:`train_objective`.
        n_trials: the study's size.
        wandb: log every trial to wandb (``train.wandb = True``).

    Returns:
        ``objective(trial) -> float``; it raises ``ValueError`` for a non-finite value.
    """
    overrides_base = {"train.wandb": True} if wandb else {}

    def objective(trial) -> float:
        if is_surplus(trial.study, trial.number, n_trials):
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
        with environ(env):
            value = float(objective_fn(cfg, trial))
        if not math.isfinite(value):
            raise ValueError(f"trial {trial.number}: the objective returned {value}")
        return value

    return objective


def tune(base_cfg: Config, space: dict, n_trials: int, storage: str = DEFAULT_STORAGE,
         study_name: str = "mask_keras", direction: str = "maximize", pruner="median",
         seed: int | None = None, timeout: float | None = None, wandb: bool = False,
         objective_fn: Callable[[Config, Any], float] | None = None, *, out_dir=None,
         heartbeat_interval: int = 30, grace_period: int = 300, max_retry: int | None = 2,
         max_failures: int = 3, poll_interval: float = 10.0) -> "optuna.Study":
    """Join (or create) the study and run trials until it has ``n_trials`` finished ones.

    Start the same call in any number of processes or machines that reach ``storage``.
    Writes ``<out_dir>/best_config.json`` and ``trials.csv`` when done.

    Args:
        base_cfg: the config every trial starts from (validated first with the default
            objective).
        space: the search-space dict (see :func:`~mask_keras.tune.space.parse_space`);
            with the default objective every bound and choice is validated too.
        n_trials: the study's size, a positive int: the workers stop once it has that
            many complete or pruned trials.
        storage: a database URL (see :func:`~mask_keras.tune.storage.make_storage`) or an
            Optuna storage.
        study_name: the study's name in the database.
        direction: ``"maximize"`` or ``"minimize"``.
        pruner: ``median``, ``hyperband``, ``none`` or an Optuna pruner.
        seed: makes the sampler reproducible for one worker (trial k samples with
            ``seed + k``).
        timeout: seconds after which this worker starts no new trial (None: no limit).
        wandb: log each trial as a wandb run, grouped by the study name.
        objective_fn: ``objective_fn(cfg, trial) -> float`` (default
            :func:`train_objective`: train with pruning, return validation macro F1);
            receives the base config with the trial's parameters and
            ``train.out_dir = <out_dir>/trial_<number>``.
        out_dir: the study's folder (None: ``runs/tune/<study_name>``).
        heartbeat_interval: seconds between heartbeats (``storage`` given as a URL).
        grace_period: a worker whose trial sends no heartbeat for that many seconds is
            presumed dead (``storage`` given as a URL).
        max_retry: how many times a dead worker's trial is retried (``storage`` given as a
            URL; None: no limit).
        max_failures: trials failing in a row in this worker before it gives up
            (:class:`TuneError`).
        poll_interval: seconds between looks at the study while the remaining trials run
            in other workers.

    Returns:
        The ``optuna.Study``.

    Raises:
        ConfigError: a bad ``n_trials``, space, config, storage or an existing study of
            another direction or space.
        TuneError: ``max_failures`` trials failed in a row.
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
             display_url(storage) if isinstance(storage, str) else type(storage).__name__,
             n_trials, space_json(space))
    objective = make_objective(study_name, base_cfg, params, root, objective_fn, n_trials, wandb)
    S = optuna.trial.TrialState
    started = time.monotonic()
    failures = 0
    waiting = False
    while True:
        fail_stale(study)
        counts = state_counts(study)
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
            study.sampler = sampler(seed + sum(counts.values()))
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
