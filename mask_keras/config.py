"""Configs: plain dataclasses, resolved and validated before any training starts.

A run is described by one :class:`Config` (data, preprocessing, augmentation,
sampling, model, loss, training, and the ensemble a recipe makes of the trained models).
``Config.from_dict`` rejects unknown keys with a suggestion, ``Config.validate`` checks
names and sizes against the registries, and ``save``/``load`` round-trip the JSON written
next to every artifact (``config.json``); a section missing from the JSON (e.g.
``ensemble`` in a file written before it existed) takes its defaults. Recipes
(``recipes/*.py``, :mod:`mask_keras.recipe`) build a Config in ``get_config`` by setting
fields (``c.train.task = "gender"``); code can also use ``Config().override(**{...})`` and
call :func:`mask_keras.train.train`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import labels as L
from . import registry  # filled by models.backbones, augment and losses (see registry.py)
from .cropbox import CROPS  # the one list (also importable from here, as before)
from .errors import ConfigError, unknown_choice  # ConfigError: also importable from here, as before
from .files import atomic_write_text  # Config.save; also importable from here, as before
from .sampling import BALANCES  # the one list

#: early stopping: the metric watched and whether higher is better
EARLY_STOPPING_MONITORS = {"val_macro_f1": "max", "val_loss": "min"}
#: how an ensemble's models vote (soft: mean probabilities; hard: each model's answer) and where
#: (per task, on the 18 classes, or "auto": the classes when every model is 18-way or multi-head,
#: else per task); mask_keras.inference.combine checks its arguments against these
VOTES = ("soft", "hard")
LEVELS = ("auto", "task", "class")
#: the scales a TTA crop view may take (the model's crop region scaled around its centre)
TTA_CROP_RANGE = (0.3, 3.0)


@dataclass
class DataConfig:
    """Where the training images are and how they are labelled and split.

    Attributes:
        data_dir: the dataset folder (``train/`` and ``eval/``, see :mod:`mask_keras.data.layout`).
        relabel: False | True/"certain" | "all" (fixes from ``data/relabel.csv``, :mod:`mask_keras.data.relabel`).
        age_upper: training age threshold of the >=60 group (teams: 58/59); evaluation always uses 60.
        val_ratio: hold-out share of the people, in (0, 1); ignored when folds > 1.
        folds: K for K-fold (0/1 = hold-out).
        fold: which fold is validation, 0..folds-1.
        mask_states: None, or the mask states to train on, e.g. (0,) = age/gender on masked images only.
        max_people: cap people (demo/test scale), chosen stratified by ``train.seed``; None = all.
        on_error: "raise" on an unreadable image, or "skip" it (counted and reported).
    """

    data_dir: str = "data/default"
    relabel: Any = False
    age_upper: int = 60
    val_ratio: float = 0.2
    folds: int = 0
    fold: int = 0
    mask_states: tuple | None = None
    max_people: int | None = None
    on_error: str = "raise"


@dataclass
class PreprocessConfig:
    """The deterministic part; saved with the artifact and re-applied at inference.

    Attributes:
        image_size: (height, width) fed to the model; integers >= 8.
        crop: none | center | face (see :mod:`mask_keras.detect`).
        crop_size: (h, w) of the centre crop (teams: 400x200, 320x256); must hold ``image_size``.
        face_margins: (left, top, right, bottom) px around the detected face box.
        face_fallback: centre crop (h, w) when no face is found or its confidence is low.
        face_min_confidence: detector confidence below which a face is not used (the fallback is).
        jpeg_scaled_decode: JPEGs: decode only the crop window, downscaled in the DCT (1/2, 1/4, 1/8) while it
            stays >= image_size; False decodes the whole image at full size (like PIL). See mask_keras.pipeline.decode.
    """

    image_size: tuple = (128, 96)
    crop: str = "center"
    crop_size: tuple = (400, 200)
    face_margins: tuple = (30, 60, 30, 30)
    face_fallback: tuple = (340, 256)
    face_min_confidence: float = 0.9
    jpeg_scaled_decode: bool = True


@dataclass
class AugmentConfig:
    """Per-image augmentation (in the model) and batch mixing (on the host).

    Attributes:
        preset: an augmentation preset name (see :data:`mask_keras.augment.PRESETS`).
        mixup: probability in [0, 1] that a batch is mixed with MixUp.
        cutmix: probability in [0, 1] that a batch is mixed with CutMix.
        mix_alpha: Beta(alpha, alpha) for the mixing ratio; > 0.
        mix_old_only: team 004: mix only pairs that involve a >=60 face.
        mix_off_epoch: MixUp/CutMix off from this epoch on (1-based; timm's --mixup-off-epoch); 0 = never.
    """

    preset: str = "base"
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_alpha: float = 0.4
    mix_old_only: bool = False
    mix_off_epoch: int = 0


@dataclass
class SamplingConfig:
    """How training draws its examples (:mod:`mask_keras.sampling`).

    Attributes:
        old_factor: repeat >=60 people this many times per epoch (team 000); >= 1 (1 = off).
        balance: none | class (class-balanced sampling of the task's classes).
        class_weights: weight the loss by inverse class frequency instead.
    """

    old_factor: float = 1.0
    balance: str = "none"
    class_weights: bool = False


#: ``ModelConfig.scratch_init`` values (:func:`mask_keras.models.build.apply_scratch_init`)
SCRATCH_INITS = ("pytorch", "keras")


@dataclass
class ModelConfig:
    """The network (:func:`mask_keras.models.build_model`).

    Attributes:
        backbone: a registered backbone name (see :mod:`mask_keras.models.backbones`).
        weights: "imagenet" | keras-hub preset | local path | None (random init).
        head: linear | shallow.
        head_units: hidden width of the shallow head.
        dropout: dropout before the output layer.
        freeze_epochs: "melting": train the head on a frozen backbone first, for this many epochs
            (ignored with ``weights=None``).
        head_loss_weights: multihead: loss weights of mask, gender, age (3 values).
        bn_momentum: override the backbone's BatchNorm momentum (e.g. 0.9 from scratch); None = keep.
        bn_epsilon: override the backbone's BatchNorm epsilon (PyTorch's 1e-5; Keras 1e-3); None = keep
            (or what scratch_init sets).
        scratch_init: with weights=None, on a backbone with depthwise convolutions (EfficientNet):
            "pytorch" (depthwise kernels at PyTorch's scale and BatchNorm epsilon 1e-5, measured
            better from scratch: bench/README.md) or "keras" (the backbone's own init, epsilon 1e-3).
    """

    backbone: str = "efficientnet_b0"
    weights: str | None = "imagenet"
    head: str = "linear"
    head_units: int = 128
    dropout: float = 0.2
    freeze_epochs: int = 0
    head_loss_weights: tuple = (1.0, 1.0, 1.0)
    bn_momentum: float | None = None
    bn_epsilon: float | None = None
    scratch_init: str = "pytorch"


@dataclass
class LossConfig:
    """The training loss (:mod:`mask_keras.losses`).

    Attributes:
        name: ce | focal | f1 | class_balanced | f1_focal ...; see :mod:`mask_keras.losses`.
        terms: None, or a weighted sum of named losses, e.g. (("f1", 0.4), ("focal", 0.6)).
        gamma: the focal exponent (focal and focal-based losses).
        label_smoothing: in [0, 1); 0 = off.
        cb_beta: the class-balanced loss's beta (effective number of samples).
    """

    name: str = "ce"
    terms: tuple | None = None
    gamma: float = 2.0
    label_smoothing: float = 0.0
    cb_beta: float = 0.999


@dataclass
class TrainConfig:
    """The training loop, its checkpoints and where they go (:func:`mask_keras.train.train`).

    Attributes:
        task: mask | gender | age | multi | multihead.
        epochs: epochs to train; >= 1.
        batch_size: images per step; >= 1.
        optimizer: adam | adamw | sgd.
        lr: the peak learning rate, in (0, 1).
        weight_decay: AdamW only (0 there means 0.01).
        momentum: SGD only (Nesterov when > 0).
        schedule: constant | cosine (down to 1% of lr) | step.
        warmup_epochs: linear warm-up of the cosine schedule, in (fractional) epochs.
        step_epochs: the step schedule's period in epochs.
        step_gamma: the step schedule's factor per period.
        grad_accum: batches whose gradients are accumulated per optimizer step; >= 1.
        mixed_precision: train in mixed_bfloat16.
        early_stopping: patience in epochs (0 = off).
        early_stopping_monitor: val_macro_f1 (higher is better) | val_loss (lower is better).
        steps_per_epoch: cap the steps of an epoch (demo/test scale); None = the whole data.
        precise_bn: training images over which BatchNorm statistics are recomputed before every
            validation ("precise BN", :mod:`mask_keras.bn_stats`); 0 = off (training's moving averages).
        ema: exponential moving average of the weights (Keras' optimizer use_ema), e.g. 0.999;
            validation, the checkpoints and the final model use the averaged weights; 0 = off.
        clip_norm: gradient clipping by global norm (optimizer global_clipnorm); 0 = off.
        save_last: last.keras after every epoch (model.keras stays the best).
        keep_top_k: also keep the k best epochs as checkpoints/epoch_NNN.keras; 0 = off.
        backup: a resume backup every epoch (backup/epoch_NNNN: weights, optimizer, counters, data order; two kept).
        backup_steps: also a backup every N training steps (backup/epoch_NNNN_step_SSSSSS), so a resumed run
            continues from the middle of a long epoch; 0 = at epoch ends only.
        resume: continue the run in out_dir from its newest backup.
        seed: seeds the split, the sampling, the augmentation and Keras.
        out_dir: the run folder, which becomes the artifact (see :mod:`mask_keras.train`).
        wandb: log to Weights & Biases.
        wandb_project: the wandb project.
        wandb_mode: offline | online.
        devices: auto (one device) | all (DataParallel over local devices).
        cache: memory | none | <path prefix>: decoded uint8 images saved as <prefix>_<key>.npy.
        verbose: Keras' fit verbosity (0, 1, 2); non-zero also prints (else logs) the dataset summaries and run notes.
    """

    task: str = "multi"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: int = 20
    step_gamma: float = 0.5
    grad_accum: int = 1
    mixed_precision: bool = False
    early_stopping: int = 0
    early_stopping_monitor: str = "val_macro_f1"
    steps_per_epoch: int | None = None
    precise_bn: int = 1024
    ema: float = 0.0
    clip_norm: float = 0.0
    save_last: bool = True
    keep_top_k: int = 0
    backup: bool = True
    backup_steps: int = 0
    resume: bool = False
    seed: int = 42
    out_dir: str = "runs/default"
    wandb: bool = False
    wandb_project: str = "mask_keras"
    wandb_mode: str = "offline"
    devices: str = "auto"
    cache: str = "memory"
    verbose: int = 1


@dataclass
class EnsembleConfig:
    """How a recipe combines its trained models into the submission (:mod:`mask_keras.recipe`).

    Read only when the models predict ``eval/``, never by training: a run's other sections
    decide what it trains, so a resumed run or a finished K-fold fold may differ here
    (``mask_keras.resume.RUN_ONLY``).

    Attributes:
        members: the models that vote, as (name, recipe) pairs: the member NAME (its folder under the ensemble's
            out_dir, and --load NAME=DIR) and the recipe file in the same folder whose get_config gives its config
            ("recipe:member" passes member= to that get_config), e.g. (("mask", "efficientnet_mask"), ("gender",
            "efficientnet_gender"), ("age", "resnet152_age")); empty: the recipe's own config is the one member
            (with data.folds >= 2: its K fold models).
        vote: soft (mean probabilities) | hard (each model's answer; tie: highest mean probability).
        level: task (vote per task, then combine) | class (on the 18 classes) | auto (see LEVELS).
        tta: test-time augmentation: every model also predicts the flipped image.
        crops: extra TTA crop views at these scales of the crop region, e.g. (0.9, 1.1).
    """

    members: tuple = ()
    vote: str = "soft"
    level: str = "auto"
    tta: bool = False
    crops: tuple = ()


@dataclass
class Config:
    """One run: every section, each a dataclass with its defaults.

    Attributes:
        data: :class:`DataConfig`.
        preprocess: :class:`PreprocessConfig`.
        augment: :class:`AugmentConfig`.
        sampling: :class:`SamplingConfig`.
        model: :class:`ModelConfig`.
        loss: :class:`LossConfig`.
        train: :class:`TrainConfig`.
        ensemble: :class:`EnsembleConfig`.

    Example:
        >>> cfg = Config().override(**{"train.epochs": 3, "preprocess.image_size": [64, 48]})
        >>> cfg.train.epochs, cfg.preprocess.image_size, cfg.validate() is cfg
        (3, (64, 48), True)
        >>> Config.from_dict(cfg.to_dict()) == cfg
        True
        >>> try:
        ...     Config().override(**{"train.epoch": 3})
        ... except ConfigError as e:
        ...     print(str(e).split(";")[0])
        unknown train option 'epoch' (did you mean 'epochs'?)
    """

    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    # ---- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict:
        """The config as JSON-ready data.

        Returns:
            ``{section: {option: value}}``, tuples turned into lists.
        """
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A Config from (part of) :meth:`to_dict`'s form; missing sections and options keep defaults.

        Args:
            d: ``{section: {option: value}}``; lists become tuples.

        Returns:
            The Config (not validated: see :meth:`validate`).

        Raises:
            ConfigError: an unknown section or option (with a suggestion), or a section that is not a mapping.
        """
        return _from_dict(cls, d, "config")

    def save(self, path) -> Path:
        """Write :meth:`to_dict` as indented JSON, atomically.

        Args:
            path: the file to write (e.g. ``<out_dir>/config.json``).

        Returns:
            ``Path(path)``.
        """
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path) -> "Config":
        """Read a config written by :meth:`save`.

        Args:
            path: the JSON file, or a folder holding ``config.json`` (a run's artifact).

        Returns:
            The Config (not validated).

        Raises:
            ConfigError: the file is missing, not JSON, written by mask_keras 0.1 (``preprocess.mean/std``)
                or has an unknown option.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config not found") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        if {"mean", "std"} & set((d.get("preprocess") or {})):
            raise ConfigError(f"{path}: written by mask_keras 0.1, whose models take images normalised with "
                              f"preprocess.mean/std; models now take 0..255 pixels. Retrain with this version "
                              f"(or use mask_keras 0.1 for that artifact).")
        return cls.from_dict(d)

    def override(self, **dotted) -> "Config":
        """Copy with dotted overrides: ``cfg.override(**{"train.epochs": 3})``.

        Args:
            **dotted: ``"section.option"`` -> the new value (lists become tuples).

        Returns:
            A new Config (not validated); ``self`` is unchanged.

        Raises:
            ConfigError: an unknown section or option, with a suggestion.
        """
        d = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            if section not in d or not name:
                raise unknown_choice("config section", section, list(d))
            if name not in d[section]:
                raise unknown_choice(f"{section} option", name, list(d[section]))
            d[section][name] = value
        return Config.from_dict(d)

    # ---- validation ---------------------------------------------------------
    def validate(self) -> "Config":
        """Check every name and size; raise ConfigError naming the option and the fix.

        Returns:
            ``self``, so ``Config.load(path).validate()`` chains.
        """
        t, p = self.train, self.preprocess
        if t.task not in L.TASKS:
            raise unknown_choice("task", t.task, L.TASKS)
        registry.BACKBONES.get(self.model.backbone)  # each get: ConfigError naming the choices
        if self.model.head not in ("linear", "shallow"):
            raise unknown_choice("head", self.model.head, ("linear", "shallow"))
        if self.model.scratch_init not in SCRATCH_INITS:
            raise unknown_choice("model.scratch_init", self.model.scratch_init, SCRATCH_INITS)
        registry.AUGMENT_PRESETS.get(self.augment.preset)
        for name, _w in (self.loss.terms or ((self.loss.name, 1.0),)):
            registry.LOSSES.get(name)
        if t.optimizer not in ("adam", "adamw", "sgd"):
            raise unknown_choice("optimizer", t.optimizer, ("adam", "adamw", "sgd"))
        if t.schedule not in ("constant", "cosine", "step"):
            raise unknown_choice("schedule", t.schedule, ("constant", "cosine", "step"))
        if t.early_stopping_monitor not in EARLY_STOPPING_MONITORS:
            raise unknown_choice("early_stopping_monitor", t.early_stopping_monitor, tuple(EARLY_STOPPING_MONITORS))
        if p.crop not in CROPS:
            raise unknown_choice("crop", p.crop, CROPS)
        if self.sampling.balance not in BALANCES:
            raise unknown_choice("sampling.balance", self.sampling.balance, BALANCES)
        if self.data.on_error not in ("raise", "skip"):
            raise unknown_choice("data.on_error", self.data.on_error, ("raise", "skip"))
        if self.data.relabel not in (False, True, "certain", "all"):
            raise unknown_choice("data.relabel", self.data.relabel, (False, True, "certain", "all"))
        _check_hw("preprocess.image_size", p.image_size)
        _check_hw("preprocess.crop_size", p.crop_size)
        _check_hw("preprocess.face_fallback", p.face_fallback)
        if p.crop == "center" and (p.image_size[0] > p.crop_size[0] or p.image_size[1] > p.crop_size[1]):
            raise ConfigError(f"preprocess.image_size {tuple(p.image_size)} does not fit the centre crop "
                              f"{tuple(p.crop_size)}: the model would see upsampled pixels; "
                              f"use an image size no larger than the crop, or a larger crop_size")
        if t.precise_bn < 0:
            raise ConfigError(f"train.precise_bn {t.precise_bn} must be >= 0 (images; 0 = off)")
        if not 0.0 <= t.ema < 1.0:
            raise ConfigError(f"train.ema {t.ema} must be in [0, 1) (e.g. 0.999; 0 = off)")
        if t.clip_norm < 0:
            raise ConfigError(f"train.clip_norm {t.clip_norm} must be >= 0 (0 = off)")
        if t.keep_top_k < 0:
            raise ConfigError(f"train.keep_top_k {t.keep_top_k} must be >= 0 (0 = off)")
        if t.backup_steps < 0:
            raise ConfigError(f"train.backup_steps {t.backup_steps} must be >= 0 (training steps; 0 = epoch ends only)")
        if t.backup_steps and not t.backup:
            raise ConfigError("train.backup_steps needs train.backup on (mid-epoch backups are backups)")
        if t.backup_steps and t.steps_per_epoch:
            raise ConfigError("train.backup_steps needs whole epochs: unset train.steps_per_epoch (a capped epoch "
                              "does not restart the data order, so a mid-epoch position could not be found again)")
        if self.augment.mix_off_epoch < 0:
            raise ConfigError(f"augment.mix_off_epoch {self.augment.mix_off_epoch} must be >= 0 "
                              f"(the 1-based epoch from which MixUp/CutMix stop; 0 = never)")
        if t.epochs < 1 or t.batch_size < 1 or t.grad_accum < 1:
            raise ConfigError("train.epochs, train.batch_size and train.grad_accum must be >= 1")
        if not 0 < t.lr < 1:
            raise ConfigError(f"train.lr {t.lr} out of range (0, 1)")
        if not 0 <= self.augment.mixup <= 1 or not 0 <= self.augment.cutmix <= 1:
            raise ConfigError("augment.mixup and augment.cutmix are probabilities in [0, 1]")
        if self.sampling.old_factor < 1:
            raise ConfigError("sampling.old_factor must be >= 1 (1 = no oversampling)")
        if self.data.folds > 1 and not 0 <= self.data.fold < self.data.folds:
            raise ConfigError(f"data.fold {self.data.fold} not in 0..{self.data.folds - 1}")
        if self.data.folds <= 1 and not 0 < self.data.val_ratio < 1:
            raise ConfigError("data.val_ratio must be in (0, 1)")
        if not 2 <= self.data.age_upper <= 100 or self.data.age_upper <= L.AGE_LOWER:
            raise ConfigError(f"data.age_upper {self.data.age_upper} must be > {L.AGE_LOWER}")
        if t.task == "multihead" and len(self.model.head_loss_weights) != 3:
            raise ConfigError("model.head_loss_weights needs 3 weights (mask, gender, age)")
        _check_ensemble(self.ensemble)
        return self


def _check_ensemble(e: EnsembleConfig) -> None:
    if e.vote not in VOTES:
        raise unknown_choice("ensemble.vote", e.vote, VOTES)
    if e.level not in LEVELS:
        raise unknown_choice("ensemble.level", e.level, LEVELS)
    if not isinstance(e.tta, bool):
        raise ConfigError(f"ensemble.tta must be true or false, got {e.tta!r}")
    lo, hi = TTA_CROP_RANGE
    if not isinstance(e.crops, (list, tuple)) or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and lo <= s <= hi for s in e.crops):
        raise ConfigError(f"ensemble.crops must be scales in [{lo}, {hi}], e.g. (0.9, 1.1); got {e.crops!r}")
    if not isinstance(e.members, (list, tuple)) or not all(
            isinstance(m, (list, tuple)) and len(m) == 2 and all(isinstance(v, str) and v for v in m)
            for m in e.members):
        raise ConfigError(f"ensemble.members must be (name, recipe) pairs, e.g. (('mask', 'efficientnet_mask'),); "
                          f"got {e.members!r}")
    names = [m[0] for m in e.members]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"ensemble.members: the name(s) {dup} are given twice; each member needs its own name")


def _check_hw(name, hw):
    if len(hw) != 2 or any(int(v) != v or v < 8 for v in hw):
        raise ConfigError(f"{name} must be (height, width) integers >= 8, got {hw!r}")


def _to_jsonable(x):
    if isinstance(x, dict):
        return {k: _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    return x


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _from_dict(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in d.items():
        if k not in fields:
            raise unknown_choice(f"option in {where}", k, list(fields))
        sub = fields[k].default_factory if fields[k].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            kwargs[k] = _from_dict(sub, v, f"{where}.{k}")
        else:
            kwargs[k] = _tuplify(v)
    return cls(**kwargs)

