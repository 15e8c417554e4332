"""What a finished (or running) study found: the best parameters, a summary, ``best_config.json``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import Config
from ..files import atomic_write_text
from .space import MONITOR, study_space

log = logging.getLogger(__name__)


def best_params(study) -> dict:
    """The best trial's parameters as config values (JSON-encoded choices decoded).

    Args:
        study: an ``optuna.Study`` with at least one complete trial (Optuna raises
            ``ValueError`` otherwise); choices are decoded with the space it recorded.

    Returns:
        ``{"section.option": value}``.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(direction="maximize")
        >>> study.enqueue_trial({"train.lr": 0.01})
        >>> study.optimize(lambda t: t.suggest_float("train.lr", 1e-5, 1e-2, log=True), n_trials=1)
        >>> best_params(study)
        {'train.lr': 0.01}
        >>> s = summarize(study)
        >>> s["trials"], s["states"], s["best_trial"], s["best_value"]
        (1, {'COMPLETE': 1}, 0, 0.01)
    """
    params = study_space(study)
    return {k: (params[k].decode(v) if k in params else v) for k, v in study.best_trial.params.items()}


def summarize(study) -> dict:
    """Best value and parameters, where the best artifact is, and trial counts by state.

    Args:
        study: an ``optuna.Study``.

    Returns:
        A JSON-ready dict: ``study`` (name), ``trials`` (count), ``states`` (state name ->
        count), ``retried`` (trials that retry a failed one), ``surplus`` (trials stopped
        as surplus); once a trial is complete also ``best_trial`` (number),
        ``best_value``, ``best_params``, ``best_out_dir`` and ``best_host``.
    """
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
    """Write the base config with the best parameters (``train.out_dir`` = ``<folder>/best``).

    Args:
        study: an ``optuna.Study``.
        base_cfg: the config the trials started from.
        path: the JSON file to write (``<folder>/best_config.json``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, or None (with a warning) while no trial is
        complete.
    """
    import optuna

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        log.warning("study %r has no complete trial yet: no best_config.json", study.study_name)
        return None
    path = Path(path)
    cfg = base_cfg.override(**best_params(study), **{"train.out_dir": str(path.parent / "best")})
    return cfg.save(path)


def finish(study, base_cfg: Config, root) -> dict:
    """Write ``best_config.json`` and ``trials.csv`` into ``root``; log and return the summary.

    A failure to write ``trials.csv`` is logged, not raised.

    Args:
        study: an ``optuna.Study``.
        base_cfg: the config the trials started from.
        root: the study's folder (created if missing).

    Returns:
        :func:`summarize`'s dict.
    """
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
