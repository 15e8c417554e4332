"""Trained artifacts: what a path holds (one resolver), and a run directory opened and checked.

Four kinds of folder hold trained models; :func:`resolve` tells them apart, for every caller
(the ``Predictor``, ``mask-keras predict``, the service, the submission path):

* ``run``: ``model.keras`` + ``config.json`` (``mask-keras train``);
* ``kfold``: ``fold_0``, ``fold_1``, ... run directories, all of which vote (``--folds K``);
* ``ensemble``: ``ensemble.json``: member run (or K-fold) directories and how they are
  combined (vote, level, weights, TTA), written by the recipes;
* ``export``: ``export.json`` + the exported graph + ``config.json`` (``mask-keras export``).

Each writer also leaves a small manifest, ``artifact.json`` (:data:`MANIFEST`:
``{"kind": ..., "task": ..., "members": [...]}``), saying which kind the folder is. A folder
without one is recognised from its files; a folder whose manifest and files disagree (the
manifest says ``run`` but there is no ``model.keras``, a member it lists is gone) is an
:class:`ArtifactError` at load, naming both, before any image is read.

Example:
    >>> r = resolve("runs/efficientnet_gender")                  # doctest: +SKIP
    >>> r.kind, [m.name for m in r.members]                      # doctest: +SKIP
    ('run', ['efficientnet_gender'])
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from .. import labels as L
from ..config import Config, ConfigError
from ..files import atomic_write_text

TASK_ORDER = L.HEADS
#: the manifest file each artifact folder carries
MANIFEST = "artifact.json"
#: the kinds of artifact folder (see the module docstring)
KINDS = ("run", "kfold", "ensemble", "export")


class ArtifactError(ValueError):
    """An artifact is missing, broken, or not for the task it is used for."""


@dataclass
class Artifact:
    """An opened run directory (from :func:`load_artifact`); the model loads on first use
    (properties ``task``, ``name``, ``model``).

    Attributes:
        path: the run directory.
        config: its :class:`mask_keras.config.Config` (from ``config.json``).
    """

    path: Path
    config: Config
    _model: object = field(default=None, repr=False)

    @property
    def task(self) -> str:
        """The task the model was trained for (``config.train.task``)."""
        return self.config.train.task

    @property
    def name(self) -> str:
        """A short readable name: ``parent/dir`` for fold artifacts, else ``dir``."""
        if re.fullmatch(r"fold_\d+", self.path.name):
            return f"{self.path.parent.name}/{self.path.name}"
        return self.path.name

    @property
    def model(self):
        """The ``keras.Model`` of ``model.keras``: loaded on first use, checked against the task,
        then kept. Raises :class:`ArtifactError` when it cannot be loaded or does not match."""
        if self._model is None:
            try:
                model = keras.saving.load_model(self.path / "model.keras")
            except Exception as e:
                raise ArtifactError(f"{self.path / 'model.keras'}: cannot load ({type(e).__name__}: {e})") from e
            _check_outputs(model, self.task, self.path)
            self._model = model
        return self._model


def _check_outputs(model, task: str, path: Path) -> None:
    """The loaded model's outputs must match the task its config.json records."""
    shape = model.output_shape
    if task == "multihead":
        names = set(getattr(model, "output_names", None) or [])
        ok = isinstance(shape, (list, tuple)) and len(shape) == 3 and names == set(TASK_ORDER)
        want = "three heads mask(3), gender(2), age(3)"
    else:
        k = L.TASK_CLASSES[task]
        ok = isinstance(shape, tuple) and len(shape) == 2 and shape[-1] == k
        want = f"one output of {k} classes"
    if not ok:
        raise ArtifactError(f"{path}: config.json says task {task!r} ({want}) but model.keras outputs "
                            f"{shape}; the two files do not belong together")


