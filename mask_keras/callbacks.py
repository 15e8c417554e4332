"""Keras callbacks of the training loop: precise BatchNorm statistics before validation,
atomic best checkpoint, 18-class F1 for multi-head models, and a wandb logger that is safe
on JAX with LR schedules."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import keras
import numpy as np

from .bn_stats import Recomputer
from .ensemble import combine_tasks, from_multihead
from .evaluate import task_scores
from .files import atomic_path
from .jax_backend.distribute import LocalPredictor, from_chief, no_distribution
from .labels import encode
from .pipeline import graph_fn

log = logging.getLogger(__name__)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recompute BatchNorm statistics over ``batches`` before every validation (:mod:`mask_keras.bn_stats`).

    Runs in ``on_test_begin``: in ``fit`` that is after the epoch's training steps and before
    its validation, so validation, the checkpoint saved after it and the early-stopping
    decision all use statistics of the current weights.

    Args:
        batches: an iterable (e.g. a ``tf.data.Dataset``) of image batches, or of tuples whose
            first element is the batch; iterated once per validation.

    Example:
        >>> cb = PreciseBatchNorm(stats_ds)          # doctest: +SKIP
        >>> model.fit(train_ds, validation_data=val_ds, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self.runs = 0
        self._recompute = None

    def _images(self):
        it = self.batches.as_numpy_iterator() if hasattr(self.batches, "as_numpy_iterator") else self.batches
        for b in it:
            yield b[0] if isinstance(b, (tuple, list)) else b

    def on_train_begin(self, logs=None):
        # a new fit (e.g. after the backbone was unfrozen): which BN layers train, and so which
        # statistics are recomputed, may have changed
        self._recompute = None

    def on_test_begin(self, logs=None):
        if self._recompute is None or self._recompute.model is not self.model:
            self._recompute = Recomputer(self.model)
        self._recompute(self._images())
        self.runs += 1


class MixOff(keras.callbacks.Callback):
    """MixUp/CutMix off from the 1-based epoch ``off_epoch`` on (``augment.mix_off_epoch``;
    timm's ``--mixup-off-epoch``): the last epochs train on clean images and labels.

    Args:
        mixer: the training dataset's :class:`~mask_keras.mixup.BatchMixer`.
        off_epoch: the first epoch (1-based) without mixing.
    """

    def __init__(self, mixer, off_epoch: int):
        super().__init__()
        self.mixer, self.off_epoch = mixer, int(off_epoch)

    def on_epoch_begin(self, epoch, logs=None):  # before the epoch's iterator makes its first batch
        self.mixer.set_enabled(epoch + 1 < self.off_epoch)


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Save the model when ``monitor`` improves (mode max), via temp file + rename.

    Keras' ModelCheckpoint writes in place; an interrupted save would leave a broken
    ``model.keras`` behind. This one never leaves a partial artifact. The best weights are
    also kept in memory (``best_weights``, host arrays), so every process of a multi-host
    job has them; ``write=False`` (the non-chief processes) keeps them without writing.

    Args:
        path: the best model (``model.keras``).
        monitor: a key of the epoch logs, higher is better.
        write: False on the processes that must not write.
        last: also save every epoch's model here (``last.keras``); None = off.
        keep_top_k: also keep the k best epochs as ``<path's folder>/checkpoints/epoch_NNN.keras``
            (1-based epochs; ties keep the earlier epoch), deleting those that drop out; 0 = off.
    """

    def __init__(self, path, monitor: str = "val_macro_f1", write: bool = True, last=None, keep_top_k: int = 0):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.write = write
        self.last = Path(last) if last else None
        self.keep_top_k = int(keep_top_k)
        self.top: list[tuple[float, int]] = []  # (score, epoch) of the kept checkpoints, best first
        self.best = -math.inf
        self.best_epoch = None
        self.best_weights = None

    def top_path(self, epoch: int) -> Path:
        """Where ``keep_top_k`` keeps the model of ``epoch``.

        Args:
            epoch: the 0-based epoch, as Keras passes it.

        Returns:
            ``<path's folder>/checkpoints/epoch_NNN.keras`` with NNN the 1-based epoch.
        """
        return self.path.parent / "checkpoints" / f"epoch_{epoch + 1:03d}.keras"

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"checkpoint monitor {self.monitor!r} not in logs {sorted(logs)}")
        value = float(logs[self.monitor])
        if value > self.best or self.best_epoch is None:
            self.best, self.best_epoch = value, epoch
            self.best_weights = self.model.get_weights()
            if self.write:
                save_model_atomic(self.model, self.path)
                log.info("epoch %d: %s improved to %.4f, saved %s", epoch + 1, self.monitor, value, self.path)
        if not self.write:
            return
        if self.last is not None:
            save_model_atomic(self.model, self.last)
        if self.keep_top_k:
            ranked = sorted(self.top + [(value, epoch)], key=lambda t: (-t[0], t[1]))
            keep, drop = ranked[:self.keep_top_k], ranked[self.keep_top_k:]
            if (value, epoch) in keep:
                self.top_path(epoch).parent.mkdir(parents=True, exist_ok=True)
                save_model_atomic(self.model, self.top_path(epoch))
            for _, e in drop:
                self.top_path(e).unlink(missing_ok=True)
            self.top = keep


