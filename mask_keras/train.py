"""One training entry point: ``train(config) -> TrainResult``.

The run directory (``config.train.out_dir``) becomes the artifact::

    config.json      the resolved config (written before training starts)
    model.keras      the best epoch by validation macro F1 (not accuracy)
    history.csv      per-epoch logs;  history.png
    metrics.json     final validation numbers (macro F1, accuracy, per-class F1)
    confusion_matrix.png, per_class_f1.csv
    split.csv        which person was train / validation
    last.keras       the latest epoch (train.save_last); checkpoints/ the top k (train.keep_top_k)
    backup/          resume backups of the two newest epochs (train.backup; see mask_keras.resume)

Age groups: the training targets use ``data.age_upper`` (teams trained with 58/59),
the validation targets always use the competition threshold 60, so the reported
F1 is the one the leaderboard would compute.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from . import labels as L
from . import losses, metrics, pipeline, plots, resume, sampling
from .callbacks import (
    AtomicBestCheckpoint,
    CombinedMacroF1,
    MixOff,
    PreciseBatchNorm,
    WandbLogger,
)
from .config import EARLY_STOPPING_MONITORS, Config, ConfigError
from .data import layout, splits
from .ensemble import combine_tasks, from_multihead
from .evaluate import task_scores
from .files import atomic_write_text
from .groups import bootstrap_ci, group_scores
from .inference.artifacts import write_manifest
from .jax_backend import distribute
from .jax_backend.distribute import LocalPredictor
from .metrics import confusion_matrix
from .models import build as model_build
from .pipeline import graph_fn
from .resume import RunState

log = logging.getLogger(__name__)
MONITOR = "val_macro_f1"


@dataclass
class TrainResult:
    """Where the artifact is (written by the chief process only) and what it scored.

    Attributes:
        out_dir: the run directory (``model.keras``, ``config.json``, ``metrics.json``, plots).
        model_path: ``out_dir / "model.keras"``: the best epoch's model.
        metrics: the validation scores of that model (``macro_f1``, ``accuracy``, per-task
            F1, ``train_seconds``, ...), as in ``metrics.json``.
        history: per-epoch logs, name -> list (``loss``, ``val_macro_f1``, ...).
        predictions: ``val_predictions.csv``'s rows (on every process); None for a finished
            run returned by ``train.resume``.
    """

    out_dir: Path
    model_path: Path
    metrics: dict
    history: dict
    predictions: pd.DataFrame | None = None


# --------------------------------------------------------------------------- data
def prepare_tables(cfg: Config):
    """Read, (sub)sample and split the data of ``cfg``.

    Args:
        cfg: the run's config: ``data`` (folder, relabel, age_upper, folds/fold/val_ratio,
            max_people, mask_states, on_error) and ``train.seed``.

    Returns:
        ``(train_table, val_table)``: image tables split by person
        (:func:`mask_keras.data.splits.train_val_split`); validation labelled with the
        competition's age rule (60), training with ``data.age_upper``.

    Raises:
        ConfigError: a split came out empty.
    """
    d = cfg.data
    table = layout.read_train(d.data_dir, relabel=d.relabel, age_upper=d.age_upper, on_error=d.on_error)
    if d.max_people:
        table = splits.subsample_people(table, d.max_people, seed=cfg.train.seed)
    train_t, val_t = splits.train_val_split(table, d.val_ratio, d.folds, d.fold, seed=cfg.train.seed)
    # validation is scored with the competition's age rule, whatever the training threshold
    val_t = layout.with_labels(val_t, L.EVAL_AGE_UPPER)
    if d.mask_states is not None:
        keep = train_t["mask"].isin(list(d.mask_states))
        log.info("training on mask states %s only: %d of %d images", d.mask_states, keep.sum(), len(train_t))
        train_t = train_t[keep]
    train_t = train_t.reset_index(drop=True)
    val_t = val_t.reset_index(drop=True)
    if train_t.empty or val_t.empty:
        raise ConfigError(f"empty split: {len(train_t)} train / {len(val_t)} validation images; "
                          f"use more people or another val_ratio")
    return train_t, val_t


# --------------------------------------------------------------------------- model parts
def _build_optimizer(cfg: Config, steps_per_epoch: int):
    t = cfg.train
    total = max(1, steps_per_epoch * t.epochs // t.grad_accum)
    warmup = int(round(t.warmup_epochs * steps_per_epoch / t.grad_accum))
    if t.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=t.lr if warmup == 0 else 0.0, decay_steps=max(1, total - warmup),
            alpha=0.01, warmup_target=t.lr if warmup else None, warmup_steps=warmup)
    elif t.schedule == "step":
        step = max(1, t.step_epochs * steps_per_epoch // t.grad_accum)
        bounds = [step * i for i in range(1, max(2, t.epochs // max(1, t.step_epochs) + 1))]
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, [t.lr * t.step_gamma ** i for i in range(len(bounds) + 1)])
    else:
        lr = t.lr
    kw = dict(gradient_accumulation_steps=t.grad_accum if t.grad_accum > 1 else None,
              global_clipnorm=t.clip_norm or None, use_ema=t.ema > 0, ema_momentum=t.ema or 0.99)
    if t.optimizer == "adam":
        return keras.optimizers.Adam(lr, **kw)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=t.weight_decay or 0.01, **kw)
    return keras.optimizers.SGD(lr, momentum=t.momentum, nesterov=t.momentum > 0, **kw)


def compile_model(model, cfg: Config, train_t: pd.DataFrame, steps_per_epoch: int):
    """Compile ``model`` as :func:`train` does: the run's optimizer and learning-rate schedule,
    its loss (class counts and weights taken from ``train_t``), macro F1 and accuracy as
    weighted metrics (padded validation rows carry weight 0).

    Args:
        model: a model from :func:`mask_keras.models.build.build_model` for ``cfg.train.task``.
        cfg: the run's config.
        train_t: the training image table (its class counts feed class-weighted losses).
        steps_per_epoch: optimizer steps per epoch (the schedule's length is epochs times this).

    Returns:
        ``model``, compiled in place.

    Example:
        >>> compile_model(model, cfg, train_t, steps_per_epoch=100)  # doctest: +SKIP
        >>> model.fit(train_ds, epochs=cfg.train.epochs)              # doctest: +SKIP
    """

    task = cfg.train.task
    optimizer = _build_optimizer(cfg, steps_per_epoch)
    if task == "multihead":
        loss, mets = {}, {}
        for head in L.HEADS:
            cw = sampling.class_weights(train_t, head) if cfg.sampling.class_weights else None
            counts = np.bincount(L.task_target(head, train_t["mask"], train_t["gender"], train_t["age_group"]),
                                 minlength=L.TASK_CLASSES[head])
            loss[head] = losses.build_loss(cfg.loss, L.TASK_CLASSES[head], class_counts=counts, class_weights=cw)
            mets[head] = [metrics.MacroF1(L.TASK_CLASSES[head], name="macro_f1"), "categorical_accuracy"]
        weights = dict(zip(L.HEADS, cfg.model.head_loss_weights))
        # weighted_metrics: only those receive sample_weight, so padded eval rows (weight 0) don't count
        model.compile(optimizer=optimizer, loss=loss, loss_weights=weights, weighted_metrics=mets)
    else:
        y = L.task_target(task, train_t["mask"], train_t["gender"], train_t["age_group"])
        counts = np.bincount(np.asarray(y), minlength=L.TASK_CLASSES[task])
        cw = sampling.class_weights(train_t, task) if cfg.sampling.class_weights else None
        model.compile(optimizer=optimizer,
                      loss=losses.build_loss(cfg.loss, L.TASK_CLASSES[task], class_counts=counts, class_weights=cw),
                      weighted_metrics=[metrics.MacroF1(L.TASK_CLASSES[task], name="macro_f1"), "categorical_accuracy"])
    return model


# --------------------------------------------------------------------------- callbacks
def _callbacks(cfg: Config, out: Path, val_ds, multihead: bool, chief: bool = True, stats_ds=None, mixer=None,
               steps: int = 0):
    """``(callbacks, run_state)``: the package's callbacks in their order, and the
    :class:`~mask_keras.resume.RunState` among them (history, backups)."""

    # chief: False on the processes of a multi-host job other than 0, which write nothing
    cbs = []
    if cfg.train.ema:
        # the averaged weights are in the model for precise BN, validation and every
        # checkpoint (on_test_begin / on_epoch_end), the training weights in between
        cbs.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if mixer is not None and cfg.augment.mix_off_epoch:
        cbs.append(MixOff(mixer, cfg.augment.mix_off_epoch))
    if stats_ds is not None:
        cbs.append(PreciseBatchNorm(stats_ds))  # before validation: it runs in on_test_begin
    if multihead:
        cbs.append(CombinedMacroF1(val_ds))  # adds logs["val_macro_f1"] on the 18 classes
    ckpt = AtomicBestCheckpoint(out / "model.keras", monitor=MONITOR, write=chief,
                                last=out / "last.keras" if cfg.train.save_last else None,
                                keep_top_k=cfg.train.keep_top_k)
    cbs.append(ckpt)
    es = None
    if cfg.train.early_stopping:
        # the best checkpoint stays on val macro F1 (the competition's metric) whatever stops the run
        monitor = cfg.train.early_stopping_monitor
        es = keras.callbacks.EarlyStopping(monitor=monitor, mode=EARLY_STOPPING_MONITORS[monitor],
                                           patience=cfg.train.early_stopping, restore_best_weights=False)
        cbs.append(es)
    if cfg.train.wandb and chief:
        cbs.append(WandbLogger(cfg, out))
    # first: the training state before SwapEMAWeights swaps; last: everything the epoch decided
    state = RunState(out, cfg.to_dict(), write=chief, backup=cfg.train.backup, checkpoint=ckpt, early_stopping=es,
                     backup_steps=cfg.train.backup_steps, steps_per_epoch=steps)
    return [state.capture, *cbs, state], state


# --------------------------------------------------------------------------- main
def train(cfg: Config, callbacks=None) -> TrainResult:
    """Train one model as ``cfg`` says and return where its artifact is.

    ``train.resume``: continue the run in ``train.out_dir`` from its newest backup
    (:mod:`mask_keras.resume`); with nothing to resume it starts fresh and says so, and a
    finished run is returned as it is.

    Args:
        cfg: the run's :class:`~mask_keras.config.Config` (validated first).
        callbacks: extra Keras callbacks (e.g. a tuner's pruning callback), run after the
            package's own, so they see ``val_macro_f1`` in the epoch logs.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: a bad option (named), or a batch larger than the training set.

    Example:

    >>> from mask_keras.config import Config
    >>> cfg = Config().override(**{"data.data_dir": "data/default", "model.backbone": "tiny_cnn",
    ...                            "model.weights": None, "train.out_dir": "runs/tiny"})
    >>> result = train(cfg)  # doctest: +SKIP
    >>> result.metrics["macro_f1"], result.model_path  # doctest: +SKIP
    (0.41..., PosixPath('runs/tiny/model.keras'))
    """
    cfg.validate()

    t = cfg.train
    out = Path(t.out_dir)
    keras.utils.set_random_seed(t.seed)
    distribute.enable_compilation_cache()
    distribute.setup_distribution(t.devices, batch_size=t.batch_size)  # global batch, split over devices
    chief = distribute.is_chief()  # multi-host: only process 0 writes into out_dir
    backup = _resume_point(cfg, out, chief) if t.resume else None
    if backup is not None and backup.state.get("finished"):
        return _finished_result(out, backup)
    if chief:
        out.mkdir(parents=True, exist_ok=True)
        if backup is None:  # a fresh run: an earlier run's history and backups in out_dir are not this one's
            (out / "history.csv").unlink(missing_ok=True)
            shutil.rmtree(out / resume.BACKUP_DIR, ignore_errors=True)
        cfg.save(out / "config.json")
        write_manifest(out, "run", task=cfg.train.task)
    prev_policy = keras.mixed_precision.global_policy().name
    closers = []  # callbacks holding resources (wandb run): closed however training ends
    if t.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        train_t, val_t = prepare_tables(cfg)
        if chief:
            _write_split(out, train_t, val_t)
        log.info("train: %d images (%d people), validation: %d images (%d people)",
                 len(train_t), train_t["profile"].nunique(), len(val_t), val_t["profile"].nunique())
        if len(train_t) < t.batch_size:
            raise ConfigError(f"train.batch_size {t.batch_size} exceeds the {len(train_t)} training images "
                              f"(batches are static and drop the remainder); lower it")
        train_ds, train_info = pipeline.make_dataset(train_t, cfg, training=True)
        val_ds, _ = pipeline.make_dataset(val_t, cfg, training=False)
        stats_ds = _stats_dataset(train_t, cfg)
        steps = t.steps_per_epoch or train_info.num_steps
        model = model_build.build_model(cfg.model, t.task, tuple(cfg.preprocess.image_size),
                                        augment=cfg.augment.preset, seed=cfg.train.seed)
        cbs, state = _callbacks(cfg, out, val_ds, t.task == "multihead", chief, stats_ds, train_info.mixer, steps)
        cbs += list(callbacks or [])
        closers.extend(cb for cb in cbs if hasattr(cb, "close"))
        started = time.time()
        freeze = bool(cfg.model.freeze_epochs and cfg.model.weights is not None)
        if cfg.model.freeze_epochs and not freeze:
            log.warning("model.freeze_epochs ignored: freezing a randomly initialised backbone (weights=None) "
                        "would train only the head on random features")
        n_frozen = min(cfg.model.freeze_epochs, t.epochs) if freeze else 0
        done, stopped, skipping = 0, False, False
        if backup is not None:
            done, stopped = backup.epochs, bool(backup.state.get("stopped_early"))
            state.load(backup)
            # the data order of the epochs to come, as in an uninterrupted run: every fit call
            # draws one iterator to build the model (Keras' symbolic build) and one per epoch; an
            # uninterrupted run made one more fit call before any epoch of the unfrozen phase
            _advance(train_ds, done + (1 if freeze and done >= n_frozen else 0))
            if backup.step:  # a mid-epoch backup: the epoch continues after the steps it had done
                train_ds, release = pipeline.skip_first_batches(train_ds, backup.step)
                state.resume_mid_epoch(backup, release)
                skipping = True
            if backup.state["checkpoint"]["best_epoch"] is not None and (out / "model.keras").is_file():
                state.checkpoint.best_weights = keras.saving.load_model(out / "model.keras",
                                                                        compile=False).get_weights()
        # the phases of models.build.melting_phases (fit_melting's plan): with model.freeze_epochs, the
        # head first on a frozen backbone (team 003's "melting"), then everything; written out here
        # rather than through fit_melting because a resumed run may start inside either phase
        done_steps, ran = None, False
        for phase in model_build.melting_phases(t.epochs, n_frozen):
            if done >= phase.epochs or stopped:
                continue
            if freeze:
                model_build.set_backbone_trainable(model, phase.backbone_trainable)
            compile_model(model, cfg, train_t, steps)  # a new optimizer: required after a trainable flip
            state.phase = "full" if phase.backbone_trainable else "frozen"
            if backup is not None and backup.state["phase"] == state.phase:
                resume.restore(model, backup.arrays)
            elif backup is not None:  # backed up at the end of the frozen phase: a fresh optimizer
                resume.restore(model, backup.arrays, optimizer=False)
                model.optimizer.iterations.assign(resume.iterations(backup.arrays))  # the LR schedule carries on
            elif done_steps:
                model.optimizer.iterations.assign(done_steps)
            backup, ran = None, True
            with _length_unknown_ok(skipping):
                model.fit(train_ds, validation_data=val_ds, epochs=phase.epochs, initial_epoch=done,
                          steps_per_epoch=t.steps_per_epoch, callbacks=cbs, verbose=t.verbose, shuffle=False)
            done_steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
            done = phase.epochs
        if freeze:
            model_build.set_backbone_trainable(model, True)  # freeze_epochs >= epochs: the run ends frozen
        if not ran and backup is not None:
            log.info("resume: all %d epochs of %s were done; writing the final report", done, out)
        history = state.history
        seconds = time.time() - started
        ckpt = state.checkpoint
        if ckpt.best_weights is None:
            raise resume.ResumeError(f"{out}: the backup has a best epoch but model.keras is missing; "
                                     f"delete {out / resume.BACKUP_DIR} to train again from the start")
        model.set_weights(ckpt.best_weights)  # the weights saved in model.keras (on every process)
        metrics, preds = _final_report(model, val_ds, val_t, cfg, out if chief else None, train_t)
        metrics.update(train_seconds=round(seconds, 2), epochs_run=len(next(iter(history.values()), [])),
                       train_images=len(train_t), val_images=len(val_t))
        if chief:
            atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")

            plots.history({k: v for k, v in history.items()}, out / "history.png", title=f"{t.task} history")
            resume.mark_finished(out, len(next(iter(history.values()), [])))
        log.info("validation macro F1 %.4f (accuracy %.4f) -> %s", metrics["macro_f1"], metrics["accuracy"], out)
        return TrainResult(out, out / "model.keras", metrics, history, preds)
    finally:
        for cb in closers:
            cb.close()
        keras.mixed_precision.set_global_policy(prev_policy)
        if t.devices == "all":
            keras.distribution.set_distribution(None)


def _resume_point(cfg: Config, out: Path, chief: bool):
    """The backup to continue from (None: start fresh, said so), after the checks of
    :mod:`mask_keras.resume`; a finished run's backup is marked ``state["finished"]``."""

    if chief and out.is_dir():
        resume.clean_partial_writes(out)
    b = resume.load_latest(out)
    if b is None:
        _say(f"resume: nothing to resume in {out} (no backup): starting fresh", cfg.train.verbose)
        return None
    resume.check_config(b, cfg.to_dict(), out)
    fin = resume.finished_marker(out)
    epochs_done = b.epochs
    finished = fin.is_file() and (out / "metrics.json").is_file() and (
        epochs_done >= cfg.train.epochs or b.state.get("stopped_early"))
    if finished:
        b.state["finished"] = True
        msg = f"resume: {out} finished ({epochs_done} epochs): nothing to do"
    else:
        at = f"epoch {epochs_done} of {cfg.train.epochs}" + (f" and {b.step} steps of the next" if b.step else "")
        msg = f"resume: continuing {out} after {at} (backup {b.path.name})"
    _say(msg, cfg.train.verbose)
    return b


def _say(msg: str, verbose) -> None:
    """Print (verbose) or log (quiet): one of the two, never both (as the datasets report)."""
    if verbose:
        print(msg, flush=True)
    else:
        log.info(msg)


def _finished_result(out: Path, b) -> TrainResult:
    """A finished run, as ``train`` returned it: metrics, history and validation predictions from disk."""
    metrics = json.loads((out / "metrics.json").read_text())
    preds = pd.read_csv(out / "val_predictions.csv") if (out / "val_predictions.csv").is_file() else None
    return TrainResult(out, out / "model.keras", metrics, b.state["history"], preds)


@contextlib.contextmanager
def _length_unknown_ok(active: bool):
    """Keras' "input ran out of data" warning off while a mid-epoch resume skips batches: the
    resumed epoch is shorter, so tf.data cannot know the dataset's length and Keras would warn
    at the end of every epoch of the fit, where nothing ran out."""
    with warnings.catch_warnings():
        if active:
            warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        yield


def _advance(train_ds, epochs: int) -> None:
    """Advance ``train_ds``'s shuffle and sampling seeds past ``epochs`` epochs: each new
    iterator draws the next seeds (without reading a batch), as every epoch of ``fit`` did."""
    for _ in range(epochs):
        it = iter(train_ds)
        del it


def _stats_dataset(train_t: pd.DataFrame, cfg: Config):
    """Full batches of a fixed random sample of ``train.precise_bn`` training images (None when off)."""

    b = cfg.train.batch_size
    n = min(cfg.train.precise_bn, len(train_t)) // b * b
    if n == 0:
        return None
    sample = train_t.sample(n=n, random_state=cfg.train.seed).reset_index(drop=True)
    log.info("precise BatchNorm: statistics recomputed over %d training images before every validation "
             "(train.precise_bn; 0 = off)", n)
    ds, _ = pipeline.make_dataset(sample, cfg, training=False, verbose=0)
    return ds.map(pipeline.graph_fn(lambda x, y, w: x))


def _write_split(out: Path, train_t, val_t) -> None:
    people = pd.concat([train_t[["profile"]].drop_duplicates().assign(split="train"),
                        val_t[["profile"]].drop_duplicates().assign(split="val")])
    atomic_write_text(out / "split.csv", people.to_csv(index=False))


def predict_table_probs(model, ds, n: int):
    """Run ``model`` over an evaluation dataset of (x, y, w) batches; first ``n`` rows.

    Works in every process of a multi-host job (:class:`~mask_keras.jax_backend.distribute.LocalPredictor`).

    Args:
        model: a trained model.
        ds: evaluation batches from :func:`mask_keras.pipeline.make_dataset` (padded).
        n: the real rows (the pads after them are dropped).

    Returns:
        The model's outputs for the ``n`` rows: an array ``(n, C)``, or a dict/list of them
        for a multi-head model.
    """
    out = LocalPredictor(model)(ds.map(graph_fn(lambda x, y, w: x)), verbose=0)
    if isinstance(out, dict):
        return {k: np.asarray(v)[:n] for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [np.asarray(v)[:n] for v in out]
    return np.asarray(out)[:n]


def _majority_class(train_t: pd.DataFrame, task: str) -> int:
    y = L.task_target(task, train_t["mask"], train_t["gender"], train_t["age_group"])
    return int(np.bincount(np.asarray(y), minlength=L.TASK_CLASSES[task]).argmax())


def _final_report(model, val_ds, val_t: pd.DataFrame, cfg: Config, out: Path | None, train_t: pd.DataFrame):
    """Per-class F1, confusion matrix PNG and metrics of the best model on validation.

    Returns ``(metrics, predictions)``; writes the files into ``out`` unless it is None
    (the non-chief processes of a multi-host job).
    """

    task = cfg.train.task
    probs = predict_table_probs(model, val_ds, len(val_t))
    if task == "multihead":
        pm, pg, pa = from_multihead(probs)
        probs = combine_tasks(pm, pg, pa)
        eval_task = "multi"
    else:
        eval_task = task
    y_true = np.asarray(L.task_target(eval_task, val_t["mask"], val_t["gender"], val_t["age_group"]))
    y_pred = probs.argmax(axis=1)
    k = L.TASK_CLASSES[eval_task]
    names = ([L.class_name(c) for c in range(k)] if eval_task == "multi" else L.CLASS_NAMES[eval_task])
    scores = task_scores(y_true, y_pred, eval_task)
    per_class = scores.pop("per_class_f1")
    res = {"task": task, **scores, "per_class_f1": {n: float(v) for n, v in zip(names, per_class)}}
    # the score of answering the training set's most frequent class for every image: what a
    # model that learned nothing gets (macro F1 rewards every class, so this is the bar to clear)
    constant = _majority_class(train_t, eval_task)
    base = task_scores(y_true, np.full_like(y_true, constant), eval_task)
    res.update(constant_class=names[constant], constant_macro_f1=base["macro_f1"], constant_accuracy=base["accuracy"])
    # whom it fails (the six gender x age groups of the truth) and how sure the score is
    # (people resampled: a person's photos move together)
    res.update(group_scores(y_true, y_pred, eval_task, gender=val_t["gender"], age=val_t["age_group"]))
    res["ci"] = bootstrap_ci(y_true, y_pred, eval_task, units=val_t["profile"])
    pred_cols = {f"p{c}": probs[:, c] for c in range(k)}
    preds = pd.DataFrame({"path": val_t["path"], "profile": val_t["profile"], "y_true": y_true, "y_pred": y_pred,
                          **pred_cols})
    if out is None:
        return res, preds
    atomic_write_text(out / "val_predictions.csv", preds.to_csv(index=False))
    cm = confusion_matrix(y_true, y_pred, k)
    plots.confusion_matrix(cm, names, out / "confusion_matrix.png",
                           title=f"{task} validation (macro F1 {res['macro_f1']:.3f})")
    sup = np.bincount(y_true, minlength=k)
    atomic_write_text(out / "per_class_f1.csv",
                      pd.DataFrame({"class": names, "f1": per_class, "support": sup}).to_csv(index=False))
    return res, preds