def load_artifact(path, expect_task: str | None = None) -> Artifact:
    """Open a run directory (or its ``model.keras``); check it exists and has the expected task.

    The model itself is loaded lazily (``artifact.model``), so opening every artifact first
    is cheap and catches a missing or wrong one before any work.

    Args:
        path: a run directory written by ``mask-keras train``, or its ``model.keras``.
        expect_task: the task the artifact must be for; None: any task.

    Returns:
        The :class:`Artifact` (model not loaded yet).

    Raises:
        ArtifactError: the directory, ``model.keras`` or ``config.json`` is missing, the config
            is broken or has an unknown task, or the task is not ``expect_task``.
    """
    p = Path(path)
    if p.suffix == ".keras":
        p = p.parent
    if not p.exists():
        raise ArtifactError(f"{p}: artifact not found; pass a run directory written by `mask-keras train`")
    if not (p / "model.keras").is_file():
        hint = ""
        if any(p.glob("fold_*/model.keras")):
            hint = " (it holds K-fold models: pass it as --kfold-dir / kfold_dirs=)"
        raise ArtifactError(f"{p}: no model.keras here{hint}; pass a run directory written by `mask-keras train`")
    if not (p / "config.json").is_file():
        raise ArtifactError(f"{p}: no config.json beside model.keras; the artifact cannot be used without "
                            f"its preprocessing config")
    try:
        cfg = Config.load(p / "config.json")
    except ConfigError as e:
        raise ArtifactError(f"{p}: broken config.json ({e})") from e
    art = Artifact(p, cfg)
    if art.task not in L.TASKS:
        raise ArtifactError(f"{p}: config.json has unknown task {art.task!r}")
    if expect_task is not None and art.task != expect_task:
        raise ArtifactError(f"{p}: is a {art.task!r} model, but was given as the {expect_task!r} model")
    return art


def fold_dirs(kfold_dir) -> list[Path]:
    """The fold artifacts ``fold_0, fold_1, ...`` of a K-fold run directory, in fold order.

    Args:
        kfold_dir: the ``train.out_dir`` of a ``mask-keras train --folds K`` run.

    Returns:
        The ``fold_<k>`` folders (``Path``), sorted by ``k`` (numerically: fold_10 after fold_9).

    Raises:
        ArtifactError: ``kfold_dir`` is not a folder or holds no ``fold_*`` folder.
    """
    d = Path(kfold_dir)
    if not d.is_dir():
        raise ArtifactError(f"{d}: K-fold directory not found")
    dirs = [p for p in d.iterdir() if p.is_dir() and re.fullmatch(r"fold_\d+", p.name)]
    if not dirs:
        raise ArtifactError(f"{d}: no fold_* directories; pass the out_dir of `mask-keras train --folds K`")
    return sorted(dirs, key=lambda p: int(p.name.split("_")[1]))


def expand_models(models=(), kfold_dirs=()) -> list[Path]:
    """Run directories from explicit ``models`` and every fold of each of ``kfold_dirs``.

    Args:
        models: run directories (str or ``Path``), kept in order and not checked here.
        kfold_dirs: K-fold run directories, each expanded with :func:`fold_dirs`.

    Returns:
        A list of ``Path``: ``models`` first, then the folds of each K-fold directory.

    Example:
        >>> [p.as_posix() for p in expand_models(["runs/mask", "runs/age"])]
        ['runs/mask', 'runs/age']
    """
    out = [Path(m) for m in models]
    for k in kfold_dirs:
        out.extend(fold_dirs(k))
    return out