def save_model_atomic(model, path) -> Path:
    """``model.save(path)`` via a temporary file and a rename (:func:`mask_keras.files.atomic_path`).

    Args:
        model: the Keras model to save (saved outside any Keras distribution).
        path: the destination, a ``.keras`` file; its folder is created when missing.

    Returns:
        ``Path(path)``.
    """

    # outside the distribution: saving builds a reference optimizer whose variable would
    # otherwise be placed on every host's devices, a collective the other hosts never join
    with atomic_path(path) as tmp, no_distribution():
        model.save(tmp)
    return Path(path)


class CombinedMacroF1(keras.callbacks.Callback):
    """For multi-head models: macro F1 on the 18 combined classes, as ``logs["val_macro_f1"]``.

    At every epoch's end the model predicts ``val_ds``; the three heads' probabilities are
    combined (:func:`mask_keras.ensemble.combine_tasks`) and their argmax scored against the
    18-class labels. In a multi-host job every process logs the chief's value.

    Args:
        val_ds: the evaluation dataset of ``(x, y, sample_weight)`` batches, ``y`` the dict of
            one-hot ``mask``/``gender``/``age`` targets, pad rows (weight 0) at its end.
        y_true: the 18-class labels (0..17) of its real rows; None: read from ``val_ds`` once.
        name: the logs key to set.
    """

    def __init__(self, val_ds, y_true=None, name: str = "val_macro_f1"):
        super().__init__()
        self.val_ds = val_ds
        self.name = name
        self._y = y_true
        self._predict = self._x = None

    def _labels(self):
        if self._y is None:
            ys, ws = [], []
            for _, y, w in self.val_ds.as_numpy_iterator():
                ys.append(encode(y["mask"].argmax(1), y["gender"].argmax(1), y["age"].argmax(1)))
                ws.append(w)
            y, w = np.concatenate(ys), np.concatenate(ws)
            self._y = y[w > 0]
        return self._y

    def on_epoch_end(self, epoch, logs=None):
        y = self._labels()
        if self._predict is None or self._predict.model is not self.model:
            self._predict = LocalPredictor(self.model)  # multi-host safe; model.predict otherwise
        if self._x is None:  # the images only, mapped once (not a new map every epoch)
            self._x = self.val_ds.map(graph_fn(lambda x, y, w: x))
        probs = self._predict(self._x)
        pm, pg, pa = from_multihead(probs)
        pred = combine_tasks(pm, pg, pa)[: len(y)].argmax(1)
        if logs is not None:  # every host takes the chief's value: the same early stop / checkpoint
            logs[self.name] = from_chief(task_scores(y, pred, "multi")["macro_f1"])


class WandbLogger(keras.callbacks.Callback):
    """Log epoch metrics and the current learning rate to wandb.

    The stock ``WandbMetricsLogger`` reads the learning rate in a way that crashes with LR
    schedules on the JAX backend; this one reads Keras' public ``optimizer.learning_rate``,
    the schedule evaluated at the optimizer's step. ``mode="offline"`` needs no network
    (``wandb sync`` uploads later).

    Args:
        cfg: the run's :class:`mask_keras.config.Config` (``train.wandb_project``,
            ``train.wandb_mode``; its ``to_dict()`` is the run's wandb config).
        out_dir: the run's folder: wandb writes under it and the run is named after it.
    """

    def __init__(self, cfg, out_dir):
        super().__init__()
        import wandb

        self._wandb = wandb
        t = cfg.train
        self.run = wandb.init(project=t.wandb_project, mode=t.wandb_mode, dir=str(out_dir),
                              config=cfg.to_dict(), name=Path(out_dir).name, reinit="finish_previous")

    def _lr(self) -> float:
        # the public property evaluates a schedule at the optimizer's step
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        data = {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0}
        data["learning_rate"] = self._lr()
        data["epoch"] = epoch + 1
        self.run.log(data, step=epoch + 1)

    def close(self):
        """Finish the run (called once by ``train`` after every fit phase)."""
        self.run.finish()
