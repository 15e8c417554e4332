"""Resume an interrupted training run from its last completed epoch.

Every epoch, :class:`RunState` (the last of ``train``'s callbacks) rewrites ``history.csv``
(atomically, the whole run so far) and, with ``train.backup`` on, writes a backup of
everything the next epoch depends on into ``OUT/backup/epoch_NNNN/``; with
``train.backup_steps`` = N also every N steps inside an epoch, into
``OUT/backup/epoch_NNNN_step_SSSSSS/`` (NNNN epochs done, SSSSSS steps of the next one, and
the running totals of its training metrics):

``arrays.npz``  every model variable (weights, BatchNorm statistics, the augmentation
                layers' seed states) and every optimizer variable (iteration count, so the
                learning-rate schedule's position; moments; EMA averages), in variable
                order, with each one's path beside it;
``state.json``  epochs done, the freeze-then-unfreeze phase, the best score and epoch, the
                top-k list, early stopping's counters, the history, the run's config and
                the SHA-256 of ``arrays.npz``.

A backup is written into a temporary folder and renamed into place when complete; the
two newest are kept. ``train.resume`` (``mask-keras train --resume``) rebuilds the model,
restores all of it, replays the data order (a fresh dataset is advanced by the epochs
already read: ``tf.data`` reshuffles per iterator from the seed; MixUp/CutMix are a
function of each batch's rows, see :class:`~mask_keras.mixup.BatchMixer`) and continues with
``fit(initial_epoch=...)``; from a mid-epoch backup, the epoch's first steps are drawn from
the data but not trained on (:func:`mask_keras.pipeline.skip_first_batches`) and its metric
totals are put back at its start. A resumed run writes the same ``history.csv``, checkpoints and
``metrics.json`` as an uninterrupted one. Keras' ``BackupAndRestore`` keeps weights,
optimizer and epoch but not the state of the package's own callbacks, the data order or
the history, and writes in place; hence this module.

Faults: a backup that is incomplete (killed while writing) or whose arrays do not match
their checksum is skipped with a warning and the previous one is used; when none is
usable, resume stops with an error naming the folder. A run that finished says so and
does nothing; a config that differs from the backup's (other than ``train.epochs`` and
:data:`RUN_ONLY`: ``train.resume``, ``train.verbose``, the backup settings, the ``ensemble``
section) stops with an error naming the keys.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from .config import EnsembleConfig
from .errors import ConfigError
from .files import atomic_write_text
from .keras_util import sync_training_state

log = logging.getLogger(__name__)

BACKUP_DIR = "backup"
KEEP = 2  # backups kept: the newest, and the one before it in case the newest is damaged
#: config keys that do not change what a run trains (K-fold's "same fold" test ignores them too):
#: how the run is carried out, and the ensemble section, which says how a recipe combines the
#: trained models afterwards and is read only when they predict (mask_keras.recipe); so a
#: resumed run whose recipe now votes differently (or an old backup, written before the
#: section existed) is not refused, and a finished fold is kept rather than trained again
RUN_ONLY = ("train.resume", "train.verbose", "train.backup", "train.backup_steps",
            *(f"ensemble.{f.name}" for f in dataclasses.fields(EnsembleConfig)))
#: config keys a resumed run may change
MAY_DIFFER = ("train.epochs", *RUN_ONLY)


class ResumeError(RuntimeError):
    """No usable backup where one was expected (named in the message, with the fix)."""


@dataclass
class Backup:
    """A loaded backup: ``state`` (state.json) and ``arrays`` (:func:`capture`'s keys -> arrays).

    Attributes:
        path: the backup folder (``backup/epoch_NNNN[_step_SSSSSS]``).
        state: its ``state.json`` (epochs done, step, phase, history, callbacks' state, config).
        arrays: :func:`capture`'s keys -> numpy arrays.
    """

    path: Path
    state: dict
    arrays: dict = field(repr=False)

    @property
    def epochs(self) -> int:
        """Whole epochs done."""
        return int(self.state["epochs_done"])

    @property
    def step(self) -> int:
        """Steps done of the epoch after those (0 for a backup made at an epoch's end)."""
        return int(self.state.get("step", 0))


# --------------------------------------------------------------------------- finding and checking
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every config key that differs, except :data:`MAY_DIFFER`.

    Args:
        saved: the backup's config as a (nested) dict.
        current: this run's config as a dict.

    Returns:
        One string per differing dotted key, sorted by key (empty when they agree).
    """
    a, b = _flat(saved), _flat(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in MAY_DIFFER and a.get(k) != b.get(k)]


def clean_partial_writes(out: Path) -> list[Path]:
    """Remove what a killed process left half-written in ``out``: temporary backup folders and
    the temporary files of :func:`mask_keras.files.atomic_path` (``.NAME.*.tmp*``).

    Args:
        out: the run directory (searched recursively).

    Returns:
        The removed paths.
    """
    removed = []
    for p in list(out.glob(f"{BACKUP_DIR}/.tmp-*")) + list(out.rglob(".*.tmp*")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        log.warning("removed %d partial file(s) of an interrupted write in %s", len(removed), out)
    return removed


def _load_one(d: Path) -> Backup:
    state_file, arrays_file = d / "state.json", d / "arrays.npz"
    if not state_file.is_file() or not arrays_file.is_file():
        raise ResumeError(f"{d}: incomplete (state.json or arrays.npz missing)")
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as e:
        raise ResumeError(f"{state_file}: unreadable ({e})") from None
    if _sha256(arrays_file) != state.get("arrays_sha256"):
        raise ResumeError(f"{arrays_file}: does not match its checksum (damaged or cut short)")
    try:
        with np.load(arrays_file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ResumeError(f"{arrays_file}: unreadable ({e})") from None
    names = state.get("array_names", [])
    if len(names) != len(arrays):  # a state.json edited or written by another version
        raise ResumeError(f"{state_file}: names {len(names)} arrays but {arrays_file.name} holds {len(arrays)}")
    return Backup(d, state, {names[int(k[1:])]: v for k, v in arrays.items()})  # a0, a1, ... -> names


def load_latest(out) -> Backup | None:
    """The newest usable backup of the run in ``out`` (None when there is none at all).

    A damaged newest backup is skipped with a warning; if backups exist but none is usable,
    :class:`ResumeError` names them and the fix.

    Args:
        out: the run directory (its ``backup/`` folder is read).

    Returns:
        The newest usable :class:`Backup`, or None.
    """
    root = Path(out) / BACKUP_DIR
    found = sorted(root.glob("epoch_*"), reverse=True) if root.is_dir() else []
    problems = []
    for d in found:
        try:
            b = _load_one(d)
        except ResumeError as e:
            log.warning("resume: skipping backup %s", e)
            problems.append(str(e))
            continue
        if problems:
            log.warning("resume: using the older backup %s", d)
        return b
    if problems:
        raise ResumeError("no usable backup: " + "; ".join(problems) +
                          f". Delete {root} (and train again from the start) or restore the folder from a copy")
    return None


# --------------------------------------------------------------------------- arrays
# Variables are keyed by position: ``model.variables`` and ``optimizer.variables`` keep their
# order for one architecture (and whatever is frozen), while auto-numbered names such as
# ``seed_generator_4`` depend on what the process built before. The paths are stored beside
# them so that a mismatch names the variable.
def capture(model, metrics: bool = False) -> dict:
    """Every model and optimizer variable of ``model`` as host arrays: ``model/<i>`` and
    ``optimizer/<i>`` in variable order, ``optimizer/iteration`` (the step count), and
    ``paths`` (what each one is); with ``metrics``, also the metrics' running totals
    (``metrics/<i>``, for a backup in the middle of an epoch).

    Args:
        model: the model being trained (its optimizer is captured once built).
        metrics: also capture the metrics' variables.

    Returns:
        A dict of numpy arrays keyed as above.
    """
    arrays, paths = {}, []
    for i, v in enumerate(model.variables):
        arrays[f"model/{i}"] = np.asarray(keras.ops.convert_to_numpy(v.value))
        paths.append(f"model/{i}={v.path}")
    if metrics:
        for i, v in enumerate(model.metrics_variables):
            arrays[f"metrics/{i}"] = np.asarray(keras.ops.convert_to_numpy(v.value))
            paths.append(f"metrics/{i}={v.path}")
    opt = getattr(model, "optimizer", None)
    if opt is not None and opt.built:
        for i, v in enumerate(opt.variables):
            arrays[f"optimizer/{i}"] = np.asarray(keras.ops.convert_to_numpy(v.value))
            paths.append(f"optimizer/{i}={v.path}")
        arrays["optimizer/iteration"] = np.asarray(keras.ops.convert_to_numpy(opt.iterations))
    arrays["paths"] = np.asarray(paths)
    return arrays


def _assign(group: str, variables, arrays: dict) -> None:
    n = sum(1 for k in arrays if k.startswith(group + "/") and k.split("/", 1)[1].isdigit())
    if n != len(variables):
        raise ResumeError(f"the backup has {n} {group} variables, the {group} here {len(variables)}: "
                          f"it was made by another model, optimizer or freeze phase")
    for i, var in enumerate(variables):
        a = arrays[f"{group}/{i}"]
        if tuple(a.shape) != tuple(var.shape):
            raise ResumeError(f"{group} variable {i} ({var.path}): backup shape {a.shape} != {tuple(var.shape)} "
                              f"here: the backup was made by another model")
        var.assign(a)


def restore(model, arrays: dict, optimizer: bool = True) -> None:
    """Assign captured arrays to ``model`` (and to its optimizer, built first when needed).

    Raises :class:`ResumeError` when the number or shapes of the variables differ: the model
    is not the one the backup was made from.

    Args:
        model: the rebuilt model (compiled, when ``optimizer``).
        arrays: :func:`capture`'s arrays (:attr:`Backup.arrays`).
        optimizer: also restore the optimizer's variables.
    """
    _assign("model", model.variables, arrays)
    if optimizer:
        opt = model.optimizer
        if not opt.built:
            opt.build(model.trainable_variables)
        _assign("optimizer", opt.variables, arrays)


def restore_metrics(model, arrays: dict) -> None:
    """Put a mid-epoch backup's metric totals (``metrics/<i>``) back into ``model``'s metrics.

    Args:
        model: the model being trained.
        arrays: a mid-epoch backup's arrays (ResumeError when they do not match).
    """
    _assign("metrics", model.metrics_variables, arrays)


def iterations(arrays: dict) -> int:
    """The optimizer step count stored in a backup.

    Args:
        arrays: :func:`capture`'s arrays (with an optimizer).

    Returns:
        The step count (int).
    """
    return int(arrays["optimizer/iteration"])


# --------------------------------------------------------------------------- the callback
class Capture(keras.callbacks.Callback):
    """First callback of the list: takes the training state at the end of an epoch, before
    ``SwapEMAWeights`` puts the averaged weights into the model for validation's checkpoints.

    Args:
        owner: the :class:`RunState` whose ``arrays`` it sets (its ``capture`` attribute).
    """

    def __init__(self, owner: "RunState"):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch, logs=None):
        if self.owner.backup and self.owner.write:  # only the process that writes the backup
            self.owner.arrays = capture(self.model)


class RunState(keras.callbacks.Callback):
    """The run's history and resume backups; the last of ``train``'s own callbacks.

    Args:
        out: the run directory.
        config: the run's config as a dict (stored with each backup).
        write: False on the processes of a multi-host job that must not write.
        backup: write a backup every epoch (``train.backup``).
        checkpoint: the run's :class:`~mask_keras.callbacks.AtomicBestCheckpoint` (its best
            score, epoch and top-k list are backed up and restored).
        early_stopping: the ``keras.callbacks.EarlyStopping`` callback, if any.
        phase: ``"frozen"`` or ``"full"`` (the freeze-then-unfreeze phase being trained).
        backup_steps: also write a backup every this many steps inside an epoch
            (``train.backup_steps``; 0 = at epoch ends only).
        steps_per_epoch: the epoch's length in steps (no mid-epoch backup at its last step:
            the epoch's own backup follows).

    Example:
        >>> state = RunState(out, cfg.to_dict(), checkpoint=ckpt)   # doctest: +SKIP
        >>> model.fit(..., callbacks=[state.capture, *cbs, state])  # doctest: +SKIP
    """

    def __init__(self, out, config: dict, *, write: bool = True, backup: bool = True, checkpoint=None,
                 early_stopping=None, phase: str = "full", backup_steps: int = 0, steps_per_epoch: int = 0):
        super().__init__()
        self.out = Path(out)
        self.config = config
        self.write, self.backup = write, backup
        self.checkpoint, self.early_stopping = checkpoint, early_stopping
        self.phase = phase
        self.backup_steps, self.steps_per_epoch = int(backup_steps), int(steps_per_epoch)
        self.history: dict[str, list] = {}
        self.arrays = None
        self.capture = Capture(self)
        self._pending_es = None  # early stopping's counters, applied after its on_train_begin reset
        self._epoch = self._step = 0  # the epoch being trained, and its steps done
        self._mid = None  # (epoch, steps done, backup arrays, release) of a mid-epoch resume

    # ---- restore
    def load(self, b: Backup) -> None:
        """Take the history, best score, top-k and counters of backup ``b``.

        Args:
            b: the backup to continue from.
        """
        s = b.state
        self.history = {k: list(v) for k, v in s["history"].items()}
        if self.checkpoint is not None:
            c = s["checkpoint"]
            self.checkpoint.best = -math.inf if c["best"] is None else float(c["best"])
            self.checkpoint.best_epoch = c["best_epoch"]
            self.checkpoint.top = [(float(v), int(e)) for v, e in c["top"]]
        self._pending_es = s.get("early_stopping")

    def resume_mid_epoch(self, b: Backup, release) -> None:
        """Continue epoch ``b.epochs`` after its first ``b.step`` steps (mid-epoch backup ``b``):
        its metric totals come back when it begins, and ``release()`` (which ends the
        dataset's skipping, see :func:`mask_keras.pipeline.skip_first_batches`) runs when it ends.

        Args:
            b: the mid-epoch backup.
            release: the ``release`` that :func:`~mask_keras.pipeline.skip_first_batches` returned.
        """
        self._mid = (b.epochs, b.step, b.arrays, release)

    def on_train_begin(self, logs=None):
        es, saved = self.early_stopping, self._pending_es
        if es is not None and saved is not None:  # EarlyStopping.on_train_begin has just reset these
            es.wait, es.best_epoch = int(saved["wait"]), int(saved["best_epoch"])
            es.best = None if saved["best"] is None else float(saved["best"])
        self._pending_es = None

    # ---- every epoch, every step
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._step = epoch, 0
        if self._mid is not None and self._mid[0] == epoch:  # Keras has just reset the metrics
            self._step = self._mid[1]
            restore_metrics(self.model, self._mid[2])

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        n = self.backup_steps
        if (n and self.backup and self.write and self._step % n == 0
                and self._step != self.steps_per_epoch):  # the epoch's own backup comes next
            sync_training_state(self.model)
            self.arrays = capture(self.model, metrics=True)
            self.write_backup(self._epoch, step=self._step)

    def on_epoch_end(self, epoch, logs=None):
        if self._mid is not None and self._mid[0] == epoch:
            self._mid[3]()  # the next epoch is read whole
            self._mid = None
        for k, v in (logs or {}).items():
            if np.ndim(v) == 0:
                self.history.setdefault(k, []).append(float(v))
        if not self.write:
            return
        self.write_history()
        if self.backup and self.arrays is not None:
            self.write_backup(epoch + 1, stopped=bool(getattr(self.model, "stop_training", False)))

    def write_history(self) -> Path:
        """``history.csv``: one row per epoch of the whole run (``epoch`` 0-based, then the
        logged values in name order), rewritten atomically.

        Returns:
            The file's ``Path``.
        """
        n = max((len(v) for v in self.history.values()), default=0)
        cols = {"epoch": list(range(n))}
        for k in sorted(self.history):
            v = self.history[k]
            cols[k] = v + [float("nan")] * (n - len(v))
        return atomic_write_text(self.out / "history.csv", pd.DataFrame(cols).to_csv(index=False))

    def state(self, epochs_done: int, stopped: bool, step: int = 0) -> dict:
        """The backup's ``state.json`` content (without the arrays' names and checksum).

        Args:
            epochs_done: whole epochs done.
            stopped: whether early stopping ended the run at this epoch.
            step: steps done of the next epoch (0 at an epoch's end).

        Returns:
            A JSON-ready dict: epochs, step, phase, history, checkpoint and early-stopping
            state, config.
        """
        es = self.early_stopping
        c = self.checkpoint
        return {
            "epochs_done": int(epochs_done), "step": int(step), "phase": self.phase, "stopped_early": stopped,
            "history": self.history,
            "checkpoint": None if c is None else {
                "best": None if not math.isfinite(c.best) else float(c.best), "best_epoch": c.best_epoch,
                "top": [[float(v), int(e)] for v, e in c.top]},
            "early_stopping": None if es is None else {
                "wait": int(es.wait), "best_epoch": int(es.best_epoch),
                "best": None if es.best is None else float(es.best)},
            "config": self.config,
        }

    def write_backup(self, epochs_done: int, stopped: bool = False, step: int = 0) -> Path:
        """``backup/epoch_NNNN/`` (``epoch_NNNN_step_SSSSSS/`` in the middle of an epoch):
        arrays.npz, then state.json with its checksum, via a temporary folder renamed into
        place; older backups beyond :data:`KEEP` are removed (names sort by position).

        Args:
            epochs_done: whole epochs done (NNNN).
            stopped: whether early stopping ended the run at this epoch.
            step: steps done of the next epoch (SSSSSS; 0 at an epoch's end).

        Returns:
            The backup folder.
        """
        root = self.out / BACKUP_DIR
        root.mkdir(parents=True, exist_ok=True)
        final = root / (f"epoch_{epochs_done:04d}" + (f"_step_{step:06d}" if step else ""))
        tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            names = sorted(self.arrays)
            arrays_file = tmp / "arrays.npz"
            with open(arrays_file, "wb") as f:
                np.savez(f, **{f"a{i}": self.arrays[k] for i, k in enumerate(names)})
                f.flush()
                os.fsync(f.fileno())
            state = {**self.state(epochs_done, stopped, step), "array_names": names,
                     "arrays_sha256": _sha256(arrays_file)}
            with open(tmp / "state.json", "w") as f:
                f.write(json.dumps(state) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        for old in sorted(root.glob("epoch_*"), reverse=True)[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)
        self.arrays = None
        return final


def finished_marker(out) -> Path:
    """Where :func:`mark_finished` records a finished run.

    Args:
        out: the run directory.

    Returns:
        ``out/backup/finished.json``.
    """
    return Path(out) / BACKUP_DIR / "finished.json"


def mark_finished(out, epochs_done: int) -> None:
    """Record that the run in ``out`` finished (its final report written).

    Args:
        out: the run directory.
        epochs_done: the epochs the run trained.
    """
    atomic_write_text(finished_marker(out), json.dumps({"epochs_done": int(epochs_done)}) + "\n")


def check_config(b: Backup, cfg_dict: dict, out) -> None:
    """ConfigError naming every key where ``cfg_dict`` differs from the backup's config.

    Args:
        b: the backup.
        cfg_dict: this run's config as a dict (:data:`MAY_DIFFER` keys may differ).
        out: the run directory (named in the message).
    """
    diff = config_differences(b.state["config"], cfg_dict)
    if diff:
        raise ConfigError(f"train.resume: the config differs from the backup in {out} ({'; '.join(diff)}); "
                          f"resume with the run's own config ({Path(out) / 'config.json'}) or train into "
                          f"another out_dir (a resume may change train.epochs and how the run is run: "
                          f"{', '.join(MAY_DIFFER[1:])})")