def model_outputs(out):
    """A model's outputs as float32 numpy: an array (N, C), or a dict of heads (a list of heads
    is taken in :data:`mask_keras.labels.HEADS` order, as Keras returns a multi-head model's).

    Args:
        out: an array-like (N, C), a dict of heads, or a list/tuple of heads (mask, gender, age).

    Returns:
        A float32 ``np.ndarray``, or a dict ``{head: float32 np.ndarray}``.

    Example:
        >>> out = model_outputs([np.zeros((1, 3)), np.zeros((1, 2)), np.zeros((1, 3))])
        >>> {k: (v.dtype.name, v.shape) for k, v in out.items()}
        {'mask': ('float32', (1, 3)), 'gender': ('float32', (1, 2)), 'age': ('float32', (1, 3))}
    """
    if isinstance(out, (list, tuple)):
        out = dict(zip(TASK_ORDER, out))
    if isinstance(out, dict):
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- the resolver
def write_manifest(directory, kind: str, task: str | None = None, members=(), **fields) -> Path:
    """Write ``directory/artifact.json`` (atomically) saying what the folder is.

    Args:
        directory: the artifact folder.
        kind: one of :data:`KINDS`.
        task: the task its models answer (``mask``, ..., ``multihead``; None for a mix).
        members: for ``kfold`` / ``ensemble``: the member folders (relative to ``directory``
            where they lie inside it).
        **fields: anything else worth recording (JSON-ready).

    Returns:
        The manifest's path.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    d = Path(directory)
    rel = []
    for m in members:
        m = Path(m)
        try:
            rel.append(m.resolve().relative_to(d.resolve()).as_posix())
        except ValueError:
            rel.append(str(m))
    out = d / MANIFEST
    atomic_write_text(out, json.dumps({"kind": kind, "task": task, "members": rel, **fields}, indent=1) + "\n")
    return out


def kind_of_files(d: Path) -> str | None:
    """The kind a folder's files say it is (None: none of the four).

    Args:
        d: a folder.

    Returns:
        ``run``, ``export``, ``ensemble``, ``kfold`` or None.
    """
    if (d / "model.keras").is_file():
        return "run"
    if (d / "export.json").is_file():
        return "export"
    if (d / "ensemble.json").is_file():
        return "ensemble"
    if any(d.glob("fold_*/model.keras")):
        return "kfold"
    return None


@dataclass
class Resolved:
    """What :func:`resolve` found.

    Attributes:
        path: the folder.
        kind: one of :data:`KINDS`.
        members: the model folders that vote: run directories, or the export folder itself.
        settings: how they are combined, saved with an ensemble (``vote``, ``level``,
            ``weights``, ``tie``, ``tta``, ``crops``); empty otherwise.
    """

    path: Path
    kind: str
    members: list
    settings: dict = field(default_factory=dict)


_EVIDENCE = {"run": "model.keras", "export": "export.json", "ensemble": "ensemble.json", "kfold": "fold_*/model.keras"}


def resolve(path) -> Resolved:
    """What an artifact path holds, checked against its manifest (see the module docstring).

    Args:
        path: a run, K-fold, ensemble or export folder (or a run's ``model.keras``).

    Returns:
        A :class:`Resolved`; an ensemble's members are expanded (a K-fold member to its folds).

    Raises:
        ArtifactError: the path does not exist, is none of the four kinds, its manifest is
            unreadable or disagrees with its files, or a member is missing.
    """
    p = Path(path)
    if p.suffix == ".keras":
        p = p.parent
    if not p.exists():
        raise ArtifactError(f"{p}: artifact not found; pass a run, K-fold, ensemble or export folder")
    if not p.is_dir():
        raise ArtifactError(f"{p}: not a folder; pass a run, K-fold, ensemble or export folder")
    found = kind_of_files(p)
    manifest = None
    if (p / MANIFEST).is_file():
        try:
            manifest = json.loads((p / MANIFEST).read_text())
            said = manifest["kind"]
        except (ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"{p / MANIFEST}: unreadable ({type(e).__name__}: {e}); delete it to let the "
                                f"folder's files say what it is") from e
        if said not in KINDS:
            raise ArtifactError(f"{p / MANIFEST}: unknown kind {said!r} (kinds: {', '.join(KINDS)})")
        if said != found:
            has = f"its files say {found!r} ({_EVIDENCE[found]})" if found else "no model files are there"
            raise ArtifactError(f"{p}: {MANIFEST} says kind {said!r} (needs {_EVIDENCE[said]}) but {has}; "
                                f"the folder was changed after it was written: restore it or write it again")
        for m in manifest.get("members") or ():
            if not (Path(m) if Path(m).is_absolute() else p / m).exists():
                raise ArtifactError(f"{p}: {MANIFEST} lists member {m!r}, which is not there; restore it "
                                    f"or write the {said} again")
    if found is None:
        raise ArtifactError(f"{p}: not an artifact: no model.keras (run), fold_*/ (K-fold), ensemble.json "
                            f"or export.json here; pass a folder written by mask-keras train, a recipe or export")
    if found == "run":
        return Resolved(p, "run", [p])
    if found == "export":
        return Resolved(p, "export", [p])
    if found == "kfold":
        return Resolved(p, "kfold", fold_dirs(p))
    try:
        summary = json.loads((p / "ensemble.json").read_text())
        models = [Path(m) for m in summary["models"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{p / 'ensemble.json'}: unreadable ({type(e).__name__}: {e}); "
                            f"pass the member run directories instead") from e
    members = []
    for m in models:
        m = m if m.is_absolute() or m.exists() else p / m
        members.extend(resolve(m).members)
    settings = {k: summary[k] for k in ("vote", "level", "weights", "tie", "combine", "tta", "crops")
                if summary.get(k) is not None}
    return Resolved(p, "ensemble", members, settings)
